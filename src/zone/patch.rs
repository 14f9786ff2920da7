//! Zone patches: the next snapshot of a store-managed zone from the current one and one
//! committed change ([`ChangeEvent`]), without rebuilding the zone.
//!
//! A patched zone shares the base [`super::Tables`] of the zone it came from and carries an
//! extension ([`Ext`]) with every node that changed since the base was built: replaced
//! nodes (a redirect maps the base index to the replacement, so parent walks and
//! [`Zone::node_at`] see current data), new nodes, and tombstones for deleted names; their
//! names, RRsets and RDATA are appended after the base tables. The extension's index is
//! probed before the base index. A patch copies the previous extension (flat copies) and
//! appends to it: its cost grows with the extension and the change, not with the zone.
//! RRsets that did not change keep pointing at their data where it is.
//!
//! The new content of each changed RRset is the current one plus the event's added
//! records minus its removed ones (the store's events are exact record-level deltas, in
//! which a record may be added and removed again, e.g. a TTL change of its RRset), laid
//! out as a rebuild from the store would: RRsets by type, records by RDATA hash (the
//! store's key order), TTL the smallest of the records' (RFC 2181 §5.2). The tree stays
//! exact: new names create their missing empty non-terminal ancestors; a name that loses
//! all data stays as an empty non-terminal while it has children and disappears otherwise,
//! with its ancestors that are left as childless empty non-terminals (RFC 4592 §2.2.2);
//! `*` children set and clear their parent's wildcard flag; CNAME flags follow the data.
//!
//! What a patch does not do ([`PatchError::NeedsRebuild`], the caller rebuilds): whole-zone
//! replacements, events that do not continue this snapshot, NS appearing or disappearing
//! at a non-apex name (a zone cut changes the authority of a whole subtree, RFC 1034
//! §4.2.1), DNAME appearing or disappearing (RFC 6672), an extension past
//! [`MAX_EXT_NODES`] or [`MAX_EXT_BYTES`], and data that does not match the snapshot.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hickory_proto::rr::{LowerName, RecordType};

use crate::store::schema::rdata_hash;
use crate::store::{ChangeEvent, ChangeKind, StoredRecord};

use super::rdata::{self, Rdatas};
use super::{
    Ext, FLAG_CNAME, FLAG_DELEG, FLAG_DNAME, FLAG_GONE, FLAG_NONAUTH, FLAG_WILDCARD, Index, NONE,
    Node, RdataSet, SYNTH_OWNER, Zone, hash_name, parent_wire, wire_is_below_or_eq,
};

/// Most nodes an extension may hold (new, replaced and deleted names together); beyond
/// this a rebuild is cheaper than copying the extension on every change.
pub const MAX_EXT_NODES: usize = 1 << 19;
/// Most heap bytes an extension may hold (it is copied on every change).
pub const MAX_EXT_BYTES: usize = 64 << 20;

/// Why a change cannot be applied as a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The zone must be rebuilt from the store; the reason is for logs.
    #[error("zone needs a rebuild: {0}")]
    NeedsRebuild(&'static str),
}

use PatchError::NeedsRebuild;

/// Where a name's node is in the zone being patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Base node index (not replaced so far).
    Base(u32),
    /// Position in the extension (possibly a tombstone).
    Ext(usize),
    Absent,
}

/// Where an RRset's data is: already in the zone (global offset), or new.
enum Data {
    Zone { at: u32, len: u32 },
    New(Vec<u8>),
}

struct WorkSet<'a> {
    rtype: u16,
    ttl: u32,
    data: Data,
    /// Spelling of the owner of the RRset's first record, when that record is new.
    first_owner: Option<&'a [u8]>,
}

/// A name's spelling: already in the zone's names, or new.
#[derive(Clone, Copy)]
enum Spelling<'a> {
    Zone { at: u32, len: u8 },
    New(&'a [u8]),
}

/// One name the change touches (its data, or its children).
struct Entry<'a> {
    lower: Vec<u8>,
    at: At,
    was_live: bool,
    live: bool,
    had_data: bool,
    /// Its data changed.
    changed: bool,
    spelling: Spelling<'a>,
    sets: Vec<WorkSet<'a>>,
    children: u32,
    flags: u8,
}

