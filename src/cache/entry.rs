//! Cache keys and entries: what an upstream answer becomes once sanitized, and how an entry
//! is written back to a client with its TTLs counted down.
//!
//! An [`Entry`] is immutable once built (only its serve-stale recheck time changes) and
//! shared as `Arc<Entry>`: a cache hit clones a pointer, nothing else. Entries keep the
//! sections as RRsets (the type the authoritative encoder already takes), so a hit is
//! encoded by [`crate::wire::response::encode`] like an authoritative answer and then has its
//! TTLs rewritten in place (`original - age`, RFC 1035 §4.1.3 / RFC 8767 §4 for stale data).

use std::borrow::Cow;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::auth::Answer;
use crate::wire::request::{HEADER_LEN, MIN_EDNS_PAYLOAD, Request};
use crate::wire::response::{self, EncodeOptions, OPT_LEN};
use crate::zone::{RRset, name_from_wire};

/// CNAME links kept from one upstream answer (and followed through the cache); longer
/// chains are cut there (Knot's authoritative limit is 5; resolvers allow a few more).
pub const MAX_CHAIN: usize = 8;

/// Bytes before the name in a key: DO flag, QTYPE, QCLASS.
const KEY_PREFIX: usize = 5;

/// Longest key: the prefix and a wire name of at most 255 octets (RFC 1035 §3.1).
const KEY_MAX: usize = KEY_PREFIX + 255;

/// What a cached answer is keyed by: the question (name compared case-insensitively,
/// stored lowercased) and the DO bit, since DO=1 answers carry DNSSEC records.
///
/// Stored as one small byte string, `DO | QTYPE | QCLASS | lowercase wire name`, so that
/// hashing and comparing a key is one pass over ~25 bytes, and so that a lookup can borrow
/// it as `[u8]` from a [`KeyBuf`] on the stack (no allocation per query). Short keys (most
/// names) are kept inline: comparing them in the cache's table then touches no other memory.
#[derive(Clone)]
pub struct Key(KeyBytes);

/// Key bytes kept inline (with the length and the tag, the key is 48 bytes).
const KEY_INLINE: usize = 46;

#[derive(Clone)]
enum KeyBytes {
    Inline { len: u8, buf: [u8; KEY_INLINE] },
    Heap(Box<[u8]>),
}

impl Key {
    fn from_bytes(bytes: &[u8]) -> Key {
        let mut buf = [0u8; KEY_INLINE];
        match (buf.get_mut(..bytes.len()), u8::try_from(bytes.len())) {
            (Some(dst), Ok(len)) => {
                dst.copy_from_slice(bytes);
                Key(KeyBytes::Inline { len, buf })
            }
            _ => Key(KeyBytes::Heap(bytes.into())),
        }
    }

    /// Bytes of memory the key holds (inline part and heap part).
    pub fn memory(&self) -> usize {
        std::mem::size_of::<Key>()
            + match &self.0 {
                KeyBytes::Inline { .. } => 0,
                KeyBytes::Heap(b) => b.len(),
            }
    }

    fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            KeyBytes::Inline { len, buf } => buf.get(..usize::from(*len)).unwrap_or_default(),
            KeyBytes::Heap(b) => b,
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

/// Hashes as the `[u8]` it borrows as (the cache looks keys up by `&[u8]`).
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name())
            .field("qtype", &self.qtype())
            .field("class", &self.class())
            .field("dnssec_ok", &self.dnssec_ok())
            .finish()
    }
}

impl Key {
    pub fn new(name: &Name, qtype: RecordType, class: DNSClass, dnssec_ok: bool) -> Key {
        KeyBuf::new(name, qtype, class, dnssec_ok).to_key()
    }

    /// The key of a client request.
    pub fn for_request(req: &Request) -> Key {
        KeyBuf::for_request(req).to_key()
    }

    /// The question name, lowercased.
    pub fn name(&self) -> Name {
        self.as_bytes()
            .get(KEY_PREFIX..)
            .and_then(name_from_wire)
            .unwrap_or_else(Name::root)
    }

    /// The question name in uncompressed wire form, lowercased.
    pub fn name_wire(&self) -> &[u8] {
        self.as_bytes().get(KEY_PREFIX..).unwrap_or_default()
    }

    pub fn qtype(&self) -> RecordType {
        RecordType::from(self.u16_at(1))
    }

    pub fn class(&self) -> DNSClass {
        DNSClass::from(self.u16_at(3))
    }

