//! [`Conn`]: one connection after its transport handshake, whatever the
//! layers (TCP, TLS, the HTTP disguise, WebSocket), as one `AsyncRead + AsyncWrite` type.
//!
//! An enum rather than a boxed trait object, so that plain TCP, the common
//! case, costs one branch per call and keeps vectored writes.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

use crate::http::Disguised;
use crate::ws::WsStream;
use rayback_core::ReadAhead;

/// The socket, with any bytes read past a PROXY protocol header handed
/// out first.
pub struct Base {
    tcp: TcpStream,
    prefix: ReadAhead,
}

impl Base {
    pub(crate) fn new(tcp: TcpStream, prefix: Vec<u8>) -> Base {
        Base {
            tcp,
            prefix: ReadAhead::new(prefix),
        }
    }
}

/// TCP, or TLS over it.
pub enum Secured {
    Tcp(Base),
    Tls(Box<TlsStream<Base>>),
}

/// A connection ready for its protocol.
pub enum Conn {
    Plain(Secured),
    /// Behind the TCP HTTP header disguise.
    Http(Box<Disguised<Secured>>),
    Ws(Box<WsStream<Secured>>),
}

impl AsyncRead for Base {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.read_into(buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Base {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Implements `AsyncRead + AsyncWrite` for an enum by handing each call to
/// the variant's stream.
macro_rules! delegate_io {
    ($type:ident { $($variant:ident),+ }) => {
        impl AsyncRead for $type {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($type::$variant(inner) => Pin::new(inner).poll_read(cx, buf),)+
                }
            }
        }

        impl AsyncWrite for $type {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($type::$variant(inner) => Pin::new(inner).poll_write(cx, buf),)+
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($type::$variant(inner) => Pin::new(inner).poll_write_vectored(cx, bufs),)+
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $($type::$variant(inner) => inner.is_write_vectored(),)+
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($type::$variant(inner) => Pin::new(inner).poll_flush(cx),)+
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($type::$variant(inner) => Pin::new(inner).poll_shutdown(cx),)+
                }
            }
        }
    };
}

/// A transport connection lends no buffer of its own: the layer above reads
/// it into its own.
impl rayback_core::AsyncStream for Conn {}

delegate_io!(Secured { Tcp, Tls });
delegate_io!(Conn { Plain, Http, Ws });
