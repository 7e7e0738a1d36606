//! The `blackhole` outbound: swallows sessions, as V2Ray 4.34's
//! `proxy/blackhole` does.
//!
//! With `"response": {"type": "none"}` (the default) the connection is
//! closed at once. With `{"type": "http"}` the client first gets 4.34's
//! canned response, byte for byte (LF line ends, two empty lines at the
//! end, checked against the real binary by the tests):
//!
//! ```text
//! HTTP/1.1 403 Forbidden
//! Connection: close
//! Cache-Control: max-age=3600, public
//! Content-Length: 0
//!
//!
//! ```
//!
//! 4.34 then waits a second so the response gets out before it closes;
//! Rayback half-closes after the response and drains the client's
//! request for up to that second, so closing cannot reset the response
//! away. Not here: anything about which sessions get here (routing).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use rayback_core::{BlackholeResponse, Outbound, Policy, Session, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The response 4.34 writes for `"type": "http"`.
pub const HTTP_403: &[u8] =
    b"HTTP/1.1 403 Forbidden\nConnection: close\nCache-Control: max-age=3600, public\nContent-Length: 0\n\n\n";

/// How long an HTTP response is given to leave before the close.
const LINGER: Duration = Duration::from_secs(1);

/// The bytes a blackhole with `response` writes before closing: nothing,
/// or [`HTTP_403`]. (`response.type` itself is core's
/// [`BlackholeResponse`].)
pub fn response_bytes(response: BlackholeResponse) -> &'static [u8] {
    match response {
        BlackholeResponse::None => b"",
        BlackholeResponse::Http => HTTP_403,
    }
}

/// The `blackhole` outbound.
#[derive(Clone, Copy, Debug, Default)]
pub struct Blackhole {
    response: BlackholeResponse,
}

impl Blackhole {
    pub fn new(response: BlackholeResponse) -> Blackhole {
        Blackhole { response }
    }
}

#[async_trait]
impl Outbound for Blackhole {
    /// A stream that reads the response (if any) and then fails, and fails
    /// every write: 4.34 interrupts the link, and reads and writes on an
    /// interrupted link fail with "closed pipe".
    async fn connect(&self, _session: &Session) -> io::Result<Stream> {
        Ok(Box::new(BlackholeStream {
            response: response_bytes(self.response),
        }))
    }

    async fn handle(
        &self,
        _session: Session,
        mut inbound: Stream,
        _policy: &Policy,
    ) -> io::Result<()> {
        let response = response_bytes(self.response);
        if response.is_empty() {
            return Ok(());
        }
        let linger = async {
            inbound.write_all(response).await?;
            inbound.shutdown().await?;
            let mut sink = [0u8; 1024];
            while inbound.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        };
        // Either outcome ends the session; a client that went away early
        // is no error of ours.
        let _ = tokio::time::timeout(LINGER, linger).await;
        Ok(())
    }
}

/// What [`Blackhole::connect`] returns.
struct BlackholeStream {
    /// Response bytes not read yet.
    response: &'static [u8],
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "blackholed")
}

impl rayback_core::AsyncStream for BlackholeStream {}

impl AsyncRead for BlackholeStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.response.is_empty() {
            return Poll::Ready(Err(closed()));
        }
        let take = out.remaining().min(self.response.len());
        out.put_slice(&self.response[..take]);
        self.response = &self.response[take..];
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for BlackholeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(closed()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayback_core::{Address, Destination};

    #[tokio::test]
    async fn connect_reads_the_response_then_fails() {
        let session = Session::new(Destination::tcp(Address::parse("1.2.3.4").unwrap(), 80));
        let mut stream = Blackhole::new(BlackholeResponse::Http)
            .connect(&session)
            .await
            .unwrap();
        let mut got = vec![0u8; HTTP_403.len()];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(got, HTTP_403);
        assert_eq!(
            stream.read(&mut got).await.unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        assert!(stream.write_all(b"x").await.is_err());

        let mut none = Blackhole::default().connect(&session).await.unwrap();
        assert!(none.read(&mut got).await.is_err());
    }
}
