//! The Grafana dashboard (`config-examples/grafana/rayback.json`) against
//! live `/metrics`: every metric name in every panel query and template
//! variable is one a running bridge or portal exports, so a renamed or
//! misspelt metric fails here instead of drawing an empty panel.
//!
//! ```text
//! client ─▶ portal :public ═ VMess + Mux.Cool ═▶ bridge ─▶ freedom ─▶ backend (echo / GET)
//! garbage ─▶ portal :tunnel  (one refused VMess handshake)
//!           portal :metrics ◀─ scrape ─▶ bridge :metrics
//! ```
//!
//! Both sides are `Running`s in this test's runtime, from the seed configs
//! with ports moved. Labelled series only appear once their owner exists,
//! so the test connects the bridge, sends sessions and one bad handshake
//! before it scrapes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rayback_app::{start, Running};
use rayback_config::parse_str;
use rayback_testkit::gauge::{metric, scrape, with_metrics_endpoint};
use rayback_testkit::{
    backend, echo_many, free_port, http_get, seed_configs, workspace_root, SeedPorts, BACKEND_PAGE,
};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Fewer panels than this means the dashboard lost a section.
const MIN_PANELS: usize = 15;

/// How long any one wait in this test may take.
const WAIT: Duration = Duration::from_secs(20);

// ------------------------------------------------------------ PromQL names

/// PromQL words that are neither functions (those are followed by `(`)
/// nor metric names, besides the [`GROUPINGS`].
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// Clauses whose parenthesised list holds label names, not expressions.
const GROUPINGS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// `expr` with what cannot hold a metric name blanked out: string
/// literals, Grafana variables (`$x`, `${x}`, `[[x]]`), label matchers
/// (`{…}`) and ranges (`[…]`).
fn blank(expr: &str) -> String {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::with_capacity(expr.len());
    let mut index = 0;
    let mut depth = 0usize;
    while index < chars.len() {
        let character = chars[index];
        match character {
            '"' | '\'' | '`' => {
                index += 1;
                while index < chars.len() && chars[index] != character {
                    if chars[index] == '\\' && character != '`' {
                        index += 1;
                    }
                    index += 1;
                }
                out.push(' ');
            }
            '$' => {
                index += 1;
                if chars.get(index) == Some(&'{') {
                    while index < chars.len() && chars[index] != '}' {
                        index += 1;
                    }
                } else {
                    while index < chars.len()
                        && (chars[index].is_ascii_alphanumeric() || chars[index] == '_')
                    {
                        index += 1;
                    }
                    index -= 1;
                }
                out.push(' ');
            }
            '{' | '[' => {
                depth += 1;
                out.push(' ');
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                out.push(' ');
            }
            _ if depth > 0 => out.push(' '),
            _ => out.push(character),
        }
        index += 1;
    }
    out
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Open,
    Close,
    Other,
}

/// Words (identifiers), parentheses and everything else of a blanked
/// expression; numbers and durations (`0.5e-3`, `5m`, `0x1f`) are
/// `Other`, so their letters never pass for names.
fn tokens(blanked: &str) -> Vec<Token> {
    let chars: Vec<char> = blanked.chars().collect();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        let character = chars[index];
        let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        if character.is_ascii_digit() || character == '.' {
            while index < chars.len() && (is_word(chars[index]) || chars[index] == '.') {
                index += 1;
            }
            tokens.push(Token::Other);
            continue;
        }
        if is_word(character) {
            let start = index;
            while index < chars.len() && is_word(chars[index]) {
                index += 1;
            }
            tokens.push(Token::Word(chars[start..index].iter().collect()));
            continue;
        }
        match character {
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            c if c.is_whitespace() => {}
            _ => tokens.push(Token::Other),
        }
        index += 1;
    }
    tokens
}

/// The metric names a PromQL expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let all = tokens(&blank(expr));
    // Drop `by (…)`, `on (…)` and the like with their label lists.
    let mut kept = Vec::new();
    let mut index = 0;
    while index < all.len() {
        if let Token::Word(word) = &all[index] {
            if GROUPINGS.contains(&word.as_str()) && all.get(index + 1) == Some(&Token::Open) {
                index += 2;
                while index < all.len() && all[index] != Token::Close {
                    index += 1;
                }
                index += 1;
                continue;
            }
        }
        kept.push(&all[index]);
        index += 1;
    }
    let mut names = BTreeSet::new();
    for (index, token) in kept.iter().enumerate() {
        let Token::Word(word) = token else { continue };
        let called = kept.get(index + 1) == Some(&&Token::Open);
        let keyword = KEYWORDS.contains(&word.as_str()) || GROUPINGS.contains(&word.as_str());
        if !called && !keyword {
            names.insert(word.clone());
        }
    }
    names
}

