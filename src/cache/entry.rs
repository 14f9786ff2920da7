//! Cache keys and entries: what an upstream answer becomes once sanitized, and how an entry
//! is written back to a client with its TTLs counted down.
//!
//! An [`Entry`] is immutable once built (only its serve-stale recheck time changes) and
//! shared as `Arc<Entry>`: a cache hit clones a pointer, nothing else. Entries keep the
//! sections as RRsets (the type the authoritative encoder already takes), so a hit is
//! encoded by [`crate::wire::response::encode`] like an authoritative answer and then has its
//! TTLs rewritten in place (`original - age`, RFC 1035 §4.1.3 / RFC 8767 §4 for stale data).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::auth::Answer;
use crate::wire::request::{HEADER_LEN, Request};
use crate::wire::response::{self, EncodeOptions};
use crate::zone::RRset;

/// CNAME links kept from one upstream answer (and followed through the cache); longer
/// chains are cut there (Knot's authoritative limit is 5; resolvers allow a few more).
pub const MAX_CHAIN: usize = 8;

/// What a cached answer is keyed by: the question (name compared case-insensitively,
/// stored lowercased) and the DO bit, since DO=1 answers carry DNSSEC records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub name: Name,
    pub qtype: RecordType,
    pub class: DNSClass,
    pub dnssec_ok: bool,
}

impl Key {
    pub fn new(name: &Name, qtype: RecordType, class: DNSClass, dnssec_ok: bool) -> Key {
        Key {
            name: name.to_lowercase(),
            qtype,
            class,
            dnssec_ok,
        }
    }

    /// The key of a client request.
    pub fn for_request(req: &Request) -> Key {
        let dnssec_ok = req.edns.is_some_and(|e| e.dnssec_ok);
        Key::new(
            req.query.name(),
            req.query.query_type(),
            req.query.query_class(),
            dnssec_ok,
        )
    }

    /// The question to send upstream for this key.
    pub fn query(&self) -> Query {
        let mut q = Query::query(self.name.clone(), self.qtype);
        q.set_query_class(self.class);
        q
    }
}

/// The kind of answer an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Data for the question (possibly after a CNAME chain).
    Positive,
    /// NXDOMAIN or NODATA, with the SOA that bounds its TTL (RFC 2308).
    Negative,
    /// Resolution failed (RFC 9520 §3.2: failures must be cached, briefly).
    ServFail,
}

/// TTL rules applied when an entry is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Positive TTLs are raised to this.
    pub min_ttl: u32,
    /// Positive TTLs are capped to this.
    pub max_ttl: u32,
    /// Negative TTLs are capped to this (RFC 2308 §5 suggests 1 to 3 hours).
    pub max_negative_ttl: u32,
    /// How long a resolution failure is remembered (RFC 9520 §3.2; at most 5 minutes).
    pub servfail_ttl: u32,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        TtlPolicy {
            min_ttl: 0,
            max_ttl: 86_400,
            max_negative_ttl: 3_600,
            servfail_ttl: 5,
        }
    }
}

/// Why an upstream response cannot be used as an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("response code {0} is not an answer")]
    Rcode(ResponseCode),
    #[error("response is not a reply to a query")]
    NotAResponse,
}

/// One cached answer.
#[derive(Debug)]
pub struct Entry {
    rcode: ResponseCode,
    kind: Kind,
    answers: Vec<RRset>,
    authorities: Vec<RRset>,
    stored: Instant,
    /// Seconds the entry is fresh (the smallest TTL of its RRsets, after the policy).
    ttl: u32,
    /// False for answers that must not be cached (TTL 0, negative answers without SOA).
    cacheable: bool,
    /// Estimated bytes of memory held, for the cache's weigher.
    weight: u32,
    /// RFC 8767 §5 "failure recheck timer": milliseconds after `stored` before which a
    /// failed refresh is not retried (stale data is served at once instead). 0 = none.
    recheck_after_ms: AtomicU64,
}

/// How the TTLs of one entry's records are rewritten in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlRewrite {
    /// Fresh data: the stored TTL minus the entry's age in seconds.
    Age(u32),
    /// Stale data (RFC 8767 §4): this TTL for every record.
    Fixed(u32),
}

