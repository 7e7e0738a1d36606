//! SIGHUP reloads a running portal's files: a changed routing rule applies
//! to new connections, a transfer started before the reload completes
//! intact, and the bridge's tunnel connection is not re-dialled.
//!
//! ```text
//! client ─▶ portal :public ─(rule: portal | blackhole)─▶ tunnel ═▶ bridge ─▶ backend
//! ```

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    configs, connections_of, local_ports_of, portal_binary, public, start_bridge, wait_serving,
    End, Kind,
};
use rayback_testkit::traffic::echo_piece;
use rayback_testkit::{backend, http_get, seeded_bytes, wait_for_port, TempDir};
use tokio::net::TcpStream;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The seed portal with a blackhole outbound, its public inbound routed to
/// `to` ("portal" or "closed").
fn portal_routing_to(portal: &str, to: &str) -> String {
    let rule = "\"inboundTag\": [\n            \"external\"\n          ],\n          \"outboundTag\": \"portal\"";
    assert!(portal.contains(rule), "the seed portal's rule");
    portal
        .replacen(rule, &rule.replace("\"portal\"", &format!("\"{to}\"")), 1)
        .replacen(
            '{',
            "{\n  \"outbounds\": [{\"protocol\": \"blackhole\", \"tag\": \"closed\"}],",
            1,
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_rule_and_keeps_the_tunnel_and_open_transfers() {
    let backend = backend().await.unwrap();
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let dir = TempDir::new("reload").unwrap();
    let path = dir.path.join("portal.json");
    std::fs::write(&path, portal_routing_to(&portal_config, "portal")).unwrap();
    let portal = Killed(
        Command::new(portal_binary())
            .arg("-config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(public(ports)).await.unwrap();
    let bridge = start_bridge(Kind::Rayback, &bridge_config).await.unwrap();
    wait_serving(public(ports), Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(connections_of(bridge.pid(), End::Remote, ports.tunnel), 1);
    let local_tunnel_ports = local_ports_of(bridge.pid(), End::Remote, ports.tunnel);

    // A transfer in flight across the reload.
    let mut socket = TcpStream::connect(public(ports)).await.unwrap();
    let data = seeded_bytes(11, 1 << 20);
    // Established end to end before the reload: the first half is back.
    echo_piece(&mut socket, &data[..1 << 19], Duration::from_secs(10))
        .await
        .unwrap();

    std::fs::write(&path, portal_routing_to(&portal_config, "closed")).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &portal.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());

    // New connections follow the new rule (blackholed) within a bound.
    let started = Instant::now();
    loop {
        if http_get(public(ports), Duration::from_secs(2))
            .await
            .is_err()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the new rule never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The transfer started before completes intact.
    echo_piece(&mut socket, &data[1 << 19..], Duration::from_secs(10))
        .await
        .unwrap();

    // Same tunnel connection: not re-dialled.
    assert_eq!(
        local_ports_of(bridge.pid(), End::Remote, ports.tunnel),
        local_tunnel_ports
    );

    // And back again.
    std::fs::write(&path, portal_routing_to(&portal_config, "portal")).unwrap();
    Command::new("kill")
        .args(["-HUP", &portal.0.id().to_string()])
        .status()
        .unwrap();
    wait_serving(public(ports), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        local_ports_of(bridge.pid(), End::Remote, ports.tunnel),
        local_tunnel_ports
    );
}
