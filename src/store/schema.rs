//! Table definitions and the byte layout of keys and values (see the module docs of
//! [`crate::store`] for the schema). Every decoder reads possibly-damaged bytes defensively
//! and returns `None` rather than panicking: `db check` must be able to report them.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::rr::RecordType;
use redb::TableDefinition;

use crate::zone::rdata::{self, Labels, Part};

/// Schema version stored under `meta["schema"]`.
pub const SCHEMA_VERSION: u64 = 1;

/// `"schema"` → version, `"next_zone_id"` → next free zone id.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Lowercase wire-form origin → [`ZoneMeta`].
pub const ZONES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("zones");
/// [`record_key`] → [`StoredRecord`] (value form).
pub const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// tag `key=value` ‖ 0x00 ‖ record key → ().
pub const TAGS: TableDefinition<&[u8], ()> = TableDefinition::new("tags");
/// zone id (u32 BE) ‖ journal sequence (u64 BE) → journal entry.
pub const JOURNAL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("journal");

/// Journal entries kept per zone (older ones are trimmed in the same transaction).
pub const JOURNAL_KEEP: u64 = 1000;

/// Who manages a zone's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Managed {
    /// The zone file is the source of truth: a changed file replaces the stored records.
    File,
    /// The store is the source of truth: changed only through [`crate::store::Store::apply`]
    /// (a file, if configured, only seeds an empty store once).
    Store,
}

impl Managed {
    pub fn as_str(self) -> &'static str {
        match self {
            Managed::File => "file",
            Managed::Store => "store",
        }
    }
}

/// Where a stored record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Imported from the zone's configured file.
    File,
    /// Added through a change transaction (API, CLI).
    Api,
    /// Loaded with `muninn db import`.
    Import,
}

impl Source {
    fn code(self) -> u8 {
        match self {
            Source::File => 0,
            Source::Api => 1,
            Source::Import => 2,
        }
    }

    fn from_code(c: u8) -> Option<Source> {
        Some(match c {
            0 => Source::File,
            1 => Source::Api,
            2 => Source::Import,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Api => "api",
            Source::Import => "import",
        }
    }
}

/// What identifies one version of a zone file's content: size, mtime and a stable hash of
/// the content (the hash catches same-second edits on coarse-mtime file systems). Stored in
/// the zone's metadata, so the hash function must never change between releases: it is our
/// own (FxHash-style, 8 bytes per step), not `std`'s `DefaultHasher`, which may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub len: u64,
    /// Modification time in nanoseconds since the Unix epoch (0 when unknown).
    pub mtime_ns: u64,
    pub hash: u64,
}

impl Fingerprint {
    /// Reads the whole file, a buffer at a time (a start fingerprints every zone file: no
    /// allocation the size of the file).
    pub fn of(path: &std::path::Path) -> std::io::Result<Fingerprint> {
        use std::hash::Hasher;
        use std::io::Read;
        let mut file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        let mut h = crate::zone::NameHasher::default();
        // A multiple of 8: the hasher consumes 8-byte words, so feeding it whole buffers
        // gives the same hash as feeding it the file at once (see `stable_hash`).
        // 64 KiB: hashing one is ~20 us, a pacing step for heavy threads (see `pace`).
        let mut buf = vec![0u8; 64 << 10];
        let mut len = 0u64;
        loop {
            let mut filled = 0;
            while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
                match file.read(rest) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            h.write(buf.get(..filled).unwrap_or_default());
            crate::pace::tick_many(4);
            len += filled as u64;
            if filled < buf.len() {
                break;
            }
        }
        h.write_usize(usize::try_from(len).unwrap_or(usize::MAX));
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Ok(Fingerprint {
            len,
            mtime_ns,
            hash: h.finish(),
        })
    }
}

/// A 64-bit hash that is part of the file format (see [`Fingerprint`]).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = crate::zone::NameHasher::default();
    h.write(bytes);
    h.write_usize(bytes.len());
    h.finish()
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// One zone's row in [`ZONES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneMeta {
    /// Prefix of the zone's record and journal keys.
    pub id: u32,
    /// Origin, wire form with its case.
    pub origin_wire: Vec<u8>,
    pub managed: Managed,
    /// The file the records were imported from (None: never imported from a file).
    pub file: Option<PathBuf>,
    pub fingerprint: Option<Fingerprint>,
    pub serial: u32,
    pub record_count: u64,
    pub created: u64,
    pub updated: u64,
    /// Sequence number of the newest journal entry (0: none). Every write transaction that
    /// touches the zone increments it, so it also orders snapshots of the zone.
    pub journal_seq: u64,
}

