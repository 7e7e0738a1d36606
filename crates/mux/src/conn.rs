//! One mux connection's shared state and its two driver tasks.
//!
//! Both roles use the same machinery; [`Role`] says which frames a side
//! accepts. Per connection there is
//!
//! * a **reader task**: reads the carrier, decodes frames, copies data into
//!   the receive buffer of the sub-stream it names, waits (up to the stall
//!   timeout) while that buffer is full, and on the server starts a handler
//!   task per `New`;
//! * a **writer task**: takes everything sub-streams have queued as one
//!   batch ([`crate::send`] decides who gets in: control frames first,
//!   then data), writes it to the carrier in one write (two when large
//!   data follows control frames), flushes, and repeats. Buffers swap
//!   places with the queue's, so steady traffic allocates little.
//!
//! Not here: the `AsyncRead`/`AsyncWrite` face of a sub-stream
//! ([`crate::stream`]) and the public handles ([`crate::client`],
//! [`crate::server`]).
//!
//! Lock order: `sessions` → a session's `state` → `send`. No lock is held
//! across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use rayback_core::{Destination, Network, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;

use crate::error::MuxError;
use crate::frame::{FrameCodec, FrameKind, SessionId};
use crate::send::{Push, SendQueue};
use crate::server::SessionHandler;
use crate::settings::MuxSettings;
use crate::stream::MuxStream;

/// Which end of Mux.Cool a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Allocates session IDs and sends `New` (portal, outbound mux).
    Client,
    /// Accepts `New` (bridge, mux inbound).
    Server,
}

/// Bytes the reader asks the carrier for at least.
const READ_CHUNK: usize = 16 * 1024;
/// A connection read buffer this large is freed (not kept) once it drains,
/// so an idle connection holds little memory.
const KEEP_RECEIVE_CAPACITY: usize = 256 * 1024;
/// A send buffer this large is freed once written.
const KEEP_SEND_CAPACITY: usize = 64 * 1024;
/// How long a draining connection may take to shut the carrier down.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One sub-stream's state, shared by its [`MuxStream`] and the reader task.
pub(crate) struct SessionShared {
    pub(crate) id: SessionId,
    pub(crate) network: Network,
    pub(crate) state: Mutex<SessionState>,
}

#[derive(Default)]
pub(crate) struct SessionState {
    /// Received bytes not yet read (packet sessions: core packet framing).
    pub(crate) recv: RecvBuffer,
    /// The peer sent End: reads end after `recv` drains; writes fail
    /// unless it was a half-close.
    pub(crate) remote_ended: bool,
    /// The peer's End had the half-close bit (Rayback peers only): it still
    /// reads, so writes go on until our own End. The session stays in the
    /// connection's map until then.
    pub(crate) remote_half_closed: bool,
    /// An End for this session is queued or sent: writes fail.
    pub(crate) local_ended: bool,
    /// Our End was a half-close and the session is still open: reads go on
    /// until the peer's End; a later abort or drop still owes the peer a
    /// final End (see [`SessionState::take_end`]).
    pub(crate) local_half_closed: bool,
    /// Aborted (End+error, stall, replaced ID): reads and writes fail now.
    pub(crate) reset: Option<io::ErrorKind>,
    /// The carrying connection died: reads fail once `recv` drains.
    pub(crate) lost: bool,
    /// No longer in the connection's map (its ID is free again).
    pub(crate) detached: bool,
    /// The sub-stream's reader, waiting for bytes.
    pub(crate) reader: Option<Waker>,
    /// The connection's reader task, waiting for room in `recv`.
    pub(crate) space: Option<Waker>,
}

impl SessionState {
    /// Marks the session as ended on our side; returns whether an End must
    /// still be sent for it: none was sent yet, or only a half-close that
    /// the peer has not answered with its own End.
    pub(crate) fn take_end(&mut self) -> bool {
        let owed = !self.local_ended || (self.local_half_closed && !self.remote_ended);
        self.local_ended = true;
        self.local_half_closed = false;
        owed
    }
}

pub(crate) struct Sessions {
    pub(crate) map: HashMap<SessionId, Arc<SessionShared>>,
    /// Last allocated ID (client).
    next_id: SessionId,
    pub(crate) closed: bool,
}

