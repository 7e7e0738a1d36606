//! The workloads: the external load tools (iperf3, wrk, curl) run against a
//! tunnel's public port with their output parsed, and the in-process ones
//! (readiness probes, held idle connections).
//!
//! It measures and parses; deciding what a number means for a setup, and
//! taking medians, is `report`'s job.
//!
//! | workload | tool and arguments | number taken |
//! |---|---|---|
//! | iperf3, 1 or 8 streams | `iperf3 -c -t S -P N -J` | `end.sum_received`: bits/s and bytes |
//! | HTTP 1 KiB / 1 MiB | `wrk -t2 -c50 -dS [-H "Connection: close"]` | `Requests/sec:` |
//! | first byte | one `curl` over N URLs, `Connection: close` | `%{time_starttransfer}` of transfers with `%{num_connects}` = 1 |
//! | held connections | N sockets sending half a request | connections the web server holds open (its `/open`) |
//! | fairness (in `bench.rs`) | testkit's `measure_fairness`: a 1 KiB echo every 10 ms on one connection, idle and beside one bulk upload | p50/p99 of the echo's waits, exchanges done of planned, the bulk's bytes over the window |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::system::run_bounded;
use crate::{demo, web};

/// Connections wrk keeps open, and its threads (`-c50 -t2`, as in the
/// reference figures of BENCHMARKS.md).
pub const WRK_CONNECTIONS: u32 = 50;
pub const WRK_THREADS: u32 = 2;

/// Where the load tools are.
pub struct Tools {
    pub iperf3: PathBuf,
    pub wrk: PathBuf,
    pub curl: PathBuf,
}

/// One iperf3 test's outcome, as the receiver counted it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IperfRun {
    pub gbits_per_second: f64,
    pub bytes: u64,
}

/// Runs iperf3 against `target` for `seconds` with `streams` parallel
/// streams (client to server, the default direction).
pub async fn iperf(
    tools: &Tools,
    target: SocketAddr,
    seconds: u32,
    streams: u32,
) -> Result<IperfRun> {
    let args = [
        "-c".to_owned(),
        target.ip().to_string(),
        "-p".to_owned(),
        target.port().to_string(),
        "-t".to_owned(),
        seconds.to_string(),
        "-P".to_owned(),
        streams.to_string(),
        "-J".to_owned(),
        "--connect-timeout".to_owned(),
        "5000".to_owned(),
    ];
    let limit = Duration::from_secs(u64::from(seconds) + 30);
    let output = run_bounded(&tools.iperf3, &args, limit).await?;
    parse_iperf(&output.stdout)
        .with_context(|| format!("iperf3 -P {streams} to {target} ({})", output.status))
}

/// Reads iperf3's `-J` report: an `error` member, or `end.sum_received`.
pub fn parse_iperf(json: &str) -> Result<IperfRun> {
    let report: serde_json::Value =
        serde_json::from_str(json).context("iperf3 printed no JSON report")?;
    if let Some(error) = report.get("error").and_then(|error| error.as_str()) {
        bail!("iperf3 says: {error}");
    }
    let sum = &report["end"]["sum_received"];
    let (Some(bytes), Some(bits_per_second)) =
        (sum["bytes"].as_u64(), sum["bits_per_second"].as_f64())
    else {
        bail!("the iperf3 report has no end.sum_received");
    };
    if bytes == 0 {
        bail!("iperf3 moved no bytes");
    }
    Ok(IperfRun {
        gbits_per_second: bits_per_second / 1e9,
        bytes,
    })
}

