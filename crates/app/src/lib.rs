//! The application: turns a configuration into running inbounds, a router,
//! outbounds and the reverse proxy's bridges and portals, and runs them
//! until told to stop.
//!
//! This is the only crate where configuration becomes components
//! ([`build`]); the binaries only parse flags ([`cli`]) and call [`run`].
//! The [`dispatcher`] is the router plus the outbounds: every inbound,
//! every bridge and every mux server hands its sessions to it.

pub mod access;
pub mod build;
pub mod cli;
pub mod dispatcher;
pub mod dns;
pub mod endpoint;
pub mod logging;
pub mod metrics;
pub mod run;
pub mod sniff;

pub use build::check;
pub use cli::Role;
pub use run::{start, Running};
