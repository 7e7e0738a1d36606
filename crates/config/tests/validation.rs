//! Every validation rule: what V2Ray 4.34 rejects is rejected with the
//! path of the bad value; what Rayback lacks is rejected as unsupported;
//! defaults and normalizations are what V2Ray uses.

use std::time::Duration;

use rayback_config::*;

const ID: &str = "27848739-7e62-4138-9fd3-098a63964b6b";

fn load(text: &str) -> Loaded {
    parse_str("v.json", text).unwrap_or_else(|error| panic!("{error}"))
}

/// Asserts `text` fails as `invalid` at `path` with `fragment` in the message.
fn rejects(text: &str, path: &str, fragment: &str) {
    let error = parse_str("v.json", text).expect_err(fragment);
    assert!(!error.is_unsupported() && !error.is_syntax(), "{error}");
    assert_eq!(error.path(), Some(path), "{error}");
    let shown = error.to_string();
    assert!(shown.starts_with(&format!("v.json: {path}: ")), "{shown}");
    assert!(shown.contains(fragment), "{shown} lacks {fragment:?}");
}

fn unsupported(text: &str, path: &str, fragment: &str) {
    let error = parse_str("v.json", text).expect_err(fragment);
    assert!(error.is_unsupported(), "{error}");
    assert_eq!(error.path(), Some(path), "{error}");
    let shown = error.to_string();
    assert!(shown.contains("is not supported by Rayback"), "{shown}");
    assert!(shown.contains(fragment), "{shown} lacks {fragment:?}");
}

