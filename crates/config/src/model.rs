//! The typed configuration: what `parse` returns and the app crate consumes.
//!
//! Every value here is validated and has V2Ray 4.34's defaults filled in;
//! the types say which settings exist (protocols are enums, absent optional
//! values are `None`). This module holds no parsing; `build` fills these
//! types and `emit` writes them back as V2Ray JSON. Files a setting names
//! for its contents (TLS certificates and keys) are already read: the
//! model holds their text.
//!
//! Routing conditions are kept close to the JSON (normalized string lists):
//! the `routing` crate compiles domain, IP and port syntax, not this crate.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Core's value types, which this model uses as they are (one owner per
/// V2Ray syntax).
pub use rayback_core::{
    BlackholeResponse, DomainStrategy, HttpDisguise, HttpRequestHead, HttpResponseHead, Network,
    Pem, ProxyProtocol, Redirect, ResolveStrategy, RuleNetwork, RuleTarget, SocksAuth,
    StreamSettings, Tag, TlsCertificate, TlsSettings, TransportNetwork, VmessSecurity, WsSettings,
};
/// The `dns` object's data (`crates/config/src/dns.rs` fills it).
pub use rayback_core::{
    DnsSettings, HostMapping, HostValue, NameServerAddress, NameServerSettings,
};
pub use rayback_core::{SniffOverride, Sniffing};

/// A complete configuration after merging all sources.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub log: Log,
    /// Inbounds in V2Ray's order: deprecated `inbound`, then `inboundDetour`,
    /// then `inbounds`.
    pub inbounds: Vec<Inbound>,
    /// Outbounds in V2Ray's order; the first one is the default outbound.
    pub outbounds: Vec<Outbound>,
    pub routing: RoutingSettings,
    /// The `dns` object; `None` without one (the system resolver answers).
    pub dns: Option<DnsSettings>,
    pub reverse: Reverse,
    pub policy: Policy,
    /// Rayback-only settings (the top-level `rayback` object).
    pub rayback: RaybackExtras,
}

impl Config {
    /// The outbound connections go to when no rule matches: the first
    /// configured one. `None` when there are none (then a portal, if any,
    /// becomes the default in V2Ray).
    pub fn default_outbound(&self) -> Option<&Outbound> {
        self.outbounds.first()
    }

    /// The last outbound with `tag` (V2Ray's tag table keeps the last one).
    pub fn outbound(&self, tag: &str) -> Option<&Outbound> {
        self.outbounds
            .iter()
            .rev()
            .find(|outbound| outbound.tag.as_ref().map(Tag::as_str) == Some(tag))
    }
}

// ---------------------------------------------------------------- log

/// The `log` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log {
    pub access: LogTarget,
    pub error: LogTarget,
    pub level: LogLevel,
}

impl Default for Log {
    /// V2Ray's log when the config has no `log` object: no access log,
    /// errors on the console at `warning`.
    fn default() -> Log {
        Log {
            access: LogTarget::None,
            error: LogTarget::Console,
            level: LogLevel::Warning,
        }
    }
}

/// Where a log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard output.
    Console,
    /// Nowhere (`"none"`).
    None,
    /// Appended to this file.
    File(String),
}

/// The error log's level (`loglevel`); `None` turns both logs off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
    None,
}

// ---------------------------------------------------------------- inbounds

/// One inbound (`inbounds[i]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Inbound {
    /// `None` for an untagged inbound (the JSON had no tag or `""`).
    pub tag: Option<Tag>,
    /// Address to listen on; `None` = every interface.
    pub listen: Option<IpAddr>,
    pub port: InboundPort,
    /// `streamSettings` as a listener reads it: TCP or WebSocket, TLS with
    /// the certificates it presents (each with its key), the PROXY
    /// protocol. Plain TCP when absent.
    pub stream: StreamSettings,
    /// `sniffing` (or the legacy `domainOverride`) when enabled.
    pub sniffing: Option<Sniffing>,
    pub settings: InboundSettings,
}

