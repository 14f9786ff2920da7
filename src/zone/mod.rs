//! Zone data: immutable in-memory snapshots that answer queries.
//!
//! A [`Zone`] is built once (on the heavy-job runtime) and never mutated after it is
//! published; a [`ZoneSet`] maps apex names to `Arc<Zone>` and is swapped atomically as a
//! whole (see `runtime`). Nothing in here does I/O on the query path.
//!
//! What must not live here: wire parsing/encoding (see `wire`), answer rules (see `auth`).

pub mod file;

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

pub use name::{NameHasher, WireName, lower_wire, parent_wire, wire_is_below_or_eq};

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

/// Sentinel for "no node" in the per-node indices below.
const NONE: u32 = u32::MAX;

const FLAG_DELEG: u8 = 1;
const FLAG_CNAME: u8 = 2;
const FLAG_DNAME: u8 = 4;

type NameMap<V> = HashMap<Box<[u8]>, V, BuildHasherDefault<NameHasher>>;

/// A reference to an RRset inside one zone: a node's RRset, or (node = `NONE`) one of the
/// zone's pre-synthesized wildcard expansions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SetRef {
    node: u32,
    set: u32,
}

/// Additional-section data for one RRset (NS, MX, SRV): the A/AAAA RRsets of its targets
/// found in this zone ("references to related data", computed once at build time).
#[derive(Debug, Clone)]
struct Related {
    set: u16,
    refs: Box<[SetRef]>,
    /// How many leading `refs` are required glue (in-domain, RFC 9471); only for NS RRsets
    /// at delegation points.
    required: u16,
}

/// All data at one owner name. An empty node (no RRsets) is an empty non-terminal.
#[derive(Debug, Clone)]
pub struct Node {
    pub rrsets: Vec<RRset>,
    name: LowerName,
    parent: u32,
    /// Topmost delegation point at or above this node (not the apex), or `NONE`.
    cut: u32,
    /// The `*` child of this node, or `NONE`.
    wildcard: u32,
    flags: u8,
    related: Vec<Related>,
}

impl Default for Node {
    fn default() -> Node {
        Node {
            rrsets: Vec::new(),
            name: LowerName::default(),
            parent: NONE,
            cut: NONE,
            wildcard: NONE,
            flags: 0,
            related: Vec::new(),
        }
    }
}

impl Node {
    pub fn get(&self, rtype: RecordType) -> Option<&RRset> {
        self.rrsets.iter().find(|s| s.rtype == rtype)
    }

    /// Index of the RRset of `rtype` in `rrsets`.
    pub fn position(&self, rtype: RecordType) -> Option<usize> {
        self.rrsets.iter().position(|s| s.rtype == rtype)
    }

    pub fn is_empty_non_terminal(&self) -> bool {
        self.rrsets.is_empty()
    }

    /// The owner name, lowercased.
    pub fn name(&self) -> &LowerName {
        &self.name
    }

    /// True for a non-apex node with an NS RRset (a zone cut, RFC 1034 §4.2.1).
    pub fn is_delegation(&self) -> bool {
        self.flags & FLAG_DELEG != 0
    }

    pub fn has_cname(&self) -> bool {
        self.flags & FLAG_CNAME != 0
    }

    pub fn has_dname(&self) -> bool {
        self.flags & FLAG_DNAME != 0
    }

    /// Index (see [`Zone::node_at`]) of the topmost zone cut at or above this node: when
    /// set, the node is at a delegation point or occluded below one.
    pub fn cut(&self) -> Option<u32> {
        (self.cut != NONE).then_some(self.cut)
    }

