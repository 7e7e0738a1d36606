//! Running a configuration: bind the listeners, start the bridges, serve
//! until a signal, reload on SIGHUP, then drain: `/ready` turns 503 at
//! once while everything keeps serving for `rayback.drainDelay` (a second
//! SIGTERM/SIGINT cuts the delay short), then stop accepting and give open
//! connections a bounded grace period.
//!
//! A reload builds the new configuration beside the running one and swaps
//! the dispatcher that inbounds and bridges reach through
//! [`SharedDispatch`]. What did not change keeps running: listeners of
//! unchanged inbounds, bridges (and their tunnel connections), portals
//! (and the tunnels they adopted), outbounds. Listeners and bridges that
//! changed are replaced; sessions already open finish on what they started
//! with.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use rayback_config::Config;
use rayback_core::{Dispatch, Inbound, InboundContext};
use rayback_handlers::DokodemoDoor;
use rayback_reverse::{Bridge, Portal};
use rayback_vmess::VmessInbound;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::AccessLog;
use crate::build::{build, BridgePlan, InboundGroup, InboundPlan, Kept};
use crate::dispatcher::{Dispatcher, SharedDispatch};
use crate::endpoint::Published;
use crate::metrics::Metrics;
use crate::sniff::SniffingDispatch;

/// How long open connections may take to finish after a stop signal.
pub const GRACE: Duration = Duration::from_secs(10);

/// One configured inbound's listeners.
struct RunningInbound {
    config: rayback_config::Inbound,
    place: String,
    addrs: Vec<SocketAddr>,
    /// Stops this inbound's listeners only (a reload that drops it).
    stop: CancellationToken,
}

struct RunningBridge {
    config: rayback_config::Bridge,
    bridge: Arc<Bridge>,
    stop: CancellationToken,
}

/// What changed in a reload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub inbounds_kept: usize,
    pub inbounds_started: usize,
    pub inbounds_stopped: usize,
    pub bridges_kept: usize,
    pub bridges_started: usize,
    pub bridges_stopped: usize,
}

/// A started configuration.
pub struct Running {
    shutdown: CancellationToken,
    tracker: TaskTracker,
    shared: Arc<SharedDispatch>,
    inbounds: Vec<RunningInbound>,
    bridges: Vec<RunningBridge>,
    portals: Vec<Arc<Portal>>,
    kept: Kept,
    metrics_endpoint: Option<SocketAddr>,
    /// What the metrics endpoint reads; replaced on reload.
    published: Arc<RwLock<Published>>,
    /// `rayback.metricsAuth`, published with the rest (a reload's new
    /// credentials apply to the next request).
    metrics_auth: Option<rayback_config::MetricsAuth>,
}

