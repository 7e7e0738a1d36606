//! The command line both binaries share: V2Ray's flags, Rayback's roles.
//!
//! `bridge` and `portal` are one program with two names: each loads a V2Ray
//! configuration and checks that it holds its role (`reverse.bridges` or
//! `reverse.portals`); a configuration with both roles runs under either.
//! Flags follow V2Ray 4.34 (`-config`/`-c FILE`, repeatable; `-confdir`;
//! `-test`; `-format json|toml`; `-version`), in single- or double-dash form
//! and as `-flag=value`.

use std::fmt;
use std::process::ExitCode;

use rayback_config::{Config, ConfigError, Format, Source};

/// Which binary is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Bridge,
    Portal,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Bridge => "bridge",
            Role::Portal => "portal",
        }
    }

    /// The `reverse` list this role needs, for messages.
    fn needs(self) -> &'static str {
        match self {
            Role::Bridge => "reverse.bridges",
            Role::Portal => "reverse.portals",
        }
    }

    fn holds(self, config: &Config) -> bool {
        match self {
            Role::Bridge => !config.reverse.bridges.is_empty(),
            Role::Portal => !config.reverse.portals.is_empty(),
        }
    }
}

/// V2Ray's exit code for a configuration it cannot use.
pub const EXIT_BAD_CONFIG: u8 = 23;
/// Exit code for a start failure (a port in use), V2Ray's `os.Exit(-1)`.
pub const EXIT_START_FAILED: u8 = 255;
/// Exit code for wrong flags.
pub const EXIT_USAGE: u8 = 2;

/// The parsed command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args {
    pub configs: Vec<String>,
    pub confdir: Option<String>,
    pub test: bool,
    pub format: Option<Format>,
    pub version: bool,
    pub help: bool,
    /// `--log-format json`: machine-readable logs.
    pub json_logs: bool,
}

/// A command line that could not be understood.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Args {
    /// Parses arguments (without the program name).
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Args, UsageError> {
        let mut parsed = Args::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                return Err(UsageError(format!("unexpected argument {arg:?}")));
            };
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (flag, None),
            };
            let mut value = |what: &str| {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| UsageError(format!("-{name} needs {what}")))
            };
            match name {
                "config" | "c" => parsed.configs.push(value("a file")?),
                "confdir" => parsed.confdir = Some(value("a directory")?),
                "format" => {
                    let format = value("json or toml")?;
                    parsed.format = Some(match format.to_ascii_lowercase().as_str() {
                        "json" => Format::Json,
                        "toml" => Format::Toml,
                        "pb" | "protobuf" => {
                            return Err(UsageError(
                                "-format pb: protobuf configurations are not supported by Rayback; use json or toml".into(),
                            ))
                        }
                        other => return Err(UsageError(format!("-format {other:?}: expected json or toml"))),
                    });
                }
                "test" | "t" => parsed.test = true,
                "version" | "v" => parsed.version = true,
                "help" | "h" => parsed.help = true,
                "log-format" => match value("text or json")?.as_str() {
                    "json" => parsed.json_logs = true,
                    "text" => parsed.json_logs = false,
                    other => {
                        return Err(UsageError(format!(
                            "--log-format {other:?}: expected text or json"
                        )))
                    }
                },
                _ => return Err(UsageError(format!("unknown flag {arg:?}"))),
            }
        }
        Ok(parsed)
    }
}

fn usage(role: Role) -> String {
    let name = role.name();
    format!(
        "usage: {name} [-config FILE]... [-confdir DIR] [-format json|toml] [-test] [-version] [--log-format text|json]\n\
         \n\
         Runs the Rayback {name} from a V2Ray 4.x configuration (JSON with comments, or TOML).\n\
         Several -config files merge as V2Ray merges them; `-config stdin:` reads standard input.\n\
         Without -config, ./config.json is used if present.\n\
         -test checks the configuration and exits 0, or 23 with the reason.\n"
    )
}

