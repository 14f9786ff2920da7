//! Incremental zone building: the zone-file loader (or [`Zone::build`]) adds records one
//! at a time in wire form; [`ZoneBuilder::finish`] lays out the RRsets and precomputes
//! what answering needs. Memory grows with the data only: a few flat vectors, no
//! allocation per name or record.

use std::sync::Arc;

use hickory_proto::rr::{LowerName, Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use super::rdata::{self, Rdatas};
use super::{
    BuildError, FLAG_CNAME, FLAG_DELEG, FLAG_DNAME, FLAG_NONAUTH, FLAG_WILDCARD, Index, NONE, Node,
    RdataSet, Related, SYNTH_OWNER, SetRef, Tables, Zone, hash_name, name_from_wire, parent_wire,
    wire_is_below_or_eq,
};

/// Appends `data` in uncompressed wire form, names with their case (what the encoder
/// copies or re-compresses).
pub(super) fn emit_rdata(data: &RData, out: &mut Vec<u8>) -> Result<(), ()> {
    // The encoder writes at its offset (it does not append): start at the end.
    let at = u32::try_from(out.len()).map_err(|_| ())?;
    let mut enc = BinEncoder::with_offset(out, at);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    data.emit(&mut enc).map_err(|_| ())
}

/// An RRset while building: its records form a list through `BuildRec::next`.
#[derive(Clone, Copy)]
struct BuildSet {
    next: u32,
    first: u32,
    last: u32,
    ttl: u32,
    rtype: u16,
}

/// One record while building: the offset of its length-prefixed RDATA in `rdata`.
#[derive(Clone, Copy)]
struct BuildRec {
    at: u32,
    next: u32,
}

/// What [`ZoneBuilder::add`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// The node of the record's owner.
    pub node: u32,
    /// The RRset already held the same record (RFC 2181 §5: an RRset is a set); dropped.
    pub duplicate: bool,
}

/// Builds a [`Zone`] from records added one by one.
pub struct ZoneBuilder {
    origin: Name,
    origin_wire: Vec<u8>,
    names: Vec<u8>,
    /// While building, `Node::sets` is the first `BuildSet` of the node (or `NONE`).
    nodes: Vec<Node>,
    index: Index,
    sets: Vec<BuildSet>,
    recs: Vec<BuildRec>,
    rdata: Vec<u8>,
    record_count: usize,
}

fn checked_u32(n: usize, origin: &Name) -> Result<u32, BuildError> {
    u32::try_from(n)
        .ok()
        .filter(|&i| i < SYNTH_OWNER)
        .ok_or_else(|| BuildError::TooLarge(origin.clone()))
}

fn show(wire: &[u8]) -> String {
    name_from_wire(wire).map_or_else(|| format!("{wire:?}"), |n| n.to_string())
}

impl ZoneBuilder {
    /// A builder for zone `origin`, sized for about `records` records.
    pub fn new(origin: &Name, records: usize) -> Result<ZoneBuilder, BuildError> {
        let mut origin = origin.clone();
        origin.set_fqdn(true);
        let origin_case = super::case_wire(&origin);
        let origin_wire =
            super::lower_wire(&origin).ok_or_else(|| BuildError::BadName(origin.to_string()))?;
        let name_len =
            u8::try_from(origin_case.len()).map_err(|_| BuildError::BadName(origin.to_string()))?;
        let mut index = Index::with_capacity(records + 1);
        index.insert(hash_name(&origin_wire), 0);
        let mut nodes = Vec::with_capacity(records + 1);
        nodes.push(Node {
            name: 0,
            parent: NONE,
            sets: NONE,
            nsets: 0,
            name_len,
            flags: 0,
        });
        Ok(ZoneBuilder {
            origin,
            origin_wire,
            names: origin_case,
            nodes,
            index,
            sets: Vec::with_capacity(records),
            recs: Vec::with_capacity(records),
            rdata: Vec::new(),
            record_count: 0,
        })
    }

