//! End-to-end tests of the app's plain proxying: configurations with
//! dokodemo-door inbounds and freedom/blackhole outbounds, started
//! in-process with `rayback_app::start` and driven over real loopback
//! sockets. Not here: VMess, mux and the reverse proxy (their own tests).
//!
//! ```text
//!  test client ──TCP/UDP──▶ dokodemo-door ──router──▶ freedom ──▶ echo / greeter / sink
//!                                                  └─▶ blackhole (nothing, or 403)
//! ```
//!
//! The throughput test runs the same plain configuration through the real
//! `v2ray` as well and prints both rates (`--nocapture` to see them).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rayback_app::Running;
use rayback_testkit::{
    echo_many, echo_server, echo_server_on, exchange, free_port, seeded_bytes, sha256_hex, TempDir,
    V2Ray,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The bound of any single exchange in these tests.
const TIMEOUT: Duration = Duration::from_secs(10);

/// blackhole's `{"type": "http"}` response, as the real v2ray 4.34 writes
/// it (LF line ends, two empty lines).
const HTTP_403: &[u8] =
    b"HTTP/1.1 403 Forbidden\nConnection: close\nCache-Control: max-age=3600, public\nContent-Length: 0\n\n\n";

/// Parses `config` as a `forwarding.json` and starts it.
async fn start(config: &Value) -> Result<Running> {
    let text = serde_json::to_string_pretty(config)?;
    let loaded = rayback_config::parse_str("forwarding.json", &text)
        .with_context(|| format!("parsing {text}"))?;
    rayback_app::start(&loaded.config).await
}

/// Where the inbound tagged `tag` listens.
fn listener(running: &Running, tag: &str) -> Result<SocketAddr> {
    let suffix = format!("({tag})");
    running
        .listeners()
        .iter()
        .find(|(place, _)| place.ends_with(&suffix))
        .map(|(_, addr)| *addr)
        .with_context(|| format!("no listener tagged {tag}: {:?}", running.listeners()))
}

/// A dokodemo-door inbound on 127.0.0.1 toward `127.0.0.1:target_port`.
fn dokodemo(tag: &str, target_port: u16, network: &str) -> Value {
    json!({
        "tag": tag, "listen": "127.0.0.1", "port": free_port(), "protocol": "dokodemo-door",
        "settings": {"address": "127.0.0.1", "port": target_port, "network": network},
    })
}

/// A freedom outbound sending everything to `127.0.0.1:port`.
fn redirect_to(tag: &str, port: u16) -> Value {
    json!({"tag": tag, "protocol": "freedom", "settings": {"redirect": format!("127.0.0.1:{port}")}})
}

fn inbound_rule(inbound: &str, outbound: &str) -> Value {
    json!({"type": "field", "inboundTag": [inbound], "outboundTag": outbound})
}

/// A port on 127.0.0.1 where nothing listens (checked).
async fn decoy_port() -> Result<u16> {
    let port = free_port();
    ensure!(
        TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "something listens on the decoy port {port}"
    );
    Ok(port)
}

/// A server on 127.0.0.1 that writes `name` to every connection, then
/// closes it.
async fn greeter(name: &'static str) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = socket.write_all(name.as_bytes()).await;
                let _ = socket.shutdown().await;
                let mut sink = [0u8; 1024];
                while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    Ok(addr)
}

/// Connects to `addr` and reads until the connection ends. Returns the
/// bytes and, when it ended with an error instead of EOF, its kind.
async fn read_all(addr: SocketAddr, request: &[u8]) -> Result<(Vec<u8>, Option<io::ErrorKind>)> {
    tokio::time::timeout(TIMEOUT, async {
        let mut socket = TcpStream::connect(addr).await?;
        if !request.is_empty() {
            socket.write_all(request).await?;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) => return anyhow::Ok((got, None)),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(error) => return Ok((got, Some(error.kind()))),
            }
        }
    })
    .await
    .with_context(|| format!("{addr} stayed open over {TIMEOUT:?}"))?
}

/// `exchange` (send, half-close, read to end) with a SHA-256 check.
async fn echo_once(addr: SocketAddr, seed: u64, len: usize) -> Result<()> {
    let data = seeded_bytes(seed, len);
    let got = exchange(addr, &data, TIMEOUT).await?;
    ensure!(
        got.len() == data.len() && sha256_hex(&got) == sha256_hex(&data),
        "seed {seed}: sent {} bytes, got {} back, hashes differ",
        data.len(),
        got.len()
    );
    Ok(())
}

