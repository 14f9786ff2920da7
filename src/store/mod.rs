//! The zone store: every served zone's records in one crash-safe redb file
//! (`data_dir/muninn.redb`), from which the in-memory snapshots that answer queries are
//! built. Queries never read the store.
//!
//! # Ownership and concurrency
//!
//! One writer thread (`muninn-heavy-store`, at the heavy-job priority) owns every write: a
//! [`Store`] handle sends it commands over a bounded channel (`apply`, `import`, ...) and
//! waits for the reply. Each command is one redb write transaction, so index entries are
//! never shared mutable state and a crash leaves either the old or the new state. Readers
//! (`build_zone`, `records`, `check`, exports) use redb read transactions: MVCC snapshots
//! that never block the writer and never see half a transaction. After each commit the
//! writer publishes an immutable [`ChangeEvent`] on the change stream ([`stream`]).
//!
//! # Schema (version 1; all integers big-endian)
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `"schema"`, `"next_zone_id"` | u64 |
//! | `zones` | origin, lowercase wire form | [`ZoneMeta`]: id, origin (case kept), managed (file\|store), file path + content fingerprint, serial, record count, created/updated, journal head |
//! | `records` | zone id (u32) ‖ owner key ‖ 0x00 ‖ type (u16) ‖ RDATA hash (u64) | [`StoredRecord`]: type, TTL, owner and RDATA (wire form, case kept), tags, created, updated, source |
//! | `tags` | `key=value` ‖ 0x00 ‖ record key | () |
//! | `journal` | zone id (u32) ‖ sequence (u64) | [`JournalEntry`]: kind, old/new serial, time, removed and added records |
//!
//! The owner key is the name's labels from the root down, lowercased and escaped so that
//! byte order is DNSSEC canonical order (RFC 4034 §6.1) and a zone, a subtree, an owner
//! and an RRset are each one contiguous key range. The RDATA hash is over the RDATA with
//! its domain names lowercased (RFC 4034 §6.2), so the same record written in another case
//! has the same key (RFC 2181 §5: an RRset is a set). The tag index makes "every record
//! tagged `k=v`" one range scan. The journal is keyed by a per-zone sequence rather than by
//! serial, because serials wrap (RFC 1982); the newest [`schema::JOURNAL_KEEP`] entries are
//! kept.
//!
//! # Zone images
//!
//! Beside the store file, `images/zone-<id>.zimg` holds a zone's built snapshot (see
//! [`crate::zone::image`]), written after each whole-zone import and after each build from
//! the store, temp file + fsync + rename. An image is tied to the zone's [`ZoneMeta`] as
//! encoded when it was made (journal sequence, serial, update time, file fingerprint...):
//! any later write to the zone makes it stale, and a start then builds from the records
//! instead. Images are a cache: deleting them loses nothing.
//!
//! # Source of truth
//!
//! A zone is either file-managed (its zone file wins: a changed file replaces the stored
//! records on start and SIGHUP, writing only the records that differ; an unchanged one is
//! started from the store without being parsed) or store-managed (changed only through [`Store::apply`]; a configured file only
//! seeds a zone that is not in the store yet). See `reload` and the `[zones]` config docs.

pub mod check;
pub mod export;
pub mod purge;
pub mod schema;
pub mod stream;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use hickory_proto::rr::{Name, RData, RecordType};
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use tokio::sync::oneshot;
use tracing::error;

use crate::zone::image::{self, ImageError};
use crate::zone::rdata::{self as zrdata, Rdatas};
use crate::zone::{WireRRset, Zone, ZoneBuilder, case_wire, lower_wire, name_from_wire};

pub use purge::{PurgeBatch, PurgeFilter, PurgeOutcome, PurgePlan, SkipReason, ZoneIds};
pub use schema::{
    ChangeKind, Fingerprint, JournalEntry, Managed, RecordMeta, Source, StoredRecord, ZoneMeta,
};
pub use stream::{ChangeEvent, Lagged, StreamStats, Subscription};

use schema::{JOURNAL, JOURNAL_KEEP, META, RECORDS, TAGS, ZONES};

/// File name of the store inside `data_dir`.
pub const STORE_FILE: &str = "muninn.redb";

/// Directory of zone images (see [`crate::zone::image`]) beside the store file.
pub const IMAGE_DIR: &str = "images";

/// RFC 2181 §8: TTLs are 0..=2^31-1.
const MAX_TTL: u32 = i32::MAX as u32;

/// Why a store operation failed. For change transactions, every error means nothing was
/// changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "store {} is in use by another process (a running `muninn serve`?); stop it first",
        .0.display()
    )]
    Locked(PathBuf),
    #[error("cannot open store {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: Box<redb::DatabaseError>,
    },
    #[error("cannot create {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Db(#[from] Box<redb::Error>),
    #[error("store has schema version {found}; this muninn reads version {expected}")]
    Schema { found: u64, expected: u64 },
    #[error("zone {0} is not in the store")]
    NoSuchZone(String),
    #[error(
        "zone {0} is managed by its zone file, not by the store (configure managed = \"store\")"
    )]
    NotStoreManaged(String),
    #[error("{name} is not in zone {zone}")]
    OutOfZone { name: String, zone: String },
    #[error("bad owner name {0:?}: {1}")]
    BadOwner(String, String),
    #[error("bad record {name} {rtype}: {reason}")]
    BadRecord {
        name: String,
        rtype: RecordType,
        reason: String,
    },
    #[error("bad tag {0:?}: expected key=value (key: letters, digits, - _ .; value: no spaces)")]
    BadTag(String),
    #[error("{0} would have a CNAME and other data (RFC 1034 §3.6.2, RFC 2181 §10.1)")]
    CnameConflict(String),
    #[error("the SOA record cannot be deleted, only replaced (RFC 1035 §5.2)")]
    SoaDelete,
    #[error("zone {0} would have no NS records at its apex (RFC 1034 §4.2.1)")]
    NoApexNs(String),
    #[error("the change would change nothing")]
    NoChange,
    #[error("zone {0}: stored data is damaged: {1}")]
    Corrupt(String, String),
    #[error("zone {0}: {1}")]
    Build(String, String),
    #[error("the store writer has stopped")]
    WriterGone,
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
redb_errors!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Tuning of [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Events the change stream keeps for slow consumers before they must resync
    /// (`[store] change_stream_events`).
    pub event_capacity: usize,
    /// Bytes of events the change stream keeps for slow consumers before they must resync
    /// (`[store] change_stream_bytes`; the newest event is kept even when larger).
    pub event_bytes: usize,
    /// redb page cache.
    pub cache_bytes: usize,
    /// Scheduling priority of the writer thread (that of the heavy-job threads).
    pub writer_priority: crate::config::HeavyPriority,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            event_capacity: crate::config::StoreConfig::default().change_stream_events,
            event_bytes: crate::config::StoreConfig::default().change_stream_bytes,
            cache_bytes: crate::config::StoreConfig::default().cache_size,
            writer_priority: crate::config::RuntimeConfig::default().heavy_priority(),
        }
    }
}

