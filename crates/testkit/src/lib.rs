//! Dev-only helpers for Rayback's tests: the real `v2ray` as a child
//! process, free loopback ports, readiness waits, and seeded backends that
//! verify what crossed a tunnel by SHA-256.
//!
//! Nothing here is shipped: crates use it as a dev-dependency only. Every
//! helper binds 127.0.0.1 and every wait is bounded.

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
pub fn free_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
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

/// A running real `v2ray`, killed (by PID) when dropped.
pub struct V2Ray {
    child: Child,
    _dir: TempDir,
}

impl V2Ray {
    /// Starts `v2ray -config <file>` with `config` written to a temporary
    /// file. Waits for each of `ready_ports` (127.0.0.1) to accept.
    pub async fn start(config: &serde_json::Value, ready_ports: &[u16]) -> Result<V2Ray> {
        let dir = TempDir::new("v2ray")?;
        let path = dir.path.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config)?)?;
        let child = Command::new(v2ray_path())
            .arg("-config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", v2ray_path().display()))?;
        let v2ray = V2Ray { child, _dir: dir };
        for port in ready_ports {
            wait_for_port(SocketAddr::from(([127, 0, 0, 1], *port))).await?;
        }
        Ok(v2ray)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for V2Ray {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let listener = TcpListener::bind("127.0.0.1:0").await?;
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
