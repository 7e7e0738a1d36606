//! Reverse proxy: the bridge and the portal, as V2Ray 4.34 runs them, minus
//! its known defects.
//!
//! The **bridge** ([`Bridge`]) dials tunnel connections to its own domain
//! through the router (so routing sends them to a VMess outbound toward the
//! portal), and serves Mux.Cool on each: it is the mux *server*. Sessions
//! the portal opens go to the router with the bridge's tag as inbound tag.
//! The **portal** ([`Portal`]) is an outbound: a stream routed to it whose
//! destination is its domain is adopted as a tunnel connection and driven
//! as a mux *client*; every other stream becomes a sub-stream on the
//! least-loaded live tunnel connection.
//!
//! Both speak the control channel of [`control`]: the portal sends a
//! heartbeat every 2 s on session 1 (a UDP-typed session to the internal
//! control domain), and DRAIN when a connection should take no more
//! sessions.
//!
//! Where Rayback differs from 4.34, on the same wire:
//! - the portal never picks a closed tunnel connection (4.34 keeps picking a
//!   dead one until its 30 s cleanup);
//! - a public connection arriving while no bridge is connected waits a short,
//!   configurable time for one instead of failing at once;
//! - the bridge redials at once, with capped exponential backoff and jitter,
//!   when a tunnel connection dies, instead of at the next 2 s tick; it
//!   treats a tunnel whose heartbeats stopped as dead (Rayback portals
//!   always send them; 4.34 portals skip 1 in 64 at random, which the
//!   timeout tolerates);
//! - a draining connection keeps its sessions until they end;
//! - a Rayback portal tells a Rayback bridge who each public visitor is,
//!   in metadata bytes of the New frame that V2Ray skips, so the bridge's
//!   routing `source` rules and access log see the visitor (negotiated
//!   per tunnel in the VMess request; wire layout in [`portal`]).
//!
//! This crate sits above `core` and `mux` only; the app wires it to the
//! router and the VMess handlers.

pub mod bridge;
pub mod control;
pub mod portal;

pub use bridge::{Bridge, BridgeSettings, BridgeStatus, PortalLinkStatus};
pub use portal::{Portal, PortalSettings, TunnelStatus};

use std::time::Duration;

/// The control domain of V2Ray ≤ 4.34 (the seed page's version).
pub const CONTROL_DOMAIN_V2RAY: &str = "reverse.internal.v2ray.com";
/// The control domain of v2fly ≥ 4.35 and v5.
pub const CONTROL_DOMAIN_V2FLY: &str = "reverse.internal.v2fly.org";

/// How often the portal sends a heartbeat, and the bridge checks its
/// tunnel connections (V2Ray's 2 s).
pub const TICK: Duration = Duration::from_secs(2);

/// The bridge adds a tunnel connection when the sessions per connection
/// exceed this (V2Ray's rule: `Σ active / connections > 16`).
pub const SESSIONS_PER_CONNECTION: usize = 16;
