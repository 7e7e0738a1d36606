//! Battery, faults: Rayback bridge and portal with a fault relay on the
//! tunnel (or a misbehaving backend, or a signal), each fault with its
//! bound.
//!
//! ```text
//! client ─▶ portal :public ◀═ FaultRelay ═ VMess + Mux.Cool (dialled by the bridge) ═ bridge ─▶ backend
//! ```
//!
//! | fault | bound asserted |
//! |---|---|
//! | relay resets the tunnel (RST both ways) | serving again within 5 s |
//! | backend accepts and never answers | that client closed by `connIdle` 3 s (within 2..8 s); others served meanwhile |
//! | SIGTERM to the portal mid-transfer | transfer intact; new connections refused within 1 s; exit within the 10 s grace |
//! | relay blackholes the tunnel (no bytes, no close) | serving again within 30 s |
//! | relay flips one bit (bridge → portal) | the client's connection closed within 10 s with a prefix of what it sent; serving again within 5 s |

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{configs, public, relayed_configs, start_serving, wait_serving, with_members, Kind};
use rayback_testkit::fault::Direction;
use rayback_testkit::gauge::{alive, wait_until};
use rayback_testkit::traffic::duplex_echo;
use rayback_testkit::{backend, http_get, seeded_bytes, BACKEND_PAGE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RECOVERY: Duration = Duration::from_secs(5);
const IDLE_POLICY: &str = r#""policy": {"levels": {"0": {"connIdle": 3}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_reset_serving_again_within_5s() {
    let backend = backend().await.unwrap();
    let (ports, relay, bridge_config, portal_config) = relayed_configs(backend).await.unwrap();
    let (_portal, _bridge) = start_serving(
        Kind::Rayback,
        &portal_config,
        Kind::Rayback,
        &bridge_config,
        ports,
    )
    .await;
    for round in 0..if common::soak() { 20 } else { 3 } {
        let accepted = relay.accepted();
        relay.reset_all();
        let took = wait_serving(public(ports), RECOVERY).await.unwrap();
        eprintln!("round {round}: serving again {took:?} after the tunnel reset");
        assert!(relay.accepted() > accepted, "the bridge dialled again");
    }
}

