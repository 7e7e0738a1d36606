//! [`VmessStream`]: a VMess body as an `AsyncRead + AsyncWrite` over an
//! inner byte stream (a TCP socket). It is the IO driver of the sans-IO
//! [`crate::body`] codec; the handshake bytes themselves come from
//! [`crate::header`] via the inbound and outbound handlers.
//!
//! Writing: a `poll_write` seals as few chunks as possible (up to two
//! full-size chunks per call) into one output buffer and hands it to the
//! inner stream in one write. A pending handshake header (the client's
//! request, the server's response) waits in that buffer so that it leaves
//! with the first payload; the client also sends it after at most
//! [`HEADER_FLUSH_DELAY`] (as 4.34 does) once the stream is read, and any
//! flush or shutdown sends it at once.
//!
//! Reading: ciphertext is read into a buffer that holds at least one whole
//! chunk, opened in place, and copied out. One pass instead: once a large
//! chunk's length field is read and the caller's buffer has room for its
//! body, the body is read from the inner stream straight into the caller's
//! buffer and opened there (with the next length field, when it came
//! along, kept back), so the bytes are not copied again in user space.
//! The mux reader offers such room; its sub-streams then get slices of the
//! opened chunk. For UDP sessions the stream speaks
//! [`rayback_core::packet`] framing: each chunk is one packet.
//!
//! Buffers come from small per-thread pools and go back whenever they are
//! empty, so an idle connection holds none and a busy one allocates none
//! per chunk.
//!
//! Not here: handshakes, sockets, timeouts (the relay owns those).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use rayback_core::AgreedExtensions;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::body::{ChunkOpener, ChunkSealer, Opened, LEN_FIELD, MAX_CHUNK_LEN, NONCE_BUDGET};
use crate::error::VmessError;
use crate::header::{Options, ResponseDecoder};
use crate::metrics::{increment, VmessMetrics};

/// How long a client holds its request header waiting for the first
/// payload (4.34: 100 ms).
pub const HEADER_FLUSH_DELAY: Duration = Duration::from_millis(100);

/// Bytes of a read buffer: two whole maximum chunks, so a chunk rarely has
/// to be moved to the front before it can be opened.
const READ_BUFFER: usize = 2 * (LEN_FIELD + MAX_CHUNK_LEN);
/// Chunks whose `Len` is at least this are read straight into the
/// caller's buffer when it has room: one read call per chunk then saves a
/// copy of the whole chunk. Smaller chunks (V2Ray sends about 2 KiB ones)
/// are read many at a time into our buffer, which is cheaper for them.
const DIRECT_MIN: usize = 16 * 1024;
/// Input bytes one `poll_write` seals at most.
const WRITE_BATCH: usize = 2 * 65_456;
/// Capacity a pooled write buffer starts with: a batch plus chunk
/// overheads and a handshake header.
const WRITE_CAPACITY: usize = WRITE_BATCH + 4 * 96 + 512;
/// Idle buffers each thread keeps.
const POOL_LIMIT: usize = 32;

thread_local! {
    static READ_POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    static WRITE_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_read_buffer() -> Box<[u8]> {
    READ_POOL
        .with(|pool| pool.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; READ_BUFFER].into_boxed_slice())
}

fn give_read_buffer(buffer: Box<[u8]>) {
    READ_POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_LIMIT {
            pool.push(buffer);
        }
    });
}

fn take_write_buffer() -> Vec<u8> {
    WRITE_POOL
        .with(|pool| pool.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(WRITE_CAPACITY))
}

fn give_write_buffer(mut buffer: Vec<u8>) {
    // A held header's small buffer is not worth keeping.
    if buffer.capacity() < WRITE_CAPACITY || buffer.capacity() > 4 * WRITE_CAPACITY {
        return;
    }
    buffer.clear();
    WRITE_POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_LIMIT {
            pool.push(buffer);
        }
    });
}

/// A cloneable view of a stream's remaining send budget, for whoever
/// decides to rotate tunnel connections (it outlives the boxed stream).
#[derive(Clone, Debug)]
pub struct BudgetWatch {
    remaining: Arc<AtomicU32>,
}

impl BudgetWatch {
    /// Data chunks the stream can still send.
    pub fn remaining_chunks(&self) -> u32 {
        self.remaining.load(Ordering::Relaxed)
    }

    /// True once fewer than [`crate::body::NEAR_BUDGET_CHUNKS`] remain.
    pub fn near_budget(&self) -> bool {
        self.remaining_chunks() < crate::body::NEAR_BUDGET_CHUNKS
    }
}

