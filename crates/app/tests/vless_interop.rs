//! VLESS against the real v2ray 4.34, both directions, as plain proxying,
//! over plain TCP, TLS and WebSocket inside TLS:
//!
//! ```text
//! (a) client ─▶ Rayback dokodemo ─▶ Rayback VLESS outbound ═ tcp / tls / ws+tls ═▶ v2ray VLESS inbound ─▶ freedom ─▶ echo
//! (b) client ─▶ v2ray dokodemo ─▶ v2ray VLESS outbound ═ tcp / tls / ws+tls ═▶ Rayback VLESS inbound ─▶ freedom ─▶ echo
//! ```
//!
//! Each cell moves 4 concurrent TCP connections × 2 MiB of seeded data
//! both ways (SHA-256 compared) and 40 UDP datagrams of different sizes
//! through a second dokodemo-door (UDP command, VLESS's length-framed
//! packets). TLS uses a fresh self-signed certificate; clients skip
//! verification (`allowInsecure`). Beside the cells: Rayback's VLESS
//! inbound answers a stranger's UUID with nothing and counts it under
//! `rayback_vless_handshake_failures_total{reason="unknown_user"}`;
//! `fallbacks` (a default one, one by path with a PROXY v1 header, one
//! with a v2 header) forward the same bytes to the same targets on
//! Rayback's inbound as on v2ray's, while VLESS still passes on the same
//! port; and `v2ray -test` accepts every config generated here (so a
//! mistake in the setup shows as that).
//!
//! Without `/usr/bin/v2ray` every test prints "skipped: …" and returns.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use rayback_app::{start, Running};
use rayback_config::parse_str;
use rayback_testkit::tls::SelfSigned;
use rayback_testkit::{echo_many, echo_server, free_port, v2ray_path, v2ray_test, V2Ray};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const ID: &str = "5783a3e7-e373-51cd-8642-c83782b807c5";
const CONNECTIONS: usize = 4;
const SIZE: usize = 2 << 20;
const ECHO_TIMEOUT: Duration = Duration::from_secs(120);
const TEST_TIMEOUT: Duration = Duration::from_secs(240);
const WS_PATH: &str = "/vless";

#[derive(Clone, Copy, Debug)]
enum Transport {
    Tcp,
    Tls,
    WsTls,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

fn have_v2ray() -> bool {
    if v2ray_path().exists() {
        return true;
    }
    eprintln!("skipped: {} not installed", v2ray_path().display());
    false
}

fn stream_settings(transport: Transport, side: Side, certificate: &SelfSigned) -> Value {
    let (ws, tls) = match transport {
        Transport::Tcp => (false, false),
        Transport::Tls => (false, true),
        Transport::WsTls => (true, true),
    };
    let mut settings = json!({"network": if ws { "ws" } else { "tcp" }});
    if ws {
        settings["wsSettings"] = match side {
            Side::Client => json!({"path": WS_PATH, "headers": {"Host": "localhost"}}),
            Side::Server => json!({"path": WS_PATH}),
        };
    }
    if tls {
        let mut tls = match side {
            Side::Client => json!({"allowInsecure": true, "serverName": "localhost"}),
            Side::Server => json!({
                "certificates": [{
                    "certificate": certificate.cert_lines(),
                    "key": certificate.key_lines()
                }]
            }),
        };
        if ws {
            tls["alpn"] = json!(["http/1.1"]);
        }
        settings["security"] = json!("tls");
        settings["tlsSettings"] = tls;
    }
    settings
}

/// A VLESS server on `port` with `stream`, sending everything to freedom.
fn server_config(port: u16, stream: Value) -> Value {
    json!({
        "inbounds": [{
            "tag": "vless-in", "listen": "127.0.0.1", "port": port, "protocol": "vless",
            "settings": {
                "clients": [{"id": ID, "level": 0, "email": "user@example.com"}],
                "decryption": "none"
            },
            "streamSettings": stream
        }],
        "outbounds": [{"protocol": "freedom", "tag": "direct"}]
    })
}

/// A TCP dokodemo-door on `tcp_entry` toward `tcp_target` and a UDP one on
/// `udp_entry` toward `udp_target`, both sent by VLESS with `stream` to the
/// server on `server_port`.
fn client_config(
    tcp_entry: u16,
    tcp_target: SocketAddr,
    udp_entry: u16,
    udp_target: SocketAddr,
    server_port: u16,
    stream: Value,
) -> Value {
    json!({
        "inbounds": [
            {
                "tag": "tcp-in", "listen": "127.0.0.1", "port": tcp_entry,
                "protocol": "dokodemo-door",
                "settings": {"address": "127.0.0.1", "port": tcp_target.port(), "network": "tcp"}
            },
            {
                "tag": "udp-in", "listen": "127.0.0.1", "port": udp_entry,
                "protocol": "dokodemo-door",
                "settings": {"address": "127.0.0.1", "port": udp_target.port(), "network": "udp"}
            }
        ],
        "outbounds": [{
            "tag": "vless-out", "protocol": "vless",
            "settings": {"vnext": [{
                "address": "127.0.0.1", "port": server_port,
                "users": [{"id": ID, "encryption": "none", "level": 0}]
            }]},
            "streamSettings": stream
        }]
    })
}

async fn start_rayback(name: &str, config: &Value) -> Running {
    let loaded = parse_str(name, &config.to_string())
        .unwrap_or_else(|error| panic!("Rayback refused {name}: {error}"));
    start(&loaded.config)
        .await
        .unwrap_or_else(|error| panic!("Rayback did not start {name}: {error:#}"))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A UDP echo server on 127.0.0.1.
async fn udp_echo() -> Result<SocketAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..len], from).await;
        }
    });
    Ok(addr)
}

