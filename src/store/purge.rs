//! Bulk purges: deleting every record that carries a tag `key=value` (optionally only in
//! one zone, of one type, or last updated before a time), in batches.
//!
//! The tag index (`key=value` ‖ 0x00 ‖ record key) makes the candidates one key range, in
//! record-key order (so grouped by zone). A purge is:
//!
//! 1. [`Store::purge_plan`]: checks the filter (a store-managed zone when one is named) and
//!    counts the candidates in one read transaction (the job's `total`);
//! 2. repeatedly [`Store::purge_prepare`]: reads the next `limit` candidates after a cursor
//!    in a read transaction (any thread; it never blocks the writer);
//! 3. [`Store::purge_batch`]: one write transaction on the store writer thread that deletes
//!    the candidates still present and still matching, with their tag index entries, bumps
//!    the SOA serial of each touched zone (RFC 1982 §3.1), journals the change and publishes
//!    one change event per touched zone, exactly like a change transaction
//!    ([`Store::apply`]); or, for a dry run, [`Store::purge_dry_run`], which classifies the
//!    same way in a read transaction and changes nothing.
//!
//! Each batch is atomic: a crash leaves the store as it was after the last committed batch,
//! and running the purge again finishes the job (the cursor only saves re-reading). Records
//! that match but must stay are counted as skipped with a [`SkipReason`]: the SOA (RFC 1035
//! §5.2: a zone has exactly one), the apex NS RRset when the purge would remove all of it
//! (RFC 1034 §4.2.1: the apex must keep its NS records), and records of file-managed zones
//! (their zone file is the source of truth and would bring them back).
//!
//! Job bookkeeping (progress, limits, cancellation) lives in `crate::jobs`, not here.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use hickory_proto::rr::{Name, RecordType};
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::schema::{self, Managed, RECORDS, StoredRecord, TAGS, ZONES};
use super::{
    ChangeEvent, Command, Store, StoreError, Tables, Update, find_soa, finish_update,
    name_from_wire, prefix_end, read_meta, show_wire,
};
use std::sync::Arc;

/// Which records a purge deletes: those tagged `tag`, narrowed by the optional fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeFilter {
    /// `key=value` (see [`schema::valid_tag`]).
    pub tag: String,
    /// Only this zone (which must be store-managed).
    pub zone: Option<Name>,
    /// Only records of this type.
    pub rtype: Option<RecordType>,
    /// Only records last updated strictly before this time (seconds since the Unix epoch).
    pub updated_before: Option<u64>,
}

impl PurgeFilter {
    /// Whether a stored record matches (the tag included: it may have changed since the
    /// candidate was read).
    pub fn matches(&self, rec: &StoredRecord) -> bool {
        rec.meta.tags.contains(&self.tag)
            && self.rtype.is_none_or(|t| t == rec.rtype)
            && self.updated_before.is_none_or(|t| rec.meta.updated < t)
    }
}

/// Why a matching record was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// The zone's SOA record.
    Soa,
    /// An apex NS record, when every apex NS record matches the purge.
    ApexNs,
    /// A record of a file-managed zone.
    FileManaged,
}

impl SkipReason {
    /// Why, for job reports.
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::Soa => "the SOA record is never deleted (RFC 1035 §5.2)",
            SkipReason::ApexNs => {
                "the purge would remove every NS record at the zone apex (RFC 1034 §4.2.1)"
            }
            SkipReason::FileManaged => {
                "the zone is file-managed: its zone file is the source of truth"
            }
        }
    }
}

/// A checked filter with its key range and candidate count.
#[derive(Debug, Clone)]
pub struct PurgePlan {
    pub filter: PurgeFilter,
    /// Tag index entries matching the tag (and zone and type, when given) when planned.
    pub total: u64,
    lo: Vec<u8>,
    hi: Vec<u8>,
}

/// The candidates of one zone in a batch.
#[derive(Debug, Clone)]
struct ZoneKeys {
    zone: Name,
    id: u32,
    keys: Vec<Vec<u8>>,
}

