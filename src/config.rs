//! Server configuration: a TOML file, every key optional, unknown keys rejected.
//!
//! The shipped `config.toml` lists every key at its default. Relative paths in a config file
//! are resolved against the directory holding that file, so the server behaves the same
//! whatever directory it is started from; paths given on the command line are relative to the
//! working directory, like any other command-line path.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::{LowerName, Name};
use serde::Deserialize;

pub use crate::store::Managed;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Syntax errors and unknown keys; toml's message carries line, column and the key.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// Well-formed but unusable values.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("zones directory {path}: {source}")]
    ZoneDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("zone {name} is configured twice ({first} and {second})")]
    DuplicateZone {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for persistent state: the zone store `muninn.redb` (see `store`).
    /// Default: "./data".
    pub data_dir: PathBuf,
    /// Listening sockets.
    pub server: ServerConfig,
    /// Which zones to serve.
    pub zones: ZonesConfig,
    /// Thread pools.
    pub runtime: RuntimeConfig,
    /// Resource limits and timeouts.
    pub limits: Limits,
    /// Logging.
    pub log: LogConfig,
    /// Caching resolver for names outside our zones (forwarding to upstreams).
    pub recursion: crate::cache::ResolverConfig,
    /// `/metrics` and `/health` HTTP endpoint.
    pub metrics: crate::metrics::MetricsConfig,
    /// The zone store (`data_dir/muninn.redb`).
    pub store: StoreConfig,
    /// The admin HTTP API (records and purge jobs; off by default, needs a token file).
    pub admin: crate::admin::AdminConfig,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Bytes of the store's page cache (redb). Reads and imports are faster with more; it
    /// counts in the server's resident memory. Default: 33554432 (32 MiB).
    pub cache_size: usize,
    /// Records a bulk purge deletes per write transaction (each batch is atomic and bumps
    /// the serial of the zones it touches once). Larger batches purge faster; smaller ones
    /// hold the store writer for less time and journal smaller changes. Default: 1000.
    pub purge_batch_size: usize,
    /// Batches being read (prepared) at once, over all purge jobs; each job reads its next
    /// batch while the writer commits the current one. Default: 2.
    pub purge_workers: usize,
    /// Microseconds per second a query worker may wait for a CPU (its run-queue wait, as
    /// the kernel reports it) while a purge runs. When a batch made a worker wait longer,
    /// the purge pauses after it until the average is back within this budget (a pause
    /// lasts at most 8 batch times and 1 s, so a purge always progresses). Without query
    /// load a purge never pauses. 0 turns the brake off: purges then take all the CPU the
    /// heavy runtime gets, and queries on a saturated core answer more slowly (measured:
    /// p99 3x at half of the maximum query rate on one core). Default: 2000 (0.2%).
    pub purge_worker_wait_budget_us: u64,
    /// Background jobs (purges) running at once; more are refused. Default: 2.
    pub max_jobs: usize,
    /// Finished jobs kept for inspection, at least 1 (the oldest are forgotten first).
    /// Default: 100.
    pub jobs_kept: usize,
    /// Bytes of change events the change stream keeps for consumers that have not read them
    /// yet (the snapshot updater, metrics). Beyond it the oldest are released and a
    /// consumer that still needed them rebuilds from the store instead (logged and counted
    /// in `muninn_store_stream_resyncs_total`). The newest event is kept even when it alone
    /// is larger, so consumers that keep up always get it. At least 1. Default: 16777216
    /// (16 MiB).
    pub change_stream_bytes: usize,
    /// Events the change stream keeps for consumers that have not read them yet (the same
    /// rules as `change_stream_bytes`; whichever bound is reached first applies). At
    /// least 1. Default: 1024.
    pub change_stream_events: usize,
}

