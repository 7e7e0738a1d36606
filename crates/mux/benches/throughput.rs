//! Session-layer throughput: bulk data through MuxClient → duplex →
//! MuxServer (the handler drains it), for one sub-stream and for 16 at
//! once. Measures the mux machinery (queueing, batching, framing, receive
//! buffers), not a network.
//!
//! Run: `cargo bench -p rayback-mux --bench throughput`.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayback_core::{Address, Destination, Stream};
use rayback_mux::{ClientSettings, MuxClient, MuxServer, SessionHandler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOTAL: usize = 64 * 1024 * 1024;

/// Reads the MiB count named by the port, then answers one byte so the
/// sender knows.
struct Drain;

#[async_trait]
impl SessionHandler for Drain {
    async fn handle(
        &self,
        destination: Destination,
        _source: Option<std::net::SocketAddr>,
        mut stream: Stream,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        let want = destination.port as usize * 1024 * 1024;
        while total < want {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            total += n;
        }
        stream.write_all(b"k").await?;
        stream.shutdown().await
    }
}

async fn send(client: MuxClient, mib: usize) {
    let mut stream = client
        .open(Destination::tcp(
            Address::Domain("bench".into()),
            mib as u16,
        ))
        .await
        .unwrap();
    let chunk = vec![0x5au8; 32 * 1024];
    let mut sent = 0;
    while sent < mib * 1024 * 1024 {
        stream.write_all(&chunk).await.unwrap();
        sent += chunk.len();
    }
    let mut ack = [0u8; 1];
    stream.read_exact(&mut ack).await.unwrap();
}

fn throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("mux_session");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(TOTAL as u64));
    for streams in [1usize, 16] {
        group.bench_function(format!("{streams}_streams_64MiB"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let (a, z) = tokio::io::duplex(256 * 1024);
                    let client = MuxClient::new(Box::new(a), ClientSettings::default());
                    let _server = MuxServer::serve(Box::new(z), Arc::new(Drain));
                    let per_stream_mib = TOTAL / streams / (1024 * 1024);
                    let tasks: Vec<_> = (0..streams)
                        .map(|_| tokio::spawn(send(client.clone(), per_stream_mib)))
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                    client.close();
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
