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
//! chunk, opened in place, and copied out. For UDP sessions the stream
//! speaks [`rayback_core::packet`] framing: each chunk is one packet.
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
                            if before > 0 && before % NONCE_BUDGET as u64 == 0 {
                                increment(&self.metrics.peer_nonce_wraps);
                                tracing::debug!(
                                    chunks = before,
                                    "vmess peer wrapped its chunk nonce counter"
                                );
                            }
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

/// The payload length of the packet framed at the start of `data`.
fn packet_len(data: &[u8]) -> Option<usize> {
    let field = data.get(..LEN_FIELD)?;
    Some(u16::from_be_bytes([field[0], field[1]]) as usize)
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
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if !this.holding_header {
            ready!(this.poll_write_out(cx))?;
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let batch = &data[..data.len().min(WRITE_BATCH)];
        let taken = this.seal_into_output(batch)?;
        this.release_header();
        // One write now; what the socket does not take waits for the next
        // call or flush.
        if let Poll::Ready(Err(error)) = this.poll_write_out(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(taken))
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_a_peer_that_wraps_its_nonce_counter() {
        let framing = BodyFraming::new(BodySecurity::Aes128Gcm, Options(0x0d), Command::Tcp);
        let keys = DirectionKeys {
            key: [1; 16],
            iv: [2; 16],
        };
        let metrics = Arc::new(VmessMetrics::new());
        let (mut peer, ours) = tokio::io::duplex(1 << 20);
        let mut stream = VmessStream::server(
            ours,
            &[],
            &[],
            ChunkSealer::new(framing, &keys),
            ChunkOpener::new(framing, &keys),
            metrics.clone(),
        );
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
