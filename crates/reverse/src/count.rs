//! Byte counters of tunnel connections, for `/status` and the status
//! page: `Counted` wraps a tunnel's carrier and adds what it reads and
//! writes to shared [`ByteCounters`] (relaxed atomic adds, no lock on the
//! data path).
//!
//! Directions are the visitor's: *up* is toward the service behind the
//! bridge, *down* back toward the public client. So a portal's writes
//! into a tunnel are up and its reads down; a bridge's are the other way
//! round. The bytes are the carrier's (Mux.Cool frames, before VMess), so
//! they include the mux headers and the control session.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use rayback_core::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes moved up and down, as counted so far.
#[derive(Debug, Default)]
pub struct ByteCounters {
    up: AtomicU64,
    down: AtomicU64,
}

impl ByteCounters {
    /// Bytes toward the service.
    pub fn up(&self) -> u64 {
        self.up.load(Ordering::Relaxed)
    }

    /// Bytes back toward the public client.
    pub fn down(&self) -> u64 {
        self.down.load(Ordering::Relaxed)
    }

    fn add(&self, up: u64, down: u64) {
        if up > 0 {
            self.up.fetch_add(up, Ordering::Relaxed);
        }
        if down > 0 {
            self.down.fetch_add(down, Ordering::Relaxed);
        }
    }
}

/// Which end of the tunnel the wrapped carrier is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Reads come back from the service: down.
    Portal,
    /// Reads come from the portal, toward the service: up.
    Bridge,
}

/// A tunnel's carrier whose bytes count for several [`ByteCounters`]
/// (the tunnel's own and its owner's totals).
pub(crate) struct Counted {
    inner: Stream,
    end: End,
    counters: Vec<Arc<ByteCounters>>,
}

impl Counted {
    pub(crate) fn wrap(inner: Stream, end: End, counters: Vec<Arc<ByteCounters>>) -> Stream {
        Box::new(Counted {
            inner,
            end,
            counters,
        })
    }

    fn add(&self, read: u64, written: u64) {
        let (up, down) = match self.end {
            End::Portal => (written, read),
            End::Bridge => (read, written),
        };
        for counters in &self.counters {
            counters.add(up, down);
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.add(read as u64, 0);
        }
        result
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = result {
            self.add(0, written as u64);
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
            self.add(0, written as u64);
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_each_way_for_every_owner() {
        for (end, expect) in [(End::Portal, (5, 3)), (End::Bridge, (3, 5))] {
            let (near, mut far) = tokio::io::duplex(64);
            let tunnel = Arc::new(ByteCounters::default());
            let total = Arc::new(ByteCounters::default());
            let mut counted =
                Counted::wrap(Box::new(near), end, vec![tunnel.clone(), total.clone()]);
            counted.write_all(b"hello").await.unwrap();
            far.write_all(b"abc").await.unwrap();
            let mut got = [0u8; 3];
            counted.read_exact(&mut got).await.unwrap();
            for counters in [&tunnel, &total] {
                assert_eq!((counters.up(), counters.down()), expect, "{end:?}");
            }
        }
    }
}
