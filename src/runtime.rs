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
use crate::jobs::{JobSettings, Jobs};
use crate::metrics::{self, Metrics};
use crate::reload::{LoadReport, ReloadError, ZoneLoader, log_report};
use crate::zone::ZoneSet;
use crate::{admin, cache, notify, server};

/// Prefix of latency worker thread names.
pub const LATENCY_THREAD_PREFIX: &str = "muninn-lat-";
/// Name of the thread serving the metrics endpoint and the admin API.
pub const ADMIN_THREAD_NAME: &str = "muninn-admin";
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
    #[error("cannot start the resolver: {0}")]
    Resolver(cache::ResolverError),
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
}

/// The latency runtime and the heavy-job runtime.
pub struct Runtimes {
    pub latency: Runtime,
    pub heavy: Runtime,
    /// One normal-priority thread (`muninn-admin`) for the metrics endpoint, the store's
    /// snapshot updater (cheap patches; its rebuilds run on the heavy runtime) and the admin
    /// API: off the latency workers, and not on the heavy threads either, which may run
    /// under SCHED_IDLE and would then starve scrapes exactly when the server is busiest.
    /// (The admin API sends its store reads to the heavy runtime all the same.)
    pub admin: Runtime,
}

impl Runtimes {
    pub fn build(config: &RuntimeConfig) -> Result<Runtimes, ServeError> {
        let latency = Builder::new_multi_thread()
            .worker_threads(config.effective_workers())
            .thread_name_fn(numbered(LATENCY_THREAD_PREFIX))
            .enable_all()
            .build()
            .map_err(|e| ServeError::Runtime("latency", e))?;
        let priority = config.heavy_priority();
        let heavy = Builder::new_multi_thread()
            .worker_threads(config.heavy_workers.max(1))
            .thread_name_fn(numbered(HEAVY_THREAD_PREFIX))
            // Heavy jobs must leave the CPU to query answering when both compete.
            .on_thread_start(move || priority.apply_to_current_thread())
            .enable_all()
            .build()
            .map_err(|e| ServeError::Runtime("heavy-job", e))?;
        let admin = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(ADMIN_THREAD_NAME)
            .enable_all()
            .build()
            .map_err(|e| ServeError::Runtime("admin", e))?;
        Ok(Runtimes {
            latency,
            heavy,
            admin,
        })
    }

