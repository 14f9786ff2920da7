//! Process lifecycle: the two runtimes, startup, signals, reload and graceful shutdown.
//!
//! - The **latency runtime** (`workers` threads named `muninn-lat-N`) runs the listeners and
//!   answers queries. Nothing slow may run there.
//! - The **heavy-job runtime** (`heavy_workers` threads named `muninn-heavy-N`, at a lower
//!   CPU priority) runs zone parsing, validation and snapshot building.
//!
//! One root [`CancellationToken`] is cancelled exactly once, on SIGTERM/SIGINT; every
//! long-lived task holds a child token and is spawned through one [`TaskTracker`], so
//! shutdown is: cancel, close the tracker, wait for it (bounded by the grace period).
//!
//! SIGHUP requests a zone reload. Requests are coalesced with a [`Notify`]: at most one
//! reload runs and at most one more is pending, however many signals arrive.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError, LogConfig, LogFormat, Overrides, RuntimeConfig};
use crate::handler::Handler;
use crate::reload::{LoadReport, ReloadError, ZoneLoader, log_report};
use crate::zone::ZoneSet;
use crate::{server, sys};

/// Prefix of latency worker thread names.
pub const LATENCY_THREAD_PREFIX: &str = "muninn-lat-";
/// Prefix of heavy-job thread names.
pub const HEAVY_THREAD_PREFIX: &str = "muninn-heavy-";

/// Why the server could not start (once started, it only stops on a signal).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start the {0} runtime: {1}")]
    Runtime(&'static str, std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("initial zone load failed: {0}")]
    InitialLoad(#[from] ReloadError),
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
}

/// The latency runtime and the heavy-job runtime.
pub struct Runtimes {
    pub latency: Runtime,
    pub heavy: Runtime,
}

impl Runtimes {
    pub fn build(config: &RuntimeConfig) -> Result<Runtimes, ServeError> {
        let latency = Builder::new_multi_thread()
            .worker_threads(config.effective_workers())
            .thread_name_fn(numbered(LATENCY_THREAD_PREFIX))
            .enable_all()
            .build()
            .map_err(|e| ServeError::Runtime("latency", e))?;
        let nice = config.heavy_nice;
        let heavy = Builder::new_multi_thread()
            .worker_threads(config.heavy_workers.max(1))
            .thread_name_fn(numbered(HEAVY_THREAD_PREFIX))
            .on_thread_start(move || {
                // Heavy jobs must leave the CPU to query answering when both compete.
                if let Err(e) = sys::lower_thread_priority(nice) {
                    warn!("cannot lower heavy-job thread priority to nice {nice}: {e}");
                }
            })
            .enable_all()
            .build()
            .map_err(|e| ServeError::Runtime("heavy-job", e))?;
        Ok(Runtimes { latency, heavy })
    }

    /// Stops both runtimes without waiting for tasks that ignore cancellation.
    pub fn shutdown(self) {
        self.heavy.shutdown_background();
        self.latency.shutdown_timeout(Duration::from_millis(100));
    }
}

fn numbered(prefix: &'static str) -> impl Fn() -> String + Send + Sync + 'static {
    let next = AtomicUsize::new(0);
    move || format!("{prefix}{}", next.fetch_add(1, Ordering::Relaxed))
}

/// True on a heavy-job runtime thread.
pub fn on_heavy_thread() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with(HEAVY_THREAD_PREFIX))
}

