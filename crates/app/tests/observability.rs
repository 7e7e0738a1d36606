//! Metrics and reload, in-process: a Rayback bridge and portal (each a
//! `Running` in this test's runtime) from the seed configs with ports moved.
//!
//! ```text
//! client ─▶ portal :public ═ VMess + Mux.Cool ═▶ bridge ─▶ freedom ─▶ backend (echo / GET)
//!           portal :metrics ◀─ scrape
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rayback_app::{start, Running};
use rayback_config::parse_str;
use rayback_testkit::gauge::with_metrics_endpoint;
use rayback_testkit::traffic::echo_piece;
use rayback_testkit::{
    backend, echo_many, free_port, http_get, seed_configs, SeedPorts, BACKEND_PAGE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn rayback(name: &str, text: &str) -> Running {
    let config = parse_str(name, text).unwrap().config;
    start(&config).await.unwrap()
}

async fn wait_serving(public: SocketAddr) {
    let started = Instant::now();
    loop {
        if let Ok((200, body)) = http_get(public, Duration::from_secs(2)).await {
            if body == BACKEND_PAGE {
                return;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(15), "not serving");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scrape(addr: SocketAddr, path: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// Parses Prometheus text: every sample line is `name{labels} value`,
/// every family has HELP and TYPE. Returns samples by `name{labels}`.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = key.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name in {line:?}"
        );
        if let Some(labels) = key.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels in {line:?}"
                );
                for pair in labels[1..labels.len() - 1].split(',') {
                    let (label, quoted) = pair.split_once('=').unwrap();
                    assert!(
                        label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line:?}"
                    );
                    assert!(quoted.starts_with('"') && quoted.ends_with('"'), "{line:?}");
                }
            }
        }
        assert!(typed.contains(name), "{name} has no TYPE line");
        samples.insert(key.to_owned(), value);
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_bytes_and_connections_during_a_transfer() {
    let backend = backend().await.unwrap();
    let ports = SeedPorts {
        service: backend.port(),
        ..SeedPorts::free()
    };
    let (bridge_config, portal_config) = seed_configs(ports).unwrap();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let portal = rayback(
        "portal.json",
        &with_metrics_endpoint(&portal_config, metrics_addr),
    )
    .await;
    let bridge = rayback("bridge.json", &bridge_config).await;
    let public = SocketAddr::from(([127, 0, 0, 1], ports.public));
    wait_serving(public).await;
    assert_eq!(portal.metrics_endpoint(), Some(metrics_addr));

    let before = parse_prometheus(&scrape(metrics_addr, "/metrics").await);
    let key = |name: &str| before.get(name).copied().unwrap_or(0.0);
    let sessions_before = key("rayback_sessions_total{side=\"inbound\",tag=\"external\"}");
    let up_before = key("rayback_bytes_total{side=\"inbound\",tag=\"external\",direction=\"up\"}");
    let down_before =
        key("rayback_bytes_total{side=\"inbound\",tag=\"external\",direction=\"down\"}");

    const CONNECTIONS: usize = 4;
    const SIZE: usize = 8 << 20;
    let transfer = tokio::spawn(echo_many(
        public,
        CONNECTIONS,
        SIZE,
        7,
        Duration::from_secs(60),
    ));
    // Scrape mid-transfer: the endpoint answers while bytes flow.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let during = parse_prometheus(&scrape(metrics_addr, "/metrics").await);
    assert_eq!(during["rayback_portal_connections{portal=\"portal\"}"], 1.0);
    transfer.await.unwrap().unwrap();

    // Counters settle when the sessions end.
    let started = Instant::now();
    let after = loop {
        let after = parse_prometheus(&scrape(metrics_addr, "/metrics").await);
        if after["rayback_sessions_open{side=\"inbound\",tag=\"external\"}"] == 0.0
            || started.elapsed() > Duration::from_secs(5)
        {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let sessions =
        after["rayback_sessions_total{side=\"inbound\",tag=\"external\"}"] - sessions_before;
    assert_eq!(sessions, CONNECTIONS as f64, "sessions counted exactly");
    assert_eq!(
        after["rayback_sessions_open{side=\"inbound\",tag=\"external\"}"],
        0.0
    );
    let moved = (CONNECTIONS * SIZE) as f64;
    let up = after["rayback_bytes_total{side=\"inbound\",tag=\"external\",direction=\"up\"}"]
        - up_before;
    let down = after["rayback_bytes_total{side=\"inbound\",tag=\"external\",direction=\"down\"}"]
        - down_before;
    // The portal outbound carries the public sessions and the tunnel
    // connection itself (routed from the VMess inbound "interconn").
    let tunnel_down =
        after["rayback_bytes_total{side=\"inbound\",tag=\"interconn\",direction=\"down\"}"];
    assert!(
        tunnel_down >= moved,
        "the tunnel carried the echoes: {tunnel_down}"
    );
    assert!((up - moved).abs() / moved < 0.01, "up {up} vs {moved}");
    assert!(
        (down - moved).abs() / moved < 0.01,
        "down {down} vs {moved}"
    );
    assert!(after.contains_key("rayback_vmess_handshake_failures_total{reason=\"unknown_user\"}"));
    assert!(after["rayback_vmess_handshakes_total"] >= 1.0);

    // The bridge side counts too, from its own process state.
    let bridge_text = bridge.prometheus();
    let bridge_samples = parse_prometheus(&bridge_text);
    assert_eq!(
        bridge_samples["rayback_bridge_connections{bridge=\"bridge\"}"],
        1.0
    );
    assert!(bridge_samples["rayback_bridge_control_age_seconds{bridge=\"bridge\"}"] < 5.0);

    let status: serde_json::Value =
        serde_json::from_str(&scrape(metrics_addr, "/status").await).unwrap();
    assert_eq!(status["portals"][0]["tag"], "portal");
    assert_eq!(status["portals"][0]["bridges"].as_array().unwrap().len(), 1);
    assert!(status["portals"][0]["bridges"][0]["peer"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    // A Rayback bridge answered the portal's offer of per-stream windows.
    assert_eq!(status["portals"][0]["bridges"][0]["flow_control"], true);
    assert!(
        !status.to_string().contains("27848739"),
        "no secrets in /status"
    );
    assert!(!after.keys().any(|key| key.contains("27848739")));
    drop(bridge);
    drop(portal);
}

/// A portal whose public inbound can be routed to either the portal or a
/// blackhole, decided by one rule: the reload flips the rule.
fn portal_with_rule(portal: &str, to: &str) -> String {
    let blackhole = r#"
  "outbounds": [{"protocol": "blackhole", "tag": "closed"}],"#;
    let routed = portal.replacen(
        "\"inboundTag\": [\n            \"external\"\n          ],\n          \"outboundTag\": \"portal\"",
        &format!("\"inboundTag\": [\n            \"external\"\n          ],\n          \"outboundTag\": \"{to}\""),
        1,
    );
    assert!(
        to == "portal" || routed != portal,
        "the seed portal's rule was found"
    );
    routed.replacen('{', &format!("{{{blackhole}"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_new_rule_and_keeps_tunnels_and_open_transfers() {
    let backend = backend().await.unwrap();
    let ports = SeedPorts {
        service: backend.port(),
        ..SeedPorts::free()
    };
    let (bridge_config, portal_config) = seed_configs(ports).unwrap();
    let mut portal = rayback("portal.json", &portal_with_rule(&portal_config, "portal")).await;
    let bridge = rayback("bridge.json", &bridge_config).await;
    let public = SocketAddr::from(([127, 0, 0, 1], ports.public));
    wait_serving(public).await;
    let dials = bridge.bridges()[0].status().dials;

    // A transfer in flight across the reload.
    let mut socket = TcpStream::connect(public).await.unwrap();
    let data = rayback_testkit::seeded_bytes(3, 1 << 20);
    // Established end to end before the reload: the first half is back.
    echo_piece(&mut socket, &data[..1 << 19], Duration::from_secs(10))
        .await
        .unwrap();

    let new_config = parse_str("portal.json", &portal_with_rule(&portal_config, "closed"))
        .unwrap()
        .config;
    let summary = portal.reload(&new_config).await.unwrap();
    assert_eq!(summary.inbounds_kept, 2, "{summary:?}");

    // New connections follow the new rule: blackholed.
    let refused = http_get(public, Duration::from_secs(3)).await;
    assert!(
        refused.is_err(),
        "a new connection is blackholed: {refused:?}"
    );

    // The old transfer completes intact.
    echo_piece(&mut socket, &data[1 << 19..], Duration::from_secs(10))
        .await
        .unwrap();

    // The tunnel was not re-dialled: same connection, same portal worker.
    assert_eq!(bridge.bridges()[0].status().dials, dials);
    assert_eq!(portal.portals()[0].tunnels().len(), 1);

    // And back: the rule sends the public inbound through the tunnel again.
    let config = parse_str("portal.json", &portal_with_rule(&portal_config, "portal"))
        .unwrap()
        .config;
    portal.reload(&config).await.unwrap();
    wait_serving(public).await;
    assert_eq!(bridge.bridges()[0].status().dials, dials);
}
