//! Faults around the reverse proxy, with real processes (Rayback on both
//! sides unless a test says otherwise):
//!
//! ```text
//! client ─▶ portal :public ═ VMess + Mux.Cool (dialled by the bridge) ═▶ bridge ─▶ backend
//! ```
//!
//! Each fault has its bound in the test: the service comes back by itself
//! within 5 s of a restart; a refused backend closes the public connection
//! promptly while the tunnel stays up.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    configs, connections_of, public, start_bridge, start_portal, wait_serving, End, Kind,
};
use rayback_testkit::{backend, exchange_exact, free_port, http_get, seeded_bytes, BACKEND_PAGE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RECOVERY: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_restart_the_bridge_serves_again_within_5s() {
    let backend = backend().await.unwrap();
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let _bridge = start_bridge(Kind::Rayback, &bridge_config).await.unwrap();
    let portal = start_portal(Kind::Rayback, &portal_config, ports)
        .await
        .unwrap();
    wait_serving(public(ports), Duration::from_secs(15))
        .await
        .unwrap();

    drop(portal);
    // Down for a while: the bridge keeps redialling with backoff.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _portal = start_portal(Kind::Rayback, &portal_config, ports)
        .await
        .unwrap();
    let took = wait_serving(public(ports), RECOVERY).await.unwrap();
    eprintln!("serving again {took:?} after the portal came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_restart_the_portal_takes_the_new_bridge_within_5s() {
    let backend = backend().await.unwrap();
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let _portal = start_portal(Kind::Rayback, &portal_config, ports)
        .await
        .unwrap();
    let bridge = start_bridge(Kind::Rayback, &bridge_config).await.unwrap();
    wait_serving(public(ports), Duration::from_secs(15))
        .await
        .unwrap();

    drop(bridge);
    let _bridge = start_bridge(Kind::Rayback, &bridge_config).await.unwrap();
    let took = wait_serving(public(ports), RECOVERY).await.unwrap();
    eprintln!("serving again {took:?} after the bridge restarted");
    // And then without a single failure: the dead tunnel is never picked.
    for request in 0..50 {
        let (code, body) = http_get(public(ports), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            (code, body.as_slice()),
            (200, BACKEND_PAGE),
            "request {request}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_backend_closes_the_public_connection_promptly_and_keeps_the_tunnel() {
    // Nothing listens on the bridge's redirect target.
    let refused = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (ports, bridge_config, portal_config) = configs(refused).unwrap();
    let bridge = start_bridge(Kind::Rayback, &bridge_config).await.unwrap();
    let _portal = start_portal(Kind::Rayback, &portal_config, ports)
        .await
        .unwrap();
    let started = Instant::now();
    while connections_of(bridge.pid(), End::Remote, ports.tunnel) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no tunnel connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for attempt in 0..10 {
        let started = Instant::now();
        let mut socket = TcpStream::connect(public(ports)).await.unwrap();
        socket.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "attempt {attempt}: still open after 5 s");
        assert!(got.is_empty(), "attempt {attempt}: got {} bytes", got.len());
        // freedom retries a refused dial a few times (as V2Ray does), so
        // "promptly" is within a couple of seconds.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "attempt {attempt}: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        connections_of(bridge.pid(), End::Remote, ports.tunnel),
        1,
        "the tunnel stayed up"
    );

    // The service appears on the target: served over the same tunnel.
    let listener = tokio::net::TcpListener::bind(refused).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    BACKEND_PAGE.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(BACKEND_PAGE).await;
            });
        }
    });
    wait_serving(public(ports), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(
        connections_of(bridge.pid(), End::Remote, ports.tunnel),
        1,
        "no redial was needed"
    );
}

/// Opens a connection through `public`, proves it works with one echo, and
/// keeps it open.
async fn held_connection(public: SocketAddr, seed: u64) -> TcpStream {
    let mut socket = TcpStream::connect(public).await.unwrap();
    let data = seeded_bytes(seed, 1024);
    socket.write_all(&data).await.unwrap();
    let mut got = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(10), socket.read_exact(&mut got))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(got, data);
    socket
}

/// Whether a held connection still echoes.
async fn still_echoes(socket: &mut TcpStream) -> bool {
    if socket.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut got = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(3), socket.read_exact(&mut got)).await,
        Ok(Ok(_)) if &got == b"ping"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_share_the_load_and_one_dying_loses_only_its_connections() {
    let backend = backend().await.unwrap();
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let portal = start_portal(Kind::Rayback, &portal_config, ports)
        .await
        .unwrap();
    let first = start_bridge(Kind::Rayback, &bridge_config).await.unwrap();
    let second = start_bridge(Kind::Rayback, &bridge_config).await.unwrap();
    let started = Instant::now();
    while connections_of(portal.pid(), End::Local, ports.tunnel) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "both bridges connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut held = Vec::new();
    for seed in 0..100 {
        held.push(held_connection(public(ports), seed).await);
    }
    let on_first = connections_of(first.pid(), End::Remote, backend.port());
    let on_second = connections_of(second.pid(), End::Remote, backend.port());
    eprintln!("100 connections split {on_first} / {on_second} over the two bridges");
    assert_eq!(on_first + on_second, 100);
    assert!(
        on_first >= 30 && on_second >= 30,
        "split {on_first}/{on_second}"
    );

    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut alive = 0;
    for socket in &mut held {
        if still_echoes(socket).await {
            alive += 1;
        }
    }
    assert_eq!(
        alive, on_second,
        "exactly the second bridge's connections survive"
    );
    // New connections all go to the surviving bridge.
    for seed in 1000..1020 {
        let data = seeded_bytes(seed, 4096);
        let got = exchange_exact(public(ports), &data, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got, data);
    }
}
