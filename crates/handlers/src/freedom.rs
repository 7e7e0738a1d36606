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

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rayback_core::{
    Address, Destination, Network, Outbound, Redirect, Resolve, ResolveStrategy, Session, Stream,
};
use rayback_transport::Transport;
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
}

impl Default for FreedomSettings {
    fn default() -> FreedomSettings {
        FreedomSettings {
            domain_strategy: ResolveStrategy::AsIs,
            redirect: None,
            connect_timeout: Duration::from_secs(10),
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

    /// One attempt at `destination`.
    async fn dial(&self, destination: &Destination) -> io::Result<Stream> {
        let attempt = async {
            match (destination.network, &self.transport) {
                (Network::Tcp, Some(transport)) => {
                    let conn = transport
                        .dial(
                            &destination.address,
                            destination.port,
                            self.settings.connect_timeout,
                        )
                        .await?;
                    Ok(Box::new(conn) as Stream)
                }
                (Network::Tcp, None) => {
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
                (Network::Udp, _) => {
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
