//! Encoding answers into a caller-owned buffer, truncating by whole RRsets.
//!
//! # How the listener uses this
//!
//! ```text
//! let opts = EncodeOptions { max_udp_payload: config_value };     // once, from config
//! match wire::request::parse(bytes) {
//!     Ok(req) => {
//!         let max = match transport { Udp => opts.udp_limit(&req), Tcp => u16::MAX };
//!         match auth::answer(&req, &zones) {
//!             Some(answer) => encode(&req, &answer, max, &opts, out),
//!             None => encode_error(&Rejection::for_request(&req, ResponseCode::Refused), &opts, out),
//!         };
//!     }
//!     Err(Rejection::Drop) => { /* send nothing */ }
//!     Err(rejection) => encode_error(&rejection, &opts, out),
//! }
//! ```
//!
//! Both functions clear `out` first and return the message length (`out.len()`). For TCP,
//! write the 2-byte length prefix separately: the message must start at offset 0 of `out`
//! or the compression pointers would be off.
//!
//! # Rules implemented
//! - Header: id, opcode, RD echoed; QR=1; AA from the answer; CD copied (RFC 4035 §3.1.6);
//!   RA=0 and AD=0 (authoritative only); Z cleared.
//! - The question is echoed exactly as received (case preserved, RFC 4343 §4.1).
//! - OPT in the response exactly when the query had one (RFC 6891 §7), advertising
//!   [`EncodeOptions::max_udp_payload`], version 0, DO echoed (RFC 3225 §3), upper rcode
//!   bits in its extended-rcode field (RFC 6891 §6.1.3). Room for it is reserved first.
//! - Truncation by whole RRsets only (RFC 2181 §9). An answer or authority RRset that does
//!   not fit sets TC=1 and, as Knot does, empties all three sections (question and OPT
//!   stay). An additional RRset that does not fit is left out silently, unless it is one
//!   of the first `required_additionals` (glue, RFC 9471 §3): then TC=1 is set, what fit so
//!   far is kept (as Knot does) and nothing more is added.
//! - Name compression is on (RFC 1035 §4.1.4), done by [`super::writer::Writer`] without
//!   allocating; output is byte-identical to Knot 3.2 for the cases in tests/wire_codec.rs.

use hickory_proto::op::{OpCode, ResponseCode};
use hickory_proto::rr::RecordType;

use std::borrow::Cow;

use crate::auth::{Answer, ZoneAnswer};
use crate::wire::request::{HEADER_LEN, MIN_EDNS_PAYLOAD, Rejection, Request, RequestEdns};
use crate::wire::writer::Writer;
use crate::zone::rdata::Rdatas;
use crate::zone::{RRset, WireRRset};

/// An RRset the encoder can write: zone data in wire form ([`WireRRset`]) or hickory
/// records (`Cow<RRset>`, from the cache).
pub trait EncodeRRset {
    /// Writes every record of the RRset within `limit` bytes, or none of them: returns
    /// the record count, or `None` (with the message and compression targets rolled back)
    /// when it does not fit.
    fn put(&self, w: &mut Writer<'_>, limit: usize) -> Option<u16>;
}

/// The parts of an answer the encoder needs; implemented by [`ZoneAnswer`] and [`Answer`].
pub trait Sections {
    type Set: EncodeRRset;
    fn rcode(&self) -> ResponseCode;
    fn authoritative(&self) -> bool;
    fn answers(&self) -> &[Self::Set];
    fn authorities(&self) -> &[Self::Set];
    fn additionals(&self) -> &[Self::Set];
    fn required_additionals(&self) -> usize;
}

macro_rules! sections {
    ($ty:ident, $set:ty) => {
        impl<'z> Sections for $ty<'z> {
            type Set = $set;
            fn rcode(&self) -> ResponseCode {
                self.rcode
            }
            fn authoritative(&self) -> bool {
                self.authoritative
            }
            fn answers(&self) -> &[Self::Set] {
                &self.answers
            }
            fn authorities(&self) -> &[Self::Set] {
                &self.authorities
            }
            fn additionals(&self) -> &[Self::Set] {
                &self.additionals
            }
            fn required_additionals(&self) -> usize {
                self.required_additionals
            }
        }
    };
}

sections!(ZoneAnswer, WireRRset<'z>);
sections!(Answer, Cow<'z, RRset>);

impl EncodeRRset for WireRRset<'_> {
    fn put(&self, w: &mut Writer<'_>, limit: usize) -> Option<u16> {
        let mark = w.offset();
        let mut written: u16 = 0;
        for rdata in Rdatas::new(&self.rdata) {
            let fits = w
                .put_wire_record(&self.owner, self.rtype, self.ttl, rdata)
                .is_ok()
                && w.offset() <= limit;
            match written.checked_add(1) {
                Some(n) if fits => written = n,
                _ => {
                    w.truncate(mark);
                    return None;
                }
            }
        }
        Some(written)
    }
}

impl EncodeRRset for Cow<'_, RRset> {
    fn put(&self, w: &mut Writer<'_>, limit: usize) -> Option<u16> {
        put_rrset(w, self, limit)
    }
}

/// Size of an OPT record without options: root owner (1), type, class, TTL, RDLENGTH.
pub const OPT_LEN: usize = 11;

/// Default EDNS UDP payload we advertise: the DNS Flag Day 2020 value, which avoids IP
/// fragmentation on practically every path.
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;

/// Encoder settings that come from configuration, fixed for the life of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// The UDP payload size we advertise in our OPT record and the most we send over UDP
    /// (RFC 6891 §6.2.3, §6.2.5). Values below 512 are treated as 512.
    pub max_udp_payload: u16,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
        }
    }
}

