//! The seed page's reverse proxy with its tunnel over V2Ray 4.34's
//! `streamSettings` transports, real processes:
//!
//! ```text
//! test client ─▶ portal :public (dokodemo-door) ─▶ portal outbound ══ VMess + Mux.Cool ══▶ bridge ─▶ freedom (redirect) ─▶ backend (echo)
//!                 portal :tunnel (VMess over ws+tls or tls) ◀══ dialled by the bridge ══╝
//! ```
//!
//! The seed configs, ports moved, with `streamSettings` added to the two
//! ends of the tunnel only: the bridge's VMess outbound and the portal's
//! VMess inbound (both tagged `interconn`). Each pairing of Rayback and the
//! real v2ray 4.34 carries 16 concurrent 4 MiB echoes through the portal's
//! public port, SHA-256 compared.
//!
//! TLS uses a fresh self-signed certificate for `localhost` and 127.0.0.1,
//! which the portal names by file. Over ws+tls the bridge verifies
//! `serverName: "localhost"` against the certificate listed in its
//! `certificates` (V2Ray 4.34 adds listed certificates to the trusted
//! roots); over tls it skips verification (`allowInsecure`).

mod common;

use std::time::Duration;

use common::{
    bridge_binary, bridge_stream, check_config, configs, portal_binary, portal_stream, public,
    start_serving, Kind,
};
use rayback_testkit::tls::{SelfSigned, TunnelTls as Transport};
use rayback_testkit::with_tunnel_stream;
use rayback_testkit::{backend, echo_many, v2ray_test};

const CONNECTIONS: usize = 16;
const SIZE: usize = 4 << 20;
/// Bridge `bridge` and portal `portal` with the tunnel over `transport`:
/// waits until a request passes, then 16 × 4 MiB of echoes through the
/// portal's public port.
async fn tunnel_cell(bridge: Kind, portal: Kind, transport: Transport, seed: u64) {
    let certificate = SelfSigned::localhost().unwrap();
    let backend = backend().await.unwrap();
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let bridge_config =
        with_tunnel_stream(&bridge_config, &bridge_stream(transport, &certificate)).unwrap();
    let portal_config =
        with_tunnel_stream(&portal_config, &portal_stream(transport, &certificate)).unwrap();
    // A refused config fails here with its message, not later as a port
    // that never opened or a tunnel that never serves.
    check_config(bridge, &bridge_binary(), &bridge_config).unwrap();
    check_config(portal, &portal_binary(), &portal_config).unwrap();

    let (_portal, _bridge) =
        start_serving(portal, &portal_config, bridge, &bridge_config, ports).await;
    echo_many(
        public(ports),
        CONNECTIONS,
        SIZE,
        seed,
        Duration::from_secs(120),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_bridge_and_rayback_portal_over_ws_tls() {
    tunnel_cell(Kind::Rayback, Kind::Rayback, Transport::WsTls, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_bridge_and_v2ray_portal_over_ws_tls() {
    tunnel_cell(Kind::Rayback, Kind::V2Ray, Transport::WsTls, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_bridge_and_rayback_portal_over_ws_tls() {
    tunnel_cell(Kind::V2Ray, Kind::Rayback, Transport::WsTls, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_bridge_and_rayback_portal_over_tls() {
    tunnel_cell(Kind::Rayback, Kind::Rayback, Transport::Tls, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_bridge_and_v2ray_portal_over_tls() {
    tunnel_cell(Kind::Rayback, Kind::V2Ray, Transport::Tls, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_bridge_and_rayback_portal_over_tls() {
    tunnel_cell(Kind::V2Ray, Kind::Rayback, Transport::Tls, 600).await;
}

/// v2ray accepts the bridge and portal configs of both transports, so a
/// failing cell is never a mistake in what v2ray was given.
#[test]
fn v2ray_accepts_the_tunnel_configs() {
    let certificate = SelfSigned::localhost().unwrap();
    let backend = std::net::SocketAddr::from(([127, 0, 0, 1], rayback_testkit::free_port()));
    let (_, bridge_config, portal_config) = configs(backend).unwrap();
    let mut checked = 0;
    for transport in [Transport::WsTls, Transport::Tls] {
        for (role, config) in [
            (
                "bridge",
                with_tunnel_stream(&bridge_config, &bridge_stream(transport, &certificate)),
            ),
            (
                "portal",
                with_tunnel_stream(&portal_config, &portal_stream(transport, &certificate)),
            ),
        ] {
            let config = config.unwrap();
            let (code, output) = v2ray_test(&config, "config.json").unwrap();
            assert_eq!(
                code, 0,
                "v2ray -test refused the {role} config over {transport:?}:\n{output}\n{config}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 4);
}