impl Running {
    /// Where each inbound listens: `(its place in the config, address)`.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.inbounds
            .iter()
            .flat_map(|inbound| {
                inbound
                    .addrs
                    .iter()
                    .map(|addr| (inbound.place.clone(), *addr))
            })
            .collect()
    }

    pub fn bridges(&self) -> Vec<Arc<Bridge>> {
        self.bridges
            .iter()
            .map(|running| running.bridge.clone())
            .collect()
    }

    pub fn portals(&self) -> &[Arc<Portal>] {
        &self.portals
    }

    pub fn dispatcher(&self) -> Arc<Dispatcher> {
        self.shared.current()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.kept.metrics
    }

    /// Where `/metrics` and `/status` are served, when configured.
    pub fn metrics_endpoint(&self) -> Option<SocketAddr> {
        self.metrics_endpoint
    }

    /// The Prometheus text of this process now.
    pub fn prometheus(&self) -> String {
        crate::metrics::prometheus(&self.snapshot().sources())
    }

    fn snapshot(&self) -> Published {
        Published {
            metrics: self.kept.metrics.clone(),
            vmess: self.kept.vmess_metrics.clone(),
            bridges: self.bridges(),
            portals: self.portals.clone(),
            auth: self.metrics_auth.clone(),
        }
    }

    /// Applies a new configuration; see the module docs for what is kept.
    /// On error nothing changed.
    pub async fn reload(&mut self, config: &Config) -> Result<ReloadSummary> {
        let access = AccessLog::open(&config.log.access).context("opening the access log")?;
        let built = build(config, access, &self.kept)?;
        let mut summary = ReloadSummary::default();

        // Bind what is new before touching what runs, so a taken port
        // fails the reload as a whole.
        let mut kept_inbounds = Vec::new();
        let mut new_groups = Vec::new();
        let mut old = std::mem::take(&mut self.inbounds);
        for group in built.inbounds {
            match old
                .iter()
                .position(|running| running.config == group.config)
            {
                Some(index) => kept_inbounds.push(old.swap_remove(index)),
                None => new_groups.push(group),
            }
        }
        let mut started = Vec::new();
        for group in new_groups {
            // Listeners of an inbound being replaced may hold its port:
            // stop those first.
            if let Some(index) = old.iter().position(|running| {
                running.config.tag == group.config.tag || running.config.port == group.config.port
            }) {
                let replaced = old.swap_remove(index);
                replaced.stop.cancel();
                summary.inbounds_stopped += 1;
                tokio::task::yield_now().await;
            }
            match bind_group(group, &self.shared, &self.shutdown, &self.tracker).await {
                Ok(running) => started.push(running),
                Err(error) => {
                    for running in started {
                        running.stop.cancel();
                    }
                    self.inbounds = kept_inbounds;
                    self.inbounds.append(&mut old);
                    return Err(error);
                }
            }
        }
        for running in old {
            running.stop.cancel();
            summary.inbounds_stopped += 1;
        }
        summary.inbounds_kept = kept_inbounds.len();
        summary.inbounds_started = started.len();
        self.inbounds = kept_inbounds;
        self.inbounds.append(&mut started);

        self.shared.replace(built.dispatcher);

        let mut old_bridges = std::mem::take(&mut self.bridges);
        for plan in built.bridges {
            match old_bridges
                .iter()
                .position(|running| running.config == plan.config)
            {
                Some(index) => {
                    self.bridges.push(old_bridges.swap_remove(index));
                    summary.bridges_kept += 1;
                }
                None => {
                    self.bridges.push(start_bridge(
                        plan,
                        &self.shared,
                        &self.shutdown,
                        &self.tracker,
                    ));
                    summary.bridges_started += 1;
                }
            }
        }
        for running in old_bridges {
            running.stop.cancel();
            summary.bridges_stopped += 1;
        }
        self.portals = built.portals;
        self.kept = built.kept;
        self.metrics_auth = config.rayback.metrics_auth.clone();
        *self.published.write().expect("not poisoned") = self.snapshot();
        Ok(summary)
    }

    /// Marks the process as draining: `/ready` answers 503 from now on,
    /// while listeners, bridges and portals keep serving.
    pub fn start_draining(&self) {
        self.kept.metrics.start_draining();
    }

    /// Stops accepting, then waits up to `grace` for open connections.
    /// Returns whether every connection finished in time.
    pub async fn stop(self, grace: Duration) -> bool {
        self.shutdown.cancel();
        for portal in &self.portals {
            portal.close_when_idle();
        }
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// Binds every listener of one configured inbound and starts accepting.
async fn bind_group(
    group: InboundGroup,
    shared: &Arc<SharedDispatch>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<RunningInbound> {
    let stop = shutdown.child_token();
    let mut inbounds: Vec<Arc<dyn Inbound>> = Vec::new();
    let mut addrs = Vec::new();
    for plan in group.plans {
        match plan {
            InboundPlan::Dokodemo(settings, transport) => {
                let listen = settings.listen;
                let door = DokodemoDoor::bind(settings)
                    .await
                    .with_context(|| format!("{}: listening on {listen}", group.place))?
                    .with_transport(transport);
                addrs.push(door.local_addr());
                inbounds.push(Arc::new(door));
            }
            InboundPlan::Vmess(settings, metrics, unauthenticated_limit) => {
                let listen = settings.listen;
                let vmess = VmessInbound::bind(settings, metrics)
                    .await
                    .with_context(|| format!("{}: listening on {listen}", group.place))?
                    .with_unauthenticated_limit(unauthenticated_limit);
                addrs.push(vmess.local_addr());
                inbounds.push(Arc::new(vmess));
            }
            InboundPlan::Vless(settings, unauthenticated_limit) => {
                let listen = settings.listen;
                let vless = rayback_vless::VlessInbound::bind(
                    settings,
                    rayback_vless::VlessMetrics::process(),
                )
                .await
                .with_context(|| format!("{}: listening on {listen}", group.place))?
                .with_unauthenticated_limit(unauthenticated_limit);
                addrs.push(vless.local_addr());
                inbounds.push(Arc::new(vless));
            }
            InboundPlan::Socks(settings, transport) => {
                let listen = settings.listen;
                let socks = rayback_handlers::SocksInbound::bind(settings)
                    .await
                    .with_context(|| format!("{}: listening on {listen}", group.place))?
                    .with_transport(transport);
                addrs.push(socks.local_addr());
                inbounds.push(Arc::new(socks));
            }
            InboundPlan::Http(settings, transport) => {
                let listen = settings.listen;
                let http = rayback_handlers::HttpInbound::bind(settings)
                    .await
                    .with_context(|| format!("{}: listening on {listen}", group.place))?
                    .with_transport(transport);
                addrs.push(http.local_addr());
                inbounds.push(Arc::new(http));
            }
        }
    }
    let dispatch: Arc<dyn Dispatch> = match &group.config.sniffing {
        Some(sniffing) => SniffingDispatch::new(shared.clone(), sniffing.clone()),
        None => shared.clone(),
    };
    for inbound in inbounds {
        let context = InboundContext {
            dispatch: dispatch.clone(),
            shutdown: stop.clone(),
            tracker: tracker.clone(),
        };
        tokio::spawn(async move {
            if let Err(error) = inbound.run(context).await {
                tracing::error!("an inbound stopped: {error}");
            }
        });
    }
    for addr in &addrs {
        tracing::info!("{} listening on {addr}", group.place);
    }
    Ok(RunningInbound {
        config: group.config,
        place: group.place,
        addrs,
        stop,
    })
}

fn start_bridge(
    plan: BridgePlan,
    shared: &Arc<SharedDispatch>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> RunningBridge {
    let stop = shutdown.child_token();
    let bridge = Arc::new(Bridge::new(plan.settings, shared.clone(), tracker.clone()));
    tokio::spawn(bridge.clone().run(stop.clone()));
    RunningBridge {
        config: plan.config,
        bridge,
        stop,
    }
}

/// Builds and starts `config` on the current runtime: every listener is
/// bound before this returns (a taken port is an error here).
pub async fn start(config: &Config) -> Result<Running> {
    let access = AccessLog::open(&config.log.access).context("opening the access log")?;
    let built = build(config, access, &Kept::default())?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let shared = Arc::new(SharedDispatch::new(built.dispatcher));
    let mut inbounds = Vec::new();
    for group in built.inbounds {
        inbounds.push(bind_group(group, &shared, &shutdown, &tracker).await?);
    }
    let bridges = built
        .bridges
        .into_iter()
        .map(|plan| start_bridge(plan, &shared, &shutdown, &tracker))
        .collect();
    let mut running = Running {
        shutdown,
        tracker,
        shared,
        inbounds,
        bridges,
        portals: built.portals,
        kept: built.kept,
        metrics_endpoint: None,
        published: Arc::new(RwLock::new(Published::default())),
        metrics_auth: config.rayback.metrics_auth.clone(),
    };
    *running.published.write().expect("not poisoned") = running.snapshot();
    if let Some(addr) = config.rayback.metrics {
        let endpoint =
            crate::endpoint::serve(addr, running.published.clone(), running.shutdown.clone())
                .await?;
        running.metrics_endpoint = Some(endpoint);
    }
    Ok(running)
}

/// What the run loop waits for.
enum Signal {
    Stop,
    Reload,
}

/// The signals the run loop listens to, registered once at start so that
/// none arriving between two waits is lost.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
                hangup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// The next signal. Cancelling it loses nothing: a signal that comes
    /// later is seen by the next call.
    async fn next(&mut self) -> Result<Signal> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Ok(Signal::Stop),
                _ = self.terminate.recv() => Ok(Signal::Stop),
                _ = self.hangup.recv() => Ok(Signal::Reload),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await?;
            Ok(Signal::Stop)
        }
    }
}

