//! Fetches an `http://` page through a VMess server (the real `v2ray` or a
//! Rayback inbound) with [`VmessOutbound`], and prints the response, head
//! and body, to standard output.
//!
//! ```text
//! cargo run -p rayback-vmess --example fetch -- SERVER_ADDR UUID URL
//! cargo run -p rayback-vmess --example fetch -- 127.0.0.1:10086 27848739-7e62-4138-9fd3-098a63964b6b http://example.com/
//! ```
//!
//! A v2ray 4.34 server for it (`v2ray -config server.json`): a VMess inbound
//! with the same UUID (`alterId` 0, so the AEAD header) and a freedom
//! outbound that fetches the page:
//!
//! ```json
//! {
//!   "inbounds": [{
//!     "listen": "127.0.0.1", "port": 10086, "protocol": "vmess",
//!     "settings": { "clients": [{ "id": "27848739-7e62-4138-9fd3-098a63964b6b", "alterId": 0 }] }
//!   }],
//!   "outbounds": [{ "protocol": "freedom" }]
//! }
//! ```
//!
//! Only plain HTTP: the request is HTTP/1.0 with `Connection: close`, and
//! the response is whatever arrives until the server closes. `cargo xtask
//! ci` runs this example against the real v2ray (`xtask/src/examples.rs`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rayback_core::{Destination, Network, Session};
use rayback_transport::Transport;
use rayback_vmess::{
    OutboundUser, Security, UserId, VmessMetrics, VmessOutbound, VmessOutboundSettings, VmessServer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the whole fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, uuid, url] = args.as_slice() else {
        bail!("usage: fetch SERVER_ADDR UUID URL (e.g. 127.0.0.1:10086 27848739-7e62-4138-9fd3-098a63964b6b http://example.com/)");
    };
    let server = Destination::parse_host_port(Network::Tcp, server)
        .with_context(|| format!("server address {server:?}"))?;
    let id = UserId::parse(uuid).with_context(|| format!("UUID {uuid:?}"))?;
    let (authority, path) = split_http_url(url)?;
    let target = Destination::parse_host_port(Network::Tcp, &authority)
        .with_context(|| format!("host of {url:?}"))?;

    let outbound = VmessOutbound::new(
        VmessOutboundSettings {
            servers: vec![VmessServer {
                address: server.address,
                port: server.port,
                users: vec![OutboundUser {
                    id,
                    // 0: the AEAD header, what v2ray 4.34 expects by default.
                    alter_id: 0,
                    security: Security::Auto,
                    level: 0,
                    email: String::new(),
                }],
            }],
            connect_timeout: Duration::from_secs(10),
            transport: Arc::new(Transport::tcp()),
        },
        Arc::new(VmessMetrics::new()),
    )?;

    let response = tokio::time::timeout(FETCH_TIMEOUT, async {
        // The VMess header goes out with the first payload: the request.
        let mut stream = outbound.connect_stream(&Session::new(target)).await?;
        let host = authority.strip_suffix(":80").unwrap_or(&authority);
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: rayback-vmess-fetch\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    })
    .await
    .with_context(|| format!("no complete response within {FETCH_TIMEOUT:?}"))?
    .with_context(|| format!("fetching {url} through {}", server_name(&outbound)))?;
    if response.is_empty() {
        bail!("the server closed without a response (wrong UUID, or the page's host unreachable from it?)");
    }
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, &response)?;
    std::io::Write::flush(&mut stdout)?;
    Ok(())
}

/// `http://host[:port][/path]` → (`host:port`, `/path`).
fn split_http_url(url: &str) -> Result<(String, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("only http:// URLs, got {url:?}");
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("no host in {url:?}");
    }
    // A port is present when the part after the last ':' is outside any
    // IPv6 brackets.
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.contains(']'));
    let authority = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_owned()))
}

fn server_name(outbound: &VmessOutbound) -> String {
    use rayback_core::Outbound;
    outbound.servers().join(", ")
}
