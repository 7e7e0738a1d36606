//! The visitor's source crosses the tunnel (a Rayback extension): a
//! bridge's routing `source` rule sees the public visitor, with real
//! processes.
//!
//! ```text
//! visitor 127.0.0.5 ─┐                                                                 ┌─ source 127.0.0.5 ─▶ freedom ─▶ backend A
//! visitor 127.0.0.6 ─┴▶ portal :public (dokodemo) ─▶ portal ══ VMess + Mux.Cool ══▶ bridge ┤
//!                       portal :tunnel (VMess) ◀════ dialled by the bridge ═══════╝        └─ anything else  ─▶ freedom ─▶ backend B
//! ```
//!
//! Rayback portal and Rayback bridge: the bridge asks for sources in its
//! VMess request, the portal names each visitor in the New frame, so
//! 127.0.0.5 reaches A and 127.0.0.6 reaches B. With the real v2ray 4.34
//! at either end everything still works, but no source crosses: both
//! visitors reach B.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{bridge_binary, portal_binary, start, Kind};
use rayback_testkit::peer::connect_from;
use rayback_testkit::{free_port, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ID: &str = "27848739-7e62-4138-9fd3-098a63964b6b";
const DOMAIN: &str = "test.v2ray.com";
const VISITOR_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
const VISITOR_B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// A TCP server on 127.0.0.1 that reads one line and answers
/// `"<name> <line>"`, then closes.
async fn named_backend(name: &'static str) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while !line.ends_with(b"\n") && line.len() < 256 {
                    match socket.read(&mut byte).await {
                        Ok(1) => line.push(byte[0]),
                        _ => return,
                    }
                }
                let answer = format!("{name} {}", String::from_utf8_lossy(&line));
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok(addr)
}

fn portal_config(public: u16, tunnel: u16) -> String {
    format!(
        r#"{{
  "log": {{"loglevel": "warning"}},
  "reverse": {{"portals": [{{"tag": "portal", "domain": "{DOMAIN}"}}]}},
  "inbounds": [
    {{"tag": "external", "listen": "127.0.0.1", "port": {public}, "protocol": "dokodemo-door",
      "settings": {{"address": "127.0.0.1", "port": 80, "network": "tcp"}}}},
    {{"tag": "interconn", "listen": "127.0.0.1", "port": {tunnel}, "protocol": "vmess",
      "settings": {{"clients": [{{"id": "{ID}"}}]}}}}
  ],
  "outbounds": [{{"tag": "direct", "protocol": "freedom"}}],
  "routing": {{"rules": [
    {{"type": "field", "inboundTag": ["external"], "outboundTag": "portal"}},
    {{"type": "field", "inboundTag": ["interconn"], "outboundTag": "portal"}}
  ]}}
}}"#
    )
}

/// The bridge: tunnels to the portal; a session from 127.0.0.5 to backend
/// A, every other one to backend B. Its access log goes to `access`.
fn bridge_config(tunnel: u16, a: SocketAddr, b: SocketAddr, access: &Path) -> String {
    let access = access.display();
    format!(
        r#"{{
  "log": {{"loglevel": "warning", "access": "{access}"}},
  "reverse": {{"bridges": [{{"tag": "bridge", "domain": "{DOMAIN}"}}]}},
  "outbounds": [
    {{"tag": "to-b", "protocol": "freedom", "settings": {{"redirect": "{b}"}}}},
    {{"tag": "to-a", "protocol": "freedom", "settings": {{"redirect": "{a}"}}}},
    {{"tag": "interconn", "protocol": "vmess",
      "settings": {{"vnext": [{{"address": "127.0.0.1", "port": {tunnel}, "users": [{{"id": "{ID}"}}]}}]}}}}
  ],
  "routing": {{"rules": [
    {{"type": "field", "inboundTag": ["bridge"], "domain": ["full:{DOMAIN}"], "outboundTag": "interconn"}},
    {{"type": "field", "inboundTag": ["bridge"], "source": ["{VISITOR_A}"], "outboundTag": "to-a"}},
    {{"type": "field", "inboundTag": ["bridge"], "outboundTag": "to-b"}}
  ]}}
}}"#
    )
}

/// One visit from `from` to the portal's public port: sends a line, returns
/// the answer (the backend's name and the line). Bounded.
async fn visit(from: Ipv4Addr, public: SocketAddr, line: &str) -> Result<String> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut socket = connect_from(from, public).await?;
        socket.write_all(format!("{line}\n").as_bytes()).await?;
        let mut answer = Vec::new();
        socket.read_to_end(&mut answer).await?;
        anyhow::Ok(String::from_utf8_lossy(&answer).into_owned())
    })
    .await
    .context("visit timed out")?
}

/// Which backend each visit reached, and the bridge's access log.
struct Reached {
    from_a: Vec<String>,
    from_b: Vec<String>,
    access_log: String,
}

