//! UDP services in the quick start, with the real binaries: `--public
//! udp:...` on the portal, `--to udp:...` on the bridge, datagrams carried
//! over the tunnel as Mux.Cool UDP sessions (one per client address).
//!
//! ```text
//! client 1..4 (UDP, own ports) ─▶ portal --public udp:127.0.0.1:U (dokodemo-door, network udp → marker 127.0.0.1:1)
//!                                 portal --tunnel 127.0.0.1:T (VMess) ◀══ dialled by bridge --portal 127.0.0.1:T
//!                                 bridge: marker → freedom --to udp:127.0.0.1:E ─▶ UDP echo on E
//! ```
//!
//! Every payload starts with its client's id and a sequence number, so a
//! reply that reaches the wrong client, or the right client's wrong
//! datagram, fails the test. UDP may lose a datagram: each exchange is
//! retried a few times, the retries are counted and printed, and a client
//! that gets nothing at all fails.
//!
//! Datagrams are DNS-sized (60 to 512 bytes) up to 2048 bytes, the most a
//! Mux.Cool UDP frame carries to or from V2Ray (4.34 reads a packet frame
//! into one 2048-byte buffer and kills the whole connection on a longer
//! one, so Rayback drops a longer datagram instead of sending it to a
//! V2Ray peer). Then larger ones (fine on loopback itself), and what
//! becomes of them is checked:
//!
//! - Rayback portal and Rayback bridge: they negotiate large packets
//!   (VMess option bit 0x20), so 8 KiB and 60 KiB datagrams, and one of
//!   65,507 bytes (the most IPv4 UDP carries), come back whole, each to
//!   its own client.
//! - a v2ray bridge: Rayback's portal keeps the 2048-byte limit and drops
//!   the 8 KiB datagram whole;
//! - a v2ray portal (the Rayback bridge offers large packets; v2ray does
//!   not answer and the tunnel works as before): its dokodemo-door reads
//!   at most 2048 bytes of the 8 KiB datagram, so the service gets, and
//!   echoes, its first 2048.
//!
//! Either way the client's session carries on: a small datagram after it
//! is echoed.
//!
//! The same through a real v2ray portal run from the Rayback portal's
//! `--print-config`; a v2ray bridge from the bridge's; and a TCP and a UDP
//! service side by side on one public port number.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::{bridge_binary, loopback, portal_binary, print_config, Flagged};
use rayback_testkit::{echo_server, exchange, free_port, seeded_bytes, v2ray_path, V2Ray};
use tokio::net::UdpSocket;

/// The bound on every test here.
const TEST_LIMIT: Duration = Duration::from_secs(120);

const ID: &str = "5f0f7c3e-4f7c-4a55-9d0e-4c1b7f2d9a10";

/// How long the tunnel may take to carry a first datagram.
const FIRST_REPLY: Duration = Duration::from_secs(20);

/// Sends of one datagram before its client is declared cut off.
const ATTEMPTS: u32 = 5;

/// How long one send waits for its reply.
const REPLY_WAIT: Duration = Duration::from_secs(2);

/// The most payload one Mux.Cool UDP frame carries (V2Ray 4.34's
/// `buf.Size`; `rayback_mux::settings::V2RAY_MAX_PACKET`).
const FRAME_LIMIT: usize = 2048;

/// The oversize datagram: 8 KiB, over [`FRAME_LIMIT`].
const BIG: usize = 8 * 1024;

/// A larger one, sent only between Rayback peers: 60 KiB.
const HUGE: usize = 60 * 1024;

/// The largest UDP datagram over IPv4 (65,535 − 20 − 8), which Rayback
/// peers carry whole; client 1 sends one.
const LARGEST: usize = 65_507;

/// Datagram sizes each client exchanges, in order, every round.
const SIZES: [usize; 6] = [60, 100, 200, 512, 1400, FRAME_LIMIT];

const CLIENTS: u8 = 4;
const ROUNDS: u32 = 3;

/// A UDP echo server on 127.0.0.1; [`Echo::largest`] is the longest
/// datagram it has received, which tells a truncated datagram from one
/// dropped on the way.
struct Echo {
    addr: SocketAddr,
    largest: Arc<AtomicUsize>,
}

