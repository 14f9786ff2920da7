//! Zone data: immutable in-memory snapshots that answer queries.
//!
//! A [`Zone`] is built once (on the heavy-job runtime) and never mutated after it is
//! published; a [`ZoneSet`] maps apex names to `Arc<Zone>` and is swapped atomically as a
//! whole (see `runtime`). Nothing in here does I/O on the query path.
//!
//! What must not live here: wire parsing/encoding (see `wire`), answer rules (see `auth`).

pub mod file;

use std::collections::HashMap;
use std::sync::Arc;

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

/// One RRset: all records of one owner name and type, sharing one TTL (RFC 2181 §5.2).
#[derive(Debug, Clone, PartialEq)]
pub struct RRset {
    /// Owner name as written in the zone (case preserved).
    pub name: Name,
    pub rtype: RecordType,
    pub ttl: u32,
    /// The records, each carrying `name`, class and `ttl`, ready for encoding.
    pub records: Vec<Record>,
}

impl RRset {
    /// Returns the same RRset with another owner name (wildcard synthesis, RFC 4592 §3.4).
    pub fn with_owner(&self, owner: &Name) -> RRset {
        let records = self
            .records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.name = owner.clone();
                r
            })
            .collect();
        RRset {
            name: owner.clone(),
            rtype: self.rtype,
            ttl: self.ttl,
            records,
        }
    }
}

/// All data at one owner name. An empty node (no RRsets) is an empty non-terminal.
#[derive(Debug, Default, Clone)]
pub struct Node {
    pub rrsets: Vec<RRset>,
}

impl Node {
    pub fn get(&self, rtype: RecordType) -> Option<&RRset> {
        self.rrsets.iter().find(|s| s.rtype == rtype)
    }

    pub fn is_empty_non_terminal(&self) -> bool {
        self.rrsets.is_empty()
    }
}

/// Errors found while building a zone from already-parsed records.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BuildError {
    #[error("zone {0} has no SOA record at its apex")]
    NoSoa(Name),
    #[error("record {name} is not within zone {origin}")]
    OutOfZone { name: Name, origin: Name },
}

/// An immutable authoritative zone.
#[derive(Debug)]
pub struct Zone {
    origin: Name,
    origin_lower: LowerName,
    serial: u32,
    /// Every owner name in the zone, plus every empty non-terminal between an owner and the
    /// apex, so that "does this name exist" is one map lookup (RFC 4592 §2.2.2).
    nodes: HashMap<LowerName, Node>,
    record_count: usize,
}

impl Zone {
    /// Builds a zone from records that belong to it. Records with the same owner and type
    /// form one RRset; the RRset TTL is the smallest record TTL (RFC 2181 §5.2).
    ///
    /// Semantic checks with line numbers (CNAME exclusivity, glue, ...) belong to the zone
    /// file loader; this only refuses what would make the zone unservable.
    pub fn build(origin: Name, records: Vec<Record>) -> Result<Zone, BuildError> {
        let origin_lower = LowerName::new(&origin);
        let mut nodes: HashMap<LowerName, Node> = HashMap::new();
        let mut record_count = 0usize;
        for record in records {
            let owner = LowerName::new(&record.name);
            if !origin_lower.zone_of(&owner) {
                return Err(BuildError::OutOfZone {
                    name: record.name.clone(),
                    origin,
                });
            }
            // Empty non-terminals between the owner and the apex.
            let mut parent = record.name.base_name();
            while parent.num_labels() > origin.num_labels() {
                nodes.entry(LowerName::new(&parent)).or_default();
                parent = parent.base_name();
            }
            let node = nodes.entry(owner).or_default();
            let rtype = record.record_type();
            match node.rrsets.iter_mut().find(|s| s.rtype == rtype) {
                Some(set) => {
                    if set.records.iter().any(|r| r.data == record.data) {
                        continue; // duplicate RR: RFC 2181 §5 says an RRset is a set
                    }
                    set.ttl = set.ttl.min(record.ttl);
                    set.records.push(record);
                }
                None => node.rrsets.push(RRset {
                    name: record.name.clone(),
                    rtype,
                    ttl: record.ttl,
                    records: vec![record],
                }),
            }
            record_count += 1;
        }
        for node in nodes.values_mut() {
            for set in &mut node.rrsets {
                let ttl = set.ttl;
                for r in &mut set.records {
                    r.ttl = ttl;
                }
            }
        }
        let serial = nodes
            .get(&origin_lower)
            .and_then(|n| n.get(RecordType::SOA))
            .and_then(|s| s.records.first())
            .and_then(|r| match &r.data {
                RData::SOA(soa) => Some(soa.serial),
                _ => None,
            })
            .ok_or_else(|| BuildError::NoSoa(origin.clone()))?;
        Ok(Zone {
            origin,
            origin_lower,
            serial,
            nodes,
            record_count,
        })
    }

    pub fn origin(&self) -> &Name {
        &self.origin
    }

    pub fn origin_lower(&self) -> &LowerName {
        &self.origin_lower
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The apex SOA RRset (always present: `build` refuses zones without one).
    pub fn soa(&self) -> Option<&RRset> {
        self.nodes
            .get(&self.origin_lower)
            .and_then(|n| n.get(RecordType::SOA))
    }

    /// The node at exactly `name`, if the name exists (possibly as an empty non-terminal).
    pub fn node(&self, name: &LowerName) -> Option<&Node> {
        self.nodes.get(name)
    }

    pub fn record_count(&self) -> usize {
        self.record_count
    }

    pub fn name_count(&self) -> usize {
        self.nodes.len()
    }

    /// Every node, in no particular order (for exports and tests).
    pub fn nodes(&self) -> impl Iterator<Item = (&LowerName, &Node)> {
        self.nodes.iter()
    }
}

/// The set of zones served at one moment. Immutable once published.
#[derive(Debug, Default, Clone)]
pub struct ZoneSet {
    zones: HashMap<LowerName, Arc<Zone>>,
}

impl ZoneSet {
    pub fn new() -> ZoneSet {
        ZoneSet::default()
    }

    pub fn insert(&mut self, zone: Arc<Zone>) {
        self.zones.insert(zone.origin_lower().clone(), zone);
    }

    pub fn remove(&mut self, origin: &LowerName) -> Option<Arc<Zone>> {
        self.zones.remove(origin)
    }

    pub fn get(&self, origin: &LowerName) -> Option<&Arc<Zone>> {
        self.zones.get(origin)
    }

    /// Best zone for `qname`: the served zone with the longest origin that is an ancestor of
    /// (or equal to) the name (RFC 1034 §4.3.2 step 2).
    pub fn find(&self, qname: &LowerName) -> Option<&Arc<Zone>> {
        let mut name = qname.clone();
        loop {
            if let Some(z) = self.zones.get(&name) {
                return Some(z);
            }
            if name.is_root() {
                return None;
            }
            name = name.base_name();
        }
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Zone>> {
        self.zones.values()
    }
}
