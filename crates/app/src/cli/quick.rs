//! The quick start: a portal or a bridge from a few flags, no file.
//!
//! `portal --tunnel 0.0.0.0:1024 --public 0.0.0.0:8080 --id UUID` and
//! `bridge --portal HOST:1024 --id UUID --to 127.0.0.1:80` write the
//! configuration the V2Ray reverse-proxy guide writes by hand (reverse
//! portal or bridge, VMess, dokodemo-door, freedom redirect, routing
//! rules) as V2Ray JSON, and parse it with [`rayback_config::parse_str`],
//! so a quick start is validated exactly like a file and
//! `--print-config` shows a file the real `v2ray` runs unchanged.
//!
//! Several services: the i-th `--public` of the portal reaches the i-th
//! `--to` of the bridge. The portal's i-th public inbound is a
//! dokodemo-door whose target is a marker, `127.0.0.1:<i+1>`; the target
//! crosses the tunnel in the Mux.Cool frame, and the bridge routes on its
//! port to the i-th freedom redirect. A marker no `--to` claims goes to a
//! blackhole rather than to the wrong service.
//!
//! UDP: `--public udp:[IP:]PORT` is a dokodemo-door with `network: udp`,
//! and `--to udp:HOST:PORT` the same freedom redirect (freedom keeps a
//! session's network). Each datagram source is one Mux.Cool UDP session
//! (network `02` in its New frame) and each datagram one frame: of at
//! most 2048 bytes of payload when a V2Ray peer is on either end (V2Ray
//! 4.34's `buf.Size`; Rayback drops a longer datagram, see
//! `rayback_mux::settings::V2RAY_MAX_PACKET`), up to 65,507 bytes between
//! a Rayback portal and a Rayback bridge, which negotiate larger packet
//! frames (`rayback_reverse::portal`'s docs). The
//! i-th `--public` and the i-th `--to` must be of the same kind; the two
//! sides are separate processes, so neither can check the other's, but a
//! bridge with a UDP service names each service's network in its rules:
//! a session of the wrong kind then meets the blackhole, not a socket of
//! the wrong type. `tcp:` may be written too; it is the default.
//!
//! | flag (portal)     | JSON                                                           |
//! |-------------------|----------------------------------------------------------------|
//! | `--tunnel A:P`    | inbound `interconn`: vmess on A:P, `clients: [{id}]`           |
//! | `--public A:P` #i | inbound `external[-i]`: dokodemo-door on A:P → 127.0.0.1:i     |
//! | `--public udp:A:P`| the same with `network: udp` (plain or `tcp:`: `network: tcp`) |
//! | `--domain D`      | `reverse.portals: [{tag: portal, domain: D}]`                  |
//! | `--ws PATH`       | `interconn`: `network: ws`, `wsSettings: {path: PATH}`         |
//! | `--tls-cert C`    | `interconn`: `security: tls`,                                  |
//! | `--tls-key K`     | `tlsSettings.certificates: [{certificateFile: C, keyFile: K}]` |
//! | (always)          | rules: public inbounds → `portal`; `interconn` → `portal`      |
//!
//! | flag (bridge)     | JSON                                                             |
//! |-------------------|------------------------------------------------------------------|
//! | `--portal H:P`    | outbound `interconn`: vmess to H:P, `users: [{id, security}]`; repeated: one `vnext` entry per portal, a tunnel to each |
//! | `--to H:P` #i     | outbound `out[-i]`: freedom, `redirect: H:P`                     |
//! | `--to udp:H:P` #i | the same outbound; every service rule then names its `network`   |
//! | `--domain D`      | `reverse.bridges: [{tag: bridge, domain: D}]`                    |
//! | `--ws PATH`       | `interconn`: `network: ws`, `wsSettings: {path: PATH}`           |
//! | `--ws-host H`     | `wsSettings.headers: {Host: H}` (needs `--ws`)                   |
//! | `--tls`           | `interconn`: `security: tls`; the system's roots verify          |
//! | `--server-name N` | `tlsSettings.serverName: N` (implies `--tls`)                    |
//! | `--ca F`          | `tlsSettings.certificates: [{certificateFile: F}]`, trusted too  |
//! | `--insecure`      | `tlsSettings.allowInsecure: true` (not with `--ca`)              |
//! | (always)          | rules: `full:D` → `interconn`; port i → `out-i` (or all → `out`) |
//! | (several or UDP)  | outbound `no-such-service`: blackhole, the last rule's target    |
//!
//! `--tls-cert` and `--tls-key` come together; `--server-name`, `--ca`
//! and `--insecure` each imply `--tls`. Without the transport flags there
//! is no `streamSettings` (VMess over plain TCP, as in the guide). A `--ws`
//! path is normalised as V2Ray does (a leading `/` added); file paths are
//! written absolute, so a printed file runs from any directory. A TLS
//! bridge dialling an IP portal with neither `--server-name` nor
//! `--insecure` gets `serverName: <that IP>`: Rayback verifies an IP
//! portal's certificate against the IP anyway, while V2Ray's TLS over TCP
//! (Go's `tls.Client`) fails every handshake without a name (checked
//! against v2ray 4.34; its WebSocket dialler fills in the host itself).
//!
//! With one service the tags and rules are the guide's own (`external`,
//! `out`, a catch-all rule), so a quick bridge also serves a hand-written
//! guide portal. Part of the `cli` module. Not here: parsing the command
//! line (`flags`, beside it) and running the configuration (`run`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;

use rayback_config::{Config, ConfigError, MetricsAuth};
use rayback_core::{Address, Destination, Network};
use serde_json::Value;
use uuid::Uuid;

/// The tunnel domain when `--domain` is not given. It names the tunnel
/// only and is never resolved; both sides must use the same one.
pub const DEFAULT_DOMAIN: &str = "rayback.internal";

/// The portal's inbound tag for its VMess listener and the bridge's
/// outbound tag toward the portal (the guide's `interconn`).
pub const TUNNEL_TAG: &str = "interconn";

/// The address half of every service marker (`127.0.0.1:<i+1>`).
pub const MARKER_HOST: &str = "127.0.0.1";

/// Why a quick-start value is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuickError {
    #[error("{0:?} is not [IP:]PORT (e.g. 8080, 0.0.0.0:8080 or [::]:8080)")]
    NotListen(String),
    #[error(
        "{0:?} is not HOST:PORT (e.g. 203.0.113.7:1024, example.com:1024 or [2001:db8::1]:1024)"
    )]
    NotHostPort(String),
    #[error("{0:?}: port 0 is not a port to connect to")]
    PortZero(String),
    #[error("{0:?} is not [udp:][IP:]PORT (e.g. 8080, 0.0.0.0:8080, udp:53 or udp:[::]:53)")]
    NotPublic(String),
    #[error(
        "{0:?} is not [udp:]HOST:PORT (e.g. 127.0.0.1:80, example.com:80 or udp:127.0.0.1:53)"
    )]
    NotService(String),
    #[error("{0:?} is not a domain name (letters, digits, '-', '_' and '.', at most 253 bytes)")]
    NotDomain(String),
    #[error("{0} is given twice; every public port needs its own address")]
    DuplicatePublic(Public),
    #[error("{0} is both the tunnel and a public address")]
    TunnelIsPublic(SocketAddr),
    #[error("{count} services: at most {max} pairs of --public/--to are supported")]
    TooManyServices { count: usize, max: usize },
    #[error("{0:?} is not a WebSocket path (visible ASCII without '?', '#' or '%', e.g. /tunnel)")]
    NotWsPath(String),
    #[error("{0:?} is not a Host header (HOST or HOST:PORT)")]
    NotWsHost(String),
    #[error("{0:?} is not a TLS server name (a domain name or an IP address)")]
    NotServerName(String),
    #[error("{flag} {path:?}: {reason}")]
    NotAFile {
        flag: &'static str,
        path: String,
        reason: String,
    },
    #[error("--tls-cert needs --tls-key, the certificate's private key")]
    TlsCertWithoutKey,
    #[error("--tls-key needs --tls-cert, the certificate the key belongs to")]
    TlsKeyWithoutCert,
    #[error("--ws-host needs --ws PATH: the Host header is the WebSocket request's")]
    WsHostWithoutWs,
    #[error("--insecure accepts any certificate, so --ca would change nothing; give one of them")]
    InsecureWithCa,
}

