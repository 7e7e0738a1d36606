//! Errors and warnings of configuration loading.
//!
//! An error stops loading and says where: a syntax error names the file,
//! line and column and shows the line with a caret; every other error names
//! the file and the JSON path of the bad value (`outbounds[1].settings.
//! vnext[0].users[0].id`). A warning never stops loading; it points at
//! something V2Ray accepts but that is probably a mistake, or that Rayback
//! ignores. This module holds no parsing logic.

use std::fmt;

/// Why a configuration could not be loaded. `Display` is the full message
/// for a person; the variants let a program tell the cases apart.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid JSON (or TOML). `snippet` is the offending line
    /// with a caret under the column.
    #[error("{file}:{line}:{column}: {message}\n{snippet}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
        snippet: String,
    },
    /// A value V2Ray would also reject (or one that is meaningless).
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
    /// A valid V2Ray setting that Rayback does not implement. The message
    /// says "… is not supported by Rayback" and what is.
    #[error("{file}: {path}: {message}")]
    Unsupported {
        file: String,
        path: String,
        message: String,
    },
}

impl ConfigError {
    /// True for a JSON/TOML syntax error.
    pub fn is_syntax(&self) -> bool {
        matches!(self, ConfigError::Syntax { .. })
    }

    /// True when the configuration uses a feature Rayback lacks.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, ConfigError::Unsupported { .. })
    }

    /// The JSON path of the bad value, for semantic errors.
    pub fn path(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { path, .. } | ConfigError::Unsupported { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The file the error is in (`stdin` for standard input).
    pub fn file(&self) -> &str {
        match self {
            ConfigError::Io { path, .. } => path,
            ConfigError::Syntax { file, .. }
            | ConfigError::Invalid { file, .. }
            | ConfigError::Unsupported { file, .. } => file,
        }
    }

    /// Line and column of a syntax error.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Syntax { line, column, .. } => Some((*line, *column)),
            _ => None,
        }
    }
}

/// What a warning is about, so a program can filter them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WarningKind {
    /// A key no V2Ray 4.34 or Rayback struct has; ignored.
    UnknownKey,
    /// A routing rule names an outbound tag nothing defines; V2Ray routes
    /// such connections to the default (first) outbound.
    UnknownOutboundTag,
    /// Two outbounds (or portals) share a tag; the last one wins.
    DuplicateTag,
    /// A portal's tag equals an outbound's tag and replaces that outbound.
    PortalShadowsOutbound,
    /// A bridge's routing lacks the two rules the reverse-proxy guide asks for.
    BridgeRouting,
    /// A VMess `security` name V2Ray does not know; treated as `auto`.
    VmessSecurity,
    /// A setting V2Ray honours but that has no effect in Rayback (statistics,
    /// settings of a transport that is not selected, ...).
    Ignored,
    /// A setting that is valid but almost certainly not what was meant.
    Suspicious,
}

/// Something worth telling a person that does not stop loading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub kind: WarningKind,
    /// The file the warning is about (`stdin` for standard input).
    pub file: String,
    /// JSON path of the value concerned.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.path, self.message)
    }
}