/// Tasks a runtime thread polls between two looks at its sockets and
/// timers (tokio's default: 61). A relay task moves up to 60 KiB per poll,
/// so at 61 a socket that became readable beside a bulk transfer waited
/// for about 61 such polls (several ms) before anyone noticed: a 1 KiB
/// echo beside a bulk upload on one tunnel, one thread, dev build, p50
/// 12.1–12.9 ms at 61, 5.4–7.3 ms at 8, 4.6–5.4 ms at 4
/// (`battery_fairness`); a look costs one non-blocking `epoll_wait`.
const EVENT_INTERVAL: u32 = 8;

/// The runtime for `workers` threads (`rayback.workers`). 0 = automatic:
/// one thread per CPU, except on machines with one or two CPUs, where a
/// single thread runs everything. There a tunnel shares its CPUs with the
/// kernel's network stack and the services beside it, and handing work
/// between threads (futex and eventfd wake-ups: 8,000 futex calls per
/// 2 GiB through a two-thread bridge, strace) costs more than a second
/// thread gains; see BENCHMARKS.md for the measurements.
fn runtime(workers: u32) -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = match workers {
        0 if cpus <= 2 => 1,
        0 => cpus,
        n => n as usize,
    };
    tracing::debug!(threads, cpus, "starting the runtime");
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .event_interval(EVENT_INTERVAL)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .event_interval(EVENT_INTERVAL)
            .enable_all()
            .build()
    }
}