    pub fn dnssec_ok(&self) -> bool {
        self.as_bytes().first().is_some_and(|&b| b != 0)
    }

    fn u16_at(&self, at: usize) -> u16 {
        self.as_bytes()
            .get(at..)
            .and_then(|b| b.first_chunk::<2>())
            .map_or(0, |b| u16::from_be_bytes(*b))
    }

    /// The question to send upstream for this key.
    pub fn query(&self) -> Query {
        let mut q = Query::query(self.name(), self.qtype());
        q.set_query_class(self.class());
        q
    }
}

/// A [`Key`] built on the stack, for lookups (`cache.get(buf.as_bytes())`).
pub struct KeyBuf {
    buf: [u8; KEY_MAX],
    len: usize,
}

impl KeyBuf {
    pub fn new(name: &Name, qtype: RecordType, class: DNSClass, dnssec_ok: bool) -> KeyBuf {
        let mut k = KeyBuf::prefix(qtype, class, dnssec_ok);
        for label in name.iter() {
            // A valid Name has labels of at most 63 octets and at most 255 octets in all.
            let end = k.len + 1 + label.len();
            let Some(dst) = k.buf.get_mut(k.len..end) else {
                break;
            };
            if let Some((len, rest)) = dst.split_first_mut() {
                *len = label.len() as u8;
                for (d, s) in rest.iter_mut().zip(label) {
                    *d = s.to_ascii_lowercase();
                }
            }
            k.len = end;
        }
        k.push_root();
        k
    }

    /// The key of a client request, from the hickory question.
    pub fn for_request(req: &Request) -> KeyBuf {
        KeyBuf::new(
            req.query.name(),
            req.query.query_type(),
            req.query.query_class(),
            req.edns.is_some_and(|e| e.dnssec_ok),
        )
    }

    /// The key of `req`, read straight from its message `msg` (what `req` was parsed
    /// from), with the length of the question there (name + QTYPE + QCLASS). `None` when
    /// the question's name is not a plain uncompressed name matching `req`.
    pub fn from_message(msg: &[u8], req: &Request) -> Option<(KeyBuf, usize)> {
        let qtype = req.query.query_type();
        let class = req.query.query_class();
        let mut k = KeyBuf::prefix(qtype, class, req.edns.is_some_and(|e| e.dnssec_ok));
        let question = msg.get(HEADER_LEN..)?;
        let mut pos = 0;
        loop {
            let len = usize::from(*question.get(pos)?);
            if len == 0 {
                break;
            }
            // Only plain labels: a pointer here could only point into the header.
            if len > 63 {
                return None;
            }
            let label = question.get(pos..pos + 1 + len)?;
            let dst = k.buf.get_mut(k.len..k.len + 1 + len)?;
            for (d, s) in dst.iter_mut().zip(label) {
                *d = s.to_ascii_lowercase(); // the length octet is below 'A'
            }
            k.len += 1 + len;
            pos += 1 + len;
        }
        let tail = question.get(pos + 1..pos + 5)?;
        let [t1, t2] = u16::from(qtype).to_be_bytes();
        let [c1, c2] = u16::from(class).to_be_bytes();
        if tail != [t1, t2, c1, c2] || k.len >= KEY_MAX {
            return None;
        }
        k.push_root();
        Some((k, pos + 5))
    }

    fn prefix(qtype: RecordType, class: DNSClass, dnssec_ok: bool) -> KeyBuf {
        let mut buf = [0u8; KEY_MAX];
        let [t1, t2] = u16::from(qtype).to_be_bytes();
        let [c1, c2] = u16::from(class).to_be_bytes();
        buf[..KEY_PREFIX].copy_from_slice(&[u8::from(dnssec_ok), t1, t2, c1, c2]);
        KeyBuf {
            buf,
            len: KEY_PREFIX,
        }
    }