/// A backend that holds connections starting with `HANG` forever without
/// answering, and serves the usual backend otherwise.
async fn hanging_backend() -> SocketAddr {
    let normal = backend().await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut first = [0u8; 4];
                if socket.read_exact(&mut first).await.is_err() {
                    return;
                }
                if &first == b"HANG" {
                    // Accepted, never answered, never closed by us.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                let Ok(mut upstream) = TcpStream::connect(normal).await else {
                    return;
                };
                if upstream.write_all(&first).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut socket, &mut upstream).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_backend_client_closed_by_idle_policy_others_unaffected() {
    let backend = hanging_backend().await;
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let bridge_config = with_members(&bridge_config, IDLE_POLICY);
    let portal_config = with_members(&portal_config, IDLE_POLICY);
    let (_portal, _bridge) = start_serving(
        Kind::Rayback,
        &portal_config,
        Kind::Rayback,
        &bridge_config,
        ports,
    )
    .await;

    let hung: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn(async move {
                let started = Instant::now();
                let mut socket = TcpStream::connect(public(ports)).await?;
                socket.write_all(b"HANG please").await?;
                let mut buf = [0u8; 64];
                let read =
                    tokio::time::timeout(Duration::from_secs(15), socket.read(&mut buf)).await;
                anyhow::Ok((
                    started.elapsed(),
                    read.map(|read| read.map_err(|e| e.kind())),
                ))
            })
        })
        .collect();
    // Meanwhile, other clients are served as usual.
    let mut served = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        let (code, body) = http_get(public(ports), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!((code, body.as_slice()), (200, BACKEND_PAGE));
        served += 1;
    }
    for task in hung {
        let (took, read) = task.await.unwrap().unwrap();
        eprintln!("silent backend: the client saw {read:?} after {took:?}");
        let read = read.expect("closed within 15 s");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "no byte came back: {read:?}"
        );
        assert!(
            took >= Duration::from_secs(2) && took <= Duration::from_secs(8),
            "closed by the 3 s idle policy, not at {took:?}"
        );
    }
    eprintln!("{served} other requests served while 5 clients hung");
    assert!(served >= 5);
    wait_serving(public(ports), Duration::from_secs(2))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_portal_finishes_the_transfer_refuses_new_and_exits_within_grace() {
    let backend = backend().await.unwrap();
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let (portal, _bridge) = start_serving(
        Kind::Rayback,
        &portal_config,
        Kind::Rayback,
        &bridge_config,
        ports,
    )
    .await;

    // A paced transfer: 4 MiB in 64 KiB pieces every 50 ms (about 3.2 s),
    // full duplex, checked by SHA-256 at the end.
    let data = Arc::new(seeded_bytes(42, 4 << 20));
    let transfer = {
        let data = data.clone();
        tokio::spawn(async move {
            let socket = TcpStream::connect(public(ports)).await?;
            let (mut reader, mut writer) = socket.into_split();
            let sent = data.clone();
            let sender = tokio::spawn(async move {
                for piece in sent.chunks(64 << 10) {
                    writer.write_all(piece).await?;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                anyhow::Ok(writer)
            });
            let mut got = vec![0u8; data.len()];
            tokio::time::timeout(Duration::from_secs(15), reader.read_exact(&mut got)).await??;
            let _writer = sender.await??;
            anyhow::Ok(got == *data)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signalled = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &portal.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // New connections are refused (the listener is closed).
    let refused = wait_until(Duration::from_secs(1), || {
        std::net::TcpStream::connect(public(ports))
            .is_err_and(|error| error.kind() == std::io::ErrorKind::ConnectionRefused)
    })
    .await;
    assert!(
        refused.is_ok(),
        "new connections still accepted 1 s after SIGTERM"
    );
    let intact = transfer.await.unwrap().unwrap();
    assert!(intact, "the in-flight transfer arrived altered");
    eprintln!("transfer completed {:?} after SIGTERM", signalled.elapsed());
    let pid = portal.pid();
    let exited = wait_until(Duration::from_secs(11), || !alive(pid)).await;
    eprintln!(
        "portal exited: {exited:?} ({:?} after SIGTERM)",
        signalled.elapsed()
    );
    assert!(exited.is_ok(), "the portal still ran 11 s after SIGTERM");
    assert!(signalled.elapsed() <= Duration::from_secs(11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_blackholed_bridge_redials_within_30s() {
    let backend = backend().await.unwrap();
    let (ports, relay, bridge_config, portal_config) = relayed_configs(backend).await.unwrap();
    let (_portal, _bridge) = start_serving(
        Kind::Rayback,
        &portal_config,
        Kind::Rayback,
        &bridge_config,
        ports,
    )
    .await;
    let accepted = relay.accepted();
    let started = Instant::now();
    relay.blackhole();
    let took = wait_serving(public(ports), Duration::from_secs(30)).await;
    eprintln!(
        "blackhole: serving again: {took:?}; relay accepted {} new connections in {:?}",
        relay.accepted() - accepted,
        started.elapsed()
    );
    took.unwrap();
    assert!(
        relay.accepted() > accepted,
        "served over a redialled tunnel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_flip_on_the_tunnel_closes_the_connection_without_altered_bytes() {
    let backend = backend().await.unwrap();
    let (ports, relay, bridge_config, portal_config) = relayed_configs(backend).await.unwrap();
    let (_portal, _bridge) = start_serving(
        Kind::Rayback,
        &portal_config,
        Kind::Rayback,
        &bridge_config,
        ports,
    )
    .await;

    for (round, direction) in [Direction::Up, Direction::Down, Direction::Up]
        .into_iter()
        .enumerate()
    {
        let data = seeded_bytes(900 + round as u64, 2 << 20);
        let socket = TcpStream::connect(public(ports)).await.unwrap();
        let (mut reader, mut writer) = socket.into_split();
        // Flip inside the next 512 KiB of this direction: the echo itself.
        relay.flip_bit(direction, 512 << 10);
        let sent = data.clone();
        let sender = tokio::spawn(async move {
            for piece in sent.chunks(64 << 10) {
                if writer.write_all(piece).await.is_err() {
                    break;
                }
            }
            writer
        });
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => got.extend_from_slice(&buf[..read]),
                }
                if got.len() >= data.len() {
                    return;
                }
            }
        })
        .await;
        drop(sender.await.unwrap());
        eprintln!(
            "flip {direction:?}: {} of {} bytes arrived, flips done {}",
            got.len(),
            data.len(),
            relay.flips_done()
        );
        assert_eq!(relay.flips_done(), round + 1, "the relay flipped a bit");
        assert!(ended.is_ok(), "the connection was not closed within 10 s");
        assert!(
            got.len() < data.len(),
            "the whole echo arrived despite the flip"
        );
        assert!(data.starts_with(&got), "an altered byte reached the client");
        let took = wait_serving(public(ports), RECOVERY).await.unwrap();
        eprintln!("flip {direction:?}: serving again after {took:?}");
        duplex_echo(public(ports), Arc::new(seeded_bytes(1, 64 << 10)), RECOVERY)
            .await
            .unwrap();
    }
}
