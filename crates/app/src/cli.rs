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
//! | `--tunnel`, `--public` (portal); `--portal`, `--to`, `--security` (bridge); `--id`, `--domain` | the quick start, exclusive with the file flags |
//! | `--metrics ADDR` | Prometheus endpoint (`rayback.metrics`), with a file or a quick start |
//! | `--print-config` | print the configuration as V2Ray JSON and exit |
//! | `--log-format text\|json` | log lines for people or machines |
//! | `--new-id`, `--completions SHELL`, `--man` | print a UUID, completions, or the man page, alone |
//!
//! Not here: what a configuration means (`build`) and running it (`run`).

#[path = "quick.rs"]
pub mod quick;

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args as _, Command, CommandFactory, FromArgMatches, Parser, ValueEnum};
use clap_complete::Shell;
use rayback_config::{Config, ConfigError, Format, Source};
use uuid::Uuid;

use quick::{BridgeFlags, HostPort, PortalFlags, QuickStart, Security};

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
            Role::Bridge => &["tunnel", "public"],
            Role::Portal => &["portal", "to", "security"],
        }
    }

    /// The message for the other role's quick-start `flag`.
    fn foreign_message(self, flag: &str) -> String {
        let other = match self {
            Role::Bridge => "portal",
            Role::Portal => "bridge",
        };
        format!("{flag} is a {other} flag; {}", self.quick_usage())
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

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

const V2RAY: &str = "V2Ray flags (one or two dashes)";
const QUICK: &str = "Quick start (no configuration file)";
const OUTPUT: &str = "Output and packaging";

/// The parsed command line of either role. Parse with
/// [`Args::parse_for`], which knows the role; the fields are plain so tests
/// and tools can build one (the other role's quick-start fields stay empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args {
    pub configs: Vec<String>,
    pub confdir: Option<String>,
    pub format: Option<Format>,
    pub test: bool,
    pub version: bool,
    /// Portal quick start.
    pub tunnel: Option<SocketAddr>,
    pub public: Vec<SocketAddr>,
    /// Bridge quick start.
    pub portal: Option<HostPort>,
    pub to: Vec<HostPort>,
    pub security: Option<Security>,
    /// Quick start, both roles.
    pub id: Option<Uuid>,
    pub domain: Option<String>,
    pub metrics: Option<SocketAddr>,
    pub print_config: bool,
    pub log_format: LogFormat,
    pub new_id: bool,
    pub completions: Option<Shell>,
    pub man: bool,
}

// The clap definition in four parts, so that each binary's command holds
// only its own quick-start flags (help, completions and man page alike):
// V2Ray's flags, then the portal's or the bridge's, then the output flags.

/// V2Ray's own flags.
#[derive(Parser)]
#[command(disable_version_flag = true, max_term_width = 100)]
struct V2RayFlags {
    /// A V2Ray configuration file, JSON (comments allowed) or TOML; repeat to merge
    /// several as V2Ray does; `stdin:` reads standard input. Default: ./config.json
    #[arg(short = 'c', long = "config", value_name = "FILE", help_heading = V2RAY)]
    configs: Vec<String>,
    /// Also load every *.json file of DIR, in name order
    #[arg(long, value_name = "DIR", help_heading = V2RAY)]
    confdir: Option<String>,
    /// Format of files without a .json or .toml extension (and of stdin)
    #[arg(long, value_name = "json|toml", value_parser = parse_format, help_heading = V2RAY)]
    format: Option<Format>,
    /// Check the configuration and exit: 0 if usable, 23 with the reason if not
    #[arg(short = 't', long, help_heading = V2RAY)]
    test: bool,
    /// Print the version and exit
    #[arg(short = 'v', long, help_heading = V2RAY)]
    version: bool,
}

