//! Battery, hostile input against the TLS and WebSocket layers of a
//! running Rayback portal's tunnel port, while the real (Rayback) bridge
//! keeps serving through it over the same transport:
//!
//! ```text
//! attackers (127.0.0.2-9) ─▶ portal :tunnel (VMess over ws+tls, or tls) ◀═ ws+tls / tls ═ bridge ─▶ backend
//! checker: GET / every 250 ms through :public, none may fail
//! ```
//!
//! Attacks, all at once: garbage of many lengths; plain HTTP and a
//! cleartext WebSocket upgrade on the TLS port; a TLS ClientHello then
//! nothing (whole, half of it, its record header alone); a completed TLS
//! handshake then nothing, then garbage; over ws+tls, a completed
//! handshake then a WebSocket upgrade to a wrong path (must be 404), one
//! with a wrong `Host`, and a completed upgrade followed by raw garbage,
//! garbage binary frames, an unmasked frame, or a frame announcing 2^62
//! bytes; and 200 half-open TLS connections (ClientHello, then held) from
//! four sources (50 each: under the per-source cap on handshakes, so the
//! portal holds them all until the deadline).
//!
//! The portal's handshake deadline (`policy.levels.0.handshake`) is 4 s
//! here so the battery is quick. Bounds: the portal stays up; every GET
//! through the public port succeeds during the attack; the portal's RSS
//! grows by at most 64 MiB; every attacking connection is closed by the
//! portal within the deadline (plus 2 s of slack); none gets an HTTP
//! answer other than the 404 of a wrong path (or the 101 of an upgrade,
//! which V2Ray 4.34 gives whatever the `Host`); and
//! `rayback_vmess_handshake_failures_total{reason="transport"}` grows by
//! at least the number of attacks no transport can accept.
//!
//! Close times count from the TCP connect's completion, not its start: a
//! burst of 200 connects can overflow the tunnel listener's accept queue
//! (tokio's default backlog, 128), and a dropped SYN is sent again a
//! second later. The summary line counts such slow connects.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{
    bridge_stream, configs, portal_stream, public, start_serving, wait_serving, with_members, Kind,
};
use rayback_testkit::gauge::{alive, metric, rss_kb, scrape};
use rayback_testkit::peer::connect_from;
use rayback_testkit::tls::{SelfSigned, TunnelTls as Transport, TUNNEL_WS_PATH as WS_PATH};
use rayback_testkit::with_tunnel_stream;
use rayback_testkit::{backend, free_port, http_get, seeded_bytes, BACKEND_PAGE};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The portal's handshake deadline (`policy.levels.0.handshake`, seconds).
const HANDSHAKE_SECONDS: u64 = 4;
/// How long after connecting an attacker may wait to be closed.
const CLOSE_LIMIT: Duration = Duration::from_secs(HANDSHAKE_SECONDS + 2);
const RSS_BOUND_KIB: u64 = 64 * 1024;
const HALF_OPEN: usize = 200;
/// How much of an answer a probe keeps (enough for a status line).
const KEPT: usize = 64;

struct Setup {
    tunnel: SocketAddr,
    public: SocketAddr,
    metrics: SocketAddr,
    portal_pid: u32,
    certificate: SelfSigned,
    _nodes: Vec<common::Node>,
}

async fn setup(transport: Transport) -> Setup {
    let certificate = SelfSigned::localhost().unwrap();
    let backend = backend().await.unwrap();
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let portal_config = with_members(
        &portal_config,
        &format!(
            r#""rayback": {{"metrics": "{metrics}"}},
  "policy": {{"levels": {{"0": {{"handshake": {HANDSHAKE_SECONDS}}}}}}}"#
        ),
    );
    let portal_config =
        with_tunnel_stream(&portal_config, &portal_stream(transport, &certificate)).unwrap();
    let bridge_config =
        with_tunnel_stream(&bridge_config, &bridge_stream(transport, &certificate)).unwrap();
    let (portal, bridge) = start_serving(
        Kind::Rayback,
        &portal_config,
        Kind::Rayback,
        &bridge_config,
        ports,
    )
    .await;
    Setup {
        tunnel: SocketAddr::from(([127, 0, 0, 1], ports.tunnel)),
        public: public(ports),
        metrics,
        portal_pid: portal.pid(),
        certificate,
        _nodes: vec![portal, bridge],
    }
}