/// The most services one quick start carries: marker ports are 1..=N,
/// kept below 1024 so they never look like a real service port.
pub const MAX_SERVICES: usize = 1023;

/// A `HOST:PORT` to connect to: an IP or a domain, and a non-zero port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// The host without brackets (`::1`, not `[::1]`).
    pub host: String,
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = QuickError;

    fn from_str(text: &str) -> Result<HostPort, QuickError> {
        let not = || QuickError::NotHostPort(text.to_owned());
        let destination = Destination::parse_host_port(Network::Tcp, text).map_err(|_| not())?;
        if destination.port == 0 {
            return Err(QuickError::PortZero(text.to_owned()));
        }
        let host = match destination.address {
            Address::Ipv4(ip) => ip.to_string(),
            Address::Ipv6(ip) => ip.to_string(),
            Address::Domain(domain) => {
                check_domain(&domain).map_err(|_| not())?;
                domain
            }
        };
        Ok(HostPort {
            host,
            port: destination.port,
        })
    }
}

impl fmt::Display for HostPort {
    /// `host:port`, IPv6 in brackets: the form of a freedom `redirect`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Splits a service's optional network prefix off: `udp:53` is UDP on 53,
/// `tcp:53` and plain `53` are TCP (the prefix in any case). A value
/// without a prefix is the address it was before UDP; a bridge service
/// on a host named `udp` or `tcp` is written `tcp:udp:53`.
fn split_network(text: &str) -> (Network, &str) {
    for (prefix, network) in [("udp:", Network::Udp), ("tcp:", Network::Tcp)] {
        if let Some(head) = text.get(..prefix.len()) {
            if head.eq_ignore_ascii_case(prefix) {
                return (network, &text[prefix.len()..]);
            }
        }
    }
    (Network::Tcp, text)
}

/// `udp:` before a UDP service's address; nothing before a TCP one's, the
/// form the flags were given in before UDP.
fn network_prefix(network: Network) -> &'static str {
    match network {
        Network::Tcp => "",
        Network::Udp => "udp:",
    }
}

/// A portal's `--public`: where a service listens and what it carries
/// (`[udp:|tcp:][IP:]PORT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Public {
    pub network: Network,
    pub listen: SocketAddr,
}

impl Public {
    /// A TCP listener, the plain `[IP:]PORT` form.
    pub fn tcp(listen: SocketAddr) -> Public {
        Public {
            network: Network::Tcp,
            listen,
        }
    }
}

impl FromStr for Public {
    type Err = QuickError;

    fn from_str(text: &str) -> Result<Public, QuickError> {
        let (network, rest) = split_network(text);
        let listen = parse_listen(rest).map_err(|_| QuickError::NotPublic(text.to_owned()))?;
        Ok(Public { network, listen })
    }
}

impl fmt::Display for Public {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", network_prefix(self.network), self.listen)
    }
}

/// A bridge's `--to`: a local service and what it carries
/// (`[udp:|tcp:]HOST:PORT`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub network: Network,
    pub target: HostPort,
}

impl FromStr for Service {
    type Err = QuickError;

    fn from_str(text: &str) -> Result<Service, QuickError> {
        let (network, rest) = split_network(text);
        let target = match rest.parse::<HostPort>() {
            Ok(target) => target,
            Err(QuickError::PortZero(_)) => return Err(QuickError::PortZero(text.to_owned())),
            Err(_) => return Err(QuickError::NotService(text.to_owned())),
        };
        Ok(Service { network, target })
    }
}

impl fmt::Display for Service {
    /// The flag form, which parses back: `tcp:` written only before a
    /// host that would read as a prefix (`tcp:udp:53`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = self.target.to_string();
        let prefix = match self.network {
            Network::Tcp if split_network(&target).1.len() != target.len() => "tcp:",
            network => network_prefix(network),
        };
        write!(f, "{prefix}{target}")
    }
}

/// Parses a listen address: `PORT` (all IPv4 interfaces, V2Ray's default)
/// or `IP:PORT` (IPv6 in brackets).
pub fn parse_listen(text: &str) -> Result<SocketAddr, QuickError> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    text.parse::<SocketAddr>()
        .map_err(|_| QuickError::NotListen(text.to_owned()))
}

/// Checks a tunnel domain: what V2Ray would take as a domain and a
/// routing rule's `full:` value can hold.
pub fn check_domain(domain: &str) -> Result<(), QuickError> {
    let fits = !domain.is_empty()
        && domain.len() <= 253
        && !domain.starts_with(['.', '-'])
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        && domain.parse::<IpAddr>().is_err();
    if fits {
        Ok(())
    } else {
        Err(QuickError::NotDomain(domain.to_owned()))
    }
}

/// The VMess body security a bridge asks for (`users[].security`): core's
/// one definition, shared with the config and the vmess crate.
pub use rayback_core::VmessSecurity as Security;

/// `--security`'s values: V2Ray's names, with the help clap shows.
pub fn security_values() -> [clap::builder::PossibleValue; 4] {
    use clap::builder::PossibleValue;
    [
        PossibleValue::new(Security::Auto.v2ray_name())
            .help("AES-128-GCM where the CPU has AES instructions, else ChaCha20-Poly1305"),
        PossibleValue::new(Security::Aes128Gcm.v2ray_name()),
        PossibleValue::new(Security::ChaCha20Poly1305.v2ray_name()),
        PossibleValue::new(Security::None.v2ray_name())
            .help("No encryption of the body (the header stays authenticated)"),
    ]
}

/// A WebSocket path (`wsSettings.path`), normalised as V2Ray's
/// `GetNormalizedPath` does: a leading `/` added when missing, `/` for an
/// empty path. Only visible ASCII without `?`, `#` and `%`: V2Ray's
/// listener compares the decoded path alone, so a query, a fragment or an
/// escape would make every request miss.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsPath(String);

impl WsPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for WsPath {
    type Err = QuickError;

    fn from_str(text: &str) -> Result<WsPath, QuickError> {
        let fits = text
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && !matches!(byte, b'?' | b'#' | b'%'));
        if !fits {
            return Err(QuickError::NotWsPath(text.to_owned()));
        }
        Ok(WsPath(if text.starts_with('/') {
            text.to_owned()
        } else {
            format!("/{text}")
        }))
    }
}

/// Checks a TLS server name: a domain name or an IP address.
pub fn check_server_name(name: &str) -> Result<(), QuickError> {
    if name.parse::<IpAddr>().is_ok() || check_domain(name).is_ok() {
        Ok(())
    } else {
        Err(QuickError::NotServerName(name.to_owned()))
    }
}

/// Checks a WebSocket `Host` header: a server name, or `HOST:PORT`.
pub fn check_ws_host(host: &str) -> Result<(), QuickError> {
    if check_server_name(host).is_ok() || host.parse::<HostPort>().is_ok() {
        Ok(())
    } else {
        Err(QuickError::NotWsHost(host.to_owned()))
    }
}

/// `path` made absolute against the current directory (without touching
/// the file system), as the UTF-8 text JSON holds: a printed
/// configuration then names the same file from any directory.
fn absolute_file(flag: &'static str, path: &Path) -> Result<String, QuickError> {
    let refuse = |reason: String| QuickError::NotAFile {
        flag,
        path: path.display().to_string(),
        reason,
    };
    let absolute = std::path::absolute(path).map_err(|error| refuse(error.to_string()))?;
    absolute
        .into_os_string()
        .into_string()
        .map_err(|_| refuse("the path is not UTF-8, which JSON cannot hold".to_owned()))
}

/// The bridge's WebSocket: the path, and the `Host` header when it is not
/// the `--portal` host (V2Ray's default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSocket {
    pub path: WsPath,
    pub host: Option<String>,
}