const META_VERSION: u8 = 1;

impl ZoneMeta {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        out.push(META_VERSION);
        out.extend_from_slice(&self.id.to_be_bytes());
        put_bytes8(&mut out, &self.origin_wire);
        out.push(match self.managed {
            Managed::File => 0,
            Managed::Store => 1,
        });
        use std::os::unix::ffi::OsStrExt;
        let file = self
            .file
            .as_ref()
            .map(|p| p.as_os_str().as_bytes())
            .unwrap_or_default();
        out.push(u8::from(self.file.is_some()));
        put_bytes16(&mut out, file);
        match &self.fingerprint {
            Some(fp) => {
                out.push(1);
                out.extend_from_slice(&fp.len.to_be_bytes());
                out.extend_from_slice(&fp.mtime_ns.to_be_bytes());
                out.extend_from_slice(&fp.hash.to_be_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&self.serial.to_be_bytes());
        out.extend_from_slice(&self.record_count.to_be_bytes());
        out.extend_from_slice(&self.created.to_be_bytes());
        out.extend_from_slice(&self.updated.to_be_bytes());
        out.extend_from_slice(&self.journal_seq.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<ZoneMeta> {
        let mut r = Reader(bytes);
        if r.u8()? != META_VERSION {
            return None;
        }
        let id = r.u32()?;
        let origin_wire = r.bytes8()?.to_vec();
        let managed = match r.u8()? {
            0 => Managed::File,
            1 => Managed::Store,
            _ => return None,
        };
        let has_file = r.u8()? != 0;
        let file_bytes = r.bytes16()?;
        use std::os::unix::ffi::OsStrExt;
        let file = has_file.then(|| PathBuf::from(std::ffi::OsStr::from_bytes(file_bytes)));
        let fingerprint = match r.u8()? {
            0 => None,
            _ => Some(Fingerprint {
                len: r.u64()?,
                mtime_ns: r.u64()?,
                hash: r.u64()?,
            }),
        };
        let meta = ZoneMeta {
            id,
            origin_wire,
            managed,
            file,
            fingerprint,
            serial: r.u32()?,
            record_count: r.u64()?,
            created: r.u64()?,
            updated: r.u64()?,
            journal_seq: r.u64()?,
        };
        r.0.is_empty().then_some(meta)
    }
}

/// Per-record metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    /// `key=value` tags (see [`valid_tag`]), sorted, without duplicates.
    pub tags: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub updated: u64,
    pub source: Source,
}

/// One stored record: owner and RDATA in uncompressed wire form with their case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub owner: Vec<u8>,
    pub rtype: RecordType,
    pub ttl: u32,
    pub rdata: Vec<u8>,
    pub meta: RecordMeta,
}

const RECORD_VERSION: u8 = 1;

impl StoredRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.owner.len() + self.rdata.len());
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode_record(
            out,
            RecordParts {
                rtype: self.rtype,
                ttl: self.ttl,
                owner: &self.owner,
                rdata: &self.rdata,
                meta: &self.meta,
            },
        );
    }

    pub fn decode(bytes: &[u8]) -> Option<StoredRecord> {
        let mut r = Reader(bytes);
        let rec = StoredRecord::read(&mut r)?;
        r.0.is_empty().then_some(rec)
    }

    fn read(r: &mut Reader<'_>) -> Option<StoredRecord> {
        if r.u8()? != RECORD_VERSION {
            return None;
        }
        let rtype = RecordType::from(r.u16()?);
        let ttl = r.u32()?;
        let created = r.u64()?;
        let updated = r.u64()?;
        let source = Source::from_code(r.u8()?)?;
        let owner = r.bytes8()?.to_vec();
        let rdata = r.bytes16()?.to_vec();
        let ntags = r.u16()?;
        let mut tags = Vec::with_capacity(usize::from(ntags));
        for _ in 0..ntags {
            tags.push(String::from_utf8(r.bytes16()?.to_vec()).ok()?);
        }
        Some(StoredRecord {
            owner,
            rtype,
            ttl,
            rdata,
            meta: RecordMeta {
                tags,
                created,
                updated,
                source,
            },
        })
    }

    /// The record's key in zone `zone_id` (None when the owner is not a valid wire name).
    pub fn key(&self, zone_id: u32) -> Option<Vec<u8>> {
        record_key(zone_id, &self.owner, self.rtype, &self.rdata)
    }

    /// The owner in lowercase wire form.
    pub fn owner_lower(&self) -> Vec<u8> {
        self.owner.to_ascii_lowercase()
    }
}