/// GET / every 250 ms until `stop`; returns (served, failures).
fn checker(public: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let (mut served, mut failures) = (0, Vec::new());
        while !stop.load(Ordering::SeqCst) {
            match http_get(public, Duration::from_secs(3)).await {
                Ok((200, body)) if body == BACKEND_PAGE => served += 1,
                Ok((code, _)) => failures.push(format!("status {code}")),
                Err(error) => failures.push(format!("{error:#}")),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        (served, failures)
    })
}

/// The portal's count of handshakes refused for `reason`.
async fn failures(metrics: SocketAddr, reason: &str) -> f64 {
    let text = scrape(metrics).await.unwrap();
    metric(
        &text,
        "rayback_vmess_handshake_failures_total",
        &[&format!("reason=\"{reason}\"")],
    )
    .unwrap_or(0.0)
}

/// rustls with ring, as in Rayback (crates/transport/src/tls.rs): rustls
/// 0.23.48 marks ring's provider deprecated for lacking post-quantum key
/// exchange, which V2Ray 4.34's TLS lacks too.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client trusting the portal's self-signed certificate, offering
/// ALPN `http/1.1` like a WebSocket client.
fn tls_client(certificate: &SelfSigned) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(certificate.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The bytes of a fresh ClientHello for `localhost`.
fn client_hello(config: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let mut hello = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut hello).unwrap();
    }
    hello
}

/// What one attacking connection saw.
#[derive(Debug)]
struct Probe {
    name: String,
    /// When the portal closed it, counted from the TCP connect (the
    /// portal's deadline runs from its accept, a moment later); `None` if
    /// it was still open at [`CLOSE_LIMIT`].
    closed_after: Option<Duration>,
    /// The first bytes the portal sent after the attack's own exchange.
    answer: Vec<u8>,
    /// How long the TCP connect took: about a second when the SYN was
    /// dropped because the portal's accept queue was full, and retried.
    connect_took: Duration,
}

/// When an attacking connection was established.
#[derive(Clone, Copy, Debug)]
struct Opened {
    at: Instant,
    connect_took: Duration,
}

/// Connects from `source` to `tunnel`.
async fn connect(name: &str, source: Ipv4Addr, tunnel: SocketAddr) -> Result<(TcpStream, Opened)> {
    let started = Instant::now();
    let socket = connect_from(source, tunnel)
        .await
        .with_context(|| format!("{name}: connecting"))?;
    let opened = Opened {
        at: Instant::now(),
        connect_took: started.elapsed(),
    };
    Ok((socket, opened))
}

impl Probe {
    /// The HTTP status of `answer`, if it is an HTTP response.
    fn status(&self) -> Option<u16> {
        let text = std::str::from_utf8(&self.answer).ok()?;
        let rest = text.strip_prefix("HTTP/1.1 ")?;
        rest.get(..3)?.parse().ok()
    }
}

/// Reads from `stream` until the portal closes it (end or error) or until
/// `opened` + [`CLOSE_LIMIT`], keeping the first bytes.
async fn watch<S: AsyncRead + Unpin>(
    name: String,
    stream: &mut S,
    opened: Opened,
    mut answer: Vec<u8>,
) -> Probe {
    let deadline = tokio::time::Instant::from_std(opened.at + CLOSE_LIMIT);
    let mut buf = [0u8; 4096];
    let closed_after = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break Some(opened.at.elapsed()),
            Ok(Ok(read)) => {
                let room = KEPT.saturating_sub(answer.len());
                answer.extend_from_slice(&buf[..read.min(room)]);
            }
            Err(_elapsed) => break None,
        }
    };
    Probe {
        name,
        closed_after,
        answer,
        connect_took: opened.connect_took,
    }
}

/// Connects from `source` and sends `bytes` (a write the portal cuts off
/// is fine: it closed), then watches.
async fn raw(name: String, source: Ipv4Addr, tunnel: SocketAddr, bytes: Vec<u8>) -> Result<Probe> {
    let (mut socket, opened) = connect(&name, source, tunnel).await?;
    let _ = socket.write_all(&bytes).await;
    Ok(watch(name, &mut socket, opened, Vec::new()).await)
}

