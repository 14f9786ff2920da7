//! Zone data: immutable in-memory snapshots that answer queries.
//!
//! A [`Zone`] is built once (on the heavy-job runtime) and never mutated after it is
//! published; a [`ZoneSet`] maps apex names to `Arc<Zone>` and is swapped atomically as a
//! whole (see `runtime`). Nothing in here does I/O on the query path.
//!
//! # Layout
//!
//! Like Knot, a zone keeps its data in wire form, in a few flat tables (`Tables`, behind an
//! `Arc` so that snapshots can share them) addressed by `u32` indices rather than one heap
//! object per record:
//! - `names`: every owner name once, in wire form with the case of the zone file;
//! - `nodes`: 16 bytes per name (name offset, parent, first RRset, flags);
//! - `index`: an open-addressing hash table from lowercase name to node;
//! - `sets`: 20 bytes per RRset (type, TTL, span of its data, related data);
//! - `rdata`: every RRset's RDATA, length-prefixed and uncompressed (see [`rdata`]);
//! - `related`/`refs`: additional-section data linked at build time (see `related`);
//! - `children`: child count per node (for patches).
//!
//! A store-managed zone changes by patches ([`Zone::patch`], see `patch`): the next
//! snapshot shares the tables and adds a small extension whose entries continue each
//! table's index space. Accessors read the base tables first and fall back to the
//! extension only for indices past their end, so a zone without an extension pays one
//! never-taken branch per lookup.
//!
//! What must not live here: wire parsing/encoding (see `wire`), answer rules (see `auth`).

mod build;
pub mod file;
pub mod image;
mod patch;
pub mod rdata;
mod related;

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

pub use build::ZoneBuilder;
pub use name::{NameHasher, WireName, hash_name, lower_wire, parent_wire, wire_is_below_or_eq};
pub use patch::PatchError;
pub use related::RelatedSets;

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, Restrict};

use self::rdata::Rdatas;

/// An RRset as hickory records: owner, type, TTL and the records, each carrying them.
///
/// The zone does not store this form; it is what answers built outside the zone data (the
/// cache, tests) hand to the encoder, through [`crate::auth::Answer`].
#[derive(Debug, Clone, PartialEq)]
pub struct RRset {
    /// Owner name (case preserved).
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

/// An RRset in wire form as an answer section holds it: borrowed from a zone snapshot, or
/// owned when synthesized (wildcard owner substitution, DNAME-derived CNAME).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRRset<'z> {
    /// Owner name, uncompressed wire form, case preserved.
    pub owner: Cow<'z, [u8]>,
    pub rtype: RecordType,
    pub ttl: u32,
    /// The records' RDATA, each preceded by its 16-bit length (see [`rdata`]).
    pub rdata: Cow<'z, [u8]>,
}

impl<'z> WireRRset<'z> {
    /// Each record's RDATA.
    pub fn rdatas(&self) -> Rdatas<'_> {
        Rdatas::new(&self.rdata)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.rdatas().count()
    }

    pub fn is_empty(&self) -> bool {
        self.rdata.is_empty()
    }

    /// True when both owner and data are borrowed from a zone snapshot.
    pub fn is_borrowed(&self) -> bool {
        matches!(self.owner, Cow::Borrowed(_)) && matches!(self.rdata, Cow::Borrowed(_))
    }

    /// Whether `self` and `other` are the same zone RRset (same data, same owner storage).
    pub fn same_zone_set(&self, other: &WireRRset<'_>) -> bool {
        match (&self.owner, &self.rdata, &other.owner, &other.rdata) {
            (Cow::Borrowed(o1), Cow::Borrowed(d1), Cow::Borrowed(o2), Cow::Borrowed(d2)) => {
                std::ptr::eq(*o1, *o2) && std::ptr::eq(*d1, *d2)
            }
            _ => false,
        }
    }

    /// The owner as a hickory `Name` (off the query path: tests, logs, exports).
    pub fn owner_name(&self) -> Option<Name> {
        name_from_wire(&self.owner)
    }

    /// The records, decoded (off the query path). RDATA that does not decode is skipped.
    pub fn records(&self) -> Vec<Record> {
        let Some(owner) = self.owner_name() else {
            return Vec::new();
        };
        self.rdatas()
            .filter_map(|rd| decode_rdata(self.rtype, rd))
            .map(|data| Record::from_rdata(owner.clone(), self.ttl, data))
            .collect()
    }

    /// Builds an owned RRset from hickory RDATA (tests, small synthesized answers).
    pub fn from_rdata(owner: &Name, rtype: RecordType, ttl: u32, rdatas: &[RData]) -> Self {
        let mut data = Vec::new();
        for rd in rdatas {
            let at = data.len();
            data.extend_from_slice(&[0, 0]);
            if build::emit_rdata(rd, &mut data).is_err() {
                data.truncate(at);
                continue;
            }
            let len = u16::try_from(data.len() - at - 2).unwrap_or(u16::MAX);
            if let Some(slot) = data.get_mut(at..at + 2) {
                slot.copy_from_slice(&len.to_be_bytes());
            }
        }
        WireRRset {
            owner: Cow::Owned(case_wire(owner)),
            rtype,
            ttl,
            rdata: Cow::Owned(data),
        }
    }
}

