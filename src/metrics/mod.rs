//! Metrics: hot-path counters kept per worker, and everything else evaluated at scrape.
//!
//! - Query counters live in per-worker blocks ([`QueryCounters`], inside the listeners'
//!   `UdpStats`/`TcpStats`); [`Metrics::add_listeners`] keeps `Arc`s to them and the scrape
//!   sums them. Nothing is aggregated in between and nothing on the query path is shared.
//! - Zone gauges are computed from the zone snapshot current at scrape time.
//! - Reload and heavy-job figures are recorded through [`ReloadMetrics`] and [`JobMetrics`]
//!   (cold paths).
//! - Process figures are read from /proc at scrape time.
//! - Store figures (change stream, file size) and purge job figures are read from the
//!   store's [`crate::store::StreamStats`] and the [`Jobs`] totals at scrape time.
//! - Cache, recursion and upstream figures (only when recursion is enabled) are read from
//!   the resolver's own counters and its cache at scrape time.
//!
//! [`Metrics`] is a prometheus-client [`Collector`]; [`http`] serves it as `/metrics` in
//! the OpenMetrics text format.

mod counters;
pub mod http;
mod process;
mod query_log;

pub use counters::{
    CloseCounters, CloseReason, DropReason, LATENCY_BUCKETS, QTYPES, QueryCounters, QueryTotals,
    RCODES, Writer,
};
pub use http::{
    CONTENT_TYPE_OPENMETRICS, CONTENT_TYPE_PROMETHEUS, MetricsConfig, spawn_metrics_server,
    to_prometheus_text,
};
pub use process::ProcessStats;
pub use query_log::{QUERY_LOG_TARGET, QueryLog};

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hickory_proto::rr::{LowerName, Name};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::cache::Resolver;
use crate::jobs::Jobs;
use crate::reload::{LoadReport, LoadStats, ZoneOutcome};
use crate::server::{Listeners, TcpInFlight, TcpStats, UdpStats};
use crate::store::Store;
use crate::zone::ZoneSet;

/// Everything `/metrics` reports. Create one per process, share it in an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    zones: Arc<ArcSwap<ZoneSet>>,
    ready: AtomicBool,
    sources: Mutex<Vec<ListenerSources>>,
    reload: ReloadMetrics,
    jobs: Arc<JobMetrics>,
    /// The caching resolver, when recursion is enabled.
    resolver: OnceLock<Resolver>,
    /// The zone store, once open.
    store: OnceLock<Store>,
    /// The background job registry, once the store is open.
    purge_jobs: OnceLock<Jobs>,
    /// Where zones were loaded from, image use, background imports.
    loads: OnceLock<Arc<LoadStats>>,
}

/// The counter blocks of one [`Listeners`].
#[derive(Debug)]
struct ListenerSources {
    udp: Vec<Arc<UdpStats>>,
    tcp: Vec<Arc<TcpStats>>,
    tcp_in_flight: TcpInFlight,
}

impl Metrics {
    /// `zones` is the snapshot cell the handler serves from (zone gauges read it).
    pub fn new(zones: Arc<ArcSwap<ZoneSet>>) -> Arc<Metrics> {
        Arc::new(Metrics {
            zones,
            ready: AtomicBool::new(false),
            sources: Mutex::new(Vec::new()),
            reload: ReloadMetrics::default(),
            jobs: Arc::new(JobMetrics::default()),
            resolver: OnceLock::new(),
            store: OnceLock::new(),
            purge_jobs: OnceLock::new(),
            loads: OnceLock::new(),
        })
    }

    /// Includes the store's figures (change stream, size on disk); set once.
    pub fn set_store(&self, store: Store) {
        let _ = self.store.set(store);
    }

    /// Includes the zone loader's counters; set once.
    pub fn set_load_stats(&self, stats: Arc<LoadStats>) {
        let _ = self.loads.set(stats);
    }

    /// Includes the purge job figures; set once.
    pub fn set_purge_jobs(&self, jobs: Jobs) {
        let _ = self.purge_jobs.set(jobs);
    }

    /// Includes the cache, recursion and upstream figures of `resolver` (set once; the
    /// resolver lives as long as the process). Without it those families are absent.
    pub fn set_resolver(&self, resolver: Resolver) {
        let _ = self.resolver.set(resolver);
    }

