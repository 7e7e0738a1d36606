//! Routing tables shared by the table test (Router alone) and the interop
//! test (the same tables through the real v2ray).
//!
//! A table is a rule list plus sessions with the outbound each must reach.
//! Outbounds of every table: `out-default` (first, so the default),
//! `out-a`, `out-b`, `out-c` and `blocked`. The expected verdicts were
//! written from V2Ray 4.34's source and are checked against the binary by
//! the interop test.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use rayback_core::{Address, Destination, Network, Session, Tag, User};
use rayback_routing::{
    BalancerSettings, DomainStrategy, Route, Router, RoutingSettings, RuleNetwork, RuleSettings,
};
use serde_json::{json, Value};

pub const OUTBOUNDS: [&str; 5] = ["out-default", "out-a", "out-b", "out-c", "blocked"];

#[derive(Clone, Copy)]
pub struct Case {
    pub inbound_tag: &'static str,
    pub address: &'static str,
    pub port: u16,
    pub network: Network,
    /// Bind the client to this source port (for `sourcePort` rules).
    pub source_port: Option<u16>,
    pub want: &'static str,
    /// V2Ray 4.34's verdict where it knowingly differs from Rayback's.
    pub v2ray_differs: Option<&'static str>,
}

pub struct Table {
    pub name: &'static str,
    /// As written in JSON.
    pub strategy: &'static str,
    pub rules: Vec<RuleSettings>,
    pub balancers: Vec<BalancerSettings>,
    pub cases: Vec<Case>,
}

fn tcp(inbound_tag: &'static str, address: &'static str, port: u16, want: &'static str) -> Case {
    Case {
        inbound_tag,
        address,
        port,
        network: Network::Tcp,
        source_port: None,
        want,
        v2ray_differs: None,
    }
}

fn udp(inbound_tag: &'static str, address: &'static str, port: u16, want: &'static str) -> Case {
    Case {
        network: Network::Udp,
        ..tcp(inbound_tag, address, port, want)
    }
}

