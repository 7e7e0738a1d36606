//! Mux.Cool against the real v2ray 4.34, without VMess.
//!
//! V2Ray runs a mux server behind *any* inbound whose session is addressed
//! to `v1.mux.cool` (its inbound handlers wrap the dispatcher in a mux
//! server), and a mux client in front of *any* outbound with `mux.enabled`.
//! So plain TCP carries Mux.Cool both ways:
//!
//! ```text
//! Rayback client side:
//!   test ─▶ MuxClient ══TCP══▶ v2ray dokodemo-door(v1.mux.cool) ─▶ mux server ─▶ freedom ─▶ echo (TCP/UDP)
//!
//! Rayback server side:
//!   test ─TCP/UDP─▶ v2ray dokodemo-door ─▶ freedom + mux ══TCP══▶ MuxServer ─▶ echo handler
//! ```
//!
//! Everything listens on 127.0.0.1; ports come from `free_port()`; v2ray is
//! killed by PID when the test ends.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use async_trait::async_trait;
use rayback_core::{packet, Address, Destination, Stream};
use rayback_mux::{ClientSettings, MuxClient, MuxServer, ServerHandle, SessionHandler};
use rayback_testkit::{echo_server, free_port, seeded_bytes, sha256_hex, V2Ray};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout;

const SESSIONS: u64 = 200;
const SIZE: usize = 1024 * 1024;

/// A UDP echo server on 127.0.0.1.
async fn udp_echo() -> Result<SocketAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    Ok(addr)
}

