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
//! `/status` is also what the status page (`/`, [`crate::endpoint`])
//! polls, so it carries what the page shows: per bridge and per portal
//! tunnel sessions, bytes, ages, reconnects and control ages; counters by
//! tag; handshake failures by reason. It never names a user: every string
//! in it goes through [`mask_uuids`], as a UUID prints in the logs.
//!
//! The health answers for load balancers are here too: `/live` (the
//! process serves) and `/ready` ([`not_ready`]: every portal holds a
//! usable bridge tunnel, every bridge holds a tunnel, and the process is
//! not draining after a stop signal).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use rayback_core::{Counted, Tally};
use rayback_reverse::{Bridge, Portal};
use rayback_vmess::{FailureReason, VmessMetrics};

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
        Counted::new(stream, SessionTally { inbound, outbound })
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

/// A session's client-side stream, counted for its tags.
pub type CountingStream<S> = Counted<S, SessionTally>;

/// The counters of a session's inbound and outbound tags: its stream's
/// reads count as uplink and writes as downlink bytes (it is the client
/// side of a session), and its end as a session ended.
pub struct SessionTally {
    inbound: Arc<TagCounters>,
    outbound: Arc<TagCounters>,
}

impl Tally for SessionTally {
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

impl Drop for SessionTally {
    fn drop(&mut self) {
        for counters in [&self.inbound, &self.outbound] {
            counters.sessions_ended.fetch_add(1, Ordering::Relaxed);
        }
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

/// The counters of each tag on one side, for `/status`.
fn tag_json(tagged: &Tagged) -> Vec<serde_json::Value> {
    tagged
        .snapshot()
        .into_iter()
        .map(|(tag, counters)| {
            serde_json::json!({
                "tag": tag,
                "sessions_open": counters.open(),
                "sessions_total": counters.sessions_total.load(Ordering::Relaxed),
                "bytes_up": counters.bytes_up.load(Ordering::Relaxed),
                "bytes_down": counters.bytes_down.load(Ordering::Relaxed),
            })
        })
        .collect()
}

/// The `/status` document.
///
/// Besides the fields `/status` always had, each bridge has `sessions`,
/// `reconnects`, `dial_failures`, `bytes_up`, `bytes_down` (its tunnels'
/// carrier bytes, ended tunnels included) and per portal `up_seconds`,
/// `sessions`, `reconnects`, `bytes_up`, `bytes_down`; each portal has
/// `tunnels`, `sessions`, `bytes_up`, `bytes_down`, `no_bridge_refusals`
/// and per tunnel `sessions`, `bytes_up`, `bytes_down`. Up is toward the
/// service behind the bridge. `inbounds` and `outbounds` hold the
/// counters by tag, `vmess` and `vless` the handshakes and their failures
/// by reason.
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
                "sessions": status.sessions,
                "reconnects": status.reconnects,
                "dial_failures": status.dial_failures,
                "bytes_up": status.bytes_up,
                "bytes_down": status.bytes_down,
                "portals": status.portals.iter().map(|portal| serde_json::json!({
                    "portal": portal.name,
                    "connections": portal.connections,
                    "control_age_seconds": portal.since_control.map(|age| age.as_secs_f64()),
                    "up_seconds": portal.up_for.map(|age| age.as_secs_f64()),
                    "sessions": portal.sessions,
                    "reconnects": portal.reconnects,
                    "bytes_up": portal.bytes_up,
                    "bytes_down": portal.bytes_down,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let portals: Vec<_> = sources
        .portals
        .iter()
        .map(|portal| {
            let statuses = portal.tunnels();
            let tunnels: Vec<_> = statuses
                .iter()
                .map(|tunnel| {
                    serde_json::json!({
                        "peer": tunnel.peer.map(|peer| peer.to_string()),
                        "up_seconds": tunnel.up_for.as_secs_f64(),
                        "streams_open": tunnel.active_sessions,
                        "streams_total": tunnel.total_sessions,
                        "draining": tunnel.draining,
                        "sessions": tunnel.sessions,
                        "bytes_up": tunnel.bytes_up,
                        "bytes_down": tunnel.bytes_down,
                        "flow_control": tunnel.flow_control,
                    })
                })
                .collect();
            serde_json::json!({
                "tag": portal.settings().tag.as_str(),
                "domain": portal.settings().domain,
                "bridges": tunnels,
                "tunnels": statuses.len(),
                "sessions": statuses.iter().map(|tunnel| tunnel.sessions).sum::<usize>(),
                "bytes_up": portal.bytes().up(),
                "bytes_down": portal.bytes().down(),
                "no_bridge_refusals": portal.no_bridge_refusals(),
            })
        })
        .collect();
    let vmess = sources.vmess;
    let vmess_failures: serde_json::Map<String, serde_json::Value> = FailureReason::ALL
        .iter()
        .map(|reason| (reason.as_str().to_owned(), vmess.failures(*reason).into()))
        .collect();
    let vless = rayback_vless::VlessMetrics::process();
    let vless_failures: serde_json::Map<String, serde_json::Value> =
        rayback_vless::FailureReason::ALL
            .iter()
            .map(|reason| (reason.as_str().to_owned(), vless.failures(*reason).into()))
            .collect();
    let mut status = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": sources.metrics.uptime().as_secs_f64(),
        "ready": not_ready(sources).is_empty(),
        "draining": sources.metrics.is_draining(),
        "bridges": bridges,
        "portals": portals,
        "inbounds": tag_json(&sources.metrics.inbounds),
        "outbounds": tag_json(&sources.metrics.outbounds),
        "vmess": {
            "handshakes": vmess.handshakes_accepted.load(Ordering::Relaxed),
            "handshake_failures": vmess_failures,
            "peer_nonce_wraps": vmess.peer_nonce_wraps.load(Ordering::Relaxed),
            "send_budget_exhausted": vmess.send_budget_exhausted.load(Ordering::Relaxed),
        },
        "vless": {
            "handshakes": vless.handshakes_accepted.load(Ordering::Relaxed),
            "handshake_failures": vless_failures,
            "fallbacks": vless.fallbacks.load(Ordering::Relaxed),
        },
    });
    mask_strings(&mut status);
    status
}

/// Masks every UUID in every string of `value` (see [`mask_uuids`]).
fn mask_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) => {
            if let std::borrow::Cow::Owned(masked) = mask_uuids(text) {
                *text = masked;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_strings),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(mask_strings),
        _ => {}
    }
}

/// `text` with every hyphenated UUID (8-4-4-4-12 hex digits) shown as the
/// logs show a user ID (`rayback_config::VmessId`): its first and last
/// four hex digits, `2784…4b6b`. A tag or domain that happens to be a
/// user's ID then does not publish it.
pub fn mask_uuids(text: &str) -> std::borrow::Cow<'_, str> {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    const LEN: usize = 36;
    let bytes = text.as_bytes();
    let is_uuid_at = |start: usize| {
        let Some(candidate) = bytes.get(start..start + LEN) else {
            return false;
        };
        let mut at = 0;
        for (index, group) in GROUPS.iter().enumerate() {
            if index > 0 {
                if candidate[at] != b'-' {
                    return false;
                }
                at += 1;
            }
            if !candidate[at..at + group].iter().all(u8::is_ascii_hexdigit) {
                return false;
            }
            at += group;
        }
        true
    };
    let Some(first) = (0..bytes.len()).find(|&start| is_uuid_at(start)) else {
        return std::borrow::Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..first]);
    let mut at = first;
    while at < bytes.len() {
        if is_uuid_at(at) {
            let hex: String = text[at..at + LEN]
                .chars()
                .filter(|c| *c != '-')
                .map(|c| c.to_ascii_lowercase())
                .collect();
            out.push_str(&hex[..4]);
            out.push('…');
            out.push_str(&hex[28..]);
            at += LEN;
        } else {
            // Hex digits and hyphens are ASCII, so a UUID starts on a char
            // boundary: copy one whole char.
            let next = text[at..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[at..at + next]);
            at += next;
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_print_as_the_logs_print_them() {
        let id = "27848739-7E62-4138-9fd3-098a63964b6b";
        assert_eq!(mask_uuids(id), "2784…4b6b");
        assert_eq!(
            mask_uuids(&format!("tag-{id}.example ≠ {id}")),
            "tag-2784…4b6b.example ≠ 2784…4b6b"
        );
        for plain in [
            "portal",
            "rayback.internal",
            "127.0.0.1:1024",
            "",
            "é-27848739-7e62",
        ] {
            assert!(
                matches!(mask_uuids(plain), std::borrow::Cow::Borrowed(_)),
                "{plain}"
            );
        }
        // The masked form agrees with the configuration's Debug/Display.
        let vmess = rayback_config::VmessId(id.parse().unwrap());
        assert_eq!(mask_uuids(id), vmess.to_string());
    }

    #[test]
    fn status_json_masks_every_string() {
        let mut value = serde_json::json!({
            "a": ["x 27848739-7e62-4138-9fd3-098a63964b6b y", 1],
            "b": {"c": "27848739-7e62-4138-9fd3-098a63964b6b"},
        });
        mask_strings(&mut value);
        assert_eq!(
            value,
            serde_json::json!({"a": ["x 2784…4b6b y", 1], "b": {"c": "2784…4b6b"}})
        );
    }
}