impl EncodeOptions {
    /// The `max_size` to pass to [`encode`] for a UDP response to `req`: the requestor's
    /// EDNS payload size (512 without EDNS, RFC 1035 §4.2.1) capped by ours (RFC 6891 §6.2.5).
    pub fn udp_limit(&self, req: &Request) -> u16 {
        let client = req.edns.map_or(MIN_EDNS_PAYLOAD, |e| e.max_payload);
        client.min(self.max_udp_payload).max(MIN_EDNS_PAYLOAD)
    }

    fn advertised_payload(&self) -> u16 {
        self.max_udp_payload.max(MIN_EDNS_PAYLOAD)
    }
}

impl Rejection {
    /// An error response (e.g. REFUSED when no served zone holds the name) to a request
    /// that parsed fine.
    pub fn for_request(req: &Request, rcode: ResponseCode) -> Rejection {
        Rejection::Error {
            id: req.id,
            opcode: req.opcode,
            rcode,
            query: Some(req.query.clone()),
            recursion_desired: req.recursion_desired,
            edns: req.edns,
        }
    }
}

/// Header fields of a response, written last once the counts and TC are known.
struct Header {
    id: u16,
    opcode: OpCode,
    authoritative: bool,
    truncated: bool,
    recursion_desired: bool,
    checking_disabled: bool,
    rcode: ResponseCode,
    /// QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT.
    counts: [u16; 4],
}

impl Header {
    fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let opcode = u8::from(self.opcode) & 0x0F;
        // RFC 1035 §4.1.1: QR, opcode, AA, TC, RD | RA=0, Z=0, AD=0, CD, RCODE (low 4 bits).
        let flags1 = 0x80
            | (opcode << 3)
            | (u8::from(self.authoritative) << 2)
            | (u8::from(self.truncated) << 1)
            | u8::from(self.recursion_desired);
        let flags2 = (u8::from(self.checking_disabled) << 4) | self.rcode.low();
        let [id_hi, id_lo] = self.id.to_be_bytes();
        let [qd_hi, qd_lo] = self.counts[0].to_be_bytes();
        let [an_hi, an_lo] = self.counts[1].to_be_bytes();
        let [ns_hi, ns_lo] = self.counts[2].to_be_bytes();
        let [ar_hi, ar_lo] = self.counts[3].to_be_bytes();
        [
            id_hi, id_lo, flags1, flags2, qd_hi, qd_lo, an_hi, an_lo, ns_hi, ns_lo, ar_hi, ar_lo,
        ]
    }
}