/// Waits until a tiny iperf3 test (1 KiB) passes through `target`: the
/// tunnel is up end to end. A failed try costs the iperf3 server nothing
/// (it never saw the client) so it is simply repeated.
pub async fn wait_iperf_ready(tools: &Tools, target: SocketAddr, limit: Duration) -> Result<()> {
    let started = Instant::now();
    let args = [
        "-c".to_owned(),
        target.ip().to_string(),
        "-p".to_owned(),
        target.port().to_string(),
        "-n".to_owned(),
        "1K".to_owned(),
        "-J".to_owned(),
        "--connect-timeout".to_owned(),
        "2000".to_owned(),
    ];
    loop {
        let attempt = match run_bounded(&tools.iperf3, &args, Duration::from_secs(10)).await {
            Ok(output) => parse_iperf(&output.stdout).map(drop),
            Err(error) => Err(error),
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(error) if started.elapsed() > limit => {
                return Err(error.context(format!(
                    "no iperf3 test passed through {target} within {limit:?}"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// What wrk reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkRun {
    pub requests_per_second: f64,
    pub requests: u64,
    /// connect + read + write + timeout errors.
    pub socket_errors: u64,
    pub non_2xx: u64,
}

/// wrk with 50 connections on 2 threads for `seconds` against `url`; with
/// `connection_close` every request asks for its own connection.
pub async fn wrk(tools: &Tools, url: &str, seconds: u32, connection_close: bool) -> Result<WrkRun> {
    let mut args = vec![
        format!("-t{WRK_THREADS}"),
        format!("-c{WRK_CONNECTIONS}"),
        format!("-d{seconds}s"),
        "--timeout".to_owned(),
        "5s".to_owned(),
    ];
    if connection_close {
        args.extend(["-H".to_owned(), "Connection: close".to_owned()]);
    }
    args.push(url.to_owned());
    let limit = Duration::from_secs(u64::from(seconds) + 30);
    let output = run_bounded(&tools.wrk, &args, limit).await?;
    if !output.status.success() {
        bail!(
            "wrk {url} failed ({}): {}",
            output.status,
            output.stderr.trim()
        );
    }
    parse_wrk(&output.stdout).with_context(|| format!("wrk {url}"))
}

/// Reads wrk's text report (`N requests in`, `Requests/sec:`, `Socket
/// errors:`, `Non-2xx or 3xx responses:`).
pub fn parse_wrk(text: &str) -> Result<WrkRun> {
    let mut run = WrkRun {
        requests_per_second: f64::NAN,
        requests: 0,
        socket_errors: 0,
        non_2xx: 0,
    };
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            run.requests_per_second = rest
                .trim()
                .parse()
                .with_context(|| format!("bad wrk line {line:?}"))?;
        } else if let Some((count, _)) = line.split_once(" requests in ") {
            run.requests = count
                .trim()
                .parse()
                .with_context(|| format!("bad wrk line {line:?}"))?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 12, write 0, timeout 3"
            run.socket_errors = rest
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1))
                .map(|number| number.parse::<u64>().unwrap_or(0))
                .sum();
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            run.non_2xx = rest.trim().parse().unwrap_or(0);
        }
    }
    if run.requests_per_second.is_nan() {
        bail!("no Requests/sec in wrk's report: {text:?}");
    }
    if run.requests == 0 || run.requests_per_second <= 0.0 {
        bail!("wrk completed no request");
    }
    if run.non_2xx >= run.requests {
        bail!("every response was an error ({} non-2xx)", run.non_2xx);
    }
    Ok(run)
}

/// Times to first byte of fresh requests.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstBytes {
    /// Milliseconds, one per transfer that opened its own connection and
    /// got a 200.
    pub samples_ms: Vec<f64>,
    /// Transfers that failed or did not get a 200.
    pub failed: usize,
    /// Transfers that reused a connection (not counted).
    pub reused: usize,
}

/// `count` sequential GETs of `url`, each on its own connection, in one
/// curl process; returns each time to first byte.
pub async fn first_bytes(tools: &Tools, url: &str, count: usize) -> Result<FirstBytes> {
    let mut args = vec![
        "--silent".to_owned(),
        "--max-time".to_owned(),
        "5".to_owned(),
        "-H".to_owned(),
        "Connection: close".to_owned(),
        "--write-out".to_owned(),
        "%{http_code} %{num_connects} %{time_starttransfer}\\n".to_owned(),
    ];
    for _ in 0..count {
        args.extend([
            "--output".to_owned(),
            "/dev/null".to_owned(),
            url.to_owned(),
        ]);
    }
    let limit = Duration::from_secs(30 + count as u64 / 10);
    let output = run_bounded(&tools.curl, &args, limit).await?;
    let first = parse_curl(&output.stdout, count);
    if first.samples_ms.is_empty() {
        bail!(
            "no fresh request to {url} got a first byte ({} failed, {} reused; curl {}: {})",
            first.failed,
            first.reused,
            output.status,
            output.stderr.trim()
        );
    }
    Ok(first)
}

/// Reads curl's `--write-out` lines `CODE CONNECTS SECONDS`; transfers
/// missing from the output (curl gave up) count as failed.
pub fn parse_curl(text: &str, expected: usize) -> FirstBytes {
    let mut first = FirstBytes {
        samples_ms: Vec::with_capacity(expected),
        failed: 0,
        reused: 0,
    };
    let mut seen = 0;
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        seen += 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [code, connects, seconds] = fields[..] else {
            first.failed += 1;
            continue;
        };
        match (code, connects.parse::<u32>(), seconds.parse::<f64>()) {
            ("200", Ok(0), _) => first.reused += 1,
            ("200", Ok(_), Ok(seconds)) if seconds > 0.0 => first.samples_ms.push(seconds * 1000.0),
            _ => first.failed += 1,
        }
    }
    first.failed += expected.saturating_sub(seen);
    first
}