/// The version lines, shaped like V2Ray's.
pub fn version_text(role: Role) -> String {
    format!(
        "Rayback {} {} (V2Ray 4.34 compatible)\nA reverse proxy that speaks VMess and Mux.Cool.",
        role.name(),
        env!("CARGO_PKG_VERSION")
    )
}

/// Reads every configuration source the arguments name.
fn sources(args: &Args) -> Result<Vec<Source>, ConfigError> {
    let mut names = args.configs.clone();
    if let Some(dir) = &args.confdir {
        names.extend(confdir_files(dir)?);
    }
    if names.is_empty() {
        names.push(if std::path::Path::new("config.json").exists() {
            "config.json".to_owned()
        } else {
            "stdin:".to_owned()
        });
    }
    names
        .iter()
        .map(|name| {
            let mut source = rayback_config::load_file(name)?;
            if let Some(format) = args.format {
                // An extension decides over the flag, as in V2Ray.
                if !(name.ends_with(".json") || name.ends_with(".toml")) {
                    source.format = format;
                }
            }
            Ok(source)
        })
        .collect()
}

/// The `*.json` files of a directory, in name order.
fn confdir_files(dir: &str) -> Result<Vec<String>, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<String> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| path.display().to_string())
        .collect();
    files.sort();
    Ok(files)
}

/// Loads and checks the configuration for `role`: the config, or the
/// message to print before exiting with [`EXIT_BAD_CONFIG`].
pub fn load(role: Role, args: &Args) -> Result<Config, String> {
    let sources = sources(args).map_err(|error| error.to_string())?;
    let loaded = rayback_config::parse(&sources).map_err(|error| error.to_string())?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let config = loaded.config;
    if !role.holds(&config) {
        // Not an error: any V2Ray configuration within Rayback's protocols
        // runs under either binary; the note says why no tunnel will form.
        eprintln!(
            "note: this configuration has no {needs}, so this {name} runs it as a plain proxy \
             (a {name} needs `\"reverse\": {{\"{list}\": [{{\"tag\": …, \"domain\": …}}]}}`)",
            needs = role.needs(),
            name = role.name(),
            list = role.needs().trim_start_matches("reverse."),
        );
    }
    crate::check(&config).map_err(|error| format!("{error:#}"))?;
    Ok(config)
}

/// The whole program behind `bridge` and `portal`.
pub fn main(role: Role) -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("{}: {error}\n\n{}", role.name(), usage(role));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if args.help {
        print!("{}", usage(role));
        return ExitCode::SUCCESS;
    }
    println!("{}", version_text(role));
    if args.version {
        return ExitCode::SUCCESS;
    }
    let config = match load(role, &args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!(
                "{}: failed to load the configuration:\n{message}",
                role.name()
            );
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if args.test {
        println!("Configuration OK.");
        return ExitCode::SUCCESS;
    }
    match crate::run::run_until_signal(config, args.json_logs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}: {error:#}", role.name());
            ExitCode::from(EXIT_START_FAILED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, UsageError> {
        Args::parse(args.iter().map(|arg| arg.to_string()))
    }

    #[test]
    fn takes_v2ray_flags_in_every_form() {
        let args = parse(&[
            "-config",
            "a.json",
            "-c=b.json",
            "--config",
            "c.toml",
            "-test",
            "--format=toml",
        ])
        .unwrap();
        assert_eq!(args.configs, ["a.json", "b.json", "c.toml"]);
        assert!(args.test);
        assert_eq!(args.format, Some(Format::Toml));
        assert!(parse(&["--version"]).unwrap().version);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert!(parse(&["-config"]).is_err());
        assert!(parse(&["-bogus"]).is_err());
        assert!(parse(&["stray"]).is_err());
        let error = parse(&["-format", "pb"]).unwrap_err();
        assert!(error.to_string().contains("not supported"));
    }
}
