//! Records between the API's JSON and the store: requests become one [`Change`]
//! (presentation-form RDATA is read by the zone-file parser), stored records become
//! [`RecordOutput`], and filtered reads of a zone come from one redb read transaction.
//!
//! The reads here are blocking store I/O: run them on the heavy-job runtime.

use std::collections::BTreeSet;

use hickory_proto::rr::{Name, RecordType};
use redb::{ReadableDatabase, ReadableTable};

use super::types::{ChangeReply, DeleteRequest, RecordInput, RecordOutput, ZoneInfo};
use crate::store::export::{name_text, rdata_text, type_text};
use crate::store::schema::{self, RECORDS, TAGS, ZONES};
use crate::store::{
    Change, ChangeEvent, NewRecord, RecordFilter, Store, StoreError, StoredRecord, ZoneMeta,
    parse_owner,
};
use crate::zone::file::{parse_rdata_text, parse_record_type};
use crate::zone::{case_wire, decode_rdata, lower_wire};

/// A request the store never saw because it is malformed (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

impl From<StoreError> for BadRequest {
    fn from(e: StoreError) -> BadRequest {
        BadRequest(e.to_string())
    }
}

/// A type as the API accepts it: a zone-file mnemonic or `TYPEn`.
pub fn record_type(text: &str) -> Result<RecordType, BadRequest> {
    parse_record_type(text.trim())
        .ok_or_else(|| BadRequest(format!("unknown record type {text:?}")))
}

/// Owner, type and RDATA of one record, read relative to `origin`.
fn parse_record(
    origin: &Name,
    name: &str,
    rtype: RecordType,
    data: &str,
) -> Result<(Name, hickory_proto::rr::RData), BadRequest> {
    let owner = parse_owner(name, origin)?;
    let wire = parse_rdata_text(rtype, data, origin)
        .map_err(|e| BadRequest(format!("bad record {owner} {rtype}: {e}")))?;
    let rdata = decode_rdata(rtype, &wire).ok_or_else(|| {
        BadRequest(format!(
            "bad record {owner} {rtype}: RDATA cannot be decoded"
        ))
    })?;
    Ok((owner, rdata))
}

/// The change an add request asks for. With `replace`, each named RRset is deleted first
/// (in the same transaction); an SOA is never deleted, adding one replaces it.
pub fn add_change(
    origin: &Name,
    records: &[RecordInput],
    replace: bool,
) -> Result<Change, BadRequest> {
    if records.is_empty() {
        return Err(BadRequest("no records given".into()));
    }
    let mut change = Change::default();
    let mut sets: BTreeSet<(Vec<u8>, u16)> = BTreeSet::new();
    for (i, r) in records.iter().enumerate() {
        let at = |e: BadRequest| BadRequest(format!("records[{i}]: {e}"));
        let rtype = record_type(&r.rtype).map_err(at)?;
        let (name, data) = parse_record(origin, &r.name, rtype, &r.data).map_err(at)?;
        if replace
            && rtype != RecordType::SOA
            && let Some(key) = lower_wire(&name)
            && sets.insert((key, u16::from(rtype)))
        {
            change.delete.push(RecordFilter {
                name: name.clone(),
                rtype: Some(rtype),
                data: None,
            });
        }
        change.add.push(NewRecord {
            name,
            ttl: r.ttl,
            data,
            tags: r.tags.clone(),
        });
    }
    Ok(change)
}

/// The change a delete request asks for.
pub fn delete_change(origin: &Name, req: &DeleteRequest) -> Result<Change, BadRequest> {
    let rtype = req.rtype.as_deref().map(record_type).transpose()?;
    let filter = match (&req.data, rtype) {
        (Some(_), None) => return Err(BadRequest("\"data\" needs \"type\"".into())),
        (Some(data), Some(rtype)) => {
            let (name, data) = parse_record(origin, &req.name, rtype, data)?;
            RecordFilter {
                name,
                rtype: Some(rtype),
                data: Some(data),
            }
        }
        (None, rtype) => RecordFilter {
            name: parse_owner(&req.name, origin)?,
            rtype,
            data: None,
        },
    };
    Ok(Change {
        add: Vec::new(),
        delete: vec![filter],
    })
}

/// The reply to a committed change (see [`ChangeReply`] for what is counted).
pub fn change_reply(event: &ChangeEvent, added_soa: bool) -> ChangeReply {
    let count = |records: &[StoredRecord]| {
        records
            .iter()
            .filter(|r| added_soa || r.rtype != RecordType::SOA)
            .count()
    };
    ChangeReply {
        old_serial: event.old_serial,
        new_serial: event.new_serial,
        added: count(&event.added),
        removed: count(&event.removed),
    }
}

