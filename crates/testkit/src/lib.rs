#![doc = include_str!("../README.md")]

pub mod doubles;
pub mod fairness;
pub mod fault;
pub mod gauge;
pub mod peer;
pub mod tls;
pub mod traffic;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long any readiness wait may take before the test fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A free TCP port on 127.0.0.1 (bound once and released; good enough for
/// tests that hand the port to another process).
///
/// A port is never handed out twice in one process: tests run in parallel
/// threads, and two of them given the same port would bind it twice (v2ray
/// sets `SO_REUSEPORT`, so the second bind can even succeed and split the
/// connections between two processes).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_for_port(addr: SocketAddr) -> Result<()> {
    let started = Instant::now();
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("nothing listened on {addr} within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Path of the real v2ray binary (`V2RAY` env var, else `/usr/bin/v2ray`).
pub fn v2ray_path() -> PathBuf {
    std::env::var_os("V2RAY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/v2ray"))
}

/// A child process with its config in a temporary directory, killed (by
/// PID) when dropped.
pub struct Daemon {
    child: Child,
    _dir: TempDir,
}

impl Daemon {
    /// Starts `program -config <dir>/<file_name>` with `config` written
    /// there, then waits for each of `ready_ports` on 127.0.0.1.
    pub async fn start(
        program: &std::path::Path,
        config: &str,
        file_name: &str,
        ready_ports: &[u16],
    ) -> Result<Daemon> {
        let dir = TempDir::new("daemon")?;
        let path = dir.path.join(file_name);
        std::fs::write(&path, config)?;
        let child = Command::new(program)
            .arg("-config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut daemon = Daemon { child, _dir: dir };
        for port in ready_ports {
            wait_for_port(SocketAddr::from(([127, 0, 0, 1], *port))).await?;
        }
        // Something else may hold a ready port while the child failed to
        // bind it: a child that already exited is not ready.
        if let Some(status) = daemon.child.try_wait()? {
            bail!(
                "{} exited ({status}) although {ready_ports:?} accept: another process holds a port",
                program.display()
            );
        }
        Ok(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running real `v2ray`, killed (by PID) when dropped.
pub struct V2Ray(Daemon);

impl V2Ray {
    /// Starts `v2ray -config <file>` with `config` written to a temporary
    /// file. Waits for each of `ready_ports` (127.0.0.1) to accept.
    pub async fn start(config: &serde_json::Value, ready_ports: &[u16]) -> Result<V2Ray> {
        V2Ray::start_text(&serde_json::to_string_pretty(config)?, ready_ports).await
    }

    /// Like [`V2Ray::start`], with the config as text (comments allowed).
    pub async fn start_text(config: &str, ready_ports: &[u16]) -> Result<V2Ray> {
        Ok(V2Ray(
            Daemon::start(&v2ray_path(), config, "config.json", ready_ports).await?,
        ))
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }
}

/// Runs `v2ray -test -config <file>` on `text` and returns (exit code, output).
pub fn v2ray_test(text: &str, file_name: &str) -> Result<(i32, String)> {
    let dir = TempDir::new("v2ray-test")?;
    let path = dir.path.join(file_name);
    std::fs::write(&path, text)?;
    let output = Command::new(v2ray_path())
        .arg("-test")
        .arg("-config")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} -test", v2ray_path().display()))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((output.status.code().unwrap_or(-1), text))
}

/// A temporary directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Result<TempDir> {
        let mut random = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut random);
        let path = std::env::temp_dir().join(format!("rayback-{prefix}-{}", hex::encode(random)));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `len` pseudo-random bytes from `seed`: tests regenerate the expected
/// data instead of keeping copies.
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    data
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// An echo server on 127.0.0.1 (port 0): every connection gets back what it
/// sends, half-close respected. Runs until the runtime ends.
pub async fn echo_server() -> Result<SocketAddr> {
    echo_server_on(0).await
}

/// [`echo_server`] on 127.0.0.1:`port`.
pub async fn echo_server_on(port: u16) -> Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = socket.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
                let _ = writer.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// Sends `data` on a new connection to `addr` while reading everything that
/// comes back, half-closing after the last byte. Returns what came back.
/// Bounded by `timeout`.
pub async fn exchange(addr: SocketAddr, data: &[u8], timeout: Duration) -> Result<Vec<u8>> {
    tokio::time::timeout(timeout, async {
        let socket = TcpStream::connect(addr).await?;
        let (mut reader, mut writer) = socket.into_split();
        let data = data.to_vec();
        let sender = tokio::spawn(async move {
            writer.write_all(&data).await?;
            writer.shutdown().await?;
            anyhow::Ok(writer)
        });
        let mut received = Vec::new();
        reader.read_to_end(&mut received).await?;
        let _writer = sender.await??;
        anyhow::Ok(received)
    })
    .await
    .with_context(|| format!("exchange with {addr} took over {timeout:?}"))?
}

/// The repository's root (testkit sits in `crates/testkit`).
pub fn workspace_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit is two levels below the root")
        .to_path_buf()
}

/// Ports for the seed page's reverse proxy on loopback.
#[derive(Clone, Copy, Debug)]
pub struct SeedPorts {
    /// The portal's public (dokodemo-door) port; the page's 80.
    pub public: u16,
    /// The portal's VMess port for the bridge; the page's 1024.
    pub tunnel: u16,
    /// The web server beside the bridge; the page's 127.0.0.1:80.
    pub service: u16,
}

impl SeedPorts {
    pub fn free() -> SeedPorts {
        SeedPorts {
            public: free_port(),
            tunnel: free_port(),
            service: free_port(),
        }
    }
}

fn replace_once(text: &str, from: &str, to: &str, file: &str) -> Result<String> {
    let count = text.matches(from).count();
    if count != 1 {
        bail!("{file}: expected {from:?} once, found it {count} times");
    }
    Ok(text.replacen(from, to, 1))
}

/// Adds `"streamSettings": <stream_settings>` (JSON object text) to the
/// tunnel's VMess handler of a seed config ([`seed_configs`]): the
/// bridge's outbound or the portal's inbound, both tagged `interconn`
/// there. Text insertion rather than parsing, because the seed files have
/// comments.
pub fn with_tunnel_stream(config: &str, stream_settings: &str) -> Result<String> {
    const TAG: &str = "\"tag\": \"interconn\"";
    let count = config.matches(TAG).count();
    if count != 1 {
        bail!("expected {TAG} once in the seed config, found it {count} times");
    }
    Ok(config.replacen(
        TAG,
        &format!("{TAG}, \"streamSettings\": {stream_settings}"),
        1,
    ))
}

/// The seed page's bridge and portal configurations from
/// `config-examples/seed/` (legacy form, comments kept), with only ports
/// moved and the portal's listeners bound to 127.0.0.1.
pub fn seed_configs(ports: SeedPorts) -> Result<(String, String)> {
    let dir = workspace_root().join("config-examples/seed");
    let bridge = std::fs::read_to_string(dir.join("bridge.json"))?;
    let portal = std::fs::read_to_string(dir.join("portal.json"))?;
    let bridge = replace_once(
        &bridge,
        "\"redirect\": \"127.0.0.1:80\"",
        &format!("\"redirect\": \"127.0.0.1:{}\"", ports.service),
        "bridge.json",
    )?;
    let bridge = replace_once(
        &bridge,
        "\"port\": 1024,",
        &format!("\"port\": {},", ports.tunnel),
        "bridge.json",
    )?;
    let portal = replace_once(
        &portal,
        "\"port\": 80,\n      \"protocol\": \"dokodemo-door\"",
        &format!(
            "\"listen\": \"127.0.0.1\", \"port\": {},\n      \"protocol\": \"dokodemo-door\"",
            ports.public
        ),
        "portal.json",
    )?;
    let portal = replace_once(
        &portal,
        "\"port\": 1024,",
        &format!("\"listen\": \"127.0.0.1\", \"port\": {},", ports.tunnel),
        "portal.json",
    )?;
    Ok((bridge, portal))
}

/// The page a [`backend`] serves for `GET`.
pub const BACKEND_PAGE: &[u8] = b"hello from the backend beside the bridge\n";

/// A backend on 127.0.0.1 (port 0) that answers a connection starting with
/// `GET ` as a tiny HTTP/1.1 server (one response, then close) and echoes
/// anything else (half-close respected). Runs until the runtime ends.
pub async fn backend() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve_backend(socket));
        }
    });
    Ok(addr)
}

