//! From flags to a checked configuration: the files of `-config` and
//! `-confdir` (or `./config.json`, or standard input) read and merged as
//! V2Ray does, or the quick start's configuration; then `--metrics` and
//! `--metrics-auth` applied and the whole checked by `build`. [`load`] is also what SIGHUP
//! calls to re-read the files.
//!
//! Part of the `cli` module. Not here: parsing the flags (`flags`), the
//! quick start's JSON (`quick`), what a configuration means (`build`) and
//! running it (`run`).

use rayback_config::{Config, ConfigError, Source};

use super::{Args, Role};

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
            let source = rayback_config::load_file(name)?;
            // An extension decides over the flag, as in V2Ray.
            Ok(match args.format {
                Some(format) => source.with_format(format),
                None => source,
            })
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

/// Loads and checks the configuration for `role`, from the files or from
/// the quick-start flags, with `--metrics` and `--metrics-auth` applied: the config, or the
/// message to print before exiting with [`EXIT_BAD_CONFIG`](super::EXIT_BAD_CONFIG).
pub fn load(role: Role, args: &Args) -> Result<Config, String> {
    let mut config = match args.quick_start(role)? {
        Some(quick) => quick.config().map_err(|error| error.to_string())?,
        None => load_files(role, args)?,
    };
    if let Some(metrics) = args.metrics {
        config.rayback.metrics = Some(metrics);
    }
    if let Some(auth) = &args.metrics_auth {
        config.rayback.metrics_auth = Some(auth.clone());
    }
    crate::check(&config).map_err(|error| format!("{error:#}"))?;
    Ok(config)
}

fn load_files(role: Role, args: &Args) -> Result<Config, String> {
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
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    fn parse(role: Role, args: &[&str]) -> Result<Args, clap::Error> {
        Args::parse_for(role, args.iter().map(OsString::from))
    }

    const ID: &str = "27848739-7e62-4138-9fd3-098a63964b6b";

    #[test]
    fn metrics_go_with_either_kind_of_configuration() {
        assert!(parse(
            Role::Portal,
            &["-config", "a.json", "--metrics", "127.0.0.1:9100"]
        )
        .is_ok());
        let args = parse(
            Role::Portal,
            &[
                "--tunnel",
                "1024",
                "--public",
                "80",
                "--id",
                ID,
                "--metrics",
                "127.0.0.1:9100",
            ],
        )
        .unwrap();
        let config = load(Role::Portal, &args).unwrap();
        assert_eq!(
            config.rayback.metrics,
            Some("127.0.0.1:9100".parse().unwrap())
        );
    }

    #[test]
    fn metrics_auth_goes_with_a_quick_start_and_its_printed_file() {
        let args = parse(
            Role::Portal,
            &[
                "--tunnel",
                "1024",
                "--public",
                "80",
                "--id",
                ID,
                "--metrics",
                "127.0.0.1:9100",
                "--metrics-auth",
                "ops:pw",
            ],
        )
        .unwrap();
        let config = load(Role::Portal, &args).unwrap();
        let auth = config.rayback.metrics_auth.unwrap();
        assert_eq!((auth.user.as_str(), auth.password.as_str()), ("ops", "pw"));
        // --print-config of a quick start keeps it, so the file runs the same.
        let printed = args.quick_start(Role::Portal).unwrap().unwrap().to_text();
        assert!(printed.contains("\"metricsAuth\": \"ops:pw\""), "{printed}");
    }
}
