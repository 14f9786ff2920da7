//! Wire codec tests: strict query parsing (malformed packets, EDNS) and response encoding
//! (header echo, OPT, RRset-level truncation). Expected rcodes follow the RFCs and, where
//! they are silent, what Knot DNS 3.2 answers to the same bytes.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use muninn::auth::{Answer, ZoneAnswer};
use muninn::wire::request::{Rejection, Request, RequestEdns, parse};
use muninn::wire::response::{EncodeOptions, encode, encode_error};
use muninn::zone::{RRset, WireRRset};

// ---------------------------------------------------------------------------------------
// Packet construction helpers
// ---------------------------------------------------------------------------------------

const ID: u16 = 0x1234;

fn header(flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [ID, flags, qd, an, ns, ar] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v
}

fn wire_name(name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        v.push(label.len() as u8);
        v.extend_from_slice(label.as_bytes());
    }
    v.push(0);
    v
}

fn question(name: &str, qtype: u16, qclass: u16) -> Vec<u8> {
    let mut v = wire_name(name);
    v.extend_from_slice(&qtype.to_be_bytes());
    v.extend_from_slice(&qclass.to_be_bytes());
    v
}

fn www() -> Vec<u8> {
    question("www.example.", 1, 1)
}

fn opt_full(owner: &[u8], payload: u16, ext: u8, version: u8, flags: u16, opts: &[u8]) -> Vec<u8> {
    let mut v = owner.to_vec();
    v.extend_from_slice(&41u16.to_be_bytes());
    v.extend_from_slice(&payload.to_be_bytes());
    v.push(ext);
    v.push(version);
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&(opts.len() as u16).to_be_bytes());
    v.extend_from_slice(opts);
    v
}

fn opt(payload: u16) -> Vec<u8> {
    opt_full(&[0], payload, 0, 0, 0, &[])
}

