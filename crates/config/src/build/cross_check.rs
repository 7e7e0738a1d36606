//! Warnings that need the whole built configuration: duplicate outbound,
//! portal and bridge tags, portals that replace an outbound, rules that
//! name no outbound, and the reverse-proxy guide's bridge wiring (with mux
//! on a tunnel's outbound).
//!
//! `build`'s `mod.rs` runs this last, with where each outbound, rule and
//! the `reverse` object came from; it never fails a configuration, it only
//! adds warnings.

use std::collections::{HashMap, HashSet};

use crate::error::{Warning, WarningKind};
use crate::model::*;
use crate::routing::RuleOrigin;

pub(super) struct CrossOrigins<'a> {
    pub(super) outbounds: &'a [(&'a str, &'a str)],
    pub(super) rules: &'a [RuleOrigin],
    pub(super) reverse_file: &'a str,
    pub(super) reverse_path: &'a str,
    pub(super) routing_file: &'a str,
}

fn warning(kind: WarningKind, file: &str, path: &str, message: String) -> Warning {
    Warning {
        kind,
        file: file.to_owned(),
        path: path.to_owned(),
        message,
    }
}

/// Warnings that need the whole configuration: tags, bridge wiring.
pub(super) fn cross_check(
    config: &Config,
    origins: &CrossOrigins<'_>,
    warnings: &mut Vec<Warning>,
) {
    let mut outbound_tags: HashMap<&str, usize> = HashMap::new();
    for (index, outbound) in config.outbounds.iter().enumerate() {
        let Some(tag) = outbound.tag.as_ref().map(Tag::as_str) else {
            continue;
        };
        if let Some(first) = outbound_tags.insert(tag, index) {
            let (file, path) = origins.outbounds[index];
            warnings.push(warning(
                WarningKind::DuplicateTag,
                file,
                &format!("{path}.tag"),
                format!(
                    "outbound tag {tag:?} is also used by {}; the last one wins",
                    origins.outbounds[first].1
                ),
            ));
        }
    }

    let mut portal_tags = HashSet::new();
    for (index, portal) in config.reverse.portals.iter().enumerate() {
        let path = format!("{}.portals[{index}].tag", origins.reverse_path);
        if !portal_tags.insert(portal.tag.as_str()) {
            warnings.push(warning(
                WarningKind::DuplicateTag,
                origins.reverse_file,
                &path,
                format!("portal tag {:?} is used twice", portal.tag),
            ));
        }
        if outbound_tags.contains_key(portal.tag.as_str()) {
            warnings.push(warning(
                WarningKind::PortalShadowsOutbound,
                origins.reverse_file,
                &path,
                format!(
                    "portal tag {:?} is also an outbound's tag; the portal replaces that outbound",
                    portal.tag
                ),
            ));
        }
    }
    let mut bridge_tags = HashSet::new();
    for (index, bridge) in config.reverse.bridges.iter().enumerate() {
        if !bridge_tags.insert(bridge.tag.as_str()) {
            warnings.push(warning(
                WarningKind::DuplicateTag,
                origins.reverse_file,
                &format!("{}.bridges[{index}].tag", origins.reverse_path),
                format!("bridge tag {:?} is used twice", bridge.tag),
            ));
        }
    }

    for (rule, origin) in config.routing.rules.iter().zip(origins.rules) {
        if let RuleTarget::Outbound(tag) = &rule.target {
            if !outbound_tags.contains_key(tag.as_str()) && !portal_tags.contains(tag.as_str()) {
                warnings.push(warning(
                    WarningKind::UnknownOutboundTag,
                    origins.routing_file,
                    &format!("{}.outboundTag", origin.path),
                    format!(
                        "no outbound or portal has tag {tag:?}; V2Ray sends these connections to the default (first) outbound"
                    ),
                ));
            }
        }
    }

    for (index, bridge) in config.reverse.bridges.iter().enumerate() {
        check_bridge_routing(config, bridge, index, origins, warnings);
    }
}