fn outbound(json: &str) -> String {
    format!(r#"{{"outbounds": [{json}]}}"#)
}

fn inbound(json: &str) -> String {
    format!(r#"{{"inbounds": [{json}]}}"#)
}

fn rule(json: &str) -> String {
    format!(
        r#"{{"outbounds": [{{"protocol": "freedom", "tag": "direct"}}], "routing": {{"rules": [{json}]}}}}"#
    )
}

fn has_warning(loaded: &Loaded, kind: WarningKind, fragment: &str) -> bool {
    loaded
        .warnings
        .iter()
        .any(|warning| warning.kind == kind && warning.to_string().contains(fragment))
}

// ---------------------------------------------------------------- routing

#[test]
fn rules_need_the_field_type() {
    rejects(
        &rule(r#"{"inboundTag": ["a"], "outboundTag": "direct"}"#),
        "routing.rules[0].type",
        "rule type is missing",
    );
    rejects(
        &rule(r#"{"type": "chinaip", "outboundTag": "direct"}"#),
        "routing.rules[0].type",
        "unknown router rule type \"chinaip\"",
    );
    rejects(
        &rule(r#"{"type": "", "inboundTag": ["a"], "outboundTag": "direct"}"#),
        "routing.rules[0].type",
        "unknown router rule type \"\"",
    );
    load(&rule(
        r#"{"type": "FiElD", "inboundTag": ["a"], "outboundTag": "direct"}"#,
    ));
}

#[test]
fn rules_need_a_condition_and_a_target() {
    rejects(
        &rule(r#"{"type": "field", "outboundTag": "direct"}"#),
        "routing.rules[0]",
        "no effective fields",
    );
    rejects(
        &rule(r#"{"type": "field", "domain": [], "ip": [], "outboundTag": "direct"}"#),
        "routing.rules[0]",
        "no effective fields",
    );
    rejects(
        &rule(r#"{"type": "field", "inboundTag": ["a"]}"#),
        "routing.rules[0]",
        "neither outboundTag nor balancerTag",
    );
    rejects(
        &rule(r#"{"type": "field", "inboundTag": ["a"], "outboundTag": ""}"#),
        "routing.rules[0]",
        "neither outboundTag nor balancerTag",
    );
    // A port condition counts even when it matches nothing (V2Ray: PortList non-nil).
    load(&rule(
        r#"{"type": "field", "port": "", "outboundTag": "direct"}"#,
    ));
    // A comma string always yields at least one (possibly empty) entry.
    load(&rule(
        r#"{"type": "field", "inboundTag": "", "outboundTag": "direct"}"#,
    ));
}

#[test]
fn outbound_tag_wins_over_balancer_tag() {
    let loaded = load(&rule(
        r#"{"type": "field", "network": "tcp", "outboundTag": "direct", "balancerTag": "nowhere"}"#,
    ));
    assert_eq!(
        loaded.config.routing.rules[0].target,
        RuleTarget::Outbound("direct".into())
    );
}

#[test]
fn balancers_are_checked() {
    rejects(
        &rule(r#"{"type": "field", "network": "tcp", "balancerTag": "b"}"#),
        "routing.rules[0].balancerTag",
        "balancer \"b\" not found",
    );
    let base = |balancer: &str| {
        format!(
            r#"{{"routing": {{"balancers": [{balancer}], "rules": [{{"type": "field", "network": "tcp", "balancerTag": "b"}}]}}}}"#
        )
    };
    rejects(
        &base(r#"{"selector": ["x"]}"#),
        "routing.balancers[0].tag",
        "empty balancer tag",
    );
    rejects(
        &base(r#"{"tag": "b"}"#),
        "routing.balancers[0].selector",
        "empty selector list",
    );
    let loaded = load(&base(r#"{"tag": "b", "selector": "out-,x"}"#));
    assert_eq!(
        loaded.config.routing.balancers,
        [BalancerSettings {
            tag: "b".into(),
            selector: vec!["out-".into(), "x".into()]
        }]
    );
    assert_eq!(
        loaded.config.routing.rules[0].target,
        RuleTarget::Balancer("b".into())
    );
}

#[test]
fn legacy_settings_rules_come_after_top_level_rules() {
    let loaded = load(
        r#"{"routing": {"strategy": "rules", "domainStrategy": "IPOnDemand",
              "rules": [{"type": "field", "inboundTag": ["first"], "outboundTag": "a"}],
              "settings": {"domainStrategy": "IPIfNonMatch",
                           "rules": [{"type": "field", "inboundTag": ["second"], "outboundTag": "b"}]}}}"#,
    );
    let routing = &loaded.config.routing;
    assert_eq!(routing.rules[0].inbound_tag, ["first"]);
    assert_eq!(routing.rules[1].inbound_tag, ["second"]);
    assert_eq!(routing.domain_strategy, DomainStrategy::IpOnDemand);
    assert!(!has_warning(&loaded, WarningKind::UnknownKey, "strategy"));

    // Without a top-level domainStrategy the legacy one applies ...
    let loaded =
        load(r#"{"routing": {"settings": {"domainStrategy": "ip_if_non_match", "rules": []}}}"#);
    assert_eq!(
        loaded.config.routing.domain_strategy,
        DomainStrategy::IpIfNonMatch
    );
    // ... but an empty top-level one still wins.
    let loaded = load(
        r#"{"routing": {"domainStrategy": "", "settings": {"domainStrategy": "IPIfNonMatch"}}}"#,
    );
    assert_eq!(loaded.config.routing.domain_strategy, DomainStrategy::AsIs);
    // Errors in legacy rules name their path.
    rejects(
        r#"{"routing": {"settings": {"rules": [{"type": "field", "outboundTag": "x"}]}}}"#,
        "routing.settings.rules[0]",
        "no effective fields",
    );
}

#[test]
fn domain_strategies_normalize() {
    for (text, expected) in [
        ("AsIs", DomainStrategy::AsIs),
        ("alwaysip", DomainStrategy::AlwaysIp),
        ("always-ip", DomainStrategy::AlwaysIp),
        ("IPIfNonMatch", DomainStrategy::IpIfNonMatch),
        ("ip-if-non-match", DomainStrategy::IpIfNonMatch),
        ("IPOnDemand", DomainStrategy::IpOnDemand),
        ("ip_on_demand", DomainStrategy::IpOnDemand),
    ] {
        let loaded = load(&format!(r#"{{"routing": {{"domainStrategy": "{text}"}}}}"#));
        assert_eq!(loaded.config.routing.domain_strategy, expected, "{text}");
    }
    let loaded = load(r#"{"routing": {"domainStrategy": "Sometimes"}}"#);
    assert_eq!(loaded.config.routing.domain_strategy, DomainStrategy::AsIs);
    assert!(has_warning(&loaded, WarningKind::Suspicious, "Sometimes"));
}

#[test]
fn rule_conditions_stay_close_to_raw() {
    let loaded = load(&rule(
        r#"{"type": "field", "domain": "regexp:a,b", "domains": ["geosite:cn"], "ip": ["geoip:private"],
            "port": "abc", "sourcePort": 0, "network": ["TCP", "unix", "sctp"], "source": "1.2.3.4",
            "user": ["a@b", ""], "inboundTag": ["x"], "protocol": "http", "attrs": "attrs[':method'] == 'GET'",
            "outboundTag": "direct"}"#,
    ));
    let first = &loaded.config.routing.rules[0];
    assert_eq!(first.domain, ["regexp:a", "b", "geosite:cn"]);
    assert_eq!(first.ip, ["geoip:private"]);
    assert_eq!(first.port.as_deref(), Some("abc"));
    assert_eq!(first.source_port.as_deref(), Some("0"));
    assert_eq!(
        first.network,
        [
            RuleNetwork::Tcp,
            RuleNetwork::Unix,
            RuleNetwork::Unknown("sctp".into())
        ]
    );
    assert_eq!(first.source, ["1.2.3.4"]);
    assert_eq!(first.user, ["a@b", ""]);
    assert_eq!(first.protocol, ["http"]);
    assert_eq!(first.attrs.as_deref(), Some("attrs[':method'] == 'GET'"));
    assert!(has_warning(
        &loaded,
        WarningKind::Suspicious,
        "\"sctp\" never matches"
    ));
    rejects(
        &rule(r#"{"type": "field", "port": -1, "outboundTag": "direct"}"#),
        "routing.rules[0].port",
        "invalid port -1",
    );
    rejects(
        &rule(r#"{"type": "field", "port": [80], "outboundTag": "direct"}"#),
        "routing.rules[0].port",
        "expected a port number",
    );
    rejects(
        &rule(r#"{"type": "field", "ip": [1], "outboundTag": "direct"}"#),
        "routing.rules[0].ip[0]",
        "expected a string",
    );
}

#[test]
fn unknown_outbound_tags_warn() {
    let loaded = load(&rule(
        r#"{"type": "field", "network": "tcp", "outboundTag": "nowhere"}"#,
    ));
    assert!(has_warning(
        &loaded,
        WarningKind::UnknownOutboundTag,
        "routing.rules[0].outboundTag: no outbound or portal has tag \"nowhere\""
    ));
    // A portal tag counts as an outbound tag.
    let loaded = load(
        r#"{"reverse": {"portals": [{"tag": "portal", "domain": "d"}]},
            "routing": {"rules": [{"type": "field", "inboundTag": ["x"], "outboundTag": "portal"}]}}"#,
    );
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
}

// ---------------------------------------------------------------- reverse

#[test]
fn reverse_entries_need_tag_and_domain() {
    rejects(
        r#"{"reverse": {"bridges": [{"domain": "d"}]}}"#,
        "reverse.bridges[0].tag",
        "bridge tag is empty",
    );
    rejects(
        r#"{"reverse": {"bridges": [{"tag": "b", "domain": ""}]}}"#,
        "reverse.bridges[0].domain",
        "bridge domain is empty",
    );
    rejects(
        r#"{"reverse": {"portals": [{"tag": "", "domain": "d"}]}}"#,
        "reverse.portals[0].tag",
        "portal tag is empty",
    );
    rejects(
        r#"{"reverse": {"portals": [{"tag": "p"}]}}"#,
        "reverse.portals[0].domain",
        "portal domain is empty",
    );
    rejects(
        r#"{"reverse": {"portals": [{"tag": "p", "domain": "d", "controlDomain": "x.example"}]}}"#,
        "reverse.portals[0].controlDomain",
        "\"x.example\" is not a control domain",
    );
}

#[test]
fn reverse_tag_warnings() {
    let loaded = load(
        r#"{"outbounds": [{"tag": "p", "protocol": "freedom"}, {"tag": "p", "protocol": "blackhole"}],
            "reverse": {"portals": [{"tag": "p", "domain": "d"}, {"tag": "p", "domain": "e"}]}}"#,
    );
    assert!(has_warning(
        &loaded,
        WarningKind::DuplicateTag,
        "outbounds[1].tag: outbound tag \"p\" is also used by outbounds[0]"
    ));
    assert!(has_warning(
        &loaded,
        WarningKind::DuplicateTag,
        "reverse.portals[1].tag: portal tag \"p\" is used twice"
    ));
    assert!(has_warning(
        &loaded,
        WarningKind::PortalShadowsOutbound,
        "reverse.portals[0].tag"
    ));
    assert_eq!(
        loaded.config.outbound("p").map(|o| &o.settings),
        Some(&OutboundSettings::Blackhole(Blackhole {
            response: BlackholeResponse::None
        }))
    );
}

fn bridge_config(rules: &str) -> String {
    format!(
        r#"{{"reverse": {{"bridges": [{{"tag": "bridge", "domain": "t.example"}}]}},
            "outbounds": [{{"tag": "out", "protocol": "freedom"}},
                          {{"tag": "tunnel", "protocol": "vmess", "mux": {{"enabled": true}},
                            "settings": {{"vnext": [{{"address": "1.2.3.4", "port": 1, "users": [{{"id": "{ID}"}}]}}]}}}}],
            "routing": {{"rules": [{rules}]}}}}"#
    )
}

#[test]
fn bridge_wiring_is_checked() {
    let tunnel = r#"{"type": "field", "inboundTag": ["bridge"], "domain": ["full:t.example"], "outboundTag": "tunnel"}"#;
    let catch_all = r#"{"type": "field", "inboundTag": ["bridge"], "outboundTag": "out"}"#;

    let good = load(&bridge_config(&format!("{tunnel}, {catch_all}")));
    assert!(
        !good
            .warnings
            .iter()
            .any(|w| w.kind == WarningKind::BridgeRouting),
        "{:#?}",
        good.warnings
    );
    // The guide warns against mux on the tunnel's outbound.
    assert!(has_warning(
        &good,
        WarningKind::Suspicious,
        "has mux enabled"
    ));

    let reversed = load(&bridge_config(&format!("{catch_all}, {tunnel}")));
    assert!(has_warning(
        &reversed,
        WarningKind::BridgeRouting,
        "reverse.bridges[0]: the catch-all rule for inboundTag \"bridge\" comes before"
    ));

    let no_tunnel = load(&bridge_config(catch_all));
    assert!(has_warning(
        &no_tunnel,
        WarningKind::BridgeRouting,
        "no routing rule sends the bridge's own connections"
    ));

    let no_catch_all = load(&bridge_config(tunnel));
    assert!(has_warning(
        &no_catch_all,
        WarningKind::BridgeRouting,
        "no catch-all rule"
    ));
}

/// The one bridge-wiring warning of `loaded`, as printed.
fn bridge_routing_warning(loaded: &Loaded) -> String {
    let found: Vec<String> = loaded
        .warnings
        .iter()
        .filter(|warning| warning.kind == WarningKind::BridgeRouting)
        .map(ToString::to_string)
        .collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    found[0].clone()
}

#[test]
fn bridge_wiring_warnings_name_only_what_is_missing() {
    let catch_all = r#"{"type": "field", "inboundTag": ["bridge"], "outboundTag": "out"}"#;
    let tunnel = |entry: &str| {
        format!(
            r#"{{"type": "field", "inboundTag": ["bridge"], "domain": ["{entry}"], "outboundTag": "tunnel"}}"#
        )
    };
    let other = r#"{"type": "field", "inboundTag": ["elsewhere"], "outboundTag": "out"}"#;

    // Neither rule: both are asked for, in order.
    assert_eq!(
        bridge_routing_warning(&load(&bridge_config(other))),
        "v.json: reverse.bridges[0]: no routing rule sends the bridge's own connections \
         (inboundTag \"bridge\", domain full:t.example) to the portal; add a rule \
         {inboundTag: [\"bridge\"], domain: [\"full:t.example\"]} to the outbound that reaches \
         the portal, followed by {inboundTag: [\"bridge\"]} to the local service"
    );

    // Only the catch-all: only the domain rule is asked for, before it.
    assert_eq!(
        bridge_routing_warning(&load(&bridge_config(&format!("{other}, {catch_all}")))),
        "v.json: reverse.bridges[0]: no routing rule sends the bridge's own connections \
         (inboundTag \"bridge\", domain full:t.example) to the portal; add a rule \
         {inboundTag: [\"bridge\"], domain: [\"full:t.example\"]} to the outbound that reaches \
         the portal, before the catch-all rule routing.rules[1]"
    );

    // Only the domain rule, in each spelling that matches the domain:
    // only the catch-all is asked for, after it.
    for entry in ["full:t.example", "domain:t.example", "t.example"] {
        assert_eq!(
            bridge_routing_warning(&load(&bridge_config(&tunnel(entry)))),
            format!(
                "v.json: reverse.bridges[0]: no catch-all rule routes the bridge's sessions \
                 (inboundTag \"bridge\"); they go to the default outbound; add a rule \
                 {{inboundTag: [\"bridge\"]}} to the local service after routing.rules[0] \
                 (the rule for domain {entry})"
            )
        );
    }

    // Both, in the wrong order: only the order is wrong.
    assert_eq!(
        bridge_routing_warning(&load(&bridge_config(&format!(
            "{catch_all}, {other}, {}",
            tunnel("domain:t.example")
        )))),
        "v.json: reverse.bridges[0]: the catch-all rule for inboundTag \"bridge\" comes before \
         the rule for domain domain:t.example, so the bridge cannot reach the portal; move \
         routing.rules[0] after routing.rules[2]"
    );

    // Legacy nesting names the rules where they are.
    let legacy = bridge_config("").replace(
        r#""routing": {"rules": []}"#,
        &format!(
            r#""routing": {{"settings": {{"rules": [{}]}}}}"#,
            tunnel("full:t.example")
        ),
    );
    assert_eq!(
        bridge_routing_warning(&load(&legacy)),
        "v.json: reverse.bridges[0]: no catch-all rule routes the bridge's sessions \
         (inboundTag \"bridge\"); they go to the default outbound; add a rule \
         {inboundTag: [\"bridge\"]} to the local service after routing.settings.rules[0] \
         (the rule for domain full:t.example)"
    );
}

// ---------------------------------------------------------------- vmess

#[test]
fn vmess_ids_are_checked() {
    rejects(
        &outbound(
            r#"{"protocol": "vmess", "settings": {"vnext": [{"address": "a", "port": 1, "users": [{"id": "abc"}]}]}}"#,
        ),
        "outbounds[0].settings.vnext[0].users[0].id",
        "\"abc\" is not a UUID",
    );
    rejects(
        &inbound(r#"{"port": 1, "protocol": "vmess", "settings": {"clients": [{"level": 0}]}}"#),
        "inbounds[0].settings.clients[0].id",
        "id is missing",
    );
    // V2Ray's parser takes the ID without dashes and ignores trailing text.
    let loaded = load(&inbound(
        r#"{"port": 1, "protocol": "vmess", "settings": {"clients": [{"id": "278487397e6241389fd3098a63964b6b"}, {"id": "b831381d-6324-4d53-ad4f-8cda48b30811!!"}]}}"#,
    ));
    let InboundSettings::Vmess(vmess) = &loaded.config.inbounds[0].settings else {
        panic!("vmess")
    };
    assert_eq!(vmess.clients[0].id.reveal(), ID);
    assert!(has_warning(
        &loaded,
        WarningKind::Suspicious,
        "text after the UUID is ignored: \"!!\""
    ));
}

#[test]
fn vmess_outbound_needs_servers_and_users() {
    rejects(
        &outbound(r#"{"protocol": "vmess"}"#),
        "outbounds[0].settings.vnext",
        "no VMess server configured",
    );
    rejects(
        &outbound(r#"{"protocol": "vmess", "settings": {"vnext": []}}"#),
        "outbounds[0].settings.vnext",
        "no VMess server configured",
    );
    rejects(
        &outbound(
            r#"{"protocol": "vmess", "settings": {"vnext": [{"address": "a", "port": 1, "users": []}]}}"#,
        ),
        "outbounds[0].settings.vnext[0].users",
        "no user configured",
    );
    rejects(
        &outbound(&format!(
            r#"{{"protocol": "vmess", "settings": {{"vnext": [{{"port": 1, "users": [{{"id": "{ID}"}}]}}]}}}}"#
        )),
        "outbounds[0].settings.vnext[0].address",
        "address is missing",
    );
    rejects(
        &outbound(&format!(
            r#"{{"protocol": "vmess", "settings": {{"vnext": [{{"address": "a", "port": 65536, "users": [{{"id": "{ID}"}}]}}]}}}}"#
        )),
        "outbounds[0].settings.vnext[0].port",
        "65536 is out of range",
    );
}

#[test]
fn vmess_security_names() {
    let text = |security: &str| {
        outbound(&format!(
            r#"{{"protocol": "vmess", "settings": {{"vnext": [{{"address": "[::1]", "port": 1, "users": [{{"id": "{ID}", "security": "{security}", "alterId": 4, "level": 2, "email": "e"}}]}}]}}}}"#
        ))
    };
    for (name, expected) in [
        ("aes-128-gcm", VmessSecurity::Aes128Gcm),
        ("CHACHA20-POLY1305", VmessSecurity::ChaCha20Poly1305),
        ("none", VmessSecurity::None),
        ("auto", VmessSecurity::Auto),
        ("", VmessSecurity::Auto),
    ] {
        let loaded = load(&text(name));
        let OutboundSettings::Vmess(vmess) = &loaded.config.outbounds[0].settings else {
            panic!("vmess")
        };
        let server = &vmess.vnext[0];
        assert_eq!(server.address, "::1");
        assert_eq!(server.users[0].security, expected, "{name}");
        assert_eq!((server.users[0].alter_id, server.users[0].level), (4, 2));
        assert_eq!(server.users[0].email.as_deref(), Some("e"));
        assert!(loaded.warnings.is_empty(), "{name}: {:#?}", loaded.warnings);
    }
    let loaded = load(&text("zero"));
    let OutboundSettings::Vmess(vmess) = &loaded.config.outbounds[0].settings else {
        panic!("vmess")
    };
    assert_eq!(vmess.vnext[0].users[0].security, VmessSecurity::Auto);
    assert!(has_warning(
        &loaded,
        WarningKind::VmessSecurity,
        "unknown security \"zero\" means \"auto\""
    ));
}

#[test]
fn vmess_inbound_settings() {
    let loaded = load(&inbound(&format!(
        r#"{{"port": 1, "protocol": "vmess", "settings": {{"clients": [{{"id": "{ID}", "alterId": 64, "level": 1, "email": "a@b"}}],
            "default": {{"alterId": 4, "level": 2}}, "disableInsecureEncryption": true}}}}"#
    )));
    assert_eq!(
        loaded.config.inbounds[0].settings,
        InboundSettings::Vmess(VmessInbound {
            clients: vec![VmessClient {
                id: VmessId(ID.parse().expect("uuid")),
                level: 1,
                alter_id: 64,
                email: Some("a@b".into()),
            }],
            default: Some(VmessDefault {
                alter_id: 4,
                level: 2
            }),
            disable_insecure_encryption: true,
        })
    );
    rejects(
        &inbound(&format!(
            r#"{{"port": 1, "protocol": "vmess", "settings": {{"clients": [{{"id": "{ID}", "email": "X@y"}}, {{"id": "{ID}", "email": "x@Y"}}]}}}}"#
        )),
        "inbounds[0].settings.clients[1].email",
        "user \"x@Y\" already exists",
    );
    rejects(
        &inbound(&format!(
            r#"{{"port": 1, "protocol": "vmess", "settings": {{"clients": [{{"id": "{ID}", "alterId": 70000}}]}}}}"#
        )),
        "inbounds[0].settings.clients[0].alterId",
        "out of range",
    );
    let empty = load(&inbound(r#"{"port": 1, "protocol": "vmess"}"#));
    assert!(has_warning(
        &empty,
        WarningKind::Suspicious,
        "inbounds[0].settings.clients: this VMess inbound has no clients"
    ));
    unsupported(
        &inbound(&format!(
            r#"{{"port": 1, "protocol": "vmess", "settings": {{"clients": [{{"id": "{ID}"}}], "features": {{"detour": {{"to": "x"}}}}}}}}"#
        )),
        "inbounds[0].settings.features.detour",
        "VMess detour",
    );
}

// ---------------------------------------------------------------- mux

#[test]
fn mux_settings() {
    let mux = |json: &str| {
        let loaded = load(&outbound(&format!(
            r#"{{"protocol": "freedom", "mux": {json}}}"#
        )));
        loaded.config.outbounds[0].mux
    };
    assert_eq!(
        mux(r#"{"enabled": true}"#),
        Some(Mux {
            enabled: true,
            concurrency: 8
        })
    );
    assert_eq!(
        mux(r#"{"enabled": true, "concurrency": 0}"#),
        Some(Mux {
            enabled: true,
            concurrency: 8
        })
    );
    assert_eq!(
        mux(r#"{"enabled": true, "concurrency": 1024}"#),
        Some(Mux {
            enabled: true,
            concurrency: 1024
        })
    );
    assert_eq!(mux(r#"{"enabled": true, "concurrency": -1}"#), None);
    assert_eq!(
        mux(r#"{"enabled": false, "concurrency": 4}"#),
        Some(Mux {
            enabled: false,
            concurrency: 4
        })
    );
    rejects(
        &outbound(r#"{"protocol": "freedom", "mux": {"enabled": true, "concurrency": 2000}}"#),
        "outbounds[0].mux.concurrency",
        "invalid mux concurrency 2000",
    );
    // V2Ray checks the range even with mux disabled.
    rejects(
        &outbound(r#"{"protocol": "freedom", "mux": {"enabled": false, "concurrency": 1025}}"#),
        "outbounds[0].mux.concurrency",
        "invalid mux concurrency 1025",
    );
    // The JSON field is an int16.
    rejects(
        &outbound(r#"{"protocol": "freedom", "mux": {"concurrency": 40000}}"#),
        "outbounds[0].mux.concurrency",
        "out of range",
    );
}

// ---------------------------------------------------------------- freedom, blackhole, dokodemo

#[test]
fn freedom_proxy_protocol() {
    use rayback_core::ProxyProtocol;
    let read = |value: &str| {
        let loaded = load(&outbound(&format!(
            r#"{{"protocol": "freedom", "settings": {{"proxyProtocol": {value}}}}}"#
        )));
        let OutboundSettings::Freedom(freedom) = &loaded.config.outbounds[0].settings else {
            panic!("freedom")
        };
        freedom.proxy_protocol
    };
    assert_eq!(read("0"), ProxyProtocol::Off);
    assert_eq!(read("1"), ProxyProtocol::V1);
    assert_eq!(read("2"), ProxyProtocol::V2);
    for bad in ["3", "255"] {
        rejects(
            &outbound(&format!(
                r#"{{"protocol": "freedom", "settings": {{"proxyProtocol": {bad}}}}}"#
            )),
            "outbounds[0].settings.proxyProtocol",
            "is not 0 (off), 1 or 2",
        );
    }
    for not_a_number in ["-1", "\"two\"", "1.5"] {
        let text = outbound(&format!(
            r#"{{"protocol": "freedom", "settings": {{"proxyProtocol": {not_a_number}}}}}"#
        ));
        let error = parse_str("v.json", &text).expect_err(not_a_number);
        assert!(error.to_string().contains("proxyProtocol"), "{error}");
    }
}

#[test]
fn freedom_settings() {
    let freedom = |json: &str| {
        let loaded = load(&outbound(&format!(
            r#"{{"protocol": "freedom", "settings": {json}}}"#
        )));
        let OutboundSettings::Freedom(freedom) = loaded.config.outbounds[0].settings.clone() else {
            panic!("freedom")
        };
        freedom
    };
    assert_eq!(
        freedom("{}"),
        Freedom {
            domain_strategy: ResolveStrategy::AsIs,
            redirect: None,
            user_level: 0,
            timeout: None,
            proxy_protocol: rayback_core::ProxyProtocol::Off,
        }
    );
    let full = freedom(
        r#"{"domainStrategy": "use_ip4", "redirect": "[::1]:8080", "userLevel": 3, "timeout": 9}"#,
    );
    assert_eq!(full.domain_strategy, ResolveStrategy::UseIpv4);
    assert_eq!(
        full.redirect,
        Some(Redirect {
            host: Some(rayback_core::Address::parse("::1").unwrap()),
            port: 8080
        })
    );
    assert_eq!((full.user_level, full.timeout), (3, Some(9)));
    assert_eq!(
        freedom(r#"{"domainStrategy": "UseIP"}"#).domain_strategy,
        ResolveStrategy::UseIp
    );
    assert_eq!(
        freedom(r#"{"domainStrategy": "useipv6"}"#).domain_strategy,
        ResolveStrategy::UseIpv6
    );
    assert_eq!(
        freedom(r#"{"redirect": ":80"}"#).redirect,
        Some(Redirect {
            host: None,
            port: 80
        })
    );
    assert_eq!(
        freedom(r#"{"redirect": "web.local:0"}"#).redirect,
        Some(Redirect {
            host: Some(rayback_core::Address::parse("web.local").unwrap()),
            port: 0
        })
    );
    assert_eq!(freedom(r#"{"redirect": ""}"#).redirect, None);

    let path = "outbounds[0].settings.redirect";
    rejects(
        &outbound(r#"{"protocol": "freedom", "settings": {"redirect": "127.0.0.1"}}"#),
        path,
        "missing port",
    );
    rejects(
        &outbound(r#"{"protocol": "freedom", "settings": {"redirect": "::1:80"}}"#),
        path,
        "too many colons",
    );
    rejects(
        &outbound(r#"{"protocol": "freedom", "settings": {"redirect": "[::1]"}}"#),
        path,
        "missing port",
    );
    rejects(
        &outbound(r#"{"protocol": "freedom", "settings": {"redirect": "a:99999"}}"#),
        path,
        "out of range",
    );
    rejects(
        &outbound(r#"{"protocol": "freedom", "settings": {"redirect": "a:http"}}"#),
        path,
        "not a port number",
    );
    rejects(
        &outbound(r#"{"protocol": "freedom", "settings": {"redirect": "a:"}}"#),
        path,
        "not a port number",
    );
}

#[test]
fn blackhole_settings() {
    let response = |json: &str| {
        let loaded = load(&outbound(&format!(
            r#"{{"protocol": "blackhole", "settings": {json}}}"#
        )));
        let OutboundSettings::Blackhole(blackhole) = loaded.config.outbounds[0].settings else {
            panic!("blackhole")
        };
        blackhole.response
    };
    assert_eq!(response("{}"), BlackholeResponse::None);
    assert_eq!(
        response(r#"{"response": {"type": "HTTP"}}"#),
        BlackholeResponse::Http
    );
    assert_eq!(
        response(r#"{"response": {"type": "none"}}"#),
        BlackholeResponse::None
    );
    rejects(
        &outbound(r#"{"protocol": "blackhole", "settings": {"response": {}}}"#),
        "outbounds[0].settings.response.type",
        "response type is missing",
    );
    rejects(
        &outbound(r#"{"protocol": "blackhole", "settings": {"response": {"type": "x"}}}"#),
        "outbounds[0].settings.response.type",
        "unknown response type",
    );
}

#[test]
fn dokodemo_settings() {
    let door = |json: &str| {
        let loaded = load(&inbound(&format!(
            r#"{{"port": "1000-1002", "listen": "::1", "protocol": "dokodemo-door", "settings": {json}}}"#
        )));
        let inbound = loaded.config.inbounds[0].clone();
        assert_eq!(
            inbound.port,
            InboundPort::Range(PortRange {
                from: 1000,
                to: 1002
            })
        );
        assert_eq!(inbound.listen, Some("::1".parse().expect("ip")));
        let InboundSettings::DokodemoDoor(door) = inbound.settings else {
            panic!("dokodemo")
        };
        door
    };
    assert_eq!(
        door("{}"),
        DokodemoDoor {
            address: None,
            port: 0,
            network: vec![Network::Tcp],
            timeout: 0,
            follow_redirect: false,
            user_level: 0
        }
    );
    assert_eq!(
        door(
            r#"{"address": " example.com ", "port": 53, "network": "udp,tcp", "timeout": 30, "followRedirect": true, "userLevel": 1}"#
        ),
        DokodemoDoor {
            address: Some("example.com".into()),
            port: 53,
            network: vec![Network::Udp, Network::Tcp],
            timeout: 30,
            follow_redirect: true,
            user_level: 1
        }
    );
    assert_eq!(
        door(r#"{"network": ["TCP", "tcp"]}"#).network,
        [Network::Tcp]
    );
    unsupported(
        &inbound(r#"{"port": 1, "protocol": "dokodemo-door", "settings": {"network": "unix"}}"#),
        "inbounds[0].settings.network",
        "dokodemo-door network \"unix\"",
    );
    rejects(
        &inbound(r#"{"port": 1, "protocol": "dokodemo-door", "settings": {"port": 65536}}"#),
        "inbounds[0].settings.port",
        "out of range",
    );
    rejects(
        &inbound(
            r#"{"port": 1, "protocol": "dokodemo-door", "settings": {"followRedirect": "yes"}}"#,
        ),
        "inbounds[0].settings.followRedirect",
        "expected true or false",
    );
}

// ---------------------------------------------------------------- inbound and outbound objects

#[test]
fn inbound_ports_and_listen() {
    let port = |json: &str| {
        let loaded = load(&inbound(&format!(
            r#"{{"port": {json}, "protocol": "dokodemo-door"}}"#
        )));
        loaded.config.inbounds[0].port.clone()
    };
    assert_eq!(
        port("80"),
        InboundPort::Range(PortRange { from: 80, to: 80 })
    );
    assert_eq!(
        port("\"80\""),
        InboundPort::Range(PortRange { from: 80, to: 80 })
    );
    assert_eq!(
        port("\"10-20\""),
        InboundPort::Range(PortRange { from: 10, to: 20 })
    );
    assert_eq!(port("\"env:PORT\""), InboundPort::Env("PORT".into()));
    let env = InboundPort::Env("PORT".into());
    assert_eq!(
        env.resolve(|_| Some("1-2".into())),
        Ok(PortRange { from: 1, to: 2 })
    );
    assert!(env.resolve(|_| None).is_err());

    rejects(
        &inbound(r#"{"protocol": "dokodemo-door"}"#),
        "inbounds[0].port",
        "listening on all interfaces needs a port",
    );
    rejects(
        &inbound(r#"{"listen": "127.0.0.1", "protocol": "dokodemo-door"}"#),
        "inbounds[0].port",
        "listening on 127.0.0.1 needs a port",
    );
    rejects(
        &inbound(r#"{"port": 65536, "protocol": "dokodemo-door"}"#),
        "inbounds[0].port",
        "out of range",
    );
    rejects(
        &inbound(r#"{"port": -1, "protocol": "dokodemo-door"}"#),
        "inbounds[0].port",
        "out of range",
    );
    rejects(
        &inbound(r#"{"port": "20-10", "protocol": "dokodemo-door"}"#),
        "inbounds[0].port",
        "runs backwards",
    );
    rejects(
        &inbound(r#"{"port": "http", "protocol": "dokodemo-door"}"#),
        "inbounds[0].port",
        "not a port number",
    );
    rejects(
        &inbound(r#"{"port": 1, "listen": "example.com", "protocol": "dokodemo-door"}"#),
        "inbounds[0].listen",
        "unable to listen on \"example.com\"",
    );
    unsupported(
        &inbound(r#"{"port": 1, "listen": "@abstract", "protocol": "dokodemo-door"}"#),
        "inbounds[0].listen",
        "unix socket",
    );
    let loaded = load(&inbound(
        r#"{"port": 1, "listen": "localhost", "protocol": "dokodemo-door"}"#,
    ));
    assert_eq!(
        loaded.config.inbounds[0].listen,
        Some("127.0.0.1".parse().expect("ip"))
    );
    let loaded = load(&inbound(
        r#"{"port": 1, "listen": "[::1]", "protocol": "dokodemo-door", "tag": ""}"#,
    ));
    assert_eq!(
        loaded.config.inbounds[0].listen,
        Some("::1".parse().expect("ip"))
    );
    assert_eq!(loaded.config.inbounds[0].tag, None);
}

#[test]
fn protocols_are_named_in_errors() {
    rejects(
        &inbound(r#"{"port": 1}"#),
        "inbounds[0].protocol",
        "protocol is missing",
    );
    rejects(
        &outbound("{}"),
        "outbounds[0].protocol",
        "protocol is missing",
    );
    for name in ["shadowsocks", "trojan", "mtproto"] {
        unsupported(
            &inbound(&format!(r#"{{"port": 1, "protocol": "{name}"}}"#)),
            "inbounds[0].protocol",
            "supported: dokodemo-door, vmess",
        );
    }
    for name in ["socks", "http", "shadowsocks", "trojan", "mtproto", "dns"] {
        unsupported(
            &outbound(&format!(r#"{{"protocol": "{name}"}}"#)),
            "outbounds[0].protocol",
            "supported: freedom, vmess, blackhole",
        );
    }
    rejects(
        &outbound(r#"{"protocol": "loopback"}"#),
        "outbounds[0].protocol",
        "unknown outbound protocol \"loopback\" (supported: freedom, vmess, blackhole, vless)",
    );
    rejects(
        &inbound(r#"{"port": 1, "protocol": "tunnel"}"#),
        "inbounds[0].protocol",
        "unknown inbound protocol \"tunnel\"",
    );
}

/// The transports Rayback lacks, socket options, the HTTP header; WebSocket,
/// TLS and the PROXY protocol are in `stream.rs`.
#[test]
fn stream_settings() {
    let stream = |json: &str| {
        outbound(&format!(
            r#"{{"protocol": "freedom", "streamSettings": {json}}}"#
        ))
    };
    load(&stream(
        r#"{"network": "TCP", "security": "none", "tcpSettings": {"header": {"type": "none"}}, "sockopt": {"mark": 0, "tcpFastOpen": false}}"#,
    ));
    let path = "outbounds[0].streamSettings.network";
    for (name, what) in [
        ("kcp", "mKCP"),
        ("mkcp", "mKCP"),
        ("h2", "HTTP/2"),
        ("http", "HTTP/2"),
        ("ds", "domain socket"),
        ("domainsocket", "domain socket"),
        ("quic", "QUIC"),
    ] {
        unsupported(&stream(&format!(r#"{{"network": "{name}"}}"#)), path, what);
    }
    rejects(
        &stream(r#"{"network": "raw"}"#),
        path,
        "unknown transport protocol \"raw\"",
    );
    rejects(
        &stream(r#"{"tcpSettings": {"header": {"type": "srtp"}}}"#),
        "outbounds[0].streamSettings.tcpSettings.header.type",
        "unknown tcp header type",
    );
    unsupported(
        &stream(r#"{"sockopt": {"mark": 255}}"#),
        "outbounds[0].streamSettings.sockopt.mark",
        "SO_MARK",
    );
    unsupported(
        &stream(r#"{"sockopt": {"tcpFastOpen": true}}"#),
        "outbounds[0].streamSettings.sockopt.tcpFastOpen",
        "TCP Fast Open",
    );
    unsupported(
        &stream(r#"{"sockopt": {"tproxy": "tproxy"}}"#),
        "outbounds[0].streamSettings.sockopt.tproxy",
        "transparent proxy",
    );
    let ignored = load(&stream(
        r#"{"network": "tcp", "wsSettings": {"path": "/"}, "tlsSettings": {}, "security": "xtls"}"#,
    ));
    assert_eq!(
        ignored
            .warnings
            .iter()
            .filter(|w| w.kind == WarningKind::Ignored)
            .count(),
        3,
        "{:#?}",
        ignored.warnings
    );
}

#[test]
fn inbound_extras() {
    let door = |extra: &str| {
        inbound(&format!(
            r#"{{"port": 1, "protocol": "dokodemo-door", {extra}}}"#
        ))
    };
    load(&door(
        r#""sniffing": {"enabled": false, "destOverride": ["http", "TLS"]}, "allocate": {"strategy": "always"}"#,
    ));
    rejects(
        &door(r#""sniffing": {"destOverride": ["quic"]}"#),
        "inbounds[0].sniffing.destOverride[0]",
        "unknown protocol \"quic\"",
    );
    unsupported(
        &door(r#""allocate": {"strategy": "random"}"#),
        "inbounds[0].allocate.strategy",
        "port allocation strategy \"random\"",
    );
    rejects(
        &door(r#""allocate": {}"#),
        "inbounds[0].allocate.strategy",
        "unknown allocation strategy",
    );
}

/// `sniffing` and the legacy `domainOverride`, read as 4.34 reads them.
#[test]
fn sniffing() {
    let door = |extra: &str| {
        let loaded = load(&inbound(&format!(
            r#"{{"port": 1, "protocol": "dokodemo-door", {extra}}}"#
        )));
        loaded.config.inbounds[0].sniffing.clone()
    };
    let with = |dest_override: &[SniffOverride]| {
        Some(Sniffing {
            dest_override: dest_override.to_vec(),
        })
    };
    use SniffOverride::{Http, Tls};
    assert_eq!(door(r#""sniffing": {"enabled": true}"#), with(&[]));
    assert_eq!(
        door(r#""sniffing": {"enabled": true, "destOverride": ["HTTP", "ssl", "https", "tls"]}"#),
        with(&[Http, Tls])
    );
    assert_eq!(
        door(r#""sniffing": {"enabled": true, "destOverride": "tls"}"#),
        with(&[Tls])
    );
    assert_eq!(
        door(r#""sniffing": {"enabled": false, "destOverride": ["tls"]}"#),
        None
    );
    assert_eq!(door(r#""sniffing": {}"#), None);
    assert_eq!(door(r#""tag": "plain""#), None);
    // The legacy key turns sniffing on, unless a `sniffing` object is there.
    assert_eq!(
        door(r#""domainOverride": ["tls", "http"]"#),
        with(&[Tls, Http])
    );
    assert_eq!(door(r#""domainOverride": []"#), None);
    assert_eq!(
        door(r#""domainOverride": ["http"], "sniffing": {"enabled": false}"#),
        None
    );
    assert_eq!(
        door(
            r#""domainOverride": ["http"], "sniffing": {"enabled": true, "destOverride": ["tls"]}"#
        ),
        with(&[Tls])
    );
    // `--print-config` writes it back as a `sniffing` object.
    for extra in [
        r#""sniffing": {"enabled": true, "destOverride": ["ssl", "http"]}"#,
        r#""domainOverride": ["http"]"#,
        r#""sniffing": {"enabled": true}"#,
    ] {
        let loaded = load(&inbound(&format!(
            r#"{{"port": 1, "protocol": "dokodemo-door", {extra}}}"#
        )));
        let json = loaded.config.to_v2ray_json().to_string();
        assert_eq!(load(&json).config, loaded.config, "{json}");
    }
    // Unknown names fail even where they would have no effect, as in 4.34.
    for extra in [
        r#""sniffing": {"enabled": true, "destOverride": ["bittorrent"]}"#,
        r#""sniffing": {"enabled": false, "destOverride": ["http1"]}"#,
    ] {
        let text = inbound(&format!(
            r#"{{"port": 1, "protocol": "dokodemo-door", {extra}}}"#
        ));
        rejects(
            &text,
            "inbounds[0].sniffing.destOverride[0]",
            "unknown protocol",
        );
    }
    rejects(
        &inbound(r#"{"port": 1, "protocol": "dokodemo-door", "domainOverride": ["quic"]}"#),
        "inbounds[0].domainOverride[0]",
        "unknown protocol \"quic\"",
    );
}

#[test]
fn outbound_extras() {
    let loaded = load(&outbound(
        r#"{"protocol": "freedom", "sendThrough": "10.0.0.1", "tag": ""}"#,
    ));
    assert_eq!(
        loaded.config.outbounds[0].send_through,
        Some("10.0.0.1".parse().expect("ip"))
    );
    assert_eq!(loaded.config.outbounds[0].tag, None);
    rejects(
        &outbound(r#"{"protocol": "freedom", "sendThrough": "example.com"}"#),
        "outbounds[0].sendThrough",
        "unable to send through",
    );
    unsupported(
        &outbound(r#"{"protocol": "freedom", "proxySettings": {"tag": "x"}}"#),
        "outbounds[0].proxySettings",
        "dialing through another outbound",
    );
}

#[test]
fn top_level_services() {
    unsupported(
        r#"{"api": {"tag": "api", "services": ["StatsService"]}}"#,
        "api",
        "the api service",
    );
    unsupported(
        r#"{"transport": {"tcpSettings": {}}}"#,
        "transport",
        "global transport settings",
    );
    // An empty `dns` is a DNS with no servers: the system resolver, as in
    // 4.34, so only `stats` is worth a warning.
    let loaded = load(r#"{"dns": {}, "transport": {}, "stats": {}}"#);
    assert_eq!(
        loaded
            .warnings
            .iter()
            .filter(|w| w.kind == WarningKind::Ignored)
            .count(),
        1,
        "{:#?}",
        loaded.warnings
    );
    rejects("[]", "(top level)", "expected an object");
    rejects(r#"{"inbounds": {}}"#, "inbounds", "expected an array");
    rejects(r#"{"log": []}"#, "log", "expected an object");
}

// ---------------------------------------------------------------- policy and log

#[test]
fn policy_levels() {
    let loaded = load(
        r#"{"policy": {"levels": {"0": {"handshake": 4, "connIdle": 120, "uplinkOnly": 2, "downlinkOnly": 5, "bufferSize": -1},
                                  "7": {"bufferSize": 64, "statsUserUplink": true}, "8": null},
                       "system": {"statsInboundUplink": true}}}"#,
    );
    let policy = &loaded.config.policy;
    assert_eq!(
        policy.level(0),
        LevelPolicy {
            handshake: Duration::from_secs(4),
            conn_idle: Duration::from_secs(120),
            uplink_only: Duration::from_secs(2),
            downlink_only: Duration::from_secs(5),
            buffer_size: BufferSize::Unlimited,
        }
    );
    assert_eq!(
        policy.level(7),
        LevelPolicy {
            buffer_size: BufferSize::Bytes(64 * 1024),
            ..LevelPolicy::default()
        }
    );
    assert_eq!(policy.level(8), LevelPolicy::default());
    assert_eq!(policy.level(3), LevelPolicy::default());
    assert_eq!(
        LevelPolicy::default(),
        LevelPolicy {
            handshake: Duration::from_secs(60),
            conn_idle: Duration::from_secs(300),
            uplink_only: Duration::from_secs(1),
            downlink_only: Duration::from_secs(1),
            buffer_size: BufferSize::Bytes(512 * 1024),
        }
    );
    assert_eq!(
        loaded
            .warnings
            .iter()
            .filter(|w| w.kind == WarningKind::Ignored)
            .count(),
        2,
        "{:#?}",
        loaded.warnings
    );
    rejects(
        r#"{"policy": {"levels": {"-1": {}}}}"#,
        "policy.levels.\"-1\"",
        "not a decimal number",
    );
    rejects(
        r#"{"policy": {"levels": {"0": {"connIdle": -5}}}}"#,
        "policy.levels.\"0\".connIdle",
        "out of range",
    );
}

#[test]
fn log_settings() {
    let log = |json: &str| load(&format!(r#"{{"log": {json}}}"#)).config.log;
    assert_eq!(
        log("{}"),
        Log {
            access: LogTarget::Console,
            error: LogTarget::Console,
            level: LogLevel::Warning
        }
    );
    assert_eq!(
        log(r#"{"access": "/var/log/a.log", "error": "none", "loglevel": "DEBUG"}"#),
        Log {
            access: LogTarget::File("/var/log/a.log".into()),
            error: LogTarget::None,
            level: LogLevel::Debug
        }
    );
    assert_eq!(
        log(r#"{"access": "", "loglevel": "none"}"#),
        Log {
            access: LogTarget::None,
            error: LogTarget::None,
            level: LogLevel::None
        }
    );
    assert_eq!(log(r#"{"loglevel": "info"}"#).level, LogLevel::Info);
    assert_eq!(log(r#"{"loglevel": "error"}"#).level, LogLevel::Error);
    assert_eq!(log(r#"{"loglevel": "verbose"}"#).level, LogLevel::Warning);
}

#[test]
fn deprecated_forms_merge_in_v2ray_order() {
    let loaded = load(
        r#"{"port": 1080,
            "inbound": {"protocol": "dokodemo-door", "tag": "a"},
            "inboundDetour": [{"protocol": "dokodemo-door", "port": 2, "tag": "b"}],
            "inbounds": [{"protocol": "dokodemo-door", "port": 3, "tag": "c"}],
            "outbound": {"protocol": "freedom", "tag": "x"},
            "outboundDetour": [{"protocol": "blackhole", "tag": "y"}],
            "outbounds": [{"protocol": "freedom", "tag": "z"}]}"#,
    );
    let config = &loaded.config;
    let inbound_tags: Vec<_> = config
        .inbounds
        .iter()
        .map(|i| i.tag.as_ref().map(Tag::as_str).unwrap_or(""))
        .collect();
    assert_eq!(inbound_tags, ["a", "b", "c"]);
    assert_eq!(
        config.inbounds[0].port,
        InboundPort::Range(PortRange {
            from: 1080,
            to: 1080
        })
    );
    let outbound_tags: Vec<_> = config
        .outbounds
        .iter()
        .map(|o| o.tag.as_ref().map(Tag::as_str).unwrap_or(""))
        .collect();
    assert_eq!(outbound_tags, ["x", "y", "z"]);
    assert_eq!(
        config
            .default_outbound()
            .and_then(|o| o.tag.as_ref().map(Tag::as_str)),
        Some("x")
    );
}
