//! Battery, integrity: many large full-duplex transfers cross the tunnel
//! unaltered, Rayback on both sides and in both interop pairings with the
//! real v2ray 4.34; and (Rayback only) a half-closed connection keeps its
//! other direction flowing.
//!
//! ```text
//! 16 clients (write and read at once) ─▶ portal :public ═ VMess + Mux.Cool ═▶ bridge ─▶ echo backend
//! ```
//!
//! Every stream is checked by SHA-256. The clients never half-close
//! through a v2ray node (Mux.Cool has no half-close).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{configs, public, soak, start_serving, with_members, Kind};
use rayback_testkit::traffic::{duplex_echo, half_close_echo};
use rayback_testkit::{backend, seeded_bytes};

/// Connections, bytes each way per connection, and the time limit: the CI
/// tier, or the long tier under `RAYBACK_SOAK=1` (`cargo xtask soak`).
fn sizes() -> (usize, usize, Duration) {
    if soak() {
        (32, 64 << 20, Duration::from_secs(900))
    } else {
        (16, 16 << 20, Duration::from_secs(120))
    }
}

async fn duplex_many(bridge: Kind, portal: Kind) {
    duplex_many_with(bridge, portal, None).await;
}

/// [`duplex_many`] with Rayback's `rayback` object set to `rayback` on
/// both sides.
async fn duplex_many_with(bridge: Kind, portal: Kind, rayback: Option<&str>) {
    let backend = backend().await.unwrap();
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let (bridge_config, portal_config) = match rayback {
        Some(object) => {
            let member = format!(r#""rayback": {object}"#);
            (
                with_members(&bridge_config, &member),
                with_members(&portal_config, &member),
            )
        }
        None => (bridge_config, portal_config),
    };
    let (portal_node, bridge_node) =
        start_serving(portal, &portal_config, bridge, &bridge_config, ports).await;
    if rayback.is_some_and(|object| object.contains("workers")) {
        // The runtime really is multi-threaded: more threads than the
        // single-thread default starts.
        for node in [&portal_node, &bridge_node] {
            let threads = std::fs::read_dir(format!("/proc/{}/task", node.pid()))
                .unwrap()
                .count();
            assert!(threads >= 4, "only {threads} threads with workers set");
        }
    }
    let (connections, size, limit) = sizes();
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|index| {
            let data = Arc::new(seeded_bytes(100 + index as u64, size));
            tokio::spawn(duplex_echo(public(ports), data, limit))
        })
        .collect();
    let mut failures = Vec::new();
    for (index, task) in tasks.into_iter().enumerate() {
        if let Err(error) = task.await.unwrap() {
            failures.push(format!("#{index}: {error:#}"));
        }
    }
    let took = started.elapsed();
    eprintln!(
        "{bridge:?} bridge + {portal:?} portal: {connections} x {} MiB full duplex in {took:?} ({:.0} MiB/s each way)",
        size >> 20,
        (connections * size) as f64 / (1 << 20) as f64 / took.as_secs_f64()
    );
    assert!(failures.is_empty(), "{failures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplex_16_x_16mib_rayback_bridge_rayback_portal() {
    duplex_many(Kind::Rayback, Kind::Rayback).await;
}

/// The same through multi-threaded processes: on this 2-CPU machine the
/// default is one runtime thread, so machines with more CPUs (one thread
/// per CPU) would otherwise run a configuration no test covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplex_16_x_16mib_rayback_both_sides_with_four_worker_threads() {
    duplex_many_with(Kind::Rayback, Kind::Rayback, Some(r#"{"workers": 4}"#)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplex_16_x_16mib_rayback_bridge_v2ray_portal() {
    duplex_many(Kind::Rayback, Kind::V2Ray).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplex_16_x_16mib_v2ray_bridge_rayback_portal() {
    duplex_many(Kind::V2Ray, Kind::Rayback).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_keeps_the_other_direction_flowing() {
    let backend = backend().await.unwrap();
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let (_portal, _bridge) = start_serving(
        Kind::Rayback,
        &portal_config,
        Kind::Rayback,
        &bridge_config,
        ports,
    )
    .await;
    // The client sends 1 MiB, shuts down its write half, and must still
    // receive all of it back (the backend echoes, then closes at EOF).
    for seed in 0..4 {
        let data = seeded_bytes(7000 + seed, 1 << 20);
        half_close_echo(public(ports), &data, Duration::from_secs(20))
            .await
            .unwrap();
    }
}
