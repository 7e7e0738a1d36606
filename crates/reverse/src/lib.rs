#![doc = include_str!("../README.md")]

pub mod bridge;
pub mod control;
pub mod count;
pub mod portal;

pub use bridge::{Bridge, BridgeSettings, BridgeStatus, PortalLinkStatus};
pub use count::ByteCounters;
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
