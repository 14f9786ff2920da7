//! Authoritative answers: a plain function of (request, zone snapshot).
//!
//! No sockets, no clocks, no locks: tests call [`answer`] directly. The result borrows
//! RRsets (wire-form owner and RDATA) from the snapshot where it can and owns only what it
//! synthesizes (wildcard owner substitution, DNAME-synthesized CNAMEs).
//!
//! The lookup is RFC 1034 §4.3.2 as Knot DNS implements it: the exact name first (one hash
//! lookup; occlusion below zone cuts is precomputed per node), and only when the name does
//! not exist a walk up to the closest encloser for referrals, wildcards (RFC 4592) and
//! DNAME (RFC 6672). CNAME/DNAME chains are followed inside the zone that answers.

use std::borrow::Cow;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};

use crate::wire::request::Request;
use crate::zone::rdata::{Labels, Rdatas, name_len};
use crate::zone::{
    Node, RRset, RdataSet, WireName, WireRRset, Zone, ZoneSet, case_wire, wire_is_below_or_eq,
};

/// An answer built from hickory records (the cache, error responses); the encoder takes it
/// as well as a [`ZoneAnswer`].
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<'z> {
    pub rcode: ResponseCode,
    /// AA flag: set when the answer comes from authoritative data (not on referrals).
    pub authoritative: bool,
    pub answers: Vec<Cow<'z, RRset>>,
    pub authorities: Vec<Cow<'z, RRset>>,
    pub additionals: Vec<Cow<'z, RRset>>,
    /// How many leading `additionals` are required glue (RFC 9471): when they do not fit,
    /// the response must be truncated (TC=1) rather than silently shortened.
    pub required_additionals: usize,
}

impl Answer<'_> {
    /// An empty, non-authoritative answer carrying only `rcode` (error responses).
    pub fn rcode_only(rcode: ResponseCode) -> Self {
        Answer {
            rcode,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            required_additionals: 0,
        }
    }
}

/// What the answer logic decided from zone data; `wire::response` turns it into bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneAnswer<'z> {
    pub rcode: ResponseCode,
    /// AA flag: set when the answer comes from authoritative data (not on referrals).
    pub authoritative: bool,
    pub answers: Vec<WireRRset<'z>>,
    pub authorities: Vec<WireRRset<'z>>,
    pub additionals: Vec<WireRRset<'z>>,
    /// How many leading `additionals` are required glue (RFC 9471): when they do not fit,
    /// the response must be truncated (TC=1) rather than silently shortened.
    pub required_additionals: usize,
}

/// CNAME/DNAME links followed per query, as Knot's `CNAME_CHAIN_MAX`; the answer stops
/// (NOERROR, chain so far) when one more link would be needed.
const CHAIN_MAX: usize = 5;

/// Answers `req` from `zones`, or returns `None` when no served zone contains the name
/// (the caller answers REFUSED, or hands the query to the cache when recursion is allowed).
pub fn answer<'z>(req: &Request, zones: &'z ZoneSet) -> Option<ZoneAnswer<'z>> {
    let qname = req.query.name();
    let qtype = req.query.query_type();
    let mut wire = WireName::empty();
    if !wire.set_name(qname) {
        return None;
    }
    let (mut zone, below) = zones.find_wire(&wire, 0)?;
    // RFC 4035 §3.1.4.1: DS lives on the parent side of a cut, so a DS query for a zone
    // apex goes to the parent zone when we serve it too.
    if qtype == RecordType::DS
        && below == 0
        && wire.label_count() > 0
        && let Some((parent, _)) = zones.find_wire(&wire, 1)
    {
        zone = parent;
    }
    Some(Resolver::new(zone, qtype, qname).run(&wire))
}

/// Whether `name` is the wire name `wire`, ignoring ASCII case.
fn same_name(name: &Name, wire: &[u8]) -> bool {
    let mut a = name.iter();
    let mut b = Labels::new(wire);
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => {}
            _ => return false,
        }
    }
}

/// How the lookup of the current chain name ended.
enum End {
    /// Data (or a chain that leaves the zone / hits the chain limit): NOERROR.
    Hit,
    NoData,
    NxDomain,
    /// Referral from the delegation point with this node index.
    Referral(u32),
    /// DNAME substitution overflowed (RFC 6672 §2.2).
    YxDomain,
}

/// A name on the CNAME/DNAME chain, case preserved.
#[derive(Clone)]
enum Chain<'z> {
    /// The query name.
    Query,
    /// A CNAME target in the zone's data.
    Zone(&'z [u8]),
    /// A DNAME substitute (wire form).
    Owned(Box<[u8]>),
}

/// Result of looking at one node. Only built once per chain link, so the size of the
/// on-stack wire name does not matter.
#[allow(clippy::large_enum_variant)]
enum Step<'z> {
    Done(End),
    /// Continue the chain with this name (and its lowercase wire form).
    Follow(Chain<'z>, WireName),
}

