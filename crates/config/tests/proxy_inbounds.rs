//! The `socks` and `http` inbounds' settings: what V2Ray 4.34's
//! `infra/conf` accepts is built with its defaults, what it refuses is
//! refused with the path of the bad value (each case checked with
//! `v2ray -test`), and `--print-config` writes them back.

use rayback_config::*;

fn inbound(protocol: &str, settings: &str) -> String {
    format!(
        r#"{{"inbounds": [{{"port": 1080, "protocol": "{protocol}", "settings": {settings}}}],
            "outbounds": [{{"protocol": "freedom"}}]}}"#
    )
}

fn load(text: &str) -> Loaded {
    parse_str("p.json", text).unwrap_or_else(|error| panic!("{error}"))
}

fn settings(text: &str) -> InboundSettings {
    load(text).config.inbounds[0].settings.clone()
}

fn rejects(text: &str, path: &str) {
    let error = parse_str("p.json", text).expect_err(path);
    assert!(!error.is_unsupported(), "{error}");
    assert_eq!(error.path(), Some(path), "{error}");
}

fn account(user: &str, pass: &str) -> ProxyAccount {
    ProxyAccount {
        user: user.into(),
        pass: pass.into(),
    }
}

#[test]
fn socks_defaults() {
    let InboundSettings::Socks(socks) = settings(&inbound("socks", "{}")) else {
        panic!("not socks");
    };
    assert_eq!(
        socks,
        SocksInbound {
            auth: SocksAuth::NoAuth,
            accounts: vec![],
            udp: false,
            ip: None,
            timeout: 0,
            user_level: 0,
        }
    );
    // No settings at all is the same.
    let text = r#"{"inbounds": [{"port": 1, "protocol": "socks"}]}"#;
    assert!(matches!(settings(text), InboundSettings::Socks(_)));
}

#[test]
fn socks_every_field() {
    let text = inbound(
        "socks",
        r#"{"auth": "password", "accounts": [{"user": "a", "pass": "b"}, {"user": "c"}],
            "udp": true, "ip": "[::1]", "timeout": 3, "userLevel": 1}"#,
    );
    let InboundSettings::Socks(socks) = settings(&text) else {
        panic!("not socks");
    };
    assert_eq!(socks.auth, SocksAuth::Password);
    assert_eq!(socks.accounts, vec![account("a", "b"), account("c", "")]);
    assert!(socks.udp);
    assert_eq!(socks.ip.as_deref(), Some("::1"));
    assert_eq!((socks.timeout, socks.user_level), (3, 1));
    assert!(
        !format!("{socks:?}").contains("\"b\""),
        "passwords print masked"
    );
}

#[test]
fn socks_unknown_auth_is_no_auth_with_a_warning() {
    // `v2ray -test` says "Configuration OK." for {"auth": "weird"}.
    let loaded = load(&inbound("socks", r#"{"auth": "weird"}"#));
    let InboundSettings::Socks(socks) = &loaded.config.inbounds[0].settings else {
        panic!("not socks");
    };
    assert_eq!(socks.auth, SocksAuth::NoAuth);
    assert!(loaded
        .warnings
        .iter()
        .any(|warning| warning.to_string().contains("weird")));
}

#[test]
fn socks_ip_may_be_a_domain() {
    let InboundSettings::Socks(socks) = settings(&inbound("socks", r#"{"ip": "example.com"}"#))
    else {
        panic!("not socks");
    };
    assert_eq!(socks.ip.as_deref(), Some("example.com"));
}

#[test]
fn socks_refusals() {
    // Each of these fails `v2ray -test` ("cannot unmarshal ...").
    rejects(&inbound("socks", r#"{"ip": 5}"#), "inbounds[0].settings.ip");
    rejects(
        &inbound("socks", r#"{"accounts": {"user": "a"}}"#),
        "inbounds[0].settings.accounts",
    );
    rejects(
        &inbound("socks", r#"{"udp": "yes"}"#),
        "inbounds[0].settings.udp",
    );
    rejects(
        &inbound("socks", r#"{"accounts": [{"user": 1}]}"#),
        "inbounds[0].settings.accounts[0].user",
    );
    rejects(
        &inbound("socks", r#"{"userLevel": -1}"#),
        "inbounds[0].settings.userLevel",
    );
}

#[test]
fn http_fields_and_defaults() {
    let InboundSettings::Http(http) = settings(&inbound("http", "{}")) else {
        panic!("not http");
    };
    assert_eq!(
        http,
        HttpInbound {
            timeout: 0,
            accounts: vec![],
            allow_transparent: false,
            user_level: 0
        }
    );
    let text = inbound(
        "http",
        r#"{"allowTransparent": true, "accounts": [{"user": "a", "pass": "b"}], "userLevel": 2, "timeout": 9}"#,
    );
    let InboundSettings::Http(http) = settings(&text) else {
        panic!("not http");
    };
    assert_eq!(http.accounts, vec![account("a", "b")]);
    assert!(http.allow_transparent);
    assert_eq!((http.user_level, http.timeout), (2, 9));
}

#[test]
fn http_refusals() {
    rejects(
        &inbound("http", r#"{"accounts": [{"user": 1}]}"#),
        "inbounds[0].settings.accounts[0].user",
    );
    rejects(
        &inbound("http", r#"{"allowTransparent": "x"}"#),
        "inbounds[0].settings.allowTransparent",
    );
}

#[test]
fn socks_and_http_outbounds_stay_unsupported() {
    for name in ["socks", "http"] {
        let text = format!(r#"{{"outbounds": [{{"protocol": "{name}"}}]}}"#);
        let error = parse_str("p.json", &text).expect_err(name);
        assert!(error.is_unsupported(), "{error}");
    }
}

#[test]
fn print_config_round_trips() {
    for text in [
        inbound(
            "socks",
            r#"{"auth": "password", "accounts": [{"user": "a", "pass": "b"}], "udp": true, "ip": "127.0.0.1", "userLevel": 1}"#,
        ),
        inbound(
            "http",
            r#"{"allowTransparent": true, "accounts": [{"user": "a", "pass": "b"}], "userLevel": 2}"#,
        ),
    ] {
        let first = load(&text).config;
        let emitted = first.to_v2ray_json().to_string();
        let second = load(&emitted).config;
        assert_eq!(first.inbounds, second.inbounds, "{emitted}");
    }
}
