//! VMess over V2Ray 4.34's `streamSettings` transports against the real
//! v2ray, both directions, as plain proxying (not the reverse proxy):
//!
//! ```text
//! (a) client ─▶ Rayback dokodemo ─▶ Rayback VMess outbound ═ ws / tls / ws+tls / http ═▶ v2ray VMess inbound ─▶ freedom ─▶ echo
//! (b) client ─▶ v2ray dokodemo ─▶ v2ray VMess outbound ═ ws / tls / ws+tls / http ═▶ Rayback VMess inbound ─▶ freedom ─▶ echo
//! ```
//!
//! Each cell moves 16 concurrent connections × 4 MiB of seeded data both
//! ways, SHA-256 compared. Both sides of a cell get the same JSON: one
//! helper, [`stream_settings`], writes a transport's `streamSettings` for
//! a side. TLS uses a fresh self-signed certificate for `localhost` and
//! 127.0.0.1 and comes in two families: the client skips verification
//! (`allowInsecure`), or it verifies `serverName: "localhost"` against the
//! certificate listed in its own `certificates` (V2Ray 4.34 adds listed
//! certificates to the trusted roots). The TCP HTTP header disguise comes
//! with V2Ray's default heads, and with a configured request (method,
//! two paths, headers) and response (status, reason, headers), once over
//! TLS.
//!
//! Beside the cells: a verifying Rayback client refuses the self-signed
//! v2ray server, and a Rayback WebSocket client with the wrong path gets
//! nothing through (v2ray answers 404). Two controls keep the test honest:
//! `v2ray -test` accepts every config generated here, and v2ray talks to
//! v2ray over each transport with them, so a mistake in the setup shows as
//! that, not as an interop failure.

use std::net::SocketAddr;
use std::time::Duration;