    /// The zone origin (fully qualified).
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    fn find(&self, lower: &[u8], hash: u32) -> Option<u32> {
        self.index.probe(hash, |i| {
            self.nodes.get(i as usize).is_some_and(|n| {
                let start = n.name as usize;
                self.names
                    .get(start..start + usize::from(n.name_len))
                    .is_some_and(|name| name.eq_ignore_ascii_case(lower))
            })
        })
    }

    /// Adds one record: `owner` is an uncompressed wire name (case kept), `rdata` the
    /// uncompressed RDATA (names with their case). Records with the same owner and type form
    /// one RRset whose TTL is the smallest of theirs (RFC 2181 §5.2).
    pub fn add(
        &mut self,
        owner: &[u8],
        rtype: RecordType,
        ttl: u32,
        data: &[u8],
    ) -> Result<Added, BuildError> {
        let mut lower = [0u8; 255];
        let len = rdata::name_len(owner)
            .filter(|&l| l == owner.len())
            .ok_or_else(|| BuildError::BadName(show(owner)))?;
        let lower = lower
            .get_mut(..len)
            .ok_or_else(|| BuildError::BadName(show(owner)))?;
        for (d, s) in lower.iter_mut().zip(owner) {
            *d = s.to_ascii_lowercase();
        }
        let lower: &[u8] = lower;
        if !wire_is_below_or_eq(lower, &self.origin_wire) {
            return Err(BuildError::OutOfZone {
                name: show(owner),
                origin: self.origin.clone(),
            });
        }
        let data_len = u16::try_from(data.len()).map_err(|_| BuildError::RdataTooLong(rtype))?;
        let node = self.ensure_node(owner, lower)?;
        let code = u16::from(rtype);

        // The node's RRset of this type, and the last RRset (to append a new one).
        let head = self.nodes.get(node as usize).map_or(NONE, |n| n.sets);
        let mut found = NONE;
        let mut last = NONE;
        let mut cur = head;
        while let Some(set) = self.sets.get(cur as usize) {
            if set.rtype == code {
                found = cur;
                break;
            }
            last = cur;
            cur = set.next;
        }
        if let Some(set) = self.sets.get(found as usize) {
            let mut r = set.first;
            while let Some(rec) = self.recs.get(r as usize) {
                if let Some(existing) = self.rec_data(rec.at)
                    && rdata::same(rtype, existing, data)
                {
                    return Ok(Added {
                        node,
                        duplicate: true,
                    });
                }
                r = rec.next;
            }
        }

        let at = checked_u32(self.rdata.len(), &self.origin)?;
        checked_u32(self.rdata.len() + 2 + data.len(), &self.origin)?;
        let rec = checked_u32(self.recs.len(), &self.origin)?;
        self.rdata.extend_from_slice(&data_len.to_be_bytes());
        self.rdata.extend_from_slice(data);
        self.recs.push(BuildRec { at, next: NONE });

        if let Some(set) = self.sets.get_mut(found as usize) {
            if let Some(prev) = self.recs.get_mut(set.last as usize) {
                prev.next = rec;
            }
            set.last = rec;
            set.ttl = set.ttl.min(ttl);
        } else {
            let new = checked_u32(self.sets.len(), &self.origin)?;
            self.sets.push(BuildSet {
                next: NONE,
                first: rec,
                last: rec,
                ttl,
                rtype: code,
            });
            match self.sets.get_mut(last as usize) {
                Some(prev) => prev.next = new,
                None => {
                    // First RRset of the node: the node takes this record's spelling (an
                    // empty non-terminal got its name from a descendant's).
                    let same_spelling = self.owner_of(node) == owner;
                    let name_at = if same_spelling {
                        None
                    } else {
                        let at = checked_u32(self.names.len(), &self.origin)?;
                        self.names.extend_from_slice(owner);
                        Some(at)
                    };
                    if let Some(n) = self.nodes.get_mut(node as usize) {
                        n.sets = new;
                        if let Some(at) = name_at {
                            n.name = at;
                        }
                    }
                }
            }
            if let Some(n) = self.nodes.get_mut(node as usize) {
                n.nsets = n
                    .nsets
                    .checked_add(1)
                    .ok_or_else(|| BuildError::TooLarge(self.origin.clone()))?;
            }
        }
        self.record_count += 1;
        Ok(Added {
            node,
            duplicate: false,
        })
    }