/// One record of an RRset being recomputed.
struct Item<'a> {
    ttl: u32,
    rdata: &'a [u8],
    /// Owner spelling when the record comes from the event.
    owner: Option<&'a [u8]>,
    /// RDATA hash as the store keys records (RFC 4034 §6.2 lowercased names).
    hash: u64,
    /// Taken out by a removal.
    gone: bool,
}

struct Work<'a> {
    zone: &'a Zone,
    entries: Vec<Entry<'a>>,
    map: HashMap<Vec<u8>, usize>,
}

impl Zone {
    /// The zone after `event`, a committed change to it, as a new snapshot that shares this
    /// one's tables (see the module documentation). `self` is unchanged.
    pub fn patch(&self, event: &ChangeEvent) -> Result<Zone, PatchError> {
        if event.kind != ChangeKind::Update {
            return Err(NeedsRebuild("whole-zone replacement"));
        }
        if LowerName::new(&event.zone) != self.origin_lower {
            return Err(NeedsRebuild("change to another zone"));
        }
        if event.old_serial != self.serial {
            return Err(NeedsRebuild("change does not continue this snapshot"));
        }
        let mut work = Work {
            zone: self,
            entries: Vec::new(),
            map: HashMap::new(),
        };
        let delta = work.apply_records(event)?;
        work.check_flags()?;
        work.restructure()?;
        let record_count = i64::try_from(self.record_count)
            .ok()
            .and_then(|n| n.checked_add(delta))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(NeedsRebuild("record count out of range"))?;
        let (ext, apex) = work.write()?;
        let mut zone = Zone {
            origin: self.origin.clone(),
            origin_lower: self.origin_lower.clone(),
            origin_wire: self.origin_wire.clone(),
            serial: self.serial,
            t: Arc::clone(&self.t),
            ext: Some(Box::new(ext)),
            negative_soa: self.negative_soa,
            record_count,
        };
        // RFC 2308 §3: the negative TTL is min(SOA TTL, SOA MINIMUM).
        let apex = zone.raw_node(apex).copied();
        let soa = apex
            .and_then(|n| zone.set(&n, RecordType::SOA).copied())
            .ok_or(NeedsRebuild("no SOA after the change"))?;
        let (serial, minimum) = Rdatas::new(zone.data(&soa))
            .next()
            .and_then(rdata::soa_serial_minimum)
            .ok_or(NeedsRebuild("malformed SOA"))?;
        if serial != event.new_serial {
            return Err(NeedsRebuild("SOA serial differs from the change's"));
        }
        zone.serial = serial;
        zone.negative_soa = RdataSet {
            ttl: soa.ttl.min(minimum),
            ..soa
        };
        Ok(zone)
    }
}

/// `n` as a global table index or offset (below [`SYNTH_OWNER`], as the builder keeps them).
fn global(n: usize) -> Result<u32, PatchError> {
    u32::try_from(n)
        .ok()
        .filter(|&i| i < SYNTH_OWNER)
        .ok_or(NeedsRebuild("zone too large"))
}

/// A copy of `v` (empty when `None`) with room for `extra` more. Paced: an extension
/// holds up to [`MAX_EXT_BYTES`].
fn copy<T: Copy>(v: Option<&Vec<T>>, extra: usize) -> Vec<T> {
    let v = v.map_or(&[][..], |v| &v[..]);
    let mut out = Vec::with_capacity(v.len() + extra);
    crate::pace::extend_from_slice(&mut out, v);
    out
}

