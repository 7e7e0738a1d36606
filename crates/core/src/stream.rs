//! The one stream type every handler reads and writes.
//!
//! A TCP socket, a VMess body, a Mux.Cool sub-stream: all are a [`Stream`],
//! so a handler cannot tell one from another. Streams of UDP sessions carry
//! packets framed as described in [`crate::packet`]. [`Prefixed`] puts
//! bytes already read from a stream back in front of it; [`Counted`]
//! reports the bytes a stream moves to a [`Tally`].

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

/// A bidirectional byte stream that can move between tasks.
///
/// Each stream type says it is one (`impl AsyncStream for MyStream {}`),
/// so that one that keeps received bytes in a buffer of its own can lend
/// them through [`AsyncStream::buffered`] even from behind a [`Stream`].
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The stream's own buffer of received bytes, to read in place (tokio's
    /// `AsyncBufRead`: `poll_fill_buf`, then `consume`) instead of copying
    /// them into the caller's buffer: the relay writes them onward from
    /// there. `None` (the default) for a stream that has no such buffer;
    /// reads then go through `poll_read`. A stream may answer differently
    /// over time; the two ways read the same bytes in the same order.
    fn buffered(&mut self) -> Option<&mut (dyn AsyncBufRead + Unpin + Send)> {
        None
    }
}

impl AsyncStream for Box<dyn AsyncStream> {
    fn buffered(&mut self) -> Option<&mut (dyn AsyncBufRead + Unpin + Send)> {
        (**self).buffered()
    }
}

impl AsyncStream for tokio::net::TcpStream {}
impl AsyncStream for tokio::io::DuplexStream {}
#[cfg(unix)]
impl AsyncStream for tokio::net::UnixStream {}
impl<S: AsyncStream> AsyncStream for Prefixed<S> {}

/// A boxed [`AsyncStream`]: what inbounds accept and outbounds return.
pub type Stream = Box<dyn AsyncStream>;

/// Bytes read past a header that belong to the layer above, handed out
/// before anything more is read: what a transport read past its PROXY
/// header or HTTP head, what a proxy inbound read past its request.
#[derive(Debug, Default)]
pub struct ReadAhead {
    bytes: Vec<u8>,
    at: usize,
}

impl ReadAhead {
    pub fn new(bytes: Vec<u8>) -> ReadAhead {
        ReadAhead { bytes, at: 0 }
    }

    /// Moves what fits into `buf`; false when nothing was left.
    pub fn read_into(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.at == self.bytes.len() {
            return false;
        }
        let n = (self.bytes.len() - self.at).min(buf.remaining());
        buf.put_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        if self.at == self.bytes.len() {
            *self = ReadAhead::default();
        }
        true
    }
}

/// A stream with bytes already read from it put back in front, and
/// optionally how reading it had ended (reported after those bytes).
/// Writes go straight to the inner stream.
#[derive(Debug)]
pub struct Prefixed<S> {
    ahead: ReadAhead,
    /// `None` while the inner stream is open; `Some(Ok(()))`: it had
    /// ended (end of stream, every read after the bytes); `Some(Err)`: a
    /// read had failed (reported once, after the bytes).
    ended: Option<io::Result<()>>,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `bytes`, then whatever `inner` reads.
    pub fn new(bytes: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            ahead: ReadAhead::new(bytes),
            ended: None,
            inner,
        }
    }

    /// `bytes`, then how reading `inner` had ended (`Ok`: end of stream).
    pub fn ended(bytes: Vec<u8>, inner: S, end: io::Result<()>) -> Prefixed<S> {
        Prefixed {
            ended: Some(end),
            ..Prefixed::new(bytes, inner)
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ahead.read_into(buf) {
            return Poll::Ready(Ok(()));
        }
        match this.ended.take() {
            None => Pin::new(&mut this.inner).poll_read(cx, buf),
            Some(Ok(())) => {
                this.ended = Some(Ok(()));
                Poll::Ready(Ok(()))
            }
            Some(Err(error)) => Poll::Ready(Err(error)),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Where a [`Counted`] stream reports what it moved: the metrics of a
/// session's tags, the byte counters of a tunnel.
pub trait Tally {
    /// `read` bytes came out of the stream, `written` went into it (one of
    /// them is 0 on each call).
    fn add(&self, read: u64, written: u64);
}

/// A stream that reports every byte it reads and writes to its [`Tally`]
/// (on the data path, so a tally should cost an atomic add or two).
pub struct Counted<S, T> {
    inner: S,
    tally: T,
}

impl<S, T: Tally> Counted<S, T> {
    pub fn new(inner: S, tally: T) -> Counted<S, T> {
        Counted { inner, tally }
    }
}

impl<S: AsyncRead + Unpin, T: Tally + Unpin> AsyncRead for Counted<S, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.tally.add(read as u64, 0);
        }
        result
    }
}

impl<S: AsyncStream, T: Tally + Unpin + Send + 'static> AsyncStream for Counted<S, T> {
    fn buffered(&mut self) -> Option<&mut (dyn AsyncBufRead + Unpin + Send)> {
        self.inner.buffered()?;
        Some(self)
    }
}

/// Lent bytes count when they are consumed. Only reached through
/// [`AsyncStream::buffered`], which lends only when the inner stream does.
impl<S: AsyncStream, T: Tally + Unpin> AsyncBufRead for Counted<S, T> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        match self.get_mut().inner.buffered() {
            Some(inner) => Pin::new(inner).poll_fill_buf(cx),
            None => Poll::Ready(Err(io::Error::other("stream lends no buffer"))),
        }
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        if let Some(inner) = this.inner.buffered() {
            Pin::new(inner).consume(amt);
            this.tally.add(amt as u64, 0);
        }
    }
}

impl<S: AsyncWrite + Unpin, T: Tally + Unpin> AsyncWrite for Counted<S, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = result {
            self.tally.add(0, written as u64);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = result {
            self.tally.add(0, written as u64);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn prefixed_hands_out_the_bytes_then_the_inner_stream() {
        let mut stream = Prefixed::new(b"head ".to_vec(), &b"tail"[..]);
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"head tail");
    }

    #[tokio::test]
    async fn an_end_seen_before_is_reported_after_the_bytes() {
        let failed = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        let mut stream = Prefixed::ended(b"ab".to_vec(), &b"never read"[..], Err(failed));
        let mut byte = [0u8; 2];
        stream.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"ab");
        let error = stream.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);

        let mut stream = Prefixed::ended(b"ab".to_vec(), &b"never read"[..], Ok(()));
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"ab");
        assert_eq!(stream.read(&mut byte).await.unwrap(), 0);
    }
}