/// `name` in uncompressed wire form, case preserved.
pub fn case_wire(name: &Name) -> Vec<u8> {
    let mut w = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        w.push(label.len() as u8); // labels of a Name are <= 63 octets
        w.extend_from_slice(label);
    }
    w.push(0);
    w
}

/// A wire-form name as a hickory `Name` (`None` if malformed).
pub fn name_from_wire(wire: &[u8]) -> Option<Name> {
    let mut dec = BinDecoder::new(wire);
    let mut name = Name::read(&mut dec).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// One record's RDATA decoded into hickory's type (DNAME and the DNSSEC types come back as
/// `RData::Unknown`, as hickory 0.26 reads them from the wire).
pub fn decode_rdata(rtype: RecordType, rdata: &[u8]) -> Option<RData> {
    let len = u16::try_from(rdata.len()).ok()?;
    let mut dec = BinDecoder::new(rdata);
    RData::read(&mut dec, rtype, Restrict::new(len)).ok()
}

/// Sentinel for "no node / no set" in the tables below.
const NONE: u32 = u32::MAX;
/// In a [`SetRef`] owner: the owner is the name at this offset of `rdata` (a wildcard
/// expansion for an NS/MX/SRV target) rather than a node.
const SYNTH_OWNER: u32 = 1 << 31;

const FLAG_DELEG: u8 = 1;
const FLAG_CNAME: u8 = 2;
const FLAG_DNAME: u8 = 4;
/// At or below a zone cut, not the cut itself: not authoritative (RFC 1034 §4.2.1).
const FLAG_NONAUTH: u8 = 8;
/// Has a `*` child (RFC 4592 source of synthesis).
const FLAG_WILDCARD: u8 = 16;
/// In a patch extension: the name was deleted (a tombstone over the base node).
const FLAG_GONE: u8 = 32;

type NameMap<V> = HashMap<Box<[u8]>, V, BuildHasherDefault<NameHasher>>;

/// One RRset of a node: its type, TTL (RFC 2181 §5.2: one per RRset) and where its data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RdataSet {
    rtype: u16,
    ttl: u32,
    /// Span of the length-prefixed RDATAs in the zone's `rdata`.
    data: u32,
    len: u32,
    /// Index into the zone's `related` table, or `NONE`.
    related: u32,
}

impl RdataSet {
    pub fn rtype(&self) -> RecordType {
        RecordType::from(self.rtype)
    }

    pub fn ttl(&self) -> u32 {
        self.ttl
    }
}

/// A reference to an RRset for additional-section data: the zone RRset `set` with the
/// owner name of node `owner`, or (with [`SYNTH_OWNER`]) with the name at that offset of
/// `rdata` (a wildcard expansion).
#[derive(Debug, Clone, Copy)]
struct SetRef {
    set: u32,
    owner: u32,
}

/// Additional-section data for one RRset (NS, MX, SRV): the A/AAAA RRsets of its targets
/// found in this zone ("references to related data", computed once at build time).
#[derive(Debug, Clone, Copy)]
struct Related {
    refs: u32,
    len: u16,
    /// How many leading refs are required glue (in-domain, RFC 9471); only for NS RRsets
    /// at delegation points.
    required: u16,
}

/// All data at one owner name. A node without RRsets is an empty non-terminal.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    /// Offset of the owner name in the zone's `names`.
    name: u32,
    parent: u32,
    /// First RRset in the zone's `sets`.
    sets: u32,
    nsets: u16,
    name_len: u8,
    flags: u8,
}

impl Node {
    pub fn is_empty_non_terminal(&self) -> bool {
        self.nsets == 0
    }

    /// True for a non-apex node with an NS RRset (a zone cut, RFC 1034 §4.2.1).
    pub fn is_delegation(&self) -> bool {
        self.flags & FLAG_DELEG != 0
    }

    /// True below a zone cut (occluded data, glue).
    pub fn is_nonauth(&self) -> bool {
        self.flags & FLAG_NONAUTH != 0
    }

    pub fn has_cname(&self) -> bool {
        self.flags & FLAG_CNAME != 0
    }

    pub fn has_dname(&self) -> bool {
        self.flags & FLAG_DNAME != 0
    }

    /// True when the node has a `*` child.
    pub fn has_wildcard(&self) -> bool {
        self.flags & FLAG_WILDCARD != 0
    }

    /// Index of the parent node (`None` at the apex).
    pub fn parent(&self) -> Option<u32> {
        (self.parent != NONE).then_some(self.parent)
    }
}