/// What the read side is waiting for.
enum ReadState {
    /// Client: the response header comes first.
    Response(ResponseDecoder),
    Body,
    /// The end chunk (or a clean end of the inner stream) was seen.
    Done,
}

/// A VMess body over `S`.
pub struct VmessStream<S> {
    inner: S,
    sealer: ChunkSealer,
    opener: ChunkOpener,
    /// UDP session: packet framing on the plaintext side.
    packet: bool,
    metrics: Arc<VmessMetrics>,
    budget: Option<Arc<AtomicU32>>,

    read_state: ReadState,
    read_buffer: Option<Box<[u8]>>,
    /// Ciphertext not yet opened is `read_buffer[read_start..read_end]`.
    read_start: usize,
    read_end: usize,
    /// Plaintext not yet delivered, inside the buffer.
    plain_start: usize,
    plain_end: usize,
    /// Where the chunk being delivered ends: `read_start` moves here once
    /// its plaintext is delivered.
    chunk_end: usize,

    write_buffer: Vec<u8>,
    write_pos: usize,
    /// A handshake header is in `write_buffer`, waiting for payload.
    holding_header: bool,
    /// Client: when the held request header must go out even without
    /// payload.
    header_deadline: Option<Instant>,
    header_timer: Option<Pin<Box<Sleep>>>,
    /// Packet mode: a packet whose framing arrived in pieces.
    partial_packet: Vec<u8>,
    write_closed: bool,
    /// Client: where the connection-level extensions the server answered
    /// are recorded once the response header is read.
    agreed: Option<AgreedExtensions>,
    /// Chunks opened straight in a caller's buffer (tests look).
    #[cfg(test)]
    direct_chunks: usize,
}

impl<S> VmessStream<S> {
    /// The client side: `request_header` (sealed) is sent with the first
    /// payload, or [`HEADER_FLUSH_DELAY`] after creation once the stream is
    /// read, or on flush. The response header is expected first on read.
    pub fn client(
        inner: S,
        request_header: Vec<u8>,
        sealer: ChunkSealer,
        opener: ChunkOpener,
        response: ResponseDecoder,
        metrics: Arc<VmessMetrics>,
    ) -> VmessStream<S> {
        let mut stream = VmessStream::new(inner, sealer, opener, metrics);
        stream.read_state = ReadState::Response(response);
        stream.hold_header(&request_header);
        stream.header_deadline = Some(Instant::now() + HEADER_FLUSH_DELAY);
        stream
    }

    /// The server side: `response_header` (sealed) is sent with the first
    /// payload (as 4.34), or on flush or shutdown. `already_read` is body
    /// data that arrived together with the request header.
    pub fn server(
        inner: S,
        response_header: &[u8],
        already_read: &[u8],
        sealer: ChunkSealer,
        opener: ChunkOpener,
        metrics: Arc<VmessMetrics>,
    ) -> VmessStream<S> {
        let mut stream = VmessStream::new(inner, sealer, opener, metrics);
        stream.hold_header(response_header);
        if !already_read.is_empty() {
            let mut buffer = take_read_buffer();
            // The handshake reader never keeps more than its own buffer,
            // which is far smaller than a read buffer.
            let len = already_read.len().min(buffer.len());
            buffer[..len].copy_from_slice(&already_read[..len]);
            stream.read_buffer = Some(buffer);
            stream.read_end = len;
        }
        stream
    }

    fn new(
        inner: S,
        sealer: ChunkSealer,
        opener: ChunkOpener,
        metrics: Arc<VmessMetrics>,
    ) -> VmessStream<S> {
        let packet = sealer.framing().packet && sealer.framing().chunked();
        VmessStream {
            inner,
            sealer,
            opener,
            packet,
            metrics,
            budget: None,
            read_state: ReadState::Body,
            read_buffer: None,
            read_start: 0,
            read_end: 0,
            plain_start: 0,
            plain_end: 0,
            chunk_end: 0,
            write_buffer: Vec::new(),
            write_pos: 0,
            holding_header: false,
            header_deadline: None,
            header_timer: None,
            partial_packet: Vec::new(),
            write_closed: false,
            agreed: None,
            #[cfg(test)]
            direct_chunks: 0,
        }
    }

    /// Keeps `header` to go out with the first payload. In a buffer of
    /// its own size: a header may wait alone for up to 100 ms, and a
    /// portal that a thousand bridges reach at once held as many pooled
    /// 128 KiB buffers for their response headers (8 MiB at the peak, and
    /// the heap kept it). The first seal moves it into a pooled buffer.
    fn hold_header(&mut self, header: &[u8]) {
        self.write_buffer = header.to_vec();
        self.holding_header = !header.is_empty();
    }

