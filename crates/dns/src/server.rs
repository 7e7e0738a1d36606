//! One entry of `servers`: a hickory resolver speaking to that one server
//! (plain DNS over UDP, or DNS over HTTPS), or the system resolver for
//! `localhost`; and its `expectIps` filter.
//!
//! | address | how it is asked |
//! |---|---|
//! | an IP | UDP to the IP, port `port` or 53 |
//! | a name | the same, to the name's first address from the system resolver (looked up once) |
//! | `localhost` | the system resolver |
//! | `https+local://host[:port]/path` | DoH (RFC 8484) dialled directly |
//! | `https://host[:port]/path` | the same: Rayback does not route DoH through its outbounds yet (`config` warns) |
//!
//! hickory caches answers by their TTL. `clientIp` (EDNS client subnet) is
//! not sent: hickory's resolver has no option for it (`config` warns).

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};
use rayback_core::dns::family_wanted;
use rayback_core::{NameServerAddress, NameServerSettings, ResolveStrategy};
use tokio::sync::OnceCell;

use crate::{CompileRules, DnsError, IpRules, SystemResolver, QUERY_TIMEOUT};

/// How one server's query ended.
pub(crate) enum Outcome {
    /// Addresses (after `expectIps`): the answer.
    Answer(Vec<IpAddr>),
    /// The server answered that there is nothing: the query ends (4.34).
    Final(String),
    /// Timed out, failed, or `expectIps` emptied the answer: ask the next.
    Next(String),
}

enum Kind {
    System,
    /// Built when `new` runs.
    Udp(TokioResolver),
    /// Built at the first query, which resolves the server's name.
    UdpByName {
        host: String,
        port: u16,
        resolver: OnceCell<TokioResolver>,
    },
    /// Built at the first query, which may have to resolve the URL's host.
    Doh {
        host: String,
        port: u16,
        path: String,
        tls: Box<Option<rustls::ClientConfig>>,
        resolver: OnceCell<TokioResolver>,
    },
}

pub(crate) struct Server {
    name: String,
    kind: Kind,
    expect_ips: Option<Box<dyn IpRules>>,
}

impl Server {
    pub(crate) fn system() -> Server {
        Server {
            name: "localhost".to_owned(),
            kind: Kind::System,
            expect_ips: None,
        }
    }

