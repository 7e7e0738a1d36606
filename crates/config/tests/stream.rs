//! `streamSettings` into [`StreamSettings`]: the network (TCP, WebSocket),
//! TLS with its certificates, the PROXY protocol, and the way back through
//! `to_v2ray_json`. Each field as V2Ray 4.34 reads it
//! (`infra/conf/transport_internet.go`), each error with its path.
//!
//! The HTTP header disguise (`tcpSettings.header`) is here too; the other
//! transports and socket options are in `validation.rs`'s
//! `stream_settings`.

use rayback_config::*;
use rayback_testkit::TempDir;

const CERTIFICATE: &[&str] = &[
    "-----BEGIN CERTIFICATE-----",
    "MIIBnjCCAUSgAwIBAgIUZwuYw1e",
    "-----END CERTIFICATE-----",
];
const KEY: &[&str] = &[
    "-----BEGIN PRIVATE KEY-----",
    "MIGHAgEAMBMGByqGSM49AgEGCCqG",
    "-----END PRIVATE KEY-----",
];

fn lines(lines: &[&str]) -> String {
    serde_json::to_string(lines).expect("serializes")
}

/// A configuration whose only inbound has `stream` as its `streamSettings`.
fn inbound(stream: &str) -> String {
    format!(
        r#"{{"inbounds": [{{"port": 1, "protocol": "dokodemo-door", "settings": {{"address": "127.0.0.1", "port": 80}}, "streamSettings": {stream}}}], "outbounds": [{{"protocol": "freedom"}}]}}"#
    )
}

