//! The portal: adopts tunnel connections from bridges and gives every
//! other stream routed to it a sub-stream on one of them.
//!
//! The portal is an [`Outbound`]. [`Outbound::handle`] looks at the
//! destination: its own domain means "a bridge's tunnel connection"; the
//! stream is adopted ([`Portal::adopt`]) and driven as a Mux.Cool client
//! with a control session and heartbeats until it ends. Anything else is a
//! public connection: [`Outbound::connect`] opens a sub-stream on the
//! live, non-draining connection with the fewest active sessions (ties to
//! the oldest), waiting up to `no_bridge_wait` for one to appear.
//!
//! # The visitor's source (a Rayback extension)
//!
//! A Rayback bridge sets option bit `0x40` in its VMess request (see
//! `rayback_vmess::header::Options::SOURCE`); the portal's VMess inbound
//! marks the tunnel's session ([`Extensions::SOURCE`] in
//! [`Session::peer_extensions`](rayback_core::SessionFields::peer_extensions)), and
//! [`Portal::adopt`] then drives that tunnel with
//! [`ClientSettings::send_source`]: every public session's New carries the
//! visitor's address (the public inbound's `source`, from a PROXY header
//! when there is one) after its destination, in the metadata bytes V2Ray
//! 4.34 skips:
//!
//! | bytes | field |
//! |---|---|
//! | 2 | source port |
//! | 1 | `01` IPv4, `03` IPv6 |
//! | 4 or 16 | source address |
//!
//! (the full frame is in `rayback_mux::frame`). The bridge dispatches the
//! session with that source, so its routing `source` rules and access log
//! see the visitor. A V2Ray bridge never asks, so its tunnels get V2Ray's
//! own New; a V2Ray portal never sends it, so a Rayback bridge's sessions
//! then have no source, as before.
//!
//! # Large datagrams (a Rayback extension)
//!
//! V2Ray 4.34 refuses a Mux.Cool packet frame over 2048 bytes and drops
//! the whole connection, so a tunnel sends no datagram over 2048 bytes
//! (`rayback_mux::settings::V2RAY_MAX_PACKET`; larger ones are dropped)
//! unless both ends are Rayback. A Rayback bridge sets option bit `0x20`
//! in its VMess request (`rayback_vmess::header::Options::LARGE_PACKETS`);
//! the portal's VMess inbound answers it with the same bit and marks the
//! session ([`Extensions::LARGE_PACKETS`] in
//! [`Session::peer_extensions`](rayback_core::SessionFields::peer_extensions)), and [`Portal::adopt`] raises that
//! tunnel's `max_packet` to 65,535 bytes. The bridge reads the answer
//! (`rayback_mux::MuxSettings::large_packets_agreed`) and raises its own,
//! so datagrams up to 65,507 bytes cross both ways. A V2Ray bridge never
//! asks and a V2Ray portal never answers: their tunnels keep 2048.
//!
//! # Per-stream flow control (a Rayback extension)
//!
//! A bridge that asked for any Rayback extension is Rayback, so the portal
//! offers it per-stream windows in the tunnel's first Mux.Cool frame
//! (`rayback_mux::MuxSettings::offer_flow_control`; frames and rules in
//! `rayback_mux::frame`). A bridge that answers never lets one slow
//! visitor (or backend) stop the tunnel's other sub-streams: each has a
//! window, and the connection's reader never waits for a full one. A
//! V2Ray bridge is never offered it; an older Rayback bridge ignores the
//! offer, and both keep Mux.Cool's stall rule.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use rayback_core::packet::write_packet;
use rayback_core::relay::relay;
use rayback_core::{
    unmap, Address, Destination, Extensions, Outbound, Policy, SendBudget, Session, Stream, Tag,
};
use rayback_mux::settings::LARGE_MAX_PACKET;
use rayback_mux::{ClientSettings, Load, MuxClient, MuxSettings};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::control::{Control, State, MAX_RANDOM};
use crate::count::{counted, ByteCounters, End};
use crate::{CONTROL_DOMAIN_V2RAY, TICK};

