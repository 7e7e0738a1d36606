//! Battery, load and resource bounds, Rayback bridge and portal:
//!
//! ```text
//! N held clients ─▶ portal :public ═ tunnel ═▶ bridge ─▶ echo backend (its own process)
//! ```
//!
//! - Many concurrent tunnelled connections, each proven with a 16 KiB
//!   echo and held until all are open (10,000: 7.4 s in the test profile),
//!   opened in batches of 250 (listen backlog). Afterwards the open fds of
//!   portal and bridge return to at most baseline + 16 within 20 s, and the
//!   portal's `/metrics` show no session left open but the control ones.
//! - RSS of portal + bridge holding 2,000 idle connections, beside v2ray
//!   bridge + portal holding the same 2,000 in the same run; Rayback's
//!   growth must stay ≤ 40 KiB per connection (both sides together).
//!
//! - RSS of portal + bridge while one public client stops reading its
//!   echoes beside 8 busy 8 MiB full-duplex echoes on the same tunnel,
//!   beside v2ray in the same run: the busy ones all complete (the portal
//!   ends the stuck sub-stream after `streamStallTimeout`, 3 s here) and
//!   the peak growth stays ≤ 48 MiB (both sides together). Both sides
//!   need the timeout: the bridge's reader is stuck too (its backend stops
//!   reading when the echo cannot be written back), so it cannot see the
//!   portal's End until its own timeout frees it.
//!
//! The echo backend runs in a separate process (this test binary run
//! again with RAYBACK_BATTERY_BACKEND_PORT set, see
//! [`backend_process_entry`]) so its descriptors do not count against the
//! test process's limit of 20,000.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{configs, public, soak, start_bridge, start_portal, with_members, Kind, Node};
use rayback_testkit::gauge::{fd_count, metric, rss_kb, scrape, wait_until};
use rayback_testkit::traffic::{held_echo, in_batches};
use rayback_testkit::{free_port, seeded_bytes, wait_for_port};
use tokio::net::TcpStream;

const BACKEND_ENV: &str = "RAYBACK_BATTERY_BACKEND_PORT";
const BATCH: usize = 250;

/// Not a test of its own: when this binary is run again with
/// RAYBACK_BATTERY_BACKEND_PORT set, this serves echo there until killed.
/// In a normal run it only checks that the variable is absent.
#[test]
fn backend_process_entry() {
    let Ok(port) = std::env::var(BACKEND_ENV) else {
        return;
    };
    let port: u16 = port.parse().expect("a port number");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .unwrap();
        let listener = socket.listen(4096).unwrap();
        rayback_testkit::traffic::serve_echo(listener).await;
    });
}

/// The echo backend process, killed by PID on drop.
struct BackendProcess {
    child: Child,
    addr: SocketAddr,
}

