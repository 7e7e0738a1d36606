//! The seed page's configurations (config-examples/seed/) load, mean the
//! same in both forms, pass the real `v2ray -test`, and survive a round
//! trip through `to_v2ray_json`; the page's uncorrected snippet fails with
//! its line and column.

use std::path::PathBuf;

use rayback_config::*;

fn seed(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../config-examples/seed")
        .join(name)
}

fn load(name: &str) -> Loaded {
    let source = load_file(seed(name)).expect("seed file readable");
    parse(&[source]).unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn id() -> VmessId {
    VmessId(
        "27848739-7e62-4138-9fd3-098a63964b6b"
            .parse()
            .expect("uuid"),
    )
}

#[test]
fn seed_bridge_loads_as_the_page_describes() {
    let loaded = load("bridge.json");
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let config = loaded.config;
    assert_eq!(
        config.reverse.bridges,
        [Bridge {
            tag: "bridge".into(),
            domain: "test.v2ray.com".into()
        }]
    );
    assert!(config.inbounds.is_empty());
    assert_eq!(config.outbounds.len(), 2);
    assert_eq!(
        config.outbounds[0].tag.as_ref().map(Tag::as_str),
        Some("out")
    );
    let OutboundSettings::Freedom(freedom) = &config.outbounds[0].settings else {
        panic!("freedom first")
    };
    assert_eq!(
        freedom.redirect,
        Some(Redirect {
            host: Some(rayback_core::Address::parse("127.0.0.1").unwrap()),
            port: 80
        })
    );
    let OutboundSettings::Vmess(vmess) = &config.outbounds[1].settings else {
        panic!("vmess second")
    };
    assert_eq!(vmess.vnext[0].address, "127.0.0.1");
    assert_eq!(vmess.vnext[0].port, 1024);
    assert_eq!(vmess.vnext[0].users[0].id, id());
    assert_eq!(vmess.vnext[0].users[0].security, VmessSecurity::Auto);
    assert_eq!(config.routing.rules.len(), 2);
    assert_eq!(config.routing.rules[0].inbound_tag, ["bridge"]);
    assert_eq!(config.routing.rules[0].domain, ["full:test.v2ray.com"]);
    assert_eq!(
        config.routing.rules[0].target,
        RuleTarget::Outbound("interconn".into())
    );
    assert_eq!(
        config.routing.rules[1].target,
        RuleTarget::Outbound("out".into())
    );
    assert_eq!(config.log, Log::default());
    assert_eq!(config.policy.level(0), LevelPolicy::default());
}

#[test]
fn seed_portal_loads_as_the_page_describes() {
    let loaded = load("portal.json");
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let config = loaded.config;
    assert_eq!(config.reverse.portals.len(), 1);
    assert_eq!(config.reverse.portals[0].tag, "portal");
    assert_eq!(
        config.reverse.portals[0].control_domain,
        ControlDomain::V2Ray
    );
    assert!(config.outbounds.is_empty());
    let external = &config.inbounds[0];
    assert_eq!(external.tag.as_ref().map(Tag::as_str), Some("external"));
    assert_eq!(external.listen, None);
    assert_eq!(
        external.port,
        InboundPort::Range(PortRange { from: 80, to: 80 })
    );
    assert_eq!(
        external.settings,
        InboundSettings::DokodemoDoor(DokodemoDoor {
            address: Some("127.0.0.1".into()),
            port: 80,
            network: vec![Network::Tcp],
            timeout: 0,
            follow_redirect: false,
            user_level: 0,
        })
    );
    let InboundSettings::Vmess(vmess) = &config.inbounds[1].settings else {
        panic!("vmess")
    };
    assert_eq!(vmess.clients.len(), 1);
    assert_eq!(vmess.clients[0].id, id());
    assert_eq!(config.routing.rules.len(), 2);
    assert!(config
        .routing
        .rules
        .iter()
        .all(|rule| rule.target == RuleTarget::Outbound("portal".into())));
}

#[test]
fn modern_forms_equal_the_legacy_forms() {
    assert_eq!(
        load("bridge.json").config,
        load("bridge.modern.json").config
    );
    assert_eq!(
        load("portal.json").config,
        load("portal.modern.json").config
    );
}

#[test]
fn uncorrected_snippet_fails_at_the_missing_comma() {
    let source = load_file(seed("bridge-outbounds-snippet.json")).expect("readable");
    let error = parse(&[source]).expect_err("the page's snippet lacks a comma");
    assert!(error.is_syntax());
    assert_eq!(error.position(), Some((4, 5)));
    let shown = error.to_string();
    assert!(
        shown.contains("bridge-outbounds-snippet.json:4:5: expected `,` or `}`"),
        "{shown}"
    );
    assert!(
        shown.contains("\n        \"protocol\": \"freedom\",\n        ^"),
        "{shown}"
    );
}

#[test]
fn seed_files_pass_v2ray_test() {
    for name in [
        "bridge.json",
        "portal.json",
        "bridge.modern.json",
        "portal.modern.json",
    ] {
        let text = std::fs::read_to_string(seed(name)).expect("readable");
        let (code, output) = rayback_testkit::v2ray_test(&text, name).expect("v2ray runs");
        assert_eq!(code, 0, "{name}: {output}");
        assert!(output.contains("Configuration OK"), "{name}: {output}");
    }
    let text = std::fs::read_to_string(seed("bridge-outbounds-snippet.json")).expect("readable");
    let (code, _) = rayback_testkit::v2ray_test(&text, "snippet.json").expect("v2ray runs");
    assert_eq!(code, 2, "V2Ray panics on a JSON syntax error");
}

#[test]
fn seed_files_round_trip_and_the_output_passes_v2ray_test() {
    for name in ["bridge.json", "portal.json"] {
        let config = load(name).config;
        let json = config.to_v2ray_json();
        let text = serde_json::to_string_pretty(&json).expect("serializes");
        let again = parse_str("printed.json", &text)
            .unwrap_or_else(|error| panic!("{name}: {error}\n{text}"));
        assert_eq!(again.config, config, "{name}");
        assert!(again.warnings.is_empty(), "{name}: {:#?}", again.warnings);
        let (code, output) =
            rayback_testkit::v2ray_test(&text, "printed.json").expect("v2ray runs");
        assert_eq!(code, 0, "{name}: {output}\n{text}");
    }
}
