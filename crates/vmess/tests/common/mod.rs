//! Shared pieces of the VMess integration tests: a test dispatcher that
//! connects sessions to their destination (TCP relay or UDP datagrams),
//! a running Rayback inbound, v2ray configs, and parallel SHA-256 pushes.
//!
//! Everything binds 127.0.0.1; every wait is bounded.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use rayback_core::{Inbound, InboundContext, Policy, Tag};
use rayback_testkit::doubles::{RecordingDispatch, Then};
use rayback_testkit::{exchange, seeded_bytes, sha256_hex};
use rayback_vmess::{
    OutboundUser, Security, ServerUser, UserId, VmessInbound, VmessInboundSettings, VmessMetrics,
    VmessOutbound, VmessOutboundSettings, VmessServer,
};
use serde_json::{json, Value};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const AEAD_UUID: &str = "27848739-7e62-4138-9fd3-098a63964b6b";
pub const LEGACY_UUID: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";
pub const LEGACY_ALTER_ID: u16 = 4;

/// Bytes each connection pushes each way in the matrix tests.
pub const PUSH_BYTES: usize = 8 * 1024 * 1024;
/// Concurrent connections per matrix test.
pub const CONNECTIONS: usize = 4;

/// A UDP echo server on 127.0.0.1.
pub async fn udp_echo_server() -> Result<SocketAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65536];
        while let Ok((len, peer)) = socket.recv_from(&mut buffer).await {
            let _ = socket.send_to(&buffer[..len], peer).await;
        }
    });
    Ok(addr)
}

/// A Rayback VMess client for `server`: the AEAD user, or the legacy one
/// (alterId > 0) when `legacy`.
pub fn rayback_outbound(security: Security, legacy: bool, server: SocketAddr) -> VmessOutbound {
    let (id, alter_id) = if legacy {
        (LEGACY_UUID, LEGACY_ALTER_ID)
    } else {
        (AEAD_UUID, 0)
    };
    VmessOutbound::new(
        VmessOutboundSettings {
            servers: vec![VmessServer {
                address: server.ip().into(),
                port: server.port(),
                users: vec![OutboundUser {
                    id: UserId::parse(id).unwrap(),
                    alter_id,
                    security,
                    level: 0,
                    email: String::new(),
                }],
            }],
            connect_timeout: Duration::from_secs(5),
            transport: std::sync::Arc::new(rayback_transport::Transport::tcp()),
        },
        Arc::new(VmessMetrics::new()),
    )
    .unwrap()
}

pub fn server_users() -> Vec<ServerUser> {
    vec![
        ServerUser {
            id: UserId::parse(AEAD_UUID).unwrap(),
            alter_id: 0,
            level: 0,
            email: "aead@rayback".into(),
        },
        ServerUser {
            id: UserId::parse(LEGACY_UUID).unwrap(),
            alter_id: LEGACY_ALTER_ID,
            level: 1,
            email: "legacy@rayback".into(),
        },
    ]
}

/// A running Rayback VMess inbound with a [`RecordingDispatch`] that
/// relays every session to its destination.
pub struct RunningInbound {
    pub addr: SocketAddr,
    pub dispatch: Arc<RecordingDispatch>,
    pub metrics: Arc<VmessMetrics>,
    shutdown: CancellationToken,
}

impl Drop for RunningInbound {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start_inbound(handshake: Duration) -> Result<RunningInbound> {
    let metrics = Arc::new(VmessMetrics::new());
    let inbound = VmessInbound::bind(
        VmessInboundSettings {
            tag: Some(Tag::new("vmess-in")),
            listen: "127.0.0.1:0".parse()?,
            users: server_users(),
            policy: Policy {
                handshake,
                ..Policy::default()
            },
            disable_insecure_encryption: false,
            transport: std::sync::Arc::new(rayback_transport::Transport::tcp()),
        },
        metrics.clone(),
    )
    .await?;
    let addr = inbound.local_addr();
    let dispatch = Arc::new(RecordingDispatch::new(Then::Relay));
    let shutdown = CancellationToken::new();
    let context = InboundContext {
        dispatch: dispatch.clone(),
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
    };
    tokio::spawn(Arc::new(inbound).run(context));
    Ok(RunningInbound {
        addr,
        dispatch,
        metrics,
        shutdown,
    })
}

/// v2ray: dokodemo-door on `listen_port` (to `target`, `network`) → VMess
/// outbound to `server` with one user.
pub fn v2ray_client_config(
    listen_port: u16,
    target: SocketAddr,
    network: &str,
    server: SocketAddr,
    security: &str,
    legacy: bool,
) -> Value {
    let (id, alter_id) = if legacy {
        (LEGACY_UUID, LEGACY_ALTER_ID)
    } else {
        (AEAD_UUID, 0)
    };
    json!({
        "log": {"loglevel": "warning"},
        "inbounds": [{
            "listen": "127.0.0.1",
            "port": listen_port,
            "protocol": "dokodemo-door",
            "settings": {"address": target.ip().to_string(), "port": target.port(), "network": network}
        }],
        "outbounds": [{
            "protocol": "vmess",
            "settings": {"vnext": [{
                "address": server.ip().to_string(),
                "port": server.port(),
                "users": [{"id": id, "alterId": alter_id, "security": security}]
            }]}
        }]
    })
}

/// v2ray: VMess inbound on `port` with both test users → freedom.
pub fn v2ray_server_config(port: u16) -> Value {
    json!({
        "log": {"loglevel": "warning"},
        "inbounds": [{
            "listen": "127.0.0.1",
            "port": port,
            "protocol": "vmess",
            "settings": {"clients": [
                {"id": AEAD_UUID, "alterId": 0},
                {"id": LEGACY_UUID, "alterId": LEGACY_ALTER_ID}
            ]}
        }],
        "outbounds": [{"protocol": "freedom"}]
    })
}

/// Pushes `PUSH_BYTES` of distinct data each way over `CONNECTIONS`
/// parallel connections to `addr` (which must echo) and checks every
/// byte came back, by SHA-256.
pub async fn push_in_parallel(addr: SocketAddr, bytes: usize, connections: usize) -> Result<()> {
    let mut tasks = Vec::new();
    for index in 0..connections {
        tasks.push(tokio::spawn(async move {
            let data = seeded_bytes(index as u64 + 1, bytes);
            let back = exchange(addr, &data, Duration::from_secs(60)).await?;
            ensure!(
                back.len() == data.len(),
                "connection {index}: {} of {} bytes came back",
                back.len(),
                data.len()
            );
            ensure!(
                sha256_hex(&back) == sha256_hex(&data),
                "connection {index}: bytes differ"
            );
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await.context("push task")??;
    }
    Ok(())
}