/// Waits until `GET /` through `public` returns the demo page, then checks
/// that `/1m` arrives whole: the tunnel carries real bytes both ways.
pub async fn wait_http_ready(public: SocketAddr, limit: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let attempt =
            tokio::time::timeout(Duration::from_secs(5), demo::http_get(public, "/")).await;
        match attempt {
            Ok(Ok((status, body))) if status.contains(" 200 ") && body == web::PAGE => break,
            _ if started.elapsed() < limit => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(Ok((status, _))) => bail!("GET / through {public} answered {status:?}"),
            Ok(Err(error)) => {
                return Err(error.context(format!("no page through {public} within {limit:?}")))
            }
            Err(_) => bail!("GET / through {public} hung for 5 s"),
        }
    }
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(10), demo::http_get(public, "/1m"))
            .await
            .context("GET /1m took over 10 s")??;
    if !is_whole_page(&status, &body, 1024 * 1024, b'm') {
        bail!(
            "GET /1m through {public}: {status:?} with {} bytes, not 1 MiB of 'm'",
            body.len()
        );
    }
    Ok(())
}

/// Whether a response is a 200 with the web server's `length` bytes of
/// `fill` (`/1k` is 1 KiB of `k`, `/1m` 1 MiB of `m`).
fn is_whole_page(status: &str, body: &str, length: usize, fill: u8) -> bool {
    status.contains(" 200 ") && body.len() == length && body.bytes().all(|byte| byte == fill)
}

/// What [`paced_requests`] got.
#[derive(Debug, Default)]
pub struct Paced {
    /// Requests answered with a whole 1 KiB body.
    pub answered: usize,
    /// Requests that failed, timed out or got anything else.
    pub failed: usize,
}

/// `GET /1k` on a fresh connection (`Connection: close`) to `public`,
/// `rate` times a second for `window`, each request on its own task (so a
/// slow one does not hold up the next); waits up to 5 s for the stragglers.
pub async fn paced_requests(public: SocketAddr, rate: u32, window: Duration) -> Paced {
    async fn one(public: SocketAddr) -> Result<()> {
        let (status, body) = demo::http_get(public, "/1k").await?;
        if !is_whole_page(&status, &body, 1024, b'k') {
            bail!("not a 1 KiB answer: {status:?} with {} bytes", body.len());
        }
        Ok(())
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    while started.elapsed() < window {
        ticks.tick().await;
        tasks.spawn(tokio::time::timeout(Duration::from_secs(5), one(public)));
    }
    let mut paced = Paced::default();
    while let Some(outcome) = tasks.join_next().await {
        match outcome {
            Ok(Ok(Ok(()))) => paced.answered += 1,
            _ => paced.failed += 1,
        }
    }
    paced
}

/// Idle connections held open through a tunnel.
pub struct Held {
    streams: Vec<TcpStream>,
    /// How many of them the backend had accepted when the wait ended.
    pub reached: usize,
    /// Backend connections that were open before (for [`Held::release`]).
    baseline: usize,
}

/// Connections opened at once by [`hold_connections`] before it waits for
/// them to reach the backend.
const HOLD_BATCH: usize = 50;

/// How many connections the web server at `backend` holds open (its
/// `/open`, asked directly, not through a tunnel).
pub async fn open_at_backend(backend: SocketAddr) -> Result<usize> {
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(5), demo::http_get(backend, "/open"))
            .await
            .context("GET /open took over 5 s")??;
    if !status.contains(" 200 ") {
        bail!("GET /open at {backend} answered {status:?}");
    }
    body.trim()
        .parse()
        .with_context(|| format!("GET /open at {backend} gave {body:?}"))
}

