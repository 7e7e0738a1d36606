//! The `vless` inbound and outbound settings, as V2Ray 4.34's
//! `infra/conf/vless.go` accepts and refuses them, and what Rayback adds
//! (flows ignored with a warning, as 4.34 ignores them; fallbacks by
//! `alpn` refused), plus `--print-config`
//! round trips. Where `v2ray` is installed, its `-test` is asked too.

use rayback_config::*;
use rayback_testkit::{v2ray_path, v2ray_test};

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

/// What `v2ray -test` says about `text`: `Some(accepted)`, or `None`
/// without v2ray.
fn v2ray_accepts(text: &str) -> Option<bool> {
    if !v2ray_path().exists() {
        eprintln!("skipped: v2ray not installed, -test not asked");
        return None;
    }
    let (code, _) = v2ray_test(text, "v.json").expect("v2ray -test ran");
    Some(code == 0)
}

fn inbound(settings: &str) -> String {
    format!(
        r#"{{"inbounds": [{{"port": 1080, "listen": "127.0.0.1", "protocol": "vless", "settings": {settings}}}], "outbounds": [{{"protocol": "freedom"}}]}}"#
    )
}

fn outbound(settings: &str) -> String {
    format!(r#"{{"outbounds": [{{"protocol": "vless", "settings": {settings}}}]}}"#)
}

#[test]
fn inbound_settings_are_read() {
    let text = inbound(&format!(
        r#"{{"clients": [{{"id": "{ID}", "level": 1, "email": "a@b"}}, {{"id": "b831381d63244d53ad4f8cda48b30811", "flow": ""}}], "decryption": "none"}}"#
    ));
    let loaded = load(&text);
    let InboundSettings::Vless(vless) = &loaded.config.inbounds[0].settings else {
        panic!("vless")
    };
    assert_eq!(vless.clients.len(), 2);
    assert_eq!(vless.clients[0].id.reveal(), ID);
    assert_eq!(vless.clients[0].level, 1);
    assert_eq!(vless.clients[0].email.as_deref(), Some("a@b"));
    assert_eq!(vless.clients[1].email, None);
    assert_ne!(v2ray_accepts(&text), Some(false));
}

#[test]
fn inbound_needs_decryption_none() {
    for settings in [
        format!(r#"{{"clients": [{{"id": "{ID}"}}]}}"#),
        format!(r#"{{"clients": [{{"id": "{ID}"}}], "decryption": "aes"}}"#),
        format!(r#"{{"clients": [{{"id": "{ID}"}}], "decryption": ""}}"#),
    ] {
        let text = inbound(&settings);
        rejects(
            &text,
            "inbounds[0].settings.decryption",
            "\"decryption\": \"none\"",
        );
        assert_ne!(v2ray_accepts(&text), Some(true), "{text}");
    }
}

#[test]
fn inbound_clients_are_checked() {
    let text = inbound(r#"{"clients": [{"id": "nope"}], "decryption": "none"}"#);
    rejects(
        &text,
        "inbounds[0].settings.clients[0].id",
        "\"nope\" is not a UUID",
    );
    assert_ne!(v2ray_accepts(&text), Some(true));
    rejects(
        &inbound(r#"{"clients": [{"level": 0}], "decryption": "none"}"#),
        "inbounds[0].settings.clients[0].id",
        "id is missing",
    );
    let text = inbound(&format!(
        r#"{{"clients": [{{"id": "{ID}", "encryption": "none"}}], "decryption": "none"}}"#
    ));
    rejects(
        &text,
        "inbounds[0].settings.clients[0].encryption",
        "does not belong",
    );
    assert_ne!(v2ray_accepts(&text), Some(true));
    let text = inbound(&format!(
        r#"{{"clients": [{{"id": "{ID}", "email": "x@y"}}, {{"id": "{ID}", "email": "X@Y"}}], "decryption": "none"}}"#
    ));
    rejects(
        &text,
        "inbounds[0].settings.clients[1].email",
        "already exists",
    );
}

#[test]
fn flows_are_ignored_with_a_warning_as_434_ignores_them() {
    for flow in [
        "xtls-rprx-direct",
        "xtls-rprx-origin",
        "xtls-rprx-vision",
        "anything",
    ] {
        for (text, path) in [
            (
                inbound(&format!(
                    r#"{{"clients": [{{"id": "{ID}", "flow": "{flow}"}}], "decryption": "none"}}"#
                )),
                "inbounds[0].settings.clients[0].flow",
            ),
            (
                outbound(&format!(
                    r#"{{"vnext": [{{"address": "a", "port": 1, "users": [{{"id": "{ID}", "encryption": "none", "flow": "{flow}"}}]}}]}}"#
                )),
                "outbounds[0].settings.vnext[0].users[0].flow",
            ),
        ] {
            let loaded = load(&text);
            let warning = loaded
                .warnings
                .iter()
                .find(|warning| warning.path == path)
                .unwrap_or_else(|| panic!("no warning at {path}: {:#?}", loaded.warnings));
            assert_eq!(warning.kind, WarningKind::Ignored);
            assert!(warning.message.contains(flow), "{}", warning.message);
            assert_ne!(v2ray_accepts(&text), Some(false));
        }
    }
}

#[test]
fn fallbacks_are_read_as_434_reads_them() {
    let with = |fallbacks: &str| {
        inbound(&format!(
            r#"{{"clients": [{{"id": "{ID}"}}], "decryption": "none", "fallbacks": {fallbacks}}}"#
        ))
    };
    let text = with(
        r#"[{"dest": 80}, {"path": "/ws", "dest": "8080", "xver": 1}, {"path": "/h", "dest": "localhost:81", "xver": 2}, {"dest": "/run/web.sock", "path": "/u"}]"#,
    );
    let loaded = load(&text);
    let InboundSettings::Vless(vless) = &loaded.config.inbounds[0].settings else {
        panic!("vless")
    };
    let tcp = |dest: &str| VlessFallbackDest::Tcp(dest.to_owned());
    assert_eq!(
        vless.fallbacks,
        vec![
            VlessFallback {
                path: String::new(),
                dest: tcp("127.0.0.1:80"),
                xver: 0
            },
            VlessFallback {
                path: "/ws".into(),
                dest: tcp("127.0.0.1:8080"),
                xver: 1
            },
            VlessFallback {
                path: "/h".into(),
                dest: tcp("localhost:81"),
                xver: 2
            },
            VlessFallback {
                path: "/u".into(),
                dest: VlessFallbackDest::Unix("/run/web.sock".into()),
                xver: 0
            },
        ]
    );
    assert_ne!(v2ray_accepts(&text), Some(false));
    // An empty list is no fallback at all.
    load(&with("[]"));

    for (fallbacks, path, fragment) in [
        (
            r#"[{"dest": 80, "path": "ws"}]"#,
            "inbounds[0].settings.fallbacks[0].path",
            "start with",
        ),
        (
            r#"[{"dest": 80, "xver": 3}]"#,
            "inbounds[0].settings.fallbacks[0].xver",
            "xver only accepts 0, 1, 2",
        ),
        (
            r#"[{"dest": "nowhere"}]"#,
            "inbounds[0].settings.fallbacks[0].dest",
            "valid value",
        ),
        (
            r#"[{"path": "/x"}]"#,
            "inbounds[0].settings.fallbacks[0].dest",
            "valid value",
        ),
    ] {
        let text = with(fallbacks);
        rejects(&text, path, fragment);
        assert_ne!(v2ray_accepts(&text), Some(true), "{text}");
    }
    for (fallbacks, path, fragment) in [
        (
            r#"[{"dest": 80, "alpn": "h2"}]"#,
            "inbounds[0].settings.fallbacks[0].alpn",
            "alpn",
        ),
        (
            r#"[{"dest": "@web"}]"#,
            "inbounds[0].settings.fallbacks[0].dest",
            "abstract Unix",
        ),
        (
            r#"[{"dest": "serve-ws-none"}]"#,
            "inbounds[0].settings.fallbacks[0].dest",
            "serve-ws-none",
        ),
        (
            r#"[{"dest": "x", "type": "udp"}]"#,
            "inbounds[0].settings.fallbacks[0].type",
            "udp",
        ),
    ] {
        unsupported(&with(fallbacks), path, fragment);
    }

    let text = inbound(&format!(
        r#"{{"clients": [{{"id": "{ID}"}}], "decryption": "none", "fallback": {{"dest": 80}}}}"#
    ));
    rejects(&text, "inbounds[0].settings.fallback", "use \"fallbacks\"");
    assert_ne!(v2ray_accepts(&text), Some(true));
}

#[test]
fn outbound_settings_are_read_and_checked() {
    let text = outbound(&format!(
        r#"{{"vnext": [{{"address": "example.com", "port": 443, "users": [{{"id": "{ID}", "encryption": "none", "level": 2, "email": "e"}}]}}]}}"#
    ));
    let loaded = load(&text);
    let OutboundSettings::Vless(vless) = &loaded.config.outbounds[0].settings else {
        panic!("vless")
    };
    assert_eq!(vless.vnext[0].address, "example.com");
    assert_eq!(vless.vnext[0].port, 443);
    assert_eq!(vless.vnext[0].users[0].id.reveal(), ID);
    assert_eq!(vless.vnext[0].users[0].level, 2);
    assert_ne!(v2ray_accepts(&text), Some(false));

    rejects(
        &outbound("{}"),
        "outbounds[0].settings.vnext",
        "no VLESS server configured",
    );
    rejects(
        &outbound(r#"{"vnext": [{"address": "a", "port": 1, "users": []}]}"#),
        "outbounds[0].settings.vnext[0].users",
        "no user configured",
    );
    rejects(
        &outbound(&format!(
            r#"{{"vnext": [{{"port": 1, "users": [{{"id": "{ID}", "encryption": "none"}}]}}]}}"#
        )),
        "outbounds[0].settings.vnext[0].address",
        "address is missing",
    );
    for encryption in [None, Some("auto"), Some("")] {
        let user = match encryption {
            Some(value) => format!(r#"{{"id": "{ID}", "encryption": "{value}"}}"#),
            None => format!(r#"{{"id": "{ID}"}}"#),
        };
        let text = outbound(&format!(
            r#"{{"vnext": [{{"address": "a", "port": 1, "users": [{user}]}}]}}"#
        ));
        rejects(
            &text,
            "outbounds[0].settings.vnext[0].users[0].encryption",
            "\"encryption\": \"none\"",
        );
        assert_ne!(v2ray_accepts(&text), Some(true), "{text}");
    }
    rejects(
        &outbound(
            r#"{"vnext": [{"address": "a", "port": 1, "users": [{"id": "x", "encryption": "none"}]}]}"#,
        ),
        "outbounds[0].settings.vnext[0].users[0].id",
        "is not a UUID",
    );
}

#[test]
fn printed_config_reads_back_the_same() {
    let text = format!(
        r#"{{
            "inbounds": [{{"port": 1080, "listen": "127.0.0.1", "protocol": "vless", "tag": "in",
                "settings": {{"clients": [{{"id": "{ID}", "level": 1, "email": "a@b"}}], "decryption": "none",
                    "fallbacks": [{{"dest": 80}}, {{"path": "/ws", "dest": "127.0.0.1:81", "xver": 2}}]}}}}],
            "outbounds": [{{"protocol": "vless", "tag": "out",
                "settings": {{"vnext": [{{"address": "127.0.0.1", "port": 443,
                    "users": [{{"id": "{ID}", "encryption": "none", "level": 3}}]}}]}}}}]
        }}"#
    );
    let loaded = load(&text);
    let printed = serde_json::to_string_pretty(&loaded.config.to_v2ray_json()).unwrap();
    let again = load(&printed);
    assert_eq!(again.config.inbounds, loaded.config.inbounds);
    assert_eq!(again.config.outbounds, loaded.config.outbounds);
    assert_ne!(v2ray_accepts(&printed), Some(false), "{printed}");
}
