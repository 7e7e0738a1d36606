//! What a mux server does with each sub-stream the peer opens: the
//! [`SessionHandler`] trait. The public server ([`crate::server`]) wraps
//! it in the driver's accept callback, so the driver never names it.

use std::io;
use std::net::SocketAddr;

use async_trait::async_trait;
use rayback_core::{Destination, Stream};

/// What a server does with each session the peer opens.
#[async_trait]
pub trait SessionHandler: Send + Sync + 'static {
    /// Carries `stream` (a sub-stream; core packet framing for UDP) toward
    /// `destination`. `source` is the visitor the peer named in its New
    /// (a Rayback portal's extension; `None` from V2Ray): the peer's word,
    /// for a handler that trusts its peer (the bridge trusts the portal it
    /// dialled) to use or to ignore. Runs in its own task; an error is
    /// logged.
    async fn handle(
        &self,
        destination: Destination,
        source: Option<SocketAddr>,
        stream: Stream,
    ) -> io::Result<()>;
}