    /// Stops both runtimes without waiting for tasks that ignore cancellation.
    pub fn shutdown(self) {
        self.admin.shutdown_background();
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
    // The query log is an INFO event on its own target: enabled with it whatever the
    // level, unless RUST_LOG says otherwise.
    let directives = if log.query_log {
        format!("{},{}=info", log.level.as_str(), metrics::QUERY_LOG_TARGET)
    } else {
        log.level.as_str().to_string()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
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
    crate::pace::set_tick_brake(Duration::from_micros(
        config.runtime.heavy_worker_wait_budget_us,
    ));
    let runtimes = Runtimes::build(&config.runtime)?;
    // Store changes are patched in by the normal-priority admin thread (see `reload`).
    let loader = loader.with_updater_runtime(runtimes.admin.handle().clone());
    let result = runtimes
        .latency
        .block_on(run(&runtimes, config, loader, started));
    runtimes.shutdown();
    result
}

/// Loads zones on the heavy runtime and waits for the result.
async fn load_on_heavy(
    heavy: &Handle,
    loader: &Arc<Mutex<ZoneLoader>>,
    metrics: &Metrics,
) -> Result<LoadReport, ReloadError> {
    let loader = Arc::clone(loader);
    let started = Instant::now();
    let job = metrics.jobs().enqueue("zone_load");
    let result = heavy
        .spawn(async move {
            let running = job.start();
            let result = loader.lock().await.reload().await;
            running.finish(result.is_ok());
            result
        })
        .await
        .map_err(ReloadError::from)
        .and_then(|r| r);
    match &result {
        Ok(report) => metrics.reload().record_report(report),
        Err(_) => metrics.reload().record(false, started.elapsed()),
    }
    result
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
    let imports = Arc::clone(loader.imports());
    let load_stats = Arc::clone(loader.stats());
    let loader = Arc::new(Mutex::new(loader));
    let reload_requested = Arc::new(Notify::new());
    let metrics = Metrics::new(Arc::clone(&zones));
    metrics.set_load_stats(load_stats);
    if config.metrics.enabled {
        let addr = metrics::spawn_metrics_server(
            rt.admin.handle(),
            config.metrics.listen,
            Arc::clone(&metrics),
            root.child_token(),
            &tracker,
        )
        .map_err(ServeError::Listen)?;
        info!(%addr, "metrics endpoint listening");
    }
    // Bound before the zone load so that a taken port or a missing token fails at once; zone
    // requests get 503 until the load has opened the store.
    let admin_api = if config.admin.enabled {
        let token = admin::Token::read(&config.admin.token_file)?;
        if admin::token_file_exposed(&config.admin.token_file) {
            warn!(
                file = %config.admin.token_file.display(),
                "admin.token_file can be read by other users; it grants write access (chmod 600)"
            );
        }
        let api = admin::Api::new(Arc::clone(&zones), heavy.clone(), token, &config.admin);
        let addr = admin::spawn_admin_server(
            rt.admin.handle(),
            Arc::clone(&api),
            root.child_token(),
            &tracker,
        )?;
        info!(%addr, "admin API listening");
        Some(api)
    } else {
        None
    };

    // Startup load; SIGTERM/SIGINT meanwhile stops here, SIGHUP loads again afterwards
    // (a file may have changed after it was read).
    let load = load_on_heavy(heavy, &loader, &metrics);
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
    // Background jobs on the store (purges): the admin API starts them through a clone.
    let store = loader.lock().await.store().cloned();
    let jobs = store.as_ref().map(|store| {
        metrics.set_store(store.clone());
        let jobs = Jobs::new(
            store.clone(),
            heavy.clone(),
            root.child_token(),
            tracker.clone(),
            JobSettings::from_config(&config.store),
        );
        metrics.set_purge_jobs(jobs.clone());
        jobs
    });
    if let (Some(api), Some(store), Some(jobs)) = (&admin_api, store, jobs) {
        api.set_store(store);
        api.set_jobs(jobs);
    }

    let mut handler = Handler::new(Arc::clone(&zones), config.limits.max_udp_payload)
        .with_query_log(config.log.query_log());
    if config.recursion.enabled {
        let resolver =
            cache::Resolver::new(config.recursion.clone()).map_err(ServeError::Resolver)?;
        // Cache housekeeping and stale refresh are heavy-runtime work, tied to the root token.
        resolver.spawn_maintenance(rt.heavy.handle(), root.child_token(), &tracker);
        metrics.set_resolver(resolver.clone());
        handler = handler.with_resolver(resolver);
    }
    let handler = Arc::new(handler);
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
    metrics.add_listeners(&listeners);
    metrics.set_ready(true);
    info!(
        udp = ?listeners.udp_addrs(),
        tcp = ?listeners.tcp_addrs(),
        zones = zones.load().len(),
        workers = config.runtime.effective_workers(),
        heavy_workers = config.runtime.heavy_workers,
        startup_ms = started.elapsed().as_secs_f64() * 1000.0,
        "muninn serving"
    );

    notify::spawn_watchdog(rt.latency.handle(), root.child_token(), &tracker);
    notify::ready(&format!("serving {} zones", zones.load().len()));

    tracker.spawn(reload_loop(
        rt.heavy.handle().clone(),
        Arc::clone(&loader),
        Arc::clone(&reload_requested),
        Arc::clone(&metrics),
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
    metrics.set_ready(false);
    notify::stopping();
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
    // Zones served but not yet stored: what is left of the grace period lets their imports
    // commit, so that the next start need not parse those files again.
    let outstanding = imports.outstanding();
    if outstanding > 0 {
        info!(
            imports = outstanding,
            "stopping: waiting for zone imports into the store"
        );
        let left = grace.saturating_sub(stopping.elapsed());
        match tokio::time::timeout(left, imports.settled(None)).await {
            Ok(()) => info!("zone imports finished"),
            Err(_) => warn!(
                imports = imports.outstanding(),
                "grace period over before the zone imports committed; the next start parses those files again"
            ),
        }
    }
    Ok(())
}

/// Runs one reload per notification until cancelled. A `Notify` holds at most one permit,
/// so signals arriving during a reload collapse into a single pending one.
async fn reload_loop(
    heavy: Handle,
    loader: Arc<Mutex<ZoneLoader>>,
    requested: Arc<Notify>,
    metrics: Arc<Metrics>,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = requested.notified() => {}
        }
        notify::reloading();
        let result = tokio::select! {
            _ = token.cancelled() => return,
            result = load_on_heavy(&heavy, &loader, &metrics) => result,
        };
        match result {
            Ok(report) => {
                log_report("zone reload", &report);
                notify::ready(&format!("serving {} zones", report.served));
            }
            Err(e) => {
                error!("zone reload failed, previous zones still served: {e}");
                notify::ready("reload failed, previous zones still served");
            }
        }
    }
}

fn server_limits(limits: &crate::config::Limits) -> server::Limits {
    server::Limits {
        max_tcp_connections: limits.max_tcp_connections,
        tcp_idle_timeout: limits.tcp_idle_timeout(),
        tcp_io_timeout: limits.tcp_message_timeout(),
        max_in_flight: limits.max_queries_in_flight,
        udp_recv_buffer: (limits.udp_receive_buffer > 0).then_some(limits.udp_receive_buffer),
        ..server::Limits::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::ZoneOutcome;
    use hickory_proto::rr::{LowerName, Name};
    use std::path::Path;

    const ZONE: &str = "$TTL 300\n\
        @ IN SOA ns.example. host.example. 1 3600 600 86400 300\n\
        @ IN NS ns.example.\n\
        www IN A 192.0.2.1\n";

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("muninn-rt-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn runtimes() -> Runtimes {
        Runtimes::build(&RuntimeConfig {
            workers: 1,
            heavy_workers: 2,
            heavy_nice: 7,
            heavy_idle_scheduling: true,
            heavy_worker_wait_budget_us: 0,
        })
        .unwrap()
    }

    fn loader(dir: &Path) -> Arc<Mutex<ZoneLoader>> {
        let zones = Arc::new(ArcSwap::from_pointee(ZoneSet::new()));
        let overrides = Overrides {
            zones_dir: Some(dir.to_path_buf()),
            data_dir: Some(dir.join(".data")),
            ..Overrides::default()
        };
        Arc::new(Mutex::new(ZoneLoader::new(None, overrides, zones)))
    }

    fn test_metrics() -> Arc<Metrics> {
        Metrics::new(Arc::new(ArcSwap::from_pointee(ZoneSet::new())))
    }

    fn reload(rt: &Runtimes, loader: &Arc<Mutex<ZoneLoader>>) -> LoadReport {
        rt.latency
            .block_on(load_on_heavy(rt.heavy.handle(), loader, &test_metrics()))
            .unwrap()
    }

    fn served(loader: &Arc<Mutex<ZoneLoader>>, name: &str) -> Option<Arc<crate::zone::Zone>> {
        let zones = Arc::clone(loader.blocking_lock().zones());
        let set = zones.load();
        set.get(&LowerName::new(&Name::from_ascii(name).unwrap()))
            .cloned()
    }

    fn outcome(report: &LoadReport, origin: &str) -> ZoneOutcome {
        report
            .zones
            .iter()
            .find(|z| z.origin == origin)
            .unwrap()
            .outcome
            .clone()
    }

    #[test]
    fn zones_are_parsed_on_heavy_threads() {
        let dir = TempDir::new("heavy");
        std::fs::write(dir.0.join("a.test.zone"), ZONE).unwrap();
        std::fs::write(dir.0.join("b.test.zone"), ZONE).unwrap();
        let rt = runtimes();
        let loader = loader(&dir.0);
        let report = reload(&rt, &loader);
        assert_eq!(report.zones.len(), 2);
        for z in &report.zones {
            assert_eq!(z.outcome, ZoneOutcome::Added);
            let thread = z.parsed_on.as_deref().unwrap();
            assert!(
                thread.starts_with(HEAVY_THREAD_PREFIX),
                "parsed on {thread}"
            );
        }
        assert_eq!(report.served, 2);
        rt.shutdown();
    }

    #[test]
    fn thread_names_and_heavy_priority() {
        let rt = runtimes();
        let (name, nice, policy) = rt
            .latency
            .block_on(rt.heavy.spawn(async {
                (
                    std::thread::current().name().map(String::from),
                    thread_stat_field(16),
                    thread_stat_field(38),
                )
            }))
            .unwrap();
        assert!(name.unwrap().starts_with(HEAVY_THREAD_PREFIX));
        assert_eq!(nice, Some(7));
        assert_eq!(
            policy,
            Some(libc::SCHED_IDLE),
            "heavy threads run under SCHED_IDLE"
        );
        let (name, heavy, policy) = rt
            .latency
            .block_on(rt.latency.spawn(async {
                (
                    std::thread::current().name().map(String::from),
                    on_heavy_thread(),
                    thread_stat_field(38),
                )
            }))
            .unwrap();
        assert!(name.unwrap().starts_with(LATENCY_THREAD_PREFIX));
        assert!(!heavy);
        assert_eq!(policy, Some(libc::SCHED_OTHER));
        rt.shutdown();
    }

    /// Field `index` (counted from the state field, 0) of /proc/thread-self/stat: 16 is
    /// the nice value, 38 the scheduling policy.
    fn thread_stat_field(index: usize) -> Option<i32> {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
        let after_comm = stat.rsplit_once(')')?.1;
        after_comm.split_whitespace().nth(index)?.parse().ok()
    }

    #[test]
    fn reload_reuses_unchanged_swaps_changed_keeps_broken_drops_removed() {
        let dir = TempDir::new("reload");
        let keep = dir.0.join("keep.test.zone");
        let change = dir.0.join("change.test.zone");
        let broken = dir.0.join("broken.test.zone");
        let gone = dir.0.join("gone.test.zone");
        for f in [&keep, &change, &broken, &gone] {
            std::fs::write(f, ZONE).unwrap();
        }
        let rt = runtimes();
        let loader = loader(&dir.0);
        reload(&rt, &loader);
        let keep_v1 = served(&loader, "keep.test.").unwrap();
        let broken_v1 = served(&loader, "broken.test.").unwrap();

        std::fs::write(&change, ZONE.replace(" 1 3600", " 2 3600")).unwrap();
        std::fs::write(&broken, format!("{ZONE}bad IN A 300.1.1.1\n")).unwrap();
        std::fs::remove_file(&gone).unwrap();
        std::fs::write(dir.0.join("new.test.zone"), ZONE).unwrap();
        let report = reload(&rt, &loader);

        assert_eq!(outcome(&report, "keep.test."), ZoneOutcome::Unchanged);
        assert_eq!(outcome(&report, "change.test."), ZoneOutcome::Changed);
        assert_eq!(
            outcome(&report, "broken.test."),
            ZoneOutcome::Failed { kept_old: true }
        );
        assert_eq!(outcome(&report, "gone.test."), ZoneOutcome::Removed);
        assert_eq!(outcome(&report, "new.test."), ZoneOutcome::Added);
        let errors = &report
            .zones
            .iter()
            .find(|z| z.origin == "broken.test.")
            .unwrap()
            .errors;
        let expected = format!("{}:5:", broken.display());
        assert!(
            errors.iter().any(|e| e.starts_with(&expected)),
            "{errors:?}"
        );

        assert!(Arc::ptr_eq(
            &keep_v1,
            &served(&loader, "keep.test.").unwrap()
        ));
        assert!(Arc::ptr_eq(
            &broken_v1,
            &served(&loader, "broken.test.").unwrap()
        ));
        assert_eq!(served(&loader, "change.test.").unwrap().serial(), 2);
        assert!(served(&loader, "gone.test.").is_none());
        assert!(served(&loader, "new.test.").is_some());
        assert_eq!(report.served, 4);

        // Fixing the broken file is picked up even though its old version had the same name.
        std::fs::write(&broken, ZONE.replace(" 1 3600", " 3 3600")).unwrap();
        let report = reload(&rt, &loader);
        assert_eq!(outcome(&report, "broken.test."), ZoneOutcome::Changed);
        assert_eq!(served(&loader, "broken.test.").unwrap().serial(), 3);
        rt.shutdown();
    }

    #[test]
    fn broken_new_zone_is_not_served_and_others_are() {
        let dir = TempDir::new("newbroken");
        std::fs::write(dir.0.join("ok.test.zone"), ZONE).unwrap();
        std::fs::write(dir.0.join("bad.test.zone"), "@ IN A 192.0.2.1\n").unwrap();
        let rt = runtimes();
        let loader = loader(&dir.0);
        let report = reload(&rt, &loader);
        assert_eq!(
            outcome(&report, "bad.test."),
            ZoneOutcome::Failed { kept_old: false }
        );
        assert!(served(&loader, "bad.test.").is_none());
        assert!(served(&loader, "ok.test.").is_some());
        rt.shutdown();
    }

    #[test]
    fn missing_zone_directory_fails_the_reload_and_keeps_zones() {
        let dir = TempDir::new("nodir");
        std::fs::write(dir.0.join("ok.test.zone"), ZONE).unwrap();
        let rt = runtimes();
        let loader = loader(&dir.0);
        reload(&rt, &loader);
        std::fs::remove_dir_all(&dir.0).unwrap();
        let result =
            rt.latency
                .block_on(load_on_heavy(rt.heavy.handle(), &loader, &test_metrics()));
        assert!(matches!(result, Err(ReloadError::Config(_))), "{result:?}");
        assert!(served(&loader, "ok.test.").is_some());
        rt.shutdown();
    }
}
