//! Properties: no input makes loading panic, whatever its shape — random
//! text, damaged copies of the seed files, and random JSON trees built from
//! the keys V2Ray knows (so the builders, not only the parser, are hit).

use proptest::prelude::*;
use serde_json::{Map, Value};

const SEED_BRIDGE: &str = include_str!("../../../config-examples/seed/bridge.json");
const SEED_PORTAL: &str = include_str!("../../../config-examples/seed/portal.json");

/// Keys and values that appear in real configurations.
const KEYS: &[&str] = &[
    "inbounds",
    "outbounds",
    "inbound",
    "outboundDetour",
    "routing",
    "reverse",
    "policy",
    "log",
    "rayback",
    "protocol",
    "settings",
    "tag",
    "port",
    "listen",
    "streamSettings",
    "mux",
    "sniffing",
    "vnext",
    "users",
    "clients",
    "id",
    "address",
    "redirect",
    "rules",
    "type",
    "outboundTag",
    "balancerTag",
    "balancers",
    "selector",
    "domain",
    "ip",
    "network",
    "inboundTag",
    "bridges",
    "portals",
    "levels",
    "0",
    "bufferSize",
    "concurrency",
    "enabled",
    "security",
    "response",
    "limits",
    "metrics",
    "controlDomain",
    "header",
];
const WORDS: &[&str] = &[
    "freedom",
    "vmess",
    "blackhole",
    "dokodemo-door",
    "field",
    "tcp",
    "udp",
    "ws",
    "tls",
    "none",
    "http",
    "27848739-7e62-4138-9fd3-098a63964b6b",
    "127.0.0.1:80",
    ":80",
    "1-2",
    "env:X",
    "full:a",
    "",
    "a,b",
];

/// A top-level object whose values are random trees.
fn random_config() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(KEYS), json_tree()), 0..5).prop_map(|entries| {
        let mut map = Map::new();
        for (key, value) in entries {
            map.insert(key.to_owned(), value);
        }
        Value::Object(map)
    })
}

fn json_tree() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-2i64..70000).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(WORDS).prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|entries| {
                let mut map = Map::new();
                for (key, value) in entries {
                    map.insert(key.to_owned(), value);
                }
                Value::Object(map)
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_text_never_panics(text in ".{0,200}") {
        let _ = rayback_config::parse_str("r.json", &text);
        let _ = rayback_config::parse(&[rayback_config::Source::new("r.toml", text)]);
    }

    #[test]
    fn damaged_seed_files_never_panic(
        portal in any::<bool>(),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), 0usize..6, ".{0,3}"), 1..4),
    ) {
        let mut text = if portal { SEED_PORTAL } else { SEED_BRIDGE }.to_owned();
        for (at, remove, insert) in cuts {
            let mut start = at.index(text.len() + 1);
            while !text.is_char_boundary(start) { start -= 1; }
            let mut end = (start + remove).min(text.len());
            while !text.is_char_boundary(end) { end += 1; }
            text.replace_range(start..end, &insert);
        }
        if let Err(error) = rayback_config::parse_str("d.json", &text) {
            // Every failure says where.
            prop_assert!(error.path().is_some() || error.position().is_some(), "{}", error);
        }
    }

    #[test]
    fn random_configs_never_panic(tree in random_config()) {
        let text = tree.to_string();
        if let Ok(loaded) = rayback_config::parse_str("t.json", &text) {
            // Whatever loads also round-trips.
            let printed = loaded.config.to_v2ray_json().to_string();
            let again = rayback_config::parse_str("p.json", &printed);
            prop_assert!(again.is_ok(), "{:?}\n{}", again.err(), printed);
            prop_assert_eq!(again.ok().map(|loaded| loaded.config), Some(loaded.config));
        }
    }
}

/// The random-config property is not vacuous: some samples load, some fail.
#[test]
fn random_configs_cover_both_outcomes() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut loaded, mut failed) = (0, 0);
    for _ in 0..500 {
        let tree = random_config()
            .new_tree(&mut runner)
            .expect("sample")
            .current();
        match rayback_config::parse_str("t.json", &tree.to_string()) {
            Ok(_) => loaded += 1,
            Err(_) => failed += 1,
        }
    }
    assert!(
        loaded >= 10 && failed >= 10,
        "loaded {loaded}, failed {failed}"
    );
}