impl Entry {
    /// Builds an entry from an upstream response to `query` (already matched to it), keeping
    /// only records that answer it, as a forwarder must (the rest is out of bailiwick for
    /// this question and could be poisoning, see Kaminsky / RFC 5452 §6):
    /// - answer: the CNAME chain starting at the question name (RFC 1034 §4.3.2, each link
    ///   at the previous link's target) and the RRsets of the question type at the end of
    ///   it; RRSIGs only at those owners; everything else is dropped;
    /// - authority: only for NXDOMAIN/NODATA, the SOA of a zone containing the final name
    ///   (RFC 2308 §3) and, with DO, NSEC/NSEC3/RRSIG records in that zone;
    /// - additional: dropped (the client asked one question).
    pub fn from_response(
        query: &Query,
        msg: &Message,
        policy: &TtlPolicy,
        now: Instant,
    ) -> Result<Entry, Unusable> {
        if msg.metadata.message_type != MessageType::Response
            || msg.metadata.op_code != OpCode::Query
        {
            return Err(Unusable::NotAResponse);
        }
        let rcode = msg.metadata.response_code;
        if rcode != ResponseCode::NoError && rcode != ResponseCode::NXDomain {
            return Err(Unusable::Rcode(rcode));
        }
        let qtype = query.query_type();
        let dnssec = msg.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);

        // Walk the chain.
        let mut kept: Vec<Record> = Vec::new();
        let mut current = query.name().clone();
        let mut found = false;
        for _ in 0..=MAX_CHAIN {
            let at = |r: &&Record| r.name == current;
            let data: Vec<&Record> = msg
                .answers
                .iter()
                .filter(at)
                .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
                .collect();
            if !data.is_empty() {
                kept.extend(data.into_iter().cloned());
                found = true;
                break;
            }
            let Some(cname) = msg.answers.iter().filter(at).find_map(|r| match &r.data {
                RData::CNAME(c) => Some((r, c.0.clone())),
                _ => None,
            }) else {
                break;
            };
            kept.push(cname.0.clone());
            if cname.1 == current {
                break; // a CNAME to itself ends the chain
            }
            current = cname.1;
        }
        if dnssec {
            let owners: Vec<Name> = kept.iter().map(|r| r.name.clone()).collect();
            kept.extend(
                msg.answers
                    .iter()
                    .filter(|r| r.record_type() == RecordType::RRSIG && owners.contains(&r.name))
                    .cloned(),
            );
        }
        let mut answers = group(kept);

