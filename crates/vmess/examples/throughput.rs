//! One-connection upload throughput through VMess (aes-128-gcm, AEAD
//! header) for the four pairings of Rayback and the real v2ray:
//!
//! ```text
//! sender ──TCP──▶ client side ══VMess══▶ server side ──TCP──▶ sink
//!   client side: v2ray (dokodemo-door → vmess) or Rayback (listener → VmessOutbound::handle)
//!   server side: v2ray (vmess → freedom)       or Rayback (VmessInbound → relay)
//! ```
//!
//! `cargo run --release -p rayback-vmess --example throughput [MiB]`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use async_trait::async_trait;
use rayback_core::relay::relay;
use rayback_core::{
    Destination, Dispatch, Inbound, InboundContext, Outbound, Policy, Session, Stream,
};
use rayback_testkit::{free_port, V2Ray};
use rayback_vmess::{
    OutboundUser, Security, ServerUser, UserId, VmessInbound, VmessInboundSettings, VmessMetrics,
    VmessOutbound, VmessOutboundSettings, VmessServer,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const UUID: &str = "27848739-7e62-4138-9fd3-098a63964b6b";

struct Direct;

#[async_trait]
impl Dispatch for Direct {
    async fn dispatch(&self, session: Session, stream: Stream) -> std::io::Result<()> {
        let target = session.destination.socket_addr().expect("ip destination");
        let outbound = TcpStream::connect(target).await?;
        outbound.set_nodelay(true)?;
        relay(stream, outbound, &Policy::default()).await.map(drop)
    }

    async fn connect(&self, _session: &Session) -> std::io::Result<Stream> {
        unreachable!("not used")
    }
}

/// Reads `len` bytes per connection, then answers "ok".
async fn sink(len: usize) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 1 << 16];
                let mut got = 0;
                while got < len {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let _ = socket.write_all(b"ok").await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok(addr)
}

async fn rayback_server() -> Result<(SocketAddr, CancellationToken)> {
    let inbound = VmessInbound::bind(
        VmessInboundSettings {
            tag: None,
            listen: "127.0.0.1:0".parse()?,
            users: vec![ServerUser {
                id: UserId::parse(UUID)?,
                alter_id: 0,
                level: 0,
                email: String::new(),
            }],
            policy: Policy::default(),
            disable_insecure_encryption: false,
            transport: std::sync::Arc::new(rayback_transport::Transport::tcp()),
        },
        Arc::new(VmessMetrics::new()),
    )
    .await?;
    let addr = inbound.local_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(Arc::new(inbound).run(InboundContext {
        dispatch: Arc::new(Direct),
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
    }));
    Ok((addr, shutdown))
}

async fn rayback_client(server: SocketAddr, target: SocketAddr) -> Result<SocketAddr> {
    let outbound = Arc::new(VmessOutbound::new(
        VmessOutboundSettings {
            servers: vec![VmessServer {
                address: server.ip().into(),
                port: server.port(),
                users: vec![OutboundUser {
                    id: UserId::parse(UUID)?,
                    alter_id: 0,
                    security: Security::Aes128Gcm,
                    level: 0,
                    email: String::new(),
                }],
            }],
            connect_timeout: Duration::from_secs(5),
            transport: std::sync::Arc::new(rayback_transport::Transport::tcp()),
        },
        Arc::new(VmessMetrics::new()),
    )?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let outbound = outbound.clone();
            tokio::spawn(async move {
                let _ = socket.set_nodelay(true);
                let session = Session::new(Destination::from(target));
                let _ = outbound
                    .handle(session, Box::new(socket), &Policy::default())
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn v2ray_server() -> Result<(SocketAddr, V2Ray)> {
    let port = free_port();
    let config = json!({
        "log": {"loglevel": "none"},
        "inbounds": [{"listen": "127.0.0.1", "port": port, "protocol": "vmess",
            "settings": {"clients": [{"id": UUID, "alterId": 0}]}}],
        "outbounds": [{"protocol": "freedom"}]
    });
    let v2ray = V2Ray::start(&config, &[port]).await?;
    Ok((([127, 0, 0, 1], port).into(), v2ray))
}

async fn v2ray_client(server: SocketAddr, target: SocketAddr) -> Result<(SocketAddr, V2Ray)> {
    let port = free_port();
    let config = json!({
        "log": {"loglevel": "none"},
        "inbounds": [{"listen": "127.0.0.1", "port": port, "protocol": "dokodemo-door",
            "settings": {"address": target.ip().to_string(), "port": target.port(), "network": "tcp"}}],
        "outbounds": [{"protocol": "vmess", "settings": {"vnext": [{
            "address": server.ip().to_string(), "port": server.port(),
            "users": [{"id": UUID, "alterId": 0, "security": "aes-128-gcm"}]}]}}]
    });
    let v2ray = V2Ray::start(&config, &[port]).await?;
    Ok((([127, 0, 0, 1], port).into(), v2ray))
}

/// Sends `len` bytes through `entry` and waits for the sink's "ok".
async fn push(entry: SocketAddr, len: usize) -> Result<Duration> {
    let data = vec![0x5au8; 1 << 16];
    let started = Instant::now();
    let mut socket = TcpStream::connect(entry).await?;
    socket.set_nodelay(true)?;
    let mut sent = 0;
    while sent < len {
        let n = data.len().min(len - sent);
        socket.write_all(&data[..n]).await?;
        sent += n;
    }
    let mut ok = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(120), socket.read_exact(&mut ok)).await??;
    ensure!(&ok == b"ok");
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mib: usize = std::env::args().nth(1).map_or(Ok(512), |arg| arg.parse())?;
    let len = mib << 20;
    let target = sink(len).await?;
    let (rayback_in, _stop) = rayback_server().await?;
    let (v2ray_in, _v2ray_server) = v2ray_server().await?;
    let (v2ray_to_v2ray, _a) = v2ray_client(v2ray_in, target).await?;
    let (v2ray_to_rayback, _b) = v2ray_client(rayback_in, target).await?;
    let rayback_to_v2ray = rayback_client(v2ray_in, target).await?;
    let rayback_to_rayback = rayback_client(rayback_in, target).await?;
    println!("{mib} MiB upload, one connection, aes-128-gcm");
    for (name, entry) in [
        ("v2ray   -> v2ray  ", v2ray_to_v2ray),
        ("v2ray   -> rayback", v2ray_to_rayback),
        ("rayback -> v2ray  ", rayback_to_v2ray),
        ("rayback -> rayback", rayback_to_rayback),
    ] {
        let elapsed = push(entry, len).await?;
        println!(
            "{name}: {:>7.1} MiB/s ({elapsed:.2?})",
            mib as f64 / elapsed.as_secs_f64()
        );
    }
    Ok(())
}