/// Writes `data` while reading back as many bytes; then shuts down.
async fn echo_exchange(stream: Stream, data: &[u8]) -> Result<Vec<u8>> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut got = vec![0u8; data.len()];
    let (written, read) = tokio::join!(writer.write_all(data), reader.read_exact(&mut got));
    written?;
    read?;
    writer.shutdown().await?;
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_client_against_v2ray_server() -> Result<()> {
    timeout(Duration::from_secs(60), async {
        let echo = echo_server().await?;
        let udp = udp_echo().await?;
        let port = free_port();
        let config = json!({
            "log": {"loglevel": "warning"},
            "inbounds": [{
                "tag": "mux-in", "listen": "127.0.0.1", "port": port, "protocol": "dokodemo-door",
                "settings": {"address": "v1.mux.cool", "port": 9527, "network": "tcp"}
            }],
            "outbounds": [{"tag": "direct", "protocol": "freedom", "settings": {}}]
        });
        let _v2ray = V2Ray::start(&config, &[port]).await?;
        let carrier = TcpStream::connect(("127.0.0.1", port)).await?;
        carrier.set_nodelay(true)?;
        let client = MuxClient::new(Box::new(carrier), ClientSettings::default());

        // 200 concurrent sub-streams, 1 MiB each way, on one connection.
        let started = Instant::now();
        let tasks: Vec<_> = (0..SESSIONS)
            .map(|seed| {
                let client = client.clone();
                tokio::spawn(async move {
                    let data = seeded_bytes(seed, SIZE);
                    let stream = client.open(Destination::from(echo)).await?;
                    let got = echo_exchange(stream, &data).await?;
                    ensure!(sha256_hex(&got) == sha256_hex(&data), "sub-stream {seed}: sha256 differs");
                    anyhow::Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        let elapsed = started.elapsed();
        println!(
            "rayback client -> v2ray server: {SESSIONS} x 1 MiB echoed in {elapsed:?} ({:.0} MiB/s each way)",
            SESSIONS as f64 / elapsed.as_secs_f64()
        );
        assert_eq!(client.total_opened(), SESSIONS);
        // V2Ray answers each of our Ends with its own: every session ends.
        let ended = Instant::now();
        while client.active_sessions() > 0 {
            ensure!(ended.elapsed() < Duration::from_secs(5), "{} sessions never ended", client.active_sessions());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // A server-speaks-first exchange: the data-less New goes out at once
        // and v2ray dials; the reply comes back without our sending a byte
        // first... the echo server needs a byte, so send after the New.
        let mut stream = client.open(Destination::from(echo)).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        stream.write_all(b"late first byte").await?;
        let mut got = [0u8; 15];
        stream.read_exact(&mut got).await?;
        assert_eq!(&got, b"late first byte");
        drop(stream);

        // UDP: one datagram per frame, both ways; v2ray's 2048-byte limit holds.
        let target = Destination::udp(Address::Ipv4(std::net::Ipv4Addr::LOCALHOST), udp.port());
        let mut stream = client.open(target).await?;
        for size in [1usize, 512, 1400, 2048] {
            let datagram = seeded_bytes(size as u64, size);
            packet::write_packet(&mut stream, &datagram).await?;
            let mut back = Vec::new();
            ensure!(packet::read_packet(&mut stream, &mut back).await?, "udp stream ended");
            ensure!(back == datagram, "datagram of {size} bytes came back different");
        }
        ensure!(!client.is_closed(), "v2ray closed the connection");
        anyhow::Ok(())
    })
    .await?
}

/// Echoes every session; records destinations.
#[derive(Default)]
struct EchoHandler {
    seen: Mutex<Vec<Destination>>,
}

#[async_trait]
impl SessionHandler for EchoHandler {
    async fn handle(
        &self,
        destination: Destination,
        _source: Option<SocketAddr>,
        stream: Stream,
    ) -> io::Result<()> {
        self.seen.lock().unwrap().push(destination.clone());
        rayback_testkit::doubles::echo(&destination, stream).await
    }
}

/// Accepts v2ray's mux connections and serves each with `handler`.
async fn mux_listener(handler: Arc<EchoHandler>) -> Result<(u16, Arc<Mutex<Vec<ServerHandle>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let servers = Arc::new(Mutex::new(Vec::new()));
    let servers_in_task = servers.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            let server = MuxServer::serve(Box::new(socket), handler.clone());
            servers_in_task.lock().unwrap().push(server);
        }
    });
    Ok((port, servers))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_client_against_rayback_server() -> Result<()> {
    timeout(Duration::from_secs(60), async {
        let handler = Arc::new(EchoHandler::default());
        let (mux_port, servers) = mux_listener(handler.clone()).await?;
        let public = free_port();
        // The dokodemo target is only the sub-sessions' destination: our
        // handler echoes instead of dialing it.
        let target_port = free_port();
        let config = json!({
            "log": {"loglevel": "warning"},
            "inbounds": [{
                "tag": "public", "listen": "127.0.0.1", "port": public, "protocol": "dokodemo-door",
                "settings": {"address": "127.0.0.1", "port": target_port, "network": "tcp,udp"}
            }],
            "outbounds": [{
                "tag": "muxed", "protocol": "freedom",
                "settings": {"redirect": format!("127.0.0.1:{mux_port}")},
                "mux": {"enabled": true, "concurrency": 16}
            }]
        });
        let _v2ray = V2Ray::start(&config, &[public]).await?;

        let started = Instant::now();
        let tasks: Vec<_> = (0..SESSIONS)
            .map(|seed| {
                tokio::spawn(async move {
                    let data = seeded_bytes(1000 + seed, SIZE);
                    let socket = TcpStream::connect(("127.0.0.1", public)).await?;
                    let got = echo_exchange(Box::new(socket), &data).await?;
                    ensure!(sha256_hex(&got) == sha256_hex(&data), "connection {seed}: sha256 differs");
                    anyhow::Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        let elapsed = started.elapsed();
        let carriers = servers.lock().unwrap().len();
        println!(
            "v2ray client -> rayback server: {SESSIONS} x 1 MiB echoed in {elapsed:?} over {carriers} mux connections"
        );
        // Concurrency 16 → at least 200/16 carriers.
        ensure!(carriers >= (SESSIONS as usize).div_ceil(16), "only {carriers} carriers");
        let target = Destination::tcp(Address::Ipv4(std::net::Ipv4Addr::LOCALHOST), target_port);
        let seen = handler.seen.lock().unwrap().clone();
        ensure!(seen.iter().filter(|d| **d == target).count() >= SESSIONS as usize, "destinations: {seen:?}");

        // UDP through v2ray's mux client: datagrams keep their boundaries.
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(("127.0.0.1", public)).await?;
        for size in [1usize, 700, 2000] {
            let datagram = seeded_bytes(size as u64, size);
            socket.send(&datagram).await?;
            let mut back = vec![0u8; 4096];
            let n = timeout(Duration::from_secs(5), socket.recv(&mut back)).await.context("no udp reply")??;
            ensure!(back[..n] == datagram[..], "datagram of {size} bytes came back different");
        }
        let udp_target = Destination::udp(Address::Ipv4(std::net::Ipv4Addr::LOCALHOST), target_port);
        ensure!(handler.seen.lock().unwrap().contains(&udp_target), "no udp session seen");

        // Every session ends on our side once v2ray's clients are done.
        let ended = Instant::now();
        loop {
            let open: usize = servers.lock().unwrap().iter().map(|s| s.active_sessions()).sum();
            // The UDP session stays open (dokodemo keeps it until idle).
            if open <= 1 {
                break;
            }
            ensure!(ended.elapsed() < Duration::from_secs(5), "{open} sessions never ended");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::Ok(())
    })
    .await?
}