/// A record to add: owner, TTL, data and tags (`key=value`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecord {
    pub name: Name,
    pub ttl: u32,
    pub data: RData,
    pub tags: Vec<String>,
}

/// Which records to delete: every record at `name`, or of one type there, or one record.
/// Deleting the SOA is refused (add a new SOA to replace it).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordFilter {
    pub name: Name,
    pub rtype: Option<RecordType>,
    /// Only this record (its type is the filter's type).
    pub data: Option<RData>,
}

/// One change transaction: the deletes run first, then the adds. Adding a record to an
/// RRset gives the whole RRset the new TTL (RFC 2181 §5.2); adding an SOA replaces the SOA.
/// The SOA serial is bumped by one (RFC 1982 §3.1), or set to the added SOA's serial when
/// that one is greater.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    pub add: Vec<NewRecord>,
    pub delete: Vec<RecordFilter>,
}

/// A zone to import as a whole (replacing whatever the store had for it).
pub struct Import {
    pub zone: Arc<Zone>,
    pub managed: Managed,
    pub file: Option<PathBuf>,
    pub fingerprint: Option<Fingerprint>,
    pub source: Source,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Command {
    Apply {
        zone: Name,
        change: Change,
        reply: Reply<Arc<ChangeEvent>>,
    },
    Import {
        import: Import,
        reply: Reply<(Arc<ChangeEvent>, ZoneMeta)>,
    },
    SetManaged {
        zone: Name,
        managed: Managed,
        reply: Reply<()>,
    },
    /// One batch of a bulk purge (see [`purge`]).
    Purge {
        filter: PurgeFilter,
        batch: PurgeBatch,
        reply: Reply<PurgeOutcome>,
    },
}

struct Inner {
    db: Arc<Database>,
    path: PathBuf,
    commands: Option<mpsc::SyncSender<Command>>,
    events: Arc<stream::Stream>,
    stats: Arc<StreamStats>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop; joining it closes the file cleanly.
        self.commands.take();
        if let Ok(mut w) = self.writer.lock()
            && let Some(handle) = w.take()
        {
            let _ = handle.join();
        }
    }
}

/// A handle on the open store (cheap to clone; the file closes with the last handle).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.inner.path.display())
    }
}