/// Encodes the answer to `req` into `out` (cleared first), keeping the message within
/// `max_size` bytes, and returns the encoded length.
///
/// `max_size` is the limit the caller computed: [`EncodeOptions::udp_limit`] for UDP,
/// `u16::MAX` for TCP. Values below 512 are raised to 512 (RFC 1035 §2.3.4), so the
/// question and the OPT record always fit.
pub fn encode<A: Sections>(
    req: &Request,
    answer: &A,
    max_size: u16,
    opts: &EncodeOptions,
    out: &mut Vec<u8>,
) -> usize {
    let max_size = max_size.max(MIN_EDNS_PAYLOAD);
    let opt_reserve = if req.edns.is_some() { OPT_LEN } else { 0 };
    let mut header = Header {
        id: req.id,
        opcode: req.opcode,
        authoritative: answer.authoritative(),
        truncated: false,
        recursion_desired: req.recursion_desired,
        checking_disabled: req.checking_disabled,
        rcode: answer.rcode(),
        counts: [0; 4],
    };

    let mut w = Writer::new(out);
    // Room for the OPT record is reserved before anything else (RFC 6891 §7).
    let limit = usize::from(max_size) - opt_reserve;
    // The question always fits: 12 + 255 + 4 + 11 < 512.
    w.put_query(&req.query);
    header.counts[0] = 1;
    let after_question = w.offset();

    'sections: for (count, rrsets) in [(1, answer.answers()), (2, answer.authorities())] {
        for rrset in rrsets {
            match rrset.put(&mut w, limit) {
                Some(n) => header.counts[count] = header.counts[count].saturating_add(n),
                None => {
                    header.truncated = true;
                    break 'sections;
                }
            }
        }
    }
    if header.truncated {
        // RFC 2181 §9 allows dropping what was already there; Knot sends only the question
        // (and OPT), which tells the client plainly to retry over TCP.
        w.truncate(after_question);
        header.counts[1] = 0;
        header.counts[2] = 0;
    } else {
        for (index, rrset) in answer.additionals().iter().enumerate() {
            match rrset.put(&mut w, limit) {
                Some(n) => header.counts[3] = header.counts[3].saturating_add(n),
                // RFC 9471 §3: missing required glue must be signalled with TC=1.
                None if index < answer.required_additionals() => {
                    header.truncated = true;
                    break;
                }
                // Optional additional data may be left out silently (RFC 2181 §9).
                None => {}
            }
        }
    }

    if let Some(edns) = req.edns {
        put_opt(&mut w, answer.rcode(), edns, opts);
        header.counts[3] = header.counts[3].saturating_add(1);
    }
    w.set_header(&header.to_bytes());
    w.offset()
}

/// Encodes an error response (FORMERR, NOTIMP, REFUSED, BADVERS, ...) for a rejected packet
/// into `out` (cleared first) and returns its length; 0 (nothing to send) for
/// [`Rejection::Drop`].
///
/// The question is echoed when it parsed; an OPT record is added when the request had a
/// valid one (RFC 6891 §7), carrying the upper rcode bits (BADVERS, RFC 6891 §6.1.3).
pub fn encode_error(rejection: &Rejection, opts: &EncodeOptions, out: &mut Vec<u8>) -> usize {
    let Rejection::Error {
        id,
        opcode,
        rcode,
        query,
        recursion_desired,
        edns,
    } = rejection
    else {
        out.clear();
        return 0;
    };
    let mut header = Header {
        id: *id,
        opcode: *opcode,
        authoritative: false,
        truncated: false,
        recursion_desired: *recursion_desired,
        checking_disabled: false,
        rcode: *rcode,
        counts: [0; 4],
    };
    let mut w = Writer::new(out);
    if let Some(query) = query {
        w.put_query(query);
        header.counts[0] = 1;
    }
    if let Some(edns) = edns {
        put_opt(&mut w, *rcode, *edns, opts);
        header.counts[3] = 1;
    }
    w.set_header(&header.to_bytes());
    w.offset()
}

/// Writes every record of `rrset` within `limit` bytes, or none of them: returns the
/// record count, or `None` (with the message and compression targets rolled back) when it
/// does not fit.
fn put_rrset(w: &mut Writer<'_>, rrset: &RRset, limit: usize) -> Option<u16> {
    let mark = w.offset();
    let mut written: u16 = 0;
    for record in &rrset.records {
        let fits = w.put_record(record).is_ok() && w.offset() <= limit;
        match written.checked_add(1) {
            Some(n) if fits => written = n,
            _ => {
                w.truncate(mark);
                return None;
            }
        }
    }
    Some(written)
}

/// Writes our OPT record (RFC 6891 §6.1.2, §6.1.3): root owner, our payload size, the
/// upper 8 bits of the 12-bit rcode, version 0, DO echoed (RFC 3225 §3), no options.
fn put_opt(w: &mut Writer<'_>, rcode: ResponseCode, edns: RequestEdns, opts: &EncodeOptions) {
    let flags: u16 = if edns.dnssec_ok { 0x8000 } else { 0 };
    w.put_u8(0);
    w.put_u16(u16::from(RecordType::OPT));
    w.put_u16(opts.advertised_payload());
    w.put_u32(u32::from_be_bytes([rcode.high(), 0, 0, 0]) | u32::from(flags));
    w.put_u16(0);
}
