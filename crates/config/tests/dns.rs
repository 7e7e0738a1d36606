//! The `dns` object: what `rayback_config` makes of it, each verdict
//! checked against the real `v2ray -test` (4.34) when it is installed, and
//! `--print-config` output that parses back to the same settings.

use std::net::IpAddr;

use rayback_config::{parse_str, ConfigError, HostMapping, HostValue, Loaded, NameServerAddress};

/// What a config should get from Rayback.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    Ok,
    Invalid,
    Unsupported,
}

fn config_with(dns: &str) -> String {
    format!(r#"{{"dns": {dns}, "outbounds": [{{"protocol": "freedom"}}]}}"#)
}

/// Parses `dns` in a whole config, checks Rayback's verdict and, when v2ray
/// is installed, that v2ray agrees (unsupported: v2ray accepts).
fn check(dns: &str, verdict: Verdict) -> Result<Loaded, ConfigError> {
    let text = config_with(dns);
    let result = parse_str("dns.json", &text);
    match (&result, verdict) {
        (Ok(_), Verdict::Ok) => {}
        (Err(error), Verdict::Invalid) => assert!(
            !error.is_unsupported() && !error.is_syntax(),
            "{dns}: {error}"
        ),
        (Err(error), Verdict::Unsupported) => assert!(error.is_unsupported(), "{dns}: {error}"),
        (other, _) => panic!("{dns}: expected {verdict:?}, got {other:?}"),
    }
    if !rayback_testkit::v2ray_path().exists() {
        println!("skipped the v2ray side: v2ray not installed");
        return result;
    }
    let (code, output) = rayback_testkit::v2ray_test(&text, "dns.json").expect("v2ray runs");
    let v2ray_accepts = code == 0;
    assert_eq!(
        v2ray_accepts,
        verdict != Verdict::Invalid,
        "{dns}: v2ray -test says {code}: {output}"
    );
    result
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("a test address")
}

#[test]
fn servers_as_strings_and_objects() {
    let loaded = check(
        r#"{"servers": ["1.1.1.1", "[::1]", "localhost", "https+local://dns.test/q", "dns.test",
            {"address": "127.0.0.1", "port": 5353, "domains": ["domain:a.test", "full:b.test"],
             "expectIps": "127.0.0.0/8,10.0.0.0/8", "clientIp": "10.0.0.1"}]}"#,
        Verdict::Ok,
    )
    .expect("loads");
    let dns = loaded.config.dns.expect("a dns object");
    assert_eq!(dns.servers.len(), 6);
    assert_eq!(dns.servers[0].address, NameServerAddress::Ip(ip("1.1.1.1")));
    assert_eq!(dns.servers[0].port, 0);
    assert_eq!(dns.servers[1].address, NameServerAddress::Ip(ip("::1")));
    assert_eq!(dns.servers[2].address, NameServerAddress::Localhost);
    assert_eq!(
        dns.servers[3].address,
        NameServerAddress::HttpsLocal("https+local://dns.test/q".to_owned())
    );
    assert_eq!(
        dns.servers[4].address,
        NameServerAddress::Domain("dns.test".to_owned())
    );
    let object = &dns.servers[5];
    assert_eq!(object.port, 5353);
    assert_eq!(object.domains, ["domain:a.test", "full:b.test"]);
    assert_eq!(object.expect_ips, ["127.0.0.0/8", "10.0.0.0/8"]);
    assert_eq!(object.client_ip, Some(ip("10.0.0.1")));
    assert!(loaded
        .warnings
        .iter()
        .any(|warning| warning.to_string().contains("clientIp")));
}

