//! Mux.Cool inside VMess against the real v2ray, both directions, as plain
//! proxying (not the reverse proxy):
//!
//! ```text
//! (a) client ─▶ v2ray dokodemo ─▶ v2ray VMess outbound (mux on) ═▶ Rayback VMess inbound ─▶ mux server ─▶ freedom ─▶ echo
//! (b) client ─▶ Rayback dokodemo ─▶ Rayback VMess outbound (mux on) ═▶ v2ray VMess inbound ─▶ freedom ─▶ echo
//! ```
//!
//! 200 concurrent sub-streams, each carrying 1 MiB of seeded data both
//! ways, SHA-256 compared.

use std::net::SocketAddr;
use std::time::Duration;

use rayback_app::start;
use rayback_config::parse_str;
use rayback_testkit::{echo_many, echo_server, free_port, V2Ray};
use serde_json::json;

const ID: &str = "27848739-7e62-4138-9fd3-098a63964b6b";
const STREAMS: usize = 200;
const SIZE: usize = 1 << 20;

fn entry(port: u16, target: SocketAddr) -> serde_json::Value {
    json!({
        "tag": "in", "listen": "127.0.0.1", "port": port, "protocol": "dokodemo-door",
        "settings": {"address": "127.0.0.1", "port": target.port(), "network": "tcp"}
    })
}

fn vmess_server(port: u16) -> serde_json::Value {
    json!({
        "tag": "vmess-in", "listen": "127.0.0.1", "port": port, "protocol": "vmess",
        "settings": {"clients": [{"id": ID}]}
    })
}

fn vmess_client_with_mux(port: u16) -> serde_json::Value {
    json!({
        "tag": "vmess-out", "protocol": "vmess",
        "settings": {"vnext": [{"address": "127.0.0.1", "port": port, "users": [{"id": ID, "security": "aes-128-gcm"}]}]},
        "mux": {"enabled": true, "concurrency": 16}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_mux_client_to_rayback_vmess_inbound() {
    let echo = echo_server().await.unwrap();
    let (entry_port, server_port) = (free_port(), free_port());
    let server = json!({
        "inbounds": [vmess_server(server_port)],
        "outbounds": [{"protocol": "freedom", "tag": "direct"}]
    });
    let rayback = start(
        &parse_str("server.json", &server.to_string())
            .unwrap()
            .config,
    )
    .await
    .unwrap();
    let client = json!({
        "inbounds": [entry(entry_port, echo)],
        "outbounds": [vmess_client_with_mux(server_port)]
    });
    let _v2ray = V2Ray::start(&client, &[entry_port]).await.unwrap();
    let entry = SocketAddr::from(([127, 0, 0, 1], entry_port));
    if let Err(error) = echo_many(entry, STREAMS, SIZE, 100, Duration::from_secs(120)).await {
        // What Rayback saw explains a failure: handshakes refused (and
        // why), sessions, buffers.
        let counters = rayback.prometheus();
        let seen: Vec<&str> = counters
            .lines()
            .filter(|line| !line.starts_with('#') && !line.ends_with(" 0"))
            .collect();
        panic!("{error:#}\nRayback's counters:\n{}", seen.join("\n"));
    }
    // All of it arrived as mux sub-sessions on few VMess connections.
    let sessions = rayback
        .metrics()
        .inbound("vmess-in")
        .sessions_total
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(sessions >= STREAMS as u64, "{sessions} sessions");
    let carriers = rayback_vmess_handshakes(&rayback);
    assert!(
        carriers < STREAMS as u64 / 4,
        "{carriers} VMess connections for {STREAMS} streams"
    );
}

fn rayback_vmess_handshakes(running: &rayback_app::Running) -> u64 {
    let text = running.prometheus();
    text.lines()
        .find_map(|line| line.strip_prefix("rayback_vmess_handshakes_total "))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_mux_client_to_v2ray_vmess_inbound() {
    let echo = echo_server().await.unwrap();
    let (entry_port, server_port) = (free_port(), free_port());
    let server = json!({
        "inbounds": [vmess_server(server_port)],
        "outbounds": [{"protocol": "freedom", "tag": "direct"}]
    });
    let _v2ray = V2Ray::start(&server, &[server_port]).await.unwrap();
    let client = json!({
        "inbounds": [entry(entry_port, echo)],
        "outbounds": [vmess_client_with_mux(server_port)]
    });
    let _rayback = start(
        &parse_str("client.json", &client.to_string())
            .unwrap()
            .config,
    )
    .await
    .unwrap();
    let entry = SocketAddr::from(([127, 0, 0, 1], entry_port));
    echo_many(entry, STREAMS, SIZE, 300, Duration::from_secs(120))
        .await
        .unwrap();
}
