//! Authoritative answers: a plain function of (request, zone snapshot).
//!
//! No sockets, no clocks, no locks: tests call [`answer`] directly. The result borrows
//! RRsets from the snapshot where it can and owns only what it synthesizes (wildcard
//! expansions, DNAME-synthesized CNAMEs).
//!
//! The lookup is RFC 1034 §4.3.2 as Knot DNS implements it: the exact name first (one hash
//! lookup; occlusion below zone cuts is precomputed per node), and only when the name does
//! not exist a walk up to the closest encloser for referrals, wildcards (RFC 4592) and
//! DNAME (RFC 6672). CNAME/DNAME chains are followed inside the zone that answers.

use std::borrow::Cow;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinDecodable;

use crate::wire::request::Request;
use crate::zone::{Node, RRset, WireName, Zone, ZoneSet, wire_is_below_or_eq};

/// What the answer logic decided; `wire::response` turns it into bytes.
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

/// CNAME/DNAME links followed per query, as Knot's `CNAME_CHAIN_MAX`; the answer stops
/// (NOERROR, chain so far) when one more link would be needed.
const CHAIN_MAX: usize = 5;

/// Answers `req` from `zones`, or returns `None` when no served zone contains the name
/// (the caller answers REFUSED, or hands the query to the cache when recursion is allowed).
pub fn answer<'z>(req: &Request, zones: &'z ZoneSet) -> Option<Answer<'z>> {
    let qname = req.query.name();
    let qtype = req.query.query_type();
    let wire = WireName::from_name(qname)?;
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
    Some(Resolver::new(zone, qtype).run(qname, wire))
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

/// Result of looking at one node. Only built once per chain link, so the size of the
/// on-stack wire name does not matter.
#[allow(clippy::large_enum_variant)]
enum Step<'q> {
    Done(End),
    /// Continue the chain with this name (and its wire form).
    Follow(Cow<'q, Name>, WireName),
}

struct Resolver<'z> {
    zone: &'z Zone,
    qtype: RecordType,
    answers: Vec<Cow<'z, RRset>>,
    additionals: Vec<Cow<'z, RRset>>,
    links: usize,
}

impl<'z> Resolver<'z> {
    fn new(zone: &'z Zone, qtype: RecordType) -> Self {
        Resolver {
            zone,
            qtype,
            answers: Vec::new(),
            additionals: Vec::new(),
            links: 0,
        }
    }