/// Errors found while building a zone from already-parsed records.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BuildError {
    #[error("zone {0} has no SOA record at its apex")]
    NoSoa(Name),
    #[error("record {name} is not within zone {origin}")]
    OutOfZone { name: String, origin: Name },
    #[error("name {0} is not a valid domain name")]
    BadName(String),
    #[error("RDATA of a {0} record is longer than 65535 octets")]
    RdataTooLong(RecordType),
    #[error("{0} RDATA cannot be encoded")]
    BadRdata(RecordType),
    #[error("zone {0} is too large (more than 2^31 names, RRsets or octets of data)")]
    TooLarge(Name),
}

/// Open-addressing hash table (linear probing) from lowercase owner name to node index.
/// A slot keeps the name's 32-bit hash, so a probe only reads a node whose hash matches.
#[derive(Debug, Clone, Default)]
struct Index {
    slots: Box<[Slot]>,
    mask: usize,
    len: usize,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u32,
    node: u32,
}

const EMPTY: Slot = Slot {
    hash: 0,
    node: NONE,
};

impl Index {
    fn with_capacity(n: usize) -> Index {
        // Load factor at most 1/2 after `n` insertions: short probe sequences.
        let size = (n.max(4) * 2).next_power_of_two();
        Index {
            slots: vec![EMPTY; size].into_boxed_slice(),
            mask: size - 1,
            len: 0,
        }
    }

    /// Adds a name known to be absent.
    fn insert(&mut self, hash: u32, node: u32) {
        if (self.len + 1) * 8 > self.slots.len() * 7 {
            self.grow();
        }
        let mut pos = hash as usize & self.mask;
        loop {
            match self.slots.get_mut(pos) {
                Some(slot) if slot.node == NONE => {
                    *slot = Slot { hash, node };
                    self.len += 1;
                    return;
                }
                Some(_) => pos = (pos + 1) & self.mask,
                None => return, // mask < len: unreachable
            }
        }
    }

    /// A copy, made in paced pieces (a patch copies its extension's index every change).
    fn clone_paced(&self) -> Index {
        let mut slots = Vec::with_capacity(self.slots.len());
        crate::pace::extend_from_slice(&mut slots, &self.slots);
        Index {
            slots: slots.into_boxed_slice(),
            mask: self.mask,
            len: self.len,
        }
    }

    fn grow(&mut self) {
        let mut bigger = Index::with_capacity(self.slots.len());
        for slot in self.slots.iter().filter(|s| s.node != NONE) {
            crate::pace::tick();
            bigger.insert(slot.hash, slot.node);
        }
        *self = bigger;
    }

    /// Candidates for `hash`, in probe order, until an empty slot.
    #[inline]
    fn probe(&self, hash: u32, mut found: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut pos = hash as usize & self.mask;
        loop {
            let slot = self.slots.get(pos)?;
            if slot.node == NONE {
                return None;
            }
            if slot.hash == hash && found(slot.node) {
                return Some(slot.node);
            }
            pos = (pos + 1) & self.mask;
        }
    }
}

/// An immutable authoritative zone (see the module documentation for the layout).
#[derive(Debug)]
pub struct Zone {
    origin: Name,
    origin_lower: LowerName,
    origin_wire: Box<[u8]>,
    serial: u32,
    /// The big tables, shared by every snapshot made from this one.
    t: Arc<Tables>,
    /// What changed since `t` was built (see [`patch`]); `None` for a freshly built zone.
    ext: Option<Box<Ext>>,
    /// The apex SOA with TTL = min(SOA TTL, SOA MINIMUM), for negative answers (RFC 2308 §3).
    negative_soa: RdataSet,
    record_count: usize,
}

/// A zone's data tables (see the module documentation), immutable once built and held
/// behind an `Arc` so that several snapshots can share them.
#[derive(Debug)]
pub(crate) struct Tables {
    names: Box<[u8]>,
    /// Parents before children; node 0 is the apex.
    nodes: Box<[Node]>,
    /// Every owner name in the zone, plus every empty non-terminal between an owner and the
    /// apex, so that "does this name exist" is one lookup (RFC 4592 §2.2.2).
    index: Index,
    sets: Box<[RdataSet]>,
    rdata: Box<[u8]>,
    related: Box<[Related]>,
    refs: Box<[SetRef]>,
    /// Number of child nodes of each node (what a patch needs to tell an empty
    /// non-terminal that must stay from one that must go).
    children: Box<[u32]>,
}

/// The extension of a patched zone: nodes, names, RRsets and RDATA added after the base
/// [`Tables`]. Each table continues its base table: index `base.len() + i` addresses entry
/// `i` here, so a node, set or offset means the same in every snapshot made from the same
/// base. Built by [`patch`]; never changed once the zone is published.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ext {
    names: Vec<u8>,
    /// New and replaced nodes; a deleted name keeps a node flagged [`FLAG_GONE`] (a
    /// tombstone that hides the base node).
    nodes: Vec<Node>,
    children: Vec<u32>,
    /// Lowercase name → global node index, probed before the base index.
    index: Index,
    sets: Vec<RdataSet>,
    rdata: Vec<u8>,
    /// Base node index → global index of the node that replaced it, sorted.
    redirect: Vec<(u32, u32)>,
    /// Nodes of the zone (base nodes not replaced plus live extension nodes).
    name_count: usize,
}