/// A UDP echo server on 127.0.0.1.
async fn udp_echo() -> Result<SocketAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..len], from).await;
        }
    });
    Ok(addr)
}

/// A UDP client on 127.0.0.1 that sends one seeded datagram of each size
/// to `door` and wants each back, from `door`, before the next.
async fn udp_client(door: SocketAddr, client: u64, sizes: &[usize]) -> Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let mut buf = vec![0u8; 65_536];
    for (index, &len) in sizes.iter().enumerate() {
        let data = seeded_bytes(client * 100 + index as u64, len);
        socket.send_to(&data, door).await?;
        let (got, from) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf))
            .await
            .with_context(|| format!("client {client}: no reply to {len} bytes"))??;
        ensure!(
            from == door,
            "client {client}: reply from {from}, not {door}"
        );
        ensure!(
            buf[..got] == data[..],
            "client {client}: sent {len} bytes, got {got} other bytes back"
        );
    }
    Ok(())
}

#[tokio::test]
async fn dokodemo_to_freedom_carries_tcp() -> Result<()> {
    let echo = echo_server().await?;
    let running = start(&json!({
        "inbounds": [dokodemo("in", echo.port(), "tcp")],
        "outbounds": [{"tag": "direct", "protocol": "freedom"}],
    }))
    .await?;
    let door = listener(&running, "in")?;

    // Half-closing clients of several sizes, concurrently.
    let sizes = [1usize, 1000, 64 * 1024, 1024 * 1024, 3 * 1024 * 1024 + 7];
    let tasks: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(index, &len)| tokio::spawn(echo_once(door, 100 + index as u64, len)))
        .collect();
    for task in tasks {
        task.await??;
    }
    // Clients that keep their write side open until the answer is in.
    echo_many(door, 16, 256 * 1024, 200, TIMEOUT).await?;
    ensure!(running.stop(Duration::from_secs(5)).await, "stop timed out");
    Ok(())
}

#[tokio::test]
async fn dokodemo_to_freedom_carries_udp() -> Result<()> {
    let echo = udp_echo().await?;
    let running = start(&json!({
        "inbounds": [dokodemo("in", echo.port(), "tcp,udp")],
        "outbounds": [{"tag": "direct", "protocol": "freedom"}],
    }))
    .await?;
    let door = listener(&running, "in")?;

    // Four clients at once. Sizes stay small enough that four in flight
    // fit the kernel's default socket buffers (loopback UDP drops what
    // does not fit, and that is no fault of the proxy).
    let mut clients = Vec::new();
    for client in 0..4u64 {
        clients.push(tokio::spawn(udp_client(
            door,
            client,
            &[1, 100, 1400, 8 * 1024, 16 * 1024],
        )));
    }
    for client in clients {
        client.await??;
    }
    // The largest IPv4 datagram, alone.
    udp_client(door, 4, &[65_507, 1]).await?;
    ensure!(running.stop(Duration::from_secs(5)).await, "stop timed out");
    Ok(())
}

#[tokio::test]
async fn freedom_redirect_replaces_the_destination() -> Result<()> {
    let echo = echo_server().await?;
    let decoy = decoy_port().await?;
    let running = start(&json!({
        "inbounds": [dokodemo("in", decoy, "tcp")],
        "outbounds": [redirect_to("redirected", echo.port())],
    }))
    .await?;
    let door = listener(&running, "in")?;
    for seed in 0..4 {
        echo_once(door, 300 + seed, 100_000).await?;
    }
    Ok(())
}

#[tokio::test]
async fn blackhole_closes_or_answers_403() -> Result<()> {
    // Every dokodemo points at a live echo server: an echo would mean the
    // session escaped the blackhole.
    let echo = echo_server().await?;
    let by_port_target = free_port();
    let by_port = echo_server_on(by_port_target).await?;
    let running = start(&json!({
        "inbounds": [
            dokodemo("none", echo.port(), "tcp"),
            dokodemo("http", echo.port(), "tcp"),
            dokodemo("by-port", by_port.port(), "tcp"),
            dokodemo("open", echo.port(), "tcp"),
        ],
        "outbounds": [
            {"tag": "direct", "protocol": "freedom"},
            {"tag": "deny", "protocol": "blackhole"},
            {"tag": "deny-http", "protocol": "blackhole", "settings": {"response": {"type": "http"}}},
        ],
        "routing": {"rules": [
            inbound_rule("none", "deny"),
            inbound_rule("http", "deny-http"),
            {"type": "field", "port": by_port_target.to_string(), "outboundTag": "deny"},
        ]},
    }))
    .await?;

    // The control: the same target through a passing inbound echoes.
    echo_once(listener(&running, "open")?, 400, 1000).await?;

    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    for tag in ["none", "by-port"] {
        let started = Instant::now();
        let (got, _) = read_all(listener(&running, tag)?, request).await?;
        ensure!(
            got.is_empty(),
            "{tag}: blackhole let {} bytes through",
            got.len()
        );
        ensure!(
            started.elapsed() < Duration::from_secs(3),
            "{tag}: closing took {:?}",
            started.elapsed()
        );
    }

    let (got, error) = read_all(listener(&running, "http")?, request).await?;
    ensure!(
        got == HTTP_403,
        "http: got {:?} (ended with {error:?})",
        String::from_utf8_lossy(&got)
    );
    Ok(())
}