/// Opens `count` connections to `public`, each sending the first half of a
/// request (so that every tunnel really opens its path to the backend), and
/// waits up to `limit` until the web server at `backend` has accepted all.
///
/// They are opened in batches of [`HOLD_BATCH`], each batch given up to a
/// second to reach the backend before the next: the point is memory per
/// held connection, not how a tunnel takes a burst of thousands of
/// handshakes (rathole's noise transport times many of those out). No
/// socket is bound before it connects: a port taken by `bind` is closed to
/// every other connection's choice, and twenty thousand of them would
/// leave the bridge too few ephemeral ports to reach the backend.
pub async fn hold_connections(
    public: SocketAddr,
    backend: SocketAddr,
    count: usize,
    limit: Duration,
) -> Result<Held> {
    const HALF_REQUEST: &[u8] = b"GET /1k HTTP/1.1\r\nHost: bench\r\n";
    let baseline = open_at_backend(backend).await?;
    let started = Instant::now();
    let mut streams = Vec::with_capacity(count);
    let reached_now = || async move {
        Ok::<_, anyhow::Error>(open_at_backend(backend).await?.saturating_sub(baseline))
    };
    while streams.len() < count {
        for _ in 0..HOLD_BATCH.min(count - streams.len()) {
            let index = streams.len();
            let mut stream =
                tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(public))
                    .await
                    .with_context(|| format!("connection {index} to {public} took over 5 s"))?
                    .with_context(|| format!("connection {index} to {public}"))?;
            stream.write_all(HALF_REQUEST).await?;
            streams.push(stream);
        }
        let batch_started = Instant::now();
        while reached_now().await? < streams.len()
            && batch_started.elapsed() < Duration::from_secs(1)
            && started.elapsed() < limit
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if started.elapsed() >= limit {
            break;
        }
    }
    let mut reached = reached_now().await?.min(count);
    while reached < count && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
        reached = reached_now().await?.min(count);
    }
    Ok(Held {
        streams,
        reached,
        baseline,
    })
}

impl Held {
    /// Closes every connection and waits (up to `limit`) until the backend
    /// has seen them go, so the next workload starts from a quiet tunnel.
    pub async fn release(self, backend: SocketAddr, limit: Duration) -> Result<()> {
        drop(self.streams);
        let started = Instant::now();
        while open_at_backend(backend).await? > self.baseline && started.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf_report_gives_received_rate_and_bytes() {
        let json = r#"{"start": {}, "end": {"sum_sent": {"bytes": 10, "bits_per_second": 1.0},
            "sum_received": {"bytes": 2880831488, "bits_per_second": 23033845086.13}}}"#;
        let run = parse_iperf(json).expect("parsed");
        assert_eq!(run.bytes, 2_880_831_488);
        assert!((run.gbits_per_second - 23.033845).abs() < 1e-5);
    }

    #[test]
    fn iperf_errors_and_empty_runs_are_failures() {
        let error = parse_iperf(
            r#"{"start": {}, "end": {}, "error": "unable to connect to server: Connection refused"}"#,
        );
        assert!(format!("{:#}", error.unwrap_err()).contains("Connection refused"));
        let nothing =
            parse_iperf(r#"{"end": {"sum_received": {"bytes": 0, "bits_per_second": 0.0}}}"#);
        assert!(format!("{:#}", nothing.unwrap_err()).contains("no bytes"));
        assert!(parse_iperf("iperf3: error - the server is busy").is_err());
    }

    const WRK_REPORT: &str = "Running 5s test @ http://127.0.0.1:4000/1k
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   614.71us  310.17us  10.64ms   89.35%
    Req/Sec    40.55k     2.21k   45.38k    73.00%
  403421 requests in 5.00s, 455.22MB read
  Socket errors: connect 0, read 12, write 1, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:  80665.41
Transfer/sec:     91.02MB
";

    #[test]
    fn wrk_report_gives_rate_requests_and_errors() {
        let run = parse_wrk(WRK_REPORT).expect("parsed");
        assert_eq!(run.requests, 403_421);
        assert!((run.requests_per_second - 80665.41).abs() < 1e-6);
        assert_eq!(run.socket_errors, 16);
        assert_eq!(run.non_2xx, 7);
    }

    #[test]
    fn wrk_without_requests_is_a_failure() {
        let empty = "Running 1s test @ http://127.0.0.1:9/1k\n  0 requests in 1.00s, 0.00B read\n  Socket errors: connect 50, read 0, write 0, timeout 0\nRequests/sec:      0.00\nTransfer/sec:       0.00B\n";
        assert!(parse_wrk(empty).is_err());
        assert!(parse_wrk("unable to connect to 127.0.0.1:9 Connection refused").is_err());
    }

    #[test]
    fn curl_lines_split_into_fresh_reused_and_failed() {
        let text =
            "200 1 0.000312\n200 0 0.000101\n000 0 0.000000\n404 1 0.000200\n200 1 0.001250\n";
        let first = parse_curl(text, 7);
        assert_eq!(first.samples_ms.len(), 2);
        assert!(
            (first.samples_ms[0] - 0.312).abs() < 1e-9 && (first.samples_ms[1] - 1.25).abs() < 1e-9
        );
        assert_eq!(first.reused, 1);
        // Two bad lines, and two transfers curl never reported.
        assert_eq!(first.failed, 4);
    }
}
