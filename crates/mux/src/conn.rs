//! The driver of one mux connection: the [`Engine`] behind a mutex and the
//! two tasks that move its bytes.
//!
//! * The **reader task** reads the carrier, decodes frames, hands each to
//!   the engine, spawns the session handler of an accepted sub-stream
//!   (server), and delivers data, waiting while the sub-stream's buffer is
//!   full until the engine's stall deadline passes.
//! * The **writer task** takes each batch the engine's send queue hands
//!   out, writes it to the carrier (one write; two when large data follows
//!   control frames), flushes, and repeats. Buffers swap places with the
//!   queue's, so steady traffic allocates little.
//!
//! Every decision is the engine's; this module only does IO, waits and
//! wakes. Wakers the engine collects are woken after the lock is let go.
//!
//! Not here: the sub-stream handle ([`crate::stream`]) and the public
//! handles ([`crate::client`], [`crate::server`]).

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rayback_core::{Destination, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;

pub(crate) use crate::engine::Role;
use crate::engine::{Engine, Incoming, Key, Load, Transmit, Wakes};
use crate::error::MuxError;
use crate::frame::{FrameCodec, SessionId};
use crate::settings::MuxSettings;

/// Bytes the reader asks the carrier for at least while data flows: a
/// whole VMess chunk with its length field (65,537 bytes) fits, so a VMess
/// carrier opens large chunks straight into this buffer (one pass: see
/// `VmessStream`) and the sub-streams get slices of the opened chunk.
/// Under glibc's 128 KiB mmap threshold even with a partial frame kept.
const READ_CHUNK: usize = 66 * 1024;
/// Bytes it asks for while the connection is quiet (its last read was
/// smaller than this, and everything read has been handed on): a portal
/// holding a thousand idle tunnels keeps 1 KiB for each, not 16. A read
/// that fills it brings the buffer back to [`READ_CHUNK`].
const QUIET_READ_CHUNK: usize = 1024;
/// Bytes of a cut frame the reader moves to a new buffer just to offer
/// the carrier room for a whole chunk; with more pending it waits until
/// the room runs low, as a frame this long would be copied again.
const SMALL_CARRY: usize = 4 * 1024;
/// A connection read buffer this large is freed (not kept) once it drains,
/// so an idle connection holds little memory.
const KEEP_RECEIVE_CAPACITY: usize = 256 * 1024;
/// A send buffer this large is freed once written.
const KEEP_SEND_CAPACITY: usize = 64 * 1024;
/// How long a draining connection may take to shut the carrier down.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes of whole frames the writer hands the carrier as one piece:
/// what one VMess chunk carries even with the most padding (65,456), so a
/// VMess carrier seals each piece as one chunk and the peer's reader finds
/// whole frames in each chunk it opens, with no frame cut in two to copy
/// while it waits for the rest. A larger frame is a piece of its own.
const CARRIER_PIECE: usize = 65_456;

/// Writes `batch` (whole frames) to the carrier in pieces of whole frames
/// of at most [`CARRIER_PIECE`] bytes, several pieces per vectored write.
/// A carrier without vectored writes takes the first piece of each call;
/// the bytes and their order are the same either way.
async fn write_runs(carrier: &mut WriteHalf<Stream>, batch: &[u8]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = frame_pieces(batch).into_iter().map(IoSlice::new).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let written = carrier.write_vectored(rest).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, written);
    }
    Ok(())
}

/// `batch` cut at frame boundaries into pieces of at most
/// [`CARRIER_PIECE`] bytes (a larger frame is a piece of its own).
fn frame_pieces(batch: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut at = 0;
    while at < batch.len() {
        let len = crate::frame::wire_len(&batch[at..]).unwrap_or(batch.len() - at);
        if at > start && at + len - start > CARRIER_PIECE {
            pieces.push(&batch[start..at]);
            start = at;
        }
        at = (at + len).min(batch.len());
    }
    if start < batch.len() {
        pieces.push(&batch[start..]);
    }
    pieces
}

