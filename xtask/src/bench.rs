//! `cargo xtask bench [--quick] [--runs N] [--only SETUP,...]`: the
//! end-to-end benchmark of Rayback against no tunnel, the real v2ray 4.34
//! and (when installed) rathole, on loopback.
//!
//! Every setup forwards a public port on 127.0.0.1 to a backend beside it;
//! the load tools connect to the public port:
//!
//! ```text
//! wrk / curl / iperf3 -c ──▶ public port ──▶ [portal ══ tunnel ══ bridge] ──▶ backend
//!                                            (or rathole server ══ client;
//!                                             direct: no tunnel at all)
//! ```
//!
//! | backend | workloads |
//! |---|---|
//! | `iperf3 -s` (a fresh one per setup and round) | iperf3 1 stream, 8 streams; CPU per GiB during the 1-stream run |
//! | the web server of `web.rs` (`/1k`, `/1m`; `cargo xtask web`, a process of its own, fresh per phase) | wrk keep-alive and `Connection: close`, curl first byte, RSS idle and per held connection (20,000, or what the open-file limit allows) |
//! | testkit's `fairness_backend` (echo, sink, source) | a 1 KiB echo every 10 ms on one keep-alive connection, with the tunnel idle and beside one bulk upload through the same public port (so on the same tunnel): echo p50/p99, exchanges done, the bulk's Gbit/s |
//! | the web server again, behind 1,000 bridges (one bridge process whose config lists 1,000 `bridges`, a tunnel each) on one portal; VMess reverse pairs on TCP only | the portal's RSS and CPU with the tunnels idle, and its CPU while `GET /1k` arrives on a new connection 1,000 times a second |
//!
//! Each round runs every setup once, one after the other (so that the
//! machine's noise spreads over all of them), and each setup runs three
//! times: with its tunnel aimed at iperf3, at the web server, and at the
//! fairness backend (and the reverse pairs a fourth time, with 1,000
//! bridges), with the seed page's configurations only re-ported
//! (freedom's `redirect` names one backend). Every setup runs every phase,
//! `rayback-2t` (Rayback with two runtime threads) included, and so do
//! `rayback-wstls` and `v2ray-wstls` (the seed pair with the tunnel over
//! WebSocket inside TLS; `--quick` leaves these two out unless `--only`
//! names them, to keep CI's smoke run near a minute). Cells are
//! medians over the rounds. Results go to
//! `target/bench/results.md` and `target/bench/chart.svg`; configs and logs
//! of the last round to `target/bench/work/`.
//!
//! It exits non-zero only when a setup does not work at all for some
//! workload (no run of it produced a number); poor numbers are not errors.
//! It is not a load generator of its own: the numbers are iperf3's, wrk's
//! and curl's, except the fairness rows, which are testkit's
//! `measure_fairness` (the probe the fairness battery test asserts on).

mod report;
mod setup;
mod system;
mod workload;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rayback_testkit::fairness::{self, Bulk, FairnessPlan, FairnessReport, Probe};
use rayback_testkit::{free_port, wait_for_port, workspace_root};

use report::{Metric, Results, RunInfo};
use setup::{parse_genkey, start_many_bridges, Programs, SetupKind, Tunnel};
use system::{
    clock_ticks_per_second, established_on_port, first_line_of, is_executable, run_bounded,
    run_visible, which, Daemon,
};
use workload::Tools;

/// How long a tunnel may take from start to carrying its first bytes.
const READY_LIMIT: Duration = Duration::from_secs(20);

/// Bridges on one portal in the many-bridges phase (the row labels say
/// 1,000, so `--quick` keeps the count and shortens the windows).
const BRIDGES: usize = 1000;

/// Descriptors a process keeps for itself besides held connections
/// (listeners, the tunnel, logs, the runtime).
const HELD_HEADROOM: u64 = 500;

/// How long a portal's bridges may take to get every tunnel up.
const BRIDGES_LIMIT: Duration = Duration::from_secs(60);

/// Open files the benchmark and the processes it starts may have: twenty
/// thousand held connections are four sockets each across the client, the
/// portal, the bridge and the web server.
const OPEN_FILES: u64 = 200_000;

