//! The JSON dialect as seen through `parse`: comments, case-insensitive
//! keys, string lists, duplicate keys, syntax errors with positions, TOML.

use rayback_config::*;

fn load(text: &str) -> Loaded {
    parse_str("t.json", text).unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn comments_of_every_kind_are_ignored_and_markers_in_strings_kept() {
    let loaded = load(
        r#"// head
        # hash
        { /* block
             over lines */ "outbounds": [ { "protocol": "freedom", # trailing
           "settings": { "redirect": "a.example:80" } } ],
          "reverse": { "bridges": [ { "tag": "b//x", "domain": "d/*y*/#z" } ] } }"#,
    );
    assert_eq!(loaded.config.reverse.bridges[0].tag, "b//x");
    assert_eq!(loaded.config.reverse.bridges[0].domain, "d/*y*/#z");
}

#[test]
fn line_numbers_survive_block_comments() {
    let text = "{\n/* one\ntwo\nthree */\n  \"outbounds\": [],,\n}";
    let error = parse_str("c.json", text).expect_err("double comma");
    assert_eq!(error.position(), Some((5, 19)), "{error}");
}

#[test]
fn keys_match_without_regard_to_case_at_every_level() {
    let loaded = load(
        r#"{"OUTBOUNDS": [{"Protocol": "FREEDOM", "TAG": "direct", "Settings": {"REDIRECT": ":80"}}],
            "Routing": {"RULES": [{"TYPE": "Field", "InboundTAG": ["x"], "OutboundTag": "direct"}]}}"#,
    );
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let config = loaded.config;
    assert_eq!(
        config.outbounds[0].tag.as_ref().map(Tag::as_str),
        Some("direct")
    );
    let OutboundSettings::Freedom(freedom) = &config.outbounds[0].settings else {
        panic!("freedom")
    };
    assert_eq!(
        freedom.redirect,
        Some(Redirect {
            host: None,
            port: 80
        })
    );
    assert_eq!(config.routing.rules[0].inbound_tag, ["x"]);
}

#[test]
fn duplicate_keys_last_one_wins_even_across_case() {
    let loaded = load(
        r#"{"outbounds": [{"protocol": "blackhole", "tag": "a", "Tag": "b", "PROTOCOL": "freedom"}]}"#,
    );
    assert_eq!(
        loaded.config.outbounds[0].tag.as_ref().map(Tag::as_str),
        Some("b")
    );
    assert!(matches!(
        loaded.config.outbounds[0].settings,
        OutboundSettings::Freedom(_)
    ));
}

#[test]
fn string_lists_accept_arrays_and_comma_separated_strings() {
    let loaded = load(
        r#"{"routing": {"rules": [
            {"type": "field", "inboundTag": "a,b", "ip": "10.0.0.0/8,127.0.0.1", "outboundTag": "x"},
            {"type": "field", "domain": ["full:a"], "domains": "domain:b", "network": "tcp,UDP", "outboundTag": "x"},
            {"type": "field", "port": 53, "sourcePort": "1000-2000, 3000", "outboundTag": "x"}]}}"#,
    );
    let rules = &loaded.config.routing.rules;
    assert_eq!(rules[0].inbound_tag, ["a", "b"]);
    assert_eq!(rules[0].ip, ["10.0.0.0/8", "127.0.0.1"]);
    assert_eq!(rules[1].domain, ["full:a", "domain:b"]);
    assert_eq!(rules[1].network, [RuleNetwork::Tcp, RuleNetwork::Udp]);
    assert_eq!(rules[2].port.as_deref(), Some("53"));
    assert_eq!(rules[2].source_port.as_deref(), Some("1000-2000, 3000"));
}

#[test]
fn unknown_keys_warn_with_did_you_mean() {
    let loaded = load(
        r#"{"outbonds": [], "outbounds": [{"protocol": "freedom", "setings": {}}], "zzzzzz": 1}"#,
    );
    let shown: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert!(
        shown
            .iter()
            .any(|w| w.contains("outbonds") && w.contains("did you mean \"outbounds\"")),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|w| w.contains("outbounds[0].setings") && w.contains("did you mean \"settings\"")),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|w| w.contains("zzzzzz") && !w.contains("did you mean")),
        "{shown:#?}"
    );
    assert!(loaded
        .warnings
        .iter()
        .all(|w| w.kind == WarningKind::UnknownKey));
}