#[tokio::test]
async fn routing_by_inbound_tag_and_unknown_tag_falls_back() -> Result<()> {
    let (first, a, b) = (
        greeter("first").await?,
        greeter("backend a").await?,
        greeter("backend b").await?,
    );
    let decoy = decoy_port().await?;
    let running = start(&json!({
        "inbounds": [
            dokodemo("a", decoy, "tcp"),
            dokodemo("b", decoy, "tcp"),
            dokodemo("lost", decoy, "tcp"),
            dokodemo("unrouted", decoy, "tcp"),
        ],
        "outbounds": [
            redirect_to("to-first", first.port()),
            redirect_to("to-a", a.port()),
            redirect_to("to-b", b.port()),
        ],
        "routing": {"rules": [
            inbound_rule("a", "to-a"),
            inbound_rule("b", "to-b"),
            inbound_rule("lost", "no-such-outbound"),
        ]},
    }))
    .await?;
    for (tag, want) in [
        ("a", "backend a"),
        ("b", "backend b"),
        ("lost", "first"),
        ("unrouted", "first"),
        ("b", "backend b"),
        ("a", "backend a"),
    ] {
        let (got, error) = read_all(listener(&running, tag)?, b"").await?;
        ensure!(
            got == want.as_bytes(),
            "{tag}: reached {:?}, not {want:?} (ended with {error:?})",
            String::from_utf8_lossy(&got)
        );
    }
    Ok(())
}

