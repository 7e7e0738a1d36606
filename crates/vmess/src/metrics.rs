//! Counters shared by the VMess handlers of one process: handshakes by
//! outcome, nonce-counter wraps seen from peers, and connections closed for
//! running out of their own nonce budget.
//!
//! Plain atomics, read by whoever exports metrics (the app's `/metrics`);
//! this module does no exporting itself.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::FailureReason;

/// The counters. Handlers take it as `Arc<VmessMetrics>`.
#[derive(Debug, Default)]
pub struct VmessMetrics {
    /// Requests a server accepted.
    pub handshakes_accepted: AtomicU64,
    /// Requests a server refused, by [`FailureReason`] (see
    /// [`VmessMetrics::failures`]).
    handshake_failures: [AtomicU64; FailureReason::ALL.len()],
    /// Times a peer's 16-bit chunk counter wrapped (a 4.34 peer reuses
    /// nonces after 65536 chunks in one direction; Rayback tolerates it).
    pub peer_nonce_wraps: AtomicU64,
    /// Connections Rayback closed because their own send budget was spent.
    pub send_budget_exhausted: AtomicU64,
    /// Connections a client (outbound) opened.
    pub connections_opened: AtomicU64,
}

impl VmessMetrics {
    pub fn new() -> VmessMetrics {
        VmessMetrics::default()
    }

    pub fn record_failure(&self, reason: FailureReason) {
        self.handshake_failures[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Handshakes refused for `reason` so far.
    pub fn failures(&self, reason: FailureReason) -> u64 {
        self.handshake_failures[reason.index()].load(Ordering::Relaxed)
    }

    /// Handshakes refused for any reason so far.
    pub fn total_failures(&self) -> u64 {
        FailureReason::ALL
            .iter()
            .map(|reason| self.failures(*reason))
            .sum()
    }
}

pub(crate) fn increment(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_failures_by_reason() {
        let metrics = VmessMetrics::new();
        metrics.record_failure(FailureReason::Timeout);
        metrics.record_failure(FailureReason::Timeout);
        metrics.record_failure(FailureReason::ReplayedAuthId);
        assert_eq!(metrics.failures(FailureReason::Timeout), 2);
        assert_eq!(metrics.failures(FailureReason::ReplayedAuthId), 1);
        assert_eq!(metrics.failures(FailureReason::UnknownUser), 0);
        assert_eq!(metrics.total_failures(), 3);
    }
}
