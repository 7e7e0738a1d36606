#![doc = include_str!("../README.md")]

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