#[tokio::test]
async fn policy_conn_idle_closes_only_idle_connections() -> Result<()> {
    let echo = echo_server().await?;
    let running = start(&json!({
        "inbounds": [dokodemo("in", echo.port(), "tcp")],
        "outbounds": [{"tag": "direct", "protocol": "freedom"}],
        "policy": {"levels": {"0": {"connIdle": 2}}},
    }))
    .await?;
    let door = listener(&running, "in")?;

    let idle = tokio::spawn(async move {
        let started = Instant::now();
        let (got, _) = read_all(door, b"").await?;
        ensure!(got.is_empty(), "an idle connection got {} bytes", got.len());
        anyhow::Ok(started.elapsed())
    });
    let active = tokio::spawn(async move {
        let mut socket = TcpStream::connect(door).await?;
        let started = Instant::now();
        let mut byte = [0u8; 1];
        for round in 0..10u8 {
            socket.write_all(&[round]).await?;
            tokio::time::timeout(Duration::from_secs(2), socket.read_exact(&mut byte))
                .await
                .with_context(|| format!("round {round}: no echo"))?
                .with_context(|| format!("round {round}: closed after {:?}", started.elapsed()))?;
            ensure!(byte[0] == round, "round {round}: echoed {}", byte[0]);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::Ok(started.elapsed())
    });

    let idle_for = idle.await??;
    ensure!(
        idle_for >= Duration::from_millis(1500) && idle_for <= Duration::from_millis(4500),
        "the idle connection closed after {idle_for:?}, not about 2 s"
    );
    let active_for = active.await??;
    ensure!(
        active_for > Duration::from_secs(4),
        "the active connection lived {active_for:?}"
    );
    Ok(())
}

#[tokio::test]
async fn stop_lets_transfers_finish_and_refuses_new_connections() -> Result<()> {
    const TOTAL: usize = 8 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let echo = echo_server().await?;
    let running = start(&json!({
        "inbounds": [dokodemo("in", echo.port(), "tcp")],
        "outbounds": [{"tag": "direct", "protocol": "freedom"}],
    }))
    .await?;
    let door = listener(&running, "in")?;

    let data = seeded_bytes(500, TOTAL);
    let want = sha256_hex(&data);
    let socket = TcpStream::connect(door).await?;
    let (mut reader, mut writer) = socket.into_split();
    // A slow writer: 128 chunks, 10 ms apart (about 1.3 s in all).
    let sender = tokio::spawn(async move {
        for chunk in data.chunks(CHUNK) {
            writer.write_all(chunk).await?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        writer.shutdown().await?;
        anyhow::Ok(())
    });
    let (first_mib, received) = tokio::sync::oneshot::channel::<()>();
    let receiver = tokio::spawn(async move {
        let mut got = Vec::with_capacity(TOTAL);
        let mut buf = vec![0u8; CHUNK];
        let mut signal = Some(first_mib);
        loop {
            let read = reader.read(&mut buf).await?;
            if read == 0 {
                break;
            }
            got.extend_from_slice(&buf[..read]);
            if got.len() >= 1024 * 1024 {
                if let Some(signal) = signal.take() {
                    let _ = signal.send(());
                }
            }
        }
        anyhow::Ok(got)
    });
    tokio::time::timeout(TIMEOUT, received)
        .await
        .context("the first MiB did not come back")??;

    let stopping = tokio::spawn(running.stop(Duration::from_secs(10)));
    // Let the accept loop see the stop.
    tokio::time::sleep(Duration::from_millis(100)).await;
    match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(door)).await {
        Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionRefused => {}
        Ok(Err(error)) => bail!("a new connection after stop failed oddly: {error}"),
        Ok(Ok(_)) => bail!("a new connection after stop was accepted"),
        Err(_) => bail!("a new connection after stop hung"),
    }
    ensure!(
        !stopping.is_finished(),
        "stop returned while a transfer was in flight"
    );

    tokio::time::timeout(TIMEOUT, sender).await???;
    let got = tokio::time::timeout(TIMEOUT, receiver).await???;
    ensure!(
        got.len() == TOTAL && sha256_hex(&got) == want,
        "the in-flight transfer got {} of {TOTAL} bytes, or other bytes",
        got.len()
    );
    let finished = tokio::time::timeout(TIMEOUT, stopping).await??;
    ensure!(finished, "stop reported connections still open");
    Ok(())
}

/// `YYYY/MM/DD hh:mm:ss 127.0.0.1:<source> accepted tcp:127.0.0.1:<target> [<tag>]`.
fn access_line_matches(line: &str, source: u16, target: u16, tag: &str) -> bool {
    // `9` stands for any digit, everything else for itself.
    let shaped = |text: &str, pattern: &str| {
        text.len() == pattern.len()
            && text.bytes().zip(pattern.bytes()).all(|(byte, want)| {
                if want == b'9' {
                    byte.is_ascii_digit()
                } else {
                    byte == want
                }
            })
    };
    let fields: Vec<&str> = line.split(' ').collect();
    fields.len() == 6
        && shaped(fields[0], "9999/99/99")
        && shaped(fields[1], "99:99:99")
        && fields[2] == format!("127.0.0.1:{source}")
        && fields[3] == "accepted"
        && fields[4] == format!("tcp:127.0.0.1:{target}")
        && fields[5] == format!("[{tag}]")
}

/// Makes one connection through `door` and waits until the access log at
/// `path` has its line; returns the log.
async fn logged_connection(
    door: SocketAddr,
    path: &std::path::Path,
    target: u16,
) -> Result<String> {
    let mut socket = TcpStream::connect(door).await?;
    let source = socket.local_addr()?.port();
    socket.write_all(b"ping").await?;
    let mut pong = [0u8; 4];
    tokio::time::timeout(TIMEOUT, socket.read_exact(&mut pong)).await??;
    drop(socket);
    let started = Instant::now();
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log
            .lines()
            .any(|line| access_line_matches(line, source, target, "direct"))
        {
            return Ok(log);
        }
        if started.elapsed() > Duration::from_secs(5) {
            bail!("no access line for source port {source} in {log:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn access_log_has_v2rays_shape() -> Result<()> {
    assert!(access_line_matches(
        "2026/11/24 22:04:43 127.0.0.1:53496 accepted tcp:127.0.0.1:18999 [direct]",
        53496,
        18999,
        "direct"
    ));
    assert!(!access_line_matches(
        "2026/11/24 22:04 127.0.0.1:53496 accepted tcp:127.0.0.1:18999 [direct]",
        53496,
        18999,
        "direct"
    ));
    let echo = echo_server().await?;
    let dir = TempDir::new("access")?;
    let config = |path: &std::path::Path| {
        json!({
            "log": {"access": path.display().to_string(), "loglevel": "warning"},
            "inbounds": [dokodemo("in", echo.port(), "tcp")],
            "outbounds": [{"tag": "direct", "protocol": "freedom"}],
        })
    };

    let ours = dir.path.join("rayback.log");
    let running = start(&config(&ours)).await?;
    let log = logged_connection(listener(&running, "in")?, &ours, echo.port()).await?;
    ensure!(log.lines().count() == 1, "rayback logged {log:?}");

    // The same check holds for the real v2ray.
    let theirs = dir.path.join("v2ray.log");
    let v2ray_config = config(&theirs);
    let port = v2ray_config["inbounds"][0]["port"]
        .as_u64()
        .context("port")? as u16;
    let _v2ray = V2Ray::start(&v2ray_config, &[port]).await?;
    let door = SocketAddr::from(([127, 0, 0, 1], port));
    // Readiness probes connected too; the check looks for our line only.
    let their_log = logged_connection(door, &theirs, echo.port()).await?;
    eprintln!("rayback's access log:\n{log}v2ray's access log:\n{their_log}");
    Ok(())
}

// ---------------------------------------------------------------- throughput

/// Bytes moved by the throughput test.
const GIB: u64 = 1 << 30;

/// A plain dokodemo-door → freedom tunnel on `port` toward `target`.
fn plain_config(port: u16, target: u16) -> Value {
    json!({
        "inbounds": [{
            "tag": "in", "listen": "127.0.0.1", "port": port, "protocol": "dokodemo-door",
            "settings": {"address": "127.0.0.1", "port": target, "network": "tcp"},
        }],
        "outbounds": [{"tag": "direct", "protocol": "freedom"}],
    })
}

/// Byte counts of the connections a [`sink`] took, as each ends.
type Counts = tokio::sync::mpsc::UnboundedReceiver<io::Result<u64>>;

/// A sink on 127.0.0.1 that counts the bytes of each connection.
async fn sink() -> Result<(SocketAddr, Counts)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (report, counts) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let report = report.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                let counted = loop {
                    match socket.read(&mut buf).await {
                        Ok(0) => break Ok(total),
                        Ok(read) => total += read as u64,
                        Err(error) => break Err(error),
                    }
                };
                let _ = report.send(counted);
            });
        }
    });
    Ok((addr, counts))
}

