//! Counters of the VLESS handlers of one process: handshakes accepted,
//! refused by [`FailureReason`], and connections the clients opened.
//!
//! Plain atomics, read by whoever exports metrics (the app's `/metrics`
//! as `rayback_vless_*`); this module does no exporting itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::header::HeaderError;

/// Why a server refused a handshake, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// No user has the request's ID.
    UnknownUser,
    /// A version, command, address or addons the server does not take.
    UnsupportedRequest,
    /// The handshake deadline passed before a complete header arrived.
    Timeout,
    /// The client closed (or reset) before a complete header arrived.
    ClientLeft,
    /// The source address already had its limit of connections in their
    /// handshake; this one was closed at once.
    TooManyFromSource,
    /// The transport's handshake failed (TLS, WebSocket, PROXY header).
    Transport,
}

impl FailureReason {
    /// Every reason, in metric order.
    pub const ALL: [FailureReason; 6] = [
        FailureReason::UnknownUser,
        FailureReason::UnsupportedRequest,
        FailureReason::Timeout,
        FailureReason::ClientLeft,
        FailureReason::TooManyFromSource,
        FailureReason::Transport,
    ];

    /// A short snake_case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::UnknownUser => "unknown_user",
            FailureReason::UnsupportedRequest => "unsupported_request",
            FailureReason::Timeout => "timeout",
            FailureReason::ClientLeft => "client_left",
            FailureReason::TooManyFromSource => "too_many_from_source",
            FailureReason::Transport => "transport",
        }
    }

    fn index(self) -> usize {
        FailureReason::ALL
            .iter()
            .position(|reason| *reason == self)
            .unwrap_or(0)
    }

    /// The reason a refused header counts under.
    pub fn of(error: &HeaderError) -> FailureReason {
        match error {
            HeaderError::UnknownUser => FailureReason::UnknownUser,
            _ => FailureReason::UnsupportedRequest,
        }
    }
}

/// The counters. Handlers take it as `Arc<VlessMetrics>`.
#[derive(Debug, Default)]
pub struct VlessMetrics {
    /// Requests a server accepted.
    pub handshakes_accepted: AtomicU64,
    handshake_failures: [AtomicU64; FailureReason::ALL.len()],
    /// Connections a client (outbound) opened.
    pub connections_opened: AtomicU64,
    /// Connections that were not VLESS and went to a fallback.
    pub fallbacks: AtomicU64,
}

impl VlessMetrics {
    pub fn new() -> VlessMetrics {
        VlessMetrics::default()
    }

    /// The counters every VLESS handler of this process shares (kept
    /// across reloads, like the process itself).
    pub fn process() -> Arc<VlessMetrics> {
        static PROCESS: OnceLock<Arc<VlessMetrics>> = OnceLock::new();
        PROCESS.get_or_init(Default::default).clone()
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
        let metrics = VlessMetrics::new();
        metrics.record_failure(FailureReason::Timeout);
        metrics.record_failure(FailureReason::of(&HeaderError::UnknownUser));
        metrics.record_failure(FailureReason::of(&HeaderError::Version(3)));
        assert_eq!(metrics.failures(FailureReason::Timeout), 1);
        assert_eq!(metrics.failures(FailureReason::UnknownUser), 1);
        assert_eq!(metrics.failures(FailureReason::UnsupportedRequest), 1);
        assert_eq!(metrics.total_failures(), 3);
    }
}