async fn serve_backend(mut socket: TcpStream) -> Result<()> {
    let mut first = [0u8; 4];
    let mut have = 0;
    while have < 4 {
        let read = socket.read(&mut first[have..]).await?;
        if read == 0 {
            socket.write_all(&first[..have]).await?;
            return Ok(socket.shutdown().await?);
        }
        have += read;
    }
    if &first == b"GET " {
        let mut request = first.to_vec();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
            let read = socket.read(&mut buf).await?;
            if read == 0 {
                break;
            }
            request.extend_from_slice(&buf[..read]);
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            BACKEND_PAGE.len()
        );
        socket.write_all(head.as_bytes()).await?;
        socket.write_all(BACKEND_PAGE).await?;
        return Ok(socket.shutdown().await?);
    }
    socket.write_all(&first).await?;
    let (mut reader, mut writer) = socket.split();
    tokio::io::copy(&mut reader, &mut writer).await?;
    Ok(writer.shutdown().await?)
}

/// One `GET /` on a new connection; returns the status code and body. Like
/// curl or a browser it reads `Content-Length` bytes of body and is done,
/// without waiting for the server to close (a V2Ray portal holds the
/// public connection open for its `uplinkOnly` second after the response).
pub async fn http_get(addr: SocketAddr, timeout: Duration) -> Result<(u16, Vec<u8>)> {
    tokio::time::timeout(timeout, async {
        let mut socket = TcpStream::connect(addr).await?;
        socket
            .write_all(
                format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
        read_http_response(&mut socket).await
    })
    .await
    .with_context(|| format!("GET from {addr} took over {timeout:?}"))?
}

/// Reads one HTTP/1 response from `socket`: its status code and body, the
/// body by `Content-Length` (without waiting for the close), else up to the
/// close (de-chunked when the head says `chunked`). A close before the head
/// or before `Content-Length` bytes is an error.
pub async fn read_http_response(socket: &mut TcpStream) -> Result<(u16, Vec<u8>)> {
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let head_end = response.windows(4).position(|w| w == b"\r\n\r\n");
        let read = match head_end {
            Some(end) => {
                let head = String::from_utf8_lossy(&response[..end]).into_owned();
                let code: u16 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|code| code.parse().ok())
                    .with_context(|| format!("no status in {head:?}"))?;
                let length = head.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                });
                let body = &response[end + 4..];
                if let Some(length) = length {
                    if body.len() >= length {
                        return Ok((code, body[..length].to_vec()));
                    }
                }
                let read = socket.read(&mut buf).await?;
                if read == 0 && length.is_none() {
                    let chunked = head
                        .to_ascii_lowercase()
                        .contains("transfer-encoding: chunked");
                    let body = if chunked {
                        dechunk(body)
                    } else {
                        body.to_vec()
                    };
                    return Ok((code, body));
                }
                read
            }
            None => socket.read(&mut buf).await?,
        };
        if read == 0 {
            bail!(
                "the connection closed after {} bytes, before a complete response",
                response.len()
            );
        }
        response.extend_from_slice(&buf[..read]);
    }
}