impl Echo {
    async fn start() -> Result<Echo> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let largest = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&largest);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((read, from)) = socket.recv_from(&mut buf).await {
                seen.fetch_max(read, Ordering::Relaxed);
                let _ = socket.send_to(&buf[..read], from).await;
            }
        });
        Ok(Echo { addr, largest })
    }

    fn largest(&self) -> usize {
        self.largest.load(Ordering::Relaxed)
    }
}

/// The length of a datagram's head, `client NN seq NNNNNN `.
const HEAD_LEN: usize = 21;

/// The datagram `seq` of client `id`, `len` (at least [`HEAD_LEN`])
/// bytes: a readable head naming both, then seeded bytes.
fn payload(id: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut data = format!("client {id:02} seq {seq:06} ").into_bytes();
    assert_eq!(data.len(), HEAD_LEN);
    let fill = len.saturating_sub(HEAD_LEN);
    data.extend(seeded_bytes((u64::from(id) << 32) | u64::from(seq), fill));
    data
}

/// The (client, seq) a datagram's head names, if it has one.
fn head(datagram: &[u8]) -> Option<(u8, u32)> {
    let text = std::str::from_utf8(datagram.get(..HEAD_LEN)?).ok()?;
    let mut words = text.split(' ');
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("client"), Some(id), Some("seq"), Some(seq)) => {
            Some((id.parse().ok()?, seq.parse().ok()?))
        }
        _ => None,
    }
}

/// What an oversize datagram becomes on its way to the service and back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Oversize {
    /// It comes back unchanged, as do [`HUGE`] and [`LARGEST`] ones
    /// (both ends Rayback: large packets negotiated).
    Whole,
    /// Nothing reaches the service (Rayback's mux drops it).
    Dropped,
    /// Its first [`FRAME_LIMIT`] bytes reach the service and come back
    /// (v2ray's dokodemo-door reads no more).
    Truncated,
}

/// One UDP client: its own socket, so its own source port and session.
struct Client {
    id: u8,
    socket: UdpSocket,
    public: SocketAddr,
    next_seq: u32,
    /// Sends beyond the first, over all exchanges.
    retries: u32,
    exchanges: u32,
}

impl Client {
    async fn new(id: u8, public: SocketAddr) -> Result<Client> {
        Ok(Client {
            id,
            socket: UdpSocket::bind("127.0.0.1:0").await?,
            public,
            next_seq: 0,
            retries: 0,
            exchanges: 0,
        })
    }

    /// The next datagram of `len` bytes; returns it and its seq.
    fn next(&mut self, len: usize) -> (Vec<u8>, u32) {
        let seq = self.next_seq;
        self.next_seq += 1;
        (payload(self.id, seq, len), seq)
    }

