//! A sub-stream: one Mux.Cool session seen as an `AsyncRead + AsyncWrite`.
//!
//! | event | what the sub-stream does |
//! |---|---|
//! | `poll_write` (TCP) | copies up to 64 KiB into the connection's send queue as frames of at most `max_frame_data`; `Pending` while the queue is full |
//! | `poll_write` (UDP) | the caller writes core packet framing (2-byte length + payload); each whole packet becomes one frame; packets over `max_packet` are dropped, as an oversize datagram would be |
//! | `poll_shutdown` (TCP) | sends End with the half-close bit `80`; the read side stays open until the peer's End (V2Ray answers at once with one; a Rayback peer when its writer is done) or until the sub-stream is dropped |
//! | `poll_shutdown` (UDP) | sends a plain End; the read side stays open until the peer's End |
//! | `poll_shutdown` after the peer's half-close | sends a plain End: the session is over on both sides |
//! | End received | reads return what is buffered, then EOF; writes fail (`BrokenPipe`) |
//! | End with the half-close bit received (Rayback peer) | reads return what is buffered, then EOF; writes go on; no End is sent until our writer shuts down or the sub-stream is dropped |
//! | End+error received, stall timeout | reads and writes fail at once (`ConnectionReset`, `TimedOut`) |
//! | carrier lost or closed | reads return what is buffered, then fail (`ConnectionAborted`); writes fail |
//! | dropped without shutdown | sends End+error (an abort) |
//! | dropped after either side's half-close | sends a plain End (if the peer has not ended) |
//!
//! # Half-close: a Rayback extension
//!
//! Mux.Cool has no half-close (spec §6): to V2Ray 4.34 an End closes both
//! directions. Rayback marks the End of a locally shut-down TCP sub-stream
//! with option bit `80` ([`crate::frame::OPTION_HALF_CLOSE`]), which V2Ray
//! ignores, so:
//!
//! * **Rayback ↔ Rayback**: half-close works like TCP's. The side that
//!   shut down keeps reading; the other side reads EOF and keeps writing
//!   until it shuts down (or drops) its sub-stream, whose plain End ends
//!   the session on both sides. If both sides half-close, the session ends
//!   likewise. The session counts as active until both directions are done.
//! * **Rayback ↔ V2Ray**: V2Ray sees an ordinary End, closes fully and
//!   answers with its own End: exactly the full close of V2Ray itself.
//!
//! Every transition in this table is a method of the session engine (the
//! private `engine` module); the handle only moves bytes between the
//! caller and the engine and reassembles packets written in pieces.
//!
//! Not here: frames ([`crate::frame`]) and the connection tasks (the
//! private `conn` module).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use rayback_core::{AsyncStream, Network};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::Connection;
use crate::engine::{Key, ReadInto};
use crate::frame::SessionId;

/// One Mux.Cool session on a connection. A [`rayback_core::Stream`] once
/// boxed; UDP sessions carry core packet framing.
pub struct MuxStream {
    conn: Arc<Connection>,
    key: Key,
    id: SessionId,
    network: Network,
    /// Reassembles packets written in pieces (UDP sessions only).
    packet: Option<PacketWriter>,
    shut_down: bool,
    /// Received bytes taken from the engine and lent to a relay
    /// ([`AsyncStream::buffered`]); read first.
    lent: Bytes,
}

/// A packet being written across several `poll_write` calls.
#[derive(Default)]
struct PacketWriter {
    header: [u8; 2],
    header_len: usize,
    /// Payload length announced by the header.
    want: usize,
    /// Payload bytes taken so far.
    got: usize,
    payload: Vec<u8>,
    /// The payload is whole but not yet queued (the queue was full).
    complete: bool,
}

impl PacketWriter {
    fn reset(&mut self) {
        self.header_len = 0;
        self.want = 0;
        self.got = 0;
        self.payload.clear();
        self.complete = false;
    }
}

impl ReadInto for ReadBuf<'_> {
    fn room(&self) -> usize {
        self.remaining()
    }

    fn put(&mut self, bytes: &[u8]) {
        self.put_slice(bytes);
    }
}