    fn run<'q>(mut self, qname: &'q Name, wire: WireName) -> Answer<'z>
    where
        'z: 'q,
    {
        let zone = self.zone;
        let mut name: Cow<'q, Name> = Cow::Borrowed(qname);
        let mut wire = wire;
        // Names already on the chain, for loop detection (Knot stops on a repeated name).
        let mut visited: [Option<Cow<'q, Name>>; CHAIN_MAX + 1] = Default::default();
        let end = loop {
            // Chains are followed only inside the answering zone, as Knot does.
            if !wire_is_below_or_eq(wire.as_bytes(), zone.origin_wire()) {
                break End::Hit;
            }
            let step = match zone.lookup(wire.as_bytes()) {
                Some((idx, node)) => self.found(idx, node, &name, false),
                None => self.not_found(&name, &wire),
            };
            match step {
                Step::Done(end) => break end,
                Step::Follow(next, next_wire) => {
                    let seen = visited.iter().flatten().any(|v| **v == *next) || *next == *name;
                    if seen {
                        break End::Hit;
                    }
                    if let Some(slot) = visited.iter_mut().find(|v| v.is_none()) {
                        *slot = Some(name);
                    }
                    name = next;
                    wire = next_wire;
                }
            }
        };
        self.finish(end)
    }

    fn finish(self, end: End) -> Answer<'z> {
        let zone = self.zone;
        let mut authorities: Vec<Cow<'z, RRset>> = Vec::new();
        let mut additionals = self.additionals;
        let mut required_additionals = 0;
        let mut authoritative = true;
        let rcode = match end {
            End::Hit => ResponseCode::NoError,
            End::YxDomain => ResponseCode::YXDomain,
            // RFC 2308 §3: SOA in authority with TTL min(SOA TTL, MINIMUM).
            End::NoData => {
                authorities.push(Cow::Borrowed(zone.negative_soa()));
                ResponseCode::NoError
            }
            End::NxDomain => {
                authorities.push(Cow::Borrowed(zone.negative_soa()));
                ResponseCode::NXDomain
            }
            End::Referral(cut) => {
                // RFC 1034 §4.3.2 step 3b: the cut's NS RRset and glue; AA only covers an
                // answer section we did fill (a CNAME chain into the delegation), as Knot.
                authoritative = !self.answers.is_empty();
                if let Some(node) = zone.node_at(cut)
                    && let Some(s) = node.position(RecordType::NS)
                    && let Some(ns) = node.rrsets.get(s)
                {
                    authorities.push(Cow::Borrowed(ns));
                    let (glue, required) = zone.related(node, s);
                    for (i, set) in glue.enumerate() {
                        if i < required {
                            // Required (in-domain) glue goes first (RFC 9471 §3).
                            additionals.insert(i, Cow::Borrowed(set));
                        } else {
                            additionals.push(Cow::Borrowed(set));
                        }
                    }
                    required_additionals = required;
                }
                ResponseCode::NoError
            }
        };
        Answer {
            rcode,
            authoritative,
            answers: self.answers,
            authorities,
            additionals,
            required_additionals,
        }
    }

    /// `node` exists for the current name (or is the wildcard expanding it, `synth`).
    fn found<'q>(&mut self, idx: u32, node: &'z Node, name: &Cow<'q, Name>, synth: bool) -> Step<'q>
    where
        'z: 'q,
    {
        // Delegation point or occluded name: referral, except DS at the cut itself, which
        // belongs to the parent side (RFC 4035 §3.1.4.1).
        if let Some(cut) = node.cut()
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
            let Some(set) = node.get(RecordType::CNAME) else {
                return Step::Done(End::Hit);
            };
            if self.links >= CHAIN_MAX {
                return Step::Done(End::Hit);
            }
            self.links += 1;
            self.push_answer(set, synth.then_some(&**name));
            let target = set.records.first().and_then(|r| match &r.data {
                RData::CNAME(c) => Some(&c.0),
                _ => None,
            });
            return match target.and_then(|t| WireName::from_name(t).map(|w| (t, w))) {
                Some((t, w)) => Step::Follow(Cow::Borrowed(t), w),
                None => Step::Done(End::Hit),
            };
        }
        // RFC 8482 §4.2: answer ANY with one RRset; Knot takes the node's first.
        let pos = if self.qtype == RecordType::ANY {
            (!node.rrsets.is_empty()).then_some(0)
        } else {
            node.position(self.qtype)
        };
        let Some((pos, set)) = pos.and_then(|p| node.rrsets.get(p).map(|s| (p, s))) else {
            return Step::Done(End::NoData);
        };
        self.push_answer(set, synth.then_some(&**name));
        let (related, _) = self.zone.related(node, pos);
        for extra in related {
            let dup = self
                .additionals
                .iter()
                .any(|a| matches!(a, Cow::Borrowed(b) if std::ptr::eq(*b, extra)));
            if !dup {
                self.additionals.push(Cow::Borrowed(extra));
            }
        }
        Step::Done(End::Hit)
    }

    /// The current name does not exist in the zone: find its closest encloser.
    fn not_found<'q>(&mut self, name: &Cow<'q, Name>, wire: &WireName) -> Step<'q>
    where
        'z: 'q,
    {
        let zone = self.zone;
        let mut skip = 1;
        let (_, encloser) = loop {
            if skip > wire.label_count() {
                return Step::Done(End::NxDomain);
            }
            if let Some(found) = zone.lookup(wire.suffix(skip)) {
                break found;
            }
            skip += 1;
        };
        // Below a zone cut: referral (never answered from occluded data).
        if let Some(cut) = encloser.cut() {
            return Step::Done(End::Referral(cut));
        }
        // RFC 4592 §3.3.1: the source of synthesis is the closest encloser's `*` child.
        if let Some(w) = encloser.wildcard()
            && let Some(wild) = zone.node_at(w)
        {
            return self.found(w, wild, name, true);
        }
        if encloser.has_dname()
            && let Some(set) = encloser.get(RecordType::DNAME)
        {
            return self.dname(set, name, skip);
        }
        Step::Done(End::NxDomain)
    }

    /// RFC 6672 §3.2: DNAME in the answer, plus a CNAME from the name to its substitute.
    fn dname<'q>(&mut self, set: &'z RRset, name: &Cow<'q, Name>, skip: usize) -> Step<'q>
    where
        'z: 'q,
    {
        if self.links >= CHAIN_MAX {
            return Step::Done(End::Hit);
        }
        self.links += 1;
        let already = self
            .answers
            .iter()
            .any(|a| matches!(a, Cow::Borrowed(b) if std::ptr::eq(*b, set)));
        if !already {
            self.answers.push(Cow::Borrowed(set));
        }
        let Some(target) = set.records.first().and_then(|r| dname_target(&r.data)) else {
            return Step::Done(End::Hit);
        };
        let target = &target;
        // RFC 6672 §2.2: a substitute longer than 255 octets is YXDOMAIN.
        let Some(new_wire) = WireName::concat(name, skip, target) else {
            return Step::Done(End::YxDomain);
        };
        let Ok(new_name) = Name::from_labels(name.iter().take(skip).chain(target.iter())) else {
            return Step::Done(End::YxDomain);
        };
        // RFC 6672 §3.2: the synthesized CNAME has the DNAME's TTL and the name as owner.
        let record = Record::from_rdata(
            name.as_ref().clone(),
            set.ttl,
            RData::CNAME(CNAME(new_name.clone())),
        );
        self.answers.push(Cow::Owned(RRset {
            name: name.as_ref().clone(),
            rtype: RecordType::CNAME,
            ttl: set.ttl,
            records: vec![record],
        }));
        if self.qtype == RecordType::CNAME {
            return Step::Done(End::Hit);
        }
        Step::Follow(Cow::Owned(new_name), new_wire)
    }

    fn push_answer(&mut self, set: &'z RRset, owner: Option<&Name>) {
        match owner {
            // RFC 4592 §3.4.1: synthesized records take the query name as owner.
            Some(owner) => self.answers.push(Cow::Owned(set.with_owner(owner))),
            None => self.answers.push(Cow::Borrowed(set)),
        }
    }
}

/// The target of a DNAME record. hickory 0.26 has no DNAME type, so both its wire decoder
/// and our zone loader carry it as `RData::Unknown` holding the uncompressed target name
/// (RFC 6672 §2.1, RFC 3597 §4).
fn dname_target(data: &RData) -> Option<Name> {
    match data {
        RData::Unknown {
            code: RecordType::DNAME,
            rdata,
        } => Name::from_bytes(&rdata.anything).ok(),
        _ => None,
    }
}