fn a_record(owner: &[u8], rdlen: u16, rdata: &[u8]) -> Vec<u8> {
    let mut v = owner.to_vec();
    v.extend_from_slice(&1u16.to_be_bytes());
    v.extend_from_slice(&1u16.to_be_bytes());
    v.extend_from_slice(&60u32.to_be_bytes());
    v.extend_from_slice(&rdlen.to_be_bytes());
    v.extend_from_slice(rdata);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A plain `www.example. IN A` query with RD=1.
fn simple_query() -> Vec<u8> {
    cat(&[&header(0x0100, 1, 0, 0, 0), &www()])
}

fn opts() -> EncodeOptions {
    EncodeOptions {
        max_udp_payload: 1232,
    }
}

// ---------------------------------------------------------------------------------------
// Response inspection helpers
// ---------------------------------------------------------------------------------------

struct Raw {
    id: u16,
    qr: bool,
    opcode: u8,
    aa: bool,
    tc: bool,
    rd: bool,
    ra: bool,
    ad: bool,
    cd: bool,
    rcode_low: u8,
    counts: [u16; 4],
}

fn raw(bytes: &[u8]) -> Raw {
    assert!(bytes.len() >= 12, "response shorter than a header");
    let u = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
    Raw {
        id: u(0),
        qr: bytes[2] & 0x80 != 0,
        opcode: (bytes[2] >> 3) & 0x0F,
        aa: bytes[2] & 0x04 != 0,
        tc: bytes[2] & 0x02 != 0,
        rd: bytes[2] & 0x01 != 0,
        ra: bytes[3] & 0x80 != 0,
        ad: bytes[3] & 0x20 != 0,
        cd: bytes[3] & 0x10 != 0,
        rcode_low: bytes[3] & 0x0F,
        counts: [u(4), u(6), u(8), u(10)],
    }
}

/// Parses `bytes`, expects an error, encodes it and decodes the result.
fn reject(bytes: &[u8]) -> (Rejection, Vec<u8>) {
    let rejection = parse(bytes).expect_err("packet must be rejected");
    let mut out = Vec::new();
    let n = encode_error(&rejection, &opts(), &mut out);
    assert_eq!(n, out.len());
    (rejection, out)
}

/// Asserts that `bytes` gets an error response with `rcode`, the header echoed, and the
/// question present iff `with_question`; returns the decoded response.
#[track_caller]
fn assert_error(bytes: &[u8], rcode: ResponseCode, with_question: bool) -> Message {
    let (rejection, out) = reject(bytes);
    match &rejection {
        Rejection::Error { rcode: r, .. } => assert_eq!(*r, rcode, "rejection {rejection:?}"),
        Rejection::Drop => panic!("expected {rcode}, got Drop"),
    }
    let h = raw(&out);
    assert_eq!(h.id, ID);
    assert!(h.qr);
    assert_eq!(h.opcode, (bytes[2] >> 3) & 0x0F, "opcode echoed");
    assert_eq!(h.rd, bytes[2] & 1 != 0, "RD echoed");
    assert!(!h.aa && !h.tc && !h.ra && !h.ad);
    assert_eq!(h.rcode_low, rcode.low());
    assert_eq!(h.counts[0], u16::from(with_question));
    assert_eq!(h.counts[1], 0);
    assert_eq!(h.counts[2], 0);
    let msg = Message::from_vec(&out).expect("error response decodes");
    assert_eq!(msg.metadata.response_code, rcode);
    msg
}

#[track_caller]
fn assert_formerr(bytes: &[u8], with_question: bool) {
    let msg = assert_error(bytes, ResponseCode::FormErr, with_question);
    // Malformed packets never get an OPT: we cannot trust what we read.
    assert!(msg.edns.is_none(), "no OPT in FORMERR for malformed packet");
    if with_question {
        assert_eq!(msg.queries[0].name().to_ascii(), "www.example.");
    }
}

// ---------------------------------------------------------------------------------------
// Malformed and unusual packets
// ---------------------------------------------------------------------------------------

#[test]
fn drop_short_packets() {
    assert_eq!(parse(&[]), Err(Rejection::Drop));
    assert_eq!(parse(&simple_query()[..11]), Err(Rejection::Drop));
    let mut out = vec![1, 2, 3];
    assert_eq!(encode_error(&Rejection::Drop, &opts(), &mut out), 0);
    assert!(out.is_empty());
}

#[test]
fn drop_responses() {
    // QR=1, otherwise a perfectly valid packet.
    let pkt = cat(&[&header(0x8100, 1, 0, 0, 0), &www()]);
    assert_eq!(parse(&pkt), Err(Rejection::Drop));
    // QR=1 with garbage after the header.
    let pkt = cat(&[&header(0x8000, 5, 5, 5, 5), &[0xff; 3]]);
    assert_eq!(parse(&pkt), Err(Rejection::Drop));
}

#[test]
fn formerr_no_question() {
    assert_formerr(&header(0x0100, 0, 0, 0, 0), false);
}

#[test]
fn formerr_no_question_keeps_valid_opt() {
    // As Knot: QDCOUNT=0 with a valid OPT gets FORMERR with OPT.
    let pkt = cat(&[&header(0x0100, 0, 0, 0, 1), &opt(1232)]);
    let msg = assert_error(&pkt, ResponseCode::FormErr, false);
    let edns = msg.edns.expect("OPT echoed");
    assert_eq!(edns.max_payload(), 1232);
}

#[test]
fn formerr_two_questions() {
    let pkt = cat(&[&header(0x0100, 2, 0, 0, 0), &www(), &www()]);
    assert_formerr(&pkt, false);
}

#[test]
fn formerr_label_too_long() {
    let mut name = vec![64];
    name.extend_from_slice(&[b'a'; 64]);
    name.push(0);
    let pkt = cat(&[&header(0x0100, 1, 0, 0, 0), &name, &[0, 1, 0, 1]]);
    assert_formerr(&pkt, false);
}

#[test]
fn formerr_name_too_long() {
    // 4 labels of 63 + length bytes + root = 257 octets > 255 (RFC 1035 §2.3.4).
    let mut name = Vec::new();
    for _ in 0..4 {
        name.push(63);
        name.extend_from_slice(&[b'a'; 63]);
    }
    name.push(0);
    let pkt = cat(&[&header(0x0100, 1, 0, 0, 0), &name, &[0, 1, 0, 1]]);
    assert_formerr(&pkt, false);
}

#[test]
fn accept_name_of_exactly_255_octets() {
    // 3*64 + 62 + 1 = 255 octets.
    let mut name = Vec::new();
    for _ in 0..3 {
        name.push(63);
        name.extend_from_slice(&[b'a'; 63]);
    }
    name.push(61);
    name.extend_from_slice(&[b'b'; 61]);
    name.push(0);
    assert_eq!(name.len(), 255);
    let pkt = cat(&[&header(0x0100, 1, 0, 0, 0), &name, &[0, 1, 0, 1]]);
    let req = parse(&pkt).expect("255-octet name is legal");
    assert_eq!(req.query.name().num_labels(), 4);
}

#[test]
fn formerr_bad_label_types() {
    // 0b10 and 0b01 label types are reserved / obsolete (RFC 6891 §5).
    for first in [0x80u8, 0x40] {
        let pkt = cat(&[
            &header(0x0100, 1, 0, 0, 0),
            &[first, b'a', 0],
            &[0, 1, 0, 1],
        ]);
        assert_formerr(&pkt, false);
    }
}

#[test]
fn formerr_pointer_to_itself() {
    let pkt = cat(&[&header(0x0100, 1, 0, 0, 0), &[0xc0, 12], &[0, 1, 0, 1]]);
    assert_formerr(&pkt, false);
}

#[test]
fn formerr_forward_pointer() {
    let mut pkt = cat(&[&header(0x0100, 1, 0, 0, 0), &[0xc0, 18], &[0, 1, 0, 1]]);
    pkt.extend_from_slice(&wire_name("example."));
    assert_formerr(&pkt, false);
}

#[test]
fn formerr_pointer_out_of_bounds() {
    let pkt = cat(&[&header(0x0100, 1, 0, 0, 0), &[0xff, 0xff], &[0, 1, 0, 1]]);
    assert_formerr(&pkt, false);
}

#[test]
fn formerr_pointer_loop_between_records() {
    // Additional record owner: label "a" then a pointer back to itself (a loop through
    // an earlier offset): 12+17 = 29 is where the owner starts.
    let q = www();
    let owner_at = (12 + q.len()) as u8;
    let owner = [1, b'a', 0xc0, owner_at];
    let pkt = cat(&[
        &header(0x0100, 1, 0, 0, 1),
        &q,
        &a_record(&owner, 4, &[1, 2, 3, 4]),
    ]);
    assert_formerr(&pkt, true);
}

#[test]
fn accept_valid_backward_pointer() {
    // Additional A record whose owner points back to the question name.
    let pkt = cat(&[
        &header(0x0100, 1, 0, 0, 1),
        &www(),
        &a_record(&[0xc0, 12], 4, &[1, 2, 3, 4]),
    ]);
    let req = parse(&pkt).expect("backward pointer is fine");
    assert_eq!(req.edns, None);
}

#[test]
fn formerr_truncated_question() {
    let q = www();
    for cut in [1, 2, 4, q.len() - 5] {
        let pkt = cat(&[&header(0x0100, 1, 0, 0, 0), &q[..q.len() - cut]]);
        assert_formerr(&pkt, false);
    }
}

#[test]
fn formerr_two_opt_records() {
    let pkt = cat(&[&header(0x0100, 1, 0, 0, 2), &www(), &opt(1232), &opt(1232)]);
    assert_formerr(&pkt, true);
}

#[test]
fn formerr_opt_owner_not_root() {
    let pkt = cat(&[
        &header(0x0100, 1, 0, 0, 1),
        &www(),
        &opt_full(&wire_name("a."), 1232, 0, 0, 0, &[]),
    ]);
    assert_formerr(&pkt, true);
}

#[test]
fn formerr_opt_in_answer_or_authority() {
    let pkt = cat(&[&header(0x0100, 1, 1, 0, 0), &www(), &opt(1232)]);
    assert_formerr(&pkt, true);
    let pkt = cat(&[&header(0x0100, 1, 0, 1, 0), &www(), &opt(1232)]);
    assert_formerr(&pkt, true);
}

#[test]
fn formerr_opt_option_longer_than_rdata() {
    let option = [0, 10, 0, 8, b'1', b'2', b'3', b'4'];
    let pkt = cat(&[
        &header(0x0100, 1, 0, 0, 1),
        &www(),
        &opt_full(&[0], 1232, 0, 0, 0, &option),
    ]);
    assert_formerr(&pkt, true);
}

#[test]
fn formerr_opt_partial_option_header() {
    let pkt = cat(&[
        &header(0x0100, 1, 0, 0, 1),
        &www(),
        &opt_full(&[0], 1232, 0, 0, 0, &[0, 10, 0]),
    ]);
    assert_formerr(&pkt, true);
}

#[test]
fn formerr_opt_rdlength_past_end() {
    let mut o = opt(1232);
    let len = o.len();
    o[len - 2..].copy_from_slice(&10u16.to_be_bytes());
    o.extend_from_slice(b"12");
    let pkt = cat(&[&header(0x0100, 1, 0, 0, 1), &www(), &o]);
    assert_formerr(&pkt, true);
}

#[test]
fn formerr_missing_records() {
    for (an, ns, ar) in [(0, 0, 1), (0, 1, 0), (1, 0, 0), (0, 0, 3)] {
        let pkt = cat(&[&header(0x0100, 1, an, ns, ar), &www()]);
        assert_formerr(&pkt, true);
    }
    // One OPT present, ARCOUNT says two.
    let pkt = cat(&[&header(0x0100, 1, 0, 0, 2), &www(), &opt(1232)]);
    assert_formerr(&pkt, true);
}

#[test]
fn formerr_trailing_garbage() {
    let pkt = cat(&[&simple_query(), &[0, 0]]);
    assert_formerr(&pkt, true);
    let pkt = cat(&[&header(0x0100, 1, 0, 0, 1), &www(), &opt(1232), b"x"]);
    assert_formerr(&pkt, true);
}

#[test]
fn formerr_bad_rdata_in_additional() {
    // An A record with 3 bytes of rdata (Knot: FORMERR).
    let pkt = cat(&[
        &header(0x0100, 1, 0, 0, 1),
        &www(),
        &a_record(&wire_name("x."), 3, &[1, 2, 3]),
    ]);
    assert_formerr(&pkt, true);
}

#[test]
fn formerr_truncated_record_fixed_part() {
    let rec = a_record(&wire_name("x."), 4, &[1, 2, 3, 4]);
    for cut in [1, 5, 9] {
        let pkt = cat(&[&header(0x0100, 1, 0, 0, 1), &www(), &rec[..rec.len() - cut]]);
        assert_formerr(&pkt, true);
    }
}

#[test]
fn records_in_answer_and_authority_are_ignored() {
    // Knot answers such a query normally; so do we (the records are checked, then ignored).
    let rec = a_record(&wire_name("www.example."), 4, &[1, 2, 3, 4]);
    let pkt = cat(&[&header(0x0100, 1, 1, 1, 0), &www(), &rec, &rec]);
    let req = parse(&pkt).expect("accepted");
    assert_eq!(req.query.name().to_ascii(), "www.example.");
    assert_eq!(req.edns, None);
}

#[test]
fn ignored_header_bits() {
    // TC, AA, Z, AD and a nonzero RCODE in a query change nothing; CD and RD are captured.
    let pkt = cat(&[
        &header(
            0x0100 | 0x0600 | 0x0040 | 0x0020 | 0x0010 | 0x0005,
            1,
            0,
            0,
            0,
        ),
        &www(),
    ]);
    let req = parse(&pkt).expect("accepted");
    assert!(req.recursion_desired);
    assert!(req.checking_disabled);
    let pkt = cat(&[&header(0x0000, 1, 0, 0, 0), &www()]);
    let req = parse(&pkt).expect("accepted");
    assert!(!req.recursion_desired);
    assert!(!req.checking_disabled);
}

#[test]
fn notimp_for_other_opcodes() {
    // IQUERY(1), STATUS(2), NOTIFY(4), UPDATE(5), unassigned 6 and 15.
    for opcode in [1u16, 2, 4, 5, 6, 15] {
        let pkt = cat(&[&header((opcode << 11) | 0x0100, 1, 0, 0, 0), &www()]);
        let msg = assert_error(&pkt, ResponseCode::NotImp, true);
        assert_eq!(u8::from(msg.metadata.op_code), opcode as u8);
        assert!(msg.edns.is_none());
    }
}

#[test]
fn notimp_echoes_opt_and_survives_garbage() {
    let pkt = cat(&[&header(15 << 11, 1, 0, 0, 1), &www(), &opt(4096)]);
    let msg = assert_error(&pkt, ResponseCode::NotImp, true);
    assert_eq!(msg.edns.expect("OPT").max_payload(), 1232);
    // Unknown opcode and an unparseable question: still NOTIMP (RFC 8906 §3.1.4).
    let pkt = cat(&[&header(15 << 11, 1, 0, 0, 0), &[0xff]]);
    assert_error(&pkt, ResponseCode::NotImp, false);
    // Unknown opcode with no question.
    assert_error(&header(6 << 11, 0, 0, 0, 0), ResponseCode::NotImp, false);
}

#[test]
fn question_case_and_class_preserved() {
    let pkt = cat(&[
        &header(0x0100, 1, 0, 0, 0),
        &question("WwW.ExAmPlE.", 16, 3),
    ]);
    let req = parse(&pkt).unwrap();
    assert_eq!(req.query.name().to_ascii(), "WwW.ExAmPlE.");
    assert_eq!(req.query.query_type(), RecordType::TXT);
    // Error responses echo the exact question bytes too.
    let (_, out) = reject(&cat(&[&pkt, &[0]]));
    assert_eq!(&out[12..], &question("WwW.ExAmPlE.", 16, 3)[..]);
}

// ---------------------------------------------------------------------------------------
// EDNS
// ---------------------------------------------------------------------------------------

#[test]
fn edns_fields_captured() {
    let pkt = cat(&[
        &header(0x0100, 1, 0, 0, 1),
        &www(),
        &opt_full(&[0], 4096, 0, 0, 0x8000, &[]),
    ]);
    let req = parse(&pkt).unwrap();
    assert_eq!(
        req.edns,
        Some(RequestEdns {
            max_payload: 4096,
            version: 0,
            dnssec_ok: true
        })
    );
    assert_eq!(opts().udp_limit(&req), 1232);
}

#[test]
fn edns_small_payload_raised_to_512() {
    let pkt = cat(&[&header(0x0100, 1, 0, 0, 1), &www(), &opt(100)]);
    let req = parse(&pkt).unwrap();
    assert_eq!(req.edns.unwrap().max_payload, 512);
    assert_eq!(opts().udp_limit(&req), 512);
    let noedns = parse(&simple_query()).unwrap();
    assert_eq!(opts().udp_limit(&noedns), 512);
}

#[test]
fn edns_unknown_options_ignored() {
    // An unknown option code and a COOKIE-sized option, both well-formed.
    let mut options = vec![0xfd, 0xe9, 0, 2, b'x', b'y'];
    options.extend_from_slice(&[0, 10, 0, 8]);
    options.extend_from_slice(&[7; 8]);
    let pkt = cat(&[
        &header(0x0100, 1, 0, 0, 1),
        &www(),
        &opt_full(&[0], 1232, 0, 0, 0, &options),
    ]);
    let req = parse(&pkt).unwrap();
    assert_eq!(req.edns.unwrap().max_payload, 1232);
    // An extended rcode in a query is ignored too (Knot answers normally).
    let pkt = cat(&[
        &header(0x0100, 1, 0, 0, 1),
        &www(),
        &opt_full(&[0], 1232, 1, 0, 0, &[]),
    ]);
    assert!(parse(&pkt).is_ok());
}

#[test]
fn edns_badvers() {
    for (flags, dnssec_ok) in [(0u16, false), (0x8000, true)] {
        let pkt = cat(&[
            &header(0x0100, 1, 0, 0, 1),
            &www(),
            &opt_full(&[0], 4096, 0, 1, flags, &[]),
        ]);
        let (rejection, out) = reject(&pkt);
        match &rejection {
            Rejection::Error { rcode, edns, .. } => {
                assert_eq!(*rcode, ResponseCode::BADVERS);
                assert_eq!(edns.map(|e| e.version), Some(1));
            }
            Rejection::Drop => panic!("BADVERS expected"),
        }
        let h = raw(&out);
        // Header carries the low 4 bits (0), the OPT the upper 8 bits (1): 16 = BADVERS.
        assert_eq!(h.rcode_low, 0);
        assert_eq!(h.counts, [1, 0, 0, 1]);
        let tail = &out[out.len() - 11..];
        assert_eq!(tail[0], 0, "root owner");
        assert_eq!(&tail[1..3], &[0, 41]);
        assert_eq!(u16::from_be_bytes([tail[3], tail[4]]), 1232, "our payload");
        assert_eq!(tail[5], 1, "extended rcode");
        assert_eq!(tail[6], 0, "we answer with version 0");
        assert_eq!(tail[7] & 0x80 != 0, dnssec_ok, "DO echoed");
        assert_eq!(&tail[9..11], &[0, 0]);
        // hickory decodes code 16 as BADSIG (the TSIG meaning of the same number).
        let msg = Message::from_vec(&out).unwrap();
        assert_eq!(u16::from(msg.metadata.response_code), 16);
    }
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn rrset(owner: &str, rtype: RecordType, rdatas: Vec<RData>) -> RRset {
    let owner = name(owner);
    RRset {
        name: owner.clone(),
        rtype,
        ttl: 3600,
        records: rdatas
            .into_iter()
            .map(|d| Record::from_rdata(owner.clone(), 3600, d))
            .collect(),
    }
}

fn a_set(owner: &str, n: u8) -> RRset {
    rrset(
        owner,
        RecordType::A,
        (1..=n)
            .map(|i| RData::A(A(Ipv4Addr::new(192, 0, 2, i))))
            .collect(),
    )
}

fn aaaa_set(owner: &str, n: u16) -> RRset {
    rrset(
        owner,
        RecordType::AAAA,
        (1..=n)
            .map(|i| RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))))
            .collect(),
    )
}

