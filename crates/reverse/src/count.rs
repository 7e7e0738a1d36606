//! Byte counters of tunnel connections, for `/status` and the status
//! page: `counted` wraps a tunnel's carrier and adds what it reads and
//! writes to shared [`ByteCounters`] (relaxed atomic adds, no lock on the
//! data path).
//!
//! Directions are the visitor's: *up* is toward the service behind the
//! bridge, *down* back toward the public client. So a portal's writes
//! into a tunnel are up and its reads down; a bridge's are the other way
//! round. The bytes are the carrier's (Mux.Cool frames, before VMess), so
//! they include the mux headers and the control session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rayback_core::{Counted, Stream, Tally};

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

/// What a tunnel's carrier reports its bytes to: the tunnel's own
/// [`ByteCounters`] and its owner's totals, in the visitor's directions.
struct TunnelTally {
    end: End,
    counters: Vec<Arc<ByteCounters>>,
}

impl Tally for TunnelTally {
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

/// A tunnel's carrier (at `end`) whose bytes count for each of `counters`.
pub(crate) fn counted(inner: Stream, end: End, counters: Vec<Arc<ByteCounters>>) -> Stream {
    Box::new(Counted::new(inner, TunnelTally { end, counters }))
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
            let mut counted = counted(Box::new(near), end, vec![tunnel.clone(), total.clone()]);
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