impl Ext {
    fn heap_size(&self) -> usize {
        self.names.len()
            + std::mem::size_of_val(&*self.nodes)
            + std::mem::size_of_val(&*self.children)
            + std::mem::size_of_val(&*self.index.slots)
            + std::mem::size_of_val(&*self.sets)
            + self.rdata.len()
            + std::mem::size_of_val(&*self.redirect)
    }
}

impl Zone {
    /// Builds a zone from records that belong to it (a convenience over [`ZoneBuilder`]
    /// for tests and small zones). Records with the same owner and type form one RRset;
    /// the RRset TTL is the smallest record TTL (RFC 2181 §5.2); duplicates are dropped.
    #[allow(clippy::result_large_err)] // shared signature; build time only
    pub fn build(origin: Name, records: Vec<Record>) -> Result<Zone, BuildError> {
        let mut builder = ZoneBuilder::new(&origin, records.len())?;
        let mut owner = Vec::with_capacity(256);
        let mut data = Vec::with_capacity(256);
        for record in &records {
            owner.clear();
            owner.extend_from_slice(&case_wire(&record.name));
            data.clear();
            build::emit_rdata(&record.data, &mut data)
                .map_err(|_| BuildError::BadRdata(record.record_type()))?;
            builder.add(&owner, record.record_type(), record.ttl, &data)?;
        }
        drop(records);
        builder.finish()
    }

    pub fn origin(&self) -> &Name {
        &self.origin
    }

    pub fn origin_lower(&self) -> &LowerName {
        &self.origin_lower
    }

    /// The origin in lowercase wire form.
    pub fn origin_wire(&self) -> &[u8] {
        &self.origin_wire
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    pub fn record_count(&self) -> usize {
        self.record_count
    }

    /// Number of names (owners and empty non-terminals).
    pub fn name_count(&self) -> usize {
        match &self.ext {
            None => self.t.nodes.len(),
            Some(ext) => ext.name_count,
        }
    }

    /// Heap bytes of the patch extension (0 for a zone built from scratch): what a
    /// rebuild would fold back into flat tables.
    pub fn patch_size(&self) -> usize {
        self.ext.as_ref().map_or(0, |e| e.heap_size())
    }

    /// The node with this lowercase wire-form owner name, and its index.
    #[inline]
    pub fn lookup(&self, wire: &[u8]) -> Option<(u32, &Node)> {
        let hash = hash_name(wire);
        if let Some(ext) = &self.ext
            && let Some(found) = self.ext_lookup(ext, wire, hash)
        {
            return found;
        }
        let idx = self.t.index.probe(hash, |i| {
            self.t
                .nodes
                .get(i as usize)
                .is_some_and(|n| self.owner(n).eq_ignore_ascii_case(wire))
        })?;
        self.t.nodes.get(idx as usize).map(|n| (idx, n))
    }

    /// The extension's entry for `wire`: `Some(None)` for a deleted name.
    #[inline(never)]
    fn ext_lookup(&self, ext: &Ext, wire: &[u8], hash: u32) -> Option<Option<(u32, &Node)>> {
        let idx = ext.index.probe(hash, |i| {
            self.raw_node(i)
                .is_some_and(|n| self.owner(n).eq_ignore_ascii_case(wire))
        })?;
        let node = self.raw_node(idx)?;
        Some((node.flags & FLAG_GONE == 0).then_some((idx, node)))
    }

    /// The node stored at global index `i` (no redirect: possibly replaced or deleted).
    #[inline]
    fn raw_node(&self, i: u32) -> Option<&Node> {
        match self.t.nodes.get(i as usize) {
            Some(n) => Some(n),
            None => {
                let ext = self.ext.as_deref()?;
                ext.nodes.get((i as usize).checked_sub(self.t.nodes.len())?)
            }
        }
    }

    /// Global index of the node that currently holds base node `i`'s name (`i` itself when
    /// unchanged), or `None` when the name was deleted.
    fn current(&self, i: u32) -> Option<u32> {
        let Some(ext) = &self.ext else {
            return Some(i);
        };
        if i as usize >= self.t.nodes.len() {
            return Some(i);
        }
        match ext.redirect.binary_search_by_key(&i, |&(b, _)| b) {
            Ok(at) => ext.redirect.get(at).map(|&(_, g)| g),
            Err(_) => Some(i),
        }
    }

    /// The node at exactly `name`, if the name exists (possibly as an empty non-terminal).
    pub fn node(&self, name: &LowerName) -> Option<&Node> {
        let wire = lower_wire(name)?;
        self.lookup(&wire).map(|(_, n)| n)
    }

    /// The node at `index` (as returned by [`Zone::lookup`], [`Zone::cut`],
    /// [`Node::parent`]): in a patched zone, the current version of that name.
    #[inline]
    pub fn node_at(&self, index: u32) -> Option<&Node> {
        if self.ext.is_none() {
            return self.t.nodes.get(index as usize);
        }
        let node = self.raw_node(self.current(index)?)?;
        (node.flags & FLAG_GONE == 0).then_some(node)
    }

    /// Every node with its index, in no particular order (off the query path).
    fn live_nodes(&self) -> impl Iterator<Item = (u32, &Node)> {
        let ext = self.ext.as_deref();
        let base = self
            .t
            .nodes
            .iter()
            .enumerate()
            .filter(move |(i, _)| {
                ext.is_none_or(|e| {
                    e.redirect
                        .binary_search_by_key(&(*i as u32), |&(b, _)| b)
                        .is_err()
                })
            })
            .map(|(i, n)| (i as u32, n));
        let offset = self.t.nodes.len();
        let added = ext
            .map(|e| &e.nodes[..])
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|(_, n)| n.flags & FLAG_GONE == 0)
            .map(move |(i, n)| ((offset + i) as u32, n));
        base.chain(added)
    }