impl BackendProcess {
    async fn start() -> BackendProcess {
        let port = free_port();
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "backend_process_entry",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(BACKEND_ENV, port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let backend = BackendProcess { child, addr };
        wait_for_port(addr).await.unwrap();
        backend
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts bridge and portal of `kind` toward `backend`; the portal (if
/// Rayback) serves /metrics on the returned address.
async fn pair(kind: Kind, backend: SocketAddr) -> (Node, Node, SocketAddr, SocketAddr) {
    pair_with(kind, backend, "").await
}

/// [`pair`] with more members for the `rayback` object of both sides
/// (`extra` starts with a comma when not empty).
async fn pair_with(
    kind: Kind,
    backend: SocketAddr,
    extra: &str,
) -> (Node, Node, SocketAddr, SocketAddr) {
    let (ports, bridge_config, portal_config) = configs(backend).unwrap();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let portal_config = with_members(
        &portal_config,
        &format!(r#""rayback": {{"metrics": "{metrics}"{extra}}}"#),
    );
    let bridge_config = if extra.is_empty() {
        bridge_config
    } else {
        with_members(
            &bridge_config,
            &format!(r#""rayback": {{{}}}"#, extra.trim_start_matches(',')),
        )
    };
    let portal = start_portal(kind, &portal_config, ports).await.unwrap();
    let bridge = start_bridge(kind, &bridge_config).await.unwrap();
    let started = Instant::now();
    loop {
        if held_echo(public(ports), b"ping", Duration::from_secs(3))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{kind:?} pair never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (portal, bridge, public(ports), metrics)
}

/// Tunnel connections the portal serving `metrics` has up (all portals).
async fn tunnels(metrics: SocketAddr) -> usize {
    let text = scrape(metrics).await.unwrap();
    text.lines()
        .filter(|line| line.starts_with("rayback_portal_connections{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as usize
}

/// Opens `count` connections through `public`, each proven with a
/// `size`-byte echo, `BATCH` at a time, and returns them open.
async fn hold(public: SocketAddr, count: usize, size: usize) -> Vec<TcpStream> {
    let (held, failures) = in_batches(count, BATCH, |index| async move {
        let data = seeded_bytes(index as u64, size);
        held_echo(public, &data, Duration::from_secs(30)).await
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} of {count} failed, first: {:?}",
        failures.len(),
        failures.iter().take(5).collect::<Vec<_>>()
    );
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_with_16kib_echoes_all_succeed_and_resources_return() {
    let count = 10_000;
    let backend = BackendProcess::start().await;
    let (portal, bridge, public, metrics) = pair(Kind::Rayback, backend.addr).await;
    let base_portal = fd_count(portal.pid()).unwrap();
    let base_bridge = fd_count(bridge.pid()).unwrap();
    let base_tunnels = tunnels(metrics).await;
    let started = Instant::now();
    let mut held = Vec::new();
    while held.len() < count {
        // Readiness, not a sleep: room for a batch on the tunnels the
        // bridge has grown so far (see the burst test for why).
        let room = wait_for_room(metrics, BATCH).await;
        assert!(
            room,
            "the bridge did not grow room for {BATCH} more streams within 10 s"
        );
        let more = BATCH.min(count - held.len());
        held.extend(hold(public, more, 16 << 10).await);
    }
    let opened = started.elapsed();
    let peak_portal = fd_count(portal.pid()).unwrap();
    let peak_bridge = fd_count(bridge.pid()).unwrap();
    let text = scrape(metrics).await.unwrap();
    let open_while_held = metric(&text, "rayback_sessions_open", &["side=\"inbound\""]);
    let peak_tunnels = tunnels(metrics).await;
    eprintln!(
        "{count} connections x 16 KiB echo held in {opened:?}; fds portal {base_portal} -> {peak_portal}, bridge {base_bridge} -> {peak_bridge}; inbound sessions open {open_while_held:?}; tunnel connections {base_tunnels} -> {peak_tunnels}"
    );
    assert!(open_while_held.unwrap_or(0.0) >= count as f64);
    drop(held);

    // The tunnel connections the bridge grew stay up (idle, one socket on
    // each side): they are not the held connections' descriptors.
    let grown = peak_tunnels.saturating_sub(base_tunnels);
    let (portal_pid, bridge_pid) = (portal.pid(), bridge.pid());
    let back = wait_until(Duration::from_secs(20), || {
        fd_count(portal_pid).is_ok_and(|fds| fds <= base_portal + grown + 16)
            && fd_count(bridge_pid).is_ok_and(|fds| fds <= base_bridge + grown + 16)
    })
    .await;
    let (after_portal, after_bridge) =
        (fd_count(portal_pid).unwrap(), fd_count(bridge_pid).unwrap());
    eprintln!("after close: fds portal {after_portal}, bridge {after_bridge} ({back:?})");
    assert!(back.is_ok(), "fds did not return near baseline (+{grown} grown tunnels): portal {base_portal} -> {after_portal}, bridge {base_bridge} -> {after_bridge}");
    let settled = async {
        loop {
            let text = scrape(metrics).await.unwrap();
            let sessions = metric(
                &text,
                "rayback_sessions_open",
                &["side=\"inbound\",tag=\"external\""],
            )
            .unwrap_or(0.0);
            let streams = metric(&text, "rayback_portal_streams_open", &[]).unwrap_or(0.0);
            let tunnels = metric(&text, "rayback_portal_connections", &[]).unwrap_or(0.0);
            if sessions == 0.0 && streams <= tunnels {
                return (sessions, streams, tunnels);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let settled = tokio::time::timeout(Duration::from_secs(20), settled).await;
    eprintln!("after close: portal (public sessions, streams, tunnels) = {settled:?}");
    assert!(
        settled.is_ok(),
        "portal sessions did not return to zero within 20 s"
    );
}

/// Waits (10 s at most) until the portal's tunnels have room for `more`
/// streams under the default cap of 1024 per connection.
async fn wait_for_room(metrics: SocketAddr, more: usize) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let text = scrape(metrics).await.unwrap();
        let tunnels = metric(&text, "rayback_portal_connections", &[]).unwrap_or(0.0);
        let streams = metric(&text, "rayback_portal_streams_open", &[]).unwrap_or(0.0);
        if tunnels * 1024.0 - streams >= more as f64 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A burst: 2,000 new connections (5,000 with RAYBACK_SOAK=1) in
/// back-to-back batches of 250, each
/// with a 16 KiB echo. Every one must succeed (the portal must not hand a
/// stream to a full tunnel connection while the bridge is still growing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_2000_new_connections_all_succeed() {
    let backend = BackendProcess::start().await;
    let (_portal, _bridge, public, _metrics) = pair(Kind::Rayback, backend.addr).await;
    let started = Instant::now();
    let held = hold(public, if soak() { 5_000 } else { 2_000 }, 16 << 10).await;
    eprintln!(
        "burst: {} connections held in {:?}",
        held.len(),
        started.elapsed()
    );
}

/// RSS (KiB) of both processes.
fn rss_pair(portal: &Node, bridge: &Node) -> (u64, u64) {
    (rss_kb(portal.pid()).unwrap(), rss_kb(bridge.pid()).unwrap())
}

async fn idle_rss(kind: Kind, backend: SocketAddr, count: usize) -> ((u64, u64), (u64, u64)) {
    let (portal, bridge, public, metrics) = pair(kind, backend).await;
    let before = rss_pair(&portal, &bridge);
    let mut held = Vec::new();
    while held.len() < count {
        if kind == Kind::Rayback {
            assert!(wait_for_room(metrics, BATCH).await, "no room for a batch");
        } else {
            // v2ray has no /metrics: give its bridge a growth tick.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let more = BATCH.min(count - held.len());
        held.extend(hold(public, more, 1024).await);
    }
    // Let buffers settle; the connections stay idle meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_pair(&portal, &bridge);
    // Every held connection still works.
    drop(held);
    (before, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_for_2000_idle_connections_beside_v2ray() {
    const COUNT: usize = 2_000;
    const BOUND_KIB_PER_CONNECTION: f64 = 40.0;
    let backend = BackendProcess::start().await;
    let ours = idle_rss(Kind::Rayback, backend.addr, COUNT).await;
    let theirs = idle_rss(Kind::V2Ray, backend.addr, COUNT).await;
    let per = |((p0, b0), (p1, b1)): ((u64, u64), (u64, u64))| {
        ((p1 + b1) as f64 - (p0 + b0) as f64) / COUNT as f64
    };
    eprintln!("RSS KiB (portal, bridge) before -> holding {COUNT} idle connections");
    eprintln!(
        "  Rayback: {:?} -> {:?}: {:.1} KiB per connection",
        ours.0,
        ours.1,
        per(ours)
    );
    eprintln!(
        "  v2ray:   {:?} -> {:?}: {:.1} KiB per connection",
        theirs.0,
        theirs.1,
        per(theirs)
    );
    assert!(
        per(ours) <= BOUND_KIB_PER_CONNECTION,
        "Rayback grew {:.1} KiB per idle connection (bound {BOUND_KIB_PER_CONNECTION})",
        per(ours)
    );
}

/// What one stalled-reader run saw.
struct StallRun {
    /// RSS (KiB) of portal + bridge before the stalled client connected.
    before: u64,
    /// The highest RSS (KiB) of the two together, sampled every 100 ms.
    peak: u64,
    busy_done: usize,
    took: Duration,
}

/// One client writes echo data and never reads; `busy` clients do
/// full-duplex `size`-byte echoes beside it, within `limit`.
async fn stalled_reader_run(
    kind: Kind,
    backend: SocketAddr,
    busy: usize,
    size: usize,
    limit: Duration,
) -> StallRun {
    let (portal, bridge, public, _metrics) =
        pair_with(kind, backend, r#", "limits": {"streamStallTimeout": 3}"#).await;
    let sum = || {
        let (p, b) = rss_pair(&portal, &bridge);
        p + b
    };
    let before = sum();
    let stalled = tokio::spawn(async move {
        let mut socket = TcpStream::connect(public).await?;
        let data = seeded_bytes(7, 32 << 20);
        tokio::io::AsyncWriteExt::write_all(&mut socket, &data).await?;
        // Never read; keep the connection open until aborted.
        std::future::pending::<()>().await;
        anyhow::Ok(())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..busy)
        .map(|index| {
            let data = std::sync::Arc::new(seeded_bytes(300 + index as u64, size));
            tokio::spawn(rayback_testkit::traffic::duplex_echo(public, data, limit))
        })
        .collect();
    let mut peak = before;
    while !tasks.iter().all(|task| task.is_finished()) {
        peak = peak.max(sum());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    let mut busy_done = 0;
    for task in tasks {
        if task.await.unwrap().is_ok() {
            busy_done += 1;
        }
    }
    peak = peak.max(sum());
    stalled.abort();
    StallRun {
        before,
        peak,
        busy_done,
        took,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_with_one_stalled_reader_beside_busy_streams_beside_v2ray() {
    const BUSY: usize = 8;
    const SIZE: usize = 8 << 20;
    const BOUND_KIB: u64 = 48 * 1024;
    let backend = BackendProcess::start().await;
    // 3 s of stall before the stuck sub-stream is ended, then the
    // transfers: far below the default 30 s stall timeout, so a side that
    // ignored `streamStallTimeout` fails here.
    let ours = stalled_reader_run(
        Kind::Rayback,
        backend.addr,
        BUSY,
        SIZE,
        Duration::from_secs(20),
    )
    .await;
    // v2ray has no stall timeout: its busy streams may wait behind the
    // stuck one for as long as the limit allows.
    let theirs = stalled_reader_run(
        Kind::V2Ray,
        backend.addr,
        BUSY,
        SIZE,
        Duration::from_secs(15),
    )
    .await;
    eprintln!(
        "one stalled reader beside {BUSY} busy {} MiB echoes:",
        SIZE >> 20
    );
    for (name, run) in [("Rayback", &ours), ("v2ray", &theirs)] {
        eprintln!(
            "  {name}: RSS {} -> peak {} KiB (+{} KiB); {}/{BUSY} busy done in {:?}",
            run.before,
            run.peak,
            run.peak - run.before,
            run.busy_done,
            run.took
        );
    }
    assert_eq!(
        ours.busy_done, BUSY,
        "busy streams failed beside a stalled reader"
    );
    assert!(
        ours.peak - ours.before <= BOUND_KIB,
        "Rayback grew {} KiB with a stalled reader (bound {BOUND_KIB})",
        ours.peak - ours.before
    );
}
