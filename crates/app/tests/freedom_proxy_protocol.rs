//! freedom's `proxyProtocol` end to end: a configuration started in-process
//! with `rayback_app::start`, driven over real loopback sockets.
//!
//! ```text
//!  client on 127.0.0.5 ──▶ dokodemo-door "door-v1" ──▶ freedom proxyProtocol 1 ──▶ backend
//!                     ──▶ dokodemo-door "door-v2" ──▶ freedom proxyProtocol 2 ──▶ backend
//!                     ──▶ dokodemo-door "door-off" ─▶ freedom (no key)        ──▶ backend
//!                     ──▶ dokodemo-door "door-v6" ──▶ freedom proxyProtocol 1 ──▶ backend on [::1]
//! ```
//!
//! The backend parses a PROXY header with `ppp` (what nginx or HAProxy
//! would do), answers one line naming the source and destination it read
//! (`NONE` when the connection does not start with a header), then echoes
//! every byte after the header. The client sends 1 MiB and compares the
//! echo by SHA-256, so the header must come before the payload and leave
//! it unchanged.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use ppp::{v1, v2, HeaderResult, PartialResult};
use rayback_app::Running;
use rayback_testkit::{free_port, peer, seeded_bytes, sha256_hex};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The bound of one whole exchange.
const TIMEOUT: Duration = Duration::from_secs(20);
/// Where the client connects from: not 127.0.0.1, so the header's source
/// is the visitor's and not the proxy's own.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
/// The payload sent through each door.
const PAYLOAD_LEN: usize = 1 << 20;

/// What the backend read in front of the payload.
fn describe(bytes: &[u8]) -> Option<(String, usize)> {
    let pair = |source: SocketAddr, destination: SocketAddr| format!("{source} {destination}");
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(header)) => {
            let text = match header.addresses {
                v1::Addresses::Tcp4(a) => pair(
                    (a.source_address, a.source_port).into(),
                    (a.destination_address, a.destination_port).into(),
                ),
                v1::Addresses::Tcp6(a) => pair(
                    (a.source_address, a.source_port).into(),
                    (a.destination_address, a.destination_port).into(),
                ),
                v1::Addresses::Unknown => "UNKNOWN".to_owned(),
            };
            Some((format!("v1 {text}"), header.header.len()))
        }
        HeaderResult::V2(Ok(header)) => {
            let text = match (header.command, header.addresses) {
                (v2::Command::Local, _) => "LOCAL".to_owned(),
                (_, v2::Addresses::IPv4(a)) => pair(
                    (a.source_address, a.source_port).into(),
                    (a.destination_address, a.destination_port).into(),
                ),
                (_, v2::Addresses::IPv6(a)) => pair(
                    (a.source_address, a.source_port).into(),
                    (a.destination_address, a.destination_port).into(),
                ),
                (_, other) => format!("addresses {other:?}"),
            };
            Some((format!("v2 {text}"), header.len()))
        }
        _ => None,
    }
}

/// The backend: per connection, reads a PROXY header if there is one,
/// writes `"v1 <source> <destination>\n"` (or `v2 …`, or `NONE`), then
/// echoes everything after the header until the client half-closes.
async fn backend(listen: SocketAddr) -> Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket));
        }
    });
    Ok(addr)
}

async fn serve(mut socket: TcpStream) -> std::io::Result<()> {
    let mut first = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let (report, header_len) = loop {
        let n = socket.read(&mut chunk).await?;
        first.extend_from_slice(&chunk[..n]);
        let incomplete = HeaderResult::parse(&first).is_incomplete();
        if n > 0 && incomplete && first.len() < 1024 {
            continue;
        }
        match describe(&first) {
            Some(found) => break found,
            None => break ("NONE".to_owned(), 0),
        }
    };
    socket.write_all(format!("{report}\n").as_bytes()).await?;
    socket.write_all(&first[header_len..]).await?;
    let (mut reader, mut writer) = socket.split();
    tokio::io::copy(&mut reader, &mut writer).await?;
    writer.shutdown().await
}

/// Sends `payload` from [`CLIENT_IP`] to `door` and returns the client's
/// own address, the backend's report line and the echoed bytes.
async fn exchange(door: SocketAddr, payload: &[u8]) -> Result<(SocketAddr, String, Vec<u8>)> {
    let run = async {
        let socket = peer::connect_from(CLIENT_IP, door)
            .await
            .context("connecting from 127.0.0.5")?;
        let client = socket.local_addr()?;
        let (mut reader, mut writer) = socket.into_split();
        let payload = payload.to_vec();
        let writing = tokio::spawn(async move {
            writer.write_all(&payload).await?;
            writer.shutdown().await
        });
        let mut received = Vec::new();
        reader.read_to_end(&mut received).await?;
        writing.await??;
        let Some(end) = received.iter().position(|&byte| byte == b'\n') else {
            bail!("no report line in {} bytes", received.len());
        };
        let report = String::from_utf8_lossy(&received[..end]).into_owned();
        Ok((client, report, received[end + 1..].to_vec()))
    };
    tokio::time::timeout(TIMEOUT, run)
        .await
        .context("the exchange took too long")?
}

