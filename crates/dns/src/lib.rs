#![doc = include_str!("../README.md")]

mod hosts;
mod server;

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use rayback_core::dns::family_wanted;
use rayback_core::{DnsSettings, NameServerAddress, Resolve, ResolveFuture, ResolveStrategy};

use crate::hosts::{HostAnswer, Hosts};
use crate::server::{Outcome, Server};

/// The bound of one query to one server (4.34's `Client.QueryIP` uses 4 s).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(4);

/// The names a `localhost` server is asked first for, besides its own
/// `domains`: dotless names and local top-level domains (4.34's
/// `localTLDsAndDotlessDomains`).
const LOCAL_NAMES: &[&str] = &[
    "regexp:^[^.]+$",
    "domain:local",
    "domain:localdomain",
    "domain:localhost",
    "domain:lan",
    "domain:home.arpa",
    "domain:example",
    "domain:invalid",
    "domain:test",
];

/// The bound of one system resolver query.
pub const SYSTEM_TIMEOUT: Duration = Duration::from_secs(8);

/// A problem with the `dns` object found while building the resolver.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("dns.servers[{index}]: {reason}")]
    BadServer { index: usize, reason: String },
    #[error("dns.servers[].domains: {reason}")]
    BadDomains { reason: String },
    #[error("dns.hosts {rule:?}: {reason}")]
    BadHost { rule: String, reason: String },
}

/// Which rule groups a domain matches: compiled by the caller (the app,
/// with the routing crate's domain index).
pub trait DomainRules: Send + Sync {
    /// Pushes the index of every group with a rule matching `domain`, in
    /// any order, possibly repeated.
    fn matching(&self, domain: &str, out: &mut Vec<u32>);
}

/// A set of addresses (CIDRs, `geoip:`), compiled by the caller.
pub trait IpRules: Send + Sync {
    fn contains(&self, ip: IpAddr) -> bool;
}

/// Compiles rule strings in the routing syntax.
pub trait CompileRules {
    /// One matcher over `groups`: group `i` matches when one of its rules
    /// does. The error names the bad rule.
    fn domain_groups(&self, groups: &[Vec<String>]) -> Result<Box<dyn DomainRules>, String>;
    /// The addresses `entries` cover.
    fn ips(&self, entries: &[String]) -> Result<Box<dyn IpRules>, String>;
}

/// The resolver of a `dns` object.
pub struct DnsResolver {
    hosts: Hosts,
    servers: Vec<Server>,
    /// Group `i` is server `i`'s `domains`.
    server_domains: Box<dyn DomainRules>,
}

impl std::fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.servers.iter().map(Server::name).collect();
        f.debug_struct("DnsResolver")
            .field("servers", &names)
            .finish_non_exhaustive()
    }
}

impl DnsResolver {
    /// Builds the resolver of `settings`; DoH servers are verified against
    /// the webpki roots (Mozilla's list).
    pub fn new(settings: &DnsSettings, rules: &dyn CompileRules) -> Result<DnsResolver, DnsError> {
        DnsResolver::with_tls(settings, rules, None)
    }

    /// Like [`DnsResolver::new`], with DoH servers verified by `tls`
    /// (`None`: the webpki roots).
    pub fn with_tls(
        settings: &DnsSettings,
        rules: &dyn CompileRules,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<DnsResolver, DnsError> {
        let hosts = Hosts::new(&settings.hosts, rules)?;
        let mut servers = Vec::with_capacity(settings.servers.len());
        for (index, spec) in settings.servers.iter().enumerate() {
            servers.push(Server::new(index, spec, tls.clone(), rules)?);
        }
        if servers.is_empty() {
            // 4.34: without servers the system resolver answers.
            servers.push(Server::system());
        }
        let groups: Vec<Vec<String>> = settings
            .servers
            .iter()
            .map(|server| {
                let mut rules = server.domains.clone();
                if server.address == NameServerAddress::Localhost {
                    rules.extend(LOCAL_NAMES.iter().map(|rule| (*rule).to_owned()));
                }
                rules
            })
            .collect();
        let server_domains = rules
            .domain_groups(&groups)
            .map_err(|reason| DnsError::BadDomains { reason })?;
        Ok(DnsResolver {
            hosts,
            servers,
            server_domains,
        })
    }

    /// The servers to ask for `domain`, in order.
    fn order(&self, domain: &str) -> Vec<usize> {
        let mut matched = Vec::new();
        self.server_domains.matching(domain, &mut matched);
        matched.sort_unstable();
        matched.dedup();
        let mut order: Vec<usize> = matched
            .into_iter()
            .map(|index| index as usize)
            .filter(|index| *index < self.servers.len())
            .collect();
        for index in 0..self.servers.len() {
            if !order.contains(&index) {
                order.push(index);
            }
        }
        order
    }

    /// Looks `domain` up as 4.34 does (see the module docs).
    pub async fn lookup(&self, domain: &str, strategy: ResolveStrategy) -> io::Result<Vec<IpAddr>> {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        if domain.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty domain name",
            ));
        }
        let name = match self.hosts.lookup(domain, strategy) {
            HostAnswer::NotFound => domain.to_owned(),
            HostAnswer::Replaced(name) => {
                tracing::debug!(%domain, %name, "dns: domain replaced by hosts");
                name
            }
            HostAnswer::Addresses(ips) if ips.is_empty() => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{domain} is in dns.hosts without an address of the wanted family"),
                ))
            }
            HostAnswer::Addresses(ips) => return Ok(ips),
        };
        let mut failures = Vec::new();
        for index in self.order(&name) {
            let server = &self.servers[index];
            match server.query(&name, strategy).await {
                Outcome::Answer(ips) => return Ok(ips),
                Outcome::Final(reason) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{name} at {}: {reason}", server.name()),
                    ))
                }
                Outcome::Next(reason) => {
                    tracing::debug!(%name, server = server.name(), %reason, "dns: trying the next server");
                    failures.push(format!("{}: {reason}", server.name()));
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name} did not resolve ({})", failures.join("; ")),
        ))
    }
}

impl Resolve for DnsResolver {
    fn resolve<'a>(&'a self, domain: &'a str, strategy: ResolveStrategy) -> ResolveFuture<'a> {
        Box::pin(self.lookup(domain, strategy))
    }
}

/// The system resolver (`getaddrinfo` through tokio), what runs without a
/// `dns` object.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl SystemResolver {
    /// The system's addresses for `domain`, of the wanted families.
    pub async fn lookup(domain: &str, strategy: ResolveStrategy) -> io::Result<Vec<IpAddr>> {
        let found = tokio::time::timeout(SYSTEM_TIMEOUT, tokio::net::lookup_host((domain, 0)))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("resolving {domain} took longer than {SYSTEM_TIMEOUT:?}"),
                )
            })??;
        let mut ips: Vec<IpAddr> = Vec::new();
        for addr in found {
            if family_wanted(strategy, addr.ip()) && !ips.contains(&addr.ip()) {
                ips.push(addr.ip());
            }
        }
        Ok(ips)
    }
}

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, domain: &'a str, strategy: ResolveStrategy) -> ResolveFuture<'a> {
        Box::pin(SystemResolver::lookup(domain, strategy))
    }
}
