//! [`VlessInbound`]: the VLESS server. It listens on TCP, runs the
//! inbound's transport (TLS, WebSocket, PROXY protocol:
//! `rayback-transport`), decodes each connection's request header under
//! the handshake deadline, and hands the rest as a [`VlessStream`] to the
//! dispatcher with a [`Session`] naming the inbound tag, the peer, the
//! user and the decoded destination.
//!
//! | command | session |
//! |---|---|
//! | 0x01 TCP | TCP to the decoded address |
//! | 0x02 UDP | UDP to the decoded address; the stream is a packet stream ([`rayback_core::packet`]), VLESS's framing unchanged |
//! | 0x03 Mux | TCP to `v1.mux.cool:0`; the dispatcher starts the Mux.Cool server |
//!
//! The transport handshake counts against the same deadline as the VLESS
//! header; a connection that fails it is closed and counted as
//! `transport`.
//!
//! Anti-probing: whatever is wrong with a request (an unknown ID, another
//! version, garbage), the server answers nothing, keeps reading and
//! discarding, and closes only when the handshake deadline
//! (`policy.handshake`, counted from accept) passes or the client leaves,
//! as Rayback's VMess inbound does (4.34 closes at once).
//!
//! Fallbacks: when the inbound has `fallbacks`, a connection whose first
//! read is under 18 bytes, or has another version or an unknown ID, is not
//! VLESS: it goes, with the bytes already read and an optional PROXY
//! header, to the fallback its HTTP path picks ([`crate::fallback`]), and
//! is relayed there under the level-0 policy, as 4.34 does (without its
//! choice by ALPN).
//!
//! Not here: what happens to a session after dispatch (routing, relaying).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rayback_core::handler::dispatch_after_handshake;
use rayback_core::relay::relay;
use rayback_core::{Inbound, InboundContext, Policy, Session, Stream, Tag, User};
use rayback_transport::admission::{drain_until, HandshakeLimit, Handshaking};
use rayback_transport::{Accepted, Conn, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fallback::{proxy_header, FallbackDest, Fallbacks};
use crate::header::{HeaderError, RequestHeader, MAX_REQUEST_LEN};
use crate::metrics::{increment, FailureReason, VlessMetrics};
use crate::stream::VlessStream;

/// Bytes read while looking for a request header: the longest header
/// plus room for the first payload that came with it.
const HANDSHAKE_BUFFER: usize = 2048;

/// Bound on each connection attempt to a fallback.
const FALLBACK_DIAL_TIMEOUT: Duration = Duration::from_secs(4);

/// A user a VLESS server accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct VlessClient {
    pub id: [u8; 16],
    pub level: u32,
    pub email: String,
}

impl std::fmt::Debug for VlessClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VlessClient")
            .field("id", &format_args!("{:02x}{:02x}…", self.id[0], self.id[1]))
            .field("level", &self.level)
            .field("email", &self.email)
            .finish()
    }
}

/// Everything a VLESS inbound needs.
#[derive(Clone, Debug)]
pub struct VlessInboundSettings {
    /// The inbound's tag, put on every session.
    pub tag: Option<Tag>,
    pub listen: SocketAddr,
    pub clients: Vec<VlessClient>,
    /// The policy whose `handshake` bounds each handshake (4.34 uses
    /// level 0's).
    pub policy: Policy,
    /// What carries the connections (`streamSettings`).
    pub transport: Arc<Transport>,
    /// Where connections that are not VLESS go; empty: they are drained.
    pub fallbacks: Fallbacks,
}

/// A bound VLESS server.
pub struct VlessInbound {
    /// Taken by [`Inbound::run`], so the socket closes when accepting
    /// stops (connection tasks hold the inbound, not the listener).
    listener: Mutex<Option<TcpListener>>,
    local_addr: SocketAddr,
    tag: Option<Tag>,
    clients: Vec<VlessClient>,
    transport: Arc<Transport>,
    policy: Policy,
    fallbacks: Fallbacks,
    metrics: Arc<VlessMetrics>,
    /// Connections still in their handshake, per source address, and
    /// how many one source may have at once.
    handshakes: HandshakeLimit,
}

enum Refusal {
    Rejected(HeaderError),
    Left,
    /// Not VLESS, and the inbound has fallbacks: the bytes read so far
    /// (this many of the buffer) go to one.
    Fallback(usize),
}