/// What the command line asked for.
#[derive(Debug, PartialEq)]
struct Options {
    quick: bool,
    /// Use the dev-profile binaries the tests already built (CI's smoke
    /// run: it checks the harness, not the figures, and saves a release
    /// build).
    dev_build: bool,
    runs: usize,
    only: Option<Vec<SetupKind>>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut options = Options {
            quick: false,
            dev_build: false,
            runs: 0,
            only: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--dev-build" => options.dev_build = true,
                "--runs" => {
                    let value = args.next().context("--runs needs a number")?;
                    options.runs = value
                        .parse()
                        .ok()
                        .filter(|runs| (1..=100).contains(runs))
                        .with_context(|| format!("--runs wants 1 to 100, got {value:?}"))?;
                }
                "--only" => {
                    let value = args.next().context("--only needs a list of setups")?;
                    let kinds = value
                        .split(',')
                        .map(|name| {
                            SetupKind::parse(name.trim()).with_context(|| {
                                let names: Vec<&str> = SetupKind::ALL.iter().map(|kind| kind.name()).collect();
                                format!("unknown setup {name:?}; the setups are {}", names.join(", "))
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    options.only = Some(kinds);
                }
                other => bail!("usage: cargo xtask bench [--quick] [--dev-build] [--runs N] [--only SETUP,...]; got {other:?}"),
            }
        }
        if options.runs == 0 {
            options.runs = if options.quick { 1 } else { 3 };
        }
        Ok(options)
    }

    /// Whether `kind` runs: the setups `--only` names, else all of them,
    /// except that `--quick` alone leaves out those not in its plan.
    fn wants(&self, kind: SetupKind) -> bool {
        match &self.only {
            Some(only) => only.contains(&kind),
            None => !self.quick || kind.in_quick_plan(),
        }
    }
}

/// The sizes of the workloads.
struct Plan {
    iperf_seconds: u32,
    wrk_seconds: u32,
    first_byte_requests: usize,
    held_connections: usize,
    /// The fairness probe's window, idle and beside the bulk each.
    fairness_probe: Duration,
    /// Bridges (tunnels) on one portal, and the windows over which the
    /// portal's CPU is taken with them idle and with one request per
    /// bridge per second.
    bridges: usize,
    /// How long after the last tunnel is up before measuring: past the
    /// dial burst and a round of heartbeats both ways.
    bridges_settle: Duration,
    bridges_idle_window: Duration,
    bridges_request_window: Duration,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                iperf_seconds: 1,
                wrk_seconds: 1,
                first_byte_requests: 20,
                held_connections: 1000,
                fairness_probe: Duration::from_secs(1),
                bridges: BRIDGES,
                bridges_settle: Duration::from_secs(1),
                bridges_idle_window: Duration::from_secs(2),
                bridges_request_window: Duration::from_secs(1),
            }
        } else {
            Plan {
                iperf_seconds: 5,
                wrk_seconds: 5,
                first_byte_requests: 200,
                held_connections: 20_000,
                fairness_probe: Duration::from_secs(4),
                bridges: BRIDGES,
                bridges_settle: Duration::from_secs(3),
                bridges_idle_window: Duration::from_secs(10),
                bridges_request_window: Duration::from_secs(5),
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "iperf3 `-t {}` with 1 and 8 streams; wrk `-t{} -c{} -d{}s` on /1k (keep-alive and `Connection: close`) \
             and /1m; curl first byte over {} fresh connections; {} idle connections held for RSS; \
             a 1 KiB echo every 10 ms on one keep-alive connection for {} s, tunnel idle, then beside one bulk \
             upload (64 KiB writes) through the same public port; {} bridges (one bridge process, one tunnel each) \
             on one portal: the portal's RSS, its CPU over {} s idle and over {} s of `GET /1k` on a new \
             connection {} times a second",
            self.iperf_seconds,
            workload::WRK_THREADS,
            workload::WRK_CONNECTIONS,
            self.wrk_seconds,
            self.first_byte_requests,
            self.held_connections,
            self.fairness_probe.as_secs_f64(),
            self.bridges,
            self.bridges_idle_window.as_secs_f64(),
            self.bridges_request_window.as_secs_f64(),
            self.bridges
        )
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let started = Instant::now();
    let open_files = system::raise_open_files(OPEN_FILES);
    let root = workspace_root();
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(out_dir.join("work"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench(&options, &root, &out_dir, args, started, open_files))
}

async fn bench(
    options: &Options,
    root: &Path,
    out_dir: &Path,
    args: &[String],
    started: Instant,
    open_files: u64,
) -> Result<()> {
    let tools = ensure_tools().await?;
    let mut skipped = Vec::new();
    let mut setups: Vec<SetupKind> = SetupKind::ALL
        .into_iter()
        .filter(|kind| options.wants(*kind))
        .collect();

    let rayback = if setups.iter().any(|kind| kind.is_rayback()) {
        match build_rayback(root, options.dev_build).await {
            Ok(dir) => Some(dir),
            Err(error) => {
                // Kept in the list: every cell fails and the command exits non-zero.
                eprintln!("bench: Rayback is not available: {error:#}");
                None
            }
        }
    } else {
        None
    };

    let wants_rathole = setups
        .iter()
        .any(|kind| matches!(kind, SetupKind::Rathole | SetupKind::RatholeNoise));
    let rathole = if wants_rathole {
        find_or_install_rathole(options.quick).await
    } else {
        Ok(None)
    };
    let (rathole, noise_keys) = match rathole {
        Ok(Some(path)) => {
            let keys = match run_bounded(&path, &["--genkey"], Duration::from_secs(10)).await {
                Ok(output) => parse_genkey(&output.stdout),
                Err(_) => None,
            };
            if keys.is_none() && setups.contains(&SetupKind::RatholeNoise) {
                skipped.push("rathole noise: `rathole --genkey` gave no key pair".to_owned());
                setups.retain(|kind| *kind != SetupKind::RatholeNoise);
            }
            (Some(path), keys)
        }
        Ok(None) | Err(_) if !wants_rathole => (None, None),
        outcome => {
            let why = match outcome {
                Err(error) => format!("{error:#}"),
                _ if options.quick => "not on PATH (--quick never installs it)".to_owned(),
                _ => "not on PATH and `cargo install rathole` failed".to_owned(),
            };
            skipped.push(format!(
                "rathole (plain and noise): {why}; install it with `cargo install rathole` to include it"
            ));
            setups.retain(|kind| !matches!(kind, SetupKind::Rathole | SetupKind::RatholeNoise));
            (None, None)
        }
    };
    for line in &skipped {
        eprintln!("bench: skipped {line}");
    }

    let programs = Programs {
        rayback,
        v2ray: rayback_testkit::v2ray_path(),
        rathole,
        noise_keys,
    };
    let mut plan = Plan::new(options.quick);
    // Each held connection is a descriptor in one process per side (the
    // portal, the bridge, the web server, this one); where the limit cannot
    // be raised, hold what fits under it.
    let fits = usize::try_from(open_files.saturating_sub(HELD_HEADROOM)).unwrap_or(usize::MAX);
    let held_note = (plan.held_connections > fits).then(|| {
        let wanted = plan.held_connections;
        plan.held_connections = fits;
        format!(
            "held connections: {fits} instead of {wanted}: the open-file limit here is {open_files} per process \
             and cannot be raised (no CAP_SYS_RESOURCE)"
        )
    });

    let fairness_addr = fairness::fairness_backend().await?;
    let context = BenchContext {
        tools: &tools,
        programs: &programs,
        plan: &plan,
        fairness: fairness_addr,
        work: out_dir.join("work"),
        ticks_per_second: clock_ticks_per_second(),
    };
    let names: Vec<&str> = setups.iter().map(|kind| kind.title()).collect();
    eprintln!("bench: {} round(s) of: {}", options.runs, names.join(", "));
    let mut results = Results::default();
    if let Some(note) = held_note {
        eprintln!("bench: {note}");
        results.note(note);
    }
    for round in 1..=options.runs {
        for setup in &setups {
            eprintln!("==> round {round}/{}: {}", options.runs, setup.title());
            context.phase(*setup, Phase::Iperf, &mut results).await;
            context.phase(*setup, Phase::Http, &mut results).await;
            context.phase(*setup, Phase::Fairness, &mut results).await;
            if setup.has_reverse_tcp() && (!options.quick || *setup != SetupKind::RaybackTwoThreads)
            {
                // `--quick` (CI's smoke run) leaves Rayback 2 threads out of
                // this phase: it checks the harness, and the phase is the
                // slowest one there (1,000 handshakes to start).
                context.phase(*setup, Phase::Bridges, &mut results).await;
            }
        }
    }

    let info = RunInfo {
        command: format!(
            "cargo xtask bench{}",
            args.iter().map(|arg| format!(" {arg}")).collect::<String>()
        ),
        date: first_line_of(Path::new("date"), &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: machine(),
        runs: options.runs,
        plan: plan.describe(),
        versions: versions(&tools, &programs, root),
        setups: setups.clone(),
        skipped,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    };
    let markdown = report::markdown(&results, &info);
    let results_path = out_dir.join("results.md");
    let chart_path = out_dir.join("chart.svg");
    std::fs::write(&results_path, &markdown)?;
    let subtitle = [
        format!("{}, {}", info.command, info.date),
        info.machine.clone(),
    ];
    let subtitle = subtitle.each_ref().map(String::as_str);
    std::fs::write(&chart_path, report::svg(&results, &setups, &subtitle))?;

    println!("\n{}", report::median_table(&results, &setups));
    println!(
        "wrote {} and {}",
        results_path.display(),
        chart_path.display()
    );
    println!("bench took {:.0} s", info.elapsed_seconds);
    let broken = results.broken_cells();
    if !broken.is_empty() {
        for (setup, metric, reason) in &broken {
            eprintln!(
                "bench: {} does not work for {}: {reason}",
                setup.title(),
                metric.label()
            );
        }
        bail!(
            "{} workload(s) moved nothing for some setup; see {}",
            broken.len(),
            results_path.display()
        );
    }
    Ok(())
}

/// Which backend a tunnel is aimed at.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Iperf,
    Http,
    Fairness,
    /// Many bridges on one portal (the reverse pairs on TCP only).
    Bridges,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Iperf => "iperf",
            Phase::Http => "http",
            Phase::Fairness => "fairness",
            Phase::Bridges => "bridges",
        }
    }