/// A chunked body's data (what a complete or truncated body holds).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..line_end])
            .ok()
            .and_then(|size| usize::from_str_radix(size.trim(), 16).ok());
        let start = line_end + 2;
        match size {
            Some(size) if size > 0 && body.len() >= start + size => {
                out.extend_from_slice(&body[start..start + size]);
                body = body[start + size..]
                    .strip_prefix(b"\r\n")
                    .unwrap_or(&body[start + size..]);
            }
            _ => break,
        }
    }
    out
}

/// Sends `data` on a new connection to `addr` while reading the same
/// number of bytes back, then closes. Unlike [`exchange`] it does not
/// half-close first: V2Ray's Mux.Cool has no half-close, so a request/
/// response client through a V2Ray node must keep its write side open
/// until the answer is in.
pub async fn exchange_exact(addr: SocketAddr, data: &[u8], timeout: Duration) -> Result<Vec<u8>> {
    tokio::time::timeout(timeout, async {
        let socket = TcpStream::connect(addr).await?;
        let (mut reader, mut writer) = socket.into_split();
        let data = data.to_vec();
        let len = data.len();
        let sender = tokio::spawn(async move {
            writer.write_all(&data).await?;
            anyhow::Ok(writer)
        });
        let mut received = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            let read = reader.read(&mut received[filled..]).await?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        received.truncate(filled);
        let mut writer = sender.await??;
        writer.shutdown().await?;
        anyhow::Ok(received)
    })
    .await
    .with_context(|| format!("exchange with {addr} took over {timeout:?}"))?
}

/// `connections` concurrent echo exchanges of `size` seeded bytes each
/// through `addr`; fails unless every one comes back intact. Seeds start
/// at `seed`.
pub async fn echo_many(
    addr: SocketAddr,
    connections: usize,
    size: usize,
    seed: u64,
    timeout: Duration,
) -> Result<()> {
    let mut tasks = Vec::new();
    for index in 0..connections {
        tasks.push(tokio::spawn(async move {
            let data = seeded_bytes(seed + index as u64, size);
            let got = exchange_exact(addr, &data, timeout).await?;
            if got.len() != data.len() || sha256_hex(&got) != sha256_hex(&data) {
                bail!(
                    "connection {index}: sent {} bytes, got {} back, hashes differ",
                    data.len(),
                    got.len()
                );
            }
            anyhow::Ok(())
        }));
    }
    let mut failures = Vec::new();
    for (index, task) in tasks.into_iter().enumerate() {
        if let Err(error) = task.await? {
            failures.push(format!("#{index}: {error:#}"));
        }
    }
    if !failures.is_empty() {
        const SHOWN: usize = 8;
        let more = failures.len().saturating_sub(SHOWN);
        bail!(
            "{} of {connections} echoes failed: {}{}",
            failures.len(),
            failures[..failures.len().min(SHOWN)].join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