impl VlessInbound {
    /// Binds the listener, so a taken port fails here, at start.
    pub async fn bind(
        config: VlessInboundSettings,
        metrics: Arc<VlessMetrics>,
    ) -> io::Result<VlessInbound> {
        let listener = rayback_transport::socket::listen(config.listen)?;
        let local_addr = listener.local_addr()?;
        Ok(VlessInbound {
            listener: Mutex::new(Some(listener)),
            local_addr,
            tag: config.tag,
            clients: config.clients,
            transport: config.transport,
            policy: config.policy,
            fallbacks: config.fallbacks,
            metrics,
            handshakes: HandshakeLimit::new(0),
        })
    }

    /// Caps the connections one source address may have in their
    /// handshake at once (`rayback.limits.unauthenticatedPerSource`).
    /// 0 = no limit.
    pub fn with_unauthenticated_limit(mut self, limit: usize) -> VlessInbound {
        self.handshakes = HandshakeLimit::new(limit);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn user_index(&self, id: &[u8; 16]) -> Option<usize> {
        self.clients.iter().rposition(|client| client.id == *id)
    }

    /// The transport and VLESS handshakes: the body stream and its
    /// session, or `None` when refused (counted and logged), timed out,
    /// shut down, or served by a fallback.
    async fn handshake(
        &self,
        socket: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
        admitted: Handshaking,
    ) -> Option<(Stream, Session)> {
        let deadline = Instant::now() + self.policy.handshake;
        let local = socket.local_addr().unwrap_or(self.local_addr);
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = tokio::time::timeout_at(deadline, self.transport.accept(socket, peer)) => accepted,
        };
        let Accepted {
            conn: mut socket,
            source: peer,
        } = match accepted {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(error)) => {
                self.metrics.record_failure(FailureReason::Transport);
                tracing::debug!(%peer, %error, "vless: transport handshake failed");
                return None;
            }
            Err(_elapsed) => {
                self.metrics.record_failure(FailureReason::Timeout);
                tracing::debug!(%peer, "vless: transport handshake timed out");
                return None;
            }
        };
        let mut buffer = vec![0u8; HANDSHAKE_BUFFER];
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return None,
            outcome = tokio::time::timeout_at(
                deadline,
                read_request(
                    |id| self.user_index(id).is_some(),
                    !self.fallbacks.is_empty(),
                    &mut socket,
                    &mut buffer,
                ),
            ) => outcome,
        };
        let (request, consumed, read) = match outcome {
            Ok(Ok(found)) => found,
            Ok(Err(Refusal::Rejected(error))) => {
                let reason = FailureReason::of(&error);
                self.metrics.record_failure(reason);
                tracing::debug!(%peer, reason = reason.as_str(), %error, "vless handshake refused; draining");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = drain_until(&mut socket, deadline) => {}
                }
                return None;
            }
            Ok(Err(Refusal::Fallback(read))) => {
                increment(&self.metrics.fallbacks);
                drop(admitted);
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = self.fall_back(socket, &buffer[..read], peer, local) => {}
                }
                return None;
            }
            Ok(Err(Refusal::Left)) => {
                self.metrics.record_failure(FailureReason::ClientLeft);
                tracing::debug!(%peer, "vless client left during the handshake");
                return None;
            }
            Err(_elapsed) => {
                self.metrics.record_failure(FailureReason::Timeout);
                tracing::debug!(%peer, "vless handshake timed out");
                return None;
            }
        };
        increment(&self.metrics.handshakes_accepted);
        drop(admitted);
        let client = &self.clients[self.user_index(&request.id)?];
        let stream = VlessStream::server(socket, &buffer[consumed..read]);
        drop(buffer);
        let mut session = Session::new(request.destination)
            .with_source(peer)
            .with_user(User {
                email: client.email.clone(),
                level: client.level,
            });
        if let Some(tag) = &self.tag {
            session = session.with_inbound_tag(tag.clone());
        }
        tracing::debug!(%peer, destination = %session.destination, email = %client.email, "vless request accepted");
        Some((Box::new(stream), session))
    }
}

