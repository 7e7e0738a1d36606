//! A fault relay: a TCP proxy on 127.0.0.1 placed between two peers (in the
//! battery, between a bridge and its portal's tunnel port) that injects
//! faults on command, plus sentinel listeners that count accepts.
//!
//! ```text
//! dialler ──▶ FaultRelay (127.0.0.1:port) ──▶ target
//!             "up" = dialler → target, "down" = target → dialler
//! ```
//!
//! | command | effect |
//! |---|---|
//! | [`FaultRelay::reset_all`] | every live connection: SO_LINGER 0 on both sockets, then closed (RST both ways) |
//! | [`FaultRelay::half_close`] | every live connection: FIN in one direction, the other keeps flowing |
//! | [`FaultRelay::blackhole`] | every live connection: bytes read both ways are dropped, nothing is closed (not even when a peer closes); new connections are not affected |
//! | [`FaultRelay::set_delay`] | every chunk (any connection) waits this long before it is forwarded |
//! | [`FaultRelay::set_throttle`] | each direction of each connection moves at most this many bytes per second |
//! | [`FaultRelay::flip_bit`] | one bit at a random offset within the next N bytes of a direction is inverted |
//!
//! The relay also keeps the first [`CAPTURE_BYTES`] bytes each connection
//! sent up (to replay a handshake). It is not a general proxy: no
//! back-pressure tricks, one task per direction, a 16 KiB buffer each.
//! Everything it spawns runs on the caller's runtime and stops when the
//! relay is dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How many leading bytes of each connection's up direction are kept.
pub const CAPTURE_BYTES: usize = 4096;

/// Chunk size of each direction's copy.
const CHUNK: usize = 16 * 1024;

/// A direction through the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the dialler to the target.
    Up,
    /// From the target back to the dialler.
    Down,
}

/// What one live connection is told to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Forward,
    Blackhole,
    Reset,
    /// FIN in this direction.
    HalfClose(Direction),
}

struct FlipPlan {
    direction: Direction,
    /// Bytes of `direction` still to pass before the flipped one.
    offset: usize,
}

struct Shared {
    target: SocketAddr,
    delay_ms: AtomicU64,
    /// Bytes per second per direction; 0 = unlimited.
    throttle: AtomicU64,
    flip: Mutex<Option<FlipPlan>>,
    flips_done: AtomicUsize,
    accepted: AtomicUsize,
    live: Mutex<Vec<watch::Sender<Mode>>>,
    captures: Mutex<Vec<Vec<u8>>>,
}

/// A TCP relay on 127.0.0.1 that injects faults on command. Stops (and
/// drops every connection) when dropped.
pub struct FaultRelay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: JoinHandle<()>,
}

impl FaultRelay {
    /// Listens on 127.0.0.1 (port 0) and forwards each connection to
    /// `target`.
    pub async fn start(target: SocketAddr) -> Result<FaultRelay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            delay_ms: AtomicU64::new(0),
            throttle: AtomicU64::new(0),
            flip: Mutex::new(None),
            flips_done: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            live: Mutex::new(Vec::new()),
            captures: Mutex::new(Vec::new()),
        });
        let acceptor = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(FaultRelay {
            addr,
            shared,
            acceptor,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections still relaying (or blackholed).
    pub fn live(&self) -> usize {
        let mut live = lock(&self.shared.live);
        live.retain(|sender| !sender.is_closed());
        live.len()
    }

    /// Resets every live connection (RST to both peers).
    pub fn reset_all(&self) {
        self.command(Mode::Reset);
    }

    /// Sends FIN in `direction` on every live connection.
    pub fn half_close(&self, direction: Direction) {
        self.command(Mode::HalfClose(direction));
    }

    /// Stops forwarding on every live connection, both ways, without
    /// closing anything. Connections accepted later forward normally.
    pub fn blackhole(&self) {
        self.command(Mode::Blackhole);
    }

    /// Delays every forwarded chunk by `delay` (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Limits each direction of each connection to `bytes_per_second`
    /// (0: unlimited).
    pub fn set_throttle(&self, bytes_per_second: u64) {
        self.shared
            .throttle
            .store(bytes_per_second, Ordering::SeqCst);
    }

    /// Inverts one bit at a random offset among the next `within` bytes
    /// that flow in `direction` (on whichever connection carries them).
    pub fn flip_bit(&self, direction: Direction, within: usize) {
        let offset = rand::thread_rng().gen_range(0..within.max(1));
        *lock(&self.shared.flip) = Some(FlipPlan { direction, offset });
    }

    /// How many bits have been flipped so far.
    pub fn flips_done(&self) -> usize {
        self.shared.flips_done.load(Ordering::SeqCst)
    }

    /// The first bytes (up to [`CAPTURE_BYTES`]) each connection sent up,
    /// in accept order.
    pub fn captured(&self) -> Vec<Vec<u8>> {
        lock(&self.shared.captures).clone()
    }

    fn command(&self, mode: Mode) {
        let mut live = lock(&self.shared.live);
        live.retain(|sender| sender.send(mode).is_ok());
        if mode == Mode::Reset {
            // Those connections are gone.
            live.clear();
        }
    }
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.command(Mode::Reset);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(shared.target).await else {
                let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mode_tx, mode_rx) = watch::channel(Mode::Forward);
            lock(&shared.live).push(mode_tx);
            let capture = {
                let mut captures = lock(&shared.captures);
                captures.push(Vec::new());
                captures.len() - 1
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = tokio::spawn(pump(
                Direction::Up,
                client_read,
                server_write,
                mode_rx.clone(),
                shared.clone(),
                Some(capture),
            ));
            let down = tokio::spawn(pump(
                Direction::Down,
                server_read,
                client_write,
                mode_rx,
                shared,
                None,
            ));
            let _ = tokio::join!(up, down);
        });
    }
}