/// What a portal is told by the config.
#[derive(Clone, Debug)]
pub struct PortalSettings {
    /// The outbound tag routing sends traffic to.
    pub tag: Tag,
    /// A stream routed here whose destination is this domain is a tunnel
    /// connection (exact, case-sensitive, any port).
    pub domain: String,
    /// The control session's domain: V2Ray ≤ 4.34's by default.
    pub control_domain: String,
    /// How long a public connection waits for a bridge when none is up.
    pub no_bridge_wait: Duration,
    /// A tunnel connection that has opened more sessions than this is
    /// drained and replaced. Mux session ids are 16 bits, so it must stay
    /// well below 65535. V2Ray drains after 256, which under many short
    /// connections makes the bridge dial a new tunnel every few hundred
    /// requests; Rayback's default is 16384 (wire-compatible either way).
    pub drain_after: u64,
    /// A tunnel whose bridge sends KeepAlive frames (Rayback bridges do,
    /// every 2 s; V2Ray bridges send nothing when idle) and then nothing
    /// at all for this long is taken for dead and closed, so no public
    /// connection is handed to a half-open tunnel (6 s, as the bridge's
    /// `heartbeat_timeout`: both ends give up on a dead path together).
    pub bridge_silence: Duration,
    /// Most sub-streams the portal opens on one tunnel connection (a
    /// Rayback bridge refuses more than its `streamsPerConnection`); past
    /// it, new public connections go to another tunnel or wait briefly for
    /// the bridge to add one.
    pub max_streams: usize,
    /// Buffer bounds and the stall timeout of each tunnel's sub-streams
    /// (`rayback.limits.streamBuffer`, `streamStallTimeout`).
    pub mux: MuxSettings,
}

impl PortalSettings {
    pub fn new(tag: Tag, domain: String) -> PortalSettings {
        PortalSettings {
            tag,
            domain,
            control_domain: CONTROL_DOMAIN_V2RAY.to_owned(),
            no_bridge_wait: Duration::from_secs(2),
            drain_after: 16_384,
            bridge_silence: Duration::from_secs(6),
            max_streams: 1024,
            mux: MuxSettings::default(),
        }
    }
}

/// One adopted tunnel connection.
struct Tunnel {
    id: u64,
    client: MuxClient,
    draining: AtomicBool,
    peer: Option<SocketAddr>,
    since: Instant,
    /// The carrying connection's send budget (VMess nonces), if known.
    budget: Option<SendBudget>,
    /// Wakes the heartbeat task at once when the tunnel should drain.
    wake: Notify,
    /// The carrier's bytes (see [`crate::count`]).
    bytes: Arc<ByteCounters>,
    /// Set once the control session is shut down (at DRAIN): from then on
    /// every open sub-stream is a public session.
    control_ended: AtomicBool,
}

/// How a tunnel compares for the next public session, least first:
/// draining ones last, then those whose bridge went quiet,
/// then by sessions open, then by bytes buffered.
type Rank = (bool, bool, usize, usize);

/// The rank of an idle tunnel: usable, not quiet, its control session
/// the only one open, nothing buffered. Only a tunnel whose control
/// session has ended ranks lower, and it has no public session either.
const IDLE: Rank = (false, false, 1, 0);

impl Tunnel {
    /// Its [`Rank`] given its `load`, or `None` when it has no room for
    /// another sub-stream.
    ///
    /// Quiet: a bridge that sends KeepAlive every [`TICK`] missed one, so
    /// its path may be dead (the bridge's host changed address, say). It
    /// is picked only when every other tunnel is quiet too, until
    /// `bridge_silence` closes it.
    fn rank(&self, load: &Load, max_streams: usize) -> Option<Rank> {
        if load.active_sessions >= max_streams {
            return None;
        }
        let draining = self.draining.load(Ordering::Relaxed);
        let quiet = load.since_keepalive.is_some()
            && load
                .silent_for
                .is_some_and(|silent| silent > TICK + TICK / 2);
        Some((draining, quiet, load.active_sessions, load.buffered_bytes))
    }

    /// Public sessions open on it: the sub-streams less the control
    /// session while it is open.
    fn public_sessions(&self) -> usize {
        let open = self.client.active_sessions();
        if self.control_ended.load(Ordering::Relaxed) {
            open
        } else {
            open.saturating_sub(1)
        }
    }

