//! What a proxy server does with connections before it knows who they
//! are: a cap on handshakes in progress per source address, and the
//! silent drain that answers a failed handshake. VMess and VLESS share
//! both, so a prober learns the same (nothing) from either.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// Counts connections still in their handshake, per source address.
#[derive(Clone, Debug, Default)]
pub struct HandshakeLimit {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// At most this many handshakes at once from one source (0: no limit).
    limit: usize,
}

impl HandshakeLimit {
    /// A limit of `limit` handshakes at once per source (0: no limit).
    pub fn new(limit: usize) -> HandshakeLimit {
        HandshakeLimit {
            counts: Arc::default(),
            limit,
        }
    }

    /// Counts one more handshake from `source`, or `None` when that source
    /// already has `limit` of them.
    pub fn admit(&self, source: IpAddr) -> Option<Handshaking> {
        let mut counts = self.counts.lock().expect("not poisoned");
        let count = counts.entry(source).or_insert(0);
        if self.limit > 0 && *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Handshaking {
            counts: self.counts.clone(),
            source,
        })
    }
}

/// One connection in its handshake; uncounted when dropped.
#[derive(Debug)]
pub struct Handshaking {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    source: IpAddr,
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("not poisoned");
        if let Some(count) = counts.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

/// Reads and discards until `deadline` or until the peer leaves: how a
/// server answers a handshake it refuses, so that neither the answer nor
/// the moment of closing tells a prober what was wrong.
pub async fn drain_until(socket: &mut (impl AsyncRead + Unpin), deadline: Instant) {
    let mut sink = [0u8; 2048];
    let _ = tokio::time::timeout_at(deadline, async {
        loop {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_limit_and_a_slot_back_when_one_ends() {
        let limit = HandshakeLimit::new(2);
        let source: IpAddr = "127.0.0.5".parse().unwrap();
        let other: IpAddr = "127.0.0.6".parse().unwrap();
        let first = limit.admit(source).expect("first");
        let _second = limit.admit(source).expect("second");
        assert!(limit.admit(source).is_none());
        assert!(limit.admit(other).is_some());
        drop(first);
        assert!(limit.admit(source).is_some());
    }

    #[test]
    fn zero_means_no_limit() {
        let limit = HandshakeLimit::new(0);
        let source: IpAddr = "127.0.0.5".parse().unwrap();
        let held: Vec<_> = (0..100).map(|_| limit.admit(source)).collect();
        assert!(held.iter().all(Option::is_some));
    }
}
