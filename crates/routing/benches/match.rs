//! Time per routing decision with 10,000 domain rules (a quarter each
//! `full:`, `domain:`, `keyword:`, `regexp:`), for targets that hit each
//! kind, miss everything, or are IPs.
//!
//! Run: `cargo bench -p rayback-routing --bench match`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rayback_core::{Address, Destination, Session, Tag};
use rayback_routing::{AssetLocator, Route, Router, RoutingSettings, RuleSettings};

const RULES: usize = 10_000;

/// 10,000 rules; `kinds` picks which of the four kinds appear (rule `i`
/// gets kind `i % 4`, skipped when not in `kinds`).
fn build_router(kinds: &[usize]) -> Router {
    let mut rules = Vec::with_capacity(RULES + 1);
    for index in 0..RULES {
        if !kinds.contains(&(index % 4)) {
            continue;
        }
        let entry = match index % 4 {
            0 => format!("full:host{index}.example.com"),
            1 => format!("domain:zone{index}.example.net"),
            2 => format!("keyword:kw{index}z"),
            _ => format!("regexp:^re{index}\\.[a-z]+\\.org$"),
        };
        rules.push(RuleSettings {
            domain: vec![entry],
            ..RuleSettings::outbound(if index % 2 == 0 { "even" } else { "odd" })
        });
    }
    rules.push(RuleSettings {
        ip: vec!["10.0.0.0/8".into()],
        ..RuleSettings::outbound("ip")
    });
    let spec = RoutingSettings {
        rules,
        ..RoutingSettings::default()
    };
    let tags: Vec<String> = ["default", "even", "odd", "ip"]
        .iter()
        .map(|t| t.to_string())
        .collect();
    Router::new(&spec, &tags, &AssetLocator::with_dirs(vec![])).expect("router")
}

fn session(host: &str) -> Session {
    Session::new(Destination::tcp(Address::parse(host).expect("host"), 443))
        .with_inbound_tag(Tag::new("in"))
}

fn bench(c: &mut Criterion) {
    let started = std::time::Instant::now();
    let router = build_router(&[0, 1, 2, 3]);
    eprintln!("compiled {} rules in {:?}", router.len(), started.elapsed());
    let cases = [
        (
            "full-hit",
            "host9996.example.com",
            Route::Outbound(Tag::new("even")),
        ),
        (
            "domain-hit",
            "www.zone9997.example.net",
            Route::Outbound(Tag::new("odd")),
        ),
        (
            "keyword-hit",
            "cdn-kw9998z.example.io",
            Route::Outbound(Tag::new("even")),
        ),
        (
            "regexp-hit",
            "re9999.abc.org",
            Route::Outbound(Tag::new("odd")),
        ),
        ("miss", "www.unlisted-site.example.co.uk", Route::Default),
        ("ip", "10.1.2.3", Route::Outbound(Tag::new("ip"))),
    ];
    let mut group = c.benchmark_group("route_10k_domain_rules");
    for (name, host, want) in cases {
        let session = session(host);
        assert_eq!(router.route(&session, None), want, "{name}");
        group.bench_function(name, |b| b.iter(|| router.route(black_box(&session), None)));
    }
    group.finish();

    // The same miss against one kind of rule at a time: where time goes.
    let mut group = c.benchmark_group("miss_by_kind");
    let session = session("www.unlisted-site.example.co.uk");
    for (name, kind) in [("full", 0), ("domain", 1), ("keyword", 2), ("regexp", 3)] {
        let router = build_router(&[kind]);
        assert_eq!(router.route(&session, None), Route::Default);
        group.bench_function(name, |b| b.iter(|| router.route(black_box(&session), None)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
