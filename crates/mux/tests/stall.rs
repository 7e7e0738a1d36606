//! Head-of-line blocking and bounded memory: one sub-stream whose reader
//! stops, many others moving bulk data on the same connection.
//!
//! ```text
//!   51 senders ──▶ MuxClient ══ duplex ══ MuxServer ──▶ 50 fast readers
//!                                                  └──▶ 1 reader that pauses
//! ```
//!
//! Data is a position-dependent pattern, so every byte is checked where it
//! lands without keeping copies.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use async_trait::async_trait;
use rayback_core::{Address, Destination, Stream};
use rayback_mux::{
    ClientSettings, MuxClient, MuxServer, MuxSettings, ServerHandle, ServerSettings, SessionHandler,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const MIB: usize = 1024 * 1024;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The pattern of stream `seed` at byte `offset`, written into `out`.
fn pattern(seed: u64, offset: usize, out: &mut [u8]) {
    for (i, byte) in out.iter_mut().enumerate() {
        let position = offset + i;
        let word = splitmix(seed.wrapping_mul(1 << 40) ^ (position / 8) as u64);
        *byte = (word >> ((position % 8) * 8)) as u8;
    }
}

/// Reads `len` bytes and checks them against the pattern; records progress.
async fn read_and_check(
    stream: &mut Stream,
    seed: u64,
    len: usize,
    progress: &Progress,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut expected = vec![0u8; 64 * 1024];
    let mut offset = 0;
    while offset < len {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream {seed} ended at {offset}"),
            ));
        }
        pattern(seed, offset, &mut expected[..n]);
        if buf[..n] != expected[..n] {
            return Err(io::Error::other(format!(
                "stream {seed} corrupted near byte {offset}"
            )));
        }
        offset += n;
        progress.note(n);
    }
    Ok(())
}

/// Bytes received by the fast streams, and the longest time nothing moved.
struct Progress {
    started: Instant,
    bytes: AtomicU64,
    last_ms: AtomicU64,
    longest_gap_ms: AtomicU64,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            started: Instant::now(),
            bytes: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            longest_gap_ms: AtomicU64::new(0),
        }
    }

    fn note(&self, n: usize) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_ms.swap(now, Ordering::AcqRel);
        self.longest_gap_ms
            .fetch_max(now.saturating_sub(last), Ordering::AcqRel);
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Server side: stream 0 waits `pause` before reading (or never reads when
/// `pause` is `None`); the others read and check at once.
struct Receiver {
    len: usize,
    /// How many streams are not stream 0.
    fast: usize,
    pause: Option<Duration>,
    progress: Arc<Progress>,
    done: AtomicUsize,
    stalled_result: Mutex<Option<io::Result<()>>>,
}

#[async_trait]
impl SessionHandler for Receiver {
    async fn handle(
        &self,
        destination: Destination,
        _source: Option<std::net::SocketAddr>,
        mut stream: Stream,
    ) -> io::Result<()> {
        let seed = destination.port as u64;
        let result = if seed == 0 {
            match self.pause {
                Some(pause) => {
                    tokio::time::sleep(pause).await;
                    read_and_check(&mut stream, 0, self.len, &Progress::new()).await
                }
                None => {
                    // Reads nothing until every other stream is through,
                    // then finds out what became of its own.
                    while self.done.load(Ordering::SeqCst) < self.fast {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let mut byte = [0u8; 1];
                    stream.read(&mut byte).await.map(drop)
                }
            }
        } else {
            read_and_check(&mut stream, seed, self.len, &self.progress).await
        };
        if seed == 0 {
            *self.stalled_result.lock().unwrap() = Some(result);
        } else {
            result?;
            self.done.fetch_add(1, Ordering::SeqCst);
        }
        // Hold the stream until the sender has seen our data through.
        let mut rest = [0u8; 1];
        let _ = stream.read(&mut rest).await;
        Ok(())
    }
}

async fn send_pattern(client: MuxClient, seed: u64, len: usize) -> io::Result<()> {
    let mut stream = client
        .open(Destination::tcp(
            Address::Domain("bulk.test".into()),
            seed as u16,
        ))
        .await?;
    let mut chunk = vec![0u8; 32 * 1024];
    let mut offset = 0;
    while offset < len {
        let n = chunk.len().min(len - offset);
        pattern(seed, offset, &mut chunk[..n]);
        stream.write_all(&chunk[..n]).await?;
        offset += n;
    }
    // Keep the session open until the receiver ends it (no shutdown).
    let mut rest = [0u8; 1];
    let _ = stream.read(&mut rest).await;
    Ok(())
}

/// Samples the connection's buffered-bytes gauges; returns the maximum.
fn watch_gauges(client: MuxClient, server: ServerHandle) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut max = 0;
        while !server.is_closed() {
            max = max.max(client.buffered_bytes() + server.buffered_bytes());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        max
    })
}