    /// Every node (for a zone built from scratch: parents before children).
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.live_nodes().map(|(_, n)| n)
    }

    /// The owner name of `node`: wire form, case as in the zone file.
    #[inline]
    pub fn owner(&self, node: &Node) -> &[u8] {
        self.name_at(node.name, node.name_len)
    }

    #[inline]
    fn name_at(&self, at: u32, len: u8) -> &[u8] {
        let start = at as usize;
        let end = start + usize::from(len);
        match self.t.names.get(start..end) {
            Some(n) => n,
            None => self
                .ext
                .as_deref()
                .and_then(|e| {
                    let base = self.t.names.len();
                    e.names.get(start.checked_sub(base)?..end - base)
                })
                .unwrap_or_default(),
        }
    }

    /// The RRsets of `node`, in the order their first records came.
    #[inline]
    pub fn sets(&self, node: &Node) -> &[RdataSet] {
        let start = node.sets as usize;
        let end = start + usize::from(node.nsets);
        match self.t.sets.get(start..end) {
            Some(s) => s,
            None => self
                .ext
                .as_deref()
                .and_then(|e| {
                    let base = self.t.sets.len();
                    e.sets.get(start.checked_sub(base)?..end - base)
                })
                .unwrap_or_default(),
        }
    }

    /// The RRset of `rtype` at `node`.
    #[inline]
    pub fn set(&self, node: &Node, rtype: RecordType) -> Option<&RdataSet> {
        let code = u16::from(rtype);
        self.sets(node).iter().find(|s| s.rtype == code)
    }

    /// The length-prefixed RDATAs of `set`.
    #[inline]
    pub fn data(&self, set: &RdataSet) -> &[u8] {
        self.rdata_at(set.data, set.len)
    }

    #[inline]
    fn rdata_at(&self, at: u32, len: u32) -> &[u8] {
        let start = at as usize;
        let end = start + len as usize;
        match self.t.rdata.get(start..end) {
            Some(d) => d,
            None => self
                .ext
                .as_deref()
                .and_then(|e| {
                    let base = self.t.rdata.len();
                    e.rdata.get(start.checked_sub(base)?..end - base)
                })
                .unwrap_or_default(),
        }
    }

    /// Number of child nodes of node `idx` (a global index, as stored).
    fn children(&self, idx: u32) -> u32 {
        let i = idx as usize;
        match self.t.children.get(i) {
            Some(&c) => c,
            None => self
                .ext
                .as_deref()
                .and_then(|e| e.children.get(i.checked_sub(self.t.children.len())?))
                .copied()
                .unwrap_or(0),
        }
    }

    /// `set` (an RRset of `node`) borrowed as an answer-section RRset.
    #[inline]
    pub fn view<'z>(&'z self, node: &Node, set: &RdataSet) -> WireRRset<'z> {
        WireRRset {
            owner: Cow::Borrowed(self.owner(node)),
            rtype: set.rtype(),
            ttl: set.ttl,
            rdata: Cow::Borrowed(self.data(set)),
        }
    }

    /// Index of the topmost zone cut at or above node `idx`: when set, the node is at a
    /// delegation point or occluded below one (RFC 1034 §4.2.1).
    pub fn cut(&self, idx: u32, node: &Node) -> Option<u32> {
        if node.flags & (FLAG_DELEG | FLAG_NONAUTH) == 0 {
            return None;
        }
        // Everything between a non-authoritative node and its topmost cut is also
        // non-authoritative; the cut itself is not. A patch never changes these two flags
        // (new cuts need a rebuild), so a replaced node's old version answers as well.
        let (mut i, mut n) = (idx, *node);
        while n.flags & FLAG_NONAUTH != 0 {
            i = n.parent;
            n = *self.raw_node(i)?;
        }
        Some(i)
    }

    /// The `*` child of the node whose lowercase wire name is `lower` (RFC 4592 §3.3.1).
    pub fn wildcard_child(&self, node: &Node, lower: &[u8]) -> Option<(u32, &Node)> {
        if !node.has_wildcard() {
            return None;
        }
        let mut buf = [0u8; 255];
        let name = buf.get_mut(..lower.len() + 2)?;
        name.get_mut(..2)?.copy_from_slice(b"\x01*");
        name.get_mut(2..)?.copy_from_slice(lower);
        self.lookup(name)
    }

    /// The additional-section RRsets for `set`, an RRset of `node` (A/AAAA of NS/MX/SRV
    /// targets in this zone), and how many leading ones are required glue.
    ///
    /// A zone built from scratch has them linked at build time; a patched zone looks them
    /// up (any change may have added, changed or removed a target's addresses).
    pub fn related<'z>(&'z self, node: &'z Node, set: &'z RdataSet) -> (RelatedSets<'z>, usize) {
        if self.ext.is_some() {
            return related::resolve(self, node, set);
        }
        let related = self.t.related.get(set.related as usize);
        let required = related.map_or(0, |r| usize::from(r.required));
        let refs = related
            .and_then(|r| {
                let start = r.refs as usize;
                self.t.refs.get(start..start + usize::from(r.len))
            })
            .unwrap_or_default();
        (RelatedSets::linked(self, refs), required)
    }

    fn resolve(&self, r: SetRef) -> Option<WireRRset<'_>> {
        let set = self.t.sets.get(r.set as usize)?;
        let owner = if r.owner & SYNTH_OWNER != 0 {
            let at = self.t.rdata.get((r.owner & !SYNTH_OWNER) as usize..)?;
            at.get(..rdata::name_len(at)?)?
        } else {
            self.owner(self.t.nodes.get(r.owner as usize)?)
        };
        Some(WireRRset {
            owner: Cow::Borrowed(owner),
            rtype: set.rtype(),
            ttl: set.ttl,
            rdata: Cow::Borrowed(self.data(set)),
        })
    }

    /// The apex node.
    #[inline]
    fn apex(&self) -> Option<&Node> {
        self.node_at(0)
    }

    /// The apex SOA RRset (always present: the builder refuses zones without one).
    pub fn soa(&self) -> Option<WireRRset<'_>> {
        let apex = self.apex()?;
        self.set(apex, RecordType::SOA).map(|s| self.view(apex, s))
    }

    /// The apex SOA with TTL = min(SOA TTL, SOA MINIMUM), for the authority section of
    /// NXDOMAIN and NODATA answers (RFC 2308 §3).
    #[inline]
    pub fn negative_soa(&self) -> WireRRset<'_> {
        WireRRset {
            owner: Cow::Borrowed(self.apex().map_or(&[][..], |n| self.owner(n))),
            rtype: RecordType::SOA,
            ttl: self.negative_soa.ttl,
            rdata: Cow::Borrowed(self.data(&self.negative_soa)),
        }
    }

    /// Every RRset of the zone, node by node (off the query path: exports, tests).
    pub fn rrsets(&self) -> impl Iterator<Item = WireRRset<'_>> {
        self.live_nodes()
            .flat_map(move |(_, n)| self.sets(n).iter().map(move |s| self.view(n, s)))
    }

    /// Every record of the zone, decoded into hickory records (off the query path).
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.rrsets().flat_map(|s| s.records())
    }

    /// The records of the RRset `owner`/`rtype`, decoded (tests, tools).
    pub fn rrset_records(&self, owner: &Name, rtype: RecordType) -> Vec<Record> {
        let Some(wire) = lower_wire(owner) else {
            return Vec::new();
        };
        self.lookup(&wire)
            .and_then(|(_, n)| self.set(n, rtype).map(|s| self.view(n, s).records()))
            .unwrap_or_default()
    }

    /// Approximate heap bytes held by the zone's tables (shared base and extension).
    pub fn heap_size(&self) -> usize {
        self.t.names.len()
            + std::mem::size_of_val(&*self.t.nodes)
            + std::mem::size_of_val(&*self.t.index.slots)
            + std::mem::size_of_val(&*self.t.sets)
            + self.t.rdata.len()
            + std::mem::size_of_val(&*self.t.related)
            + std::mem::size_of_val(&*self.t.refs)
            + std::mem::size_of_val(&*self.t.children)
            + self.patch_size()
    }
}