    fn metrics(self) -> &'static [Metric] {
        match self {
            Phase::Iperf => &[Metric::Iperf1, Metric::Iperf8, Metric::CpuPerGiB],
            Phase::Http => &[
                Metric::RssIdle,
                Metric::RssPerConnection,
                Metric::HttpKeepAlive,
                Metric::HttpNewConnection,
                Metric::Http1MiB,
                Metric::FirstByteMedian,
                Metric::FirstByteP99,
            ],
            Phase::Fairness => &[
                Metric::EchoIdleP50,
                Metric::EchoIdleP99,
                Metric::EchoBulkP50,
                Metric::EchoBulkP99,
                Metric::EchoBulkDone,
                Metric::BulkBesideEcho,
            ],
            Phase::Bridges => &[
                Metric::BridgesPortalRss,
                Metric::BridgesPortalCpuIdle,
                Metric::BridgesPortalCpuRequests,
            ],
        }
    }
}

/// What every phase needs.
struct BenchContext<'a> {
    tools: &'a Tools,
    programs: &'a Programs,
    plan: &'a Plan,
    /// testkit's fairness backend (echo, sink, source by first byte).
    fairness: SocketAddr,
    work: PathBuf,
    ticks_per_second: f64,
}

/// Records `outcome` as a sample of `metric`, or as a failure, and says so.
fn record(results: &mut Results, setup: SetupKind, metric: Metric, outcome: Result<f64>) {
    match outcome {
        Ok(value) => {
            eprintln!("    {:<28} {}", metric.label(), report::format_value(value));
            results.record(setup, metric, value);
        }
        Err(error) => {
            let why = format!("{error:#}");
            eprintln!("    {:<28} FAILED: {why}", metric.label());
            results.fail(setup, metric, &why);
        }
    }
}