/// Sorts `v` by base index, given that `v[..sorted]` already is: sorts the (short) tail and
/// merges, rather than sorting up to [`MAX_EXT_NODES`] entries again on every change.
fn sort_redirects(v: &mut Vec<(u32, u32)>, sorted: usize) {
    let Some(tail) = v.get_mut(sorted..) else {
        v.sort_unstable_by_key(|&(b, _)| b);
        return;
    };
    tail.sort_unstable_by_key(|&(b, _)| b);
    let in_order = match (sorted.checked_sub(1).and_then(|i| v.get(i)), v.get(sorted)) {
        (Some(last), Some(first)) => last.0 <= first.0,
        _ => true,
    };
    if in_order {
        return;
    }
    let (head, tail) = v.split_at(sorted);
    let mut merged = Vec::with_capacity(v.len());
    let (mut h, mut t) = (head.iter().peekable(), tail.iter().peekable());
    loop {
        crate::pace::tick();
        let next = match (h.peek(), t.peek()) {
            (Some(a), Some(b)) if a.0 <= b.0 => h.next(),
            (Some(_), Some(_)) | (None, Some(_)) => t.next(),
            (Some(_), None) => h.next(),
            (None, None) => break,
        };
        if let Some(&e) = next {
            merged.push(e);
        }
    }
    *v = merged;
}

/// The lowercase form of a record's owner, checked to be a name in the zone.
fn owner_lower(rec: &StoredRecord, origin: &[u8]) -> Result<Vec<u8>, PatchError> {
    if rdata::name_len(&rec.owner) != Some(rec.owner.len()) {
        return Err(NeedsRebuild("malformed owner name"));
    }
    let lower = rec.owner.to_ascii_lowercase();
    if !wire_is_below_or_eq(&lower, origin) {
        return Err(NeedsRebuild("owner outside the zone"));
    }
    Ok(lower)
}

fn is_wildcard(lower: &[u8]) -> bool {
    lower.starts_with(b"\x01*")
}

