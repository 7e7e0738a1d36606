//! Fairness probe: how long a small paced exchange waits when a bulk
//! transfer shares its tunnel.
//!
//! ```text
//! bulk (S: upload, D: download) ─┐
//!                                ├─▶ public ═ one tunnel ═▶ fairness_backend
//! paced 1 KiB echo (E, or UDP) ──┘
//! ```
//!
//! [`fairness_backend`] serves one port on 127.0.0.1 for TCP and UDP; a TCP
//! connection's first byte picks its mode:
//!
//! | first byte | mode | what the backend does |
//! |---|---|---|
//! | `E` | echo | writes back everything that follows |
//! | `S` | sink | reads and discards until end of stream |
//! | `D` | source | writes seeded bytes in 64 KiB writes until the peer closes |
//! | (UDP) | echo | sends every datagram back to its sender |
//!
//! [`measure_fairness`] starts the bulk connection (if any), lets it run
//! for [`BULK_WARM_UP`] so that it saturates the tunnel, then runs one
//! paced probe for [`FairnessPlan::duration`]: every
//! [`FairnessPlan::interval`] it sends [`FairnessPlan::size`] seeded bytes
//! and waits for exactly those bytes back, one exchange at a time. The
//! next one is due an interval after the previous one was due, or at once
//! if the previous one took longer (never a burst to catch up), so a stalled
//! tunnel shows as fewer exchanges done, not as a queue of them: as the
//! issue measured it, an exchange costs `max(interval, its latency)`. It
//! measures; judging the figures is the caller's job.
//!
//! Loopback only, and every wait is bounded: by the probe window, by
//! [`CONNECT_TIMEOUT`], or by [`UDP_LOSS_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::Instant;

use crate::seeded_bytes;

/// Write and read size of the bulk transfers, both at the backend and at
/// the probe's bulk client.
const BULK_CHUNK: usize = 64 * 1024;

/// How long the bulk runs before the probe starts, so that the tunnel's
/// queues are full when the first exchange is sent.
pub const BULK_WARM_UP: Duration = Duration::from_millis(300);

/// Limit for opening a TCP connection to the public port.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A UDP datagram whose echo has not come back after this long is lost:
/// the probe counts it as not done and sends the next one.
pub const UDP_LOSS_TIMEOUT: Duration = Duration::from_secs(1);

/// First byte of a TCP connection to [`fairness_backend`]: echo.
pub const MODE_ECHO: u8 = b'E';
/// First byte of a TCP connection to [`fairness_backend`]: sink.
pub const MODE_SINK: u8 = b'S';
/// First byte of a TCP connection to [`fairness_backend`]: source.
pub const MODE_SOURCE: u8 = b'D';

/// The bulk transfer beside the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bulk {
    /// No bulk transfer: the tunnel is idle but for the probe.
    None,
    /// Client to backend (`S`): the public side writes as fast as it can.
    Upload,
    /// Backend to client (`D`): the public side reads as fast as it can.
    Download,
}

/// The paced exchange whose waits are measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// One keep-alive TCP connection (`E`), one exchange in flight at a time.
    Tcp,
    /// One UDP socket, one datagram in flight at a time, its sequence
    /// number in its first 8 bytes.
    Udp,
}

/// What [`measure_fairness`] does.
#[derive(Clone, Debug)]
pub struct FairnessPlan {
    /// The tunnel's public address (or the backend itself, as a baseline).
    pub public: SocketAddr,
    pub bulk: Bulk,
    pub probe: Probe,
    /// Length of the probe window; the bulk's bytes are counted over it.
    pub duration: Duration,
    /// Pace of the probe: one exchange may start at every multiple of it.
    pub interval: Duration,
    /// Bytes per exchange (for UDP, per datagram, at least 8).
    pub size: usize,
}

impl FairnessPlan {
    /// A 1 KiB exchange every 10 ms for `duration`.
    pub fn new(public: SocketAddr, bulk: Bulk, probe: Probe, duration: Duration) -> FairnessPlan {
        FairnessPlan {
            public,
            bulk,
            probe,
            duration,
            interval: Duration::from_millis(10),
            size: 1024,
        }
    }
}

