//! The one stream type every handler reads and writes.
//!
//! A TCP socket, a VMess body, a Mux.Cool sub-stream: all are a [`Stream`],
//! so a handler cannot tell one from another. Streams of UDP sessions carry
//! packets framed as described in [`crate::packet`].

use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream that can move between tasks.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T> AsyncStream for T where T: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

/// A boxed [`AsyncStream`]: what inbounds accept and outbounds return.
pub type Stream = Box<dyn AsyncStream>;
