//! Several sources merge as `v2ray -config a.json -config b.json` does
//! (spec §2): checked on the typed result, and against the real V2Ray's
//! verdict for merges whose outcome decides validity.

use std::process::Command;

use rayback_config::*;

const ID: &str = "27848739-7e62-4138-9fd3-098a63964b6b";

fn merge(files: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let sources: Vec<Source> = files
        .iter()
        .map(|(name, text)| Source::new(*name, *text))
        .collect();
    parse(&sources)
}

fn merged(files: &[(&str, &str)]) -> Config {
    merge(files)
        .unwrap_or_else(|error| panic!("{error}"))
        .config
}

fn tags(outbounds: &[Outbound]) -> Vec<&str> {
    outbounds
        .iter()
        .map(|o| o.tag.as_ref().map(Tag::as_str).unwrap_or(""))
        .collect()
}

fn inbound_tags(inbounds: &[Inbound]) -> Vec<&str> {
    inbounds
        .iter()
        .map(|i| i.tag.as_ref().map(Tag::as_str).unwrap_or(""))
        .collect()
}

const BASE: &str = r#"{
  "log": {"loglevel": "debug"},
  "inbounds": [{"tag": "a", "port": 1, "protocol": "dokodemo-door"}, {"tag": "b", "port": 2, "protocol": "dokodemo-door"}],
  "outbounds": [{"tag": "x", "protocol": "freedom"}, {"tag": "y", "protocol": "blackhole"}],
  "routing": {"rules": [{"type": "field", "inboundTag": ["a"], "outboundTag": "x"}]},
  "policy": {"levels": {"0": {"connIdle": 10}}},
  "reverse": {"bridges": [{"tag": "bridge", "domain": "d"}]},
  "rayback": {"noBridgeWait": 10}
}"#;

#[test]
fn a_later_file_replaces_whole_sections() {
    let config = merged(&[
        ("base.json", BASE),
        (
            "over.json",
            r#"{"log": {"loglevel": "error"}, "routing": {"rules": [{"type": "field", "network": "udp", "outboundTag": "y"}]},
                "policy": {"levels": {"1": {}}}, "reverse": {"portals": [{"tag": "p", "domain": "d"}]},
                "rayback": {"metrics": "127.0.0.1:9100"}}"#,
        ),
    ]);
    assert_eq!(config.log.level, LogLevel::Error);
    assert_eq!(config.routing.rules.len(), 1);
    assert_eq!(
        config.routing.rules[0].target,
        RuleTarget::Outbound("y".into())
    );
    assert_eq!(config.policy.level(0), LevelPolicy::default());
    assert!(config.policy.levels.contains_key(&1));
    assert!(config.reverse.bridges.is_empty());
    assert_eq!(config.reverse.portals.len(), 1);
    assert_eq!(
        config.rayback.no_bridge_wait,
        RaybackExtras::default().no_bridge_wait
    );
    assert!(config.rayback.metrics.is_some());
    // Untouched sections stay.
    assert_eq!(inbound_tags(&config.inbounds), ["a", "b"]);
    assert_eq!(tags(&config.outbounds), ["x", "y"]);
}