    fn rec_data(&self, at: u32) -> Option<&[u8]> {
        let at = at as usize;
        let len = self.rdata.get(at..at + 2)?;
        let len = usize::from(u16::from_be_bytes([*len.first()?, *len.get(1)?]));
        self.rdata.get(at + 2..at + 2 + len)
    }

    fn owner_of(&self, node: u32) -> &[u8] {
        self.nodes
            .get(node as usize)
            .and_then(|n| {
                let start = n.name as usize;
                self.names.get(start..start + usize::from(n.name_len))
            })
            .unwrap_or_default()
    }

    /// The node for `owner` (lowercase `lower`), created with any missing ancestors down
    /// from the closest existing one. Ancestors are created before descendants, so a
    /// parent's index is always smaller; an ancestor's name is a suffix of the stored
    /// owner name, so empty non-terminals cost no name bytes.
    fn ensure_node(&mut self, owner: &[u8], lower: &[u8]) -> Result<u32, BuildError> {
        let hash = hash_name(lower);
        if let Some(i) = self.find(lower, hash) {
            return Ok(i);
        }
        // Offsets (into `lower`) of the missing names, deepest first, and their hashes.
        let mut missing: [(u8, u32); 128] = [(0, 0); 128];
        let mut count = 0usize;
        let mut offset = 0usize;
        let mut cur_hash = hash;
        let parent = loop {
            let slot = missing
                .get_mut(count)
                .ok_or_else(|| BuildError::BadName(show(owner)))?;
            *slot = (offset as u8, cur_hash); // offset < 255: names are at most 255 octets
            count += 1;
            let cur = lower.get(offset..).unwrap_or_default();
            let parent = parent_wire(cur).ok_or_else(|| BuildError::BadName(show(owner)))?;
            offset = lower.len() - parent.len();
            cur_hash = hash_name(parent);
            if let Some(i) = self.find(parent, cur_hash) {
                break i;
            }
            if parent.len() <= self.origin_wire.len() {
                return Err(BuildError::BadName(show(owner)));
            }
        };
        let base = checked_u32(self.names.len(), &self.origin)?;
        self.names.extend_from_slice(owner);
        let mut parent = parent;
        for &(offset, hash) in missing.get(..count).unwrap_or_default().iter().rev() {
            let idx = checked_u32(self.nodes.len(), &self.origin)?;
            let name_len = (owner.len() - usize::from(offset)) as u8; // <= 255
            self.nodes.push(Node {
                name: base + u32::from(offset),
                parent,
                sets: NONE,
                nsets: 0,
                name_len,
                flags: 0,
            });
            self.index.insert(hash, idx);
            // RFC 4592 §2.1.1: a wildcard is a name whose first label is `*`.
            if lower.get(usize::from(offset)..usize::from(offset) + 2) == Some(&b"\x01*"[..])
                && let Some(p) = self.nodes.get_mut(parent as usize)
            {
                p.flags |= FLAG_WILDCARD;
            }
            parent = idx;
        }
        Ok(parent)
    }

    /// Number of nodes so far (owners and empty non-terminals).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Parent of node `idx` (`None` for the apex, index 0).
    pub fn node_parent(&self, idx: u32) -> Option<u32> {
        self.nodes
            .get(idx as usize)
            .and_then(|n| (n.parent != NONE).then_some(n.parent))
    }

    /// Owner name of node `idx` (for messages).
    pub fn node_name(&self, idx: u32) -> Name {
        name_from_wire(self.owner_of(idx)).unwrap_or_else(Name::root)
    }