    /// Whether this connection should take no more sessions: it opened
    /// too many, or its carrier is near the end of its nonces.
    fn should_drain(&self, drain_after: u64) -> bool {
        self.client.total_opened() > drain_after
            || self.budget.as_ref().is_some_and(SendBudget::is_low)
    }
}

/// What `/status` shows of one tunnel connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelStatus {
    pub peer: Option<SocketAddr>,
    pub up_for: Duration,
    /// Mux sub-streams open, the control session included.
    pub active_sessions: usize,
    pub total_sessions: u64,
    pub draining: bool,
    /// Public sessions open (the control session left out).
    pub sessions: usize,
    /// The carrier's bytes toward the bridge (up) and back (down), Mux.Cool
    /// framing included.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// The bridge answered the offer of per-stream flow control (a Rayback
    /// bridge; see the module docs).
    pub flow_control: bool,
}

/// A portal outbound.
pub struct Portal {
    settings: PortalSettings,
    /// Set when the process stops: every tunnel drains and closes once
    /// its public sessions have ended.
    closing: AtomicBool,
    tunnels: Mutex<Vec<Arc<Tunnel>>>,
    /// Woken when a tunnel connection is adopted.
    adopted: Notify,
    next_id: AtomicU64,
    /// The bytes of every tunnel connection it has held, ended ones too.
    bytes: Arc<ByteCounters>,
    /// Public connections refused because no tunnel (with room) came up
    /// within `no_bridge_wait`.
    no_bridge: AtomicU64,
}

impl Portal {
    pub fn new(settings: PortalSettings) -> Portal {
        Portal {
            settings,
            closing: AtomicBool::new(false),
            tunnels: Mutex::new(Vec::new()),
            adopted: Notify::new(),
            next_id: AtomicU64::new(1),
            bytes: Arc::new(ByteCounters::default()),
            no_bridge: AtomicU64::new(0),
        }
    }

    pub fn settings(&self) -> &PortalSettings {
        &self.settings
    }

    /// For a graceful stop: tells every bridge (DRAIN) that this portal
    /// takes no more sessions, and closes each tunnel as soon as the public
    /// sessions it carries have ended.
    pub fn close_when_idle(&self) {
        self.closing.store(true, Ordering::Relaxed);
        for tunnel in self.tunnels.lock().expect("not poisoned").iter() {
            tunnel.wake.notify_one();
        }
    }

    /// The tunnel connections now held.
    pub fn tunnels(&self) -> Vec<TunnelStatus> {
        let tunnels = self.tunnels.lock().expect("not poisoned");
        tunnels
            .iter()
            .map(|tunnel| TunnelStatus {
                peer: tunnel.peer,
                up_for: tunnel.since.elapsed(),
                active_sessions: tunnel.client.active_sessions(),
                total_sessions: tunnel.client.total_opened(),
                draining: tunnel.draining.load(Ordering::Relaxed),
                sessions: tunnel.public_sessions(),
                bytes_up: tunnel.bytes.up(),
                bytes_down: tunnel.bytes.down(),
                flow_control: tunnel.client.flow_control(),
            })
            .collect()
    }

    /// The bytes of all its tunnel connections so far, ended ones
    /// included: they only grow.
    pub fn bytes(&self) -> &ByteCounters {
        &self.bytes
    }

    /// Public connections refused so far because no bridge connection
    /// (with room for a stream) came up within `no_bridge_wait`.
    pub fn no_bridge_refusals(&self) -> u64 {
        self.no_bridge.load(Ordering::Relaxed)
    }

