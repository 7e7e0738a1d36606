//! The `routing` object: rules and balancers, structurally validated.
//!
//! Both forms V2Ray 4.34 reads are accepted:
//!
//! | form | rules order | `domainStrategy` |
//! |---|---|---|
//! | modern: `{"rules": [...]}` | as written | top-level value |
//! | legacy (seed page): `{"strategy": "rules", "settings": {"rules": [...]}}` | `rules` first, then `settings.rules` | top-level if present, else `settings.domainStrategy` |
//!
//! Checked here (V2Ray refuses to start otherwise): `type` is `field`; a
//! target (`outboundTag` wins over `balancerTag`); at least one condition;
//! a `balancerTag` names a defined balancer; balancers have a tag and a
//! selector. Not checked here: the syntax of domains, IPs and ports, and
//! geo files — the `routing` crate compiles those.

use crate::dialect::Node;
use crate::error::{ConfigError, WarningKind};
use crate::model::*;
use crate::reader::{index_path, Cx, Obj};

/// Where a built rule came from, for warnings about it later.
pub(crate) struct RuleOrigin {
    pub path: String,
}

const ROUTING_KEYS: &[&str] = &[
    "domainStrategy",
    "rules",
    "balancers",
    "settings",
    "strategy",
];

const RULE_KEYS: &[&str] = &[
    "type",
    "outboundTag",
    "balancerTag",
    "domain",
    "domains",
    "ip",
    "port",
    "network",
    "source",
    "sourcePort",
    "user",
    "inboundTag",
    "protocol",
    "attrs",
];

pub(crate) fn build_routing(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> Result<(RoutingSettings, Vec<RuleOrigin>), ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, ROUTING_KEYS);
    if let Some(node) = object.get("strategy") {
        // The seed page's `"strategy": "rules"` is a leftover V2Ray ignores.
        let strategy = cx.string(node, &object.at("strategy")).unwrap_or_default();
        if strategy != "rules" {
            cx.warn(
                WarningKind::Ignored,
                &object.at("strategy"),
                "routing.strategy is ignored by V2Ray 4.34 (did you mean domainStrategy?)",
            );
        }
    }

    let settings = match object.get("settings") {
        Some(node) => {
            let settings = cx.object(node, &object.at("settings"))?;
            settings.warn_unknown(cx, &["rules", "domainStrategy"]);
            Some(settings)
        }
        None => None,
    };

    let strategy_text = match (object.get("domainStrategy"), &settings) {
        (Some(node), _) => cx.string(node, &object.at("domainStrategy"))?,
        (None, Some(settings)) => match settings.get("domainStrategy") {
            Some(node) => cx.string(node, &settings.at("domainStrategy"))?,
            None => String::new(),
        },
        (None, None) => String::new(),
    };
    let domain_strategy = DomainStrategy::parse(&strategy_text).unwrap_or_else(|| {
        cx.warn(
            WarningKind::Suspicious,
            &object.at("domainStrategy"),
            format!(
                "unknown domain strategy {strategy_text:?} means \"AsIs\" (known: AsIs, IPIfNonMatch, IPOnDemand, AlwaysIP)"
            ),
        );
        DomainStrategy::AsIs
    });

    let mut balancers = Vec::new();
    if let Some(node) = object.get("balancers") {
        let list_path = object.at("balancers");
        for (index, item) in cx.array(node, &list_path)?.iter().enumerate() {
            balancers.push(balancer(cx, item, &index_path(&list_path, index))?);
        }
    }

    let mut rules = Vec::new();
    let mut origins = Vec::new();
    let mut lists = vec![(&object, "rules")];
    if let Some(settings) = &settings {
        lists.push((settings, "rules"));
    }
    for (owner, key) in lists {
        let Some(node) = owner.get(key) else { continue };
        let list_path = owner.at(key);
        for (index, item) in cx.array(node, &list_path)?.iter().enumerate() {
            let rule_path = index_path(&list_path, index);
            let rule = rule(cx, item, &rule_path)?;
            if let RuleTarget::Balancer(tag) = &rule.target {
                if !balancers.iter().any(|balancer| balancer.tag == *tag) {
                    return Err(cx.invalid(
                        &format!("{rule_path}.balancerTag"),
                        format!("balancer {tag:?} not found in routing.balancers"),
                    ));
                }
            }
            rules.push(rule);
            origins.push(RuleOrigin { path: rule_path });
        }
    }

    Ok((
        RoutingSettings {
            domain_strategy,
            rules,
            balancers,
        },
        origins,
    ))
}