/// The portal's quick start.
#[derive(clap::Args)]
struct PortalQuickFlags {
    /// Where bridges connect (VMess), e.g. 0.0.0.0:1024 or just 1024
    #[arg(long, value_name = "[IP:]PORT", value_parser = parse_listen, help_heading = QUICK)]
    tunnel: Option<SocketAddr>,
    /// A public listener; repeat for several services (the i-th --public reaches the
    /// bridge's i-th --to)
    #[arg(long, value_name = "[IP:]PORT", value_parser = parse_listen, help_heading = QUICK)]
    public: Vec<SocketAddr>,
    /// The VMess user ID both sides share (make one with --new-id)
    #[arg(long, value_name = "UUID", help_heading = QUICK)]
    id: Option<Uuid>,
    /// The tunnel's name, equal on both sides; never resolved [default: rayback.internal]
    #[arg(long, value_name = "DOMAIN", value_parser = parse_domain, help_heading = QUICK)]
    domain: Option<String>,
}

/// The bridge's quick start.
#[derive(clap::Args)]
struct BridgeQuickFlags {
    /// The portal's tunnel address
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port, help_heading = QUICK)]
    portal: Option<HostPort>,
    /// A local service; repeat for several services, in the order of the portal's --public
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port, help_heading = QUICK)]
    to: Vec<HostPort>,
    /// The VMess user ID both sides share (make one with --new-id)
    #[arg(long, value_name = "UUID", help_heading = QUICK)]
    id: Option<Uuid>,
    /// The tunnel's name, equal on both sides; never resolved [default: rayback.internal]
    #[arg(long, value_name = "DOMAIN", value_parser = parse_domain, help_heading = QUICK)]
    domain: Option<String>,
    /// VMess body encryption [default: auto]
    #[arg(long, value_enum, value_name = "CIPHER", help_heading = QUICK)]
    security: Option<Security>,
}

/// Output, observability and packaging.
#[derive(clap::Args)]
struct OutputFlags {
    /// Serve Prometheus /metrics on ADDR (sets rayback.metrics; with a file, overrides it)
    #[arg(long, value_name = "IP:PORT", help_heading = OUTPUT)]
    metrics: Option<SocketAddr>,
    /// Print the configuration as V2Ray JSON and exit (a quick start becomes a file)
    #[arg(long, help_heading = OUTPUT)]
    print_config: bool,
    /// Log lines as text or as JSON objects
    #[arg(long, value_enum, value_name = "text|json", default_value_t, hide_default_value = true, help_heading = OUTPUT)]
    log_format: LogFormat,
    /// Print a fresh random UUID for --id and exit
    #[arg(long, exclusive = true, help_heading = OUTPUT)]
    new_id: bool,
    /// Print shell completions for SHELL and exit
    #[arg(long, value_enum, value_name = "SHELL", exclusive = true, help_heading = OUTPUT)]
    completions: Option<Shell>,
    /// Print the man page (roff) and exit
    #[arg(long, exclusive = true, help_heading = OUTPUT)]
    man: bool,
}

impl Args {
    /// Fills the fields from `role`'s matches.
    fn from_matches(role: Role, matches: &clap::ArgMatches) -> Result<Args, clap::Error> {
        let v2ray = V2RayFlags::from_arg_matches(matches)?;
        let output = OutputFlags::from_arg_matches(matches)?;
        let mut args = Args {
            configs: v2ray.configs,
            confdir: v2ray.confdir,
            format: v2ray.format,
            test: v2ray.test,
            version: v2ray.version,
            metrics: output.metrics,
            print_config: output.print_config,
            log_format: output.log_format,
            new_id: output.new_id,
            completions: output.completions,
            man: output.man,
            ..Args::default()
        };
        match role {
            Role::Portal => {
                let quick = PortalQuickFlags::from_arg_matches(matches)?;
                args.tunnel = quick.tunnel;
                args.public = quick.public;
                args.id = quick.id;
                args.domain = quick.domain;
            }
            Role::Bridge => {
                let quick = BridgeQuickFlags::from_arg_matches(matches)?;
                args.portal = quick.portal;
                args.to = quick.to;
                args.id = quick.id;
                args.domain = quick.domain;
                args.security = quick.security;
            }
        }
        Ok(args)
    }
}