fn txt_set(owner: &str, n: usize) -> RRset {
    rrset(
        owner,
        RecordType::TXT,
        (0..n)
            .map(|i| {
                RData::TXT(TXT::new(vec![format!(
                    "record number {i:03} padding padding padding"
                )]))
            })
            .collect(),
    )
}

fn ns_set(owner: &str, targets: &[&str]) -> RRset {
    rrset(
        owner,
        RecordType::NS,
        targets.iter().map(|t| RData::NS(NS(name(t)))).collect(),
    )
}

fn answer<'z>(
    answers: Vec<RRset>,
    authorities: Vec<RRset>,
    additionals: Vec<RRset>,
    required: usize,
) -> Answer<'z> {
    Answer {
        rcode: ResponseCode::NoError,
        authoritative: true,
        answers: answers.into_iter().map(Cow::Owned).collect(),
        authorities: authorities.into_iter().map(Cow::Owned).collect(),
        additionals: additionals.into_iter().map(Cow::Owned).collect(),
        required_additionals: required,
    }
}

fn request(qname: &str, qtype: RecordType, edns: Option<RequestEdns>) -> Request {
    Request {
        id: ID,
        opcode: OpCode::Query,
        query: Query::query(name(qname), qtype),
        recursion_desired: true,
        checking_disabled: false,
        edns,
    }
}