        let mut authorities = Vec::new();
        let kind;
        let mut ttl: Option<u32> = answers.iter().map(|s| s.ttl).min();
        let mut cacheable = true;
        if found {
            kind = Kind::Positive;
            clamp_all(&mut answers, policy.min_ttl, policy.max_ttl);
            ttl = answers.iter().map(|s| s.ttl).min();
        } else {
            // RFC 2308 §5: the SOA of the zone the final name is in gives the negative TTL,
            // min(SOA TTL, SOA MINIMUM).
            let soa = msg.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) if r.name.zone_of(&current) => Some((r, soa.minimum)),
                _ => None,
            });
            match soa {
                Some((record, minimum)) => {
                    kind = Kind::Negative;
                    let negative = record.ttl.min(minimum);
                    let zone = record.name.clone();
                    let mut auth = vec![record.clone()];
                    if dnssec {
                        auth.extend(
                            msg.authorities
                                .iter()
                                .filter(|r| {
                                    matches!(
                                        r.record_type(),
                                        RecordType::NSEC | RecordType::NSEC3 | RecordType::RRSIG
                                    ) && zone.zone_of(&r.name)
                                })
                                .cloned(),
                        );
                    }
                    authorities = group(auth);
                    for set in &mut authorities {
                        set_ttl(set, set.ttl.min(negative));
                    }
                    clamp_all(&mut authorities, policy.min_ttl, policy.max_negative_ttl);
                    clamp_all(&mut answers, policy.min_ttl, policy.max_ttl);
                    ttl = answers
                        .iter()
                        .chain(&authorities)
                        .map(|s| s.ttl)
                        .min()
                        .map(|t| t.min(policy.max_negative_ttl));
                }
                None if !answers.is_empty() && rcode == ResponseCode::NoError => {
                    // A chain whose end the upstream did not resolve: the links are data.
                    kind = Kind::Positive;
                    clamp_all(&mut answers, policy.min_ttl, policy.max_ttl);
                    ttl = answers.iter().map(|s| s.ttl).min();
                }
                None => {
                    // RFC 2308 §5: negative answers without SOA SHOULD NOT be cached.
                    kind = Kind::Negative;
                    cacheable = false;
                }
            }
        }
        let ttl = ttl.unwrap_or(0);
        if ttl == 0 {
            cacheable = false;
        }
        Ok(Entry::new(
            rcode,
            kind,
            answers,
            authorities,
            ttl,
            cacheable,
            now,
        ))
    }

    /// A cached resolution failure (RFC 9520 §3.2).
    pub fn servfail(policy: &TtlPolicy, now: Instant) -> Entry {
        let ttl = policy.servfail_ttl;
        Entry::new(
            ResponseCode::ServFail,
            Kind::ServFail,
            Vec::new(),
            Vec::new(),
            ttl,
            ttl > 0,
            now,
        )
    }

    /// Builds an entry from already sanitized sections (tests and derived entries).
    pub fn new(
        rcode: ResponseCode,
        kind: Kind,
        answers: Vec<RRset>,
        authorities: Vec<RRset>,
        ttl: u32,
        cacheable: bool,
        now: Instant,
    ) -> Entry {
        let weight = estimate_weight(&answers, &authorities);
        Entry {
            rcode,
            kind,
            answers,
            authorities,
            stored: now,
            ttl,
            cacheable,
            weight,
            recheck_after_ms: AtomicU64::new(0),
        }
    }

    /// Entries the cache can also use for other questions: one per CNAME link (key: link
    /// owner, type CNAME) and one for the data at the end of the chain (key: chain end,
    /// question type). These let a later question that meets the same chain be answered
    /// from the cache by following it (see [`super::Resolver`]).
    pub fn derived(&self, key: &Key) -> Vec<(Key, Entry)> {
        let mut out = Vec::new();
        if self.kind == Kind::ServFail || !self.cacheable {
            return out;
        }
        let links: Vec<&RRset> = self
            .answers
            .iter()
            .filter(|s| s.rtype == RecordType::CNAME)
            .collect();
        if links.is_empty() || key.qtype == RecordType::CNAME {
            return out;
        }
        let sigs = |owner: &Name| -> Vec<RRset> {
            self.answers
                .iter()
                .filter(|s| s.rtype == RecordType::RRSIG && s.name == *owner)
                .cloned()
                .collect()
        };
        for link in &links {
            let mut answers = vec![(*link).clone()];
            answers.extend(sigs(&link.name));
            let k = Key::new(&link.name, RecordType::CNAME, key.class, key.dnssec_ok);
            let ttl = answers.iter().map(|s| s.ttl).min().unwrap_or(0);
            out.push((
                k,
                Entry::new(
                    ResponseCode::NoError,
                    Kind::Positive,
                    answers,
                    Vec::new(),
                    ttl,
                    ttl > 0,
                    self.stored,
                ),
            ));
        }
        // The end of the chain: the data (or the negative answer) for the last target.
        let Some(RData::CNAME(last)) = links
            .last()
            .and_then(|s| s.records.first())
            .map(|r| &r.data)
        else {
            return out;
        };
        let target = &last.0;
        let answers: Vec<RRset> = self
            .answers
            .iter()
            .filter(|s| s.name == *target && s.rtype != RecordType::CNAME)
            .cloned()
            .collect();
        if answers.is_empty() && self.kind == Kind::Positive {
            return out; // the chain end was not resolved: nothing known about it
        }
        let ttl = answers
            .iter()
            .chain(&self.authorities)
            .map(|s| s.ttl)
            .min()
            .unwrap_or(0);
        let k = Key::new(target, key.qtype, key.class, key.dnssec_ok);
        out.push((
            k,
            Entry::new(
                self.rcode,
                self.kind,
                answers,
                self.authorities.clone(),
                ttl,
                ttl > 0,
                self.stored,
            ),
        ));
        out
    }

    pub fn rcode(&self) -> ResponseCode {
        self.rcode
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn answers(&self) -> &[RRset] {
        &self.answers
    }

    pub fn authorities(&self) -> &[RRset] {
        &self.authorities
    }

    /// Seconds this entry is fresh from when it was stored.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    pub fn is_cacheable(&self) -> bool {
        self.cacheable
    }

    /// Estimated bytes of memory this entry holds (the cache weigher's value).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Whole seconds since the entry was stored.
    pub fn age(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.stored).as_secs()).unwrap_or(u32::MAX)
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.stored) < Duration::from_secs(u64::from(self.ttl))
    }

    /// How long the cache keeps the entry: its TTL, plus the serve-stale window for data
    /// (RFC 8767 §4); failures are not served stale.
    pub fn lifetime(&self, stale_window: Duration) -> Duration {
        let ttl = Duration::from_secs(u64::from(self.ttl));
        match self.kind {
            Kind::ServFail => ttl,
            Kind::Positive | Kind::Negative => ttl.saturating_add(stale_window),
        }
    }

    /// What is left of [`Entry::lifetime`] at `at`.
    pub fn remaining_lifetime(&self, at: Instant, stale_window: Duration) -> Duration {
        self.lifetime(stale_window)
            .saturating_sub(at.saturating_duration_since(self.stored))
    }

    /// Expired, but still within the serve-stale window (RFC 8767 §4).
    pub fn is_servable_stale(&self, now: Instant, stale_window: Duration) -> bool {
        self.kind != Kind::ServFail
            && !self.is_fresh(now)
            && now.saturating_duration_since(self.stored) < self.lifetime(stale_window)
    }

    /// True while a recent refresh failure says not to ask upstream again yet
    /// (RFC 8767 §5 failure recheck timer).
    pub fn recheck_pending(&self, now: Instant) -> bool {
        let after = self.recheck_after_ms.load(Ordering::Relaxed);
        after != 0 && millis_since(self.stored, now) < after
    }

    /// Records a failed refresh: no new attempt for `wait` (stale data is served meanwhile).
    pub fn mark_refresh_failed(&self, now: Instant, wait: Duration) {
        let at = millis_since(self.stored, now)
            .saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
            .max(1);
        self.recheck_after_ms.store(at, Ordering::Relaxed);
    }
}

