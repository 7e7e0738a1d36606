//! The command line's definition and its parsing: [`Args`], the clap
//! command of each role ([`command`]) built from four flag groups so that
//! each binary holds only its own quick-start flags, the value parsers,
//! the `--help` examples, and [`normalize`], which rewrites V2Ray's
//! one-dash spellings (`-config x`, `-test=true`) to clap's before
//! parsing. [`Args::parse_for`] also refuses what clap's definition cannot
//! say (file flags with quick-start flags, the other role's flags), and
//! [`Args::quick_start`] turns the quick-start flags into a [`QuickStart`].
//!
//! Part of the `cli` module. Not here: reading the files the flags name
//! (`load`), completions and the man page (`package`), the quick start's
//! JSON ([`quick`]), and what the program does with the flags (`main`, in
//! the parent module).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args as _, Command, CommandFactory, FromArgMatches, Parser, ValueEnum};
use clap_complete::Shell;
use rayback_config::{Format, MetricsAuth};
use uuid::Uuid;

use super::quick::{
    self, BridgeFlags, ClientTls, ClientTlsFlags, HostPort, PortalFlags, Public, QuickStart,
    Security, ServerTls, Service, WebSocket, WsPath,
};
use super::Role;

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
    pub public: Vec<Public>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Bridge quick start.
    pub portal: Vec<HostPort>,
    pub to: Vec<Service>,
    pub security: Option<Security>,
    pub ws_host: Option<String>,
    pub tls: bool,
    pub server_name: Option<String>,
    pub ca: Option<PathBuf>,
    pub insecure: bool,
    /// Quick start, both roles.
    pub id: Option<Uuid>,
    pub domain: Option<String>,
    pub ws: Option<WsPath>,
    /// `--drain-delay MS`: sets `rayback.drainDelay`.
    pub drain_delay: Option<u32>,
    pub metrics: Option<SocketAddr>,
    /// `--metrics-auth USER:PASSWORD`: sets `rayback.metricsAuth`.
    pub metrics_auth: Option<MetricsAuth>,
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
    /// A public listener, TCP or (udp:) UDP; repeat for several services (the i-th --public
    /// reaches the bridge's i-th --to, which must be of the same kind)
    #[arg(long, value_name = "[udp:][IP:]PORT", value_parser = parse_public, help_heading = QUICK)]
    public: Vec<Public>,
    /// The VMess user ID both sides share (make one with --new-id)
    #[arg(long, value_name = "UUID", help_heading = QUICK)]
    id: Option<Uuid>,
    /// The tunnel's name, equal on both sides; never resolved [default: rayback.internal]
    #[arg(long, value_name = "DOMAIN", value_parser = parse_domain, help_heading = QUICK)]
    domain: Option<String>,
    /// Carry the tunnel over WebSocket on PATH (bridges give the same --ws)
    #[arg(long, value_name = "PATH", value_parser = parse_ws_path, help_heading = QUICK)]
    ws: Option<WsPath>,
    /// Serve the tunnel over TLS with this certificate (PEM; needs --tls-key)
    #[arg(long, value_name = "FILE", help_heading = QUICK)]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "FILE", help_heading = QUICK)]
    tls_key: Option<PathBuf>,
    /// After SIGTERM, answer /ready with 503 but keep serving this long before stopping
    /// (sets rayback.drainDelay) [default: 0]
    #[arg(long, value_name = "MS", value_parser = parse_drain_delay, help_heading = QUICK)]
    drain_delay: Option<u32>,
}

