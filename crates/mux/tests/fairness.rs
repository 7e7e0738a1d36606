//! Sharing one connection: a bulk sub-stream beside a paced 1 KiB echo, on
//! a one-thread runtime (what Rayback runs on 1–2 CPU hosts), over a real
//! loopback TCP carrier.
//!
//! ```text
//!   bulk writer  ─┐                              ┌─▶ sink   (port 1)
//!   1 KiB echo   ─┼─▶ MuxClient ══ TCP ══ MuxServer ─▶ echo   (port 2)
//!   bulk reader  ◀┘                              └── source (port 3)
//! ```
//!
//! Before per-batch fair admission, the bulk stream refilled the send queue
//! every time the writer emptied it and the echo waited for seconds.

use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use async_trait::async_trait;
use rayback_core::{Address, Destination, Stream};
use rayback_mux::{ClientSettings, MuxClient, MuxServer, SessionHandler};
use rayback_testkit::fairness::next_send;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const SINK: u16 = 1;
const ECHO: u16 = 2;
const SOURCE: u16 = 3;

/// Sinks, echoes or sources by destination port.
struct Services;

#[async_trait]
impl SessionHandler for Services {
    async fn handle(
        &self,
        destination: Destination,
        _source: Option<std::net::SocketAddr>,
        mut stream: Stream,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        match destination.port {
            SINK => while stream.read(&mut buf).await? > 0 {},
            ECHO => loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                stream.write_all(&buf[..n]).await?;
            },
            _ => loop {
                stream.write_all(&buf).await?;
            },
        }
        Ok(())
    }
}

fn to(port: u16) -> Destination {
    Destination::tcp(Address::Ipv4(Ipv4Addr::LOCALHOST), port)
}

async fn pair() -> Result<MuxClient> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let client_side = TcpStream::connect(listener.local_addr()?).await?;
    let (server_side, _) = listener.accept().await?;
    MuxServer::serve(Box::new(server_side), Arc::new(Services));
    Ok(MuxClient::new(
        Box::new(client_side),
        ClientSettings::default(),
    ))
}

/// Paced 1 KiB exchanges for `window` beside a bulk stream toward `bulk`
/// (sink: upload; source: download), then new sub-streams' first
/// exchanges. Returns (done, planned, worst wait, bulk bytes, worst first
/// exchange of a new sub-stream).
async fn probe_beside(
    bulk: u16,
    window: Duration,
) -> Result<(usize, usize, Duration, u64, Duration)> {
    let client = pair().await?;
    let moved = Arc::new(AtomicU64::new(0));
    let mut bulk_stream = client.open(to(bulk)).await?;
    let counter = Arc::clone(&moved);
    let bulk_task = tokio::spawn(async move {
        let mut buf = vec![0x5au8; 64 * 1024];
        loop {
            let n = if bulk == SINK {
                bulk_stream.write_all(&buf).await.map(|()| buf.len())
            } else {
                bulk_stream.read(&mut buf).await
            };
            match n {
                Ok(n) if n > 0 => counter.fetch_add(n as u64, Ordering::Relaxed),
                _ => break,
            };
        }
    });
    // Let the bulk stream saturate the connection first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = moved.load(Ordering::Relaxed);
    let mut echo = client.open(to(ECHO)).await?;
    // Loose on purpose: the bounds catch starvation, not jitter.
    let interval = Duration::from_millis(20);
    let planned = (window.as_millis() / interval.as_millis()) as usize;
    let started = Instant::now();
    let mut done = 0;
    let mut worst = Duration::ZERO;
    let request: Vec<u8> = (0..1024u32).map(|i| i as u8).collect();
    let mut reply = vec![0u8; request.len()];
    let mut due = started;
    while started.elapsed() < window {
        let sent = Instant::now();
        let exchange = async {
            echo.write_all(&request).await?;
            echo.read_exact(&mut reply).await?;
            io::Result::Ok(())
        };
        let left = window.saturating_sub(started.elapsed()) + Duration::from_millis(500);
        match tokio::time::timeout(left, exchange).await {
            Ok(result) => result.context("echo")?,
            Err(_) => {
                worst = worst.max(sent.elapsed());
                break;
            }
        }
        ensure!(reply == request, "the echo came back altered");
        worst = worst.max(sent.elapsed());
        done += 1;
        // The battery's pacing: never a burst after a slow exchange.
        due = next_send(due, Instant::now(), interval);
        tokio::time::sleep_until(due).await;
    }
    let bulk_bytes = moved.load(Ordering::Relaxed) - before;
    // New connections beside the bulk: New and the first bytes must not
    // queue behind it either.
    let mut worst_new = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let first = async {
            let mut fresh = client.open(to(ECHO)).await?;
            fresh.write_all(&request[..64]).await?;
            fresh.read_exact(&mut reply[..64]).await?;
            anyhow::Ok(())
        };
        tokio::time::timeout(Duration::from_secs(2), first)
            .await
            .context("a new sub-stream's first echo took over 2 s beside the bulk")??;
        ensure!(
            reply[..64] == request[..64],
            "a new sub-stream's echo came back altered"
        );
        worst_new = worst_new.max(started.elapsed());
        tokio::time::sleep(interval).await;
    }
    bulk_task.abort();
    Ok((done, planned, worst, bulk_bytes, worst_new))
}

async fn check(bulk: u16) -> Result<()> {
    let (done, planned, worst, bulk_bytes, worst_new) =
        probe_beside(bulk, Duration::from_secs(2)).await?;
    eprintln!(
        "bulk toward port {bulk}: {done} of {planned} exchanges, worst {worst:?}, \
         bulk {} MB during the probe; new sub-streams' first echo at worst {worst_new:?}",
        bulk_bytes / 1_000_000
    );
    ensure!(
        bulk_bytes >= 20_000_000,
        "the bulk stream moved only {bulk_bytes} bytes: the test would prove nothing"
    );
    ensure!(
        done * 10 >= planned * 8,
        "only {done} of {planned} paced exchanges beside the bulk stream"
    );
    ensure!(
        worst <= Duration::from_millis(500),
        "an exchange waited {worst:?} beside the bulk stream"
    );
    ensure!(
        worst_new <= Duration::from_millis(500),
        "a new sub-stream's first echo waited {worst_new:?} beside the bulk stream"
    );
    Ok(())
}

/// Both directions in one test, one after the other: two saturating pairs
/// at once would share the machine's CPUs and measure each other.
#[tokio::test]
async fn an_echo_beside_a_bulk_stream_is_not_starved_either_way() -> Result<()> {
    check(SINK).await?;
    check(SOURCE).await
}
