//! The `routing` object as data: rules, balancers and the domain strategy,
//! with conditions as V2Ray 4.34 spells them (`infra/conf/router.go`).
//! `config` fills these from JSON and checks their structure; the `routing`
//! crate checks the syntax of every condition and compiles them into a
//! router. Keeping them here is what lets both sides use one type with no
//! arrow between them (ARCHITECTURE.md: one owner per V2Ray syntax).
//!
//! Presence rules, as in V2Ray: an empty `Vec` means "no such condition";
//! a non-empty list whose entries are all empty strings (`inboundTag: [""]`)
//! is a condition that never matches; `port: Some("")` likewise never
//! matches.

use crate::options::{DomainStrategy, RuleNetwork, RuleTarget};

/// One `"type": "field"` rule. All present conditions must hold (AND);
/// within one condition any entry may match (OR). Lists hold the JSON
/// strings unchanged (a comma-separated string is split, not trimmed).
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
    /// `port`: `"53,443,1000-2000"`. A JSON number `n` is its decimal
    /// text, except that V2Ray ignores the number 0: `""`.
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
    /// `protocol`: the sniffed protocol's name.
    pub protocol: Vec<String>,
    /// `attrs`: a Starlark expression over request attributes; `None` when
    /// absent or empty.
    pub attrs: Option<String>,
    /// `outboundTag` (wins when both are set in JSON) or `balancerTag`.
    pub target: RuleTarget,
}

impl RuleSettings {
    /// A rule with a target and no conditions yet (fill the fields you
    /// need).
    pub fn new(target: RuleTarget) -> RuleSettings {
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

    /// A rule with no conditions yet, sending matches to outbound `tag`.
    pub fn outbound(tag: &str) -> RuleSettings {
        RuleSettings::new(RuleTarget::Outbound(tag.to_owned()))
    }

    /// A rule with no conditions yet, sending matches to balancer `tag`.
    pub fn balancer(tag: &str) -> RuleSettings {
        RuleSettings::new(RuleTarget::Balancer(tag.to_owned()))
    }

    /// True when at least one condition is present (V2Ray refuses a rule
    /// without: `this rule has no effective fields`).
    pub fn has_condition(&self) -> bool {
        !self.domain.is_empty()
            || !self.ip.is_empty()
            || self.port.is_some()
            || self.source_port.is_some()
            || !self.network.is_empty()
            || !self.source.is_empty()
            || !self.user.is_empty()
            || !self.inbound_tag.is_empty()
            || !self.protocol.is_empty()
            || self.attrs.is_some()
    }
}

/// A `balancers[]` entry: `selector` entries are prefixes of outbound tags
/// (never empty once `config` has checked it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalancerSettings {
    pub tag: String,
    pub selector: Vec<String>,
}

/// The whole `routing` object, rules in evaluation order (top-level
/// `rules` first, then the legacy `settings.rules`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingSettings {
    pub domain_strategy: DomainStrategy,
    pub rules: Vec<RuleSettings>,
    pub balancers: Vec<BalancerSettings>,
}
