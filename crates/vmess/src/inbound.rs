//! [`VmessInbound`]: the VMess server. It listens on TCP, runs the
//! inbound's transport (TLS, WebSocket, PROXY protocol: `rayback-transport`)
//! and then decodes each
//! connection's request header with a [`Validator`], and hands the body as
//! a [`VmessStream`] to the dispatcher with a [`Session`] naming the inbound
//! tag, the peer, the user and the decoded destination.
//!
//! | command | session |
//! |---|---|
//! | 0x01 TCP | TCP to the decoded address |
//! | 0x02 UDP | UDP to the decoded address; the stream is a packet stream ([`rayback_core::packet`]), one chunk per packet |
//! | 0x03 Mux | TCP to `v1.mux.cool:0`; the dispatcher starts the Mux.Cool server |
//!
//! The transport handshake counts against the same deadline as the VMess
//! header; a connection that fails it (a stranger's TLS, plain bytes on a
//! TLS port, a wrong WebSocket path) is closed and counted as
//! `transport`.
//!
//! Anti-probing: whatever is wrong with a handshake (unknown ID, replayed
//! or stale AuthID, a flipped bit, garbage of any length), the server
//! answers nothing, keeps reading and discarding, and closes only when the
//! handshake deadline (`policy.handshake`, counted from accept) passes or
//! the client leaves. Unlike 4.34 it never closes after a byte count, so
//! the moment of closing tells a prober nothing about what it sent.
//!
//! Not here: what happens to a session after dispatch (routing, relaying).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rayback_core::handler::dispatch_after_handshake;
use rayback_core::{Inbound, InboundContext, Policy, SendBudget, Session, Stream, Tag, User};
use rayback_transport::admission::{drain_until, HandshakeLimit, Handshaking};
use rayback_transport::{Accepted as Connected, Conn, Transport};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::body::{BodyFraming, ChunkOpener, ChunkSealer};
use crate::error::{FailureReason, HandshakeError};
use crate::header::{self, DirectionKeys, Options};
use crate::metrics::{increment, VmessMetrics};
use crate::stream::VmessStream;
use crate::validator::{Accepted, RequestDecoder, ServerUser, Validator};

/// Bytes read while looking for a request header: more than the longest
/// header (AEAD: 16 + 18 + 8 + 1024 + 16), plus room for the first chunk.
const HANDSHAKE_BUFFER: usize = 4096;

/// Everything a VMess inbound needs.
#[derive(Clone, Debug)]
pub struct VmessInboundSettings {
    /// The inbound's tag, put on every session.
    pub tag: Option<Tag>,
    pub listen: SocketAddr,
    pub users: Vec<ServerUser>,
    /// The policy whose `handshake` bounds each handshake (4.34 uses
    /// level 0's).
    pub policy: Policy,
    /// `disableInsecureEncryption`: refuse requests with security none.
    pub disable_insecure_encryption: bool,
    /// What carries the connections (`streamSettings`).
    pub transport: Arc<Transport>,
}

/// A bound VMess server.
pub struct VmessInbound {
    /// Taken by [`Inbound::run`], so the socket closes when accepting
    /// stops (connection tasks hold the inbound, not the listener): after
    /// a stop or a reload the port refuses and can be bound again.
    listener: std::sync::Mutex<Option<TcpListener>>,
    local_addr: SocketAddr,
    tag: Option<Tag>,
    validator: Validator,
    transport: Arc<Transport>,
    policy: Policy,
    metrics: Arc<VmessMetrics>,
    /// Connections still in their handshake, per source address, and
    /// how many one source may have at once.
    handshakes: HandshakeLimit,
}

impl VmessInbound {
    /// Binds the listener (so a taken port fails here, at start) and
    /// prepares the users' keys.
    pub async fn bind(
        config: VmessInboundSettings,
        metrics: Arc<VmessMetrics>,
    ) -> io::Result<VmessInbound> {
        let listener = rayback_transport::socket::listen(config.listen)?;
        let local_addr = listener.local_addr()?;
        Ok(VmessInbound {
            listener: std::sync::Mutex::new(Some(listener)),
            local_addr,
            tag: config.tag,
            validator: Validator::new(config.users)
                .disable_insecure_encryption(config.disable_insecure_encryption),
            transport: config.transport,
            policy: config.policy,
            metrics,
            handshakes: HandshakeLimit::new(0),
        })
    }

