//! VLESS as V2Ray 4.34 speaks it (`proxy/vless`): a sans-IO header codec,
//! and the inbound (server) and outbound (client) handlers built on it.
//!
//! Where it sits (ARCHITECTURE.md): above `core` and `transport` only.
//! `app` builds a [`VlessInbound`] or [`VlessOutbound`] from the config.
//! VLESS itself neither encrypts nor authenticates beyond the user ID;
//! privacy comes from the transport (TLS). It knows nothing of JSON,
//! routing or Mux.Cool (a Mux request is a session to `v1.mux.cool:0`).
//!
//! | module | what |
//! |---|---|
//! | [`header`] | request and response headers, UDP packet framing |
//! | [`fallback`] | which fallback a non-VLESS connection goes to, PROXY headers |
//! | [`stream`] | [`VlessStream`]: headers in front of the payload |
//! | [`inbound`] / [`outbound`] | the handlers (sockets, deadlines, dispatch) |
//! | [`metrics`] | [`VlessMetrics`] counters |
//!
//! Compatibility notes (against `v2ray` 4.34):
//! * Addons are checked for well-formedness; `Flow` and `Seed` are
//!   ignored, as 4.34 ignores them.
//! * On a failed handshake without fallbacks the server stays silent
//!   until the handshake deadline or until the client leaves, as
//!   Rayback's VMess does; 4.34 closes at once.
//! * `fallbacks` are served by `path` (and PROXY `xver`) as 4.34 serves
//!   them; choosing by `alpn` is not (the config refuses it), and a
//!   connection that closes before sending a byte is closed rather than
//!   handed to a fallback.

pub mod fallback;
pub mod header;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod stream;

pub use header::{Command, HeaderError, RequestHeader};
pub use inbound::{VlessClient, VlessInbound, VlessInboundSettings};
pub use metrics::{FailureReason, VlessMetrics};
pub use outbound::{VlessOutbound, VlessOutboundSettings, VlessServer, VlessUser};
pub use stream::VlessStream;

/// Why a VLESS outbound cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum VlessError {
    #[error("no vless server configured")]
    NoServer,
    #[error("vless server {0} has no user")]
    NoUser(String),
}