    /// Receives one datagram within `wait`; `None` when none came.
    async fn receive(&self, wait: Duration) -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 65_536];
        match tokio::time::timeout(wait, self.socket.recv(&mut buf)).await {
            Ok(read) => {
                buf.truncate(read?);
                Ok(Some(buf))
            }
            Err(_) => Ok(None),
        }
    }

    /// Checks a datagram that is not the awaited reply: an earlier reply
    /// of this client's, late after a retry, is let go; anything else
    /// (another client's, or garbled) fails.
    fn stray(&self, got: &[u8], seq: u32) -> Result<()> {
        match head(got) {
            Some((id, _)) if id != self.id => bail!(
                "client {} got client {id}'s datagram ({} bytes): replies crossed",
                self.id,
                got.len()
            ),
            Some((_, earlier)) if earlier < seq && got.len() <= LARGEST => Ok(()),
            _ => bail!(
                "client {} got a datagram of {} bytes that is none of its replies (awaiting seq {seq}): {:?}",
                self.id,
                got.len(),
                String::from_utf8_lossy(&got[..got.len().min(40)])
            ),
        }
    }

    /// Sends a `len`-byte datagram until its echo comes back unchanged,
    /// at most [`ATTEMPTS`] times.
    async fn echo(&mut self, len: usize) -> Result<()> {
        let (data, seq) = self.next(len);
        self.exchanges += 1;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                self.retries += 1;
            }
            self.socket.send_to(&data, self.public).await?;
            let deadline = Instant::now() + REPLY_WAIT;
            while let Some(got) = self
                .receive(deadline.saturating_duration_since(Instant::now()))
                .await?
            {
                if got == data {
                    return Ok(());
                }
                self.stray(&got, seq)?;
            }
        }
        bail!(
            "client {}: no echo of its {len}-byte datagram (seq {seq}) after {ATTEMPTS} sends",
            self.id
        )
    }

    /// Sends one [`BIG`] datagram and checks it becomes `expected` (for
    /// [`Oversize::Whole`], [`HUGE`] and, from client 1, [`LARGEST`] ones
    /// too), then that the client's session still carries a small one.
    async fn oversize(&mut self, expected: Oversize) -> Result<()> {
        if expected == Oversize::Whole {
            self.echo(BIG).await?;
            self.echo(HUGE).await?;
            if self.id == 1 {
                self.echo(LARGEST).await?;
            }
            return self.echo(60).await;
        }
        let (data, seq) = self.next(BIG);
        self.socket.send_to(&data, self.public).await?;
        let got = self.receive(REPLY_WAIT).await?;
        match (expected, got) {
            (Oversize::Whole, _) => unreachable!("echoed above"),
            (Oversize::Dropped, None) => {}
            (Oversize::Truncated, Some(got)) if got == data[..FRAME_LIMIT] => {}
            (Oversize::Truncated, None) => {
                // Lost on the way, or not truncated but dropped: retry once
                // to tell them apart.
                self.retries += 1;
                self.socket.send_to(&data, self.public).await?;
                match self.receive(REPLY_WAIT).await? {
                    Some(got) if got == data[..FRAME_LIMIT] => {}
                    other => bail!(
                        "client {}: the {BIG}-byte datagram came back as {:?} bytes, not its first {FRAME_LIMIT}",
                        self.id,
                        other.map(|got| got.len())
                    ),
                }
            }
            (expected, Some(got)) => {
                self.stray(&got, seq)?;
                bail!(
                    "client {}: the {BIG}-byte datagram came back as {} bytes ({expected:?} expected)",
                    self.id,
                    got.len()
                );
            }
        }
        self.echo(60).await
    }
}

/// Waits until one datagram makes the round trip through `public`:
/// the tunnel is up. Returns how long that took.
async fn wait_udp(public: SocketAddr) -> Result<Duration> {
    let started = Instant::now();
    let client = UdpSocket::bind("127.0.0.1:0").await?;
    let probe = payload(0, 0, 60);
    let mut buf = vec![0u8; 65_536];
    while started.elapsed() < FIRST_REPLY {
        client.send_to(&probe, public).await?;
        let wait = Duration::from_millis(250);
        if let Ok(read) = tokio::time::timeout(wait, client.recv(&mut buf)).await {
            if buf[..read?] == probe[..] {
                return Ok(started.elapsed());
            }
        }
    }
    bail!("no datagram came back through {public} within {FIRST_REPLY:?}")
}

/// [`CLIENTS`] clients at once, each its own source port: [`ROUNDS`]
/// rounds of [`SIZES`], then the oversize datagram and a small one.
/// Returns (exchanges, retries) over all clients.
async fn run_clients(public: SocketAddr, oversize: Oversize) -> Result<(u32, u32)> {
    let mut tasks = Vec::new();
    for id in 1..=CLIENTS {
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(id, public).await?;
            for _ in 0..ROUNDS {
                for len in SIZES {
                    client.echo(len).await?;
                }
            }
            client.oversize(oversize).await?;
            anyhow::Ok((client.exchanges, client.retries))
        }));
    }
    let (mut exchanges, mut retries) = (0, 0);
    for task in tasks {
        let (done, retried) = task.await??;
        exchanges += done;
        retries += retried;
    }
    Ok((exchanges, retries))
}