/// Upper bound of `[store] purge_batch_size`: one write transaction must stay bounded.
pub const MAX_PURGE_BATCH: usize = 100_000;

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            cache_size: 32 << 20,
            purge_batch_size: 1000,
            purge_workers: 2,
            purge_worker_wait_budget_us: 2000,
            max_jobs: 2,
            jobs_kept: 100,
            change_stream_bytes: 16 << 20,
            change_stream_events: 1024,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Addresses to listen on; the server answers on UDP and TCP on each.
    /// Default: ["127.0.0.1:5353", "[::1]:5353"].
    pub listen: Vec<SocketAddr>,
}

/// `[zones]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZonesConfig {
    /// Every file `NAME.zone` in this directory is served as zone `NAME.`. The empty string
    /// turns the directory scan off. Default: "zones".
    pub directory: PathBuf,
    /// Zones listed one by one, in addition to the directory: `[[zones.zone]]` tables with
    /// `name` and `file`. Default: none.
    pub zone: Vec<ZoneEntry>,
}

/// One `[[zones.zone]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneEntry {
    /// The zone's origin (apex), e.g. "example.com." (a missing final dot is added).
    pub name: String,
    /// The zone's master file (RFC 1035 §5 format). Required for file-managed zones; for a
    /// store-managed zone it only seeds the store once.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The source of truth: "file" (default: the file wins on every reload) or "store"
    /// (the zone lives in the store and changes only through the store's change API).
    #[serde(default = "default_managed")]
    pub managed: Managed,
}

fn default_managed() -> Managed {
    Managed::File
}

/// `[runtime]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Threads answering queries (the latency runtime). 0 means one per CPU core.
    /// Default: 0.
    pub workers: usize,
    /// Threads for heavy jobs: zone parsing, validation and snapshot building. Default: 1.
    pub heavy_workers: usize,
    /// Nice level (0..=19) of the heavy-job threads, so they yield CPU to query answering.
    /// Default: 10.
    pub heavy_nice: i32,
    /// Run heavy-job threads under SCHED_IDLE: a query-answering thread that wakes up
    /// preempts them at once, so a reload never delays answers; but when query answering
    /// keeps every core busy, heavy jobs (reloads) crawl. Off: only `heavy_nice` applies,
    /// and a running heavy job can delay answers by a scheduler slice (a few ms).
    /// Default: true.
    pub heavy_idle_scheduling: bool,
    /// Microseconds per second a query worker may wait for a CPU while a zone is loaded,
    /// reloaded, imported or written out; above it those jobs pause every 20 ms until the
    /// average is back within the budget (like `[store] purge_worker_wait_budget_us` does
    /// for purges). Trades reload time for latency: measured on one core at half its
    /// maximum query rate, a 1,000,000-name reload with 2000 kept the per-second p99
    /// median at 50 us (49 us before it; 117 us without the brake) but took 351 s instead
    /// of 46 s. 0 (off) lets reloads take all the CPU queries leave. Default: 0.
    pub heavy_worker_wait_budget_us: u64,
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Queries being answered at once, over all transports; beyond it new queries wait
    /// (UDP datagrams are dropped). Default: 4096.
    pub max_queries_in_flight: usize,
    /// Open TCP connections at once; further connections are refused. Default: 1024.
    pub max_tcp_connections: usize,
    /// A TCP connection with no query for this long is closed (RFC 7766 §6.2.3).
    /// Default: 10000 ms.
    pub tcp_idle_timeout_ms: u64,
    /// Time allowed to read one TCP message once it started, or to write one response.
    /// Default: 2000 ms.
    pub tcp_message_timeout_ms: u64,
    /// Largest UDP response sent, whatever the client's EDNS buffer size says
    /// (RFC 6891 §6.2.5; 1232 avoids IP fragmentation, DNS Flag Day 2020). 512..=65535.
    /// Default: 1232.
    pub max_udp_payload: u16,
    /// Receive buffer (SO_RCVBUF) asked for each UDP socket, in bytes; 0 keeps the system
    /// default (net.core.rmem_default, 208 KiB on most Linux systems). The buffer holds the
    /// queries that arrive while a worker is busy or descheduled: at 100k queries/s the
    /// default holds about 2 ms of them, and a longer stall (a virtual machine's vCPU
    /// pause, a page-fault storm) drops the rest. The kernel caps the size at
    /// net.core.rmem_max (the effective size is logged at start); raise that sysctl to
    /// get the full buffer. Memory is used only while queries queue. Unbound suggests
    /// the same 4 MiB for busy servers (`so-rcvbuf`). Default: 4194304.
    pub udp_receive_buffer: usize,
    /// On SIGTERM/SIGINT, time given to queries in flight to finish before exiting.
    /// Default: 5000 ms.
    pub shutdown_grace_ms: u64,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Minimum level: "error", "warn", "info", "debug" or "trace". The RUST_LOG environment
    /// variable, when set, overrides it. Default: "info".
    pub level: LogLevel,
    /// "text" (human readable) or "json" (one object per line). Default: "text".
    pub format: LogFormat,
    /// Log sampled queries: one event per sampled query (client, transport, qname, qtype,
    /// rcode, response size, latency) at INFO on the target `muninn::query`. Costs
    /// throughput; meant for debugging and traffic sampling. Default: false.
    pub query_log: bool,
    /// With `query_log`, log 1 query in this many (counted per worker thread); 1 logs
    /// every query. Default: 100.
    pub query_log_sample: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("./data"),
            server: ServerConfig::default(),
            zones: ZonesConfig::default(),
            runtime: RuntimeConfig::default(),
            limits: Limits::default(),
            log: LogConfig::default(),
            recursion: crate::cache::ResolverConfig::default(),
            metrics: crate::metrics::MetricsConfig::default(),
            store: StoreConfig::default(),
            admin: crate::admin::AdminConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5353),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 5353),
            ],
        }
    }
}