    /// The live, non-draining tunnel connection whose bridge is not quiet
    /// ([`Tunnel::rank`]) with the fewest active sessions, ties to the one
    /// with fewer bytes buffered (a tunnel busy with a bulk transfer counts
    /// one session but a full queue), then to the oldest; a draining one
    /// only if nothing else is left. Closed connections are never picked,
    /// and are forgotten here.
    ///
    /// One pass, one lock and no clock read per tunnel, and it stops at
    /// the first idle tunnel ([`IDLE`]: only its control session, nothing
    /// buffered), which nothing after it could beat: with a thousand
    /// bridges this runs for every public connection, and reading every
    /// tunnel each time cost a lightly loaded portal most of its CPU.
    fn pick(&self) -> Option<Arc<Tunnel>> {
        let now = std::time::Instant::now();
        let max_streams = self.settings.max_streams;
        let mut best: Option<(Rank, &Arc<Tunnel>)> = None;
        let mut any_closed = false;
        let mut tunnels = self.tunnels.lock().expect("not poisoned");
        for tunnel in tunnels.iter() {
            let load = tunnel.client.load(now);
            // Closed, or refusing new sub-streams (`MuxClient::is_closed`).
            if load.refusing {
                any_closed = true;
                continue;
            }
            let Some(rank) = tunnel.rank(&load, max_streams) else {
                continue;
            };
            if best.is_none_or(|(least, _)| rank < least) {
                best = Some((rank, tunnel));
                if rank <= IDLE {
                    break;
                }
            }
        }
        let best = best.map(|(_, tunnel)| tunnel.clone());
        if any_closed {
            tunnels.retain(|tunnel| !tunnel.client.is_closed());
        }
        best
    }

    fn forget(&self, id: u64) {
        self.tunnels
            .lock()
            .expect("not poisoned")
            .retain(|tunnel| tunnel.id != id);
    }

    /// Drives a bridge's tunnel connection until it ends: the mux client,
    /// the control session and its heartbeats, and the drain.
    pub async fn adopt(&self, session: &Session, stream: Stream) -> io::Result<()> {
        let bytes = Arc::new(ByteCounters::default());
        let stream = counted(stream, End::Portal, vec![bytes.clone(), self.bytes.clone()]);
        let mut mux = self.settings.mux.clone();
        // A Rayback bridge asks for large datagrams in its VMess request;
        // V2Ray never does and keeps the 2048-byte limit (module docs).
        if session.peer_extensions.contains(Extensions::LARGE_PACKETS) {
            mux.max_packet = mux.max_packet.max(LARGE_MAX_PACKET);
        }
        // Any Rayback extension asked for says the bridge is Rayback: offer
        // it per-stream flow control (an older one ignores the offer; a
        // V2Ray bridge is never sent it).
        mux.offer_flow_control = !session.peer_extensions.is_empty();
        let client = MuxClient::new(
            stream,
            ClientSettings {
                mux,
                // A Rayback bridge asks for the visitor's source in its
                // VMess request; V2Ray never does (see the module docs).
                send_source: session.peer_extensions.contains(Extensions::SOURCE),
                ..ClientSettings::default()
            },
        );
        let control_destination =
            Destination::udp(Address::Domain(self.settings.control_domain.clone()), 0);
        let mut control = client
            .open(control_destination)
            .await
            .map_err(io::Error::other)?;
        let tunnel = Arc::new(Tunnel {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            client: client.clone(),
            draining: AtomicBool::new(false),
            peer: session.source,
            since: Instant::now(),
            budget: session.send_budget.clone(),
            wake: Notify::new(),
            bytes,
            control_ended: AtomicBool::new(false),
        });
        self.tunnels
            .lock()
            .expect("not poisoned")
            .push(tunnel.clone());
        self.adopted.notify_waiters();
        tracing::info!(portal = %self.settings.tag, peer = ?session.source, "bridge connection adopted");

        let result = self.heartbeat(&tunnel, &mut control).await;
        self.forget(tunnel.id);
        client.close();
        tracing::info!(portal = %self.settings.tag, peer = ?session.source, "bridge connection ended");
        result
    }