/// The set of zones served at one moment. Immutable once published.
#[derive(Debug, Default, Clone)]
pub struct ZoneSet {
    zones: NameMap<Arc<Zone>>,
    /// Bit n set = some origin has n labels; lets `find` skip suffixes that cannot match.
    label_counts: u128,
}

impl ZoneSet {
    pub fn new() -> ZoneSet {
        ZoneSet::default()
    }

    pub fn insert(&mut self, zone: Arc<Zone>) {
        let key: Box<[u8]> = zone.origin_wire().into();
        self.zones.insert(key, zone);
        self.recount();
    }

    pub fn remove(&mut self, origin: &LowerName) -> Option<Arc<Zone>> {
        let wire = lower_wire(origin)?;
        let zone = self.zones.remove(&wire[..]);
        self.recount();
        zone
    }

    fn recount(&mut self) {
        self.label_counts = self
            .zones
            .values()
            .map(|z| 1u128 << (u32::from(z.origin().num_labels()) & 127))
            .fold(0, |a, b| a | b);
    }

    pub fn get(&self, origin: &LowerName) -> Option<&Arc<Zone>> {
        let wire = lower_wire(origin)?;
        self.zones.get(&wire[..])
    }

    /// Best zone for `qname`: the served zone with the longest origin that is an ancestor of
    /// (or equal to) the name (RFC 1034 §4.3.2 step 2).
    pub fn find(&self, qname: &LowerName) -> Option<&Arc<Zone>> {
        let wire = WireName::from_name(qname)?;
        self.find_wire(&wire, 0).map(|(z, _)| z)
    }