    pub(crate) fn new(
        index: usize,
        spec: &NameServerSettings,
        tls: Option<rustls::ClientConfig>,
        rules: &dyn CompileRules,
    ) -> Result<Server, DnsError> {
        let bad = |reason: String| DnsError::BadServer { index, reason };
        let expect_ips = if spec.expect_ips.is_empty() {
            None
        } else {
            Some(
                rules
                    .ips(&spec.expect_ips)
                    .map_err(|reason| bad(format!("expectIps: {reason}")))?,
            )
        };
        let (name, kind) = match &spec.address {
            NameServerAddress::Localhost => ("localhost".to_owned(), Kind::System),
            NameServerAddress::Ip(ip) => {
                let port = if spec.port == 0 { 53 } else { spec.port };
                let addr = SocketAddr::new(*ip, port);
                let server = NameServerConfig::new(addr, Protocol::Udp);
                (format!("udp:{addr}"), Kind::Udp(resolver_for(server, None)))
            }
            NameServerAddress::Domain(host) => {
                let port = if spec.port == 0 { 53 } else { spec.port };
                (
                    format!("udp:{host}:{port}"),
                    Kind::UdpByName {
                        host: host.clone(),
                        port,
                        resolver: OnceCell::new(),
                    },
                )
            }
            NameServerAddress::Https(url) | NameServerAddress::HttpsLocal(url) => {
                let (host, port, path) = split_url(url).map_err(bad)?;
                (
                    url.clone(),
                    Kind::Doh {
                        host,
                        port,
                        path,
                        tls: Box::new(tls),
                        resolver: OnceCell::new(),
                    },
                )
            }
        };
        Ok(Server {
            name,
            kind,
            expect_ips,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Asks this server, bounded by [`QUERY_TIMEOUT`], and applies
    /// `expectIps`.
    pub(crate) async fn query(&self, domain: &str, strategy: ResolveStrategy) -> Outcome {
        let asked = tokio::time::timeout(QUERY_TIMEOUT, self.ask(domain, strategy)).await;
        let ips = match asked {
            Err(_) => return Outcome::Next(format!("no answer within {QUERY_TIMEOUT:?}")),
            Ok(outcome) => match outcome {
                Outcome::Answer(ips) => ips,
                other => return other,
            },
        };
        let ips: Vec<IpAddr> = ips
            .into_iter()
            .filter(|ip| family_wanted(strategy, *ip))
            .collect();
        if ips.is_empty() {
            return Outcome::Final("no address".to_owned());
        }
        match &self.expect_ips {
            None => Outcome::Answer(ips),
            Some(expect) => {
                let kept: Vec<IpAddr> = ips.into_iter().filter(|ip| expect.contains(*ip)).collect();
                if kept.is_empty() {
                    Outcome::Next("no address of the answer is in expectIps".to_owned())
                } else {
                    Outcome::Answer(kept)
                }
            }
        }
    }

    async fn ask(&self, domain: &str, strategy: ResolveStrategy) -> Outcome {
        let resolver = match &self.kind {
            Kind::System => {
                return match SystemResolver::lookup(domain, strategy).await {
                    Ok(ips) => Outcome::Answer(ips),
                    Err(error) => Outcome::Next(error.to_string()),
                }
            }
            Kind::Udp(resolver) => resolver,
            Kind::UdpByName {
                host,
                port,
                resolver,
            } => match resolver
                .get_or_try_init(|| async {
                    let ip = server_ip(host).await?;
                    let server = NameServerConfig::new(SocketAddr::new(ip, *port), Protocol::Udp);
                    Ok::<_, String>(resolver_for(server, None))
                })
                .await
            {
                Ok(resolver) => resolver,
                Err(reason) => return Outcome::Next(reason),
            },
            Kind::Doh {
                host,
                port,
                path,
                tls,
                resolver,
            } => match resolver
                .get_or_try_init(|| doh_resolver(host, *port, path, tls.as_ref().clone()))
                .await
            {
                Ok(resolver) => resolver,
                Err(reason) => return Outcome::Next(reason),
            },
        };
        // A trailing dot: the name is absolute, no search list applies.
        let fqdn = format!("{domain}.");
        let found: Result<Vec<IpAddr>, ResolveError> = match strategy {
            ResolveStrategy::UseIpv4 => resolver
                .ipv4_lookup(fqdn)
                .await
                .map(|found| found.iter().map(|a| IpAddr::V4(a.0)).collect()),
            ResolveStrategy::UseIpv6 => resolver
                .ipv6_lookup(fqdn)
                .await
                .map(|found| found.iter().map(|aaaa| IpAddr::V6(aaaa.0)).collect()),
            ResolveStrategy::AsIs | ResolveStrategy::UseIp => resolver
                .lookup_ip(fqdn)
                .await
                .map(|found| found.iter().collect()),
        };
        match found {
            Ok(ips) => Outcome::Answer(ips),
            Err(error) if error.is_no_records_found() || error.is_nx_domain() => {
                Outcome::Final(error.to_string())
            }
            Err(error) => Outcome::Next(error.to_string()),
        }
    }
}

/// A hickory resolver asking exactly `server`, inside [`QUERY_TIMEOUT`].
fn resolver_for(server: NameServerConfig, tls: Option<rustls::ClientConfig>) -> TokioResolver {
    let config =
        ResolverConfig::from_parts(None, Vec::new(), NameServerConfigGroup::from(vec![server]));
    let mut options = ResolverOpts::default();
    options.timeout = QUERY_TIMEOUT / 2;
    options.attempts = 1;
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.use_hosts_file = ResolveHosts::Never;
    options.try_tcp_on_error = false;
    if let Some(tls) = tls {
        options.tls_config = tls;
    }
    TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(options)
        .build()
}

/// The DoH resolver for `host`: an IP as it is, a name through the system
/// resolver (as 4.34's `https+local` dials it).
async fn doh_resolver(
    host: &str,
    port: u16,
    path: &str,
    tls: Option<rustls::ClientConfig>,
) -> Result<TokioResolver, String> {
    let ip = server_ip(host).await?;
    let mut server = NameServerConfig::new(SocketAddr::new(ip, port), Protocol::Https);
    server.tls_dns_name = Some(host.to_owned());
    server.http_endpoint = Some(path.to_owned());
    Ok(resolver_for(server, tls))
}

/// The address of a server named `host`: an IP as it is, a name through
/// the system resolver.
async fn server_ip(host: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    SystemResolver::lookup(host, ResolveStrategy::UseIp)
        .await
        .map_err(|error| format!("resolving the DNS server {host}: {error}"))?
        .first()
        .copied()
        .ok_or_else(|| format!("the DNS server {host} has no address"))
}

/// `https://host[:port]/path` (or `https+local://`) into its parts; the
/// port defaults to 443, the path to `/dns-query`.
pub(crate) fn split_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("https+local://"))
        .ok_or_else(|| format!("{url:?} is not an https:// or https+local:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    let path = if path.is_empty() || path == "/" {
        "/dns-query"
    } else {
        path
    };
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = match port {
        None => 443,
        Some(text) => text
            .parse::<u16>()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| format!("{url:?}: bad port {text:?}"))?,
    };
    Ok((host.to_owned(), port, path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn doh_urls_split_into_host_port_and_path() {
        let split = |url: &str| split_url(url).expect(url);
        assert_eq!(
            split("https://1.1.1.1/dns-query"),
            ("1.1.1.1".to_owned(), 443, "/dns-query".to_owned())
        );
        assert_eq!(
            split("https+local://dns.test:8443/q?x=1"),
            ("dns.test".to_owned(), 8443, "/q?x=1".to_owned())
        );
        assert_eq!(
            split("https://[::1]:444"),
            ("::1".to_owned(), 444, "/dns-query".to_owned())
        );
        for bad in [
            "https:///q",
            "https://host:0/",
            "https://host:x/",
            "https://[::1/",
            "tcp://a",
        ] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }
}