impl Store {
    /// Opens (creating if needed) the store file at `path` and starts its writer thread.
    /// Fails with [`StoreError::Locked`] while another process has it open.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.to_path_buf()),
                e => StoreError::Open {
                    path: path.to_path_buf(),
                    source: Box::new(e),
                },
            })?;
        init_schema(&db)?;
        // The store is ours alone now: a temporary image file is what a crash mid-write left.
        remove_stale_image_temps(path);
        let db = Arc::new(db);
        let stats = Arc::new(StreamStats::default());
        let publisher = stream::Publisher::new(
            options.event_capacity,
            options.event_bytes,
            Arc::clone(&stats),
        );
        let events = publisher.stream();
        let (tx, rx) = mpsc::sync_channel(64);
        let writer_db = Arc::clone(&db);
        let priority = options.writer_priority;
        let writer = std::thread::Builder::new()
            .name(format!("{}store", crate::runtime::HEAVY_THREAD_PREFIX))
            .spawn(move || {
                priority.apply_to_current_thread();
                writer_loop(&writer_db, rx, publisher);
            })
            .map_err(|source| StoreError::Dir {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                path: path.to_path_buf(),
                commands: Some(tx),
                events,
                stats,
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// Opens `data_dir/muninn.redb`.
    pub fn open_dir(data_dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        Store::open(&data_dir.join(STORE_FILE), options)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The underlying database, for read transactions (tests, tools).
    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    pub fn stats(&self) -> &StreamStats {
        &self.inner.stats
    }

    /// A new consumer of the change stream, starting after the last published event.
    pub fn subscribe(&self, consumer: &str) -> Subscription {
        Subscription::new(&self.inner.events, consumer)
    }

    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let sender = self.inner.commands.as_ref().ok_or(StoreError::WriterGone)?;
        sender.send(make(tx)).map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Applies `change` to the store-managed zone `zone` in one transaction (see [`Change`]).
    /// On success the change is durable and its event has been published.
    pub async fn apply(&self, zone: &Name, change: Change) -> Result<Arc<ChangeEvent>, StoreError> {
        let zone = zone.clone();
        self.request(|reply| Command::Apply {
            zone,
            change,
            reply,
        })
        .await
    }

    /// [`Store::apply`] for synchronous callers (not from inside an async task).
    pub fn apply_blocking(
        &self,
        zone: &Name,
        change: Change,
    ) -> Result<Arc<ChangeEvent>, StoreError> {
        futures::executor::block_on(self.apply(zone, change))
    }

    /// Replaces the zone's stored records with `import.zone`'s, in one transaction.
    pub async fn import(&self, import: Import) -> Result<Arc<ChangeEvent>, StoreError> {
        self.import_meta(import).await.map(|(event, _)| event)
    }

    /// [`Store::import`], also returning the zone metadata the transaction wrote (what an
    /// image of the imported zone is tied to).
    pub async fn import_meta(
        &self,
        import: Import,
    ) -> Result<(Arc<ChangeEvent>, ZoneMeta), StoreError> {
        self.request(|reply| Command::Import { import, reply })
            .await
    }

    pub fn import_blocking(&self, import: Import) -> Result<Arc<ChangeEvent>, StoreError> {
        futures::executor::block_on(self.import(import))
    }

    /// Changes who manages a stored zone (its records stay).
    pub fn set_managed_blocking(&self, zone: &Name, managed: Managed) -> Result<(), StoreError> {
        let zone = zone.clone();
        futures::executor::block_on(self.request(|reply| Command::SetManaged {
            zone,
            managed,
            reply,
        }))
    }

    /// The stored metadata of `zone`.
    pub fn zone_meta(&self, zone: &Name) -> Result<Option<ZoneMeta>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let zones = txn.open_table(ZONES)?;
        read_meta(&zones, zone)
    }

    /// Every stored zone's metadata, in key order.
    pub fn zones(&self) -> Result<Vec<ZoneMeta>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let zones = txn.open_table(ZONES)?;
        let mut out = Vec::new();
        for item in zones.iter()? {
            let (k, v) = item?;
            let meta = ZoneMeta::decode(v.value()).ok_or_else(|| {
                StoreError::Corrupt(show_wire(k.value()), "undecodable zone metadata".into())
            })?;
            out.push(meta);
        }
        Ok(out)
    }

    /// Builds the zone snapshot from one consistent read of the store.
    pub fn build_zone(&self, zone: &Name) -> Result<(Zone, ZoneMeta), StoreError> {
        let txn = self.inner.db.begin_read()?;
        let zones = txn.open_table(ZONES)?;
        let meta =
            read_meta(&zones, zone)?.ok_or_else(|| StoreError::NoSuchZone(zone.to_string()))?;
        let records = txn.open_table(RECORDS)?;
        let origin = name_from_wire(&meta.origin_wire).unwrap_or_else(|| zone.clone());
        let build_err =
            |e: crate::zone::BuildError| StoreError::Build(zone.to_string(), e.to_string());
        let count = usize::try_from(meta.record_count).unwrap_or(0);
        let mut builder = ZoneBuilder::new(&origin, count).map_err(build_err)?;
        let (lo, hi) = zone_range(meta.id);
        for item in records.range(lo.as_slice()..hi.as_slice())? {
            crate::pace::tick();
            let (_, v) = item?;
            let (rtype, ttl, owner, rdata) = schema::view(v.value()).ok_or_else(|| {
                StoreError::Corrupt(zone.to_string(), "undecodable record".into())
            })?;
            builder.add(owner, rtype, ttl, rdata).map_err(build_err)?;
        }
        let built = builder.finish().map_err(build_err)?;
        Ok((built, meta))
    }

    /// Every record of `zone` with its metadata, in canonical order.
    pub fn records(&self, zone: &Name) -> Result<Vec<StoredRecord>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let zones = txn.open_table(ZONES)?;
        let meta =
            read_meta(&zones, zone)?.ok_or_else(|| StoreError::NoSuchZone(zone.to_string()))?;
        let records = txn.open_table(RECORDS)?;
        let (lo, hi) = zone_range(meta.id);
        let mut out = Vec::new();
        for item in records.range(lo.as_slice()..hi.as_slice())? {
            let (_, v) = item?;
            out.push(StoredRecord::decode(v.value()).ok_or_else(|| {
                StoreError::Corrupt(zone.to_string(), "undecodable record".into())
            })?);
        }
        Ok(out)
    }

    /// The journal entries of `zone`, oldest first, with their sequence numbers.
    pub fn journal(&self, zone: &Name) -> Result<Vec<(u64, JournalEntry)>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let zones = txn.open_table(ZONES)?;
        let meta =
            read_meta(&zones, zone)?.ok_or_else(|| StoreError::NoSuchZone(zone.to_string()))?;
        let journal = txn.open_table(JOURNAL)?;
        let (lo, hi) = zone_range(meta.id);
        let mut out = Vec::new();
        for item in journal.range(lo.as_slice()..hi.as_slice())? {
            let (k, v) = item?;
            let seq = k
                .value()
                .get(4..12)
                .and_then(|b| b.first_chunk::<8>())
                .map(|b| u64::from_be_bytes(*b))
                .unwrap_or(0);
            let entry = JournalEntry::decode(v.value()).ok_or_else(|| {
                StoreError::Corrupt(zone.to_string(), "undecodable journal entry".into())
            })?;
            out.push((seq, entry));
        }
        Ok(out)
    }

    /// Runs the integrity check (see [`check`]).
    pub fn check(&self) -> Result<check::CheckReport, StoreError> {
        check::run(&self.inner.db)
    }

    /// Where the image of the zone with this metadata lives: `images/zone-<id>.zimg` beside
    /// the store file.
    pub fn image_path(&self, meta: &ZoneMeta) -> PathBuf {
        let dir = self
            .inner
            .path
            .parent()
            .map_or_else(PathBuf::new, Path::to_path_buf);
        dir.join(IMAGE_DIR).join(format!("zone-{}.zimg", meta.id))
    }

    /// The zone as its image holds it, if the image was made from exactly the stored state
    /// `meta` describes (every write to a zone changes its metadata: journal sequence,
    /// serial, update time, file fingerprint).
    pub fn load_image(&self, meta: &ZoneMeta) -> Result<Zone, ImageError> {
        image::load(&self.image_path(meta), &meta.encode())
    }

    /// Writes the image of `zone`, built from (or imported as) the stored state `meta`.
    /// Returns the image size in octets.
    pub fn save_image(&self, zone: &Zone, meta: &ZoneMeta) -> std::io::Result<u64> {
        image::save(&self.image_path(meta), zone, &meta.encode())
    }
}

/// Removes the `*.tmp.*` files of interrupted image writes (see [`image::save`]).
fn remove_stale_image_temps(store_path: &Path) {
    let dir = store_path
        .parent()
        .map_or_else(PathBuf::new, Path::to_path_buf)
        .join(IMAGE_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().contains(".zimg.tmp.") {
            let path = entry.path();
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed an unfinished zone image")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cannot remove an unfinished zone image: {e}")
                }
            }
        }
    }
}