/// The `port` of an inbound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundPort {
    /// A port or an inclusive range (`"1000-1010"`): one listener per port.
    Range(PortRange),
    /// `"env:NAME"`: the port (or range) is read from the environment
    /// variable NAME when the app starts; see [`InboundPort::resolve`].
    Env(String),
}

impl InboundPort {
    /// The port range, reading `env:NAME` through `lookup` (normally
    /// `|name| std::env::var(name).ok()`). An unset variable reads as
    /// empty, which is an invalid port, as in V2Ray.
    pub fn resolve(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<PortRange, String> {
        match self {
            InboundPort::Range(range) => Ok(*range),
            InboundPort::Env(name) => {
                let value = lookup(name).unwrap_or_default();
                crate::reader::parse_port_range_text(&value)
                    .map_err(|message| format!("environment variable {name}: {message}"))
            }
        }
    }
}

/// An inclusive port range; `from == to` for a single port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub from: u16,
    pub to: u16,
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from == self.to {
            write!(f, "{}", self.from)
        } else {
            write!(f, "{}-{}", self.from, self.to)
        }
    }
}

/// Protocol settings of an inbound.
#[derive(Clone, Debug, PartialEq)]
pub enum InboundSettings {
    /// `dokodemo-door`: every accepted connection goes to one destination.
    DokodemoDoor(DokodemoDoor),
    /// `vmess`: the VMess server.
    Vmess(VmessInbound),
    /// `vless`: the VLESS server.
    Vless(VlessInbound),
    /// `socks`: the SOCKS 4/4a/5 proxy server.
    Socks(SocksInbound),
    /// `http`: the HTTP proxy server.
    Http(HttpInbound),
}

/// `socks` inbound settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocksInbound {
    /// `auth`: `"password"`, else no authentication (4.34 does not refuse
    /// other names).
    pub auth: SocksAuth,
    /// `accounts`, in order (a later duplicate username wins).
    pub accounts: Vec<ProxyAccount>,
    /// `udp`: answer UDP ASSOCIATE and listen on UDP.
    pub udp: bool,
    /// `ip`: the address UDP ASSOCIATE replies name (IP or domain).
    pub ip: Option<String>,
    /// Deprecated idle timeout in seconds, as dokodemo-door's.
    pub timeout: u32,
    pub user_level: u32,
}

/// `http` inbound settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpInbound {
    /// Deprecated idle timeout in seconds, as dokodemo-door's.
    pub timeout: u32,
    /// `accounts`: when not empty, Basic proxy authentication is required.
    pub accounts: Vec<ProxyAccount>,
    /// `allowTransparent`: accept origin-form requests.
    pub allow_transparent: bool,
    pub user_level: u32,
}

/// One `{"user", "pass"}` of a SOCKS or HTTP inbound's `accounts`.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyAccount {
    pub user: String,
    pub pass: String,
}

impl fmt::Debug for ProxyAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyAccount")
            .field("user", &self.user)
            .field("pass", &"***")
            .finish()
    }
}

/// `dokodemo-door` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DokodemoDoor {
    /// Destination address (IP or domain). `None`: every connection fails
    /// unless `follow_redirect` finds the original destination.
    pub address: Option<String>,
    /// Destination port (0 is accepted; dialing it fails later).
    pub port: u16,
    /// Which listeners to open; also the destination's network. Default TCP.
    pub network: Vec<Network>,
    /// Deprecated idle timeout in seconds; 0 = unset. When > 0 and
    /// `user_level` is 0 it replaces the policy's `connIdle`.
    pub timeout: u32,
    /// Use the original destination of a redirected (iptables) connection.
    pub follow_redirect: bool,
    /// Policy level of this inbound's connections.
    pub user_level: u32,
}

