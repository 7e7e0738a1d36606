//! Handler behaviour the real v2ray 4.34 settles: what a blackhole writes,
//! and freedom's redirect forms.
//!
//! ```text
//!  test client ──▶ v2ray dokodemo-door "http"  ──▶ blackhole {"type": "http"}
//!  test client ──▶ v2ray dokodemo-door "none"  ──▶ blackhole (no response)
//!  test client ──▶ v2ray dokodemo-door "redir" ──▶ freedom redirect ":<echo port>" ──▶ echo
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use rayback_core::Redirect;
use rayback_handlers::HTTP_403;
use rayback_testkit::{echo_server, exchange, free_port, V2Ray};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn blackhole_and_redirect_match_v2ray() -> Result<()> {
    let echo = echo_server().await?;
    let (http, none, redir) = (free_port(), free_port(), free_port());
    let redirect = format!(":{}", echo.port());
    // What Rayback makes of the same redirect text.
    assert_eq!(Redirect::parse(&redirect)?.port, echo.port());
    let dokodemo = |tag: &str, port: u16, target_port: u16| {
        json!({
            "tag": tag, "listen": "127.0.0.1", "port": port, "protocol": "dokodemo-door",
            "settings": {"address": "127.0.0.1", "port": target_port, "network": "tcp"},
        })
    };
    let config = json!({
        "log": {"loglevel": "none"},
        "inbounds": [dokodemo("http", http, 80), dokodemo("none", none, 80), dokodemo("redir", redir, 1)],
        "outbounds": [
            {"tag": "deny-http", "protocol": "blackhole", "settings": {"response": {"type": "http"}}},
            {"tag": "deny", "protocol": "blackhole"},
            {"tag": "pass", "protocol": "freedom", "settings": {"redirect": redirect}},
        ],
        "routing": {"rules": [
            {"type": "field", "inboundTag": ["http"], "outboundTag": "deny-http"},
            {"type": "field", "inboundTag": ["none"], "outboundTag": "deny"},
            {"type": "field", "inboundTag": ["redir"], "outboundTag": "pass"},
        ]},
    });
    let _v2ray = V2Ray::start(&config, &[http, none, redir]).await?;
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));

    let mut socket = TcpStream::connect(at(http)).await?;
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, socket.read_to_end(&mut answer)).await??;
    assert_eq!(
        String::from_utf8_lossy(&answer),
        String::from_utf8_lossy(HTTP_403),
        "v2ray's blackhole response differs from HTTP_403"
    );

    let mut socket = TcpStream::connect(at(none)).await?;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, socket.read_to_end(&mut answer)).await?;
    assert!(read.is_err() || answer.is_empty(), "{answer:?}");

    assert_eq!(exchange(at(redir), b"through", TIMEOUT).await?, b"through");
    Ok(())
}