pub(crate) struct Connection {
    pub(crate) role: Role,
    pub(crate) config: MuxSettings,
    pub(crate) sessions: Mutex<Sessions>,
    send: Mutex<SendQueue>,
    /// Cancelled when the connection is closed, for any reason.
    pub(crate) closed: CancellationToken,
    /// Sum of every sub-stream's receive buffer.
    pub(crate) recv_buffered: AtomicUsize,
    pub(crate) total_opened: AtomicU64,
    /// Client handles alive; at zero the connection closes once idle.
    pub(crate) handles: AtomicUsize,
    /// Why the connection closed, when it was an error.
    pub(crate) close_error: OnceLock<String>,
    /// Server: most sessions open at once.
    max_sessions: usize,
    /// When the connection was created: the epoch of the two stamps below.
    born: Instant,
    /// While the reader waits on the carrier: when it started waiting, in
    /// nanoseconds since `born`, plus one; 0 while it is not waiting (busy
    /// delivering, which a slow sub-stream can stall for long). A carrier
    /// silent while we listen is a dead one; a stalled reader is not.
    listening_since: AtomicU64,
    /// The last KeepAlive frame from the peer, as above; 0 = never. V2Ray
    /// never sends KeepAlive; a Rayback bridge does, so a portal can tell
    /// its silence from a dead tunnel.
    last_keepalive: AtomicU64,
}

impl Connection {
    pub(crate) fn new(role: Role, config: MuxSettings, max_sessions: usize) -> Arc<Connection> {
        let send = SendQueue::new(config.send_queue, config.frame_data());
        Arc::new(Connection {
            max_sessions,
            role,
            config,
            sessions: Mutex::new(Sessions {
                map: HashMap::new(),
                next_id: 0,
                closed: false,
            }),
            send: Mutex::new(send),
            closed: CancellationToken::new(),
            recv_buffered: AtomicUsize::new(0),
            total_opened: AtomicU64::new(0),
            handles: AtomicUsize::new(0),
            close_error: OnceLock::new(),
            born: Instant::now(),
            listening_since: AtomicU64::new(0),
            last_keepalive: AtomicU64::new(0),
        })
    }

    fn stamp(&self) -> u64 {
        self.born.elapsed().as_nanos() as u64 + 1
    }

    fn since(&self, stamp: u64) -> Option<Duration> {
        (stamp != 0).then(|| {
            self.born
                .elapsed()
                .saturating_sub(Duration::from_nanos(stamp - 1))
        })
    }

    /// How long the reader has been waiting on a silent carrier; `None`
    /// while it is busy or data just came.
    pub(crate) fn silent_for(&self) -> Option<Duration> {
        self.since(self.listening_since.load(Ordering::Relaxed))
    }

    /// Time since the peer's last KeepAlive; `None` if it never sent one.
    pub(crate) fn since_keepalive(&self) -> Option<Duration> {
        self.since(self.last_keepalive.load(Ordering::Relaxed))
    }

    /// Queues a KeepAlive frame (6 bytes; V2Ray reads and ignores it).
    pub(crate) fn queue_keepalive(&self) {
        let writer = {
            let mut send = lock(&self.send);
            send.push_keepalive();
            send.take_writer()
        };
        wake(writer);
    }

    /// Splits the carrier and spawns the reader and writer tasks on the
    /// current runtime.
    pub(crate) fn start(
        self: &Arc<Connection>,
        carrier: Stream,
        handler: Option<Arc<dyn SessionHandler>>,
        idle_timeout: Option<Duration>,
    ) {
        let (read_half, write_half) = tokio::io::split(carrier);
        let conn = Arc::clone(self);
        tokio::spawn(async move {
            let result = tokio::select! {
                result = conn.read_loop(read_half, handler) => result,
                () = conn.closed.cancelled() => Ok(()),
            };
            match result {
                Ok(()) => tracing::debug!("mux connection ended by the peer"),
                Err(error) => {
                    tracing::debug!(%error, "mux connection failed");
                    let _ = conn.close_error.set(error.to_string());
                }
            }
            conn.close();
        });
        let conn = Arc::clone(self);
        tokio::spawn(async move {
            let result = tokio::select! {
                result = conn.write_loop(write_half, idle_timeout) => result,
                () = conn.closed.cancelled() => Ok(()),
            };
            if let Err(error) = result {
                tracing::debug!(%error, "mux connection write failed");
                let _ = conn.close_error.set(error.to_string());
            }
            conn.close();
        });
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    pub(crate) fn active_sessions(&self) -> usize {
        lock(&self.sessions).map.len()
    }

    /// Bytes held for this connection: sub-stream receive buffers plus
    /// frames queued for the carrier.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.recv_buffered.load(Ordering::Relaxed) + lock(&self.send).len()
    }

