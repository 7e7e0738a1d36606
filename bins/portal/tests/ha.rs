//! High availability: three Rayback portals behind a real HAProxy, two
//! bridges that each keep tunnels to every portal, and a steady trickle of
//! visitors through the balancer while one portal is killed and restarted
//! and then all three are restarted one at a time.
//!
//! ```text
//!                                  ┌─▶ portal 1 :public ◀═╗ tunnels (each bridge dials
//! visitor ─▶ HAProxy :front ──────┼─▶ portal 2 :public ◀═╬═ every portal's own :tunnel) ══ bridge A ─┐
//! 127.0.0.5   send-proxy-v2        └─▶ portal 3 :public ◀═╝                              ══ bridge B ─┴─▶ freedom (PROXY v2) ─▶ backend
//!             check: GET /ready on each portal's :metrics (inter 300 ms, fall 1, rise 2)
//! ```
//!
//! The visitor's address travels the whole way: HAProxy's PROXY v2 header
//! to the portal (`acceptProxyProtocol`), the tunnel to the bridge, and
//! freedom's `proxyProtocol: 2` header to the backend, which answers with
//! the source it read. Every successful answer must name 127.0.0.5.
//!
//! Steps, under about 20 requests a second (a new connection each):
//!
//! | step | what happens | must hold |
//! |---|---|---|
//! | warm-up | start everything, poll `/ready` | all three portals ready, each bridge has a tunnel to each portal |
//! | steady | load only | no failure |
//! | kill | SIGKILL portal 1 | failures (counted, with their window) only until HAProxy marks it down |
//! | restart | portal 1 again, same ports | ready again, and it serves requests (its own `/metrics`) |
//! | rolling | SIGTERM, exit, restart, ready: each portal in turn | `/ready` says `draining` at once; zero failed requests |
//!
//! A poller asks every portal's and bridge's `/ready` every 100 ms; its
//! transitions, HAProxy's UP/DOWN lines and the test's own steps are
//! printed as one timeline, followed by the figures of each step. Every
//! check is collected and the test fails at the end listing all that did
//! not hold, so one run shows everything.
//!
//! Without haproxy installed the test prints "skipped: haproxy not
//! installed" and returns. A second test checks that the examples in
//! `config-examples/ha/` load (Rayback, v2ray, haproxy, nginx).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{bridge_binary, check_config, connections_of, portal_binary, End, Kind};
use ppp::{v1, v2, HeaderResult, PartialResult};
use rayback_testkit::gauge::{metric, scrape};
use rayback_testkit::peer::connect_from;
use rayback_testkit::{free_port, v2ray_path, v2ray_test, wait_for_port, workspace_root, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The VMess user both sides share (the seed page's).
const ID: &str = "27848739-7e62-4138-9fd3-098a63964b6b";
/// The tunnel's domain, equal on portals and bridges.
const DOMAIN: &str = "test.v2ray.com";
/// Where the visitor's connections come from: not 127.0.0.1, so an
/// answer naming it cannot be HAProxy's, a portal's or a bridge's own.
const VISITOR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
/// `rayback.drainDelay` of every portal.
const DRAIN_DELAY: Duration = Duration::from_millis(1500);
/// One request every 50 ms: 20 a second.
const PACE: Duration = Duration::from_millis(50);
/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the `/ready` poller asks.
const POLL: Duration = Duration::from_millis(100);
const PORTALS: usize = 3;
const BRIDGES: usize = 2;
/// Bounds of the waits, chosen so that a run where nothing becomes ready
/// still ends well under 90 s.
const WARM_UP_LIMIT: Duration = Duration::from_secs(12);
const READY_LIMIT: Duration = Duration::from_secs(8);
const EXIT_LIMIT: Duration = Duration::from_secs(6);

// ------------------------------------------------------------------ time

/// Seconds since the test started, the unit of every printed figure.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(self) -> Duration {
        self.0.elapsed()
    }
}

fn secs(at: Duration) -> String {
    format!("{:.3}s", at.as_secs_f64())
}

/// Things that happened, each at a time on the [`Clock`]: the test's own
/// steps, `/ready` transitions, HAProxy's log lines.
#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<Vec<(Duration, String)>>>);

impl Timeline {
    fn push(&self, at: Duration, what: impl Into<String>) {
        self.0.lock().unwrap().push((at, what.into()));
    }

    fn entries(&self) -> Vec<(Duration, String)> {
        self.0.lock().unwrap().clone()
    }
}

// ------------------------------------------------------------- processes

/// A Rayback process started by the test, its config and output in a
/// temporary directory; killed (by PID) on drop.
struct Process {
    child: Child,
    dir: TempDir,
}