    /// Data chunks this stream can still send before it must close.
    pub fn remaining_chunks(&self) -> u32 {
        self.sealer.remaining_chunks()
    }

    /// True when the send budget is nearly spent: new sessions should go
    /// to a fresh connection.
    pub fn near_budget(&self) -> bool {
        self.sealer.near_budget()
    }

    /// A handle that keeps reporting the remaining send budget after the
    /// stream is boxed away.
    pub fn budget_watch(&mut self) -> BudgetWatch {
        let remaining = self
            .budget
            .get_or_insert_with(|| Arc::new(AtomicU32::new(self.sealer.remaining_chunks())))
            .clone();
        BudgetWatch { remaining }
    }

    /// Client: records in `agreed` the Rayback extensions the server
    /// answers (`Options::extensions` of the response option byte) as
    /// soon as the response header is read, before any body byte is
    /// delivered. A V2Ray server answers none, so it stays empty.
    pub fn report_agreed(&mut self, agreed: AgreedExtensions) {
        self.agreed = Some(agreed);
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Drop for VmessStream<S> {
    fn drop(&mut self) {
        if let Some(buffer) = self.read_buffer.take() {
            give_read_buffer(buffer);
        }
        give_write_buffer(std::mem::take(&mut self.write_buffer));
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> VmessStream<S> {
    /// Writes all of the output buffer to the inner stream.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.write_pos < self.write_buffer.len() {
            let written = ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.write_buffer[self.write_pos..])
            )?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.write_pos += written;
        }
        self.write_pos = 0;
        give_write_buffer(std::mem::take(&mut self.write_buffer));
        Poll::Ready(Ok(()))
    }

    /// Releases a held header: from now on it goes out with whatever is
    /// written next, or right away on the next output flush.
    fn release_header(&mut self) {
        self.holding_header = false;
        self.header_deadline = None;
        self.header_timer = None;
    }