fn parse_format(text: &str) -> Result<Format, String> {
    match text.to_ascii_lowercase().as_str() {
        "pb" | "protobuf" => {
            Err("protobuf configurations are not supported by Rayback; use json or toml".to_owned())
        }
        _ => Format::from_flag(text).ok_or_else(|| "expected json or toml".to_owned()),
    }
}

fn parse_listen(text: &str) -> Result<SocketAddr, quick::QuickError> {
    quick::parse_listen(text)
}

fn parse_host_port(text: &str) -> Result<HostPort, quick::QuickError> {
    text.parse()
}

fn parse_domain(text: &str) -> Result<String, quick::QuickError> {
    quick::check_domain(text).map(|()| text.to_owned())
}

/// Example command lines for `--help` and the man page.
fn examples(role: Role) -> &'static [&'static str] {
    match role {
        Role::Portal => &[
            "portal -config /etc/rayback/portal.json",
            "portal -test -config portal.json",
            "portal --tunnel 0.0.0.0:1024 --public 0.0.0.0:8080 --id $(portal --new-id)",
            "portal --tunnel 1024 --public 80 --public 443 --id UUID    # two services",
            "portal --tunnel 1024 --public 80 --id UUID --print-config > portal.json",
        ],
        Role::Bridge => &[
            "bridge -config /etc/rayback/bridge.json",
            "bridge --portal portal.example.com:1024 --id UUID --to 127.0.0.1:80",
            "bridge --portal 203.0.113.7:1024 --id UUID --to 127.0.0.1:80 --to 127.0.0.1:443",
            "bridge --portal HOST:1024 --id UUID --to 127.0.0.1:80 --print-config > bridge.json",
        ],
    }
}

/// The exit codes, for the man page.
const EXIT_STATUS: &[(u8, &str)] = &[
    (0, "success; -test: the configuration is usable"),
    (EXIT_USAGE, "wrong flags or a wrong combination of them"),
    (
        EXIT_BAD_CONFIG,
        "the configuration cannot be used (V2Ray's code); the reason names the file and field",
    ),
    (
        EXIT_START_FAILED,
        "the configuration could not start, e.g. a port in use",
    ),
];

/// The clap definition of `role`'s command line: the source of `--help`,
/// the completions and the man page.
pub fn command(role: Role) -> Command {
    let name = role.name();
    let about = match role {
        Role::Portal => {
            "Rayback portal: the public side of a V2Ray-compatible reverse proxy. \
             Bridges connect to it; public connections travel back over theirs."
        }
        Role::Bridge => {
            "Rayback bridge: the private side of a V2Ray-compatible reverse proxy. \
             It dials the portal and serves public connections from local services."
        }
    };
    let mut after_help = String::from("Examples:");
    for line in examples(role) {
        after_help.push_str("\n  ");
        after_help.push_str(line);
    }
    let command = V2RayFlags::command();
    let command = match role {
        Role::Portal => PortalQuickFlags::augment_args(command),
        Role::Bridge => BridgeQuickFlags::augment_args(command),
    };
    let mut command = OutputFlags::augment_args(command)
        .name(name)
        .bin_name(name)
        .version(env!("CARGO_PKG_VERSION"))
        .about(about)
        .long_about(format!(
            "{about}\n\n\
             Runs a V2Ray 4.x configuration unchanged (-config FILE), or builds the V2Ray \
             reverse-proxy guide's configuration from the quick-start flags. Either side \
             of the tunnel may be a real v2ray 4.34.\n\n\
             Exit codes: 0 success, 2 wrong flags, 23 unusable configuration, \
             255 start failure (e.g. a port in use)."
        ))
        .after_help(after_help);
    command.build();
    command
}