fn millis_since(from: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(from).as_millis()).unwrap_or(u64::MAX)
}

/// Groups records into RRsets by (owner, type), in first-seen order; an RRset's TTL is the
/// smallest of its records' (RFC 2181 §5.2), and every record carries it.
fn group(records: Vec<Record>) -> Vec<RRset> {
    let mut sets: Vec<RRset> = Vec::new();
    for record in records {
        let rtype = record.record_type();
        match sets
            .iter_mut()
            .find(|s| s.rtype == rtype && s.name == record.name)
        {
            Some(set) => {
                if !set.records.iter().any(|r| r.data == record.data) {
                    set.ttl = set.ttl.min(record.ttl);
                    set.records.push(record);
                }
            }
            None => sets.push(RRset {
                name: record.name.clone(),
                rtype,
                ttl: record.ttl,
                records: vec![record],
            }),
        }
    }
    for set in &mut sets {
        set_ttl(set, set.ttl);
    }
    sets
}

fn set_ttl(set: &mut RRset, ttl: u32) {
    set.ttl = ttl;
    for r in &mut set.records {
        r.ttl = ttl;
    }
}

fn clamp_all(sets: &mut [RRset], min: u32, max: u32) {
    for set in sets {
        let ttl = set.ttl.clamp(min.min(max), max);
        set_ttl(set, ttl);
    }
}

