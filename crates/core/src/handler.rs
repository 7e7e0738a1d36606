//! The handler traits: how inbounds, the router and outbounds meet.
//!
//! An [`Outbound`] has two shapes (ARCHITECTURE.md): *connect* returns a new
//! stream toward a destination; *handle* carries an inbound stream, by
//! default by connecting and relaying both ways. The portal overrides
//! *handle* to adopt a bridge's stream; the bridge uses *connect* (through
//! [`Dispatch::connect`]) to get its tunnel.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::policy::Policy;
use crate::relay::relay;
use crate::session::Session;
use crate::stream::Stream;

/// Where sessions go: freedom, VMess, blackhole, a portal.
#[async_trait]
pub trait Outbound: Send + Sync + 'static {
    /// Opens a stream toward `session.destination`.
    ///
    /// Cancelling the future abandons the attempt; nothing is left open.
    async fn connect(&self, session: &Session) -> io::Result<Stream>;

    /// Carries `inbound` for `session` until both directions end or a
    /// policy timeout fires. The default connects and relays.
    async fn handle(&self, session: Session, inbound: Stream, policy: &Policy) -> io::Result<()> {
        // The session lives in this block only, so the future keeps no
        // room for it (nor for the connect) while the relay runs: every
        // held connection pays this future's size.
        let outbound = {
            let session = session;
            self.connect(&session).await?
        };
        relay(inbound, outbound, policy).await.map(drop)
    }

    /// The servers `connect` chooses among, named `host:port`, in the
    /// order [`Session::server`](crate::SessionFields::server) indexes them (VMess and VLESS `vnext`).
    /// Empty for an outbound that has no list to pick from.
    fn servers(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The router plus the outbounds it chooses from.
#[async_trait]
pub trait Dispatch: Send + Sync + 'static {
    /// Routes `session` and lets the chosen outbound carry `stream`.
    /// Returns when the session is over.
    async fn dispatch(&self, session: Session, stream: Stream) -> io::Result<()>;

    /// Routes `session` and returns a stream toward its destination
    /// through the chosen outbound.
    async fn connect(&self, session: &Session) -> io::Result<Stream>;

    /// The servers of the outbound `session` is routed to
    /// ([`Outbound::servers`]): a bridge keeps a tunnel to each.
    async fn servers(&self, _session: &Session) -> Vec<String> {
        Vec::new()
    }
}

/// What a running inbound is given.
#[derive(Clone)]
pub struct InboundContext {
    /// Where accepted sessions go.
    pub dispatch: Arc<dyn Dispatch>,
    /// Cancelled when the process stops accepting; the inbound returns.
    pub shutdown: CancellationToken,
    /// Every connection task is spawned here so shutdown can wait for them.
    pub tracker: TaskTracker,
}

/// Runs an inbound connection's `handshake`, then dispatches the stream
/// and session it accepted (logged under `protocol` when the session ends
/// in an error). `None` from the handshake (refused, timed out, shut down)
/// ends the connection; the handshake logged why.
///
/// The handshake comes boxed, and is freed before dispatch: the
/// connection's task lives as long as its session (a bridge's tunnel:
/// days), and an async function keeps room for its parameters as long as
/// it runs, so a handshake passed by value (boxed inside) still cost every
/// tunnel 3.4 KB of task.
pub async fn dispatch_after_handshake<F>(
    handshake: Pin<Box<F>>,
    peer: SocketAddr,
    dispatch: Arc<dyn Dispatch>,
    protocol: &'static str,
) where
    F: Future<Output = Option<(Stream, Session)>> + Send + ?Sized,
{
    let Some((stream, session)) = handshake.await else {
        return;
    };
    // The visitor as the transport saw it (a PROXY header's source).
    let peer = session.source.unwrap_or(peer);
    if let Err(error) = dispatch.dispatch(session, stream).await {
        tracing::debug!(%peer, %error, "{protocol} session ended with an error");
    }
}

/// Pause after a failed `accept` (out of descriptors and the like), so
/// the loop waits rather than spins; the listener itself is still good.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

impl InboundContext {
    /// Accepts on `listener` until shutdown, handing each connection to
    /// `serve` (which spawns its task on [`InboundContext::tracker`]). A
    /// failed accept is logged under `what` and retried after a pause.
    pub async fn accept_each(
        &self,
        listener: &TcpListener,
        what: &str,
        mut serve: impl FnMut(TcpStream, SocketAddr),
    ) {
        loop {
            let accepted = tokio::select! {
                () = self.shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((socket, peer)) => serve(socket, peer),
                Err(error) => {
                    tracing::warn!(%error, "{what}: accept failed");
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            }
        }
    }
}

/// A listener: dokodemo-door, VMess, VLESS, SOCKS, HTTP.
#[async_trait]
pub trait Inbound: Send + Sync + 'static {
    /// Accepts connections until `context.shutdown` is cancelled, handing
    /// each to `context.dispatch` in a task of its own. An error on one
    /// connection never ends the loop; an error returned here means the
    /// listener itself failed.
    async fn run(self: Arc<Self>, context: InboundContext) -> io::Result<()>;
}
