//! Running a configuration: bind the listeners, start the bridges, serve
//! until a signal, then stop accepting and give open connections a
//! bounded grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rayback_config::Config;
use rayback_core::{Inbound, InboundContext};
use rayback_handlers::DokodemoDoor;
use rayback_reverse::{Bridge, Portal};
use rayback_vmess::VmessInbound;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::AccessLog;
use crate::build::{build, InboundPlan};
use crate::dispatcher::Dispatcher;

/// How long open connections may take to finish after a stop signal.
pub const GRACE: Duration = Duration::from_secs(10);

/// A started configuration.
pub struct Running {
    shutdown: CancellationToken,
    tracker: TaskTracker,
    listeners: Vec<(String, SocketAddr)>,
    bridges: Vec<Arc<Bridge>>,
    portals: Vec<Arc<Portal>>,
    dispatcher: Arc<Dispatcher>,
}

impl Running {
    /// Where each inbound listens: `(its place in the config, address)`.
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    pub fn bridges(&self) -> &[Arc<Bridge>] {
        &self.bridges
    }

    pub fn portals(&self) -> &[Arc<Portal>] {
        &self.portals
    }

    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }

    /// Stops accepting, then waits up to `grace` for open connections.
    /// Returns whether every connection finished in time.
    pub async fn stop(self, grace: Duration) -> bool {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// Builds and starts `config` on the current runtime: every listener is
/// bound before this returns (a taken port is an error here).
pub async fn start(config: &Config) -> Result<Running> {
    let access = AccessLog::open(&config.log.access).context("opening the access log")?;
    let built = build(config, access)?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let context = InboundContext {
        dispatch: built.dispatcher.clone(),
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    };
    let mut inbounds: Vec<Arc<dyn Inbound>> = Vec::new();
    let mut listeners = Vec::new();
    for (place, plan) in built.inbounds {
        match plan {
            InboundPlan::Dokodemo(settings) => {
                let listen = settings.listen;
                let door = DokodemoDoor::bind(settings)
                    .await
                    .with_context(|| format!("{place}: listening on {listen}"))?;
                listeners.push((place, door.local_addr()));
                inbounds.push(Arc::new(door));
            }
            InboundPlan::Vmess(settings) => {
                let listen = settings.listen;
                let vmess = VmessInbound::bind(settings, built.vmess_metrics.clone())
                    .await
                    .with_context(|| format!("{place}: listening on {listen}"))?;
                listeners.push((place, vmess.local_addr()));
                inbounds.push(Arc::new(vmess));
            }
        }
    }
    for inbound in inbounds {
        let context = context.clone();
        tokio::spawn(async move {
            if let Err(error) = inbound.run(context).await {
                tracing::error!("an inbound stopped: {error}");
            }
        });
    }
    let mut bridges = Vec::new();
    for settings in built.bridges {
        let bridge = Arc::new(Bridge::new(
            settings,
            built.dispatcher.clone(),
            tracker.clone(),
        ));
        tokio::spawn(bridge.clone().run(shutdown.clone()));
        bridges.push(bridge);
    }
    for (place, addr) in &listeners {
        tracing::info!("{place} listening on {addr}");
    }
    Ok(Running {
        shutdown,
        tracker,
        listeners,
        bridges,
        portals: built.portals,
        dispatcher: built.dispatcher,
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// The binaries' main loop: logging, a runtime, start, wait, stop.
pub fn run_until_signal(config: Config, json_logs: bool) -> Result<()> {
    crate::logging::init(&config.log, json_logs)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let running = start(&config).await?;
        stop_signal().await?;
        tracing::info!("stopping: no new connections; waiting up to {GRACE:?} for open ones");
        if !running.stop(GRACE).await {
            tracing::warn!("some connections were still open after {GRACE:?}; closing them");
        }
        Ok(())
    })
}