/// The bridge's quick start.
#[derive(clap::Args)]
struct BridgeQuickFlags {
    /// The portal's tunnel address; repeat for several portals (each its own address, not a balancer's): a tunnel to every one
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port, help_heading = QUICK)]
    portal: Vec<HostPort>,
    /// A local service, TCP or (udp:) UDP; repeat for several services, in the order and of
    /// the kinds of the portal's --public
    #[arg(long, value_name = "[udp:]HOST:PORT", value_parser = parse_service, help_heading = QUICK)]
    to: Vec<Service>,
    /// The VMess user ID both sides share (make one with --new-id)
    #[arg(long, value_name = "UUID", help_heading = QUICK)]
    id: Option<Uuid>,
    /// The tunnel's name, equal on both sides; never resolved [default: rayback.internal]
    #[arg(long, value_name = "DOMAIN", value_parser = parse_domain, help_heading = QUICK)]
    domain: Option<String>,
    /// VMess body encryption [default: auto]
    #[arg(
        long,
        value_name = "CIPHER",
        help_heading = QUICK,
        value_parser = clap::builder::PossibleValuesParser::new(quick::security_values())
            .map(|name: String| Security::parse(&name).unwrap_or_default())
    )]
    security: Option<Security>,
    /// Dial the tunnel over WebSocket on PATH (the portal's --ws)
    #[arg(long, value_name = "PATH", value_parser = parse_ws_path, help_heading = QUICK)]
    ws: Option<WsPath>,
    /// The WebSocket request's Host header (needs --ws) [default: the --portal host]
    #[arg(long, value_name = "HOST", value_parser = parse_ws_host, help_heading = QUICK)]
    ws_host: Option<String>,
    /// Dial the tunnel over TLS, the portal's certificate checked against the system's roots
    #[arg(long, help_heading = QUICK)]
    tls: bool,
    /// The name the portal's certificate must bear, sent as SNI (implies --tls)
    #[arg(long, value_name = "NAME", value_parser = parse_server_name, help_heading = QUICK)]
    server_name: Option<String>,
    /// Also trust this certificate (PEM), e.g. a self-signed portal's --tls-cert (implies --tls)
    #[arg(long, value_name = "FILE", help_heading = QUICK)]
    ca: Option<PathBuf>,
    /// Accept any portal certificate: encrypted but not authenticated (implies --tls)
    #[arg(long, help_heading = QUICK)]
    insecure: bool,
    /// After SIGTERM, answer /ready with 503 but keep serving this long before stopping
    /// (sets rayback.drainDelay) [default: 0]
    #[arg(long, value_name = "MS", value_parser = parse_drain_delay, help_heading = QUICK)]
    drain_delay: Option<u32>,
}

/// Output, observability and packaging.
#[derive(clap::Args)]
struct OutputFlags {
    /// Serve Prometheus /metrics on ADDR (sets rayback.metrics; with a file, overrides it)
    #[arg(long, value_name = "IP:PORT", help_heading = OUTPUT)]
    metrics: Option<SocketAddr>,
    /// Ask for HTTP basic auth on the status page, /status and /metrics (/live and /ready
    /// stay open; sets rayback.metricsAuth; with a file, overrides it)
    #[arg(long, value_name = "USER:PASSWORD", value_parser = parse_metrics_auth, help_heading = OUTPUT)]
    metrics_auth: Option<MetricsAuth>,
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
            metrics_auth: output.metrics_auth,
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
                args.ws = quick.ws;
                args.tls_cert = quick.tls_cert;
                args.tls_key = quick.tls_key;
                args.drain_delay = quick.drain_delay;
            }
            Role::Bridge => {
                let quick = BridgeQuickFlags::from_arg_matches(matches)?;
                args.portal = quick.portal;
                args.to = quick.to;
                args.id = quick.id;
                args.domain = quick.domain;
                args.security = quick.security;
                args.ws = quick.ws;
                args.ws_host = quick.ws_host;
                args.tls = quick.tls;
                args.server_name = quick.server_name;
                args.ca = quick.ca;
                args.insecure = quick.insecure;
                args.drain_delay = quick.drain_delay;
            }
        }
        Ok(args)
    }
}

/// `--drain-delay`: milliseconds, within `rayback.drainDelay`'s bounds.
fn parse_drain_delay(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(millis) if millis <= quick::MAX_DRAIN_DELAY_MS => Ok(millis),
        _ => Err(format!(
            "expected milliseconds from 0 to {}",
            quick::MAX_DRAIN_DELAY_MS
        )),
    }
}