/// Connects from `source` and completes a TLS handshake; returns the
/// stream and when the TCP connect completed.
async fn tls(
    name: &str,
    source: Ipv4Addr,
    tunnel: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> Result<(TlsStream<TcpStream>, Opened)> {
    let (socket, opened) = connect(name, source, tunnel).await?;
    let server_name = ServerName::try_from("localhost").unwrap();
    let stream = tokio::time::timeout(
        CLOSE_LIMIT,
        TlsConnector::from(config.clone()).connect(server_name, socket),
    )
    .await
    .with_context(|| format!("{name}: the TLS handshake took over {CLOSE_LIMIT:?}"))?
    .with_context(|| format!("{name}: the TLS handshake failed"))?;
    Ok((stream, opened))
}

/// Sends a WebSocket upgrade for `path` with `host` and reads the
/// response head; returns it (the whole head, or what came before the
/// portal closed).
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    path: &str,
    host: &str,
) -> Vec<u8> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return Vec::new();
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        match tokio::time::timeout(CLOSE_LIMIT, stream.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    head
}

/// A WebSocket frame: FIN set, `opcode`, `payload`, masked (as a client
/// must) when `mask` is given.
fn ws_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => frame.push(mask_bit | len as u8),
        len @ 126..=0xffff => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    frame
}

/// What follows a completed WebSocket upgrade.
#[derive(Clone, Copy, Debug)]
enum AfterUpgrade {
    /// Nothing: the VMess header never comes.
    Nothing,
    /// Bytes that are not WebSocket frames.
    RawGarbage,
    /// Well-formed masked binary frames of garbage (a wrong VMess header).
    GarbageFrames,
    /// A frame without a mask, which a server must refuse.
    UnmaskedFrame,
    /// A frame header announcing 2^62 bytes of payload.
    HugeFrame,
}

/// TLS, then a WebSocket upgrade for `path` with `host`, then `after`.
async fn ws_probe(
    name: String,
    source: Ipv4Addr,
    tunnel: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &'static str,
    host: &'static str,
    after: AfterUpgrade,
) -> Result<Probe> {
    let (mut stream, opened) = tls(&name, source, tunnel, &config).await?;
    let head = upgrade(&mut stream, path, host).await;
    if head.starts_with(b"HTTP/1.1 101") {
        let bytes = match after {
            AfterUpgrade::Nothing => Vec::new(),
            AfterUpgrade::RawGarbage => seeded_bytes(7, 3000),
            AfterUpgrade::GarbageFrames => (0..10u64)
                .flat_map(|seed| ws_frame(0x2, &seeded_bytes(seed, 1000), Some([1, 2, 3, 4])))
                .collect(),
            AfterUpgrade::UnmaskedFrame => ws_frame(0x2, &seeded_bytes(8, 100), None),
            AfterUpgrade::HugeFrame => {
                let mut frame = vec![0x82, 0x80 | 127];
                frame.extend_from_slice(&(1u64 << 62).to_be_bytes());
                frame.extend_from_slice(&[9, 9, 9, 9]);
                frame.extend_from_slice(&seeded_bytes(9, 4096));
                frame
            }
        };
        let _ = stream.write_all(&bytes).await;
        let _ = stream.flush().await;
    }
    let mut probe = watch(name, &mut stream, opened, Vec::new()).await;
    probe.answer = [head, probe.answer].concat();
    Ok(probe)
}

/// A completed TLS handshake, then `bytes` (maybe none).
async fn tls_then(
    name: String,
    source: Ipv4Addr,
    tunnel: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    bytes: Vec<u8>,
) -> Result<Probe> {
    let (mut stream, opened) = tls(&name, source, tunnel, &config).await?;
    let _ = stream.write_all(&bytes).await;
    let _ = stream.flush().await;
    Ok(watch(name, &mut stream, opened, Vec::new()).await)
}