/// What one [`measure_fairness`] run saw.
#[derive(Clone, Debug, PartialEq)]
pub struct FairnessReport {
    /// Ticks in the window (`duration / interval`): the exchanges a probe
    /// that never waits would complete.
    pub planned: usize,
    /// Exchanges whose bytes came back complete and unaltered in the window.
    pub done: usize,
    /// UDP datagrams given up after [`UDP_LOSS_TIMEOUT`] (always 0 for TCP).
    /// They are not done; their latency is the time given up after.
    pub lost: usize,
    /// Median, 99th percentile (nearest rank) and maximum of the latencies,
    /// in ms: those of the completed exchanges, of lost datagrams (the
    /// loss timeout) and, for an exchange still waiting when the window
    /// closed, its wait so far. NaN when there is no latency at all.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Bytes the bulk moved during the probe window (an upload counts what
    /// the client's socket accepted; kernel buffers blur that by a few MiB).
    pub bulk_bytes: u64,
    pub bulk_gbit_s: f64,
}

impl FairnessReport {
    /// `done` as a percentage of `planned`.
    pub fn done_percent(&self) -> f64 {
        if self.planned == 0 {
            0.0
        } else {
            self.done as f64 * 100.0 / self.planned as f64
        }
    }
}

impl std::fmt::Display for FairnessReport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "done {} of {} ({:.0}%), lost {}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, bulk {:.1} MB ({:.2} Gbit/s)",
            self.done,
            self.planned,
            self.done_percent(),
            self.lost,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.bulk_bytes as f64 / 1e6,
            self.bulk_gbit_s
        )
    }
}

/// The backend of the fairness probe on 127.0.0.1 (one port for TCP and
/// UDP; see the module docs for the modes). Runs until the runtime ends.
pub async fn fairness_backend() -> Result<SocketAddr> {
    let (listener, udp) = bind_tcp_and_udp().await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve_fairness(socket));
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((read, from)) = udp.recv_from(&mut buf).await {
            // A datagram that cannot go back is the probe's loss to count.
            let _ = udp.send_to(&buf[..read], from).await;
        }
    });
    Ok(addr)
}

/// A TCP listener and a UDP socket on the same free port of 127.0.0.1.
async fn bind_tcp_and_udp() -> Result<(TcpListener, UdpSocket)> {
    let mut last_error = None;
    for _ in 0..20 {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        match UdpSocket::bind(listener.local_addr()?).await {
            Ok(udp) => return Ok((listener, udp)),
            // Someone holds that UDP port: try another TCP port.
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.map_or_else(|| anyhow::anyhow!("no port"), anyhow::Error::from))
        .context("no port of 127.0.0.1 was free for both TCP and UDP in 20 tries")
}

async fn serve_fairness(mut socket: TcpStream) -> Result<()> {
    socket.set_nodelay(true)?;
    let mut mode = [0u8; 1];
    if socket.read(&mut mode).await? == 0 {
        return Ok(());
    }
    match mode[0] {
        MODE_ECHO => {
            let (mut reader, mut writer) = socket.split();
            tokio::io::copy(&mut reader, &mut writer).await?;
            writer.shutdown().await?;
        }
        MODE_SINK => {
            let mut buf = vec![0u8; BULK_CHUNK];
            while socket.read(&mut buf).await? > 0 {}
            socket.shutdown().await?;
        }
        MODE_SOURCE => {
            let chunk = seeded_bytes(0xD0D0, BULK_CHUNK);
            let (mut reader, mut writer) = socket.into_split();
            // The peer's end of stream, or an error, stops the writes; so
            // does a write error (the peer reset).
            let mut closed = tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(reader.read(&mut buf).await, Ok(read) if read > 0) {}
            });
            loop {
                tokio::select! {
                    written = writer.write_all(&chunk) => written?,
                    _ = &mut closed => break,
                }
            }
            closed.abort();
        }
        other => bail!("unknown mode byte {other:#04x}"),
    }
    Ok(())
}

/// Runs the bulk (if any) and the paced probe of `plan` through
/// `plan.public`, then stops the bulk. Fails when a connection cannot be
/// opened, when bytes come back altered, or when the bulk ends before the
/// window does; slow or missing answers are figures, not errors.
pub async fn measure_fairness(plan: &FairnessPlan) -> Result<FairnessReport> {
    if plan.interval.is_zero() || plan.duration < plan.interval {
        bail!(
            "the probe window ({:?}) must hold at least one interval ({:?})",
            plan.duration,
            plan.interval
        );
    }
    if plan.probe == Probe::Udp && plan.size < 8 {
        bail!(
            "a UDP probe needs at least 8 bytes per datagram, not {}",
            plan.size
        );
    }
    let counter = Arc::new(AtomicU64::new(0));
    let bulk = BulkTask::start(plan.public, plan.bulk, counter.clone()).await?;
    if bulk.is_some() {
        tokio::time::sleep(BULK_WARM_UP).await;
    }
    let outcome = probe_window(plan, &counter).await;
    if let Some(bulk) = bulk {
        if let Some(error) = bulk.stop().await {
            return Err(error.context("the bulk connection ended before the probe window closed"));
        }
    }
    outcome
}

