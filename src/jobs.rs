//! Background jobs on the zone store (today: bulk purges) and their registry.
//!
//! [`Jobs`] is what the admin API and `muninn db purge` drive: [`Jobs::start_purge`] checks
//! the request, registers a job and spawns it on the heavy-job runtime through the root
//! [`TaskTracker`]; [`Jobs::get`] and [`Jobs::list`] return [`JobStatus`] snapshots read
//! from the job's atomics, so polling costs the job nothing.
//!
//! A purge job counts its candidates (`total`), then loops: read the next batch (a blocking
//! read on the heavy runtime's blocking pool, at most `[store] purge_workers` at once over
//! all jobs, the next one read while the writer commits the current one), commit it on the
//! store writer thread, then add the batch's figures to the counters. Counters only ever
//! grow, and only after a commit: `deleted` is exactly what disappeared from the store.
//! When the root token is cancelled (shutdown), a job stops between batches ("cancelled");
//! everything committed stays, and purging again finishes the work.
//!
//! Limits (`[store]`): `max_jobs` running at once (more are refused), `jobs_kept` finished
//! jobs remembered, `purge_batch_size` records per write transaction.
//!
//! Store I/O lives in `store::purge`; HTTP lives with the admin API, not here.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::StoreConfig;
use crate::store::{
    Managed, PurgeBatch, PurgeFilter, PurgeOutcome, PurgePlan, SkipReason, Store, StoreError,
    ZoneIds, schema,
};

/// What to purge: every record tagged `tag` (`key=value`), optionally only in `zone`, of
/// one `type`, or last updated before `updated_before` (seconds since the Unix epoch).
/// A dry run counts what would be deleted and changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeSpec {
    pub tag: String,
    pub zone: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// Record type mnemonic (`A`, `TXT`, `TYPE65280`, ...).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub rtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_before: Option<u64>,
}

impl PurgeSpec {
    /// A purge of every record tagged `tag`.
    pub fn tag(tag: &str) -> PurgeSpec {
        PurgeSpec {
            tag: tag.to_string(),
            zone: None,
            dry_run: false,
            rtype: None,
            updated_before: None,
        }
    }

    /// The store filter, checked for syntax.
    pub fn filter(&self) -> Result<PurgeFilter, JobError> {
        if !schema::valid_tag(&self.tag) {
            return Err(JobError::Invalid(
                StoreError::BadTag(self.tag.clone()).to_string(),
            ));
        }
        let zone = match &self.zone {
            Some(z) => Some(
                crate::config::parse_zone_name(z)
                    .map_err(|e| JobError::Invalid(format!("invalid zone name {z:?}: {e}")))?,
            ),
            None => None,
        };
        let rtype = match &self.rtype {
            Some(t) => Some(parse_type(t)?),
            None => None,
        };
        Ok(PurgeFilter {
            tag: self.tag.clone(),
            zone,
            rtype,
            updated_before: self.updated_before,
        })
    }
}

fn parse_type(text: &str) -> Result<RecordType, JobError> {
    let upper = text.to_ascii_uppercase();
    let parsed = match upper.strip_prefix("TYPE") {
        // RFC 3597 §5: TYPEnnn names any type by number.
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            n.parse::<u16>().ok().map(RecordType::from)
        }
        _ => RecordType::from_str(&upper).ok(),
    };
    match parsed {
        Some(t) if !matches!(t, RecordType::ANY | RecordType::AXFR | RecordType::IXFR) => Ok(t),
        _ => Err(JobError::Invalid(format!("unknown record type {text:?}"))),
    }
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    fn code(self) -> u8 {
        match self {
            JobState::Running => 0,
            JobState::Done => 1,
            JobState::Failed => 2,
            JobState::Cancelled => 3,
        }
    }

    fn from_code(c: u8) -> JobState {
        match c {
            1 => JobState::Done,
            2 => JobState::Failed,
            3 => JobState::Cancelled,
            _ => JobState::Running,
        }
    }
}

/// Matching records a purge kept, for one zone and reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub zone: String,
    pub reason: String,
    pub count: u64,
}

