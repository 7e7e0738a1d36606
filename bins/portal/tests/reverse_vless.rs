//! The seed page's reverse proxy with VLESS instead of VMess as the
//! tunnel, real processes, every pairing of Rayback and the real v2ray
//! 4.34:
//!
//! ```text
//! test client ─▶ portal :public (dokodemo-door) ─▶ portal outbound ══ VLESS (command Mux) + Mux.Cool ══▶ bridge ─▶ freedom (redirect) ─▶ backend
//!                 portal :tunnel (VLESS over tcp or ws+tls) ◀══ dialled by the bridge ══╝
//! ```
//!
//! The seed configs, ports moved, with the two tunnel ends turned into
//! VLESS by text edits: the bridge's `interconn` outbound gets
//! `"protocol": "vless"` and `"encryption": "none"` on its user, the
//! portal's `interconn` inbound `"protocol": "vless"` and
//! `"decryption": "none"`. Each cell waits until a page passes, then moves
//! 8 concurrent 2 MiB echoes (SHA-256 compared) and 50 sequential HTTP
//! requests through the portal's public port. Both ends' `-test` accept
//! each config first.
//!
//! Without `/usr/bin/v2ray` the cells that need it print "skipped: …".

mod common;

use std::time::Duration;

use anyhow::{bail, Result};
use common::{
    bridge_binary, bridge_stream, check_config, configs, portal_binary, portal_stream, public,
    start_serving, Kind,
};
use rayback_testkit::tls::{SelfSigned, TunnelTls};
use rayback_testkit::{backend, echo_many, http_get, v2ray_path, with_tunnel_stream, BACKEND_PAGE};

const CONNECTIONS: usize = 8;
const SIZE: usize = 2 << 20;
const CELL_TIMEOUT: Duration = Duration::from_secs(240);

fn replace_once(text: &str, from: &str, to: &str) -> Result<String> {
    let count = text.matches(from).count();
    if count != 1 {
        bail!("expected {from:?} once in the seed config, found it {count} times");
    }
    Ok(text.replacen(from, to, 1))
}

/// The bridge's seed config with its tunnel outbound speaking VLESS.
fn vless_bridge(config: &str) -> Result<String> {
    let config = replace_once(config, "\"protocol\": \"vmess\"", "\"protocol\": \"vless\"")?;
    replace_once(
        &config,
        "\"id\": \"27848739-7e62-4138-9fd3-098a63964b6b\"",
        "\"id\": \"27848739-7e62-4138-9fd3-098a63964b6b\", \"encryption\": \"none\"",
    )
}

/// The portal's seed config with its tunnel inbound speaking VLESS.
fn vless_portal(config: &str) -> Result<String> {
    let config = replace_once(config, "\"protocol\": \"vmess\"", "\"protocol\": \"vless\"")?;
    replace_once(
        &config,
        "\"clients\": [",
        "\"decryption\": \"none\", \"clients\": [",
    )
}

/// Bridge `bridge` and portal `portal` over a VLESS tunnel, inside
/// `transport` when there is one.
async fn tunnel_cell(bridge: Kind, portal: Kind, transport: Option<TunnelTls>, seed: u64) {
    if (bridge == Kind::V2Ray || portal == Kind::V2Ray) && !v2ray_path().exists() {
        eprintln!("skipped: {} not installed", v2ray_path().display());
        return;
    }
    let certificate = SelfSigned::localhost().unwrap();
    let backend = backend().await.unwrap();
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let mut bridge_config = vless_bridge(&bridge_config).unwrap();
    let mut portal_config = vless_portal(&portal_config).unwrap();
    if let Some(transport) = transport {
        bridge_config =
            with_tunnel_stream(&bridge_config, &bridge_stream(transport, &certificate)).unwrap();
        portal_config =
            with_tunnel_stream(&portal_config, &portal_stream(transport, &certificate)).unwrap();
    }
    check_config(bridge, &bridge_binary(), &bridge_config).unwrap();
    check_config(portal, &portal_binary(), &portal_config).unwrap();
    if v2ray_path().exists() {
        check_config(Kind::V2Ray, &bridge_binary(), &bridge_config).unwrap();
        check_config(Kind::V2Ray, &portal_binary(), &portal_config).unwrap();
    }

    tokio::time::timeout(CELL_TIMEOUT, async {
        let (_portal, _bridge) =
            start_serving(portal, &portal_config, bridge, &bridge_config, ports).await;
        let public = public(ports);
        echo_many(public, CONNECTIONS, SIZE, seed, Duration::from_secs(120))
            .await
            .unwrap();
        for request in 0..50 {
            let (code, body) = http_get(public, Duration::from_secs(10))
                .await
                .unwrap_or_else(|error| panic!("request {request}: {error:#}"));
            assert_eq!(code, 200, "request {request}");
            assert_eq!(body, BACKEND_PAGE, "request {request}");
        }
    })
    .await
    .expect("the cell finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_bridge_and_rayback_portal_over_vless() {
    tunnel_cell(Kind::Rayback, Kind::Rayback, None, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_bridge_and_v2ray_portal_over_vless() {
    tunnel_cell(Kind::Rayback, Kind::V2Ray, None, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_bridge_and_rayback_portal_over_vless() {
    tunnel_cell(Kind::V2Ray, Kind::Rayback, None, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_bridge_and_rayback_portal_over_vless_ws_tls() {
    tunnel_cell(Kind::Rayback, Kind::Rayback, Some(TunnelTls::WsTls), 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_bridge_and_v2ray_portal_over_vless_ws_tls() {
    tunnel_cell(Kind::Rayback, Kind::V2Ray, Some(TunnelTls::WsTls), 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_bridge_and_rayback_portal_over_vless_ws_tls() {
    tunnel_cell(Kind::V2Ray, Kind::Rayback, Some(TunnelTls::WsTls), 600).await;
}
