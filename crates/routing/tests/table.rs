//! The shared routing tables through `Router` alone (no v2ray), plus the
//! cases the interop test cannot express (users, resolution protocol,
//! balancer randomness, errors).

mod common;

use std::net::{IpAddr, SocketAddr};

use rayback_core::{Address, Destination, Network, Session, Tag, User};
use rayback_routing::{
    AssetLocator, BalancerSettings, DomainStrategy, Route, Router, RoutingError, RoutingSettings,
    RuleNetwork, RuleSettings,
};

fn no_assets() -> AssetLocator {
    AssetLocator::with_dirs(vec![])
}

fn outbounds() -> Vec<String> {
    common::OUTBOUNDS
        .iter()
        .map(|tag| tag.to_string())
        .collect()
}

#[test]
fn every_table_routes_as_written() {
    let source_port = 45_678;
    let tables = common::tables(source_port);
    let mut checked = 0;
    for table in &tables {
        let router = Router::new(&table.spec(), &outbounds(), &no_assets())
            .unwrap_or_else(|error| panic!("{}: {error}", table.name));
        for case in &table.cases {
            let port = case.source_port.unwrap_or(40_000);
            let source = SocketAddr::from(([127, 0, 0, 1], port));
            let got = common::verdict(&router, &common::session(case, source));
            assert_eq!(
                got, case.want,
                "table {} case {} {}:{}",
                table.name, case.inbound_tag, case.address, case.port
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} cases");
}

fn session_to(address: &str, port: u16) -> Session {
    Session::new(Destination::tcp(Address::parse(address).unwrap(), port))
}

fn router(rules: Vec<RuleSettings>, strategy: DomainStrategy) -> Router {
    let spec = RoutingSettings {
        domain_strategy: strategy,
        rules,
        balancers: vec![],
    };
    Router::new(&spec, &outbounds(), &no_assets()).unwrap()
}

fn outbound(tag: &str) -> Route {
    Route::Outbound(Tag::new(tag))
}

/// `protocol` matches the sniffed protocol by prefix, as V2Ray's
/// ProtocolMatcher does; an unsniffed session matches no `protocol` rule.
#[test]
fn protocol_matches_the_sniffed_protocol_by_prefix() {
    let rules = vec![
        RuleSettings {
            protocol: vec!["".into(), "tls".into()],
            ..RuleSettings::outbound("out-a")
        },
        RuleSettings {
            protocol: vec!["http".into()],
            port: Some("80".into()),
            ..RuleSettings::outbound("out-b")
        },
        RuleSettings {
            protocol: vec!["".into()],
            ..RuleSettings::outbound("out-a")
        },
    ];
    let router = router(rules, DomainStrategy::AsIs);
    let sniffed = |protocol: &str, port: u16| session_to("1.2.3.4", port).with_protocol(protocol);
    assert_eq!(router.route(&sniffed("tls", 443), None), outbound("out-a"));
    assert_eq!(router.route(&sniffed("http1", 80), None), outbound("out-b"));
    assert_eq!(router.route(&sniffed("http1", 81), None), Route::Default);
    assert_eq!(
        router.route(&sniffed("bittorrent", 80), None),
        Route::Default
    );
    assert_eq!(router.route(&sniffed("", 443), None), Route::Default);
    assert_eq!(
        router.route(&session_to("1.2.3.4", 443), None),
        Route::Default
    );
}

#[test]
fn users_match_emails_exactly() {
    let rules = vec![RuleSettings {
        user: vec!["a@example.com".into(), "".into()],
        ..RuleSettings::outbound("out-a")
    }];
    let router = router(rules, DomainStrategy::AsIs);
    let with_user = |email: &str| {
        session_to("1.2.3.4", 80).with_user(User {
            email: email.into(),
            level: 0,
        })
    };
    assert_eq!(
        router.route(&with_user("a@example.com"), None),
        outbound("out-a")
    );
    assert_eq!(
        router.route(&with_user("A@example.com"), None),
        Route::Default
    );
    assert_eq!(router.route(&with_user(""), None), Route::Default);
    assert_eq!(
        router.route(&session_to("1.2.3.4", 80), None),
        Route::Default
    );
}

#[test]
fn sessions_without_source_or_tag_never_match_those_conditions() {
    let rules = vec![
        RuleSettings {
            source: vec!["0.0.0.0/0".into(), "::/0".into()],
            ..RuleSettings::outbound("out-a")
        },
        RuleSettings {
            inbound_tag: vec!["".into()],
            ..RuleSettings::outbound("out-b")
        },
        RuleSettings {
            source_port: Some("0".into()),
            ..RuleSettings::outbound("out-c")
        },
    ];
    let router = router(rules, DomainStrategy::AsIs);
    let bare = session_to("1.2.3.4", 80).with_inbound_tag(Tag::new(""));
    // No source: port 0 as in V2Ray, so only the sourcePort "0" rule holds.
    assert_eq!(router.route(&bare, None), outbound("out-c"));
    let sourced = bare.with_source("[::ffff:10.0.0.1]:5".parse().unwrap());
    assert_eq!(router.route(&sourced, None), outbound("out-a"));
}

#[test]
fn ip_on_demand_asks_only_when_an_ip_condition_is_reached() {
    let rules = vec![
        RuleSettings {
            domain: vec!["full:first.test".into()],
            ..RuleSettings::outbound("out-b")
        },
        RuleSettings {
            port: Some("80".into()),
            ip: vec!["10.0.0.0/8".into()],
            ..RuleSettings::outbound("out-a")
        },
    ];
    let router = router(rules, DomainStrategy::IpOnDemand);
    let first = session_to("first.test", 80);
    assert_eq!(router.route(&first, None), outbound("out-b"));
    let other_port = session_to("host.test", 81);
    assert_eq!(router.route(&other_port, None), Route::Default);
    let needs = session_to("host.test", 80);
    assert_eq!(router.route(&needs, None), Route::NeedsResolve);
    let ten: IpAddr = "10.1.1.1".parse().unwrap();
    let eleven: IpAddr = "11.1.1.1".parse().unwrap();
    assert_eq!(
        router.route(&needs, Some(&[eleven, ten])),
        outbound("out-a")
    );
    assert_eq!(router.route(&needs, Some(&[eleven])), Route::Default);
    assert_eq!(router.route(&needs, Some(&[])), Route::Default);
}

#[test]
fn ip_if_non_match_prefers_a_first_pass_match() {
    let rules = vec![
        RuleSettings {
            ip: vec!["10.0.0.0/8".into()],
            ..RuleSettings::outbound("out-a")
        },
        RuleSettings {
            domain: vec!["domain:named.test".into()],
            ..RuleSettings::outbound("out-b")
        },
    ];
    let router = router(rules, DomainStrategy::IpIfNonMatch);
    let ten: IpAddr = "10.0.0.1".parse().unwrap();
    let named = session_to("www.named.test", 1);
    // A domain rule later in the list beats an IP rule on the first pass.
    assert_eq!(router.route(&named, None), outbound("out-b"));
    assert_eq!(router.route(&named, Some(&[ten])), outbound("out-b"));
    let other = session_to("other.test", 1);
    assert_eq!(router.route(&other, None), Route::NeedsResolve);
    assert_eq!(router.route(&other, Some(&[ten])), outbound("out-a"));
    assert_eq!(router.route(&other, Some(&[])), Route::Default);
    // AsIs never asks and never matches IP rules on domains.
    let as_is = self::router(
        vec![RuleSettings {
            ip: vec!["10.0.0.0/8".into()],
            ..RuleSettings::outbound("out-a")
        }],
        DomainStrategy::AsIs,
    );
    assert_eq!(as_is.route(&other, None), Route::Default);
    assert_eq!(as_is.route(&other, Some(&[ten])), Route::Default);
}

#[test]
fn balancers_pick_every_matching_outbound() {
    let spec = RoutingSettings {
        domain_strategy: DomainStrategy::AsIs,
        rules: vec![RuleSettings {
            network: vec![RuleNetwork::Tcp],
            ..RuleSettings::balancer("b")
        }],
        balancers: vec![BalancerSettings {
            tag: "b".into(),
            selector: vec!["out-a".into(), "out-b".into()],
        }],
    };
    let mut tags = outbounds();
    tags.push("out-a".into());
    tags.push("out-aa".into());
    let router = Router::new(&spec, &tags, &no_assets()).unwrap();
    let session = session_to("1.2.3.4", 80);
    let picks: Vec<Route> = (0..3)
        .map(|random| router.route_with_random(&session, None, random))
        .collect();
    assert_eq!(
        picks,
        vec![outbound("out-a"), outbound("out-aa"), outbound("out-b")]
    );
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        seen.insert(router.route(&session, None));
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[test]
fn udp_sessions_match_network_rules() {
    let rules = vec![RuleSettings {
        network: vec![RuleNetwork::parse("UDP")],
        ..RuleSettings::outbound("out-a")
    }];
    let router = router(rules, DomainStrategy::AsIs);
    let mut session = session_to("1.2.3.4", 53);
    assert_eq!(router.route(&session, None), Route::Default);
    session.destination.network = Network::Udp;
    assert_eq!(router.route(&session, None), outbound("out-a"));
}

#[test]
fn unknown_tags_are_reported() {
    let rules = vec![
        RuleSettings {
            port: Some("1".into()),
            ..RuleSettings::outbound("ghost")
        },
        RuleSettings {
            port: Some("2".into()),
            ..RuleSettings::outbound("out-a")
        },
    ];
    assert_eq!(
        router(rules, DomainStrategy::AsIs).unknown_tags(),
        ["ghost".to_string()]
    );
}

fn build_error(rules: Vec<RuleSettings>, balancers: Vec<BalancerSettings>) -> RoutingError {
    let spec = RoutingSettings {
        domain_strategy: DomainStrategy::AsIs,
        rules,
        balancers,
    };
    Router::new(&spec, &outbounds(), &no_assets()).unwrap_err()
}

#[test]
fn build_errors_name_the_rule_and_value() {
    let ok = || RuleSettings {
        port: Some("1".into()),
        ..RuleSettings::outbound("out-a")
    };
    let cases: Vec<(RuleSettings, &str)> = vec![
        (
            RuleSettings {
                domain: vec!["regexp:(".into()],
                ..RuleSettings::outbound("out-a")
            },
            "rules[1]: invalid regexp \"(\"",
        ),
        (
            RuleSettings {
                ip: vec!["10.0.0.0/33".into()],
                ..RuleSettings::outbound("out-a")
            },
            "rules[1]: invalid ip or cidr \"10.0.0.0/33\"",
        ),
        (
            RuleSettings {
                port: Some("53,abc".into()),
                ..RuleSettings::outbound("out-a")
            },
            "rules[1]: invalid port \"abc\"",
        ),
        (
            RuleSettings {
                source_port: Some("1-x".into()),
                ..RuleSettings::outbound("out-a")
            },
            "rules[1]: invalid port \"1-x\"",
        ),
        (
            RuleSettings {
                domain: vec!["full:".into()],
                ..RuleSettings::outbound("out-a")
            },
            "rules[1]: empty value after \"full:\" in \"full:\"",
        ),
        (
            RuleSettings {
                ip: vec!["geoip:".into()],
                ..RuleSettings::outbound("out-a")
            },
            "rules[1]: empty value after \"geoip:\"",
        ),
        (
            RuleSettings {
                network: vec![RuleNetwork::Tcp],
                ..RuleSettings::balancer("nope")
            },
            "rules[1]: balancer \"nope\" not found",
        ),
        (
            RuleSettings {
                attrs: Some("attrs[':method'] == 'GET'".into()),
                ..RuleSettings::outbound("out-a")
            },
            "rules[1]: \"attrs\" needs request attributes",
        ),
        (
            RuleSettings::outbound("out-a"),
            "rules[1]: this rule has no effective fields",
        ),
        (
            RuleSettings {
                port: Some("1".into()),
                ..RuleSettings::outbound("")
            },
            "rules[1]: empty outbound or balancer tag",
        ),
        (
            RuleSettings {
                domain: vec!["geosite:cn".into()],
                ..RuleSettings::outbound("out-a")
            },
            "rules[1]: asset file \"geosite.dat\" not found; looked in ",
        ),
    ];
    for (bad, want) in cases {
        let error = build_error(vec![ok(), bad], vec![]).to_string();
        assert!(
            error.starts_with(want),
            "{error:?} does not start with {want:?}"
        );
    }
    let error = build_error(
        vec![ok()],
        vec![BalancerSettings {
            tag: "b".into(),
            selector: vec![],
        }],
    );
    assert_eq!(error.to_string(), "balancer \"b\": empty selector list");
}

#[test]
fn asset_errors_list_every_place_looked() {
    let assets = AssetLocator::with_dirs(vec!["/nowhere-1".into(), "/nowhere-2".into()]);
    let spec = RoutingSettings {
        domain_strategy: DomainStrategy::AsIs,
        rules: vec![RuleSettings {
            ip: vec!["ext:mine.dat:x".into()],
            ..RuleSettings::outbound("out-a")
        }],
        balancers: vec![],
    };
    let error = Router::new(&spec, &outbounds(), &assets).unwrap_err();
    assert_eq!(
        error.to_string(),
        "rules[0]: asset file \"mine.dat\" not found; looked in /nowhere-1/mine.dat, /nowhere-2/mine.dat"
    );
}

#[test]
fn ten_thousand_domain_rules_keep_first_match_order() {
    let mut rules = Vec::new();
    for index in 0..10_000 {
        let entry = match index % 4 {
            0 => format!("full:host{index}.example"),
            1 => format!("domain:zone{index}.example"),
            2 => format!("keyword:kw{index}x"),
            _ => format!("regexp:^re{index}\\."),
        };
        let tag = if index % 2 == 0 { "out-a" } else { "out-b" };
        rules.push(RuleSettings {
            domain: vec![entry],
            ..RuleSettings::outbound(tag)
        });
    }
    // A catch-all keyword late in the list loses to every earlier rule.
    rules.push(RuleSettings {
        domain: vec!["keyword:.".into()],
        ..RuleSettings::outbound("out-c")
    });
    let router = router(rules, DomainStrategy::AsIs);
    let cases = [
        ("host9996.example", "out-a"),
        ("a.zone9997.example", "out-b"),
        ("akw9998xb.example", "out-a"),
        ("re9999.example", "out-b"),
        ("www.zone1.example", "out-b"),
        ("unmatched.example", "out-c"),
    ];
    for (domain, want) in cases {
        assert_eq!(
            router.route(&session_to(domain, 80), None),
            outbound(want),
            "{domain}"
        );
    }
    assert_eq!(
        router.route(&session_to("nodots", 80), None),
        Route::Default
    );
}