    /// Best zone for `name` after dropping its first `skip` labels; also returns how many
    /// labels of `name` lie below the zone origin.
    #[inline]
    pub fn find_wire(&self, name: &WireName, skip: usize) -> Option<(&Arc<Zone>, usize)> {
        let total = name.label_count();
        for i in skip..=total {
            let labels = total - i;
            if labels < 128 && self.label_counts & (1u128 << labels) == 0 {
                continue;
            }
            if let Some(z) = self.zones.get(name.suffix(i)) {
                return Some((z, i));
            }
        }
        None
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

/// Domain names in lowercase wire form (RFC 1035 §3.1, lowercased per RFC 4343), the key
/// of every hash lookup on the query path, and the hasher used for them.
mod name {
    use std::hash::Hasher;

    use hickory_proto::rr::Name;

    /// Longest name in wire form (RFC 1035 §2.3.4).
    const MAX_WIRE: usize = 255;
    /// Most labels a name can have, plus one slot for the root.
    const MAX_LABELS: usize = 128;

    /// A lowercase wire-form name on the stack with its label offsets, so that every
    /// ancestor is a suffix slice (no allocation per lookup).
    #[derive(Clone)]
    pub struct WireName {
        buf: [u8; MAX_WIRE],
        len: usize,
        offsets: [u8; MAX_LABELS],
        labels: usize,
    }

    impl WireName {
        /// `None` when the name is not a valid wire name (empty or too long labels, > 255
        /// octets); hickory's `Name` already enforces this, so it is a defensive check.
        pub fn from_name(name: &Name) -> Option<WireName> {
            let mut w = WireName::empty();
            w.set_name(name).then_some(w)
        }

        /// An empty buffer for [`WireName::set_name`].
        pub fn empty() -> WireName {
            WireName {
                buf: [0; MAX_WIRE],
                len: 0,
                offsets: [0; MAX_LABELS],
                labels: 0,
            }
        }

        /// Fills `self` with `name` in place (no copy of the buffer on the way out, which
        /// matters on the query path); false when the name is not a valid wire name.
        pub fn set_name(&mut self, name: &Name) -> bool {
            self.len = 0;
            self.labels = 0;
            for label in name.iter() {
                if self.push_label(label).is_none() {
                    return false;
                }
            }
            self.terminate().is_some()
        }

        /// Builds `prefix` (the first `prefix_labels` labels of `name`) followed by `suffix`.
        pub fn concat(name: &Name, prefix_labels: usize, suffix: &Name) -> Option<WireName> {
            let mut w = WireName {
                buf: [0; MAX_WIRE],
                len: 0,
                offsets: [0; MAX_LABELS],
                labels: 0,
            };
            for label in name.iter().take(prefix_labels).chain(suffix.iter()) {
                w.push_label(label)?;
            }
            w.finish()
        }

        /// Lowercase copy of an uncompressed wire-form name (`None` when malformed).
        pub fn from_wire(wire: &[u8]) -> Option<WireName> {
            let mut w = WireName {
                buf: [0; MAX_WIRE],
                len: 0,
                offsets: [0; MAX_LABELS],
                labels: 0,
            };
            let mut rest = wire;
            loop {
                let (&l, tail) = rest.split_first()?;
                if l == 0 {
                    return w.finish();
                }
                let (label, tail) = tail.split_at_checked(usize::from(l))?;
                w.push_label(label)?;
                rest = tail;
            }
        }

        fn push_label(&mut self, label: &[u8]) -> Option<()> {
            let l = label.len();
            if l == 0 || l > 63 || self.len + 1 + l + 1 > MAX_WIRE || self.labels + 1 >= MAX_LABELS
            {
                return None;
            }
            *self.offsets.get_mut(self.labels)? = u8::try_from(self.len).ok()?;
            self.labels += 1;
            *self.buf.get_mut(self.len)? = l as u8;
            let dst = self.buf.get_mut(self.len + 1..self.len + 1 + l)?;
            for (d, s) in dst.iter_mut().zip(label) {
                *d = s.to_ascii_lowercase();
            }
            self.len += 1 + l;
            Some(())
        }

        fn finish(mut self) -> Option<WireName> {
            self.terminate()?;
            Some(self)
        }

        fn terminate(&mut self) -> Option<()> {
            *self.offsets.get_mut(self.labels)? = u8::try_from(self.len).ok()?;
            *self.buf.get_mut(self.len)? = 0;
            self.len += 1;
            Some(())
        }

        pub fn as_bytes(&self) -> &[u8] {
            self.buf.get(..self.len).unwrap_or(&[])
        }

        /// Number of labels, not counting the root.
        pub fn label_count(&self) -> usize {
            self.labels
        }

        /// Wire length of the first `labels` labels.
        pub fn prefix_len(&self, labels: usize) -> usize {
            self.offsets
                .get(labels.min(self.labels))
                .map_or(0, |&o| usize::from(o))
        }

        /// The ancestor left after dropping the first `skip` labels (`label_count()` gives
        /// the root).
        pub fn suffix(&self, skip: usize) -> &[u8] {
            let start = self.prefix_len(skip);
            self.buf.get(start..self.len).unwrap_or(&[])
        }
    }

    impl std::fmt::Debug for WireName {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "WireName({:?})", self.as_bytes())
        }
    }