/// `vmess` inbound settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmessInbound {
    pub clients: Vec<VmessClient>,
    /// `default`: alterId and level for users created by detour (kept for
    /// fidelity; Rayback has no detour).
    pub default: Option<VmessDefault>,
    /// Reject the legacy (MD5) header and `none`/non-AEAD body security.
    pub disable_insecure_encryption: bool,
}

/// One user of a VMess inbound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmessClient {
    pub id: VmessId,
    pub level: u32,
    /// Legacy alter IDs (0 = AEAD only from the client side).
    pub alter_id: u16,
    /// Used by routing `user` conditions and logs; unique among clients
    /// (compared without regard to case).
    pub email: Option<String>,
}

/// `default` of a VMess inbound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmessDefault {
    pub alter_id: u16,
    pub level: u8,
}

/// A VMess user ID. `Debug` and `Display` show only its ends
/// (`2784…4b6b`) so logs never carry the secret; [`VmessId::reveal`] gives
/// the full hyphenated text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VmessId(pub uuid::Uuid);

impl VmessId {
    /// The 16 bytes VMess keys are derived from.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The full ID, e.g. for writing the configuration back.
    pub fn reveal(&self) -> String {
        self.0.hyphenated().to_string()
    }
}

impl fmt::Debug for VmessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for VmessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buffer = uuid::Uuid::encode_buffer();
        let text = self.0.simple().encode_lower(&mut buffer);
        write!(f, "{}…{}", &text[..4], &text[28..])
    }
}

// ---------------------------------------------------------------- outbounds

/// One outbound (`outbounds[i]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Outbound {
    /// `None` for an untagged outbound.
    pub tag: Option<Tag>,
    /// Local address to dial from (`sendThrough`).
    pub send_through: Option<IpAddr>,
    /// Mux.Cool on this outbound; `None` when absent or disabled by a
    /// negative concurrency.
    pub mux: Option<Mux>,
    /// `streamSettings` as a dialer reads it: TCP or WebSocket, TLS with
    /// the certificates it trusts besides the system's roots.
    /// `accept_proxy_protocol` is always false (it has no effect when
    /// dialling). Plain TCP when absent.
    pub stream: StreamSettings,
    pub settings: OutboundSettings,
}

/// The outbound `mux` object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mux {
    pub enabled: bool,
    /// Sessions per connection, 1..=1024 (0 in the JSON means 8).
    pub concurrency: u16,
}

/// Protocol settings of an outbound.
#[derive(Clone, Debug, PartialEq)]
pub enum OutboundSettings {
    Freedom(Freedom),
    Vmess(VmessOutbound),
    Blackhole(Blackhole),
    Vless(VlessOutbound),
}

/// `vless` inbound settings (`decryption` is always `none`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlessInbound {
    pub clients: Vec<VlessClient>,
    /// Where connections that are not VLESS go (none: they are drained
    /// and closed).
    pub fallbacks: Vec<VlessFallback>,
}

/// One VLESS `fallbacks` entry (keyed by path only: `alpn` is refused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlessFallback {
    /// Empty, or the HTTP path (starting with `/`) this entry serves.
    pub path: String,
    pub dest: VlessFallbackDest,
    /// PROXY protocol version sent first: 0, 1 or 2.
    pub xver: u8,
}

/// Where a VLESS fallback connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VlessFallbackDest {
    /// `host:port` over TCP.
    Tcp(String),
    /// A Unix socket path.
    Unix(String),
}

/// A user of a VLESS inbound (its `flow` is always empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlessClient {
    /// A UUID, as VMess's (same masked printing).
    pub id: VmessId,
    pub level: u32,
    pub email: Option<String>,
}

/// `vless` outbound settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlessOutbound {
    /// Servers; never empty.
    pub vnext: Vec<VlessServer>,
}

/// One VLESS `vnext` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlessServer {
    /// IP or domain of the server.
    pub address: String,
    pub port: u16,
    /// Never empty; every user's `encryption` is `none`.
    pub users: Vec<VlessClient>,
}