    /// Index of this node's `*` child (RFC 4592 source of synthesis), if any.
    pub fn wildcard(&self) -> Option<u32> {
        (self.wildcard != NONE).then_some(self.wildcard)
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
    OutOfZone { name: Name, origin: Name },
    #[error("name {0} is not a valid domain name")]
    BadName(Name),
    #[error("zone {0} has more than 2^32 - 2 names")]
    TooLarge(Name),
}

/// An immutable authoritative zone.
///
/// Nodes live in one vector (parents before children) and are found through a hash map
/// keyed by the lowercase wire form of the owner name, so an ancestor lookup is a lookup of
/// a suffix of the query name's wire form, with no allocation.
#[derive(Debug)]
pub struct Zone {
    origin: Name,
    origin_lower: LowerName,
    origin_wire: Box<[u8]>,
    serial: u32,
    /// Every owner name in the zone, plus every empty non-terminal between an owner and the
    /// apex, so that "does this name exist" is one map lookup (RFC 4592 §2.2.2).
    index: NameMap<u32>,
    nodes: Vec<Node>,
    /// Wildcard expansions used as additional-section data (owner = the MX/NS/SRV target).
    synth: Vec<RRset>,
    /// The apex SOA with TTL = min(SOA TTL, SOA MINIMUM), for negative answers (RFC 2308 §3).
    negative_soa: RRset,
    record_count: usize,
}

/// Inserts `wire` (and any missing ancestor down from the apex) and returns its index.
/// Ancestors are always created before descendants, so a parent's index is smaller.
#[allow(clippy::result_large_err)] // build time only; the error names the bad record
fn ensure_node(
    index: &mut NameMap<u32>,
    nodes: &mut Vec<Node>,
    origin_len: usize,
    wire: &[u8],
    name: &Name,
) -> Result<u32, BuildError> {
    if let Some(&i) = index.get(wire) {
        return Ok(i);
    }
    // Walk up to the first existing ancestor (the apex exists from the start).
    let mut missing: Vec<(&[u8], usize)> = Vec::new();
    let mut cur = wire;
    let mut skipped = 0usize;
    let parent_idx = loop {
        if let Some(&i) = index.get(cur) {
            break i;
        }
        if cur.len() <= origin_len {
            return Err(BuildError::BadName(name.clone()));
        }
        missing.push((cur, skipped));
        cur = parent_wire(cur).ok_or_else(|| BuildError::BadName(name.clone()))?;
        skipped += 1;
    };
    let mut parent = parent_idx;
    for (w, skip) in missing.into_iter().rev() {
        let idx = u32::try_from(nodes.len())
            .ok()
            .filter(|&i| i != NONE)
            .ok_or_else(|| BuildError::TooLarge(name.clone()))?;
        let node_name = if skip == 0 {
            LowerName::new(name)
        } else {
            let n = Name::from_labels(name.iter().skip(skip))
                .map_err(|_| BuildError::BadName(name.clone()))?;
            LowerName::new(&n)
        };
        nodes.push(Node {
            name: node_name,
            parent,
            ..Node::default()
        });
        // RFC 4592 §2.1.1: a wildcard is a name whose first label is `*`.
        if w.get(..2) == Some(&[1u8, b'*'][..])
            && let Some(p) = nodes.get_mut(parent as usize)
        {
            p.wildcard = idx;
        }
        index.insert(w.into(), idx);
        parent = idx;
    }
    Ok(parent)
}

fn related_target(data: &RData) -> Option<&Name> {
    match data {
        RData::NS(ns) => Some(&ns.0),
        RData::MX(mx) => Some(&mx.exchange),
        RData::SRV(srv) => Some(&srv.target),
        _ => None,
    }
}

impl Zone {
    /// Builds a zone from records that belong to it. Records with the same owner and type
    /// form one RRset; the RRset TTL is the smallest record TTL (RFC 2181 §5.2).
    ///
    /// Semantic checks with line numbers (CNAME exclusivity, glue, ...) belong to the zone
    /// file loader; this only refuses what would make the zone unservable. Besides
    /// grouping, it precomputes what answering needs: zone cuts and occlusion, wildcard
    /// children, CNAME/DNAME flags, and the additional-section data of NS/MX/SRV RRsets.
    #[allow(clippy::result_large_err)] // shared signature; build time only
    pub fn build(origin: Name, records: Vec<Record>) -> Result<Zone, BuildError> {
        let origin_lower = LowerName::new(&origin);
        let origin_wire: Box<[u8]> = lower_wire(&origin)
            .ok_or_else(|| BuildError::BadName(origin.clone()))?
            .into();
        // Most zones have about one RRset per name: size for that up front so the big
        // tables are not regrown (and rehashed) while loading millions of names.
        let mut index: NameMap<u32> =
            NameMap::with_capacity_and_hasher(records.len(), BuildHasherDefault::default());
        let mut nodes: Vec<Node> = Vec::with_capacity(records.len());
        nodes.push(Node {
            name: origin_lower.clone(),
            ..Node::default()
        });
        index.insert(origin_wire.clone(), 0);
        let mut record_count = 0usize;
        for record in records {
            let wire =
                lower_wire(&record.name).ok_or_else(|| BuildError::BadName(record.name.clone()))?;
            if !wire_is_below_or_eq(&wire, &origin_wire) {
                return Err(BuildError::OutOfZone {
                    name: record.name.clone(),
                    origin,
                });
            }
            let idx = ensure_node(
                &mut index,
                &mut nodes,
                origin_wire.len(),
                &wire,
                &record.name,
            )?;
            let Some(node) = nodes.get_mut(idx as usize) else {
                continue;
            };
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

        // TTLs, flags and zone cuts. Parents precede children, so one forward pass sees
        // each parent's cut before its children.
        for i in 0..nodes.len() {
            let parent_cut = nodes
                .get(i)
                .and_then(|n| nodes.get(n.parent as usize))
                .map_or(NONE, |p| p.cut);
            let Some(node) = nodes.get_mut(i) else {
                continue;
            };
            let mut flags = 0u8;
            for set in &mut node.rrsets {
                let ttl = set.ttl;
                for r in &mut set.records {
                    r.ttl = ttl;
                }
                match set.rtype {
                    RecordType::NS if i != 0 => flags |= FLAG_DELEG,
                    RecordType::CNAME => flags |= FLAG_CNAME,
                    RecordType::DNAME => flags |= FLAG_DNAME,
                    _ => {}
                }
            }
            node.flags = flags;
            // RFC 1034 §4.2.1: everything at or below the topmost cut is not authoritative.
            node.cut = if parent_cut != NONE {
                parent_cut
            } else if flags & FLAG_DELEG != 0 {
                i as u32
            } else {
                NONE
            };
        }

        let soa = nodes
            .first()
            .and_then(|n| n.get(RecordType::SOA))
            .ok_or_else(|| BuildError::NoSoa(origin.clone()))?;
        let (serial, minimum) = soa
            .records
            .first()
            .and_then(|r| match &r.data {
                RData::SOA(soa) => Some((soa.serial, soa.minimum)),
                _ => None,
            })
            .ok_or_else(|| BuildError::NoSoa(origin.clone()))?;
        // RFC 2308 §3: the negative TTL is min(SOA TTL, SOA MINIMUM).
        let mut negative_soa = soa.clone();
        negative_soa.ttl = soa.ttl.min(minimum);
        for r in &mut negative_soa.records {
            r.ttl = negative_soa.ttl;
        }

        nodes.shrink_to_fit();
        let mut zone = Zone {
            origin,
            origin_lower,
            origin_wire,
            serial,
            index,
            nodes,
            synth: Vec::new(),
            negative_soa,
            record_count,
        };
        zone.link_related();
        Ok(zone)
    }

    /// Computes, for every NS/MX/SRV RRset, the A/AAAA RRsets of its targets that this
    /// zone holds (RFC 1034 §4.3.2 step 3 / §6.2.3). Like Knot, a target without a node of
    /// its own is matched against a wildcard, and occluded glue counts (it is in the zone
    /// data). At a delegation, in-domain glue (target at or below the cut) is required
    /// (RFC 9471 §2.1) and goes first.
    fn link_related(&mut self) {
        let mut found: Vec<(usize, Related)> = Vec::new();
        let mut synth: Vec<RRset> = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let mut cut_wire: Option<Vec<u8>> = None;
            for (s, set) in node.rrsets.iter().enumerate() {
                if !matches!(set.rtype, RecordType::NS | RecordType::MX | RecordType::SRV) {
                    continue;
                }
                let at_cut = set.rtype == RecordType::NS && node.is_delegation();
                if at_cut && cut_wire.is_none() {
                    cut_wire = lower_wire(&node.name);
                }
                let mut required: Vec<SetRef> = Vec::new();
                let mut optional: Vec<SetRef> = Vec::new();
                let mut seen: Vec<Vec<u8>> = Vec::new();
                for record in &set.records {
                    let Some(target) = related_target(&record.data) else {
                        continue;
                    };
                    let Some(tw) = lower_wire(target) else {
                        continue;
                    };
                    if !wire_is_below_or_eq(&tw, &self.origin_wire) || seen.contains(&tw) {
                        continue;
                    }
                    let is_required = at_cut
                        && cut_wire
                            .as_deref()
                            .is_some_and(|c| wire_is_below_or_eq(&tw, c));
                    let out = if is_required {
                        &mut required
                    } else {
                        &mut optional
                    };
                    self.address_refs(&tw, target, &mut synth, out);
                    seen.push(tw);
                }
                if required.is_empty() && optional.is_empty() {
                    continue;
                }
                let req = u16::try_from(required.len()).unwrap_or(u16::MAX);
                required.extend(optional);
                if let Ok(set) = u16::try_from(s) {
                    found.push((
                        i,
                        Related {
                            set,
                            refs: required.into(),
                            required: req,
                        },
                    ));
                }
            }
        }
        for (i, related) in found {
            if let Some(node) = self.nodes.get_mut(i) {
                node.related.push(related);
            }
        }
        self.synth = synth;
    }

