//! Rayback's VLESS client against Rayback's VLESS server in one process,
//! and the server against hand-made bytes:
//!
//! ```text
//! VlessOutbound ──TCP──▶ VlessInbound (handshake 2 s) ──RecordingDispatch──▶ echo
//! test client ──raw bytes──▶ VlessInbound
//! ```
//!
//! TCP bytes and UDP packets come back unchanged; a Mux request reaches
//! the dispatcher as `v1.mux.cool:0`; a stranger's ID, another version,
//! garbage or a bad command get nothing back and are counted by reason; a
//! client that leaves mid-header is let go; with a fallback to a Unix
//! socket, a plain HTTP request reaches it behind a PROXY v2 header while
//! VLESS still passes. Everything on 127.0.0.1, every wait bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use rayback_core::packet::{read_packet, write_packet};
use rayback_core::{Address, Destination, Inbound, InboundContext, Outbound, Policy, Session};
use rayback_testkit::doubles::{RecordingDispatch, Then};
use rayback_testkit::seeded_bytes;
use rayback_transport::Transport;
use rayback_vless::fallback::{Fallback, FallbackDest, Fallbacks};
use rayback_vless::{
    FailureReason, VlessClient, VlessInbound, VlessInboundSettings, VlessMetrics, VlessOutbound,
    VlessOutboundSettings, VlessServer, VlessUser,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const ID: [u8; 16] = [
    0x57, 0x83, 0xa3, 0xe7, 0xe3, 0x73, 0x51, 0xcd, 0x86, 0x42, 0xc8, 0x37, 0x82, 0xb8, 0x07, 0xc5,
];
const HANDSHAKE: Duration = Duration::from_secs(2);
const LIMIT: Duration = Duration::from_secs(20);

struct Server {
    addr: SocketAddr,
    dispatch: Arc<RecordingDispatch>,
    metrics: Arc<VlessMetrics>,
    _stop: tokio_util::sync::DropGuard,
}

async fn server() -> Result<Server> {
    server_with(Default::default()).await
}

async fn server_with(fallbacks: Fallbacks) -> Result<Server> {
    let metrics = Arc::new(VlessMetrics::new());
    let inbound = VlessInbound::bind(
        VlessInboundSettings {
            tag: None,
            listen: "127.0.0.1:0".parse()?,
            clients: vec![VlessClient {
                id: ID,
                level: 0,
                email: "user@example.com".into(),
            }],
            policy: Policy {
                handshake: HANDSHAKE,
                ..Policy::default()
            },
            transport: Arc::new(Transport::tcp()),
            fallbacks,
        },
        metrics.clone(),
    )
    .await?;
    let addr = inbound.local_addr();
    let dispatch = Arc::new(RecordingDispatch::new(Then::Echo));
    let shutdown = CancellationToken::new();
    let context = InboundContext {
        dispatch: dispatch.clone(),
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
    };
    tokio::spawn(Arc::new(inbound).run(context));
    Ok(Server {
        addr,
        dispatch,
        metrics,
        _stop: shutdown.drop_guard(),
    })
}

fn client(server: SocketAddr) -> VlessOutbound {
    VlessOutbound::new(
        VlessOutboundSettings {
            servers: vec![VlessServer {
                address: server.ip().into(),
                port: server.port(),
                users: vec![VlessUser {
                    id: ID,
                    level: 0,
                    email: String::new(),
                }],
            }],
            connect_timeout: Duration::from_secs(5),
            transport: Arc::new(Transport::tcp()),
        },
        Arc::new(VlessMetrics::new()),
    )
    .unwrap()
}

/// Runs `future` with a time bound; fails the test on an error.
async fn bounded<T>(future: impl std::future::Future<Output = Result<T>>) -> T {
    tokio::time::timeout(LIMIT, future)
        .await
        .expect("the test finished in time")
        .unwrap()
}

#[tokio::test]
async fn tcp_bytes_come_back() {
    bounded(async {
        let server = server().await?;
        let destination = Destination::tcp(Address::Domain("example.com".into()), 443);
        let stream = client(server.addr)
            .connect(&Session::new(destination.clone()))
            .await?;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let data = seeded_bytes(7, 1 << 20);
        let sent = data.clone();
        let writing = tokio::spawn(async move {
            writer.write_all(&sent).await?;
            writer.shutdown().await?;
            anyhow::Ok(())
        });
        let mut back = Vec::new();
        reader.read_to_end(&mut back).await?;
        writing.await??;
        ensure!(
            back == data,
            "{} bytes came back, not the {} sent",
            back.len(),
            data.len()
        );
        let sessions = server.dispatch.sessions();
        ensure!(sessions.len() == 1 && sessions[0].destination == destination);
        ensure!(
            sessions[0].user.as_ref().map(|user| user.email.as_str()) == Some("user@example.com")
        );
        ensure!(
            server
                .metrics
                .handshakes_accepted
                .load(std::sync::atomic::Ordering::Relaxed)
                == 1
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn udp_packets_come_back() {
    bounded(async {
        let server = server().await?;
        let destination = Destination::udp(Address::Ipv4([127, 0, 0, 1].into()), 53);
        let mut stream = client(server.addr)
            .connect(&Session::new(destination.clone()))
            .await?;
        let mut got = Vec::new();
        for len in [1usize, 100, 1400, 2000, 0] {
            let packet = seeded_bytes(len as u64, len);
            write_packet(&mut stream, &packet).await?;
            if len == 0 {
                continue;
            }
            ensure!(read_packet(&mut stream, &mut got).await?, "stream ended");
            ensure!(got == packet, "a {len}-byte packet came back changed");
        }
        ensure!(server.dispatch.sessions()[0].destination == destination);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn mux_requests_reach_the_dispatcher_as_mux_cool() {
    bounded(async {
        let server = server().await?;
        let destination = Destination::tcp(Address::Domain("v1.mux.cool".into()), 9527);
        let mut stream = client(server.addr)
            .connect(&Session::new(destination))
            .await?;
        stream.write_all(b"frames").await?;
        let mut back = [0u8; 6];
        stream.read_exact(&mut back).await?;
        ensure!(&back == b"frames");
        let sessions = server.dispatch.sessions();
        ensure!(
            sessions[0].destination == Destination::tcp(Address::Domain("v1.mux.cool".into()), 0),
            "{:?}",
            sessions[0].destination
        );
        Ok(())
    })
    .await;
}

/// Sends `bytes`, then waits for the server to close: nothing may come
/// back, and the close comes within [`LIMIT`].
async fn refused(server: SocketAddr, bytes: &[u8]) -> Result<()> {
    let mut socket = TcpStream::connect(server).await?;
    socket.write_all(bytes).await?;
    let mut back = Vec::new();
    let _ = tokio::time::timeout(LIMIT, socket.read_to_end(&mut back))
        .await
        .context("the server held the connection")?;
    ensure!(back.is_empty(), "{} bytes came back", back.len());
    Ok(())
}

fn request(version: u8, id: [u8; 16], tail: &[u8]) -> Vec<u8> {
    let mut bytes = vec![version];
    bytes.extend_from_slice(&id);
    bytes.extend_from_slice(tail);
    bytes
}

#[tokio::test]
async fn probes_get_nothing_and_are_counted() {
    bounded(async {
        let server = server().await?;
        let tcp_to_local = [0, 1, 0, 80, 1, 127, 0, 0, 1];
        refused(server.addr, &request(0, [9; 16], &tcp_to_local)).await?;
        refused(server.addr, &request(1, ID, &tcp_to_local)).await?;
        refused(server.addr, &seeded_bytes(3, 4096)).await?;
        refused(server.addr, &request(0, ID, &[0, 7])).await?;
        refused(server.addr, &request(0, ID, &[0, 1, 0, 80, 9])).await?;
        refused(server.addr, &request(0, ID, &[2, 0x0a, 5])).await?;
        let mut flow = vec![4, 0x0a, 2, b'x', b'y', 1];
        flow.extend_from_slice(&tcp_to_local[1..]);
        refused(server.addr, &request(0, ID, &flow)).await?;
        // A client that leaves mid-header is let go.
        let mut socket = TcpStream::connect(server.addr).await?;
        socket.write_all(&request(0, ID, &[0])).await?;
        drop(socket);
        let metrics = &server.metrics;
        // The last close is counted by its task; wait for it, bounded.
        for _ in 0..100 {
            if metrics.failures(FailureReason::ClientLeft) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ensure!(metrics.failures(FailureReason::UnknownUser) == 1);
        ensure!(
            metrics.failures(FailureReason::UnsupportedRequest) == 6,
            "{}",
            metrics.failures(FailureReason::UnsupportedRequest)
        );
        ensure!(metrics.failures(FailureReason::ClientLeft) == 1);
        ensure!(server.dispatch.sessions().is_empty());
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_unix_socket_fallback_gets_what_is_not_vless() {
    bounded(async {
        let dir = std::env::temp_dir().join(format!("rayback-vless-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("web.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)?;
        let server = server_with(Fallbacks::new(vec![Fallback {
            path: String::new(),
            dest: FallbackDest::Unix(path.clone()),
            xver: 2,
        }]))
        .await?;
        let request = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n";
        let mut socket = TcpStream::connect(server.addr).await?;
        let client_port = socket.local_addr()?.port();
        socket.write_all(request).await?;
        let (mut web, _) = listener.accept().await?;
        let mut expected =
            b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\x7f\x00\x00\x01\x7f\x00\x00\x01".to_vec();
        expected.extend_from_slice(&client_port.to_be_bytes());
        expected.extend_from_slice(&server.addr.port().to_be_bytes());
        expected.extend_from_slice(request);
        let mut got = vec![0u8; expected.len()];
        web.read_exact(&mut got).await?;
        ensure!(got == expected, "the fallback got {got:?}");
        web.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await?;
        drop(web);
        let mut reply = Vec::new();
        socket.read_to_end(&mut reply).await?;
        ensure!(reply == b"HTTP/1.1 204 No Content\r\n\r\n", "{reply:?}");
        // VLESS itself still passes.
        let destination = Destination::tcp(Address::Domain("example.com".into()), 80);
        let mut stream = client(server.addr)
            .connect(&Session::new(destination))
            .await?;
        stream.write_all(b"vless").await?;
        let mut back = [0u8; 5];
        stream.read_exact(&mut back).await?;
        ensure!(&back == b"vless");
        ensure!(
            server
                .metrics
                .fallbacks
                .load(std::sync::atomic::Ordering::Relaxed)
                == 1
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
    .await;
}