/// Rewrites V2Ray-style flags to clap's: `-config x`, `-config=x`,
/// `-c x`, `-c=x` → `--config=x`; `-test=true` → `--test`,
/// `-test=false` → nothing. The value after a flag that takes one is
/// joined to it (`--config=x`) and never rewritten, nor is anything after
/// `--`. An unknown `-word` becomes `--word`, so clap names it whole in
/// its error (Go's flag package has no bundled short flags either).
pub fn normalize<I: IntoIterator<Item = OsString>>(command: &Command, args: I) -> Vec<OsString> {
    let mut normalized = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            normalized.push(arg);
            continue;
        };
        if text == "--" {
            normalized.push(arg);
            normalized.extend(args);
            break;
        }
        let (body, single_dash) = match text.strip_prefix("--") {
            Some(body) => (body, false),
            None => match text.strip_prefix('-') {
                Some(body) => (body, true),
                None => {
                    normalized.push(arg);
                    continue;
                }
            },
        };
        if body.is_empty() {
            normalized.push(arg);
            continue;
        }
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let mut chars = name.chars();
        let short = match (chars.next(), chars.next()) {
            (Some(only), None) if single_dash => Some(only),
            _ => None,
        };
        let found = command.get_arguments().find(|candidate| {
            candidate.get_long() == Some(name)
                || (short.is_some() && candidate.get_short() == short)
        });
        let Some(found) = found else {
            normalized.push(if single_dash && short.is_none() {
                OsString::from(format!("-{text}"))
            } else {
                arg
            });
            continue;
        };
        let Some(long) = found.get_long() else {
            normalized.push(arg);
            continue;
        };
        if found.get_action().takes_values() {
            match inline {
                Some(value) => normalized.push(OsString::from(format!("--{long}={value}"))),
                // Joined with `=`, so a value starting with `-` stays a
                // value (Go's flag package takes the next word whatever it is).
                None => match args.next() {
                    Some(value) => {
                        let mut joined = OsString::from(format!("--{long}="));
                        joined.push(value);
                        normalized.push(joined);
                    }
                    None => normalized.push(OsString::from(format!("--{long}"))),
                },
            }
        } else {
            match inline {
                // `-h` stays short: clap's short help.
                None if short.is_some() => normalized.push(arg),
                None | Some("true") => normalized.push(OsString::from(format!("--{long}"))),
                Some("false") => {}
                Some(value) => normalized.push(OsString::from(format!("--{long}={value}"))),
            }
        }
    }
    normalized
}

impl Args {
    /// Parses `role`'s arguments (without the program name), V2Ray
    /// spellings included, and checks the combinations: a wrong one is a
    /// clap error that prints as usage (exit 2).
    pub fn parse_for<I: IntoIterator<Item = OsString>>(
        role: Role,
        args: I,
    ) -> Result<Args, clap::Error> {
        let mut command = command(role);
        let normalized = normalize(&command, args);
        let argv = std::iter::once(OsString::from(role.name())).chain(normalized);
        let matches = match command.try_get_matches_from_mut(argv) {
            Ok(matches) => matches,
            Err(error) => {
                // The other role's flag: say whose it is, not just "unexpected".
                let foreign = match error.get(ContextKind::InvalidArg) {
                    Some(ContextValue::String(flag))
                        if error.kind() == ErrorKind::UnknownArgument =>
                    {
                        let name = flag.trim_start_matches('-');
                        let name = name.split('=').next().unwrap_or(name);
                        role.foreign_flags()
                            .contains(&name)
                            .then(|| format!("--{name}"))
                    }
                    _ => None,
                };
                return Err(match foreign {
                    Some(flag) => {
                        command.error(ErrorKind::UnknownArgument, role.foreign_message(&flag))
                    }
                    None => error,
                });
            }
        };
        let args =
            Args::from_matches(role, &matches).map_err(|error| error.format(&mut command))?;
        if let Err(message) = args.check(role) {
            return Err(command.error(ErrorKind::ArgumentConflict, message));
        }
        Ok(args)
    }

    /// `--log-format json`.
    pub fn json_logs(&self) -> bool {
        self.log_format == LogFormat::Json
    }