/// A snapshot of one job. Counters never decrease between snapshots of the same job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: u64,
    /// "purge".
    pub kind: String,
    pub state: JobState,
    pub spec: PurgeSpec,
    /// Candidates (records carrying the tag, in the zone and of the type when given)
    /// examined so far.
    pub processed: u64,
    /// Records removed from the store so far (0 for a dry run).
    pub deleted: u64,
    /// Candidates when the job started (0 while it is still counting them); grows if
    /// records are tagged during the purge and the purge reaches them.
    pub total: u64,
    /// Candidates processed per second since the job started.
    pub rate: f64,
    /// Seconds until `processed` reaches `total` at the current rate (None until known;
    /// 0 once done).
    pub eta_secs: Option<f64>,
    /// Seconds since the Unix epoch.
    pub started: u64,
    pub finished: Option<u64>,
    pub error: Option<String>,
    /// Matching records kept on purpose (see `skipped_by`).
    #[serde(default)]
    pub skipped: u64,
    /// Dry run: records that would be deleted.
    #[serde(default)]
    pub would_delete: u64,
    /// Why matching records were kept, per zone.
    #[serde(default)]
    pub skipped_by: Vec<Skipped>,
    /// Write transactions committed (dry run: batches examined).
    #[serde(default)]
    pub batches: u64,
    /// Seconds the job has run (until it finished).
    #[serde(default)]
    pub elapsed_secs: f64,
    /// Seconds of `elapsed_secs` the job paused because it was making query workers wait
    /// (`[store] purge_worker_wait_budget_us`).
    #[serde(default)]
    pub braked_secs: f64,
}

/// Why a job could not be started. Display is the reason, for API and CLI answers.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "{max} jobs are running already ([store] max_jobs); start this one when one has finished"
    )]
    TooMany { max: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// The `[store]` settings jobs obey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSettings {
    pub purge_batch_size: usize,
    pub purge_workers: usize,
    /// See `[store] purge_worker_wait_budget_us`.
    pub purge_worker_wait_budget: Duration,
    pub max_jobs: usize,
    pub jobs_kept: usize,
}

impl JobSettings {
    pub fn from_config(c: &StoreConfig) -> JobSettings {
        JobSettings {
            purge_batch_size: c.purge_batch_size.clamp(1, crate::config::MAX_PURGE_BATCH),
            purge_workers: c.purge_workers.max(1),
            purge_worker_wait_budget: Duration::from_micros(c.purge_worker_wait_budget_us),
            max_jobs: c.max_jobs.max(1),
            jobs_kept: c.jobs_kept.max(1),
        }
    }
}

impl Default for JobSettings {
    fn default() -> JobSettings {
        JobSettings::from_config(&StoreConfig::default())
    }
}

/// Process-wide job figures (for metrics).
#[derive(Debug, Default)]
pub struct JobTotals {
    /// Records removed by purges.
    pub records_deleted: AtomicU64,
    /// Purge write transactions committed.
    pub batches: AtomicU64,
    /// Nanoseconds purges paused to let queries through.
    pub braked_ns: AtomicU64,
    pub running: AtomicU64,
    pub done: AtomicU64,
    pub failed: AtomicU64,
    pub cancelled: AtomicU64,
}

/// The job registry. Cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Jobs({:?})", self.inner.settings)
    }
}

struct Inner {
    store: Store,
    heavy: Handle,
    token: CancellationToken,
    tracker: TaskTracker,
    settings: JobSettings,
    /// Batch reads in progress over all jobs (`purge_workers`).
    readers: Arc<Semaphore>,
    jobs: Mutex<BTreeMap<u64, Arc<Job>>>,
    next_id: AtomicU64,
    totals: JobTotals,
}