fn edns(payload: u16, dnssec_ok: bool) -> Option<RequestEdns> {
    Some(RequestEdns {
        max_payload: payload,
        version: 0,
        dnssec_ok,
    })
}

/// The same answer with the zone's wire-form RRsets (what `auth::answer` returns).
fn as_zone_answer(ans: &Answer<'_>) -> ZoneAnswer<'static> {
    let wire = |sets: &[Cow<'_, RRset>]| -> Vec<WireRRset<'static>> {
        sets.iter()
            .map(|s| {
                let rdatas: Vec<RData> = s.records.iter().map(|r| r.data.clone()).collect();
                WireRRset::from_rdata(&s.name, s.rtype, s.ttl, &rdatas)
            })
            .collect()
    };
    ZoneAnswer {
        rcode: ans.rcode,
        authoritative: ans.authoritative,
        answers: wire(&ans.answers),
        authorities: wire(&ans.authorities),
        additionals: wire(&ans.additionals),
        required_additionals: ans.required_additionals,
    }
}

fn encode_to_msg(req: &Request, ans: &Answer<'_>, max: u16) -> (Vec<u8>, Message) {
    let mut out = Vec::new();
    let n = encode(req, ans, max, &opts(), &mut out);
    assert_eq!(n, out.len());
    // Zone answers (wire-form RDATA, names re-compressed for the RFC 1035 types) must
    // encode to exactly the same bytes as the record form.
    let mut zone_out = Vec::new();
    encode(req, &as_zone_answer(ans), max, &opts(), &mut zone_out);
    assert_eq!(
        zone_out, out,
        "wire-form encoding differs from record encoding"
    );
    assert!(
        n <= usize::from(max.max(512)),
        "{n} bytes exceed limit {max}"
    );
    let msg = Message::from_vec(&out).expect("our response decodes");
    (out, msg)
}

/// Checks that `records` is a concatenation of whole RRsets taken, in order, from a prefix
/// of the given list, except that unfitting sets may be skipped; returns how many sets.
#[track_caller]
fn assert_whole_rrsets(records: &[Record], sets: &[RRset]) -> usize {
    let mut rest = records;
    let mut used = 0;
    for set in sets {
        if rest.is_empty() {
            break;
        }
        let n = set.records.len();
        let head = &rest[..n.min(rest.len())];
        let matches = head.len() == n
            && head.iter().zip(&set.records).all(|(got, want)| {
                got.name == want.name
                    && got.record_type() == want.record_type()
                    && got.data == want.data
            });
        if matches {
            rest = &rest[n..];
            used += 1;
        } else {
            // This set must be wholly absent: no record of it may appear here.
            assert!(
                !rest
                    .iter()
                    .any(|r| r.name == set.name && r.record_type() == set.rtype),
                "partial RRset {} {}",
                set.name,
                set.rtype
            );
        }
    }
    assert!(
        rest.is_empty(),
        "records not belonging to any RRset in order"
    );
    used
}

#[test]
fn header_and_question_echo() {
    let mut req = request("WwW.ExAmPlE.", RecordType::A, None);
    req.checking_disabled = true;
    let ans = answer(vec![a_set("WwW.ExAmPlE.", 1)], vec![], vec![], 0);
    let (out, msg) = encode_to_msg(&req, &ans, 512);
    let h = raw(&out);
    assert_eq!(h.id, ID);
    assert!(h.qr && h.aa && h.rd && h.cd);
    assert!(!h.tc && !h.ra && !h.ad);
    assert_eq!(h.opcode, 0);
    assert_eq!(h.counts, [1, 1, 0, 0]);
    assert_eq!(&out[12..12 + 17], &question("WwW.ExAmPlE.", 1, 1)[..]);
    assert_eq!(msg.queries[0].name().to_ascii(), "WwW.ExAmPlE.");
    assert!(msg.edns.is_none(), "no OPT without OPT in the query");

    // AA from the answer, RD copied as is, rcode written.
    let mut ans = answer(
        vec![],
        vec![ns_set("example.", &["ns.example."])],
        vec![],
        0,
    );
    ans.authoritative = false;
    ans.rcode = ResponseCode::NXDomain;
    req.recursion_desired = false;
    req.checking_disabled = false;
    let (out, msg) = encode_to_msg(&req, &ans, 512);
    let h = raw(&out);
    assert!(!h.aa && !h.rd && !h.cd);
    assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(msg.metadata.message_type, MessageType::Response);
    assert_eq!(msg.authorities.len(), 1);
}

#[test]
fn opt_present_iff_query_had_opt() {
    let ans = answer(vec![a_set("www.example.", 2)], vec![], vec![], 0);
    let (_, msg) = encode_to_msg(&request("www.example.", RecordType::A, None), &ans, 512);
    assert!(msg.edns.is_none());
    assert_eq!(msg.additionals.len(), 0);

    for dnssec_ok in [false, true] {
        let req = request("www.example.", RecordType::A, edns(4096, dnssec_ok));
        let (out, msg) = encode_to_msg(&req, &ans, opts().udp_limit(&req));
        let e = msg.edns.expect("OPT echoed");
        assert_eq!(
            e.max_payload(),
            1232,
            "advertises our payload, not the client's"
        );
        assert_eq!(e.version(), 0);
        assert_eq!(e.flags().dnssec_ok, dnssec_ok, "DO echoed (RFC 3225)");
        assert_eq!(raw(&out).counts, [1, 2, 0, 1]);
    }
}

#[test]
fn extended_rcode_goes_into_opt() {
    let mut ans = answer(vec![], vec![], vec![], 0);
    ans.rcode = ResponseCode::BADCOOKIE;
    let req = request("www.example.", RecordType::A, edns(1232, false));
    let (out, msg) = encode_to_msg(&req, &ans, 1232);
    assert_eq!(raw(&out).rcode_low, ResponseCode::BADCOOKIE.low());
    assert_eq!(msg.metadata.response_code, ResponseCode::BADCOOKIE);
}

#[test]
fn names_are_compressed() {
    let req = request("www.example.", RecordType::A, None);
    let ans = answer(vec![a_set("www.example.", 3)], vec![], vec![], 0);
    let (out, msg) = encode_to_msg(&req, &ans, 512);
    // 12 header + 17 question + 3 * (2 pointer + 10 fixed + 4 address).
    assert_eq!(out.len(), 12 + 17 + 3 * 16);
    assert_eq!(msg.answers.len(), 3);
}

#[test]
fn truncation_without_edns_leaves_only_the_question() {
    // Knot, 100 TXT over UDP without EDNS: TC=1, QD=1, every other count 0.
    let req = request("big.example.", RecordType::TXT, None);
    let ans = answer(
        vec![txt_set("big.example.", 100)],
        vec![ns_set("example.", &["ns1.example."])],
        vec![a_set("ns1.example.", 1)],
        0,
    );
    let (out, msg) = encode_to_msg(&req, &ans, 512);
    let h = raw(&out);
    assert!(h.tc && h.aa);
    assert_eq!(h.counts, [1, 0, 0, 0]);
    assert_eq!(out.len(), 29, "same size as Knot's truncated response");
    assert!(msg.edns.is_none());
}

#[test]
fn truncation_with_edns_keeps_opt() {
    let req = request("big.example.", RecordType::TXT, edns(4096, true));
    let ans = answer(vec![txt_set("big.example.", 100)], vec![], vec![], 0);
    let (out, msg) = encode_to_msg(&req, &ans, opts().udp_limit(&req));
    let h = raw(&out);
    assert!(h.tc);
    assert_eq!(h.counts, [1, 0, 0, 1]);
    assert!(msg.edns.unwrap().flags().dnssec_ok);

    // Over TCP the same answer fits whole.
    let (out, msg) = encode_to_msg(&req, &ans, u16::MAX);
    assert!(!raw(&out).tc);
    assert_eq!(msg.answers.len(), 100);
    assert_eq!(
        assert_whole_rrsets(&msg.answers, &[txt_set("big.example.", 100)]),
        1
    );
}

#[test]
fn truncation_in_authority_empties_everything() {
    let req = request("www.example.", RecordType::A, None);
    // The answer fits, the authority RRset does not: whole response reduced to the question.
    let ans = answer(
        vec![a_set("www.example.", 2)],
        vec![txt_set("example.", 20)],
        vec![],
        0,
    );
    let (out, _) = encode_to_msg(&req, &ans, 512);
    let h = raw(&out);
    assert!(h.tc);
    assert_eq!(h.counts, [1, 0, 0, 0]);
}

#[test]
fn a_second_answer_rrset_that_does_not_fit_truncates() {
    let req = request("www.example.", RecordType::A, edns(1232, false));
    let ans = answer(
        vec![a_set("www.example.", 4), txt_set("www.example.", 40)],
        vec![],
        vec![],
        0,
    );
    let (out, msg) = encode_to_msg(&req, &ans, 1232);
    assert!(raw(&out).tc);
    assert!(msg.answers.is_empty());
    assert!(msg.edns.is_some());
}

#[test]
fn optional_additionals_dropped_silently_by_whole_rrset() {
    let req = request("example.", RecordType::NS, None);
    // Answer: 2 NS; additionals: a small A set, a huge AAAA set that cannot fit, then
    // another small A set which still fits after the huge one is skipped.
    let additionals = vec![
        a_set("ns1.example.", 2),
        aaaa_set("ns1.example.", 30),
        a_set("ns2.example.", 2),
    ];
    let ans = answer(
        vec![ns_set("example.", &["ns1.example.", "ns2.example."])],
        vec![],
        additionals.clone(),
        0,
    );
    let (out, msg) = encode_to_msg(&req, &ans, 512);
    let h = raw(&out);
    assert!(!h.tc, "optional additional data does not set TC");
    assert_eq!(msg.answers.len(), 2);
    assert_eq!(assert_whole_rrsets(&msg.additionals, &additionals), 2);
    assert_eq!(msg.additionals.len(), 4);
    assert!(
        msg.additionals
            .iter()
            .all(|r| r.record_type() == RecordType::A)
    );
}

#[test]
fn missing_required_glue_sets_tc_and_keeps_whole_rrsets() {
    // A referral with 30 NS and A+AAAA glue for each, like Knot's test above: what fits
    // is kept, by whole RRsets, and TC=1 says glue is missing (RFC 9471 §3).
    let targets: Vec<String> = (0..30)
        .map(|i| format!("ns{i:02}.deleg.example."))
        .collect();
    let target_refs: Vec<&str> = targets.iter().map(String::as_str).collect();
    let mut glue = Vec::new();
    for t in &targets {
        glue.push(a_set(t, 1));
        glue.push(aaaa_set(t, 1));
    }
    let authorities = vec![ns_set("deleg.example.", &target_refs)];
    let mut ans = answer(vec![], authorities.clone(), glue.clone(), glue.len());
    ans.authoritative = false;
    let req = request("www.deleg.example.", RecordType::A, edns(1232, false));
    let (out, msg) = encode_to_msg(&req, &ans, 1232);
    let h = raw(&out);
    assert!(h.tc, "missing required glue sets TC");
    assert!(!h.aa);
    assert_eq!(msg.authorities.len(), 30, "the NS RRset is kept whole");
    let sets = assert_whole_rrsets(&msg.additionals, &glue);
    assert!(sets > 0 && sets < glue.len());
    assert_eq!(msg.additionals.len(), sets, "one record per glue RRset");
    assert!(msg.edns.is_some(), "OPT still present");

    // Over TCP all of it fits.
    let (out, msg) = encode_to_msg(&req, &ans, u16::MAX);
    assert!(!raw(&out).tc);
    assert_eq!(msg.additionals.len(), 60);

    // When only the optional part is missing, no TC.
    ans.required_additionals = 2;
    let (out, msg) = encode_to_msg(&req, &ans, 1232);
    assert!(!raw(&out).tc);
    assert_eq!(
        assert_whole_rrsets(&msg.additionals, &glue),
        msg.additionals.len()
    );
}

#[test]
fn every_limit_gives_whole_rrsets() {
    // Sweep the size limit across a response with several RRsets in every section:
    // at each limit the response stays within it and holds only whole RRsets.
    let answers = vec![a_set("www.example.", 5), txt_set("www.example.", 6)];
    let authorities = vec![ns_set(
        "example.",
        &["ns1.example.", "ns2.example.", "ns3.example."],
    )];
    let additionals = vec![
        a_set("ns1.example.", 3),
        aaaa_set("ns2.example.", 4),
        a_set("ns3.example.", 1),
    ];
    let ans = answer(answers.clone(), authorities.clone(), additionals.clone(), 1);
    for with_edns in [false, true] {
        let req = request(
            "www.example.",
            RecordType::ANY,
            if with_edns { edns(4096, false) } else { None },
        );
        for max in 512..=1100u16 {
            let (out, msg) = encode_to_msg(&req, &ans, max);
            let h = raw(&out);
            assert_eq!(msg.edns.is_some(), with_edns);
            let a = assert_whole_rrsets(&msg.answers, &answers);
            let n = assert_whole_rrsets(&msg.authorities, &authorities);
            assert_whole_rrsets(&msg.additionals, &additionals);
            if h.tc && msg.answers.is_empty() {
                assert!(msg.authorities.is_empty() && msg.additionals.is_empty());
            } else {
                assert_eq!(
                    (a, n),
                    (2, 1),
                    "answer and authority complete unless truncated"
                );
                // TC here only because the required glue (first additional) is missing.
                assert_eq!(
                    h.tc,
                    msg.additionals.first().map(|r| &r.name) != Some(&name("ns1.example."))
                );
            }
        }
    }
}

#[test]
fn encode_clears_and_reuses_the_buffer() {
    let req = request("www.example.", RecordType::A, None);
    let ans = answer(vec![a_set("www.example.", 1)], vec![], vec![], 0);
    let mut out = vec![0xaa; 3000];
    let n = encode(&req, &ans, 512, &opts(), &mut out);
    assert_eq!(n, 45, "same size as Knot's answer to this query");
    assert_eq!(out.len(), 45);
    let n2 = encode(&req, &ans, 512, &opts(), &mut out);
    assert_eq!(n2, 45);
}

#[test]
fn refused_for_parsed_request() {
    let pkt = cat(&[
        &header(0x0100, 1, 0, 0, 1),
        &question("www.NOPE.", 1, 1),
        &opt(1232),
    ]);
    let req = parse(&pkt).unwrap();
    let mut out = Vec::new();
    encode_error(
        &Rejection::for_request(&req, ResponseCode::Refused),
        &opts(),
        &mut out,
    );
    let h = raw(&out);
    assert_eq!(h.counts, [1, 0, 0, 1]);
    assert!(h.rd && !h.aa);
    let msg = Message::from_vec(&out).unwrap();
    assert_eq!(msg.metadata.response_code, ResponseCode::Refused);
    assert_eq!(msg.queries[0].name().to_ascii(), "www.NOPE.");
}

// ---------------------------------------------------------------------------------------
// Robustness: no input makes parse or encode_error panic
// ---------------------------------------------------------------------------------------

/// xorshift64*: deterministic, dependency-free pseudo-random bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_packets_never_panic() {
    let seeds = [
        simple_query(),
        cat(&[
            &header(0x0100, 1, 0, 0, 1),
            &www(),
            &opt_full(&[0], 1232, 0, 0, 0x8000, &[0, 10, 0, 2, 1, 2]),
        ]),
        cat(&[
            &header(0x0100, 1, 1, 0, 1),
            &www(),
            &a_record(&[0xc0, 12], 4, &[1, 2, 3, 4]),
            &opt(512),
        ]),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    let mut outcomes = [0usize; 3];
    for i in 0..60_000 {
        let mut pkt = seeds[i % seeds.len()].clone();
        for _ in 0..=rng.below(4) {
            match rng.below(4) {
                0 if !pkt.is_empty() => {
                    let at = rng.below(pkt.len());
                    pkt[at] = rng.next() as u8;
                }
                1 if !pkt.is_empty() => {
                    let at = rng.below(pkt.len());
                    pkt.truncate(at);
                }
                2 => pkt.push(rng.next() as u8),
                _ if pkt.len() > 12 => {
                    // Flip a count byte: the most interesting field.
                    let at = 4 + rng.below(8);
                    pkt[at] ^= 1 << rng.below(8);
                }
                _ => {}
            }
        }
        match parse(&pkt) {
            Ok(req) => {
                outcomes[0] += 1;
                let ans = answer(vec![a_set("www.example.", 1)], vec![], vec![], 0);
                encode(&req, &ans, 512, &opts(), &mut out);
                Message::from_vec(&out).expect("response to a parsed query decodes");
            }
            Err(Rejection::Drop) => outcomes[1] += 1,
            Err(rejection) => {
                outcomes[2] += 1;
                let n = encode_error(&rejection, &opts(), &mut out);
                assert!(n >= 12);
                assert_eq!(
                    u16::from_be_bytes([out[0], out[1]]),
                    u16::from_be_bytes([pkt[0], pkt[1]])
                );
            }
        }
    }
    assert!(
        outcomes.iter().all(|&n| n > 1000),
        "all outcomes exercised: {outcomes:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Byte-for-byte comparison with Knot DNS 3.2 (responses captured from knotd serving the
// same data; compression choices included)
// ---------------------------------------------------------------------------------------

#[track_caller]
fn assert_same_as_knot(query: &[u8], ans: &Answer<'_>, knot_hex: &str) {
    let req = parse(query).unwrap();
    let mut out = Vec::new();
    encode(&req, ans, opts().udp_limit(&req), &opts(), &mut out);
    assert_eq!(hex(&out), knot_hex);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn set_ttl(mut set: RRset, ttl: u32) -> RRset {
    set.ttl = ttl;
    for r in &mut set.records {
        r.ttl = ttl;
    }
    set
}

#[test]
fn byte_identical_to_knot() {
    use hickory_proto::rr::rdata::SOA;
    let apex_ns = || ns_set("example.", &["ns1.example.", "ns2.example."]);
    let glue = |owner: &str, last: u8| {
        rrset(
            owner,
            RecordType::A,
            vec![RData::A(A(Ipv4Addr::new(192, 0, 2, last)))],
        )
    };

    // example. NS: answer with two NS, glue for both in additional.
    let ans = answer(
        vec![apex_ns()],
        vec![],
        vec![glue("ns1.example.", 1), glue("ns2.example.", 2)],
        0,
    );
    let q = cat(&[&header(0x0100, 1, 0, 0, 0), &question("example.", 2, 1)]);
    assert_same_as_knot(
        &q,
        &ans,
        "123485000001000200000002076578616d706c650000020001c00c0002000100000e100006036e7331c00cc00c0002000100000e100006036e7332c00cc0250001000100000e100004c0000201c0370001000100000e100004c0000202",
    );

    // NXDOMAIN with the SOA (names in SOA rdata compressed).
    let soa = SOA::new(
        name("ns1.example."),
        name("hostmaster.example."),
        1,
        7200,
        3600,
        1_209_600,
        300,
    );
    let mut ans = answer(
        vec![],
        vec![set_ttl(
            rrset("example.", RecordType::SOA, vec![RData::SOA(soa)]),
            300,
        )],
        vec![],
        0,
    );
    ans.rcode = ResponseCode::NXDomain;
    let q = cat(&[&header(0x0100, 1, 0, 0, 0), &question("nx.example.", 1, 1)]);
    assert_same_as_knot(
        &q,
        &ans,
        "123485030001000000010000026e78076578616d706c650000010001c00f000600010000012c0027036e7331c00f0a686f73746d6173746572c00f0000000100001c2000000e10001275000000012c",
    );

    // Referral, queried in mixed case with EDNS+DO: owners and rdata names compress
    // against the question's spelling, case-insensitively.
    let mut ans = answer(
        vec![],
        vec![ns_set(
            "sub.example.",
            &["ns.sub.example.", "ns2.sub.example."],
        )],
        vec![
            rrset(
                "ns.sub.example.",
                RecordType::A,
                vec![RData::A(A(Ipv4Addr::new(192, 0, 2, 53)))],
            ),
            rrset(
                "ns2.sub.example.",
                RecordType::A,
                vec![RData::A(A(Ipv4Addr::new(192, 0, 2, 54)))],
            ),
        ],
        2,
    );
    ans.authoritative = false;
    let q = cat(&[
        &header(0x0100, 1, 0, 0, 0),
        &question("www.sub.example.", 1, 1),
    ]);
    assert_same_as_knot(
        &q,
        &ans,
        "1234810000010000000200020377777703737562076578616d706c650000010001c0100002000100000e100005026e73c010c0100002000100000e100006036e7332c010c02d0001000100000e100004c0000235c03e0001000100000e100004c0000236",
    );
    let q = cat(&[
        &header(0x0100, 1, 0, 0, 1),
        &question("WWW.Sub.EXAMPLE.", 1, 1),
        &opt_full(&[0], 1232, 0, 0, 0x8000, &[]),
    ]);
    assert_same_as_knot(
        &q,
        &ans,
        "1234810000010000000200030357575703537562074558414d504c450000010001c0100002000100000e100005026e73c010c0100002000100000e100006036e7332c010c02d0001000100000e100004c0000235c03e0001000100000e100004c000023600002904d0000080000000",
    );
}

#[test]
fn wire_form_encodes_like_records_for_every_type() {
    use hickory_proto::rr::rdata::{CNAME, MX, PTR, SOA, SRV};
    // Names in RDATA: compressed for the RFC 1035 types (NS, CNAME, PTR, MX, SOA), written
    // in full for the others (SRV, RFC 3597 §4); case kept; owners compressed against the
    // question whatever its case.
    let sets = vec![
        rrset(
            "Example.",
            RecordType::SOA,
            vec![RData::SOA(SOA::new(
                name("NS1.example."),
                name("hostmaster.EXAMPLE."),
                7,
                7200,
                3600,
                1209600,
                300,
            ))],
        ),
        ns_set("example.", &["ns1.Example.", "ns.other.test."]),
        rrset(
            "mx.example.",
            RecordType::MX,
            vec![
                RData::MX(MX::new(10, name("Mail.example."))),
                RData::MX(MX::new(20, name("mail.other.test."))),
            ],
        ),
        rrset(
            "alias.example.",
            RecordType::CNAME,
            vec![RData::CNAME(CNAME(name("www.EXAMPLE.")))],
        ),
        rrset(
            "ptr.example.",
            RecordType::PTR,
            vec![RData::PTR(PTR(name("www.example.")))],
        ),
        rrset(
            "_sip._udp.example.",
            RecordType::SRV,
            vec![RData::SRV(SRV::new(1, 2, 5060, name("Sip.example.")))],
        ),
        txt_set("www.example.", 2),
        aaaa_set("www.example.", 2),
    ];
    for qname in ["www.example.", "WWW.EXAMPLE.", "mx.Example."] {
        let req = request(qname, RecordType::MX, edns(4096, false));
        let ans = answer(sets.clone(), sets[..2].to_vec(), sets[2..].to_vec(), 0);
        let (_, msg) = encode_to_msg(&req, &ans, u16::MAX);
        assert_eq!(msg.answers.len(), 12);
        // Limits that cut through every section take the same path on both forms.
        for max in [512u16, 600, 700, 800] {
            encode_to_msg(&req, &ans, max);
        }
    }
}
