//! The top-level `log` object: where the access and error logs go (the
//! console, `none`, or a file) and the level; an unknown level warns and
//! means `warning`, as in V2Ray.
//!
//! Only the object is read here, from the piece `build`'s `mod.rs` kept
//! after merging; opening log files and filtering by level are the app's.

use crate::error::{ConfigError, WarningKind};
use crate::model::*;
use crate::reader::Cx;

use super::Piece;

pub(super) fn build_log(cx: &mut Cx<'_>, piece: &Piece<'_>) -> Result<Log, ConfigError> {
    let object = cx.object(piece.node, &piece.path)?;
    object.warn_unknown(cx, &["access", "error", "loglevel"]);
    let target = |cx: &Cx<'_>, key: &str| -> Result<LogTarget, ConfigError> {
        let text = match object.get(key) {
            Some(node) => cx.string(node, &object.at(key))?,
            None => String::new(),
        };
        Ok(match text.as_str() {
            "" => LogTarget::Console,
            "none" => LogTarget::None,
            _ => LogTarget::File(text),
        })
    };
    let mut log = Log {
        access: target(cx, "access")?,
        error: target(cx, "error")?,
        level: LogLevel::Warning,
    };
    let level = match object.get("loglevel") {
        Some(node) => cx.string(node, &object.at("loglevel"))?,
        None => String::new(),
    };
    log.level = match level.to_ascii_lowercase().as_str() {
        "debug" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "error" => LogLevel::Error,
        "warning" | "" => LogLevel::Warning,
        "none" => {
            log.access = LogTarget::None;
            log.error = LogTarget::None;
            LogLevel::None
        }
        _ => {
            cx.warn(
                WarningKind::Suspicious,
                &object.at("loglevel"),
                format!("unknown log level {level:?} means \"warning\" (known: debug, info, warning, error, none)"),
            );
            LogLevel::Warning
        }
    };
    Ok(log)
}