struct Job {
    id: u64,
    spec: PurgeSpec,
    started: u64,
    clock: Instant,
    state: AtomicU8,
    /// Unix seconds, 0 while running.
    finished: AtomicU64,
    /// Nanoseconds run, 0 while running.
    ran_ns: AtomicU64,
    processed: AtomicU64,
    deleted: AtomicU64,
    would_delete: AtomicU64,
    skipped: AtomicU64,
    total: AtomicU64,
    batches: AtomicU64,
    braked_ns: AtomicU64,
    error: Mutex<Option<String>>,
    skipped_by: Mutex<BTreeMap<(String, SkipReason), u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain inserts and reads: consistent even if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Job {
    fn state(&self) -> JobState {
        JobState::from_code(self.state.load(Ordering::Acquire))
    }

    fn status(&self) -> JobStatus {
        let state = self.state();
        // [`Job::record`] raises `total`, then `processed`, then the rest; reading in the
        // opposite order (Acquire pairs with its AcqRel) gives a snapshot in which
        // deleted + skipped <= processed <= total, even while a batch is being recorded.
        let deleted = self.deleted.load(Ordering::Acquire);
        let would_delete = self.would_delete.load(Ordering::Acquire);
        let skipped = self.skipped.load(Ordering::Acquire);
        let batches = self.batches.load(Ordering::Acquire);
        let processed = self.processed.load(Ordering::Acquire);
        let total = self.total.load(Ordering::Acquire).max(processed);
        let elapsed = match self.ran_ns.load(Ordering::Acquire) {
            0 => self.clock.elapsed(),
            ns => Duration::from_nanos(ns),
        };
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            processed as f64 / secs
        } else {
            0.0
        };
        let eta_secs = match state {
            JobState::Done => Some(0.0),
            JobState::Running if rate > 0.0 => Some((total - processed) as f64 / rate),
            _ => None,
        };
        let finished = self.finished.load(Ordering::Acquire);
        JobStatus {
            id: self.id,
            kind: "purge".into(),
            state,
            spec: self.spec.clone(),
            processed,
            deleted,
            total,
            rate,
            eta_secs,
            started: self.started,
            finished: (finished != 0).then_some(finished),
            error: lock(&self.error).clone(),
            skipped,
            would_delete,
            skipped_by: lock(&self.skipped_by)
                .iter()
                .map(|((zone, reason), &count)| Skipped {
                    zone: zone.clone(),
                    reason: reason.describe().to_string(),
                    count,
                })
                .collect(),
            batches,
            elapsed_secs: secs,
            braked_secs: Duration::from_nanos(self.braked_ns.load(Ordering::Acquire)).as_secs_f64(),
        }
    }

