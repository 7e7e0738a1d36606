//! The bridge: dials tunnel connections to the portal(s) and serves the
//! sessions the portals open on them.
//!
//! One task ([`Bridge::run`]) owns the tunnel connections, grouped by
//! portal: every server the tunnel outbound lists (`vnext` with several
//! entries) is a portal of its own (a `PortalLink`), holding at least one
//! live tunnel and redialled on its own with capped exponential backoff
//! and jitter, so a dead portal never holds up the others. The task wakes
//! every [`TICK`], when a tunnel dies or a dial ends, and on shutdown;
//! each time it drops tunnels that are no longer active (drained, closed,
//! or silent for `heartbeat_timeout`) and dials where one is missing, or
//! one more when the sessions per connection exceed
//! [`SESSIONS_PER_CONNECTION`] — V2Ray's rule, so a Rayback bridge grows
//! like a V2Ray one — at the portal with the fewest tunnels.
//!
//! V2Ray's own bridge picks one server per dial (round robin), which can
//! leave a portal without any tunnel: behind a load balancer that portal
//! then takes public connections it cannot serve.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use rayback_core::packet::read_packet;
use rayback_core::{Address, AgreedExtensions, Destination, Dispatch, Session, Stream, Tag};
use rayback_mux::{MuxServer, ServerHandle, ServerSettings, SessionHandler};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::{Control, State};
use crate::count::{counted, ByteCounters, End};
use crate::{CONTROL_DOMAIN_V2FLY, CONTROL_DOMAIN_V2RAY, SESSIONS_PER_CONNECTION, TICK};