impl WebSocket {
    /// From `--ws` and `--ws-host`; `--ws-host` alone is refused.
    pub fn from_flags(
        path: Option<&WsPath>,
        host: Option<&str>,
    ) -> Result<Option<WebSocket>, QuickError> {
        match (path, host) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(QuickError::WsHostWithoutWs),
            (Some(path), host) => {
                if let Some(host) = host {
                    check_ws_host(host)?;
                }
                Ok(Some(WebSocket {
                    path: path.clone(),
                    host: host.map(str::to_owned),
                }))
            }
        }
    }

    fn to_json(&self) -> Json {
        let mut settings = Json::object([("path", self.path.as_str().into())]);
        if let Some(host) = &self.host {
            settings.push("headers", Json::object([("Host", host.as_str().into())]));
        }
        settings
    }
}

/// The portal's TLS: the certificate it presents and its private key,
/// absolute paths of PEM files (`certificateFile`, `keyFile`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    pub certificate_file: String,
    pub key_file: String,
}

impl ServerTls {
    /// From `--tls-cert` and `--tls-key`: both or neither. The files are
    /// read later, with the rest of the configuration.
    pub fn from_flags(
        certificate: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<ServerTls>, QuickError> {
        match (certificate, key) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(QuickError::TlsCertWithoutKey),
            (None, Some(_)) => Err(QuickError::TlsKeyWithoutCert),
            (Some(certificate), Some(key)) => Ok(Some(ServerTls {
                certificate_file: absolute_file("--tls-cert", certificate)?,
                key_file: absolute_file("--tls-key", key)?,
            })),
        }
    }

    fn to_json(&self) -> Json {
        let certificate = Json::object([
            ("certificateFile", self.certificate_file.as_str().into()),
            ("keyFile", self.key_file.as_str().into()),
        ]);
        Json::object([("certificates", Json::Array(vec![certificate]))])
    }
}

/// Which portal certificates a TLS bridge accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Those the system's roots vouch for (`--tls` alone).
    SystemRoots,
    /// Those, and the certificate in this file (`--ca`, an absolute path):
    /// V2Ray adds an outbound's listed certificates to its roots.
    AlsoFile(String),
    /// Any (`--insecure`, `allowInsecure`): encrypted, not authenticated.
    Anything,
}

/// The bridge's TLS flags as given, before they are checked.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientTlsFlags<'a> {
    /// `--tls`.
    pub tls: bool,
    /// `--server-name`.
    pub server_name: Option<&'a str>,
    /// `--ca`.
    pub ca: Option<&'a Path>,
    /// `--insecure`.
    pub insecure: bool,
}

/// The bridge's TLS toward the portal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// The name sent (SNI) and verified; `None`: the `--portal` host.
    pub server_name: Option<String>,
    pub trust: Trust,
}

impl ClientTls {
    /// From the bridge's TLS flags: any of them turns TLS on.
    pub fn from_flags(flags: ClientTlsFlags<'_>) -> Result<Option<ClientTls>, QuickError> {
        if !(flags.tls || flags.server_name.is_some() || flags.ca.is_some() || flags.insecure) {
            return Ok(None);
        }
        if let Some(name) = flags.server_name {
            check_server_name(name)?;
        }
        let trust = match (flags.ca, flags.insecure) {
            (Some(_), true) => return Err(QuickError::InsecureWithCa),
            (Some(ca), false) => Trust::AlsoFile(absolute_file("--ca", ca)?),
            (None, true) => Trust::Anything,
            (None, false) => Trust::SystemRoots,
        };
        Ok(Some(ClientTls {
            server_name: flags.server_name.map(str::to_owned),
            trust,
        }))
    }

    /// `tlsSettings` for dialling `portals` (one `tlsSettings` serves
    /// them all); `None` when it would be empty.
    fn to_json(&self, portals: &[HostPort]) -> Option<Json> {
        let server_name = match (&self.server_name, &self.trust, portals) {
            (Some(name), _, _) => Some(name.as_str()),
            (None, Trust::Anything, _) => None,
            // V2Ray names only a dialled domain and Go's TLS refuses to
            // verify without a name; Rayback verifies the IP, so say so
            // (when there is one portal: several need --server-name).
            (None, _, [portal]) => portal
                .host
                .parse::<IpAddr>()
                .is_ok()
                .then_some(portal.host.as_str()),
            (None, _, _) => None,
        };
        let mut settings = Json::Object(Vec::new());
        if let Some(name) = server_name {
            settings.push("serverName", name);
        }
        match &self.trust {
            Trust::SystemRoots => {}
            Trust::AlsoFile(file) => {
                let certificate = Json::object([("certificateFile", file.as_str().into())]);
                settings.push("certificates", Json::Array(vec![certificate]));
            }
            Trust::Anything => settings.push("allowInsecure", true),
        }
        match &settings {
            Json::Object(fields) if fields.is_empty() => None,
            _ => Some(settings),
        }
    }
}

/// The tunnel handler's `streamSettings`; `None` for VMess over plain
/// TCP, V2Ray's default, which the guide leaves out. `tls` is `Some` for
/// `security: tls`, with `tlsSettings` when it holds anything.
fn stream_settings(ws: Option<Json>, tls: Option<Option<Json>>) -> Option<Json> {
    if ws.is_none() && tls.is_none() {
        return None;
    }
    let mut stream = Json::Object(Vec::new());
    if let Some(ws) = ws {
        stream.push("network", "ws");
        stream.push("wsSettings", ws);
    }
    if let Some(tls) = tls {
        stream.push("security", "tls");
        if let Some(settings) = tls {
            stream.push("tlsSettings", settings);
        }
    }
    Some(stream)
}

/// A portal from flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortalFlags {
    /// Where the bridges connect (VMess).
    pub tunnel: SocketAddr,
    /// Public listeners, one per service, in service order; never empty.
    pub public: Vec<Public>,
    pub id: Uuid,
    pub domain: String,
    pub metrics: Option<SocketAddr>,
    /// `--metrics-auth`: `rayback.metricsAuth`, when given.
    pub metrics_auth: Option<MetricsAuth>,
    /// `--drain-delay`: `rayback.drainDelay` in ms, when given.
    pub drain_delay: Option<u32>,
    /// `--ws`: the tunnel listener speaks WebSocket on this path.
    pub ws: Option<WsPath>,
    /// `--tls-cert`/`--tls-key`: the tunnel listener speaks TLS.
    pub tls: Option<ServerTls>,
}

/// A bridge from flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeFlags {
    /// The portals' tunnel addresses (`--portal`, repeatable): one `vnext`
    /// entry each, and the bridge keeps a tunnel to every one. Never empty.
    pub portals: Vec<HostPort>,
    /// Local services, in service order; never empty.
    pub to: Vec<Service>,
    pub id: Uuid,
    pub domain: String,
    pub security: Security,
    pub metrics: Option<SocketAddr>,
    /// `--metrics-auth`: `rayback.metricsAuth`, when given.
    pub metrics_auth: Option<MetricsAuth>,
    /// `--drain-delay`: `rayback.drainDelay` in ms, when given.
    pub drain_delay: Option<u32>,
    /// `--ws`, `--ws-host`: the tunnel is dialled over WebSocket.
    pub ws: Option<WebSocket>,
    /// `--tls` and its companions: the tunnel is dialled over TLS.
    pub tls: Option<ClientTls>,
}

/// A quick start of either role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuickStart {
    Portal(PortalFlags),
    Bridge(BridgeFlags),
}

/// JSON whose object keys keep the order they are written in (a
/// `serde_json::Map` sorts them), so the printed configuration reads like
/// the guide's: tag, then protocol, then settings.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Object(Vec<(&'static str, Json)>),
    Array(Vec<Json>),
    Scalar(Value),
}