    /// Lays out the RRsets node by node and precomputes zone cuts, flags and the
    /// additional-section data of NS/MX/SRV RRsets.
    pub fn finish(self) -> Result<Zone, BuildError> {
        let ZoneBuilder {
            origin,
            origin_wire,
            names,
            mut nodes,
            index,
            sets: build_sets,
            recs,
            mut rdata,
            record_count,
        } = self;
        let mut sets: Vec<RdataSet> = Vec::with_capacity(build_sets.len());
        for i in 0..nodes.len() {
            crate::pace::tick();
            let parent_flags = nodes
                .get(i)
                .and_then(|n| nodes.get(n.parent as usize))
                .map_or(0, |p| p.flags);
            let Some(node) = nodes.get_mut(i) else {
                continue;
            };
            let start = checked_u32(sets.len(), &origin)?;
            let mut flags = node.flags;
            let mut cur = node.sets;
            while let Some(set) = build_sets.get(cur as usize) {
                let (data, len) = layout_records(&recs, set, &mut rdata, &origin)?;
                sets.push(RdataSet {
                    rtype: set.rtype,
                    ttl: set.ttl,
                    data,
                    len,
                    related: NONE,
                });
                match RecordType::from(set.rtype) {
                    RecordType::NS if i != 0 => flags |= FLAG_DELEG,
                    RecordType::CNAME => flags |= FLAG_CNAME,
                    RecordType::DNAME => flags |= FLAG_DNAME,
                    _ => {}
                }
                cur = set.next;
            }
            // RFC 1034 §4.2.1: everything below a zone cut is not authoritative. Parents
            // precede children, so the parent's flags are final here.
            if parent_flags & (FLAG_DELEG | FLAG_NONAUTH) != 0 {
                flags |= FLAG_NONAUTH;
            }
            node.flags = flags;
            node.sets = start;
        }
        drop(build_sets);
        drop(recs);
        let mut children = vec![0u32; nodes.len()];
        for n in &nodes {
            if let Some(c) = children.get_mut(n.parent as usize) {
                *c += 1;
            }
        }

        let apex = nodes.first().copied();
        let soa = apex
            .and_then(|n| {
                let start = n.sets as usize;
                sets.get(start..start + usize::from(n.nsets))
            })
            .and_then(|s| s.iter().find(|s| s.rtype == u16::from(RecordType::SOA)))
            .copied()
            .ok_or_else(|| BuildError::NoSoa(origin.clone()))?;
        let (serial, minimum) = rdata
            .get(soa.data as usize..(soa.data + soa.len) as usize)
            .and_then(|d| Rdatas::new(d).next())
            .and_then(rdata::soa_serial_minimum)
            .ok_or_else(|| BuildError::NoSoa(origin.clone()))?;
        // RFC 2308 §3: the negative TTL is min(SOA TTL, SOA MINIMUM).
        let negative_soa = RdataSet {
            ttl: soa.ttl.min(minimum),
            ..soa
        };

        let mut zone = Zone {
            origin_lower: LowerName::new(&origin),
            origin,
            origin_wire: origin_wire.into_boxed_slice(),
            serial,
            t: Arc::new(Tables {
                names: names.into_boxed_slice(),
                nodes: nodes.into_boxed_slice(),
                index,
                sets: sets.into_boxed_slice(),
                rdata: rdata.into_boxed_slice(),
                related: Box::default(),
                refs: Box::default(),
                children: children.into_boxed_slice(),
            }),
            ext: None,
            negative_soa,
            record_count,
        };
        link_related(&mut zone);
        Ok(zone)
    }
}

/// Span of the set's records in `rdata`: where they already are when they were added
/// back to back (the usual case), else a fresh contiguous copy at the end.
fn layout_records(
    recs: &[BuildRec],
    set: &BuildSet,
    rdata: &mut Vec<u8>,
    origin: &Name,
) -> Result<(u32, u32), BuildError> {
    let rec_len = |rdata: &[u8], at: u32| -> usize {
        rdata
            .get(at as usize..at as usize + 2)
            .and_then(|b| b.first_chunk::<2>())
            .map_or(0, |b| 2 + usize::from(u16::from_be_bytes(*b)))
    };
    let first = recs.get(set.first as usize).map_or(0, |r| r.at);
    let mut end = first as usize;
    let mut contiguous = true;
    let mut r = set.first;
    while let Some(rec) = recs.get(r as usize) {
        if rec.at as usize != end {
            contiguous = false;
        }
        end = rec.at as usize + rec_len(rdata, rec.at);
        r = rec.next;
    }
    if contiguous {
        return Ok((first, checked_u32(end - first as usize, origin)?));
    }
    let start = rdata.len();
    let mut r = set.first;
    while let Some(rec) = recs.get(r as usize) {
        let at = rec.at as usize;
        let len = rec_len(rdata, rec.at);
        rdata.extend_from_within(at..at + len);
        r = rec.next;
    }
    checked_u32(rdata.len(), origin)?;
    Ok((
        checked_u32(start, origin)?,
        checked_u32(rdata.len() - start, origin)?,
    ))
}

