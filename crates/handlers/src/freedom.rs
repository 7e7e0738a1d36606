//! The `freedom` outbound: connects straight to the session's destination
//! (or to the configured `redirect`), over TCP or UDP, as V2Ray 4.34's
//! `proxy/freedom` does.
//!
//! Dialing follows 4.34: up to five attempts, sleeping 0, 100, 200 and
//! 300 ms between them (4.34 also sleeps 400 ms after the last failure
//! before reporting it; Rayback reports at once). Domains are resolved by
//! the system resolver (`tokio::net::lookup_host`); with a `UseIP*`
//! strategy one address of the wanted family is picked at random, and a
//! domain that does not resolve is dialed as a domain, as in 4.34.
//!
//! For UDP destinations the returned stream is a packet stream (see
//! `crate::datagram`) over a socket connected to the destination. Not here:
//! relaying (the default `Outbound::handle` relays with the session's
//! policy) and V2Ray's own DNS client, which Rayback does not have.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use rayback_core::{Address, Destination, Network, Outbound, Session, Stream};
use tokio::net::{TcpStream, UdpSocket};

use crate::datagram::ConnectedDatagrams;
use crate::error::HandlersError;

/// Attempts per dial, as 4.34's `retry.ExponentialBackoff(5, 100)`.
const DIAL_ATTEMPTS: u32 = 5;
/// The sleep after failed attempt `n` (from 0) is `n * DIAL_BACKOFF`.
const DIAL_BACKOFF: Duration = Duration::from_millis(100);

/// freedom's `domainStrategy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FreedomDomainStrategy {
    /// Dial domains as they are (the system resolves them).
    #[default]
    AsIs,
    /// Resolve, then dial one address of either family.
    UseIp,
    /// Resolve, then dial one IPv4 address.
    UseIpv4,
    /// Resolve, then dial one IPv6 address.
    UseIpv6,
}

impl FreedomDomainStrategy {
    /// V2Ray's names, case-insensitive; unknown strings mean `AsIs`.
    pub fn parse(text: &str) -> FreedomDomainStrategy {
        match text.to_ascii_lowercase().as_str() {
            "useip" | "use_ip" => FreedomDomainStrategy::UseIp,
            "useip4" | "useipv4" | "use_ipv4" | "use_ip_v4" | "use_ip4" => {
                FreedomDomainStrategy::UseIpv4
            }
            "useip6" | "useipv6" | "use_ipv6" | "use_ip_v6" | "use_ip6" => {
                FreedomDomainStrategy::UseIpv6
            }
            _ => FreedomDomainStrategy::AsIs,
        }
    }
}

/// freedom's `redirect`: where every session goes instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// `None` (written `":80"`) or `0.0.0.0` keeps the session's address.
    pub host: Option<Address>,
    /// 0 keeps the session's port.
    pub port: u16,
}

impl Redirect {
    /// Parses `host:port` like Go's `net.SplitHostPort`: IPv6 in brackets,
    /// the host may be empty, the port is required.
    pub fn parse(text: &str) -> Result<Redirect, HandlersError> {
        let bad = || HandlersError::BadRedirect(text.to_owned());
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, rest) = rest.split_once(']').ok_or_else(bad)?;
            (host, rest.strip_prefix(':').ok_or_else(bad)?)
        } else {
            let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
            if host.contains(':') {
                return Err(bad());
            }
            (host, port)
        };
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = if host.is_empty() {
            None
        } else {
            Some(Address::parse(host).map_err(|_| bad())?)
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

/// freedom's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreedomSettings {
    pub domain_strategy: FreedomDomainStrategy,
    pub redirect: Option<Redirect>,
    /// The limit of one connection attempt (4.34 leaves it to the system,
    /// which can take minutes).
    pub connect_timeout: Duration,
}

