//! The cost of a sub-stream's life: open, 1 KiB there and back, both
//! sides' End, release. It is what a new public connection costs the mux
//! (the "HTTP 1 KiB new conn" and "first byte" rows of `cargo xtask
//! bench`), without sockets, on one thread as a 2-CPU Rayback runs.
//!
//! Run: `cargo bench -p rayback-mux --bench sessions`.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayback_core::{Address, Destination, Stream};
use rayback_mux::{ClientSettings, MuxClient, MuxServer, SessionHandler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sub-streams per measured iteration.
const SESSIONS: usize = 100;
/// Sub-streams alive at once.
const CONCURRENT: usize = 10;

/// Echoes until the peer's End, then ends too.
struct Echo;

#[async_trait]
impl SessionHandler for Echo {
    async fn handle(
        &self,
        _: Destination,
        _source: Option<std::net::SocketAddr>,
        mut stream: Stream,
    ) -> io::Result<()> {
        let mut buf = [0u8; 2048];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return stream.shutdown().await;
            }
            stream.write_all(&buf[..n]).await?;
        }
    }
}

async fn one_session(client: &MuxClient) {
    let destination = Destination::tcp(Address::Domain("bench".into()), 80);
    let mut stream = client.open(destination).await.unwrap();
    let request = [0x5au8; 1024];
    stream.write_all(&request).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut echoed = Vec::with_capacity(1024);
    stream.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(echoed.len(), request.len());
}

fn sessions(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client, _server) = runtime.block_on(async {
        let (a, z) = tokio::io::duplex(256 * 1024);
        let client = MuxClient::new(Box::new(a), ClientSettings::default());
        let server = MuxServer::serve(Box::new(z), Arc::new(Echo));
        (client, server)
    });
    let mut group = c.benchmark_group("mux_sessions");
    group.throughput(Throughput::Elements(SESSIONS as u64));
    group.bench_function(
        format!("open_echo_1k_close_x{SESSIONS}_{CONCURRENT}_at_once"),
        |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let tasks: Vec<_> = (0..CONCURRENT)
                        .map(|_| {
                            let client = client.clone();
                            tokio::spawn(async move {
                                for _ in 0..SESSIONS / CONCURRENT {
                                    one_session(&client).await;
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                })
            })
        },
    );
    group.finish();
}

criterion_group!(benches, sessions);
criterion_main!(benches);