/// `freedom` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Freedom {
    pub domain_strategy: ResolveStrategy,
    /// Send every connection here instead of its destination.
    pub redirect: Option<Redirect>,
    pub user_level: u32,
    /// Deprecated idle timeout in seconds (replaces `connIdle` when > 0 and
    /// `user_level` is 0).
    pub timeout: Option<u32>,
    /// `proxyProtocol` (Xray's key): the PROXY header sent before a TCP
    /// session's payload.
    pub proxy_protocol: ProxyProtocol,
}

/// `vmess` outbound settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmessOutbound {
    /// Servers; never empty.
    pub vnext: Vec<VmessServer>,
}

/// One `vnext` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmessServer {
    /// IP or domain of the server.
    pub address: String,
    pub port: u16,
    /// Never empty.
    pub users: Vec<VmessUser>,
}

/// A user of a VMess outbound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmessUser {
    pub id: VmessId,
    pub alter_id: u16,
    pub security: VmessSecurity,
    pub level: u32,
    pub email: Option<String>,
}

/// `blackhole` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blackhole {
    pub response: BlackholeResponse,
}

// ---------------------------------------------------------------- routing

/// The `routing` object, its rules and balancers: core's plain data, which
/// the `routing` crate compiles.
pub use rayback_core::{BalancerSettings, RoutingSettings, RuleSettings};

// ---------------------------------------------------------------- reverse

/// The `reverse` object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reverse {
    pub bridges: Vec<Bridge>,
    pub portals: Vec<Portal>,
}

/// A bridge: dials the portal and serves its mux sessions locally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bridge {
    /// Inbound tag stamped on every connection the bridge originates.
    pub tag: String,
    /// Destination domain of the bridge's dial-outs (need not resolve).
    pub domain: String,
}

/// A portal: adopts bridge connections and sends public traffic over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Portal {
    /// Tag of the outbound the portal registers.
    pub tag: String,
    /// Routed connections to exactly this domain are bridge connections.
    pub domain: String,
    /// Rayback-only: the control channel's domain.
    pub control_domain: ControlDomain,
}

/// Domain of the reverse control channel (mux session 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ControlDomain {
    /// `reverse.internal.v2ray.com`: V2Ray up to 4.34.
    #[default]
    V2Ray,
    /// `reverse.internal.v2fly.org`: v2fly 4.35 and later.
    V2Fly,
}

impl ControlDomain {
    pub const V2RAY_DOMAIN: &'static str = "reverse.internal.v2ray.com";
    pub const V2FLY_DOMAIN: &'static str = "reverse.internal.v2fly.org";

    pub fn as_str(self) -> &'static str {
        match self {
            ControlDomain::V2Ray => ControlDomain::V2RAY_DOMAIN,
            ControlDomain::V2Fly => ControlDomain::V2FLY_DOMAIN,
        }
    }
}

// ---------------------------------------------------------------- policy

/// The `policy` object: per-level limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Configured levels, each complete (unset fields have the defaults).
    pub levels: BTreeMap<u32, LevelPolicy>,
}

impl Policy {
    /// The policy of `level`: its configured values, else the defaults.
    pub fn level(&self, level: u32) -> LevelPolicy {
        self.levels.get(&level).copied().unwrap_or_default()
    }
}

/// Limits of one user level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelPolicy {
    /// Time allowed for an inbound handshake (V2Ray always uses level 0's).
    pub handshake: Duration,
    pub conn_idle: Duration,
    pub uplink_only: Duration,
    pub downlink_only: Duration,
    pub buffer_size: BufferSize,
}

impl Default for LevelPolicy {
    /// V2Ray 4.34's defaults: 60 s handshake, 300 s idle, 1 s uplink-only
    /// and downlink-only, 512 KiB per direction (amd64).
    fn default() -> LevelPolicy {
        LevelPolicy {
            handshake: Duration::from_secs(60),
            conn_idle: Duration::from_secs(300),
            uplink_only: Duration::from_secs(1),
            downlink_only: Duration::from_secs(1),
            buffer_size: BufferSize::Bytes(512 * 1024),
        }
    }
}