/// Which figure of a fairness report a row takes.
type ReportFigure = fn(&FairnessReport) -> f64;

/// Records one row per `(metric, figure)` of a fairness probe's outcome; a
/// failed probe fails every row with its reason.
fn record_report(
    results: &mut Results,
    setup: SetupKind,
    outcome: &Result<FairnessReport>,
    rows: &[(Metric, ReportFigure)],
) {
    for (metric, value_of) in rows {
        let value = match outcome {
            Ok(report) => {
                let value = value_of(report);
                if value.is_finite() {
                    Ok(value)
                } else {
                    Err(anyhow::anyhow!("no exchange came back: {report}"))
                }
            }
            Err(error) => Err(anyhow::anyhow!("{error:#}")),
        };
        record(results, setup, *metric, value);
    }
}

impl BenchContext<'_> {
    /// Runs one phase; if the tunnel cannot be started (or breaks midway),
    /// every metric of the phase that got no outcome this time fails with
    /// the reason.
    async fn phase(&self, setup: SetupKind, phase: Phase, results: &mut Results) {
        let metrics: Vec<Metric> = phase
            .metrics()
            .iter()
            .copied()
            .filter(|metric| setup.has_processes() || !metric.needs_processes())
            .collect();
        let before: Vec<usize> = metrics
            .iter()
            .map(|metric| results.attempts(setup, *metric))
            .collect();
        let dir = self.work.join(format!("{}-{}", setup.name(), phase.name()));
        let started = Instant::now();
        let mut outcome = self.phase_once(setup, phase, &dir, results).await;
        let untouched = |results: &Results| {
            metrics
                .iter()
                .zip(&before)
                .all(|(metric, count)| results.attempts(setup, *metric) == *count)
        };
        if let Err(error) = &outcome {
            if untouched(results) {
                // The tunnel never carried anything: start it afresh once
                // before calling the setup broken.
                eprintln!(
                    "    {} {} phase failed ({error:#}); trying once more",
                    setup.title(),
                    phase.name()
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                outcome = self.phase_once(setup, phase, &dir, results).await;
            }
        }
        eprintln!(
            "    ({} phase: {:.1} s)",
            phase.name(),
            started.elapsed().as_secs_f64()
        );
        if let Err(error) = outcome {
            let why = format!("{error:#}");
            eprintln!("    {} {} phase failed: {why}", setup.title(), phase.name());
            for (metric, count) in metrics.iter().zip(before) {
                if results.attempts(setup, *metric) == count {
                    results.fail(setup, *metric, &why);
                }
            }
        }
    }

    async fn phase_once(
        &self,
        setup: SetupKind,
        phase: Phase,
        dir: &Path,
        results: &mut Results,
    ) -> Result<()> {
        match phase {
            Phase::Iperf => self.iperf_phase(setup, dir, results).await,
            Phase::Http => self.http_phase(setup, dir, results).await,
            Phase::Fairness => self.fairness_phase(setup, dir, results).await,
            Phase::Bridges => self.bridges_phase(setup, dir, results).await,
        }
    }

    /// The paced 1 KiB echo through the tunnel, first alone, then beside
    /// one bulk upload on the same public port (so on the same tunnel).
    async fn fairness_phase(
        &self,
        setup: SetupKind,
        dir: &Path,
        results: &mut Results,
    ) -> Result<()> {
        let mut tunnel = Tunnel::start(setup, self.fairness.port(), self.programs, dir).await?;
        fairness::wait_echo(tunnel.public, READY_LIMIT).await?;
        let settle = Duration::from_millis(300);
        tokio::time::sleep(settle).await;
        let public = tunnel.public;
        let window = self.plan.fairness_probe;
        let measure = |bulk| async move {
            fairness::measure_fairness(&FairnessPlan::new(public, bulk, Probe::Tcp, window)).await
        };
        let idle = twice("fairness probe, tunnel idle", || measure(Bulk::None)).await;
        record_report(
            results,
            setup,
            &idle,
            &[
                (Metric::EchoIdleP50, |report| report.p50_ms),
                (Metric::EchoIdleP99, |report| report.p99_ms),
            ],
        );
        tokio::time::sleep(settle).await;
        let beside = twice("fairness probe beside a bulk upload", || {
            measure(Bulk::Upload)
        })
        .await;
        if let Ok(report) = &beside {
            eprintln!("    beside a bulk upload: {report}");
        }
        record_report(
            results,
            setup,
            &beside,
            &[
                (Metric::EchoBulkP50, |report| report.p50_ms),
                (Metric::EchoBulkP99, |report| report.p99_ms),
                (Metric::EchoBulkDone, FairnessReport::done_percent),
                (Metric::BulkBesideEcho, |report| report.bulk_gbit_s),
            ],
        );
        tunnel.check_alive()
    }

    /// One portal, one bridge process holding [`Plan::bridges`] bridges
    /// (a tunnel each): once every tunnel is up, the portal's RSS and its
    /// CPU while idle, then while serving one request per bridge per
    /// second (each on a new connection, so spread over the tunnels).
    async fn bridges_phase(
        &self,
        setup: SetupKind,
        dir: &Path,
        results: &mut Results,
    ) -> Result<()> {
        let count = self.plan.bridges;
        let (_web, web) = start_web(dir).await?;
        let (mut tunnel, tunnel_port) =
            start_many_bridges(setup, count, web.port(), self.programs, dir)?;
        wait_for_port(tunnel.public).await?;
        let started = Instant::now();
        let mut up = 0;
        while started.elapsed() < BRIDGES_LIMIT {
            tunnel.check_alive()?;
            up = established_on_port(tunnel_port)?;
            if up >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "    {up} of {count} tunnels up after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        if up == 0 {
            bail!("no tunnel of {count} bridges came up within {BRIDGES_LIMIT:?}");
        }
        if up < count {
            results.note(format!(
                "{} / {count} bridges: only {up} tunnels were up after {BRIDGES_LIMIT:?}",
                setup.title()
            ));
        }
        tokio::time::sleep(self.plan.bridges_settle).await;
        let percent = |ticks: u64, window: Duration| {
            100.0 * ticks as f64 / self.ticks_per_second / window.as_secs_f64()
        };
        let window = self.plan.bridges_idle_window;
        let before = tunnel.portal_cpu_ticks()?;
        let idle_started = Instant::now();
        tokio::time::sleep(window).await;
        let idle_ticks = tunnel.portal_cpu_ticks()?.saturating_sub(before);
        let rss_kib = tunnel.portal_rss_kib()?;
        record(
            results,
            setup,
            Metric::BridgesPortalRss,
            Ok(rss_kib as f64 / 1024.0),
        );
        record(
            results,
            setup,
            Metric::BridgesPortalCpuIdle,
            Ok(percent(idle_ticks, idle_started.elapsed())),
        );

        let window = self.plan.bridges_request_window;
        let rate = u32::try_from(count).unwrap_or(u32::MAX);
        let before = tunnel.portal_cpu_ticks()?;
        let load_started = Instant::now();
        let paced = workload::paced_requests(tunnel.public, rate, window).await;
        let load_ticks = tunnel.portal_cpu_ticks()?.saturating_sub(before);
        let elapsed = load_started.elapsed();
        let planned = (window.as_secs_f64() * f64::from(rate)).round() as usize;
        if paced.failed > 0 || paced.answered < planned * 9 / 10 {
            results.note(format!(
                "{} / {count} bridges at {rate} req/s: {} answered and {} failed of {planned} planned",
                setup.title(),
                paced.answered,
                paced.failed
            ));
        }
        let outcome = if paced.answered == 0 {
            Err(anyhow::anyhow!("no request of {planned} was answered"))
        } else {
            Ok(percent(load_ticks, elapsed))
        };
        record(results, setup, Metric::BridgesPortalCpuRequests, outcome);
        tunnel.check_alive()
    }

    async fn iperf_phase(&self, setup: SetupKind, dir: &Path, results: &mut Results) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let port = free_port();
        let port_text = port.to_string();
        let _server = Daemon::spawn(
            "iperf3 server",
            &self.tools.iperf3,
            &["-s", "-B", "127.0.0.1", "-p", &port_text].map(std::ffi::OsStr::new),
            &[],
            &dir.join("iperf3-server.log"),
        )?;
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        let mut tunnel = Tunnel::start(setup, port, self.programs, dir).await?;
        workload::wait_iperf_ready(self.tools, tunnel.public, READY_LIMIT).await?;
        // The probe's connections may still be closing through the tunnel,
        // and iperf3 refuses a test while it thinks the last one runs.
        tokio::time::sleep(Duration::from_millis(500)).await;

        let (iperf3, public, seconds) = (self.tools, tunnel.public, self.plan.iperf_seconds);
        let tunnel_ref = &tunnel;
        let one = twice("iperf3 1 stream", || async move {
            let before = if tunnel_ref.has_processes() {
                Some(tunnel_ref.cpu_ticks()?)
            } else {
                None
            };
            let run = workload::iperf(iperf3, public, seconds, 1).await?;
            let cpu_seconds = match before {
                Some(before) => Some(
                    tunnel_ref.cpu_ticks()?.saturating_sub(before) as f64 / self.ticks_per_second,
                ),
                None => None,
            };
            Ok((run, cpu_seconds))
        })
        .await;
        match one {
            Ok((run, cpu_seconds)) => {
                record(results, setup, Metric::Iperf1, Ok(run.gbits_per_second));
                if let Some(cpu_seconds) = cpu_seconds {
                    let gib = run.bytes as f64 / f64::from(1u32 << 30);
                    record(results, setup, Metric::CpuPerGiB, Ok(cpu_seconds / gib));
                }
            }
            Err(error) => {
                let why = format!("{error:#}");
                if tunnel.has_processes() {
                    record(
                        results,
                        setup,
                        Metric::CpuPerGiB,
                        Err(anyhow::anyhow!("no 1-stream run: {why}")),
                    );
                }
                record(results, setup, Metric::Iperf1, Err(error));
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let eight = twice("iperf3 8 streams", || {
            workload::iperf(iperf3, public, seconds, 8)
        })
        .await;
        record(
            results,
            setup,
            Metric::Iperf8,
            eight.map(|run| run.gbits_per_second),
        );
        tunnel.check_alive()
    }

    async fn http_phase(&self, setup: SetupKind, dir: &Path, results: &mut Results) -> Result<()> {
        let (_web, web) = start_web(dir).await?;
        let mut tunnel = Tunnel::start(setup, web.port(), self.programs, dir).await?;
        workload::wait_http_ready(tunnel.public, READY_LIMIT).await?;
        if tunnel.has_processes() {
            self.memory(setup, &tunnel, web, results).await?;
            // A tunnel may stumble over a thousand connections at once
            // (rathole's noise transport times handshakes out and drops its
            // control channel); measure the rest only once it carries a
            // request again.
            workload::wait_http_ready(tunnel.public, READY_LIMIT)
                .await
                .context("no request passed after the held connections closed")?;
        }
        let base = format!("http://{}", tunnel.public);
        let settle = Duration::from_millis(300);
        let workloads = [
            (Metric::HttpKeepAlive, "/1k", false),
            (Metric::HttpNewConnection, "/1k", true),
            (Metric::Http1MiB, "/1m", false),
        ];
        for (metric, path, close) in workloads {
            tokio::time::sleep(settle).await;
            let url = format!("{base}{path}");
            let seconds = self.plan.wrk_seconds;
            let run = twice(metric.label(), || {
                workload::wrk(self.tools, &url, seconds, close)
            })
            .await;
            if let Ok(run) = &run {
                if run.socket_errors > 0 || run.non_2xx > 0 {
                    results.note(format!(
                        "{} / {}: wrk saw {} socket errors and {} non-2xx responses in {} requests",
                        setup.title(),
                        metric.label(),
                        run.socket_errors,
                        run.non_2xx,
                        run.requests
                    ));
                }
            }
            record(
                results,
                setup,
                metric,
                run.map(|run| run.requests_per_second),
            );
        }
        tokio::time::sleep(settle).await;
        let url = format!("{base}/1k");
        let count = self.plan.first_byte_requests;
        match twice("first byte", || {
            workload::first_bytes(self.tools, &url, count)
        })
        .await
        {
            Ok(first) => {
                if first.failed > 0 || first.reused > 0 {
                    results.note(format!(
                        "{} / first byte: {} of {} requests failed and {} reused a connection (not counted)",
                        setup.title(),
                        first.failed,
                        self.plan.first_byte_requests,
                        first.reused
                    ));
                }
                let median = report::median(&first.samples_ms).context("no samples");
                let p99 = report::percentile(&first.samples_ms, 99.0).context("no samples");
                record(results, setup, Metric::FirstByteMedian, median);
                record(results, setup, Metric::FirstByteP99, p99);
            }
            Err(error) => {
                let why = format!("{error:#}");
                record(
                    results,
                    setup,
                    Metric::FirstByteMedian,
                    Err(anyhow::anyhow!(why.clone())),
                );
                record(
                    results,
                    setup,
                    Metric::FirstByteP99,
                    Err(anyhow::anyhow!(why)),
                );
            }
        }
        tunnel.check_alive()
    }

    /// RSS of the idle tunnel, then with `held_connections` idle
    /// connections through it: the difference per connection.
    async fn memory(
        &self,
        setup: SetupKind,
        tunnel: &Tunnel,
        web: SocketAddr,
        results: &mut Results,
    ) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle_kib = tunnel.rss_kib()?;
        record(
            results,
            setup,
            Metric::RssIdle,
            Ok(idle_kib as f64 / 1024.0),
        );
        let count = self.plan.held_connections;
        let holding = Instant::now();
        let held =
            workload::hold_connections(tunnel.public, web, count, Duration::from_secs(120)).await;
        if let Ok(held) = &held {
            eprintln!(
                "    {} of {count} held connections reached the backend in {:.1} s",
                held.reached,
                holding.elapsed().as_secs_f64()
            );
        }
        let per_connection = match held {
            Ok(held) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let held_kib = tunnel.rss_kib()?;
                let reached = held.reached;
                if reached < count {
                    results.note(format!(
                        "{} / held connections: only {reached} of {count} reached the backend within 120 s",
                        setup.title()
                    ));
                }
                held.release(web, Duration::from_secs(30)).await?;
                if reached == 0 {
                    Err(anyhow::anyhow!(
                        "none of {count} held connections reached the backend"
                    ))
                } else {
                    Ok((held_kib as f64 - idle_kib as f64) / reached as f64)
                }
            }
            Err(error) => Err(error),
        };
        record(results, setup, Metric::RssPerConnection, per_connection);
        Ok(())
    }
}