/// The quick flags of one UDP service (portal and bridge), plus the
/// ports to wait for.
struct UdpService {
    echo: Echo,
    public: u16,
    tunnel: u16,
}

impl UdpService {
    async fn new() -> Result<UdpService> {
        Ok(UdpService {
            echo: Echo::start().await?,
            // A free TCP port, taken for UDP: good enough on loopback.
            public: free_port(),
            tunnel: free_port(),
        })
    }

    fn portal_args(&self) -> Vec<String> {
        vec![
            "--tunnel".into(),
            loopback(self.tunnel).to_string(),
            "--public".into(),
            format!("udp:{}", loopback(self.public)),
            "--id".into(),
            ID.into(),
        ]
    }

    fn bridge_args(&self) -> Vec<String> {
        vec![
            "--portal".into(),
            loopback(self.tunnel).to_string(),
            "--to".into(),
            format!("udp:{}", self.echo.addr),
            "--id".into(),
            ID.into(),
        ]
    }

    /// The tunnel up, then the clients; fails with `logs`.
    async fn check(&self, what: &str, oversize: Oversize, logs: impl Fn() -> String) {
        let public = loopback(self.public);
        let took = wait_udp(public)
            .await
            .unwrap_or_else(|error| panic!("{what}: {error:#}\n{}", logs()));
        let (exchanges, retries) = run_clients(public, oversize)
            .await
            .unwrap_or_else(|error| panic!("{what}: {error:#}\n{}", logs()));
        eprintln!(
            "{what}: first datagram back after {took:?}; {exchanges} exchanges by {CLIENTS} \
             clients, {retries} retries; the service's longest datagram {} bytes",
            self.echo.largest()
        );
        // Between Rayback peers the largest datagram reached the service
        // whole. Otherwise FRAME_LIMIT-byte datagrams were echoed and
        // nothing longer may reach it, whether the oversize one was
        // dropped or cut.
        let longest = match oversize {
            Oversize::Whole => LARGEST,
            Oversize::Dropped | Oversize::Truncated => FRAME_LIMIT,
        };
        assert_eq!(
            self.echo.largest(),
            longest,
            "{what}: the service's longest datagram"
        );
    }
}

/// Whether the real v2ray is there; says "skipped" when not.
fn have_v2ray() -> bool {
    let found = v2ray_path().exists();
    if !found {
        eprintln!("skipped: no v2ray at {}", v2ray_path().display());
    }
    found
}

/// Both sides Rayback, started from flags alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_service_from_flags_alone() {
    // Outside the time bound: building the bridge may wait for cargo's lock.
    let bridge_binary = bridge_binary();
    tokio::time::timeout(TEST_LIMIT, async {
        let service = UdpService::new().await.unwrap();
        let mut portal = Flagged::start(&portal_binary(), &service.portal_args()).unwrap();
        portal.wait_ports(&[service.tunnel]).await.unwrap();
        let bridge = Flagged::start(&bridge_binary, &service.bridge_args()).unwrap();
        service
            .check("Rayback portal + Rayback bridge", Oversize::Whole, || {
                format!("portal:\n{}\nbridge:\n{}", portal.output(), bridge.output())
            })
            .await;
    })
    .await
    .expect("the test ran over its time");
}