    /// Caps the connections one source address may have in their
    /// handshake at once (`rayback.limits.unauthenticatedPerSource`), so
    /// one host cannot hold thousands of probes open until the handshake
    /// deadline. 0 = no limit.
    pub fn with_unauthenticated_limit(mut self, limit: usize) -> VmessInbound {
        self.handshakes = HandshakeLimit::new(limit);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The transport and VMess handshakes: the body stream and its
    /// session, or `None` (counted and logged) when refused, timed out or
    /// shut down.
    async fn handshake(
        &self,
        socket: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
        admitted: Handshaking,
    ) -> Option<(Stream, Session)> {
        let deadline = Instant::now() + self.policy.handshake;
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return None,
            connected = tokio::time::timeout_at(deadline, self.transport.accept(socket, peer)) => connected,
        };
        let Connected {
            conn: mut socket,
            source: peer,
        } = match connected {
            Ok(Ok(connected)) => connected,
            Ok(Err(error)) => {
                self.metrics.record_failure(FailureReason::Transport);
                tracing::debug!(%peer, %error, "vmess: transport handshake failed");
                return None;
            }
            Err(_elapsed) => {
                self.metrics.record_failure(FailureReason::Timeout);
                tracing::debug!(%peer, "vmess: transport handshake timed out");
                return None;
            }
        };
        let mut buffer = vec![0u8; HANDSHAKE_BUFFER];
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return None,
            outcome = tokio::time::timeout_at(
                deadline,
                read_request(&self.validator, &mut socket, &mut buffer),
            ) => outcome,
        };
        let (accepted, read) = match outcome {
            Ok(Ok(found)) => found,
            Ok(Err(Refusal::Rejected(error))) => {
                self.metrics.record_failure(error.reason());
                tracing::debug!(%peer, reason = error.reason().as_str(), %error, "vmess handshake refused; draining");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = drain_until(&mut socket, deadline) => {}
                }
                return None;
            }
            Ok(Err(Refusal::Left)) => {
                self.metrics.record_failure(FailureReason::ClientLeft);
                tracing::debug!(%peer, "vmess client left during the handshake");
                return None;
            }
            Err(_elapsed) => {
                self.metrics.record_failure(FailureReason::Timeout);
                tracing::debug!(%peer, "vmess handshake timed out");
                return None;
            }
        };
        increment(&self.metrics.handshakes_accepted);
        drop(admitted);
        let mut stream = self.body_stream(socket, &accepted, &buffer[accepted.consumed..read]);
        let user = &self.validator.users()[accepted.user];
        let mut session = Session::new(accepted.header.destination.clone())
            .with_source(peer)
            .with_user(User {
                email: user.email.clone(),
                level: user.level,
            });
        session.inbound_tag = self.tag.clone();
        // A Rayback client (a bridge) reads visitors' sources in Mux.Cool
        // New frames and takes large packet frames: a portal that adopts
        // this stream sends them. Both are answered in the response.
        session.peer_extensions = accepted.header.options.extensions();
        let budget = stream.budget_watch();
        session.send_budget = Some(SendBudget::new(move || budget.near_budget()));
        tracing::debug!(%peer, destination = %session.destination, email = %user.email, "vmess request accepted");
        Some((Box::new(stream), session))
    }

    fn body_stream(
        &self,
        socket: Conn,
        accepted: &Accepted,
        already_read: &[u8],
    ) -> VmessStream<Conn> {
        let header = &accepted.header;
        let request_keys = DirectionKeys::request(header);
        let response_keys = DirectionKeys::response(header, accepted.mode);
        let framing = BodyFraming::new(header.security, header.options, header.command);
        let rekey = agrees_to_rekey(header.options, framing);
        let mut response = Vec::with_capacity(64);
        header::seal_response(
            &response_keys,
            accepted.mode,
            header.response_auth,
            response_options(header.options, framing),
            &mut response,
        );
        let mut sealer = ChunkSealer::new(framing, &response_keys);
        let mut opener = ChunkOpener::new(framing, &request_keys);
        if rekey {
            sealer.enable_rekey();
            opener.enable_rekey();
        }
        VmessStream::server(
            socket,
            &response,
            already_read,
            sealer,
            opener,
            self.metrics.clone(),
        )
    }
}

