#![doc = include_str!("../README.md")]

mod build;
mod dialect;
mod dns;
mod emit;
mod error;
mod handlers;
mod model;
mod reader;
mod routing;

use std::io::Read;
use std::path::Path;

pub use error::{ConfigError, Warning, WarningKind};
pub use model::*;

/// The syntax of a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// V2Ray's JSON with `//`, `#` and `/* */` comments.
    Json,
    Toml,
}

impl Format {
    /// TOML for a `.toml` file name, JSON otherwise (V2Ray's rule: the
    /// extension wins over a `-format` flag; see [`Source::with_format`]).
    pub fn from_name(name: &str) -> Format {
        let is_toml = Path::new(name)
            .extension()
            .is_some_and(|extension| extension.eq_ignore_ascii_case("toml"));
        if is_toml {
            Format::Toml
        } else {
            Format::Json
        }
    }

    /// Parses a `-format` value (`json`, `toml`), ignoring case.
    pub fn from_flag(flag: &str) -> Option<Format> {
        match flag.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }
}

/// One configuration text and where it came from. `Debug` shows the size
/// of the text, not the text (it holds VMess IDs).
#[derive(Clone, PartialEq, Eq)]
pub struct Source {
    /// The file path as given, or `stdin`; used in messages and, as in
    /// V2Ray, by the merge rule for names containing `tail`.
    pub name: String,
    pub text: String,
    pub format: Format,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .field("format", &self.format)
            .finish()
    }
}

impl Source {
    /// A source whose format follows its name's extension.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Source {
        let name = name.into();
        let format = Format::from_name(&name);
        Source {
            name,
            text: text.into(),
            format,
        }
    }

    /// Applies a `-format` flag: a `.json` or `.toml` extension still wins.
    pub fn with_format(mut self, flag: Format) -> Source {
        let lowered = self.name.to_ascii_lowercase();
        if !lowered.ends_with(".json") && !lowered.ends_with(".toml") {
            self.format = flag;
        }
        self
    }
}

/// Reads a configuration file; `stdin:` (V2Ray's spelling) or `-` reads
/// standard input, which is JSON unless changed with [`Source::with_format`].
pub fn load_file(path: impl AsRef<Path>) -> Result<Source, ConfigError> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    if shown == "stdin:" || shown == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| ConfigError::Io {
                path: "stdin".to_owned(),
                source,
            })?;
        return Ok(Source {
            name: "stdin".to_owned(),
            text,
            format: Format::Json,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: shown.clone(),
        source,
    })?;
    Ok(Source::new(shown, text))
}

/// A loaded configuration and what is worth telling about it.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

/// Parses, merges (first source is the base) and validates `sources`.
pub fn parse(sources: &[Source]) -> Result<Loaded, ConfigError> {
    if sources.is_empty() {
        return Err(ConfigError::Invalid {
            file: "(none)".to_owned(),
            path: "(top level)".to_owned(),
            message: "no configuration source given".to_owned(),
        });
    }
    let mut documents = Vec::with_capacity(sources.len());
    for source in sources {
        let root = match source.format {
            Format::Json => dialect::parse_json(&source.name, &source.text)?,
            Format::Toml => dialect::parse_toml(&source.name, &source.text)?,
        };
        documents.push(build::Document {
            name: source.name.clone(),
            root,
        });
    }
    let mut warnings = Vec::new();
    let config = build::build(&documents, &mut warnings)?;
    Ok(Loaded { config, warnings })
}

/// Parses one JSON text named `name` (a convenience for tests and tools).
pub fn parse_str(name: &str, text: &str) -> Result<Loaded, ConfigError> {
    parse(&[Source::new(name, text)])
}
