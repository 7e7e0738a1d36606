//! The bridge: dials tunnel connections to the portal and serves the
//! sessions the portal opens on them.
//!
//! One task ([`Bridge::run`]) owns the list of tunnel connections
//! (each a `Tunnel`). It wakes every [`TICK`], when a tunnel dies,
//! and on shutdown; each time it drops tunnels that are no longer active
//! (drained, closed, or silent) and dials one more when there are none or
//! when the sessions per connection exceed
//! [`SESSIONS_PER_CONNECTION`] — V2Ray's
//! rule, so a Rayback bridge grows like a V2Ray one. Failed dials are
//! retried with capped exponential backoff and jitter.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use rayback_core::packet::read_packet;
use rayback_core::{Address, Destination, Dispatch, Session, Stream, Tag};
use rayback_mux::{MuxServer, ServerHandle, ServerSettings, SessionHandler};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::{Control, State};
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
    /// for dead and replaced. 4.34 portals skip a heartbeat with
    /// probability 1/64, so several periods are needed.
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
            max_connections: 16,
            heartbeat_timeout: Duration::from_secs(10),
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
    /// The control state of the tunnel connections now counted.
    live: Mutex<Vec<Arc<Liveness>>>,
    /// Dials attempted over the bridge's life.
    dials: AtomicU64,
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
}

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
        }
    }

    pub fn settings(&self) -> &BridgeSettings {
        &self.settings
    }

    /// Tunnel connections currently active.
    pub fn connections(&self) -> usize {
        self.live.lock().expect("not poisoned").len()
    }

    pub fn status(&self) -> BridgeStatus {
        let live = self.live.lock().expect("not poisoned");
        let since_control = live
            .iter()
            .filter_map(|liveness| *liveness.last_control.lock().expect("not poisoned"))
            .max()
            .map(|last| last.elapsed());
        BridgeStatus {
            connections: live.len(),
            dials: self.dials.load(Ordering::Relaxed),
            since_control,
        }
    }

    fn publish(&self, tunnels: &[Tunnel]) {
        *self.live.lock().expect("not poisoned") = tunnels
            .iter()
            .map(|tunnel| tunnel.liveness.clone())
            .collect();
    }

    /// Keeps tunnel connections up until `shutdown`; then returns, leaving
    /// open sessions to the tracker (they end with their connections).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tunnels: Vec<Tunnel> = Vec::new();
        // Dials that failed, or tunnels that died before the portal ever
        // spoke on them, in a row: they set the backoff.
        let mut failures = 0u32;
        let mut next_dial = Instant::now();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Whether this pass was started by the tick (keepalives go out then).
        let mut ticked = true;
        'serving: loop {
            let timeout = self.settings.heartbeat_timeout;
            let mut died_unheard = false;
            tunnels.retain(|tunnel| {
                if tunnel.is_dead(timeout) {
                    if !tunnel.server.is_closed() {
                        tracing::warn!(bridge = %self.settings.tag, "tunnel connection silent for {timeout:?}; closing it");
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
                failures = failures.saturating_add(1);
                next_dial = Instant::now() + self.backoff(failures);
            } else if tunnels.iter().any(|tunnel| tunnel.last_heard().is_some()) {
                failures = 0;
            }
            self.publish(&tunnels);
            let sessions: usize = tunnels.iter().map(|w| w.server.active_sessions()).sum();
            let wanted = tunnels.is_empty() || sessions / tunnels.len() > SESSIONS_PER_CONNECTION;
            if wanted && tunnels.len() < self.settings.max_connections {
                if Instant::now() < next_dial {
                    tokio::select! {
                        () = tokio::time::sleep_until(next_dial) => {}
                        () = shutdown.cancelled() => break 'serving,
                    }
                    continue;
                }
                let dial = tokio::select! {
                    dial = self.dial() => dial,
                    () = shutdown.cancelled() => break 'serving,
                };
                match dial {
                    Ok(tunnel) => {
                        tunnels.push(tunnel);
                        self.publish(&tunnels);
                        tracing::info!(bridge = %self.settings.tag, connections = tunnels.len(), "tunnel connection up");
                    }
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        let delay = self.backoff(failures);
                        next_dial = Instant::now() + delay;
                        tracing::warn!(bridge = %self.settings.tag, "dialling the portal failed: {error}; retrying in {delay:?}");
                    }
                }
                // Look again at once: under load more may be needed now
                // (V2Ray adds one per 2 s tick; Rayback catches up at once).
                ticked = false;
                continue;
            }
            ticked = tokio::select! {
                _ = tick.tick() => true,
                () = self.tunnel_ended.notified() => false,
                () = shutdown.cancelled() => break 'serving,
            };
        }
        // Stopping: no more dials; tunnels close as their sessions end, and
        // the tracker lets the app's grace period wait for that.
        self.tracker.spawn(Self::close_when_idle(tunnels));
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

    /// Dials one tunnel connection through the router and starts serving
    /// Mux.Cool on it.
    async fn dial(&self) -> io::Result<Tunnel> {
        self.dials.fetch_add(1, Ordering::Relaxed);
        let destination = Destination::tcp(Address::Domain(self.settings.domain.clone()), 0);
        let session = Session::new(destination).with_inbound_tag(self.settings.tag.clone());
        let stream = self.dispatch.connect(&session).await?;
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
        });
        let server = MuxServer::serve_with(stream, handler, self.settings.mux.clone());
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
        })
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
}

#[async_trait]
impl SessionHandler for BridgeSessions {
    async fn handle(&self, destination: Destination, stream: Stream) -> io::Result<()> {
        let is_control = matches!(
            destination.address.domain(),
            Some(CONTROL_DOMAIN_V2RAY | CONTROL_DOMAIN_V2FLY)
        );
        if is_control {
            read_control(stream, &self.liveness, &self.wake).await;
            return Ok(());
        }
        // A burst of sessions wakes the loop so that it adds connections
        // now, not at the next tick.
        let busy = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        if busy > SESSIONS_PER_CONNECTION {
            self.wake.notify_one();
        }
        let session = Session::new(destination).with_inbound_tag(self.tag.clone());
        let result = self.dispatch.dispatch(session, stream).await;
        self.sessions.fetch_sub(1, Ordering::Relaxed);
        result
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