    /// Client: sends the held request header once its deadline passed,
    /// and keeps pushing it from the read side until it has left (unless a
    /// write or flush took that job over).
    fn poll_header_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(deadline) = self.header_deadline else {
            return Ok(());
        };
        if self.holding_header {
            let timer = self
                .header_timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            self.holding_header = false;
            self.header_timer = None;
        }
        match self.poll_write_out(cx) {
            Poll::Ready(result) => {
                self.header_deadline = None;
                result
            }
            // The inner stream will wake this reader when it can take more.
            Poll::Pending => Ok(()),
        }
    }

    fn seal_into_output(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.write_buffer.capacity() < WRITE_CAPACITY {
            // Empty, or a held header alone (output is written out before
            // anything else is sealed, so nothing else can be in it).
            let mut buffer = take_write_buffer();
            buffer.extend_from_slice(&self.write_buffer[self.write_pos..]);
            self.write_pos = 0;
            self.write_buffer = buffer;
        }
        let mut rng = rand::thread_rng();
        let taken = if self.packet {
            self.seal_packets(data, &mut rng)
        } else {
            self.sealer.seal(data, &mut self.write_buffer, &mut rng)
        };
        if let Some(budget) = &self.budget {
            budget.store(self.sealer.remaining_chunks(), Ordering::Relaxed);
        }
        match taken {
            Ok(taken) => Ok(taken),
            Err(VmessError::BudgetExhausted(budget)) => {
                increment(&self.metrics.send_budget_exhausted);
                tracing::warn!(
                    budget,
                    "vmess connection has sealed all {NONCE_BUDGET} chunk nonces of its send \
                     direction; closing it rather than reuse a nonce"
                );
                Err(VmessError::BudgetExhausted(budget).into())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Seals each complete packet of `data` (2-byte length + payload) as
    /// one chunk; a trailing incomplete packet waits in `partial_packet`.
    fn seal_packets(
        &mut self,
        data: &[u8],
        rng: &mut rand::rngs::ThreadRng,
    ) -> Result<usize, VmessError> {
        let mut used = 0;
        while used < data.len() {
            if self.partial_packet.is_empty() {
                let rest = &data[used..];
                if let Some(len) = packet_len(rest) {
                    if rest.len() >= LEN_FIELD + len {
                        self.seal_packet(&rest[LEN_FIELD..LEN_FIELD + len], rng)?;
                        used += LEN_FIELD + len;
                        continue;
                    }
                }
                // No whole packet at the front: keep the piece.
                self.partial_packet.extend_from_slice(rest);
                used = data.len();
            } else {
                let need =
                    packet_len(&self.partial_packet).map_or(LEN_FIELD, |len| LEN_FIELD + len);
                let take = (need - self.partial_packet.len()).min(data.len() - used);
                self.partial_packet
                    .extend_from_slice(&data[used..used + take]);
                used += take;
            }
            if let Some(len) = packet_len(&self.partial_packet) {
                if self.partial_packet.len() == LEN_FIELD + len {
                    let packet = std::mem::take(&mut self.partial_packet);
                    let sealed = self.seal_packet(&packet[LEN_FIELD..], rng);
                    self.partial_packet = packet;
                    self.partial_packet.clear();
                    sealed?;
                }
            }
        }
        Ok(used)
    }

    fn seal_packet(
        &mut self,
        payload: &[u8],
        rng: &mut rand::rngs::ThreadRng,
    ) -> Result<(), VmessError> {
        // An empty chunk would read as the end of the body, and a packet
        // over one chunk cannot be sent as one: both are dropped, as 4.34
        // drops datagrams that do not fit its chunk.
        if payload.is_empty() || payload.len() > self.sealer.framing().max_payload() {
            tracing::debug!(len = payload.len(), "vmess udp packet dropped");
            return Ok(());
        }
        self.sealer.seal(payload, &mut self.write_buffer, rng)?;
        Ok(())
    }

    /// Makes room for a chunk of `total` bytes starting at `read_start`.
    fn make_room(&mut self, total: usize) {
        let Some(buffer) = self.read_buffer.as_mut() else {
            return;
        };
        if self.read_start + total > buffer.len() {
            buffer.copy_within(self.read_start..self.read_end, 0);
            self.read_end -= self.read_start;
            self.read_start = 0;
        }
    }

    /// Delivers buffered plaintext into `out`.
    fn deliver(&mut self, out: &mut ReadBuf<'_>) {
        let Some(buffer) = self.read_buffer.as_ref() else {
            return;
        };
        let len = out.remaining().min(self.plain_end - self.plain_start);
        out.put_slice(&buffer[self.plain_start..self.plain_start + len]);
        self.plain_start += len;
        if self.plain_start == self.plain_end {
            self.read_start = self.chunk_end;
            if self.read_start == self.read_end {
                self.read_start = 0;
                self.read_end = 0;
            }
        }
    }

    /// Decodes what is buffered: `Some(())` when plaintext became ready or
    /// the body ended, `None` when more ciphertext is needed.
    fn decode_buffered(&mut self) -> io::Result<Option<()>> {
        loop {
            let Some(buffer) = self.read_buffer.as_mut() else {
                return Ok(None);
            };
            let data = &mut buffer[self.read_start..self.read_end];
            match &mut self.read_state {
                ReadState::Done => return Ok(Some(())),
                ReadState::Response(decoder) => match decoder.decode(data)? {
                    Some(used) => {
                        self.read_start += used;
                        // The server agreed to Rayback's rekey extension: no
                        // send budget limit from here on.
                        if decoder.option() & Options::REKEY != 0
                            && self.opener.framing().algorithm().is_some()
                        {
                            self.sealer.enable_rekey();
                            self.opener.enable_rekey();
                            if let Some(budget) = &self.budget {
                                budget.store(self.sealer.remaining_chunks(), Ordering::Relaxed);
                            }
                        }
                        if let Some(agreed) = &self.agreed {
                            agreed.record(Options(decoder.option()).extensions());
                        }
                        self.read_state = ReadState::Body;
                    }
                    None => return Ok(None),
                },
                ReadState::Body => {
                    let before = self.opener.chunks_opened();
                    match self.opener.open(data)? {
                        Opened::Chunk { payload, consumed } => {
                            note_wrap(&self.metrics, before);
                            let mut start = self.read_start + payload.start;
                            let end = self.read_start + payload.end;
                            if self.packet {
                                // Reuse the chunk's length field for the
                                // packet framing.
                                start -= LEN_FIELD;
                                let len = (payload.end - payload.start) as u16;
                                buffer[start..start + LEN_FIELD]
                                    .copy_from_slice(&len.to_be_bytes());
                            }
                            self.plain_start = start;
                            self.plain_end = end;
                            self.chunk_end = self.read_start + consumed;
                            if start < end {
                                return Ok(Some(()));
                            }
                            self.read_start = self.chunk_end;
                        }
                        Opened::End => {
                            self.read_state = ReadState::Done;
                            return Ok(Some(()));
                        }
                        Opened::NeedMore(total) => {
                            self.make_room(total);
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for VmessStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.poll_header_deadline(cx)?;
        loop {
            if this.plain_start < this.plain_end {
                this.deliver(out);
                return Poll::Ready(Ok(()));
            }
            if this.decode_buffered()?.is_some() {
                if matches!(this.read_state, ReadState::Done) {
                    if let Some(buffer) = this.read_buffer.take() {
                        give_read_buffer(buffer);
                    }
                    this.read_start = 0;
                    this.read_end = 0;
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if let Some(done) = this.poll_read_direct(cx, out) {
                match done {
                    Poll::Ready(Ok(true)) => return Poll::Ready(Ok(())),
                    // The end chunk: the state says so now.
                    Poll::Ready(Ok(false)) => continue,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let buffer = this.read_buffer.get_or_insert_with(take_read_buffer);
            let mut read_buf = ReadBuf::new(&mut buffer[this.read_end..]);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read_buf) {
                Poll::Pending => {
                    if this.read_start == this.read_end {
                        this.read_start = 0;
                        this.read_end = 0;
                        if let Some(buffer) = this.read_buffer.take() {
                            give_read_buffer(buffer);
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(())) => {
                    let filled = read_buf.filled().len();
                    if filled == 0 {
                        return Poll::Ready(this.inner_ended());
                    }
                    this.read_end += filled;
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> rayback_core::AsyncStream
    for VmessStream<S>
{
}

impl<S: AsyncRead + AsyncWrite + Unpin> VmessStream<S> {
    /// What both writes do: seals each non-empty slice on its own (as one
    /// chunk when it fits one), up to `WRITE_BATCH` bytes in all, and
    /// starts one write of the lot; returns how many bytes were taken.
    fn poll_seal<'a>(
        &mut self,
        cx: &mut Context<'_>,
        slices: impl IntoIterator<Item = &'a [u8]>,
    ) -> Poll<io::Result<usize>> {
        if self.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if !self.holding_header {
            ready!(self.poll_write_out(cx))?;
        }
        let mut taken = 0;
        for slice in slices.into_iter().filter(|slice| !slice.is_empty()) {
            // A slice that does not fit in what is left of the batch waits
            // for the next call, unless it is the first.
            if taken > 0 && taken + slice.len() > WRITE_BATCH {
                break;
            }
            let piece = &slice[..slice.len().min(WRITE_BATCH - taken)];
            let sealed = self.seal_into_output(piece)?;
            taken += sealed;
            if sealed < slice.len() {
                break;
            }
        }
        if taken == 0 {
            return Poll::Ready(Ok(0));
        }
        self.release_header();
        // One write now; what the socket does not take waits for the next
        // call or flush.
        if let Poll::Ready(Err(error)) = self.poll_write_out(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(taken))
    }
}

/// Counts a peer's nonce counter wrapping, seen when the chunk opened
/// after `before` others starts a new round of 65536.
fn note_wrap(metrics: &VmessMetrics, before: u64) {
    if before > 0 && before % NONCE_BUDGET as u64 == 0 {
        increment(&metrics.peer_nonce_wraps);
        tracing::debug!(
            chunks = before,
            "vmess peer wrapped its chunk nonce counter"
        );
    }
}

/// The payload length of the packet framed at the start of `data`.
fn packet_len(data: &[u8]) -> Option<usize> {
    let field = data.get(..LEN_FIELD)?;
    Some(u16::from_be_bytes([field[0], field[1]]) as usize)
}

impl<S: AsyncRead + AsyncWrite + Unpin> VmessStream<S> {
    /// The one-pass read: when the chunk whose length field is buffered is
    /// large and `out` has room for its body, reads the rest of the body
    /// (and up to the next length field) from the inner stream into `out`
    /// and opens it there. `None` when this does not apply (the caller
    /// reads into our buffer); `Ready(Ok(true))` when plaintext was put in
    /// `out`, `Ready(Ok(false))` when the chunk was the end. On `Pending`
    /// what arrived so far goes back into our buffer, so `out` is never
    /// relied on between calls.
    fn poll_read_direct(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Option<Poll<io::Result<bool>>> {
        let len = self.opener.awaiting_body()?;
        if self.packet
            || !matches!(self.read_state, ReadState::Body)
            || len < DIRECT_MIN
            || out.remaining() < len + LEN_FIELD
        {
            return None;
        }
        let buffer = self.read_buffer.as_mut()?;
        let body_start = self.read_start + LEN_FIELD;
        // SAFETY: `unfilled_mut` lets us write uninitialised memory; the
        // `ReadBuf` built on it only ever writes initialised bytes into it
        // and tracks which, and `out` is told of no byte that was not
        // written through it (see `assume_init` below).
        #[allow(unsafe_code)]
        let room = unsafe { out.unfilled_mut() };
        let mut body = ReadBuf::uninit(&mut room[..len + LEN_FIELD]);
        body.put_slice(&buffer[body_start..self.read_end]);
        while body.filled().len() < len {
            let before = body.filled().len();
            let polled = Pin::new(&mut self.inner).poll_read(cx, &mut body);
            let arrived = body.filled().len();
            if matches!(polled, Poll::Ready(Ok(()))) && arrived > before {
                continue;
            }
            // Not whole yet: keep what came where the buffered path
            // expects it (`make_room` left space for the whole chunk).
            buffer[body_start..body_start + arrived].copy_from_slice(body.filled());
            self.read_end = body_start + arrived;
            return Some(match polled {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                Poll::Ready(Ok(())) => Poll::Ready(self.inner_ended().map(|()| false)),
            });
        }
        // The next chunk's length field, if it came along, is kept.
        let next = body.filled().len() - len;
        buffer[..next].copy_from_slice(&body.filled()[len..]);
        self.read_start = 0;
        self.read_end = next;
        let before = self.opener.chunks_opened();
        let opened = match self.opener.open_body(&mut body.filled_mut()[..len]) {
            Ok(opened) => opened,
            Err(error) => return Some(Poll::Ready(Err(error.into()))),
        };
        match opened {
            Opened::Chunk { payload, .. } => {
                note_wrap(&self.metrics, before);
                debug_assert_eq!(payload.start, 0);
                #[cfg(test)]
                {
                    self.direct_chunks += 1;
                }
                // SAFETY: `body` wrote `len` >= `payload.end` initialised
                // bytes at the start of `out`'s unfilled part.
                #[allow(unsafe_code)]
                unsafe {
                    out.assume_init(payload.end);
                }
                out.advance(payload.end);
                Some(Poll::Ready(Ok(true)))
            }
            Opened::End => {
                self.read_state = ReadState::Done;
                Some(Poll::Ready(Ok(false)))
            }
            Opened::NeedMore(_) => Some(Poll::Ready(Err(io::Error::other(
                "vmess chunk body not whole after reading it whole",
            )))),
        }
    }
}

impl<S> VmessStream<S> {
    /// The inner stream ended without an end chunk.
    fn inner_ended(&mut self) -> io::Result<()> {
        let clean = self.read_start == self.read_end;
        let state = std::mem::replace(&mut self.read_state, ReadState::Done);
        if let Some(buffer) = self.read_buffer.take() {
            give_read_buffer(buffer);
        }
        self.read_start = 0;
        self.read_end = 0;
        match state {
            ReadState::Response(_) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "vmess server closed before its response header",
            )),
            // Between chunks: a peer that closed without an end chunk
            // (4.34 does that when its upstream sent nothing). Inside a
            // chunk: truncated.
            ReadState::Body if !clean => Err(VmessError::TruncatedChunk.into()),
            _ => Ok(()),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for VmessStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_seal(cx, [data])
    }

    /// Each slice is sealed on its own (`poll_seal`): a writer that cuts
    /// its bytes at its own boundaries (the mux writer, at frame
    /// boundaries) has them kept at chunk boundaries.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let slices = slices.iter().map(|slice| &slice[..]);
        // Packet framing may span writes: one slice at a time.
        if this.packet {
            let first = slices.filter(|slice| !slice.is_empty()).take(1);
            return this.poll_seal(cx, first);
        }
        this.poll_seal(cx, slices)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.release_header();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_closed {
            this.write_closed = true;
            this.release_header();
            if this.write_buffer.capacity() == 0 {
                this.write_buffer = take_write_buffer();
            }
            this.sealer
                .seal_end(&mut this.write_buffer, &mut rand::thread_rng());
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::BodyFraming;
    use crate::header::{BodySecurity, Command, DirectionKeys, Options};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An inner stream that hands out `wire` in pieces of random size,
    /// now and then answering `Pending` (and waking itself) instead.
    struct Trickle {
        wire: Vec<u8>,
        at: usize,
        rng: StdRng,
        largest: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if this.rng.gen_ratio(1, 4) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let piece = this.rng.gen_range(1..=this.largest);
            let len = piece.min(out.remaining()).min(this.wire.len() - this.at);
            out.put_slice(&this.wire[this.at..this.at + len]);
            this.at += len;
            Poll::Ready(Ok(()))
        }
    }

    /// What the tests read from: a trickle, and nowhere to write.
    type Inner = tokio::io::Join<Trickle, tokio::io::Sink>;

    const KEYS: DirectionKeys = DirectionKeys {
        key: [7; 16],
        iv: [9; 16],
    };

    /// Seals writes of random sizes (so chunks from a few bytes to the
    /// largest) and the end chunk; returns the wire and the plaintext.
    fn sealed_body(framing: BodyFraming, rng: &mut StdRng, writes: usize) -> (Vec<u8>, Vec<u8>) {
        let mut sealer = ChunkSealer::new(framing, &KEYS);
        let (mut wire, mut plain) = (Vec::new(), Vec::new());
        for _ in 0..writes {
            let len = match rng.gen_range(0..3) {
                0 => rng.gen_range(1..3_000),
                1 => rng.gen_range(16_000..70_000),
                _ => rng.gen_range(60_000..200_000),
            };
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let mut taken = 0;
            while taken < data.len() {
                taken += sealer.seal(&data[taken..], &mut wire, rng).unwrap();
            }
            plain.extend_from_slice(&data);
        }
        sealer.seal_end(&mut wire, rng);
        (wire, plain)
    }

    fn reader(framing: BodyFraming, wire: Vec<u8>, seed: u64) -> VmessStream<Inner> {
        trickle_reader(framing, wire, seed, 100_000)
    }

    fn trickle_reader(
        framing: BodyFraming,
        wire: Vec<u8>,
        seed: u64,
        largest: usize,
    ) -> VmessStream<Inner> {
        let inner = Trickle {
            wire,
            at: 0,
            rng: StdRng::seed_from_u64(seed),
            largest,
        };
        let inner = tokio::io::join(inner, tokio::io::sink());
        server(inner, framing, &KEYS, Arc::new(VmessMetrics::new()))
    }

    fn server<S>(
        inner: S,
        framing: BodyFraming,
        keys: &DirectionKeys,
        metrics: Arc<VmessMetrics>,
    ) -> VmessStream<S> {
        VmessStream::server(
            inner,
            &[],
            &[],
            ChunkSealer::new(framing, keys),
            ChunkOpener::new(framing, keys),
            metrics,
        )
    }

    /// Reads to the end with buffers of random size: some with room for
    /// a whole chunk (the one-pass path), some small (the buffered one).
    async fn read_all(stream: &mut VmessStream<Inner>, rng: &mut StdRng) -> io::Result<Vec<u8>> {
        let mut got = Vec::new();
        loop {
            let room = if rng.gen_ratio(2, 3) {
                rng.gen_range(65_537..140_000)
            } else {
                rng.gen_range(1..20_000)
            };
            let mut buf = vec![0u8; room];
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(got);
            }
            got.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn large_chunks_open_in_the_callers_buffer_and_read_the_same() {
        let framings = [
            BodyFraming::new(BodySecurity::Aes128Gcm, Options(0x0d), Command::Tcp),
            BodyFraming::new(BodySecurity::ChaCha20Poly1305, Options(0x05), Command::Tcp),
            BodyFraming::new(BodySecurity::Aes128Gcm, Options(0x01), Command::Tcp),
            BodyFraming::new(BodySecurity::None, Options(0x0d), Command::Tcp),
        ];
        for (i, framing) in framings.into_iter().enumerate() {
            for seed in 0..6u64 {
                let mut rng = StdRng::seed_from_u64(seed * 31 + i as u64);
                let (wire, plain) = sealed_body(framing, &mut rng, 12);
                let mut stream = reader(framing, wire, seed);
                let got = read_all(&mut stream, &mut rng).await.unwrap();
                assert!(got == plain, "framing {i}, seed {seed}: bytes differ");
                assert!(
                    stream.direct_chunks > 0,
                    "framing {i}, seed {seed}: no chunk took the one-pass path"
                );
            }
        }
    }

    #[tokio::test]
    async fn the_one_pass_path_reports_truncation_and_tampering() {
        let framing = BodyFraming::new(BodySecurity::Aes128Gcm, Options(0x0d), Command::Tcp);
        let mut rng = StdRng::seed_from_u64(5);
        let mut sealer = ChunkSealer::new(framing, &KEYS);
        let mut wire = Vec::new();
        let data = vec![0x5a; 60_000];
        sealer.seal(&data, &mut wire, &mut rng).unwrap();
        let chunk = wire.len();
        sealer.seal(&data, &mut wire, &mut rng).unwrap();
        // Pieces of at most 1,000 bytes and a roomy caller: each chunk's
        // length field is read into our buffer, the rest into the caller's.
        let read_whole = |mut stream: VmessStream<Inner>| async move {
            let mut buf = vec![0u8; 70_000];
            let mut got = 0;
            let result = loop {
                match stream.read(&mut buf).await {
                    Ok(0) => break Ok(got),
                    Ok(n) => got += n,
                    Err(error) => break Err(error),
                }
            };
            (result, stream.direct_chunks)
        };
        // Cut inside the second chunk's body.
        let cut = trickle_reader(framing, wire[..chunk + 30_000].to_vec(), 1, 1_000);
        let (result, direct) = read_whole(cut).await;
        let error = result.unwrap_err();
        assert!(error.to_string().contains("inside a body chunk"), "{error}");
        assert_eq!(direct, 1, "the first chunk took the one-pass path");
        // One bit flipped inside the second chunk's ciphertext.
        let mut tampered = wire.clone();
        tampered[chunk + 20_000] ^= 1;
        let (result, direct) = read_whole(trickle_reader(framing, tampered, 2, 1_000)).await;
        let error = result.unwrap_err();
        assert!(error.to_string().contains("chunk 1"), "{error}");
        assert_eq!(direct, 1);
        // Untouched, both chunks come through whole.
        let (result, direct) = read_whole(trickle_reader(framing, wire, 3, 1_000)).await;
        assert_eq!(result.unwrap(), 120_000);
        assert_eq!(direct, 2);
    }

    #[tokio::test]
    async fn a_vectored_write_seals_each_slice_as_its_own_chunk() {
        let framing = BodyFraming::new(BodySecurity::Aes128Gcm, Options(0x0d), Command::Tcp);
        let (mut peer, ours) = tokio::io::duplex(1 << 20);
        let mut stream = server(ours, framing, &KEYS, Arc::new(VmessMetrics::new()));
        let slices = [
            vec![1u8; 40_000],
            vec![2u8; 30_000],
            vec![3u8; 100],
            vec![4; 70_000],
        ];
        let io: Vec<io::IoSlice<'_>> = slices.iter().map(|s| io::IoSlice::new(s)).collect();
        // The fourth slice does not fit the batch after the other three.
        let taken = stream.write_vectored(&io).await.unwrap();
        assert_eq!(taken, 70_100);
        let taken = stream.write_vectored(&io[3..]).await.unwrap();
        assert_eq!(taken, 70_000);
        stream.shutdown().await.unwrap();
        let mut wire = Vec::new();
        peer.read_to_end(&mut wire).await.unwrap();
        let mut opener = ChunkOpener::new(framing, &KEYS);
        let mut chunks = Vec::new();
        let mut at = 0;
        while let Opened::Chunk { payload, consumed } = opener.open(&mut wire[at..]).unwrap() {
            let data = &wire[at + payload.start..at + payload.end];
            chunks.push((data[0], data.len()));
            at += consumed;
        }
        let max = framing.max_payload();
        assert_eq!(
            chunks,
            [
                (1, 40_000),
                (2, 30_000),
                (3, 100),
                (4, max),
                (4, 70_000 - max)
            ]
        );
    }

    #[tokio::test]
    async fn counts_a_peer_that_wraps_its_nonce_counter() {
        let framing = BodyFraming::new(BodySecurity::Aes128Gcm, Options(0x0d), Command::Tcp);
        let keys = DirectionKeys {
            key: [1; 16],
            iv: [2; 16],
        };
        let metrics = Arc::new(VmessMetrics::new());
        let (mut peer, ours) = tokio::io::duplex(1 << 20);
        let mut stream = server(ours, framing, &keys, metrics.clone());
        let chunks = NONCE_BUDGET as usize + 3;
        let writer = tokio::spawn(async move {
            let mut sealer = ChunkSealer::new(framing, &keys);
            let mut wire = Vec::new();
            let mut rng = rand::rngs::mock::StepRng::new(0, 1);
            for i in 0..chunks {
                sealer.seal_wrapping(&[i as u8], &mut wire, &mut rng);
                if wire.len() > 1 << 16 {
                    peer.write_all(&wire).await.unwrap();
                    wire.clear();
                }
            }
            sealer.seal_end(&mut wire, &mut rng);
            peer.write_all(&wire).await.unwrap();
            peer
        });
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), chunks);
        assert!(got.iter().enumerate().all(|(i, b)| *b == i as u8));
        assert_eq!(metrics.peer_nonce_wraps.load(Ordering::Relaxed), 1);
        drop(writer.await.unwrap());
    }
}
