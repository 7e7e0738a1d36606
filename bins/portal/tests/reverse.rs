//! The seed page's reverse proxy end to end, with real processes:
//!
//! ```text
//! test client ─▶ portal :public (dokodemo-door) ─▶ portal outbound ══ VMess + Mux.Cool ══▶ bridge ─▶ freedom (redirect) ─▶ backend
//!                 portal :tunnel (VMess) ◀═════════ dialled by the bridge ════════════════╝
//! ```
//!
//! Each cell of the interop matrix runs the seed configs (legacy routing
//! form, comments) with only ports moved; either side is Rayback or the
//! real v2ray 4.34. The backend echoes, or answers `GET` with a page.

mod common;

use std::time::Duration;

use common::{configs, public, start_bridge, start_portal, wait_serving, Kind};
use rayback_testkit::{backend, echo_many, http_get, BACKEND_PAGE};

/// 50 concurrent 4 MiB echoes, then 500 sequential short HTTP requests.
async fn matrix_cell(bridge: Kind, portal: Kind) {
    let backend = backend().await.unwrap();
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let _bridge = start_bridge(bridge, &bridge_config).await.unwrap();
    let _portal = start_portal(portal, &portal_config, ports).await.unwrap();
    let public = public(ports);
    let took = wait_serving(public, Duration::from_secs(20)).await.unwrap();
    eprintln!("{bridge:?} bridge + {portal:?} portal: serving after {took:?}");

    echo_many(public, 50, 4 << 20, 1, Duration::from_secs(120))
        .await
        .unwrap();
    for request in 0..500 {
        let (code, body) = http_get(public, Duration::from_secs(10))
            .await
            .unwrap_or_else(|error| panic!("request {request}: {error:#}"));
        assert_eq!(code, 200, "request {request}");
        assert_eq!(body, BACKEND_PAGE, "request {request}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_bridge_and_rayback_portal() {
    matrix_cell(Kind::Rayback, Kind::Rayback).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_bridge_and_v2ray_portal() {
    matrix_cell(Kind::Rayback, Kind::V2Ray).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_bridge_and_rayback_portal() {
    matrix_cell(Kind::V2Ray, Kind::Rayback).await;
}