    /// Closes at once: every sub-stream fails (after handing out bytes it
    /// already received), queued frames are dropped, the carrier is
    /// dropped by the driver tasks.
    pub(crate) fn close(&self) {
        let sessions = {
            let mut sessions = lock(&self.sessions);
            sessions.closed = true;
            std::mem::take(&mut sessions.map)
        };
        for session in sessions.into_values() {
            let mut state = lock(&session.state);
            state.lost = true;
            state.detached = true;
            wake(state.reader.take());
            wake(state.space.take());
        }
        let mut woken = Vec::new();
        lock(&self.send).close(&mut woken);
        woken.into_iter().for_each(Waker::wake);
        self.closed.cancel();
    }

    /// Writes out what is queued, shuts the carrier down and closes.
    fn start_draining(&self) {
        let writer = lock(&self.send).start_draining();
        wake(writer);
    }

    /// Drains if no session is open (checked and decided under one lock, so
    /// a concurrent `open` either sees the connection closed or keeps it).
    fn drain_if_idle(&self) -> bool {
        {
            let mut sessions = lock(&self.sessions);
            if !sessions.map.is_empty() {
                return false;
            }
            sessions.closed = true;
        }
        self.start_draining();
        true
    }

    /// Drains when a client has no handle and no session left.
    pub(crate) fn drain_if_abandoned(&self) {
        if self.role == Role::Client && self.handles.load(Ordering::Acquire) == 0 {
            self.drain_if_idle();
        }
    }

    // -----------------------------------------------------------------------
    // Sessions

    /// Client: allocates an ID, registers the session and queues its New.
    pub(crate) fn open(
        self: &Arc<Connection>,
        destination: &Destination,
        max_concurrency: Option<usize>,
        max_total: Option<u64>,
    ) -> Result<MuxStream, MuxError> {
        if let rayback_core::Address::Domain(domain) = &destination.address {
            if domain.len() > 255 {
                return Err(MuxError::DomainTooLong(domain.len()));
            }
        }
        let mut sessions = lock(&self.sessions);
        if sessions.closed {
            return Err(MuxError::Closed);
        }
        let active = sessions.map.len();
        if max_concurrency.is_some_and(|max| active >= max)
            || max_total.is_some_and(|max| self.total_opened.load(Ordering::Relaxed) >= max)
            || active > u16::MAX as usize
        {
            return Err(MuxError::Full(active));
        }
        // IDs count up from 1 and wrap; one still in use is skipped.
        let mut id = sessions.next_id.wrapping_add(1);
        while sessions.map.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        sessions.next_id = id;
        let session = Arc::new(SessionShared {
            id,
            network: destination.network,
            state: Mutex::new(SessionState::default()),
        });
        sessions.map.insert(id, Arc::clone(&session));
        self.total_opened.fetch_add(1, Ordering::Relaxed);
        let writer = {
            let mut send = lock(&self.send);
            if let Err(error) = send.push_new(id, destination) {
                // Closed, or a domain checked above; nothing was written.
                sessions.map.remove(&id);
                return Err(error);
            }
            send.take_writer()
        };
        drop(sessions);
        wake(writer);
        Ok(MuxStream::new(Arc::clone(self), session))
    }

    /// Forgets `session` if it is still the one registered under its ID.
    pub(crate) fn remove_session(&self, session: &Arc<SessionShared>) {
        let mut sessions = lock(&self.sessions);
        if let Some(current) = sessions.map.get(&session.id) {
            if Arc::ptr_eq(current, session) {
                sessions.map.remove(&session.id);
            }
        }
    }

    // -----------------------------------------------------------------------
    // Sending

    /// Queues an End frame (not subject to the queue bound: it is 6 bytes
    /// and frees resources on both sides). `half_close` sets the
    /// Rayback-only bit (V2Ray ignores it).
    pub(crate) fn queue_end(&self, id: SessionId, error: bool, half_close: bool) {
        let writer = {
            let mut send = lock(&self.send);
            send.push_end(id, error, half_close);
            send.take_writer()
        };
        wake(writer);
    }