/// `[id, id+1)` as key bounds: every key of zone `id`.
fn zone_range(id: u32) -> (Vec<u8>, Vec<u8>) {
    let hi = match id.checked_add(1) {
        Some(n) => n.to_be_bytes().to_vec(),
        None => vec![0xff; 5],
    };
    (id.to_be_bytes().to_vec(), hi)
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

fn show_wire(wire: &[u8]) -> String {
    name_from_wire(wire).map_or_else(|| format!("{wire:?}"), |n| n.to_string())
}

fn read_meta(
    zones: &impl ReadableTable<&'static [u8], &'static [u8]>,
    zone: &Name,
) -> Result<Option<ZoneMeta>, StoreError> {
    let key = lower_wire(zone)
        .ok_or_else(|| StoreError::BadOwner(zone.to_string(), "not a domain name".into()))?;
    match zones.get(key.as_slice())? {
        None => Ok(None),
        Some(v) => ZoneMeta::decode(v.value()).map(Some).ok_or_else(|| {
            StoreError::Corrupt(zone.to_string(), "undecodable zone metadata".into())
        }),
    }
}

fn init_schema(db: &Database) -> Result<(), StoreError> {
    // An existing store of this version needs no write (a commit is two syncs, which a
    // start would wait for).
    {
        let txn = db.begin_read()?;
        if let Ok(meta) = txn.open_table(META) {
            match meta.get("schema")?.map(|v| v.value()) {
                Some(v) if v == schema::SCHEMA_VERSION => {
                    let tables = [ZONES, RECORDS, JOURNAL].map(|t| txn.open_table(t).is_ok());
                    if tables.iter().all(|&ok| ok) && txn.open_table(TAGS).is_ok() {
                        return Ok(());
                    }
                }
                Some(found) => {
                    return Err(StoreError::Schema {
                        found,
                        expected: schema::SCHEMA_VERSION,
                    });
                }
                None => {}
            }
        }
    }
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    {
        let mut meta = txn.open_table(META)?;
        let version = meta.get("schema")?.map(|v| v.value());
        match version {
            None => {
                meta.insert("schema", schema::SCHEMA_VERSION)?;
                meta.insert("next_zone_id", 1)?;
            }
            Some(v) if v == schema::SCHEMA_VERSION => {}
            Some(found) => {
                return Err(StoreError::Schema {
                    found,
                    expected: schema::SCHEMA_VERSION,
                });
            }
        }
        txn.open_table(ZONES)?;
        txn.open_table(RECORDS)?;
        txn.open_table(TAGS)?;
        txn.open_table(JOURNAL)?;
    }
    txn.commit()?;
    Ok(())
}

fn writer_loop(db: &Database, rx: mpsc::Receiver<Command>, mut publisher: stream::Publisher) {
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Command::Apply {
                zone,
                change,
                reply,
            } => {
                let result = write_txn(db, |txn| apply_change(txn, &zone, &change));
                let _ = reply.send(publish(&mut publisher, &zone, result));
            }
            Command::Import { import, reply } => {
                let zone = import.zone.origin().clone();
                let result = write_txn(db, |txn| import_zone(txn, &import));
                // The zone snapshot goes back to its other owners before the reply.
                drop(import);
                let result = match result {
                    Ok((seq, entry, meta)) => {
                        publish(&mut publisher, &zone, Ok((seq, entry))).map(|e| (e, meta))
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::SetManaged {
                zone,
                managed,
                reply,
            } => {
                let result = write_txn(db, |txn| set_managed(txn, &zone, managed));
                let _ = reply.send(result);
            }
            Command::Purge {
                filter,
                batch,
                reply,
            } => {
                let result = write_txn(db, |txn| purge::purge_batch_txn(txn, &filter, &batch)).map(
                    |(outcome, changes)| {
                        purge::publish_batch(&mut publisher, changes);
                        outcome
                    },
                );
                let _ = reply.send(result);
            }
        }
    }
}

/// Runs `body` in one write transaction: commits when it succeeds, aborts otherwise.
fn write_txn<T>(
    db: &Database,
    body: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut txn = db.begin_write()?;
    // Records the allocator state with the commit, so that opening after a crash does
    // not have to walk the whole file.
    txn.set_quick_repair(true);
    match body(&txn) {
        Ok(v) => {
            txn.commit()?;
            Ok(v)
        }
        Err(e) => {
            if let Err(abort) = txn.abort() {
                error!("store: aborting a transaction failed: {abort}");
            }
            Err(e)
        }
    }
}

fn publish(
    publisher: &mut stream::Publisher,
    zone: &Name,
    result: Result<(u64, JournalEntry), StoreError>,
) -> Result<Arc<ChangeEvent>, StoreError> {
    let (seq, entry) = result?;
    let event = Arc::new(ChangeEvent {
        zone: zone.clone(),
        kind: entry.kind,
        seq,
        old_serial: entry.old_serial,
        new_serial: entry.new_serial,
        removed: entry.removed,
        added: entry.added,
    });
    publisher.publish(Arc::clone(&event));
    Ok(event)
}

/// RFC 1982 §3.2: `a` is greater than `b` in serial number arithmetic.
pub fn serial_gt(a: u32, b: u32) -> bool {
    a != b && (a.wrapping_sub(b) as i32) > 0
}

/// Where the serial is in SOA RDATA.
fn soa_serial_offset(rdata: &[u8]) -> Option<usize> {
    let m = zrdata::name_len(rdata)?;
    let r = zrdata::name_len(rdata.get(m..)?)?;
    (rdata.len() >= m + r + 20).then_some(m + r)
}

/// Parses an owner name as an API would get it: absolute (`www.example.com.`), relative to
/// `origin` (`www`), or `@`.
pub fn parse_owner(text: &str, origin: &Name) -> Result<Name, StoreError> {
    let bad = |why: String| StoreError::BadOwner(text.to_string(), why);
    if text == "@" {
        return Ok(origin.clone());
    }
    if text.is_empty() || text.contains("..") || text.chars().any(char::is_whitespace) {
        return Err(bad("empty label or whitespace".into()));
    }
    let name = Name::from_ascii(text).map_err(|e| bad(e.to_string()))?;
    if name.is_fqdn() {
        return Ok(name);
    }
    name.append_domain(origin).map_err(|e| bad(e.to_string()))
}

fn record_of(
    origin_lower: &[u8],
    zone: &Name,
    name: &Name,
    data: &RData,
) -> Result<(Vec<u8>, Vec<u8>, RecordType), StoreError> {
    let owner = case_wire(name);
    if zrdata::name_len(&owner) != Some(owner.len()) {
        return Err(StoreError::BadOwner(
            name.to_string(),
            "not a domain name".into(),
        ));
    }
    if !crate::zone::wire_is_below_or_eq(&owner.to_ascii_lowercase(), origin_lower) {
        return Err(StoreError::OutOfZone {
            name: name.to_string(),
            zone: zone.to_string(),
        });
    }
    let rtype = data.record_type();
    let bad = |reason: &str| StoreError::BadRecord {
        name: name.to_string(),
        rtype,
        reason: reason.to_string(),
    };
    if matches!(
        rtype,
        RecordType::OPT | RecordType::ANY | RecordType::AXFR | RecordType::IXFR | RecordType::NULL
    ) || u16::from(rtype) == 0
    {
        return Err(bad("this type cannot be stored in a zone"));
    }
    let set = WireRRset::from_rdata(name, rtype, 0, std::slice::from_ref(data));
    let rdata = Rdatas::new(&set.rdata)
        .next()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| bad("RDATA cannot be encoded"))?;
    if let Some(layout) = zrdata::layout(rtype)
        && !zrdata::walk(layout, &rdata, |_, _| {})
    {
        return Err(bad("malformed RDATA"));
    }
    Ok((owner, rdata, rtype))
}

fn meta_for_apply(
    zones: &impl ReadableTable<&'static [u8], &'static [u8]>,
    zone: &Name,
) -> Result<ZoneMeta, StoreError> {
    let meta = read_meta(zones, zone)?.ok_or_else(|| StoreError::NoSuchZone(zone.to_string()))?;
    if meta.managed != Managed::Store {
        return Err(StoreError::NotStoreManaged(zone.to_string()));
    }
    Ok(meta)
}

/// Keys (and decoded records) of every record whose key starts with `prefix`.
fn scan_prefix(
    records: &impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
    zone: &Name,
) -> Result<Vec<(Vec<u8>, StoredRecord)>, StoreError> {
    let end = prefix_end(prefix);
    let mut out = Vec::new();
    for item in records.range(prefix..end.as_slice())? {
        let (k, v) = item?;
        let rec = StoredRecord::decode(v.value())
            .ok_or_else(|| StoreError::Corrupt(zone.to_string(), "undecodable record".into()))?;
        out.push((k.value().to_vec(), rec));
    }
    Ok(out)
}

struct Tables<'t> {
    records: redb::Table<'t, &'static [u8], &'static [u8]>,
    tags: redb::Table<'t, &'static [u8], ()>,
}

