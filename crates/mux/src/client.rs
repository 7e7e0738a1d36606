//! The mux client: the side that opens sessions (sends `New`). The portal
//! drives one per bridge connection; [`crate::MuxOutbound`] drives a pool.
//!
//! Not here: choosing among clients (the portal's picker, the outbound
//! pool) — only the introspection they need.
//!
//! # When the `New` frame goes out
//!
//! V2Ray 4.34 holds a new session's `New` up to 100 ms waiting for the
//! first data, so that data rides in it. Rayback queues the `New` at once,
//! and if the session's first data is written before the writer task has
//! taken the `New` off the queue, the data is merged into it (the same bytes
//! V2Ray would send). Why: the far end starts dialing the target as soon
//! as the `New` arrives, so the dial overlaps the client's first bytes, and
//! a server-speaks-first protocol (SSH, SMTP) gets its greeting without a
//! 100 ms penalty. The cost, when the first data comes later, is one
//! data-less `New` (12–40 bytes), which V2Ray itself sends on its timeout.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rayback_core::{Destination, Stream};

use crate::conn::{Connection, Role};
use crate::engine::Load;
use crate::error::MuxError;
use crate::settings::ClientSettings;
use crate::stream::MuxStream;

/// A handle to one client connection. Cheap to clone; the connection's
/// tasks run on the tokio runtime that was current at [`MuxClient::new`].
///
/// Dropping the last handle does not cut open sub-streams: the connection
/// takes no new session and closes once the last one ends.
pub struct MuxClient {
    conn: Arc<Connection>,
    config: Arc<ClientSettings>,
}

impl MuxClient {
    /// Starts a client over `stream` (the carrier: a VMess body, a TCP
    /// socket). Must be called within a tokio runtime.
    pub fn new(stream: Stream, config: ClientSettings) -> MuxClient {
        let conn = Connection::new(Role::Client, config.mux.clone(), usize::MAX);
        conn.with(|engine| engine.add_handle());
        conn.start(stream, None, config.idle_timeout);
        MuxClient {
            conn,
            config: Arc::new(config),
        }
    }

    /// Opens a sub-stream toward `destination`. A UDP destination gives a
    /// packet stream (core packet framing, one datagram per frame). Fails
    /// with [`MuxError::Closed`] on a closed connection and
    /// [`MuxError::Full`] when a session limit is reached.
    pub async fn open(&self, destination: Destination) -> Result<Stream, MuxError> {
        Ok(Box::new(self.open_stream(&destination)?))
    }

    /// [`MuxClient::open`] for a public visitor at `source`: its New names
    /// the source (the Rayback extension) when the client was made with
    /// [`ClientSettings::send_source`], and is an ordinary New otherwise.
    pub async fn open_from(
        &self,
        destination: Destination,
        source: Option<SocketAddr>,
    ) -> Result<Stream, MuxError> {
        Ok(Box::new(
            self.open_stream_from(&destination, source.as_ref())?,
        ))
    }

    /// [`MuxClient::open`] without boxing or awaiting.
    pub fn open_stream(&self, destination: &Destination) -> Result<MuxStream, MuxError> {
        self.open_stream_from(destination, None)
    }

    /// [`MuxClient::open_from`] without boxing or awaiting.
    pub fn open_stream_from(
        &self,
        destination: &Destination,
        source: Option<&SocketAddr>,
    ) -> Result<MuxStream, MuxError> {
        let (max_concurrency, max_total) = (self.config.max_concurrency, self.config.max_total);
        let source = source.filter(|_| self.config.send_source);
        let (key, id) = self.conn.with(|engine| {
            let key = engine.open_from(destination, source, max_concurrency, max_total)?;
            Ok::<_, MuxError>((key, engine.session_id(key)))
        })?;
        Ok(MuxStream::new(
            Arc::clone(&self.conn),
            key,
            id,
            destination.network,
        ))
    }

    /// Sessions open now (the portal's control session included).
    pub fn active_sessions(&self) -> usize {
        self.conn.with(|engine| engine.active_sessions())
    }

    /// Sessions opened over the connection's life.
    pub fn total_opened(&self) -> u64 {
        self.conn.with(|engine| engine.total_opened())
    }

    /// True when no session can be opened now: closed, or at a limit.
    pub fn is_full(&self) -> bool {
        self.is_closed()
            || self
                .config
                .max_concurrency
                .is_some_and(|max| self.active_sessions() >= max)
            || self
                .config
                .max_total
                .is_some_and(|max| self.total_opened() >= max)
    }

    pub fn is_closed(&self) -> bool {
        self.conn.is_refusing()
    }

    /// Resolves once the connection is closed (by the peer, an error, idle
    /// or [`MuxClient::close`]). Cancel-safe.
    pub async fn closed(&self) {
        self.conn.closed.cancelled().await;
    }

    /// Closes the connection now: every sub-stream on it fails.
    pub fn close(&self) {
        self.conn.close();
    }

    /// Bytes buffered for this connection: sub-stream receive buffers plus
    /// frames waiting for the carrier.
    /// How long the reader has been waiting on a carrier that sends
    /// nothing; `None` while bytes flow or the reader is busy delivering
    /// (a slow sub-stream is back-pressure, not death).
    pub fn silent_for(&self) -> Option<std::time::Duration> {
        self.conn.silent_for()
    }

    /// Time since the peer's last KeepAlive frame; `None` when it never
    /// sent one (V2Ray never does).
    pub fn since_keepalive(&self) -> Option<std::time::Duration> {
        self.conn
            .with(|engine| engine.since_keepalive(crate::conn::now()))
    }

    /// Sessions, buffered bytes, KeepAlive and carrier silence as of `now`
    /// (`std::time::Instant::now()`), read under one lock and without a
    /// clock read: what a picker weighing many connections asks of each.
    pub fn load(&self, now: std::time::Instant) -> Load {
        self.conn.load(now)
    }

    pub fn buffered_bytes(&self) -> usize {
        self.conn.with(|engine| engine.buffered_bytes())
    }

    /// Whether the server answered this client's offer of per-stream flow
    /// control ([`crate::MuxSettings::offer_flow_control`]).
    pub fn flow_control(&self) -> bool {
        self.conn.with(|engine| engine.flow_control())
    }

    /// Why the connection closed, when an error closed it.
    pub fn close_error(&self) -> Option<io::Error> {
        self.conn.close_error()
    }
}

impl Clone for MuxClient {
    fn clone(&self) -> MuxClient {
        self.conn.with(|engine| engine.add_handle());
        MuxClient {
            conn: Arc::clone(&self.conn),
            config: Arc::clone(&self.config),
        }
    }
}

impl Drop for MuxClient {
    fn drop(&mut self) {
        self.conn.with(|engine| engine.drop_handle());
    }
}

impl std::fmt::Debug for MuxClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxClient")
            .field("active_sessions", &self.active_sessions())
            .field("total_opened", &self.total_opened())
            .field("closed", &self.is_closed())
            .finish()
    }
}
