//! Loading and reloading the served zones, with the zone store behind them.
//!
//! A [`ZoneLoader`] remembers, per zone, where it came from and a fingerprint of its file
//! (size, mtime and a hash of the content). A reload re-reads the zone list and, per zone:
//!
//! - **file-managed** (`managed = "file"`, the default; the file wins): an unchanged file
//!   keeps its `Arc<Zone>`; at startup, a file whose fingerprint matches the one stored with
//!   the zone is not parsed: the snapshot is read from the zone's image (see
//!   [`crate::zone::image`]) or, when the image is missing, stale or damaged, built from the
//!   store; a changed file is parsed and the parsed zone is served at once; its import into
//!   the store (one write transaction replacing the zone's records, then a new image) runs
//!   afterwards in the background, off the path to "ready".
//! - **store-managed** (`managed = "store"`): the zone lives in the store and changes only
//!   through [`crate::store::Store::apply`]; a configured file only seeds a zone that is not
//!   in the store yet. The snapshot updater (a change-stream consumer) patches the served
//!   snapshot with each committed change ([`Zone::patch`]) and rebuilds it from the store
//!   when a patch cannot, or to compact it (see `snapshot_updater`). A rebuild that took no
//!   replayed change is the zone as stored: its image is written in the background (at most
//!   one per zone per `IMAGE_MIN_INTERVAL` while changes go on), so that a restart after
//!   changes reads the image rather than building the zone from the store.
//!
//! Every change is published as one new [`ZoneSet`] with a single atomic store: queries see
//! either the old or the new set, never a mix. A zone that fails to load keeps serving its
//! previous version.
//!
//! # Background imports
//!
//! [`Imports`] runs whole-zone imports one at a time, the newest version of each zone only:
//! a version superseded before its import started is dropped, never imported, so two
//! imports of one zone never race and a burst of reloads costs at most the import already
//! running plus one. The stored
//! fingerprint changes in the import's transaction, so until it commits (or after a crash
//! mid-import) the next start parses the file again. While a zone's import is queued or
//! running, its file is parsed rather than trusted to match the store; a store-managed zone
//! waits for it. A graceful stop gives unfinished imports the shutdown grace period.
//!
//! Everything here is blocking, CPU-heavy work: it must run on the heavy-job runtime
//! (see `runtime`), never on a latency worker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_proto::rr::{LowerName, Name};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::config::{Config, ConfigError, Overrides, ZoneSource};
pub use crate::store::Fingerprint;
use crate::store::{
    ChangeEvent, ChangeKind, Import, Lagged, Managed, Source, Store, StoreError, StoreOptions,
    Subscription, ZoneMeta,
};
use crate::zone::file::{ZoneFileError, load_zone};
use crate::zone::image::{self, ImageError};
use crate::zone::{Zone, ZoneSet};

/// Where a served zone came from.
#[derive(Debug, Clone)]
struct Loaded {
    source: ZoneSource,
    fingerprint: Option<Fingerprint>,
}

/// What happened to one zone during a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneOutcome {
    /// New zone, loaded (from its file or from the store).
    Added,
    /// File changed, new version loaded.
    Changed,
    /// File unchanged (or store-managed and already served), previous `Arc<Zone>` kept.
    Unchanged,
    /// No longer configured, stopped.
    Removed,
    /// Failed to load; `kept_old` when an earlier version is still served.
    Failed { kept_old: bool },
}

/// Where a loaded zone's snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadedFrom {
    /// Parsed from its zone file.
    File,
    /// Read from its zone image.
    Image,
    /// Built from the records in the store.
    Store,
}

impl LoadedFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadedFrom::File => "file",
            LoadedFrom::Image => "image",
            LoadedFrom::Store => "store",
        }
    }
}

/// One zone's line in a [`LoadReport`].
#[derive(Debug, Clone)]
pub struct ZoneReport {
    pub origin: String,
    pub outcome: ZoneOutcome,
    /// Where the new snapshot came from (None when nothing was loaded).
    pub from: Option<LoadedFrom>,
    /// Name of the thread that parsed the file (None when nothing was parsed: unchanged, or
    /// built from the store), so tests and logs can show where parsing ran.
    pub parsed_on: Option<String>,
    pub elapsed: Duration,
    /// Errors as `file:line: message` lines.
    pub errors: Vec<String>,
}

/// Summary of one (re)load.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub zones: Vec<ZoneReport>,
    pub served: usize,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn count(&self, f: impl Fn(&ZoneOutcome) -> bool) -> usize {
        self.zones.iter().filter(|z| f(&z.outcome)).count()
    }

    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, ZoneOutcome::Failed { .. }))
    }
}

/// Why a reload did not even get to the zones (everything keeps serving as before).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("zone load job did not complete: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// One published zone snapshot.
#[derive(Clone)]
struct Snap {
    zone: Arc<Zone>,
    managed: Managed,
    /// The zone's journal sequence in the store when this snapshot was made (orders the
    /// snapshots of a store-managed zone).
    generation: u64,
}

/// The served snapshots and the cell queries read. The loader and the snapshot updater both
/// publish through it, one at a time, so neither can overwrite a newer version of a zone
/// with an older one.
pub struct Published {
    zones: Arc<ArcSwap<ZoneSet>>,
    current: Mutex<HashMap<LowerName, Snap>>,
}

impl Published {
    fn new(zones: Arc<ArcSwap<ZoneSet>>) -> Published {
        Published {
            zones,
            current: Mutex::new(HashMap::new()),
        }
    }

    fn snap(&self, key: &LowerName) -> Option<Snap> {
        self.current.lock().ok()?.get(key).cloned()
    }

    fn store_managed(&self) -> Vec<Name> {
        self.current.lock().map_or_else(
            |_| Vec::new(),
            |cur| {
                cur.values()
                    .filter(|s| s.managed == Managed::Store)
                    .map(|s| s.zone.origin().clone())
                    .collect()
            },
        )
    }