    /// Adds a committed batch's figures (one job task records, so the load-then-add of
    /// `processed` cannot race). Order matters, see [`Job::status`].
    fn record(&self, outcome: &PurgeOutcome, dry_run: bool, totals: &JobTotals) {
        let processed = self.processed.load(Ordering::Acquire) + outcome.processed;
        // Records tagged after the count can be reached too: total follows.
        self.total.fetch_max(processed, Ordering::AcqRel);
        self.processed
            .fetch_add(outcome.processed, Ordering::AcqRel);
        {
            let mut by = lock(&self.skipped_by);
            for ((reason, zone), n) in &outcome.skipped {
                *by.entry((zone.clone(), *reason)).or_default() += n;
            }
        }
        self.batches.fetch_add(1, Ordering::AcqRel);
        self.skipped
            .fetch_add(outcome.skipped_total(), Ordering::AcqRel);
        if dry_run {
            self.would_delete
                .fetch_add(outcome.deleted, Ordering::AcqRel);
        } else {
            self.deleted.fetch_add(outcome.deleted, Ordering::AcqRel);
            totals
                .records_deleted
                .fetch_add(outcome.deleted, Ordering::Relaxed);
            totals.batches.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Jobs {
    /// `token` and `tracker` are the root ones: jobs stop when the token is cancelled and
    /// shutdown waits for them. Jobs run on `heavy` (the heavy-job runtime).
    pub fn new(
        store: Store,
        heavy: Handle,
        token: CancellationToken,
        tracker: TaskTracker,
        settings: JobSettings,
    ) -> Jobs {
        Jobs {
            inner: Arc::new(Inner {
                store,
                heavy,
                token,
                tracker,
                readers: Arc::new(Semaphore::new(settings.purge_workers)),
                settings,
                jobs: Mutex::new(BTreeMap::new()),
                next_id: AtomicU64::new(1),
                totals: JobTotals::default(),
            }),
        }
    }

    pub fn settings(&self) -> JobSettings {
        self.inner.settings
    }

    pub fn totals(&self) -> &JobTotals {
        &self.inner.totals
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Checks `spec` and starts the purge in the background; the status returned is the
    /// job's first (running, counters at 0). Refused: a malformed spec, an unknown or
    /// file-managed zone, `max_jobs` jobs running, shutdown in progress. Costs one point read
    /// of the named zone's metadata on the calling thread; everything else runs in the job.
    pub fn start_purge(&self, spec: PurgeSpec) -> Result<JobStatus, JobError> {
        let inner = &self.inner;
        if inner.token.is_cancelled() {
            return Err(JobError::ShuttingDown);
        }
        let filter = spec.filter()?;
        if let Some(zone) = &filter.zone {
            // Cheap checks now so the caller gets the reason; the job checks again.
            let meta = inner
                .store
                .zone_meta(zone)?
                .ok_or_else(|| StoreError::NoSuchZone(zone.to_string()))?;
            if meta.managed != Managed::Store {
                return Err(StoreError::NotStoreManaged(zone.to_string()).into());
            }
        }
        let job = {
            let mut jobs = lock(&inner.jobs);
            let running = jobs
                .values()
                .filter(|j| j.state() == JobState::Running)
                .count();
            if running >= inner.settings.max_jobs {
                return Err(JobError::TooMany {
                    max: inner.settings.max_jobs,
                });
            }
            let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
            let job = Arc::new(Job {
                id,
                spec,
                started: schema::now(),
                clock: Instant::now(),
                state: AtomicU8::new(JobState::Running.code()),
                finished: AtomicU64::new(0),
                ran_ns: AtomicU64::new(0),
                processed: AtomicU64::new(0),
                deleted: AtomicU64::new(0),
                would_delete: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
                total: AtomicU64::new(0),
                batches: AtomicU64::new(0),
                braked_ns: AtomicU64::new(0),
                error: Mutex::new(None),
                skipped_by: Mutex::new(BTreeMap::new()),
            });
            jobs.insert(id, Arc::clone(&job));
            inner.totals.running.fetch_add(1, Ordering::Relaxed);
            job
        };
        let status = job.status();
        info!(
            job = job.id,
            tag = %job.spec.tag,
            zone = job.spec.zone.as_deref().unwrap_or("*"),
            dry_run = job.spec.dry_run,
            "purge started"
        );
        let task_inner = Arc::clone(inner);
        inner
            .tracker
            .spawn_on(run_purge(task_inner, job, filter), &inner.heavy);
        Ok(status)
    }

    pub fn get(&self, id: u64) -> Option<JobStatus> {
        lock(&self.inner.jobs).get(&id).map(|j| j.status())
    }

    /// Every remembered job, oldest first.
    pub fn list(&self) -> Vec<JobStatus> {
        lock(&self.inner.jobs)
            .values()
            .map(|j| j.status())
            .collect()
    }
}

impl Inner {
    /// Forgets the oldest finished jobs beyond `jobs_kept`.
    fn evict(&self, jobs: &mut BTreeMap<u64, Arc<Job>>) {
        let finished: Vec<u64> = jobs
            .values()
            .filter(|j| j.state() != JobState::Running)
            .map(|j| j.id)
            .collect();
        let excess = finished.len().saturating_sub(self.settings.jobs_kept);
        for id in finished.into_iter().take(excess) {
            jobs.remove(&id);
        }
    }
}

async fn run_purge(inner: Arc<Inner>, job: Arc<Job>, filter: PurgeFilter) {
    let result = purge(&inner, &job, filter).await;
    let state = match result {
        Ok(true) => JobState::Done,
        Ok(false) => JobState::Cancelled,
        Err(e) => {
            warn!(job = job.id, "purge failed: {e}");
            *lock(&job.error) = Some(e);
            JobState::Failed
        }
    };
    let ran = u64::try_from(job.clock.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    job.ran_ns.store(ran, Ordering::Release);
    job.finished.store(schema::now().max(1), Ordering::Release);
    {
        // Under the registry lock: whoever sees the job finished sees the eviction done.
        let mut jobs = lock(&inner.jobs);
        job.state.store(state.code(), Ordering::Release);
        inner.evict(&mut jobs);
    }
    let t = &inner.totals;
    t.running.fetch_sub(1, Ordering::Relaxed);
    match state {
        JobState::Done => &t.done,
        JobState::Failed => &t.failed,
        _ => &t.cancelled,
    }
    .fetch_add(1, Ordering::Relaxed);
    let s = job.status();
    info!(
        job = job.id,
        state = state.as_str(),
        processed = s.processed,
        deleted = s.deleted,
        would_delete = s.would_delete,
        skipped = s.skipped,
        elapsed_s = s.elapsed_secs,
        "purge finished"
    );
}

type Prepared = Result<(PurgeBatch, ZoneIds), String>;

/// Reads the next batch after `cursor` on a blocking thread, within the readers bound.
fn spawn_prepare(
    inner: &Arc<Inner>,
    plan: &Arc<PurgePlan>,
    cursor: Option<Vec<u8>>,
    mut ids: ZoneIds,
) -> JoinHandle<Prepared> {
    let readers = Arc::clone(&inner.readers);
    let store = inner.store.clone();
    let plan = Arc::clone(plan);
    let limit = inner.settings.purge_batch_size;
    let heavy = inner.heavy.clone();
    inner.heavy.spawn(async move {
        let permit = readers.acquire_owned().await.map_err(|e| e.to_string())?;
        heavy
            .spawn_blocking(move || {
                let _permit = permit;
                store
                    .purge_prepare(&plan, cursor.as_deref(), limit, &mut ids)
                    .map(|b| (b, ids))
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())?
    })
}

/// The job's work; Ok(false) when stopped by shutdown.
async fn purge(inner: &Arc<Inner>, job: &Job, filter: PurgeFilter) -> Result<bool, String> {
    let dry_run = job.spec.dry_run;
    let plan = {
        let permit = Arc::clone(&inner.readers)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let store = inner.store.clone();
        inner
            .heavy
            .spawn_blocking(move || {
                let _permit = permit;
                store.purge_plan(filter)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    job.total.fetch_max(plan.total, Ordering::AcqRel);
    let plan = Arc::new(plan);
    let mut next = Some(spawn_prepare(inner, &plan, None, ZoneIds::default()));
    let mut brake = crate::pace::Brake::new(inner.settings.purge_worker_wait_budget);
    while let Some(reading) = next.take() {
        brake.start();
        let (batch, ids) = reading.await.map_err(|e| e.to_string())??;
        if inner.token.is_cancelled() {
            return Ok(false);
        }
        if let Some(cursor) = &batch.cursor {
            // Read the next batch while this one is written.
            next = Some(spawn_prepare(inner, &plan, Some(cursor.clone()), ids));
        }
        if batch.is_empty() {
            continue;
        }
        let outcome = if dry_run {
            let store = inner.store.clone();
            let plan = Arc::clone(&plan);
            inner
                .heavy
                .spawn_blocking(move || store.purge_dry_run(&plan, &batch))
                .await
                .map_err(|e| e.to_string())?
        } else {
            inner.store.purge_batch(&plan, batch).await
        }
        .map_err(|e| e.to_string())?;
        job.record(&outcome, dry_run, &inner.totals);
        let pause = brake.pause();
        if !pause.is_zero() {
            let ns = u64::try_from(pause.as_nanos()).unwrap_or(u64::MAX);
            job.braked_ns.fetch_add(ns, Ordering::AcqRel);
            inner.totals.braked_ns.fetch_add(ns, Ordering::Relaxed);
            tokio::select! {
                () = inner.token.cancelled() => return Ok(false),
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_types_parse_by_mnemonic_or_number() {
        assert_eq!(parse_type("a").unwrap(), RecordType::A);
        assert_eq!(parse_type("TXT").unwrap(), RecordType::TXT);
        assert_eq!(parse_type("type65280").unwrap(), RecordType::from(65280));
        assert_eq!(parse_type("TYPE1").unwrap(), RecordType::A);
        for bad in ["", "ANY", "AXFR", "IXFR", "TYPE", "TYPE70000", "BOGUS"] {
            assert!(parse_type(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn specs_become_filters() {
        let spec = PurgeSpec {
            zone: Some("Example.TEST".into()),
            rtype: Some("aaaa".into()),
            updated_before: Some(7),
            ..PurgeSpec::tag("env=old")
        };
        let f = spec.filter().unwrap();
        assert_eq!(f.tag, "env=old");
        assert_eq!(f.zone.unwrap().to_string(), "Example.TEST.");
        assert_eq!(f.rtype, Some(RecordType::AAAA));
        assert_eq!(f.updated_before, Some(7));
        let err = PurgeSpec::tag("env").filter().unwrap_err();
        assert!(err.to_string().starts_with("bad tag \"env\""), "{err}");
    }
}
