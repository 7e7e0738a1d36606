//! The command line both binaries share: V2Ray's flags, Rayback's quick
//! start, and the packaging helpers (completions, man page).
//!
//! `bridge` and `portal` are one program with two names. Either runs a
//! V2Ray configuration and checks that it holds its role
//! (`reverse.bridges` or `reverse.portals`); a configuration with both
//! roles runs under either. Or, without a file, a handful of quick-start
//! flags (the [`quick`] module) build the V2Ray reverse-proxy guide's
//! configuration for the role.
//!
//! The flags are a clap definition ([`command`]). V2Ray 4.34 spells long
//! flags with one dash (`-config`, `-test`) and Go's flag package accepts
//! `-flag=value` and `-flag value` alike; [`normalize`] rewrites those to
//! clap's `--flag` form before parsing, so both spellings work for every
//! flag. Shell completions and the man page are generated from the same
//! definition (`--completions SHELL`, `--man`).
//!
//! | flag | what it does |
//! |---|---|
//! | `-config`/`-c FILE` (repeatable), `-confdir DIR`, `-format json\|toml` | V2Ray's configuration sources |
//! | `-test`, `-version` | V2Ray's check and version |
//! | `--tunnel`, `--public`, `--tls-cert`, `--tls-key` (portal); `--portal` (repeatable: one `vnext` entry per portal), `--to`, `--security`, `--ws-host`, `--tls`, `--server-name`, `--ca`, `--insecure` (bridge); `--id`, `--domain`, `--ws` | the quick start, exclusive with the file flags |
//! | `--metrics ADDR` | Prometheus endpoint and status page (`rayback.metrics`), with a file or a quick start |
//! | `--metrics-auth USER:PASSWORD` | basic auth on `/`, `/status`, `/metrics` (`rayback.metricsAuth`), with a file or a quick start |
//! | `--drain-delay MS` | after SIGTERM, stay unready but serving this long (`rayback.drainDelay`), quick start |
//! | `--print-config` | print the configuration as V2Ray JSON and exit |
//! | `--log-format text\|json` | log lines for people or machines |
//! | `--new-id`, `--completions SHELL`, `--man` | print a UUID, completions, or the man page, alone |
//!
//! One file per job: `flags` is the clap definition, [`normalize`] and the
//! checks of flag combinations; `load` turns the flags into a checked
//! configuration ([`load`]); `package` renders the completions and the man
//! page; [`quick`] writes the quick start's configuration. This file holds
//! what they share, [`Role`] and the exit codes, and [`main`], the whole
//! program.
//!
//! Not here: what a configuration means (`build`) and running it (`run`).

pub mod quick;

mod flags;
mod load;
mod package;

pub use flags::{command, normalize, Args, LogFormat};
pub use load::load;
pub use package::{completions, man_page};

use std::io::Write;
use std::process::ExitCode;

use rayback_config::Config;
use uuid::Uuid;

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

    /// The quick-start flags that belong to the other role: absent from
    /// this role's command, and refused with a pointer to the right ones.
    fn foreign_flags(self) -> &'static [&'static str] {
        match self {
            Role::Bridge => &["tunnel", "public", "tls-cert", "tls-key"],
            Role::Portal => &[
                "portal",
                "to",
                "security",
                "ws-host",
                "tls",
                "server-name",
                "ca",
                "insecure",
            ],
        }
    }

    /// The message for the other role's quick-start `flag`.
    fn foreign_message(self, flag: &str) -> String {
        let other = match self {
            Role::Bridge => "portal",
            Role::Portal => "bridge",
        };
        // The bridge's TLS flags name what a portal does another way.
        let hint = match (self, flag) {
            (Role::Portal, "--tls" | "--server-name" | "--ca" | "--insecure") => {
                " (a portal serves TLS with --tls-cert and --tls-key)"
            }
            _ => "",
        };
        format!("{flag} is a {other} flag{hint}; {}", self.quick_usage())
    }

    /// One line on what the quick start of this role needs.
    fn quick_usage(self) -> &'static str {
        match self {
            Role::Bridge => "the quick-start bridge takes --portal HOST:PORT, --to HOST:PORT (once per service) and --id UUID",
            Role::Portal => "the quick-start portal takes --tunnel [IP:]PORT, --public [IP:]PORT (once per service) and --id UUID",
        }
    }
}

/// V2Ray's exit code for a configuration it cannot use.
pub const EXIT_BAD_CONFIG: u8 = 23;
/// Exit code for a start failure (a port in use), V2Ray's `os.Exit(-1)`.
pub const EXIT_START_FAILED: u8 = 255;
/// Exit code for wrong flags.
pub const EXIT_USAGE: u8 = 2;

/// The version lines, shaped like V2Ray's.
pub fn version_text(role: Role) -> String {
    format!(
        "Rayback {} {} (V2Ray 4.34 compatible)\nA reverse proxy that speaks VMess and Mux.Cool.",
        role.name(),
        env!("CARGO_PKG_VERSION")
    )
}

/// Prints a clap error or help text; the exit code says which it was.
fn exit_clap(error: &clap::Error) -> ExitCode {
    let _ = error.print();
    if error.use_stderr() {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::SUCCESS
    }
}

/// Writes `text` to standard output; a closed pipe is not worth a panic.
fn print_out(text: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("writing to standard output: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The whole program behind `bridge` and `portal`.
pub fn main(role: Role) -> ExitCode {
    let args = match Args::parse_for(role, std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(error) => return exit_clap(&error),
    };
    if args.new_id {
        return print_out(format!("{}\n", Uuid::new_v4()).as_bytes());
    }
    if let Some(shell) = args.completions {
        return print_out(&completions(role, shell));
    }
    if args.man {
        return match man_page(role) {
            Ok(page) => print_out(&page),
            Err(error) => {
                eprintln!("{}: rendering the man page: {error}", role.name());
                ExitCode::FAILURE
            }
        };
    }
    if !args.print_config {
        println!("{}", version_text(role));
        if args.version {
            return ExitCode::SUCCESS;
        }
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
    if args.print_config {
        let text = match args.quick_start(role) {
            // The quick start's own text: the guide's shape, defaults left out.
            Ok(Some(quick)) => quick.to_text(),
            // Files: the merged result, every default spelled out.
            _ => {
                let json = config.to_v2ray_json();
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&json).unwrap_or_default()
                )
            }
        };
        return print_out(text.as_bytes());
    }
    if args.test {
        println!("Configuration OK.");
        return ExitCode::SUCCESS;
    }
    // SIGHUP re-reads the files; a quick start has none to re-read.
    let loader: Option<crate::run::Loader> = match args.quick_start(role) {
        Ok(None) => {
            let args = args.clone();
            Some(Box::new(move || load(role, &args)))
        }
        _ => None,
    };
    match crate::run::run_with_reload(config, args.json_logs(), loader) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}: {error:#}", role.name());
            ExitCode::from(EXIT_START_FAILED)
        }
    }
}