    /// Publishes the loader's result: `next` plus the current version of every zone in
    /// `keep`. A store-managed zone the updater already advanced past `next` keeps its newer
    /// version. Returns the replaced set (to retire).
    fn publish_all(
        &self,
        next: HashMap<LowerName, Snap>,
        keep: &HashSet<LowerName>,
    ) -> (Arc<ZoneSet>, usize) {
        let Ok(mut cur) = self.current.lock() else {
            return (self.zones.load_full(), 0);
        };
        let mut map: HashMap<LowerName, Snap> = HashMap::new();
        for k in keep {
            if let Some(s) = cur.get(k) {
                map.insert(k.clone(), s.clone());
            }
        }
        for (k, s) in next {
            let newer = match cur.get(&k) {
                Some(c) if c.managed == Managed::Store && s.managed == Managed::Store => {
                    c.generation > s.generation
                }
                _ => false,
            };
            let snap = if newer { cur.get(&k).cloned() } else { None };
            map.insert(k, snap.unwrap_or(s));
        }
        let mut set = ZoneSet::new();
        for s in map.values() {
            set.insert(Arc::clone(&s.zone));
        }
        let served = set.len();
        *cur = map;
        (self.zones.swap(Arc::new(set)), served)
    }

    /// Publishes a new version of one store-managed zone that is still served and older
    /// (or, with `same_generation`, as old: a compacted copy of the served version).
    fn publish_one(&self, snap: Snap, same_generation: bool) -> Option<Arc<ZoneSet>> {
        let mut cur = self.current.lock().ok()?;
        let key = snap.zone.origin_lower().clone();
        let c = cur.get(&key)?;
        let newer =
            c.generation < snap.generation || (same_generation && c.generation == snap.generation);
        if c.managed != Managed::Store || !newer {
            return None;
        }
        let mut set = (**self.zones.load()).clone();
        set.insert(Arc::clone(&snap.zone));
        cur.insert(key, snap);
        Some(self.zones.swap(Arc::new(set)))
    }
}

/// How zones were loaded since start, and what the background imports did (monotonic
/// counters, for logs, tests and metrics).
#[derive(Debug, Default)]
pub struct LoadStats {
    pub from_file: AtomicU64,
    pub from_image: AtomicU64,
    pub from_store: AtomicU64,
    /// Loads from the store that found no image.
    pub image_missing: AtomicU64,
    /// ... an image made from another state of the zone (or another format version).
    pub image_stale: AtomicU64,
    /// ... an image that failed its checks or could not be read.
    pub image_damaged: AtomicU64,
    pub images_written: AtomicU64,
    pub image_write_failed: AtomicU64,
    pub imports_done: AtomicU64,
    pub imports_failed: AtomicU64,
    /// Queued imports replaced by a newer version of the zone before they started.
    pub imports_superseded: AtomicU64,
}

impl LoadStats {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn image_fallback(&self, e: &ImageError) {
        LoadStats::count(match e {
            ImageError::Missing => &self.image_missing,
            ImageError::Stale | ImageError::Format => &self.image_stale,
            ImageError::Io(_) | ImageError::Damaged(_) => &self.image_damaged,
        });
    }
}

/// The background import queue (see the module documentation).
pub struct Imports {
    state: Mutex<ImportState>,
    /// Bumped after every change of `state`; waiters re-check on each.
    changed: watch::Sender<()>,
    stats: Arc<LoadStats>,
}

#[derive(Default)]
struct ImportState {
    pending: BTreeMap<LowerName, Import>,
    running: Option<LowerName>,
}

impl Imports {
    fn new(stats: Arc<LoadStats>) -> Imports {
        Imports {
            state: Mutex::new(ImportState::default()),
            changed: watch::Sender::new(()),
            stats,
        }
    }

    /// Queues the import of a published zone, replacing a queued older version.
    fn enqueue(&self, key: LowerName, import: Import) {
        let superseded = match self.state.lock() {
            Ok(mut st) => st.pending.insert(key, import),
            Err(_) => return,
        };
        if superseded.is_some() {
            LoadStats::count(&self.stats.imports_superseded);
        }
        // The superseded snapshot (if no longer served) is freed here, on the heavy runtime.
        drop(superseded);
        self.changed.send_replace(());
    }

    /// True while an import of `key` is queued or running.
    pub fn busy(&self, key: &LowerName) -> bool {
        self.state
            .lock()
            .is_ok_and(|st| st.pending.contains_key(key) || st.running.as_ref() == Some(key))
    }

    /// Number of imports queued or running.
    pub fn outstanding(&self) -> usize {
        self.state
            .lock()
            .map_or(0, |st| st.pending.len() + usize::from(st.running.is_some()))
    }

    /// Waits until no import of `key` (None: of any zone) is queued or running.
    pub async fn settled(&self, key: Option<&LowerName>) {
        let mut changes = self.changed.subscribe();
        loop {
            let busy = match key {
                Some(k) => self.busy(k),
                None => self.outstanding() > 0,
            };
            if !busy || changes.changed().await.is_err() {
                return;
            }
        }
    }

    fn take_next(&self) -> Option<(LowerName, Import)> {
        let mut st = self.state.lock().ok()?;
        let (key, import) = st.pending.pop_first()?;
        st.running = Some(key.clone());
        Some((key, import))
    }

    fn finish(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.running = None;
        }
        self.changed.send_replace(());
    }
}

/// Runs queued imports one at a time until the loader (the queue's owner) is gone. After
/// each committed import, writes the zone's image, unless a newer version is already
/// served (its own import will write one).
async fn import_worker(imports: Weak<Imports>, store: Store, published: Arc<Published>) {
    let Some(mut changes) = imports.upgrade().map(|i| i.changed.subscribe()) else {
        return;
    };
    loop {
        let Some(queue) = imports.upgrade() else {
            return;
        };
        let Some((key, import)) = queue.take_next() else {
            drop(queue);
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        };
        // Marks the import finished however this iteration ends, so that no waiter
        // (a reload, the shutdown) can wait for it forever.
        let running = Running(&queue);
        let stats = Arc::clone(&queue.stats);
        import_one(&store, &published, &stats, &key, import).await;
        if queue.outstanding() <= 1 {
            // The import's buffers (here and on the store writer) go back to the system.
            crate::sys::trim_heap();
        }
        drop(running);
    }
}

struct Running<'a>(&'a Imports);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