struct Resolver<'z, 'q> {
    zone: &'z Zone,
    qtype: RecordType,
    qname: &'q Name,
    answers: Vec<WireRRset<'z>>,
    additionals: Vec<WireRRset<'z>>,
    links: usize,
}

impl<'z, 'q> Resolver<'z, 'q> {
    fn new(zone: &'z Zone, qtype: RecordType, qname: &'q Name) -> Self {
        Resolver {
            zone,
            qtype,
            qname,
            answers: Vec::new(),
            additionals: Vec::new(),
            links: 0,
        }
    }

    fn run(mut self, qwire: &WireName) -> ZoneAnswer<'z> {
        let zone = self.zone;
        let qname = self.qname;
        let mut name = Chain::Query;
        // The wire form of the current chain name once it is not the query name (kept
        // apart so that the common case copies no wire name).
        let mut followed: Option<WireName> = None;
        // Names already on the chain, for loop detection (Knot stops on a repeated name).
        let mut visited: [Option<Chain<'z>>; CHAIN_MAX + 1] = Default::default();
        let end = loop {
            let wire = followed.as_ref().unwrap_or(qwire);
            // Chains are followed only inside the answering zone, as Knot does.
            if !wire_is_below_or_eq(wire.as_bytes(), zone.origin_wire()) {
                break End::Hit;
            }
            let step = match zone.lookup(wire.as_bytes()) {
                Some((idx, node)) => self.found(idx, node, &name, false),
                None => self.not_found(&name, wire),
            };
            match step {
                Step::Done(end) => break end,
                Step::Follow(next, next_wire) => {
                    let same = |c: &Chain<'z>| match c {
                        Chain::Query => same_name(qname, next_wire.as_bytes()),
                        Chain::Zone(b) => b.eq_ignore_ascii_case(next_wire.as_bytes()),
                        Chain::Owned(b) => b.eq_ignore_ascii_case(next_wire.as_bytes()),
                    };
                    if visited.iter().flatten().any(same) || same(&name) {
                        break End::Hit;
                    }
                    if let Some(slot) = visited.iter_mut().find(|v| v.is_none()) {
                        *slot = Some(name);
                    }
                    name = next;
                    followed = Some(next_wire);
                }
            }
        };
        self.finish(end)
    }

    fn finish(self, end: End) -> ZoneAnswer<'z> {
        let zone = self.zone;
        let mut authorities: Vec<WireRRset<'z>> = Vec::new();
        let mut additionals = self.additionals;
        let mut required_additionals = 0;
        let mut authoritative = true;
        let rcode = match end {
            End::Hit => ResponseCode::NoError,
            End::YxDomain => ResponseCode::YXDomain,
            // RFC 2308 §3: SOA in authority with TTL min(SOA TTL, MINIMUM).
            End::NoData => {
                authorities.push(zone.negative_soa());
                ResponseCode::NoError
            }
            End::NxDomain => {
                authorities.push(zone.negative_soa());
                ResponseCode::NXDomain
            }
            End::Referral(cut) => {
                // RFC 1034 §4.3.2 step 3b: the cut's NS RRset and glue; AA only covers an
                // answer section we did fill (a CNAME chain into the delegation), as Knot.
                authoritative = !self.answers.is_empty();
                if let Some(node) = zone.node_at(cut)
                    && let Some(ns) = zone.set(node, RecordType::NS)
                {
                    authorities.push(zone.view(node, ns));
                    let (glue, required) = zone.related(node, ns);
                    for (i, set) in glue.enumerate() {
                        if i < required {
                            // Required (in-domain) glue goes first (RFC 9471 §3).
                            additionals.insert(i, set);
                        } else {
                            additionals.push(set);
                        }
                    }
                    required_additionals = required;
                }
                ResponseCode::NoError
            }
        };
        ZoneAnswer {
            rcode,
            authoritative,
            answers: self.answers,
            authorities,
            additionals,
            required_additionals,
        }
    }

    /// `node` exists for the current name (or is the wildcard expanding it, `synth`).
    fn found(&mut self, idx: u32, node: &'z Node, name: &Chain<'z>, synth: bool) -> Step<'z> {
        let zone = self.zone;
        // Delegation point or occluded name: referral, except DS at the cut itself, which
        // belongs to the parent side (RFC 4035 §3.1.4.1).
        if let Some(cut) = zone.cut(idx, node)
            && !(cut == idx && self.qtype == RecordType::DS)
        {
            return Step::Done(End::Referral(cut));
        }
        // RFC 1034 §4.3.2 step 3a: restart at the CNAME target; like Knot, not for types
        // that ask about the node itself.
        if node.has_cname()
            && !matches!(
                self.qtype,
                RecordType::CNAME | RecordType::RRSIG | RecordType::NSEC | RecordType::ANY
            )
        {
            let Some(set) = zone.set(node, RecordType::CNAME) else {
                return Step::Done(End::Hit);
            };
            if self.links >= CHAIN_MAX {
                return Step::Done(End::Hit);
            }
            self.links += 1;
            self.push_answer(node, set, synth.then_some(name));
            let target = Rdatas::new(zone.data(set)).next();
            return match target.and_then(|t| WireName::from_wire(t).map(|w| (t, w))) {
                Some((t, w)) => Step::Follow(Chain::Zone(t), w),
                None => Step::Done(End::Hit),
            };
        }
        // RFC 8482 §4.2: answer ANY with one RRset; Knot takes the node's first.
        let set = if self.qtype == RecordType::ANY {
            zone.sets(node).first()
        } else {
            zone.set(node, self.qtype)
        };
        let Some(set) = set else {
            return Step::Done(End::NoData);
        };
        self.push_answer(node, set, synth.then_some(name));
        let (related, _) = zone.related(node, set);
        for extra in related {
            if !self.additionals.iter().any(|a| a.same_zone_set(&extra)) {
                self.additionals.push(extra);
            }
        }
        Step::Done(End::Hit)
    }

    /// The current name does not exist in the zone: find its closest encloser.
    fn not_found(&mut self, name: &Chain<'z>, wire: &WireName) -> Step<'z> {
        let zone = self.zone;
        let mut skip = 1;
        let (eidx, encloser) = loop {
            if skip > wire.label_count() {
                return Step::Done(End::NxDomain);
            }
            if let Some(found) = zone.lookup(wire.suffix(skip)) {
                break found;
            }
            skip += 1;
        };
        // Below a zone cut: referral (never answered from occluded data).
        if let Some(cut) = zone.cut(eidx, encloser) {
            return Step::Done(End::Referral(cut));
        }
        // RFC 4592 §3.3.1: the source of synthesis is the closest encloser's `*` child.
        if let Some((w, wild)) = zone.wildcard_child(encloser, wire.suffix(skip)) {
            return self.found(w, wild, name, true);
        }
        if encloser.has_dname()
            && let Some(set) = zone.set(encloser, RecordType::DNAME)
        {
            return self.dname(encloser, set, name, skip);
        }
        Step::Done(End::NxDomain)
    }

    /// RFC 6672 §3.2: DNAME in the answer, plus a CNAME from the name to its substitute.
    fn dname(
        &mut self,
        node: &'z Node,
        set: &'z RdataSet,
        name: &Chain<'z>,
        skip: usize,
    ) -> Step<'z> {
        let zone = self.zone;
        if self.links >= CHAIN_MAX {
            return Step::Done(End::Hit);
        }
        self.links += 1;
        let view = zone.view(node, set);
        if !self.answers.iter().any(|a| a.same_zone_set(&view)) {
            self.answers.push(view);
        }
        let Some(target) = Rdatas::new(zone.data(set)).next() else {
            return Step::Done(End::Hit);
        };
        let Some(target) = name_len(target).and_then(|l| target.get(..l)) else {
            return Step::Done(End::Hit);
        };
        // The substitute: the labels of the name below the DNAME owner, then the target.
        let owner = self.owner_wire(name);
        let mut new_name: Vec<u8> = Vec::with_capacity(owner.len() + target.len());
        for label in Labels::new(&owner).take(skip) {
            new_name.push(label.len() as u8); // labels are <= 63 octets
            new_name.extend_from_slice(label);
        }
        new_name.extend_from_slice(target);
        // RFC 6672 §2.2: a substitute longer than 255 octets is YXDOMAIN.
        let Some(new_wire) = WireName::from_wire(&new_name).filter(|_| new_name.len() <= 255)
        else {
            return Step::Done(End::YxDomain);
        };
        // RFC 6672 §3.2: the synthesized CNAME has the DNAME's TTL and the name as owner.
        let mut rdata = Vec::with_capacity(new_name.len() + 2);
        rdata.extend_from_slice(&(new_name.len() as u16).to_be_bytes()); // <= 255
        rdata.extend_from_slice(&new_name);
        self.answers.push(WireRRset {
            owner,
            rtype: RecordType::CNAME,
            ttl: set.ttl(),
            rdata: Cow::Owned(rdata),
        });
        if self.qtype == RecordType::CNAME {
            return Step::Done(End::Hit);
        }
        Step::Follow(Chain::Owned(new_name.into_boxed_slice()), new_wire)
    }

    /// The chain name in wire form with its case, for a synthesized owner.
    fn owner_wire(&self, name: &Chain<'z>) -> Cow<'z, [u8]> {
        match name {
            Chain::Query => Cow::Owned(case_wire(self.qname)),
            Chain::Zone(b) => Cow::Borrowed(b),
            Chain::Owned(b) => Cow::Owned(b.to_vec()),
        }
    }

    fn push_answer(&mut self, node: &'z Node, set: &'z RdataSet, owner: Option<&Chain<'z>>) {
        let mut view = self.zone.view(node, set);
        // RFC 4592 §3.4.1: synthesized records take the query name as owner.
        if let Some(owner) = owner {
            view.owner = self.owner_wire(owner);
        }
        self.answers.push(view);
    }
}