    /// Pushes refs to the A and AAAA RRsets for `target` (lowercase wire `tw`).
    fn address_refs(
        &self,
        tw: &[u8],
        target: &Name,
        synth: &mut Vec<RRset>,
        out: &mut Vec<SetRef>,
    ) {
        if let Some((idx, node)) = self.lookup(tw) {
            for (s, set) in node.rrsets.iter().enumerate() {
                if matches!(set.rtype, RecordType::A | RecordType::AAAA) {
                    out.push(SetRef {
                        node: idx,
                        set: s as u32,
                    });
                }
            }
            return;
        }
        // RFC 4592 §3.3.1: closest encloser, then its `*` child.
        let mut cur = tw;
        let encloser = loop {
            let Some(parent) = parent_wire(cur) else {
                return;
            };
            if let Some((_, n)) = self.lookup(parent) {
                break n;
            }
            cur = parent;
        };
        let Some(wild) = encloser.wildcard().and_then(|w| self.node_at(w)) else {
            return;
        };
        for set in &wild.rrsets {
            if matches!(set.rtype, RecordType::A | RecordType::AAAA) {
                let Ok(n) = u32::try_from(self.synth.len() + synth.len()) else {
                    return;
                };
                synth.push(set.with_owner(target));
                out.push(SetRef { node: NONE, set: n });
            }
        }
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

    /// The apex SOA RRset (always present: `build` refuses zones without one).
    pub fn soa(&self) -> Option<&RRset> {
        self.nodes.first().and_then(|n| n.get(RecordType::SOA))
    }

    /// The apex SOA with TTL = min(SOA TTL, SOA MINIMUM), for the authority section of
    /// NXDOMAIN and NODATA answers (RFC 2308 §3).
    pub fn negative_soa(&self) -> &RRset {
        &self.negative_soa
    }

    /// The node at exactly `name`, if the name exists (possibly as an empty non-terminal).
    pub fn node(&self, name: &LowerName) -> Option<&Node> {
        let wire = lower_wire(name)?;
        self.lookup(&wire).map(|(_, n)| n)
    }

    /// The node with this lowercase wire-form owner name, and its index.
    #[inline]
    pub fn lookup(&self, wire: &[u8]) -> Option<(u32, &Node)> {
        let &i = self.index.get(wire)?;
        self.nodes.get(i as usize).map(|n| (i, n))
    }

    /// The node at `index` (as returned by [`Zone::lookup`], [`Node::cut`], ...).
    #[inline]
    pub fn node_at(&self, index: u32) -> Option<&Node> {
        self.nodes.get(index as usize)
    }

    /// The additional-section RRsets for `node.rrsets[set]` (A/AAAA of NS/MX/SRV targets
    /// in this zone) and how many leading ones are required glue.
    pub fn related<'a>(
        &'a self,
        node: &'a Node,
        set: usize,
    ) -> (impl Iterator<Item = &'a RRset> + 'a, usize) {
        let related = node.related.iter().find(|r| usize::from(r.set) == set);
        let required = related.map_or(0, |r| usize::from(r.required));
        let refs = related.map(|r| &r.refs[..]).unwrap_or(&[]);
        (refs.iter().filter_map(|r| self.set_ref(*r)), required)
    }

    fn set_ref(&self, r: SetRef) -> Option<&RRset> {
        if r.node == NONE {
            self.synth.get(r.set as usize)
        } else {
            self.nodes
                .get(r.node as usize)
                .and_then(|n| n.rrsets.get(r.set as usize))
        }
    }

    pub fn record_count(&self) -> usize {
        self.record_count
    }

    pub fn name_count(&self) -> usize {
        self.nodes.len()
    }

    /// Every node, in no particular order (for exports and tests).
    pub fn nodes(&self) -> impl Iterator<Item = (&LowerName, &Node)> {
        self.nodes.iter().map(|n| (&n.name, n))
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
            let mut w = WireName {
                buf: [0; MAX_WIRE],
                len: 0,
                offsets: [0; MAX_LABELS],
                labels: 0,
            };
            for label in name.iter() {
                w.push_label(label)?;
            }
            w.finish()
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
            *self.offsets.get_mut(self.labels)? = u8::try_from(self.len).ok()?;
            *self.buf.get_mut(self.len)? = 0;
            self.len += 1;
            Some(self)
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