/// Per-direction connection buffer (`bufferSize`, given in KiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferSize {
    /// A negative `bufferSize`.
    Unlimited,
    Bytes(u64),
}

// ---------------------------------------------------------------- rayback

/// The Rayback-only top-level `rayback` object (V2Ray ignores it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaybackExtras {
    /// Where to serve Prometheus `/metrics`; `None` = no endpoint.
    pub metrics: Option<SocketAddr>,
    /// HTTP basic auth for the status page, `/status` and `/metrics`
    /// (`metricsAuth`, `"user:password"`); `None` = open. `/live` and
    /// `/ready` stay open either way.
    pub metrics_auth: Option<MetricsAuth>,
    /// How long a public connection at a portal waits for a bridge
    /// connection before it is closed (`noBridgeWait`, ms; default 2000).
    pub no_bridge_wait: Duration,
    /// After SIGTERM/SIGINT, how long the process keeps serving while
    /// `/ready` answers 503, so a load balancer stops sending before the
    /// listeners close (`drainDelay`, ms, 0 to 600000; default 0).
    pub drain_delay: Duration,
    /// Threads that run connections (`workers`; 0 = automatic, the
    /// default). Read at start; a reload keeps the running value.
    pub workers: u32,
    pub limits: Limits,
}

impl Default for RaybackExtras {
    fn default() -> RaybackExtras {
        RaybackExtras {
            metrics: None,
            metrics_auth: None,
            no_bridge_wait: Duration::from_millis(2000),
            drain_delay: Duration::ZERO,
            workers: 0,
            limits: Limits::default(),
        }
    }
}

/// `rayback.metricsAuth` and `--metrics-auth`: `user:password` for HTTP
/// basic auth on the metrics listener. Split at the first colon, as RFC
/// 7617 does (a user has no colon; a password may). `Debug` hides the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct MetricsAuth {
    pub user: String,
    pub password: String,
}

impl MetricsAuth {
    /// The `user:password` text, as written in a configuration.
    pub fn to_text(&self) -> String {
        format!("{}:{}", self.user, self.password)
    }
}

impl std::str::FromStr for MetricsAuth {
    type Err = String;

    /// Parses `user:password`; the error says what is wrong without
    /// repeating the value (it holds a password).
    fn from_str(text: &str) -> Result<MetricsAuth, String> {
        let Some((user, password)) = text.split_once(':') else {
            return Err("expected user:password (no colon found)".to_owned());
        };
        if user.is_empty() {
            return Err("expected user:password (the user is empty)".to_owned());
        }
        if password.is_empty() {
            return Err("expected user:password (the password is empty)".to_owned());
        }
        if text.chars().any(char::is_control) {
            return Err("expected user:password (control characters are not allowed)".to_owned());
        }
        Ok(MetricsAuth {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }
}

impl fmt::Debug for MetricsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsAuth")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// `rayback.limits`: resource caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent mux sub-streams on one tunnel connection (default 1024).
    pub streams_per_connection: u32,
    /// Tunnel connections one bridge keeps at most (default 64: with
    /// 1024 streams each, 65,536 concurrent sessions; a tunnel costs a
    /// portal about 11 KiB).
    pub connections_per_bridge: u32,
    /// Connections one source IP may have in the handshake phase (default 64).
    pub unauthenticated_per_source: u32,
    /// A sub-stream whose reader makes no progress this long is reset
    /// (`streamStallTimeout`, seconds, 1 to 60; default 30).
    pub stream_stall_timeout: Duration,
    /// Bytes buffered per sub-stream and direction (default 262144).
    pub stream_buffer: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            streams_per_connection: 1024,
            connections_per_bridge: 64,
            unauthenticated_per_source: 64,
            stream_stall_timeout: Duration::from_secs(30),
            stream_buffer: 262_144,
        }
    }
}