impl Json {
    fn object<const N: usize>(fields: [(&'static str, Json); N]) -> Json {
        Json::Object(fields.into())
    }

    fn push(&mut self, key: &'static str, value: impl Into<Json>) {
        if let Json::Object(fields) = self {
            fields.push((key, value.into()));
        }
    }

    /// The same document as a `serde_json::Value` (keys sorted).
    pub fn to_value(&self) -> Value {
        match self {
            Json::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), value.to_value()))
                    .collect(),
            ),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Scalar(value) => value.clone(),
        }
    }

    /// Pretty text: two-space indents, lists of plain values on one line.
    pub fn to_pretty(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, indent: usize) {
        match self {
            // `Value`'s Display is compact JSON with every escape needed.
            Json::Scalar(value) => out.push_str(&value.to_string()),
            Json::Array(items) if items.iter().all(|item| matches!(item, Json::Scalar(_))) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push_str(", ");
                    }
                    item.write(out, indent);
                }
                out.push(']');
            }
            Json::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    out.push_str(if index > 0 { ",\n" } else { "\n" });
                    push_indent(out, indent + 2);
                    item.write(out, indent + 2);
                }
                out.push('\n');
                push_indent(out, indent);
                out.push(']');
            }
            Json::Object(fields) => {
                out.push('{');
                for (index, (key, value)) in fields.iter().enumerate() {
                    out.push_str(if index > 0 { ",\n" } else { "\n" });
                    push_indent(out, indent + 2);
                    out.push_str(&Value::from(*key).to_string());
                    out.push_str(": ");
                    value.write(out, indent + 2);
                }
                if !fields.is_empty() {
                    out.push('\n');
                    push_indent(out, indent);
                }
                out.push('}');
            }
        }
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

impl From<&str> for Json {
    fn from(text: &str) -> Json {
        Json::Scalar(Value::from(text))
    }
}

impl From<String> for Json {
    fn from(text: String) -> Json {
        Json::Scalar(Value::from(text))
    }
}

impl From<u16> for Json {
    fn from(number: u16) -> Json {
        Json::Scalar(Value::from(number))
    }
}

impl From<bool> for Json {
    fn from(value: bool) -> Json {
        Json::Scalar(Value::from(value))
    }
}

impl From<usize> for Json {
    fn from(number: usize) -> Json {
        Json::Scalar(Value::from(number))
    }
}

impl<T: Into<Json>> From<Vec<T>> for Json {
    fn from(items: Vec<T>) -> Json {
        Json::Array(items.into_iter().map(Into::into).collect())
    }
}

/// The tag of service `index` of `count`: the guide's plain `prefix` when
/// there is one service, `prefix-<index+1>` when several.
fn service_tag(prefix: &str, index: usize, count: usize) -> String {
    if count == 1 {
        prefix.to_owned()
    } else {
        format!("{prefix}-{}", index + 1)
    }
}

/// The marker port of service `index`.
fn marker_port(index: usize) -> usize {
    index + 1
}

fn check_count(count: usize) -> Result<(), QuickError> {
    if count > MAX_SERVICES {
        return Err(QuickError::TooManyServices {
            count,
            max: MAX_SERVICES,
        });
    }
    Ok(())
}

/// An inbound's opening: tag, `listen` (left out for 0.0.0.0, V2Ray's
/// default, as the guide does) and port.
fn inbound_head(tag: &str, addr: SocketAddr) -> Json {
    let mut inbound = Json::object([("tag", tag.into())]);
    if addr.ip() != IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
        inbound.push("listen", addr.ip().to_string());
    }
    inbound.push("port", addr.port());
    inbound
}

fn rule(inbound_tags: Vec<String>, outbound_tag: &str) -> Json {
    Json::object([
        ("type", "field".into()),
        ("inboundTag", inbound_tags.into()),
        ("outboundTag", outbound_tag.into()),
    ])
}

/// The largest `--drain-delay` (`rayback.drainDelay`'s bound).
pub const MAX_DRAIN_DELAY_MS: u32 = 600_000;

fn add_rayback_extras(
    top: &mut Json,
    metrics: Option<SocketAddr>,
    metrics_auth: Option<&MetricsAuth>,
    drain_delay: Option<u32>,
) {
    let mut fields = Vec::new();
    if let Some(metrics) = metrics {
        fields.push(("metrics", metrics.to_string().into()));
    }
    if let Some(auth) = metrics_auth {
        fields.push(("metricsAuth", auth.to_text().into()));
    }
    if let Some(millis) = drain_delay {
        fields.push(("drainDelay", Json::Scalar(Value::from(millis))));
    }
    if !fields.is_empty() {
        top.push("rayback", Json::Object(fields));
    }
}

impl PortalFlags {
    /// Checks what the types do not: distinct addresses, a sane count.
    pub fn check(&self) -> Result<(), QuickError> {
        check_domain(&self.domain)?;
        check_count(self.public.len())?;
        for (index, public) in self.public.iter().enumerate() {
            // A TCP and a UDP listener may share an address (DNS on 53).
            if self.public[..index].contains(public) {
                return Err(QuickError::DuplicatePublic(*public));
            }
            // The tunnel is TCP (VMess over TCP, TLS or WebSocket).
            if public.network == Network::Tcp && public.listen == self.tunnel {
                return Err(QuickError::TunnelIsPublic(public.listen));
            }
        }
        Ok(())
    }

    /// The portal's V2Ray JSON.
    pub fn to_json(&self) -> Json {
        let count = self.public.len();
        let mut inbounds = Vec::with_capacity(count + 1);
        let mut public_tags = Vec::with_capacity(count);
        for (index, public) in self.public.iter().enumerate() {
            let tag = service_tag("external", index, count);
            let mut inbound = inbound_head(&tag, public.listen);
            inbound.push("protocol", "dokodemo-door");
            inbound.push(
                "settings",
                Json::object([
                    ("address", MARKER_HOST.into()),
                    ("port", marker_port(index).into()),
                    ("network", public.network.as_str().into()),
                ]),
            );
            inbounds.push(inbound);
            public_tags.push(tag);
        }
        let mut tunnel = inbound_head(TUNNEL_TAG, self.tunnel);
        tunnel.push("protocol", "vmess");
        let client = Json::object([("id", self.id.to_string().into())]);
        tunnel.push(
            "settings",
            Json::object([("clients", Json::Array(vec![client]))]),
        );
        let ws = self
            .ws
            .as_ref()
            .map(|path| Json::object([("path", path.as_str().into())]));
        let tls = self.tls.as_ref().map(|tls| Some(tls.to_json()));
        if let Some(stream) = stream_settings(ws, tls) {
            tunnel.push("streamSettings", stream);
        }
        inbounds.push(tunnel);

        let portal = Json::object([
            ("tag", "portal".into()),
            ("domain", self.domain.as_str().into()),
        ]);
        let mut top = Json::object([
            (
                "reverse",
                Json::object([("portals", Json::Array(vec![portal]))]),
            ),
            ("inbounds", Json::Array(inbounds)),
            (
                "routing",
                Json::object([(
                    "rules",
                    Json::Array(vec![
                        rule(public_tags, "portal"),
                        rule(vec![TUNNEL_TAG.to_owned()], "portal"),
                    ]),
                )]),
            ),
        ]);
        add_rayback_extras(
            &mut top,
            self.metrics,
            self.metrics_auth.as_ref(),
            self.drain_delay,
        );
        top
    }
}

impl BridgeFlags {
    /// Checks what the types do not.
    pub fn check(&self) -> Result<(), QuickError> {
        check_domain(&self.domain)?;
        check_count(self.to.len())
    }

