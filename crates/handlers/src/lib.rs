#![doc = include_str!("../README.md")]

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