async fn import_one(
    store: &Store,
    published: &Published,
    stats: &LoadStats,
    key: &LowerName,
    import: Import,
) {
    let zone = Arc::clone(&import.zone);
    let origin = zone.origin().clone();
    let records = zone.record_count();
    let started = Instant::now();
    info!(zone = %origin, records, "zone import into the store started");
    let meta = match store.import_meta(import).await {
        Ok((_, meta)) => meta,
        Err(e) => {
            LoadStats::count(&stats.imports_failed);
            // The parsed zone is still served; the stored fingerprint is unchanged, so the
            // next start parses and imports the file again.
            error!(zone = %origin, "zone not saved in the store: {e}");
            return;
        }
    };
    LoadStats::count(&stats.imports_done);
    info!(
        zone = %origin,
        records,
        serial = meta.serial,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "zone imported into the store"
    );
    let current = published
        .snap(key)
        .is_some_and(|s| Arc::ptr_eq(&s.zone, &zone));
    if current {
        save_image(store.clone(), zone, meta, stats).await;
    }
}

/// Writes the image of `zone` (the stored state `meta`) on a blocking heavy-job thread.
async fn save_image(store: Store, zone: Arc<Zone>, meta: ZoneMeta, stats: &LoadStats) {
    let started = Instant::now();
    let origin = zone.origin().clone();
    let saved = tokio::task::spawn_blocking(move || {
        let path = store.image_path(&meta);
        store.save_image(&zone, &meta).map(|size| (size, path))
    })
    .await;
    match saved {
        Ok(Ok((size, path))) => {
            LoadStats::count(&stats.images_written);
            info!(
                zone = %origin,
                path = %path.display(),
                size,
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "zone image written"
            );
        }
        Ok(Err(e)) => {
            LoadStats::count(&stats.image_write_failed);
            warn!(zone = %origin, "zone image not written: {e}");
        }
        Err(e) => {
            LoadStats::count(&stats.image_write_failed);
            warn!(zone = %origin, "zone image job failed: {e}");
        }
    }
}

/// Owns the served zones' bookkeeping, the store, and the snapshot cell that queries read.
pub struct ZoneLoader {
    config_path: Option<PathBuf>,
    overrides: Overrides,
    zones: Arc<ArcSwap<ZoneSet>>,
    published: Arc<Published>,
    loaded: HashMap<LowerName, Loaded>,
    store: Option<Store>,
    store_dir: Option<PathBuf>,
    stats: Arc<LoadStats>,
    /// Where the snapshot updater runs (default: the heavy-job runtime).
    updater_rt: Option<Handle>,
    imports: Arc<Imports>,
}

impl ZoneLoader {
    /// `config_path` is re-read on every reload (None: built-in defaults); `overrides` are
    /// applied on top each time.
    pub fn new(
        config_path: Option<PathBuf>,
        overrides: Overrides,
        zones: Arc<ArcSwap<ZoneSet>>,
    ) -> ZoneLoader {
        let stats = Arc::new(LoadStats::default());
        ZoneLoader {
            config_path,
            overrides,
            published: Arc::new(Published::new(Arc::clone(&zones))),
            zones,
            loaded: HashMap::new(),
            store: None,
            store_dir: None,
            imports: Arc::new(Imports::new(Arc::clone(&stats))),
            stats,
            updater_rt: None,
        }
    }

    /// Runs the store's snapshot updater on `runtime` (normal priority) instead of the
    /// heavy-job runtime the loader runs on.
    pub fn with_updater_runtime(mut self, runtime: Handle) -> ZoneLoader {
        self.updater_rt = Some(runtime);
        self
    }

    /// How zones were loaded and imported so far.
    pub fn stats(&self) -> &Arc<LoadStats> {
        &self.stats
    }

    /// The background import queue (to wait for imports: tests, shutdown).
    pub fn imports(&self) -> &Arc<Imports> {
        &self.imports
    }

    /// The snapshot cell this loader publishes into.
    pub fn zones(&self) -> &Arc<ArcSwap<ZoneSet>> {
        &self.zones
    }