struct Setup {
    streams: u64,
    len: usize,
    pause: Option<Duration>,
    stall_timeout: Duration,
    /// The client offers per-stream flow control (two Rayback peers).
    flow_control: bool,
}

struct Outcome {
    elapsed: Duration,
    longest_gap: Duration,
    max_buffered: usize,
    receiver: Arc<Receiver>,
    bound: usize,
}

async fn run(setup: Setup) -> Result<Outcome> {
    let mux = MuxSettings {
        stall_timeout: setup.stall_timeout,
        ..MuxSettings::default()
    };
    let offering = MuxSettings {
        offer_flow_control: setup.flow_control,
        ..mux.clone()
    };
    let receiver = Arc::new(Receiver {
        len: setup.len,
        fast: setup.streams as usize - 1,
        pause: setup.pause,
        progress: Arc::new(Progress::new()),
        done: AtomicUsize::new(0),
        stalled_result: Mutex::new(None),
    });
    let (a, b) = tokio::io::duplex(256 * 1024);
    let client = MuxClient::new(
        Box::new(a),
        ClientSettings {
            mux: offering,
            ..ClientSettings::default()
        },
    );
    let server = MuxServer::serve_with(
        Box::new(b),
        receiver.clone(),
        ServerSettings {
            mux: mux.clone(),
            ..ServerSettings::default()
        },
    );
    if setup.flow_control {
        // Until the server's answer comes, the client sends without
        // windows (it cannot know the server will grant any).
        while !client.flow_control() {
            ensure!(!server.is_closed(), "connection died");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let gauge = watch_gauges(client.clone(), server.clone());
    let started = Instant::now();
    let senders: Vec<_> = (0..setup.streams)
        .map(|seed| tokio::spawn(send_pattern(client.clone(), seed, setup.len)))
        .collect();
    let fast = setup.streams as usize - 1;
    while receiver.done.load(Ordering::SeqCst) < fast {
        ensure!(!server.is_closed(), "connection died");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    while receiver.stalled_result.lock().unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.close();
    for sender in senders {
        let _ = sender.await?;
    }
    let max_buffered = gauge.await?;
    let longest_gap =
        Duration::from_millis(receiver.progress.longest_gap_ms.load(Ordering::Acquire));
    // What the design promises: the stalled stream's full receive buffer,
    // the send queue with one write of overshoot, and a couple of frames in
    // flight per busy stream. (The hard worst case, every stream's buffer
    // full at once, is streams x receive_buffer.)
    let bound = mux.receive_buffer
        + mux.send_queue
        + 64 * 1024
        + setup.streams as usize * 2 * mux.max_frame_data;
    Ok(Outcome {
        elapsed,
        longest_gap,
        max_buffered,
        receiver,
        bound,
    })
}

/// Must-show 4: a reader pauses 10 s while 50 others move 16 MiB each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_reader_holds_up_the_others_but_nothing_is_lost() -> Result<()> {
    let outcome = timeout(
        Duration::from_secs(90),
        run(Setup {
            streams: 51,
            len: 16 * MIB,
            pause: Some(Duration::from_secs(10)),
            stall_timeout: Duration::from_secs(30),
            flow_control: false,
        }),
    )
    .await??;
    let stalled = outcome.receiver.stalled_result.lock().unwrap().take();
    ensure!(
        matches!(stalled, Some(Ok(()))),
        "paused stream: {stalled:?}"
    );
    println!(
        "paused-reader: 50 x 16 MiB done in {:?}; others held up at most {:?}; max buffered {} KiB (bound {} KiB)",
        outcome.elapsed,
        outcome.longest_gap,
        outcome.max_buffered / 1024,
        outcome.bound / 1024
    );
    ensure!(
        outcome.max_buffered <= outcome.bound,
        "buffered {} > {}",
        outcome.max_buffered,
        outcome.bound
    );
    // The others were held up by head-of-line blocking, but not past the
    // pause (plus scheduling slack).
    ensure!(
        outcome.longest_gap < Duration::from_secs(12),
        "held up {:?}",
        outcome.longest_gap
    );
    Ok(())
}

/// A reader that never resumes is ended after the stall timeout; the
/// others then finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_reader_is_ended_after_the_stall_timeout() -> Result<()> {
    let outcome = timeout(
        Duration::from_secs(30),
        run(Setup {
            streams: 11,
            len: 4 * MIB,
            pause: None,
            stall_timeout: Duration::from_millis(500),
            flow_control: false,
        }),
    )
    .await??;
    let stalled = outcome.receiver.stalled_result.lock().unwrap().take();
    match stalled {
        Some(Err(error)) => ensure!(
            error.kind() == io::ErrorKind::TimedOut,
            "stuck stream: {error}"
        ),
        other => anyhow::bail!("stuck stream was not ended: {other:?}"),
    }
    println!(
        "stuck-reader: 10 x 4 MiB done in {:?}; others held up at most {:?}; max buffered {} KiB",
        outcome.elapsed,
        outcome.longest_gap,
        outcome.max_buffered / 1024
    );
    ensure!(
        outcome.longest_gap < Duration::from_secs(3),
        "held up {:?}",
        outcome.longest_gap
    );
    ensure!(outcome.max_buffered <= outcome.bound);
    Ok(())
}

/// Between two Rayback peers (per-stream flow control) a reader that
/// reads nothing holds nobody up: the others finish while its bytes wait
/// in a buffer of one window, so the stall rule never ends it (without
/// flow control the test above sees it ended with `TimedOut`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_flow_control_a_stuck_reader_holds_nobody_up() -> Result<()> {
    let outcome = timeout(
        Duration::from_secs(60),
        run(Setup {
            streams: 11,
            len: 4 * MIB,
            pause: None,
            stall_timeout: Duration::from_secs(5),
            flow_control: true,
        }),
    )
    .await??;
    let stalled = outcome.receiver.stalled_result.lock().unwrap().take();
    ensure!(
        matches!(stalled, Some(Ok(()))),
        "the stuck stream was ended: {stalled:?}"
    );
    println!(
        "flow control, stuck reader: 10 x 4 MiB done in {:?}; others held up at most {:?}; max buffered {} KiB",
        outcome.elapsed,
        outcome.longest_gap,
        outcome.max_buffered / 1024
    );
    ensure!(outcome.max_buffered <= outcome.bound);
    Ok(())
}

