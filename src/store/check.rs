//! `muninn db check`: verifies the store in one read transaction.
//!
//! - every record decodes and sits under the key its content gives (zone, owner, type,
//!   RDATA hash), in a zone that exists;
//! - every tag of a record has its index entry, and every index entry points to a record
//!   that carries the tag (no orphans either way);
//! - each zone has exactly one SOA, at its apex, whose serial is the zone's serial and the
//!   new serial of its newest journal entry (the journal head);
//! - RRsets are well formed: one TTL per RRset (RFC 2181 §5.2), no duplicate records
//!   (RFC 2181 §5), and the zone's record count is exact.

use std::collections::HashSet;
use std::fmt;

use hickory_proto::rr::RecordType;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::schema::{self, JOURNAL, JournalEntry, RECORDS, StoredRecord, TAGS, ZONES, ZoneMeta};
use super::{StoreError, show_wire, zone_range};
use crate::zone::rdata;

/// One zone's line in the report.
#[derive(Debug, Clone)]
pub struct ZoneSummary {
    pub origin: String,
    pub managed: &'static str,
    pub records: u64,
    pub serial: u32,
}

/// What `db check` found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub zones: Vec<ZoneSummary>,
    pub records: u64,
    pub tag_entries: u64,
    pub journal_entries: u64,
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for z in &self.zones {
            writeln!(
                f,
                "zone {}: {}-managed, serial {}, {} records",
                z.origin, z.managed, z.serial, z.records
            )?;
        }
        for p in &self.problems {
            writeln!(f, "PROBLEM: {p}")?;
        }
        write!(
            f,
            "{} zones, {} records, {} tag index entries, {} journal entries: {}",
            self.zones.len(),
            self.records,
            self.tag_entries,
            self.journal_entries,
            if self.is_ok() {
                "OK".to_string()
            } else {
                format!("{} problem(s)", self.problems.len())
            }
        )
    }
}

const MAX_PROBLEMS: usize = 1000;

struct Problems(Vec<String>, usize);

impl Problems {
    fn push(&mut self, p: String) {
        if self.0.len() < MAX_PROBLEMS {
            self.0.push(p);
        } else {
            self.1 += 1;
        }
    }
}

pub(super) fn run(db: &Database) -> Result<CheckReport, StoreError> {
    let txn = db.begin_read()?;
    let zones = txn.open_table(ZONES)?;
    let records = txn.open_table(RECORDS)?;
    let tags = txn.open_table(TAGS)?;
    let journal = txn.open_table(JOURNAL)?;
    let mut report = CheckReport::default();
    let mut problems = Problems(Vec::new(), 0);
    let mut ids = HashSet::new();
    let mut scanned = 0u64;

    for item in zones.iter()? {
        let (k, v) = item?;
        let key = k.value();
        let Some(meta) = ZoneMeta::decode(v.value()) else {
            problems.push(format!("zone {}: undecodable metadata", show_wire(key)));
            continue;
        };
        let origin = show_wire(&meta.origin_wire);
        let origin_lower = meta.origin_wire.to_ascii_lowercase();
        if origin_lower != key {
            problems.push(format!("zone {origin}: filed under another name"));
        }
        if !ids.insert(meta.id) {
            problems.push(format!("zone {origin}: id {} used twice", meta.id));
        }
        let zone = check_zone(&records, &tags, &meta, &origin, &mut problems)?;
        scanned += zone.count;
        // The journal head: the newest entry's new serial is the zone's serial.
        let (lo, hi) = zone_range(meta.id);
        let head = journal.range(lo.as_slice()..hi.as_slice())?.next_back();
        match head {
            None => problems.push(format!("zone {origin}: journal is empty")),
            Some(item) => {
                let (k, v) = item?;
                let seq = k
                    .value()
                    .get(4..12)
                    .and_then(|b| b.first_chunk::<8>())
                    .map(|b| u64::from_be_bytes(*b));
                match JournalEntry::decode(v.value()) {
                    None => problems.push(format!("zone {origin}: undecodable journal head")),
                    Some(e) => {
                        if e.new_serial != meta.serial {
                            problems.push(format!(
                                "zone {origin}: journal head serial {} but zone serial {}",
                                e.new_serial, meta.serial
                            ));
                        }
                    }
                }
                if seq != Some(meta.journal_seq) {
                    problems.push(format!(
                        "zone {origin}: journal head is entry {seq:?}, metadata says {}",
                        meta.journal_seq
                    ));
                }
            }
        }
        if zone.soa_serials.len() != 1 {
            problems.push(format!(
                "zone {origin}: {} SOA records at the apex (need exactly 1)",
                zone.soa_serials.len()
            ));
        }
        if let Some(&s) = zone.soa_serials.first()
            && s != meta.serial
        {
            problems.push(format!(
                "zone {origin}: SOA serial {s} but metadata serial {}",
                meta.serial
            ));
        }
        if zone.count != meta.record_count {
            problems.push(format!(
                "zone {origin}: {} records stored, metadata counts {}",
                zone.count, meta.record_count
            ));
        }
        report.zones.push(ZoneSummary {
            origin,
            managed: meta.managed.as_str(),
            records: zone.count,
            serial: meta.serial,
        });
    }

    report.records = records.len()?;
    if report.records != scanned {
        // Some records belong to no zone: find them.
        for item in records.iter()? {
            let (k, _) = item?;
            let id = schema::key_zone(k.value());
            if !id.is_some_and(|id| ids.contains(&id)) {
                problems.push(format!("record key {:?}: belongs to no zone", k.value()));
            }
        }
    }

    for item in tags.iter()? {
        let (k, _) = item?;
        report.tag_entries += 1;
        let key = k.value();
        let Some((tag, rkey)) = schema::split_tag_key(key) else {
            problems.push(format!("tag index entry {key:?}: malformed"));
            continue;
        };
        let tag = String::from_utf8_lossy(tag);
        match records.get(rkey)? {
            None => problems.push(format!(
                "tag index entry {tag:?}: points to no record (orphaned index entry)"
            )),
            Some(v) => {
                let has = StoredRecord::decode(v.value())
                    .is_some_and(|r| r.meta.tags.iter().any(|t| *t == tag));
                if !has {
                    problems.push(format!(
                        "tag index entry {tag:?}: the record it points to has no such tag"
                    ));
                }
            }
        }
    }

    for item in journal.iter()? {
        let (k, _) = item?;
        report.journal_entries += 1;
        if !schema::key_zone(k.value()).is_some_and(|id| ids.contains(&id)) {
            problems.push(format!("journal entry {:?}: belongs to no zone", k.value()));
        }
    }

    if problems.1 > 0 {
        problems
            .0
            .push(format!("{} more problems not shown", problems.1));
    }
    report.problems = problems.0;
    Ok(report)
}

