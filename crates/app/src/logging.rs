//! The error log through `tracing`: level and target from the config's
//! `log` object, text or JSON lines.

use std::fs::OpenOptions;
use std::sync::Mutex;

use anyhow::{Context, Result};
use rayback_config::{Log, LogLevel, LogTarget};
use tracing_subscriber::EnvFilter;

/// The `tracing` filter for a V2Ray log level. `RUST_LOG` overrides it.
fn filter(level: LogLevel) -> EnvFilter {
    if let Ok(filter) = EnvFilter::try_from_default_env() {
        return filter;
    }
    let level = match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warning => "warn",
        LogLevel::Error => "error",
        LogLevel::None => "off",
    };
    EnvFilter::new(level)
}

/// Installs the global subscriber. Call once, before starting the app.
pub fn init(log: &Log, json: bool) -> Result<()> {
    let filter = filter(log.level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let installed = match &log.error {
        LogTarget::None => tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("off"))
            .try_init(),
        LogTarget::Console => {
            let builder = builder.with_writer(std::io::stderr);
            if json {
                builder.json().try_init()
            } else {
                builder.try_init()
            }
        }
        LogTarget::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening the error log {path}"))?;
            let builder = builder.with_ansi(false).with_writer(Mutex::new(file));
            if json {
                builder.json().try_init()
            } else {
                builder.try_init()
            }
        }
    };
    // A second init (tests, several apps in one process) keeps the first.
    let _ = installed;
    Ok(())
}
