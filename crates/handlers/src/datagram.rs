//! UDP sockets seen as packet streams (see `rayback_core::packet`): the
//! bridge between the framed packets handlers pass around and datagrams.
//!
//! | bytes | field |
//! |---|---|
//! | 2 | payload length, big-endian |
//! | n | payload: exactly one datagram |
//!
//! [`FrameWriter`] turns written bytes back into whole datagrams (a frame
//! may arrive split over several writes); [`FrameReader`] hands one
//! datagram out as a frame, over as many reads as the caller's buffer
//! needs. [`ConnectedDatagrams`] puts both on a connected socket: what
//! freedom returns for UDP destinations. Not here: the per-client sessions
//! of dokodemo-door's shared socket (see `dokodemo`).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rayback_core::packet::MAX_PACKET;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;

/// Bytes of the length prefix.
const HEADER: usize = 2;

/// Collects written bytes until one frame is whole.
#[derive(Debug, Default)]
pub struct FrameWriter {
    /// The bytes of the frame in progress (header included); never more
    /// than one frame.
    pending: Vec<u8>,
}

/// The length of the first frame of `bytes` (header included) when all of
/// it is there.
fn whole_frame(bytes: &[u8]) -> Option<usize> {
    let header: [u8; HEADER] = bytes.get(..HEADER)?.try_into().ok()?;
    let len = HEADER + usize::from(u16::from_be_bytes(header));
    (bytes.len() >= len).then_some(len)
}

impl FrameWriter {
    /// Writes `data` through `send` (which sends one datagram payload),
    /// returning how many bytes of `data` were taken. Follows
    /// `AsyncWrite::poll_write`: `Pending` means nothing was taken.
    pub fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
        mut send: impl FnMut(&mut Context<'_>, &[u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_flush(cx, &mut send))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Fast path: a whole frame at the front of `data` goes out
        // without being copied.
        if self.pending.is_empty() {
            if let Some(len) = whole_frame(data) {
                ready!(send(cx, &data[HEADER..len]))?;
                return Poll::Ready(Ok(len));
            }
        }
        // A partial frame: keep what belongs to it.
        let wanted = match whole_frame_len(&self.pending, data) {
            Some(len) => len - self.pending.len(),
            None => HEADER - self.pending.len(),
        };
        let taken = wanted.min(data.len());
        self.pending.extend_from_slice(&data[..taken]);
        // Sending now is an optimisation; if the socket is busy the frame
        // waits for the next write or flush.
        if let Poll::Ready(Err(error)) = self.poll_flush(cx, &mut send) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(taken))
    }

    /// Sends a buffered whole frame, if there is one.
    pub fn poll_flush(
        &mut self,
        cx: &mut Context<'_>,
        mut send: impl FnMut(&mut Context<'_>, &[u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<()>> {
        if let Some(len) = whole_frame(&self.pending) {
            ready!(send(cx, &self.pending[HEADER..len]))?;
            self.pending.clear();
        }
        Poll::Ready(Ok(()))
    }
}

/// The frame length once `pending` (a frame's start) is followed by
/// `more`, when the header is known.
fn whole_frame_len(pending: &[u8], more: &[u8]) -> Option<usize> {
    let mut header = [0u8; HEADER];
    for (index, byte) in header.iter_mut().enumerate() {
        *byte = match pending.get(index) {
            Some(byte) => *byte,
            None => *more.get(index - pending.len())?,
        };
    }
    Some(HEADER + usize::from(u16::from_be_bytes(header)))
}

/// Hands out one datagram at a time as a frame.
#[derive(Debug, Default)]
pub struct FrameReader {
    /// Header plus payload of the datagram being read out.
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
}

impl FrameReader {
    /// Whether the last datagram was read out completely.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Receives the next datagram through `receive` (which fills the
    /// payload space) when the previous one is read out, then copies as
    /// much of the frame as fits into `out`.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
        receive: impl FnOnce(&mut Context<'_>, &mut ReadBuf<'_>) -> Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        if self.is_empty() {
            if self.buffer.is_empty() {
                self.buffer = vec![0u8; HEADER + MAX_PACKET].into_boxed_slice();
            }
            let mut payload = ReadBuf::new(&mut self.buffer[HEADER..]);
            ready!(receive(cx, &mut payload))?;
            let len = payload.filled().len();
            self.load_header(len);
        }
        self.copy_out(out);
        Poll::Ready(Ok(()))
    }

    /// Loads a datagram given as bytes (dokodemo-door's queued packets).
    pub fn load(&mut self, payload: &[u8]) {
        let len = payload.len().min(MAX_PACKET);
        if self.buffer.len() < HEADER + len {
            self.buffer = vec![0u8; HEADER + MAX_PACKET].into_boxed_slice();
        }
        self.buffer[HEADER..HEADER + len].copy_from_slice(&payload[..len]);
        self.load_header(len);
    }

    fn load_header(&mut self, len: usize) {
        let header = (len as u16).to_be_bytes();
        self.buffer[..HEADER].copy_from_slice(&header);
        self.start = 0;
        self.end = HEADER + len;
    }

    /// Copies buffered frame bytes into `out`.
    pub fn copy_out(&mut self, out: &mut ReadBuf<'_>) {
        let take = out.remaining().min(self.end - self.start);
        out.put_slice(&self.buffer[self.start..self.start + take]);
        self.start += take;
    }
}

