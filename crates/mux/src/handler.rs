//! What a mux server does with each sub-stream the peer opens: the
//! [`SessionHandler`] trait. The public server ([`crate::server`]) wraps
//! it in the driver's accept callback, so the driver never names it.

use std::io;

use async_trait::async_trait;
use rayback_core::{Destination, Stream};

/// What a server does with each session the peer opens.
#[async_trait]
pub trait SessionHandler: Send + Sync + 'static {
    /// Carries `stream` (a sub-stream; core packet framing for UDP) toward
    /// `destination`. Runs in its own task; an error is logged.
    async fn handle(&self, destination: Destination, stream: Stream) -> io::Result<()>;
}
