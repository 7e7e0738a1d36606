//! dokodemo-door, freedom and blackhole over real loopback sockets.
//!
//! ```text
//!  test client ──▶ DokodemoDoor (port 0) ──▶ RecordingDispatch ──▶ outbound.handle
//!                                              (records sessions)   │
//!                         echo / tag servers on 127.0.0.1 ◀─────────┘
//! ```
//!
//! The dispatch stands in for the app's router: it hands every session to
//! one outbound with a short-idle policy and remembers what it saw.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rayback_core::{
    Address, BlackholeResponse, Destination, Dispatch, Inbound, InboundContext, Network, Outbound,
    Policy, Redirect, ResolveStrategy, Session, Tag,
};
use rayback_handlers::{
    Blackhole, DokodemoDoor, DokodemoSettings, Freedom, FreedomSettings, HTTP_403,
};
use rayback_testkit::doubles::{RecordingDispatch, Then};
use rayback_testkit::{echo_server, exchange, free_port, seeded_bytes, sha256_hex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A running dokodemo-door that stops when dropped.
struct Door {
    addr: SocketAddr,
    dispatch: Arc<RecordingDispatch>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Door {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_door(settings: DokodemoSettings, outbound: Arc<dyn Outbound>) -> Result<Door> {
    let door = Arc::new(DokodemoDoor::bind(settings).await?);
    let addr = door.local_addr();
    let dispatch = Arc::new(RecordingDispatch::new(Then::Outbound {
        outbound,
        policy: Policy {
            conn_idle: Duration::from_secs(5),
            ..Policy::default()
        },
    }));
    let shutdown = CancellationToken::new();
    let context = InboundContext {
        dispatch: Arc::clone(&dispatch) as Arc<dyn Dispatch>,
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
    };
    let task = tokio::spawn(door.run(context));
    Ok(Door {
        addr,
        dispatch,
        shutdown,
        task: Some(task),
    })
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn settings(address: Option<&str>, port: u16) -> DokodemoSettings {
    let address = address.map(|a| Address::parse(a).expect("address"));
    let mut settings = DokodemoSettings::new(local(0), address, port);
    settings.tag = Some(Tag::new("door"));
    settings.user_level = 3;
    settings
}

fn freedom(redirect: Option<&str>) -> Arc<dyn Outbound> {
    Arc::new(Freedom::new(FreedomSettings {
        redirect: redirect.map(|text| Redirect::parse(text).expect("redirect")),
        ..FreedomSettings::default()
    }))
}

#[tokio::test]
async fn tcp_through_dokodemo_and_freedom_arrives_intact() -> Result<()> {
    let echo = echo_server().await?;
    let door = start_door(settings(Some("127.0.0.1"), echo.port()), freedom(None)).await?;
    let mut clients = Vec::new();
    for seed in 0..4u64 {
        let addr = door.addr;
        clients.push(tokio::spawn(async move {
            let data = seeded_bytes(seed, 1 << 20);
            let back = exchange(addr, &data, TIMEOUT).await?;
            anyhow::ensure!(
                sha256_hex(&back) == sha256_hex(&data),
                "seed {seed} came back different"
            );
            anyhow::Ok(())
        }));
    }
    for client in clients {
        client.await??;
    }
    let sessions = door.dispatch.sessions();
    assert_eq!(sessions.len(), 4);
    for session in sessions {
        assert_eq!(session.inbound_tag, Some(Tag::new("door")));
        assert_eq!(
            session.destination,
            Destination::tcp(Address::parse("127.0.0.1")?, echo.port())
        );
        assert_eq!(session.source.map(|s| s.ip()), Some("127.0.0.1".parse()?));
        assert_eq!(session.level(), 3);
        assert_eq!(session.user.clone().map(|u| u.email), Some(String::new()));
    }
    Ok(())
}

#[tokio::test]
async fn redirect_replaces_what_it_names() -> Result<()> {
    let echo = echo_server().await?;
    // A destination that cannot be dialed: only the redirect makes it work.
    let full = start_door(
        settings(Some("unreachable.invalid"), 1),
        freedom(Some(&echo.to_string())),
    )
    .await?;
    assert_eq!(exchange(full.addr, b"full", TIMEOUT).await?, b"full");
    // ":port" keeps the session's address and replaces only the port.
    let port_only = format!(":{}", echo.port());
    let door = start_door(settings(Some("127.0.0.1"), 1), freedom(Some(&port_only))).await?;
    assert_eq!(exchange(door.addr, b"port", TIMEOUT).await?, b"port");
    // "0.0.0.0:0" keeps both.
    let door = start_door(
        settings(Some("127.0.0.1"), echo.port()),
        freedom(Some("0.0.0.0:0")),
    )
    .await?;
    assert_eq!(exchange(door.addr, b"both", TIMEOUT).await?, b"both");
    Ok(())
}

#[tokio::test]
async fn freedom_use_ip_resolves_names() -> Result<()> {
    let echo = echo_server().await?;
    let outbound = Arc::new(Freedom::new(FreedomSettings {
        domain_strategy: ResolveStrategy::UseIpv4,
        ..FreedomSettings::default()
    }));
    let door = start_door(settings(Some("localhost"), echo.port()), outbound).await?;
    assert_eq!(exchange(door.addr, b"named", TIMEOUT).await?, b"named");
    Ok(())
}

#[tokio::test]
async fn freedom_retries_like_v2ray_then_names_the_destination() -> Result<()> {
    let closed = free_port();
    let session = Session::new(Destination::tcp(Address::parse("127.0.0.1")?, closed));
    let started = Instant::now();
    let error = match Freedom::default().connect(&session).await {
        Ok(_) => anyhow::bail!("connected to a closed port"),
        Err(error) => error,
    };
    let elapsed = started.elapsed();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        error.to_string().starts_with(&format!(
            "failed to open connection to tcp:127.0.0.1:{closed}"
        )),
        "{error}"
    );
    // Sleeps of 0 + 100 + 200 + 300 ms between five attempts.
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    Ok(())
}

/// Sends `data` and expects the connection to end with nothing read back:
/// a clean end or a reset (closing a socket with unread bytes resets it,
/// in V2Ray too).
async fn closed_without_answer(addr: SocketAddr, data: &[u8]) -> Result<()> {
    let mut socket = TcpStream::connect(addr).await?;
    let _ = socket.write_all(data).await;
    let mut back = Vec::new();
    match tokio::time::timeout(TIMEOUT, socket.read_to_end(&mut back)).await? {
        Ok(_) => anyhow::ensure!(back.is_empty(), "got {back:?}"),
        Err(error) => anyhow::ensure!(
            error.kind() == std::io::ErrorKind::ConnectionReset && back.is_empty(),
            "{error}, got {back:?}"
        ),
    }
    Ok(())
}

#[tokio::test]
async fn a_door_without_address_closes_each_connection_and_keeps_listening() -> Result<()> {
    let echo = echo_server().await?;
    let door = start_door(settings(None, echo.port()), freedom(None)).await?;
    for _ in 0..3 {
        closed_without_answer(door.addr, b"lost").await?;
    }
    assert!(door.dispatch.sessions().is_empty());
    Ok(())
}

#[tokio::test]
async fn shutdown_stops_accepting() -> Result<()> {
    let echo = echo_server().await?;
    let door = start_door(settings(Some("127.0.0.1"), echo.port()), freedom(None)).await?;
    assert_eq!(exchange(door.addr, b"before", TIMEOUT).await?, b"before");
    let mut door = door;
    door.shutdown.cancel();
    let task = door.task.take().context("task")?;
    tokio::time::timeout(TIMEOUT, task)
        .await
        .context("run did not return")???;
    assert!(TcpStream::connect(door.addr).await.is_err());
    Ok(())
}

#[tokio::test]
async fn blackhole_none_closes_at_once() -> Result<()> {
    let door = start_door(
        settings(Some("127.0.0.1"), 80),
        Arc::new(Blackhole::default()),
    )
    .await?;
    let started = Instant::now();
    closed_without_answer(door.addr, b"GET / HTTP/1.1\r\n\r\n").await?;
    assert!(started.elapsed() < Duration::from_millis(900));
    Ok(())
}

#[tokio::test]
async fn blackhole_http_answers_403_then_closes() -> Result<()> {
    let blackhole = Arc::new(Blackhole::new(BlackholeResponse::Http));
    let door = start_door(settings(Some("127.0.0.1"), 80), blackhole).await?;
    // The client keeps its side open: the close must come from us.
    let mut socket = TcpStream::connect(door.addr).await?;
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut back = Vec::new();
    tokio::time::timeout(TIMEOUT, socket.read_to_end(&mut back)).await??;
    assert_eq!(back, HTTP_403);
    Ok(())
}

async fn udp_echo_server() -> Result<SocketAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65536];
        while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
            let _ = socket.send_to(&buffer[..len], from).await;
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn udp_clients_get_their_own_sessions_and_replies() -> Result<()> {
    let echo = udp_echo_server().await?;
    let mut settings = settings(Some("127.0.0.1"), echo.port());
    settings.networks = vec![Network::Tcp, Network::Udp];
    let door = start_door(settings, freedom(None)).await?;
    let mut clients = Vec::new();
    for client in 0..3u64 {
        let addr = door.addr;
        clients.push(tokio::spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await?;
            socket.connect(addr).await?;
            let mut buffer = vec![0u8; 65536];
            for (index, len) in [1usize, 1400, 9000, 0, 60_000].into_iter().enumerate() {
                let data = seeded_bytes(client * 100 + index as u64, len);
                // UDP may drop: retry a few times.
                let mut answered = false;
                for _ in 0..5 {
                    socket.send(&data).await?;
                    if let Ok(read) =
                        tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buffer))
                            .await
                    {
                        let read = read?;
                        anyhow::ensure!(
                            buffer[..read] == data[..],
                            "client {client} got another datagram"
                        );
                        answered = true;
                        break;
                    }
                }
                anyhow::ensure!(answered, "client {client} datagram {len} got no answer");
            }
            anyhow::Ok(socket.local_addr()?)
        }));
    }
    let mut sources = Vec::new();
    for client in clients {
        sources.push(client.await??);
    }
    let sessions = door.dispatch.sessions();
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    for session in &sessions {
        assert_eq!(session.destination.network, Network::Udp);
        assert!(sources.contains(&session.source.context("source")?));
    }
    Ok(())
}

