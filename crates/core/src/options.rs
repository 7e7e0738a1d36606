//! Values that a V2Ray setting spells and more than one crate acts on,
//! defined once: `config` parses the JSON into them, and the component
//! that acts on one (`routing`, `handlers`, `vmess`) takes it as it is.
//! Keeping them here, at the bottom of the crate picture, is what lets both
//! sides see one type without an arrow between them (ARCHITECTURE.md: one owner
//! per V2Ray syntax). Each knows its V2Ray names (`parse`, `v2ray_name`)
//! and nothing more.
//!
//! Not here: reading JSON, or the warnings for unknown names (`config`);
//! what a value does (`routing` matches rules, `handlers` dials and
//! answers, `vmess` picks a body cipher).

use std::fmt;

use crate::address::{Address, Destination};

/// `routing.domainStrategy`: what the router does with domain targets and
/// `ip` rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DomainStrategy {
    /// Match what the session carries; a domain target never matches `ip`.
    #[default]
    AsIs,
    /// Accepted by 4.34 and routed exactly like `AsIs` (its router has no
    /// code for it); kept so that the configuration prints back as written.
    AlwaysIp,
    /// When no rule matches a domain target, resolve it and try every rule
    /// again with its IPs.
    IpIfNonMatch,
    /// Resolve a domain target the first time an `ip` condition is reached.
    IpOnDemand,
}

impl DomainStrategy {
    /// V2Ray's names and their aliases, case-insensitive; `""` is `AsIs`.
    /// `None` for a name 4.34 does not know (it routes those as `AsIs`).
    pub fn parse(text: &str) -> Option<DomainStrategy> {
        match text.to_ascii_lowercase().as_str() {
            "asis" | "as_is" | "" => Some(DomainStrategy::AsIs),
            "alwaysip" | "always_ip" | "always-ip" => Some(DomainStrategy::AlwaysIp),
            "ipifnonmatch" | "ip_if_non_match" | "ip-if-non-match" => {
                Some(DomainStrategy::IpIfNonMatch)
            }
            "ipondemand" | "ip_on_demand" | "ip-on-demand" => Some(DomainStrategy::IpOnDemand),
            _ => None,
        }
    }

    /// The name V2Ray's documentation uses.
    pub fn v2ray_name(self) -> &'static str {
        match self {
            DomainStrategy::AsIs => "AsIs",
            DomainStrategy::AlwaysIp => "AlwaysIP",
            DomainStrategy::IpIfNonMatch => "IPIfNonMatch",
            DomainStrategy::IpOnDemand => "IPOnDemand",
        }
    }
}

/// freedom's `domainStrategy`: how an outbound dials a domain destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResolveStrategy {
    /// Dial the domain as it is (the system resolves it).
    #[default]
    AsIs,
    /// Resolve, then dial one address of either family.
    UseIp,
    /// Resolve, then dial one IPv4 address.
    UseIpv4,
    /// Resolve, then dial one IPv6 address.
    UseIpv6,
}

impl ResolveStrategy {
    /// V2Ray's names and their aliases, case-insensitive; `""` is `AsIs`.
    /// `None` for a name 4.34 does not know (it dials those `AsIs`).
    pub fn parse(text: &str) -> Option<ResolveStrategy> {
        match text.to_ascii_lowercase().as_str() {
            "asis" | "as_is" | "" => Some(ResolveStrategy::AsIs),
            "useip" | "use_ip" => Some(ResolveStrategy::UseIp),
            "useip4" | "useipv4" | "use_ipv4" | "use_ip_v4" | "use_ip4" => {
                Some(ResolveStrategy::UseIpv4)
            }
            "useip6" | "useipv6" | "use_ipv6" | "use_ip_v6" | "use_ip6" => {
                Some(ResolveStrategy::UseIpv6)
            }
            _ => None,
        }
    }

    /// The name V2Ray's documentation uses.
    pub fn v2ray_name(self) -> &'static str {
        match self {
            ResolveStrategy::AsIs => "AsIs",
            ResolveStrategy::UseIp => "UseIP",
            ResolveStrategy::UseIpv4 => "UseIPv4",
            ResolveStrategy::UseIpv6 => "UseIPv6",
        }
    }
}

