//! The `freedom` outbound: connects straight to the session's destination
//! (or to the configured `redirect`), over TCP or UDP, as V2Ray 4.34's
//! `proxy/freedom` does.
//!
//! Dialing follows 4.34: up to five attempts, sleeping 0, 100, 200 and
//! 300 ms between them (4.34 also sleeps 400 ms after the last failure
//! before reporting it; Rayback reports at once). Domains are resolved by
//! the resolver the app hands over (the `dns` object's, see `rayback_dns`;
//! the system resolver without one); with a `UseIP*`
//! strategy one address of the wanted family is picked at random, and a
//! domain that does not resolve is dialed as a domain, as in 4.34.
//!
//! For UDP destinations the returned stream is a packet stream (see
//! `crate::datagram`) over a socket connected to the destination. Not here:
//! relaying (the default `Outbound::handle` relays with the session's
//! policy) and the resolver itself.
//!
//! `proxyProtocol` (Xray's key in freedom's `settings`; V2Ray 4.34 ignores
//! it): `1` or `2` makes freedom write a PROXY protocol v1 (text) or v2
//! (binary) header to the backend right after connecting, before any
//! payload, so that a backend behind the bridge (nginx `proxy_protocol`,
//! HAProxy `accept-proxy`) sees the visitor. The header is built by
//! `rayback_transport::proxy::encode_header`:
//!
//! | field | value |
//! |---|---|
//! | source | the session's `source`: the visitor, as the inbound saw it |
//! | destination | the address freedom dialled: the backend's socket address (after `redirect` and the domain strategy), as Xray does |
//! | no source | v1 `PROXY UNKNOWN`, v2 a `LOCAL` command |
//! | IPv4 and IPv6 mixed | the IPv4 one written as IPv4-mapped IPv6 |
//!
//! TCP sessions only: UDP sessions get no header. With `streamSettings`
//! other than plain TCP (TLS, WebSocket toward the backend) the header is
//! the first bytes written through them, as Xray writes it to the
//! connection its dialer returns; a domain dialled that way is named in the
//! header by its first address from the system resolver. The header is
//! part of the dial: a failed write fails that attempt, and the next one
//! dials afresh.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rayback_core::{
    Address, Destination, Network, Outbound, ProxyProtocol, Redirect, Resolve, ResolveStrategy,
    Session, Stream,
};
use rayback_transport::{proxy, Transport};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use crate::datagram::ConnectedDatagrams;

/// Attempts per dial, as 4.34's `retry.ExponentialBackoff(5, 100)`.
const DIAL_ATTEMPTS: u32 = 5;
/// The sleep after failed attempt `n` (from 0) is `n * DIAL_BACKOFF`.
const DIAL_BACKOFF: Duration = Duration::from_millis(100);

/// freedom's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreedomSettings {
    pub domain_strategy: ResolveStrategy,
    pub redirect: Option<Redirect>,
    /// The limit of one connection attempt (4.34 leaves it to the system,
    /// which can take minutes).
    pub connect_timeout: Duration,
    /// `proxyProtocol`: the PROXY header written before a TCP session's
    /// payload (see the module docs).
    pub proxy_protocol: ProxyProtocol,
}

impl Default for FreedomSettings {
    fn default() -> FreedomSettings {
        FreedomSettings {
            domain_strategy: ResolveStrategy::AsIs,
            redirect: None,
            connect_timeout: Duration::from_secs(10),
            proxy_protocol: ProxyProtocol::Off,
        }
    }
}

/// The `freedom` outbound.
#[derive(Clone, Debug, Default)]
pub struct Freedom {
    settings: FreedomSettings,
    /// `streamSettings` other than plain TCP (TLS, WebSocket toward the
    /// destination), for TCP sessions, as V2Ray dials them.
    transport: Option<Arc<Transport>>,
    /// Resolves domains under `UseIP*`; `None` is the system resolver.
    resolver: Option<Arc<dyn Resolve>>,
}

impl Freedom {
    pub fn new(settings: FreedomSettings) -> Freedom {
        Freedom {
            settings,
            transport: None,
            resolver: None,
        }
    }

    /// Resolves `UseIP*` domains with `resolver` (the `dns` object's).
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> Freedom {
        self.resolver = Some(resolver);
        self
    }

    /// Dials TCP destinations through `transport`.
    pub fn with_transport(mut self, transport: Arc<Transport>) -> Freedom {
        self.transport = (!transport.is_plain_tcp()).then_some(transport);
        self
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
        let strategy = self.settings.domain_strategy;
        if strategy == ResolveStrategy::AsIs {
            return destination;
        }
        let Some(domain) = destination.address.domain() else {
            return destination;
        };
        let resolver: &dyn Resolve = match &self.resolver {
            Some(resolver) => resolver.as_ref(),
            None => &rayback_dns::SystemResolver,
        };
        let resolved: Vec<IpAddr> = match resolver.resolve(domain, strategy).await {
            Ok(ips) => ips,
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

    /// One attempt at `destination`, for a session from `source` (named in
    /// the PROXY header, if one is sent).
    async fn dial(
        &self,
        destination: &Destination,
        source: Option<SocketAddr>,
    ) -> io::Result<Stream> {
        let protocol = self.settings.proxy_protocol;
        let attempt = async {
            match (destination.network, &self.transport) {
                (Network::Tcp, Some(transport)) => {
                    let mut conn = transport
                        .dial(
                            &destination.address,
                            destination.port,
                            self.settings.connect_timeout,
                        )
                        .await?;
                    if protocol != ProxyProtocol::Off {
                        let dialled = socket_addr_of(destination).await?;
                        let header = proxy::encode_header(protocol, source, dialled);
                        conn.write_all(&header).await?;
                        // TLS and WebSocket buffer: a backend that speaks
                        // first still needs the header now.
                        conn.flush().await?;
                    }
                    Ok(Box::new(conn) as Stream)
                }
                (Network::Tcp, None) => {
                    let mut stream = match destination.socket_addr() {
                        Some(addr) => TcpStream::connect(addr).await?,
                        None => {
                            let host = destination.address.domain().unwrap_or_default();
                            TcpStream::connect((host, destination.port)).await?
                        }
                    };
                    stream.set_nodelay(true)?;
                    if protocol != ProxyProtocol::Off {
                        let header = proxy::encode_header(protocol, source, stream.peer_addr()?);
                        stream.write_all(&header).await?;
                    }
                    Ok(Box::new(stream) as Stream)
                }
                (Network::Udp, _) => {
                    let addr = socket_addr_of(destination).await?;
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
            match self.dial(&destination, session.source).await {
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

/// `destination` as a socket address: itself when it is an IP, else the
/// first address the system resolver gives.
async fn socket_addr_of(destination: &Destination) -> io::Result<SocketAddr> {
    if let Some(addr) = destination.socket_addr() {
        return Ok(addr);
    }
    let host = destination.address.domain().unwrap_or_default();
    tokio::net::lookup_host((host, destination.port))
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")))
}

/// A few random bits for picking among resolved addresses; not for
/// anything that needs real randomness.
fn cheap_random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
