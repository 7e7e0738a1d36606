//! Handlers: the `freedom` and `blackhole` outbounds and the
//! `dokodemo-door`, `socks` and `http` inbounds, as V2Ray 4.34 has them.
//!
//! Each handler takes a settings struct of plain values that the `app`
//! crate fills from the config (this crate never sees JSON) and implements
//! a `rayback_core` trait: [`Freedom`] and [`Blackhole`] are
//! [`Outbound`](rayback_core::Outbound)s, [`DokodemoDoor`],
//! [`SocksInbound`] and [`HttpInbound`] are
//! [`Inbound`](rayback_core::Inbound)s; each wire format they speak has a
//! sans-IO codec beside its driver (`socks::codec`, `http::codec`). UDP
//! sessions travel as packet streams (`rayback_core::packet`);
//! [`datagram`] turns them into datagrams at the socket. Not here: routing, relaying policy, VMess.

pub mod blackhole;
pub mod datagram;
pub mod dokodemo;
mod error;
pub mod freedom;
pub mod http;
pub mod socks;

pub use blackhole::{Blackhole, HTTP_403};
pub use dokodemo::{original_destination, DokodemoDoor, DokodemoSettings};
pub use error::HandlersError;
pub use freedom::{Freedom, FreedomSettings};
pub use http::{HttpInbound, HttpSettings};
pub use socks::{SocksAuth, SocksInbound, SocksSettings};