    /// The zone store (open after the first load).
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Reads the config (file + overrides) as a reload sees it.
    pub fn read_config(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config_path {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        config.apply(&self.overrides)?;
        Ok(config)
    }

    /// Opens the store on first use and starts its change-stream consumers on this (the
    /// heavy-job) runtime.
    fn open_store(&mut self, config: &Config) -> Result<Store, StoreError> {
        if let Some(store) = &self.store {
            if self.store_dir.as_deref() != Some(config.data_dir.as_path()) {
                warn!(
                    data_dir = %config.data_dir.display(),
                    "data_dir changed; the store stays where it is until a restart"
                );
            }
            return Ok(store.clone());
        }
        let started = Instant::now();
        let store = Store::open_dir(
            &config.data_dir,
            StoreOptions {
                writer_priority: config.runtime.heavy_priority(),
                cache_bytes: config.store.cache_size,
                event_capacity: config.store.change_stream_events,
                event_bytes: config.store.change_stream_bytes,
            },
        )?;
        info!(
            path = %store.path().display(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "zone store open"
        );
        let heavy = Handle::current();
        // The updater applies each change as a patch in microseconds; on a normal-priority
        // thread a change is served at once even when the heavy threads get no CPU
        // (SCHED_IDLE). Rebuilds and retired snapshots still go to the heavy runtime.
        let updater = self.updater_rt.clone().unwrap_or_else(|| heavy.clone());
        updater.spawn(snapshot_updater(
            store.clone(),
            Arc::clone(&self.published),
            store.subscribe("snapshot-updater"),
            heavy.clone(),
            Arc::clone(&self.stats),
        ));
        heavy.spawn(event_counter(store.clone(), store.subscribe("metrics")));
        heavy.spawn(import_worker(
            Arc::downgrade(&self.imports),
            store.clone(),
            Arc::clone(&self.published),
        ));
        self.store = Some(store.clone());
        self.store_dir = Some(config.data_dir.clone());
        Ok(store)
    }

    /// Re-reads the zone list and every zone file, then publishes the new zone set.
    /// Must be awaited on the heavy-job runtime: zones are loaded in parallel on it (one
    /// task per zone to load, so `heavy_workers` bounds the CPU used).
    pub async fn reload(&mut self) -> Result<LoadReport, ReloadError> {
        let started = Instant::now();
        let config = self.read_config()?;
        let sources = config.zone_sources()?;
        let store = self.open_store(&config)?;
        let heavy = Handle::current();

        let mut reports = Vec::new();
        let mut next_loaded: HashMap<LowerName, Loaded> = HashMap::new();
        let mut next: HashMap<LowerName, Snap> = HashMap::new();
        let mut keep: HashSet<LowerName> = HashSet::new();
        let mut jobs = Vec::new();
        let mut configured = HashSet::new();
        for source in sources {
            let key = LowerName::new(&source.origin);
            configured.insert(key.clone());
            let fingerprint = source.file.as_deref().map(Fingerprint::of);
            let previous = self.loaded.get(&key);
            let served = self.published.snap(&key).is_some();
            let unchanged = previous.is_some_and(|prev| {
                prev.source == source
                    && served
                    && match source.managed {
                        // The updater keeps a store-managed zone current.
                        Managed::Store => true,
                        Managed::File => matches!(
                            (&fingerprint, &prev.fingerprint),
                            (Some(Ok(fp)), Some(old)) if fp == old
                        ),
                    }
            });
            if unchanged {
                reports.push(ZoneReport {
                    origin: source.origin.to_string(),
                    outcome: ZoneOutcome::Unchanged,
                    from: None,
                    parsed_on: None,
                    elapsed: Duration::ZERO,
                    errors: Vec::new(),
                });
                if let Some(prev) = previous {
                    next_loaded.insert(key.clone(), prev.clone());
                }
                keep.insert(key);
                continue;
            }
            // A store-managed zone must not be decided on while an import of it (from when
            // it was file-managed) is still to commit.
            if source.managed == Managed::Store && self.imports.busy(&key) {
                self.imports.settled(Some(&key)).await;
            }
            let job_source = source.clone();
            let job_store = store.clone();
            let fp = fingerprint.as_ref().and_then(|f| f.as_ref().ok()).copied();
            let importing = self.imports.busy(&key);
            let stats = Arc::clone(&self.stats);
            let job = heavy
                .spawn(async move { load_one(&job_source, &job_store, fp, importing, &stats) });
            jobs.push((key, source, fingerprint, job));
        }
        let mut imports = Vec::new();

        for (key, source, fingerprint, job) in jobs {
            let loaded = job.await?;
            let previous = self.loaded.get(&key);
            let origin = source.origin.to_string();
            let fp_error = match &fingerprint {
                Some(Err(e)) => source
                    .file
                    .as_ref()
                    .map(|f| format!("{}: {e}", f.display())),
                _ => None,
            };
            match loaded.result {
                Ok(snap) if fp_error.is_none() || source.managed == Managed::Store => {
                    if let Some(import) = loaded.import {
                        imports.push((key.clone(), import));
                    }
                    reports.push(ZoneReport {
                        origin,
                        outcome: if previous.is_some() {
                            ZoneOutcome::Changed
                        } else {
                            ZoneOutcome::Added
                        },
                        from: Some(loaded.from),
                        parsed_on: loaded.parsed_on,
                        elapsed: loaded.elapsed,
                        errors: Vec::new(),
                    });
                    next_loaded.insert(
                        key.clone(),
                        Loaded {
                            source,
                            fingerprint: fingerprint.and_then(Result::ok),
                        },
                    );
                    next.insert(key, snap);
                }
                result => {
                    let mut errors: Vec<String> = match result {
                        Err(e) => e,
                        Ok(_) => Vec::new(),
                    };
                    errors.extend(fp_error);
                    let kept_old = previous.is_some() && self.published.snap(&key).is_some();
                    reports.push(ZoneReport {
                        origin,
                        outcome: ZoneOutcome::Failed { kept_old },
                        from: None,
                        parsed_on: loaded.parsed_on,
                        elapsed: loaded.elapsed,
                        errors,
                    });
                    // The previous version (if any) keeps serving, still under its old
                    // fingerprint, so the next reload tries this file again.
                    if let Some(prev) = previous {
                        next_loaded.insert(key.clone(), prev.clone());
                        keep.insert(key);
                    }
                }
            }
        }

        for (key, prev) in &self.loaded {
            if !configured.contains(key) {
                reports.push(ZoneReport {
                    origin: prev.source.origin.to_string(),
                    outcome: ZoneOutcome::Removed,
                    from: None,
                    parsed_on: None,
                    elapsed: Duration::ZERO,
                    errors: Vec::new(),
                });
            }
        }

        let (retired, served) = self.published.publish_all(next, &keep);
        self.loaded = next_loaded;
        // Served first, stored after: the imports run in the background.
        for (key, import) in imports {
            self.imports.enqueue(key, import);
        }
        let loaded_any = reports
            .iter()
            .any(|r| matches!(r.outcome, ZoneOutcome::Added | ZoneOutcome::Changed));
        retire(retired).await;
        if loaded_any {
            // Parsing and building free large buffers in the middle of the heap; without
            // this they stay resident (measured: +15 MB after a 100,000-name parse).
            crate::sys::trim_heap();
        }
        reports.sort_by(|a, b| a.origin.cmp(&b.origin));
        Ok(LoadReport {
            zones: reports,
            served,
            elapsed: started.elapsed(),
        })
    }
}

/// What loading one zone produced.
struct LoadedZone {
    result: Result<Snap, Vec<String>>,
    from: LoadedFrom,
    /// Thread that parsed the file; None when the zone came from the store or its image.
    parsed_on: Option<String>,
    elapsed: Duration,
    /// The import to queue once the zone is published (a parsed file-managed zone).
    import: Option<Import>,
}

fn lines(e: impl std::fmt::Display) -> Vec<String> {
    e.to_string().lines().map(str::to_string).collect()
}

/// Loads one zone as its source of truth says (see the module documentation). `importing`:
/// an import of this zone is queued or running, so the store may be about to change.
fn load_one(
    source: &ZoneSource,
    store: &Store,
    fingerprint: Option<Fingerprint>,
    importing: bool,
    stats: &Arc<LoadStats>,
) -> LoadedZone {
    let started = Instant::now();
    let done = |result, from, parsed_on, import| LoadedZone {
        result,
        from,
        parsed_on,
        elapsed: started.elapsed(),
        import,
    };
    let meta = match store.zone_meta(&source.origin) {
        Ok(meta) => meta,
        Err(e) => return done(Err(lines(e)), LoadedFrom::Store, None, None),
    };
    let from_store = match (source.managed, &meta) {
        (Managed::File, Some(m)) => {
            !importing
                && m.managed == Managed::File
                && m.file.as_deref() == source.file.as_deref()
                && fingerprint.is_some()
                && m.fingerprint == fingerprint
        }
        (Managed::Store, Some(m)) => {
            if m.managed != Managed::Store {
                info!(zone = %source.origin, "zone is now store-managed; its stored records are kept");
                if let Err(e) = store.set_managed_blocking(&source.origin, Managed::Store) {
                    return done(Err(lines(e)), LoadedFrom::Store, None, None);
                }
            }
            true
        }
        (_, None) => false,
    };
    if from_store && let Some(meta) = meta {
        let (result, from) =
            from_store_or_image(store, &source.origin, meta, source.managed, stats);
        return done(result, from, None, None);
    }
    let Some(file) = &source.file else {
        return done(
            Err(vec![format!(
                "zone {} is store-managed but not in the store, and has no file to seed it",
                source.origin
            )]),
            LoadedFrom::File,
            None,
            None,
        );
    };
    let parsed = parse_zone(&source.origin, file, &source.include_root);
    let thread = Some(parsed.thread);
    let zone = match parsed.result {
        Ok(zone) => Arc::new(zone),
        Err(e) => return done(Err(lines(e)), LoadedFrom::File, thread, None),
    };
    LoadStats::count(&stats.from_file);
    let import = Import {
        zone: Arc::clone(&zone),
        managed: source.managed,
        file: Some(file.clone()),
        fingerprint,
        source: Source::File,
    };
    if source.managed == Managed::File {
        // Served first; the import is queued once the zone is published.
        return done(
            Ok(Snap {
                zone,
                managed: Managed::File,
                generation: 0,
            }),
            LoadedFrom::File,
            thread,
            Some(import),
        );
    }
    // A store-managed zone is seeded before it is served: changes go to the store, so the
    // zone must be there first, and its snapshots are ordered by the import's sequence.
    match store.import_blocking(import) {
        Ok(event) => {
            LoadStats::count(&stats.imports_done);
            done(
                Ok(Snap {
                    zone,
                    managed: Managed::Store,
                    generation: event.seq,
                }),
                LoadedFrom::File,
                thread,
                None,
            )
        }
        Err(e) => {
            LoadStats::count(&stats.imports_failed);
            let warning = format!("zone {}: not saved in the store: {e}", source.origin);
            done(Err(vec![warning]), LoadedFrom::File, thread, None)
        }
    }
}

/// The zone as stored (`meta`): read from its image when there is a valid one, else built
/// from the records, and then its image is written in the background for the next start.
fn from_store_or_image(
    store: &Store,
    origin: &Name,
    meta: ZoneMeta,
    managed: Managed,
    stats: &Arc<LoadStats>,
) -> (Result<Snap, Vec<String>>, LoadedFrom) {
    let started = Instant::now();
    match store.load_image(&meta) {
        Ok(zone) => {
            LoadStats::count(&stats.from_image);
            debug!(
                zone = %origin,
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "zone read from its image"
            );
            return (
                Ok(Snap {
                    zone: Arc::new(zone),
                    managed,
                    generation: meta.journal_seq,
                }),
                LoadedFrom::Image,
            );
        }
        Err(e) => {
            stats.image_fallback(&e);
            let path = store.image_path(&meta);
            match e {
                ImageError::Missing => {
                    info!(zone = %origin, path = %path.display(), "no zone image; building from the store")
                }
                e => {
                    warn!(zone = %origin, path = %path.display(), reason = e.kind(), "zone image not used ({e}); building from the store")
                }
            }
        }
    }
    match store.build_zone(origin) {
        Ok((zone, meta)) => {
            LoadStats::count(&stats.from_store);
            let zone = Arc::new(zone);
            let generation = meta.journal_seq;
            // The next start reads the image instead of building.
            let (job_store, job_zone, job_stats) =
                (store.clone(), Arc::clone(&zone), Arc::clone(stats));
            if let Ok(handle) = Handle::try_current() {
                handle.spawn(async move {
                    save_image(job_store, job_zone, meta, &job_stats).await;
                });
            }
            (
                Ok(Snap {
                    zone,
                    managed,
                    generation,
                }),
                LoadedFrom::Store,
            )
        }
        Err(e) => (Err(lines(e)), LoadedFrom::Store),
    }
}

/// A patched zone is rebuilt from the store in the background (compaction) once its patch
/// extension holds this fraction of the zone's bytes: every patch copies the extension, so
/// its cost grows with it, while a rebuild costs about the zone's size once.
const COMPACT_RATIO: usize = 16;
/// Bounds of that threshold: small zones are compacted at this many extension bytes (a
/// rebuild is cheap there) ...
const COMPACT_MIN_BYTES: usize = 256 << 10;
/// ... and large ones at this many at most (about 1 ms to copy per change).
const COMPACT_MAX_BYTES: usize = 8 << 20;
/// A patched zone looks up NS/MX/SRV additional data at query time (several times the cost
/// of a referral from build-time links), so it is also compacted once its changes pause
/// for this long ...
const COMPACT_IDLE: Duration = Duration::from_secs(5);
/// ... or at the latest this long after its first patch, under a steady stream of changes.
const COMPACT_MAX_AGE: Duration = Duration::from_secs(60);
/// Events kept per zone while a rebuild runs, to replay onto its result. Past this, they
/// are dropped and another rebuild follows the running one.
const MAX_PENDING_EVENTS: usize = 1 << 16;
/// Changes of more records than this are patched on a heavy-job thread rather than on the
/// updater's normal-priority thread (a single API change is a handful of records; a purge
/// batch is `[store] purge_batch_size`).
const BULK_PATCH_RECORDS: usize = 64;
/// A flat snapshot (a compaction or rebuild result that took no replayed change) is the
/// zone exactly as stored, and is written as the zone's image so that a restart reads it
/// instead of building the zone (1.8 s vs 0.2-0.5 s for a million names). Under a steady
/// stream of changes, compactions come every [`COMPACT_MAX_AGE`] or sooner, and an image is
/// the whole zone (about 120 MB for a million names): a zone's image is written at most
/// once per this interval, which bounds the disk traffic to a fraction of the rebuilds'
/// own cost while keeping a restart's fallback (building from the store) rare ...
const IMAGE_MIN_INTERVAL: Duration = Duration::from_secs(300);
/// ... unless the flat snapshot stays unchanged this long: the changes have stopped, and a
/// restart should find them in the image rather than wait out the interval. Longer than
/// [`COMPACT_IDLE`] plus a rebuild, so that changes paced just above the compaction
/// idle time do not write an image per change.
const IMAGE_IDLE: Duration = Duration::from_secs(60);

/// What the snapshot updater tracks for one store-managed zone.
#[derive(Default)]
struct ZoneUpdates {
    /// A rebuild from the store is running.
    rebuilding: bool,
    /// The served snapshot cannot take further events as patches (a change needed a
    /// rebuild, or events were missed); they wait for the running rebuild.
    stalled: bool,
    /// Events received since the running rebuild started, for replay onto its result.
    pending: Vec<Arc<ChangeEvent>>,
    /// Pending events were dropped: the running rebuild's result cannot be completed.
    overflow: bool,
    /// The zone's origin (case kept), for rebuilds.
    origin: Option<Name>,
    /// When the served snapshot got its first and its latest patch since it was flat.
    first_patch: Option<Instant>,
    last_patch: Option<Instant>,
    /// An image write of this zone is running (one at a time per zone).
    image_writing: bool,
    /// When the updater's last image write of this zone ended (written or failed).
    image_written: Option<Instant>,
    /// The served snapshot is flat and has no image yet (see [`IMAGE_MIN_INTERVAL`]).
    image_wanted: Option<ImageWanted>,
}

/// A flat served snapshot waiting for its image.
struct ImageWanted {
    /// The stored state it equals (the image's tie).
    meta: ZoneMeta,
    /// When it was published.
    since: Instant,
}

impl ZoneUpdates {
    /// When the served snapshot is due for compaction (see [`COMPACT_IDLE`]).
    fn compact_due(&self) -> Option<Instant> {
        if self.rebuilding {
            return None;
        }
        let first = self.first_patch?;
        let last = self.last_patch.unwrap_or(first);
        Some((last + COMPACT_IDLE).min(first + COMPACT_MAX_AGE))
    }

    fn patched(&mut self, now: Instant) {
        self.first_patch.get_or_insert(now);
        self.last_patch = Some(now);
    }

    /// When the flat served snapshot's image is due to be written: at once when this zone
    /// had no image write within [`IMAGE_MIN_INTERVAL`], else at the end of the interval
    /// or once the snapshot stayed unchanged for [`IMAGE_IDLE`], whichever comes first.
    /// None while a write runs or nothing is wanted.
    fn image_due(&self) -> Option<Instant> {
        if self.image_writing {
            return None;
        }
        let wanted = self.image_wanted.as_ref()?;
        Some(match self.image_written {
            None => wanted.since,
            Some(last) => (last + IMAGE_MIN_INTERVAL)
                .min(wanted.since + IMAGE_IDLE)
                .max(wanted.since),
        })
    }

    /// The earliest of the zone's timers (compaction, image write).
    fn next_due(&self) -> Option<Instant> {
        match (self.compact_due(), self.image_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

type Rebuilt = (
    LowerName,
    Name,
    Instant,
    Result<(Zone, ZoneMeta), StoreError>,
);

/// Change-stream consumer that keeps store-managed zones' snapshots current.
///
/// Each committed change that continues the served snapshot (journal sequence =
/// generation + 1) is applied as a patch ([`Zone::patch`]: milliseconds, whatever the zone
/// size) and published at once. A change the patch cannot express, a gap in the sequence or
/// a resync signal stalls the zone and rebuilds it from the store on a heavy-job blocking
/// thread; a zone whose patch extension has grown, or whose changes have paused (see
/// [`COMPACT_IDLE`]), is rebuilt in the background while patches continue (compaction).
/// Either way, the events newer than the rebuild's generation are replayed onto its result
/// before it is published; a result that took none is the zone as stored, and its image is
/// written afterwards on the heavy runtime (see [`IMAGE_MIN_INTERVAL`]). Replaced snapshots
/// are retired on the heavy runtime.
async fn snapshot_updater(
    store: Store,
    published: Arc<Published>,
    mut events: Subscription,
    heavy: Handle,
    stats: Arc<LoadStats>,
) {
    let mut zones: HashMap<LowerName, ZoneUpdates> = HashMap::new();
    let mut rebuilds: JoinSet<Rebuilt> = JoinSet::new();
    let mut image_writes = ImageWrites::default();
    loop {
        let due = zones.values().filter_map(ZoneUpdates::next_due).min();
        let wake_at = tokio::time::Instant::from_std(due.unwrap_or_else(Instant::now));
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at), if due.is_some() => {
                let now = Instant::now();
                for (key, st) in zones.iter_mut() {
                    if st.compact_due().is_some_and(|d| d <= now)
                        && let Some(origin) = st.origin.clone()
                    {
                        debug!(zone = %origin, "compacting the zone snapshot after its changes");
                        start_rebuild(&store, &heavy, &mut rebuilds, st, key.clone(), origin);
                    }
                    if st.image_due().is_some_and(|d| d <= now) {
                        start_image_write(&store, &heavy, &published, &stats, &mut image_writes, st, key);
                    }
                }
            },
            Some(done) = image_writes.jobs.join_next_with_id(), if !image_writes.jobs.is_empty() => {
                // save_image logs and counts its own outcome; a failed write counts as a
                // write for the interval, so that a full disk is not retried at every
                // compaction.
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => {
                        error!("zone image job failed: {e}");
                        e.id()
                    }
                };
                if let Some(st) = image_writes.zones.remove(&id).and_then(|k| zones.get_mut(&k)) {
                    st.image_writing = false;
                    st.image_written = Some(Instant::now());
                }
            },
            event = events.recv() => match event {
                Ok(e) => on_event(&store, &heavy, &published, &mut zones, &mut rebuilds, &e).await,
                Err(Lagged::Resync(_)) => {
                    for origin in published.store_managed() {
                        let key = LowerName::new(&origin);
                        let st = zones.entry(key.clone()).or_default();
                        st.stalled = true;
                        // The store may have moved past a flat snapshot waiting for its image.
                        st.image_wanted = None;
                        // A running rebuild may have missed the lost events too.
                        st.overflow |= st.rebuilding;
                        if !st.rebuilding {
                            start_rebuild(&store, &heavy, &mut rebuilds, st, key, origin);
                        }
                    }
                }
                Err(Lagged::Closed) => return,
            },
            Some(done) = rebuilds.join_next(), if !rebuilds.is_empty() => match done {
                Ok(rebuilt) => {
                    on_rebuilt(&store, &heavy, &published, &mut zones, &mut rebuilds, rebuilt).await
                }
                Err(e) => error!("zone snapshot rebuild job failed: {e}"),
            },
        }
    }
}

/// The image writes the snapshot updater runs, and the zone of each.
#[derive(Default)]
struct ImageWrites {
    jobs: JoinSet<()>,
    zones: HashMap<tokio::task::Id, LowerName>,
}

/// Writes the image of `key`'s served snapshot on the heavy runtime, if that is still the
/// flat snapshot that wanted it.
fn start_image_write(
    store: &Store,
    heavy: &Handle,
    published: &Published,
    stats: &Arc<LoadStats>,
    writes: &mut ImageWrites,
    st: &mut ZoneUpdates,
    key: &LowerName,
) {
    let Some(wanted) = st.image_wanted.take() else {
        return;
    };
    let zone = match published.snap(key) {
        Some(s)
            if s.managed == Managed::Store
                && s.generation == wanted.meta.journal_seq
                && image::writable(&s.zone) =>
        {
            s.zone
        }
        _ => return,
    };
    st.image_writing = true;
    let (store, stats) = (store.clone(), Arc::clone(stats));
    let job = writes.jobs.spawn_on(
        async move { save_image(store, zone, wanted.meta, &stats).await },
        heavy,
    );
    writes.zones.insert(job.id(), key.clone());
}

/// Applies one change event to its zone's served snapshot (see [`snapshot_updater`]).
async fn on_event(
    store: &Store,
    heavy: &Handle,
    published: &Published,
    zones: &mut HashMap<LowerName, ZoneUpdates>,
    rebuilds: &mut JoinSet<Rebuilt>,
    event: &Arc<ChangeEvent>,
) {
    let key = LowerName::new(&event.zone);
    // Whole-zone imports are published by the loader that ran them.
    let snap = match published.snap(&key) {
        Some(s) if s.managed == Managed::Store => s,
        _ => return,
    };
    let st = zones.entry(key.clone()).or_default();
    st.origin.get_or_insert_with(|| event.zone.clone());
    // The store moved past the flat snapshot waiting for its image: that image would be
    // stale before it is written (the next flat result will be wanted instead).
    if st
        .image_wanted
        .as_ref()
        .is_some_and(|w| event.seq > w.meta.journal_seq)
    {
        st.image_wanted = None;
    }
    if st.rebuilding {
        if st.pending.len() < MAX_PENDING_EVENTS {
            st.pending.push(Arc::clone(event));
        } else {
            st.overflow = true;
        }
    }
    if event.kind != ChangeKind::Update || st.stalled || event.seq <= snap.generation {
        return;
    }
    let started = Instant::now();
    let patched = if event.seq == snap.generation + 1 {
        if event.added.len() + event.removed.len() > BULK_PATCH_RECORDS {
            // Bulk changes (purge batches, big API writes) are throughput work: patched on
            // a heavy-job thread, so they never compete with the query workers at normal
            // priority. The updater waits, which keeps events in order.
            let (zone, event) = (Arc::clone(&snap.zone), Arc::clone(event));
            heavy
                .spawn_blocking(move || zone.patch(&event).map_err(|e| e.to_string()))
                .await
                .unwrap_or_else(|e| Err(format!("patch job failed: {e}")))
        } else {
            snap.zone.patch(event).map_err(|e| e.to_string())
        }
    } else {
        Err(format!(
            "change {} after snapshot generation {}",
            event.seq, snap.generation
        ))
    };
    match patched {
        Ok(zone) => {
            let patch_size = zone.patch_size();
            let compact = patch_size
                > (zone.heap_size() / COMPACT_RATIO).clamp(COMPACT_MIN_BYTES, COMPACT_MAX_BYTES);
            let next = Snap {
                zone: Arc::new(zone),
                managed: Managed::Store,
                generation: event.seq,
            };
            if let Some(old) = published.publish_one(next, false) {
                debug!(
                    zone = %event.zone,
                    serial = event.new_serial,
                    patch_bytes = patch_size,
                    elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "zone snapshot patched"
                );
                heavy.spawn(retire(old));
                st.patched(Instant::now());
            }
            if compact && !st.rebuilding {
                debug!(zone = %event.zone, patch_bytes = patch_size, "compacting the zone snapshot");
                start_rebuild(store, heavy, rebuilds, st, key, event.zone.clone());
            }
        }
        Err(why) => {
            debug!(zone = %event.zone, seq = event.seq, "zone snapshot rebuild: {why}");
            st.stalled = true;
            if !st.rebuilding {
                start_rebuild(store, heavy, rebuilds, st, key, event.zone.clone());
            }
        }
    }
}

/// Starts building `origin` from the store on a heavy-job blocking thread.
fn start_rebuild(
    store: &Store,
    heavy: &Handle,
    rebuilds: &mut JoinSet<Rebuilt>,
    st: &mut ZoneUpdates,
    key: LowerName,
    origin: Name,
) {
    st.rebuilding = true;
    st.pending.clear();
    st.overflow = false;
    st.first_patch = None;
    st.last_patch = None;
    let store = store.clone();
    rebuilds.spawn_blocking_on(
        move || {
            let started = Instant::now();
            let built = store.build_zone(&origin);
            (key, origin, started, built)
        },
        heavy,
    );
}

/// Completes a rebuild: replays the events newer than it and publishes the result.
async fn on_rebuilt(
    store: &Store,
    heavy: &Handle,
    published: &Published,
    zones: &mut HashMap<LowerName, ZoneUpdates>,
    rebuilds: &mut JoinSet<Rebuilt>,
    (key, origin, started, built): Rebuilt,
) {
    let st = zones.entry(key.clone()).or_default();
    st.rebuilding = false;
    let pending = std::mem::take(&mut st.pending);
    let (mut zone, meta) = match built {
        Ok(b) => b,
        Err(e) => {
            // The next event finds a gap and tries again.
            error!(zone = %origin, "zone snapshot rebuild failed: {e}");
            st.stalled = false;
            return;
        }
    };
    let built_ms = started.elapsed().as_secs_f64() * 1000.0;
    // The replay can be long (a purge's batches): on a heavy-job thread.
    let overflow = st.overflow;
    let base = meta.journal_seq;
    let replayed = heavy
        .spawn_blocking(move || {
            let mut generation = base;
            let mut complete = !overflow;
            for event in pending.iter().filter(|e| e.seq > base) {
                let next = (event.seq == generation + 1)
                    .then(|| zone.patch(event).ok())
                    .flatten();
                match next {
                    Some(z) => {
                        zone = z;
                        generation = event.seq;
                    }
                    None => {
                        complete = false;
                        break;
                    }
                }
            }
            (zone, generation, complete)
        })
        .await;
    let Ok((zone, generation, complete)) = replayed else {
        error!(zone = %origin, "zone snapshot replay job failed");
        start_rebuild(store, heavy, rebuilds, st, key, origin);
        return;
    };
    if !complete {
        // Events this result cannot take: build again (the new read includes them).
        start_rebuild(store, heavy, rebuilds, st, key, origin);
        return;
    }
    st.stalled = false;
    if zone.patch_size() > 0 {
        st.patched(Instant::now());
    }
    // Nothing replayed onto it: the zone exactly as stored at `meta`, worth an image.
    let flat = generation == base && image::writable(&zone);
    let serial = zone.serial();
    let snap = Snap {
        zone: Arc::new(zone),
        managed: Managed::Store,
        generation,
    };
    if let Some(old) = published.publish_one(snap, true) {
        debug!(
            zone = %origin,
            serial,
            build_ms = built_ms,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "zone snapshot rebuilt from the store"
        );
        heavy.spawn(retire(old));
        // Written by the updater's timer, after this publication (see image_due).
        st.image_wanted = flat.then(|| ImageWanted {
            meta,
            since: Instant::now(),
        });
    }
}

/// Change-stream consumer counting committed changes (read by metrics).
async fn event_counter(store: Store, mut events: Subscription) {
    loop {
        let counter = match events.recv().await {
            Ok(e) if e.kind == ChangeKind::Update => &store.stats().updates_seen,
            Ok(_) => &store.stats().replaces_seen,
            // Counted by the stream itself; nothing to rebuild here.
            Err(Lagged::Resync(_)) => continue,
            Err(Lagged::Closed) => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How long a retired snapshot may stay referenced by readers before we stop waiting.
const RETIRE_PATIENCE: Duration = Duration::from_secs(5);

/// Frees a replaced snapshot here, on the heavy runtime. A query holds the snapshot only
/// for the microseconds of one answer, but if the last reference were released by a
/// latency worker, that worker would pay for freeing a whole zone (hundreds of
/// milliseconds for a million names) while queries wait behind it.
async fn retire(mut old: Arc<ZoneSet>) {
    let deadline = Instant::now() + RETIRE_PATIENCE;
    loop {
        match Arc::try_unwrap(old) {
            // Zones still in the new set keep their other references; the rest die here.
            Ok(set) => return drop(set),
            Err(still_shared) if Instant::now() < deadline => {
                old = still_shared;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(still_shared) => {
                warn!("retired zone snapshot still in use; it will be freed by its last reader");
                return drop(still_shared);
            }
        }
    }
}

struct Parsed {
    result: Result<Zone, ZoneFileError>,
    thread: String,
}

fn parse_zone(origin: &Name, file: &Path, include_root: &Path) -> Parsed {
    let result = load_zone(file, origin, include_root);
    Parsed {
        result,
        thread: std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string(),
    }
}

/// Logs a load report: one line per zone that changed state, every error line, a summary.
pub fn log_report(what: &str, report: &LoadReport) {
    for z in &report.zones {
        let ms = z.elapsed.as_secs_f64() * 1000.0;
        let thread = z.parsed_on.as_deref().unwrap_or("-");
        match &z.outcome {
            ZoneOutcome::Added | ZoneOutcome::Changed => {
                let from = z.from.map_or("-", LoadedFrom::as_str);
                info!(zone = %z.origin, outcome = ?z.outcome, from, thread, elapsed_ms = ms, "zone loaded");
                for line in &z.errors {
                    warn!(zone = %z.origin, "{line}");
                }
            }
            ZoneOutcome::Removed => info!(zone = %z.origin, "zone removed"),
            ZoneOutcome::Unchanged => {}
            ZoneOutcome::Failed { kept_old } => {
                for line in &z.errors {
                    error!(zone = %z.origin, "{line}");
                }
                if *kept_old {
                    warn!(zone = %z.origin, "zone failed to load, previous version still served");
                } else {
                    warn!(zone = %z.origin, "zone failed to load, not served");
                }
            }
        }
    }
    info!(
        added = report.count(|o| *o == ZoneOutcome::Added),
        changed = report.count(|o| *o == ZoneOutcome::Changed),
        unchanged = report.count(|o| *o == ZoneOutcome::Unchanged),
        removed = report.count(|o| *o == ZoneOutcome::Removed),
        failed = report.failed(),
        served = report.served,
        elapsed_ms = report.elapsed.as_secs_f64() * 1000.0,
        "{what} done"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(since: Instant) -> Option<ImageWanted> {
        Some(ImageWanted {
            meta: ZoneMeta {
                id: 1,
                origin_wire: vec![0],
                managed: Managed::Store,
                file: None,
                fingerprint: None,
                serial: 1,
                record_count: 1,
                created: 0,
                updated: 0,
                journal_seq: 7,
            },
            since,
        })
    }

    #[test]
    fn image_writes_are_spaced_unless_the_zone_stays_unchanged() {
        let secs = Duration::from_secs;
        // Far enough from the clock's origin for the subtractions below.
        let t = Instant::now() + secs(3600);
        let mut st = ZoneUpdates::default();
        assert_eq!(st.image_due(), None, "nothing wanted");

        // First write of the zone: at once.
        st.image_wanted = wanted(t);
        assert_eq!(st.image_due(), Some(t));
        // One runs: no second write of the zone meanwhile.
        st.image_writing = true;
        assert_eq!(st.image_due(), None);
        st.image_writing = false;

        // The last write is older than the interval: at once.
        st.image_written = Some(t - IMAGE_MIN_INTERVAL - secs(1));
        assert_eq!(st.image_due(), Some(t));
        // A recent write: when the snapshot has stayed unchanged for IMAGE_IDLE ...
        st.image_written = Some(t - secs(10));
        assert_eq!(st.image_due(), Some(t + IMAGE_IDLE));
        // ... or at the end of the interval, if that comes first.
        st.image_written = Some(t - IMAGE_MIN_INTERVAL + secs(3));
        assert_eq!(st.image_due(), Some(t + secs(3)));

        // The updater wakes for the earlier of compaction and image write.
        st.first_patch = Some(t);
        st.last_patch = Some(t);
        assert_eq!(st.next_due(), Some(t + secs(3)));
        st.image_wanted = None;
        assert_eq!(st.next_due(), Some(t + COMPACT_IDLE));
    }
}
