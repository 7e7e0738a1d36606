//! Routing: V2Ray 4.34 field rules that turn a [`Session`] into an
//! outbound tag.
//!
//! The `app` crate fills a [`RoutingSettings`] from the config (raw strings
//! and core's typed names, no JSON here) and compiles it once with [`Router::new`]; every session
//! then costs one [`Router::route`] call: pure, synchronous, allocation-free
//! in the common case, and independent of how many domain rules there are.
//! This crate does no IO besides reading geo data files at build time, and
//! no DNS: the caller resolves when the router answers
//! [`Route::NeedsResolve`].
//!
//! ```
//! use rayback_core::{Address, Destination, Session, Tag};
//! use rayback_routing::{AssetLocator, Route, Router, RoutingSettings, RuleSettings};
//!
//! let mut rule = RuleSettings::outbound("direct");
//! rule.domain = vec!["domain:example.com".into()];
//! let settings = RoutingSettings { rules: vec![rule], ..RoutingSettings::default() };
//! let router = Router::new(&settings, &["direct".into()], &AssetLocator::with_dirs(vec![])).unwrap();
//! let session = Session::new(Destination::tcp(Address::parse("www.example.com").unwrap(), 443));
//! assert_eq!(router.route(&session, None), Route::Outbound(Tag::new("direct")));
//! ```
//!
//! [`Session`]: rayback_core::Session

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