/// Runs the topology with `portal` and `bridge` and returns which backend
/// each of several visits from A's and from B's address reached.
async fn backends_reached(portal: Kind, bridge: Kind) -> Result<Reached> {
    let dir = TempDir::new("visitor-source")?;
    let access = dir.path.join("access.log");
    let a = named_backend("A").await?;
    let b = named_backend("B").await?;
    let (public_port, tunnel) = (free_port(), free_port());
    let public = SocketAddr::from(([127, 0, 0, 1], public_port));
    let _portal = start(
        portal,
        portal_binary(),
        &portal_config(public_port, tunnel),
        &[public_port, tunnel],
    )
    .await?;
    let _bridge = start(
        bridge,
        bridge_binary(),
        &bridge_config(tunnel, a, b, &access),
        &[],
    )
    .await?;

    // Until the bridge's tunnel is up the portal has nowhere to send a
    // visit: wait (bounded) for the first answer.
    let started = Instant::now();
    loop {
        match visit(VISITOR_B, public, "ready").await {
            Ok(answer) if answer.ends_with(" ready\n") => break,
            outcome if started.elapsed() > Duration::from_secs(20) => {
                bail!("no answer through the portal within 20 s: {outcome:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let mut reached = (Vec::new(), Vec::new());
    for round in 0..4 {
        for (from, seen) in [(VISITOR_A, &mut reached.0), (VISITOR_B, &mut reached.1)] {
            let line = format!("{from} round {round}");
            let answer = visit(from, public, &line).await?;
            let Some(name) = answer.strip_suffix(&format!(" {line}\n")) else {
                bail!("visit from {from}: unexpected answer {answer:?}");
            };
            seen.push(name.to_owned());
        }
    }
    let access_log = std::fs::read_to_string(&access).unwrap_or_default();
    Ok(Reached {
        from_a: reached.0,
        from_b: reached.1,
        access_log,
    })
}

/// The bridge's access lines for sessions sent to `outbound`.
fn access_lines<'a>(log: &'a str, outbound: &str) -> Vec<&'a str> {
    let tag = format!("[{outbound}]");
    log.lines().filter(|line| line.ends_with(&tag)).collect()
}

fn have_v2ray() -> bool {
    let found = rayback_testkit::v2ray_path().exists();
    if !found {
        eprintln!("skipped: no v2ray binary");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rayback_bridge_routes_by_the_visitor_of_a_rayback_portal() {
    let reached = backends_reached(Kind::Rayback, Kind::Rayback)
        .await
        .unwrap();
    assert_eq!(reached.from_a, ["A"; 4], "visits from {VISITOR_A}");
    assert_eq!(reached.from_b, ["B"; 4], "visits from {VISITOR_B}");
    // The bridge's access log names the visitors, not the tunnel.
    let log = &reached.access_log;
    let to_a = access_lines(log, "to-a");
    let from_a = format!(" {VISITOR_A}:");
    assert_eq!(to_a.len(), 4, "access log:\n{log}");
    assert!(
        to_a.iter().all(|line| line.contains(&from_a)),
        "access log:\n{log}"
    );
    let to_b = access_lines(log, "to-b");
    let from_b = format!(" {VISITOR_B}:");
    // The 4 rounds and the first visit that found the tunnel ready (the
    // wait for the public port may add a probe from 127.0.0.1).
    assert!(
        to_b.iter().filter(|line| line.contains(&from_b)).count() >= 5,
        "access log:\n{log}"
    );
    assert!(
        !to_b.iter().any(|line| line.contains(&from_a)),
        "access log:\n{log}"
    );
}

// A V2Ray bridge never asks for sources (and would skip them): it serves
// every visit, and its source rule sees no visitor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2ray_bridge_serves_a_rayback_portal_without_sources() {
    if !have_v2ray() {
        return;
    }
    let reached = backends_reached(Kind::Rayback, Kind::V2Ray).await.unwrap();
    assert_eq!(reached.from_a, ["B"; 4], "visits from {VISITOR_A}");
    assert_eq!(reached.from_b, ["B"; 4], "visits from {VISITOR_B}");
}

// A V2Ray portal never sends sources: a Rayback bridge serves every
// visit, with no source to route by or to log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rayback_bridge_serves_a_v2ray_portal_without_sources() {
    if !have_v2ray() {
        return;
    }
    let reached = backends_reached(Kind::V2Ray, Kind::Rayback).await.unwrap();
    assert_eq!(reached.from_a, ["B"; 4], "visits from {VISITOR_A}");
    assert_eq!(reached.from_b, ["B"; 4], "visits from {VISITOR_B}");
    let log = &reached.access_log;
    assert!(access_lines(log, "to-b").len() >= 8, "access log:\n{log}");
    assert!(
        !log.contains(&format!(" {VISITOR_A}:")) && !log.contains(&format!(" {VISITOR_B}:")),
        "access log:\n{log}"
    );
}