    /// `name` in lowercase wire form, on the heap (for building and non-hot lookups).
    pub fn lower_wire(name: &Name) -> Option<Vec<u8>> {
        WireName::from_name(name).map(|w| w.as_bytes().to_vec())
    }

    /// The parent of a wire-form name (`None` for the root or malformed input).
    pub fn parent_wire(wire: &[u8]) -> Option<&[u8]> {
        let &l = wire.first()?;
        if l == 0 {
            return None;
        }
        wire.get(1 + usize::from(l)..)
    }

    /// True when `name` equals `ancestor` or lies below it (both lowercase wire form).
    pub fn wire_is_below_or_eq(name: &[u8], ancestor: &[u8]) -> bool {
        let mut cur = name;
        while cur.len() > ancestor.len() {
            match parent_wire(cur) {
                Some(p) => cur = p,
                None => return false,
            }
        }
        cur == ancestor
    }

    /// 32-bit hash of a lowercase wire-form name, for the zone's node index.
    #[inline]
    pub fn hash_name(wire: &[u8]) -> u32 {
        let mut h = NameHasher::default();
        h.write(wire);
        // The multiply leaves the best-mixed bits at the top.
        (h.0 >> 32) as u32
    }

    /// A fast non-cryptographic hasher (FxHash-style) for name keys. Query names cannot
    /// insert keys, so a fixed function does not open a collision-flooding attack on
    /// lookups.
    #[derive(Default, Clone, Copy)]
    pub struct NameHasher(u64);

    const K: u64 = 0xf135_7aea_2e62_a9c5;

    impl NameHasher {
        #[inline]
        fn add(&mut self, w: u64) {
            self.0 = (self.0 ^ w).wrapping_mul(K);
        }
    }

    impl Hasher for NameHasher {
        #[inline]
        fn write(&mut self, bytes: &[u8]) {
            let mut chunks = bytes.chunks_exact(8);
            for c in &mut chunks {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                self.add(u64::from_le_bytes(w));
            }
            let rem = chunks.remainder();
            if !rem.is_empty() {
                let mut w = [0u8; 8];
                for (d, s) in w.iter_mut().zip(rem) {
                    *d = *s;
                }
                self.add(u64::from_le_bytes(w) ^ ((rem.len() as u64) << 59));
            }
        }

        #[inline]
        fn write_usize(&mut self, n: usize) {
            self.add(n as u64);
        }

        #[inline]
        fn finish(&self) -> u64 {
            // The multiply leaves the best bits at the top; hashbrown indexes with the low
            // bits and tags with the top 7.
            self.0.rotate_left(26)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::str::FromStr;

        #[test]
        fn wire_form_and_suffixes() {
            let n = Name::from_str("WWW.Example.COM.").unwrap();
            let w = WireName::from_name(&n).unwrap();
            assert_eq!(w.as_bytes(), b"\x03www\x07example\x03com\x00");
            assert_eq!(w.label_count(), 3);
            assert_eq!(w.suffix(1), b"\x07example\x03com\x00");
            assert_eq!(w.suffix(3), b"\x00");
            assert_eq!(w.prefix_len(1), 4);
            assert!(wire_is_below_or_eq(w.as_bytes(), w.suffix(1)));
            assert!(!wire_is_below_or_eq(w.suffix(1), w.as_bytes()));
            assert!(!wire_is_below_or_eq(b"\x03xom\x00", b"\x03com\x00"));
            assert!(wire_is_below_or_eq(b"\x03com\x00", b"\x00"));
            let root = WireName::from_name(&Name::root()).unwrap();
            assert_eq!(root.as_bytes(), b"\x00");
            assert_eq!(root.label_count(), 0);
        }
    }
}
