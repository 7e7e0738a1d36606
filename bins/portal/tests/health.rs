//! The health endpoints on the metrics listener (`/live`, `/ready`) and
//! the draining stop (`rayback.drainDelay`), against the real `portal` and
//! `bridge` binaries.
//!
//! ```text
//! client ─▶ portal :public ─▶ tunnel ═▶ bridge ─▶ backend
//!           portal :metrics             bridge :metrics    ◀─ health checks
//! ```
//!
//! Readiness follows the tunnel: a portal is ready once a bridge's tunnel
//! is up, a bridge once it holds a tunnel to its portal. At SIGTERM a
//! portal with a drain delay answers `/ready` with 503 `draining` at once
//! but keeps serving public connections until the delay ends, then exits 0.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::{bridge_binary, configs, portal_binary, public, wait_serving};
use rayback_testkit::{backend, free_port, http_get, wait_for_port, TempDir, BACKEND_PAGE};
use tokio::net::TcpStream;

/// A child process killed on drop unless it already exited.
struct Process {
    child: Child,
    _dir: TempDir,
}

impl Process {
    /// Starts `binary -config <dir>/config.json` with `config` there.
    fn start(binary: PathBuf, config: &str) -> Process {
        let dir = TempDir::new("health").unwrap();
        let path = dir.path.join("config.json");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(binary)
            .arg("-config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Process { child, _dir: dir }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `limit` for the process to exit.
    async fn exit_within(&mut self, limit: Duration) -> Result<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > limit {
                bail!("still running after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Puts a `rayback` object (JSON members) in front of a seed config's
/// `reverse` object.
fn with_rayback(config: &str, members: &str) -> String {
    const REVERSE: &str = "\"reverse\": {";
    assert_eq!(config.matches(REVERSE).count(), 1, "one reverse object");
    config.replacen(
        REVERSE,
        &format!("\"rayback\": {{{members}}},\n  {REVERSE}"),
        1,
    )
}

fn metrics_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// One HTTP/1.1 request with `method` for `path`: (status, body).
async fn request(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String)> {
    let (code, _, body) = common::http_request(addr, method, path, "").await?;
    Ok((code, body))
}

async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    request(addr, "GET", path).await
}

/// Polls `/ready` until it answers `code`, up to `limit`; returns the
/// last body.
async fn ready_becomes(addr: SocketAddr, code: u16, limit: Duration) -> Result<String> {
    let started = Instant::now();
    loop {
        let answer = get(addr, "/ready").await;
        match answer {
            Ok((got, body)) if got == code => return Ok(body),
            _ if started.elapsed() < limit => tokio::time::sleep(Duration::from_millis(50)).await,
            other => bail!("/ready on {addr} never answered {code} within {limit:?}: {other:?}"),
        }
    }
}

/// The `/status` document (compact JSON) as text.
async fn status_text(addr: SocketAddr) -> String {
    let (code, body) = get(addr, "/status").await.unwrap();
    assert_eq!(code, 200);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_is_ready_once_a_bridge_tunnel_is_up() {
    let backend = backend().await.unwrap();
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let portal_metrics = metrics_addr();
    let bridge_metrics = metrics_addr();
    let _portal = Process::start(
        portal_binary(),
        &with_rayback(
            &portal_config,
            &format!("\"metrics\": \"{portal_metrics}\""),
        ),
    );
    wait_for_port(public(ports)).await.unwrap();
    wait_for_port(portal_metrics).await.unwrap();

    // Serving, but no bridge yet: live, not ready, and the reason says why.
    assert_eq!(
        get(portal_metrics, "/live").await.unwrap(),
        (200, "live\n".to_owned())
    );
    let (code, body) = get(portal_metrics, "/ready").await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert_eq!(body, "portal \"portal\": no bridge tunnel\n");
    // HEAD: the same status, no body.
    assert_eq!(
        request(portal_metrics, "HEAD", "/ready").await.unwrap(),
        (503, String::new())
    );
    let status = status_text(portal_metrics).await;
    assert!(status.contains("\"ready\":false"), "{status}");
    assert!(status.contains("\"draining\":false"), "{status}");

    let _bridge = Process::start(
        bridge_binary(),
        &with_rayback(
            &bridge_config,
            &format!("\"metrics\": \"{bridge_metrics}\""),
        ),
    );
    let body = ready_becomes(portal_metrics, 200, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(body, "ready\n");
    let status = status_text(portal_metrics).await;
    assert!(status.contains("\"ready\":true"), "{status}");
    // The bridge holds its tunnel: ready too, and traffic passes.
    ready_becomes(bridge_metrics, 200, Duration::from_secs(5))
        .await
        .unwrap();
    wait_serving(public(ports), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        get(bridge_metrics, "/live").await.unwrap(),
        (200, "live\n".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_is_ready_once_its_portal_is_up() {
    let backend = backend().await.unwrap();
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let bridge_metrics = metrics_addr();
    let _bridge = Process::start(
        bridge_binary(),
        &with_rayback(
            &bridge_config,
            &format!("\"metrics\": \"{bridge_metrics}\""),
        ),
    );
    wait_for_port(bridge_metrics).await.unwrap();
    assert_eq!(
        get(bridge_metrics, "/live").await.unwrap(),
        (200, "live\n".to_owned())
    );
    // No portal to dial: not ready, for a while.
    for _ in 0..3 {
        let (code, body) = get(bridge_metrics, "/ready").await.unwrap();
        assert_eq!(code, 503, "{body}");
        assert_eq!(body, "bridge \"bridge\": no tunnel to a portal\n");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let _portal = Process::start(portal_binary(), &portal_config);
    wait_for_port(public(ports)).await.unwrap();
    // The bridge redials with a backoff capped at 2 s.
    let body = ready_becomes(bridge_metrics, 200, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(body, "ready\n");
    let status = status_text(bridge_metrics).await;
    assert!(status.contains("\"ready\":true"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_stops_with_status_0() {
    const DELAY: Duration = Duration::from_millis(1500);
    let backend = backend().await.unwrap();
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let portal_metrics = metrics_addr();
    let mut portal = Process::start(
        portal_binary(),
        &with_rayback(
            &portal_config,
            &format!(
                "\"metrics\": \"{portal_metrics}\", \"drainDelay\": {}",
                DELAY.as_millis()
            ),
        ),
    );
    wait_for_port(public(ports)).await.unwrap();
    wait_for_port(portal_metrics).await.unwrap();
    let _bridge = Process::start(bridge_binary(), &bridge_config);
    wait_serving(public(ports), Duration::from_secs(15))
        .await
        .unwrap();
    ready_becomes(portal_metrics, 200, Duration::from_secs(5))
        .await
        .unwrap();

    let signalled = Instant::now();
    portal.signal("TERM");
    // Not ready at once, and it says why.
    let body = ready_becomes(portal_metrics, 503, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(body, "draining\n");
    let status = status_text(portal_metrics).await;
    assert!(status.contains("\"draining\":true"), "{status}");
    assert!(status.contains("\"ready\":false"), "{status}");
    assert_eq!(
        get(portal_metrics, "/live").await.unwrap(),
        (200, "live\n".to_owned())
    );

    // During the delay a new public connection still gets the whole page.
    let (code, page) = http_get(public(ports), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        signalled.elapsed() < DELAY,
        "the check ran after the delay ({:?}); it proves nothing",
        signalled.elapsed()
    );
    assert_eq!(code, 200);
    assert_eq!(page, BACKEND_PAGE);

    // Then it stops: not before the delay, and within delay + grace.
    let status = portal
        .exit_within(DELAY + Duration::from_secs(15))
        .await
        .unwrap();
    let stopped_after = signalled.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        stopped_after >= DELAY,
        "exited {stopped_after:?} after SIGTERM, before the drain delay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_the_drain_delay() {
    let backend = backend().await.unwrap();
    let (ports, _bridge_config, portal_config) = configs(backend).unwrap();
    let portal_metrics = metrics_addr();
    let mut portal = Process::start(
        portal_binary(),
        &with_rayback(
            &portal_config,
            &format!("\"metrics\": \"{portal_metrics}\", \"drainDelay\": 600000"),
        ),
    );
    wait_for_port(public(ports)).await.unwrap();
    wait_for_port(portal_metrics).await.unwrap();

    // Not ready already (no bridge); draining is added to the reasons.
    let (code, body) = get(portal_metrics, "/ready").await.unwrap();
    assert_eq!(
        (code, body.as_str()),
        (503, "portal \"portal\": no bridge tunnel\n")
    );
    portal.signal("TERM");
    let started = Instant::now();
    let body = loop {
        let (code, body) = get(portal_metrics, "/ready").await.unwrap();
        assert_eq!(code, 503);
        if body.starts_with("draining") {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "not draining: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(body, "draining\nportal \"portal\": no bridge tunnel\n");
    // Still serving: the public listener accepts.
    TcpStream::connect(public(ports)).await.unwrap();

    let second = Instant::now();
    portal.signal("INT");
    let status = portal.exit_within(Duration::from_secs(8)).await.unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(second.elapsed() < Duration::from_secs(8));
}

#[test]
fn the_drain_delay_flag_sets_the_config_key() {
    let id = "27848739-7e62-4138-9fd3-098a63964b6b";
    let printed = Command::new(portal_binary())
        .args(["--tunnel", "1024", "--public", "8080", "--id", id])
        .args(["--drain-delay", "2500", "--print-config"])
        .output()
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(text.contains("\"drainDelay\": 2500"), "{text}");

    let printed = Command::new(bridge_binary())
        .args([
            "--portal",
            "127.0.0.1:1024",
            "--to",
            "127.0.0.1:80",
            "--id",
            id,
        ])
        .args(["--drain-delay", "0", "--print-config"])
        .output()
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(text.contains("\"drainDelay\": 0"), "{text}");

    let refused = Command::new(portal_binary())
        .args(["--tunnel", "1024", "--public", "8080", "--id", id])
        .args(["--drain-delay", "600001", "--print-config"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--drain-delay"), "{stderr}");
}