    fn quick_flags(&self) -> Vec<&'static str> {
        let given = [
            ("--tunnel", self.tunnel.is_some()),
            ("--public", !self.public.is_empty()),
            ("--portal", self.portal.is_some()),
            ("--to", !self.to.is_empty()),
            ("--id", self.id.is_some()),
            ("--domain", self.domain.is_some()),
            ("--security", self.security.is_some()),
        ];
        given
            .into_iter()
            .filter_map(|(flag, is_given)| is_given.then_some(flag))
            .collect()
    }

    fn file_flags(&self) -> Vec<&'static str> {
        let given = [
            ("-config", !self.configs.is_empty()),
            ("-confdir", self.confdir.is_some()),
            ("-format", self.format.is_some()),
        ];
        given
            .into_iter()
            .filter_map(|(flag, is_given)| is_given.then_some(flag))
            .collect()
    }

    /// The combinations clap's definition cannot say.
    fn check(&self, role: Role) -> Result<(), String> {
        let quick_flags = self.quick_flags();
        let file_flags = self.file_flags();
        if !quick_flags.is_empty() && !file_flags.is_empty() {
            return Err(format!(
                "{} and {} cannot be combined: the quick-start flags build the whole \
                 configuration, a file is the other way to give one (--print-config turns \
                 the quick-start flags into a file)",
                file_flags.join(", "),
                quick_flags.join(", "),
            ));
        }
        self.quick_start(role).map(|_| ())
    }

    /// The quick start these flags describe for `role`; `None` when no
    /// quick-start flag is given. The error is a usage message.
    pub fn quick_start(&self, role: Role) -> Result<Option<QuickStart>, String> {
        let given = self.quick_flags();
        if given.is_empty() {
            return Ok(None);
        }
        if let Some(foreign) = given
            .iter()
            .find(|flag| role.foreign_flags().contains(&flag.trim_start_matches('-')))
        {
            return Err(role.foreign_message(foreign));
        }
        let domain = self
            .domain
            .clone()
            .unwrap_or_else(|| quick::DEFAULT_DOMAIN.to_owned());
        let mut missing = Vec::new();
        let quick = match role {
            Role::Portal => {
                if self.tunnel.is_none() {
                    missing.push("--tunnel");
                }
                if self.public.is_empty() {
                    missing.push("--public");
                }
                if self.id.is_none() {
                    missing.push("--id");
                }
                match (self.tunnel, self.id) {
                    (Some(tunnel), Some(id)) if missing.is_empty() => {
                        QuickStart::Portal(PortalFlags {
                            tunnel,
                            public: self.public.clone(),
                            id,
                            domain,
                            metrics: self.metrics,
                        })
                    }
                    _ => return Err(missing_message(role, &missing)),
                }
            }
            Role::Bridge => {
                if self.portal.is_none() {
                    missing.push("--portal");
                }
                if self.to.is_empty() {
                    missing.push("--to");
                }
                if self.id.is_none() {
                    missing.push("--id");
                }
                match (&self.portal, self.id) {
                    (Some(portal), Some(id)) if missing.is_empty() => {
                        QuickStart::Bridge(BridgeFlags {
                            portal: portal.clone(),
                            to: self.to.clone(),
                            id,
                            domain,
                            security: self.security.unwrap_or_default(),
                            metrics: self.metrics,
                        })
                    }
                    _ => return Err(missing_message(role, &missing)),
                }
            }
        };
        quick.check().map_err(|error| error.to_string())?;
        Ok(Some(quick))
    }
}