impl MuxStream {
    pub(crate) fn new(
        conn: Arc<Connection>,
        key: Key,
        id: SessionId,
        network: Network,
    ) -> MuxStream {
        MuxStream {
            conn,
            key,
            id,
            network,
            packet: (network == Network::Udp).then(PacketWriter::default),
            shut_down: false,
            lent: Bytes::new(),
        }
    }

    /// The session's ID on its connection.
    pub fn session_id(&self) -> SessionId {
        self.id
    }

    /// TCP: a byte stream; UDP: a packet stream.
    pub fn network(&self) -> Network {
        self.network
    }

    /// Queues a completed packet, if one waits.
    fn poll_flush_packet(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(packet) = self.packet.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        if !packet.complete {
            return Poll::Ready(Ok(()));
        }
        let key = self.key;
        ready!(self
            .conn
            .with(|engine| engine.write_packet(key, &packet.payload, cx.waker())))?;
        packet.reset();
        Poll::Ready(Ok(()))
    }

    fn poll_write_packet(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_flush_packet(cx))?;
        let key = self.key;
        let Some(packet) = self.packet.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        // Fast path: a whole packet at the start of `buf` is queued straight
        // from the caller's bytes. (The engine drops one over `max_packet`.)
        if packet.header_len == 0 && buf.len() >= 2 {
            let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
            if buf.len() >= 2 + len {
                ready!(self.conn.with(|engine| engine.write_packet(
                    key,
                    &buf[2..2 + len],
                    cx.waker()
                )))?;
                return Poll::Ready(Ok(2 + len));
            }
        }
        // Slow path: collect the pieces.
        let mut consumed = 0;
        while consumed < buf.len() && !packet.complete {
            if packet.header_len < 2 {
                packet.header[packet.header_len] = buf[consumed];
                packet.header_len += 1;
                consumed += 1;
                if packet.header_len == 2 {
                    packet.want = u16::from_be_bytes(packet.header) as usize;
                } else {
                    continue;
                }
            } else {
                let take = (packet.want - packet.got).min(buf.len() - consumed);
                packet
                    .payload
                    .extend_from_slice(&buf[consumed..consumed + take]);
                packet.got += take;
                consumed += take;
            }
            packet.complete = packet.got == packet.want;
        }
        // Queue it now if there is room; otherwise it goes at the next
        // write or flush (the waker is registered either way).
        if let Poll::Ready(Err(error)) = self.poll_flush_packet(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(consumed))
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let this = self.get_mut();
        if !this.lent.is_empty() {
            let n = this.lent.len().min(buf.remaining());
            buf.put_slice(&this.lent.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let key = this.key;
        this.conn
            .with(|engine| engine.read(key, buf, cx.waker()))
            .map_ok(drop)
    }
}

/// A stream sub-stream lends what it received: slices of the frames as
/// they arrived (so, between Rayback peers, of the opened VMess chunks),
/// which the relay writes onward with no copy. Datagram sub-streams read
/// their packet framing through `poll_read` only.
impl AsyncStream for MuxStream {
    fn buffered(&mut self) -> Option<&mut (dyn AsyncBufRead + Unpin + Send)> {
        (self.network == Network::Tcp).then_some(self)
    }
}

impl AsyncBufRead for MuxStream {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.lent.is_empty() {
            let key = this.key;
            this.lent = ready!(this.conn.with(|engine| engine.read_piece(key, cx.waker())))?;
        }
        Poll::Ready(Ok(&this.lent))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        self.get_mut().lent.advance(amt);
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let key = this.key;
        if buf.is_empty() || this.packet.is_some() {
            // Fails on a session that can no longer send, before a packet
            // is collected that could never go.
            this.conn.with(|engine| engine.check_writable(key))?;
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            return this.poll_write_packet(cx, buf);
        }
        this.conn
            .with(|engine| engine.write_stream(key, buf, cx.waker()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Queued frames are written by the connection's writer task as soon
        // as it runs; there is nothing to wait for here but a packet that
        // found the queue full.
        self.get_mut().poll_flush_packet(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_packet(cx))?;
        if !this.shut_down {
            this.shut_down = true;
            let key = this.key;
            this.conn.with(|engine| engine.shutdown(key));
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        let key = self.key;
        self.conn.with(|engine| engine.release(key));
    }
}