    /// Queues up to [`MAX_WRITE`](crate::send::MAX_WRITE) bytes of stream
    /// data for session `id`, as much as its fair share allows, split into
    /// frames of at most `max_frame_data`. `Pending` (waker registered)
    /// while the queue has no room for this session ([`crate::send`]).
    pub(crate) fn poll_send_stream(
        &self,
        waker: &Waker,
        id: SessionId,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut send = lock(&self.send);
        let taken = send.push_stream(id, data);
        self.after_push(send, taken, id, waker)
    }

    /// Queues one datagram as one frame. `Pending` while the queue has no
    /// room for this session.
    pub(crate) fn poll_send_packet(
        &self,
        waker: &Waker,
        id: SessionId,
        packet: &[u8],
    ) -> Poll<io::Result<()>> {
        let mut send = lock(&self.send);
        let taken = send.push_packet(id, packet);
        self.after_push(send, taken, id, waker).map_ok(|_| ())
    }

    /// Wakes the writer after bytes were taken, or registers `waker`.
    fn after_push(
        &self,
        mut send: MutexGuard<'_, SendQueue>,
        push: Push,
        id: SessionId,
        waker: &Waker,
    ) -> Poll<io::Result<usize>> {
        match push {
            Push::Taken(taken) => {
                let writer = send.take_writer();
                drop(send);
                wake(writer);
                Poll::Ready(Ok(taken))
            }
            Push::Full => {
                send.wait(id, waker);
                Poll::Pending
            }
            Push::Closed => Poll::Ready(Err(connection_closed())),
        }
    }

