//! The mux server: the side that accepts sessions (receives `New`). The
//! bridge runs one per tunnel connection; [`serve_mux`] runs one for a
//! session whose destination is `v1.mux.cool`.
//!
//! Each `New` becomes a sub-stream handed to a [`SessionHandler`] in a task
//! of its own. Not here: routing (the handler does it) or the bridge's
//! scaling rule (it reads [`ServerHandle::active_sessions`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use rayback_core::{Address, Destination, Dispatch, Session, Stream};

use crate::conn::{Accept, Connection, Role};
pub use crate::handler::SessionHandler;
use crate::settings::ServerSettings;
use crate::stream::MuxStream;

/// The domain a connection is addressed to when its payload is Mux.Cool
/// (outbound mux, VMess command 0x03).
pub const MUX_COOL_DOMAIN: &str = "v1.mux.cool";

/// The port V2Ray 4.34 puts on the outbound mux carrier's destination. The
/// server side ignores the port.
pub const MUX_COOL_PORT: u16 = 9527;

/// True when `destination` names a Mux.Cool carrier (domain equality, any
/// port, as V2Ray checks it).
pub fn is_mux_cool(destination: &Destination) -> bool {
    destination.address.domain() == Some(MUX_COOL_DOMAIN)
}

/// The destination of an outbound mux carrier: TCP `v1.mux.cool:9527`.
pub fn mux_cool_destination() -> Destination {
    Destination::tcp(Address::Domain(MUX_COOL_DOMAIN.to_owned()), MUX_COOL_PORT)
}

/// Starts mux servers.
pub struct MuxServer;

impl MuxServer {
    /// Serves `stream` with default settings. Must be called within a tokio
    /// runtime; the connection's tasks run there.
    pub fn serve(stream: Stream, handler: Arc<dyn SessionHandler>) -> ServerHandle {
        MuxServer::serve_with(stream, handler, ServerSettings::default())
    }

    pub fn serve_with(
        stream: Stream,
        handler: Arc<dyn SessionHandler>,
        config: ServerSettings,
    ) -> ServerHandle {
        let conn = Connection::new(Role::Server, config.mux, config.max_sessions);
        let accept: Accept = Box::new(move |conn, key, id, destination, source| {
            let stream = MuxStream::new(Arc::clone(conn), key, id, destination.network);
            tracing::debug!(id, %destination, ?source, "mux session opened by the peer");
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                if let Err(error) = handler.handle(destination, source, Box::new(stream)).await {
                    tracing::debug!(id, %error, "mux session handler failed");
                }
            });
        });
        conn.start(stream, Some(accept), None);
        ServerHandle { conn }
    }
}

/// A handle to one server connection. Cheap to clone. Dropping it does not
/// stop the server (its lifetime is the carrier's, as in V2Ray: the peer
/// decides); call [`ServerHandle::close`] to stop it.
#[derive(Clone)]
pub struct ServerHandle {
    conn: Arc<Connection>,
}

impl ServerHandle {
    /// Sessions open now (a bridge's control session included): the
    /// bridge's scaling rule counts these.
    pub fn active_sessions(&self) -> usize {
        self.conn.with(|engine| engine.active_sessions())
    }

    /// Sessions the peer opened over the connection's life.
    pub fn total_sessions(&self) -> u64 {
        self.conn.with(|engine| engine.total_opened())
    }

    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Resolves once the connection is closed. Cancel-safe.
    pub async fn closed(&self) {
        self.conn.closed.cancelled().await;
    }

    /// Closes the connection now: every sub-stream on it fails.
    pub fn close(&self) {
        self.conn.close();
    }

    /// Bytes buffered for this connection (see [`crate::MuxClient::buffered_bytes`]).
    /// How long the connection has been waiting on a silent carrier (see
    /// [`crate::MuxClient::silent_for`]).
    pub fn silent_for(&self) -> Option<std::time::Duration> {
        self.conn.silent_for()
    }

    /// Sends a KeepAlive frame: a sign of life for a Rayback peer; V2Ray
    /// reads and ignores it.
    pub fn send_keepalive(&self) {
        self.conn.with(|engine| engine.queue_keepalive());
    }

    pub fn buffered_bytes(&self) -> usize {
        self.conn.with(|engine| engine.buffered_bytes())
    }

    /// Why the connection closed, when an error (a bad frame, a failed
    /// read or write) closed it.
    pub fn close_error(&self) -> Option<io::Error> {
        self.conn.close_error()
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("active_sessions", &self.active_sessions())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Routes every sub-stream of a mux inbound through the dispatcher.
struct DispatchHandler {
    template: Session,
    dispatch: Arc<dyn Dispatch>,
}

#[async_trait]
impl SessionHandler for DispatchHandler {
    /// The source a New names is ignored: a mux inbound's client is
    /// anyone, so its sessions keep the carrier's own source.
    async fn handle(
        &self,
        destination: Destination,
        _source: Option<SocketAddr>,
        stream: Stream,
    ) -> io::Result<()> {
        self.dispatch
            .dispatch(self.template.redirected(destination), stream)
            .await
    }
}

/// Serves Mux.Cool on `stream`, a session addressed to `v1.mux.cool`: each
/// sub-stream is dispatched as `session.redirected(its destination)`, so it
/// keeps the carrier's inbound tag, source and user. Returns when the
/// connection ends; an error says why it failed.
///
/// Cancelling the future closes the connection and its sub-streams.
/// Unlike V2Ray, a failed dispatch fails only its own sub-stream, not the
/// whole connection.
pub async fn serve_mux(
    stream: Stream,
    session: Session,
    dispatch: Arc<dyn Dispatch>,
) -> io::Result<()> {
    serve_mux_with(stream, session, dispatch, ServerSettings::default()).await
}

/// [`serve_mux`] with explicit settings.
pub async fn serve_mux_with(
    stream: Stream,
    session: Session,
    dispatch: Arc<dyn Dispatch>,
    config: ServerSettings,
) -> io::Result<()> {
    let handler = Arc::new(DispatchHandler {
        template: session,
        dispatch,
    });
    let handle = MuxServer::serve_with(stream, handler, config);
    let guard = CloseOnDrop(handle);
    guard.0.closed().await;
    match guard.0.close_error() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

struct CloseOnDrop(ServerHandle);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}