async fn probe_window(plan: &FairnessPlan, counter: &AtomicU64) -> Result<FairnessReport> {
    let mut probe = ProbeConnection::open(plan).await?;
    let bytes_before = counter.load(Ordering::Relaxed);
    let start = Instant::now();
    let end = start + plan.duration;
    let planned = planned_exchanges(plan.duration, plan.interval);
    let mut latencies = Vec::with_capacity(planned);
    let (mut done, mut lost) = (0, 0);
    let mut sequence = 0;
    let mut send_at = start;
    while send_at < end && done + lost < planned {
        tokio::time::sleep_until(send_at).await;
        let sent = Instant::now();
        match probe.exchange(sequence, plan.size, end).await? {
            Outcome::Done => {
                done += 1;
                latencies.push(ms(sent.elapsed()));
            }
            Outcome::Lost => {
                // It waited that long for nothing: the worst case counts it.
                lost += 1;
                latencies.push(ms(sent.elapsed()));
            }
            Outcome::WindowClosed => {
                latencies.push(ms(end.saturating_duration_since(sent)));
                break;
            }
        }
        sequence += 1;
        send_at = next_send(send_at, Instant::now(), plan.interval);
    }
    tokio::time::sleep_until(end).await;
    let bulk_bytes = counter.load(Ordering::Relaxed) - bytes_before;
    let window = plan.duration.as_secs_f64();
    let (p50_ms, p99_ms, max_ms) = summarize(&latencies);
    Ok(FairnessReport {
        planned,
        done,
        lost,
        p50_ms,
        p99_ms,
        max_ms,
        bulk_bytes,
        bulk_gbit_s: bulk_bytes as f64 * 8.0 / window / 1e9,
    })
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Ticks of `interval` that start inside a window of `duration`.
pub fn planned_exchanges(duration: Duration, interval: Duration) -> usize {
    (duration.as_nanos() / interval.as_nanos().max(1)) as usize
}

/// When to send the next exchange: an interval after the previous one was
/// due (`previous`: when it was scheduled, so that a timer firing late
/// does not slow the pace), or `now` if that has passed (an overrun is not
/// caught up later).
pub fn next_send(previous: Instant, now: Instant, interval: Duration) -> Instant {
    (previous + interval).max(now)
}

/// The nearest-rank percentile `p` (0 < p <= 100) of `values`; NaN when
/// there are none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// (p50, p99, max) of `latencies`, NaN for none.
pub fn summarize(latencies: &[f64]) -> (f64, f64, f64) {
    (
        percentile(latencies, 50.0),
        percentile(latencies, 99.0),
        percentile(latencies, 100.0),
    )
}

/// How one exchange ended.
enum Outcome {
    Done,
    /// UDP only: no echo within [`UDP_LOSS_TIMEOUT`].
    Lost,
    /// Still waiting when the probe window closed.
    WindowClosed,
}

/// The probe's one connection.
enum ProbeConnection {
    Tcp(TcpStream),
    Udp {
        socket: UdpSocket,
        public: SocketAddr,
    },
}

impl ProbeConnection {
    async fn open(plan: &FairnessPlan) -> Result<ProbeConnection> {
        Ok(match plan.probe {
            Probe::Tcp => {
                let mut socket = connect(plan.public).await?;
                socket.write_all(&[MODE_ECHO]).await?;
                ProbeConnection::Tcp(socket)
            }
            Probe::Udp => ProbeConnection::Udp {
                socket: UdpSocket::bind("127.0.0.1:0").await?,
                public: plan.public,
            },
        })
    }

    /// Sends exchange `index`'s `size` seeded bytes and waits for them to
    /// come back, at most until `end`.
    async fn exchange(&mut self, index: u32, size: usize, end: Instant) -> Result<Outcome> {
        let seed = 0xFA1E_0000 + u64::from(index);
        match self {
            ProbeConnection::Tcp(socket) => {
                let data = seeded_bytes(seed, size);
                let mut got = vec![0u8; size];
                let (mut reader, mut writer) = socket.split();
                let exchange = async {
                    tokio::try_join!(writer.write_all(&data), reader.read_exact(&mut got))
                };
                match tokio::time::timeout_at(end, exchange).await {
                    Err(_) => Ok(Outcome::WindowClosed),
                    Ok(Err(error)) => {
                        Err(error).with_context(|| format!("probe exchange {index} over TCP"))
                    }
                    Ok(Ok(_)) if got != data => {
                        bail!("probe exchange {index}: {size} bytes came back altered")
                    }
                    Ok(Ok(_)) => Ok(Outcome::Done),
                }
            }
            ProbeConnection::Udp { socket, public } => {
                let mut data = seeded_bytes(seed, size);
                data[..8].copy_from_slice(&u64::from(index).to_be_bytes());
                socket.send_to(&data, *public).await?;
                let lost_at = Instant::now() + UDP_LOSS_TIMEOUT;
                let mut buf = vec![0u8; size.max(65_536)];
                loop {
                    let deadline = lost_at.min(end);
                    let received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf));
                    let (read, from) = match received.await {
                        Err(_) if lost_at < end => return Ok(Outcome::Lost),
                        Err(_) => return Ok(Outcome::WindowClosed),
                        Ok(received) => received?,
                    };
                    // Late echoes of earlier (lost) datagrams and strays are
                    // not this exchange's answer.
                    if from != *public || read < 8 || buf[..8] != data[..8] {
                        continue;
                    }
                    if buf[..read] != data[..] {
                        bail!(
                            "probe datagram {index}: {size} bytes came back as {read} other bytes"
                        );
                    }
                    return Ok(Outcome::Done);
                }
            }
        }
    }
}

