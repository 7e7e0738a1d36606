//! Process gauges read from /proc (resident memory, open descriptors) and
//! from a Rayback `/metrics` endpoint, and bounded readiness waits that
//! poll a condition instead of sleeping a guessed time.
//!
//! Linux only (it reads `/proc/<pid>/status` and `/proc/<pid>/fd`). Not a
//! profiler: each call is one snapshot.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How often the waits poll.
const POLL: Duration = Duration::from_millis(50);

/// Resident set size of `pid` in KiB (`VmRSS`).
pub fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("reading /proc/{pid}/fd"))?
        .count())
}

/// Whether `pid` is still running (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Polls `condition` until it holds; fails after `limit`. Returns how
/// long it took.
pub async fn wait_until(limit: Duration, condition: impl Fn() -> bool) -> Result<Duration> {
    let started = Instant::now();
    loop {
        if condition() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("the condition did not hold within {limit:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `config` (a Rayback JSON config as text, comments allowed, without a
/// `rayback` key) with a metrics endpoint at `metrics`: the key is added
/// before the final `}` as text, so the seed files' comments survive.
pub fn with_metrics_endpoint(config: &str, metrics: SocketAddr) -> String {
    let at = config.rfind('}').expect("a JSON object");
    format!(
        "{},\n  \"rayback\": {{\"metrics\": \"{metrics}\"}}\n}}\n",
        config[..at].trim_end()
    )
}

/// The text of `GET /metrics` from a Rayback metrics endpoint.
pub async fn scrape(addr: SocketAddr) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut socket = tokio::net::TcpStream::connect(addr).await?;
        socket
            .write_all(
                format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        socket.read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            bail!("no HTTP head in the answer from {addr}");
        };
        if !head.starts_with("HTTP/1.1 200") {
            bail!("{addr} answered {:?}", head.lines().next());
        }
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return Ok(dechunk(body));
        }
        anyhow::Ok(body.to_owned())
    })
    .await
    .with_context(|| format!("scraping {addr}"))?
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// The sum of every sample of metric `name` whose labels contain each
/// of `labels` (e.g. `side="inbound"`); `None` if there is none.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric_name, label_text) = match series.split_once('{') {
            Some((metric_name, label_text)) => (metric_name, label_text),
            None => (series, ""),
        };
        if metric_name != name || !labels.iter().all(|label| label_text.contains(label)) {
            continue;
        }
        if let Ok(value) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(rss_kb(pid).unwrap() > 100);
        let before = fd_count(pid).unwrap();
        let _listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(fd_count(pid).unwrap(), before + 1);
        assert!(alive(pid));
        assert!(rss_kb(u32::MAX).is_err());
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn metric_sums_matching_samples() {
        let text = "# HELP x y\n\
            rayback_sessions_open{side=\"inbound\",tag=\"a\"} 3\n\
            rayback_sessions_open{side=\"inbound\",tag=\"b\"} 4\n\
            rayback_sessions_open{side=\"outbound\",tag=\"a\"} 5\n\
            rayback_uptime_seconds 1.5\n";
        assert_eq!(metric(text, "rayback_sessions_open", &[]), Some(12.0));
        assert_eq!(
            metric(text, "rayback_sessions_open", &["side=\"inbound\""]),
            Some(7.0)
        );
        assert_eq!(metric(text, "rayback_uptime_seconds", &[]), Some(1.5));
        assert_eq!(metric(text, "rayback_missing", &[]), None);
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }

    #[tokio::test]
    async fn wait_until_fails_after_its_limit() {
        assert!(wait_until(Duration::from_millis(100), || false)
            .await
            .is_err());
        assert!(wait_until(Duration::from_millis(100), || true)
            .await
            .is_ok());
    }
}