/// Waits until `entry` echoes a datagram, then sends 40 datagrams of
/// different sizes and wants each back unchanged.
async fn udp_round_trips(entry: SocketAddr) -> Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(entry).await?;
    let mut buffer = vec![0u8; 65_536];
    let mut ready = false;
    for _ in 0..50 {
        socket.send(b"ping").await?;
        match tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buffer)).await {
            Ok(Ok(len)) => {
                ensure!(
                    &buffer[..len] == b"ping",
                    "the first echo came back changed"
                );
                ready = true;
                break;
            }
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => {}
        }
    }
    ensure!(ready, "the udp entry {entry} never echoed");
    for i in 0..40usize {
        let datagram: Vec<u8> = (0..(1 + i * 97 % 1400)).map(|b| (b + i) as u8).collect();
        socket.send(&datagram).await?;
        let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buffer))
            .await
            .with_context(|| format!("no echo of datagram {i}"))??;
        ensure!(
            buffer[..len] == datagram[..],
            "datagram {i} came back changed"
        );
    }
    Ok(())
}

/// Checks that `v2ray -test` accepts `config` (a control on the setup).
fn v2ray_accepts(config: &Value, name: &str) {
    let (code, output) = v2ray_test(&config.to_string(), name).expect("v2ray -test ran");
    assert_eq!(code, 0, "v2ray -test refused {name}: {output}");
}