/// A record to encode, borrowed (whole-zone imports encode from the zone snapshot without
/// an allocation per record).
pub struct RecordParts<'a> {
    pub rtype: RecordType,
    pub ttl: u32,
    pub owner: &'a [u8],
    pub rdata: &'a [u8],
    pub meta: &'a RecordMeta,
}

/// Where the timestamps sit in a record's value form (see [`encode_record`]): after the
/// version, type and TTL, before the source, owner, RDATA and tags.
const TIMES: std::ops::Range<usize> = 7..23;

/// Whether two encoded records say the same thing: equal but for when they were created
/// and updated. A re-import leaves such a record as it is.
pub fn same_record_content(a: &[u8], b: &[u8]) -> bool {
    a.get(..TIMES.start) == b.get(..TIMES.start) && a.get(TIMES.end..) == b.get(TIMES.end..)
}

/// Copies the creation time of the encoded record `from` into the encoded record `to` (a
/// record whose content changed in place keeps its creation time).
pub fn keep_created(from: &[u8], to: &mut [u8]) {
    let created = TIMES.start..TIMES.start + 8;
    if let (Some(src), Some(dst)) = (from.get(created.clone()), to.get_mut(created)) {
        dst.copy_from_slice(src);
    }
}

/// Appends the value form of a [`StoredRecord`]. [`TIMES`] depends on this layout.
pub fn encode_record(out: &mut Vec<u8>, r: RecordParts<'_>) {
    out.push(RECORD_VERSION);
    out.extend_from_slice(&u16::from(r.rtype).to_be_bytes());
    out.extend_from_slice(&r.ttl.to_be_bytes());
    out.extend_from_slice(&r.meta.created.to_be_bytes());
    out.extend_from_slice(&r.meta.updated.to_be_bytes());
    out.push(r.meta.source.code());
    put_bytes8(out, r.owner);
    put_bytes16(out, r.rdata);
    out.extend_from_slice(&(r.meta.tags.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    for t in r.meta.tags.iter().take(usize::from(u16::MAX)) {
        put_bytes16(out, t.as_bytes());
    }
}

/// Type, TTL, owner and RDATA of an encoded record, borrowed (the snapshot build path:
/// no allocation per record).
pub fn view(bytes: &[u8]) -> Option<(RecordType, u32, &[u8], &[u8])> {
    let mut r = Reader(bytes);
    if r.u8()? != RECORD_VERSION {
        return None;
    }
    let rtype = RecordType::from(r.u16()?);
    let ttl = r.u32()?;
    r.take(17)?; // created, updated, source
    let owner = r.bytes8()?;
    let rdata = r.bytes16()?;
    Some((rtype, ttl, owner, rdata))
}

/// Appends the canonical-order form of a wire name (RFC 4034 §6.1: labels from the root
/// down, each compared as lowercase octets, shorter label first): each label lowercased and
/// escaped (0x00 → 01 01, 0x01 → 01 02, so no label byte is 0x00) and ended by 0x00. A
/// name's form is a prefix of its descendants' forms, so a subtree is one key range.
pub fn push_owner_key(out: &mut Vec<u8>, wire: &[u8]) -> Option<()> {
    if rdata::name_len(wire)? != wire.len() {
        return None;
    }
    let labels: Vec<&[u8]> = Labels::new(wire).collect();
    for label in labels.iter().rev() {
        for &b in label.iter() {
            match b.to_ascii_lowercase() {
                0 => out.extend_from_slice(&[1, 1]),
                1 => out.extend_from_slice(&[1, 2]),
                c => out.push(c),
            }
        }
        out.push(0);
    }
    Some(())
}

/// zone id ‖ owner key ‖ 0x00: the prefix of every key of records owned by `owner`. The
/// extra 0x00 sorts an owner's records before its descendants (whose next byte is ≥ 1).
pub fn owner_prefix(zone_id: u32, owner: &[u8]) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(8 + owner.len() * 2);
    key.extend_from_slice(&zone_id.to_be_bytes());
    push_owner_key(&mut key, owner)?;
    key.push(0);
    Some(key)
}

/// zone id (u32 BE) ‖ owner key ‖ 0x00 ‖ type (u16 BE) ‖ hash of the canonical RDATA (u64 BE).
pub fn record_key(zone_id: u32, owner: &[u8], rtype: RecordType, data: &[u8]) -> Option<Vec<u8>> {
    let mut key = owner_prefix(zone_id, owner)?;
    key.extend_from_slice(&u16::from(rtype).to_be_bytes());
    key.extend_from_slice(&rdata_hash(rtype, data).to_be_bytes());
    Some(key)
}

/// The type in a record key.
pub fn key_type(key: &[u8]) -> Option<RecordType> {
    let n = key.len().checked_sub(10)?;
    let b = key.get(n..n + 2)?;
    Some(RecordType::from(u16::from_be_bytes([
        *b.first()?,
        *b.get(1)?,
    ])))
}

/// The zone id of a record, tag-index or journal key.
pub fn key_zone(key: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(*key.first_chunk::<4>()?))
}