impl Process {
    fn spawn(binary: &Path, config: &str) -> Result<Process> {
        let dir = TempDir::new("ha")?;
        let path = dir.path.join("config.json");
        std::fs::write(&path, config)?;
        let output = std::fs::File::create(dir.path.join("output.log"))?;
        let child = Command::new(binary)
            .arg("-config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Process { child, dir })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn terminate(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM {} failed: {status}", self.pid());
        }
        Ok(())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `limit` for the process to exit; returns how long that took.
    async fn wait_exit(&mut self, limit: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                bail!("still running after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The last lines the process wrote (its log), for a failure message.
    fn output_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path.join("output.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A portal's three ports, the same across its restarts.
#[derive(Clone, Copy, Debug)]
struct PortalPorts {
    public: u16,
    tunnel: u16,
    metrics: u16,
}

impl PortalPorts {
    fn free() -> PortalPorts {
        PortalPorts {
            public: free_port(),
            tunnel: free_port(),
            metrics: free_port(),
        }
    }

    fn metrics_addr(self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.metrics))
    }
}

/// One portal of the three: its ports, its config and, while it runs,
/// its process.
struct PortalSlot {
    name: String,
    ports: PortalPorts,
    config: String,
    process: Option<Process>,
}

impl PortalSlot {
    /// Starts the portal and waits until its metrics endpoint answers and
    /// its tunnel port accepts.
    async fn start(&mut self) -> Result<()> {
        let process = Process::spawn(&portal_binary(), &self.config)?;
        self.process = Some(process);
        let started = Instant::now();
        while http_get(
            self.ports.metrics_addr(),
            "/live",
            Duration::from_millis(300),
        )
        .await
        .is_err()
        {
            if started.elapsed() > Duration::from_secs(10) {
                bail!(
                    "{}: no metrics endpoint within 10 s:\n{}",
                    self.name,
                    self.process
                        .as_ref()
                        .map(Process::output_tail)
                        .unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], self.ports.tunnel))).await
    }
}

/// A portal's JSON: the seed page's portal with the public inbound behind
/// a balancer (PROXY header required), the metrics listener and the drain
/// delay.
fn portal_config(ports: PortalPorts) -> String {
    format!(
        r#"{{
  "log": {{"loglevel": "warning"}},
  "rayback": {{"metrics": "127.0.0.1:{metrics}", "drainDelay": {drain}}},
  "reverse": {{"portals": [{{"tag": "portal", "domain": "{DOMAIN}"}}]}},
  "inbounds": [
    {{
      "tag": "external", "listen": "127.0.0.1", "port": {public},
      "protocol": "dokodemo-door",
      "settings": {{"address": "127.0.0.1", "port": 80, "network": "tcp"}},
      "streamSettings": {{"tcpSettings": {{"acceptProxyProtocol": true}}}}
    }},
    {{
      "tag": "interconn", "listen": "127.0.0.1", "port": {tunnel},
      "protocol": "vmess",
      "settings": {{"clients": [{{"id": "{ID}"}}]}}
    }}
  ],
  "routing": {{"rules": [
    {{"type": "field", "inboundTag": ["external"], "outboundTag": "portal"}},
    {{"type": "field", "inboundTag": ["interconn"], "outboundTag": "portal"}}
  ]}}
}}
"#,
        metrics = ports.metrics,
        drain = DRAIN_DELAY.as_millis(),
        public = ports.public,
        tunnel = ports.tunnel,
    )
}

/// A bridge's JSON: one VMess outbound whose `vnext` lists every portal's
/// own tunnel address, and freedom writing a PROXY v2 header to `backend`.
fn bridge_config(portals: &[PortalPorts], metrics: u16, backend: SocketAddr) -> String {
    let servers: Vec<String> = portals
        .iter()
        .map(|ports| {
            format!(
                r#"{{"address": "127.0.0.1", "port": {}, "users": [{{"id": "{ID}"}}]}}"#,
                ports.tunnel
            )
        })
        .collect();
    format!(
        r#"{{
  "log": {{"loglevel": "warning"}},
  "rayback": {{"metrics": "127.0.0.1:{metrics}"}},
  "reverse": {{"bridges": [{{"tag": "bridge", "domain": "{DOMAIN}"}}]}},
  "outbounds": [
    {{"tag": "out", "protocol": "freedom", "settings": {{"redirect": "{backend}", "proxyProtocol": 2}}}},
    {{"tag": "interconn", "protocol": "vmess", "settings": {{"vnext": [
      {servers}
    ]}}}}
  ],
  "routing": {{"rules": [
    {{"type": "field", "inboundTag": ["bridge"], "domain": ["full:{DOMAIN}"], "outboundTag": "interconn"}},
    {{"type": "field", "inboundTag": ["bridge"], "outboundTag": "out"}}
  ]}}
}}
"#,
        servers = servers.join(",\n      "),
    )
}

// --------------------------------------------------------------- HAProxy