fn missing_message(role: Role, missing: &[&str]) -> String {
    format!("{}; missing: {}", role.quick_usage(), missing.join(", "))
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
/// the quick-start flags, with `--metrics` applied: the config, or the
/// message to print before exiting with [`EXIT_BAD_CONFIG`].
pub fn load(role: Role, args: &Args) -> Result<Config, String> {
    let mut config = match args.quick_start(role)? {
        Some(quick) => quick.config().map_err(|error| error.to_string())?,
        None => load_files(role, args)?,
    };
    if let Some(metrics) = args.metrics {
        config.rayback.metrics = Some(metrics);
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

/// Shell completions for `role`, generated from [`command`].
pub fn completions(role: Role, shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command(role), role.name(), &mut out);
    out
}

/// The man page of `role` (roff), generated from [`command`], with
/// EXAMPLES and EXIT STATUS sections of its own.
pub fn man_page(role: Role) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(command(role));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    out.extend_from_slice(b".SH EXAMPLES\n.nf\n");
    for line in examples(role) {
        out.extend_from_slice(roff_escape(line).as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b".fi\n.SH \"EXIT STATUS\"\n");
    for (code, meaning) in EXIT_STATUS {
        out.extend_from_slice(format!(".TP\n{code}\n{}\n", roff_escape(meaning)).as_bytes());
    }
    out.extend_from_slice(b".SH \"SEE ALSO\"\n");
    let other = match role {
        Role::Bridge => "portal",
        Role::Portal => "bridge",
    };
    out.extend_from_slice(format!("\\fB{other}\\fR(1), \\fBv2ray\\fR(1)\n").as_bytes());
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// Text as one roff line: backslashes and dashes escaped, a leading
/// control character neutralized.
fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(role: Role, args: &[&str]) -> Result<Args, clap::Error> {
        Args::parse_for(role, args.iter().map(OsString::from))
    }

    fn error(role: Role, args: &[&str]) -> String {
        let error = parse(role, args).unwrap_err();
        assert!(error.use_stderr(), "{args:?} is not an error: {error}");
        error.render().to_string()
    }

    const ID: &str = "27848739-7e62-4138-9fd3-098a63964b6b";

    #[test]
    fn takes_v2ray_flags_in_every_form() {
        let args = parse(
            Role::Bridge,
            &[
                "-config",
                "a.json",
                "-c=b.json",
                "--config",
                "c.toml",
                "-c",
                "-d.json",
                "-test",
                "--format=toml",
                "-confdir=/etc/x",
            ],
        )
        .unwrap();
        assert_eq!(args.configs, ["a.json", "b.json", "c.toml", "-d.json"]);
        assert!(args.test);
        assert_eq!(args.format, Some(Format::Toml));
        assert_eq!(args.confdir.as_deref(), Some("/etc/x"));
        assert!(parse(Role::Portal, &["--version"]).unwrap().version);
        assert!(parse(Role::Portal, &["-version"]).unwrap().version);
        assert!(parse(Role::Portal, &["-test=true"]).unwrap().test);
        assert!(!parse(Role::Portal, &["-test=false"]).unwrap().test);
        assert!(parse(Role::Portal, &["-log-format", "json"])
            .unwrap()
            .json_logs());
        assert!(!parse(Role::Portal, &[]).unwrap().json_logs());
    }

    #[test]
    fn normalize_leaves_values_and_the_rest_alone() {
        let command = command(Role::Portal);
        let normalized = normalize(
            &command,
            ["-config", "-test", "-public=80", "-h", "--", "-config"].map(OsString::from),
        );
        assert_eq!(
            normalized,
            ["--config=-test", "--public=80", "-h", "--", "-config"].map(OsString::from)
        );
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert!(error(Role::Portal, &["-config"]).contains("--config"));
        assert!(error(Role::Portal, &["-bogus"]).contains("--bogus"));
        assert!(parse(Role::Portal, &["stray"]).is_err());
        assert!(error(Role::Portal, &["-format", "pb"]).contains("not supported"));
        assert!(error(Role::Portal, &["-format", "yaml"]).contains("json or toml"));
    }

    #[test]
    fn quick_start_flags_make_a_quick_start() {
        let args = parse(
            Role::Portal,
            &[
                "--tunnel",
                "127.0.0.1:1024",
                "-public",
                "8080",
                "--public=9090",
                "--id",
                ID,
            ],
        )
        .unwrap();
        let Some(QuickStart::Portal(portal)) = args.quick_start(Role::Portal).unwrap() else {
            panic!("not a portal quick start");
        };
        assert_eq!(portal.public.len(), 2);
        assert_eq!(portal.domain, quick::DEFAULT_DOMAIN);
        let args = parse(
            Role::Bridge,
            &[
                "--portal",
                "example.com:1024",
                "--to",
                "127.0.0.1:80",
                "--id",
                ID,
                "--security",
                "none",
                "--domain",
                "tunnel.example",
            ],
        )
        .unwrap();
        let Some(QuickStart::Bridge(bridge)) = args.quick_start(Role::Bridge).unwrap() else {
            panic!("not a bridge quick start");
        };
        assert_eq!(bridge.security, Security::None);
        assert_eq!(bridge.domain, "tunnel.example");
        assert_eq!(
            parse(Role::Bridge, &[]).unwrap().quick_start(Role::Bridge),
            Ok(None)
        );
    }

    #[test]
    fn wrong_combinations_say_what_is_wrong() {
        let message = error(
            Role::Portal,
            &[
                "-config", "a.json", "--tunnel", "1024", "--public", "80", "--id", ID,
            ],
        );
        assert!(
            message.contains("-config and --tunnel, --public, --id cannot be combined"),
            "{message}"
        );
        let message = error(Role::Portal, &["--tunnel", "1024", "--public", "80"]);
        assert!(message.contains("missing: --id"), "{message}");
        let message = error(Role::Bridge, &["--tunnel", "1024"]);
        assert!(message.contains("--tunnel is a portal flag"), "{message}");
        let message = error(Role::Portal, &["--to", "127.0.0.1:80"]);
        assert!(message.contains("--to is a bridge flag"), "{message}");
        let message = error(
            Role::Portal,
            &["--tunnel", "80", "--public", "80", "--id", ID],
        );
        assert!(
            message.contains("both the tunnel and a public address"),
            "{message}"
        );
        let message = error(
            Role::Bridge,
            &["--portal", "host", "--to", "127.0.0.1:80", "--id", ID],
        );
        assert!(message.contains("\"host\" is not HOST:PORT"), "{message}");
        let message = error(Role::Bridge, &["--id", "not-a-uuid"]);
        assert!(message.contains("--id"), "{message}");
        let message = error(Role::Bridge, &["--new-id", "--to", "127.0.0.1:80"]);
        assert!(message.contains("--new-id"), "{message}");
        let message = error(Role::Bridge, &["--domain", "a b"]);
        assert!(message.contains("not a domain name"), "{message}");
    }

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
    fn help_completions_and_man_come_from_the_definition() {
        let help = command(Role::Portal).render_long_help().to_string();
        assert!(
            help.contains("--tunnel") && help.contains("--public"),
            "{help}"
        );
        assert!(!help.contains("--to "), "{help}");
        let help = command(Role::Bridge).render_long_help().to_string();
        assert!(
            help.contains("--portal") && help.contains("--security"),
            "{help}"
        );
        assert!(!help.contains("--tunnel"), "{help}");
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = String::from_utf8(completions(Role::Bridge, shell)).unwrap();
            assert!(text.contains("bridge"), "{shell}: {text}");
            assert!(
                text.contains("portal") && text.contains("config"),
                "{shell}: {text}"
            );
            // The portal's flags are not the bridge's, not even hidden.
            assert!(!text.contains("--tunnel"), "{shell}: {text}");
        }
        let page = String::from_utf8(man_page(Role::Portal).unwrap()).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH portal"),
            "{page}"
        );
        assert!(
            page.contains("tunnel") && page.contains(".SH \"EXIT STATUS\""),
            "{page}"
        );
        assert!(page.contains("portal \\-\\-tunnel 0.0.0.0:1024"), "{page}");
        assert_eq!(roff_escape(".x\\y-z"), "\\&.x\\ey\\-z");
    }
}