impl Default for ZonesConfig {
    fn default() -> ZonesConfig {
        ZonesConfig {
            directory: PathBuf::from("zones"),
            zone: Vec::new(),
        }
    }
}

impl RuntimeConfig {
    /// How heavy-job threads (the heavy runtime, the store writer) lower their priority.
    pub fn heavy_priority(&self) -> HeavyPriority {
        HeavyPriority {
            nice: self.heavy_nice,
            idle: self.heavy_idle_scheduling,
        }
    }
}

/// The scheduling priority heavy-job threads give themselves (see [`RuntimeConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeavyPriority {
    pub nice: i32,
    pub idle: bool,
}

impl HeavyPriority {
    /// Applies this priority to the calling thread, and paces its long loops (see
    /// [`crate::pace`]); failures are logged, not fatal (a seccomp filter may forbid
    /// them), since answering queries matters more.
    pub fn apply_to_current_thread(self) {
        crate::pace::enable_on_current_thread();
        if let Err(e) = crate::sys::lower_thread_priority(self.nice) {
            tracing::warn!(
                "cannot lower heavy-job thread priority to nice {}: {e}",
                self.nice
            );
        }
        if self.idle
            && let Err(e) = crate::sys::set_idle_scheduling()
        {
            tracing::warn!("cannot put heavy-job thread under SCHED_IDLE: {e}");
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        RuntimeConfig {
            workers: 0,
            heavy_workers: 1,
            heavy_nice: 10,
            heavy_idle_scheduling: true,
            heavy_worker_wait_budget_us: 0,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_queries_in_flight: 4096,
            max_tcp_connections: 1024,
            tcp_idle_timeout_ms: 10_000,
            tcp_message_timeout_ms: 2_000,
            max_udp_payload: 1232,
            udp_receive_buffer: 4 << 20,
            shutdown_grace_ms: 5_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            level: LogLevel::Info,
            format: LogFormat::Text,
            query_log: false,
            query_log_sample: 100,
        }
    }
}

impl RuntimeConfig {
    /// Latency worker threads to start: `workers`, or the number of cores when 0.
    pub fn effective_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

impl LogConfig {
    /// The query log these settings ask for.
    pub fn query_log(&self) -> crate::metrics::QueryLog {
        crate::metrics::QueryLog::new(self.query_log, self.query_log_sample)
    }
}

impl Limits {
    pub fn tcp_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.tcp_idle_timeout_ms)
    }