/// The haproxy binary: on `PATH` or in an sbin directory a non-root `PATH`
/// often lacks.
fn haproxy_binary() -> Option<PathBuf> {
    find_binary("haproxy")
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// HAProxy's config: the visitors' frontend on `front`, the three
/// portals with PROXY v2 and fast health checks on `check_path` of their
/// metrics ports, and a stats page on `stats` (CSV, read by the test).
fn haproxy_config(front: u16, stats: u16, portals: &[PortalPorts], check_path: &str) -> String {
    let mut servers = String::new();
    for (index, ports) in portals.iter().enumerate() {
        servers.push_str(&format!(
            "    server portal{} 127.0.0.1:{} check port {}\n",
            index + 1,
            ports.public,
            ports.metrics
        ));
    }
    format!(
        "global
    maxconn 2000

defaults
    mode tcp
    timeout connect 300ms
    timeout client 10s
    timeout server 10s
    timeout check 300ms
    # A connection refused by a portal that just died is tried again, on
    # another portal (redispatch on every retry).
    retries 3
    option redispatch 1

frontend public
    bind 127.0.0.1:{front}
    default_backend portals

backend portals
    balance roundrobin
    option httpchk GET {check_path}
    http-check expect status 200
    default-server send-proxy-v2 inter 300 fall 1 rise 2
{servers}
frontend stats
    mode http
    bind 127.0.0.1:{stats}
    stats enable
    stats uri /stats
"
    )
}

/// A running haproxy (`-db`: foreground, one process), killed by PID on
/// drop. Its stderr (warnings, among them every server going UP or DOWN)
/// is read line by line onto the timeline.
struct HaProxy {
    child: Child,
    stats: SocketAddr,
    _dir: TempDir,
}

impl HaProxy {
    async fn start(
        binary: &Path,
        config: &str,
        stats: u16,
        clock: Clock,
        timeline: Timeline,
    ) -> Result<HaProxy> {
        let dir = TempDir::new("haproxy")?;
        let path = dir.path.join("haproxy.cfg");
        std::fs::write(&path, config)?;
        let mut child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child.stderr.take().context("haproxy's stderr")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(" is UP")
                    || line.contains(" is DOWN")
                    || line.contains("ALERT")
                    || line.contains("no server available")
                {
                    let line = line.split(" : ").nth(1).unwrap_or(&line).to_owned();
                    timeline.push(clock.now(), format!("haproxy: {}", shorten(&line, 110)));
                }
            }
        });
        let stats = SocketAddr::from(([127, 0, 0, 1], stats));
        let mut haproxy = HaProxy {
            child,
            stats,
            _dir: dir,
        };
        let ready = wait_for_port(stats).await;
        if let Some(status) = haproxy.child.try_wait()? {
            bail!("haproxy exited ({status}); config:\n{config}");
        }
        ready?;
        Ok(haproxy)
    }

    /// The `portals` backend's servers as HAProxy's stats CSV has them:
    /// server name → (column → value).
    async fn servers(&self) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
        let (code, body) = http_get(self.stats, "/stats;csv", Duration::from_secs(2)).await?;
        if code != 200 {
            bail!("haproxy stats answered {code}");
        }
        let mut lines = body.lines();
        let header: Vec<&str> = lines
            .next()
            .and_then(|line| line.strip_prefix("# "))
            .context("no CSV header in haproxy's stats")?
            .split(',')
            .collect();
        let mut servers = BTreeMap::new();
        for line in lines {
            let row: BTreeMap<String, String> = header
                .iter()
                .zip(line.split(','))
                .map(|(name, value)| ((*name).to_owned(), value.to_owned()))
                .collect();
            if row.get("pxname").map(String::as_str) == Some("portals")
                && row
                    .get("svname")
                    .is_some_and(|name| name.starts_with("portal"))
            {
                servers.insert(row["svname"].clone(), row);
            }
        }
        Ok(servers)
    }

    /// Whether HAProxy has `server` fully UP (not "UP 1/2", going down).
    async fn is_up(&self, server: &str) -> bool {
        self.servers()
            .await
            .ok()
            .and_then(|servers| servers.get(server).map(|row| row["status"] == "UP"))
            .unwrap_or(false)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stats column of one server as a number (0 when absent or empty).
fn stat(servers: &BTreeMap<String, BTreeMap<String, String>>, server: &str, column: &str) -> u64 {
    servers
        .get(server)
        .and_then(|row| row.get(column))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

// ------------------------------------------------------------------ HTTP

/// `GET path` (HTTP/1.0) on `addr`; the status code and body (by
/// `Content-Length`, else up to the close). Bounded by `limit`.
async fn http_get(addr: SocketAddr, path: &str, limit: Duration) -> Result<(u16, String)> {
    tokio::time::timeout(limit, async {
        let socket = TcpStream::connect(addr).await?;
        request(socket, path).await
    })
    .await
    .with_context(|| format!("GET {path} from {addr} took over {limit:?}"))?
}

async fn request(mut socket: TcpStream, path: &str) -> Result<(u16, String)> {
    socket
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: rayback-ha\r\n\r\n").as_bytes())
        .await?;
    let (code, body) = rayback_testkit::read_http_response(&mut socket).await?;
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

fn shorten(text: &str, limit: usize) -> String {
    let text = text.trim().replace('\n', " ");
    match text.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

// --------------------------------------------------------------- backend

/// PROXY v2's 12-byte signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// The service beside the bridges: reads the PROXY header freedom puts in
/// front of each connection, then one HTTP request, and answers with the
/// source the header named (`source=none` without a header).
async fn proxy_backend() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Err(error) = serve_visitor(socket).await {
                    eprintln!("backend: {error:#}");
                }
            });
        }
    });
    Ok(addr)
}

/// What the backend read in front of the request.
#[derive(Debug, PartialEq, Eq)]
enum ProxyHeader {
    None,
    V1(Option<SocketAddr>),
    V2(Option<SocketAddr>),
}