#[test]
fn rayback_only_keys_do_not_warn() {
    let loaded = load(
        r#"{"rayback": {"metrics": "127.0.0.1:9100", "noBridgeWait": 100, "workers": 3,
              "limits": {"streamsPerConnection": 8, "connectionsPerBridge": 2, "unauthenticatedPerSource": 4,
                         "streamStallTimeout": 5, "streamBuffer": 4096}},
            "reverse": {"portals": [{"tag": "p", "domain": "d", "controlDomain": "reverse.internal.v2fly.org"}]}}"#,
    );
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let extras = &loaded.config.rayback;
    assert_eq!(
        extras.metrics,
        Some("127.0.0.1:9100".parse().expect("addr"))
    );
    assert_eq!(extras.no_bridge_wait, std::time::Duration::from_millis(100));
    assert_eq!(extras.workers, 3);
    assert_eq!(extras.limits.streams_per_connection, 8);
    assert_eq!(extras.limits.connections_per_bridge, 2);
    assert_eq!(extras.limits.unauthenticated_per_source, 4);
    assert_eq!(
        extras.limits.stream_stall_timeout,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(extras.limits.stream_buffer, 4096);
    assert_eq!(
        loaded.config.reverse.portals[0].control_domain,
        ControlDomain::V2Fly
    );
}

#[test]
fn rayback_defaults() {
    let config = load("{}").config;
    assert_eq!(config.rayback, RaybackExtras::default());
    assert_eq!(
        config.rayback.no_bridge_wait,
        std::time::Duration::from_millis(2000)
    );
    assert_eq!(config.rayback.limits.streams_per_connection, 1024);
    assert_eq!(config.rayback.limits.connections_per_bridge, 64);
    assert_eq!(config.rayback.limits.unauthenticated_per_source, 64);
    assert_eq!(
        config.rayback.limits.stream_stall_timeout,
        std::time::Duration::from_secs(30)
    );
    assert_eq!(config.rayback.limits.stream_buffer, 262_144);
    assert_eq!(config.log, Log::default());
}

#[test]
fn trailing_commas_are_errors_with_line_and_column() {
    let text = "{\n  \"outbounds\": [\n    {\"protocol\": \"freedom\"},\n  ]\n}\n";
    let error = parse_str("conf/bridge.json", text).expect_err("trailing comma");
    assert!(error.is_syntax());
    assert_eq!(error.file(), "conf/bridge.json");
    assert_eq!(error.position(), Some((4, 3)));
    assert_eq!(
        error.to_string(),
        "conf/bridge.json:4:3: trailing comma\n      ]\n      ^"
    );

    let error = parse_str("o.json", "{\"log\": {},}").expect_err("trailing comma in object");
    assert_eq!(error.position(), Some((1, 12)));
}

#[test]
fn missing_comma_names_line_and_column() {
    let text =
        "{\n  \"outbounds\": [{\n    \"tag\": \"out\"\n    \"protocol\": \"freedom\"\n  }]\n}";
    let error = parse_str("bridge.json", text).expect_err("missing comma");
    assert_eq!(error.position(), Some((4, 5)));
    assert!(
        error
            .to_string()
            .starts_with("bridge.json:4:5: expected `,` or `}`"),
        "{error}"
    );
}

#[test]
fn a_non_breaking_space_pasted_from_a_web_page_is_named() {
    // Line 3 is indented with two spaces, two non-breaking spaces (as a
    // web page renders `&nbsp;`) and a space: the first NBSP is column 3.
    // Columns count bytes from 1, like every syntax error's; the
    // indentation before it is ASCII, so this is also the character.
    let text = "{\n  \"outbounds\": [\n  \u{A0}\u{A0} {\"protocol\": \"freedom\"}\n  ]\n}\n";
    let error = parse_str("config.json", text).expect_err("NBSP outside a string");
    assert!(error.is_syntax());
    assert_eq!(error.position(), Some((3, 3)));
    assert_eq!(
        error.to_string(),
        "config.json:3:3: a non-breaking space (U+00A0) is not JSON whitespace; \
         replace it with a normal space\n      \u{A0}\u{A0} {\"protocol\": \"freedom\"}\n      ^"
    );

    // Inside a string it is just a character of the value.
    let loaded = load(
        "{\n  \"outbounds\": [\n    {\"protocol\": \"freedom\", \"tag\": \"out\u{A0}1\"}\n  ]\n}\n",
    );
    assert_eq!(
        loaded.config.outbounds[0].tag.as_ref().map(Tag::as_str),
        Some("out\u{A0}1")
    );
}