    /// The bridge's V2Ray JSON.
    pub fn to_json(&self) -> Json {
        let count = self.to.len();
        // With a UDP service each service rule also names its network, so
        // a session of the other kind (the portal's i-th --public not of
        // the kind of this i-th --to) is closed rather than sent to a
        // socket of the wrong type; with TCP alone the rules are the guide's.
        let any_udp = self.to.iter().any(|to| to.network == Network::Udp);
        let blackhole = count > 1 || any_udp;
        let bridge_tag = || vec!["bridge".to_owned()];
        let mut outbounds = Vec::with_capacity(count + 2);
        let mut rules = Vec::with_capacity(count + 2);
        // First: the bridge's own connections, to the tunnel domain.
        let mut tunnel_rule = rule(bridge_tag(), TUNNEL_TAG);
        if let Json::Object(fields) = &mut tunnel_rule {
            fields.insert(2, ("domain", vec![format!("full:{}", self.domain)].into()));
        }
        rules.push(tunnel_rule);
        for (index, to) in self.to.iter().enumerate() {
            let tag = service_tag("out", index, count);
            // freedom keeps the session's network and swaps the address:
            // one redirect serves TCP and UDP alike.
            outbounds.push(Json::object([
                ("tag", tag.as_str().into()),
                ("protocol", "freedom".into()),
                (
                    "settings",
                    Json::object([("redirect", to.target.to_string().into())]),
                ),
            ]));
            let mut service_rule = rule(bridge_tag(), &tag);
            if let Json::Object(fields) = &mut service_rule {
                let mut at = 2;
                if count > 1 {
                    fields.insert(at, ("port", marker_port(index).to_string().into()));
                    at += 1;
                }
                if any_udp {
                    fields.insert(at, ("network", to.network.as_str().into()));
                }
            }
            rules.push(service_rule);
        }
        let mut user = Json::object([("id", self.id.to_string().into())]);
        if self.security != Security::Auto {
            user.push("security", self.security.v2ray_name());
        }
        let servers = self
            .portals
            .iter()
            .map(|portal| {
                Json::object([
                    ("address", portal.host.as_str().into()),
                    ("port", portal.port.into()),
                    ("users", Json::Array(vec![user.clone()])),
                ])
            })
            .collect();
        let mut tunnel = Json::object([
            ("tag", TUNNEL_TAG.into()),
            ("protocol", "vmess".into()),
            ("settings", Json::object([("vnext", Json::Array(servers))])),
        ]);
        let ws = self.ws.as_ref().map(WebSocket::to_json);
        let tls = self.tls.as_ref().map(|tls| tls.to_json(&self.portals));
        if let Some(stream) = stream_settings(ws, tls) {
            tunnel.push("streamSettings", stream);
        }
        outbounds.push(tunnel);
        if blackhole {
            // A marker no service claims (the portal has more --public
            // than this bridge has --to), or one of the other network, is
            // closed, not misdelivered.
            outbounds.push(Json::object([
                ("tag", "no-such-service".into()),
                ("protocol", "blackhole".into()),
            ]));
            rules.push(rule(bridge_tag(), "no-such-service"));
        }

        let bridge = Json::object([
            ("tag", "bridge".into()),
            ("domain", self.domain.as_str().into()),
        ]);
        let mut top = Json::object([
            (
                "reverse",
                Json::object([("bridges", Json::Array(vec![bridge]))]),
            ),
            ("outbounds", Json::Array(outbounds)),
            ("routing", Json::object([("rules", Json::Array(rules))])),
        ]);
        add_rayback_extras(
            &mut top,
            self.metrics,
            self.metrics_auth.as_ref(),
            self.drain_delay,
        );
        top
    }
}

impl QuickStart {
    pub fn check(&self) -> Result<(), QuickError> {
        match self {
            QuickStart::Portal(portal) => portal.check(),
            QuickStart::Bridge(bridge) => bridge.check(),
        }
    }

    /// The configuration as V2Ray JSON.
    pub fn to_json(&self) -> Json {
        match self {
            QuickStart::Portal(portal) => portal.to_json(),
            QuickStart::Bridge(bridge) => bridge.to_json(),
        }
    }

    /// [`QuickStart::to_json`] as the pretty text `--print-config` shows.
    pub fn to_text(&self) -> String {
        self.to_json().to_pretty()
    }