/// A stored record in the API's form.
pub fn record_output(rec: &StoredRecord) -> RecordOutput {
    let mut data = String::with_capacity(rec.rdata.len() * 2);
    rdata_text(rec.rtype, &rec.rdata, &mut data);
    RecordOutput {
        name: name_text(&rec.owner),
        rtype: type_text(rec.rtype),
        ttl: rec.ttl,
        data,
        tags: rec.meta.tags.clone(),
        created: rec.meta.created,
        updated: rec.meta.updated,
        source: rec.meta.source.as_str().to_string(),
    }
}

/// Which records of a zone to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    /// Only records owned by this name (not its descendants).
    pub name: Option<Name>,
    pub rtype: Option<RecordType>,
    /// Only records carrying this `key=value` tag.
    pub tag: Option<String>,
}

impl ListFilter {
    /// `owner_lower`: the lowercase wire form of `name`, computed once per list.
    fn matches(&self, owner_lower: Option<&[u8]>, rec: &StoredRecord) -> bool {
        self.rtype.is_none_or(|t| t == rec.rtype)
            && self
                .tag
                .as_ref()
                .is_none_or(|t| rec.meta.tags.iter().any(|have| have == t))
            && owner_lower.is_none_or(|n| rec.owner.eq_ignore_ascii_case(n))
    }
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

fn corrupt(zone: &Name, why: &str) -> StoreError {
    StoreError::Corrupt(zone.to_string(), why.to_string())
}

/// The records of `zone` that `filter` selects (at most `max`; the flag says whether there
/// were more) and the zone's serial, from one consistent read. The scan is the narrowest
/// the filter allows: one owner (and type) range, else the tag index, else the zone.
pub fn list(
    store: &Store,
    zone: &Name,
    filter: &ListFilter,
    max: usize,
) -> Result<(Vec<StoredRecord>, bool, u32), StoreError> {
    let txn = store.database().begin_read().map_err(db_err)?;
    let zones = txn.open_table(ZONES).map_err(db_err)?;
    let meta = read_meta(&zones, zone)?.ok_or_else(|| StoreError::NoSuchZone(zone.to_string()))?;
    let records = txn.open_table(RECORDS).map_err(db_err)?;
    let mut out = Vec::new();
    let mut more = false;
    // Label lengths (< 64) are not ASCII letters: case-folding wire names is safe.
    let owner_lower = filter.name.as_ref().and_then(lower_wire);
    let mut take = |rec: StoredRecord| -> bool {
        if !filter.matches(owner_lower.as_deref(), &rec) {
            return true;
        }
        if out.len() == max {
            more = true;
            return false;
        }
        out.push(rec);
        true
    };
    let decode = |bytes: &[u8]| {
        StoredRecord::decode(bytes).ok_or_else(|| corrupt(zone, "undecodable record"))
    };

    if let (None, Some(tag)) = (&filter.name, &filter.tag) {
        let tags = txn.open_table(TAGS).map_err(db_err)?;
        let prefix = schema::tag_key(tag, &[]);
        let end = prefix_end(&prefix);
        for item in tags
            .range(prefix.as_slice()..end.as_slice())
            .map_err(db_err)?
        {
            let (k, _) = item.map_err(db_err)?;
            let Some((_, key)) = schema::split_tag_key(k.value()) else {
                return Err(corrupt(zone, "undecodable tag index key"));
            };
            if schema::key_zone(key) != Some(meta.id) {
                continue;
            }
            let Some(v) = records.get(key).map_err(db_err)? else {
                return Err(corrupt(zone, "tag index entry without its record"));
            };
            let rec = decode(v.value())?;
            if !take(rec) {
                break;
            }
        }
    } else {
        let (lo, hi) = match &filter.name {
            Some(name) => {
                let mut prefix = schema::owner_prefix(meta.id, &case_wire(name))
                    .ok_or_else(|| StoreError::BadOwner(name.to_string(), "bad name".into()))?;
                if let Some(t) = filter.rtype {
                    prefix.extend_from_slice(&u16::from(t).to_be_bytes());
                }
                let end = prefix_end(&prefix);
                (prefix, end)
            }
            None => (
                meta.id.to_be_bytes().to_vec(),
                prefix_end(&meta.id.to_be_bytes()),
            ),
        };
        for item in records
            .range(lo.as_slice()..hi.as_slice())
            .map_err(db_err)?
        {
            let (_, v) = item.map_err(db_err)?;
            let rec = decode(v.value())?;
            if !take(rec) {
                break;
            }
        }
    }
    Ok((out, more, meta.serial))
}

/// `GET /v1/zones`: the served zones (`served`: origin, serial and record count of the
/// served snapshot, sorted) with their stored metadata. A file-managed zone is served
/// before its import into the store commits (see `reload`): until then, and whenever the
/// store holds another version than the one served, the served snapshot's figures are
/// the ones that answer queries and are reported.
pub fn zone_infos(store: &Store, served: &[(Name, u32, u64)]) -> Result<Vec<ZoneInfo>, StoreError> {
    let txn = store.database().begin_read().map_err(db_err)?;
    let zones = txn.open_table(ZONES).map_err(db_err)?;
    let mut out = Vec::with_capacity(served.len());
    for (origin, serial, records) in served {
        let meta = read_meta(&zones, origin)?;
        let stored = meta.as_ref().filter(|m| m.serial == *serial);
        out.push(ZoneInfo {
            name: origin.to_string(),
            managed: meta
                .as_ref()
                .map_or("file", |m| m.managed.as_str())
                .to_string(),
            serial: *serial,
            records: stored.map_or(*records, |m| m.record_count),
        });
    }
    Ok(out)
}

fn read_meta(
    zones: &impl ReadableTable<&'static [u8], &'static [u8]>,
    zone: &Name,
) -> Result<Option<ZoneMeta>, StoreError> {
    let key = lower_wire(zone)
        .ok_or_else(|| StoreError::BadOwner(zone.to_string(), "not a domain name".into()))?;
    match zones.get(key.as_slice()).map_err(db_err)? {
        None => Ok(None),
        Some(v) => ZoneMeta::decode(v.value())
            .map(Some)
            .ok_or_else(|| corrupt(zone, "undecodable zone metadata")),
    }
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(Box::new(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Name {
        Name::from_ascii("example.test.").unwrap()
    }

    fn input(name: &str, rtype: &str, data: &str) -> RecordInput {
        RecordInput {
            name: name.into(),
            rtype: rtype.into(),
            ttl: 300,
            data: data.into(),
            tags: vec!["env=prod".into()],
        }
    }

    #[test]
    fn add_requests_become_one_change() {
        let c = add_change(
            &origin(),
            &[
                input("www", "a", "192.0.2.1"),
                input("www.example.test.", "A", "192.0.2.2"),
                input("@", "MX", "10 mail"),
                input("t", "TXT", "\"a b\" c"),
                input("x", "TYPE65000", "\\# 2 abcd"),
            ],
            true,
        )
        .unwrap();
        assert_eq!(c.add.len(), 5);
        assert_eq!(c.add[0].name.to_string(), "www.example.test.");
        assert_eq!(c.add[2].data.to_string(), "10 mail.example.test.");
        assert_eq!(c.add[0].tags, ["env=prod"]);
        // One delete per RRset named.
        let deletes: Vec<String> = c
            .delete
            .iter()
            .map(|f| format!("{} {:?}", f.name, f.rtype))
            .collect();
        assert_eq!(
            deletes,
            [
                "www.example.test. Some(A)",
                "example.test. Some(MX)",
                "t.example.test. Some(TXT)",
                "x.example.test. Some(Unknown(65000))"
            ]
        );
        let c = add_change(&origin(), &[input("www", "A", "192.0.2.1")], false).unwrap();
        assert!(c.delete.is_empty());
    }

    #[test]
    fn bad_records_are_named() {
        let bad = |name: &str, t: &str, data: &str| {
            add_change(
                &origin(),
                &[input("ok", "A", "192.0.2.1"), input(name, t, data)],
                false,
            )
            .unwrap_err()
            .0
        };
        let e = bad("www", "A", "192.0.2");
        assert!(
            e.starts_with("records[1]: bad record www.example.test. A:"),
            "{e}"
        );
        assert!(e.contains("invalid IPv4 address"), "{e}");
        assert!(bad("www", "BOGUS", "1").contains("unknown record type \"BOGUS\""));
        assert!(bad("a..b", "A", "192.0.2.1").contains("bad owner name"));
        assert!(bad("www", "MX", "10").contains("MX record needs 2 RDATA fields"));
        assert!(bad("www", "A", "192.0.2.1\n192.0.2.2").contains("one line"));
        assert!(
            add_change(&origin(), &[], false)
                .unwrap_err()
                .0
                .contains("no records")
        );
    }

    #[test]
    fn delete_requests() {
        let req = |t: Option<&str>, d: Option<&str>| DeleteRequest {
            name: "www".into(),
            rtype: t.map(String::from),
            data: d.map(String::from),
        };
        let c = delete_change(&origin(), &req(None, None)).unwrap();
        assert_eq!(c.delete[0].name.to_string(), "www.example.test.");
        assert_eq!(
            (c.delete[0].rtype, c.delete[0].data.is_none()),
            (None, true)
        );
        let c = delete_change(&origin(), &req(Some("A"), Some("192.0.2.1"))).unwrap();
        assert_eq!(c.delete[0].rtype, Some(RecordType::A));
        assert_eq!(c.delete[0].data.as_ref().unwrap().to_string(), "192.0.2.1");
        assert!(delete_change(&origin(), &req(None, Some("192.0.2.1"))).is_err());
        assert!(delete_change(&origin(), &req(Some("A"), Some("x"))).is_err());
    }
}