/// One batch of candidates, read after a cursor.
#[derive(Debug, Clone, Default)]
pub struct PurgeBatch {
    groups: Vec<ZoneKeys>,
    /// Candidates in the batch (what `processed` advances by once it is committed).
    pub candidates: u64,
    /// The last tag index key read: the next batch starts after it. None: the range is
    /// exhausted (this is the last batch).
    pub cursor: Option<Vec<u8>>,
}

impl PurgeBatch {
    pub fn is_empty(&self) -> bool {
        self.candidates == 0
    }
}

/// What one batch did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeOutcome {
    /// Candidates examined.
    pub processed: u64,
    /// Records removed (dry run: that would be removed).
    pub deleted: u64,
    /// Matching records kept, by reason and zone.
    pub skipped: BTreeMap<(SkipReason, String), u64>,
    /// Zones changed, with their new serial.
    pub zones: Vec<(Name, u32)>,
}

impl PurgeOutcome {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    fn skip(&mut self, reason: SkipReason, zone: &Name, n: u64) {
        if n > 0 {
            *self.skipped.entry((reason, zone.to_string())).or_default() += n;
        }
    }
}

/// Zone id → origin, filled from the zones table on a miss.
#[derive(Debug, Default)]
pub struct ZoneIds(HashMap<u32, Name>);

impl ZoneIds {
    fn get(
        &mut self,
        zones: &impl ReadableTable<&'static [u8], &'static [u8]>,
        id: u32,
    ) -> Result<Option<Name>, StoreError> {
        if !self.0.contains_key(&id) {
            self.0.clear();
            for item in zones.iter()? {
                let (k, v) = item?;
                let meta = schema::ZoneMeta::decode(v.value()).ok_or_else(|| {
                    StoreError::Corrupt(show_wire(k.value()), "undecodable zone metadata".into())
                })?;
                if let Some(origin) = name_from_wire(&meta.origin_wire) {
                    self.0.insert(meta.id, origin);
                }
            }
        }
        Ok(self.0.get(&id).cloned())
    }
}

impl Store {
    /// Checks `filter` and counts its candidates (one range scan of the tag index). Fails
    /// on a malformed tag, an unknown zone and a file-managed zone.
    pub fn purge_plan(&self, filter: PurgeFilter) -> Result<PurgePlan, StoreError> {
        if !schema::valid_tag(&filter.tag) {
            return Err(StoreError::BadTag(filter.tag));
        }
        let txn = self.inner.db.begin_read()?;
        let mut lo = filter.tag.as_bytes().to_vec();
        lo.push(0);
        if let Some(zone) = &filter.zone {
            let zones = txn.open_table(ZONES)?;
            let meta =
                read_meta(&zones, zone)?.ok_or_else(|| StoreError::NoSuchZone(zone.to_string()))?;
            if meta.managed != Managed::Store {
                return Err(StoreError::NotStoreManaged(zone.to_string()));
            }
            lo.extend_from_slice(&meta.id.to_be_bytes());
        }
        let hi = prefix_end(&lo);
        let tags = txn.open_table(TAGS)?;
        let mut total = 0u64;
        for item in tags.range(lo.as_slice()..hi.as_slice())? {
            let (k, _) = item?;
            if type_matches(&filter, k.value()) {
                total += 1;
            }
        }
        Ok(PurgePlan {
            filter,
            total,
            lo,
            hi,
        })
    }

