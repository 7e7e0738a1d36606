//! "Reverse proxy 2": the portal exposes a SOCKS proxy inbound, so a user
//! behind the portal reaches any address the bridge's freedom can reach,
//! with real processes:
//!
//! ```text
//! curl --socks5-hostname ─▶ portal :socks (socks inbound) ─▶ portal outbound ══ VMess + Mux.Cool ══▶ bridge ─▶ freedom ─▶ 127.0.0.1:P1 / 127.0.0.1:P2
//!                           portal :tunnel (VMess) ◀════════ dialled by the bridge ═══════════════╝
//! ```
//!
//! Two HTTP services beside the bridge answer with their own name and the
//! path; each answer through the portal is compared. The bridge is
//! Rayback or the real v2ray 4.34; the portal is Rayback.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{bridge_binary, portal_binary, start, Kind};
use rayback_testkit::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ID: &str = "27848739-7e62-4138-9fd3-098a63964b6b";
const DOMAIN: &str = "test.v2ray.com";

/// An HTTP/1.1 server on 127.0.0.1 answering `"<name> <path>"`.
async fn http_server(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match socket.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let path = text.split(' ').nth(1).unwrap_or("?").to_owned();
                let body = format!("{name} {path}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

fn portal_config(socks: u16, tunnel: u16) -> String {
    format!(
        r#"{{
  "reverse": {{"portals": [{{"tag": "portal", "domain": "{DOMAIN}"}}]}},
  "inbounds": [
    {{"tag": "external", "listen": "127.0.0.1", "port": {socks}, "protocol": "socks",
      "settings": {{"auth": "noauth"}}}},
    {{"tag": "interconn", "listen": "127.0.0.1", "port": {tunnel}, "protocol": "vmess",
      "settings": {{"clients": [{{"id": "{ID}"}}]}}}}
  ],
  "routing": {{"rules": [
    {{"type": "field", "inboundTag": ["external"], "outboundTag": "portal"}},
    {{"type": "field", "inboundTag": ["interconn"], "outboundTag": "portal"}}
  ]}}
}}"#
    )
}

/// The bridge: tunnels to the portal, everything else to plain freedom
/// (no redirect: each session goes where the user asked).
fn bridge_config(tunnel: u16) -> String {
    format!(
        r#"{{
  "reverse": {{"bridges": [{{"tag": "bridge", "domain": "{DOMAIN}"}}]}},
  "outbounds": [
    {{"tag": "out", "protocol": "freedom"}},
    {{"tag": "interconn", "protocol": "vmess",
      "settings": {{"vnext": [{{"address": "127.0.0.1", "port": {tunnel}, "users": [{{"id": "{ID}"}}]}}]}}}}
  ],
  "routing": {{"rules": [
    {{"type": "field", "inboundTag": ["bridge"], "domain": ["full:{DOMAIN}"], "outboundTag": "interconn"}},
    {{"type": "field", "inboundTag": ["bridge"], "outboundTag": "out"}}
  ]}}
}}"#
    )
}

/// `curl --socks5-hostname` through `socks` to `url`: (exit code, body).
async fn curl(socks: u16, url: &str) -> (i32, String) {
    let proxy = format!("127.0.0.1:{socks}");
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["-s", "--max-time", "10", "--socks5-hostname", &proxy, url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(15), command.output())
        .await
        .expect("curl ran too long")
        .expect("curl did not run");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn have_curl() -> bool {
    let found = std::process::Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        eprintln!("skipped: curl is not installed");
    }
    found
}

async fn reverse_proxy2(bridge: Kind) {
    if !have_curl() {
        return;
    }
    if bridge == Kind::V2Ray && !rayback_testkit::v2ray_path().exists() {
        eprintln!("skipped: no v2ray binary");
        return;
    }
    let first = http_server("first").await;
    let second = http_server("second").await;
    let (socks, tunnel) = (free_port(), free_port());
    let _portal = start(
        Kind::Rayback,
        portal_binary(),
        &portal_config(socks, tunnel),
        &[socks, tunnel],
    )
    .await
    .unwrap();
    let _bridge = start(bridge, bridge_binary(), &bridge_config(tunnel), &[])
        .await
        .unwrap();

    // Until the bridge's tunnel is up, the portal has nowhere to send a
    // session: wait (bounded) for the first answer.
    let url = format!("http://{first}/ready");
    let started = Instant::now();
    loop {
        let (code, body) = curl(socks, &url).await;
        if code == 0 && body == "first /ready" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no answer through the portal within 20 s (curl {code}, {body:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for round in 0..5 {
        for (name, server) in [("first", first), ("second", second)] {
            let url = format!("http://{server}/round{round}");
            let (code, body) = curl(socks, &url).await;
            assert_eq!((code, body), (0, format!("{name} /round{round}")));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_through_a_rayback_portal_to_a_rayback_bridge() {
    reverse_proxy2(Kind::Rayback).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_through_a_rayback_portal_to_a_v2ray_bridge() {
    reverse_proxy2(Kind::V2Ray).await;
}