/// What a bridge is told by the config.
#[derive(Clone, Debug)]
pub struct BridgeSettings {
    /// Stamped as inbound tag on every connection the bridge originates.
    pub tag: Tag,
    /// The destination domain of its tunnel connections (`TCP <domain>:0`).
    pub domain: String,
    /// At most this many tunnel connections at once.
    pub max_connections: usize,
    /// A tunnel on which the portal sent nothing for this long is taken
    /// for dead and replaced (6 s: three of the portals' 2 s heartbeats;
    /// a 4.34 portal sends an empty one, which may be skipped, one time
    /// in 64, so one missed period is not enough). With the 2 s tick, a
    /// dead path is noticed within 8 s.
    pub heartbeat_timeout: Duration,
    /// Mux limits for each tunnel connection.
    pub mux: ServerSettings,
    /// Backoff between failed dials: first and largest delay.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl BridgeSettings {
    pub fn new(tag: Tag, domain: String) -> BridgeSettings {
        BridgeSettings {
            tag,
            domain,
            max_connections: 64,
            heartbeat_timeout: Duration::from_secs(6),
            mux: ServerSettings::default(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// The control state of one tunnel connection, shared with its control
/// session's reader.
struct Liveness {
    draining: AtomicBool,
    /// When the last control message arrived; `None` before the first.
    last_control: Mutex<Option<Instant>>,
}

struct Tunnel {
    server: ServerHandle,
    liveness: Arc<Liveness>,
    /// Sessions open on it besides the control session.
    sessions: Arc<AtomicUsize>,
    /// When it was dialled.
    since: Instant,
}

/// What `status()` counts of the tunnels to one portal, across their
/// lives (a drained tunnel's sessions still count while they run).
#[derive(Debug, Default)]
struct LinkCounters {
    /// Sessions open on its tunnels besides the control sessions.
    sessions: AtomicUsize,
    bytes: Arc<ByteCounters>,
    /// Dials to the portal while it had no tunnel, after the first dial.
    reconnects: AtomicU64,
}

impl Tunnel {
    /// When the portal last spoke on the control session, if ever.
    fn last_heard(&self) -> Option<Instant> {
        *self.liveness.last_control.lock().expect("not poisoned")
    }

    /// Closed, or the portal sent nothing for `heartbeat_timeout` while we
    /// were listening. Portals send a heartbeat every 2 s (a 4.34 portal
    /// skips one in 64 at random), so silence means a dead tunnel; a
    /// reader held up by a slow sub-stream is not silence.
    fn is_dead(&self, heartbeat_timeout: Duration) -> bool {
        self.server.is_closed()
            || self
                .server
                .silent_for()
                .is_some_and(|silent| silent > heartbeat_timeout)
    }

    fn is_draining(&self) -> bool {
        self.liveness.draining.load(Ordering::Relaxed)
    }
}

/// A running bridge. Cheap to share; [`Bridge::run`] drives it.
pub struct Bridge {
    settings: BridgeSettings,
    dispatch: Arc<dyn Dispatch>,
    tracker: TaskTracker,
    /// Woken when a tunnel dies, so a replacement is dialled at once.
    tunnel_ended: Arc<Notify>,
    /// The portals and the control state of their tunnel connections now
    /// counted, as last published by the loop.
    live: Mutex<Vec<PublishedPortal>>,
    /// Dials attempted over the bridge's life.
    dials: AtomicU64,
    /// Dials to a portal that had no tunnel, after its first dial: the
    /// tunnel died, or the dial before failed.
    reconnects: AtomicU64,
    /// Dials that failed.
    dial_failures: AtomicU64,
    /// The bytes of every tunnel it has dialled, ended ones too.
    bytes: Arc<ByteCounters>,
}

/// What the loop publishes of one portal for `status()`.
struct PublishedPortal {
    name: String,
    /// Each counted tunnel's control state and when it was dialled.
    tunnels: Vec<(Arc<Liveness>, Instant)>,
    counters: Arc<LinkCounters>,
}

/// What metrics and `/status` show of a bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeStatus {
    /// Tunnel connections up and not draining.
    pub connections: usize,
    /// Dials attempted so far (the first one included).
    pub dials: u64,
    /// Time since the portal last spoke on any tunnel connection.
    pub since_control: Option<Duration>,
    /// Each portal the tunnel outbound lists, in its order.
    pub portals: Vec<PortalLinkStatus>,
    /// Sessions open on its tunnels (control sessions left out).
    pub sessions: usize,
    /// Dials to a portal that had no tunnel, after its first dial.
    pub reconnects: u64,
    /// Dials that failed.
    pub dial_failures: u64,
    /// Bytes of all its tunnels so far, ended ones included: toward the
    /// services (up) and back (down), Mux.Cool framing included.
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// What metrics and `/status` show of the tunnels to one portal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortalLinkStatus {
    /// `host:port` as the tunnel outbound lists it; empty when the outbound
    /// has no server list (then there is one entry).
    pub name: String,
    /// Tunnel connections up and not draining.
    pub connections: usize,
    /// Time since this portal last spoke on any of them.
    pub since_control: Option<Duration>,
    /// How long the oldest of them has been up.
    pub up_for: Option<Duration>,
    /// Sessions open on its tunnels, drained ones included.
    pub sessions: usize,
    /// Dials to it while it had no tunnel, after the first dial.
    pub reconnects: u64,
    /// Bytes of its tunnels so far, as [`BridgeStatus::bytes_up`].
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// The tunnels to one portal: one server of the tunnel outbound, kept
/// up on its own (its own backoff), so a dead portal never holds up the
/// others.
struct PortalLink {
    name: String,
    /// The outbound's index of this server ([`Session::server`](rayback_core::SessionFields::server)); `None`
    /// when the outbound has no list (it chooses).
    server: Option<usize>,
    tunnels: Vec<Tunnel>,
    /// Dials that failed, or tunnels that died before the portal ever
    /// spoke on them, in a row: they set the backoff.
    failures: u32,
    next_dial: Instant,
    dialling: bool,
    /// Whether a dial to it ever started (the next one to a portal
    /// without a tunnel is a reconnect).
    dialled_before: bool,
    counters: Arc<LinkCounters>,
}

impl PortalLink {
    fn new(name: String, server: Option<usize>) -> PortalLink {
        PortalLink {
            name,
            server,
            tunnels: Vec::new(),
            failures: 0,
            next_dial: Instant::now(),
            dialling: false,
            dialled_before: false,
            counters: Arc::default(),
        }
    }

    /// Whether a dial may start now.
    fn may_dial(&self, now: Instant) -> bool {
        !self.dialling && now >= self.next_dial
    }

    /// Earliest moment this portal wants a dial it is waiting out the
    /// backoff for: when it has no tunnel (or `growing` and it may take one).
    fn wants_dial_at(&self, growing: bool) -> Option<Instant> {
        (!self.dialling && (self.tunnels.is_empty() || growing)).then_some(self.next_dial)
    }

    fn sessions(&self) -> usize {
        self.tunnels
            .iter()
            .map(|tunnel| tunnel.server.active_sessions())
            .sum()
    }
}

/// A dial's outcome, handed back to the loop.
type Dialled = (Option<usize>, io::Result<Tunnel>);

impl Bridge {
    pub fn new(
        settings: BridgeSettings,
        dispatch: Arc<dyn Dispatch>,
        tracker: TaskTracker,
    ) -> Bridge {
        Bridge {
            settings,
            dispatch,
            tracker,
            tunnel_ended: Arc::new(Notify::new()),
            live: Mutex::new(Vec::new()),
            dials: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            dial_failures: AtomicU64::new(0),
            bytes: Arc::new(ByteCounters::default()),
        }
    }

    pub fn settings(&self) -> &BridgeSettings {
        &self.settings
    }

    /// Tunnel connections currently active, to all portals.
    pub fn connections(&self) -> usize {
        self.live
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|portal| portal.tunnels.len())
            .sum()
    }

    pub fn status(&self) -> BridgeStatus {
        let live = self.live.lock().expect("not poisoned");
        let portals: Vec<PortalLinkStatus> = live
            .iter()
            .map(|portal| PortalLinkStatus {
                name: portal.name.clone(),
                connections: portal.tunnels.len(),
                since_control: portal
                    .tunnels
                    .iter()
                    .filter_map(|(liveness, _)| {
                        *liveness.last_control.lock().expect("not poisoned")
                    })
                    .max()
                    .map(|last| last.elapsed()),
                up_for: portal
                    .tunnels
                    .iter()
                    .map(|(_, since)| *since)
                    .min()
                    .map(|since| since.elapsed()),
                sessions: portal.counters.sessions.load(Ordering::Relaxed),
                reconnects: portal.counters.reconnects.load(Ordering::Relaxed),
                bytes_up: portal.counters.bytes.up(),
                bytes_down: portal.counters.bytes.down(),
            })
            .collect();
        BridgeStatus {
            connections: portals.iter().map(|portal| portal.connections).sum(),
            dials: self.dials.load(Ordering::Relaxed),
            since_control: portals
                .iter()
                .filter_map(|portal| portal.since_control)
                .min(),
            sessions: portals.iter().map(|portal| portal.sessions).sum(),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            dial_failures: self.dial_failures.load(Ordering::Relaxed),
            bytes_up: self.bytes.up(),
            bytes_down: self.bytes.down(),
            portals,
        }
    }

    fn publish(&self, portals: &[PortalLink]) {
        *self.live.lock().expect("not poisoned") = portals
            .iter()
            .map(|portal| PublishedPortal {
                name: portal.name.clone(),
                tunnels: portal
                    .tunnels
                    .iter()
                    .map(|tunnel| (tunnel.liveness.clone(), tunnel.since))
                    .collect(),
                counters: portal.counters.clone(),
            })
            .collect();
    }

    /// The session of this bridge's tunnel dials (`TCP <domain>:0`).
    fn tunnel_session(&self) -> Session {
        let destination = Destination::tcp(Address::Domain(self.settings.domain.clone()), 0);
        Session::new(destination).with_inbound_tag(self.settings.tag.clone())
    }

    /// Brings `portals` in line with the servers the tunnel outbound lists
    /// now (a reload may change them): new ones are added, tunnels to
    /// ones no longer listed are left to end with their sessions.
    async fn refresh_portals(&self, portals: &mut Vec<PortalLink>) {
        let names = self.dispatch.servers(&self.tunnel_session()).await;
        let wanted: Vec<(String, Option<usize>)> = if names.is_empty() {
            vec![(String::new(), None)]
        } else {
            names
                .into_iter()
                .enumerate()
                .map(|(index, name)| (name, Some(index)))
                .collect()
        };
        let same = portals.len() == wanted.len()
            && portals
                .iter()
                .zip(&wanted)
                .all(|(portal, (name, server))| portal.name == *name && portal.server == *server);
        if same {
            return;
        }
        let mut old = std::mem::take(portals);
        for (name, server) in wanted {
            match old.iter().position(|portal| portal.name == name) {
                Some(at) => {
                    let mut portal = old.swap_remove(at);
                    portal.server = server;
                    portals.push(portal);
                }
                None => portals.push(PortalLink::new(name, server)),
            }
        }
        // Tunnels to a portal no longer listed serve their sessions out.
        let orphans: Vec<Tunnel> = old.into_iter().flat_map(|portal| portal.tunnels).collect();
        if !orphans.is_empty() {
            self.tracker.spawn(Self::close_when_idle(orphans));
        }
    }

    /// Drops `portal`'s tunnels that are no longer active (dead, or
    /// drained), sends keepalives on the others when `ticked`, and moves
    /// its backoff.
    fn sweep(&self, portal: &mut PortalLink, ticked: bool) {
        let timeout = self.settings.heartbeat_timeout;
        let mut died_unheard = false;
        portal.tunnels.retain(|tunnel| {
            if tunnel.is_dead(timeout) {
                if !tunnel.server.is_closed() {
                    tracing::warn!(bridge = %self.settings.tag, portal = %portal.name, "tunnel connection silent for {timeout:?}; closing it");
                    tunnel.server.close();
                }
                died_unheard |= tunnel.last_heard().is_none();
                return false;
            }
            // A sign of life for a Rayback portal, which then can tell a
            // dead tunnel from a quiet one; V2Ray ignores KeepAlive.
            if ticked {
                tunnel.server.send_keepalive();
            }
            // A drained connection keeps serving its sessions; it just
            // no longer counts (the portal closes it when they end).
            !tunnel.is_draining()
        });
        if died_unheard {
            portal.failures = portal.failures.saturating_add(1);
            portal.next_dial = Instant::now() + self.backoff(portal.failures);
        } else if portal
            .tunnels
            .iter()
            .any(|tunnel| tunnel.last_heard().is_some())
        {
            portal.failures = 0;
        }
    }

    /// Keeps tunnel connections up to every portal until `shutdown`; then
    /// returns, leaving open sessions to the tracker (they end with their
    /// connections).
    ///
    /// Every portal gets a tunnel of its own, dialled on its own; growth
    /// (more than [`SESSIONS_PER_CONNECTION`] sessions per connection,
    /// V2Ray's rule) goes to the portal with the fewest tunnels, up to
    /// `max_connections` in all.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut portals: Vec<PortalLink> = Vec::new();
        let mut dials: JoinSet<Dialled> = JoinSet::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Whether this pass was started by the tick (keepalives go out then,
        // and the portal list is looked at again).
        let mut ticked = true;
        loop {
            if ticked {
                self.refresh_portals(&mut portals).await;
            }
            for portal in &mut portals {
                self.sweep(portal, ticked);
            }
            self.publish(&portals);
            let now = Instant::now();
            let tunnels: usize = portals.iter().map(|portal| portal.tunnels.len()).sum();
            let in_flight = portals.iter().filter(|portal| portal.dialling).count();
            let sessions: usize = portals.iter().map(PortalLink::sessions).sum();
            let growing = tunnels > 0
                && sessions / (tunnels + in_flight) > SESSIONS_PER_CONNECTION
                && tunnels + in_flight < self.settings.max_connections;
            // Every portal without a tunnel gets a dial; growth goes to the
            // one with the fewest tunnels among those free to dial.
            for portal in &mut portals {
                if portal.tunnels.is_empty() && portal.may_dial(now) {
                    self.start_dial(&mut dials, portal);
                }
            }
            if growing {
                if let Some(portal) = portals
                    .iter_mut()
                    .filter(|portal| portal.may_dial(now))
                    .min_by_key(|portal| portal.tunnels.len())
                {
                    self.start_dial(&mut dials, portal);
                }
            }
            let wake_at = portals
                .iter()
                .filter_map(|portal| portal.wants_dial_at(growing))
                .filter(|at| *at > now)
                .min();
            ticked = tokio::select! {
                _ = tick.tick() => true,
                () = self.tunnel_ended.notified() => false,
                Some(joined) = dials.join_next() => {
                    if let Ok((server, dialled)) = joined {
                        if let Some(portal) = portals.iter_mut().find(|portal| portal.server == server) {
                            self.dialled(portal, dialled);
                        }
                    }
                    false
                }
                () = sleep_until_some(wake_at) => false,
                () = shutdown.cancelled() => break,
            };
        }
        // Stopping: no more dials (those in flight are dropped); tunnels
        // close as their sessions end, and the tracker lets the app's grace
        // period wait for that.
        dials.abort_all();
        let tunnels: Vec<Tunnel> = portals
            .into_iter()
            .flat_map(|portal| portal.tunnels)
            .collect();
        self.tracker.spawn(Self::close_when_idle(tunnels));
    }

    fn start_dial(self: &Arc<Self>, dials: &mut JoinSet<Dialled>, portal: &mut PortalLink) {
        portal.dialling = true;
        if portal.dialled_before && portal.tunnels.is_empty() {
            portal.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        portal.dialled_before = true;
        let bridge = Arc::clone(self);
        let server = portal.server;
        let counters = portal.counters.clone();
        dials.spawn(async move { (server, bridge.dial(server, counters).await) });
    }

    /// A dial to `portal` ended.
    fn dialled(&self, portal: &mut PortalLink, dialled: io::Result<Tunnel>) {
        portal.dialling = false;
        match dialled {
            Ok(tunnel) => {
                portal.tunnels.push(tunnel);
                tracing::info!(bridge = %self.settings.tag, portal = %portal.name, connections = portal.tunnels.len(), "tunnel connection up");
            }
            Err(error) => {
                self.dial_failures.fetch_add(1, Ordering::Relaxed);
                portal.failures = portal.failures.saturating_add(1);
                let delay = self.backoff(portal.failures);
                portal.next_dial = Instant::now() + delay;
                tracing::warn!(bridge = %self.settings.tag, portal = %portal.name, "dialling the portal failed: {error}; retrying in {delay:?}");
            }
        }
    }

    /// After shutdown: each tunnel connection is closed as soon as the
    /// sessions it carries have ended, so a stopping bridge does not wait
    /// out its grace period on idle tunnels.
    async fn close_when_idle(tunnels: Vec<Tunnel>) {
        let mut open = tunnels;
        while !open.is_empty() {
            open.retain(|tunnel| {
                if tunnel.sessions.load(Ordering::Relaxed) == 0 || tunnel.server.is_closed() {
                    tunnel.server.close();
                    return false;
                }
                true
            });
            if !open.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The delay before the next dial after `failures` failed ones: doubling
    /// from `backoff_min` up to `backoff_max`, with ±25% jitter so that many
    /// bridges do not redial in step.
    fn backoff(&self, failures: u32) -> Duration {
        let base = self
            .settings
            .backoff_min
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.settings.backoff_max);
        let jitter = rand::thread_rng().gen_range(0.75..1.25);
        base.mul_f64(jitter)
    }

    /// Dials one tunnel connection through the router (to the outbound's
    /// server `server`, when given) and starts serving Mux.Cool on it.
    async fn dial(&self, server: Option<usize>, link: Arc<LinkCounters>) -> io::Result<Tunnel> {
        self.dials.fetch_add(1, Ordering::Relaxed);
        let mut session = self.tunnel_session();
        session.server = server;
        // The VMess outbound records here what the portal answered to the
        // extensions it offered: a Rayback portal agrees to large
        // datagrams, and this tunnel's mux server then sends them too (see
        // `crate::portal`'s docs). A V2Ray portal answers none.
        let agreed = AgreedExtensions::new();
        session.agreed_by_server = Some(agreed.clone());
        let mut stream = self.dispatch.connect(&session).await?;
        // A client holds its request header until the first payload, or
        // 100 ms (as V2Ray does); a bridge has nothing to send first, and
        // the portal counts the connection as an unauthenticated
        // handshake until the header arrives: at 64 per source address,
        // 1,000 bridges behind one address took 4 s to come up, not 0.5.
        // The same bytes, sent now.
        stream.flush().await?;
        let stream = counted(
            stream,
            End::Bridge,
            vec![link.bytes.clone(), self.bytes.clone()],
        );
        let liveness = Arc::new(Liveness {
            draining: AtomicBool::new(false),
            last_control: Mutex::new(None),
        });
        let sessions = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(BridgeSessions {
            tag: self.settings.tag.clone(),
            dispatch: self.dispatch.clone(),
            liveness: liveness.clone(),
            wake: self.tunnel_ended.clone(),
            sessions: sessions.clone(),
            link,
        });
        let mut settings = self.settings.mux.clone();
        settings.mux.large_packets_agreed = Some(agreed);
        let server = MuxServer::serve_with(stream, handler, settings);
        let ended = self.tunnel_ended.clone();
        let watched = server.clone();
        self.tracker.spawn(async move {
            watched.closed().await;
            ended.notify_one();
        });
        Ok(Tunnel {
            server,
            liveness,
            sessions,
            since: Instant::now(),
        })
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Handles the sessions the portal opens on one tunnel connection.
struct BridgeSessions {
    tag: Tag,
    dispatch: Arc<dyn Dispatch>,
    liveness: Arc<Liveness>,
    /// Wakes the bridge's loop when the portal drains this connection, or
    /// when it gets busy, so connections are added at once rather than at
    /// the next tick.
    wake: Arc<Notify>,
    /// Sessions open on this connection (besides control).
    sessions: Arc<AtomicUsize>,
    /// The counters of the portal this connection goes to.
    link: Arc<LinkCounters>,
}

#[async_trait]
impl SessionHandler for BridgeSessions {
    /// `source` is the public visitor a Rayback portal names in the New
    /// (`None` from V2Ray): trusted, since this bridge dialled that portal,
    /// so routing's `source` rules and the access log see the visitor.
    async fn handle(
        &self,
        destination: Destination,
        source: Option<std::net::SocketAddr>,
        stream: Stream,
    ) -> io::Result<()> {
        let is_control = matches!(
            destination.address.domain(),
            Some(CONTROL_DOMAIN_V2RAY | CONTROL_DOMAIN_V2FLY)
        );
        if is_control {
            // Boxed: once per tunnel, and inline it would size every
            // session's future.
            Box::pin(read_control(stream, &self.liveness, &self.wake)).await;
            return Ok(());
        }
        // A burst of sessions wakes the loop so that it adds connections
        // now, not at the next tick.
        let busy = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        if busy > SESSIONS_PER_CONNECTION {
            self.wake.notify_one();
        }
        self.link.sessions.fetch_add(1, Ordering::Relaxed);
        // Counted down when the session ends, or when this future is
        // dropped unfinished.
        let _open = OpenSession(&self.sessions, &self.link.sessions);
        let mut session = Session::new(destination).with_inbound_tag(self.tag.clone());
        session.source = source;
        self.dispatch.dispatch(session, stream).await
    }
}

/// One open session in a tunnel's and its portal's counts.
struct OpenSession<'a>(&'a AtomicUsize, &'a AtomicUsize);

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads control messages until the session ends: each packet is one
/// `Control`. A malformed one is logged and skipped, as V2Ray does.
async fn read_control(mut stream: Stream, liveness: &Liveness, wake: &Notify) {
    let mut packet = Vec::new();
    loop {
        match read_packet(&mut stream, &mut packet).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                tracing::debug!("control session ended: {error}");
                return;
            }
        }
        *liveness.last_control.lock().expect("not poisoned") = Some(Instant::now());
        match Control::decode(&packet) {
            Ok(control) if control.state == State::Drain => {
                tracing::info!("portal drains this tunnel connection");
                liveness.draining.store(true, Ordering::Relaxed);
                wake.notify_one();
            }
            Ok(_) => {}
            Err(error) => tracing::warn!("ignoring a bad control message: {error}"),
        }
    }
}