    /// The next at most `limit` candidates after `cursor` (from the start when None), in
    /// one read transaction.
    pub fn purge_prepare(
        &self,
        plan: &PurgePlan,
        cursor: Option<&[u8]>,
        limit: usize,
        ids: &mut ZoneIds,
    ) -> Result<PurgeBatch, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let tags = txn.open_table(TAGS)?;
        let zones = txn.open_table(ZONES)?;
        let start = match cursor {
            Some(c) => Bound::Excluded(c),
            None => Bound::Included(plan.lo.as_slice()),
        };
        let mut batch = PurgeBatch::default();
        let mut by_zone: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
        let range = tags.range::<&[u8]>((start, Bound::Excluded(plan.hi.as_slice())))?;
        let mut last: Option<Vec<u8>> = None;
        let mut more = false;
        for item in range {
            let (k, _) = item?;
            let key = k.value();
            if batch.candidates >= limit.max(1) as u64 {
                more = true;
                break;
            }
            last = Some(key.to_vec());
            if !type_matches(&plan.filter, key) {
                continue;
            }
            batch.candidates += 1;
            let Some((_, rkey)) = schema::split_tag_key(key) else {
                // Malformed index entry (`db check` reports it): nothing to delete.
                continue;
            };
            if let Some(id) = schema::key_zone(rkey) {
                by_zone.entry(id).or_default().push(rkey.to_vec());
            }
        }
        for (id, keys) in by_zone {
            // A candidate of a zone that no longer exists is processed but deletes nothing.
            if let Some(zone) = ids.get(&zones, id)? {
                batch.groups.push(ZoneKeys { zone, id, keys });
            }
        }
        batch.cursor = if more { last } else { None };
        Ok(batch)
    }

    /// Deletes the batch's candidates that are still present and still match, in one write
    /// transaction on the writer thread (see the module docs). On success the batch is
    /// durable and one change event per touched zone has been published.
    pub async fn purge_batch(
        &self,
        plan: &PurgePlan,
        batch: PurgeBatch,
    ) -> Result<PurgeOutcome, StoreError> {
        let filter = plan.filter.clone();
        self.request(|reply| Command::Purge {
            filter,
            batch,
            reply,
        })
        .await
    }

    /// What [`Store::purge_batch`] would do with `batch`, in a read transaction.
    pub fn purge_dry_run(
        &self,
        plan: &PurgePlan,
        batch: &PurgeBatch,
    ) -> Result<PurgeOutcome, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let zones = txn.open_table(ZONES)?;
        let records = txn.open_table(RECORDS)?;
        let mut outcome = PurgeOutcome {
            processed: batch.candidates,
            ..PurgeOutcome::default()
        };
        for group in &batch.groups {
            let Some(meta) = read_meta(&zones, &group.zone)?.filter(|m| m.id == group.id) else {
                continue;
            };
            let delete = classify(&records, &plan.filter, &meta, group, &mut outcome)?;
            outcome.deleted += delete.len() as u64;
        }
        Ok(outcome)
    }
}

/// The record type of a tag index key passes the filter's type.
fn type_matches(filter: &PurgeFilter, tag_key: &[u8]) -> bool {
    match filter.rtype {
        None => true,
        Some(t) => {
            schema::split_tag_key(tag_key).and_then(|(_, rkey)| schema::key_type(rkey)) == Some(t)
        }
    }
}

/// The keys of `group` to delete; the kept matches are counted in `outcome.skipped`.
fn classify<'g>(
    records: &impl ReadableTable<&'static [u8], &'static [u8]>,
    filter: &PurgeFilter,
    meta: &schema::ZoneMeta,
    group: &'g ZoneKeys,
    outcome: &mut PurgeOutcome,
) -> Result<Vec<&'g [u8]>, StoreError> {
    let zone = &group.zone;
    let corrupt = |why: &str| StoreError::Corrupt(zone.to_string(), why.to_string());
    if meta.managed != Managed::Store {
        // Counts only the candidates that really match.
        let mut n = 0;
        for key in &group.keys {
            if let Some(v) = records.get(key.as_slice())? {
                let rec =
                    StoredRecord::decode(v.value()).ok_or_else(|| corrupt("undecodable record"))?;
                n += u64::from(filter.matches(&rec));
            }
        }
        outcome.skip(SkipReason::FileManaged, zone, n);
        return Ok(Vec::new());
    }
    let origin_lower = meta.origin_wire.to_ascii_lowercase();
    let apex = schema::owner_prefix(meta.id, &origin_lower).ok_or_else(|| corrupt("bad origin"))?;
    let mut apex_ns = apex.clone();
    apex_ns.extend_from_slice(&u16::from(RecordType::NS).to_be_bytes());
    // Computed on the first apex NS candidate: does the purge match every apex NS record?
    let mut all_apex_ns_match: Option<bool> = None;
    let mut delete = Vec::new();
    let (mut soa, mut ns) = (0, 0);
    for key in &group.keys {
        crate::pace::tick();
        let Some(v) = records.get(key.as_slice())? else {
            continue; // deleted since the batch was read
        };
        let rec = StoredRecord::decode(v.value()).ok_or_else(|| corrupt("undecodable record"))?;
        drop(v);
        if !filter.matches(&rec) {
            continue; // changed since the batch was read
        }
        if rec.rtype == RecordType::SOA {
            soa += 1;
            continue;
        }
        if key.starts_with(&apex_ns) {
            let all = match all_apex_ns_match {
                Some(all) => all,
                None => {
                    let end = prefix_end(&apex_ns);
                    let mut all = true;
                    for item in records.range(apex_ns.as_slice()..end.as_slice())? {
                        let (_, v) = item?;
                        let r = StoredRecord::decode(v.value())
                            .ok_or_else(|| corrupt("undecodable record"))?;
                        all &= filter.matches(&r);
                    }
                    *all_apex_ns_match.insert(all)
                }
            };
            if all {
                ns += 1;
                continue;
            }
        }
        delete.push(key.as_slice());
    }
    outcome.skip(SkipReason::Soa, zone, soa);
    outcome.skip(SkipReason::ApexNs, zone, ns);
    Ok(delete)
}