/// Hash of RDATA with the names of RFC 4034 §6.2 types lowercased, so two RDATAs that
/// [`rdata::same`] calls equal get the same key.
pub fn rdata_hash(rtype: RecordType, data: &[u8]) -> u64 {
    rdata_hash_with(rtype, data, &mut Vec::new())
}

/// [`rdata_hash`] with a scratch buffer the caller reuses.
pub fn rdata_hash_with(rtype: RecordType, data: &[u8], canon: &mut Vec<u8>) -> u64 {
    if let Some(layout) = rdata::layout(rtype) {
        canon.clear();
        let ok = rdata::walk(layout, data, |part, bytes| match part {
            Part::Name => canon.extend(bytes.iter().map(u8::to_ascii_lowercase)),
            _ => canon.extend_from_slice(bytes),
        });
        if ok {
            return stable_hash(canon);
        }
    }
    stable_hash(data)
}

/// Tag index key: tag ‖ 0x00 ‖ record key.
pub fn tag_key(tag: &str, record_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(tag.len() + 1 + record_key.len());
    k.extend_from_slice(tag.as_bytes());
    k.push(0);
    k.extend_from_slice(record_key);
    k
}

/// Splits a tag index key into tag and record key.
pub fn split_tag_key(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = key.iter().position(|&b| b == 0)?;
    Some((key.get(..at)?, key.get(at + 1..)?))
}

/// `key=value`: a non-empty key of letters, digits, `-`, `_`, `.`; a value of printable
/// ASCII without spaces; at most 255 octets in all.
pub fn valid_tag(tag: &str) -> bool {
    let Some((k, v)) = tag.split_once('=') else {
        return false;
    };
    tag.len() <= 255
        && !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && v.bytes().all(|b| b.is_ascii_graphic())
}

/// zone id ‖ sequence.
pub fn journal_key(zone_id: u32, seq: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&zone_id.to_be_bytes());
    k[4..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// What a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A change transaction: `removed` and `added` are the difference (RFC 1995 style).
    Update,
    /// The zone's records were replaced as a whole (file import): no difference is kept,
    /// so an incremental transfer across this entry must fall back to a full one.
    Replace,
}

/// One journal entry (and, with the zone name, one change event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub kind: ChangeKind,
    pub old_serial: u32,
    pub new_serial: u32,
    pub time: u64,
    pub removed: Vec<StoredRecord>,
    pub added: Vec<StoredRecord>,
}

const JOURNAL_VERSION: u8 = 1;

