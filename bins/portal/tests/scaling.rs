//! How a bridge grows its tunnel connections under load, Rayback beside
//! the real v2ray in the same run (both against a Rayback portal):
//!
//! ```text
//! N held clients ─▶ portal :public ═ tunnel connections (counted) ═▶ bridge ─▶ echo backend
//! ```
//!
//! V2Ray 4.34 adds one connection per 2 s tick while active sessions per
//! connection exceed 16; Rayback applies the same rule but dials at once
//! (up to `rayback.limits.connectionsPerBridge`, 64 by default). The counts
//! are printed for the issue note; the test asserts Rayback's.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{configs, connections_of, public, start_serving, End, Kind};
use rayback_testkit::backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens `count` more connections through `public`, each proven with a
/// four-byte echo, and keeps them in `held`.
async fn hold(public: SocketAddr, count: usize, held: &mut Vec<TcpStream>) {
    let mut opening = Vec::new();
    for _ in 0..count {
        opening.push(tokio::spawn(async move {
            let mut socket = TcpStream::connect(public).await.unwrap();
            // The backend decides echo or HTTP on the first four bytes.
            socket.write_all(b"ping").await.unwrap();
            let mut byte = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(20), socket.read_exact(&mut byte))
                .await
                .expect("echo in time")
                .unwrap();
            socket
        }));
    }
    for task in opening {
        held.push(task.await.unwrap());
    }
}

/// Holds 1, then 50, then 500 connections; after each step waits
/// `settle` and reads the bridge's tunnel connection count.
async fn growth(kind: Kind, settle: Duration) -> Vec<(usize, usize)> {
    let backend = backend().await.unwrap();
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let (_portal, bridge) =
        start_serving(Kind::Rayback, &portal_config, kind, &bridge_config, ports).await;
    let mut held = Vec::new();
    let mut counts = Vec::new();
    for level in [1usize, 50, 500] {
        let more = level - held.len();
        hold(public(ports), more, &mut held).await;
        let started = Instant::now();
        tokio::time::sleep(settle).await;
        let count = connections_of(bridge.pid(), End::Remote, ports.tunnel);
        eprintln!(
            "{kind:?} bridge: {level} held connections -> {count} tunnel connections after {:?}",
            started.elapsed()
        );
        counts.push((level, count));
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_grow_tunnel_connections_under_load() {
    let settle = Duration::from_secs(6);
    let (rayback, v2ray) = tokio::join!(growth(Kind::Rayback, settle), growth(Kind::V2Ray, settle));
    eprintln!("held | Rayback | v2ray 4.34 (after {settle:?} at each level)");
    for ((level, ours), (_, theirs)) in rayback.iter().zip(&v2ray) {
        eprintln!("{level:>4} | {ours:>7} | {theirs:>5}");
    }
    // V2Ray's rule: one connection while sessions per connection <= 16.
    assert_eq!(rayback[0].1, 1, "one connection for one client");
    // 50 sessions (+1 control each): 51/1, 52/2, 53/3 > 16 → 4 connections.
    assert!(rayback[1].1 >= 3, "{rayback:?}");
    // 500: 501/31 > 16, so at least 12 (the cap of 64 is not reached).
    assert!(rayback[2].1 >= 12, "{rayback:?}");
    assert!(
        rayback[2].1 >= v2ray[2].1,
        "at least as many as v2ray: {rayback:?} vs {v2ray:?}"
    );
}