/// A configuration whose only outbound has `stream` as its `streamSettings`.
fn outbound(stream: &str) -> String {
    format!(r#"{{"outbounds": [{{"protocol": "freedom", "streamSettings": {stream}}}]}}"#)
}

fn load(text: &str) -> Loaded {
    parse_str("s.json", text).unwrap_or_else(|error| panic!("{error}"))
}

fn inbound_stream(stream: &str) -> StreamSettings {
    load(&inbound(stream)).config.inbounds[0].stream.clone()
}

fn outbound_stream(stream: &str) -> StreamSettings {
    load(&outbound(stream)).config.outbounds[0].stream.clone()
}

fn ws(settings: &StreamSettings) -> &WsSettings {
    match &settings.network {
        TransportNetwork::WebSocket(ws) => ws,
        other => panic!("expected WebSocket, got {other:?}"),
    }
}

fn tls(settings: &StreamSettings) -> &TlsSettings {
    settings.tls.as_ref().expect("tls")
}

/// The error `text` fails with, checked to name `path`.
fn error_at(text: &str, path: &str) -> ConfigError {
    let error = parse_str("s.json", text).expect_err(path);
    assert_eq!(error.path(), Some(path), "{error}");
    error
}

fn warnings_at(loaded: &Loaded, kind: WarningKind, path: &str) -> Vec<String> {
    loaded
        .warnings
        .iter()
        .filter(|warning| warning.kind == kind && warning.path == path)
        .map(|warning| warning.message.clone())
        .collect()
}

const IN: &str = "inbounds[0].streamSettings";
const OUT: &str = "outbounds[0].streamSettings";

// ---------------------------------------------------------------- network

#[test]
fn network_is_tcp_by_default_and_ws_by_either_name() {
    assert!(inbound_stream("{}").is_plain_tcp());
    assert!(inbound_stream(r#"{"network": "TCP"}"#).is_plain_tcp());
    let loaded = load(&outbound("{}"));
    assert!(loaded.config.outbounds[0].stream.is_plain_tcp());
    let no_stream = load(r#"{"outbounds": [{"protocol": "freedom"}]}"#);
    assert_eq!(
        no_stream.config.outbounds[0].stream,
        StreamSettings::default()
    );
    for name in ["ws", "websocket", "WebSocket", "WS"] {
        let stream = outbound_stream(&format!(r#"{{"network": "{name}"}}"#));
        assert_eq!(
            stream.network,
            TransportNetwork::WebSocket(WsSettings::default()),
            "{name}"
        );
        assert_eq!(stream.tls, None);
    }
}

#[test]
fn other_networks_stay_unsupported_and_unknown_ones_invalid() {
    let error = error_at(&inbound(r#"{"network": "quic"}"#), &format!("{IN}.network"));
    assert!(error.is_unsupported(), "{error}");
    assert!(error.to_string().contains("QUIC"), "{error}");
    let error = error_at(&inbound(r#"{"network": "grpc"}"#), &format!("{IN}.network"));
    assert!(!error.is_unsupported(), "{error}");
    assert!(error
        .to_string()
        .contains("unknown transport protocol \"grpc\""));
}

// ---------------------------------------------------------------- wsSettings

#[test]
fn ws_path_is_normalised_as_v2ray_does() {
    let path = |settings: &str| {
        let stream = inbound_stream(&format!(r#"{{"network": "ws", "wsSettings": {settings}}}"#));
        ws(&stream).path.clone()
    };
    assert_eq!(path("{}"), "/");
    assert_eq!(path(r#"{"path": ""}"#), "/");
    assert_eq!(path(r#"{"path": "ray"}"#), "/ray");
    assert_eq!(path(r#"{"path": "/ray?ed=2048"}"#), "/ray?ed=2048");
    // The legacy key `Path` counts only while `path` is empty.
    assert_eq!(path(r#"{"Path": "old"}"#), "/old");
    assert_eq!(path(r#"{"path": "", "Path": "/old"}"#), "/old");
    assert_eq!(path(r#"{"Path": "/old", "path": "new"}"#), "/new");
    // Any other spelling is `path` itself (Go's case-insensitive match).
    assert_eq!(path(r#"{"PATH": "upper", "Path": "/old"}"#), "/upper");
    assert_eq!(path(r#"{"path": null, "Path": "/old"}"#), "/old");
    let error = error_at(
        &inbound(r#"{"network": "ws", "wsSettings": {"path": 1}}"#),
        &format!("{IN}.wsSettings.path"),
    );
    assert!(error.to_string().contains("expected a string"), "{error}");
}

#[test]
fn ws_headers_keep_their_json_order() {
    let stream = outbound_stream(
        r#"{"network": "ws", "wsSettings": {"headers": {"User-Agent": "ua", "Host": "example.com", "Accept": "*/*", "host": "lower", "X-Empty": null, "User-Agent": "ua2"}}}"#,
    );
    let pairs: Vec<(&str, &str)> = ws(&stream)
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    // Names are a Go map's keys: exact, so `host` is its own header, and a
    // repeated name keeps its place and takes the last value.
    assert_eq!(
        pairs,
        [
            ("User-Agent", "ua2"),
            ("Host", "example.com"),
            ("Accept", "*/*"),
            ("host", "lower"),
            ("X-Empty", ""),
        ]
    );
    assert_eq!(ws(&stream).host(), Some("example.com"));
    let error = error_at(
        &outbound(r#"{"network": "ws", "wsSettings": {"headers": {"Host": 1}}}"#),
        &format!("{OUT}.wsSettings.headers.Host"),
    );
    assert!(error.to_string().contains("expected a string"), "{error}");
    error_at(
        &outbound(r#"{"network": "ws", "wsSettings": {"headers": ["Host"]}}"#),
        &format!("{OUT}.wsSettings.headers"),
    );
}

#[test]
fn settings_of_the_transport_not_selected_are_ignored() {
    let loaded = load(&inbound(
        r#"{"network": "tcp", "wsSettings": {"path": "/ray", "acceptProxyProtocol": true}}"#,
    ));
    assert!(loaded.config.inbounds[0].stream.is_plain_tcp());
    assert_eq!(
        warnings_at(&loaded, WarningKind::Ignored, &format!("{IN}.wsSettings")),
        ["wsSettings is ignored: the network is tcp"]
    );

    // With ws, tcpSettings and its acceptProxyProtocol do nothing, and its
    // HTTP header disguise is no error.
    let loaded = load(&inbound(
        r#"{"network": "ws", "tcpSettings": {"acceptProxyProtocol": true, "header": {"type": "http"}}, "kcpSettings": {}}"#,
    ));
    let stream = &loaded.config.inbounds[0].stream;
    assert!(!stream.accept_proxy_protocol);
    assert!(stream.http_disguise.is_none());
    assert_eq!(ws(stream).path, "/");
    assert_eq!(
        warnings_at(&loaded, WarningKind::Ignored, &format!("{IN}.tcpSettings")),
        ["tcpSettings is ignored: the network is ws"]
    );
    assert_eq!(
        warnings_at(&loaded, WarningKind::Ignored, &format!("{IN}.kcpSettings")),
        ["kcpSettings is ignored: the network is ws"]
    );
}

// ---------------------------------------------------------------- acceptProxyProtocol

#[test]
fn an_inbound_accepts_the_proxy_protocol_from_its_transport_or_sockopt() {
    assert!(
        inbound_stream(r#"{"tcpSettings": {"acceptProxyProtocol": true}}"#).accept_proxy_protocol
    );
    assert!(
        !inbound_stream(r#"{"tcpSettings": {"acceptProxyProtocol": false}}"#).accept_proxy_protocol
    );
    let stream =
        inbound_stream(r#"{"network": "ws", "wsSettings": {"acceptProxyProtocol": true}}"#);
    assert!(stream.accept_proxy_protocol);
    assert_eq!(ws(&stream).path, "/");

    let loaded = load(&inbound(r#"{"sockopt": {"acceptProxyProtocol": true}}"#));
    let stream = &loaded.config.inbounds[0].stream;
    assert!(stream.accept_proxy_protocol);
    assert_eq!(stream.network, TransportNetwork::Tcp);
    assert!(!stream.is_plain_tcp());
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let stream = inbound_stream(r#"{"network": "ws", "sockopt": {"acceptProxyProtocol": true}}"#);
    assert!(stream.accept_proxy_protocol);

    error_at(
        &inbound(r#"{"sockopt": {"acceptProxyProtocol": "yes"}}"#),
        &format!("{IN}.sockopt.acceptProxyProtocol"),
    );
}

#[test]
fn an_outbound_ignores_the_proxy_protocol_with_a_warning() {
    for (stream, key) in [
        (
            r#"{"tcpSettings": {"acceptProxyProtocol": true}}"#,
            "tcpSettings.acceptProxyProtocol",
        ),
        (
            r#"{"network": "ws", "wsSettings": {"acceptProxyProtocol": true}}"#,
            "wsSettings.acceptProxyProtocol",
        ),
        (
            r#"{"sockopt": {"acceptProxyProtocol": true}}"#,
            "sockopt.acceptProxyProtocol",
        ),
    ] {
        let loaded = load(&outbound(stream));
        assert!(
            !loaded.config.outbounds[0].stream.accept_proxy_protocol,
            "{stream}"
        );
        assert_eq!(
            warnings_at(&loaded, WarningKind::Ignored, &format!("{OUT}.{key}")),
            ["acceptProxyProtocol has no effect on an outbound"],
            "{stream}"
        );
    }
}

// ---------------------------------------------------------------- tlsSettings

#[test]
fn tls_settings_fields() {
    let stream = outbound_stream(
        r#"{"security": "TLS", "tlsSettings": {"serverName": "example.com", "alpn": "h2,http/1.1", "allowInsecure": true, "disableSystemRoot": true}}"#,
    );
    assert_eq!(stream.network, TransportNetwork::Tcp);
    assert_eq!(
        tls(&stream),
        &TlsSettings {
            server_name: Some("example.com".to_owned()),
            alpn: vec!["h2".to_owned(), "http/1.1".to_owned()],
            allow_insecure: true,
            disable_system_root: true,
            certificates: Vec::new(),
        }
    );
    let stream = outbound_stream(
        r#"{"security": "tls", "tlsSettings": {"serverName": "", "alpn": ["http/1.1"]}}"#,
    );
    assert_eq!(tls(&stream).server_name, None);
    assert_eq!(tls(&stream).alpn, ["http/1.1"]);
    // No tlsSettings: V2Ray's defaults.
    assert_eq!(
        outbound_stream(r#"{"security": "tls"}"#).tls,
        Some(TlsSettings::default())
    );
    assert_eq!(outbound_stream(r#"{"security": "none"}"#).tls, None);
    error_at(
        &outbound(r#"{"security": "tls", "tlsSettings": {"alpn": 2}}"#),
        &format!("{OUT}.tlsSettings.alpn"),
    );
}

#[test]
fn session_resumption_is_accepted_with_a_warning() {
    let loaded = load(&outbound(
        r#"{"security": "tls", "tlsSettings": {"enableSessionResumption": true}}"#,
    ));
    assert!(loaded.config.outbounds[0].stream.tls.is_some());
    let messages = warnings_at(
        &loaded,
        WarningKind::Ignored,
        &format!("{OUT}.tlsSettings.enableSessionResumption"),
    );
    assert_eq!(messages.len(), 1, "{:#?}", loaded.warnings);
    assert!(messages[0].contains("does not resume"), "{}", messages[0]);
}

#[test]
fn tls_settings_without_tls_and_other_securities_are_ignored() {
    let loaded = load(&inbound(
        r#"{"security": "reality", "tlsSettings": {"certificates": [{"certificateFile": "/nonexistent/x.pem"}]}}"#,
    ));
    assert!(loaded.config.inbounds[0].stream.is_plain_tcp());
    assert_eq!(
        warnings_at(&loaded, WarningKind::Ignored, &format!("{IN}.tlsSettings")),
        ["tlsSettings is ignored without security \"tls\""]
    );
    assert_eq!(
        warnings_at(&loaded, WarningKind::Ignored, &format!("{IN}.security")).len(),
        1
    );
}

#[test]
fn a_tls_listener_without_certificates_is_suspicious() {
    let loaded = load(&inbound(r#"{"security": "tls"}"#));
    assert_eq!(
        warnings_at(&loaded, WarningKind::Suspicious, &format!("{IN}.security")).len(),
        1,
        "{:#?}",
        loaded.warnings
    );
    let loaded = load(&outbound(r#"{"security": "tls"}"#));
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
}

// ---------------------------------------------------------------- certificates

#[test]
fn inline_certificate_lines_are_joined_with_newlines() {
    let stream = inbound_stream(&format!(
        r#"{{"security": "tls", "tlsSettings": {{"certificates": [{{"certificate": {}, "key": {}, "usage": "encipherment"}}]}}}}"#,
        lines(CERTIFICATE),
        lines(KEY),
    ));
    let certificates = &tls(&stream).certificates;
    assert_eq!(certificates.len(), 1);
    let certificate = &certificates[0].certificate;
    assert_eq!(certificate.text, CERTIFICATE.join("\n"));
    assert_eq!(
        certificate.origin,
        format!("{IN}.tlsSettings.certificates[0].certificate (inline)")
    );
    assert_eq!(certificate.file, None);
    let key = certificates[0].key.as_ref().expect("key");
    assert_eq!(key.text, KEY.join("\n"));
    assert_eq!(
        key.origin,
        format!("{IN}.tlsSettings.certificates[0].key (inline)")
    );
    // The key's text never reaches a Debug line.
    assert!(!format!("{stream:?}").contains("MIGHAgEAMBMG"));

    // `certificate` is a list of lines, not a string (Go's []string).
    error_at(
        &inbound(
            r#"{"security": "tls", "tlsSettings": {"certificates": [{"certificate": "PEM", "key": ["k"]}]}}"#,
        ),
        &format!("{IN}.tlsSettings.certificates[0].certificate"),
    );
}

#[test]
fn certificate_files_are_read_while_loading() {
    let dir = TempDir::new("config-stream").expect("temp dir");
    let certificate_file = dir.path.join("cert.pem");
    let key_file = dir.path.join("key.pem");
    std::fs::write(&certificate_file, CERTIFICATE.join("\n") + "\n").expect("write");
    std::fs::write(&key_file, KEY.join("\n") + "\n").expect("write");
    let certificate_name = certificate_file.display().to_string();
    let key_name = key_file.display().to_string();

    // The file wins over inline lines, as in V2Ray's readFileOrString.
    let loaded = load(&inbound(&format!(
        r#"{{"security": "tls", "tlsSettings": {{"certificates": [{{"certificateFile": {certificate_name:?}, "certificate": ["unused"], "keyFile": {key_name:?}}}]}}}}"#,
    )));
    let stream = &loaded.config.inbounds[0].stream;
    let entry = &tls(stream).certificates[0];
    assert_eq!(entry.certificate.text, CERTIFICATE.join("\n") + "\n");
    assert_eq!(
        entry.certificate.origin,
        format!("{IN}.tlsSettings.certificates[0].certificateFile ({certificate_name})")
    );
    assert_eq!(
        entry.certificate.file.as_deref(),
        Some(certificate_name.as_str())
    );
    let key = entry.key.as_ref().expect("key");
    assert_eq!(key.text, KEY.join("\n") + "\n");
    assert_eq!(key.file.as_deref(), Some(key_name.as_str()));
    assert_eq!(
        warnings_at(
            &loaded,
            WarningKind::Ignored,
            &format!("{IN}.tlsSettings.certificates[0].certificate")
        ),
        ["certificate is ignored: certificateFile is set"]
    );
}

#[test]
fn an_unreadable_certificate_file_names_the_field_and_the_file() {
    let dir = TempDir::new("config-stream").expect("temp dir");
    let missing = dir.path.join("missing.pem").display().to_string();
    let text = inbound(&format!(
        r#"{{"security": "tls", "tlsSettings": {{"certificates": [{{"certificateFile": {missing:?}, "key": ["k"]}}]}}}}"#,
    ));
    let error = error_at(
        &text,
        &format!("{IN}.tlsSettings.certificates[0].certificateFile"),
    );
    assert!(!error.is_unsupported(), "{error}");
    let shown = error.to_string();
    assert!(
        shown.contains(&format!("cannot read {missing}: ")),
        "{shown}"
    );
    assert!(shown.contains("os error"), "{shown}");

    let text = outbound(&format!(
        r#"{{"security": "tls", "tlsSettings": {{"certificates": [{{"certificate": ["c"], "keyFile": {missing:?}}}]}}}}"#,
    ));
    error_at(&text, &format!("{OUT}.tlsSettings.certificates[0].keyFile"));
}

#[test]
fn certificate_usages_other_than_encipherment_are_unsupported() {
    for usage in ["verify", "issue", "Verify"] {
        let text = outbound(&format!(
            r#"{{"security": "tls", "tlsSettings": {{"certificates": [{{"certificate": ["c"], "usage": "{usage}"}}]}}}}"#,
        ));
        let error = error_at(&text, &format!("{OUT}.tlsSettings.certificates[0].usage"));
        assert!(error.is_unsupported(), "{error}");
        assert!(error.to_string().contains(&format!("{usage:?}")), "{error}");
    }
    // A usage V2Ray does not know means encipherment.
    let stream = outbound_stream(
        r#"{"security": "tls", "tlsSettings": {"certificates": [{"certificate": ["c"], "usage": "signing"}]}}"#,
    );
    assert_eq!(tls(&stream).certificates.len(), 1);
}

#[test]
fn a_certificate_entry_needs_a_certificate() {
    for entry in [
        r#"{"key": ["k"]}"#,
        r#"{"certificate": [], "certificateFile": "", "key": ["k"]}"#,
    ] {
        let text = inbound(&format!(
            r#"{{"security": "tls", "tlsSettings": {{"certificates": [{{"certificate": ["c"], "key": ["k"]}}, {entry}]}}}}"#,
        ));
        let error = error_at(&text, &format!("{IN}.tlsSettings.certificates[1]"));
        assert!(!error.is_unsupported(), "{error}");
        assert!(
            error.to_string().contains("certificate is missing"),
            "{error}"
        );
    }
}

#[test]
fn an_inbound_certificate_needs_its_key_and_an_outbound_one_does_not() {
    let stream =
        r#"{"security": "tls", "tlsSettings": {"certificates": [{"certificate": ["c"]}]}}"#;
    let error = error_at(
        &inbound(stream),
        &format!("{IN}.tlsSettings.certificates[0]"),
    );
    assert!(!error.is_unsupported(), "{error}");
    assert!(
        error
            .to_string()
            .contains("a server certificate needs keyFile or key"),
        "{error}"
    );
    let outbound = outbound_stream(stream);
    let entry = &tls(&outbound).certificates[0];
    assert_eq!(entry.certificate.text, "c");
    assert_eq!(entry.key, None);
}

// ---------------------------------------------------------------- emit

#[test]
fn ws_and_tls_round_trip_through_v2ray_json() {
    let dir = TempDir::new("config-stream").expect("temp dir");
    let certificate_file = dir.path.join("cert.pem");
    std::fs::write(&certificate_file, CERTIFICATE.join("\n") + "\n").expect("write");
    let certificate_name = certificate_file.display().to_string();
    let text = format!(
        r#"{{
          "inbounds": [
            {{"tag": "ws-tls", "port": 10443, "protocol": "vmess",
              "settings": {{"clients": [{{"id": "27848739-7e62-4138-9fd3-098a63964b6b"}}]}},
              "streamSettings": {{"network": "websocket", "security": "tls",
                "wsSettings": {{"Path": "ray", "acceptProxyProtocol": true}},
                "tlsSettings": {{"alpn": "http/1.1", "certificates": [
                  {{"certificateFile": {certificate_name:?}, "key": {key}}},
                  {{"certificate": {certificate}, "key": {key}}}
                ]}}}}}},
            {{"tag": "proxied-tcp", "port": 10080, "protocol": "dokodemo-door",
              "settings": {{"address": "127.0.0.1", "port": 80}},
              "streamSettings": {{"sockopt": {{"acceptProxyProtocol": true}}}}}}
          ],
          "outbounds": [
            {{"tag": "out", "protocol": "vmess",
              "settings": {{"vnext": [{{"address": "example.com", "port": 443,
                "users": [{{"id": "27848739-7e62-4138-9fd3-098a63964b6b"}}]}}]}},
              "streamSettings": {{"network": "ws", "security": "tls",
                "wsSettings": {{"path": "/ray", "headers": {{"Host": "example.com", "User-Agent": "rayback"}}}},
                "tlsSettings": {{"serverName": "example.com", "allowInsecure": true,
                  "disableSystemRoot": true, "certificates": [{{"certificate": {certificate}}}]}}}}}},
            {{"tag": "tls-only", "protocol": "freedom", "streamSettings": {{"security": "tls"}}}}
          ]
        }}"#,
        certificate = lines(CERTIFICATE),
        key = lines(KEY),
    );
    let config = load(&text).config;
    assert!(!config.inbounds[0].stream.is_plain_tcp());
    let json = config.to_v2ray_json();

    let stream = &json["inbounds"][0]["streamSettings"];
    assert_eq!(stream["network"], "ws");
    assert_eq!(stream["security"], "tls");
    assert_eq!(stream["wsSettings"]["path"], "/ray");
    assert_eq!(stream["wsSettings"]["acceptProxyProtocol"], true);
    let certificates = &stream["tlsSettings"]["certificates"];
    assert_eq!(
        certificates[0]["certificateFile"],
        certificate_name.as_str()
    );
    assert_eq!(certificates[0]["key"], serde_json::json!(KEY));
    assert_eq!(
        certificates[1]["certificate"],
        serde_json::json!(CERTIFICATE)
    );
    assert_eq!(
        json["inbounds"][1]["streamSettings"]["tcpSettings"]["acceptProxyProtocol"],
        true
    );
    assert_eq!(
        json["outbounds"][0]["streamSettings"]["wsSettings"]["headers"]["Host"],
        "example.com"
    );
    assert!(
        json["outbounds"][0]["streamSettings"]["tlsSettings"]["certificates"][0]
            .get("key")
            .is_none()
    );

    let printed = serde_json::to_string_pretty(&json).expect("serializes");
    let again = load(&printed);
    assert_eq!(again.config, config, "{printed}");
    assert!(again.warnings.is_empty(), "{:#?}", again.warnings);
    let (code, output) = rayback_testkit::v2ray_test(&printed, "printed.json").expect("v2ray runs");
    assert_eq!(
        code, 0,
        "v2ray rejects the printed config: {output}\n{printed}"
    );
}

#[test]
fn plain_tcp_prints_no_stream_settings() {
    let config = load(&inbound(r#"{"network": "tcp", "security": "none"}"#)).config;
    let json = config.to_v2ray_json();
    assert!(
        json["inbounds"][0].get("streamSettings").is_none(),
        "{json}"
    );
    assert!(
        json["outbounds"][0].get("streamSettings").is_none(),
        "{json}"
    );
}

#[test]
fn the_http_disguise_starts_from_v2rays_defaults() {
    let stream = outbound_stream(r#"{"tcpSettings": {"header": {"type": "http"}}}"#);
    let disguise = stream.http_disguise.expect("http disguise");
    assert_eq!(disguise, HttpDisguise::default());
    assert_eq!(disguise.request.method, "GET");
    assert_eq!(disguise.request.paths, ["/"]);
    assert_eq!(disguise.request.headers[0].0, "Host");
    assert_eq!(disguise.response.status, "200");
    assert_eq!(disguise.response.reason, "OK");
    let none = outbound_stream(r#"{"tcpSettings": {"header": {"type": "none"}}}"#);
    assert!(none.http_disguise.is_none());
    assert!(none.is_plain_tcp());
}

#[test]
fn configured_http_heads_replace_the_defaults_with_headers_sorted_by_name() {
    let stream = inbound_stream(
        r#"{"tcpSettings": {"header": {"type": "http",
            "request": {"method": "POST", "path": ["/a", "/b"], "version": "1.0",
                        "headers": {"User-Agent": "x", "Host": ["h1", "h2"]}},
            "response": {"status": "206", "headers": {"Server": "nginx"}}}}}"#,
    );
    let disguise = stream.http_disguise.expect("http disguise");
    let request = &disguise.request;
    assert_eq!(request.method, "POST");
    assert_eq!(request.version, "1.0");
    assert_eq!(request.paths, ["/a", "/b"]);
    assert_eq!(
        request.headers,
        [
            ("Host".to_owned(), vec!["h1".to_owned(), "h2".to_owned()]),
            ("User-Agent".to_owned(), vec!["x".to_owned()]),
        ]
    );
    let response = &disguise.response;
    // A status without a reason keeps V2Ray's reason.
    assert_eq!(
        (response.status.as_str(), response.reason.as_str()),
        ("206", "OK")
    );
    assert_eq!(
        response.headers,
        [("Server".to_owned(), vec!["nginx".to_owned()])]
    );
}

#[test]
fn an_http_header_without_a_value_is_refused_with_its_path() {
    let error = error_at(
        &outbound(
            r#"{"tcpSettings": {"header": {"type": "http", "request": {"headers": {"Host": null}}}}}"#,
        ),
        "outbounds[0].streamSettings.tcpSettings.header.request.headers.Host",
    );
    assert!(
        error.to_string().contains("empty HTTP header value"),
        "{error}"
    );
}

#[test]
fn the_http_disguise_round_trips_through_v2ray_json() {
    for header in [
        r#"{"type": "http"}"#,
        r#"{"type": "http", "request": {"path": ["/x", "/y"], "headers": {"Host": ["a", "b"], "Accept": "*/*"}},
            "response": {"status": "404", "reason": "Not Found", "headers": {"Server": ["nginx"]}}}"#,
    ] {
        let text = outbound(&format!(r#"{{"tcpSettings": {{"header": {header}}}}}"#));
        let config = load(&text).config;
        let json = config.to_v2ray_json();
        let again = load(&json.to_string()).config;
        assert_eq!(
            again.outbounds[0].stream, config.outbounds[0].stream,
            "{header}"
        );
        assert_eq!(
            json["outbounds"][0]["streamSettings"]["tcpSettings"]["header"]["type"],
            "http"
        );
    }
}
