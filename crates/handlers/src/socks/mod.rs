//! The `socks` inbound (SOCKS 4, 4a and 5 with RFC 1929 passwords and UDP
//! ASSOCIATE), as V2Ray 4.34's `proxy/socks` server: `codec` is the
//! sans-IO wire format, `inbound` the driver that owns the sockets. The
//! SOCKS outbound is not here (Rayback has none).

pub mod codec;
mod inbound;

pub use codec::SocksAuth;
pub use inbound::{SocksInbound, SocksSettings};