impl Default for FreedomSettings {
    fn default() -> FreedomSettings {
        FreedomSettings {
            domain_strategy: FreedomDomainStrategy::AsIs,
            redirect: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The `freedom` outbound.
#[derive(Clone, Debug, Default)]
pub struct Freedom {
    settings: FreedomSettings,
}

impl Freedom {
    pub fn new(settings: FreedomSettings) -> Freedom {
        Freedom { settings }
    }

    pub fn settings(&self) -> &FreedomSettings {
        &self.settings
    }

    /// Where a session is dialed: the redirect applied, and under a
    /// `UseIP*` strategy a domain resolved to one address.
    async fn target(&self, session: &Session) -> Destination {
        let destination = match &self.settings.redirect {
            Some(redirect) => redirect.apply(&session.destination),
            None => session.destination.clone(),
        };
        let family = match self.settings.domain_strategy {
            FreedomDomainStrategy::AsIs => return destination,
            FreedomDomainStrategy::UseIp => None,
            FreedomDomainStrategy::UseIpv4 => Some(true),
            FreedomDomainStrategy::UseIpv6 => Some(false),
        };
        let Some(domain) = destination.address.domain() else {
            return destination;
        };
        let resolved: Vec<IpAddr> = match tokio::net::lookup_host((domain, destination.port)).await
        {
            Ok(addrs) => addrs
                .map(|addr| addr.ip())
                .filter(|ip| match family {
                    Some(v4) => ip.is_ipv4() == v4,
                    None => true,
                })
                .collect(),
            Err(error) => {
                tracing::debug!(%domain, %error, "freedom could not resolve; dialing the domain");
                Vec::new()
            }
        };
        if resolved.is_empty() {
            return destination;
        }
        let pick = cheap_random() as usize % resolved.len();
        Destination::new(
            destination.network,
            Address::from(resolved[pick]),
            destination.port,
        )
    }

    /// One attempt at `destination`.
    async fn dial(&self, destination: &Destination) -> io::Result<Stream> {
        let attempt = async {
            match destination.network {
                Network::Tcp => {
                    let stream = match destination.socket_addr() {
                        Some(addr) => TcpStream::connect(addr).await?,
                        None => {
                            let host = destination.address.domain().unwrap_or_default();
                            TcpStream::connect((host, destination.port)).await?
                        }
                    };
                    stream.set_nodelay(true)?;
                    Ok(Box::new(stream) as Stream)
                }
                Network::Udp => {
                    let addr = match destination.socket_addr() {
                        Some(addr) => addr,
                        None => {
                            let host = destination.address.domain().unwrap_or_default();
                            tokio::net::lookup_host((host, destination.port))
                                .await?
                                .next()
                                .ok_or_else(|| {
                                    io::Error::new(
                                        io::ErrorKind::NotFound,
                                        format!("{host} has no address"),
                                    )
                                })?
                        }
                    };
                    let local = match addr {
                        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
                    };
                    let socket = UdpSocket::bind(local).await?;
                    socket.connect(addr).await?;
                    Ok(Box::new(ConnectedDatagrams::new(socket)) as Stream)
                }
            }
        };
        match tokio::time::timeout(self.settings.connect_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect took over {:?}", self.settings.connect_timeout),
            )),
        }
    }
}

#[async_trait]
impl Outbound for Freedom {
    async fn connect(&self, session: &Session) -> io::Result<Stream> {
        let mut last_error = None;
        for attempt in 0..DIAL_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(DIAL_BACKOFF * (attempt - 1)).await;
            }
            let destination = self.target(session).await;
            match self.dial(&destination).await {
                Ok(stream) => return Ok(stream),
                Err(error) => {
                    tracing::debug!(%destination, attempt, %error, "freedom dial failed");
                    last_error = Some((destination, error));
                }
            }
        }
        let (destination, error) = last_error.ok_or_else(|| io::Error::other("no dial attempt"))?;
        Err(io::Error::new(
            error.kind(),
            format!("failed to open connection to {destination}: {error}"),
        ))
    }
}

/// A few random bits for picking among resolved addresses; not for
/// anything that needs real randomness.
fn cheap_random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strategies_like_v2ray() {
        for (text, want) in [
            ("AsIs", FreedomDomainStrategy::AsIs),
            ("UseIP", FreedomDomainStrategy::UseIp),
            ("use_ip", FreedomDomainStrategy::UseIp),
            ("UseIPv4", FreedomDomainStrategy::UseIpv4),
            ("use_ip_v4", FreedomDomainStrategy::UseIpv4),
            ("useip4", FreedomDomainStrategy::UseIpv4),
            ("USEIPV6", FreedomDomainStrategy::UseIpv6),
            ("use_ip6", FreedomDomainStrategy::UseIpv6),
            ("bogus", FreedomDomainStrategy::AsIs),
        ] {
            assert_eq!(FreedomDomainStrategy::parse(text), want, "{text}");
        }
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
            assert_eq!(
                error.to_string(),
                format!("invalid redirect address {bad:?}"),
                "{bad}"
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
}