    /// Sends a heartbeat at once and then every [`TICK`]; drains the
    /// connection once it has opened `drain_after` sessions, and closes it
    /// when a drained connection has no sessions left.
    async fn heartbeat(&self, tunnel: &Tunnel, control: &mut Stream) -> io::Result<()> {
        let mut message = Vec::with_capacity(2 + 3 + MAX_RANDOM);
        let mut tick = tokio::time::interval(TICK);
        loop {
            // A draining tunnel is watched closely so it closes soon after
            // its last session.
            let pause = async {
                if tunnel.draining.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                } else {
                    tick.tick().await;
                }
            };
            tokio::select! {
                () = pause => {}
                () = tunnel.wake.notified() => {}
                () = tunnel.client.closed() => return Ok(()),
            }
            let speaks_keepalive = tunnel.client.since_keepalive().is_some();
            let silence = tunnel.client.silent_for().unwrap_or_default();
            if speaks_keepalive && silence > self.settings.bridge_silence {
                tracing::warn!(portal = %self.settings.tag, peer = ?tunnel.peer, "bridge silent for {silence:?}; closing its tunnel connection");
                return Ok(());
            }
            if tunnel.draining.load(Ordering::Relaxed) {
                if tunnel.client.active_sessions() == 0 {
                    return Ok(());
                }
                continue;
            }
            let drain = tunnel.should_drain(self.settings.drain_after)
                || self.closing.load(Ordering::Relaxed);
            let control_message = Control {
                state: if drain { State::Drain } else { State::Active },
                random: random_padding(),
            };
            message.clear();
            control_message.encode(&mut message);
            write_packet(control, &message).await?;
            if drain {
                tracing::info!(
                    portal = %self.settings.tag,
                    "draining a bridge connection after {} sessions (nonce budget low: {})",
                    tunnel.client.total_opened(),
                    tunnel.budget.as_ref().is_some_and(SendBudget::is_low)
                );
                tunnel.draining.store(true, Ordering::Relaxed);
                // Ends session 1, as V2Ray does after a DRAIN.
                tunnel.control_ended.store(true, Ordering::Relaxed);
                let _ = control.shutdown().await;
            }
        }
    }

    /// Opens a sub-stream for a public connection from `source` (named in
    /// the New only on tunnels whose bridge reads it).
    async fn open(
        &self,
        destination: &Destination,
        source: Option<SocketAddr>,
    ) -> io::Result<Stream> {
        let deadline = Instant::now() + self.settings.no_bridge_wait;
        loop {
            let adopted = self.adopted.notified();
            tokio::pin!(adopted);
            adopted.as_mut().enable();
            if let Some(tunnel) = self.pick() {
                match tunnel.client.open_from(destination.clone(), source).await {
                    Ok(stream) => {
                        // Drain as soon as the limit is crossed, not at the
                        // next tick, so a burst cannot run the ids out.
                        if tunnel.should_drain(self.settings.drain_after) {
                            tunnel.wake.notify_one();
                        }
                        return Ok(stream);
                    }
                    Err(error) => {
                        tracing::debug!("bridge connection refused a session: {error}");
                        if tunnel.client.is_closed() {
                            self.forget(tunnel.id);
                        } else {
                            tunnel.draining.store(true, Ordering::Relaxed);
                        }
                        continue;
                    }
                }
            }
            // Wait for a new tunnel, or for room on one (sessions end
            // without notice, so look again every few milliseconds).
            let room = tokio::time::sleep(Duration::from_millis(20));
            let waited = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    () = adopted => {}
                    () = room => {}
                }
            })
            .await;
            if waited.is_err() {
                self.no_bridge.fetch_add(1, Ordering::Relaxed);
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    format!(
                        "portal {}: no bridge connection (with room for a stream) within {:?}",
                        self.settings.tag, self.settings.no_bridge_wait
                    ),
                ));
            }
        }
    }
}

/// 1..=63 random bytes: never empty, so every heartbeat goes on the wire.
fn random_padding() -> Vec<u8> {
    let mut rng = rand::thread_rng();
    let len = rng.gen_range(1..=MAX_RANDOM);
    (0..len).map(|_| rng.gen()).collect()
}

#[async_trait]
impl Outbound for Portal {
    async fn connect(&self, session: &Session) -> io::Result<Stream> {
        self.open(&session.destination, session.source.map(unmap))
            .await
    }

    async fn handle(&self, session: Session, stream: Stream, policy: &Policy) -> io::Result<()> {
        if session.destination.address.domain() == Some(self.settings.domain.as_str()) {
            // Once per tunnel, and its state is large: on the heap, so that
            // every public session's future does not carry room for it.
            return Box::pin(self.adopt(&session, stream)).await;
        }
        // The open (its timers, the wait for a tunnel) and the session are
        // done with once the sub-stream is open: boxed and scoped, so that
        // the future a held connection keeps is the relay's size only.
        let tunnel = {
            let session = session;
            Box::pin(self.open(&session.destination, session.source.map(unmap))).await?
        };
        relay(stream, tunnel, policy).await.map(drop)
    }
}