use rayback_app::{start, Running};
use rayback_config::parse_str;
use rayback_testkit::fault::Sentinel;
use rayback_testkit::tls::SelfSigned;
use rayback_testkit::{
    echo_many, echo_server, exchange, free_port, seeded_bytes, v2ray_test, V2Ray,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ID: &str = "27848739-7e62-4138-9fd3-098a63964b6b";
const CONNECTIONS: usize = 16;
const SIZE: usize = 4 << 20;
const ECHO_TIMEOUT: Duration = Duration::from_secs(120);
/// The WebSocket path both sides use; not `/`, so a side that ignores the
/// path fails.
const WS_PATH: &str = "/tunnel";
/// How long a refused connection may take to be closed by Rayback.
const REFUSAL_LIMIT: Duration = Duration::from_secs(15);

/// How a TLS client trusts the self-signed server.
#[derive(Clone, Copy, Debug)]
enum Trust {
    /// `allowInsecure: true`: no verification. The server names its
    /// certificate inline (`certificate` / `key` line arrays).
    Insecure,
    /// `serverName: "localhost"` verified against the certificate listed
    /// (inline) in the client's `certificates`. The server names its
    /// certificate by file (`certificateFile` / `keyFile`).
    Listed,
}

/// A `streamSettings` transport.
#[derive(Clone, Copy, Debug)]
enum Transport {
    /// WebSocket on [`WS_PATH`], the client sending a `Host` header.
    Ws,
    /// TLS over TCP, default ALPN.
    Tls(Trust),
    /// WebSocket inside TLS, ALPN `http/1.1` on both sides.
    WsTls(Trust),
    /// `tcpSettings.header` `http`: V2Ray's default heads, or configured
    /// ones; optionally inside TLS.
    Http { configured: bool, tls: bool },
}

const ALL_TRANSPORTS: [Transport; 8] = [
    Transport::Ws,
    Transport::Tls(Trust::Insecure),
    Transport::Tls(Trust::Listed),
    Transport::WsTls(Trust::Insecure),
    Transport::WsTls(Trust::Listed),
    Transport::Http {
        configured: false,
        tls: false,
    },
    Transport::Http {
        configured: true,
        tls: false,
    },
    Transport::Http {
        configured: true,
        tls: true,
    },
];

/// `tcpSettings.header` of type `http`, the same on both sides (as V2Ray
/// wants it: the server accepts only the request's paths).
fn http_header(configured: bool) -> Value {
    if !configured {
        return json!({"type": "http"});
    }
    json!({
        "type": "http",
        "request": {
            "version": "1.1",
            "method": "POST",
            "path": ["/upload", "/api/v2/sync"],
            "headers": {
                "Host": ["cdn.example", "static.example"],
                "User-Agent": "curl/7.88.1",
                "Accept": ["*/*"]
            }
        },
        "response": {
            "version": "1.1",
            "status": "206",
            "reason": "Partial Content",
            "headers": {"Content-Type": ["video/mp4"], "Server": ["nginx"]}
        }
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// The VMess outbound that dials.
    Client,
    /// The VMess inbound that accepts.
    Server,
}

/// `streamSettings` for `transport` on `side`, with `certificate` as the
/// server's certificate and the one a `Listed` client trusts.
fn stream_settings(transport: Transport, side: Side, certificate: &SelfSigned) -> Value {
    let (ws, trust) = match transport {
        Transport::Ws => (true, None),
        Transport::Tls(trust) => (false, Some(trust)),
        Transport::WsTls(trust) => (true, Some(trust)),
        Transport::Http { tls, .. } => (false, tls.then_some(Trust::Insecure)),
    };
    let mut settings = json!({"network": if ws { "ws" } else { "tcp" }});
    if let Transport::Http { configured, .. } = transport {
        settings["tcpSettings"] = json!({"header": http_header(configured)});
    }
    if ws {
        settings["wsSettings"] = match side {
            Side::Client => json!({"path": WS_PATH, "headers": {"Host": "localhost"}}),
            Side::Server => json!({"path": WS_PATH}),
        };
    }
    if let Some(trust) = trust {
        let mut tls = match (side, trust) {
            (Side::Client, Trust::Insecure) => json!({"allowInsecure": true}),
            (Side::Client, Trust::Listed) => json!({
                "serverName": "localhost",
                "certificates": [{"certificate": certificate.cert_lines()}]
            }),
            (Side::Server, Trust::Insecure) => json!({
                "certificates": [{
                    "certificate": certificate.cert_lines(),
                    "key": certificate.key_lines()
                }]
            }),
            (Side::Server, Trust::Listed) => json!({
                "certificates": [{
                    "certificateFile": certificate.cert_path,
                    "keyFile": certificate.key_path
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

/// A VMess server on `port` with `stream`, sending everything to freedom.
fn server_config(port: u16, stream: Value) -> Value {
    json!({
        "inbounds": [{
            "tag": "vmess-in", "listen": "127.0.0.1", "port": port, "protocol": "vmess",
            "settings": {"clients": [{"id": ID}]},
            "streamSettings": stream
        }],
        "outbounds": [{"protocol": "freedom", "tag": "direct"}]
    })
}

/// A dokodemo-door entry on `entry_port` for `target`, sent by VMess with
/// `stream` to the server on `server_port`.
fn client_config(entry_port: u16, target: SocketAddr, server_port: u16, stream: Value) -> Value {
    json!({
        "inbounds": [{
            "tag": "in", "listen": "127.0.0.1", "port": entry_port, "protocol": "dokodemo-door",
            "settings": {"address": "127.0.0.1", "port": target.port(), "network": "tcp"}
        }],
        "outbounds": [{
            "tag": "vmess-out", "protocol": "vmess",
            "settings": {"vnext": [{
                "address": "127.0.0.1", "port": server_port,
                "users": [{"id": ID, "security": "aes-128-gcm"}]
            }]},
            "streamSettings": stream
        }]
    })
}

/// Rayback in-process with `config`; a refused config fails the test with
/// the parser's message (until the transports land: "unsupported").
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

/// [`echo_many`] through `entry`; on failure, also prints what Rayback
/// counted (handshakes refused and why, sessions).
async fn echo_through(entry: SocketAddr, seed: u64, rayback: &Running) {
    if let Err(error) = echo_many(entry, CONNECTIONS, SIZE, seed, ECHO_TIMEOUT).await {
        let counters = rayback.prometheus();
        let seen: Vec<&str> = counters
            .lines()
            .filter(|line| !line.starts_with('#') && !line.ends_with(" 0"))
            .collect();
        panic!("{error:#}\nRayback's counters:\n{}", seen.join("\n"));
    }
}

/// (a): Rayback's VMess outbound dials v2ray's VMess inbound.
async fn rayback_client_to_v2ray_server(transport: Transport, seed: u64) {
    let certificate = SelfSigned::localhost().unwrap();
    let echo = echo_server().await.unwrap();
    let (entry_port, server_port) = (free_port(), free_port());
    let server = server_config(
        server_port,
        stream_settings(transport, Side::Server, &certificate),
    );
    let _v2ray = V2Ray::start(&server, &[server_port]).await.unwrap();
    let client = client_config(
        entry_port,
        echo,
        server_port,
        stream_settings(transport, Side::Client, &certificate),
    );
    let rayback = start_rayback("client.json", &client).await;
    echo_through(loopback(entry_port), seed, &rayback).await;
}

/// (b): v2ray's VMess outbound dials Rayback's VMess inbound.
async fn v2ray_client_to_rayback_server(transport: Transport, seed: u64) {
    let certificate = SelfSigned::localhost().unwrap();
    let echo = echo_server().await.unwrap();
    let (entry_port, server_port) = (free_port(), free_port());
    let server = server_config(
        server_port,
        stream_settings(transport, Side::Server, &certificate),
    );
    let rayback = start_rayback("server.json", &server).await;
    let client = client_config(
        entry_port,
        echo,
        server_port,
        stream_settings(transport, Side::Client, &certificate),
    );
    let _v2ray = V2Ray::start(&client, &[entry_port]).await.unwrap();
    echo_through(loopback(entry_port), seed, &rayback).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_client_to_v2ray_server_over_ws() {
    rayback_client_to_v2ray_server(Transport::Ws, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_client_to_v2ray_server_over_tls_insecure() {
    rayback_client_to_v2ray_server(Transport::Tls(Trust::Insecure), 1100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_client_to_v2ray_server_over_tls_listed_certificate() {
    rayback_client_to_v2ray_server(Transport::Tls(Trust::Listed), 1200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_client_to_v2ray_server_over_ws_tls_insecure() {
    rayback_client_to_v2ray_server(Transport::WsTls(Trust::Insecure), 1300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_client_to_v2ray_server_over_ws_tls_listed_certificate() {
    rayback_client_to_v2ray_server(Transport::WsTls(Trust::Listed), 1400).await;
}

const HTTP_DEFAULT: Transport = Transport::Http {
    configured: false,
    tls: false,
};
const HTTP_CONFIGURED: Transport = Transport::Http {
    configured: true,
    tls: false,
};
const HTTP_CONFIGURED_TLS: Transport = Transport::Http {
    configured: true,
    tls: true,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_client_to_v2ray_server_over_http_header() {
    rayback_client_to_v2ray_server(HTTP_DEFAULT, 1500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_client_to_v2ray_server_over_configured_http_header() {
    rayback_client_to_v2ray_server(HTTP_CONFIGURED, 1600).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_client_to_v2ray_server_over_http_header_in_tls() {
    rayback_client_to_v2ray_server(HTTP_CONFIGURED_TLS, 1700).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_client_to_rayback_server_over_http_header() {
    v2ray_client_to_rayback_server(HTTP_DEFAULT, 2500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_client_to_rayback_server_over_configured_http_header() {
    v2ray_client_to_rayback_server(HTTP_CONFIGURED, 2600).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_client_to_rayback_server_over_http_header_in_tls() {
    v2ray_client_to_rayback_server(HTTP_CONFIGURED_TLS, 2700).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_client_to_rayback_server_over_ws() {
    v2ray_client_to_rayback_server(Transport::Ws, 2000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_client_to_rayback_server_over_tls_insecure() {
    v2ray_client_to_rayback_server(Transport::Tls(Trust::Insecure), 2100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_client_to_rayback_server_over_tls_listed_certificate() {
    v2ray_client_to_rayback_server(Transport::Tls(Trust::Listed), 2200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_client_to_rayback_server_over_ws_tls_insecure() {
    v2ray_client_to_rayback_server(Transport::WsTls(Trust::Insecure), 2300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_client_to_rayback_server_over_ws_tls_listed_certificate() {
    v2ray_client_to_rayback_server(Transport::WsTls(Trust::Listed), 2400).await;
}

/// One connection through `entry` must be closed by Rayback within
/// [`REFUSAL_LIMIT`] with nothing coming back: a reset or an empty answer,
/// never a hang.
async fn assert_refused(entry: SocketAddr, seed: u64) {
    let data = seeded_bytes(seed, 64 << 10);
    match tokio::time::timeout(REFUSAL_LIMIT, exchange(entry, &data, 2 * REFUSAL_LIMIT)).await {
        Err(_) => {
            panic!("Rayback held the connection over {REFUSAL_LIMIT:?} instead of closing it")
        }
        Ok(Ok(back)) => assert!(back.is_empty(), "{} bytes came back", back.len()),
        Ok(Err(error)) => eprintln!("refused as expected: {error:#}"),
    }
}

/// The status line's code of a WebSocket upgrade for `path` on `addr`.
async fn ws_upgrade_status(addr: SocketAddr, path: &str) -> u16 {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n") {
            assert_eq!(socket.read(&mut byte).await.unwrap(), 1, "no status line");
            head.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&head).into_owned();
        line.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {line:?}"))
    })
    .await
    .expect("v2ray answered the upgrade within 10 s")
}

/// A Rayback TLS client that verifies (no `allowInsecure`, no listed
/// certificate: system roots only) refuses v2ray's self-signed server:
/// nothing reaches the target, and each attempt ends promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_verifying_tls_client_refuses_self_signed_v2ray_server() {
    let certificate = SelfSigned::localhost().unwrap();
    let target = Sentinel::start().await.unwrap();
    let (entry_port, server_port) = (free_port(), free_port());
    let server = server_config(
        server_port,
        stream_settings(Transport::Tls(Trust::Listed), Side::Server, &certificate),
    );
    let _v2ray = V2Ray::start(&server, &[server_port]).await.unwrap();
    let verifying = json!({
        "network": "tcp", "security": "tls",
        "tlsSettings": {"serverName": "localhost"}
    });
    let client = client_config(entry_port, target.addr(), server_port, verifying);
    let _rayback = start_rayback("client.json", &client).await;
    // Twice: a refused handshake leaves Rayback serving (and refusing).
    assert_refused(loopback(entry_port), 3000).await;
    assert_refused(loopback(entry_port), 3001).await;
    assert_eq!(target.accepts(), 0, "the target was dialled");
}

/// A Rayback WebSocket client whose path differs from v2ray's gets a 404
/// and nothing through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayback_ws_client_with_wrong_path_gets_nothing_through() {
    let certificate = SelfSigned::localhost().unwrap();
    let target = Sentinel::start().await.unwrap();
    let (entry_port, server_port) = (free_port(), free_port());
    let server = server_config(
        server_port,
        stream_settings(Transport::Ws, Side::Server, &certificate),
    );
    let _v2ray = V2Ray::start(&server, &[server_port]).await.unwrap();
    // The premise: v2ray upgrades its path and answers 404 to another.
    assert_eq!(ws_upgrade_status(loopback(server_port), WS_PATH).await, 101);
    assert_eq!(
        ws_upgrade_status(loopback(server_port), "/wrong").await,
        404
    );
    let mut wrong = stream_settings(Transport::Ws, Side::Client, &certificate);
    wrong["wsSettings"]["path"] = json!("/wrong");
    let client = client_config(entry_port, target.addr(), server_port, wrong);
    let _rayback = start_rayback("client.json", &client).await;
    assert_refused(loopback(entry_port), 4000).await;
    assert_eq!(target.accepts(), 0, "the target was dialled");
}

/// The control: every transport's pair of configs works with v2ray on both
/// sides (the certificate, `serverName` and listed-certificate trust, the
/// path and `Host` header), so a failing cell is never the test's setup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_client_to_v2ray_server_over_every_transport() {
    let certificate = SelfSigned::localhost().unwrap();
    let echo = echo_server().await.unwrap();
    for (index, transport) in ALL_TRANSPORTS.into_iter().enumerate() {
        let (entry_port, server_port) = (free_port(), free_port());
        let server = server_config(
            server_port,
            stream_settings(transport, Side::Server, &certificate),
        );
        let _server = V2Ray::start(&server, &[server_port]).await.unwrap();
        let client = client_config(
            entry_port,
            echo,
            server_port,
            stream_settings(transport, Side::Client, &certificate),
        );
        let _client = V2Ray::start(&client, &[entry_port]).await.unwrap();
        let seed = 5000 + 100 * index as u64;
        echo_many(loopback(entry_port), CONNECTIONS, SIZE, seed, ECHO_TIMEOUT)
            .await
            .unwrap_or_else(|error| panic!("v2ray to v2ray over {transport:?}: {error:#}"));
    }
}

/// v2ray accepts every config this file gives it (and, for symmetry, the
/// ones it gives Rayback): both sides of every transport.
#[test]
fn v2ray_accepts_the_generated_configs() {
    let certificate = SelfSigned::localhost().unwrap();
    let target = loopback(free_port());
    let mut checked = 0;
    for transport in ALL_TRANSPORTS {
        let configs = [
            (
                "server",
                server_config(
                    free_port(),
                    stream_settings(transport, Side::Server, &certificate),
                ),
            ),
            (
                "client",
                client_config(
                    free_port(),
                    target,
                    free_port(),
                    stream_settings(transport, Side::Client, &certificate),
                ),
            ),
        ];
        for (side, config) in configs {
            let text = serde_json::to_string_pretty(&config).unwrap();
            let (code, output) = v2ray_test(&text, "config.json").unwrap();
            assert_eq!(
                code, 0,
                "v2ray -test refused the {side} config for {transport:?}:\n{output}\n{text}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * ALL_TRANSPORTS.len());
}

// ------------------------------------------------ dokodemo-door and freedom

/// A dokodemo-door on `port` with `stream` toward `target`, relayed by a
/// freedom outbound.
fn door_server(port: u16, target: SocketAddr, stream: Value) -> Value {
    json!({
        "inbounds": [{
            "tag": "door", "listen": "127.0.0.1", "port": port, "protocol": "dokodemo-door",
            "settings": {"address": "127.0.0.1", "port": target.port(), "network": "tcp"},
            "streamSettings": stream
        }],
        "outbounds": [{"protocol": "freedom", "tag": "direct"}]
    })
}

/// A plain dokodemo-door on `entry_port` toward the door on `door_port`,
/// dialled by a freedom outbound with `stream`.
fn freedom_client(entry_port: u16, door_port: u16, stream: Value) -> Value {
    json!({
        "inbounds": [{
            "tag": "in", "listen": "127.0.0.1", "port": entry_port, "protocol": "dokodemo-door",
            "settings": {"address": "127.0.0.1", "port": door_port, "network": "tcp"}
        }],
        "outbounds": [{"protocol": "freedom", "tag": "direct", "streamSettings": stream}]
    })
}

/// `streamSettings` apply to every inbound and outbound, not only VMess:
/// a v2ray freedom outbound dials a Rayback dokodemo-door over ws+tls and
/// over the HTTP disguise, and a Rayback freedom outbound dials a v2ray
/// dokodemo-door over the same, 16 × 4 MiB each, SHA-256 compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dokodemo_door_and_freedom_carry_the_transports_both_ways() {
    let certificate = SelfSigned::localhost().unwrap();
    let echo = echo_server().await.unwrap();
    let transports = [Transport::WsTls(Trust::Listed), HTTP_CONFIGURED_TLS];
    for (index, transport) in transports.into_iter().enumerate() {
        let server = stream_settings(transport, Side::Server, &certificate);
        let client = stream_settings(transport, Side::Client, &certificate);

        // v2ray's freedom → Rayback's door.
        let (entry_port, door_port) = (free_port(), free_port());
        let rayback =
            start_rayback("door.json", &door_server(door_port, echo, server.clone())).await;
        let _v2ray = V2Ray::start(
            &freedom_client(entry_port, door_port, client.clone()),
            &[entry_port],
        )
        .await
        .unwrap();
        echo_through(loopback(entry_port), 7000 + 100 * index as u64, &rayback).await;

        // Rayback's freedom → v2ray's door.
        let (entry_port, door_port) = (free_port(), free_port());
        let _v2ray = V2Ray::start(&door_server(door_port, echo, server), &[door_port])
            .await
            .unwrap();
        let rayback = start_rayback(
            "freedom.json",
            &freedom_client(entry_port, door_port, client),
        )
        .await;
        echo_through(loopback(entry_port), 7050 + 100 * index as u64, &rayback).await;
    }
}