/// Installs the global log subscriber: RUST_LOG when set and valid, else the config level.
pub fn init_logging(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(log.level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // Fails only when a subscriber is already installed (tests): keep that one.
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs the server until SIGTERM/SIGINT. `config_path` None means built-in defaults.
pub fn serve(config_path: Option<PathBuf>, overrides: Overrides) -> Result<(), ServeError> {
    let started = Instant::now();
    let zones = Arc::new(ArcSwap::from_pointee(ZoneSet::new()));
    let loader = ZoneLoader::new(config_path, overrides, zones);
    let config = loader.read_config()?;
    init_logging(&config.log);
    let runtimes = Runtimes::build(&config.runtime)?;
    let result = runtimes
        .latency
        .block_on(run(&runtimes, config, loader, started));
    runtimes.shutdown();
    if let Err(e) = &result {
        error!("{e}");
    }
    result
}

/// Loads zones on the heavy runtime and waits for the result.
async fn load_on_heavy(
    heavy: &Handle,
    loader: &Arc<Mutex<ZoneLoader>>,
) -> Result<LoadReport, ReloadError> {
    let loader = Arc::clone(loader);
    heavy
        .spawn(async move { loader.lock().await.reload().await })
        .await?
}

async fn run(
    rt: &Runtimes,
    config: Config,
    loader: ZoneLoader,
    started: Instant,
) -> Result<(), ServeError> {
    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Installed first: SIGHUP's default action would kill the process.
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(ServeError::Signals)?;
    let heavy = rt.heavy.handle();
    let zones = Arc::clone(loader.zones());
    let loader = Arc::new(Mutex::new(loader));
    let reload_requested = Arc::new(Notify::new());

    // Startup load; SIGTERM/SIGINT meanwhile stops here, SIGHUP loads again afterwards
    // (a file may have changed after it was read).
    let load = load_on_heavy(heavy, &loader);
    tokio::pin!(load);
    let report = loop {
        tokio::select! {
            report = &mut load => break report?,
            signal = signals.next() => match signal {
                Some(SIGHUP) => reload_requested.notify_one(),
                _ => {
                    info!("stopped during startup");
                    return Ok(());
                }
            },
        }
    };
    log_report("zone load", &report);

    let handler = Arc::new(Handler::new(
        Arc::clone(&zones),
        config.limits.max_udp_payload,
    ));
    let listen = &config.server.listen;
    let listeners = server::spawn_listeners(
        rt.latency.handle(),
        handler,
        listen,
        listen,
        server_limits(&config.limits),
        config.runtime.effective_workers(),
        root.child_token(),
        &tracker,
    )
    .map_err(ServeError::Listen)?;
    info!(
        udp = ?listeners.udp_addrs(),
        tcp = ?listeners.tcp_addrs(),
        zones = zones.load().len(),
        workers = config.runtime.effective_workers(),
        heavy_workers = config.runtime.heavy_workers,
        startup_ms = started.elapsed().as_secs_f64() * 1000.0,
        "muninn serving"
    );

    tracker.spawn(reload_loop(
        rt.heavy.handle().clone(),
        Arc::clone(&loader),
        Arc::clone(&reload_requested),
        root.child_token(),
    ));

    while let Some(signal) = signals.next().await {
        match signal {
            SIGHUP => {
                info!("SIGHUP: zone reload requested");
                reload_requested.notify_one();
            }
            _ => {
                info!(signal, "stopping: no new queries accepted");
                break;
            }
        }
    }

    // RFC 7766 §6.2.3 lets a server close idle TCP connections; in-flight queries get the
    // grace period to finish.
    let stopping = Instant::now();
    root.cancel();
    tracker.close();
    let grace = config.limits.shutdown_grace();
    match tokio::time::timeout(grace, tracker.wait()).await {
        Ok(()) => info!(
            elapsed_ms = stopping.elapsed().as_secs_f64() * 1000.0,
            "shutdown complete"
        ),
        Err(_) => warn!(
            still_running = tracker.len(),
            grace_ms = grace.as_millis() as u64,
            "grace period over, exiting with tasks still running"
        ),
    }
    Ok(())
}

/// Runs one reload per notification until cancelled. A `Notify` holds at most one permit,
/// so signals arriving during a reload collapse into a single pending one.
async fn reload_loop(
    heavy: Handle,
    loader: Arc<Mutex<ZoneLoader>>,
    requested: Arc<Notify>,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = requested.notified() => {}
        }
        let result = tokio::select! {
            _ = token.cancelled() => return,
            result = load_on_heavy(&heavy, &loader) => result,
        };
        match result {
            Ok(report) => log_report("zone reload", &report),
            Err(e) => error!("zone reload failed, previous zones still served: {e}"),
        }
    }
}

fn server_limits(limits: &crate::config::Limits) -> server::Limits {
    server::Limits {
        max_tcp_connections: limits.max_tcp_connections,
        tcp_idle_timeout: limits.tcp_idle_timeout(),
        tcp_io_timeout: limits.tcp_message_timeout(),
        max_in_flight: limits.max_queries_in_flight,
        ..server::Limits::default()
    }
}