async fn cell(transport: Transport, rayback_is_client: bool, seed: u64) {
    let certificate = SelfSigned::localhost().unwrap();
    let tcp_echo = echo_server().await.unwrap();
    let udp_target = udp_echo().await.unwrap();
    let (tcp_entry, udp_entry, server_port) = (free_port(), free_port(), free_port());
    let server = server_config(
        server_port,
        stream_settings(transport, Side::Server, &certificate),
    );
    let client = client_config(
        tcp_entry,
        tcp_echo,
        udp_entry,
        udp_target,
        server_port,
        stream_settings(transport, Side::Client, &certificate),
    );
    v2ray_accepts(&server, "server.json");
    v2ray_accepts(&client, "client.json");
    let (_v2ray, rayback) = if rayback_is_client {
        let v2ray = V2Ray::start(&server, &[server_port]).await.unwrap();
        (v2ray, start_rayback("client.json", &client).await)
    } else {
        let rayback = start_rayback("server.json", &server).await;
        (V2Ray::start(&client, &[tcp_entry]).await.unwrap(), rayback)
    };
    let outcome = tokio::time::timeout(TEST_TIMEOUT, async {
        echo_many(loopback(tcp_entry), CONNECTIONS, SIZE, seed, ECHO_TIMEOUT)
            .await
            .context("tcp")?;
        udp_round_trips(loopback(udp_entry)).await.context("udp")
    })
    .await
    .expect("the cell finished in time");
    if let Err(error) = outcome {
        let counters = rayback.prometheus();
        let seen: Vec<&str> = counters
            .lines()
            .filter(|line| line.starts_with("rayback_vless") && !line.ends_with(" 0"))
            .collect();
        panic!("{error:#}\nRayback's VLESS counters:\n{}", seen.join("\n"));
    }
    if !rayback_is_client {
        let counters = rayback.prometheus();
        assert!(
            counters
                .lines()
                .any(|line| line.starts_with("rayback_vless_handshakes_total ")
                    && !line.ends_with(" 0")),
            "no accepted VLESS handshake counted:\n{counters}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_client_to_v2ray_server_over_tcp() {
    if have_v2ray() {
        cell(Transport::Tcp, true, 100).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_client_to_v2ray_server_over_tls() {
    if have_v2ray() {
        cell(Transport::Tls, true, 200).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_client_to_v2ray_server_over_ws_tls() {
    if have_v2ray() {
        cell(Transport::WsTls, true, 300).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_client_to_rayback_server_over_tcp() {
    if have_v2ray() {
        cell(Transport::Tcp, false, 400).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_client_to_rayback_server_over_tls() {
    if have_v2ray() {
        cell(Transport::Tls, false, 500).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_client_to_rayback_server_over_ws_tls() {
    if have_v2ray() {
        cell(Transport::WsTls, false, 600).await;
    }
}

/// A stranger's UUID gets no answer: Rayback reads on until the handshake
/// deadline (set to 2 s here), then closes, and counts `unknown_user`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_uuid_gets_nothing_and_is_counted() {
    let port = free_port();
    let mut config = server_config(port, json!({"network": "tcp"}));
    config["policy"] = json!({"levels": {"0": {"handshake": 2}}});
    let rayback = start_rayback("server.json", &config).await;
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        let mut socket = TcpStream::connect(loopback(port)).await?;
        let mut request = vec![0u8];
        request.extend_from_slice(&[0x11; 16]);
        request.extend_from_slice(&[0, 1, 0, 80, 1, 127, 0, 0, 1]);
        request.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        socket.write_all(&request).await?;
        let mut back = Vec::new();
        // Closed (end of stream or reset) with nothing sent back.
        let _ = socket.read_to_end(&mut back).await;
        ensure!(back.is_empty(), "{} bytes came back", back.len());
        anyhow::Ok(())
    })
    .await
    .expect("Rayback closed the stranger's connection");
    outcome.unwrap();
    let counters = rayback.prometheus();
    assert!(
        counters.lines().any(|line| line
            == "rayback_vless_handshake_failures_total{reason=\"unknown_user\"} 1"
            || line.starts_with("rayback_vless_handshake_failures_total{reason=\"unknown_user\"}")
                && !line.ends_with(" 0")),
        "unknown_user not counted:\n{counters}"
    );
}

// ------------------------------------------------------------- fallbacks

/// A fallback target: records what each connection sent until the end of
/// its HTTP head, answers with `tag` as the body, and closes.
async fn recorder(
    tag: &'static str,
) -> Result<(SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buffer = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    // Every probe ends its head with a blank line (a PROXY v2
                    // header starts with CR LF CR LF, so "contains" is not
                    // enough).
                    while !got.ends_with(b"\r\n\r\n") {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got.extend_from_slice(&buffer[..n]),
                        }
                    }
                })
                .await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{tag}",
                    tag.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
                // Readiness probes (connect, then close) carry nothing:
                // v2ray hands even those to a fallback.
                if !got.is_empty() {
                    let _ = sender.send(got);
                }
            });
        }
    });
    Ok((addr, receiver))
}

/// Sends `request` to `server`, returns (the client's port, the reply).
async fn probe(server: SocketAddr, request: &[u8]) -> Result<(u16, Vec<u8>)> {
    let mut socket = TcpStream::connect(server).await?;
    let port = socket.local_addr()?.port();
    socket.write_all(request).await?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut reply))
        .await
        .context("no reply within 10 s")??;
    Ok((port, reply))
}

