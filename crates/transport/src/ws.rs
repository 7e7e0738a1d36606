//! WebSocket (`network: "ws"`), as V2Ray 4.34 runs it: the client sends
//! an HTTP/1.1 upgrade to `wsSettings.path` with `wsSettings.headers`; the
//! server answers 404 to any other path; then every write is one binary
//! message and reads join the messages' payloads into one byte stream.
//! The handshake and the framing are tungstenite's; [`WsStream`] only turns
//! messages into bytes and back.
//!
//! Like V2Ray, the server takes the first `X-Forwarded-For` address (when
//! it is an IP) as the connection's source, so a portal behind nginx sees
//! the visitor. It does not check `Host`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::{Sink, Stream};
use rayback_core::{Address, WsSettings};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// The framing's limits: messages are written through at once (the
/// protocol above batches), and nothing larger than a peer could
/// reasonably send is buffered.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

/// A WebSocket connection seen as a byte stream.
pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// What is left of the message being read.
    reading: Bytes,
}

/// Dials the WebSocket of `settings` over `stream`, which reaches
/// `address:port`; `tls` says whether `stream` is TLS (for the default
/// port of the `Host` header).
pub async fn connect<S>(
    stream: S,
    settings: &WsSettings,
    address: &Address,
    port: u16,
    tls: bool,
) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let host = match address {
        Address::Ipv6(ip) => format!("[{ip}]"),
        other => other.to_string(),
    };
    let default_port = if tls { 443 } else { 80 };
    let authority = if port == default_port {
        host
    } else {
        format!("{host}:{port}")
    };
    let uri = format!("ws://{authority}{}", settings.path);
    let mut request = uri
        .as_str()
        .into_client_request()
        .map_err(|error| invalid(format!("WebSocket request to {uri}: {error}")))?;
    for (name, value) in &settings.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|error| invalid(format!("WebSocket header {name:?}: {error}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|error| invalid(format!("WebSocket header {name}: {error}")))?;
        request.headers_mut().insert(name, value);
    }
    let (inner, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config()))
            .await
            .map_err(|error| ws_error(&format!("WebSocket handshake with {uri}"), error))?;
    Ok(WsStream {
        inner,
        reading: Bytes::new(),
    })
}

/// Answers a WebSocket upgrade on `stream` for `settings.path` (404 for
/// another path). Returns the stream and the `X-Forwarded-For` source, if
/// the request named one.
pub async fn accept<S>(
    stream: S,
    settings: &WsSettings,
) -> io::Result<(WsStream<S>, Option<SocketAddr>)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut forwarded = None;
    let path = settings.path.as_str();
    // The signature is tungstenite's `Callback`; its error is a whole
    // response.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        if request.uri().path() != path {
            let mut refusal = ErrorResponse::new(None);
            *refusal.status_mut() = StatusCode::NOT_FOUND;
            return Err(refusal);
        }
        forwarded = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .and_then(|first| first.trim().parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 0));
        Ok(response)
    };
    let inner = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config()))
        .await
        .map_err(|error| ws_error("WebSocket handshake", error))?;
    Ok((
        WsStream {
            inner,
            reading: Bytes::new(),
        },
        forwarded,
    ))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn ws_error(context: &str, error: WsError) -> io::Error {
    match error {
        WsError::Io(error) => io::Error::new(error.kind(), format!("{context}: {error}")),
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("{context}: closed"),
        ),
        WsError::Http(response) => io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("{context}: the server answered {}", response.status()),
        ),
        other => io::Error::new(io::ErrorKind::InvalidData, format!("{context}: {other}")),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.reading.is_empty() {
                let n = this.reading.len().min(buf.remaining());
                buf.put_slice(&this.reading.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.reading = data,
                Some(Ok(Message::Text(text))) => this.reading = Bytes::from(text),
                // Pings are answered by tungstenite; pongs and raw frames
                // carry nothing for us.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Poll::Ready(Ok(()))
                }
                Some(Err(error)) => return Poll::Ready(Err(ws_error("WebSocket", error))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = self.get_mut();
        let mut sink = Pin::new(&mut this.inner);
        ready!(sink.as_mut().poll_ready(cx)).map_err(|error| ws_error("WebSocket", error))?;
        sink.as_mut()
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(|error| ws_error("WebSocket", error))?;
        // Written through when the socket takes it; otherwise the next
        // write or flush pushes it on (and this registers for that).
        if let Poll::Ready(Err(error)) = sink.poll_flush(cx) {
            return Poll::Ready(Err(ws_error("WebSocket", error)));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_flush(cx)
            .map_err(|error| ws_error("WebSocket", error))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.get_mut().inner).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(ws_error("WebSocket", error))),
        }
    }
}