impl Tables<'_> {
    fn remove(&mut self, key: &[u8], zone: &Name) -> Result<Option<StoredRecord>, StoreError> {
        let Some(old) = self.records.remove(key)? else {
            return Ok(None);
        };
        let rec = StoredRecord::decode(old.value())
            .ok_or_else(|| StoreError::Corrupt(zone.to_string(), "undecodable record".into()))?;
        drop(old);
        for t in &rec.meta.tags {
            self.tags.remove(schema::tag_key(t, key).as_slice())?;
        }
        Ok(Some(rec))
    }

    fn insert(&mut self, key: &[u8], rec: &StoredRecord) -> Result<(), StoreError> {
        self.records.insert(key, rec.encode().as_slice())?;
        for t in &rec.meta.tags {
            self.tags.insert(schema::tag_key(t, key).as_slice(), ())?;
        }
        Ok(())
    }
}

fn apply_change(
    txn: &WriteTransaction,
    zone: &Name,
    change: &Change,
) -> Result<(u64, JournalEntry), StoreError> {
    let mut zones = txn.open_table(ZONES)?;
    let meta = meta_for_apply(&zones, zone)?;
    let origin_lower = meta.origin_wire.to_ascii_lowercase();
    let mut t = Tables {
        records: txn.open_table(RECORDS)?,
        tags: txn.open_table(TAGS)?,
    };
    let id = meta.id;
    let corrupt = |why: &str| StoreError::Corrupt(zone.to_string(), why.to_string());
    let apex = schema::owner_prefix(id, &origin_lower).ok_or_else(|| corrupt("bad origin"))?;
    let old_soa = find_soa(&t, &apex, zone)?;

    let now = schema::now();
    let mut removed = Vec::new();
    let mut added = Vec::new();
    let mut touched: BTreeSet<Vec<u8>> = BTreeSet::new();

    for f in &change.delete {
        let owner = case_wire(&f.name);
        let lower = owner.to_ascii_lowercase();
        if !crate::zone::wire_is_below_or_eq(&lower, &origin_lower) {
            return Err(StoreError::OutOfZone {
                name: f.name.to_string(),
                zone: zone.to_string(),
            });
        }
        let rtype = f.data.as_ref().map(RData::record_type).or(f.rtype);
        if rtype == Some(RecordType::SOA) {
            return Err(StoreError::SoaDelete);
        }
        let keys: Vec<Vec<u8>> = match (&f.data, rtype) {
            (Some(data), _) => {
                let (owner, rdata, rtype) = record_of(&origin_lower, zone, &f.name, data)?;
                let key = schema::record_key(id, &owner, rtype, &rdata)
                    .ok_or_else(|| StoreError::BadOwner(f.name.to_string(), "bad name".into()))?;
                vec![key]
            }
            (None, rtype) => {
                let mut prefix = schema::owner_prefix(id, &owner)
                    .ok_or_else(|| StoreError::BadOwner(f.name.to_string(), "bad name".into()))?;
                if let Some(rt) = rtype {
                    prefix.extend_from_slice(&u16::from(rt).to_be_bytes());
                }
                scan_prefix(&t.records, &prefix, zone)?
                    .into_iter()
                    .filter(|(k, _)| schema::key_type(k) != Some(RecordType::SOA))
                    .map(|(k, _)| k)
                    .collect()
            }
        };
        for key in keys {
            if let Some(rec) = t.remove(&key, zone)? {
                removed.push(rec);
                touched.insert(lower.clone());
            }
        }
    }

    let mut new_soa: Option<StoredRecord> = None;
    for a in &change.add {
        let (owner, rdata, rtype) = record_of(&origin_lower, zone, &a.name, &a.data)?;
        if a.ttl > MAX_TTL {
            return Err(StoreError::BadRecord {
                name: a.name.to_string(),
                rtype,
                reason: format!("TTL {} exceeds 2^31-1 (RFC 2181 §8)", a.ttl),
            });
        }
        let mut tags = a.tags.clone();
        if let Some(bad) = tags.iter().find(|t| !schema::valid_tag(t)) {
            return Err(StoreError::BadTag(bad.clone()));
        }
        tags.sort();
        tags.dedup();
        let lower = owner.to_ascii_lowercase();
        let rec = StoredRecord {
            owner,
            rtype,
            ttl: a.ttl,
            rdata,
            meta: RecordMeta {
                tags,
                created: now,
                updated: now,
                source: Source::Api,
            },
        };
        if rtype == RecordType::SOA {
            if lower != origin_lower {
                return Err(StoreError::BadRecord {
                    name: a.name.to_string(),
                    rtype,
                    reason: "an SOA record belongs at the zone apex only".into(),
                });
            }
            if soa_serial_offset(&rec.rdata).is_none() {
                return Err(StoreError::BadRecord {
                    name: a.name.to_string(),
                    rtype,
                    reason: "malformed SOA".into(),
                });
            }
            new_soa = Some(rec);
            continue;
        }
        let key = rec
            .key(id)
            .ok_or_else(|| StoreError::BadOwner(a.name.to_string(), "bad name".into()))?;
        let mut rec = rec;
        if let Some(old) = t.records.get(key.as_slice())? {
            let old =
                StoredRecord::decode(old.value()).ok_or_else(|| corrupt("undecodable record"))?;
            if !zrdata::same(rtype, &old.rdata, &rec.rdata) {
                return Err(StoreError::BadRecord {
                    name: a.name.to_string(),
                    rtype,
                    reason: "RDATA hash collision with another record; not stored".into(),
                });
            }
            if old.ttl == rec.ttl && old.meta.tags == rec.meta.tags && old.owner == rec.owner {
                continue;
            }
            rec.meta.created = old.meta.created;
        }
        if let Some(old) = t.remove(&key, zone)? {
            removed.push(old);
        }
        // RFC 2181 §5.2: one TTL per RRset; the new record's TTL becomes the RRset's.
        let mut set_prefix = schema::owner_prefix(id, &rec.owner).unwrap_or_default();
        set_prefix.extend_from_slice(&u16::from(rtype).to_be_bytes());
        for (k, other) in scan_prefix(&t.records, &set_prefix, zone)? {
            if other.ttl != rec.ttl {
                let mut re = other.clone();
                re.ttl = rec.ttl;
                re.meta.updated = now;
                t.remove(&k, zone)?;
                t.insert(&k, &re)?;
                removed.push(other);
                added.push(re);
            }
        }
        t.insert(&key, &rec)?;
        added.push(rec);
        touched.insert(lower);
    }

    for owner in &touched {
        let prefix = schema::owner_prefix(id, owner).unwrap_or_default();
        let mut cnames = 0usize;
        let mut others = false;
        for (k, _) in scan_prefix(&t.records, &prefix, zone)? {
            match schema::key_type(&k) {
                Some(RecordType::CNAME) => cnames += 1,
                // RFC 4035 §2.5: DNSSEC records may sit beside a CNAME.
                Some(RecordType::RRSIG | RecordType::NSEC) => {}
                _ => others = true,
            }
        }
        if cnames > 1 || (cnames == 1 && others) {
            return Err(StoreError::CnameConflict(show_wire(owner)));
        }
    }
    if touched.contains(&origin_lower) {
        let mut ns_prefix = apex.clone();
        ns_prefix.extend_from_slice(&u16::from(RecordType::NS).to_be_bytes());
        if scan_prefix(&t.records, &ns_prefix, zone)?.is_empty() {
            return Err(StoreError::NoApexNs(zone.to_string()));
        }
    }
    if removed.is_empty() && added.is_empty() && new_soa.is_none() {
        return Err(StoreError::NoChange);
    }

    finish_update(
        txn,
        &mut zones,
        &mut t,
        meta,
        zone,
        Update {
            old_soa,
            new_soa,
            removed,
            added,
            now,
        },
    )
}

