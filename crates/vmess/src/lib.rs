#![doc = include_str!("../README.md")]

pub mod body;
pub mod crypto;
pub mod error;
pub mod header;
pub mod id;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod stream;
pub mod validator;

pub use error::{FailureReason, HandshakeError, VmessError};
pub use header::{BodySecurity, Security};
pub use id::UserId;
pub use inbound::{VmessInbound, VmessInboundSettings};
pub use metrics::VmessMetrics;
pub use outbound::{OutboundUser, VmessOutbound, VmessOutboundSettings, VmessServer};
pub use stream::{BudgetWatch, VmessStream};
pub use validator::ServerUser;