/// Now, on tokio's clock (which tests may pause), as the engine's
/// `Instant`.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Server: what the reader does with a sub-stream the peer opened (the
/// server wraps it in a handle and runs its session handler), so that this
/// driver knows neither.
pub(crate) type Accept =
    Box<dyn Fn(&Arc<Connection>, Key, SessionId, Destination, Option<SocketAddr>) + Send + Sync>;

/// One connection: its engine, and what the tasks share besides.
pub(crate) struct Connection {
    engine: Mutex<Engine>,
    /// Cancelled when the connection is closed, for any reason.
    pub(crate) closed: CancellationToken,
    /// Why the connection closed, when it was an error.
    close_error: OnceLock<String>,
    /// When the connection was created: the epoch of `listening_since`.
    born: Instant,
    /// While the reader waits on the carrier: when it started waiting, in
    /// nanoseconds since `born`, plus one; 0 while it is not waiting (busy
    /// delivering, which a slow sub-stream can stall for long). A carrier
    /// silent while we listen is a dead one; a stalled reader is not.
    listening_since: AtomicU64,
}

impl Connection {
    pub(crate) fn new(role: Role, settings: MuxSettings, max_sessions: usize) -> Arc<Connection> {
        Arc::new(Connection {
            engine: Mutex::new(Engine::new(role, settings, max_sessions)),
            closed: CancellationToken::new(),
            close_error: OnceLock::new(),
            born: Instant::now(),
            listening_since: AtomicU64::new(0),
        })
    }