/// Every attack on `tunnel`, spawned; each task ends when its connection
/// is closed or at [`CLOSE_LIMIT`]. Also returns how many of them no
/// transport accepts (a failed TLS handshake or upgrade), which the
/// portal counts as `transport` failures, whatever the timing.
fn attacks(
    transport: Transport,
    tunnel: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> (Vec<JoinHandle<Result<Probe>>>, usize) {
    let mut tasks = Vec::new();
    let mut refused_by_transport = 0;
    let hello = client_hello(config);
    let from = |last: u8| Ipv4Addr::new(127, 0, 0, last);

    // Garbage of many lengths. A first byte that is no TLS record type
    // (20-24) is refused at once; one that is may make TLS wait for more
    // (a long announced length): then the deadline closes it, counted as
    // a timeout.
    for len in [1usize, 2, 5, 16, 17, 100, 517, 1000, 4096, 16_389, 65_536] {
        let garbage = seeded_bytes(1000 + len as u64, len);
        refused_by_transport += usize::from(!(0x14..=0x18).contains(&garbage[0]));
        tasks.push(tokio::spawn(raw(
            format!("garbage {len} B"),
            from(2),
            tunnel,
            garbage,
        )));
    }
    // Cleartext HTTP and a cleartext WebSocket upgrade on the TLS port.
    tasks.push(tokio::spawn(raw(
        "plain GET".to_owned(),
        from(3),
        tunnel,
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
    )));
    tasks.push(tokio::spawn(raw(
        "cleartext upgrade".to_owned(),
        from(3),
        tunnel,
        format!(
            "GET {WS_PATH} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes(),
    )));
    refused_by_transport += 2;
    // A ClientHello, then nothing: whole, half, the record header alone.
    for (name, bytes) in [
        ("ClientHello then nothing", hello.clone()),
        ("half a ClientHello", hello[..hello.len() / 2].to_vec()),
        ("a ClientHello's record header", hello[..5].to_vec()),
    ] {
        tasks.push(tokio::spawn(raw(name.to_owned(), from(4), tunnel, bytes)));
    }
    // A completed TLS handshake, then nothing, then garbage.
    tasks.push(tokio::spawn(tls_then(
        "TLS then nothing".to_owned(),
        from(4),
        tunnel,
        config.clone(),
        Vec::new(),
    )));
    tasks.push(tokio::spawn(tls_then(
        "TLS then garbage".to_owned(),
        from(4),
        tunnel,
        config.clone(),
        seeded_bytes(5, 2000),
    )));
    if transport == Transport::WsTls {
        // "TLS then garbage": the garbage is no HTTP request, so the
        // upgrade fails; and a wrong path fails it too (404).
        refused_by_transport += 2;
        for (name, path, host, after) in [
            (
                "upgrade to a wrong path",
                "/wrong",
                "localhost",
                AfterUpgrade::Nothing,
            ),
            (
                "upgrade with a wrong Host",
                WS_PATH,
                "evil.example",
                AfterUpgrade::Nothing,
            ),
            (
                "upgrade then nothing",
                WS_PATH,
                "localhost",
                AfterUpgrade::Nothing,
            ),
            (
                "upgrade then raw garbage",
                WS_PATH,
                "localhost",
                AfterUpgrade::RawGarbage,
            ),
            (
                "upgrade then garbage frames",
                WS_PATH,
                "localhost",
                AfterUpgrade::GarbageFrames,
            ),
            (
                "upgrade then an unmasked frame",
                WS_PATH,
                "localhost",
                AfterUpgrade::UnmaskedFrame,
            ),
            (
                "upgrade then a 2^62-byte frame",
                WS_PATH,
                "localhost",
                AfterUpgrade::HugeFrame,
            ),
        ] {
            tasks.push(tokio::spawn(ws_probe(
                name.to_owned(),
                from(5),
                tunnel,
                config.clone(),
                path,
                host,
                after,
            )));
        }
    }
    // Half-open TLS connections: a ClientHello each, then held.
    for index in 0..HALF_OPEN {
        tasks.push(tokio::spawn(raw(
            format!("half-open #{index}"),
            from(6 + (index % 4) as u8),
            tunnel,
            hello.clone(),
        )));
    }
    (tasks, refused_by_transport)
}

/// Checks one probe against the bounds; returns what is wrong with it.
fn judge(probe: &Probe) -> Option<String> {
    let Some(closed_after) = probe.closed_after else {
        return Some(format!("{}: still open after {CLOSE_LIMIT:?}", probe.name));
    };
    let status = probe.status();
    let expected = match probe.name.as_str() {
        "upgrade to a wrong path" => status == Some(404),
        name if name.starts_with("upgrade") => status == Some(101),
        _ => !probe.answer.starts_with(b"HTTP/"),
    };
    (!expected).then(|| {
        format!(
            "{}: closed after {closed_after:?} with the answer {:?}",
            probe.name,
            String::from_utf8_lossy(&probe.answer)
        )
    })
}

async fn hostile_transport(transport: Transport) {
    let setup = setup(transport).await;
    let config = tls_client(&setup.certificate);
    let transport_failures_before = failures(setup.metrics, "transport").await;
    let rss_before = rss_kb(setup.portal_pid).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let check = checker(setup.public, stop.clone());
    // The portal's RSS, sampled through the attack.
    let rss_peak = {
        let stop = stop.clone();
        let pid = setup.portal_pid;
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.load(Ordering::SeqCst) {
                peak = peak.max(rss_kb(pid).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };
    let started = Instant::now();
    let (tasks, refused_by_transport) = attacks(transport, setup.tunnel, &config);
    let mut probes = Vec::new();
    let mut errors = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(probe) => probes.push(probe),
            Err(error) => errors.push(format!("{error:#}")),
        }
    }
    let attack_took = started.elapsed();
    // A moment more of checking after the last close.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (served, get_failures) = check.await.unwrap();
    let rss_peak = rss_peak.await.unwrap();
    let transport_failures = failures(setup.metrics, "transport").await - transport_failures_before;

    let slowest = probes
        .iter()
        .filter_map(|probe| probe.closed_after.map(|after| (after, probe.name.as_str())))
        .max();
    for probe in probes
        .iter()
        .filter(|probe| !probe.name.starts_with("half-open"))
    {
        eprintln!(
            "  {:<34} closed after {:>12?}, answer {:?}",
            probe.name,
            probe.closed_after,
            String::from_utf8_lossy(&probe.answer[..probe.answer.len().min(16)])
        );
    }
    let slow_connects = probes
        .iter()
        .filter(|probe| probe.connect_took > Duration::from_millis(500))
        .count();
    let half_open_closed: Vec<Duration> = probes
        .iter()
        .filter(|probe| probe.name.starts_with("half-open"))
        .filter_map(|probe| probe.closed_after)
        .collect();
    eprintln!(
        "hostile {transport:?} for {attack_took:?}: {} probes, slowest close {slowest:?}; \
         half-open closed {}/{HALF_OPEN} (latest {:?}); connects over 500 ms (SYN dropped, \
         accept queue full): {slow_connects}; {served} GETs served, {} failed; \
         transport failures +{transport_failures}; portal RSS {rss_before} -> peak {rss_peak} KiB",
        probes.len(),
        half_open_closed.len(),
        half_open_closed.iter().max(),
        get_failures.len()
    );

    assert!(alive(setup.portal_pid), "the portal died");
    assert!(errors.is_empty(), "attacks that could not run: {errors:?}");
    let wrong: Vec<String> = probes.iter().filter_map(judge).collect();
    assert!(
        wrong.is_empty(),
        "{} probes out of bounds: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(8)]
    );
    assert!(
        get_failures.is_empty(),
        "GETs failed during the attack: {:?}",
        &get_failures[..get_failures.len().min(5)]
    );
    assert!(served >= 10, "only {served} GETs in {attack_took:?}");
    assert!(
        rss_peak <= rss_before + RSS_BOUND_KIB,
        "RSS {rss_before} -> {rss_peak} KiB"
    );
    assert!(
        transport_failures >= refused_by_transport as f64,
        "transport failures grew by {transport_failures}, expected at least {refused_by_transport}"
    );
    wait_serving(setup.public, Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_tls_tunnel_shrugs_off_hostile_input() {
    hostile_transport(Transport::WsTls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_tunnel_shrugs_off_hostile_input() {
    hostile_transport(Transport::Tls).await;
}

/// The hand-made pieces are what they claim, so a probe never tests a
/// malformed attack by mistake.
#[test]
fn frames_and_hellos_are_well_formed() -> Result<()> {
    assert_eq!(ws_frame(0x2, b"ab", None), vec![0x82, 2, b'a', b'b']);
    assert_eq!(
        ws_frame(0x2, b"ab", Some([1, 2, 3, 4])),
        vec![0x82, 0x82, 1, 2, 3, 4, b'a' ^ 1, b'b' ^ 2]
    );
    assert_eq!(&ws_frame(0x2, &[0; 200], None)[..4], &[0x82, 126, 0, 200]);
    let certificate = SelfSigned::localhost()?;
    let hello = client_hello(&tls_client(&certificate));
    // A handshake record (0x16) holding a ClientHello (1).
    if hello.len() < 6 || hello[0] != 0x16 || hello[5] != 1 {
        bail!("not a ClientHello: {hello:02x?}");
    }
    let probe = Probe {
        name: "x".to_owned(),
        closed_after: Some(Duration::ZERO),
        answer: b"HTTP/1.1 404 Not Found\r\n".to_vec(),
        connect_took: Duration::ZERO,
    };
    assert_eq!(probe.status(), Some(404));
    Ok(())
}