/// The reverse-proxy guide's bridge wiring: a rule with the bridge's tag in
/// `inboundTag` and its domain in `domain` (to the tunnel outbound), before
/// a catch-all rule with the bridge's tag (to the local service).
///
/// The warning names only what is missing or misplaced: a person who wrote
/// one of the two rules is not told to add it again.
fn check_bridge_routing(
    config: &Config,
    bridge: &Bridge,
    index: usize,
    origins: &CrossOrigins<'_>,
    warnings: &mut Vec<Warning>,
) {
    let path = format!("{}.bridges[{index}]", origins.reverse_path);
    // A plain entry is V2Ray's substring match, which the domain passes too.
    let tunnel_entries = [
        format!("full:{}", bridge.domain),
        format!("domain:{}", bridge.domain),
        bridge.domain.clone(),
    ];
    let has_tag = |rule: &RuleSettings| rule.inbound_tag.contains(&bridge.tag);
    let tunnel_rule = config.routing.rules.iter().position(|rule| {
        has_tag(rule)
            && rule
                .domain
                .iter()
                .any(|entry| tunnel_entries.contains(entry))
    });
    let catch_all = config.routing.rules.iter().position(|rule| {
        has_tag(rule)
            && rule.domain.is_empty()
            && rule.ip.is_empty()
            && rule.port.is_none()
            && rule.network.is_empty()
            && rule.protocol.is_empty()
            && rule.attrs.is_none()
    });
    let tag = &bridge.tag;
    let domain = &bridge.domain;
    let rule_path = |index: usize| origins.rules[index].path.as_str();
    // The domain entry the tunnel rule matches with, as the person wrote it.
    let tunnel_entry = |index: usize| {
        config.routing.rules[index]
            .domain
            .iter()
            .find(|entry| tunnel_entries.contains(entry))
            .map_or_else(|| format!("full:{domain}"), String::clone)
    };
    let no_tunnel_rule = format!(
        "no routing rule sends the bridge's own connections (inboundTag {tag:?}, domain full:{domain}) to the portal"
    );
    let tunnel_advice = format!(
        "add a rule {{inboundTag: [{tag:?}], domain: [\"full:{domain}\"]}} to the outbound that reaches the portal"
    );
    let problem = match (tunnel_rule, catch_all) {
        (None, None) => Some(format!(
            "{no_tunnel_rule}; {tunnel_advice}, followed by {{inboundTag: [{tag:?}]}} to the local service"
        )),
        (None, Some(catch_all)) => Some(format!(
            "{no_tunnel_rule}; {tunnel_advice}, before the catch-all rule {}",
            rule_path(catch_all)
        )),
        (Some(tunnel), None) => Some(format!(
            "no catch-all rule routes the bridge's sessions (inboundTag {tag:?}); they go to the default outbound; add a rule {{inboundTag: [{tag:?}]}} to the local service after {} (the rule for domain {})",
            rule_path(tunnel),
            tunnel_entry(tunnel)
        )),
        (Some(tunnel), Some(catch_all)) if catch_all < tunnel => Some(format!(
            "the catch-all rule for inboundTag {tag:?} comes before the rule for domain {}, so the bridge cannot reach the portal; move {} after {}",
            tunnel_entry(tunnel),
            rule_path(catch_all),
            rule_path(tunnel)
        )),
        _ => None,
    };
    if let Some(problem) = problem {
        warnings.push(warning(
            WarningKind::BridgeRouting,
            origins.reverse_file,
            &path,
            problem,
        ));
    }

    // The guide warns against mux on the outbound the tunnel uses.
    if let Some(tunnel) = tunnel_rule {
        if let RuleTarget::Outbound(tag) = &config.routing.rules[tunnel].target {
            if let Some(outbound) = config.outbound(tag) {
                if outbound.mux.is_some_and(|mux| mux.enabled) {
                    warnings.push(warning(
                        WarningKind::Suspicious,
                        origins.routing_file,
                        &format!("{}.outboundTag", origins.rules[tunnel].path),
                        format!("outbound {tag:?} carries a bridge tunnel and has mux enabled; the reverse proxy multiplexes already, so disable mux there"),
                    ));
                }
            }
        }
    }
}