/// Estimated heap and inline bytes of an entry. Exactness does not matter; what matters is
/// that it grows with the data, so the cache's byte bound holds memory in check.
fn estimate_weight(answers: &[RRset], authorities: &[RRset]) -> u32 {
    const ENTRY: usize = std::mem::size_of::<Entry>() + 64; // + Arc, key and map overhead
    const RRSET: usize = std::mem::size_of::<RRset>();
    const RECORD: usize = std::mem::size_of::<Record>() + 32; // + rdata heap, on average
    let mut total = ENTRY;
    for set in answers.iter().chain(authorities) {
        total += RRSET + set.name.len();
        total += set.records.len() * RECORD;
    }
    u32::try_from(total).unwrap_or(u32::MAX)
}

/// Writes the response to `req` made of `chain` (entries in CNAME order; the last one
/// gives the rcode and the authority section) into `out`, with RA=1 and the TTLs rewritten
/// per entry. Returns the message length (0 = nothing to send).
pub fn write_response(
    req: &Request,
    chain: &[(&Entry, TtlRewrite)],
    max_size: u16,
    opts: &EncodeOptions,
    out: &mut Vec<u8>,
) -> usize {
    let Some((last, last_rewrite)) = chain.last() else {
        out.clear();
        return 0;
    };
    let mut answer = Answer {
        rcode: last.rcode,
        authoritative: false,
        answers: Vec::new(),
        authorities: last.authorities.iter().map(Cow::Borrowed).collect(),
        additionals: Vec::new(),
        required_additionals: 0,
    };
    for (entry, _) in chain {
        answer
            .answers
            .extend(entry.answers.iter().map(Cow::Borrowed));
    }
    let len = response::encode(req, &answer, max_size, opts, out);
    set_recursion_available(out);
    let plan = chain
        .iter()
        .map(|(e, rw)| (record_count(&e.answers), *rw))
        .chain(std::iter::once((
            record_count(&last.authorities),
            *last_rewrite,
        )));
    rewrite_ttls(out, plan);
    len
}

/// Sets RA=1 (RFC 1035 §4.1.1) in an encoded response.
pub fn set_recursion_available(out: &mut [u8]) {
    if out.len() >= HEADER_LEN
        && let Some(flags2) = out.get_mut(3)
    {
        *flags2 |= 0x80;
    }
}

fn record_count(sets: &[RRset]) -> usize {
    sets.iter().map(|s| s.records.len()).sum()
}

/// Rewrites the TTLs of the answer and authority records of the encoded message `msg`:
/// the first `n` records as the first rewrite says, and so on. The message is our own
/// encoder's output, but it is walked defensively all the same.
fn rewrite_ttls(msg: &mut [u8], plan: impl Iterator<Item = (usize, TtlRewrite)>) {
    let count = |i: usize| -> usize {
        msg.get(i..)
            .and_then(|b| b.first_chunk::<2>())
            .map_or(0, |b| usize::from(u16::from_be_bytes(*b)))
    };
    let mut left = count(6) + count(8);
    let Some(mut pos) = skip_name(msg, HEADER_LEN).map(|p| p + 4) else {
        return;
    };
    for (n, rewrite) in plan {
        for _ in 0..n {
            if left == 0 {
                return;
            }
            left -= 1;
            let Some(p) = skip_name(msg, pos) else {
                return;
            };
            let Some(ttl_bytes) = msg.get_mut(p + 4..p + 8) else {
                return;
            };
            let mut old = [0u8; 4];
            old.copy_from_slice(ttl_bytes);
            let new = match rewrite {
                TtlRewrite::Age(age) => u32::from_be_bytes(old).saturating_sub(age),
                TtlRewrite::Fixed(ttl) => ttl,
            };
            ttl_bytes.copy_from_slice(&new.to_be_bytes());
            let Some(rdlen) = msg.get(p + 8..).and_then(|b| b.first_chunk::<2>()) else {
                return;
            };
            pos = p + 10 + usize::from(u16::from_be_bytes(*rdlen));
        }
    }
}

/// The offset just past the (possibly compressed) name at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xC0 == 0xC0 => return Some(pos + 2),
            l if l & 0xC0 == 0 => pos += 1 + usize::from(l),
            _ => return None,
        }
    }
}