async fn connect(public: SocketAddr) -> Result<TcpStream> {
    let socket = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(public))
        .await
        .with_context(|| format!("connecting to {public} took over {CONNECT_TIMEOUT:?}"))?
        .with_context(|| format!("connecting to {public}"))?;
    socket.set_nodelay(true)?;
    Ok(socket)
}

/// The bulk connection's task, counting the bytes it moves.
struct BulkTask {
    task: tokio::task::JoinHandle<Result<()>>,
}

impl BulkTask {
    /// Opens the bulk connection of kind `bulk` (none for [`Bulk::None`])
    /// and starts moving bytes, adding each chunk to `counter`.
    async fn start(
        public: SocketAddr,
        bulk: Bulk,
        counter: Arc<AtomicU64>,
    ) -> Result<Option<BulkTask>> {
        let mode = match bulk {
            Bulk::None => return Ok(None),
            Bulk::Upload => MODE_SINK,
            Bulk::Download => MODE_SOURCE,
        };
        let mut socket = connect(public).await?;
        socket.write_all(&[mode]).await?;
        let task = if bulk == Bulk::Upload {
            tokio::spawn(async move {
                let chunk = seeded_bytes(0x5151, BULK_CHUNK);
                loop {
                    socket.write_all(&chunk).await?;
                    counter.fetch_add(BULK_CHUNK as u64, Ordering::Relaxed);
                }
            })
        } else {
            tokio::spawn(async move {
                let mut buf = vec![0u8; BULK_CHUNK];
                loop {
                    let read = socket.read(&mut buf).await?;
                    if read == 0 {
                        bail!("the download reached its end of stream");
                    }
                    counter.fetch_add(read as u64, Ordering::Relaxed);
                }
            })
        };
        Ok(Some(BulkTask { task }))
    }

    /// Stops the bulk at once (its socket closes with the aborted task);
    /// returns why it had already stopped by itself, if it had.
    async fn stop(self) -> Option<anyhow::Error> {
        if self.task.is_finished() {
            return match self.task.await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error),
                Err(error) => Some(error.into()),
            };
        }
        self.task.abort();
        let _ = self.task.await;
        None
    }
}