/// Starts the web server (`cargo xtask web`) as a process of its own on a
/// fresh port, logging into `dir`: its own process, so that the
/// connections held through a tunnel count against its file limit, not
/// the benchmark's; a fresh port per phase, so that the tens of thousands
/// of connections an earlier phase left in TIME_WAIT toward the last one
/// do not run the bridge's ephemeral ports out.
async fn start_web(dir: &Path) -> Result<(Daemon, SocketAddr)> {
    std::fs::create_dir_all(dir)?;
    let port = free_port();
    let server = Daemon::spawn(
        "web server",
        &std::env::current_exe()?,
        &[OsStr::new("web"), OsStr::new(&port.to_string())],
        &[],
        &dir.join("web.log"),
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_port(addr).await?;
    Ok((server, addr))
}

/// Runs `attempt`, and once more after a pause if it fails: one failure
/// on a busy shared machine does not yet mean that a setup does not work.
async fn twice<T, F, Fut>(label: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    match attempt().await {
        Ok(value) => Ok(value),
        Err(first) => {
            eprintln!("    {label} failed ({first:#}); trying once more");
            tokio::time::sleep(Duration::from_secs(1)).await;
            attempt()
                .await
                .map_err(|second| second.context(format!("after a first failure ({first:#})")))
        }
    }
}

/// iperf3, wrk and curl: found on PATH, or installed with apt-get when
/// running as root.
async fn ensure_tools() -> Result<Tools> {
    const PACKAGES: [&str; 3] = ["iperf3", "wrk", "curl"];
    let missing: Vec<&str> = PACKAGES
        .into_iter()
        .filter(|tool| which(tool).is_none())
        .collect();
    if !missing.is_empty() {
        if !system::is_root() {
            bail!(
                "the benchmark needs {}; install with `sudo apt-get install -y iperf3 wrk curl`",
                missing.join(", ")
            );
        }
        eprintln!("bench: installing {} with apt-get", missing.join(", "));
        let envs = [("DEBIAN_FRONTEND", "noninteractive")];
        let limit = Duration::from_secs(600);
        let mut install = vec!["install", "-y", "--no-install-recommends"];
        install.extend(&missing);
        if !run_visible("apt-get", &install, &envs, limit).await? {
            // A fresh machine may have no package lists yet.
            run_visible("apt-get", &["update"], &envs, limit).await?;
            if !run_visible("apt-get", &install, &envs, limit).await? {
                bail!("apt-get could not install {}", missing.join(", "));
            }
        }
    }
    let find = |tool: &str| which(tool).with_context(|| format!("{tool} is still not on PATH"));
    Ok(Tools {
        iperf3: find("iperf3")?,
        wrk: find("wrk")?,
        curl: find("curl")?,
    })
}

/// `cargo build --release -p bridge -p portal`; returns the binaries' folder.
async fn build_rayback(root: &Path, dev_build: bool) -> Result<PathBuf> {
    let profile = if dev_build {
        "--profile=dev"
    } else {
        "--release"
    };
    eprintln!("bench: cargo build {profile} -p bridge -p portal");
    let built = run_visible(
        env!("CARGO"),
        &[
            "build",
            profile,
            "--quiet",
            "-p",
            "bridge",
            "-p",
            "portal",
            "--manifest-path",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain([root.join("Cargo.toml").display().to_string()])
        .collect::<Vec<_>>(),
        &[],
        Duration::from_secs(1800),
    )
    .await?;
    if !built {
        bail!("building the release bridge and portal failed");
    }
    let dir = root.join(if dev_build {
        "target/debug"
    } else {
        "target/release"
    });
    for name in ["bridge", "portal"] {
        if !is_executable(&dir.join(name)) {
            bail!("{} is missing after the build", dir.join(name).display());
        }
    }
    Ok(dir)
}

/// rathole on PATH or in cargo's bin folder; in a full run, installed from
/// crates.io when missing. `Ok(None)` when it is not to be had.
async fn find_or_install_rathole(quick: bool) -> Result<Option<PathBuf>> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin/rathole"));
    let find = || which("rathole").or_else(|| cargo_bin.clone().filter(|path| is_executable(path)));
    if let Some(path) = find() {
        return Ok(Some(path));
    }
    if quick {
        return Ok(None);
    }
    eprintln!(
        "bench: rathole is not installed; trying `cargo install --locked rathole` (a few minutes)"
    );
    let limit = Duration::from_secs(1800);
    let mut installed =
        run_visible("cargo", &["install", "--locked", "rathole"], &[], limit).await?;
    if !installed {
        // rathole 0.5.0's lock file pins crates (`time` 0.3.29) that newer
        // compilers reject; the registry's current compatible ones build.
        eprintln!("bench: the locked build failed; trying `cargo install rathole`");
        installed = run_visible("cargo", &["install", "rathole"], &[], limit).await?;
    }
    Ok(if installed { find() } else { None })
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info
                .lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))?;
            line.split_whitespace().next()?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!(
        "{cores} cores, {}, {memory_gib:.1} GiB RAM, Linux {}",
        system::cpu_model(),
        kernel.trim()
    )
}