#[test]
fn a_single_inbound_replaces_its_tag_or_is_appended() {
    let config = merged(&[
        ("base.json", BASE),
        (
            "in.json",
            r#"{"inbounds": [{"tag": "b", "port": 22, "protocol": "dokodemo-door"}]}"#,
        ),
    ]);
    assert_eq!(inbound_tags(&config.inbounds), ["a", "b"]);
    assert_eq!(
        config.inbounds[1].port,
        InboundPort::Range(PortRange { from: 22, to: 22 })
    );

    let config = merged(&[
        ("base.json", BASE),
        (
            "in.json",
            r#"{"inbounds": [{"tag": "c", "port": 3, "protocol": "dokodemo-door"}]}"#,
        ),
    ]);
    assert_eq!(inbound_tags(&config.inbounds), ["a", "b", "c"]);

    let config = merged(&[
        ("base.json", BASE),
        (
            "in.json",
            r#"{"inbounds": [{"tag": "c", "port": 3, "protocol": "dokodemo-door"}, {"tag": "d", "port": 4, "protocol": "dokodemo-door"}]}"#,
        ),
    ]);
    assert_eq!(inbound_tags(&config.inbounds), ["c", "d"]);

    // An empty list changes nothing.
    let config = merged(&[
        ("base.json", BASE),
        ("in.json", r#"{"inbounds": [], "outbounds": []}"#),
    ]);
    assert_eq!(inbound_tags(&config.inbounds), ["a", "b"]);
    assert_eq!(tags(&config.outbounds), ["x", "y"]);
}

#[test]
fn a_single_new_outbound_is_prepended_unless_the_file_is_a_tail() {
    let single = r#"{"outbounds": [{"tag": "z", "protocol": "freedom"}]}"#;
    assert_eq!(
        tags(&merged(&[("base.json", BASE), ("extra.json", single)]).outbounds),
        ["z", "x", "y"]
    );
    assert_eq!(
        tags(&merged(&[("base.json", BASE), ("conf/99-Tail.json", single)]).outbounds),
        ["x", "y", "z"]
    );

    let replace = r#"{"outbounds": [{"tag": "y", "protocol": "freedom"}]}"#;
    let config = merged(&[("base.json", BASE), ("extra.json", replace)]);
    assert_eq!(tags(&config.outbounds), ["x", "y"]);
    assert!(matches!(
        config.outbounds[1].settings,
        OutboundSettings::Freedom(_)
    ));

    let two = r#"{"outbounds": [{"tag": "p", "protocol": "freedom"}, {"tag": "q", "protocol": "freedom"}]}"#;
    assert_eq!(
        tags(&merged(&[("base.json", BASE), ("extra.json", two)]).outbounds),
        ["p", "q"]
    );

    // With an empty base the single outbound is the list.
    assert_eq!(
        tags(&merged(&[("base.json", "{}"), ("extra.json", single)]).outbounds),
        ["z"]
    );
}

#[test]
fn deprecated_port_comes_from_the_first_file() {
    let config = merged(&[
        (
            "a.json",
            r#"{"port": 5, "inbound": {"protocol": "dokodemo-door"}}"#,
        ),
        ("b.json", r#"{"port": 6}"#),
    ]);
    assert_eq!(
        config.inbounds[0].port,
        InboundPort::Range(PortRange { from: 5, to: 5 })
    );
}

#[test]
fn errors_and_warnings_name_the_file_of_the_piece() {
    let error = merge(&[
        ("base.json", BASE),
        ("bad.json", r#"{"outbounds": [{"tag": "z", "protocol": "vmess", "settings": {"vnext": [{"address": "a", "port": 1, "users": [{"id": "nope-nope-nope-nope-nope-nope-nope"}]}]}}]}"#),
    ])
    .expect_err("bad id");
    assert_eq!(error.file(), "bad.json");
    assert_eq!(
        error.path(),
        Some("outbounds[0].settings.vnext[0].users[0].id")
    );

    let loaded = merge(&[
        ("base.json", BASE),
        ("rules.json", r#"{"routing": {"rules": [{"type": "field", "network": "tcp", "outboundTag": "nowhere"}]}}"#),
    ])
    .expect("loads");
    let warning = loaded
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::UnknownOutboundTag)
        .expect("warning");
    assert_eq!(warning.file, "rules.json");
    assert_eq!(warning.path, "routing.rules[0].outboundTag");

    let error =
        merge(&[("base.json", BASE), ("syntax.json", "{\n\"log\": {}}}")]).expect_err("syntax");
    assert_eq!(
        (error.file(), error.position()),
        ("syntax.json", Some((2, 11)))
    );
}

/// `v2ray -test` with several `-config` files; returns the exit code.
fn v2ray_test_many(files: &[(&str, &str)]) -> i32 {
    let dir = rayback_testkit::TempDir::new("merge").expect("temp dir");
    let mut command = Command::new(rayback_testkit::v2ray_path());
    command.arg("-test");
    for (name, text) in files {
        let path = dir.path.join(name);
        std::fs::write(&path, text).expect("write");
        command.arg("-config").arg(&path);
    }
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .expect("v2ray runs");
    output.status.code().unwrap_or(-1)
}

#[test]
fn merge_verdicts_agree_with_v2ray() {
    let bad_base = r#"{"outbounds": [{"tag": "x", "protocol": "freedom"},
                          {"tag": "broken", "protocol": "vmess", "settings": {"vnext": [{"address": "a", "port": 1, "users": [{"id": "bad"}]}]}}]}"#;
    let fix_by_tag = format!(
        r#"{{"outbounds": [{{"tag": "broken", "protocol": "vmess", "settings": {{"vnext": [{{"address": "a", "port": 1, "users": [{{"id": "{ID}"}}]}}]}}}}]}}"#
    );
    let new_tag = r#"{"outbounds": [{"tag": "other", "protocol": "freedom"}]}"#;
    let replace_list = r#"{"outbounds": [{"tag": "p", "protocol": "freedom"}, {"tag": "q", "protocol": "freedom"}]}"#;
    let bad_routing = r#"{"routing": {"rules": [{"type": "field", "outboundTag": "x"}]}}"#;
    let good_routing =
        r#"{"routing": {"rules": [{"type": "field", "network": "tcp", "outboundTag": "x"}]}}"#;
    let scenarios: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "a broken outbound replaced by tag",
            vec![("base.json", bad_base), ("fix.json", &fix_by_tag)],
        ),
        (
            "a broken outbound kept, new tag prepended",
            vec![("base.json", bad_base), ("new.json", new_tag)],
        ),
        (
            "a broken outbound list replaced",
            vec![("base.json", bad_base), ("list.json", replace_list)],
        ),
        (
            "bad routing replaced",
            vec![("r1.json", bad_routing), ("r2.json", good_routing)],
        ),
        (
            "good routing replaced by bad",
            vec![("r1.json", good_routing), ("r2.json", bad_routing)],
        ),
    ];
    for (what, files) in scenarios {
        let ours = merge(&files).is_ok();
        let code = v2ray_test_many(&files);
        assert!(code == 0 || code == 23, "{what}: v2ray exited {code}");
        assert_eq!(
            ours,
            code == 0,
            "{what}: rayback ok={ours}, v2ray exit {code}"
        );
    }
}
