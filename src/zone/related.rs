//! Additional-section data of NS, MX and SRV RRsets: the A/AAAA RRsets of their targets
//! that the zone holds (RFC 1034 §4.3.2 step 3 / §6.2.3).
//!
//! A zone built from scratch links them once (`build::link_related`); a patched zone looks
//! them up at query time, because any change may add, change or remove a target's
//! addresses, or the wildcard that synthesizes them. Both give the same RRsets in the same
//! order: per target, in RDATA order, required glue first (in-domain targets of an NS
//! RRset at a delegation, RFC 9471 §2.1), then the others; a target named twice counts
//! once; a target without a node of its own is matched against a wildcard (RFC 4592 §3.3.1)
//! and its addresses take the target as owner. Nothing here allocates.

use std::borrow::Cow;
use std::slice;

use hickory_proto::rr::RecordType;

use super::rdata::{self, Rdatas};
use super::{Node, RdataSet, SetRef, WireRRset, Zone, parent_wire};

/// Iterator over the additional-section RRsets of one RRset (see [`Zone::related`]).
#[derive(Clone)]
pub struct RelatedSets<'z> {
    inner: Inner<'z>,
}

#[derive(Clone)]
enum Inner<'z> {
    /// Linked at build time.
    Linked {
        zone: &'z Zone,
        refs: slice::Iter<'z, SetRef>,
    },
    /// Looked up now (patched zones).
    Resolved(Resolve<'z>),
}

impl<'z> RelatedSets<'z> {
    pub(super) fn linked(zone: &'z Zone, refs: &'z [SetRef]) -> Self {
        RelatedSets {
            inner: Inner::Linked {
                zone,
                refs: refs.iter(),
            },
        }
    }
}

impl<'z> Iterator for RelatedSets<'z> {
    type Item = WireRRset<'z>;

    #[inline]
    fn next(&mut self) -> Option<WireRRset<'z>> {
        match &mut self.inner {
            Inner::Linked { zone, refs } => refs.find_map(|r| zone.resolve(*r)),
            Inner::Resolved(r) => r.next(),
        }
    }
}

/// The related RRsets of `set` (an RRset of `node`) looked up in `zone`, and how many
/// leading ones are required glue.
pub(super) fn resolve<'z>(
    zone: &'z Zone,
    node: &'z Node,
    set: &'z RdataSet,
) -> (RelatedSets<'z>, usize) {
    let rtype = set.rtype();
    let data = if matches!(rtype, RecordType::NS | RecordType::MX | RecordType::SRV) {
        zone.data(set)
    } else {
        &[]
    };
    let cut = (rtype == RecordType::NS && node.is_delegation()).then(|| zone.owner(node));
    let it = Resolve {
        zone,
        rtype,
        data,
        cut,
        pass: if cut.is_some() {
            Pass::Required
        } else {
            Pass::Optional
        },
        only_required: false,
        pos: 0,
        owner: &[],
        sets: [].iter(),
    };
    let required = if cut.is_some() {
        let mut count = it.clone();
        count.only_required = true;
        count.count()
    } else {
        0
    };
    (
        RelatedSets {
            inner: Inner::Resolved(it),
        },
        required,
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Required,
    Optional,
}

/// Walks the RRset's RDATA once per pass and yields the address RRsets of each target.
#[derive(Clone)]
struct Resolve<'z> {
    zone: &'z Zone,
    rtype: RecordType,
    /// The RRset's length-prefixed RDATAs.
    data: &'z [u8],
    /// Owner of an NS RRset at a delegation (case kept): targets at or below it are
    /// required glue.
    cut: Option<&'z [u8]>,
    pass: Pass,
    /// Stop after the required pass (to count the required RRsets).
    only_required: bool,
    /// Offset in `data` of the next record.
    pos: usize,
    /// The current target's owner for its address RRsets, and the RRsets left to look at.
    owner: &'z [u8],
    sets: slice::Iter<'z, RdataSet>,
}

impl<'z> Iterator for Resolve<'z> {
    type Item = WireRRset<'z>;

    fn next(&mut self) -> Option<WireRRset<'z>> {
        loop {
            for set in self.sets.by_ref() {
                if matches!(set.rtype(), RecordType::A | RecordType::AAAA) {
                    return Some(WireRRset {
                        owner: Cow::Borrowed(self.owner),
                        rtype: set.rtype(),
                        ttl: set.ttl(),
                        rdata: Cow::Borrowed(self.zone.data(set)),
                    });
                }
            }
            let at = self.pos;
            let record = self
                .data
                .get(at..)
                .and_then(|rest| Rdatas::new(rest).next());
            let Some(rd) = record else {
                if self.pass == Pass::Required && !self.only_required {
                    self.pass = Pass::Optional;
                    self.pos = 0;
                    continue;
                }
                return None;
            };
            self.pos = at + 2 + rd.len();
            self.target(at, rd);
        }
    }
}

impl<'z> Resolve<'z> {
    /// Sets up the address RRsets of the record `rd` (at offset `at` of the data) when its
    /// target belongs to the current pass.
    fn target(&mut self, at: usize, rd: &'z [u8]) {
        let zone = self.zone;
        let Some((_, target)) = rdata::related_target(self.rtype, rd) else {
            return;
        };
        // Cheapest checks first: the pass, the zone, an earlier record with this target
        // (handled there); names compare without regard to case (RFC 4343).
        let required = self
            .cut
            .is_some_and(|cut| below_or_eq_ignore_case(target, cut));
        if required != (self.pass == Pass::Required)
            || !below_or_eq_ignore_case(target, zone.origin_wire())
        {
            return;
        }
        let earlier = self.data.get(..at).unwrap_or_default();
        if Rdatas::new(earlier).any(|e| {
            rdata::related_target(self.rtype, e)
                .is_some_and(|(_, o)| o.eq_ignore_ascii_case(target))
        }) {
            return;
        }
        let mut buf = [0u8; 255];
        let Some(t) = buf.get_mut(..target.len()) else {
            return;
        };
        for (d, c) in t.iter_mut().zip(target) {
            *d = c.to_ascii_lowercase();
        }
        let t: &[u8] = t;
        if let Some((_, node)) = zone.lookup(t) {
            self.owner = zone.owner(node);
            self.sets = zone.sets(node).iter();
            return;
        }
        // RFC 4592 §3.3.1: closest encloser, then its `*` child.
        let mut cur = t;
        let (encloser, enc_name) = loop {
            let Some(parent) = parent_wire(cur) else {
                return;
            };
            if let Some((_, n)) = zone.lookup(parent) {
                break (n, parent);
            }
            cur = parent;
        };
        if let Some((_, wild)) = zone.wildcard_child(encloser, enc_name) {
            self.owner = target;
            self.sets = zone.sets(wild).iter();
        }
    }
}

/// Whether the wire name `name` is `ancestor` or below it, ignoring ASCII case.
fn below_or_eq_ignore_case(name: &[u8], ancestor: &[u8]) -> bool {
    let mut cur = name;
    while cur.len() > ancestor.len() {
        match parent_wire(cur) {
            Some(p) => cur = p,
            None => return false,
        }
    }
    cur.eq_ignore_ascii_case(ancestor)
}