/// Writes [`GIB`] bytes into `tunnel` and waits for the sink to count
/// them; returns the rate in Gbit/s. Connections that carried nothing
/// (readiness probes) are skipped.
async fn pump(tunnel: SocketAddr, mut counts: Counts) -> Result<f64> {
    const BLOCK: usize = 256 * 1024;
    let block = seeded_bytes(7, BLOCK);
    let started = Instant::now();
    let transfer = async {
        let mut socket = TcpStream::connect(tunnel).await?;
        socket.set_nodelay(true)?;
        for _ in 0..GIB / BLOCK as u64 {
            socket.write_all(&block).await?;
        }
        socket.shutdown().await?;
        loop {
            let counted = counts.recv().await.context("the sink stopped")??;
            if counted > 0 {
                ensure!(counted == GIB, "the sink counted {counted} of {GIB} bytes");
                return anyhow::Ok(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(180), transfer)
        .await
        .context("1 GiB took over 180 s")??;
    Ok(GIB as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e9)
}

/// Rayback runs on a runtime of its own (two workers, like the binary on
/// this machine), the source and sink on another.
#[test]
fn throughput_one_gib_rayback_and_v2ray() -> Result<()> {
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let proxy = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let (sink_addr, counted) = clients.block_on(sink())?;
    let running = proxy.block_on(start(&plain_config(free_port(), sink_addr.port())))?;
    let tunnel = listener(&running, "in")?;
    let rayback = clients.block_on(pump(tunnel, counted))?;
    proxy.block_on(running.stop(Duration::from_secs(5)));
    drop(proxy);

    let (sink_addr, counted) = clients.block_on(sink())?;
    let port = free_port();
    let v2ray = clients.block_on(async {
        let _v2ray = V2Ray::start(&plain_config(port, sink_addr.port()), &[port]).await?;
        pump(SocketAddr::from(([127, 0, 0, 1], port)), counted).await
    });
    let v2ray = match v2ray {
        Ok(rate) => rate,
        Err(error) => bail!("through v2ray: {error:#}"),
    };
    eprintln!(
        "1 GiB one way over loopback: rayback: {rayback:.2} Gbit/s, v2ray: {v2ray:.2} Gbit/s, ratio {:.2}",
        rayback / v2ray
    );
    Ok(())
}