struct ZoneScan {
    count: u64,
    soa_serials: Vec<u32>,
}

fn check_zone(
    records: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tags: &impl ReadableTable<&'static [u8], ()>,
    meta: &ZoneMeta,
    origin: &str,
    problems: &mut Problems,
) -> Result<ZoneScan, StoreError> {
    let origin_lower = meta.origin_wire.to_ascii_lowercase();
    let (lo, hi) = zone_range(meta.id);
    let mut scan = ZoneScan {
        count: 0,
        soa_serials: Vec::new(),
    };
    // The current RRset: key prefix up to the type, its TTL and RDATAs.
    let mut set_key: Vec<u8> = Vec::new();
    let mut set_ttl = 0u32;
    let mut set_rdata: Vec<Vec<u8>> = Vec::new();
    for item in records.range(lo.as_slice()..hi.as_slice())? {
        let (k, v) = item?;
        let key = k.value();
        scan.count += 1;
        let Some(rec) = StoredRecord::decode(v.value()) else {
            problems.push(format!("zone {origin}: record {key:?} does not decode"));
            continue;
        };
        let name = show_wire(&rec.owner);
        if rec.key(meta.id).as_deref() != Some(key) {
            problems.push(format!(
                "zone {origin}: {name} {}: filed under the wrong key",
                rec.rtype
            ));
        }
        let lower = rec.owner_lower();
        if !crate::zone::wire_is_below_or_eq(&lower, &origin_lower) {
            problems.push(format!("zone {origin}: {name} is outside the zone"));
        }
        for t in &rec.meta.tags {
            if tags.get(schema::tag_key(t, key).as_slice())?.is_none() {
                problems.push(format!(
                    "zone {origin}: {name} {}: tag {t:?} is not indexed",
                    rec.rtype
                ));
            }
        }
        if rec.rtype == RecordType::SOA {
            if lower == origin_lower {
                match rdata::soa_serial_minimum(&rec.rdata) {
                    Some((serial, _)) => scan.soa_serials.push(serial),
                    None => problems.push(format!("zone {origin}: malformed SOA")),
                }
            } else {
                problems.push(format!("zone {origin}: SOA at {name}, not at the apex"));
            }
        }
        let prefix = key.get(..key.len().saturating_sub(8)).unwrap_or_default();
        if prefix != set_key.as_slice() {
            set_key = prefix.to_vec();
            set_ttl = rec.ttl;
            set_rdata.clear();
        } else if rec.ttl != set_ttl {
            problems.push(format!(
                "zone {origin}: RRset {name} {} has TTLs {set_ttl} and {} (RFC 2181 §5.2)",
                rec.rtype, rec.ttl
            ));
        }
        if set_rdata
            .iter()
            .any(|other| rdata::same(rec.rtype, other, &rec.rdata))
        {
            problems.push(format!(
                "zone {origin}: RRset {name} {} holds a duplicate record",
                rec.rtype
            ));
        }
        set_rdata.push(rec.rdata);
    }
    Ok(scan)
}