/// A connected UDP socket as a packet stream: each frame written is one
/// datagram to the peer, each datagram from the peer is read as a frame.
#[derive(Debug)]
pub struct ConnectedDatagrams {
    socket: UdpSocket,
    reader: FrameReader,
    writer: FrameWriter,
}

impl ConnectedDatagrams {
    pub fn new(socket: UdpSocket) -> ConnectedDatagrams {
        ConnectedDatagrams {
            socket,
            reader: FrameReader::default(),
            writer: FrameWriter::default(),
        }
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }
}

impl rayback_core::AsyncStream for ConnectedDatagrams {}

impl AsyncRead for ConnectedDatagrams {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let socket = &this.socket;
        this.reader
            .poll_read(cx, out, |cx, payload| socket.poll_recv(cx, payload))
    }
}

impl AsyncWrite for ConnectedDatagrams {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let socket = &this.socket;
        this.writer
            .poll_write(cx, data, |cx, payload| socket.poll_send(cx, payload))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let socket = &this.socket;
        this.writer
            .poll_flush(cx, |cx, payload| socket.poll_send(cx, payload))
    }

    /// UDP has no half-close: flushing is all there is to do.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    struct NoopWaker;

    impl Wake for NoopWaker {
        fn wake(self: Arc<Self>) {}
    }

    fn noop_waker() -> Waker {
        Waker::from(Arc::new(NoopWaker))
    }

    /// Feeds `input` to a writer in pieces of `step` bytes; returns the
    /// datagrams sent.
    fn write_in_steps(input: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut writer = FrameWriter::default();
        let mut sent = Vec::new();
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut offset = 0;
        while offset < input.len() {
            let end = (offset + step).min(input.len());
            let send = |_: &mut Context<'_>, payload: &[u8]| {
                sent.push(payload.to_vec());
                Poll::Ready(Ok(payload.len()))
            };
            match writer.poll_write(&mut cx, &input[offset..end], send) {
                Poll::Ready(Ok(taken)) => {
                    assert!(taken > 0);
                    offset += taken;
                }
                other => panic!("{other:?}"),
            }
        }
        sent
    }

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            out.extend_from_slice(payload);
        }
        out
    }

    #[test]
    fn writer_rebuilds_datagrams_from_any_split() {
        let big = vec![7u8; 1000];
        let payloads: [&[u8]; 4] = [b"hello", b"", &big, b"x"];
        let input = framed(&payloads);
        for step in [1, 2, 3, 7, 1001, input.len()] {
            let sent = write_in_steps(&input, step);
            assert_eq!(
                sent,
                payloads.iter().map(|p| p.to_vec()).collect::<Vec<_>>(),
                "step {step}"
            );
        }
    }

    #[test]
    fn writer_waits_for_a_busy_socket_without_taking_bytes() {
        let mut writer = FrameWriter::default();
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let input = framed(&[b"abc"]);
        let busy = |_: &mut Context<'_>, _: &[u8]| Poll::Pending;
        assert!(writer.poll_write(&mut cx, &input, busy).is_pending());
        // A split frame is buffered, then flushed once the socket is free.
        assert!(matches!(
            writer.poll_write(&mut cx, &input[..4], busy),
            Poll::Ready(Ok(4))
        ));
        assert!(matches!(
            writer.poll_write(&mut cx, &input[4..], busy),
            Poll::Ready(Ok(1))
        ));
        assert!(writer.poll_flush(&mut cx, busy).is_pending());
        assert!(writer.poll_write(&mut cx, b"more", busy).is_pending());
        let mut sent = Vec::new();
        let free = |_: &mut Context<'_>, payload: &[u8]| {
            sent.push(payload.to_vec());
            Poll::Ready(Ok(payload.len()))
        };
        assert!(matches!(
            writer.poll_flush(&mut cx, free),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(sent, vec![b"abc".to_vec()]);
    }

    #[test]
    fn reader_hands_out_frames_in_small_pieces() {
        let mut reader = FrameReader::default();
        reader.load(b"hello");
        let mut got = Vec::new();
        while !reader.is_empty() {
            let mut byte = [0u8; 2];
            let mut out = ReadBuf::new(&mut byte);
            reader.copy_out(&mut out);
            got.extend_from_slice(out.filled());
        }
        assert_eq!(got, framed(&[b"hello"]));
    }
}