/// Computes, for every NS/MX/SRV RRset, the A/AAAA RRsets of its targets that the zone
/// holds (RFC 1034 §4.3.2 step 3 / §6.2.3). Like Knot, a target without a node of its own
/// is matched against a wildcard, and occluded glue counts (it is in the zone data). At a
/// delegation, in-domain glue (target at or below the cut) is required (RFC 9471 §2.1)
/// and goes first.
fn link_related(zone: &mut Zone) {
    let mut related: Vec<Related> = Vec::new();
    let mut refs: Vec<SetRef> = Vec::new();
    let mut links: Vec<(usize, u32)> = Vec::new();
    let mut required: Vec<SetRef> = Vec::new();
    let mut optional: Vec<SetRef> = Vec::new();
    // Lowercase targets already handled for the current RRset, back to back.
    let mut seen: Vec<u8> = Vec::new();
    let mut seen_spans: Vec<(usize, usize)> = Vec::new();
    let mut cut_lower = [0u8; 255];
    let z: &Zone = zone;
    for node in z.t.nodes.iter() {
        crate::pace::tick();
        let first = node.sets as usize;
        for (s, set) in z.sets(node).iter().enumerate() {
            let rtype = set.rtype();
            if !matches!(rtype, RecordType::NS | RecordType::MX | RecordType::SRV) {
                continue;
            }
            let at_cut = rtype == RecordType::NS && node.is_delegation();
            let owner = z.owner(node);
            let cut = cut_lower.get_mut(..owner.len()).unwrap_or_default();
            for (d, c) in cut.iter_mut().zip(owner) {
                *d = c.to_ascii_lowercase();
            }
            let cut: &[u8] = cut;
            required.clear();
            optional.clear();
            seen.clear();
            seen_spans.clear();
            // Offset in the zone's rdata of the current record's RDATA.
            let mut pos = set.data as usize;
            for rd in Rdatas::new(z.data(set)) {
                let rd_at = pos + 2;
                pos = rd_at + rd.len();
                let Some((skip, target)) = rdata::related_target(rtype, rd) else {
                    continue;
                };
                let mut tw = [0u8; 255];
                let Some(t) = tw.get_mut(..target.len()) else {
                    continue;
                };
                for (d, c) in t.iter_mut().zip(target) {
                    *d = c.to_ascii_lowercase();
                }
                let t: &[u8] = t;
                let dup = seen_spans.iter().any(|&(a, b)| seen.get(a..b) == Some(t));
                if dup || !wire_is_below_or_eq(t, z.origin_wire()) {
                    continue;
                }
                let is_required = at_cut && wire_is_below_or_eq(t, cut);
                let out = if is_required {
                    &mut required
                } else {
                    &mut optional
                };
                address_refs(z, t, rd_at + skip, out);
                seen_spans.push((seen.len(), seen.len() + t.len()));
                seen.extend_from_slice(t);
            }
            if required.is_empty() && optional.is_empty() {
                continue;
            }
            let (Ok(start), Ok(len), Ok(req), Ok(rel)) = (
                u32::try_from(refs.len()),
                u16::try_from(required.len() + optional.len()),
                u16::try_from(required.len()),
                u32::try_from(related.len()),
            ) else {
                continue;
            };
            refs.extend_from_slice(&required);
            refs.extend_from_slice(&optional);
            related.push(Related {
                refs: start,
                len,
                required: req,
            });
            links.push((first + s, rel));
        }
    }
    // The tables were just built: nothing else holds them yet.
    let Some(t) = Arc::get_mut(&mut zone.t) else {
        return;
    };
    for (set, rel) in links {
        if let Some(s) = t.sets.get_mut(set) {
            s.related = rel;
        }
    }
    t.related = related.into_boxed_slice();
    t.refs = refs.into_boxed_slice();
}