/// The metric names of a Grafana Prometheus variable query:
/// `label_values(metric{…}, label)` reads `metric`, `label_values(label)`
/// and `metrics(…)` read none, `query_result(expr)` reads `expr`'s.
fn variable_metric_names(query: &str) -> BTreeSet<String> {
    let query = query.trim();
    let inner = |prefix: &str| {
        query
            .strip_prefix(prefix)
            .and_then(|rest| rest.trim_start().strip_prefix('('))
            .and_then(|rest| rest.strip_suffix(')'))
    };
    if let Some(arguments) = inner("label_values") {
        let blanked = blank(arguments);
        return match blanked.rsplit_once(',') {
            Some((selector, _label)) => metric_names(selector),
            None => BTreeSet::new(),
        };
    }
    if let Some(expr) = inner("query_result") {
        return metric_names(expr);
    }
    if inner("metrics").is_some() || inner("label_names").is_some() {
        return BTreeSet::new();
    }
    metric_names(query)
}

/// Metric names in a Prometheus text exposition: every sample's and every
/// `# TYPE` line's.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let name = if let Some(rest) = line.strip_prefix("# TYPE ") {
            rest.split_whitespace().next()
        } else if line.starts_with('#') {
            None
        } else {
            line.split(['{', ' ']).next()
        };
        if let Some(name) = name.filter(|name| !name.is_empty()) {
            names.insert(name.to_owned());
        }
    }
    names
}

/// Every `query → name` whose name `exported` lacks, and every query that
/// names no metric at all (a typo can turn a name into a function call).
fn unknown_names(queries: &[Query], exported: &BTreeSet<String>) -> Vec<String> {
    let mut unknown = Vec::new();
    for query in queries {
        let names = if query.variable {
            variable_metric_names(&query.text)
        } else {
            metric_names(&query.text)
        };
        if names.is_empty() {
            unknown.push(format!("{}: {:?} names no metric", query.place, query.text));
        }
        for name in names.difference(exported) {
            unknown.push(format!("{}: {name} (in {:?})", query.place, query.text));
        }
    }
    unknown
}

#[test]
fn the_extractor_finds_metric_names_and_only_those() {
    let names = |expr: &str| metric_names(expr).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(r#"sum by (bridge) (rate(rayback_x_total{a="b"}[5m]))"#),
        ["rayback_x_total"]
    );
    assert_eq!(
        names(
            r#"sum(rate(a_total{tag=~"x|y", instance=~"$instance"}[$__rate_interval])) by (tag)
               / on (instance) group_left (bridge) b_seconds offset 1h > bool 0.5e-3"#
        ),
        ["a_total", "b_seconds"]
    );
    assert_eq!(
        names("histogram_quantile(0.99, sum without (instance) (rate(x_bucket[5m])))"),
        ["x_bucket"]
    );
    assert_eq!(
        names(r#"max by (le) (c{s="}, d"}) and ignoring(le) d_count unless vector(${var})"#),
        ["c", "d_count"]
    );
    assert_eq!(
        variable_metric_names(r#"label_values(rayback_uptime_seconds{job=~"$job"}, instance)"#)
            .into_iter()
            .collect::<Vec<_>>(),
        ["rayback_uptime_seconds"]
    );
    assert!(variable_metric_names("label_values(job)").is_empty());

    // A wrong name is reported, a right one is not.
    let exported = exported_names(
        "# HELP rayback_bytes_total x\n# TYPE rayback_bytes_total counter\n\
         rayback_bytes_total{side=\"inbound\"} 5\nrayback_uptime_seconds 1.5\n",
    );
    let query = |text: &str| Query {
        place: "panel".to_owned(),
        text: text.to_owned(),
        variable: false,
    };
    assert!(unknown_names(
        &[query(
            "sum(rate(rayback_bytes_total[5m])) + rayback_uptime_seconds"
        )],
        &exported
    )
    .is_empty());
    let unknown = unknown_names(&[query("sum(rate(rayback_byte_total[5m]))")], &exported);
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert!(unknown[0].contains("rayback_byte_total"), "{unknown:?}");
}

// ------------------------------------------------------------- dashboard

/// One query of the dashboard and where it is.
struct Query {
    /// "panel \"Title\" target A" or "variable \"job\"", for messages.
    place: String,
    text: String,
    /// A template variable query (Grafana's own functions allowed).
    variable: bool,
}

/// Every panel, rows' nested panels included (a collapsed row keeps its
/// panels inside itself; an open row's follow it at the top level).
fn all_panels(panels: &[Value], out: &mut Vec<Value>) {
    for panel in panels {
        out.push(panel.clone());
        if let Some(nested) = panel["panels"].as_array() {
            all_panels(nested, out);
        }
    }
}

fn dashboard() -> Result<Value> {
    let path = workspace_root().join("config-examples/grafana/rayback.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}", path.display()))
}

/// The dashboard's queries, after checking its shape: importable with a
/// Prometheus input, enough panels, a query in every panel.
fn queries(dashboard: &Value) -> Result<Vec<Query>> {
    let inputs = dashboard["__inputs"].as_array().context("no __inputs")?;
    assert!(
        inputs
            .iter()
            .any(|input| input["name"] == "DS_PROMETHEUS" && input["pluginId"] == "prometheus"),
        "no DS_PROMETHEUS input: {inputs:?}"
    );
    let mut panels = Vec::new();
    all_panels(
        dashboard["panels"].as_array().context("no panels")?,
        &mut panels,
    );
    let mut queries = Vec::new();
    let mut drawn = 0;
    for panel in panels.iter().filter(|panel| panel["type"] != "row") {
        drawn += 1;
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {title:?} uses the imported data source"
        );
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        assert!(!targets.is_empty(), "panel {title:?} has no target");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or("");
            assert!(
                !expr.trim().is_empty(),
                "panel {title:?} has an empty query"
            );
            queries.push(Query {
                place: format!(
                    "panel {title:?} target {}",
                    target["refId"].as_str().unwrap_or("?")
                ),
                text: expr.to_owned(),
                variable: false,
            });
        }
    }
    assert!(
        drawn >= MIN_PANELS,
        "{drawn} panels, expected {MIN_PANELS}+"
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        // Grafana 10 stores the query as an object, older ones as text.
        let text = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .context("a variable without a query")?;
        queries.push(Query {
            place: format!("variable {}", variable["name"].as_str().unwrap_or("?")),
            text: text.to_owned(),
            variable: true,
        });
    }
    Ok(queries)
}

