//! A Mux.Cool client over a plain TCP connection: one sub-stream per target,
//! all on one socket, each carrying an HTTP/1.0 `GET /`; it prints the
//! first line of every answer.
//!
//! ```text
//! cargo run -p rayback-mux --example client -- MUX_SERVER_ADDR HOST:PORT...
//! cargo run -p rayback-mux --example client -- 127.0.0.1:7070 example.com:80 example.org:80
//! cargo run -p rayback-mux --example client      # offline: against this crate's MuxServer, in process
//! ```
//!
//! The server can be the real `v2ray` 4.34: it serves Mux.Cool behind any
//! inbound whose sessions are addressed to `v1.mux.cool`, so a
//! `dokodemo-door` with that destination takes Mux.Cool on a bare TCP port
//! (`v2ray -config mux.json`), and freedom dials each sub-stream's target:
//!
//! ```json
//! {
//!   "inbounds": [{
//!     "listen": "127.0.0.1", "port": 7070, "protocol": "dokodemo-door",
//!     "settings": { "address": "v1.mux.cool", "port": 9527, "network": "tcp" }
//!   }],
//!   "outbounds": [{ "protocol": "freedom" }]
//! }
//! ```
//!
//! Without arguments the example starts a [`MuxServer`] on a 127.0.0.1 port
//! of its own whose [`SessionHandler`] answers every sub-stream itself
//! instead of dialling its target, so it needs no network. `cargo xtask
//! examples` runs it against the real v2ray.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use rayback_core::{Destination, Network, Stream};
use rayback_mux::{ClientSettings, MuxClient, MuxServer, SessionHandler};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How long the client waits for all its answers.
const TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let server = listener.local_addr()?;
            tokio::spawn(serve(listener));
            let targets = ["example.com:80", "example.org:80", "192.0.2.1:8080"];
            client(server, &targets.map(str::to_owned)).await
        }
        [server, targets @ ..] if !targets.is_empty() => {
            let server = server
                .parse()
                .with_context(|| format!("server address {server:?}"))?;
            client(server, targets).await
        }
        _ => bail!("usage: client [MUX_SERVER_ADDR HOST:PORT...]"),
    }
}

/// Opens a sub-stream per target over one TCP connection, all at once,
/// and prints the first line of each answer.
async fn client(server: SocketAddr, targets: &[String]) -> Result<()> {
    let tcp = TcpStream::connect(server)
        .await
        .with_context(|| format!("connecting to {server}"))?;
    tcp.set_nodelay(true)?;
    let client = MuxClient::new(Box::new(tcp), ClientSettings::default());
    let mut answers = JoinSet::new();
    for target in targets {
        let destination = Destination::parse_host_port(Network::Tcp, target)
            .with_context(|| format!("target {target:?}"))?;
        let client = client.clone();
        answers.spawn(async move {
            let answer = async {
                let mut stream = client.open(destination.clone()).await?;
                let host = destination.address.to_string();
                let request =
                    format!("GET / HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
                stream.write_all(request.as_bytes()).await?;
                // No shutdown before the answer: to V2Ray an End is a full
                // close (the half-close bit is a Rayback extension), and
                // HTTP/1.0 ends the answer by closing anyway.
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).await?;
                anyhow::Ok(answer)
            };
            let answer = answer.await;
            (destination, answer)
        });
    }
    let collected = tokio::time::timeout(TIMEOUT, async {
        let mut collected = Vec::new();
        while let Some(answer) = answers.join_next().await {
            collected.push(answer?);
        }
        anyhow::Ok(collected)
    })
    .await
    .with_context(|| format!("no answers within {TIMEOUT:?}"))??;
    let mut failed = 0;
    for (destination, answer) in collected {
        match answer {
            Ok(answer) => {
                let text = String::from_utf8_lossy(&answer);
                let first_line = text
                    .lines()
                    .next()
                    .unwrap_or("(nothing: the target closed)");
                println!("{destination} -> {first_line} ({} bytes)", answer.len());
            }
            Err(error) => {
                failed += 1;
                println!("{destination} -> failed: {error:#}");
            }
        }
    }
    println!(
        "{} sub-streams over one TCP connection to {server}",
        client.total_opened()
    );
    client.close();
    if failed > 0 {
        bail!("{failed} of {} sub-streams failed", targets.len());
    }
    Ok(())
}

/// Serves Mux.Cool on every connection `listener` accepts.
async fn serve(listener: TcpListener) -> Result<()> {
    loop {
        let (tcp, _peer) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        // The connection's tasks run on their own until the peer leaves.
        MuxServer::serve(Box::new(tcp), Arc::new(Answer));
    }
}

/// Answers each sub-stream's request itself, naming its destination.
struct Answer;

#[async_trait]
impl SessionHandler for Answer {
    async fn handle(
        &self,
        destination: Destination,
        _source: Option<SocketAddr>,
        stream: Stream,
    ) -> io::Result<()> {
        let mut stream = BufReader::new(stream);
        let mut request_line = String::new();
        stream.read_line(&mut request_line).await?;
        // The rest of the head, up to the empty line.
        let mut line = String::new();
        while stream.read_line(&mut line).await? > 2 {
            line.clear();
        }
        let body = format!(
            "Rayback's MuxServer in this process got {:?} for {destination}\n",
            request_line.trim_end()
        );
        let answer = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut stream = stream.into_inner();
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    }
}
