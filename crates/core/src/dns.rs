//! The `dns` object as plain data, and the resolver trait its users call.
//!
//! `config` fills [`DnsSettings`] from V2Ray 4.34's JSON (`infra/conf/dns.go`);
//! the `dns` crate turns it into a resolver; freedom (`UseIP*`) and the
//! dispatcher (`IPIfNonMatch`, `IPOnDemand`) call it through [`Resolve`]
//! without knowing which resolver they hold. Domain and IP rules stay
//! strings here, in the routing syntax (`domain:`, `full:`, `geosite:`,
//! CIDRs, `geoip:`): the routing crate's matchers compile them.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;

use crate::options::ResolveStrategy;

/// V2Ray's `dns` object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsSettings {
    /// `servers`, in order: asked after the static hosts.
    pub servers: Vec<NameServerSettings>,
    /// `hosts`, in order of the file.
    pub hosts: Vec<HostMapping>,
    /// `clientIp`: the EDNS client subnet every server gets unless it has
    /// its own.
    pub client_ip: Option<IpAddr>,
    /// `tag`: the inbound tag of the resolver's own queries (for routing
    /// `https://` DoH).
    pub tag: Option<String>,
}

/// One entry of `servers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameServerSettings {
    pub address: NameServerAddress,
    /// `port`; 0 means the kind's default (53 for plain DNS).
    pub port: u16,
    /// `domains`: rules in the routing syntax; a query matching one asks
    /// this server before the others.
    pub domains: Vec<String>,
    /// `expectIps`: CIDRs or `geoip:`; answers outside them are dropped and
    /// the next server is asked.
    pub expect_ips: Vec<String>,
    /// The server's own `clientIp`.
    pub client_ip: Option<IpAddr>,
}

/// What a server's `address` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameServerAddress {
    /// Plain DNS over UDP to this address.
    Ip(IpAddr),
    /// Plain DNS over UDP to this name (its address from the system
    /// resolver, as 4.34's dial of a domain gets it).
    Domain(String),
    /// `localhost`: the system resolver.
    Localhost,
    /// `https://host[:port]/path`: DNS over HTTPS through the router (the
    /// whole URL as written).
    Https(String),
    /// `https+local://host[:port]/path`: DNS over HTTPS dialled directly.
    HttpsLocal(String),
}

impl NameServerAddress {
    /// The address as the config spells it.
    pub fn v2ray_text(&self) -> String {
        match self {
            NameServerAddress::Ip(ip) => ip.to_string(),
            NameServerAddress::Domain(name) => name.clone(),
            NameServerAddress::Localhost => "localhost".to_owned(),
            NameServerAddress::Https(url) | NameServerAddress::HttpsLocal(url) => url.clone(),
        }
    }
}

/// One `hosts` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostMapping {
    /// The key as a routing-syntax domain rule (a bare key is `full:`,
    /// `dotless:` is its `regexp:`).
    pub rule: String,
    pub value: HostValue,
}

/// What a `hosts` key maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostValue {
    /// These addresses (`127.0.0.1` also brings `::1`, as in 4.34).
    Ip(IpAddr),
    /// Another name to look up instead ("proxied domain" in 4.34).
    Domain(String),
}

/// A boxed future, as the resolver trait returns.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Domains to addresses: the system resolver, or the `dns` object's.
pub trait Resolve: Send + Sync + std::fmt::Debug {
    /// The addresses of `domain` of the families `strategy` wants
    /// (`AsIs` and `UseIp` mean both). An error or an empty list both mean
    /// "does not resolve"; every call ends in bounded time.
    fn resolve<'a>(&'a self, domain: &'a str, strategy: ResolveStrategy) -> ResolveFuture<'a>;
}

/// Whether `ip` is of a family `strategy` wants.
pub fn family_wanted(strategy: ResolveStrategy, ip: IpAddr) -> bool {
    match strategy {
        ResolveStrategy::UseIpv4 => ip.is_ipv4(),
        ResolveStrategy::UseIpv6 => ip.is_ipv6(),
        ResolveStrategy::AsIs | ResolveStrategy::UseIp => true,
    }
}