/// A stop frees the UDP port at once, even while a session waits for a
/// reply that never comes (it used to hold the socket until the policy's
/// idle limit).
#[tokio::test]
async fn shutdown_frees_the_udp_port_at_once() -> Result<()> {
    // A destination that reads and never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await?;
    let mut settings = settings(Some("127.0.0.1"), silent.local_addr()?.port());
    settings.networks = vec![Network::Udp];
    let mut door = start_door(settings, freedom(None)).await?;
    let client = UdpSocket::bind("127.0.0.1:0").await?;
    client.send_to(b"anyone?", door.addr).await?;
    let mut buffer = [0u8; 16];
    let (read, _) = tokio::time::timeout(TIMEOUT, silent.recv_from(&mut buffer)).await??;
    assert_eq!(&buffer[..read], b"anyone?");
    door.shutdown.cancel();
    let task = door.task.take().context("task")?;
    tokio::time::timeout(TIMEOUT, task)
        .await
        .context("run did not return")???;
    // The session's task ends at the stop; the port is free right after.
    let started = std::time::Instant::now();
    loop {
        match UdpSocket::bind(door.addr).await {
            Ok(_) => break,
            Err(error) if started.elapsed() > Duration::from_millis(500) => {
                anyhow::bail!(
                    "port still taken {:?} after the stop: {error}",
                    started.elapsed()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    Ok(())
}

#[tokio::test]
async fn quiet_udp_clients_lose_their_session() -> Result<()> {
    let echo = udp_echo_server().await?;
    let mut settings = settings(Some("127.0.0.1"), echo.port());
    settings.networks = vec![Network::Udp];
    settings.udp_idle = Duration::from_millis(300);
    let door = start_door(settings, freedom(None)).await?;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(door.addr).await?;
    let mut buffer = [0u8; 16];
    for round in 0..2 {
        socket.send(b"ping").await?;
        let read = tokio::time::timeout(TIMEOUT, socket.recv(&mut buffer)).await??;
        assert_eq!(&buffer[..read], b"ping", "round {round}");
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    // Each round came after the previous session expired.
    assert_eq!(door.dispatch.sessions().len(), 2);
    Ok(())
}
