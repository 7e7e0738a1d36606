//! Shared pieces of the binaries' end-to-end tests: start Rayback or the
//! real v2ray as bridge or portal from the seed configs, and wait for the
//! tunnel to serve.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rayback_testkit::tls::SelfSigned;
use rayback_testkit::{
    http_get, seed_configs, v2ray_test, Daemon, SeedPorts, TempDir, V2Ray, BACKEND_PAGE,
};

/// Which implementation plays a role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Rayback,
    V2Ray,
}

/// A running bridge or portal of either kind, stopped (by PID) on drop.
pub enum Node {
    Rayback(Daemon),
    V2Ray(V2Ray),
}

impl Node {
    pub fn pid(&self) -> u32 {
        match self {
            Node::Rayback(daemon) => daemon.pid(),
            Node::V2Ray(v2ray) => v2ray.pid(),
        }
    }
}

static BUILD_BRIDGE: Once = Once::new();

/// The `bridge` binary, brought up to date once per test binary (cargo
/// builds only the portal's own binary for its tests; a stale bridge from
/// an earlier build would test old code).
pub fn bridge_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_portal")).with_file_name("bridge");
    BUILD_BRIDGE.call_once(|| {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "bridge"])
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building the bridge binary failed");
    });
    path
}

pub fn portal_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portal"))
}

/// Starts `kind` with `config`, waiting for `ready` ports.
pub async fn start(kind: Kind, binary: PathBuf, config: &str, ready: &[u16]) -> Result<Node> {
    Ok(match kind {
        Kind::Rayback => Node::Rayback(Daemon::start(&binary, config, "config.json", ready).await?),
        Kind::V2Ray => Node::V2Ray(V2Ray::start_text(config, ready).await?),
    })
}

pub async fn start_bridge(kind: Kind, config: &str) -> Result<Node> {
    start(kind, bridge_binary(), config, &[]).await
}

pub async fn start_portal(kind: Kind, config: &str, ports: SeedPorts) -> Result<Node> {
    start(kind, portal_binary(), config, &[ports.public, ports.tunnel]).await
}

/// Starts a portal and a bridge and waits (up to 20 s) until a request
/// passes through them; returns (portal, bridge).
pub async fn start_serving(
    portal: Kind,
    portal_config: &str,
    bridge: Kind,
    bridge_config: &str,
    ports: SeedPorts,
) -> (Node, Node) {
    let portal = start_portal(portal, portal_config, ports).await.unwrap();
    let bridge = start_bridge(bridge, bridge_config).await.unwrap();
    wait_serving(public(ports), Duration::from_secs(20))
        .await
        .unwrap();
    (portal, bridge)
}

/// The seed configs with `backend` as the bridge's redirect target.
pub fn configs(backend: SocketAddr) -> Result<(SeedPorts, String, String)> {
    let mut ports = SeedPorts::free();
    ports.service = backend.port();
    let (bridge, portal) = seed_configs(ports)?;
    Ok((ports, bridge, portal))
}

pub fn public(ports: SeedPorts) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], ports.public))
}

/// Waits until a `GET /` through the portal returns the backend's page;
/// returns how long that took.
pub async fn wait_serving(public: SocketAddr, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    loop {
        match http_get(public, Duration::from_secs(3)).await {
            Ok((200, body)) if body == BACKEND_PAGE => return Ok(started.elapsed()),
            _ if started.elapsed() < limit => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok((code, _)) => bail!("the portal answered {code} after {limit:?}"),
            Err(error) => bail!("no page through {public} within {limit:?}: {error:#}"),
        }
    }
}

/// Which end of a connection a port is matched against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Local,
    Remote,
}

/// Established TCP connections of process `pid` whose `end` port is
/// `port`, read from /proc (e.g. a bridge's tunnel connections: remote
/// port = the portal's tunnel port).
pub fn connections_of(pid: u32, end: End, port: u16) -> usize {
    local_ports_of(pid, end, port).len()
}

/// The local ports of those connections, sorted: their identity (a
/// re-dialled tunnel gets a new one).
pub fn local_ports_of(pid: u32, end: End, port: u16) -> Vec<u16> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|entry| std::fs::read_link(entry.path()).ok())
                .filter_map(|link| {
                    let link = link.to_string_lossy().into_owned();
                    link.strip_prefix("socket:[")
                        .and_then(|rest| rest.strip_suffix(']'))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    let port_of = |address: &str| {
        address
            .rsplit(':')
            .next()
            .and_then(|port| u16::from_str_radix(port, 16).ok())
    };
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 {
                continue;
            }
            let address = if end == End::Local {
                fields[1]
            } else {
                fields[2]
            };
            let established = fields[3] == "01";
            if established && port_of(address) == Some(port) && inodes.contains(fields[9]) {
                ports.extend(port_of(fields[1]));
            }
        }
    }
    ports.sort_unstable();
    ports
}

/// Adds top-level members (JSON text without the braces, e.g.
/// `"policy": {...}`) to a seed config, whose top-level object opens on
/// a line of its own.
pub fn with_members(config: &str, members: &str) -> String {
    config.replacen("\n{\n", &format!("\n{{\n  {members},\n"), 1)
}