    async fn write_loop(
        &self,
        mut carrier: WriteHalf<Stream>,
        idle_timeout: Option<Duration>,
    ) -> io::Result<()> {
        // Control frames (with small data behind them), then data.
        let mut first = BytesMut::new();
        let mut second = BytesMut::new();
        let mut woken = Vec::new();
        let idle_check = idle_timeout.filter(|_| self.role == Role::Client);
        let mut tick = pin!(tokio::time::sleep(
            idle_check.unwrap_or(Duration::from_secs(86400))
        ));
        loop {
            let next = poll_fn(|cx| {
                let mut send = lock(&self.send);
                if send.take(&mut first, &mut second, &mut woken) {
                    drop(send);
                    woken.drain(..).for_each(Waker::wake);
                    return Poll::Ready(Some(()));
                }
                if send.is_closed() || send.is_draining() {
                    return Poll::Ready(None);
                }
                send.wait_writer(cx.waker());
                Poll::Pending
            });
            tokio::select! {
                next = next => {
                    if next.is_none() {
                        break;
                    }
                    carrier.write_all(&first).await?;
                    if !second.is_empty() {
                        carrier.write_all(&second).await?;
                    }
                    carrier.flush().await?;
                    for buffer in [&mut first, &mut second] {
                        if buffer.capacity() > KEEP_SEND_CAPACITY {
                            *buffer = BytesMut::new();
                        } else {
                            buffer.clear();
                        }
                    }
                }
                () = &mut tick, if idle_check.is_some() => {
                    if self.drain_if_idle() {
                        tracing::debug!("mux client idle, closing");
                    }
                    if let Some(period) = idle_check {
                        tick.as_mut().reset(tokio::time::Instant::now() + period);
                    }
                }
            }
        }
        if lock(&self.send).is_draining() {
            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, carrier.shutdown()).await;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Receiving

    async fn read_loop(
        self: &Arc<Connection>,
        mut carrier: ReadHalf<Stream>,
        handler: Option<Arc<dyn SessionHandler>>,
    ) -> Result<(), MuxError> {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut codec = FrameCodec::new();
        loop {
            while let Some(frame) = codec.decode_frame(&mut buf)? {
                self.wait_for_control_room().await;
                let id = frame.session_id;
                match frame.kind {
                    FrameKind::New(destination) => match (&handler, self.role) {
                        (Some(handler), Role::Server) => {
                            self.accept(id, destination, frame.data, handler).await
                        }
                        // A client ignores New (V2Ray discards its data).
                        _ => tracing::debug!(id, "ignoring new frame sent to a mux client"),
                    },
                    FrameKind::Keep => {
                        if let Some(data) = frame.data {
                            self.receive(id, data).await;
                        }
                    }
                    FrameKind::End { error, half_close } => self.remote_end(id, error, half_close),
                    FrameKind::KeepAlive => {
                        self.last_keepalive.store(self.stamp(), Ordering::Relaxed);
                    }
                }
            }
            if buf.is_empty() && buf.capacity() > KEEP_RECEIVE_CAPACITY {
                // A large frame grew the buffer; do not keep that while idle.
                buf = BytesMut::with_capacity(READ_CHUNK);
            } else if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            self.listening_since.store(self.stamp(), Ordering::Relaxed);
            let read = carrier.read_buf(&mut buf).await;
            self.listening_since.store(0, Ordering::Relaxed);
            if read? == 0 {
                if !buf.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "mux connection ended inside a frame",
                    )
                    .into());
                }
                return Ok(());
            }
        }
    }

    /// Waits while the answers queued since the writer's last take are
    /// over [`ANSWER_SLACK`](crate::send::ANSWER_SLACK) (see there), so frames the next decoded frame
    /// may provoke cannot pile up without bound.
    async fn wait_for_control_room(&self) {
        poll_fn(|cx| {
            let mut send = lock(&self.send);
            if !send.answers_full() {
                return Poll::Ready(());
            }
            send.wait_reader(cx.waker());
            Poll::Pending
        })
        .await;
    }

    /// Server: a New frame.
    async fn accept(
        self: &Arc<Connection>,
        id: SessionId,
        destination: Destination,
        data: Option<Bytes>,
        handler: &Arc<dyn SessionHandler>,
    ) {
        let session = Arc::new(SessionShared {
            id,
            network: destination.network,
            state: Mutex::new(SessionState::default()),
        });
        let replaced = {
            let mut sessions = lock(&self.sessions);
            if sessions.closed {
                return;
            }
            if sessions.map.len() >= self.max_sessions && !sessions.map.contains_key(&id) {
                drop(sessions);
                tracing::debug!(id, %destination, "refusing mux session over the limit");
                self.queue_end(id, true, false);
                return;
            }
            self.total_opened.fetch_add(1, Ordering::Relaxed);
            sessions.map.insert(id, Arc::clone(&session))
        };
        if let Some(old) = replaced {
            // The peer reused a live ID: V2Ray silently replaces the old
            // session; we end the old sub-stream locally, without an End
            // on the wire (that would close the new one).
            self.abort_local(&old, io::ErrorKind::ConnectionReset);
        }
        tracing::debug!(id, %destination, "mux session opened by the peer");
        let stream: Stream = Box::new(MuxStream::new(Arc::clone(self), Arc::clone(&session)));
        let handler = Arc::clone(handler);
        tokio::spawn(async move {
            if let Err(error) = handler.handle(destination, stream).await {
                tracing::debug!(id, %error, "mux session handler failed");
            }
        });
        if let Some(data) = data {
            self.deliver(&session, data).await;
        }
    }

    /// Keep with data.
    async fn receive(&self, id: SessionId, data: Bytes) {
        let session = lock(&self.sessions).map.get(&id).cloned();
        match session {
            Some(session) => self.deliver(&session, data).await,
            None => {
                // V2Ray: unknown ID → End (option 0), data discarded.
                tracing::trace!(id, "data for an unknown mux session");
                self.queue_end(id, false, false);
            }
        }
    }

    /// Puts `data` into the session's receive buffer, waiting while it is
    /// full; ends the session with End+error after the stall timeout.
    async fn deliver(&self, session: &Arc<SessionShared>, data: Bytes) {
        if session.network == Network::Tcp && data.is_empty() {
            return;
        }
        let push = poll_fn(|cx| {
            let mut state = lock(&session.state);
            // After the peer's half-close nothing more may come; drop it.
            if state.detached || state.reset.is_some() || state.lost || state.remote_ended {
                return Poll::Ready(());
            }
            let framed = data.len()
                + if session.network == Network::Udp {
                    2
                } else {
                    0
                };
            if state.recv.is_empty() || state.recv.len() + framed <= self.config.receive_buffer {
                if session.network == Network::Udp {
                    let framing = (data.len() as u16).to_be_bytes();
                    state.recv.push(Bytes::copy_from_slice(&framing));
                }
                state.recv.push(data.clone());
                self.recv_buffered.fetch_add(framed, Ordering::Relaxed);
                wake(state.reader.take());
                return Poll::Ready(());
            }
            state.space = Some(cx.waker().clone());
            Poll::Pending
        });
        let mut push = pin!(push);
        // The fast path needs no timer.
        if poll_fn(|cx| Poll::Ready(push.as_mut().poll(cx).is_ready())).await {
            return;
        }
        if tokio::time::timeout(self.config.stall_timeout, push)
            .await
            .is_err()
        {
            tracing::warn!(
                id = session.id,
                timeout = ?self.config.stall_timeout,
                "mux sub-stream stalled with a full buffer, ending it"
            );
            self.remove_session(session);
            let send_end = self.abort_local(session, io::ErrorKind::TimedOut);
            if send_end {
                self.queue_end(session.id, true, false);
            }
        }
    }

    /// End received. A half-close (bit `80`, without the error bit) on a
    /// session we still write to only ends its receive direction; any
    /// other End closes the session.
    fn remote_end(&self, id: SessionId, error: bool, half_close: bool) {
        let reply = {
            let mut sessions = lock(&self.sessions);
            let Some(session) = sessions.map.get(&id).cloned() else {
                return;
            };
            let mut state = lock(&session.state);
            state.remote_ended = true;
            wake(state.reader.take());
            wake(state.space.take());
            if half_close && !error && !state.local_ended {
                // The peer is done writing and still reads: EOF for our
                // reader once `recv` drains; our writes go on, and our own
                // End (when our writer shuts down or the sub-stream is
                // dropped) completes the close.
                state.remote_half_closed = true;
                return;
            }
            sessions.map.remove(&id);
            state.detached = true;
            state.local_half_closed = false;
            if error {
                state.reset = Some(io::ErrorKind::ConnectionReset);
                self.recv_buffered
                    .fetch_sub(state.recv.len(), Ordering::Relaxed);
                state.recv = RecvBuffer::default();
            }
            !std::mem::replace(&mut state.local_ended, true)
        };
        // Normally each side sends one End: answer one we have not sent.
        if reply {
            self.queue_end(id, error, false);
        }
        self.drain_if_abandoned();
    }

    /// Fails a sub-stream now (buffered bytes dropped). Returns whether an
    /// End still has to be sent for it.
    fn abort_local(&self, session: &Arc<SessionShared>, kind: io::ErrorKind) -> bool {
        let mut state = lock(&session.state);
        state.detached = true;
        state.reset = Some(kind);
        self.recv_buffered
            .fetch_sub(state.recv.len(), Ordering::Relaxed);
        state.recv = RecvBuffer::default();
        wake(state.reader.take());
        wake(state.space.take());
        state.take_end()
    }

    /// Reads buffered bytes of `session` into `out`; updates the gauge,
    /// frees a large drained buffer and wakes a waiting connection reader.
    pub(crate) fn take_received(&self, state: &mut SessionState, out: &mut tokio::io::ReadBuf<'_>) {
        let n = state.recv.pop_into(out);
        self.recv_buffered.fetch_sub(n, Ordering::Relaxed);
        if state.recv.len() < self.config.receive_buffer {
            wake(state.space.take());
        }
    }

    /// Drops a sub-stream's buffered bytes (its handle is gone).
    pub(crate) fn discard_received(&self, state: &mut SessionState) {
        self.recv_buffered
            .fetch_sub(state.recv.len(), Ordering::Relaxed);
        state.recv = RecvBuffer::default();
        wake(state.space.take());
    }
}