/// The SOA record (key and record) of the zone whose apex owner prefix is `apex`.
fn find_soa(
    t: &Tables<'_>,
    apex: &[u8],
    zone: &Name,
) -> Result<(Vec<u8>, StoredRecord), StoreError> {
    let mut soa_prefix = apex.to_vec();
    soa_prefix.extend_from_slice(&u16::from(RecordType::SOA).to_be_bytes());
    scan_prefix(&t.records, &soa_prefix, zone)?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Corrupt(zone.to_string(), "no SOA record".into()))
}

/// The records an update removed and added (the SOA aside), for [`finish_update`].
struct Update {
    /// Key and record of the zone's SOA before the update.
    old_soa: (Vec<u8>, StoredRecord),
    /// An SOA given by the change, replacing the old one.
    new_soa: Option<StoredRecord>,
    removed: Vec<StoredRecord>,
    added: Vec<StoredRecord>,
    now: u64,
}

/// The common end of every change transaction of a zone (changes and purge batches): bumps
/// the SOA serial, fixes the record count, writes the journal entry and the zone metadata.
/// The caller has already removed and inserted `update.removed` and `update.added`.
fn finish_update(
    txn: &WriteTransaction,
    zones: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    t: &mut Tables<'_>,
    mut meta: ZoneMeta,
    zone: &Name,
    update: Update,
) -> Result<(u64, JournalEntry), StoreError> {
    let Update {
        old_soa,
        new_soa,
        mut removed,
        mut added,
        now,
    } = update;
    let corrupt = |why: &str| StoreError::Corrupt(zone.to_string(), why.to_string());
    // RFC 1982 §3.1 serial addition; a supplied SOA may move the serial further forward.
    let (old_soa_key, old_soa) = old_soa;
    let old_serial = meta.serial;
    let mut serial = old_serial.wrapping_add(1);
    let mut soa = new_soa.unwrap_or_else(|| {
        let mut s = old_soa.clone();
        s.meta.updated = now;
        s
    });
    let at = soa_serial_offset(&soa.rdata).ok_or_else(|| corrupt("malformed SOA"))?;
    if let Some(b) = soa.rdata.get(at..at + 4).and_then(|b| b.first_chunk::<4>()) {
        let given = u32::from_be_bytes(*b);
        if serial_gt(given, serial) {
            serial = given;
        }
    }
    if let Some(b) = soa.rdata.get_mut(at..at + 4) {
        b.copy_from_slice(&serial.to_be_bytes());
    }
    soa.meta.created = old_soa.meta.created;
    t.remove(&old_soa_key, zone)?;
    let soa_key = soa.key(meta.id).ok_or_else(|| corrupt("bad origin"))?;
    t.insert(&soa_key, &soa)?;
    removed.insert(0, old_soa);
    added.insert(0, soa);

    meta.record_count = (meta.record_count + added.len() as u64)
        .checked_sub(removed.len() as u64)
        .ok_or_else(|| corrupt("record count below zero"))?;
    meta.serial = serial;
    let entry = JournalEntry {
        kind: ChangeKind::Update,
        old_serial,
        new_serial: serial,
        time: now,
        removed,
        added,
    };
    let seq = write_journal(txn, &mut meta, &entry, now)?;
    let key = meta.origin_wire.to_ascii_lowercase();
    zones.insert(key.as_slice(), meta.encode().as_slice())?;
    Ok((seq, entry))
}

fn write_journal(
    txn: &WriteTransaction,
    meta: &mut ZoneMeta,
    entry: &JournalEntry,
    now: u64,
) -> Result<u64, StoreError> {
    let mut journal = txn.open_table(JOURNAL)?;
    meta.journal_seq += 1;
    meta.updated = now;
    let seq = meta.journal_seq;
    journal.insert(
        schema::journal_key(meta.id, seq).as_slice(),
        entry.encode().as_slice(),
    )?;
    if let Some(old) = seq.checked_sub(JOURNAL_KEEP).filter(|&s| s > 0) {
        let lo = schema::journal_key(meta.id, 0);
        let hi = schema::journal_key(meta.id, old + 1);
        journal.retain_in(lo.as_slice()..hi.as_slice(), |_, _| false)?;
    }
    Ok(seq)
}