    /// The typed configuration, parsed from [`QuickStart::to_text`] like a
    /// file named `quick-start.json`.
    pub fn config(&self) -> Result<Config, ConfigError> {
        Ok(rayback_config::parse_str("quick-start.json", &self.to_text())?.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayback_core::TransportNetwork;
    use rayback_testkit::tls::SelfSigned;
    use rayback_testkit::{v2ray_test, workspace_root};
    use serde_json::json;

    const ID: &str = "27848739-7e62-4138-9fd3-098a63964b6b";

    fn host_port(text: &str) -> HostPort {
        text.parse().unwrap()
    }

    fn seed(file: &str) -> String {
        std::fs::read_to_string(workspace_root().join("config-examples/seed").join(file)).unwrap()
    }

    fn guide_portal() -> PortalFlags {
        PortalFlags {
            tunnel: parse_listen("1024").unwrap(),
            public: vec!["80".parse().unwrap()],
            id: ID.parse().unwrap(),
            domain: "test.v2ray.com".into(),
            metrics: None,
            metrics_auth: None,
            drain_delay: None,
            ws: None,
            tls: None,
        }
    }

    fn guide_bridge() -> BridgeFlags {
        BridgeFlags {
            portals: vec![host_port("127.0.0.1:1024")],
            to: vec!["127.0.0.1:80".parse().unwrap()],
            id: ID.parse().unwrap(),
            domain: "test.v2ray.com".into(),
            security: Security::Auto,
            metrics: None,
            metrics_auth: None,
            drain_delay: None,
            ws: None,
            tls: None,
        }
    }

    #[test]
    fn the_bridge_flags_build_the_guide_bridge() {
        let quick = QuickStart::Bridge(guide_bridge()).config().unwrap();
        let guide = rayback_config::parse_str("bridge.modern.json", &seed("bridge.modern.json"))
            .unwrap()
            .config;
        assert_eq!(quick, guide);
    }

    #[test]
    fn the_portal_flags_build_the_guide_portal_but_for_the_marker_port() {
        let quick = QuickStart::Portal(guide_portal()).config().unwrap();
        // The guide's dokodemo-door targets 127.0.0.1:80; a quick portal
        // targets the marker of service 1, which a guide bridge ignores.
        let text = seed("portal.modern.json").replace(
            r#""address": "127.0.0.1", "port": 80,"#,
            r#""address": "127.0.0.1", "port": 1,"#,
        );
        assert_ne!(text, seed("portal.modern.json"));
        let guide = rayback_config::parse_str("portal.modern.json", &text)
            .unwrap()
            .config;
        assert_eq!(quick, guide);
    }

    #[test]
    fn several_services_pair_by_marker_port() {
        let mut portal = guide_portal();
        portal.public.push("127.0.0.1:8081".parse().unwrap());
        let json = portal.to_json().to_value();
        assert_eq!(json["inbounds"][0]["tag"], "external-1");
        assert_eq!(json["inbounds"][0]["settings"]["port"], 1);
        assert_eq!(json["inbounds"][1]["tag"], "external-2");
        assert_eq!(json["inbounds"][1]["listen"], "127.0.0.1");
        assert_eq!(json["inbounds"][1]["settings"]["port"], 2);
        assert_eq!(
            json["routing"]["rules"][0]["inboundTag"],
            serde_json::json!(["external-1", "external-2"])
        );

        let mut bridge = guide_bridge();
        bridge.to.push("[::1]:8081".parse().unwrap());
        bridge.security = Security::ChaCha20Poly1305;
        let json = bridge.to_json().to_value();
        let rules = json["routing"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 4);
        assert_eq!(rules[1]["port"], "1");
        assert_eq!(rules[1]["outboundTag"], "out-1");
        assert_eq!(rules[2]["port"], "2");
        assert_eq!(rules[2]["outboundTag"], "out-2");
        assert_eq!(rules[3]["outboundTag"], "no-such-service");
        assert_eq!(json["outbounds"][1]["settings"]["redirect"], "[::1]:8081");
        assert_eq!(
            json["outbounds"][2]["settings"]["vnext"][0]["users"][0]["security"],
            "chacha20-poly1305"
        );
        for quick in [QuickStart::Portal(portal), QuickStart::Bridge(bridge)] {
            quick.config().unwrap();
            let (code, output) = v2ray_test(&quick.to_text(), "quick.json").unwrap();
            assert_eq!(code, 0, "v2ray -test refused {}: {output}", quick.to_text());
        }
    }

    #[test]
    fn services_take_an_optional_network_prefix() {
        let listen = |text: &str| parse_listen(text).unwrap();
        for (text, network, addr) in [
            ("80", Network::Tcp, "0.0.0.0:80"),
            ("tcp:80", Network::Tcp, "0.0.0.0:80"),
            ("udp:53", Network::Udp, "0.0.0.0:53"),
            ("UDP:53", Network::Udp, "0.0.0.0:53"),
            ("udp:127.0.0.1:53", Network::Udp, "127.0.0.1:53"),
            ("udp:[::1]:53", Network::Udp, "[::1]:53"),
            ("tcp:[::]:8080", Network::Tcp, "[::]:8080"),
        ] {
            let public: Public = text.parse().unwrap();
            assert_eq!(public.network, network, "{text}");
            assert_eq!(public.listen, listen(addr), "{text}");
            // Display is the canonical flag form, which parses back.
            assert_eq!(public.to_string().parse::<Public>(), Ok(public), "{text}");
        }
        assert_eq!(
            "udp:53".parse::<Public>().unwrap().to_string(),
            "udp:0.0.0.0:53"
        );
        assert_eq!(
            "tcp:80".parse::<Public>().unwrap().to_string(),
            "0.0.0.0:80"
        );
        for bad in [
            "udp:",
            "udp:localhost:53",
            "quic:443",
            "udp:70000",
            "udp:udp:53",
        ] {
            assert_eq!(
                bad.parse::<Public>(),
                Err(QuickError::NotPublic(bad.to_owned())),
                "{bad}"
            );
        }

        for (text, network, target) in [
            ("127.0.0.1:80", Network::Tcp, "127.0.0.1:80"),
            ("tcp:127.0.0.1:80", Network::Tcp, "127.0.0.1:80"),
            ("udp:127.0.0.1:53", Network::Udp, "127.0.0.1:53"),
            ("udp:[::1]:53", Network::Udp, "[::1]:53"),
            ("udp:dns.internal:53", Network::Udp, "dns.internal:53"),
            // A host named like a prefix, behind the explicit one.
            ("tcp:udp:53", Network::Tcp, "udp:53"),
        ] {
            let service: Service = text.parse().unwrap();
            assert_eq!(service.network, network, "{text}");
            assert_eq!(service.target, host_port(target), "{text}");
            assert_eq!(
                service.to_string().parse::<Service>(),
                Ok(service.clone()),
                "{text}"
            );
        }
        assert_eq!(
            "udp:127.0.0.1:0".parse::<Service>(),
            Err(QuickError::PortZero("udp:127.0.0.1:0".to_owned()))
        );
        for bad in ["udp:53", "tcp:80", "udp:", "udp:::1:53", "udp:a b:53"] {
            let error = bad.parse::<Service>().unwrap_err();
            assert_eq!(error, QuickError::NotService(bad.to_owned()));
            assert!(error.to_string().contains("[udp:]HOST:PORT"), "{error}");
        }
    }

    #[test]
    fn a_udp_public_is_a_udp_dokodemo_door_routed_to_the_portal() {
        let mut portal = guide_portal();
        portal.public = ["80", "udp:53", "udp:127.0.0.1:5353"]
            .map(|text| text.parse().unwrap())
            .into();
        let quick = QuickStart::Portal(portal);
        let json = quick.to_json().to_value();
        let inbounds = json["inbounds"].as_array().unwrap();
        for (index, (tag, network, port)) in [
            ("external-1", "tcp", 80),
            ("external-2", "udp", 53),
            ("external-3", "udp", 5353),
        ]
        .into_iter()
        .enumerate()
        {
            let inbound = &inbounds[index];
            assert_eq!(inbound["tag"], tag);
            assert_eq!(inbound["protocol"], "dokodemo-door");
            assert_eq!(inbound["port"], port);
            assert_eq!(
                inbound["settings"],
                json!({"address": MARKER_HOST, "port": index + 1, "network": network})
            );
        }
        assert_eq!(inbounds[2]["listen"], "127.0.0.1");
        assert_eq!(
            json["routing"]["rules"],
            json!([
                {"type": "field", "inboundTag": ["external-1", "external-2", "external-3"], "outboundTag": "portal"},
                {"type": "field", "inboundTag": [TUNNEL_TAG], "outboundTag": "portal"}
            ])
        );
        let config = quick.config().unwrap();
        let networks: Vec<Vec<Network>> = config.inbounds[..3]
            .iter()
            .map(|inbound| match &inbound.settings {
                rayback_config::InboundSettings::DokodemoDoor(door) => door.network.clone(),
                other => panic!("not dokodemo-door: {other:?}"),
            })
            .collect();
        assert_eq!(
            networks,
            [vec![Network::Tcp], vec![Network::Udp], vec![Network::Udp]]
        );
        v2ray_accepts(&quick);

        // One UDP service keeps the guide's single-service tags.
        let mut portal = guide_portal();
        portal.public = vec!["udp:53".parse().unwrap()];
        let json = portal.to_json().to_value();
        assert_eq!(json["inbounds"][0]["tag"], "external");
        assert_eq!(json["inbounds"][0]["settings"]["network"], "udp");
        assert_eq!(json["inbounds"][0]["settings"]["port"], 1);
        v2ray_accepts(&QuickStart::Portal(portal));
    }

    #[test]
    fn a_udp_service_names_every_rules_network_and_closes_the_rest() {
        // One UDP service: no marker port (a guide portal's target is
        // not a marker), the network named, the rest to the blackhole.
        let mut bridge = guide_bridge();
        bridge.to = vec!["udp:127.0.0.1:53".parse().unwrap()];
        let quick = QuickStart::Bridge(bridge);
        let json = quick.to_json().to_value();
        assert_eq!(
            json["outbounds"][0],
            json!({"tag": "out", "protocol": "freedom", "settings": {"redirect": "127.0.0.1:53"}})
        );
        let rules = &json["routing"]["rules"];
        assert_eq!(
            rules[1],
            json!({"type": "field", "inboundTag": ["bridge"], "network": "udp", "outboundTag": "out"})
        );
        assert_eq!(rules[2]["outboundTag"], "no-such-service");
        assert_eq!(json["outbounds"][2]["protocol"], "blackhole");
        quick.config().unwrap();
        v2ray_accepts(&quick);

        // A TCP and a UDP service on the same port: the marker port and
        // the network pick the service.
        let mut bridge = guide_bridge();
        bridge.to = ["127.0.0.1:53", "udp:[::1]:53"]
            .map(|text| text.parse().unwrap())
            .into();
        let quick = QuickStart::Bridge(bridge);
        let json = quick.to_json().to_value();
        let rules = json["routing"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 4);
        assert_eq!(
            rules[1],
            json!({"type": "field", "inboundTag": ["bridge"], "port": "1", "network": "tcp", "outboundTag": "out-1"})
        );
        assert_eq!(
            rules[2],
            json!({"type": "field", "inboundTag": ["bridge"], "port": "2", "network": "udp", "outboundTag": "out-2"})
        );
        assert_eq!(rules[3]["outboundTag"], "no-such-service");
        assert_eq!(json["outbounds"][1]["settings"]["redirect"], "[::1]:53");
        // Key order as printed: the rule's conditions, then its target.
        let text = quick.to_text();
        let port = text.find("\"port\": \"1\"").unwrap();
        let network = text.find("\"network\": \"tcp\"").unwrap();
        let target = text.find("\"outboundTag\": \"out-1\"").unwrap();
        assert!(port < network && network < target, "{text}");
        quick.config().unwrap();
        v2ray_accepts(&quick);

        // TCP alone: no network in any rule, as before UDP.
        let mut bridge = guide_bridge();
        bridge.to.push("tcp:127.0.0.1:22".parse().unwrap());
        assert!(!bridge.to_json().to_pretty().contains("\"network\""));
    }

    #[test]
    fn a_tcp_and_a_udp_public_may_share_an_address() {
        let mut portal = guide_portal();
        portal.public = ["53", "udp:53"].map(|text| text.parse().unwrap()).into();
        assert_eq!(portal.check(), Ok(()));
        // UDP on the tunnel's port is no conflict: the tunnel is TCP.
        portal
            .public
            .push(format!("udp:{}", portal.tunnel).parse().unwrap());
        assert_eq!(portal.check(), Ok(()));
        portal.public.push("udp:0.0.0.0:53".parse().unwrap());
        let error = portal.check().unwrap_err();
        assert_eq!(
            error.to_string(),
            "udp:0.0.0.0:53 is given twice; every public port needs its own address"
        );
    }

    /// The tunnel handler's `streamSettings`: the portal's last inbound,
    /// the bridge's last outbound but the blackhole (one service here).
    fn tunnel_stream(quick: &QuickStart) -> Value {
        let json = quick.to_json().to_value();
        let handlers = match quick {
            QuickStart::Portal(_) => &json["inbounds"],
            QuickStart::Bridge(_) => &json["outbounds"],
        };
        let tunnel = handlers
            .as_array()
            .unwrap()
            .iter()
            .find(|handler| handler["tag"] == TUNNEL_TAG)
            .unwrap();
        tunnel.get("streamSettings").cloned().unwrap_or(Value::Null)
    }

    fn v2ray_accepts(quick: &QuickStart) {
        let text = quick.to_text();
        let (code, output) = v2ray_test(&text, "quick.json").unwrap();
        assert_eq!(code, 0, "v2ray -test refused {text}: {output}");
    }

    fn client_tls(flags: ClientTlsFlags<'_>) -> Option<ClientTls> {
        ClientTls::from_flags(flags).unwrap()
    }

    #[test]
    fn without_transport_flags_there_are_no_stream_settings() {
        for quick in [
            QuickStart::Portal(guide_portal()),
            QuickStart::Bridge(guide_bridge()),
        ] {
            assert_eq!(tunnel_stream(&quick), Value::Null);
            assert!(!quick.to_text().contains("streamSettings"));
        }
    }

    #[test]
    fn portal_ws_and_tls_flags_write_the_tunnel_stream_settings() {
        let certificate = SelfSigned::localhost().unwrap();
        let cert = certificate.cert_path.to_str().unwrap();
        let key = certificate.key_path.to_str().unwrap();
        let mut portal = guide_portal();
        portal.ws = Some("t".parse().unwrap());
        portal.tls =
            ServerTls::from_flags(Some(&certificate.cert_path), Some(&certificate.key_path))
                .unwrap();
        let quick = QuickStart::Portal(portal.clone());
        assert_eq!(
            tunnel_stream(&quick),
            json!({
                "network": "ws",
                "wsSettings": {"path": "/t"},
                "security": "tls",
                "tlsSettings": {"certificates": [{"certificateFile": cert, "keyFile": key}]}
            })
        );
        // Key order as printed: the transport, then its security.
        let text = quick.to_text();
        let order: Vec<usize> = [
            "\"network\"",
            "\"wsSettings\"",
            "\"security\"",
            "\"tlsSettings\"",
        ]
        .iter()
        .map(|key| text.find(key).unwrap())
        .collect();
        assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "{text}");

        let config = quick.config().unwrap();
        let stream = &config.inbounds[1].stream;
        let TransportNetwork::WebSocket(ws) = &stream.network else {
            panic!("not WebSocket: {stream:?}");
        };
        assert_eq!(ws.path, "/t");
        let tls = stream.tls.as_ref().unwrap();
        assert_eq!(tls.certificates.len(), 1);
        assert_eq!(tls.certificates[0].certificate.text, certificate.cert_pem);
        assert_eq!(
            tls.certificates[0].key.as_ref().unwrap().text,
            certificate.key_pem
        );
        v2ray_accepts(&quick);

        // Each alone.
        let mut ws_only = guide_portal();
        ws_only.ws = Some("/a/b".parse().unwrap());
        assert_eq!(
            tunnel_stream(&QuickStart::Portal(ws_only)),
            json!({"network": "ws", "wsSettings": {"path": "/a/b"}})
        );
        let mut tls_only = portal;
        tls_only.ws = None;
        let stream = tunnel_stream(&QuickStart::Portal(tls_only));
        assert_eq!(stream["security"], "tls");
        assert_eq!(stream.get("network"), None);
    }

    #[test]
    fn bridge_ws_and_tls_flags_write_the_tunnel_stream_settings() {
        let certificate = SelfSigned::localhost().unwrap();
        let ca = certificate.cert_path.to_str().unwrap();
        let bridge_with = |portal: &str, ws: Option<WebSocket>, tls: Option<ClientTls>| {
            let mut bridge = guide_bridge();
            bridge.portals = vec![host_port(portal)];
            bridge.ws = ws;
            bridge.tls = tls;
            QuickStart::Bridge(bridge)
        };
        let ws = |path: &str, host: Option<&str>| {
            WebSocket::from_flags(Some(&path.parse().unwrap()), host).unwrap()
        };

        // The brief's case: WebSocket, a listed CA, a server name.
        let quick = bridge_with(
            "127.0.0.1:1024",
            ws("/t", None),
            client_tls(ClientTlsFlags {
                server_name: Some("localhost"),
                ca: Some(&certificate.cert_path),
                ..ClientTlsFlags::default()
            }),
        );
        assert_eq!(
            tunnel_stream(&quick),
            json!({
                "network": "ws",
                "wsSettings": {"path": "/t"},
                "security": "tls",
                "tlsSettings": {"serverName": "localhost", "certificates": [{"certificateFile": ca}]}
            })
        );
        let config = quick.config().unwrap();
        let stream = &config.outbounds[1].stream;
        assert!(matches!(&stream.network, TransportNetwork::WebSocket(ws) if ws.path == "/t"));
        let tls = stream.tls.as_ref().unwrap();
        assert_eq!(tls.server_name.as_deref(), Some("localhost"));
        assert!(!tls.allow_insecure);
        assert_eq!(tls.certificates[0].certificate.text, certificate.cert_pem);
        assert_eq!(tls.certificates[0].key, None);
        v2ray_accepts(&quick);

        let cases = [
            // --ws with --ws-host.
            (
                bridge_with("portal.example:80", ws("t", Some("cdn.example")), None),
                json!({"network": "ws", "wsSettings": {"path": "/t", "headers": {"Host": "cdn.example"}}}),
            ),
            // --tls alone to a domain: V2Ray's defaults say the rest.
            (
                bridge_with(
                    "portal.example:443",
                    None,
                    client_tls(ClientTlsFlags {
                        tls: true,
                        ..ClientTlsFlags::default()
                    }),
                ),
                json!({"security": "tls"}),
            ),
            // --tls to an IP: the IP is the name verified.
            (
                bridge_with(
                    "[2001:db8::1]:443",
                    None,
                    client_tls(ClientTlsFlags {
                        tls: true,
                        ..ClientTlsFlags::default()
                    }),
                ),
                json!({"security": "tls", "tlsSettings": {"serverName": "2001:db8::1"}}),
            ),
            // --server-name alone implies --tls.
            (
                bridge_with(
                    "10.0.0.1:443",
                    None,
                    client_tls(ClientTlsFlags {
                        server_name: Some("portal.example"),
                        ..ClientTlsFlags::default()
                    }),
                ),
                json!({"security": "tls", "tlsSettings": {"serverName": "portal.example"}}),
            ),
            // --insecure implies --tls and needs no name.
            (
                bridge_with(
                    "10.0.0.1:443",
                    ws("/", None),
                    client_tls(ClientTlsFlags {
                        insecure: true,
                        ..ClientTlsFlags::default()
                    }),
                ),
                json!({
                    "network": "ws", "wsSettings": {"path": "/"},
                    "security": "tls", "tlsSettings": {"allowInsecure": true}
                }),
            ),
            // --ca to a domain: trusted, the domain verified.
            (
                bridge_with(
                    "localhost:443",
                    None,
                    client_tls(ClientTlsFlags {
                        ca: Some(&certificate.cert_path),
                        ..ClientTlsFlags::default()
                    }),
                ),
                json!({"security": "tls", "tlsSettings": {"certificates": [{"certificateFile": ca}]}}),
            ),
        ];
        for (quick, expected) in cases {
            assert_eq!(tunnel_stream(&quick), expected, "{}", quick.to_text());
            quick.config().unwrap();
            v2ray_accepts(&quick);
        }
    }

    #[test]
    fn ws_paths_are_normalised_like_v2ray_or_refused() {
        for (given, path) in [("t", "/t"), ("/t", "/t"), ("", "/"), ("a/b/", "/a/b/")] {
            assert_eq!(given.parse::<WsPath>().unwrap().as_str(), path);
        }
        for bad in ["/a b", "/a?b=1", "/a#b", "/a%20b", "/é"] {
            assert_eq!(
                bad.parse::<WsPath>(),
                Err(QuickError::NotWsPath(bad.to_owned()))
            );
        }
    }

    #[test]
    fn transport_flags_come_in_usable_combinations() {
        let cert = Path::new("cert.pem");
        let key = Path::new("key.pem");
        assert_eq!(ServerTls::from_flags(None, None), Ok(None));
        assert_eq!(
            ServerTls::from_flags(Some(cert), None),
            Err(QuickError::TlsCertWithoutKey)
        );
        assert_eq!(
            ServerTls::from_flags(None, Some(key)),
            Err(QuickError::TlsKeyWithoutCert)
        );
        // Relative paths are written absolute.
        let tls = ServerTls::from_flags(Some(cert), Some(key))
            .unwrap()
            .unwrap();
        let here = std::env::current_dir().unwrap();
        assert_eq!(Path::new(&tls.certificate_file), here.join("cert.pem"));
        assert_eq!(Path::new(&tls.key_file), here.join("key.pem"));

        assert_eq!(ClientTls::from_flags(ClientTlsFlags::default()), Ok(None));
        assert_eq!(
            ClientTls::from_flags(ClientTlsFlags {
                ca: Some(cert),
                insecure: true,
                ..ClientTlsFlags::default()
            }),
            Err(QuickError::InsecureWithCa)
        );
        assert_eq!(
            client_tls(ClientTlsFlags {
                ca: Some(cert),
                ..ClientTlsFlags::default()
            })
            .unwrap()
            .trust,
            Trust::AlsoFile(here.join("cert.pem").to_str().unwrap().to_owned())
        );
        assert_eq!(
            ClientTls::from_flags(ClientTlsFlags {
                server_name: Some("a b"),
                ..ClientTlsFlags::default()
            }),
            Err(QuickError::NotServerName("a b".to_owned()))
        );

        assert_eq!(WebSocket::from_flags(None, None), Ok(None));
        assert_eq!(
            WebSocket::from_flags(None, Some("example.com")),
            Err(QuickError::WsHostWithoutWs)
        );
        let path: WsPath = "/t".parse().unwrap();
        assert_eq!(
            WebSocket::from_flags(Some(&path), Some("a b")),
            Err(QuickError::NotWsHost("a b".to_owned()))
        );
        for host in ["example.com", "example.com:8443", "127.0.0.1", "[::1]:443"] {
            assert!(check_ws_host(host).is_ok(), "{host}");
        }
        for name in ["localhost", "portal.example", "127.0.0.1", "::1"] {
            assert!(check_server_name(name).is_ok(), "{name}");
        }
        for bad in ["", "a b", "host:443", "[::1]"] {
            assert!(check_server_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn drain_delay_lands_in_the_rayback_object() {
        let mut portal = guide_portal();
        portal.drain_delay = Some(1500);
        let text = QuickStart::Portal(portal).to_text();
        assert!(text.contains("\"drainDelay\": 1500"), "{text}");
        let config = QuickStart::Portal(guide_portal()).config().unwrap();
        assert_eq!(config.rayback.drain_delay, std::time::Duration::ZERO);
        let mut bridge = guide_bridge();
        bridge.drain_delay = Some(MAX_DRAIN_DELAY_MS);
        let config = QuickStart::Bridge(bridge).config().unwrap();
        assert_eq!(
            config.rayback.drain_delay,
            std::time::Duration::from_millis(u64::from(MAX_DRAIN_DELAY_MS))
        );
    }

    #[test]
    fn metrics_land_in_the_rayback_object() {
        let mut portal = guide_portal();
        portal.metrics = Some("127.0.0.1:9100".parse().unwrap());
        let config = QuickStart::Portal(portal).config().unwrap();
        assert_eq!(
            config.rayback.metrics,
            Some("127.0.0.1:9100".parse().unwrap())
        );
    }

    #[test]
    fn addresses_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_listen("8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::]:1024").unwrap(),
            "[::]:1024".parse().unwrap()
        );
        assert!(parse_listen("localhost:80").is_err());
        assert!(parse_listen("70000").is_err());
        assert_eq!(host_port("example.com:443").host, "example.com");
        assert_eq!(host_port("[2001:db8::1]:1024").host, "2001:db8::1");
        assert_eq!(
            host_port("[2001:db8::1]:1024").to_string(),
            "[2001:db8::1]:1024"
        );
        assert_eq!(
            "10.0.0.1:0".parse::<HostPort>(),
            Err(QuickError::PortZero("10.0.0.1:0".into()))
        );
        for bad in ["", "80", "host", "::1:80", "bad host:80", "a..b:80", ":80"] {
            let error = bad.parse::<HostPort>().unwrap_err();
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
        }
        assert!(check_domain("rayback.internal").is_ok());
        for bad in ["", ".x", "x.", "a b", "1.2.3.4", "é.com", &"a".repeat(254)] {
            assert!(check_domain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn conflicting_portal_addresses_are_refused() {
        let mut portal = guide_portal();
        portal.public.push(portal.public[0]);
        assert!(matches!(
            portal.check(),
            Err(QuickError::DuplicatePublic(_))
        ));
        let mut portal = guide_portal();
        portal.public = vec![Public::tcp(portal.tunnel)];
        assert!(matches!(portal.check(), Err(QuickError::TunnelIsPublic(_))));
        let mut portal = guide_portal();
        portal.public = (1..=1024)
            .map(|port| port.to_string().parse().unwrap())
            .collect();
        assert!(portal.check().is_err());
        assert!(guide_portal().check().is_ok());
    }

    #[test]
    fn every_portal_is_a_vnext_entry() {
        let mut bridge = guide_bridge();
        bridge.portals = ["10.0.0.1:1024", "10.0.0.2:1024", "portal-c.example:443"]
            .into_iter()
            .map(host_port)
            .collect();
        let quick = QuickStart::Bridge(bridge.clone());
        let json = quick.to_json().to_value();
        let vnext = &json["outbounds"][1]["settings"]["vnext"];
        let dialled: Vec<String> = vnext
            .as_array()
            .unwrap()
            .iter()
            .map(|server| format!("{}:{}", server["address"].as_str().unwrap(), server["port"]))
            .collect();
        assert_eq!(
            dialled,
            ["10.0.0.1:1024", "10.0.0.2:1024", "portal-c.example:443"]
        );
        for server in vnext.as_array().unwrap() {
            assert_eq!(server["users"][0]["id"], ID);
        }
        v2ray_accepts(&quick);
        // One tlsSettings serves every portal: an IP is named only when it
        // is the one portal dialled.
        bridge.tls = client_tls(ClientTlsFlags {
            tls: true,
            ..Default::default()
        });
        let stream = tunnel_stream(&QuickStart::Bridge(bridge.clone()));
        assert_eq!(stream, json!({"security": "tls"}));
        bridge.portals.truncate(1);
        let stream = tunnel_stream(&QuickStart::Bridge(bridge));
        assert_eq!(stream["tlsSettings"]["serverName"], "10.0.0.1");
    }
}