/// Waits until an echo through `public` (mode `E`) comes back intact;
/// returns how long that took. Each try is bounded by 3 s, all by `limit`.
pub async fn wait_echo(public: SocketAddr, limit: Duration) -> Result<Duration> {
    let started = std::time::Instant::now();
    let data = seeded_bytes(0xEC40, 1024);
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(3), async {
            let mut socket = connect(public).await?;
            socket.write_all(&[MODE_ECHO]).await?;
            socket.write_all(&data).await?;
            let mut got = vec![0u8; data.len()];
            socket.read_exact(&mut got).await?;
            anyhow::ensure!(got == data, "the echo came back altered");
            anyhow::Ok(())
        })
        .await;
        match attempt {
            Ok(Ok(())) => return Ok(started.elapsed()),
            _ if started.elapsed() < limit => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(Err(error)) => bail!("no echo through {public} within {limit:?}: {error:#}"),
            Err(_) => {
                bail!("no echo through {public} within {limit:?}: the last try took over 3 s")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 50.0), 50.0);
        assert_eq!(percentile(&hundred, 99.0), 99.0);
        assert_eq!(percentile(&hundred, 100.0), 100.0);
        assert_eq!(summarize(&[3.0, 1.0, 2.0]), (2.0, 3.0, 3.0));
        assert_eq!(summarize(&[7.0]), (7.0, 7.0, 7.0));
        assert!(percentile(&[], 99.0).is_nan());
        // One stall among 400 fast exchanges is above p99 but is the max.
        let mut stalled = vec![1.0; 399];
        stalled.push(2700.0);
        assert_eq!(summarize(&stalled), (1.0, 1.0, 2700.0));
    }

    #[test]
    fn the_next_exchange_is_paced_from_the_last_one_and_never_bursts() {
        let ten = Duration::from_millis(10);
        let sent = Instant::now();
        // Quick answer: an interval after the last one was due.
        assert_eq!(
            next_send(sent, sent + Duration::from_millis(3), ten),
            sent + ten
        );
        // Overran: at once, and only one.
        let late = sent + Duration::from_millis(25);
        assert_eq!(next_send(sent, late, ten), late);
        assert_eq!(planned_exchanges(Duration::from_secs(4), ten), 400);
        assert_eq!(planned_exchanges(Duration::from_millis(15), ten), 1);
    }

    #[test]
    fn done_percent_and_display() {
        let report = FairnessReport {
            planned: 400,
            done: 24,
            lost: 0,
            p50_ms: 45.6,
            p99_ms: 694.0,
            max_ms: 2692.0,
            bulk_bytes: 3_720_000_000,
            bulk_gbit_s: 7.44,
        };
        assert_eq!(report.done_percent(), 6.0);
        assert_eq!(
            report.to_string(),
            "done 24 of 400 (6%), lost 0, p50 45.6 ms, p99 694.0 ms, max 2692.0 ms, bulk 3720.0 MB (7.44 Gbit/s)"
        );
    }

    fn quick_plan(public: SocketAddr, bulk: Bulk, probe: Probe) -> FairnessPlan {
        FairnessPlan::new(public, bulk, probe, Duration::from_millis(300))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_probes_complete_beside_each_bulk() {
        let backend = fairness_backend().await.unwrap();
        wait_echo(backend, Duration::from_secs(5)).await.unwrap();
        for (bulk, probe) in [
            (Bulk::None, Probe::Tcp),
            (Bulk::Upload, Probe::Tcp),
            (Bulk::Download, Probe::Tcp),
            (Bulk::Upload, Probe::Udp),
        ] {
            let report = measure_fairness(&quick_plan(backend, bulk, probe))
                .await
                .unwrap();
            eprintln!("{bulk:?} + {probe:?}: {report}");
            assert_eq!(report.planned, 30);
            assert!(report.done >= 10, "{bulk:?} + {probe:?}: {report}");
            assert!(report.max_ms.is_finite());
            if bulk == Bulk::None {
                assert_eq!(report.bulk_bytes, 0);
            } else {
                assert!(report.bulk_bytes > 0, "{bulk:?}: {report}");
            }
        }
    }

    #[tokio::test]
    async fn a_silent_peer_is_a_latency_not_a_hang() {
        // A listener that accepts and never answers: the one exchange
        // waits out the window, which closes on time.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let public = listener.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let started = std::time::Instant::now();
        let report = measure_fairness(&quick_plan(public, Bulk::None, Probe::Tcp))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(report.done, 0);
        assert!(report.max_ms >= 250.0, "{report}");
        // A UDP port that never echoes: every datagram is lost or cut off.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let plan = quick_plan(silent.local_addr().unwrap(), Bulk::None, Probe::Udp);
        let report = measure_fairness(&plan).await.unwrap();
        assert_eq!((report.done, report.lost), (0, 0));
        assert!(report.max_ms >= 250.0, "{report}");
    }
}