fn import_zone(
    txn: &WriteTransaction,
    import: &Import,
) -> Result<(u64, JournalEntry, ZoneMeta), StoreError> {
    let zone = &import.zone;
    let origin = zone.origin();
    let origin_lower = zone.origin_wire().to_vec();
    let mut zones = txn.open_table(ZONES)?;
    let existing = read_meta(&zones, origin)?;
    let now = schema::now();
    let id = match &existing {
        Some(m) => m.id,
        None => {
            let mut meta_table = txn.open_table(META)?;
            let id = meta_table.get("next_zone_id")?.map_or(1, |v| v.value());
            meta_table.insert("next_zone_id", id + 1)?;
            u32::try_from(id)
                .map_err(|_| StoreError::Corrupt(origin.to_string(), "zone ids exhausted".into()))?
        }
    };
    let mut records = txn.open_table(RECORDS)?;
    let mut tags = txn.open_table(TAGS)?;
    let record_meta = RecordMeta {
        tags: Vec::new(),
        created: now,
        updated: now,
        source: import.source,
    };
    let count = if existing.is_some() {
        let c = sync_zone_records(&mut records, &mut tags, zone, id, &record_meta)?;
        tracing::info!(
            zone = %origin,
            records = c.count,
            added = c.added,
            removed = c.removed,
            changed = c.changed,
            "stored records brought up to date"
        );
        c.count
    } else {
        insert_zone_records(&mut records, zone, id, &record_meta)?
    };
    let old_serial = existing.as_ref().map_or(zone.serial(), |m| m.serial);
    let mut meta = ZoneMeta {
        id,
        origin_wire: case_wire(origin),
        managed: import.managed,
        file: import.file.clone(),
        fingerprint: import.fingerprint,
        serial: zone.serial(),
        record_count: count,
        created: existing.as_ref().map_or(now, |m| m.created),
        updated: now,
        journal_seq: existing.as_ref().map_or(0, |m| m.journal_seq),
    };
    let entry = JournalEntry {
        kind: ChangeKind::Replace,
        old_serial,
        new_serial: zone.serial(),
        time: now,
        removed: Vec::new(),
        added: Vec::new(),
    };
    let seq = write_journal(txn, &mut meta, &entry, now)?;
    zones.insert(origin_lower.as_slice(), meta.encode().as_slice())?;
    Ok((seq, entry, meta))
}

/// Inserts every record of `zone` as zone `id`'s, in key order (sorted inserts fill B-tree
/// pages in order). Returns the number of records stored.
fn insert_zone_records(
    records: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    zone: &Zone,
    id: u32,
    meta: &RecordMeta,
) -> Result<u64, StoreError> {
    let mut fresh = KeyedRecords::new(zone, id)?;
    let mut key = Vec::with_capacity(600);
    let mut value = Vec::with_capacity(1024);
    let mut count = 0u64;
    while fresh.next(&mut key, &mut value, meta)? {
        if records.insert(key.as_slice(), value.as_slice())?.is_none() {
            count += 1;
        }
    }
    Ok(count)
}

/// What [`sync_zone_records`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct SyncCounts {
    /// Records the zone has now.
    count: u64,
    added: u64,
    removed: u64,
    /// Same key (owner, type, RDATA), other content (TTL, source, tags).
    changed: u64,
}

/// Differences collected before they are written: bounds what a wholesale change holds in
/// memory (redb cannot write a table while a range of it is being read).
const SYNC_CHUNK: usize = 4096;

/// Makes zone `id`'s stored records equal to `zone`'s, writing only the differences: a
/// merge of the stored records and the zone's, both in key order. A reload that changed a
/// few records of a million-name zone rewrites those few instead of the whole zone (which
/// took minutes under query load and then flushed ~300 MB at the commit; see
/// benches/README.md). Records left as they were keep their timestamps.
fn sync_zone_records(
    records: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    tags: &mut redb::Table<'_, &'static [u8], ()>,
    zone: &Zone,
    id: u32,
    meta: &RecordMeta,
) -> Result<SyncCounts, StoreError> {
    use std::cmp::Ordering;
    use std::ops::Bound;

    let (lo, hi) = zone_range(id);
    let mut fresh = KeyedRecords::new(zone, id)?;
    let (mut nkey, mut nval) = (Vec::with_capacity(600), Vec::with_capacity(1024));
    let mut have_new = fresh.next(&mut nkey, &mut nval, meta)?;
    let mut prev_new: Vec<u8> = Vec::new();
    let (mut skey, mut sval) = (Vec::with_capacity(600), Vec::with_capacity(1024));
    // The keys up to and including this one are dealt with.
    let mut done_to: Option<Vec<u8>> = None;
    let mut counts = SyncCounts::default();
    let mut removes: Vec<Vec<u8>> = Vec::new();
    let mut dead_tags: Vec<Vec<u8>> = Vec::new();
    let mut puts: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    loop {
        let mut finished = true;
        {
            let from = match &done_to {
                Some(k) => Bound::Excluded(k.as_slice()),
                None => Bound::Included(lo.as_slice()),
            };
            let mut stored = records.range::<&[u8]>((from, Bound::Excluded(hi.as_slice())))?;
            let mut have_stored = read_next(&mut stored, &mut skey, &mut sval)?;
            loop {
                if removes.len() + puts.len() >= SYNC_CHUNK {
                    finished = false;
                    break;
                }
                crate::pace::tick();
                // Two records of the zone with one key (the same RDATA twice): stored once.
                if have_new && !prev_new.is_empty() && nkey == prev_new {
                    have_new = fresh.next(&mut nkey, &mut nval, meta)?;
                    continue;
                }
                let order = match (have_stored, have_new) {
                    (false, false) => break,
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    (true, true) => skey.as_slice().cmp(nkey.as_slice()),
                };
                match order {
                    Ordering::Less => {
                        // Stored only: removed, with its tag index entries.
                        dead_tags.extend(tag_keys(&skey, &sval));
                        removes.push(skey.clone());
                        counts.removed += 1;
                    }
                    Ordering::Equal => {
                        // Same owner, type and RDATA. Rewritten only when the rest differs
                        // (TTL, source, tags), keeping its creation time.
                        if !schema::same_record_content(&sval, &nval) {
                            dead_tags.extend(tag_keys(&skey, &sval));
                            let mut value = nval.clone();
                            schema::keep_created(&sval, &mut value);
                            puts.push((nkey.clone(), value));
                            counts.changed += 1;
                        }
                        counts.count += 1;
                    }
                    Ordering::Greater => {
                        puts.push((nkey.clone(), nval.clone()));
                        counts.added += 1;
                        counts.count += 1;
                    }
                }
                // Every key up to this one is dealt with on both sides, including the ones
                // about to be inserted, which the next pass must not read back as stored.
                let done = done_to.get_or_insert_with(Vec::new);
                done.clear();
                done.extend_from_slice(if order == Ordering::Greater {
                    &nkey
                } else {
                    &skey
                });
                if order != Ordering::Greater {
                    have_stored = read_next(&mut stored, &mut skey, &mut sval)?;
                }
                if order != Ordering::Less {
                    prev_new.clear();
                    prev_new.extend_from_slice(&nkey);
                    have_new = fresh.next(&mut nkey, &mut nval, meta)?;
                }
            }
        }
        for k in removes.drain(..) {
            records.remove(k.as_slice())?;
        }
        for k in dead_tags.drain(..) {
            tags.remove(k.as_slice())?;
        }
        for (k, v) in puts.drain(..) {
            records.insert(k.as_slice(), v.as_slice())?;
        }
        if finished {
            return Ok(counts);
        }
    }
}