impl<'a> Work<'a> {
    fn origin(&self) -> &'a [u8] {
        &self.zone.origin_wire
    }

    /// Where `lower`'s node is now.
    fn locate(&self, lower: &[u8]) -> At {
        let z = self.zone;
        let hash = hash_name(lower);
        let same = |i: u32| {
            z.raw_node(i)
                .is_some_and(|n| z.owner(n).eq_ignore_ascii_case(lower))
        };
        if let Some(ext) = &z.ext
            && let Some(g) = ext.index.probe(hash, same)
        {
            return match (g as usize).checked_sub(z.t.nodes.len()) {
                Some(p) => At::Ext(p),
                None => At::Base(g),
            };
        }
        match z.t.index.probe(hash, same) {
            Some(b) => At::Base(b),
            None => At::Absent,
        }
    }

    /// Global index of the node at `at`.
    fn index_of(&self, at: At) -> Option<u32> {
        match at {
            At::Base(b) => Some(b),
            At::Ext(p) => u32::try_from(self.zone.t.nodes.len() + p).ok(),
            At::Absent => None,
        }
    }

    /// The entry for `lower`, loaded from the zone on first use.
    fn entry(&mut self, lower: &[u8]) -> usize {
        if let Some(&i) = self.map.get(lower) {
            return i;
        }
        let z = self.zone;
        let at = self.locate(lower);
        let idx = self.index_of(at);
        let node = idx.and_then(|i| z.raw_node(i)).copied();
        let live = node.is_some_and(|n| n.flags & FLAG_GONE == 0);
        let spelling = node.map_or(Spelling::New(&[]), |n| Spelling::Zone {
            at: n.name,
            len: n.name_len,
        });
        let (sets, children, flags) = match node {
            Some(n) if live => (
                z.sets(&n)
                    .iter()
                    .map(|s| WorkSet {
                        rtype: s.rtype,
                        ttl: s.ttl,
                        data: Data::Zone {
                            at: s.data,
                            len: s.len,
                        },
                        first_owner: None,
                    })
                    .collect(),
                idx.map_or(0, |i| z.children(i)),
                n.flags,
            ),
            _ => (Vec::new(), 0, 0),
        };
        let i = self.entries.len();
        self.entries.push(Entry {
            lower: lower.to_vec(),
            at,
            was_live: live,
            live,
            had_data: !sets.is_empty(),
            changed: false,
            spelling,
            sets,
            children,
            flags,
        });
        self.map.insert(lower.to_vec(), i);
        i
    }

    /// Recomputes every RRset the event touches; returns the change in record count.
    fn apply_records(&mut self, event: &'a ChangeEvent) -> Result<i64, PatchError> {
        type Group<'e> = (Vec<&'e StoredRecord>, Vec<&'e StoredRecord>);
        let origin = self.origin();
        let mut groups: BTreeMap<(Vec<u8>, u16), Group<'a>> = BTreeMap::new();
        for rec in &event.added {
            let key = (owner_lower(rec, origin)?, u16::from(rec.rtype));
            groups.entry(key).or_default().0.push(rec);
        }
        for rec in &event.removed {
            let key = (owner_lower(rec, origin)?, u16::from(rec.rtype));
            groups.entry(key).or_default().1.push(rec);
        }
        let mut delta = 0i64;
        let mut items: Vec<Item<'a>> = Vec::new();
        for ((lower, code), (adds, removes)) in groups {
            // A purge batch is a thousand names: on a heavy-job thread, paced.
            crate::pace::tick();
            let rtype = RecordType::from(code);
            let i = self.entry(&lower);
            let zone = self.zone;
            let Some(entry) = self.entries.get_mut(i) else {
                continue;
            };
            items.clear();
            let pos = entry.sets.iter().position(|s| s.rtype == code);
            if let Some(set) = pos.and_then(|p| entry.sets.get(p)) {
                // Each (owner, type) is recomputed once, so its data is still the zone's.
                let Data::Zone { at, len } = set.data else {
                    return Err(NeedsRebuild("RRset touched twice"));
                };
                for rd in Rdatas::new(zone.rdata_at(at, len)) {
                    items.push(Item {
                        ttl: set.ttl,
                        rdata: rd,
                        owner: None,
                        hash: 0,
                        gone: false,
                    });
                }
            }
            let before = items.len();
            for rec in adds {
                items.push(Item {
                    ttl: rec.ttl,
                    rdata: &rec.rdata,
                    owner: Some(&rec.owner),
                    hash: 0,
                    gone: false,
                });
            }
            // The store's key order within an RRset (what a rebuild would give), which also
            // makes finding a record a binary search.
            for it in items.iter_mut() {
                it.hash = rdata_hash(rtype, it.rdata);
            }
            items.sort_by_key(|it| it.hash);
            // A removed record may be one added earlier in the same transaction: take the
            // removals out of current + added (an exact multiset difference).
            for rec in removes {
                let hash = rdata_hash(rtype, &rec.rdata);
                let from = items.partition_point(|it| it.hash < hash);
                let found = items
                    .get(from..)
                    .unwrap_or_default()
                    .iter()
                    .take_while(|it| it.hash == hash)
                    .position(|it| {
                        !it.gone && it.ttl == rec.ttl && rdata::same(rtype, it.rdata, &rec.rdata)
                    })
                    .and_then(|k| items.get_mut(from + k))
                    .ok_or(NeedsRebuild("a removed record is not in the snapshot"))?;
                found.gone = true;
            }
            items.retain(|it| !it.gone);
            for pair in items.windows(2) {
                if let [x, y] = pair
                    && x.hash == y.hash
                    && rdata::same(rtype, x.rdata, y.rdata)
                {
                    return Err(NeedsRebuild("duplicate record after the change"));
                }
            }
            delta += items.len() as i64 - before as i64;
            let new_set = match items.first() {
                None => None,
                Some(first) => {
                    let mut data = Vec::new();
                    let mut ttl = u32::MAX;
                    for it in &items {
                        let len = u16::try_from(it.rdata.len())
                            .map_err(|_| NeedsRebuild("RDATA too long"))?;
                        data.extend_from_slice(&len.to_be_bytes());
                        data.extend_from_slice(it.rdata);
                        ttl = ttl.min(it.ttl);
                    }
                    Some(WorkSet {
                        rtype: code,
                        ttl,
                        data: Data::New(data),
                        first_owner: first.owner,
                    })
                }
            };
            match (pos, new_set) {
                (Some(p), Some(s)) => {
                    if let Some(slot) = entry.sets.get_mut(p) {
                        *slot = s;
                    }
                }
                (Some(p), None) => {
                    entry.sets.remove(p);
                }
                (None, Some(s)) => entry.sets.push(s),
                (None, None) => {}
            }
            entry.changed = true;
        }
        // A rebuild from the store lays a node's RRsets out in type order; a node that had
        // no data takes the spelling of its first record (as the builder does).
        for e in self.entries.iter_mut().filter(|e| e.changed) {
            e.sets.sort_by_key(|s| s.rtype);
            if !e.had_data
                && let Some(owner) = e.sets.first().and_then(|s| s.first_owner)
            {
                e.spelling = Spelling::New(owner);
            }
        }
        Ok(delta)
    }

    /// Recomputes the flags that follow from a node's data, and refuses the changes that
    /// move authority (see the module documentation).
    fn check_flags(&mut self) -> Result<(), PatchError> {
        let origin = self.origin();
        for e in self.entries.iter_mut().filter(|e| e.changed) {
            let has = |t: RecordType| e.sets.iter().any(|s| s.rtype == u16::from(t));
            let deleg = e.lower != origin && has(RecordType::NS);
            if deleg != (e.flags & FLAG_DELEG != 0) {
                return Err(NeedsRebuild("zone cut added or removed"));
            }
            if has(RecordType::DNAME) != (e.flags & FLAG_DNAME != 0) {
                return Err(NeedsRebuild("DNAME added or removed"));
            }
            e.flags &= !FLAG_CNAME;
            if has(RecordType::CNAME) {
                e.flags |= FLAG_CNAME;
            }
        }
        Ok(())
    }

    /// Creates the names that gained data, then removes those left without data or
    /// children.
    fn restructure(&mut self) -> Result<(), PatchError> {
        let changed: Vec<usize> = (0..self.entries.len())
            .filter(|&i| self.entries.get(i).is_some_and(|e| e.changed))
            .collect();
        for &i in &changed {
            if self
                .entries
                .get(i)
                .is_some_and(|e| !e.live && !e.sets.is_empty())
            {
                self.create(i)?;
            }
        }
        let origin = self.origin();
        for &i in &changed {
            if self.entries.get(i).is_some_and(|e| {
                e.live && e.sets.is_empty() && e.children == 0 && e.lower != origin
            }) {
                self.remove(i)?;
            }
        }
        Ok(())
    }

    /// Makes entry `i` a live node, with any missing ancestors as empty non-terminals.
    fn create(&mut self, i: usize) -> Result<(), PatchError> {
        let origin = self.origin();
        let mut chain = vec![i];
        let mut child = i;
        loop {
            let lower = self
                .entries
                .get(child)
                .map(|e| e.lower.clone())
                .unwrap_or_default();
            let parent = parent_wire(&lower)
                .filter(|p| p.len() >= origin.len())
                .ok_or(NeedsRebuild("name outside the zone"))?;
            let p = self.entry(parent);
            let pe = self
                .entries
                .get_mut(p)
                .ok_or(NeedsRebuild("lost an entry"))?;
            pe.children = pe
                .children
                .checked_add(1)
                .ok_or(NeedsRebuild("child count"))?;
            // RFC 4592 §2.1.1: a wildcard is a name whose first label is `*`.
            if is_wildcard(&lower) {
                pe.flags |= FLAG_WILDCARD;
            }
            if pe.live {
                break;
            }
            chain.push(p);
            child = p;
        }
        // New empty non-terminals are spelled as the name below them (as the builder does).
        let spelling = match self.entries.get(i).map(|e| e.spelling) {
            Some(Spelling::New(s)) => s,
            _ => &[],
        };
        for &c in chain.iter().rev() {
            let parent_flags = self
                .entries
                .get(c)
                .and_then(|e| parent_wire(&e.lower))
                .and_then(|p| self.map.get(p))
                .and_then(|&p| self.entries.get(p))
                .map_or(0, |p| p.flags);
            let Some(e) = self.entries.get_mut(c) else {
                continue;
            };
            e.live = true;
            e.flags &= !(FLAG_NONAUTH | FLAG_GONE);
            // RFC 1034 §4.2.1: everything below a zone cut is not authoritative.
            if parent_flags & (FLAG_DELEG | FLAG_NONAUTH) != 0 {
                e.flags |= FLAG_NONAUTH;
            }
            if c != i {
                let at = spelling
                    .len()
                    .checked_sub(e.lower.len())
                    .ok_or(NeedsRebuild("spelling of a new name"))?;
                e.spelling = Spelling::New(spelling.get(at..).unwrap_or_default());
            }
        }
        Ok(())
    }

    /// Deletes entry `i` (no data, no children), and every ancestor left as an empty
    /// non-terminal without children.
    fn remove(&mut self, mut i: usize) -> Result<(), PatchError> {
        let origin = self.origin();
        loop {
            let Some(e) = self.entries.get_mut(i) else {
                return Ok(());
            };
            if e.lower == origin {
                return Ok(());
            }
            e.live = false;
            e.sets.clear();
            e.flags = 0;
            let lower = e.lower.clone();
            let parent = parent_wire(&lower).ok_or(NeedsRebuild("name outside the zone"))?;
            let p = self.entry(parent);
            let pe = self
                .entries
                .get_mut(p)
                .ok_or(NeedsRebuild("lost an entry"))?;
            pe.children = pe
                .children
                .checked_sub(1)
                .ok_or(NeedsRebuild("child count"))?;
            if is_wildcard(&lower) {
                pe.flags &= !FLAG_WILDCARD;
            }
            if !(pe.live && pe.sets.is_empty() && pe.children == 0 && pe.lower != origin) {
                return Ok(());
            }
            i = p;
        }
    }

    /// The new extension: the previous one with every entry written in (replacing its
    /// node in place, or appended), and the apex's global index.
    fn write(self) -> Result<(Ext, u32), PatchError> {
        let z = self.zone;
        let (base_nodes, base_names, base_sets, base_rdata) = (
            z.t.nodes.len(),
            z.t.names.len(),
            z.t.sets.len(),
            z.t.rdata.len(),
        );
        let old = z.ext.as_deref();
        let added = self.entries.len();
        let new_bytes: usize = self
            .entries
            .iter()
            .flat_map(|e| &e.sets)
            .map(|s| match &s.data {
                Data::New(v) => v.len(),
                Data::Zone { .. } => 0,
            })
            .sum();
        let mut ext = Ext {
            names: copy(old.map(|e| &e.names), 0),
            nodes: copy(old.map(|e| &e.nodes), added),
            children: copy(old.map(|e| &e.children), added),
            index: old.map_or_else(|| Index::with_capacity(added), |e| e.index.clone_paced()),
            sets: copy(
                old.map(|e| &e.sets),
                self.entries.iter().map(|e| e.sets.len()).sum(),
            ),
            rdata: copy(old.map(|e| &e.rdata), new_bytes),
            redirect: copy(old.map(|e| &e.redirect), added),
            name_count: old.map_or(base_nodes, |e| e.name_count),
        };
        let empty = Node {
            name: 0,
            parent: NONE,
            sets: 0,
            nsets: 0,
            name_len: 0,
            flags: FLAG_GONE,
        };

        // Global index of every entry's node (NONE: a name that never existed and does
        // not exist now).
        let mut index_of = vec![NONE; self.entries.len()];
        let mut new_redirects = false;
        let sorted_redirects = ext.redirect.len();
        for (k, e) in self.entries.iter().enumerate() {
            let g = match e.at {
                At::Ext(p) => global(base_nodes + p)?,
                At::Absent if !e.live => continue,
                At::Base(_) | At::Absent => {
                    let g = global(base_nodes + ext.nodes.len())?;
                    ext.nodes.push(empty);
                    ext.children.push(0);
                    ext.index.insert(hash_name(&e.lower), g);
                    if let At::Base(b) = e.at {
                        ext.redirect.push((b, g));
                        new_redirects = true;
                    }
                    g
                }
            };
            if let Some(slot) = index_of.get_mut(k) {
                *slot = g;
            }
            ext.name_count = (ext.name_count + usize::from(e.live))
                .checked_sub(usize::from(e.was_live))
                .ok_or(NeedsRebuild("name count"))?;
        }
        if new_redirects {
            sort_redirects(&mut ext.redirect, sorted_redirects);
        }

        let origin = self.origin();
        let mut apex = NONE;
        for (k, e) in self.entries.iter().enumerate() {
            let Some(&g) = index_of.get(k).filter(|&&g| g != NONE) else {
                continue;
            };
            let parent = match parent_wire(&e.lower).filter(|_| e.lower != origin) {
                None => NONE,
                Some(p) => match self.map.get(p) {
                    Some(&pk) => index_of.get(pk).copied().unwrap_or(NONE),
                    None => self.index_of(self.locate(p)).unwrap_or(NONE),
                },
            };
            if e.live && parent == NONE && e.lower != origin {
                return Err(NeedsRebuild("a name lost its parent"));
            }
            if e.lower == origin {
                apex = g;
            }
            let (name, name_len) = match e.spelling {
                Spelling::Zone { at, len } => (at, len),
                Spelling::New(s) => {
                    let at = global(base_names + ext.names.len())?;
                    let len = u8::try_from(s.len()).map_err(|_| NeedsRebuild("long name"))?;
                    ext.names.extend_from_slice(s);
                    (at, len)
                }
            };
            let first_set = global(base_sets + ext.sets.len())?;
            if e.live {
                for s in &e.sets {
                    let (data, len) = match &s.data {
                        Data::Zone { at, len } => (*at, *len),
                        Data::New(v) => {
                            let at = global(base_rdata + ext.rdata.len())?;
                            ext.rdata.extend_from_slice(v);
                            (at, global(v.len())?)
                        }
                    };
                    ext.sets.push(RdataSet {
                        rtype: s.rtype,
                        ttl: s.ttl,
                        data,
                        len,
                        related: NONE,
                    });
                }
            }
            let nsets = if e.live {
                u16::try_from(e.sets.len()).map_err(|_| NeedsRebuild("too many RRsets"))?
            } else {
                0
            };
            let p = (g as usize)
                .checked_sub(base_nodes)
                .ok_or(NeedsRebuild("node index"))?;
            if let Some(slot) = ext.nodes.get_mut(p) {
                *slot = Node {
                    name,
                    parent,
                    sets: first_set,
                    nsets,
                    name_len,
                    flags: if e.live { e.flags } else { FLAG_GONE },
                };
            }
            if let Some(slot) = ext.children.get_mut(p) {
                *slot = if e.live { e.children } else { 0 };
            }
        }
        if apex == NONE {
            return Err(NeedsRebuild("change without an SOA update"));
        }
        if ext.nodes.len() > MAX_EXT_NODES || ext.heap_size() > MAX_EXT_BYTES {
            return Err(NeedsRebuild("patch extension full"));
        }
        Ok((ext, apex))
    }
}

#[cfg(test)]
mod tests {
    use super::sort_redirects;

    #[test]
    fn redirects_sorted_by_merging_the_tail() {
        let check = |head: &[u32], tail: &[u32]| {
            let mut v: Vec<(u32, u32)> = head.iter().chain(tail).map(|&b| (b, b + 1)).collect();
            let mut want = v.clone();
            want.sort_unstable_by_key(|&(b, _)| b);
            sort_redirects(&mut v, head.len());
            assert_eq!(v, want, "head {head:?} tail {tail:?}");
        };
        check(&[], &[]);
        check(&[], &[5, 1, 3]);
        check(&[1, 4, 9], &[]);
        check(&[1, 4, 9], &[12, 10]);
        check(&[1, 4, 9], &[0, 5, 20, 3]);
        check(&[2, 3], &[1]);
        let head: Vec<u32> = (0..10_000).map(|i| i * 3).collect();
        let tail: Vec<u32> = (0..1_000).map(|i| (i * 7919) % 30_000 + 1).collect();
        check(&head, &tail);
    }
}
