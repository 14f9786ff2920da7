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
//!   in the store yet. The snapshot updater (a change-stream consumer) rebuilds the zone
//!   after each committed change.
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
use tracing::{debug, error, info, warn};

use crate::config::{Config, ConfigError, Overrides, ZoneSource};
pub use crate::store::Fingerprint;
use crate::store::{
    ChangeKind, Import, Lagged, Managed, Source, Store, StoreError, StoreOptions, Subscription,
    ZoneMeta,
};
use crate::zone::file::{ZoneFileError, load_zone};
use crate::zone::image::ImageError;
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

    /// Publishes a new version of one store-managed zone that is still served and older.
    fn publish_one(&self, snap: Snap) -> Option<Arc<ZoneSet>> {
        let mut cur = self.current.lock().ok()?;
        let key = snap.zone.origin_lower().clone();
        let c = cur.get(&key)?;
        if c.managed != Managed::Store || c.generation >= snap.generation {
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
        }
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
                ..StoreOptions::default()
            },
        )?;
        info!(
            path = %store.path().display(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "zone store open"
        );
        let heavy = Handle::current();
        heavy.spawn(snapshot_updater(
            store.clone(),
            Arc::clone(&self.published),
            store.subscribe("snapshot-updater"),
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

/// Change-stream consumer: after each committed change to a store-managed zone, builds the
/// zone from the store (on a heavy-job blocking thread) and publishes it. Changes that
/// arrive meanwhile are coalesced: each zone is rebuilt once per batch. A resync signal
/// rebuilds every served store-managed zone.
async fn snapshot_updater(store: Store, published: Arc<Published>, mut events: Subscription) {
    loop {
        let mut zones: BTreeMap<LowerName, Name> = BTreeMap::new();
        let mut resync = false;
        let mut next = Some(events.recv().await);
        while let Some(event) = next {
            match event {
                Ok(e) if e.kind == ChangeKind::Update => {
                    zones.insert(LowerName::new(&e.zone), e.zone.clone());
                }
                // Whole-zone imports are published by the loader that ran them.
                Ok(_) => {}
                Err(Lagged::Resync(_)) => resync = true,
                Err(Lagged::Closed) => return,
            }
            next = events.try_recv();
        }
        if resync {
            for origin in published.store_managed() {
                zones.insert(LowerName::new(&origin), origin);
            }
        }
        for origin in zones.into_values() {
            let job_store = store.clone();
            let started = Instant::now();
            let built = tokio::task::spawn_blocking(move || {
                job_store.build_zone(&origin).map(|z| (origin, z))
            })
            .await;
            match built {
                Ok(Ok((origin, (zone, meta)))) => {
                    let serial = zone.serial();
                    let snap = Snap {
                        zone: Arc::new(zone),
                        managed: Managed::Store,
                        generation: meta.journal_seq,
                    };
                    if let Some(old) = published.publish_one(snap) {
                        debug!(
                            zone = %origin,
                            serial,
                            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                            "zone snapshot updated from the store"
                        );
                        retire(old).await;
                    }
                }
                Ok(Err(e)) => error!("zone snapshot update failed: {e}"),
                Err(e) => error!("zone snapshot update job failed: {e}"),
            }
        }
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