/// The portal's `--print-config` run by the real v2ray, a Rayback bridge
/// from flags dialling it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_runs_the_printed_udp_portal() {
    if !have_v2ray() {
        return;
    }
    let bridge_binary = bridge_binary();
    tokio::time::timeout(TEST_LIMIT, async {
        let service = UdpService::new().await.unwrap();
        let config = print_config(&portal_binary(), &service.portal_args()).unwrap();
        assert!(config.contains(r#""network": "udp""#), "{config}");
        let _portal = V2Ray::start_text(&config, &[service.tunnel]).await.unwrap();
        let bridge = Flagged::start(&bridge_binary, &service.bridge_args()).unwrap();
        service
            .check(
                "v2ray portal (printed) + Rayback bridge",
                Oversize::Truncated,
                || format!("portal config:\n{config}\nbridge:\n{}", bridge.output()),
            )
            .await;
    })
    .await
    .expect("the test ran over its time");
}

/// The bridge's `--print-config` run by the real v2ray, a Rayback portal
/// from flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_runs_the_printed_udp_bridge() {
    if !have_v2ray() {
        return;
    }
    let bridge_binary = bridge_binary();
    tokio::time::timeout(TEST_LIMIT, async {
        let service = UdpService::new().await.unwrap();
        let mut portal = Flagged::start(&portal_binary(), &service.portal_args()).unwrap();
        portal.wait_ports(&[service.tunnel]).await.unwrap();
        let config = print_config(&bridge_binary, &service.bridge_args()).unwrap();
        assert!(config.contains(r#""network": "udp""#), "{config}");
        let _bridge = V2Ray::start_text(&config, &[]).await.unwrap();
        service
            .check(
                "Rayback portal + v2ray bridge (printed)",
                Oversize::Dropped,
                || format!("bridge config:\n{config}\nportal:\n{}", portal.output()),
            )
            .await;
    })
    .await
    .expect("the test ran over its time");
}

/// A TCP service and a UDP service in one quick start, on the same public
/// port number: `--public P --public udp:P`, `--to TCP_ECHO --to
/// udp:UDP_ECHO`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_and_a_udp_service_side_by_side() {
    let bridge_binary = bridge_binary();
    tokio::time::timeout(TEST_LIMIT, async {
        let service = UdpService::new().await.unwrap();
        let tcp_echo = echo_server().await.unwrap();
        let public = loopback(service.public);
        let portal_args: Vec<String> = vec![
            "--tunnel".into(),
            loopback(service.tunnel).to_string(),
            "--public".into(),
            public.to_string(),
            "--public".into(),
            format!("udp:{public}"),
            "--id".into(),
            ID.into(),
        ];
        let bridge_args: Vec<String> = vec![
            "--portal".into(),
            loopback(service.tunnel).to_string(),
            "--to".into(),
            format!("tcp:{tcp_echo}"),
            "--to".into(),
            format!("udp:{}", service.echo.addr),
            "--id".into(),
            ID.into(),
        ];
        let mut portal = Flagged::start(&portal_binary(), &portal_args).unwrap();
        portal
            .wait_ports(&[service.tunnel, service.public])
            .await
            .unwrap();
        let bridge = Flagged::start(&bridge_binary, &bridge_args).unwrap();
        let logs = || format!("portal:\n{}\nbridge:\n{}", portal.output(), bridge.output());

        // TCP: an echo of 64 KiB through the same port number.
        let data = seeded_bytes(7, 64 * 1024);
        let started = Instant::now();
        loop {
            match exchange(public, &data, Duration::from_secs(5)).await {
                Ok(back) if back == data => break,
                _ if started.elapsed() < FIRST_REPLY => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Ok(back) => panic!(
                    "TCP echo came back as {} bytes, not the {} sent\n{}",
                    back.len(),
                    data.len(),
                    logs()
                ),
                Err(error) => panic!("no TCP echo through {public}: {error:#}\n{}", logs()),
            }
        }
        eprintln!("TCP service: echo after {:?}", started.elapsed());

        service
            .check(
                "Rayback portal + Rayback bridge, TCP and UDP",
                Oversize::Whole,
                logs,
            )
            .await;
        // TCP still served after the UDP traffic.
        let back = exchange(public, &data, Duration::from_secs(10))
            .await
            .unwrap_or_else(|error| panic!("{error:#}\n{}", logs()));
        assert!(back == data, "TCP echo changed after the UDP traffic");
    })
    .await
    .expect("the test ran over its time");
}

#[test]
fn payload_heads_name_client_and_seq() {
    for len in [HEAD_LEN, 60, FRAME_LIMIT, BIG, HUGE, LARGEST] {
        let data = payload(3, 41, len);
        assert_eq!(data.len(), len);
        assert_eq!(head(&data), Some((3, 41)));
    }
    assert_ne!(payload(1, 0, 100), payload(2, 0, 100));
    assert_eq!(head(b"garbage"), None);
}
