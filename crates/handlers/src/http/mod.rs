//! The `http` inbound (an HTTP proxy: CONNECT and absolute-URI requests,
//! Basic proxy authentication), as V2Ray 4.34's `proxy/http` server:
//! `codec` is the sans-IO request-head handling, `inbound` the driver.
//! The HTTP outbound is not here (Rayback has none).

pub mod codec;
mod inbound;

pub use inbound::{HttpInbound, HttpSettings};