fn door(tag: &str, backend: SocketAddr) -> Value {
    json!({
        "tag": tag, "listen": "127.0.0.1", "port": free_port(), "protocol": "dokodemo-door",
        "settings": {"address": backend.ip().to_string(), "port": backend.port(), "network": "tcp"},
    })
}

fn freedom(tag: &str, proxy_protocol: Option<u8>) -> Value {
    match proxy_protocol {
        Some(version) => {
            json!({"tag": tag, "protocol": "freedom", "settings": {"proxyProtocol": version}})
        }
        None => json!({"tag": tag, "protocol": "freedom"}),
    }
}

fn rule(inbound: &str, outbound: &str) -> Value {
    json!({"type": "field", "inboundTag": [inbound], "outboundTag": outbound})
}

async fn start(config: &Value) -> Result<Running> {
    let text = serde_json::to_string_pretty(config)?;
    let loaded = rayback_config::parse_str("freedom_proxy_protocol.json", &text)
        .with_context(|| format!("parsing {text}"))?;
    rayback_app::start(&loaded.config).await
}

/// Where the inbound tagged `tag` listens.
fn listener(running: &Running, tag: &str) -> Result<SocketAddr> {
    let suffix = format!("({tag})");
    running
        .listeners()
        .iter()
        .find(|(place, _)| place.ends_with(&suffix))
        .map(|(_, addr)| *addr)
        .with_context(|| format!("no listener tagged {tag}: {:?}", running.listeners()))
}

/// Sends 1 MiB through `door`; checks the report is `want(client)` and
/// the echo is the payload, byte for byte.
async fn check(
    running: &Running,
    tag: &str,
    seed: u64,
    want: impl Fn(SocketAddr) -> String,
) -> Result<()> {
    let door = listener(running, tag)?;
    let payload = seeded_bytes(seed, PAYLOAD_LEN);
    let (client, report, echoed) = exchange(door, &payload)
        .await
        .with_context(|| format!("through {tag}"))?;
    ensure!(client.ip() == CLIENT_IP, "{tag}: client bound to {client}");
    ensure!(
        report == want(client),
        "{tag}: the backend read {report:?}, expected {:?}",
        want(client)
    );
    ensure!(
        echoed.len() == payload.len() && sha256_hex(&echoed) == sha256_hex(&payload),
        "{tag}: {} bytes came back, not the {} sent",
        echoed.len(),
        payload.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freedom_sends_the_visitor_in_a_proxy_header() -> Result<()> {
    let backend = backend(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let config = json!({
        "inbounds": [door("door-v1", backend), door("door-v2", backend), door("door-off", backend)],
        "outbounds": [freedom("pp1", Some(1)), freedom("pp2", Some(2)), freedom("plain", None)],
        "routing": {"rules": [
            rule("door-v1", "pp1"), rule("door-v2", "pp2"), rule("door-off", "plain"),
        ]},
    });
    let running = start(&config).await?;

    check(&running, "door-v1", 1, |client| {
        format!("v1 {client} {backend}")
    })
    .await?;
    check(&running, "door-v2", 2, |client| {
        format!("v2 {client} {backend}")
    })
    .await?;
    // Without the key the backend's first bytes are the payload.
    check(&running, "door-off", 3, |_| "NONE".to_owned()).await?;

    running.stop(Duration::from_secs(5)).await;
    Ok(())
}

/// An IPv4 visitor and an IPv6 backend: the header is TCP6, the visitor
/// written as IPv4-mapped IPv6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv4_visitor_to_an_ipv6_backend_is_mapped() -> Result<()> {
    let Ok(backend) = backend("[::1]:0".parse()?).await else {
        eprintln!("skipped: no IPv6 loopback");
        return Ok(());
    };
    let config = json!({
        "inbounds": [door("door-v1", backend), door("door-v2", backend)],
        "outbounds": [freedom("pp1", Some(1)), freedom("pp2", Some(2))],
        "routing": {"rules": [rule("door-v1", "pp1"), rule("door-v2", "pp2")]},
    });
    let running = start(&config).await?;
    let mapped = |client: SocketAddr| {
        let SocketAddr::V4(v4) = client else {
            return client;
        };
        SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port()))
    };
    check(&running, "door-v1", 4, |client| {
        format!("v1 {} {backend}", mapped(client))
    })
    .await?;
    check(&running, "door-v2", 5, |client| {
        format!("v2 {} {backend}", mapped(client))
    })
    .await?;
    running.stop(Duration::from_secs(5)).await;
    Ok(())
}
