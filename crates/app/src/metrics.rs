//! Counters for `/metrics` (Prometheus text) and `/status` (JSON), and the
//! stream wrapper that feeds them.
//!
//! Every dispatched session's stream is wrapped in a [`CountingStream`]
//! that adds the bytes it moves to its inbound tag's and its outbound
//! tag's counters (relaxed atomic adds: no lock on the data path). Gauges
//! of the reverse proxy (tunnel connections, time since the last control
//! message) and VMess handshake failures are read from their owners when
//! scraped.
//!
//! The health answers for load balancers are here too: `/live` (the
//! process serves) and `/ready` ([`not_ready`]: every portal holds a
//! usable bridge tunnel, every bridge holds a tunnel, and the process is
//! not draining after a stop signal).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use rayback_reverse::{Bridge, Portal};
use rayback_vmess::{FailureReason, VmessMetrics};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Counters of one inbound or outbound tag.
#[derive(Debug, Default)]
pub struct TagCounters {
    pub sessions_total: AtomicU64,
    /// Sessions started minus sessions ended.
    pub sessions_ended: AtomicU64,
    /// Bytes from the client side toward the destination.
    pub bytes_up: AtomicU64,
    /// Bytes from the destination back to the client.
    pub bytes_down: AtomicU64,
}

impl TagCounters {
    pub fn open(&self) -> u64 {
        self.sessions_total
            .load(Ordering::Relaxed)
            .saturating_sub(self.sessions_ended.load(Ordering::Relaxed))
    }
}

/// Counters keyed by tag, created on first use.
#[derive(Debug, Default)]
struct Tagged(RwLock<HashMap<String, Arc<TagCounters>>>);

impl Tagged {
    fn get(&self, tag: &str) -> Arc<TagCounters> {
        if let Some(counters) = self.0.read().expect("not poisoned").get(tag) {
            return counters.clone();
        }
        self.0
            .write()
            .expect("not poisoned")
            .entry(tag.to_owned())
            .or_default()
            .clone()
    }