#[test]
fn routed_doh_is_dialled_directly_with_a_warning() {
    let loaded =
        check(r#"{"servers": ["https://1.1.1.1/dns-query"]}"#, Verdict::Ok).expect("loads");
    let dns = loaded.config.dns.expect("a dns object");
    assert!(matches!(
        dns.servers[0].address,
        NameServerAddress::Https(_)
    ));
    assert!(
        loaded.warnings.iter().any(|warning| {
            let text = warning.to_string();
            text.contains("dns.servers[0]") && text.contains("dialled directly")
        }),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn hosts_keys_become_routing_rules() {
    let loaded = check(
        r#"{"hosts": {"bare.test": "10.0.0.1", "domain:d.test": "10.0.0.2",
            "full:f.test": "10.0.0.3", "keyword:kw": "::2", "regexp:^r\\.test$": "10.0.0.5",
            "dotless:": "10.0.0.6", "dotless:lan": "10.0.0.7", "alias.test": "f.test"}}"#,
        Verdict::Ok,
    )
    .expect("loads");
    let dns = loaded.config.dns.expect("a dns object");
    let mapping = |rule: &str, value: HostValue| HostMapping {
        rule: rule.to_owned(),
        value,
    };
    // Sorted by rule, as 4.34 sorts the keys.
    assert_eq!(
        dns.hosts,
        [
            mapping("domain:d.test", HostValue::Ip(ip("10.0.0.2"))),
            mapping("full:alias.test", HostValue::Domain("f.test".to_owned())),
            mapping("full:bare.test", HostValue::Ip(ip("10.0.0.1"))),
            mapping("full:f.test", HostValue::Ip(ip("10.0.0.3"))),
            mapping("keyword:kw", HostValue::Ip(ip("::2"))),
            mapping("regexp:^[^.]*$", HostValue::Ip(ip("10.0.0.6"))),
            mapping("regexp:^[^.]*lan[^.]*$", HostValue::Ip(ip("10.0.0.7"))),
            mapping("regexp:^r\\.test$", HostValue::Ip(ip("10.0.0.5"))),
        ]
    );
}

#[test]
fn what_4_34_refuses_is_refused() {
    for dns in [
        r#"{"servers": [{"port": 53}]}"#,
        r#"{"servers": [123]}"#,
        r#"{"servers": "1.1.1.1"}"#,
        r#"{"servers": [{"address": "1.1.1.1", "domains": "domain:a"}]}"#,
        r#"{"servers": [{"address": "1.1.1.1", "port": 70000}]}"#,
        r#"{"servers": [{"address": "1.1.1.1", "clientIp": "x.test"}]}"#,
        r#"{"clientIp": "example.com"}"#,
        r#"{"hosts": {"domain:": "1.2.3.4"}}"#,
        r#"{"hosts": {"full:": "1.2.3.4"}}"#,
        r#"{"hosts": {"keyword:": "1.2.3.4"}}"#,
        r#"{"hosts": {"regexp:": "1.2.3.4"}}"#,
        r#"{"hosts": {"geosite:": "1.2.3.4"}}"#,
        r#"{"hosts": {"dotless:a.b": "1.2.3.4"}}"#,
        r#"{"hosts": {"ext:x": "1.2.3.4"}}"#,
        r#"{"hosts": {"a.test": 123}}"#,
        r#"{"hosts": {"a.test": ""}}"#,
    ] {
        check(dns, Verdict::Invalid).expect_err(dns);
    }
}

#[test]
fn what_rayback_lacks_is_refused_naming_it() {
    for dns in [
        r#"{"servers": ["quic+local://1.1.1.1"]}"#,
        r#"{"servers": ["tcp://1.1.1.1"]}"#,
    ] {
        check(dns, Verdict::Unsupported).expect_err(dns);
    }
}

#[test]
fn an_empty_object_means_the_system_resolver() {
    let loaded = check("{}", Verdict::Ok).expect("loads");
    let dns = loaded.config.dns.expect("a dns object");
    assert!(dns.servers.is_empty() && dns.hosts.is_empty());
}

#[test]
fn printed_dns_parses_back_equal() {
    let loaded = check(
        r#"{"servers": ["1.1.1.1", {"address": "127.0.0.1", "port": 5353,
            "domains": ["domain:a.test"], "expectIps": ["127.0.0.0/8"]}, "localhost",
            "https+local://1.1.1.1/dns-query"],
            "hosts": {"bare.test": "10.0.0.1", "dotless:lan": "10.0.0.7", "alias.test": "bare.test"},
            "clientIp": "203.0.113.9", "tag": "dns-in"}"#,
        Verdict::Ok,
    )
    .expect("loads");
    let printed = serde_json::to_string_pretty(&loaded.config.to_v2ray_json()).expect("json");
    let again = parse_str("printed.json", &printed).expect("the printed config loads");
    assert_eq!(again.config.dns, loaded.config.dns, "{printed}");
    if rayback_testkit::v2ray_path().exists() {
        let (code, output) = rayback_testkit::v2ray_test(&printed, "printed.json").expect("runs");
        assert_eq!(
            code, 0,
            "v2ray rejects the printed config: {output}\n{printed}"
        );
    }
}