/// freedom's `redirect`: where every session goes instead of its own
/// destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// `None` (written `":80"`) or `0.0.0.0` keeps the session's address.
    pub host: Option<Address>,
    /// 0 keeps the session's port.
    pub port: u16,
}

/// Why a `redirect` text is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    /// The `host:port` shape is wrong; the reason says how.
    #[error("invalid redirect address {text:?}: {reason}")]
    Address { text: String, reason: &'static str },
    /// The port is not a number in 0..=65535.
    #[error("invalid redirect port: {0}")]
    Port(String),
}

impl Redirect {
    /// Reads V2Ray's `host:port` the way 4.34 does (`net.SplitHostPort`,
    /// then `net.ParseAddress`): an IPv6 host in brackets, surrounding
    /// spaces trimmed, an empty host keeps the session's address, the port
    /// is required.
    pub fn parse(text: &str) -> Result<Redirect, RedirectError> {
        let bad = |reason| RedirectError::Address {
            text: text.to_owned(),
            reason,
        };
        const MISSING_PORT: &str = "missing port (use host:port, e.g. \"127.0.0.1:80\")";
        let (host, port) = if let Some(after_bracket) = text.strip_prefix('[') {
            let Some((host, after)) = after_bracket.split_once(']') else {
                return Err(bad("missing ']'"));
            };
            let Some(port) = after.strip_prefix(':') else {
                return Err(bad(MISSING_PORT));
            };
            (host, port)
        } else {
            let Some((host, port)) = text.rsplit_once(':') else {
                return Err(bad(MISSING_PORT));
            };
            if host.contains(':') {
                return Err(bad("too many colons (write an IPv6 host as [::1]:80)"));
            }
            (host, port)
        };
        if host.contains('[') || host.contains(']') || port.contains('[') || port.contains(']') {
            return Err(bad("misplaced brackets"));
        }
        if port.is_empty() || !port.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(RedirectError::Port(format!(
                "{port:?} is not a port number"
            )));
        }
        let port = match port.parse::<u64>() {
            Ok(value) if value <= 65535 => value as u16,
            _ => {
                return Err(RedirectError::Port(format!(
                    "port {port} is out of range 0..=65535"
                )))
            }
        };
        let host = host.trim();
        let host = if host.is_empty() {
            None
        } else {
            Some(Address::parse(host).map_err(|_| bad("the host is longer than 255 bytes"))?)
        };
        Ok(Redirect { host, port })
    }

    /// `destination` after the redirect.
    pub fn apply(&self, destination: &Destination) -> Destination {
        let mut redirected = destination.clone();
        match &self.host {
            Some(Address::Ipv4(ip)) if ip.is_unspecified() => {}
            Some(host) => redirected.address = host.clone(),
            None => {}
        }
        if self.port != 0 {
            redirected.port = self.port;
        }
        redirected
    }
}

/// V2Ray's spelling: `host:port`, an IPv6 host in brackets, an empty host
/// for "keep the address".
impl fmt::Display for Redirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            None => write!(f, ":{}", self.port),
            Some(Address::Ipv6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Some(host) => write!(f, "{host}:{}", self.port),
        }
    }
}

/// freedom's `proxyProtocol` (Xray's key; V2Ray 4.34 ignores it): the
/// PROXY protocol header freedom writes to the backend before the payload
/// of a TCP session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// `0` or absent: no header.
    #[default]
    Off,
    /// `1`: the text header (`PROXY TCP4 …\r\n`).
    V1,
    /// `2`: the binary header.
    V2,
}

impl ProxyProtocol {
    /// `0`, `1` or `2`; `None` for any other number.
    pub fn from_version(version: u64) -> Option<ProxyProtocol> {
        match version {
            0 => Some(ProxyProtocol::Off),
            1 => Some(ProxyProtocol::V1),
            2 => Some(ProxyProtocol::V2),
            _ => None,
        }
    }

    /// The number the configuration spells it with (0 for off).
    pub fn version(self) -> u8 {
        match self {
            ProxyProtocol::Off => 0,
            ProxyProtocol::V1 => 1,
            ProxyProtocol::V2 => 2,
        }
    }
}