/// The same VLESS server with fallbacks (a default one; `/ws` with a
/// PROXY v1 header; `/two` with a v2 header), Rayback's and v2ray's: each
/// non-VLESS probe must reach the same target with the same bytes. And
/// VLESS itself still passes on Rayback's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallbacks_forward_like_v2ray() {
    if !have_v2ray() {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, async {
        for rayback_server in [false, true] {
            let (default_addr, mut default_rx) = recorder("default").await?;
            let (ws_addr, mut ws_rx) = recorder("ws").await?;
            let (two_addr, mut two_rx) = recorder("two").await?;
            let port = free_port();
            let mut config = server_config(port, json!({"network": "tcp"}));
            config["inbounds"][0]["settings"]["fallbacks"] = json!([
                {"dest": default_addr.port()},
                {"path": "/ws", "dest": ws_addr.to_string(), "xver": 1},
                {"path": "/two", "dest": ws_addr.to_string(), "xver": 0},
                {"path": "/two", "dest": two_addr.to_string(), "xver": 2}
            ]);
            v2ray_accepts(&config, "fallbacks.json");
            let name = if rayback_server { "Rayback" } else { "v2ray" };
            let (_v2ray, _rayback) = if rayback_server {
                (None, Some(start_rayback("fallbacks.json", &config).await))
            } else {
                (Some(V2Ray::start(&config, &[port]).await?), None)
            };
            let server = loopback(port);

            let page = b"GET /index.html HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n";
            let (_, reply) = probe(server, page).await?;
            ensure!(
                reply.ends_with(b"default"),
                "{name}: {:?}",
                String::from_utf8_lossy(&reply)
            );
            ensure!(
                default_rx.recv().await.as_deref() == Some(&page[..]),
                "{name}: default target got other bytes"
            );

            let short = b"hi\r\n\r\n";
            let (_, reply) = probe(server, short).await?;
            ensure!(
                reply.ends_with(b"default"),
                "{name}: short probe: {reply:?}"
            );
            let got = default_rx.recv().await.unwrap_or_default();
            ensure!(
                got == short,
                "{name}: the short probe's target got {:?}",
                String::from_utf8_lossy(&got)
            );

            let ws = b"GET /ws HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\n\r\n";
            let (client_port, reply) = probe(server, ws).await?;
            ensure!(reply.ends_with(b"ws"), "{name}: /ws: {reply:?}");
            let mut expected =
                format!("PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {port}\r\n").into_bytes();
            expected.extend_from_slice(ws);
            let got = ws_rx.recv().await.unwrap_or_default();
            ensure!(
                got == expected,
                "{name}: /ws target got {:?}, wanted {:?}",
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&expected)
            );

            let two = b"POST /two HTTP/1.1\r\nHost: example\r\nContent-Length: 0\r\n\r\n";
            let (client_port, reply) = probe(server, two).await?;
            ensure!(reply.ends_with(b"two"), "{name}: /two: {reply:?}");
            let mut expected =
                b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\x7f\x00\x00\x01\x7f\x00\x00\x01".to_vec();
            expected.extend_from_slice(&client_port.to_be_bytes());
            expected.extend_from_slice(&port.to_be_bytes());
            expected.extend_from_slice(two);
            ensure!(
                two_rx.recv().await.unwrap_or_default() == expected,
                "{name}: /two target got other bytes"
            );

            if rayback_server {
                // VLESS still passes on the port with fallbacks.
                let tcp_echo = echo_server().await?;
                let udp_target = udp_echo().await?;
                let (tcp_entry, udp_entry) = (free_port(), free_port());
                let client = client_config(
                    tcp_entry,
                    tcp_echo,
                    udp_entry,
                    udp_target,
                    port,
                    json!({"network": "tcp"}),
                );
                let _client = V2Ray::start(&client, &[tcp_entry]).await?;
                echo_many(loopback(tcp_entry), 2, 256 << 10, 700, ECHO_TIMEOUT).await?;
                let counters = _rayback
                    .as_ref()
                    .map(Running::prometheus)
                    .unwrap_or_default();
                ensure!(
                    counters
                        .lines()
                        .any(|line| line == "rayback_vless_fallbacks_total 4"),
                    "fallbacks not counted:\n{counters}"
                );
            }
        }
        anyhow::Ok(())
    })
    .await
    .expect("the fallback test finished in time")
    .unwrap();
}
