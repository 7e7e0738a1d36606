//! What the router is built from: rules, balancers and the domain strategy,
//! as raw strings (and core's typed targets, network names and strategy)
//! the `app` crate copies out of the parsed config.
//!
//! These types carry no meaning yet: [`crate::Router::new`] checks and
//! compiles them. They deliberately mirror V2Ray 4.34's JSON field rule
//! (`infra/conf/router.go`) so that the config crate's structs map onto
//! them one field at a time; `routing` itself never sees JSON.
//!
//! Presence rules, as in V2Ray: an empty `Vec` means "no such condition";
//! a non-empty list whose entries are all empty strings (`inboundTag: [""]`)
//! is a condition that never matches; `port: Some("")` likewise never
//! matches.

/// A rule's target and its `network` names are core's: `config` parses
/// them, the router compiles them (`balancerTag` names one of
/// [`RoutingSettings::balancers`]; `unix` and unknown networks never match
/// a Rayback session).
pub use rayback_core::{RuleNetwork, RuleTarget};

/// One `"type": "field"` rule. All present conditions must hold (AND);
/// within one condition any entry may match (OR).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSettings {
    /// `inboundTag`: exact tags; empty strings are dropped.
    pub inbound_tag: Vec<String>,
    /// `domain` plus its alias `domains`, concatenated: `full:`, `domain:`,
    /// `keyword:`, `regexp:`, `dotless:`, `geosite:`, `ext:file:list`,
    /// `ext-domain:file:list`, or a plain substring.
    pub domain: Vec<String>,
    /// `ip`: `a.b.c.d[/n]`, IPv6 `[/n]`, `geoip:CC`, `ext:file:tag`,
    /// `ext-ip:file:tag`.
    pub ip: Vec<String>,
    /// `port`: `"53,443,1000-2000"`. A JSON number `n` is passed as
    /// `n.to_string()`, except that V2Ray ignores the number 0: pass `""`.
    pub port: Option<String>,
    /// `sourcePort`, the same syntax as `port`.
    pub source_port: Option<String>,
    /// `network`: `tcp`, `udp`, `unix` or an unknown name (`unix` and
    /// unknown names never match a Rayback session).
    pub network: Vec<RuleNetwork>,
    /// `source`: the same syntax as `ip`, matched against the source IP.
    pub source: Vec<String>,
    /// `user`: exact user emails; empty strings are dropped.
    pub user: Vec<String>,
    /// `protocol`: needs sniffing, which Rayback lacks; any entry is an
    /// error at build time.
    pub protocol: Vec<String>,
    /// `attrs`: a Starlark expression over request attributes; needs the
    /// HTTP inbound, which Rayback lacks; an error at build time.
    pub attrs: Option<String>,
    /// `outboundTag` (wins when both are set in JSON) or `balancerTag`.
    pub target: RuleTarget,
}

impl RuleSettings {
    /// A rule with no conditions yet, sending matches to outbound `tag`.
    pub fn outbound(tag: &str) -> RuleSettings {
        RuleSettings::to(RuleTarget::Outbound(tag.to_owned()))
    }

    /// A rule with no conditions yet, sending matches to balancer `tag`.
    pub fn balancer(tag: &str) -> RuleSettings {
        RuleSettings::to(RuleTarget::Balancer(tag.to_owned()))
    }

    fn to(target: RuleTarget) -> RuleSettings {
        RuleSettings {
            inbound_tag: Vec::new(),
            domain: Vec::new(),
            ip: Vec::new(),
            port: None,
            source_port: None,
            network: Vec::new(),
            source: Vec::new(),
            user: Vec::new(),
            protocol: Vec::new(),
            attrs: None,
            target,
        }
    }
}

/// A `balancers[]` entry: `selector` entries are prefixes of outbound tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalancerSettings {
    pub tag: String,
    pub selector: Vec<String>,
}

/// `routing.domainStrategy` is core's: `config` parses it, the router acts
/// on it (`AlwaysIP` routes as `AsIs`, as in 4.34).
pub use rayback_core::DomainStrategy;

/// The whole `routing` object, rules in evaluation order (top-level
/// `rules` first, then the legacy `settings.rules`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingSettings {
    pub domain_strategy: DomainStrategy,
    pub rules: Vec<RuleSettings>,
    pub balancers: Vec<BalancerSettings>,
}