/// The tag index keys of the stored record `key` → `value`.
fn tag_keys(key: &[u8], value: &[u8]) -> Vec<Vec<u8>> {
    StoredRecord::decode(value).map_or_else(Vec::new, |r| {
        r.meta
            .tags
            .iter()
            .map(|t| schema::tag_key(t, key))
            .collect()
    })
}

/// Copies the next entry of `range` into `key` and `value`; false at its end.
fn read_next(
    range: &mut redb::Range<'_, &'static [u8], &'static [u8]>,
    key: &mut Vec<u8>,
    value: &mut Vec<u8>,
) -> Result<bool, StoreError> {
    let Some(entry) = range.next() else {
        return Ok(false);
    };
    let (k, v) = entry?;
    key.clear();
    key.extend_from_slice(k.value());
    value.clear();
    value.extend_from_slice(v.value());
    Ok(true)
}

/// A zone's records in store key order, keyed and encoded one at a time into the caller's
/// buffers, without a second copy of the zone: the owner keys of all nodes are sorted in
/// one buffer (about 30 octets per name), then each owner's records are sorted by type and
/// RDATA hash as they come.
struct KeyedRecords<'z> {
    zone: &'z Zone,
    id: u32,
    okeys: Vec<u8>,
    /// (offset of the owner key in `okeys`, its length, node index), sorted by owner key.
    owners: Vec<(u32, u16, u32)>,
    next_owner: usize,
    owner: &'z [u8],
    /// The current owner's records: (type, RDATA hash, TTL, RDATA).
    rows: Vec<(u16, u64, u32, &'z [u8])>,
    next_row: usize,
    /// The current owner's key prefix: zone id, owner key, 0.
    prefix: Vec<u8>,
    canon: Vec<u8>,
}

impl<'z> KeyedRecords<'z> {
    fn new(zone: &'z Zone, id: u32) -> Result<KeyedRecords<'z>, StoreError> {
        let corrupt = |why: &str| StoreError::Corrupt(zone.origin().to_string(), why.to_string());
        let mut okeys: Vec<u8> = Vec::with_capacity(zone.name_count().saturating_mul(24));
        let mut owners: Vec<(u32, u16, u32)> = Vec::with_capacity(zone.name_count());
        for (i, node) in zone.nodes().enumerate() {
            crate::pace::tick();
            if node.is_empty_non_terminal() {
                continue;
            }
            let at = okeys.len();
            schema::push_owner_key(&mut okeys, zone.owner(node))
                .ok_or_else(|| corrupt("bad owner"))?;
            let at = u32::try_from(at).map_err(|_| corrupt("too many names to import"))?;
            let len = u16::try_from(okeys.len() - at as usize).map_err(|_| corrupt("bad owner"))?;
            let node = u32::try_from(i).map_err(|_| corrupt("too many names to import"))?;
            owners.push((at, len, node));
        }
        let key_of = |&(at, len, _): &(u32, u16, u32)| {
            okeys
                .get(at as usize..at as usize + usize::from(len))
                .unwrap_or_default()
        };
        owners.sort_unstable_by(|a, b| key_of(a).cmp(key_of(b)));
        Ok(KeyedRecords {
            zone,
            id,
            okeys,
            owners,
            next_owner: 0,
            owner: &[],
            rows: Vec::new(),
            next_row: 0,
            prefix: Vec::with_capacity(300),
            canon: Vec::with_capacity(256),
        })
    }

    /// Writes the next record's key into `key` and its value (with `meta`) into `value`;
    /// false when there are no more.
    fn next(
        &mut self,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
        meta: &RecordMeta,
    ) -> Result<bool, StoreError> {
        while self.next_row >= self.rows.len() {
            let Some(&(at, len, index)) = self.owners.get(self.next_owner) else {
                return Ok(false);
            };
            self.next_owner += 1;
            crate::pace::tick();
            let zone = self.zone;
            let node = zone.node_at(index).ok_or_else(|| {
                StoreError::Corrupt(zone.origin().to_string(), "bad node".to_string())
            })?;
            self.owner = zone.owner(node);
            self.rows.clear();
            self.next_row = 0;
            for set in zone.sets(node) {
                let rtype = set.rtype();
                for rd in Rdatas::new(zone.data(set)) {
                    let hash = schema::rdata_hash_with(rtype, rd, &mut self.canon);
                    self.rows.push((u16::from(rtype), hash, set.ttl(), rd));
                }
            }
            // Key order within an owner: type, then RDATA hash (both big-endian in the key).
            self.rows.sort_unstable_by_key(|r| (r.0, r.1));
            self.prefix.clear();
            self.prefix.extend_from_slice(&self.id.to_be_bytes());
            self.prefix.extend_from_slice(
                self.okeys
                    .get(at as usize..at as usize + usize::from(len))
                    .unwrap_or_default(),
            );
            self.prefix.push(0);
        }
        let Some(&(rtype, hash, ttl, rdata)) = self.rows.get(self.next_row) else {
            return Ok(false);
        };
        self.next_row += 1;
        key.clear();
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(&rtype.to_be_bytes());
        key.extend_from_slice(&hash.to_be_bytes());
        value.clear();
        schema::encode_record(
            value,
            schema::RecordParts {
                rtype: RecordType::from(rtype),
                ttl,
                owner: self.owner,
                rdata,
                meta,
            },
        );
        Ok(true)
    }
}

fn set_managed(txn: &WriteTransaction, zone: &Name, managed: Managed) -> Result<(), StoreError> {
    let mut zones = txn.open_table(ZONES)?;
    let mut meta =
        read_meta(&zones, zone)?.ok_or_else(|| StoreError::NoSuchZone(zone.to_string()))?;
    meta.managed = managed;
    meta.updated = schema::now();
    let key = meta.origin_wire.to_ascii_lowercase();
    zones.insert(key.as_slice(), meta.encode().as_slice())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_arithmetic() {
        assert!(serial_gt(2, 1));
        assert!(!serial_gt(1, 2));
        assert!(serial_gt(0, u32::MAX));
        assert!(serial_gt(5, u32::MAX - 5));
        assert!(!serial_gt(7, 7));
        assert_eq!(u32::MAX.wrapping_add(1), 0);
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
    }

    #[test]
    fn owners_parse_relative_to_the_origin() {
        let origin = Name::from_ascii("example.com.").unwrap();
        assert_eq!(parse_owner("@", &origin).unwrap(), origin);
        assert_eq!(
            parse_owner("www", &origin).unwrap().to_string(),
            "www.example.com."
        );
        assert_eq!(parse_owner("a.b.", &origin).unwrap().to_string(), "a.b.");
        assert!(parse_owner("a..b", &origin).is_err());
        assert!(parse_owner("", &origin).is_err());
        assert!(parse_owner("a b", &origin).is_err());
    }
}