#[test]
fn empty_and_truncated_texts_are_syntax_errors() {
    assert!(parse_str("e.json", "").expect_err("empty").is_syntax());
    assert!(parse_str("e.json", "{\"outbounds\": [")
        .expect_err("truncated")
        .is_syntax());
    assert!(parse_str("e.json", "// only a comment\n")
        .expect_err("comment only")
        .is_syntax());
}

#[test]
fn toml_has_the_same_structure() {
    let toml_text = r#"
[[outbounds]]
tag = "out"
protocol = "freedom"
settings = { redirect = "127.0.0.1:80" }

[[outbounds]]
tag = "interconn"
protocol = "vmess"
[[outbounds.settings.vnext]]
address = "127.0.0.1"
port = 1024
users = [{ id = "27848739-7e62-4138-9fd3-098a63964b6b" }]

[reverse]
bridges = [{ tag = "bridge", domain = "test.v2ray.com" }]

[routing]
rules = [
  { type = "field", inboundTag = ["bridge"], domain = ["full:test.v2ray.com"], outboundTag = "interconn" },
  { type = "field", inboundTag = ["bridge"], outboundTag = "out" },
]
"#;
    let from_toml = parse(&[Source::new("bridge.toml", toml_text)]).expect("toml loads");
    let json_path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../config-examples/seed/bridge.modern.json");
    let from_json = parse(&[load_file(json_path).expect("seed")]).expect("json loads");
    assert_eq!(from_toml.config, from_json.config);
    assert!(from_toml.warnings.is_empty(), "{:#?}", from_toml.warnings);
}

#[test]
fn toml_format_is_chosen_by_extension_or_flag() {
    assert_eq!(Source::new("a.toml", "").format, Format::Toml);
    assert_eq!(Source::new("a.TOML", "").format, Format::Toml);
    assert_eq!(Source::new("a.json", "").format, Format::Json);
    assert_eq!(
        Source::new("stdin", "").with_format(Format::Toml).format,
        Format::Toml
    );
    // V2Ray: a known extension wins over the flag.
    assert_eq!(
        Source::new("a.json", "").with_format(Format::Toml).format,
        Format::Json
    );
    assert_eq!(Format::from_flag("TOML"), Some(Format::Toml));
    assert_eq!(Format::from_flag("pb"), None);
    let error = parse(&[Source::new(
        "bad.toml",
        "outbounds = [\n  { protocol = }\n]\n",
    )])
    .expect_err("bad toml");
    assert!(error.is_syntax());
    assert_eq!(error.position().map(|(line, _)| line), Some(2), "{error}");
    assert!(error.to_string().starts_with("bad.toml:2:"), "{error}");
}

#[test]
fn vmess_ids_print_masked() {
    let config = load(
        r#"{"inbounds": [{"port": 1, "protocol": "vmess",
            "settings": {"clients": [{"id": "27848739-7e62-4138-9fd3-098a63964b6b"}]}}]}"#,
    )
    .config;
    let shown = format!("{config:?}");
    assert!(shown.contains("2784…4b6b"), "{shown}");
    assert!(!shown.contains("27848739"), "{shown}");
    assert!(!shown.contains("098a63964b6b"), "{shown}");
    let InboundSettings::Vmess(vmess) = &config.inbounds[0].settings else {
        panic!("vmess")
    };
    assert_eq!(vmess.clients[0].id.to_string(), "2784…4b6b");
    assert_eq!(
        vmess.clients[0].id.reveal(),
        "27848739-7e62-4138-9fd3-098a63964b6b"
    );
}

#[test]
fn load_file_reports_missing_files() {
    let error = load_file("/nonexistent/rayback.json").expect_err("missing");
    assert!(matches!(error, ConfigError::Io { .. }));
    assert!(
        error
            .to_string()
            .starts_with("cannot read /nonexistent/rayback.json: "),
        "{error}"
    );
}

#[test]
fn no_sources_is_an_error() {
    assert!(parse(&[]).is_err());
}

#[test]
fn stream_stall_timeout_stays_below_the_tunnel_socket_timeout() {
    let ok = load(r#"{"rayback": {"limits": {"streamStallTimeout": 60}}}"#);
    assert_eq!(
        ok.config.rayback.limits.stream_stall_timeout,
        std::time::Duration::from_secs(60)
    );
    let error = parse_str(
        "l.json",
        r#"{"rayback": {"limits": {"streamStallTimeout": 61}}}"#,
    )
    .expect_err("61 s is over the limit");
    let text = error.to_string();
    assert!(text.contains("streamStallTimeout"), "{text}");
    assert!(text.contains("60"), "{text}");
}
