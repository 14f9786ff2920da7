//! Loading and reloading the served zones.
//!
//! A [`ZoneLoader`] remembers, per zone, the file it came from and a fingerprint of that
//! file (size, mtime and a hash of the content). A reload re-reads the zone list, reuses the
//! `Arc<Zone>` of every zone whose file is unchanged, parses the others, and publishes one
//! new [`ZoneSet`] with a single atomic store: queries see either the old or the new set,
//! never a mix, and are answered throughout. A zone that fails to load keeps serving its
//! previous version.
//!
//! Everything here is blocking, CPU-heavy work: it must run on the heavy-job runtime
//! (see `runtime`), never on a latency worker.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hickory_proto::rr::LowerName;
use tokio::runtime::Handle;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError, Overrides, ZoneSource};
use crate::zone::file::{ZoneFileError, load_zone};
use crate::zone::{Zone, ZoneSet};

/// What identifies one version of a zone file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    hash: u64,
}

impl Fingerprint {
    /// Reads the whole file. The content hash catches edits that keep size and mtime
    /// (same-second writes on coarse-mtime file systems).
    pub fn of(path: &Path) -> std::io::Result<Fingerprint> {
        let meta = std::fs::metadata(path)?;
        let bytes = std::fs::read(path)?;
        let mut hasher = DefaultHasher::new();
        hasher.write(&bytes);
        Ok(Fingerprint {
            len: bytes.len() as u64,
            modified: meta.modified().ok(),
            hash: hasher.finish(),
        })
    }
}

/// The file a served zone was loaded from.
#[derive(Debug, Clone)]
struct Loaded {
    source: ZoneSource,
    fingerprint: Fingerprint,
    zone: Arc<Zone>,
}

/// What happened to one zone during a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneOutcome {
    /// New zone, loaded.
    Added,
    /// File changed, new version loaded.
    Changed,
    /// File unchanged, previous `Arc<Zone>` kept.
    Unchanged,
    /// No longer configured, stopped.
    Removed,
    /// Failed to load; `kept_old` when an earlier version is still served.
    Failed { kept_old: bool },
}

/// One zone's line in a [`LoadReport`].
#[derive(Debug, Clone)]
pub struct ZoneReport {
    pub origin: String,
    pub outcome: ZoneOutcome,
    /// Name of the thread that parsed the file (None when nothing was parsed), so tests and
    /// logs can show that parsing ran on a heavy-job thread.
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
    #[error("zone load job did not complete: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Owns the served zones' bookkeeping and the snapshot cell that queries read.
pub struct ZoneLoader {
    config_path: Option<PathBuf>,
    overrides: Overrides,
    zones: Arc<ArcSwap<ZoneSet>>,
    loaded: HashMap<LowerName, Loaded>,
}

impl ZoneLoader {
    /// `config_path` is re-read on every reload (None: built-in defaults); `overrides` are
    /// applied on top each time.
    pub fn new(
        config_path: Option<PathBuf>,
        overrides: Overrides,
        zones: Arc<ArcSwap<ZoneSet>>,
    ) -> ZoneLoader {
        ZoneLoader {
            config_path,
            overrides,
            zones,
            loaded: HashMap::new(),
        }
    }

