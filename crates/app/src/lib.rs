#![doc = include_str!("../README.md")]

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