// ------------------------------------------------------------ live scrape

async fn rayback(name: &str, text: &str) -> Result<Running> {
    let config = parse_str(name, text)?.config;
    start(&config).await
}

/// Polls `check` on fresh scrapes of `addr` until it holds; the last text.
async fn scrape_until(
    addr: SocketAddr,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> Result<String> {
    let started = Instant::now();
    loop {
        let text = scrape(addr).await?;
        if check(&text) {
            return Ok(text);
        }
        if started.elapsed() > WAIT {
            bail!("{addr} did not show {what} within {WAIT:?}:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_metric_is_exported_by_a_live_bridge_or_portal() -> Result<()> {
    let queries = queries(&dashboard()?)?;

    let backend = backend().await?;
    let ports = SeedPorts {
        service: backend.port(),
        ..SeedPorts::free()
    };
    let (bridge_config, portal_config) = seed_configs(ports)?;
    let portal_metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let bridge_metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let portal = rayback(
        "portal.json",
        &with_metrics_endpoint(&portal_config, portal_metrics),
    )
    .await?;
    let bridge = rayback(
        "bridge.json",
        &with_metrics_endpoint(&bridge_config, bridge_metrics),
    )
    .await?;

    // A connected bridge: the public port serves the backend's page.
    let public = SocketAddr::from(([127, 0, 0, 1], ports.public));
    let started = Instant::now();
    while !matches!(
        http_get(public, Duration::from_secs(2)).await,
        Ok((200, body)) if body == BACKEND_PAGE
    ) {
        assert!(started.elapsed() < WAIT, "the portal never served the page");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A few sessions through the tunnel.
    echo_many(public, 3, 64 << 10, 11, WAIT).await?;

    // One refused VMess handshake: garbage on the tunnel port.
    let tunnel = SocketAddr::from(([127, 0, 0, 1], ports.tunnel));
    let mut garbage = TcpStream::connect(tunnel).await?;
    garbage.write_all(&[0x5a; 96]).await?;
    garbage.shutdown().await?;
    let refused = |text: &str| {
        metric(text, "rayback_vmess_handshake_failures_total", &[]).is_some_and(|n| n >= 1.0)
    };
    let portal_text = scrape_until(portal_metrics, "a refused handshake", refused).await?;
    drop(garbage);

    let bridge_text = scrape_until(bridge_metrics, "a control message", |text| {
        metric(text, "rayback_bridge_control_age_seconds", &[]).is_some()
            && metric(text, "rayback_bridge_portal_connections", &[]).is_some_and(|n| n >= 1.0)
    })
    .await?;
    assert!(
        metric(
            &portal_text,
            "rayback_sessions_total",
            &["side=\"inbound\""]
        )
        .is_some_and(|n| n >= 4.0),
        "{portal_text}"
    );

    let mut exported = exported_names(&portal_text);
    exported.extend(exported_names(&bridge_text));
    let unknown = unknown_names(&queries, &exported);
    assert!(
        unknown.is_empty(),
        "the dashboard names metrics no bridge or portal exports:\n{}\nexported: {exported:?}",
        unknown.join("\n")
    );

    // The sections the dashboard exists for are there.
    let used: BTreeSet<String> = queries
        .iter()
        .filter(|query| !query.variable)
        .flat_map(|query| metric_names(&query.text))
        .collect();
    for name in [
        "rayback_bridge_connections",
        "rayback_bridge_portal_connections",
        "rayback_portal_connections",
        "rayback_sessions_open",
        "rayback_bytes_total",
        "rayback_vmess_handshake_failures_total",
        "rayback_bridge_dials_total",
    ] {
        assert!(used.contains(name), "no panel shows {name}");
    }
    drop(bridge);
    drop(portal);
    Ok(())
}