    /// Includes the counters of these listeners (counted since they started).
    pub fn add_listeners(&self, listeners: &Listeners) {
        lock(&self.sources).push(ListenerSources {
            udp: listeners.udp_stats().to_vec(),
            tcp: listeners.tcp_stats().to_vec(),
            tcp_in_flight: listeners.tcp_in_flight(),
        });
    }

    /// Marks the server ready (zones loaded, listeners up) or not (shutting down):
    /// `/health` answers 200 only while ready.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn reload(&self) -> &ReloadMetrics {
        &self.reload
    }

    pub fn jobs(&self) -> &Arc<JobMetrics> {
        &self.jobs
    }

    /// A prometheus-client registry holding this collector.
    pub fn registry(self: &Arc<Self>) -> Registry {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Arc::clone(self)));
        registry
    }

    /// The query counters of every listener, summed per transport.
    pub fn query_totals(&self) -> (QueryTotals, QueryTotals) {
        let mut udp = QueryTotals::default();
        let mut tcp = QueryTotals::default();
        for src in lock(&self.sources).iter() {
            for s in &src.udp {
                s.counters.add_to(&mut udp);
                s.recursed.add_to(&mut udp);
            }
            for s in &src.tcp {
                s.counters.add_to(&mut tcp);
            }
        }
        (udp, tcp)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data stays consistent even if a holder panicked (plain pushes and reads).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A histogram of durations for cold paths (reloads, heavy jobs), in seconds.
#[derive(Debug)]
pub struct DurationHistogram {
    bounds: &'static [f64],
    /// Count per bucket (not cumulative); one more than `bounds` for `+Inf`.
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

/// Bucket bounds (seconds) for reloads and heavy jobs: 1 ms to 5 min.
pub const SLOW_BUCKETS: [f64; 13] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0,
];

impl DurationHistogram {
    pub fn new(bounds: &'static [f64]) -> DurationHistogram {
        DurationHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn encode(&self, enc: &mut prometheus_client::encoding::MetricEncoder<'_>) -> fmt::Result {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        enc.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// Zone reloads, recorded by the lifecycle code.
#[derive(Debug)]
pub struct ReloadMetrics {
    succeeded: AtomicU64,
    failed: AtomicU64,
    duration: DurationHistogram,
    /// Unix time (ms) of the last successful reload; 0 before the first.
    last_success_ms: AtomicU64,
    /// When each zone's current contents were loaded.
    zone_loaded: Mutex<HashMap<LowerName, SystemTime>>,
}

impl Default for ReloadMetrics {
    fn default() -> Self {
        ReloadMetrics {
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            duration: DurationHistogram::new(&SLOW_BUCKETS),
            last_success_ms: AtomicU64::new(0),
            zone_loaded: Mutex::new(HashMap::new()),
        }
    }
}

impl ReloadMetrics {
    /// Records one reload (the startup load included): whether it succeeded and how long
    /// it took.
    pub fn record(&self, ok: bool, duration: Duration) {
        if ok {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.last_success_ms.store(ms, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.duration.observe(duration);
    }

    /// Records that zone `origin` was (re)loaded with new contents at `at`. Zones no longer
    /// served are not reported, whatever is recorded here.
    pub fn zone_loaded(&self, origin: &Name, at: SystemTime) {
        lock(&self.zone_loaded).insert(LowerName::new(origin), at);
    }

    /// Records a finished load from its report: a success when no zone failed, and the
    /// load time of every zone added or changed.
    pub fn record_report(&self, report: &LoadReport) {
        self.record(report.failed() == 0, report.elapsed);
        let now = SystemTime::now();
        for z in &report.zones {
            if matches!(z.outcome, ZoneOutcome::Added | ZoneOutcome::Changed)
                && let Ok(origin) = Name::from_ascii(&z.origin)
            {
                self.zone_loaded(&origin, now);
            }
        }
    }

    pub fn succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// Heavy-job runtime activity by job kind, recorded by whoever submits jobs.
///
/// ```ignore
/// let job = metrics.jobs().enqueue("zone_load"); // queued
/// heavy.spawn(async move {
///     let running = job.start();                  // running
///     let ok = do_work().is_ok();
///     running.finish(ok);                         // done, duration recorded
/// });
/// ```
#[derive(Debug, Default)]
pub struct JobMetrics {
    kinds: Mutex<Vec<(&'static str, Arc<JobStats>)>>,
}

#[derive(Debug)]
struct JobStats {
    queued: AtomicU64,
    running: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    duration: DurationHistogram,
}

impl JobMetrics {
    fn stats(&self, kind: &'static str) -> Arc<JobStats> {
        let mut kinds = lock(&self.kinds);
        if let Some((_, s)) = kinds.iter().find(|(k, _)| *k == kind) {
            return Arc::clone(s);
        }
        let s = Arc::new(JobStats {
            queued: AtomicU64::new(0),
            running: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            duration: DurationHistogram::new(&SLOW_BUCKETS),
        });
        kinds.push((kind, Arc::clone(&s)));
        s
    }

    /// A job of `kind` was submitted; it counts as queued until [`QueuedJob::start`] (or
    /// until dropped, if it never runs).
    pub fn enqueue(&self, kind: &'static str) -> QueuedJob {
        let stats = self.stats(kind);
        stats.queued.fetch_add(1, Ordering::Relaxed);
        QueuedJob { stats: Some(stats) }
    }
}

/// A submitted job not yet started.
#[must_use]
#[derive(Debug)]
pub struct QueuedJob {
    stats: Option<Arc<JobStats>>,
}

impl QueuedJob {
    /// The job starts running now.
    pub fn start(mut self) -> RunningJob {
        let stats = self.stats.take();
        if let Some(s) = &stats {
            s.queued.fetch_sub(1, Ordering::Relaxed);
            s.running.fetch_add(1, Ordering::Relaxed);
        }
        RunningJob {
            stats,
            started: Instant::now(),
        }
    }
}

impl Drop for QueuedJob {
    fn drop(&mut self) {
        if let Some(s) = &self.stats {
            s.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A running job; dropping it without [`RunningJob::finish`] counts as a failure.
#[must_use]
#[derive(Debug)]
pub struct RunningJob {
    stats: Option<Arc<JobStats>>,
    started: Instant,
}

impl RunningJob {
    pub fn finish(mut self, ok: bool) {
        self.end(ok);
    }

    fn end(&mut self, ok: bool) {
        if let Some(s) = self.stats.take() {
            s.running.fetch_sub(1, Ordering::Relaxed);
            let c = if ok { &s.succeeded } else { &s.failed };
            c.fetch_add(1, Ordering::Relaxed);
            s.duration.observe(self.started.elapsed());
        }
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.end(false);
    }
}

// ---- Exposition ----

type Labels<'a, const N: usize> = [(&'static str, &'a str); N];
/// Series of a counter labelled by transport and one more label.
type Series2 = Vec<(Labels<'static, 2>, u64)>;

fn counter<S: EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(S, u64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        m.encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(v, None)?;
    }
    Ok(())
}

/// A counter without labels.
fn counter1(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// A gauge without labels; `None` writes the family with no sample.
fn gauge1<V: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: Option<V>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    match v {
        Some(v) => m.encode_gauge(&v),
        None => Ok(()),
    }
}

fn gauge<S: EncodeLabelSet, V: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(S, V)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        m.encode_family(labels)?.encode_gauge(v)?;
    }
    Ok(())
}

const TRANSPORTS: [&str; 2] = ["udp", "tcp"];

/// Scrape-time sums over all listeners.
#[derive(Default)]
struct Snapshot {
    queries: [QueryTotals; 2],
    received: [u64; 2],
    recv_errors: u64,
    tcp_accepted: u64,
    tcp_accept_errors: u64,
    tcp_closed: [u64; CloseReason::ALL.len()],
    tcp_in_flight: u64,
}

impl Metrics {
    fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for src in lock(&self.sources).iter() {
            for u in &src.udp {
                u.counters.add_to(&mut s.queries[0]);
                u.recursed.add_to(&mut s.queries[0]);
                s.received[0] += u.received.load(Ordering::Relaxed);
                s.recv_errors += u.recv_errors.load(Ordering::Relaxed);
            }
            for t in &src.tcp {
                t.counters.add_to(&mut s.queries[1]);
                s.received[1] += t.queries.load(Ordering::Relaxed);
                s.tcp_accepted += t.accepted.load(Ordering::Relaxed);
                s.tcp_accept_errors += t.accept_errors.load(Ordering::Relaxed);
                for (sum, r) in s.tcp_closed.iter_mut().zip(CloseReason::ALL) {
                    *sum += t.closed.get(r);
                }
            }
            s.tcp_in_flight += src.tcp_in_flight.get() as u64;
        }
        s
    }

    fn encode_queries(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let s = self.snapshot();
        let per_transport = |f: &dyn Fn(&QueryTotals, &'static str) -> Series2| {
            s.queries
                .iter()
                .zip(TRANSPORTS)
                .flat_map(|(q, t)| f(q, t))
                .collect::<Vec<_>>()
        };
        counter(
            enc,
            "muninn_messages_received",
            "DNS messages received (answered or not).",
            &TRANSPORTS
                .map(|t| [("transport", t)])
                .into_iter()
                .zip(s.received)
                .collect::<Vec<_>>(),
        )?;
        counter(
            enc,
            "muninn_queries",
            "Queries answered, by question type (other: any other type, or no parsable question).",
            &per_transport(&|q, t| {
                QTYPES
                    .iter()
                    .zip(q.qtypes)
                    .map(|(name, v)| ([("transport", t), ("qtype", *name)], v))
                    .collect()
            }),
        )?;
        counter(
            enc,
            "muninn_responses",
            "Responses sent, by response code.",
            &per_transport(&|q, t| {
                RCODES
                    .iter()
                    .zip(q.rcodes)
                    .map(|(name, v)| ([("transport", t), ("rcode", *name)], v))
                    .collect()
            }),
        )?;
        counter(
            enc,
            "muninn_queries_dropped",
            "Messages received and not answered, by reason.",
            &per_transport(&|q, t| {
                DropReason::ALL
                    .iter()
                    .zip(q.dropped)
                    .map(|(r, v)| ([("transport", t), ("reason", r.as_str())], v))
                    .collect()
            }),
        )?;
        {
            let mut m = enc.encode_descriptor(
                "muninn_response_latency_seconds",
                "Time from receiving a query to its response being encoded (UDP: per receive batch).",
                None,
                MetricType::Histogram,
            )?;
            for (q, t) in s.queries.iter().zip(TRANSPORTS) {
                let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                    .iter()
                    .copied()
                    .chain([f64::INFINITY])
                    .zip(q.latency)
                    .collect();
                let count = q.latency.iter().sum();
                m.encode_family(&[("transport", t)])?
                    .encode_histogram::<NoLabelSet>(
                        q.latency_sum_ns as f64 / 1e9,
                        count,
                        &buckets,
                        None,
                    )?;
            }
        }
        gauge(
            enc,
            "muninn_queries_in_flight",
            "Queries received and not yet answered (TCP: answered, not yet written).",
            &[
                ([("transport", "udp")], s.queries[0].in_flight),
                ([("transport", "tcp")], s.tcp_in_flight),
            ],
        )?;
        counter(
            enc,
            "muninn_receive_errors",
            "UDP receive errors.",
            &[([("transport", "udp")], s.recv_errors)],
        )?;
        counter1(
            enc,
            "muninn_tcp_accept_errors",
            "Failed TCP accepts (e.g. out of file descriptors).",
            s.tcp_accept_errors,
        )?;
        counter1(
            enc,
            "muninn_tcp_connections_accepted",
            "TCP connections accepted and served (not counting those closed at once over the cap).",
            s.tcp_accepted,
        )?;
        let closed_served: u64 = CloseReason::ALL
            .iter()
            .zip(s.tcp_closed)
            .filter(|(r, _)| **r != CloseReason::Cap)
            .map(|(_, v)| v)
            .sum();
        gauge1(
            enc,
            "muninn_tcp_connections_open",
            "TCP connections open now.",
            Some(s.tcp_accepted.saturating_sub(closed_served)),
        )?;
        counter(
            enc,
            "muninn_tcp_connections_closed",
            "TCP connections closed, by reason (cap: closed at once, the connection cap was reached).",
            &CloseReason::ALL
                .iter()
                .zip(s.tcp_closed)
                .map(|(r, v)| ([("reason", r.as_str())], v))
                .collect::<Vec<_>>(),
        )
    }

    fn encode_zones(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let zones = self.zones.load();
        let mut rows: Vec<(String, u64, u32, Option<f64>)> = {
            let loaded = lock(&self.reload.zone_loaded);
            zones
                .iter()
                .map(|z| {
                    (
                        z.origin().to_string(),
                        z.record_count() as u64,
                        z.serial(),
                        loaded.get(z.origin_lower()).copied().map(unix_seconds),
                    )
                })
                .collect()
        };
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        gauge1(
            enc,
            "muninn_zones",
            "Zones served.",
            Some(rows.len() as u64),
        )?;
        gauge(
            enc,
            "muninn_zone_records",
            "Records in each served zone.",
            &rows
                .iter()
                .map(|r| ([("zone", r.0.as_str())], r.1))
                .collect::<Vec<_>>(),
        )?;
        gauge(
            enc,
            "muninn_zone_serial",
            "SOA serial of each served zone.",
            &rows
                .iter()
                .map(|r| ([("zone", r.0.as_str())], u64::from(r.2)))
                .collect::<Vec<_>>(),
        )?;
        gauge(
            enc,
            "muninn_zone_last_load_timestamp_seconds",
            "When each served zone's current contents were loaded (Unix time).",
            &rows
                .iter()
                .filter_map(|r| Some(([("zone", r.0.as_str())], r.3?)))
                .collect::<Vec<_>>(),
        )
    }

    fn encode_reloads(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let r = &self.reload;
        counter(
            enc,
            "muninn_reloads",
            "Zone loads and reloads, by result.",
            &[
                ([("result", "success")], r.succeeded()),
                ([("result", "failure")], r.failed()),
            ],
        )?;
        let mut m = enc.encode_descriptor(
            "muninn_reload_duration_seconds",
            "Duration of zone loads and reloads.",
            None,
            MetricType::Histogram,
        )?;
        r.duration.encode(&mut m)?;
        let last = r.last_success_ms.load(Ordering::Relaxed);
        gauge1(
            enc,
            "muninn_reload_last_success_timestamp_seconds",
            "When the last successful zone load finished (Unix time).",
            (last > 0).then(|| last as f64 / 1000.0),
        )
    }

    fn encode_loads(&self, enc: &mut DescriptorEncoder<'_>, l: &LoadStats) -> fmt::Result {
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            enc,
            "muninn_zone_loads",
            "Zones loaded, by source: a parsed file, a zone image, or a build from the store.",
            &[
                ([("from", "file")], v(&l.from_file)),
                ([("from", "image")], v(&l.from_image)),
                ([("from", "store")], v(&l.from_store)),
            ],
        )?;
        counter(
            enc,
            "muninn_zone_image_unused",
            "Loads from the store that could not use the zone image, by reason.",
            &[
                ([("reason", "missing")], v(&l.image_missing)),
                ([("reason", "stale")], v(&l.image_stale)),
                ([("reason", "damaged")], v(&l.image_damaged)),
            ],
        )?;
        counter(
            enc,
            "muninn_zone_image_writes",
            "Zone images written, by result.",
            &[
                ([("result", "success")], v(&l.images_written)),
                ([("result", "failure")], v(&l.image_write_failed)),
            ],
        )?;
        counter(
            enc,
            "muninn_zone_imports",
            "Background imports of parsed zone files into the store, by result.",
            &[
                ([("result", "success")], v(&l.imports_done)),
                ([("result", "failure")], v(&l.imports_failed)),
                ([("result", "superseded")], v(&l.imports_superseded)),
            ],
        )
    }

    fn encode_jobs(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let mut kinds = lock(&self.jobs.kinds).clone();
        kinds.sort_by_key(|(k, _)| *k);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        gauge(
            enc,
            "muninn_heavy_jobs_queued",
            "Heavy jobs submitted and not started yet.",
            &kinds
                .iter()
                .map(|(k, s)| ([("job", *k)], load(&s.queued)))
                .collect::<Vec<_>>(),
        )?;
        gauge(
            enc,
            "muninn_heavy_jobs_running",
            "Heavy jobs running now.",
            &kinds
                .iter()
                .map(|(k, s)| ([("job", *k)], load(&s.running)))
                .collect::<Vec<_>>(),
        )?;
        counter(
            enc,
            "muninn_heavy_jobs",
            "Heavy jobs finished, by result.",
            &kinds
                .iter()
                .flat_map(|(k, s)| {
                    [
                        ([("job", *k), ("result", "success")], load(&s.succeeded)),
                        ([("job", *k), ("result", "failure")], load(&s.failed)),
                    ]
                })
                .collect::<Vec<_>>(),
        )?;
        let mut m = enc.encode_descriptor(
            "muninn_heavy_job_duration_seconds",
            "Running time of heavy jobs (queue time excluded).",
            None,
            MetricType::Histogram,
        )?;
        for (k, s) in &kinds {
            s.duration.encode(&mut m.encode_family(&[("job", *k)])?)?;
        }
        Ok(())
    }

    fn encode_store(&self, enc: &mut DescriptorEncoder<'_>, store: &Store) -> fmt::Result {
        let st = store.stats();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        // A stat() per scrape, on the admin thread.
        gauge1(
            enc,
            "muninn_store_file_bytes",
            "Size of the zone store file on disk.",
            std::fs::metadata(store.path()).ok().map(|m| m.len()),
        )?;
        counter1(
            enc,
            "muninn_store_events_published",
            "Change events published on the store's change stream (one per committed change of a zone).",
            load(&st.published),
        )?;
        gauge1(
            enc,
            "muninn_store_events_retained_bytes",
            "Approximate bytes held by the change events the stream keeps for consumers that have not read them.",
            Some(load(&st.retained_bytes)),
        )?;
        gauge1(
            enc,
            "muninn_store_events_retained",
            "Change events the stream keeps for consumers that have not read them.",
            Some(load(&st.retained_events)),
        )?;
        gauge1(
            enc,
            "muninn_store_events_retained_limit_bytes",
            "Bound on the bytes of change events kept for consumers ([store] change_stream_bytes; the newest event is kept even when larger).",
            Some(load(&st.limit_bytes)),
        )?;
        gauge1(
            enc,
            "muninn_store_events_retained_limit",
            "Bound on the change events kept for consumers ([store] change_stream_events).",
            Some(load(&st.limit_events)),
        )?;
        counter1(
            enc,
            "muninn_store_stream_resyncs",
            "Times a change stream consumer fell behind and rebuilt its state from the store.",
            load(&st.resyncs),
        )?;
        counter1(
            enc,
            "muninn_store_stream_skipped_events",
            "Change events lagging consumers never saw (they resynchronized instead).",
            load(&st.skipped),
        )?;
        counter(
            enc,
            "muninn_store_changes_seen",
            "Committed store changes seen on the change stream, by kind (update: change transaction or purge batch; replace: whole-zone import).",
            &[
                ([("kind", "update")], load(&st.updates_seen)),
                ([("kind", "replace")], load(&st.replaces_seen)),
            ],
        )
    }

    fn encode_purges(&self, enc: &mut DescriptorEncoder<'_>, jobs: &Jobs) -> fmt::Result {
        let t = jobs.totals();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter1(
            enc,
            "muninn_purge_records_deleted",
            "Records deleted from the store by purges.",
            load(&t.records_deleted),
        )?;
        counter1(
            enc,
            "muninn_purge_batches",
            "Purge batches committed (one write transaction each).",
            load(&t.batches),
        )?;
        enc.encode_descriptor(
            "muninn_purge_braked_seconds",
            "Seconds purges paused because they made query workers wait for a CPU.",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(
            &Duration::from_nanos(load(&t.braked_ns)).as_secs_f64(),
            None,
        )?;
        gauge1(
            enc,
            "muninn_purge_jobs_running",
            "Purge jobs running now.",
            Some(load(&t.running)),
        )?;
        counter(
            enc,
            "muninn_purge_jobs",
            "Purge jobs finished, by final state.",
            &[
                ([("state", "done")], load(&t.done)),
                ([("state", "failed")], load(&t.failed)),
                ([("state", "cancelled")], load(&t.cancelled)),
            ],
        )
    }

    fn encode_resolver(&self, enc: &mut DescriptorEncoder<'_>, r: &Resolver) -> fmt::Result {
        let st = r.stats();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let cache = r.cache();
        counter1(
            enc,
            "muninn_cache_hits",
            "Recursive queries answered from fresh cache data (directly or through cached CNAMEs).",
            load(&st.cache_hits),
        )?;
        counter1(
            enc,
            "muninn_cache_misses",
            "Recursive queries not answerable from fresh cache data (an upstream fetch was started or joined).",
            load(&st.cache_misses),
        )?;
        counter1(
            enc,
            "muninn_cache_stale_answers",
            "Answers made of expired data because the upstreams failed or were slow (RFC 8767).",
            load(&st.stale_served),
        )?;
        counter1(
            enc,
            "muninn_cache_evictions",
            "Cache entries evicted to stay within recursion.cache_size.",
            cache.evictions(),
        )?;
        counter1(
            enc,
            "muninn_cache_expirations",
            "Cache entries dropped at the end of their TTL plus the serve-stale window.",
            cache.expirations(),
        )?;
        gauge1(
            enc,
            "muninn_cache_entries",
            "Entries in the cache (updated by cache housekeeping, every second).",
            Some(cache.entry_count()),
        )?;
        gauge1(
            enc,
            "muninn_cache_bytes",
            "Estimated bytes held by the cache (updated by cache housekeeping).",
            Some(cache.weighted_size()),
        )?;
        gauge1(
            enc,
            "muninn_cache_max_bytes",
            "Memory bound of the cache (recursion.cache_size).",
            Some(cache.max_bytes()),
        )?;
        gauge1(
            enc,
            "muninn_recursion_pending",
            "Recursive queries waiting for upstream answers now.",
            Some(r.pending() as u64),
        )?;
        counter1(
            enc,
            "muninn_recursion_coalesced",
            "Recursive queries that joined an upstream fetch already in flight for the same question.",
            load(&st.coalesced),
        )?;
        counter(
            enc,
            "muninn_recursion_shed",
            "Recursive queries refused work by a limit (client_limit, pending_limit: SERVFAIL at once; upstream_limit: the fetch was not started).",
            &[
                ([("reason", "client_limit")], load(&st.client_limited)),
                ([("reason", "pending_limit")], load(&st.pending_limited)),
                ([("reason", "upstream_limit")], load(&st.upstream_limited)),
            ],
        )?;
        counter1(
            enc,
            "muninn_recursion_servfail",
            "SERVFAIL answers from the resolver (upstream failure without stale data, cached failure, limits, TCP client timeout).",
            load(&st.servfail),
        )?;
        counter1(
            enc,
            "muninn_recursion_client_timeouts",
            "Recursive queries unanswered at recursion.client_timeout_ms (UDP: dropped, TCP: SERVFAIL).",
            load(&st.client_timeouts),
        )?;
        counter1(
            enc,
            "muninn_upstream_fetches",
            "Upstream fetches started (one per distinct question in flight).",
            load(&st.fetches),
        )?;
        counter1(
            enc,
            "muninn_upstream_fetches_cancelled",
            "Upstream fetches abandoned before finishing because every client waiting on them left.",
            load(&st.cancelled_fetches),
        )?;
        gauge1(
            enc,
            "muninn_upstream_fetches_in_flight",
            "Upstream fetches running now.",
            Some(r.upstream_in_flight() as u64),
        )?;
        let servers: Vec<(String, u64, f64, &DurationHistogram)> = r
            .upstreams()
            .server_stats()
            .map(|s| (s.addr.to_string(), s.queries, s.srtt.as_secs_f64(), s.rtt))
            .collect();
        counter(
            enc,
            "muninn_upstream_queries",
            "Queries sent to each upstream (every attempt; a TCP retry is part of its attempt).",
            &servers
                .iter()
                .map(|s| ([("upstream", s.0.as_str())], s.1))
                .collect::<Vec<_>>(),
        )?;
        counter1(
            enc,
            "muninn_upstream_tcp_retries",
            "Upstream attempts retried over TCP after a truncated UDP reply (RFC 7766 section 5).",
            load(&st.upstream_tcp),
        )?;
        counter1(
            enc,
            "muninn_upstream_timeouts",
            "Upstream attempts without a usable reply within recursion.timeout_ms.",
            load(&st.upstream_timeouts),
        )?;
        counter(
            enc,
            "muninn_upstream_errors",
            "Failed upstream attempts, by kind (rcode: an error rcode such as SERVFAIL or REFUSED; network: a socket error; bad_answer: a reply that could not be used).",
            &[
                ([("kind", "rcode")], load(&st.upstream_rcode_errors)),
                ([("kind", "network")], load(&st.upstream_network_errors)),
                ([("kind", "bad_answer")], load(&st.upstream_bad_answers)),
            ],
        )?;
        counter1(
            enc,
            "muninn_upstream_ignored_replies",
            "Packets ignored while waiting for an upstream reply: wrong source, ID or question, or unparsable (possible spoofing).",
            load(&st.ignored_replies),
        )?;
        gauge(
            enc,
            "muninn_upstream_srtt_seconds",
            "Smoothed round-trip time of each upstream (0 before the first reply); the fastest is asked first.",
            &servers
                .iter()
                .map(|s| ([("upstream", s.0.as_str())], s.2))
                .collect::<Vec<_>>(),
        )?;
        let mut m = enc.encode_descriptor(
            "muninn_upstream_rtt_seconds",
            "Round-trip time of upstream attempts answered usably (NOERROR or NXDOMAIN).",
            None,
            MetricType::Histogram,
        )?;
        for s in &servers {
            s.3.encode(&mut m.encode_family(&[("upstream", s.0.as_str())])?)?;
        }
        Ok(())
    }

    fn encode_process(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let p = ProcessStats::read();
        let int = |v: Option<u64>| v.map(|v| v as f64);
        let mut m = enc.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?;
        if let Some(cpu) = p.cpu_seconds {
            m.encode_counter::<NoLabelSet, _, u64>(&cpu, None)?;
        }
        gauge1(
            enc,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            int(p.resident_bytes),
        )?;
        gauge1(
            enc,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            int(p.virtual_bytes),
        )?;
        gauge1(
            enc,
            "process_open_fds",
            "Number of open file descriptors.",
            int(p.open_fds),
        )?;
        gauge1(
            enc,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            int(p.max_fds),
        )?;
        gauge1(
            enc,
            "process_threads",
            "Number of OS threads.",
            int(p.threads),
        )?;
        gauge1(
            enc,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        )
    }
}

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        gauge(
            &mut enc,
            "muninn_build_info",
            "Always 1; the version is in the label.",
            &[([("version", env!("CARGO_PKG_VERSION"))], 1u64)],
        )?;
        gauge1(
            &mut enc,
            "muninn_ready",
            "1 once zones are loaded and listeners run, 0 before and while stopping.",
            Some(u64::from(self.is_ready())),
        )?;
        self.encode_queries(&mut enc)?;
        self.encode_zones(&mut enc)?;
        self.encode_reloads(&mut enc)?;
        if let Some(loads) = self.loads.get() {
            self.encode_loads(&mut enc, loads)?;
        }
        self.encode_jobs(&mut enc)?;
        if let Some(store) = self.store.get() {
            self.encode_store(&mut enc, store)?;
        }
        if let Some(jobs) = self.purge_jobs.get() {
            self.encode_purges(&mut enc, jobs)?;
        }
        if let Some(r) = self.resolver.get() {
            self.encode_resolver(&mut enc, r)?;
        }
        self.encode_process(&mut enc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::ZoneReport;

    fn zone_report(origin: &str, outcome: ZoneOutcome) -> ZoneReport {
        ZoneReport {
            origin: origin.to_string(),
            outcome,
            from: None,
            parsed_on: None,
            elapsed: Duration::from_millis(1),
            errors: Vec::new(),
        }
    }

    #[test]
    fn reload_report_counts_and_load_times() {
        let r = ReloadMetrics::default();
        let report = LoadReport {
            zones: vec![
                zone_report("a.test.", ZoneOutcome::Added),
                zone_report("b.test.", ZoneOutcome::Unchanged),
                zone_report("c.test.", ZoneOutcome::Changed),
            ],
            served: 3,
            elapsed: Duration::from_millis(30),
        };
        r.record_report(&report);
        assert_eq!((r.succeeded(), r.failed()), (1, 0));
        let loaded = lock(&r.zone_loaded);
        let key = |n: &str| LowerName::new(&Name::from_ascii(n).unwrap());
        assert!(loaded.contains_key(&key("a.test.")));
        assert!(!loaded.contains_key(&key("b.test.")));
        assert!(loaded.contains_key(&key("c.test.")));
        drop(loaded);

        let failed = LoadReport {
            zones: vec![zone_report(
                "a.test.",
                ZoneOutcome::Failed { kept_old: true },
            )],
            served: 1,
            elapsed: Duration::from_millis(2),
        };
        r.record_report(&failed);
        assert_eq!((r.succeeded(), r.failed()), (1, 1));
        assert_eq!(r.duration.count(), 2);
    }

    #[test]
    fn job_guards_keep_gauges_balanced() {
        let jobs = JobMetrics::default();
        let a = jobs.enqueue("load");
        let b = jobs.enqueue("load");
        let s = jobs.stats("load");
        assert_eq!(s.queued.load(Ordering::Relaxed), 2);
        let running = a.start();
        assert_eq!(s.queued.load(Ordering::Relaxed), 1);
        assert_eq!(s.running.load(Ordering::Relaxed), 1);
        running.finish(true);
        drop(b); // never started
        let c = jobs.enqueue("load").start();
        drop(c); // dropped while running: a failure
        assert_eq!(s.queued.load(Ordering::Relaxed), 0);
        assert_eq!(s.running.load(Ordering::Relaxed), 0);
        assert_eq!(s.succeeded.load(Ordering::Relaxed), 1);
        assert_eq!(s.failed.load(Ordering::Relaxed), 1);
        assert_eq!(s.duration.count(), 2);
    }
}