fn versions(tools: &Tools, programs: &Programs, root: &Path) -> Vec<(String, String)> {
    let mut versions = Vec::new();
    if programs.rayback.is_some() {
        let git = |args: &[&str]| first_line_of(Path::new("git"), args);
        let commit = git(&[
            "-C",
            &root.display().to_string(),
            "rev-parse",
            "--short",
            "HEAD",
        ]);
        // --no-optional-locks: reading status must not rewrite the index.
        let dirty = std::process::Command::new("git")
            .args([
                "--no-optional-locks",
                "-C",
                &root.display().to_string(),
                "status",
                "--porcelain",
                "--untracked-files=no",
            ])
            .output()
            .is_ok_and(|output| !output.stdout.is_empty());
        let rustc = first_line_of(Path::new("rustc"), &["--version"]);
        versions.push((
            "Rayback".to_owned(),
            format!(
                "commit {commit}{}, release build ({rustc})",
                if dirty { " with local changes" } else { "" }
            ),
        ));
    }
    versions.push((
        "v2ray".to_owned(),
        first_line_of(&programs.v2ray, &["version"]),
    ));
    if let Some(rathole) = &programs.rathole {
        // `rathole --version` prints its name alone first, then the details.
        let output = std::process::Command::new(rathole)
            .arg("--version")
            .output();
        let version = output
            .ok()
            .and_then(|output| {
                let text = String::from_utf8_lossy(&output.stdout).into_owned();
                let line = text
                    .lines()
                    .find_map(|line| line.trim().strip_prefix("Build Version:"))?;
                Some(format!("rathole {}", line.trim()))
            })
            .unwrap_or_else(|| first_line_of(rathole, &["--version"]));
        versions.push(("rathole".to_owned(), version));
    }
    // The load tools' first lines go on about build options: name and
    // version are enough.
    let short = |line: String| {
        line.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    versions.push((
        "iperf3".to_owned(),
        short(first_line_of(&tools.iperf3, &["--version"])),
    ));
    versions.push(("wrk".to_owned(), short(first_line_of(&tools.wrk, &["-v"]))));
    versions.push((
        "curl".to_owned(),
        short(first_line_of(&tools.curl, &["--version"])),
    ));
    versions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_default_to_three_full_runs_or_one_quick_one() {
        let full = Options::parse(&[]).expect("no arguments");
        assert_eq!((full.quick, full.runs, full.only), (false, 3, None));
        let quick = Options::parse(&args("--quick")).expect("quick");
        assert_eq!((quick.quick, quick.runs), (true, 1));
        let both =
            Options::parse(&args("--quick --runs 2 --only direct,v2ray")).expect("all flags");
        assert_eq!(both.runs, 2);
        assert_eq!(both.only, Some(vec![SetupKind::Direct, SetupKind::V2Ray]));
        assert!(both.wants(SetupKind::V2Ray) && !both.wants(SetupKind::Rayback));
    }

    #[test]
    fn quick_leaves_out_ws_tls_unless_named() {
        let full = Options::parse(&[]).expect("no arguments");
        assert!(SetupKind::ALL.into_iter().all(|kind| full.wants(kind)));
        let quick = Options::parse(&args("--quick --dev-build")).expect("quick");
        assert!(quick.wants(SetupKind::Rayback) && quick.wants(SetupKind::V2Ray));
        assert!(!quick.wants(SetupKind::RaybackWsTls) && !quick.wants(SetupKind::V2RayWsTls));
        let named = Options::parse(&args("--quick --only rayback-wstls,v2ray-wstls"))
            .expect("ws+tls named");
        assert_eq!(
            named.only,
            Some(vec![SetupKind::RaybackWsTls, SetupKind::V2RayWsTls])
        );
        assert!(named.wants(SetupKind::RaybackWsTls) && named.wants(SetupKind::V2RayWsTls));
        assert!(!named.wants(SetupKind::Rayback));
    }

    #[test]
    fn bad_options_are_refused_with_the_bad_value() {
        for (line, expected) in [
            ("--runs", "needs a number"),
            ("--runs 0", "\"0\""),
            ("--runs many", "\"many\""),
            ("--only direct,xray", "\"xray\""),
            ("--fast", "\"--fast\""),
        ] {
            let error = Options::parse(&args(line)).expect_err(line);
            assert!(format!("{error:#}").contains(expected), "{line}: {error:#}");
        }
    }
}