/// Keeps glibc's allocator from returning memory to the kernel after every
/// burst. A tunnel frees and reallocates 64–256 KiB buffers at its data
/// rate; with glibc's adaptive thresholds that became a `brk` shrink and
/// grow per frame (13,000 `brk` calls per 2 GiB through a bridge, strace).
/// Fixed thresholds keep up to 2 MiB of freed memory for reuse. And a trim
/// leaves 2 MiB at the top of the heap (the default leaves 128 KiB): a
/// bridge receiving bulk data frees a few MiB of read buffers at once and
/// allocates them again a moment later, and each trim down to 128 KiB made
/// those pages fault in afresh (98,000 faults in 3 s of `iperf3` through a
/// bridge, 1,200 with the pad; `perf stat -e page-faults`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // the runtime starts its threads, and a refused value changes nothing.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * 1024 * 1024);
        libc::mallopt(libc::M_TOP_PAD, 2 * 1024 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// Raises the soft limit on open files to the hard limit, as Go programs
/// (v2ray among them) do at start: every tunnelled connection costs one
/// descriptor on each side, and a soft limit of 1024 would refuse
/// connections long before the machine runs short.
#[cfg(unix)]
#[allow(unsafe_code)]
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we pass;
    // a failure leaves the limit as it was.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let soft = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                tracing::debug!(
                    from = soft,
                    to = limit.rlim_max,
                    "raised the open file limit"
                );
            }
        }
    }
}

#[cfg(not(unix))]
fn raise_open_file_limit() {}

/// Loads the configuration again (for SIGHUP): the binaries pass a closure
/// that re-reads the files they were given.
pub type Loader = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// The binaries' main loop without reload: logging, a runtime, start, wait
/// for SIGINT/SIGTERM, stop.
pub fn run_until_signal(config: Config, json_logs: bool) -> Result<()> {
    run_with_reload(config, json_logs, None)
}

/// The binaries' main loop: logging, a runtime, start; SIGHUP reloads
/// through `loader` (a failed reload is logged and the old configuration
/// stays); SIGINT/SIGTERM drain for `rayback.drainDelay` (a second one
/// ends the delay early), then stop with a grace period.
pub fn run_with_reload(config: Config, json_logs: bool, loader: Option<Loader>) -> Result<()> {
    crate::logging::init(&config.log, json_logs)?;
    tune_allocator();
    raise_open_file_limit();
    let runtime = runtime(config.rayback.workers).context("starting the runtime")?;
    runtime.block_on(async {
        let mut signals = Signals::new().context("listening for signals")?;
        let mut running = start(&config).await?;
        // The delay of the configuration now running (a reload may change it).
        let mut drain_delay = config.rayback.drain_delay;
        loop {
            match signals.next().await? {
                Signal::Stop => break,
                Signal::Reload => {
                    reload(&mut running, loader.as_ref(), &config, &mut drain_delay).await;
                }
            }
        }
        running.start_draining();
        tracing::info!(
            "draining: /ready answers 503; serving on for {drain_delay:?}, then stopping \
             (a second SIGTERM/SIGINT stops at once)"
        );
        let delay = tokio::time::sleep(drain_delay);
        tokio::pin!(delay);
        loop {
            tokio::select! {
                () = &mut delay => break,
                signal = signals.next() => match signal? {
                    Signal::Stop => {
                        tracing::info!("a second stop signal: ending the drain delay early");
                        break;
                    }
                    // Still serving: a reload applies as it would before
                    // (the delay already running is kept).
                    Signal::Reload => {
                        let mut ignored = drain_delay;
                        reload(&mut running, loader.as_ref(), &config, &mut ignored).await;
                    }
                },
            }
        }
        tracing::info!("stopping: no new connections; waiting up to {GRACE:?} for open ones");
        if !running.stop(GRACE).await {
            tracing::warn!("some connections were still open after {GRACE:?}; closing them");
        }
        Ok(())
    })
}

/// One SIGHUP: loads the files again through `loader` and applies them;
/// a failure is logged and the running configuration stays. On success
/// `drain_delay` takes the new configuration's value.
async fn reload(
    running: &mut Running,
    loader: Option<&Loader>,
    started_with: &Config,
    drain_delay: &mut Duration,
) {
    let Some(loader) = loader else {
        tracing::warn!("SIGHUP: this process was not started from files; nothing to reload");
        return;
    };
    let reloaded = match loader() {
        Ok(reloaded) => {
            if reloaded.rayback.workers != started_with.rayback.workers {
                tracing::warn!("rayback.workers changed; it takes effect at the next start");
            }
            match running.reload(&reloaded).await {
                Ok(summary) => {
                    *drain_delay = reloaded.rayback.drain_delay;
                    Ok(summary)
                }
                Err(error) => Err(format!("{error:#}")),
            }
        }
        Err(error) => Err(error),
    };
    match reloaded {
        Ok(summary) => tracing::info!(?summary, "configuration reloaded"),
        Err(error) => {
            tracing::error!("reload failed, keeping the running configuration: {error}")
        }
    }
}