/// blackhole's `response.type`: what a blackhole answers before it closes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BlackholeResponse {
    /// Nothing: close at once.
    #[default]
    None,
    /// 4.34's canned HTTP 403, then close.
    Http,
}

impl BlackholeResponse {
    /// `none` or `http`, case-insensitive. `None` for any other name (4.34
    /// refuses the configuration).
    pub fn parse(text: &str) -> Option<BlackholeResponse> {
        match text.to_ascii_lowercase().as_str() {
            "none" => Some(BlackholeResponse::None),
            "http" => Some(BlackholeResponse::Http),
            _ => None,
        }
    }

    /// The name V2Ray's documentation uses.
    pub fn v2ray_name(self) -> &'static str {
        match self {
            BlackholeResponse::None => "none",
            BlackholeResponse::Http => "http",
        }
    }
}

/// A `socks` inbound's `auth`: what the SOCKS 5 method negotiation asks
/// for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SocksAuth {
    /// `noauth`, and any other name (4.34 falls back to it silently).
    #[default]
    NoAuth,
    /// `password`: RFC 1929 username and password from `accounts`.
    Password,
}

impl SocksAuth {
    /// `password` (exactly, as 4.34 compares) or else no authentication.
    pub fn parse(text: &str) -> SocksAuth {
        match text {
            "password" => SocksAuth::Password,
            _ => SocksAuth::NoAuth,
        }
    }

    /// The name V2Ray's documentation uses.
    pub fn v2ray_name(self) -> &'static str {
        match self {
            SocksAuth::NoAuth => "noauth",
            SocksAuth::Password => "password",
        }
    }
}

/// A VMess outbound user's `security`: the body security the client asks
/// for. Only the user's choice; which cipher `Auto` becomes, and the
/// cipher itself, are the `vmess` crate's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum VmessSecurity {
    /// A cipher picked by CPU architecture, as 4.34 does (the `vmess`
    /// crate's `BodySecurity::resolve` says which). Also what unknown names
    /// (e.g. `"zero"`) mean in 4.34.
    #[default]
    Auto,
    Aes128Gcm,
    ChaCha20Poly1305,
    /// No encryption of the body (the header stays authenticated).
    None,
}

impl VmessSecurity {
    /// V2Ray's names, case-insensitive; `""` is `Auto`. `None` for any
    /// other name (`zero`, `aes-128-cfb`, `legacy`, a typo), which 4.34
    /// treats as `auto`: callers that follow it write
    /// `parse(name).unwrap_or(VmessSecurity::Auto)`.
    pub fn parse(text: &str) -> Option<VmessSecurity> {
        match text.to_ascii_lowercase().as_str() {
            "aes-128-gcm" => Some(VmessSecurity::Aes128Gcm),
            "chacha20-poly1305" => Some(VmessSecurity::ChaCha20Poly1305),
            "none" => Some(VmessSecurity::None),
            "auto" | "" => Some(VmessSecurity::Auto),
            _ => None,
        }
    }

    /// The name V2Ray's documentation uses.
    pub fn v2ray_name(self) -> &'static str {
        match self {
            VmessSecurity::Auto => "auto",
            VmessSecurity::Aes128Gcm => "aes-128-gcm",
            VmessSecurity::ChaCha20Poly1305 => "chacha20-poly1305",
            VmessSecurity::None => "none",
        }
    }
}

/// Where a matching routing rule sends the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleTarget {
    /// `outboundTag`: the tag of an outbound (or a portal).
    Outbound(String),
    /// `balancerTag`: the tag of one of `routing.balancers`.
    Balancer(String),
}

impl RuleTarget {
    /// The rule key V2Ray spells this target with: `outboundTag` or
    /// `balancerTag`.
    pub fn v2ray_key(&self) -> &'static str {
        match self {
            RuleTarget::Outbound(_) => "outboundTag",
            RuleTarget::Balancer(_) => "balancerTag",
        }
    }

    /// The tag it names.
    pub fn tag(&self) -> &str {
        match self {
            RuleTarget::Outbound(tag) | RuleTarget::Balancer(tag) => tag,
        }
    }
}