#[async_trait]
impl Inbound for VmessInbound {
    async fn run(self: Arc<Self>, context: InboundContext) -> io::Result<()> {
        let listener = self
            .listener
            .lock()
            .expect("not poisoned")
            .take()
            .ok_or_else(|| io::Error::other("this vmess inbound already ran"))?;
        let what = format!("vmess inbound on {}", self.local_addr);
        context
            .accept_each(&listener, &what, |socket, peer| {
                let Some(admitted) = self.handshakes.admit(peer.ip()) else {
                    self.metrics
                        .record_failure(FailureReason::TooManyFromSource);
                    tracing::debug!(%peer, "vmess: too many handshakes from this source; closing");
                    return;
                };
                let this = self.clone();
                let dispatch = context.dispatch.clone();
                let shutdown = context.shutdown.clone();
                context.tracker.spawn(async move {
                    let handshake = Box::pin(this.handshake(socket, peer, shutdown, admitted));
                    dispatch_after_handshake(handshake, peer, dispatch, "vmess").await;
                });
            })
            .await;
        Ok(())
    }
}

/// Rayback's rekey extension: agreed when the client asks for it and the
/// body has a cipher to rekey.
fn agrees_to_rekey(options: Options, framing: BodyFraming) -> bool {
    options.has(Options::REKEY) && framing.algorithm().is_some()
}

/// The response option byte: the Rayback extensions the client asked for
/// and this server agrees to (rekey when the body has a cipher; the
/// visitor's source and large packets always). 0 for a V2Ray client,
/// which asks for none.
fn response_options(options: Options, framing: BodyFraming) -> u8 {
    let mut answer = 0;
    if agrees_to_rekey(options, framing) {
        answer |= Options::REKEY;
    }
    for always in [Options::SOURCE, Options::LARGE_PACKETS] {
        if options.has(always) {
            answer |= always;
        }
    }
    answer
}

enum Refusal {
    Rejected(HandshakeError),
    Left,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// Reads until the request header is decoded; returns it and how many
/// bytes of `buffer` were read.
async fn read_request(
    validator: &Validator,
    socket: &mut (impl AsyncRead + Unpin),
    buffer: &mut [u8],
) -> Result<(Accepted, usize), Refusal> {
    let mut decoder = RequestDecoder::new();
    let mut read = 0;
    loop {
        let n = match socket.read(&mut buffer[read..]).await {
            Ok(0) | Err(_) => return Err(Refusal::Left),
            Ok(n) => n,
        };
        read += n;
        match decoder.decode(validator, &buffer[..read], unix_now()) {
            Ok(Some(accepted)) => return Ok((accepted, read)),
            Ok(None) if read < buffer.len() => {}
            // The buffer holds more than any header: cannot happen for a
            // decoder that keeps its limits, refused all the same.
            Ok(None) => return Err(Refusal::Rejected(HandshakeError::HeaderLength(u16::MAX))),
            Err(error) => return Err(Refusal::Rejected(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{BodySecurity, Command};

    fn answer(options: u8, security: BodySecurity) -> u8 {
        let options = Options(options);
        response_options(options, BodyFraming::new(security, options, Command::Tcp))
    }

    // The response option byte for each mix of Rayback's extensions: a
    // V2Ray client (0x0d, 0x05) gets 0, as from V2Ray; the source and
    // large-packet bits are answered whatever the body security, rekey
    // only with a cipher.
    #[test]
    fn response_answers_the_extensions_asked_for() {
        assert_eq!(answer(0x0d, BodySecurity::Aes128Gcm), 0);
        assert_eq!(answer(0x05, BodySecurity::None), 0);
        assert_eq!(answer(0x4d, BodySecurity::Aes128Gcm), 0x40);
        assert_eq!(answer(0x8d, BodySecurity::ChaCha20Poly1305), 0x80);
        assert_eq!(answer(0xcd, BodySecurity::Aes128Gcm), 0xc0);
        assert_eq!(answer(0xc5, BodySecurity::None), 0x40);
        assert_eq!(answer(0x2d, BodySecurity::Aes128Gcm), 0x20);
        assert_eq!(answer(0xe5, BodySecurity::None), 0x60);
        assert_eq!(answer(0xed, BodySecurity::ChaCha20Poly1305), 0xe0);
        // The bits V2Ray knows are never echoed.
        assert_eq!(answer(0x1f, BodySecurity::Aes128Gcm), 0);
    }
}