    /// Runs `f` on the engine, then wakes whoever it made ready.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        let mut engine = lock(&self.engine);
        let result = f(&mut engine);
        if !engine.has_wakes() {
            return result;
        }
        let mut wakes = Wakes::default();
        engine.move_wakes(&mut wakes);
        drop(engine);
        wakes.wake_all();
        result
    }

    /// Splits the carrier and spawns the reader and writer tasks on the
    /// current runtime.
    pub(crate) fn start(
        self: &Arc<Connection>,
        carrier: Stream,
        accept: Option<Accept>,
        idle_timeout: Option<Duration>,
    ) {
        let (read_half, write_half) = tokio::io::split(carrier);
        let conn = Arc::clone(self);
        tokio::spawn(async move {
            let result = tokio::select! {
                result = conn.read_loop(read_half, accept) => result,
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

    /// Closed, or taking no new sub-streams.
    pub(crate) fn is_refusing(&self) -> bool {
        self.is_closed() || self.with(|engine| engine.is_refusing())
    }

    /// Closes at once: every sub-stream fails (after handing out bytes it
    /// already received), queued frames are dropped, the carrier is
    /// dropped by the driver tasks.
    pub(crate) fn close(&self) {
        self.with(Engine::close);
        self.closed.cancel();
    }

    /// Why the connection closed, if an error closed it.
    pub(crate) fn close_error(&self) -> Option<io::Error> {
        self.close_error
            .get()
            .map(|message| io::Error::new(io::ErrorKind::ConnectionAborted, message.clone()))
    }

    /// How long the reader has been waiting on a silent carrier; `None`
    /// while it is busy or data just came.
    pub(crate) fn silent_for(&self) -> Option<Duration> {
        self.silent_at(Instant::now())
    }

    /// [`Connection::silent_for`] as of `now`.
    pub(crate) fn silent_at(&self, now: Instant) -> Option<Duration> {
        let stamp = self.listening_since.load(Ordering::Relaxed);
        (stamp != 0).then(|| {
            now.saturating_duration_since(self.born)
                .saturating_sub(Duration::from_nanos(stamp - 1))
        })
    }

    /// The engine's [`Load`] and the carrier's silence, both as of `now`,
    /// under one lock and without reading the clock.
    pub(crate) fn load(&self, now: Instant) -> Load {
        let silent_for = self.silent_at(now);
        self.with(|engine| Load {
            refusing: engine.is_refusing(),
            active_sessions: engine.active_sessions(),
            buffered_bytes: engine.buffered_bytes(),
            since_keepalive: engine.since_keepalive(now),
            silent_for,
        })
    }

    fn stamp(&self) -> u64 {
        self.born.elapsed().as_nanos() as u64 + 1
    }

    async fn write_loop(
        &self,
        mut carrier: WriteHalf<Stream>,
        idle_timeout: Option<Duration>,
    ) -> io::Result<()> {
        // Control frames (with small data behind them), then data.
        let mut first = BytesMut::new();
        let mut second = BytesMut::new();
        let mut tick = pin!(tokio::time::sleep(
            idle_timeout.unwrap_or(Duration::from_secs(86400))
        ));
        loop {
            let next = poll_fn(|cx| {
                match self.with(|engine| engine.poll_transmit(&mut first, &mut second, cx.waker()))
                {
                    Transmit::Idle => Poll::Pending,
                    other => Poll::Ready(other),
                }
            });
            tokio::select! {
                next = next => {
                    match next {
                        Transmit::Write => {}
                        Transmit::Shutdown => {
                            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, carrier.shutdown()).await;
                            return Ok(());
                        }
                        Transmit::Closed | Transmit::Idle => return Ok(()),
                    }
                    write_runs(&mut carrier, &first).await?;
                    if !second.is_empty() {
                        write_runs(&mut carrier, &second).await?;
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
                () = &mut tick, if idle_timeout.is_some() => {
                    if self.with(Engine::drain_if_idle) {
                        tracing::debug!("mux client idle, closing");
                    }
                    if let Some(period) = idle_timeout {
                        tick.as_mut().reset(tokio::time::Instant::now() + period);
                    }
                }
            }
        }
    }

    async fn read_loop(
        self: &Arc<Connection>,
        mut carrier: ReadHalf<Stream>,
        accept: Option<Accept>,
    ) -> Result<(), MuxError> {
        let mut buf = BytesMut::with_capacity(QUIET_READ_CHUNK);
        let mut last_read = 0;
        let mut codec = FrameCodec::new();
        // The engine's clock: read once per carrier read (a clock read per
        // frame is a measurable share of a short sub-stream's cost), and
        // again after any wait, so a stall deadline never starts early.
        let mut arrived = now();
        loop {
            while let Some(frame) = codec.decode_frame(&mut buf)? {
                // Frames the next one may provoke (End, replies) must not
                // pile up without bound while the writer is behind.
                let mut waited = false;
                poll_fn(|cx| {
                    let room = self.with(|engine| engine.poll_read_room(cx.waker()));
                    waited |= room.is_pending();
                    room
                })
                .await;
                if waited {
                    arrived = now();
                }
                let id = frame.session_id;
                match self.with(|engine| engine.handle_frame(frame, arrived)) {
                    Incoming::Done => {}
                    Incoming::Accepted {
                        key,
                        destination,
                        source,
                        data,
                    } => {
                        match &accept {
                            Some(accept) => accept(self, key, id, destination, source),
                            // Only a server accepts; without a handler the
                            // sub-stream has no handle and is released.
                            None => self.with(|engine| engine.release(key)),
                        }
                        if let Some(data) = data {
                            if self.deliver(key, data, arrived).await {
                                arrived = now();
                            }
                        }
                    }
                    Incoming::Data { key, data } => {
                        if self.deliver(key, data, arrived).await {
                            arrived = now();
                        }
                    }
                }
            }
            // Little came last time: ask for little, in a small buffer.
            let chunk = if last_read < QUIET_READ_CHUNK {
                QUIET_READ_CHUNK
            } else {
                READ_CHUNK
            };
            let oversized = buf.capacity() > KEEP_RECEIVE_CAPACITY.max(chunk)
                || (chunk == QUIET_READ_CHUNK && buf.capacity() > chunk);
            if buf.is_empty() && oversized {
                // Nothing pending: do not keep a buffer grown by a large
                // frame or by traffic that has stopped.
                buf = BytesMut::with_capacity(chunk);
            } else if buf.capacity() - buf.len() < chunk / 4
                || (buf.capacity() - buf.len() < chunk && buf.len() <= SMALL_CARRY)
            {
                // Room for a whole carrier chunk; what is kept of a frame
                // cut in two moves along (a Rayback peer cuts its chunks at
                // frame boundaries, so that is rarely more than a header).
                buf.reserve(chunk);
            }
            self.listening_since.store(self.stamp(), Ordering::Relaxed);
            let read = carrier.read_buf(&mut buf).await;
            self.listening_since.store(0, Ordering::Relaxed);
            arrived = now();
            last_read = read.as_ref().map_or(0, |read| *read);
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

    /// Puts `data` into sub-stream `key`'s buffer, waiting while it is
    /// full; past the engine's stall deadline the sub-stream is ended.
    /// `arrived` is when the frame arrived (the first try's time; later
    /// tries read the clock). Returns whether it waited.
    async fn deliver(&self, key: Key, data: Bytes, arrived: Instant) -> bool {
        let mut first = Some(arrived);
        let mut push = pin!(poll_fn(|cx| {
            let at = first.take().unwrap_or_else(now);
            self.with(|engine| engine.deliver(key, &data, at, cx.waker()))
        }));
        // The fast path needs no timer.
        if poll_fn(|cx| Poll::Ready(push.as_mut().poll(cx).is_ready())).await {
            return false;
        }
        loop {
            let Some(deadline) = self.with(|engine| engine.next_timeout()) else {
                // Unblocked meanwhile (the sub-stream ended or made room).
                push.as_mut().await;
                return true;
            };
            tokio::select! {
                () = push.as_mut() => return true,
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                    if let Some(id) = self.with(|engine| engine.handle_timeout(now())) {
                        tracing::warn!(
                            id,
                            "mux sub-stream stalled with a full buffer, ending it"
                        );
                        return true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode_frame, Frame, FrameKind};

    #[test]
    fn batches_are_cut_into_pieces_of_whole_frames() {
        let mut batch = BytesMut::new();
        let mut frames = Vec::new();
        for (i, len) in [100usize, 60_000, 5, 30_000, 40_000, 61_000, 0, 65_535, 7]
            .into_iter()
            .enumerate()
        {
            let start = batch.len();
            let frame = Frame {
                session_id: i as u16,
                kind: if len == 0 {
                    FrameKind::KeepAlive
                } else {
                    FrameKind::Keep
                },
                data: (len > 0).then(|| Bytes::from(vec![i as u8; len])),
            };
            encode_frame(&frame, &mut batch).unwrap();
            frames.push(start..batch.len());
        }
        let pieces = frame_pieces(&batch);
        assert_eq!(pieces.concat(), &batch[..], "the same bytes, in order");
        let mut at = 0;
        for piece in &pieces {
            let end = at + piece.len();
            assert!(
                frames.iter().any(|frame| frame.start == at),
                "a piece starts at a frame"
            );
            assert!(
                frames.iter().any(|frame| frame.end == end),
                "a piece ends at a frame"
            );
            let whole = frames
                .iter()
                .filter(|f| f.start >= at && f.end <= end)
                .count();
            assert!(
                piece.len() <= CARRIER_PIECE || whole == 1,
                "{} bytes",
                piece.len()
            );
            at = end;
        }
        // Greedy: no two neighbouring pieces would have fitted in one.
        for pair in pieces.windows(2) {
            assert!(pair[0].len() + pair[1].len() > CARRIER_PIECE);
        }
    }
}
