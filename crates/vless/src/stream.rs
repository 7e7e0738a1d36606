//! [`VlessStream`]: a VLESS connection after the request as
//! `AsyncRead + AsyncWrite`. VLESS has no body encoding, so the stream only
//! adds a header in front of what is written and (client side) takes the
//! response header off the front of what is read.
//!
//! | side | writes | reads |
//! |---|---|---|
//! | client | request header, then payload | response header (decoded lazily, on the first read, as 4.34), then payload |
//! | server | response header, then payload | bytes that came with the request, then payload |
//!
//! The header leaves with the first payload, on flush or shutdown, or
//! [`HEADER_FLUSH_DELAY`] after the stream was made once it is read (4.34
//! waits 100 ms for a first payload the same way), so a protocol where the
//! far side speaks first still works.
//!
//! Not here: the header codec ([`crate::header`]), sockets and dialling.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use rayback_core::ReadAhead;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::header;

/// How long a header waits for a first payload to travel with.
pub const HEADER_FLUSH_DELAY: Duration = Duration::from_millis(100);

/// The response header is at most 2 + 255 bytes.
const RESPONSE_BUFFER: usize = 257;

enum ReadState {
    /// Client: the response header has not been read whole yet.
    Response(Vec<u8>),
    /// Bytes read ahead (the server's request leftovers, the client's
    /// bytes after the response header) to deliver first.
    Ahead(ReadAhead),
    Body,
}

/// A VLESS connection's payload over `S`.
pub struct VlessStream<S> {
    inner: S,
    read_state: ReadState,
    /// Output not yet written to `inner` (the header, with the first
    /// payload once there is one).
    out: Vec<u8>,
    out_pos: usize,
    /// The header in `out` waits for a payload.
    holding_header: bool,
    header_deadline: Instant,
    header_timer: Option<Pin<Box<Sleep>>>,
}

impl<S> VlessStream<S> {
    /// The client side: `request` (encoded) goes out first; the response
    /// header is expected first on read.
    pub fn client(inner: S, request: Vec<u8>) -> VlessStream<S> {
        VlessStream::new(inner, request, ReadState::Response(Vec::new()))
    }

    /// The server side: a response header goes out first; `already_read`
    /// is payload that arrived together with the request header.
    pub fn server(inner: S, already_read: &[u8]) -> VlessStream<S> {
        let mut response = Vec::with_capacity(2);
        header::encode_response(&mut response);
        let read_state = if already_read.is_empty() {
            ReadState::Body
        } else {
            ReadState::Ahead(ReadAhead::new(already_read.to_vec()))
        };
        VlessStream::new(inner, response, read_state)
    }

    fn new(inner: S, header: Vec<u8>, read_state: ReadState) -> VlessStream<S> {
        VlessStream {
            inner,
            read_state,
            out: header,
            out_pos: 0,
            holding_header: true,
            header_deadline: Instant::now() + HEADER_FLUSH_DELAY,
            header_timer: None,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> VlessStream<S> {
    /// Writes all of `out` to the inner stream.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let written =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_pos..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += written;
        }
        self.out_pos = 0;
        self.out = Vec::new();
        Poll::Ready(Ok(()))
    }

    fn release_header(&mut self) {
        self.holding_header = false;
        self.header_timer = None;
    }

    /// From the read side: sends a held header once its delay passed, and
    /// keeps pushing pending output out (a write may have left some).
    fn poll_pending_output(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.holding_header {
            let deadline = self.header_deadline;
            let timer = self
                .header_timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            self.release_header();
        }
        match self.poll_write_out(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Ok(()),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> rayback_core::AsyncStream
    for VlessStream<S>
{
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for VlessStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.poll_pending_output(cx)?;
        loop {
            match &mut this.read_state {
                ReadState::Body => return Pin::new(&mut this.inner).poll_read(cx, buf),
                ReadState::Ahead(ahead) => {
                    if ahead.read_into(buf) {
                        return Poll::Ready(Ok(()));
                    }
                    this.read_state = ReadState::Body;
                }
                ReadState::Response(got) => {
                    let mut chunk = [0u8; RESPONSE_BUFFER];
                    let mut chunk_buf = ReadBuf::new(&mut chunk);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk_buf))?;
                    let filled = chunk_buf.filled();
                    if filled.is_empty() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "vless server closed before its response header",
                        )));
                    }
                    got.extend_from_slice(filled);
                    match header::decode_response(got) {
                        Ok(Some(used)) => {
                            let rest = got.split_off(used);
                            this.read_state = if rest.is_empty() {
                                ReadState::Body
                            } else {
                                ReadState::Ahead(ReadAhead::new(rest))
                            };
                        }
                        Ok(None) => {}
                        Err(error) => {
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("vless response: {error}"),
                            )))
                        }
                    }
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for VlessStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.holding_header && !data.is_empty() {
            // The header leaves with this first payload, in one write.
            this.release_header();
            this.out.extend_from_slice(data);
            if let Poll::Ready(result) = this.poll_write_out(cx) {
                result?;
            }
            return Poll::Ready(Ok(data.len()));
        }
        ready!(this.poll_write_out(cx))?;
        this.release_header();
        Pin::new(&mut this.inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.release_header();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.release_header();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn client_sends_header_with_payload_and_strips_response() {
        let (near, mut far) = tokio::io::duplex(4096);
        let mut client = VlessStream::client(near, b"HEAD".to_vec());
        client.write_all(b"hello").await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0u8; 9];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"HEADhello");
        // The response header arrives in pieces, with payload behind it.
        far.write_all(&[0]).await.unwrap();
        far.write_all(&[2, 0x12, 0, b'o', b'k']).await.unwrap();
        let mut reply = [0u8; 2];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"ok");
    }

    #[tokio::test]
    async fn client_refuses_a_bad_response() {
        let (near, mut far) = tokio::io::duplex(4096);
        let mut client = VlessStream::client(near, b"HEAD".to_vec());
        far.write_all(&[7, 0, 1]).await.unwrap();
        let error = client.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        drop(far);
        let (near, far) = tokio::io::duplex(4096);
        let mut client = VlessStream::client(near, Vec::new());
        drop(far);
        let error = client.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test(start_paused = true)]
    async fn header_goes_out_alone_after_the_delay_when_reading() {
        let (near, mut far) = tokio::io::duplex(4096);
        let mut server = VlessStream::server(near, b"early");
        let mut early = [0u8; 5];
        server.read_exact(&mut early).await.unwrap();
        assert_eq!(&early, b"early");
        let reader = tokio::spawn(async move {
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.map(|_| rest)
        });
        let mut response = [0u8; 2];
        far.read_exact(&mut response).await.unwrap();
        assert_eq!(response, [0, 0]);
        far.write_all(b"late").await.unwrap();
        drop(far);
        assert_eq!(reader.await.unwrap().unwrap(), b"late");
    }
}
