#![doc = include_str!("../README.md")]

mod domain;
mod error;
pub mod geodata;
mod ip;
mod port;
mod router;
pub mod sniff;

pub use domain::{parse_entry, DomainIndex, DomainIndexBuilder, DomainPattern, ParseContext};
pub use error::RoutingError;
pub use geodata::AssetLocator;
pub use ip::{Cidr, IpSet};
pub use port::PortList;
/// What the router is built from: core's plain data, which `config` fills
/// and [`Router::new`] checks and compiles.
pub use rayback_core::{
    BalancerSettings, DomainStrategy, RoutingSettings, RuleNetwork, RuleSettings, RuleTarget,
};
pub use router::{ip_condition, Route, Router};