/// The seed configs with a fault relay between bridge and portal: the
/// bridge dials the relay, the relay forwards to the portal's tunnel port.
pub async fn relayed_configs(
    backend: SocketAddr,
) -> Result<(
    SeedPorts,
    rayback_testkit::fault::FaultRelay,
    String,
    String,
)> {
    let (ports, _, portal) = configs(backend)?;
    let relay =
        rayback_testkit::fault::FaultRelay::start(SocketAddr::from(([127, 0, 0, 1], ports.tunnel)))
            .await?;
    let (bridge, _) = seed_configs(SeedPorts {
        tunnel: relay.port(),
        ..ports
    })?;
    Ok((ports, relay, bridge, portal))
}

/// Runs `-test` on `config` with `kind` (Rayback's `binary`, or the real
/// v2ray) and fails with its output unless the config is accepted: called
/// before starting a node, a refused config shows as itself rather than as
/// a port that never opened.
pub fn check_config(kind: Kind, binary: &Path, config: &str) -> Result<()> {
    let (code, output) = match kind {
        Kind::V2Ray => v2ray_test(config, "config.json")?,
        Kind::Rayback => {
            let dir = TempDir::new("check")?;
            let path = dir.path.join("config.json");
            std::fs::write(&path, config)?;
            let output = std::process::Command::new(binary)
                .arg("-test")
                .arg("-c")
                .arg(&path)
                .stdin(std::process::Stdio::null())
                .output()
                .with_context(|| format!("running {} -test", binary.display()))?;
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            (output.status.code().unwrap_or(-1), text)
        }
    };
    if code != 0 {
        bail!("{kind:?} refused the config (-test exited {code}):\n{output}");
    }
    Ok(())
}

/// Whether the RAYBACK_SOAK=1 tier is on.
pub fn soak() -> bool {
    std::env::var("RAYBACK_SOAK").is_ok_and(|value| value == "1")
}

// ------------------------------------------------ the tunnel over TLS / ws+tls

use rayback_testkit::tls::TunnelTls;

/// `streamSettings` (JSON text) of the bridge's outbound.
pub fn bridge_stream(transport: TunnelTls, certificate: &SelfSigned) -> String {
    rayback_testkit::tls::tunnel_bridge_stream(transport, &certificate.cert_path)
}

/// `streamSettings` (JSON text) of the portal's inbound.
pub fn portal_stream(transport: TunnelTls, certificate: &SelfSigned) -> String {
    rayback_testkit::tls::tunnel_portal_stream(
        transport,
        &certificate.cert_path,
        &certificate.key_path,
    )
}

/// 127.0.0.1:`port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A Rayback binary started from quick-start flags, killed (by PID) on
/// drop; its output goes to a file shown when a test fails.
pub struct Flagged {
    child: std::process::Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Flagged {
    pub fn start(binary: &Path, args: &[String]) -> Result<Flagged> {
        let dir = TempDir::new("flagged")?;
        let log = dir.path.join("output.log");
        let file = std::fs::File::create(&log)?;
        let child = std::process::Command::new(binary)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Flagged {
            child,
            log,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it has printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the TCP `ports` on 127.0.0.1 (bounded); fails with the
    /// output when one does not open or the process has exited.
    pub async fn wait_ports(&mut self, ports: &[u16]) -> Result<()> {
        for port in ports {
            if let Err(error) = rayback_testkit::wait_for_port(loopback(*port)).await {
                bail!("{error:#}\n{}", self.output());
            }
        }
        if let Some(status) = self.child.try_wait()? {
            bail!("exited ({status}):\n{}", self.output());
        }
        Ok(())
    }
}

impl Drop for Flagged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` to completion with its output captured and no input,
/// killed and failed after 20 s.
pub fn run_bounded(command: &mut std::process::Command) -> Result<std::process::Output> {
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            bail!("{command:?} ran over 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(child.wait_with_output()?)
}

/// `binary ARGS --print-config` (bounded at 20 s): the configuration the
/// flags stand for.
pub fn print_config(binary: &Path, args: &[String]) -> Result<String> {
    let output = run_bounded(
        std::process::Command::new(binary)
            .args(args)
            .arg("--print-config"),
    )?;
    if !output.status.success() {
        bail!(
            "{} {args:?} --print-config failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// One HTTP/1.1 request (`method`, `path`, extra header lines `headers`,
/// each ending in CRLF) to `addr`, read to the close, bounded at 5 s:
/// (status, head, body). A `HEAD` answer has no body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
) -> Result<(u16, String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut socket = tokio::net::TcpStream::connect(addr).await?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        socket.read_to_end(&mut response).await?;
        let text = String::from_utf8(response)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .with_context(|| format!("no end of head in {text:?}"))?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("no status in {head:?}"))?;
        anyhow::Ok((code, head.to_owned(), body.to_owned()))
    })
    .await
    .with_context(|| format!("{method} {path} from {addr} took over 5 s"))?
}