    /// The snapshot cell this loader publishes into.
    pub fn zones(&self) -> &Arc<ArcSwap<ZoneSet>> {
        &self.zones
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

    /// Re-reads the zone list and every zone file, then publishes the new zone set.
    /// Must be awaited on the heavy-job runtime: zone files are parsed in parallel on it
    /// (one task per changed zone, so `heavy_workers` bounds the CPU used).
    pub async fn reload(&mut self) -> Result<LoadReport, ReloadError> {
        let started = Instant::now();
        let config = self.read_config()?;
        let sources = config.zone_sources()?;
        let heavy = Handle::current();

        let mut reports = Vec::new();
        let mut next: HashMap<LowerName, Loaded> = HashMap::new();
        let mut jobs = Vec::new();
        let mut configured = HashSet::new();
        for source in sources {
            let key = LowerName::new(&source.origin);
            configured.insert(key.clone());
            let fingerprint = Fingerprint::of(&source.file);
            let previous = self.loaded.get(&key);
            if let (Ok(fp), Some(prev)) = (&fingerprint, previous)
                && prev.source == source
                && prev.fingerprint == *fp
            {
                reports.push(ZoneReport {
                    origin: source.origin.to_string(),
                    outcome: ZoneOutcome::Unchanged,
                    parsed_on: None,
                    elapsed: Duration::ZERO,
                    errors: Vec::new(),
                });
                next.insert(key, prev.clone());
                continue;
            }
            let job_source = source.clone();
            let job = heavy.spawn(async move { parse_zone(&job_source) });
            jobs.push((key, source, fingerprint, job));
        }

        for (key, source, fingerprint, job) in jobs {
            let parsed = job.await?;
            let previous = self.loaded.get(&key);
            let origin = source.origin.to_string();
            // An unreadable file is reported by the parser too (with its path).
            match (parsed.result, fingerprint) {
                (Ok(zone), Ok(fingerprint)) => {
                    reports.push(ZoneReport {
                        origin,
                        outcome: if previous.is_some() {
                            ZoneOutcome::Changed
                        } else {
                            ZoneOutcome::Added
                        },
                        parsed_on: Some(parsed.thread),
                        elapsed: parsed.elapsed,
                        errors: Vec::new(),
                    });
                    next.insert(
                        key,
                        Loaded {
                            source,
                            fingerprint,
                            zone: Arc::new(zone),
                        },
                    );
                }
                (result, fingerprint) => {
                    let mut errors: Vec<String> = match result {
                        Err(e) => e.to_string().lines().map(str::to_string).collect(),
                        Ok(_) => Vec::new(),
                    };
                    if let Err(e) = fingerprint {
                        errors.push(format!("{}: {e}", source.file.display()));
                    }
                    reports.push(ZoneReport {
                        origin,
                        outcome: ZoneOutcome::Failed {
                            kept_old: previous.is_some(),
                        },
                        parsed_on: Some(parsed.thread),
                        elapsed: parsed.elapsed,
                        errors,
                    });
                    // The previous version (if any) keeps serving, still under its old
                    // fingerprint, so the next reload tries this file again.
                    if let Some(prev) = previous {
                        next.insert(key, prev.clone());
                    }
                }
            }
        }

        for (key, prev) in &self.loaded {
            if !configured.contains(key) {
                reports.push(ZoneReport {
                    origin: prev.source.origin.to_string(),
                    outcome: ZoneOutcome::Removed,
                    parsed_on: None,
                    elapsed: Duration::ZERO,
                    errors: Vec::new(),
                });
            }
        }

        let mut set = ZoneSet::new();
        for loaded in next.values() {
            set.insert(Arc::clone(&loaded.zone));
        }
        let served = set.len();
        let retired = self.zones.swap(Arc::new(set));
        self.loaded = next;
        retire(retired).await;
        reports.sort_by(|a, b| a.origin.cmp(&b.origin));
        Ok(LoadReport {
            zones: reports,
            served,
            elapsed: started.elapsed(),
        })
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
    elapsed: Duration,
}

fn parse_zone(source: &ZoneSource) -> Parsed {
    let started = Instant::now();
    let result = load_zone(&source.file, &source.origin, &source.include_root);
    Parsed {
        result,
        thread: std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string(),
        elapsed: started.elapsed(),
    }
}

/// Logs a load report: one line per zone that changed state, every error line, a summary.
pub fn log_report(what: &str, report: &LoadReport) {
    for z in &report.zones {
        let ms = z.elapsed.as_secs_f64() * 1000.0;
        let thread = z.parsed_on.as_deref().unwrap_or("-");
        match &z.outcome {
            ZoneOutcome::Added | ZoneOutcome::Changed => {
                info!(zone = %z.origin, outcome = ?z.outcome, thread, elapsed_ms = ms, "zone loaded");
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