    fn snapshot(&self) -> Vec<(String, Arc<TagCounters>)> {
        let mut all: Vec<_> = self
            .0
            .read()
            .expect("not poisoned")
            .iter()
            .map(|(tag, counters)| (tag.clone(), counters.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// Everything the process counts.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    inbounds: Tagged,
    outbounds: Tagged,
    /// Set at the first stop signal: `/ready` answers 503 from then on,
    /// while everything else keeps serving for `rayback.drainDelay`.
    /// Kept here because `Metrics` outlives reloads and every scrape
    /// reads it.
    draining: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            started: Instant::now(),
            inbounds: Tagged::default(),
            outbounds: Tagged::default(),
            draining: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// Wraps a session's client-side stream so that its bytes count for
    /// `inbound` and `outbound`.
    pub fn count<S>(&self, stream: S, inbound: &str, outbound: &str) -> CountingStream<S> {
        let inbound = self.inbounds.get(inbound);
        let outbound = self.outbounds.get(outbound);
        for counters in [&inbound, &outbound] {
            counters.sessions_total.fetch_add(1, Ordering::Relaxed);
        }
        CountingStream {
            inner: stream,
            inbound,
            outbound,
        }
    }

    pub fn inbound(&self, tag: &str) -> Arc<TagCounters> {
        self.inbounds.get(tag)
    }

    pub fn outbound(&self, tag: &str) -> Arc<TagCounters> {
        self.outbounds.get(tag)
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Marks the process as draining (a stop signal came); never undone.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// A stream whose reads count as uplink and writes as downlink bytes (it
/// is the client side of a session).
pub struct CountingStream<S> {
    inner: S,
    inbound: Arc<TagCounters>,
    outbound: Arc<TagCounters>,
}

impl<S> CountingStream<S> {
    fn add(&self, up: u64, down: u64) {
        for counters in [&self.inbound, &self.outbound] {
            if up > 0 {
                counters.bytes_up.fetch_add(up, Ordering::Relaxed);
            }
            if down > 0 {
                counters.bytes_down.fetch_add(down, Ordering::Relaxed);
            }
        }
    }
}

impl<S> Drop for CountingStream<S> {
    fn drop(&mut self) {
        for counters in [&self.inbound, &self.outbound] {
            counters.sessions_ended.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.add(read as u64, 0);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = result {
            self.add(0, written as u64);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a scrape reads besides the counters.
pub struct Sources<'a> {
    pub metrics: &'a Metrics,
    pub bridges: &'a [Arc<Bridge>],
    pub portals: &'a [Arc<Portal>],
    pub vmess: &'a VmessMetrics,
}

/// Escapes a label value for the Prometheus text format.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition (format 0.0.4).
pub fn prometheus(sources: &Sources<'_>) -> String {
    let mut out = String::new();
    let metrics = sources.metrics;
    let _ = writeln!(
        out,
        "# HELP rayback_uptime_seconds Seconds since the process started."
    );
    let _ = writeln!(out, "# TYPE rayback_uptime_seconds gauge");
    let _ = writeln!(
        out,
        "rayback_uptime_seconds {:.3}",
        metrics.uptime().as_secs_f64()
    );

    let sides = [
        ("inbound", metrics.inbounds.snapshot()),
        ("outbound", metrics.outbounds.snapshot()),
    ];
    let _ = writeln!(
        out,
        "# HELP rayback_sessions_total Sessions dispatched, by inbound and by outbound tag."
    );
    let _ = writeln!(out, "# TYPE rayback_sessions_total counter");
    for (side, tags) in &sides {
        for (tag, counters) in tags {
            let _ = writeln!(
                out,
                "rayback_sessions_total{{side=\"{side}\",tag=\"{}\"}} {}",
                label(tag),
                counters.sessions_total.load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP rayback_sessions_open Sessions now open, by inbound and by outbound tag."
    );
    let _ = writeln!(out, "# TYPE rayback_sessions_open gauge");
    for (side, tags) in &sides {
        for (tag, counters) in tags {
            let _ = writeln!(
                out,
                "rayback_sessions_open{{side=\"{side}\",tag=\"{}\"}} {}",
                label(tag),
                counters.open()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP rayback_bytes_total Bytes moved; up = client to destination, down = back."
    );
    let _ = writeln!(out, "# TYPE rayback_bytes_total counter");
    for (side, tags) in &sides {
        for (tag, counters) in tags {
            for (direction, value) in [("up", &counters.bytes_up), ("down", &counters.bytes_down)] {
                let _ = writeln!(
                    out,
                    "rayback_bytes_total{{side=\"{side}\",tag=\"{}\",direction=\"{direction}\"}} {}",
                    label(tag),
                    value.load(Ordering::Relaxed)
                );
            }
        }
    }

    let _ = writeln!(
        out,
        "# HELP rayback_bridge_connections Tunnel connections a bridge has up."
    );
    let _ = writeln!(out, "# TYPE rayback_bridge_connections gauge");
    let statuses: Vec<_> = sources
        .bridges
        .iter()
        .map(|bridge| (bridge.settings().tag.to_string(), bridge.status()))
        .collect();
    for (tag, status) in &statuses {
        let _ = writeln!(
            out,
            "rayback_bridge_connections{{bridge=\"{}\"}} {}",
            label(tag),
            status.connections
        );
    }
    let _ = writeln!(
        out,
        "# HELP rayback_bridge_portal_connections Tunnel connections a bridge has up to each portal its tunnel outbound lists."
    );
    let _ = writeln!(out, "# TYPE rayback_bridge_portal_connections gauge");
    for (tag, status) in &statuses {
        for portal in &status.portals {
            let _ = writeln!(
                out,
                "rayback_bridge_portal_connections{{bridge=\"{}\",portal=\"{}\"}} {}",
                label(tag),
                label(&portal.name),
                portal.connections
            );
        }
    }
    let _ = writeln!(out, "# HELP rayback_bridge_dials_total Tunnel connections a bridge has dialled (reconnects included).");
    let _ = writeln!(out, "# TYPE rayback_bridge_dials_total counter");
    for (tag, status) in &statuses {
        let _ = writeln!(
            out,
            "rayback_bridge_dials_total{{bridge=\"{}\"}} {}",
            label(tag),
            status.dials
        );
    }
    let _ = writeln!(out, "# HELP rayback_bridge_control_age_seconds Seconds since the portal last sent a control message.");
    let _ = writeln!(out, "# TYPE rayback_bridge_control_age_seconds gauge");
    for (tag, status) in &statuses {
        if let Some(age) = status.since_control {
            let _ = writeln!(
                out,
                "rayback_bridge_control_age_seconds{{bridge=\"{}\"}} {:.3}",
                label(tag),
                age.as_secs_f64()
            );
        }
    }

    let _ = writeln!(
        out,
        "# HELP rayback_portal_connections Bridge connections a portal holds."
    );
    let _ = writeln!(out, "# TYPE rayback_portal_connections gauge");
    let tunnels: Vec<_> = sources
        .portals
        .iter()
        .map(|portal| (portal.settings().tag.to_string(), portal.tunnels()))
        .collect();
    for (tag, tunnels) in &tunnels {
        let _ = writeln!(
            out,
            "rayback_portal_connections{{portal=\"{}\"}} {}",
            label(tag),
            tunnels.len()
        );
    }
    let _ = writeln!(out, "# HELP rayback_portal_streams_open Mux sub-streams open on a portal's bridge connections (control included).");
    let _ = writeln!(out, "# TYPE rayback_portal_streams_open gauge");
    for (tag, tunnels) in &tunnels {
        let open: usize = tunnels.iter().map(|tunnel| tunnel.active_sessions).sum();
        let _ = writeln!(
            out,
            "rayback_portal_streams_open{{portal=\"{}\"}} {open}",
            label(tag)
        );
    }

    let vmess = sources.vmess;
    let _ = writeln!(
        out,
        "# HELP rayback_vmess_handshakes_total VMess handshakes accepted by the inbounds."
    );
    let _ = writeln!(out, "# TYPE rayback_vmess_handshakes_total counter");
    let _ = writeln!(
        out,
        "rayback_vmess_handshakes_total {}",
        vmess.handshakes_accepted.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP rayback_vmess_handshake_failures_total VMess handshakes refused, by reason."
    );
    let _ = writeln!(out, "# TYPE rayback_vmess_handshake_failures_total counter");
    for reason in FailureReason::ALL {
        let _ = writeln!(
            out,
            "rayback_vmess_handshake_failures_total{{reason=\"{}\"}} {}",
            reason.as_str(),
            vmess.failures(reason)
        );
    }
    let _ = writeln!(out, "# HELP rayback_vmess_peer_nonce_wraps_total Peers whose body nonce counter wrapped (V2Ray does after 65536 chunks).");
    let _ = writeln!(out, "# TYPE rayback_vmess_peer_nonce_wraps_total counter");
    let _ = writeln!(
        out,
        "rayback_vmess_peer_nonce_wraps_total {}",
        vmess.peer_nonce_wraps.load(Ordering::Relaxed)
    );
    write_vless(&mut out, &rayback_vless::VlessMetrics::process());
    out
}

/// The `rayback_vless_*` counters (process-wide, see
/// [`rayback_vless::VlessMetrics::process`]).
fn write_vless(out: &mut String, vless: &rayback_vless::VlessMetrics) {
    let _ = writeln!(
        out,
        "# HELP rayback_vless_handshakes_total VLESS handshakes accepted by the inbounds."
    );
    let _ = writeln!(out, "# TYPE rayback_vless_handshakes_total counter");
    let _ = writeln!(
        out,
        "rayback_vless_handshakes_total {}",
        vless.handshakes_accepted.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP rayback_vless_handshake_failures_total VLESS handshakes refused, by reason."
    );
    let _ = writeln!(out, "# TYPE rayback_vless_handshake_failures_total counter");
    for reason in rayback_vless::FailureReason::ALL {
        let _ = writeln!(
            out,
            "rayback_vless_handshake_failures_total{{reason=\"{}\"}} {}",
            reason.as_str(),
            vless.failures(reason)
        );
    }
    let _ = writeln!(
        out,
        "# HELP rayback_vless_fallbacks_total Connections a VLESS inbound handed to a fallback."
    );
    let _ = writeln!(out, "# TYPE rayback_vless_fallbacks_total counter");
    let _ = writeln!(
        out,
        "rayback_vless_fallbacks_total {}",
        vless.fallbacks.load(Ordering::Relaxed)
    );
}

/// Why the process is not ready for traffic, one line each; empty when
/// it is. Ready means: not draining, every portal holds at least one
/// usable (not draining) bridge tunnel, and every bridge holds at least
/// one tunnel connection. A process with neither is ready while it serves.
pub fn not_ready(sources: &Sources<'_>) -> Vec<String> {
    let mut reasons = Vec::new();
    if sources.metrics.is_draining() {
        reasons.push("draining".to_owned());
    }
    for portal in sources.portals {
        if !portal.tunnels().iter().any(|tunnel| !tunnel.draining) {
            reasons.push(format!(
                "portal {:?}: no bridge tunnel",
                portal.settings().tag.as_str()
            ));
        }
    }
    for bridge in sources.bridges {
        if bridge.connections() == 0 {
            reasons.push(format!(
                "bridge {:?}: no tunnel to a portal",
                bridge.settings().tag.as_str()
            ));
        }
    }
    reasons
}

/// The `/ready` answer: whether ready, and the body (`ready` or the
/// reasons, one per line).
pub fn ready_text(sources: &Sources<'_>) -> (bool, String) {
    let reasons = not_ready(sources);
    if reasons.is_empty() {
        (true, "ready\n".to_owned())
    } else {
        let mut body = reasons.join("\n");
        body.push('\n');
        (false, body)
    }
}

/// The `/status` document.
pub fn status_json(sources: &Sources<'_>) -> serde_json::Value {
    let bridges: Vec<_> = sources
        .bridges
        .iter()
        .map(|bridge| {
            let status = bridge.status();
            serde_json::json!({
                "tag": bridge.settings().tag.as_str(),
                "domain": bridge.settings().domain,
                "connections": status.connections,
                "dials": status.dials,
                "control_age_seconds": status.since_control.map(|age| age.as_secs_f64()),
                "portals": status.portals.iter().map(|portal| serde_json::json!({
                    "portal": portal.name,
                    "connections": portal.connections,
                    "control_age_seconds": portal.since_control.map(|age| age.as_secs_f64()),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let portals: Vec<_> = sources
        .portals
        .iter()
        .map(|portal| {
            let tunnels: Vec<_> = portal
                .tunnels()
                .into_iter()
                .map(|tunnel| {
                    serde_json::json!({
                        "peer": tunnel.peer.map(|peer| peer.to_string()),
                        "up_seconds": tunnel.up_for.as_secs_f64(),
                        "streams_open": tunnel.active_sessions,
                        "streams_total": tunnel.total_sessions,
                        "draining": tunnel.draining,
                    })
                })
                .collect();
            serde_json::json!({
                "tag": portal.settings().tag.as_str(),
                "domain": portal.settings().domain,
                "bridges": tunnels,
            })
        })
        .collect();
    serde_json::json!({
        "uptime_seconds": sources.metrics.uptime().as_secs_f64(),
        "ready": not_ready(sources).is_empty(),
        "draining": sources.metrics.is_draining(),
        "bridges": bridges,
        "portals": portals,
    })
}