impl JournalEntry {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.push(JOURNAL_VERSION);
        out.push(match self.kind {
            ChangeKind::Update => 0,
            ChangeKind::Replace => 1,
        });
        out.extend_from_slice(&self.old_serial.to_be_bytes());
        out.extend_from_slice(&self.new_serial.to_be_bytes());
        out.extend_from_slice(&self.time.to_be_bytes());
        for list in [&self.removed, &self.added] {
            out.extend_from_slice(&(list.len() as u32).to_be_bytes());
            for r in list {
                r.encode_into(&mut out);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<JournalEntry> {
        let mut r = Reader(bytes);
        if r.u8()? != JOURNAL_VERSION {
            return None;
        }
        let kind = match r.u8()? {
            0 => ChangeKind::Update,
            1 => ChangeKind::Replace,
            _ => return None,
        };
        let old_serial = r.u32()?;
        let new_serial = r.u32()?;
        let time = r.u64()?;
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let n = r.u32()?;
            for _ in 0..n {
                list.push(StoredRecord::read(&mut r)?);
            }
        }
        let [removed, added] = lists;
        r.0.is_empty().then_some(JournalEntry {
            kind,
            old_serial,
            new_serial,
            time,
            removed,
            added,
        })
    }
}

fn put_bytes8(out: &mut Vec<u8>, b: &[u8]) {
    let b = b.get(..b.len().min(255)).unwrap_or_default();
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

fn put_bytes16(out: &mut Vec<u8>, b: &[u8]) {
    let b = b.get(..b.len().min(65535)).unwrap_or_default();
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(*self.take(2)?.first_chunk()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(*self.take(4)?.first_chunk()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(*self.take(8)?.first_chunk()?))
    }
    fn bytes8(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }
    fn bytes16(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn okey(wire: &[u8]) -> Vec<u8> {
        let mut k = Vec::new();
        push_owner_key(&mut k, wire).unwrap();
        k
    }

    #[test]
    fn owner_keys_sort_in_canonical_order() {
        // RFC 4034 §6.1 example order.
        let names: [&[u8]; 8] = [
            b"\x07example\x00",
            b"\x01a\x07example\x00",
            b"\x08yljkjljk\x01a\x07example\x00",
            b"\x01Z\x01a\x07example\x00",
            b"\x04zABC\x01a\x07EXAMPLE\x00",
            b"\x01z\x07example\x00",
            b"\x01\x01\x01z\x07example\x00",
            b"\x01*\x01z\x07example\x00",
        ];
        let keys: Vec<Vec<u8>> = names.iter().map(|n| okey(n)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(okey(b"\x01\x00\x00") < okey(b"\x01\x01\x00"));
        assert!(push_owner_key(&mut Vec::new(), b"\x03ab").is_none());
    }

    #[test]
    fn owner_records_precede_descendants() {
        let a = record_key(7, b"\x01a\x02ex\x00", RecordType::TXT, b"x").unwrap();
        let child = owner_prefix(7, b"\x01b\x01a\x02ex\x00").unwrap();
        let prefix = owner_prefix(7, b"\x01A\x02EX\x00").unwrap();
        assert!(a.starts_with(&prefix));
        assert!(a < child);
        assert!(!child.starts_with(&prefix));
        assert_eq!(key_type(&a), Some(RecordType::TXT));
        assert_eq!(key_zone(&a), Some(7));
    }

    #[test]
    fn values_round_trip() {
        let rec = StoredRecord {
            owner: b"\x03WwW\x02ex\x00".to_vec(),
            rtype: RecordType::A,
            ttl: 300,
            rdata: vec![192, 0, 2, 1],
            meta: RecordMeta {
                tags: vec!["env=prod".into(), "team=dns".into()],
                created: 5,
                updated: 6,
                source: Source::Api,
            },
        };
        assert_eq!(StoredRecord::decode(&rec.encode()), Some(rec.clone()));
        assert_eq!(StoredRecord::decode(&rec.encode()[1..]), None);
        let meta = ZoneMeta {
            id: 3,
            origin_wire: b"\x02Ex\x00".to_vec(),
            managed: Managed::Store,
            file: Some("/z/ex.zone".into()),
            fingerprint: Some(Fingerprint {
                len: 1,
                mtime_ns: 2,
                hash: 3,
            }),
            serial: 9,
            record_count: 10,
            created: 11,
            updated: 12,
            journal_seq: 13,
        };
        assert_eq!(ZoneMeta::decode(&meta.encode()), Some(meta));
        let entry = JournalEntry {
            kind: ChangeKind::Update,
            old_serial: 1,
            new_serial: 2,
            time: 3,
            removed: vec![rec.clone()],
            added: vec![rec.clone(), rec],
        };
        assert_eq!(JournalEntry::decode(&entry.encode()), Some(entry));
    }

    #[test]
    fn rdata_hash_ignores_name_case_only_where_names_are() {
        assert_eq!(
            rdata_hash(RecordType::NS, b"\x02NS\x00"),
            rdata_hash(RecordType::NS, b"\x02ns\x00")
        );
        assert_ne!(
            rdata_hash(RecordType::TXT, b"\x01A"),
            rdata_hash(RecordType::TXT, b"\x01a")
        );
    }

    #[test]
    fn file_fingerprint_hash_is_the_hash_of_the_whole_content() {
        let dir = std::env::temp_dir().join(format!("muninn-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Around the buffer size: the streamed hash must equal the one-shot hash.
        for len in [
            0usize,
            7,
            8,
            (1 << 20) - 1,
            1 << 20,
            (1 << 20) + 13,
            3 << 20,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let path = dir.join(format!("f{len}"));
            std::fs::write(&path, &bytes).unwrap();
            let fp = Fingerprint::of(&path).unwrap();
            assert_eq!(
                (fp.len, fp.hash),
                (len as u64, stable_hash(&bytes)),
                "{len}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tags() {
        assert!(valid_tag("env=prod"));
        assert!(valid_tag("a="));
        assert!(!valid_tag("=x"));
        assert!(!valid_tag("env"));
        assert!(!valid_tag("e nv=x"));
        assert!(!valid_tag("env=a b"));
        let k = tag_key("env=prod", b"\x00\x00\x00\x01rest");
        assert_eq!(
            split_tag_key(&k),
            Some((&b"env=prod"[..], &b"\x00\x00\x00\x01rest"[..]))
        );
    }
}