fn balancer(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<BalancerSettings, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, &["tag", "selector"]);
    let tag = match object.get("tag") {
        Some(node) => cx.string(node, &object.at("tag"))?,
        None => String::new(),
    };
    if tag.is_empty() {
        return Err(cx.invalid(&object.at("tag"), "empty balancer tag"));
    }
    let selector = match object.get("selector") {
        Some(node) => cx.string_list(node, &object.at("selector"))?,
        None => Vec::new(),
    };
    if selector.is_empty() {
        return Err(cx.invalid(&object.at("selector"), "empty selector list"));
    }
    Ok(BalancerSettings { tag, selector })
}

fn string_field(cx: &Cx<'_>, object: &Obj<'_>, key: &str) -> Result<String, ConfigError> {
    match object.get(key) {
        Some(node) => cx.string(node, &object.at(key)),
        None => Ok(String::new()),
    }
}

fn list_field(cx: &Cx<'_>, object: &Obj<'_>, key: &str) -> Result<Vec<String>, ConfigError> {
    match object.get(key) {
        Some(node) => cx.string_list(node, &object.at(key)),
        None => Ok(Vec::new()),
    }
}

/// A `port` / `sourcePort` condition as text; a JSON number becomes its
/// decimal text.
fn port_field(cx: &Cx<'_>, object: &Obj<'_>, key: &str) -> Result<Option<String>, ConfigError> {
    match object.get(key) {
        None => Ok(None),
        Some(Node::String(text)) => Ok(Some(text.clone())),
        Some(node @ Node::Number(_)) => {
            let port = cx
                .integer(node, &object.at(key), 0, i64::from(u32::MAX))
                .map_err(|_| {
                    cx.invalid(&object.at(key), format!("invalid port {}", node.describe()))
                })?;
            Ok(Some(port.to_string()))
        }
        Some(other) => Err(cx.invalid(
            &object.at(key),
            format!(
                "expected a port number or a string like \"53,443,1000-2000\", found {}",
                other.describe()
            ),
        )),
    }
}

fn rule(cx: &mut Cx<'_>, node: &Node, path: &str) -> Result<RuleSettings, ConfigError> {
    let object = cx.object(node, path)?;
    object.warn_unknown(cx, RULE_KEYS);

    let rule_type = string_field(cx, &object, "type")?;
    if object.get("type").is_none() {
        return Err(cx.invalid(
            &object.at("type"),
            "rule type is missing: add \"type\": \"field\" (unknown router rule type)",
        ));
    }
    if !rule_type.eq_ignore_ascii_case("field") {
        return Err(cx.invalid(
            &object.at("type"),
            format!("unknown router rule type {rule_type:?}: only \"field\" exists"),
        ));
    }

    let outbound_tag = string_field(cx, &object, "outboundTag")?;
    let balancer_tag = string_field(cx, &object, "balancerTag")?;
    let target = if !outbound_tag.is_empty() {
        RuleTarget::Outbound(outbound_tag)
    } else if !balancer_tag.is_empty() {
        RuleTarget::Balancer(balancer_tag)
    } else {
        return Err(cx.invalid(
            path,
            "neither outboundTag nor balancerTag is specified: a rule needs a target",
        ));
    };

    let mut domain = list_field(cx, &object, "domain")?;
    domain.extend(list_field(cx, &object, "domains")?);
    let network = match object.get("network") {
        Some(node) => cx
            .string_list(node, &object.at("network"))?
            .iter()
            .map(|name| RuleNetwork::parse(name))
            .collect(),
        None => Vec::new(),
    };
    let attrs = string_field(cx, &object, "attrs")?;
    let rule = RuleSettings {
        target,
        domain,
        ip: list_field(cx, &object, "ip")?,
        port: port_field(cx, &object, "port")?,
        source_port: port_field(cx, &object, "sourcePort")?,
        network,
        source: list_field(cx, &object, "source")?,
        user: list_field(cx, &object, "user")?,
        inbound_tag: list_field(cx, &object, "inboundTag")?,
        protocol: list_field(cx, &object, "protocol")?,
        attrs: Some(attrs).filter(|attrs| !attrs.is_empty()),
    };
    if !rule.has_condition() {
        return Err(cx.invalid(
            path,
            "this rule has no effective fields: give at least one condition (domain, ip, port, network, source, sourcePort, user, inboundTag, protocol, attrs)",
        ));
    }
    for (unknown_index, network) in rule.network.iter().enumerate() {
        if let RuleNetwork::Unknown(name) = network {
            cx.warn(
                WarningKind::Suspicious,
                &index_path(&object.at("network"), unknown_index),
                format!("unknown network {name:?} never matches (known: tcp, udp, unix)"),
            );
        }
    }
    Ok(rule)
}