fn parse_metrics_auth(text: &str) -> Result<MetricsAuth, String> {
    text.parse()
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

fn parse_public(text: &str) -> Result<Public, quick::QuickError> {
    text.parse()
}

fn parse_service(text: &str) -> Result<Service, quick::QuickError> {
    text.parse()
}

fn parse_domain(text: &str) -> Result<String, quick::QuickError> {
    quick::check_domain(text).map(|()| text.to_owned())
}

fn parse_ws_path(text: &str) -> Result<WsPath, quick::QuickError> {
    text.parse()
}

fn parse_ws_host(text: &str) -> Result<String, quick::QuickError> {
    quick::check_ws_host(text).map(|()| text.to_owned())
}

fn parse_server_name(text: &str) -> Result<String, quick::QuickError> {
    quick::check_server_name(text).map(|()| text.to_owned())
}

/// Example command lines for `--help` and the man page.
pub(super) fn examples(role: Role) -> &'static [&'static str] {
    match role {
        Role::Portal => &[
            "portal -config /etc/rayback/portal.json",
            "portal -test -config portal.json",
            "portal --tunnel 0.0.0.0:1024 --public 0.0.0.0:8080 --id $(portal --new-id)",
            "portal --tunnel 1024 --public 80 --public 443 --id UUID    # two services",
            "portal --tunnel 1024 --public 80 --public udp:53 --id UUID    # a TCP and a UDP service",
            "portal --tunnel 1024 --public 80 --id UUID --print-config > portal.json",
            "portal --tunnel 443 --public 80 --id UUID --ws /tunnel --tls-cert cert.pem --tls-key key.pem",
        ],
        Role::Bridge => &[
            "bridge -config /etc/rayback/bridge.json",
            "bridge --portal portal.example.com:1024 --id UUID --to 127.0.0.1:80",
            "bridge --portal 203.0.113.7:1024 --id UUID --to 127.0.0.1:80 --to 127.0.0.1:443",
            "bridge --portal HOST:1024 --id UUID --to 127.0.0.1:80 --to udp:127.0.0.1:53    # UDP: same kinds, same order as --public",
            "bridge --portal HOST:1024 --id UUID --to 127.0.0.1:80 --print-config > bridge.json",
            "bridge --portal a.example:1024 --portal b.example:1024 --id UUID --to 127.0.0.1:80    # a tunnel to each portal",
            "bridge --portal portal.example.com:443 --id UUID --to 127.0.0.1:80 --ws /tunnel --tls",
            "bridge --portal HOST:443 --id UUID --to 127.0.0.1:80 --ws /tunnel --ca cert.pem --server-name localhost",
        ],
    }
}

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
            ("--portal", !self.portal.is_empty()),
            ("--to", !self.to.is_empty()),
            ("--id", self.id.is_some()),
            ("--domain", self.domain.is_some()),
            ("--security", self.security.is_some()),
            ("--ws", self.ws.is_some()),
            ("--ws-host", self.ws_host.is_some()),
            ("--tls-cert", self.tls_cert.is_some()),
            ("--tls-key", self.tls_key.is_some()),
            ("--tls", self.tls),
            ("--server-name", self.server_name.is_some()),
            ("--ca", self.ca.is_some()),
            ("--insecure", self.insecure),
            ("--drain-delay", self.drain_delay.is_some()),
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
                            metrics_auth: self.metrics_auth.clone(),
                            drain_delay: self.drain_delay,
                            ws: self.ws.clone(),
                            tls: ServerTls::from_flags(
                                self.tls_cert.as_deref(),
                                self.tls_key.as_deref(),
                            )
                            .map_err(|error| error.to_string())?,
                        })
                    }
                    _ => return Err(missing_message(role, &missing)),
                }
            }
            Role::Bridge => {
                if self.portal.is_empty() {
                    missing.push("--portal");
                }
                if self.to.is_empty() {
                    missing.push("--to");
                }
                if self.id.is_none() {
                    missing.push("--id");
                }
                match self.id {
                    Some(id) if missing.is_empty() => QuickStart::Bridge(BridgeFlags {
                        portals: self.portal.clone(),
                        to: self.to.clone(),
                        id,
                        domain,
                        security: self.security.unwrap_or_default(),
                        metrics: self.metrics,
                        metrics_auth: self.metrics_auth.clone(),
                        drain_delay: self.drain_delay,
                        ws: WebSocket::from_flags(self.ws.as_ref(), self.ws_host.as_deref())
                            .map_err(|error| error.to_string())?,
                        tls: ClientTls::from_flags(ClientTlsFlags {
                            tls: self.tls,
                            server_name: self.server_name.as_deref(),
                            ca: self.ca.as_deref(),
                            insecure: self.insecure,
                        })
                        .map_err(|error| error.to_string())?,
                    }),
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
    fn metrics_auth_is_user_colon_password() {
        let args = parse(
            Role::Portal,
            &["-config", "a.json", "--metrics-auth", "ops:pass:word"],
        )
        .unwrap();
        let auth = args.metrics_auth.unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.password.as_str()),
            ("ops", "pass:word")
        );
        for (bad, why) in [
            ("opspassword", "no colon"),
            (":password", "the user is empty"),
            ("ops:", "the password is empty"),
        ] {
            let message = error(Role::Bridge, &["--metrics-auth", bad]);
            assert!(message.contains("--metrics-auth"), "{bad}: {message}");
            assert!(message.contains(why), "{bad}: {message}");
        }
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
    fn udp_services_take_a_prefix() {
        let args = parse(
            Role::Portal,
            &[
                "--tunnel",
                "1024",
                "--public",
                "53",
                "-public=udp:53",
                "--id",
                ID,
            ],
        )
        .unwrap();
        let publics: Vec<String> = args.public.iter().map(ToString::to_string).collect();
        assert_eq!(publics, ["0.0.0.0:53", "udp:0.0.0.0:53"]);
        let args = parse(
            Role::Bridge,
            &[
                "--portal",
                "h.example:1024",
                "--to",
                "tcp:127.0.0.1:53",
                "--to",
                "udp:127.0.0.1:53",
                "--id",
                ID,
            ],
        )
        .unwrap();
        let Some(QuickStart::Bridge(bridge)) = args.quick_start(Role::Bridge).unwrap() else {
            panic!("not a bridge quick start");
        };
        assert_eq!(bridge.to[1].to_string(), "udp:127.0.0.1:53");
        let message = error(Role::Portal, &["--public", "udp:localhost:53"]);
        assert!(message.contains("is not [udp:][IP:]PORT"), "{message}");
        let message = error(Role::Bridge, &["--to", "udp:53"]);
        assert!(message.contains("is not [udp:]HOST:PORT"), "{message}");
    }

    #[test]
    fn transport_flags_reach_the_quick_start() {
        let args = parse(
            Role::Portal,
            &[
                "--tunnel",
                "443",
                "--public",
                "80",
                "--id",
                ID,
                "-ws",
                "tunnel",
                "--tls-cert",
                "cert.pem",
                "--tls-key",
                "key.pem",
            ],
        )
        .unwrap();
        let Some(QuickStart::Portal(portal)) = args.quick_start(Role::Portal).unwrap() else {
            panic!("not a portal quick start");
        };
        assert_eq!(portal.ws.unwrap().as_str(), "/tunnel");
        assert!(portal.tls.unwrap().key_file.ends_with("/key.pem"));

        let bridge = |extra: &[&str]| {
            let mut args = vec![
                "--portal",
                "127.0.0.1:443",
                "--to",
                "127.0.0.1:80",
                "--id",
                ID,
            ];
            args.extend_from_slice(extra);
            let args = parse(Role::Bridge, &args).unwrap();
            match args.quick_start(Role::Bridge).unwrap() {
                Some(QuickStart::Bridge(bridge)) => bridge,
                _ => panic!("not a bridge quick start"),
            }
        };
        let plain = bridge(&[]);
        assert_eq!((plain.ws, plain.tls), (None, None));
        let tls = bridge(&[
            "--ws",
            "/t",
            "--ws-host",
            "cdn.example",
            "--server-name",
            "localhost",
        ]);
        assert_eq!(tls.ws.unwrap().host.as_deref(), Some("cdn.example"));
        let tls = tls.tls.unwrap();
        assert_eq!(tls.server_name.as_deref(), Some("localhost"));
        assert_eq!(tls.trust, quick::Trust::SystemRoots);
        assert_eq!(
            bridge(&["--insecure"]).tls.unwrap().trust,
            quick::Trust::Anything
        );
        assert!(matches!(
            bridge(&["--ca", "/etc/ca.pem"]).tls.unwrap().trust,
            quick::Trust::AlsoFile(file) if file == "/etc/ca.pem"
        ));
        assert!(bridge(&["--tls"]).tls.is_some());
    }

    #[test]
    fn wrong_transport_flags_say_what_is_wrong() {
        let portal = ["--tunnel", "443", "--public", "80", "--id", ID];
        let bridge = [
            "--portal",
            "h.example:443",
            "--to",
            "127.0.0.1:80",
            "--id",
            ID,
        ];
        let with = |base: &[&'static str], extra: &[&'static str]| {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            args
        };
        let cases: [(Role, Vec<&str>, &str); 8] = [
            (
                Role::Portal,
                with(&portal, &["--tls-key", "k.pem"]),
                "--tls-key needs --tls-cert",
            ),
            (
                Role::Portal,
                with(&portal, &["--tls-cert", "c.pem"]),
                "--tls-cert needs --tls-key",
            ),
            (
                Role::Portal,
                with(&portal, &["--tls"]),
                "--tls is a bridge flag (a portal serves TLS with --tls-cert and --tls-key)",
            ),
            (
                Role::Bridge,
                with(&bridge, &["--tls-cert", "c.pem"]),
                "--tls-cert is a portal flag",
            ),
            (
                Role::Bridge,
                with(&bridge, &["--ws-host", "cdn.example"]),
                "--ws-host needs --ws PATH",
            ),
            (
                Role::Bridge,
                with(&bridge, &["--ca", "c.pem", "--insecure"]),
                "--insecure accepts any certificate",
            ),
            (
                Role::Bridge,
                with(&bridge, &["--ws", "/a b"]),
                "is not a WebSocket path",
            ),
            (
                Role::Bridge,
                with(&bridge, &["--server-name", "a_b c"]),
                "is not a TLS server name",
            ),
        ];
        for (role, args, expected) in cases {
            let message = error(role, &args);
            assert!(message.contains(expected), "{args:?}: {message}");
        }
        let message = error(Role::Portal, &["--ws", "/t", "--id", ID]);
        assert!(message.contains("missing: --tunnel, --public"), "{message}");
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
}