impl VlessInbound {
    /// Hands a connection that is not VLESS to its fallback: dials it
    /// (5 attempts), sends the PROXY header it asks for and the bytes
    /// already read, then relays both ways under the level-0 policy.
    async fn fall_back(
        &self,
        socket: Conn,
        already_read: &[u8],
        peer: SocketAddr,
        local: SocketAddr,
    ) {
        let Some(fallback) = self.fallbacks.choose(already_read) else {
            tracing::debug!(%peer, "vless: not VLESS and no fallback for it; closing");
            return;
        };
        let mut target = match dial_fallback(&fallback.dest).await {
            Ok(target) => target,
            Err(error) => {
                tracing::warn!(%peer, dest = ?fallback.dest, %error, "vless fallback dial failed");
                return;
            }
        };
        let mut first = Vec::with_capacity(already_read.len() + 64);
        proxy_header(fallback.xver, peer, local, &mut first);
        first.extend_from_slice(already_read);
        if let Err(error) = target.write_all(&first).await {
            tracing::debug!(%peer, %error, "vless fallback closed at once");
            return;
        }
        tracing::debug!(%peer, dest = ?fallback.dest, "vless: not VLESS; fell back");
        if let Err(error) = relay(socket, target, &self.policy).await {
            tracing::debug!(%peer, %error, "vless fallback ended with an error");
        }
    }
}

/// Connects to a fallback: 5 attempts, 100 ms apart and doubling, each
/// bounded by [`FALLBACK_DIAL_TIMEOUT`].
async fn dial_fallback(dest: &FallbackDest) -> io::Result<Stream> {
    let mut pause = Duration::from_millis(100);
    let mut last_error = None;
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        let dialled = tokio::time::timeout(FALLBACK_DIAL_TIMEOUT, async {
            Ok::<Stream, io::Error>(match dest {
                FallbackDest::Tcp(host_port) => {
                    Box::new(TcpStream::connect(host_port.as_str()).await?)
                }
                FallbackDest::Unix(path) => Box::new(UnixStream::connect(path).await?),
            })
        })
        .await;
        match dialled {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => last_error = Some(error),
            Err(_) => last_error = Some(io::ErrorKind::TimedOut.into()),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no fallback attempt")))
}

#[async_trait]
impl Inbound for VlessInbound {
    async fn run(self: Arc<Self>, context: InboundContext) -> io::Result<()> {
        let listener = self
            .listener
            .lock()
            .expect("not poisoned")
            .take()
            .ok_or_else(|| io::Error::other("this vless inbound already ran"))?;
        let what = format!("vless inbound on {}", self.local_addr);
        context
            .accept_each(&listener, &what, |socket, peer| {
                let Some(admitted) = self.handshakes.admit(peer.ip()) else {
                    self.metrics
                        .record_failure(FailureReason::TooManyFromSource);
                    tracing::debug!(%peer, "vless: too many handshakes from this source; closing");
                    return;
                };
                let this = self.clone();
                let dispatch = context.dispatch.clone();
                let shutdown = context.shutdown.clone();
                context.tracker.spawn(async move {
                    let handshake = Box::pin(this.handshake(socket, peer, shutdown, admitted));
                    dispatch_after_handshake(handshake, peer, dispatch, "vless").await;
                });
            })
            .await;
        Ok(())
    }
}

/// Reads until the request header is decoded; returns it, how many bytes
/// it took and how many bytes of `buffer` were read.
///
/// With fallbacks (`fallback`), as 4.34: a first read under 18 bytes, or
/// a first read with another version or an unknown ID, is not VLESS and
/// goes to a fallback; anything wrong later is refused as usual.
async fn read_request(
    is_known: impl Fn(&[u8; 16]) -> bool,
    fallback: bool,
    socket: &mut (impl AsyncRead + Unpin),
    buffer: &mut [u8],
) -> Result<(RequestHeader, usize, usize), Refusal> {
    let mut read = 0;
    loop {
        let n = match socket.read(&mut buffer[read..]).await {
            Ok(0) | Err(_) => return Err(Refusal::Left),
            Ok(n) => n,
        };
        let first = read == 0;
        read += n;
        if fallback && first && read < 18 {
            return Err(Refusal::Fallback(read));
        }
        let decoded = RequestHeader::decode(&buffer[..read], &is_known);
        if fallback
            && first
            && matches!(
                decoded,
                Err(HeaderError::Version(_) | HeaderError::UnknownUser)
            )
        {
            return Err(Refusal::Fallback(read));
        }
        match decoded {
            Ok(Some((request, consumed))) => return Ok((request, consumed, read)),
            // The buffer is longer than any header, so it never fills
            // while more header bytes are needed.
            Ok(None) if read < MAX_REQUEST_LEN.min(buffer.len()) => {}
            Ok(None) => return Err(Refusal::Rejected(HeaderError::Addons("header too long"))),
            Err(error) => return Err(Refusal::Rejected(error)),
        }
    }
}