/// A sub-stream's received bytes: a FIFO of frame data.
///
/// Frames of at least [`ZERO_COPY_MIN`] bytes are kept as the `Bytes` the
/// decoder split off the connection's read buffer, so bulk data is copied
/// once less on its way to the reader; smaller ones are copied into a
/// right-sized allocation, so that a few stored bytes never pin a whole
/// read block. An empty buffer holds no allocation, so an idle sub-stream
/// costs no memory.
#[derive(Default)]
pub(crate) struct RecvBuffer {
    chunks: VecDeque<Bytes>,
    len: usize,
}

/// Frames this large are queued without a copy (see [`RecvBuffer`]).
const ZERO_COPY_MIN: usize = 8 * 1024;

impl RecvBuffer {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if bytes.len() >= ZERO_COPY_MIN {
            self.chunks.push_back(bytes);
        } else {
            self.chunks.push_back(Bytes::copy_from_slice(&bytes));
        }
    }

    /// Moves as many bytes as fit into `out`; returns how many.
    fn pop_into(&mut self, out: &mut tokio::io::ReadBuf<'_>) -> usize {
        let mut moved = 0;
        while out.remaining() > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let n = front.len().min(out.remaining());
            out.put_slice(&front[..n]);
            moved += n;
            if n == front.len() {
                self.chunks.pop_front();
            } else {
                front.advance(n);
            }
        }
        self.len -= moved;
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
        }
        moved
    }
}

pub(crate) fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

pub(crate) fn connection_closed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "mux connection closed")
}