fn v2ray_differs(case: Case, v2ray: &'static str) -> Case {
    Case {
        v2ray_differs: Some(v2ray),
        ..case
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

fn rule(target: &str) -> RuleSettings {
    RuleSettings::outbound(target)
}

fn domains(target: &str, entries: &[&str]) -> RuleSettings {
    RuleSettings {
        domain: strings(entries),
        ..rule(target)
    }
}

/// Every table. `source_port` is a port the caller will bind a client to.
pub fn tables(source_port: u16) -> Vec<Table> {
    let sp = Box::leak(source_port.to_string().into_boxed_str()) as &'static str;
    vec![
        Table {
            name: "domains",
            // AlwaysIP is accepted by 4.34 and behaves as AsIs.
            strategy: "AlwaysIP",
            rules: vec![
                domains("out-a", &["full:full.example.com"]),
                domains("out-b", &["domain:example.com"]),
                domains("out-c", &["keyword:goo"]),
                domains("out-a", &["regexp:^api\\d+\\.test$"]),
                domains("out-b", &["shop"]),
                domains("out-c", &["dotless:"]),
                domains("out-a", &["full:Case.Example", "dotless:zzz"]),
            ],
            balancers: vec![],
            cases: vec![
                tcp("in", "full.example.com", 80, "out-a"),
                tcp("in", "x.example.com", 80, "out-b"),
                tcp("in", "example.com", 80, "out-b"),
                tcp("in", "goo.example.com", 80, "out-b"),
                tcp("in", "badexample.com", 80, "out-default"),
                tcp("in", "example.com.cn", 80, "out-default"),
                tcp("in", "google.com", 80, "out-c"),
                tcp("in", "api12.test", 80, "out-a"),
                tcp("in", "api.test", 80, "out-default"),
                tcp("in", "xapi1.test", 80, "out-default"),
                tcp("in", "myshop.io", 80, "out-b"),
                tcp("in", "intranet", 80, "out-c"),
                tcp("in", "Case.Example", 80, "out-a"),
                tcp("in", "case.example", 80, "out-default"),
                tcp("in", "EXAMPLE.COM", 80, "out-default"),
                tcp("in", "1.2.3.4", 80, "out-default"),
            ],
        },
        Table {
            name: "ips-ports-networks",
            strategy: "AsIs",
            rules: vec![
                RuleSettings {
                    ip: strings(&["10.0.0.0/8", "192.168.1.1"]),
                    ..rule("out-a")
                },
                RuleSettings {
                    ip: strings(&["2001:db8::/32"]),
                    port: Some("443".into()),
                    ..rule("out-b")
                },
                RuleSettings {
                    port: Some("53,1000-2000".into()),
                    ..rule("out-c")
                },
                RuleSettings {
                    ip: strings(&["::1"]),
                    ..rule("out-a")
                },
                RuleSettings {
                    network: vec![RuleNetwork::Udp],
                    ..rule("out-b")
                },
                RuleSettings {
                    port: Some("8080".into()),
                    network: vec![RuleNetwork::Tcp, RuleNetwork::Udp],
                    ..rule("out-b")
                },
                RuleSettings {
                    ip: strings(&["0.0.0.0/0"]),
                    port: Some("9000-9001".into()),
                    ..rule("blocked")
                },
            ],
            balancers: vec![],
            cases: vec![
                tcp("in", "10.1.2.3", 80, "out-a"),
                tcp("in", "192.168.1.1", 80, "out-a"),
                tcp("in", "192.168.1.2", 80, "out-default"),
                tcp("in", "2001:db8::1", 443, "out-b"),
                tcp("in", "2001:db8::1", 80, "out-default"),
                tcp("in", "8.8.8.8", 53, "out-c"),
                tcp("in", "8.8.8.8", 1500, "out-c"),
                tcp("in", "8.8.8.8", 2001, "out-default"),
                tcp("in", "::1", 80, "out-a"),
                tcp("in", "example.com", 53, "out-c"),
                tcp("in", "example.com", 8080, "out-b"),
                tcp("in", "1.1.1.1", 9001, "blocked"),
                tcp("in", "::ffff:10.0.0.1", 80, "out-a"),
                udp("in", "8.8.4.4", 5353, "out-b"),
                udp("in", "10.9.9.9", 5353, "out-a"),
            ],
        },
        Table {
            name: "origin",
            strategy: "AsIs",
            rules: vec![
                RuleSettings {
                    inbound_tag: strings(&["in-x"]),
                    port: Some("1-100".into()),
                    ..rule("out-a")
                },
                RuleSettings {
                    inbound_tag: strings(&["in-y", "in-z"]),
                    ..rule("out-b")
                },
                RuleSettings {
                    source_port: Some(sp.into()),
                    ..rule("out-c")
                },
                RuleSettings {
                    source: strings(&["10.0.0.0/8"]),
                    ..rule("blocked")
                },
                RuleSettings {
                    source: strings(&["127.0.0.0/8"]),
                    inbound_tag: strings(&["in-s"]),
                    ..rule("out-a")
                },
                RuleSettings {
                    user: strings(&["someone@example.com"]),
                    ..rule("blocked")
                },
                RuleSettings {
                    inbound_tag: strings(&[""]),
                    ..rule("blocked")
                },
            ],
            balancers: vec![],
            cases: vec![
                tcp("in-x", "1.2.3.4", 50, "out-a"),
                tcp("in-x", "1.2.3.4", 101, "out-default"),
                tcp("in-y", "1.2.3.4", 80, "out-b"),
                tcp("in-z", "example.com", 80, "out-b"),
                tcp("in-Y", "1.2.3.4", 80, "out-default"),
                Case {
                    source_port: Some(source_port),
                    ..tcp("in-w", "1.2.3.4", 80, "out-c")
                },
                tcp("in-s", "1.2.3.4", 80, "out-a"),
                tcp("in-w", "1.2.3.4", 80, "out-default"),
            ],
        },
        Table {
            name: "balancers-and-unknown-tags",
            strategy: "AsIs",
            rules: vec![
                RuleSettings {
                    domain: strings(&["full:bal.test"]),
                    ..RuleSettings::balancer("bal")
                },
                RuleSettings {
                    domain: strings(&["full:none.test"]),
                    ..RuleSettings::balancer("bal-none")
                },
                domains("out-a", &["keyword:test"]),
                domains("ghost", &["full:ghost.example"]),
                domains("out-b", &["domain:example"]),
            ],
            balancers: vec![
                BalancerSettings {
                    tag: "bal".into(),
                    selector: strings(&["out-c"]),
                },
                BalancerSettings {
                    tag: "bal-none".into(),
                    selector: strings(&["nothing-"]),
                },
            ],
            cases: vec![
                tcp("in", "bal.test", 80, "out-c"),
                tcp("in", "none.test", 80, "out-default"),
                tcp("in", "other.test", 80, "out-a"),
                tcp("in", "ghost.example", 80, "out-default"),
                tcp("in", "x.example", 80, "out-b"),
            ],
        },
        // V2Ray 4.34's CIDR matcher (app/router/condition_geoip.go) binary
        // searches sorted CIDRs and misses an address inside a wide CIDR
        // when a narrower CIDR of the same list sorts between: it routes
        // 10.2.0.1 past ["10.1.0.0/16", "10.0.0.0/8"]. Rayback merges CIDRs
        // into disjoint ranges and matches it, as the rule intends.
        Table {
            name: "nested-cidrs",
            strategy: "AsIs",
            rules: vec![RuleSettings {
                ip: strings(&[
                    "10.1.0.0/16",
                    "10.0.0.0/8",
                    "2001:db8:1::/48",
                    "2001:db8::/32",
                ]),
                ..rule("out-a")
            }],
            balancers: vec![],
            cases: vec![
                v2ray_differs(tcp("in", "10.2.0.1", 80, "out-a"), "out-default"),
                tcp("in", "10.1.0.1", 80, "out-a"),
                tcp("in", "10.0.0.1", 80, "out-a"),
                v2ray_differs(tcp("in", "10.200.0.1", 80, "out-a"), "out-default"),
                v2ray_differs(tcp("in", "2001:db8:2::1", 80, "out-a"), "out-default"),
                tcp("in", "2001:db8:1::1", 80, "out-a"),
                tcp("in", "11.0.0.1", 80, "out-default"),
            ],
        },
        Table {
            name: "ip-if-non-match",
            strategy: "IPIfNonMatch",
            rules: vec![
                domains("out-b", &["full:vm"]),
                RuleSettings {
                    ip: strings(&["127.0.0.0/8"]),
                    ..rule("out-a")
                },
            ],
            balancers: vec![],
            cases: vec![
                tcp("in", "localhost", 80, "out-a"),
                tcp("in", "vm", 80, "out-b"),
                tcp("in", "runsc", 80, "out-a"),
                tcp("in", "127.0.0.1", 80, "out-a"),
                tcp("in", "10.0.0.1", 80, "out-default"),
            ],
        },
        Table {
            name: "ip-on-demand",
            strategy: "IPOnDemand",
            rules: vec![
                domains("out-b", &["full:vm"]),
                RuleSettings {
                    ip: strings(&["127.0.0.0/8"]),
                    port: Some("80".into()),
                    ..rule("out-a")
                },
                domains("out-c", &["keyword:local"]),
            ],
            balancers: vec![],
            cases: vec![
                tcp("in", "localhost", 80, "out-a"),
                tcp("in", "localhost", 81, "out-c"),
                tcp("in", "vm", 80, "out-b"),
                tcp("in", "example.com", 81, "out-default"),
                tcp("in", "127.0.0.1", 80, "out-a"),
            ],
        },
    ]
}

impl Table {
    pub fn spec(&self) -> RoutingSettings {
        RoutingSettings {
            domain_strategy: DomainStrategy::parse(self.strategy).unwrap_or_default(),
            rules: self.rules.clone(),
            balancers: self.balancers.clone(),
        }
    }

    /// The `routing` object v2ray reads for this table.
    pub fn json(&self) -> Value {
        let rules: Vec<Value> = self.rules.iter().map(rule_json).collect();
        let balancers: Vec<Value> = self
            .balancers
            .iter()
            .map(|b| json!({"tag": b.tag, "selector": b.selector}))
            .collect();
        json!({"domainStrategy": self.strategy, "rules": rules, "balancers": balancers})
    }
}

pub fn rule_json(rule: &RuleSettings) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("type".into(), json!("field"));
    object.insert(rule.target.v2ray_key().into(), json!(rule.target.tag()));
    let networks: Vec<String> = rule
        .network
        .iter()
        .map(|network| network.v2ray_name().to_owned())
        .collect();
    let lists = [
        ("inboundTag", &rule.inbound_tag),
        ("domain", &rule.domain),
        ("ip", &rule.ip),
        ("network", &networks),
        ("source", &rule.source),
        ("user", &rule.user),
    ];
    for (key, list) in lists {
        if !list.is_empty() {
            object.insert(key.into(), json!(list));
        }
    }
    if let Some(port) = &rule.port {
        object.insert("port".into(), json!(port));
    }
    if let Some(port) = &rule.source_port {
        object.insert("sourcePort".into(), json!(port));
    }
    Value::Object(object)
}

/// The session dokodemo-door builds for `case`, coming from `source`.
pub fn session(case: &Case, source: SocketAddr) -> Session {
    let address = Address::parse(case.address).expect("case address");
    Session::new(Destination::new(case.network, address, case.port))
        .with_inbound_tag(Tag::new(case.inbound_tag))
        .with_source(source)
        .with_user(User {
            email: String::new(),
            level: 0,
        })
}

/// Routes like a dispatcher: resolves through the system when asked, maps
/// tags no outbound has to the default, and names the outbound.
pub fn verdict(router: &Router, session: &Session) -> String {
    let mut route = router.route(session, None);
    if route == Route::NeedsResolve {
        let ips: Vec<IpAddr> = (session.destination.address.to_string().as_str(), 0)
            .to_socket_addrs()
            .map(|addrs| addrs.map(|addr| addr.ip()).collect())
            .unwrap_or_default();
        route = router.route(session, Some(&ips));
        assert_ne!(route, Route::NeedsResolve, "asked twice to resolve");
    }
    match route {
        Route::Outbound(tag) if OUTBOUNDS.contains(&tag.as_str()) => tag.as_str().to_owned(),
        Route::Outbound(_) | Route::Default => OUTBOUNDS[0].to_owned(),
        Route::NeedsResolve => unreachable!("checked above"),
    }
}