/// Copies one direction, obeying the connection's mode and the relay's
/// settings.
async fn pump(
    direction: Direction,
    mut reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    shared: Arc<Shared>,
    capture: Option<usize>,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut forwarding = true;
    loop {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Reset => return abort(reader, writer),
            Mode::Blackhole => forwarding = false,
            Mode::HalfClose(closed) if closed == direction && forwarding => {
                let _ = writer.shutdown().await;
                forwarding = false;
            }
            _ => {}
        }
        let read = tokio::select! {
            changed = mode.changed() => {
                if changed.is_err() {
                    // The relay is gone: stop.
                    return;
                }
                continue;
            }
            read = reader.read(&mut buf) => read,
        };
        let read = match read {
            Ok(0) | Err(_) if current == Mode::Blackhole => {
                // A blackhole closes nothing: wait for a reset or the end.
                if mode.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Ok(0) | Err(_) => {
                let _ = writer.shutdown().await;
                return;
            }
            Ok(read) => read,
        };
        if !forwarding {
            continue;
        }
        if let Some(index) = capture {
            let mut captures = lock(&shared.captures);
            if let Some(kept) = captures.get_mut(index) {
                let room = CAPTURE_BYTES.saturating_sub(kept.len()).min(read);
                kept.extend_from_slice(&buf[..room]);
            }
        }
        {
            let mut flip = lock(&shared.flip);
            if let Some(plan) = flip.as_mut().filter(|plan| plan.direction == direction) {
                if plan.offset < read {
                    let bit = rand::thread_rng().gen_range(0..8);
                    buf[plan.offset] ^= 1 << bit;
                    *flip = None;
                    shared.flips_done.fetch_add(1, Ordering::SeqCst);
                } else {
                    plan.offset -= read;
                }
            }
        }
        let delay = shared.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let written = tokio::select! {
            written = writer.write_all(&buf[..read]) => written,
            _ = reset_requested(&mut mode) => return abort(reader, writer),
        };
        if written.is_err() {
            return;
        }
        let rate = shared.throttle.load(Ordering::SeqCst);
        if rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(read as f64 / rate as f64)).await;
        }
    }
}

/// Closes both sockets with SO_LINGER 0 (an RST), without the FIN that
/// dropping a write half would send first.
fn abort(reader: OwnedReadHalf, writer: OwnedWriteHalf) {
    let _ = socket2::SockRef::from(reader.as_ref()).set_linger(Some(Duration::ZERO));
    let _ = socket2::SockRef::from(writer.as_ref()).set_linger(Some(Duration::ZERO));
    writer.forget();
    drop(reader);
}

/// Resolves once the connection is told to reset (or the relay is gone);
/// other mode changes wait for the write in progress.
async fn reset_requested(mode: &mut watch::Receiver<Mode>) {
    loop {
        if *mode.borrow() == Mode::Reset || mode.changed().await.is_err() {
            return;
        }
    }
}

