//! V2Ray 4.34 ignores the Rayback source extension even when it is sent:
//! a Rayback mux client forced to name a visitor's source in every New
//! (`ClientSettings::send_source`, which a portal only turns on for a
//! bridge that asked) talks to the real v2ray's Mux.Cool server, and every
//! sub-stream still reaches its destination and carries its bytes exactly.
//!
//! ```text
//! test ─▶ Rayback MuxClient (send_source) ═ VMess (command 3) ═▶ v2ray VMess inbound ─▶ mux ─▶ freedom ─▶ echo
//! ```
//!
//! 40 concurrent sub-streams, IPv4, IPv6 and no sources mixed, 256 KiB of
//! seeded data each way, SHA-256 compared.
//!
//! The same client also offers per-stream flow control (a Hello, the
//! KeepAlive with trailing metadata that a portal sends only to a Rayback
//! bridge): v2ray takes it as a KeepAlive, never answers, and the client
//! keeps sending without windows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use rayback_core::{Address, Destination, Outbound, Session};
use rayback_mux::{mux_cool_destination, ClientSettings, MuxClient, MuxSettings};
use rayback_testkit::{echo_server, free_port, seeded_bytes, sha256_hex, V2Ray};
use rayback_vmess::{
    OutboundUser, Security, UserId, VmessMetrics, VmessOutbound, VmessOutboundSettings, VmessServer,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ID: &str = "27848739-7e62-4138-9fd3-098a63964b6b";
const STREAMS: usize = 40;
const SIZE: usize = 256 * 1024;
const LIMIT: Duration = Duration::from_secs(60);

fn vmess_client(server_port: u16) -> Result<VmessOutbound> {
    Ok(VmessOutbound::new(
        VmessOutboundSettings {
            servers: vec![VmessServer {
                address: Address::parse("127.0.0.1").context("address")?,
                port: server_port,
                users: vec![OutboundUser {
                    id: UserId::parse(ID)?,
                    alter_id: 0,
                    security: Security::Aes128Gcm,
                    level: 0,
                    email: String::new(),
                }],
            }],
            connect_timeout: Duration::from_secs(5),
            transport: Arc::new(rayback_transport::Transport::tcp()),
        },
        Arc::new(VmessMetrics::new()),
    )?)
}

/// The visitor named in sub-stream `i`'s New: IPv4, IPv6 or none.
fn visitor(i: usize) -> Option<SocketAddr> {
    match i % 3 {
        0 => Some(SocketAddr::from(([127, 0, 0, 5], 40_000 + i as u16))),
        1 => Some(
            format!("[2001:db8::{i:x}]:443")
                .parse()
                .expect("an address"),
        ),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_mux_server_ignores_the_source_after_the_address() -> Result<()> {
    let echo = echo_server().await?;
    let server_port = free_port();
    let server = json!({
        "log": {"loglevel": "warning"},
        "inbounds": [{
            "tag": "vmess-in", "listen": "127.0.0.1", "port": server_port, "protocol": "vmess",
            "settings": {"clients": [{"id": ID}]}
        }],
        "outbounds": [{"protocol": "freedom", "tag": "direct"}]
    });
    let _v2ray = V2Ray::start(&server, &[server_port]).await?;
    tokio::time::timeout(LIMIT, async {
        let carrier = vmess_client(server_port)?
            .connect(&Session::new(mux_cool_destination()))
            .await?;
        let client = MuxClient::new(
            carrier,
            ClientSettings {
                send_source: true,
                mux: MuxSettings {
                    offer_flow_control: true,
                    ..MuxSettings::default()
                },
                ..ClientSettings::outbound(STREAMS)
            },
        );
        let mut tasks = Vec::new();
        for i in 0..STREAMS {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = client
                    .open_from(Destination::from(echo), visitor(i))
                    .await?;
                let data = seeded_bytes(i as u64, SIZE);
                let (mut reader, mut writer) = tokio::io::split(&mut stream);
                // No half-close: to V2Ray an End closes both directions
                // (spec §6), so read all of the echo before ending.
                let (written, back) = tokio::join!(writer.write_all(&data), async {
                    let mut back = vec![0u8; SIZE];
                    reader.read_exact(&mut back).await.map(|_| back)
                });
                written.with_context(|| format!("stream {i}: write"))?;
                let back = back.with_context(|| format!("stream {i}: read"))?;
                ensure!(
                    sha256_hex(&back) == sha256_hex(&data),
                    "stream {i} ({:?}): {} bytes back, not the {} sent",
                    visitor(i),
                    back.len(),
                    data.len()
                );
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        // All of them rode one carrier: v2ray took every extended New.
        ensure!(
            client.total_opened() == STREAMS as u64,
            "opened {}",
            client.total_opened()
        );
        ensure!(!client.is_closed(), "v2ray closed the mux connection");
        ensure!(!client.flow_control(), "v2ray cannot have answered a Hello");
        anyhow::Ok(())
    })
    .await
    .context("timed out")?
}