/// One name in a routing rule's `network` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleNetwork {
    Tcp,
    Udp,
    /// Accepted by 4.34; never matches a Rayback session.
    Unix,
    /// Any other name, kept as written; it matches nothing.
    Unknown(String),
}

impl RuleNetwork {
    /// `tcp`, `udp` or `unix`, case-insensitive; any other name is kept as
    /// written in [`RuleNetwork::Unknown`] (4.34 accepts it and never
    /// matches it).
    pub fn parse(text: &str) -> RuleNetwork {
        match text.to_ascii_lowercase().as_str() {
            "tcp" => RuleNetwork::Tcp,
            "udp" => RuleNetwork::Udp,
            "unix" => RuleNetwork::Unix,
            _ => RuleNetwork::Unknown(text.to_owned()),
        }
    }

    /// The name V2Ray's documentation uses; an unknown name as written.
    pub fn v2ray_name(&self) -> &str {
        match self {
            RuleNetwork::Tcp => "tcp",
            RuleNetwork::Udp => "udp",
            RuleNetwork::Unix => "unix",
            RuleNetwork::Unknown(name) => name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_v2ray_names_and_print_them_back() {
        for strategy in [
            DomainStrategy::AsIs,
            DomainStrategy::AlwaysIp,
            DomainStrategy::IpIfNonMatch,
            DomainStrategy::IpOnDemand,
        ] {
            assert_eq!(DomainStrategy::parse(strategy.v2ray_name()), Some(strategy));
        }
        for strategy in [
            ResolveStrategy::AsIs,
            ResolveStrategy::UseIp,
            ResolveStrategy::UseIpv4,
            ResolveStrategy::UseIpv6,
        ] {
            assert_eq!(
                ResolveStrategy::parse(strategy.v2ray_name()),
                Some(strategy)
            );
        }
        assert_eq!(
            DomainStrategy::parse("ip-on-demand"),
            Some(DomainStrategy::IpOnDemand)
        );
        assert_eq!(
            DomainStrategy::parse("IP-IF-NON-MATCH"),
            Some(DomainStrategy::IpIfNonMatch)
        );
        assert_eq!(DomainStrategy::parse(""), Some(DomainStrategy::AsIs));
        for (text, want) in [
            ("use_ip", ResolveStrategy::UseIp),
            ("use_ip_v4", ResolveStrategy::UseIpv4),
            ("useip4", ResolveStrategy::UseIpv4),
            ("USEIPV6", ResolveStrategy::UseIpv6),
            ("use_ip6", ResolveStrategy::UseIpv6),
        ] {
            assert_eq!(ResolveStrategy::parse(text), Some(want), "{text}");
        }
        assert_eq!(DomainStrategy::parse("UseIP"), None);
        assert_eq!(ResolveStrategy::parse("IPOnDemand"), None);
    }

    #[test]
    fn parses_redirects_like_go_split_host_port() {
        let ok = |text: &str, host: Option<&str>, port: u16| {
            let want = Redirect {
                host: host.map(|h| Address::parse(h).unwrap()),
                port,
            };
            assert_eq!(Redirect::parse(text).unwrap(), want, "{text}");
        };
        ok("127.0.0.1:80", Some("127.0.0.1"), 80);
        ok(":80", None, 80);
        ok("[::1]:443", Some("::1"), 443);
        ok("example.com:0", Some("example.com"), 0);
        ok("0.0.0.0:8080", Some("0.0.0.0"), 8080);
        for bad in [
            "127.0.0.1",
            "::1:80",
            "[::1]80",
            "host:",
            "host:x",
            "host:70000",
            "",
            "[::1",
        ] {
            let error = Redirect::parse(bad).unwrap_err();
            assert!(
                error.to_string().starts_with("invalid redirect"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn redirect_keeps_what_it_does_not_name() {
        let original = Destination::tcp(Address::parse("example.com").unwrap(), 443);
        let apply = |text: &str| Redirect::parse(text).unwrap().apply(&original).to_string();
        assert_eq!(apply("127.0.0.1:80"), "tcp:127.0.0.1:80");
        assert_eq!(apply(":80"), "tcp:example.com:80");
        assert_eq!(apply("0.0.0.0:80"), "tcp:example.com:80");
        assert_eq!(apply("10.0.0.1:0"), "tcp:10.0.0.1:443");
        assert_eq!(apply("[::]:0"), "tcp:[::]:443");
        let udp = Destination::udp(Address::parse("1.2.3.4").unwrap(), 53);
        assert_eq!(
            Redirect::parse(":5353").unwrap().apply(&udp).to_string(),
            "udp:1.2.3.4:5353"
        );
    }

    #[test]
    fn redirect_prints_as_v2ray_spells_it() {
        for text in ["127.0.0.1:80", ":80", "[::1]:8080", "web.local:0"] {
            assert_eq!(Redirect::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn blackhole_responses_parse_v2ray_names_and_print_them_back() {
        for response in [BlackholeResponse::None, BlackholeResponse::Http] {
            assert_eq!(
                BlackholeResponse::parse(response.v2ray_name()),
                Some(response)
            );
        }
        assert_eq!(
            BlackholeResponse::parse("HTTP"),
            Some(BlackholeResponse::Http)
        );
        assert_eq!(BlackholeResponse::parse(""), None);
        assert_eq!(BlackholeResponse::parse("403"), None);
    }

    #[test]
    fn vmess_security_names_follow_434() {
        for security in [
            VmessSecurity::Auto,
            VmessSecurity::Aes128Gcm,
            VmessSecurity::ChaCha20Poly1305,
            VmessSecurity::None,
        ] {
            assert_eq!(VmessSecurity::parse(security.v2ray_name()), Some(security));
        }
        assert_eq!(
            VmessSecurity::parse("AES-128-GCM"),
            Some(VmessSecurity::Aes128Gcm)
        );
        assert_eq!(
            VmessSecurity::parse("CHACHA20-POLY1305"),
            Some(VmessSecurity::ChaCha20Poly1305)
        );
        assert_eq!(VmessSecurity::parse("none"), Some(VmessSecurity::None));
        assert_eq!(VmessSecurity::parse(""), Some(VmessSecurity::Auto));
        // 4.34: an unknown name means auto.
        for unknown in ["zero", "aes-128-cfb", "legacy"] {
            assert_eq!(VmessSecurity::parse(unknown), None, "{unknown}");
            assert_eq!(
                VmessSecurity::parse(unknown).unwrap_or(VmessSecurity::Auto),
                VmessSecurity::Auto
            );
        }
    }

    #[test]
    fn rule_networks_keep_unknown_names_as_written() {
        for network in [RuleNetwork::Tcp, RuleNetwork::Udp, RuleNetwork::Unix] {
            assert_eq!(RuleNetwork::parse(network.v2ray_name()), network);
        }
        assert_eq!(RuleNetwork::parse("UDP"), RuleNetwork::Udp);
        assert_eq!(RuleNetwork::parse("Unix"), RuleNetwork::Unix);
        let sctp = RuleNetwork::parse("SCTP");
        assert_eq!(sctp, RuleNetwork::Unknown("SCTP".into()));
        assert_eq!(sctp.v2ray_name(), "SCTP");
    }

    #[test]
    fn rule_targets_name_their_key_and_tag() {
        let outbound = RuleTarget::Outbound("direct".into());
        assert_eq!(
            (outbound.v2ray_key(), outbound.tag()),
            ("outboundTag", "direct")
        );
        let balancer = RuleTarget::Balancer("b".into());
        assert_eq!((balancer.v2ray_key(), balancer.tag()), ("balancerTag", "b"));
    }

    #[test]
    fn proxy_protocol_versions() {
        for protocol in [ProxyProtocol::Off, ProxyProtocol::V1, ProxyProtocol::V2] {
            let version = u64::from(protocol.version());
            assert_eq!(ProxyProtocol::from_version(version), Some(protocol));
        }
        assert_eq!(ProxyProtocol::from_version(3), None);
        assert_eq!(ProxyProtocol::default(), ProxyProtocol::Off);
    }
}