/// A committed change of one zone: origin, journal sequence, entry.
pub(super) type ZoneChange = (Name, u64, schema::JournalEntry);

/// The writer's side of [`Store::purge_batch`]: runs inside one write transaction and
/// returns the outcome with the journal entry of each touched zone, to publish after the
/// commit.
pub(super) fn purge_batch_txn(
    txn: &WriteTransaction,
    filter: &PurgeFilter,
    batch: &PurgeBatch,
) -> Result<(PurgeOutcome, Vec<ZoneChange>), StoreError> {
    let mut zones = txn.open_table(ZONES)?;
    let mut t = Tables {
        records: txn.open_table(RECORDS)?,
        tags: txn.open_table(TAGS)?,
    };
    let now = schema::now();
    let mut outcome = PurgeOutcome {
        processed: batch.candidates,
        ..PurgeOutcome::default()
    };
    let mut changes = Vec::new();
    for group in &batch.groups {
        let zone = &group.zone;
        let Some(meta) = read_meta(&zones, zone)?.filter(|m| m.id == group.id) else {
            continue; // the zone was removed since the batch was read
        };
        let delete = classify(&t.records, filter, &meta, group, &mut outcome)?;
        if delete.is_empty() {
            continue;
        }
        let mut removed = Vec::with_capacity(delete.len());
        for key in delete {
            crate::pace::tick();
            if let Some(rec) = t.remove(key, zone)? {
                removed.push(rec);
            }
        }
        outcome.deleted += removed.len() as u64;
        let origin_lower = meta.origin_wire.to_ascii_lowercase();
        let apex = schema::owner_prefix(meta.id, &origin_lower)
            .ok_or_else(|| StoreError::Corrupt(zone.to_string(), "bad origin".into()))?;
        let old_soa = find_soa(&t, &apex, zone)?;
        let (seq, entry) = finish_update(
            txn,
            &mut zones,
            &mut t,
            meta,
            zone,
            Update {
                old_soa,
                new_soa: None,
                removed,
                added: Vec::new(),
                now,
            },
        )?;
        outcome.zones.push((zone.clone(), entry.new_serial));
        changes.push((zone.clone(), seq, entry));
    }
    Ok((outcome, changes))
}

/// Publishes the change events of a committed purge batch, in zone order.
pub(super) fn publish_batch(publisher: &mut super::stream::Publisher, changes: Vec<ZoneChange>) {
    for (zone, seq, entry) in changes {
        publisher.publish(Arc::new(ChangeEvent {
            zone,
            kind: entry.kind,
            seq,
            old_serial: entry.old_serial,
            new_serial: entry.new_serial,
            removed: entry.removed,
            added: entry.added,
        }));
    }
}