    fn push_root(&mut self) {
        if let Some(b) = self.buf.get_mut(self.len) {
            *b = 0;
            self.len += 1;
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// The question name in uncompressed wire form, lowercased.
    pub fn name_wire(&self) -> &[u8] {
        self.as_bytes().get(KEY_PREFIX..).unwrap_or_default()
    }

    pub fn to_key(&self) -> Key {
        Key::from_bytes(self.as_bytes())
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
    /// The encoded response body for the key the entry is cached under, set when it is
    /// inserted (see [`Entry::prepare`]): a direct hit copies it instead of encoding.
    wire: OnceLock<Wire>,
}

/// A cached answer in wire form: question (lowercase name, QTYPE, QCLASS), then the answer
/// and authority records, encoded to follow a 12-byte header, so its compression pointers
/// (into the question, or to earlier names) are valid in any response to the same question
/// whatever the case the client used: the question has the same length and labels.
#[derive(Debug)]
struct Wire {
    bytes: Box<[u8]>,
    question_len: u16,
    answers: u16,
    authorities: u16,
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
            wire: OnceLock::new(),
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
        if links.is_empty() || key.qtype() == RecordType::CNAME {
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
            let k = Key::new(&link.name, RecordType::CNAME, key.class(), key.dnssec_ok());
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
        let k = Key::new(target, key.qtype(), key.class(), key.dnssec_ok());
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

    /// Estimated bytes of memory this entry holds (the cache weigher's value), including
    /// its wire form once prepared.
    pub fn weight(&self) -> u32 {
        let wire = self.wire.get().map_or(0, |w| w.bytes.len());
        self.weight
            .saturating_add(u32::try_from(wire).unwrap_or(u32::MAX))
    }

    /// Encodes the response body for `key` once, so that hits on `key` copy bytes instead of
    /// encoding RRsets (see [`Entry::write_prepared`]). The cache calls it on insert; an
    /// entry is prepared for the first key it is inserted under only.
    pub fn prepare(&self, key: &Key) {
        if self.wire.get().is_some() {
            return;
        }
        let req = Request {
            id: 0,
            opcode: OpCode::Query,
            query: key.query(),
            recursion_desired: false,
            checking_disabled: false,
            edns: None,
        };
        let mut out = Vec::new();
        let rewrite = TtlRewrite::Age(0);
        let len = write_response(
            &req,
            &[(self, rewrite)],
            u16::MAX,
            &EncodeOptions::default(),
            &mut out,
        );
        let Some(header) = out.first_chunk::<HEADER_LEN>() else {
            return;
        };
        let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
        let question_len = key.name_wire().len() + 4;
        let truncated = header[2] & 0x02 != 0;
        if len == 0 || truncated || count(10) != 0 {
            return;
        }
        let (Some(bytes), Ok(question_len)) = (out.get(HEADER_LEN..), u16::try_from(question_len))
        else {
            return;
        };
        let _ = self.wire.set(Wire {
            bytes: bytes.into(),
            question_len,
            answers: count(6),
            authorities: count(8),
        });
    }

    /// Writes the response to `req` from the prepared wire form: header, the question
    /// copied from the request `msg` (as asked, RFC 4343 §4.1), the cached records with
    /// their TTLs rewritten, and an OPT record when the request had one. `key` is the key
    /// read from `msg` and `question_len` the length of the question there (see
    /// [`KeyBuf::from_message`]). The bytes are those [`write_response`] would produce.
    /// `None` when the entry was prepared for another question or the response would
    /// exceed `max_size` (then [`write_response`] truncates it).
    #[allow(clippy::too_many_arguments)]
    pub fn write_prepared(
        &self,
        req: &Request,
        msg: &[u8],
        key: &KeyBuf,
        question_len: usize,
        rewrite: TtlRewrite,
        max_size: u16,
        opts: &EncodeOptions,
        out: &mut Vec<u8>,
    ) -> Option<usize> {
        let wire = self.wire.get()?;
        if usize::from(wire.question_len) != question_len {
            return None;
        }
        let (stored, body) = wire.bytes.split_at_checked(question_len)?;
        let question = msg.get(HEADER_LEN..HEADER_LEN + question_len)?;
        let name_len = question_len.checked_sub(4)?;
        if stored.get(..name_len)? != key.name_wire()
            || stored.get(name_len..) != question.get(name_len..)
        {
            return None;
        }
        let opt_len = if req.edns.is_some() { OPT_LEN } else { 0 };
        let total = HEADER_LEN + question_len + body.len() + opt_len;
        if total > usize::from(max_size.max(MIN_EDNS_PAYLOAD)) {
            return None;
        }
        // RFC 1035 §4.1.1: QR=1, opcode and RD echoed, AA=0, TC=0 | RA=1, Z=0, AD=0, CD
        // echoed (RFC 4035 §3.1.6), RCODE.
        let flags1 = 0x80 | ((u8::from(req.opcode) & 0x0F) << 3) | u8::from(req.recursion_desired);
        let flags2 = 0x80 | (u8::from(req.checking_disabled) << 4) | self.rcode.low();
        let [id1, id2] = req.id.to_be_bytes();
        let [an1, an2] = wire.answers.to_be_bytes();
        let [ns1, ns2] = wire.authorities.to_be_bytes();
        let ar = u8::from(req.edns.is_some());
        out.clear();
        out.reserve(total);
        out.extend_from_slice(&[id1, id2, flags1, flags2, 0, 1, an1, an2, ns1, ns2, 0, ar]);
        out.extend_from_slice(question);
        out.extend_from_slice(body);
        if let Some(edns) = req.edns {
            // Our OPT record, as the encoder writes it (RFC 6891 §6.1.2, §6.1.3): root owner,
            // our payload size, the rcode's upper bits, version 0, DO echoed (RFC 3225 §3).
            let [p1, p2] = opts.max_udp_payload.max(MIN_EDNS_PAYLOAD).to_be_bytes();
            let [t1, t2] = u16::from(RecordType::OPT).to_be_bytes();
            let flags = if edns.dnssec_ok { 0x80 } else { 0 };
            out.extend_from_slice(&[0, t1, t2, p1, p2, self.rcode.high(), 0, flags, 0, 0, 0]);
        }
        let records = usize::from(wire.answers) + usize::from(wire.authorities);
        rewrite_ttls(out, std::iter::once((records, rewrite)));
        Some(out.len())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::request::parse;
    use hickory_proto::rr::rdata::{A, CNAME, SOA};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn set(owner: &str, ttl: u32, data: &[RData]) -> RRset {
        let owner = name(owner);
        RRset {
            name: owner.clone(),
            rtype: data[0].record_type(),
            ttl,
            records: data
                .iter()
                .map(|d| Record::from_rdata(owner.clone(), ttl, d.clone()))
                .collect(),
        }
    }

    /// A query message: `flags1`/`flags2` as given, optional OPT with DO.
    fn message(qname: &str, qtype: RecordType, edns: Option<bool>, cd: bool) -> Vec<u8> {
        let ar = u8::from(edns.is_some());
        let mut m = vec![
            0xab,
            0xcd,
            0x01,
            if cd { 0x10 } else { 0 },
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            ar,
        ];
        m.extend_from_slice(&crate::zone::case_wire(&name(qname)));
        m.extend_from_slice(&u16::from(qtype).to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        if let Some(dnssec_ok) = edns {
            let flags = if dnssec_ok { 0x80 } else { 0 };
            m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, flags, 0, 0, 0]);
        }
        m
    }

    /// Prepared and encoded responses to `msg` from `entry`, which is prepared for `key_name`.
    fn both(
        entry: &Entry,
        key_name: &str,
        msg: &[u8],
        age: u32,
        max: u16,
    ) -> (Option<Vec<u8>>, Vec<u8>) {
        let req = parse(msg).unwrap();
        let qtype = req.query.query_type();
        let dnssec_ok = req.edns.is_some_and(|e| e.dnssec_ok);
        entry.prepare(&Key::new(&name(key_name), qtype, DNSClass::IN, dnssec_ok));
        let (key, question_len) = KeyBuf::from_message(msg, &req).unwrap();
        assert_eq!(key.as_bytes(), KeyBuf::for_request(&req).as_bytes());
        let opts = EncodeOptions::default();
        let rewrite = TtlRewrite::Age(age);
        let mut fast = Vec::new();
        let fast = entry
            .write_prepared(
                &req,
                msg,
                &key,
                question_len,
                rewrite,
                max,
                &opts,
                &mut fast,
            )
            .map(|len| {
                assert_eq!(len, fast.len());
                fast
            });
        let mut slow = Vec::new();
        let len = write_response(&req, &[(entry, rewrite)], max, &opts, &mut slow);
        assert_eq!(len, slow.len());
        (fast, slow)
    }

    #[test]
    fn prepared_positive_answer_matches_the_encoder() {
        let answers = vec![
            set(
                "www.example.test.",
                3600,
                &[RData::CNAME(CNAME(name("web.Example.test.")))],
            ),
            set(
                "web.Example.test.",
                300,
                &[
                    RData::A(A::new(192, 0, 2, 1)),
                    RData::A(A::new(192, 0, 2, 2)),
                ],
            ),
        ];
        let entry = Entry::new(
            ResponseCode::NoError,
            Kind::Positive,
            answers,
            Vec::new(),
            300,
            true,
            Instant::now(),
        );
        for (edns, cd) in [(None, false), (Some(false), true), (Some(true), false)] {
            let msg = message("WwW.ExAmple.TEST.", RecordType::A, edns, cd);
            let (fast, slow) = both(&entry, "www.example.test.", &msg, 7, 1232);
            assert_eq!(fast.as_deref(), Some(slow.as_slice()));
            let resp = Message::from_vec(&slow).unwrap();
            assert_eq!(resp.metadata.id, 0xabcd);
            assert!(resp.metadata.recursion_available && resp.metadata.recursion_desired);
            assert_eq!(resp.metadata.checking_disabled, cd);
            assert_eq!(resp.queries[0].name().to_ascii(), "WwW.ExAmple.TEST.");
            let ttls: Vec<u32> = resp.answers.iter().map(|r| r.ttl).collect();
            assert_eq!(ttls, [3593, 293, 293]);
            assert_eq!(resp.edns.as_ref().map(|e| e.flags().dnssec_ok), edns);
        }
    }

    #[test]
    fn keys_short_and_long_hash_and_compare_as_their_bytes() {
        use std::hash::BuildHasher;
        let hasher = std::collections::hash_map::RandomState::new();
        let long = format!("{}.example.test.", "a".repeat(60));
        for qname in ["Short.Example.TEST.", long.as_str()] {
            let msg = message(qname, RecordType::AAAA, Some(true), false);
            let req = parse(&msg).unwrap();
            let (buf, question_len) = KeyBuf::from_message(&msg, &req).unwrap();
            assert_eq!(question_len, msg.len() - HEADER_LEN - OPT_LEN);
            let key = Key::new(
                &name(&qname.to_lowercase()),
                RecordType::AAAA,
                DNSClass::IN,
                true,
            );
            assert_eq!(key, buf.to_key());
            assert_eq!(std::borrow::Borrow::<[u8]>::borrow(&key), buf.as_bytes());
            assert_eq!(hasher.hash_one(&key), hasher.hash_one(buf.as_bytes()));
            assert_eq!(key.name().to_ascii(), qname.to_lowercase());
            assert_eq!(
                (key.qtype(), key.class(), key.dnssec_ok()),
                (RecordType::AAAA, DNSClass::IN, true)
            );
            assert_ne!(
                key,
                Key::new(&name(qname), RecordType::AAAA, DNSClass::IN, false)
            );
        }
        assert!(Key::new(&name(&long), RecordType::A, DNSClass::IN, false).memory() > 48 + 60);
    }

    #[test]
    fn prepared_negative_answer_matches_the_encoder() {
        let soa = SOA::new(
            name("ns.example.test."),
            name("host.example.test."),
            1,
            7200,
            3600,
            1_209_600,
            300,
        );
        let auth = vec![set("example.test.", 300, &[RData::SOA(soa)])];
        let entry = Entry::new(
            ResponseCode::NXDomain,
            Kind::Negative,
            Vec::new(),
            auth,
            300,
            true,
            Instant::now(),
        );
        let msg = message("Nope.example.TEST.", RecordType::AAAA, Some(false), false);
        let (fast, slow) = both(&entry, "nope.example.test.", &msg, 299, 1232);
        assert_eq!(fast.as_deref(), Some(slow.as_slice()));
        let resp = Message::from_vec(&slow).unwrap();
        assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(resp.authorities[0].ttl, 1);
    }

    #[test]
    fn prepared_form_is_not_used_when_it_cannot_be() {
        let many: Vec<RData> = (0..40).map(|i| RData::A(A::new(192, 0, 2, i))).collect();
        let entry = Entry::new(
            ResponseCode::NoError,
            Kind::Positive,
            vec![set("big.example.test.", 300, &many)],
            Vec::new(),
            300,
            true,
            Instant::now(),
        );
        // Too big for 512 bytes without EDNS: the encoder truncates instead.
        let msg = message("big.example.test.", RecordType::A, None, false);
        let (fast, slow) = both(&entry, "big.example.test.", &msg, 0, 512);
        assert_eq!(fast, None);
        assert_ne!(slow[2] & 0x02, 0, "TC=1");
        // Prepared for another question of the same length.
        let msg = message("bog.example.test.", RecordType::A, None, false);
        let (fast, _) = both(&entry, "big.example.test.", &msg, 0, 1232);
        assert_eq!(fast, None);
    }
}