/// Splits a PROXY header off the front of `buffer`: `None` while more
/// bytes are needed, else the header and how many bytes it took.
fn split_proxy_header(buffer: &[u8]) -> Result<Option<(ProxyHeader, usize)>> {
    let is_prefix = |whole: &[u8]| {
        buffer[..buffer.len().min(whole.len())] == whole[..buffer.len().min(whole.len())]
    };
    if !is_prefix(V2_SIGNATURE) && !is_prefix(b"PROXY ") {
        return Ok(Some((ProxyHeader::None, 0)));
    }
    let parsed = HeaderResult::parse(buffer);
    if parsed.is_incomplete() {
        return Ok(None);
    }
    Ok(Some(match parsed {
        HeaderResult::V2(Ok(header)) => {
            let source = match &header.addresses {
                v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                _ => None,
            };
            (ProxyHeader::V2(source), header.len())
        }
        HeaderResult::V1(Ok(header)) => {
            let source = match &header.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            };
            (ProxyHeader::V1(source), header.header.len())
        }
        HeaderResult::V2(Err(error)) => bail!("a bad PROXY v2 header: {error}"),
        HeaderResult::V1(Err(error)) => bail!("a bad PROXY v1 header: {error}"),
    }))
}

async fn serve_visitor(mut socket: TcpStream) -> Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 1024];
    let mut header = None;
    loop {
        let read = socket.read(&mut chunk).await?;
        if read == 0 {
            bail!("the visitor left after {} bytes", buffer.len());
        }
        buffer.extend_from_slice(&chunk[..read]);
        if header.is_none() {
            if let Some((found, len)) = split_proxy_header(&buffer)? {
                header = Some(found);
                buffer.drain(..len);
            }
        }
        if header.is_some() && buffer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if buffer.len() > 16 * 1024 {
            bail!("no request head in 16 KiB");
        }
    }
    let body = match header {
        Some(ProxyHeader::V2(Some(source))) => format!("source={source} proxy=v2\n"),
        Some(ProxyHeader::V1(Some(source))) => format!("source={source} proxy=v1\n"),
        Some(ProxyHeader::V2(None)) => "source=none proxy=v2-local\n".to_owned(),
        Some(ProxyHeader::V1(None)) => "source=none proxy=v1-unknown\n".to_owned(),
        _ => format!("source=none proxy=none peer={}\n", socket.peer_addr()?),
    };
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(answer.as_bytes()).await?;
    Ok(socket.shutdown().await?)
}

// ------------------------------------------------------------------ load

/// One visitor's request.
#[derive(Clone, Debug)]
struct Outcome {
    started: Duration,
    finished: Duration,
    /// The backend's answer, or why there was none.
    answer: Result<String, String>,
}

impl Outcome {
    /// An answer naming the visitor's own address, read from a PROXY v2 header.
    fn names_the_visitor(&self) -> bool {
        self.answer.as_ref().is_ok_and(|body| {
            body.starts_with(&format!("source={VISITOR}:")) && body.contains("proxy=v2")
        })
    }
}

/// One request through the balancer on a new connection from [`VISITOR`].
async fn visit(front: SocketAddr) -> Result<String> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let socket = connect_from(VISITOR, front).await.context("connecting")?;
        let (code, body) = request(socket, "/").await?;
        if code != 200 {
            bail!("HTTP {code}: {}", shorten(&body, 60));
        }
        Ok(body.trim().to_owned())
    })
    .await
    .with_context(|| format!("no answer within {REQUEST_TIMEOUT:?}"))?
}

/// The visitors: a request every [`PACE`], each in its own task so a slow
/// one never delays the next, until `stop`; returns every outcome.
fn start_load(front: SocketAddr, clock: Clock, stop: Arc<AtomicBool>) -> JoinHandle<Vec<Outcome>> {
    tokio::spawn(async move {
        let mut pace = tokio::time::interval(PACE);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut requests = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            pace.tick().await;
            requests.push(tokio::spawn(async move {
                let started = clock.now();
                let answer = visit(front).await.map_err(|error| format!("{error:#}"));
                Outcome {
                    started,
                    finished: clock.now(),
                    answer,
                }
            }));
        }
        let mut outcomes = Vec::new();
        for request in requests {
            if let Ok(outcome) = request.await {
                outcomes.push(outcome);
            }
        }
        outcomes
    })
}

// -------------------------------------------------------------- /ready

/// A `/ready` answer in a word: `200 …`, `503 …` (with the reason), `404`
/// (no such endpoint), `down` (nothing listens).
async fn ready_state(metrics: SocketAddr) -> String {
    match http_get(metrics, "/ready", Duration::from_millis(500)).await {
        Ok((code, body)) => format!("{code} {}", shorten(&body, 60)).trim().to_owned(),
        Err(error) => {
            let text = format!("{error:#}");
            if text.contains("refused") {
                "down".to_owned()
            } else {
                format!("no answer: {}", shorten(&text, 60))
            }
        }
    }
}