    pub fn tcp_message_timeout(&self) -> Duration {
        Duration::from_millis(self.tcp_message_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// Command-line values that replace what the config file says (`muninn serve` flags). Kept
/// apart from [`Config`] so that a reload re-reads the file and applies them again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub listen: Vec<SocketAddr>,
    /// Serve every `NAME.zone` in this directory, and only those (the file's zone list and
    /// directory are ignored).
    pub zones_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub workers: Option<usize>,
}

/// One zone to serve: its origin, master file and source of truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSource {
    pub origin: Name,
    /// The master file (None: a store-managed zone without one).
    pub file: Option<PathBuf>,
    /// `$INCLUDE` must stay inside this directory.
    pub include_root: PathBuf,
    pub managed: Managed,
}

impl Config {
    /// Reads, parses and validates a config file; relative paths in it are made relative to
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new(""));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses and validates config text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// Applies command-line overrides, then validates again.
    pub fn apply(&mut self, overrides: &Overrides) -> Result<(), ConfigError> {
        if !overrides.listen.is_empty() {
            self.server.listen = overrides.listen.clone();
        }
        if let Some(dir) = &overrides.zones_dir {
            self.zones.directory = dir.clone();
            self.zones.zone.clear();
        }
        if let Some(dir) = &overrides.data_dir {
            self.data_dir = dir.clone();
        }
        if let Some(workers) = overrides.workers {
            self.runtime.workers = workers;
        }
        self.validate().map_err(|message| ConfigError::Invalid {
            path: PathBuf::from("command line"),
            message,
        })
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.data_dir);
        self.admin.resolve_paths(base);
        resolve(&mut self.zones.directory);
        for z in &mut self.zones.zone {
            if let Some(f) = &mut z.file {
                resolve(f);
            }
        }
    }

    /// Semantic checks the TOML types cannot express.
    fn validate(&self) -> Result<(), String> {
        if self.server.listen.is_empty() {
            return Err("server.listen: at least one address is needed".into());
        }
        let mut seen = HashSet::new();
        for addr in &self.server.listen {
            if !seen.insert(addr) {
                return Err(format!("server.listen: {addr} is listed twice"));
            }
        }
        if self.runtime.heavy_workers == 0 {
            return Err("runtime.heavy_workers: must be at least 1".into());
        }
        if !(0..=19).contains(&self.runtime.heavy_nice) {
            return Err(format!(
                "runtime.heavy_nice: {} is outside 0..=19 (threads can only lower their priority)",
                self.runtime.heavy_nice
            ));
        }
        let l = &self.limits;
        // RFC 6891 §6.2.5: values below 512 must be treated as 512; a server limit below it
        // could not even send a classic DNS response.
        if l.max_udp_payload < 512 {
            return Err(format!(
                "limits.max_udp_payload: {} is below 512 (RFC 6891 §6.2.5)",
                l.max_udp_payload
            ));
        }
        for (key, value) in [
            (
                "limits.max_queries_in_flight",
                l.max_queries_in_flight as u64,
            ),
            ("limits.max_tcp_connections", l.max_tcp_connections as u64),
            ("limits.tcp_idle_timeout_ms", l.tcp_idle_timeout_ms),
            ("limits.tcp_message_timeout_ms", l.tcp_message_timeout_ms),
        ] {
            if value == 0 {
                return Err(format!("{key}: must be greater than 0"));
            }
        }
        if !(1..=MAX_PURGE_BATCH).contains(&self.store.purge_batch_size) {
            return Err(format!(
                "store.purge_batch_size: {} is outside 1..={MAX_PURGE_BATCH}",
                self.store.purge_batch_size
            ));
        }
        for (key, value) in [
            ("store.purge_workers", self.store.purge_workers),
            ("store.max_jobs", self.store.max_jobs),
            // A finished job must stay visible at least until its client has seen the end.
            ("store.jobs_kept", self.store.jobs_kept),
            ("store.change_stream_bytes", self.store.change_stream_bytes),
            (
                "store.change_stream_events",
                self.store.change_stream_events,
            ),
        ] {
            if value == 0 {
                return Err(format!("{key}: must be at least 1"));
            }
        }
        if self.log.query_log_sample == 0 {
            return Err("log.query_log_sample: must be at least 1".into());
        }
        self.recursion
            .validate()
            .map_err(|e| format!("recursion: {e}"))?;
        self.admin.validate()?;
        let mut names = HashSet::new();
        for z in &self.zones.zone {
            let name = parse_zone_name(&z.name)
                .map_err(|e| format!("zones.zone: name {:?}: {e}", z.name))?;
            if !names.insert(LowerName::new(&name)) {
                return Err(format!("zones.zone: zone {name} is listed twice"));
            }
            match (&z.file, z.managed) {
                (Some(f), _) if f.as_os_str().is_empty() => {
                    return Err(format!("zones.zone: zone {name}: file is empty"));
                }
                (None, Managed::File) => {
                    return Err(format!(
                        "zones.zone: zone {name}: a file-managed zone needs a file \
                         (or set managed = \"store\")"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every zone to serve: the `*.zone` files of the zones directory, then the listed zones.
    /// Reads the directory, so call it on the heavy runtime.
    pub fn zone_sources(&self) -> Result<Vec<ZoneSource>, ConfigError> {
        let mut sources = Vec::new();
        if !self.zones.directory.as_os_str().is_empty() {
            sources = scan_zone_dir(&self.zones.directory)?;
        }
        for z in &self.zones.zone {
            let origin = parse_zone_name(&z.name).map_err(|message| ConfigError::Invalid {
                path: PathBuf::from("config"),
                message,
            })?;
            let include_root = z
                .file
                .as_deref()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            sources.push(ZoneSource {
                origin,
                file: z.file.clone(),
                include_root,
                managed: z.managed,
            });
        }
        let mut seen: Vec<(LowerName, Option<PathBuf>)> = Vec::new();
        for s in &sources {
            let lower = LowerName::new(&s.origin);
            if let Some((_, first)) = seen.iter().find(|(n, _)| *n == lower) {
                return Err(ConfigError::DuplicateZone {
                    name: s.origin.to_string(),
                    first: first.clone().unwrap_or_else(|| PathBuf::from("(store)")),
                    second: s.file.clone().unwrap_or_else(|| PathBuf::from("(store)")),
                });
            }
            seen.push((lower, s.file.clone()));
        }
        Ok(sources)
    }
}

/// Parses a zone name, making it fully qualified.
pub fn parse_zone_name(text: &str) -> Result<Name, String> {
    let mut name = Name::from_ascii(text).map_err(|e| e.to_string())?;
    name.set_fqdn(true);
    Ok(name)
}

/// The zone a file `NAME.zone` holds, by convention: `NAME.`; None for other file names.
pub fn origin_from_file_name(path: &Path) -> Option<Name> {
    let file_name = path.file_name()?.to_str()?;
    let stem = file_name.strip_suffix(".zone")?;
    if stem.is_empty() {
        return None;
    }
    parse_zone_name(stem).ok()
}

fn scan_zone_dir(dir: &Path) -> Result<Vec<ZoneSource>, ConfigError> {
    let io_err = |source| ConfigError::ZoneDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let path = entry.map_err(io_err)?.path();
        if !path.is_file() {
            continue;
        }
        if let Some(origin) = origin_from_file_name(&path) {
            sources.push(ZoneSource {
                origin,
                file: Some(path),
                include_root: dir.to_path_buf(),
                managed: Managed::File,
            });
        }
    }
    // Deterministic order for logs.
    sources.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn shipped_config_is_the_defaults_plus_metrics() {
        // The only key the shipped file sets is `[metrics] enabled = true`.
        let text = include_str!("../config.toml");
        let mut expected = Config::default();
        expected.metrics.enabled = true;
        assert_eq!(parse(text).unwrap(), expected);
    }

    #[test]
    fn shipped_config_with_every_key_uncommented_is_the_defaults() {
        // The shipped file documents every key, commented out, at its default: uncommenting
        // all of them must still parse (catches typos in the documented key names).
        let text: String = include_str!("../config.toml")
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if is_toml_line(rest) => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut expected = Config::default();
        expected.metrics.enabled = true;
        expected.zones.zone.push(ZoneEntry {
            name: "example.test.".into(),
            file: Some("zones/example.test.zone".into()),
            managed: Managed::File,
        });
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed, expected);
    }

    /// A commented-out TOML line: a table header or `key = value`.
    fn is_toml_line(rest: &str) -> bool {
        rest.starts_with('[')
            || rest
                .split_once(" = ")
                .is_some_and(|(k, _)| !k.is_empty() && !k.contains(' '))
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = parse("[limits]\nmax_udp_payload = 1232\nmax_udp_paylod = 4096\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_udp_paylod"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn unknown_section_is_an_error() {
        let err = parse("[serverr]\n").unwrap_err().to_string();
        assert!(err.contains("serverr"), "{err}");
    }

    #[test]
    fn small_udp_payload_is_refused() {
        let err = parse("[limits]\nmax_udp_payload = 511\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_udp_payload"), "{err}");
        assert!(parse("[limits]\nmax_udp_payload = 512\n").is_ok());
    }

    #[test]
    fn semantic_errors() {
        for text in [
            "[server]\nlisten = []\n",
            "[server]\nlisten = [\"127.0.0.1:53\", \"127.0.0.1:53\"]\n",
            "[runtime]\nheavy_workers = 0\n",
            "[runtime]\nheavy_nice = -5\n",
            "[runtime]\nheavy_nice = 20\n",
            "[limits]\ntcp_idle_timeout_ms = 0\n",
            "[[zones.zone]]\nname = \"a.\"\nfile = \"a\"\n[[zones.zone]]\nname = \"A\"\nfile = \"b\"\n",
            "[[zones.zone]]\nname = \"a..b\"\nfile = \"a\"\n",
            "[log]\nlevel = \"loud\"\n",
            "[log]\nformat = \"xml\"\n",
            "[log]\nquery_log_sample = 0\n",
            "[store]\npurge_batch_size = 0\n",
            "[store]\npurge_batch_size = 100001\n",
            "[store]\npurge_workers = 0\n",
            "[store]\nmax_jobs = 0\n",
            "[store]\njobs_kept = 0\n",
            "[store]\nchange_stream_bytes = 0\n",
            "[store]\nchange_stream_events = 0\n",
            "[server]\nlisten = [\"localhost\"]\n",
            "[[zones.zone]]\nname = \"a.\"\n",
            "[[zones.zone]]\nname = \"a.\"\nfile = \"a\"\nmanaged = \"db\"\n",
            "[admin]\nenabled = true\n",
            "[admin]\nmax_connections = 0\n",
        ] {
            assert!(parse(text).is_err(), "accepted: {text}");
        }
    }

    #[test]
    fn admin_api_needs_a_token_file_named_relative_to_the_config() {
        let err = parse("[admin]\nenabled = true\n").unwrap_err().to_string();
        assert!(err.contains("admin.token_file"), "{err}");
        let mut c = parse("[admin]\nenabled = true\ntoken_file = \"admin.token\"\n").unwrap();
        c.resolve_paths(Path::new("/etc/muninn"));
        assert_eq!(c.admin.token_file, PathBuf::from("/etc/muninn/admin.token"));
    }

    #[test]
    fn store_managed_zones_need_no_file() {
        let c = parse(
            "[zones]\ndirectory = \"\"\n\
             [[zones.zone]]\nname = \"s.test\"\nmanaged = \"store\"\n\
             [[zones.zone]]\nname = \"f.test\"\nfile = \"f.zone\"\n",
        )
        .unwrap();
        let sources = c.zone_sources().unwrap();
        assert_eq!(sources[0].managed, Managed::Store);
        assert_eq!(sources[0].file, None);
        assert_eq!(sources[1].managed, Managed::File);
        assert_eq!(sources[1].file, Some(PathBuf::from("f.zone")));
    }

    #[test]
    fn values_are_read() {
        let c = parse(
            "data_dir = \"/var/lib/muninn\"\n\
             [server]\nlisten = [\"127.0.0.1:53\"]\n\
             [zones]\ndirectory = \"\"\n\
             [[zones.zone]]\nname = \"example.com\"\nfile = \"/etc/example.com.zone\"\n\
             [runtime]\nworkers = 3\nheavy_workers = 2\nheavy_nice = 0\n\
             [limits]\nmax_udp_payload = 4096\nshutdown_grace_ms = 100\n\
             [log]\nlevel = \"debug\"\nformat = \"json\"\nquery_log = true\nquery_log_sample = 7\n",
        )
        .unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(c.runtime.effective_workers(), 3);
        assert_eq!(c.limits.max_udp_payload, 4096);
        assert_eq!(c.limits.shutdown_grace(), Duration::from_millis(100));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, LogLevel::Debug);
        assert_eq!(c.log.query_log(), crate::metrics::QueryLog::new(true, 7));
        assert!(!Config::default().log.query_log().enabled());
        let sources = c.zone_sources().unwrap();
        assert_eq!(sources.len(), 1);
        assert_eq!(sources[0].origin.to_string(), "example.com.");
        assert_eq!(sources[0].include_root, PathBuf::from("/etc"));
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let mut c = parse("[[zones.zone]]\nname = \"a.\"\nfile = \"z/a.zone\"\n").unwrap();
        c.resolve_paths(Path::new("/etc/muninn"));
        assert_eq!(c.zones.directory, PathBuf::from("/etc/muninn/zones"));
        assert_eq!(
            c.zones.zone[0].file,
            Some(PathBuf::from("/etc/muninn/z/a.zone"))
        );
        assert_eq!(c.data_dir, PathBuf::from("/etc/muninn/./data"));
    }

    #[test]
    fn overrides_replace_file_values() {
        let mut c = parse("[[zones.zone]]\nname = \"a.\"\nfile = \"a.zone\"\n").unwrap();
        c.apply(&Overrides {
            listen: vec!["127.0.0.1:9999".parse().unwrap()],
            zones_dir: Some("/tmp/z".into()),
            data_dir: None,
            workers: Some(2),
        })
        .unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:9999".parse().unwrap()]);
        assert_eq!(c.zones.directory, PathBuf::from("/tmp/z"));
        assert!(c.zones.zone.is_empty());
        assert_eq!(c.runtime.workers, 2);
    }

    #[test]
    fn zone_dir_scan_uses_file_names() {
        let dir = std::env::temp_dir().join(format!("muninn-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b.example.zone"), "").unwrap();
        std::fs::write(dir.join("a.zone"), "").unwrap();
        std::fs::write(dir.join("notes.txt"), "").unwrap();
        let mut c = Config::default();
        c.zones.directory = dir.clone();
        c.zones.zone.push(ZoneEntry {
            name: "A.".into(),
            file: Some("/x/a.zone".into()),
            managed: Managed::File,
        });
        let err = c.zone_sources().unwrap_err();
        assert!(matches!(err, ConfigError::DuplicateZone { .. }), "{err}");
        c.zones.zone.clear();
        let names: Vec<String> = c
            .zone_sources()
            .unwrap()
            .iter()
            .map(|s| s.origin.to_string())
            .collect();
        assert_eq!(names, ["a.", "b.example."]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn origin_from_file_names() {
        let o = |p: &str| origin_from_file_name(Path::new(p)).map(|n| n.to_string());
        assert_eq!(o("zones/example.test.zone"), Some("example.test.".into()));
        assert_eq!(o("example.test"), None);
        assert_eq!(o(".zone"), None);
    }
}