/// A listener on 127.0.0.1 that counts the connections it accepts (and
/// closes them), to prove that nothing dialled it.
pub struct Sentinel {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Sentinel {
    pub async fn start() -> Result<Sentinel> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepts = Arc::new(AtomicUsize::new(0));
        let counter = accepts.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        Ok(Sentinel {
            addr,
            accepts,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{echo_server, seeded_bytes};

    const LIMIT: Duration = Duration::from_secs(5);

    async fn relay_to_echo() -> FaultRelay {
        let echo = echo_server().await.unwrap();
        FaultRelay::start(echo).await.unwrap()
    }

    async fn echo_once(socket: &mut TcpStream, data: &[u8]) -> Vec<u8> {
        socket.write_all(data).await.unwrap();
        let mut got = vec![0u8; data.len()];
        tokio::time::timeout(LIMIT, socket.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        got
    }

    #[tokio::test]
    async fn forwards_and_captures_the_first_bytes() {
        let relay = relay_to_echo().await;
        let mut socket = TcpStream::connect(relay.addr()).await.unwrap();
        let data = seeded_bytes(1, 100_000);
        assert_eq!(echo_once(&mut socket, &data).await, data);
        assert_eq!(relay.accepted(), 1);
        assert_eq!(relay.captured()[0], data[..CAPTURE_BYTES]);
    }

    #[tokio::test]
    async fn reset_reaches_the_dialler_as_an_error() {
        let relay = relay_to_echo().await;
        let mut socket = TcpStream::connect(relay.addr()).await.unwrap();
        echo_once(&mut socket, b"ping").await;
        relay.reset_all();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(LIMIT, socket.read(&mut buf))
            .await
            .unwrap();
        let error = read.expect_err("a reset, not a clean end");
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn half_close_down_ends_reads_while_up_still_flows() {
        let echo_count = Arc::new(AtomicUsize::new(0));
        // A target that counts bytes and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let counter = echo_count.clone();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            while let Ok(read) = socket.read(&mut buf).await {
                if read == 0 {
                    break;
                }
                counter.fetch_add(read, Ordering::SeqCst);
            }
        });
        let relay = FaultRelay::start(target).await.unwrap();
        let mut socket = TcpStream::connect(relay.addr()).await.unwrap();
        socket.write_all(b"abc").await.unwrap();
        wait_until(|| echo_count.load(Ordering::SeqCst) == 3).await;
        relay.half_close(Direction::Down);
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(LIMIT, socket.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, 0, "FIN toward the dialler");
        socket.write_all(b"defg").await.unwrap();
        wait_until(|| echo_count.load(Ordering::SeqCst) == 7).await;
    }

    #[tokio::test]
    async fn blackhole_drops_bytes_and_closes_nothing_while_new_connections_work() {
        let relay = relay_to_echo().await;
        let mut socket = TcpStream::connect(relay.addr()).await.unwrap();
        echo_once(&mut socket, b"ping").await;
        relay.blackhole();
        socket.write_all(b"lost").await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_millis(500), socket.read(&mut buf)).await;
        assert!(read.is_err(), "nothing comes back, and no close: {read:?}");
        let mut fresh = TcpStream::connect(relay.addr()).await.unwrap();
        assert_eq!(echo_once(&mut fresh, b"pong").await, b"pong");
    }

    #[tokio::test]
    async fn flip_bit_alters_exactly_one_bit() {
        let relay = relay_to_echo().await;
        let mut socket = TcpStream::connect(relay.addr()).await.unwrap();
        relay.flip_bit(Direction::Up, 1000);
        let data = seeded_bytes(2, 4000);
        let got = echo_once(&mut socket, &data).await;
        let differing: u32 = data
            .iter()
            .zip(&got)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        assert_eq!(differing, 1);
        let first = data.iter().zip(&got).position(|(a, b)| a != b).unwrap();
        assert!(first < 1000, "{first}");
        assert_eq!(relay.flips_done(), 1);
    }

    #[tokio::test]
    async fn delay_and_throttle_slow_the_echo() {
        let relay = relay_to_echo().await;
        let mut socket = TcpStream::connect(relay.addr()).await.unwrap();
        relay.set_delay(Duration::from_millis(100));
        let started = std::time::Instant::now();
        echo_once(&mut socket, b"x").await;
        // Two hops through the relay (up and down), 100 ms each.
        assert!(started.elapsed() >= Duration::from_millis(200));
        relay.set_delay(Duration::ZERO);
        relay.set_throttle(100_000);
        let started = std::time::Instant::now();
        let data = seeded_bytes(3, 50_000);
        assert_eq!(echo_once(&mut socket, &data).await, data);
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn sentinel_counts_accepts() {
        let sentinel = Sentinel::start().await.unwrap();
        assert_eq!(sentinel.accepts(), 0);
        let _socket = TcpStream::connect(sentinel.addr()).await.unwrap();
        wait_until(|| sentinel.accepts() == 1).await;
    }

    async fn wait_until(condition: impl Fn() -> bool) {
        crate::gauge::wait_until(LIMIT, condition).await.unwrap();
    }
}