/// Polls each target's `/ready` every [`POLL`] and puts every change on
/// the timeline; `states` holds the latest answer of each.
struct ReadyWatch {
    states: Arc<Mutex<BTreeMap<String, String>>>,
    changes: Arc<Mutex<Vec<(Duration, String, String)>>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl ReadyWatch {
    fn start(targets: Vec<(String, SocketAddr)>, clock: Clock, timeline: Timeline) -> ReadyWatch {
        let states = Arc::new(Mutex::new(BTreeMap::new()));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (states, changes, stop) = (states.clone(), changes.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    for (name, addr) in &targets {
                        let state = ready_state(*addr).await;
                        let at = clock.now();
                        let previous = states.lock().unwrap().insert(name.clone(), state.clone());
                        if previous.as_ref() != Some(&state) {
                            timeline.push(at, format!("{name} /ready: {state}"));
                            changes.lock().unwrap().push((at, name.clone(), state));
                        }
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        });
        ReadyWatch {
            states,
            changes,
            stop,
            task,
        }
    }

    fn state(&self, name: &str) -> String {
        self.states
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// The answers `name` gave from `from` to `to`, changes only.
    fn changes_of(&self, name: &str, from: Duration, to: Duration) -> Vec<(Duration, String)> {
        self.changes
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, who, _)| who == name && *at >= from && *at <= to)
            .map(|(at, _, state)| (*at, state.clone()))
            .collect()
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

/// Waits until `portal`'s `/ready` answers 200 (straight from its
/// endpoint) and HAProxy has it UP; returns the two times, from now.
async fn wait_in_rotation(
    portal: &PortalSlot,
    haproxy: &HaProxy,
    limit: Duration,
) -> (Option<Duration>, Option<Duration>) {
    let started = Instant::now();
    let (mut ready, mut up) = (None, None);
    while started.elapsed() < limit && (ready.is_none() || up.is_none()) {
        if ready.is_none()
            && ready_state(portal.ports.metrics_addr())
                .await
                .starts_with("200")
        {
            ready = Some(started.elapsed());
        }
        if up.is_none() && haproxy.is_up(&portal.name).await {
            up = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (ready, up)
}

// ------------------------------------------------------------- the test

/// What the requests that started within a step came to.
struct StepFigures {
    requests: usize,
    failures: Vec<Outcome>,
    wrong_source: Vec<Outcome>,
}

impl StepFigures {
    fn of(outcomes: &[Outcome], from: Duration, to: Duration) -> StepFigures {
        let within: Vec<&Outcome> = outcomes
            .iter()
            .filter(|outcome| outcome.started >= from && outcome.started < to)
            .collect();
        StepFigures {
            requests: within.len(),
            failures: within
                .iter()
                .filter(|o| o.answer.is_err())
                .map(|o| (*o).clone())
                .collect(),
            wrong_source: within
                .iter()
                .filter(|o| o.answer.is_ok() && !o.names_the_visitor())
                .map(|o| (*o).clone())
                .collect(),
        }
    }

    /// First failure's start to last failure's end.
    fn failure_window(&self) -> Option<(Duration, Duration)> {
        let first = self.failures.iter().map(|o| o.started).min()?;
        let last = self.failures.iter().map(|o| o.finished).max()?;
        Some((first, last))
    }

    fn describe(&self, step: &str) -> String {
        let mut text = format!(
            "{step}: {} requests, {} failed, {} answered without the visitor's address",
            self.requests,
            self.failures.len(),
            self.wrong_source.len()
        );
        if let Some((first, last)) = self.failure_window() {
            text.push_str(&format!(
                "; failure window {} → {} ({} ms)",
                secs(first),
                secs(last),
                (last - first).as_millis()
            ));
        }
        for failure in self.failures.iter().take(3) {
            text.push_str(&format!(
                "\n    failed at {}: {}",
                secs(failure.started),
                failure.answer.as_ref().err().map_or("", String::as_str)
            ));
        }
        if let Some(wrong) = self.wrong_source.first() {
            text.push_str(&format!(
                "\n    e.g. at {}: {:?}",
                secs(wrong.started),
                wrong.answer.as_ref().ok()
            ));
        }
        text
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_portals_behind_haproxy_survive_a_kill_and_a_rolling_restart() {
    let Some(haproxy_binary) = haproxy_binary() else {
        eprintln!("skipped: haproxy not installed");
        return;
    };
    // Built before the clock starts: building the bridge is not the test.
    let (portal_binary, bridge_binary) = (portal_binary(), bridge_binary());
    let clock = Clock(Instant::now());
    let timeline = Timeline::default();
    let mut problems: Vec<String> = Vec::new();
    let mut figures: Vec<String> = Vec::new();

    // ------------------------------------------------------- start-up
    let backend = proxy_backend().await.unwrap();
    let mut portals: Vec<PortalSlot> = (0..PORTALS)
        .map(|index| {
            let ports = PortalPorts::free();
            PortalSlot {
                name: format!("portal{}", index + 1),
                ports,
                config: portal_config(ports),
                process: None,
            }
        })
        .collect();
    let ports: Vec<PortalPorts> = portals.iter().map(|portal| portal.ports).collect();
    let bridge_metrics: Vec<u16> = (0..BRIDGES).map(|_| free_port()).collect();
    let bridge_configs: Vec<String> = bridge_metrics
        .iter()
        .map(|metrics| bridge_config(&ports, *metrics, backend))
        .collect();
    check_config(Kind::Rayback, &portal_binary, &portals[0].config).unwrap();
    check_config(Kind::Rayback, &bridge_binary, &bridge_configs[0]).unwrap();
    for portal in &mut portals {
        portal.start().await.unwrap();
    }
    let bridges: Vec<Process> = bridge_configs
        .iter()
        .map(|config| Process::spawn(&bridge_binary, config).unwrap())
        .collect();
    timeline.push(clock.now(), "started 3 portals and 2 bridges");

    // The health check asks /ready; a build without it answers 404 there,
    // and the rest of the run checks /metrics instead so that it still
    // shows what it can.
    let first_answer = ready_state(portals[0].ports.metrics_addr()).await;
    let check_path = if first_answer.starts_with("404") {
        problems.push(format!(
            "GET /ready is not served (portal1 answered {first_answer:?}): HAProxy checked /metrics instead, which cannot tell a portal without tunnels"
        ));
        "/metrics"
    } else {
        "/ready"
    };
    let front = free_port();
    let stats = free_port();
    let haproxy = HaProxy::start(
        &haproxy_binary,
        &haproxy_config(front, stats, &ports, check_path),
        stats,
        clock,
        timeline.clone(),
    )
    .await
    .unwrap();
    let front = SocketAddr::from(([127, 0, 0, 1], front));
    timeline.push(
        clock.now(),
        format!("haproxy up, health check GET {check_path}"),
    );

    let mut targets: Vec<(String, SocketAddr)> = portals
        .iter()
        .map(|portal| (portal.name.clone(), portal.ports.metrics_addr()))
        .collect();
    for (index, metrics) in bridge_metrics.iter().enumerate() {
        targets.push((
            format!("bridge{}", ["A", "B"][index]),
            SocketAddr::from(([127, 0, 0, 1], *metrics)),
        ));
    }
    let watch = ReadyWatch::start(targets, clock, timeline.clone());

    // -------------------------------------------------------- warm-up
    let warm_up_started = clock.now();
    let mut in_rotation = true;
    for portal in &portals {
        let remaining = WARM_UP_LIMIT.saturating_sub(clock.now() - warm_up_started);
        let (ready, up) = wait_in_rotation(portal, &haproxy, remaining).await;
        if ready.is_none() || up.is_none() {
            in_rotation = false;
            problems.push(format!(
                "warm-up: {} not in rotation within {WARM_UP_LIMIT:?} (/ready: {:?}, HAProxy UP: {})",
                portal.name,
                watch.state(&portal.name),
                up.is_some()
            ));
        }
    }
    let warm_up = clock.now() - warm_up_started;
    figures.push(format!(
        "warm-up: {} portals ready and UP in HAProxy after {} ms",
        if in_rotation { "all 3" } else { "NOT all" },
        warm_up.as_millis()
    ));
    // Feature (a): every bridge holds a tunnel to every portal.
    let mut tunnel_table = String::from("tunnels (bridge → portal1/2/3):");
    for (index, bridge) in bridges.iter().enumerate() {
        let counts: Vec<usize> = ports
            .iter()
            .map(|ports| connections_of(bridge.pid(), End::Remote, ports.tunnel))
            .collect();
        tunnel_table.push_str(&format!(" bridge{} {counts:?}", ["A", "B"][index]));
        if counts.contains(&0) {
            problems.push(format!(
                "bridge{} holds no tunnel to some portal: {counts:?} (each bridge must dial every vnext server)",
                ["A", "B"][index]
            ));
        }
    }
    figures.push(tunnel_table);
    for index in 0..BRIDGES {
        let name = format!("bridge{}", ["A", "B"][index]);
        figures.push(format!(
            "{name} /ready after warm-up: {}",
            watch.state(&name)
        ));
    }

    // ------------------------------------------------------ the visitors
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(front, clock, stop.clone());
    let load_started = clock.now();
    timeline.push(
        load_started,
        "load: 20 requests/s from 127.0.0.5 through HAProxy",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // ------------------------------------------- SIGKILL portal 1 mid-run
    let kill_at = clock.now();
    timeline.push(kill_at, "SIGKILL portal1");
    if let Some(mut process) = portals[0].process.take() {
        process.kill();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // ----------------------------------------- portal 1 again, same ports
    let restart_at = clock.now();
    timeline.push(restart_at, "restart portal1 (same ports)");
    let stats_before = haproxy.servers().await.unwrap_or_default();
    if let Err(error) = portals[0].start().await {
        problems.push(format!("portal1 did not restart: {error:#}"));
    }
    let (ready, up) = wait_in_rotation(&portals[0], &haproxy, READY_LIMIT).await;
    figures.push(format!(
        "restart: portal1 /ready 200 after {}, HAProxy UP after {}",
        ready.map_or("never".to_owned(), |at| format!("{} ms", at.as_millis())),
        up.map_or("never".to_owned(), |at| format!("{} ms", at.as_millis()))
    ));
    if ready.is_none() || up.is_none() {
        problems.push(format!(
            "restart: portal1 not back in rotation within {READY_LIMIT:?} (/ready {:?})",
            watch.state("portal1")
        ));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let served = match scrape(portals[0].ports.metrics_addr()).await {
        Ok(text) => metric(
            &text,
            "rayback_sessions_total",
            &["side=\"inbound\"", "tag=\"external\""],
        )
        .unwrap_or(0.0),
        Err(error) => {
            problems.push(format!("restart: portal1's /metrics: {error:#}"));
            0.0
        }
    };
    let stats_after = haproxy.servers().await.unwrap_or_default();
    let sent = stat(&stats_after, "portal1", "stot").saturating_sub(stat(
        &stats_before,
        "portal1",
        "stot",
    ));
    figures.push(format!(
        "restart: the new portal1 served {served} public sessions (its /metrics); HAProxy sent it {sent} connections since the restart"
    ));
    if served < 1.0 {
        problems.push("restart: the restarted portal1 served no request".to_owned());
    }

    // -------------------------------------- rolling restart with SIGTERM
    let rolling_at = clock.now();
    timeline.push(rolling_at, "rolling restart: SIGTERM each portal in turn");
    for portal in &mut portals {
        let name = portal.name.clone();
        let term_at = clock.now();
        timeline.push(term_at, format!("SIGTERM {name}"));
        let Some(mut process) = portal.process.take() else {
            problems.push(format!("rolling: {name} was not running"));
            continue;
        };
        if let Err(error) = process.terminate() {
            problems.push(format!("rolling: {name}: {error:#}"));
        }
        let exited = process.wait_exit(EXIT_LIMIT).await;
        let exit_at = clock.now();
        timeline.push(exit_at, format!("{name} exited"));
        match exited {
            Ok(took) => {
                figures.push(format!(
                    "rolling: {name} exited {} ms after SIGTERM",
                    took.as_millis()
                ));
                if took < DRAIN_DELAY {
                    problems.push(format!(
                        "rolling: {name} exited {} ms after SIGTERM, before drainDelay ({} ms)",
                        took.as_millis(),
                        DRAIN_DELAY.as_millis()
                    ));
                }
            }
            Err(error) => {
                problems.push(format!(
                    "rolling: {name} after SIGTERM: {error:#}\n{}",
                    process.output_tail()
                ));
                process.kill();
            }
        }
        drop(process);
        let answers = watch.changes_of(&name, term_at, exit_at);
        let text: Vec<String> = answers
            .iter()
            .map(|(at, state)| format!("+{} ms {state}", (*at - term_at).as_millis()))
            .collect();
        figures.push(format!(
            "rolling: {name} /ready between SIGTERM and exit: [{}]",
            text.join(", ")
        ));
        if !answers
            .iter()
            .any(|(_, state)| state.starts_with("503") && state.contains("draining"))
        {
            problems.push(format!(
                "rolling: {name}'s /ready never answered 503 \"draining\" between SIGTERM and exit: {text:?}"
            ));
        }
        timeline.push(clock.now(), format!("restart {name}"));
        if let Err(error) = portal.start().await {
            problems.push(format!("rolling: {name} did not restart: {error:#}"));
            continue;
        }
        let (ready, up) = wait_in_rotation(portal, &haproxy, READY_LIMIT).await;
        figures.push(format!(
            "rolling: {name} back: /ready 200 after {}, HAProxy UP after {}",
            ready.map_or("never".to_owned(), |at| format!("{} ms", at.as_millis())),
            up.map_or("never".to_owned(), |at| format!("{} ms", at.as_millis()))
        ));
        if ready.is_none() || up.is_none() {
            problems.push(format!(
                "rolling: {name} not back in rotation within {READY_LIMIT:?}"
            ));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let load_stopped = clock.now();
    stop.store(true, Ordering::Relaxed);
    timeline.push(load_stopped, "load stopped");
    let outcomes = load.await.unwrap();
    watch.stop().await;
    let final_stats = haproxy.servers().await.unwrap_or_default();

    // ---------------------------------------------------------- figures
    eprintln!("\n== timeline (seconds since the test started)");
    let mut entries = timeline.entries();
    entries.sort_by_key(|(at, _)| *at);
    for (at, what) in &entries {
        eprintln!("{:>9}  {what}", secs(*at));
    }

    let steady = StepFigures::of(&outcomes, load_started, kill_at);
    let kill = StepFigures::of(&outcomes, kill_at, restart_at);
    let restart = StepFigures::of(&outcomes, restart_at, rolling_at);
    let rolling = StepFigures::of(&outcomes, rolling_at, load_stopped);
    let all = StepFigures::of(&outcomes, Duration::ZERO, Duration::MAX);
    figures.push(steady.describe("steady"));
    figures.push(kill.describe("kill portal1"));
    figures.push(restart.describe("restart portal1"));
    figures.push(rolling.describe("rolling restart"));
    figures.push(all.describe("whole run"));
    let mut haproxy_table = String::from("haproxy per portal (connections, connect errors, retries, redispatches, checks failed, went down):");
    for server in ["portal1", "portal2", "portal3"] {
        haproxy_table.push_str(&format!(
            "\n    {server}: {} {} {} {} {} {}",
            stat(&final_stats, server, "stot"),
            stat(&final_stats, server, "econ"),
            stat(&final_stats, server, "wretr"),
            stat(&final_stats, server, "wredis"),
            stat(&final_stats, server, "chkfail"),
            stat(&final_stats, server, "chkdown"),
        ));
    }
    figures.push(haproxy_table);

    // Checks on the visitors' outcomes.
    if !steady.failures.is_empty() {
        problems.push(format!("steady: {} failed requests", steady.failures.len()));
    }
    // After the kill, HAProxy's DOWN mark for portal1 (or, without one,
    // 1.5 s) ends the window where failures are allowed.
    let down_at = entries
        .iter()
        .find(|(at, what)| *at >= kill_at && what.contains("portal1 is DOWN"))
        .map(|(at, _)| *at);
    let settled = down_at.unwrap_or(kill_at + Duration::from_millis(1500));
    let late = kill.failures.iter().filter(|o| o.started > settled).count();
    figures.push(format!(
        "kill: HAProxy marked portal1 DOWN {} after the SIGKILL; {late} failures started after that",
        down_at.map_or("never".to_owned(), |at| format!("{} ms", (at - kill_at).as_millis()))
    ));
    if late > 0 {
        problems.push(format!(
            "kill: {late} requests failed after portal1 was out of rotation"
        ));
    }
    if !restart.failures.is_empty() {
        problems.push(format!(
            "restart: {} failed requests",
            restart.failures.len()
        ));
    }
    if !rolling.failures.is_empty() {
        problems.push(format!(
            "rolling restart: {} failed requests (must be zero)",
            rolling.failures.len()
        ));
    }
    if !all.wrong_source.is_empty() {
        problems.push(format!(
            "{} of {} answers did not name the visitor 127.0.0.5 from a PROXY v2 header (e.g. {:?})",
            all.wrong_source.len(),
            all.requests - all.failures.len(),
            all.wrong_source[0].answer
        ));
    }
    if all.requests < 20 {
        problems.push(format!("only {} requests were made", all.requests));
    }

    eprintln!("\n== figures");
    for figure in &figures {
        eprintln!("{figure}");
    }
    eprintln!("run time: {:.1} s", clock.now().as_secs_f64());
    drop(bridges);
    drop(haproxy);
    assert!(
        problems.is_empty(),
        "{} problems:\n- {}",
        problems.len(),
        problems.join("\n- ")
    );
}

// ------------------------------------------------------ the examples load

/// `config-examples/ha/` as a user would check it: `portal -test` and
/// `bridge -test`, the real `v2ray -test` (which ignores the Rayback-only
/// keys), `haproxy -c`, and `nginx -t` with the stream snippet included.
#[test]
fn the_ha_examples_load() {
    let dir = workspace_root().join("config-examples/ha");
    for (file, binary) in [
        ("portal.json", portal_binary()),
        ("bridge.json", bridge_binary()),
    ] {
        let path = dir.join(file);
        let output = Command::new(&binary)
            .arg("-test")
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(0), "{file}: {text}");
        assert!(text.contains("Configuration OK."), "{file}: {text}");
        if v2ray_path().is_file() {
            let (code, v2ray_output) =
                v2ray_test(&std::fs::read_to_string(&path).unwrap(), file).unwrap();
            assert_eq!(code, 0, "v2ray -test {file}: {v2ray_output}");
        } else {
            eprintln!("v2ray not installed: {file} checked by Rayback only");
        }
    }
    if let Some(haproxy) = haproxy_binary() {
        let output = Command::new(haproxy)
            .arg("-c")
            .arg("-f")
            .arg(dir.join("haproxy.cfg"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "haproxy -c haproxy.cfg: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    } else {
        eprintln!("haproxy not installed: haproxy.cfg not checked");
    }
    if let Some(nginx) = find_binary("nginx") {
        // The example is a `stream {}` block for nginx.conf's main
        // context: include it from a minimal nginx.conf of our own.
        let scratch = TempDir::new("nginx-ha").unwrap();
        let module = "/usr/lib/nginx/modules/ngx_stream_module.so";
        let load = if Path::new(module).exists() {
            format!("load_module {module};\n")
        } else {
            String::new()
        };
        let conf = scratch.path.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "{load}pid {0}/nginx.pid;\nerror_log {0}/error.log;\nevents {{}}\ninclude {1};\n",
                scratch.path.display(),
                dir.join("nginx-stream.conf").display()
            ),
        )
        .unwrap();
        let output = Command::new(nginx)
            .arg("-t")
            .arg("-p")
            .arg(format!("{}/", scratch.path.display()))
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(scratch.path.join("error.log"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "nginx -t with nginx-stream.conf: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    } else {
        eprintln!("nginx not installed: nginx-stream.conf not checked");
    }
}

/// The backend's PROXY header reader, on the headers HAProxy and freedom
/// send, so that a `source=none` answer is never the reader's fault.
#[test]
fn the_backend_reads_proxy_headers() {
    let mut v2_header = V2_SIGNATURE.to_vec();
    v2_header.extend_from_slice(&[
        0x21, 0x11, 0, 12, 127, 0, 0, 5, 127, 0, 0, 1, 0x9c, 0x40, 0x1f, 0x90,
    ]);
    let mut input = v2_header.clone();
    input.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(
        split_proxy_header(&input).unwrap(),
        Some((
            ProxyHeader::V2(Some("127.0.0.5:40000".parse().unwrap())),
            v2_header.len()
        ))
    );
    assert_eq!(split_proxy_header(&v2_header[..7]).unwrap(), None);
    assert_eq!(
        split_proxy_header(b"PROXY TCP4 127.0.0.5 127.0.0.1 40000 8080\r\nGET").unwrap(),
        Some((
            ProxyHeader::V1(Some("127.0.0.5:40000".parse().unwrap())),
            43
        ))
    );
    assert_eq!(
        split_proxy_header(b"GET / HTTP/1.0\r\n\r\n").unwrap(),
        Some((ProxyHeader::None, 0))
    );
    assert_eq!(split_proxy_header(b"\r\n").unwrap(), None);
}