/// Pushes refs to the A and AAAA RRsets for the target `tw` (lowercase; its zone-cased
/// form is at offset `target_at` of the zone's rdata).
fn address_refs(z: &Zone, tw: &[u8], target_at: usize, out: &mut Vec<SetRef>) {
    let address = |s: &RdataSet| matches!(s.rtype(), RecordType::A | RecordType::AAAA);
    let global = |node: &Node, i: usize| u32::try_from(node.sets as usize + i).ok();
    if let Some((idx, node)) = z.lookup(tw) {
        for (i, set) in z.sets(node).iter().enumerate() {
            if address(set)
                && let Some(set) = global(node, i)
            {
                out.push(SetRef { set, owner: idx });
            }
        }
        return;
    }
    // RFC 4592 §3.3.1: closest encloser, then its `*` child.
    let mut cur = tw;
    let (encloser, enc_name) = loop {
        let Some(parent) = parent_wire(cur) else {
            return;
        };
        if let Some((_, n)) = z.lookup(parent) {
            break (n, parent);
        }
        cur = parent;
    };
    let Some((_, wild)) = z.wildcard_child(encloser, enc_name) else {
        return;
    };
    let Ok(owner) = u32::try_from(target_at) else {
        return;
    };
    if owner >= SYNTH_OWNER {
        return;
    }
    for (i, set) in z.sets(wild).iter().enumerate() {
        if address(set)
            && let Some(set) = global(wild, i)
        {
            out.push(SetRef {
                set,
                owner: owner | SYNTH_OWNER,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::{case_wire, lower_wire};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn w(s: &str) -> Vec<u8> {
        case_wire(&name(s))
    }

    fn soa() -> Vec<u8> {
        [
            w("ns.example."),
            w("h.example."),
            vec![0, 0, 0, 1],
            vec![0; 12],
            vec![0, 0, 0, 60],
        ]
        .concat()
    }

    fn builder() -> ZoneBuilder {
        let mut b = ZoneBuilder::new(&name("example."), 4).unwrap();
        b.add(&w("example."), RecordType::SOA, 300, &soa()).unwrap();
        b
    }

    fn rdatas(z: &Zone, owner: &str, t: RecordType) -> Vec<Vec<u8>> {
        let (_, n) = z.lookup(&lower_wire(&name(owner)).unwrap()).unwrap();
        Rdatas::new(z.data(z.set(n, t).unwrap()))
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn interleaved_records_form_contiguous_rrsets() {
        let mut b = builder();
        let a = |b: &mut ZoneBuilder, owner: &str, ttl: u32, x: u8| {
            b.add(&w(owner), RecordType::A, ttl, &[192, 0, 2, x])
                .unwrap()
        };
        a(&mut b, "a.example.", 60, 1);
        a(&mut b, "b.example.", 60, 2);
        a(&mut b, "a.example.", 30, 3);
        b.add(&w("a.example."), RecordType::TXT, 60, b"\x01x")
            .unwrap();
        assert!(a(&mut b, "A.Example.", 10, 1).duplicate);
        let z = b.finish().unwrap();
        assert_eq!(z.record_count(), 5);
        assert_eq!(
            rdatas(&z, "a.example.", RecordType::A),
            [vec![192, 0, 2, 1], vec![192, 0, 2, 3]]
        );
        // RFC 2181 §5.2: one TTL per RRset, the smallest given (duplicates add nothing).
        let (_, n) = z.lookup(&lower_wire(&name("a.example.")).unwrap()).unwrap();
        assert_eq!(z.set(n, RecordType::A).unwrap().ttl(), 30);
        assert_eq!(z.sets(n).len(), 2);
        assert_eq!(
            rdatas(&z, "b.example.", RecordType::A),
            [vec![192, 0, 2, 2]]
        );
        // RFC 2308 §3: negative TTL = min(SOA TTL, MINIMUM).
        assert_eq!(z.negative_soa().ttl, 60);
        assert_eq!(z.serial(), 1);
    }

    #[test]
    fn duplicates_compare_names_without_case() {
        let mut b = builder();
        let mx = |n: &str| [vec![0, 10], w(n)].concat();
        let first = b.add(&w("example."), RecordType::MX, 60, &mx("Mail.example."));
        let again = b.add(&w("example."), RecordType::MX, 60, &mx("mail.EXAMPLE."));
        assert!(!first.unwrap().duplicate);
        assert!(again.unwrap().duplicate);
        // Opaque data keeps its case.
        b.add(&w("t.example."), RecordType::TXT, 60, b"\x01A")
            .unwrap();
        let t = b
            .add(&w("t.example."), RecordType::TXT, 60, b"\x01a")
            .unwrap();
        assert!(!t.duplicate);
    }

    #[test]
    fn tree_flags_and_spelling() {
        let mut b = builder();
        b.add(&w("x.Sub.example."), RecordType::A, 60, &[192, 0, 2, 1])
            .unwrap();
        // The empty non-terminal takes the spelling of its own first record.
        b.add(&w("sub.example."), RecordType::TXT, 60, b"\x01s")
            .unwrap();
        b.add(&w("*.w.example."), RecordType::A, 60, &[192, 0, 2, 2])
            .unwrap();
        b.add(&w("d.example."), RecordType::NS, 60, &w("ns.d.example."))
            .unwrap();
        b.add(&w("ns.d.example."), RecordType::A, 60, &[192, 0, 2, 3])
            .unwrap();
        b.add(&w("deep.ns.d.example."), RecordType::A, 60, &[192, 0, 2, 4])
            .unwrap();
        let z = b.finish().unwrap();
        let find = |s: &str| z.lookup(&lower_wire(&name(s)).unwrap()).unwrap();
        assert_eq!(z.owner(find("SUB.example.").1), &w("sub.example.")[..]);
        assert_eq!(z.owner(find("x.sub.example.").1), &w("x.Sub.example.")[..]);
        let (wi, wn) = find("w.example.");
        assert!(wn.is_empty_non_terminal() && wn.has_wildcard());
        let (star, _) = z
            .wildcard_child(wn, &lower_wire(&name("w.example.")).unwrap())
            .unwrap();
        assert_eq!(z.node_at(star).unwrap().parent(), Some(wi));
        let (d, dn) = find("d.example.");
        assert!(dn.is_delegation() && !dn.is_nonauth());
        assert_eq!(z.cut(d, dn), Some(d));
        let (deep, deep_node) = find("deep.ns.d.example.");
        assert!(deep_node.is_nonauth());
        assert_eq!(z.cut(deep, deep_node), Some(d));
        let (apex, apex_node) = find("example.");
        assert_eq!(z.cut(apex, apex_node), None);
        // The delegation's NS RRset links its in-domain glue as required.
        let ns = z.set(dn, RecordType::NS).unwrap();
        let (glue, required) = z.related(dn, ns);
        assert_eq!(required, 1);
        assert_eq!(glue.count(), 1);
        assert_eq!(z.name_count(), 8);
    }

    #[test]
    fn refuses_what_cannot_be_served() {
        let mut b = builder();
        assert!(matches!(
            b.add(&w("example.org."), RecordType::A, 60, &[0; 4]),
            Err(BuildError::OutOfZone { .. })
        ));
        assert!(matches!(
            b.add(b"\x03www", RecordType::A, 60, &[0; 4]),
            Err(BuildError::BadName(_))
        ));
        assert!(matches!(
            b.add(&w("x.example."), RecordType::TXT, 60, &vec![0; 70000]),
            Err(BuildError::RdataTooLong(_))
        ));
        let empty = ZoneBuilder::new(&name("example."), 0).unwrap();
        assert!(matches!(empty.finish(), Err(BuildError::NoSoa(_))));
    }
}