/// A handler for a test that opens no session.
struct Unused;

#[async_trait]
impl SessionHandler for Unused {
    async fn handle(
        &self,
        _: Destination,
        _source: Option<std::net::SocketAddr>,
        _: Stream,
    ) -> io::Result<()> {
        Ok(())
    }
}

/// A peer that sends frames provoking an answer (Keep for an ID never
/// opened: V2Ray answers End) and never reads must not grow the send queue
/// without bound: once the queue is full the connection stops reading, and
/// the peer's writes stall instead. Both roles.
#[tokio::test]
async fn a_peer_that_never_reads_cannot_grow_the_answer_queue() -> Result<()> {
    let frame = [0u8, 4, 0, 7, 2, 1, 0, 0];
    let batch: Vec<u8> = frame.iter().copied().cycle().take(8 * 10_000).collect();
    let bound = MuxSettings::default().send_queue + 128 * 1024;
    for client in [false, true] {
        let (mut peer, carrier) = tokio::io::duplex(64);
        let server;
        let mux_client;
        let buffered: Box<dyn Fn() -> usize> = if client {
            mux_client = MuxClient::new(Box::new(carrier), ClientSettings::default());
            Box::new(move || mux_client.buffered_bytes())
        } else {
            server = MuxServer::serve_with(
                Box::new(carrier),
                Arc::new(Unused),
                ServerSettings::default(),
            );
            Box::new(move || server.buffered_bytes())
        };
        // 200,000 such frames answer with 1.2 MB of Ends when nothing
        // pushes back; the peer's writes must stall well before that.
        let mut sent = 0;
        for _ in 0..20 {
            match timeout(Duration::from_secs(1), peer.write_all(&batch)).await {
                Ok(written) => {
                    written?;
                    sent += batch.len() / frame.len();
                }
                Err(_) => break,
            }
        }
        ensure!(
            buffered() <= bound,
            "client={client}: {} bytes queued after {sent}+ frames; bound {bound}",
            buffered()
        );
        ensure!(
            sent < 200_000,
            "client={client}: the peer was never pushed back"
        );
    }
    Ok(())
}
