//! Battery, hostile input against a running Rayback portal, while the
//! real (Rayback) bridge keeps serving through it:
//!
//! ```text
//! attackers (127.0.0.2-5) ─▶ portal :tunnel (VMess)      ◀═ relay ═ bridge ─▶ backend
//! 1,000 idle clients      ─▶ portal :public
//! checker: GET / every 250 ms through :public, none may fail
//! ```
//!
//! Unauthenticated: garbage of many lengths, the bridge's own first bytes
//! replayed (captured by the fault relay), a VMess client with a wrong
//! id, slowloris (200 connections, one byte per second), 1,000 idle public
//! connections. Authenticated: a VMess client with the right id that the
//! portal adopts as a bridge and that then writes crafted Mux.Cool frames
//! (KeepAlive flood, Keep/End for unknown ids, a New toward a sentinel, an
//! oversize frame). Bounds: the portal stays up, no GET fails, the portal
//! adopts nothing but real bridges, nothing dials the sentinel, and the
//! portal's RSS grows by at most 64 MiB (unauthenticated) / 32 MiB (mux
//! abuse).
//!
//! The attackers dial from other loopback addresses than the bridge
//! (127.0.0.1), as they would from other hosts, so per-source limits see
//! them apart.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{public, relayed_configs, start_serving, wait_serving, with_members, Kind};
use rayback_testkit::fault::Sentinel;
use rayback_testkit::gauge::{alive, metric, rss_kb, scrape};
use rayback_testkit::peer::{
    connect_from, mux_end, mux_keep, mux_keep_alive, mux_new_tcp, mux_oversize, read_mux_frame,
    RawVmessPeer,
};
use rayback_testkit::{backend, free_port, http_get, seeded_bytes, BACKEND_PAGE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const ID: &str = "27848739-7e62-4138-9fd3-098a63964b6b";
const WRONG_ID: &str = "0b5a1f5e-3c2d-4e6f-8a9b-0c1d2e3f4a5b";

struct Setup {
    tunnel: SocketAddr,
    public: SocketAddr,
    metrics: SocketAddr,
    portal_pid: u32,
    _nodes: Vec<common::Node>,
    relay: rayback_testkit::fault::FaultRelay,
}

async fn setup() -> Setup {
    let backend = backend().await.unwrap();
    let (ports, relay, bridge_config, portal_config) = relayed_configs(backend).await.unwrap();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let portal_config = with_members(
        &portal_config,
        &format!(r#""rayback": {{"metrics": "{metrics}"}}"#),
    );
    let (portal, bridge) = start_serving(
        Kind::Rayback,
        &portal_config,
        Kind::Rayback,
        &bridge_config,
        ports,
    )
    .await;
    Setup {
        tunnel: SocketAddr::from(([127, 0, 0, 1], ports.tunnel)),
        public: public(ports),
        metrics,
        portal_pid: portal.pid(),
        _nodes: vec![portal, bridge],
        relay,
    }
}

/// GET / every 250 ms until `stop`; returns (served, failures).
fn checker(
    public: SocketAddr,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let (mut served, mut failures) = (0, Vec::new());
        while !stop.load(Ordering::SeqCst) {
            match http_get(public, Duration::from_secs(3)).await {
                Ok((200, body)) if body == BACKEND_PAGE => served += 1,
                Ok((code, _)) => failures.push(format!("status {code}")),
                Err(error) => failures.push(format!("{error:#}")),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        (served, failures)
    })
}

async fn portal_connections(metrics: SocketAddr) -> f64 {
    let text = scrape(metrics).await.unwrap();
    metric(&text, "rayback_portal_connections", &[]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_hostility_leaves_the_bridge_serving() {
    const RSS_BOUND_KIB: u64 = 64 * 1024;
    let setup = setup().await;
    let replay = setup.relay.captured().first().cloned().unwrap();
    assert!(
        replay.len() >= 42,
        "captured {} bytes of the bridge's handshake",
        replay.len()
    );
    let rss_before = rss_kb(setup.portal_pid).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let check = checker(setup.public, stop.clone());
    let started = Instant::now();
    let tunnel = setup.tunnel;

    // Garbage of many lengths (each on its own connection, several rounds).
    let garbage = tokio::spawn(async move {
        let source = Ipv4Addr::new(127, 0, 0, 2);
        for round in 0..if common::soak() { 20 } else { 3u64 } {
            for len in [
                1usize, 2, 15, 16, 17, 18, 38, 41, 42, 61, 64, 100, 1000, 4096, 65536,
            ] {
                if let Ok(mut socket) = connect_from(source, tunnel).await {
                    let _ = socket
                        .write_all(&seeded_bytes(round * 100_000 + len as u64, len))
                        .await;
                    let mut buf = [0u8; 256];
                    let _ = tokio::time::timeout(Duration::from_millis(200), socket.read(&mut buf))
                        .await;
                }
            }
        }
    });
    // The bridge's first bytes, replayed on new connections.
    let replayed = tokio::spawn(async move {
        let source = Ipv4Addr::new(127, 0, 0, 3);
        let mut answered = 0;
        for _ in 0..10 {
            if let Ok(mut socket) = connect_from(source, tunnel).await {
                let _ = socket.write_all(&replay).await;
                let mut buf = [0u8; 256];
                if let Ok(Ok(read)) =
                    tokio::time::timeout(Duration::from_millis(500), socket.read(&mut buf)).await
                {
                    answered += usize::from(read > 0);
                }
            }
        }
        answered
    });
    // A VMess client with a wrong id, speaking Mux.Cool.
    let wrong = RawVmessPeer::start(tunnel, WRONG_ID, "test.v2ray.com")
        .await
        .unwrap();
    let mut wrong_connections = Vec::new();
    for _ in 0..5 {
        let mut socket = wrong.connect().await.unwrap();
        let _ = socket.write_all(&mux_keep_alive()).await;
        wrong_connections.push(socket);
    }
    // Slowloris: 200 connections, one byte per second each.
    let slow_open = Arc::new(AtomicUsize::new(0));
    let slowloris: Vec<_> = (0..200)
        .map(|index| {
            let slow_open = slow_open.clone();
            tokio::spawn(async move {
                let source = Ipv4Addr::new(127, 0, 0, 4);
                let Ok(mut socket) = connect_from(source, tunnel).await else {
                    return 0;
                };
                let mut sent = 0;
                slow_open.fetch_add(1, Ordering::SeqCst);
                for second in 0..8u8 {
                    if socket.write_all(&[index as u8 ^ second]).await.is_err() {
                        break;
                    }
                    sent += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                sent
            })
        })
        .collect();
    // 1,000 idle public connections.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        if let Ok(socket) = TcpStream::connect(setup.public).await {
            idle.push(socket);
        }
    }

    garbage.await.unwrap();
    let answered = replayed.await.unwrap();
    let mut slow_bytes = Vec::new();
    for task in slowloris {
        slow_bytes.push(task.await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tunnels_during = portal_connections(setup.metrics).await;
    let relayed = setup.relay.live();
    let rss_during = rss_kb(setup.portal_pid).unwrap();
    stop.store(true, Ordering::SeqCst);
    let (served, failures) = check.await.unwrap();
    let full_slow = slow_bytes.iter().filter(|sent| **sent == 8).count();
    eprintln!(
        "hostile (unauthenticated) for {:?}: {served} GETs served, {} failed; replays answered {answered}/10; \
         slowloris connections writing all 8 s: {full_slow}/200; idle public held {}; portal tunnels {tunnels_during} (bridge's {relayed}); \
         portal RSS {rss_before} -> {rss_during} KiB",
        started.elapsed(),
        failures.len(),
        idle.len()
    );
    assert!(alive(setup.portal_pid), "the portal died");
    assert!(
        failures.is_empty(),
        "GETs failed during the attack: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(served >= 10, "{served}");
    assert_eq!(answered, 0, "a replayed handshake got an answer");
    // The 1,000 idle clients make the real bridge grow its tunnels (all
    // through the relay); any tunnel beyond those would be an attacker's.
    assert!(
        tunnels_during <= relayed as f64,
        "the portal holds {tunnels_during} tunnels, the bridge dialled {relayed}: it adopted a replayed or wrong-id one"
    );
    assert!(
        rss_during <= rss_before + RSS_BOUND_KIB,
        "RSS {rss_before} -> {rss_during} KiB"
    );
    drop(idle);
    drop(wrong_connections);
    wait_serving(setup.public, Duration::from_secs(5))
        .await
        .unwrap();
}

/// Slowloris from one source: 200 connections to the tunnel port, one byte
/// per second for 6 s. The portal's limit on unauthenticated connections
/// per source (`rayback.limits.unauthenticatedPerSource`, 64 by default)
/// must have closed all but at most 64 of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_from_one_source_is_capped_per_source() {
    let setup = setup().await;
    let tunnel = setup.tunnel;
    let tasks: Vec<_> = (0..200u8)
        .map(|index| {
            tokio::spawn(async move {
                let source = Ipv4Addr::new(127, 0, 0, 5);
                let Ok(mut socket) = connect_from(source, tunnel).await else {
                    return false;
                };
                for second in 0..6u8 {
                    if socket.write_all(&[index ^ second]).await.is_err() {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                // Still open if a read neither ends nor fails at once.
                let mut buf = [0u8; 16];
                tokio::time::timeout(Duration::from_millis(200), socket.read(&mut buf))
                    .await
                    .is_err()
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let check = checker(setup.public, stop.clone());
    let mut open = 0;
    for task in tasks {
        open += usize::from(task.await.unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    let (served, failures) = check.await.unwrap();
    eprintln!(
        "slowloris: {open}/200 still open after 6 s; {served} GETs served, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        open <= 64,
        "{open} slowloris connections from one source still open"
    );
}

/// An adopted raw peer: frames to write go through `tx`; a reader task
/// answers each public (TCP) New from the portal with End+error and
/// reports when the portal closes the connection.
struct AdoptedPeer {
    tx: mpsc::Sender<Vec<u8>>,
    closed: tokio::task::JoinHandle<usize>,
}

async fn adopted(peer: &RawVmessPeer) -> AdoptedPeer {
    let socket = peer.connect().await.unwrap();
    let (mut reader, mut writer) = socket.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let answers = tx.clone();
    let closed = tokio::spawn(async move {
        let mut frames = 0;
        while let Ok(Some(frame)) = read_mux_frame(&mut reader).await {
            frames += 1;
            if frame.status == 1 && frame.network == Some(1) {
                let _ = answers.send(mux_end(frame.session_id, true)).await;
            }
        }
        frames
    });
    // The first frame makes v2ray send the VMess header.
    tx.send(mux_keep_alive()).await.unwrap();
    AdoptedPeer { tx, closed }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_mux_abuse_leaves_the_bridge_serving() {
    const RSS_BOUND_KIB: u64 = 32 * 1024;
    let setup = setup().await;
    let sentinel = Sentinel::start().await.unwrap();
    let peer = RawVmessPeer::start(setup.tunnel, ID, "test.v2ray.com")
        .await
        .unwrap();
    let rss_before = rss_kb(setup.portal_pid).unwrap();
    let tunnels = portal_connections(setup.metrics).await;

    // Adopted as a bridge.
    let flood = adopted(&peer).await;
    let started = Instant::now();
    while portal_connections(setup.metrics).await <= tunnels {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the right id was not adopted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // KeepAlive flood: 200,000 frames (1.2 MB); 2,000,000 in the long tier.
    let batch: Vec<u8> = (0..1000).flat_map(|_| mux_keep_alive()).collect();
    for _ in 0..if common::soak() { 2000 } else { 200 } {
        flood.tx.send(batch.clone()).await.unwrap();
    }
    // Keep and End for ids the portal never opened.
    for id in 1000..11_000u16 {
        let mut frames = mux_keep(id, &[0x55; 100]);
        frames.extend(mux_end(id, id % 2 == 0));
        flood.tx.send(frames).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive(setup.portal_pid), "the portal died of the flood");
    let took = wait_serving(setup.public, Duration::from_secs(5))
        .await
        .unwrap();
    eprintln!("after the KeepAlive/unknown-id flood: serving in {took:?}");

    // A New frame (the portal is the mux client: it must refuse it).
    let target = match sentinel.addr() {
        SocketAddr::V4(addr) => addr,
        SocketAddr::V6(_) => unreachable!("the sentinel binds 127.0.0.1"),
    };
    let mut new = adopted(&peer).await;
    new.tx
        .send(mux_new_tcp(1, target, b"GET / HTTP/1.1\r\n\r\n"))
        .await
        .unwrap();
    let new_closed = tokio::time::timeout(Duration::from_secs(5), &mut new.closed).await;
    // An oversize frame (metadata 600 > 512): fatal for the connection.
    let oversize = adopted(&peer).await;
    oversize.tx.send(mux_oversize(600)).await.unwrap();
    let oversize_closed = tokio::time::timeout(Duration::from_secs(5), oversize.closed).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kb(setup.portal_pid).unwrap();
    eprintln!(
        "mux abuse: New frame -> closed {:?}; oversize -> closed {:?}; sentinel accepts {}; portal RSS {rss_before} -> {rss_after} KiB",
        new_closed.as_ref().map(|_| ()),
        oversize_closed.as_ref().map(|_| ()),
        sentinel.accepts()
    );
    assert!(alive(setup.portal_pid), "the portal died");
    assert_eq!(
        sentinel.accepts(),
        0,
        "a New frame from a bridge was dialled"
    );
    // V2Ray's mux client discards a New from its server; closing the
    // connection would be as good. Either way nothing is dialled.
    assert!(
        oversize_closed.is_ok(),
        "an oversize frame did not end the connection within 5 s"
    );
    assert!(
        rss_after <= rss_before + RSS_BOUND_KIB,
        "RSS {rss_before} -> {rss_after} KiB"
    );
    // An authenticated peer that holds a tunnel is a bridge as far as the
    // portal can tell: public connections may land on it and get nothing.
    // Once the abusers leave, the real bridge serves every request.
    drop(flood);
    new.closed.abort();
    drop(new);
    let started = Instant::now();
    while portal_connections(setup.metrics).await > tunnels {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the abusers' tunnels were not dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = wait_serving(setup.public, Duration::from_secs(5))
        .await
        .unwrap();
    for _ in 0..20 {
        let (code, body) = http_get(setup.public, Duration::from_secs(3))
            .await
            .unwrap();
        assert_eq!((code, body.as_slice()), (200, BACKEND_PAGE));
    }
    eprintln!("after the abuse: serving in {took:?}");
}
