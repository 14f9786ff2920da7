//! Malformed and unsupported packets against the real `muninn` binary (UDP, and some over TCP).
//!
//! Each packet must get the expected error rcode with its id echoed, or no answer at all, and
//! after every packet a normal query must still get the right answer. The same table is run
//! against knotd: it must behave the same, except for the differences listed in the table.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{QueryOpts, SILENCE_TIMEOUT, hex};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

const ID: u16 = 0xbeef;

// ---------------------------------------------------------------------------------------------
// Packet building
// ---------------------------------------------------------------------------------------------

/// Header: id, flags (QR..RCODE as in RFC 1035 4.1.1), QD/AN/NS/AR counts.
fn header(flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(12);
    for v in [ID, flags, qd, an, ns, ar] {
        h.extend_from_slice(&v.to_be_bytes());
    }
    h
}

/// Opcode in the flags word.
fn opcode(op: u16) -> u16 {
    op << 11
}

/// Uncompressed wire form of a dotted name.
fn name(n: &str) -> Vec<u8> {
    let mut w = Vec::new();
    for label in n.split('.').filter(|l| !l.is_empty()) {
        w.push(u8::try_from(label.len()).unwrap());
        w.extend_from_slice(label.as_bytes());
    }
    w.push(0);
    w
}

fn question(n: &str, qtype: u16) -> Vec<u8> {
    let mut w = name(n);
    w.extend_from_slice(&qtype.to_be_bytes());
    w.extend_from_slice(&1u16.to_be_bytes()); // IN
    w
}

/// OPT pseudo-RR (RFC 6891 6.1.2) with the given owner, version and RDATA.
fn opt_with(owner: &[u8], version: u8, rdata: &[u8]) -> Vec<u8> {
    let mut w = owner.to_vec();
    w.extend_from_slice(&41u16.to_be_bytes());
    w.extend_from_slice(&1232u16.to_be_bytes()); // payload
    w.extend_from_slice(&[0, version, 0, 0]); // ext rcode, version, flags
    w.extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
    w.extend_from_slice(rdata);
    w
}

fn opt() -> Vec<u8> {
    opt_with(&[0], 0, &[])
}

/// A well-formed query for www.example.com. A with the given opcode flags and extra sections.
fn query_with(flags: u16, qtype: u16) -> Vec<u8> {
    let mut p = header(flags, 1, 0, 0, 0);
    p.extend(question("www.example.com.", qtype));
    p
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    /// The packet is framed with a correct 2-byte length.
    Tcp,
    /// The bytes are written to the TCP stream as they are (the case frames them itself).
    TcpRaw,
}

/// What a server must do with a packet.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    /// No answer (dropped, or the TCP connection closed).
    Silence,
    /// An answer with id echoed, QR set and one of these rcodes.
    Rcode(&'static [ResponseCode]),
    /// Either silence or one of these rcodes (packets too broken to be sure of the header).
    SilenceOr(&'static [ResponseCode]),
    /// A normal positive answer (only used for Knot's listed differences).
    Answer,
}

use ResponseCode::{BADVERS, FormErr, NoError, NotAuth, NotImp, Refused};

struct Case {
    name: &'static str,
    transport: Transport,
    packet: Vec<u8>,
    /// What Muninn must do.
    expect: Expect,
    /// What knotd does when it differs, with the reason we differ; `None` = Knot meets `expect`.
    knot: Option<(Expect, &'static str)>,
}

fn case(name: &'static str, packet: Vec<u8>, expect: Expect) -> Case {
    Case {
        name,
        transport: Transport::Udp,
        packet,
        expect,
        knot: None,
    }
}

impl Case {
    fn tcp(mut self) -> Case {
        self.transport = Transport::Tcp;
        self
    }
    fn tcp_raw(mut self) -> Case {
        self.transport = Transport::TcpRaw;
        self
    }
    fn knot(mut self, e: Expect, why: &'static str) -> Case {
        self.knot = Some((e, why));
        self
    }
}

const QDCOUNT_KNOT: &str = "Knot 3.2 drops QDCOUNT > 1 silently; RFC 9619 4 requires FORMERR";

const FORMERR: Expect = Expect::Rcode(&[FormErr]);
/// A question that cannot be parsed: FORMERR with the id (RFC 1035 4.1.1) or a silent drop,
/// which is what knotd does (and which cannot be abused for reflection).
const BAD_NAME: Expect = Expect::SilenceOr(&[FormErr]);

fn cases() -> Vec<Case> {
    let www = question("www.example.com.", 1);
    let hdr1 = header(0, 1, 0, 0, 0);
    let hdr1_ar = |ar| header(0, 1, 0, 0, ar);

    // Names with bad label layout, placed in the question after a 12-byte header (offset 12).
    let mut long_label = vec![64u8];
    long_label.extend(std::iter::repeat_n(b'a', 64));
    long_label.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut long_name = Vec::new();
    for _ in 0..5 {
        long_name.push(60u8);
        long_name.extend(std::iter::repeat_n(b'b', 60)); // 5 * 61 + 1 = 306 octets > 255
    }
    long_name.extend_from_slice(&[0, 0, 1, 0, 1]);
    let self_pointer = [0xc0, 12, 0, 1, 0, 1]; // points at itself
    let two_step_loop = [1, b'a', 0xc0, 12, 0, 1, 0, 1]; // a -> back to a
    let forward_pointer = [0xc0, 18, 0, 1, 0, 1, 3, b'c', b'o', b'm', 0];
    let out_of_bounds = [0xc0, 0xff, 0, 1, 0, 1];
    let reserved_label_type = [0x80, 1, b'a', 0, 0, 1, 0, 1]; // 10xxxxxx (RFC 6891 5)

    let mut cases = vec![
        // --- Header problems.
        case("empty datagram", vec![], Expect::Silence),
        case(
            "5-byte header",
            header(0, 1, 0, 0, 0)[..5].to_vec(),
            Expect::Silence,
        ),
        case(
            "11-byte header",
            header(0, 1, 0, 0, 0)[..11].to_vec(),
            Expect::Silence,
        ),
        // RFC 1035 4.1.1: never answer a response (avoids reflection loops).
        case(
            "QR=1 (response)",
            cat(&[&header(0x8000, 1, 0, 0, 0), &www]),
            Expect::Silence,
        ),
        case("QDCOUNT=0", header(0, 0, 0, 0, 0), FORMERR),
        case(
            "QDCOUNT=0 with OPT",
            cat(&[&header(0, 0, 0, 0, 1), &opt()]),
            FORMERR,
        ),
        // RFC 9619 4: QDCOUNT > 1 with opcode QUERY is a format error -> FORMERR.
        case(
            "QDCOUNT=2",
            cat(&[&header(0, 2, 0, 0, 0), &www, &www]),
            FORMERR,
        )
        .knot(Expect::Silence, QDCOUNT_KNOT),
        case(
            "QDCOUNT=2, one present",
            cat(&[&header(0, 2, 0, 0, 0), &www]),
            FORMERR,
        )
        .knot(Expect::Silence, QDCOUNT_KNOT),
        // --- Question name problems (RFC 1035 2.3.4, 4.1.4).
        case(
            "label > 63 (0x40 type)",
            cat(&[&hdr1, &long_label]),
            BAD_NAME,
        ),
        case("name > 255 octets", cat(&[&hdr1, &long_name]), BAD_NAME),
        case(
            "reserved label type 0x80",
            cat(&[&hdr1, &reserved_label_type]),
            BAD_NAME,
        ),
        case(
            "compression pointer to itself",
            cat(&[&hdr1, &self_pointer]),
            BAD_NAME,
        ),
        case(
            "compression loop a -> a",
            cat(&[&hdr1, &two_step_loop]),
            BAD_NAME,
        ),
        case(
            "forward compression pointer",
            cat(&[&hdr1, &forward_pointer]),
            BAD_NAME,
        ),
        case(
            "pointer out of bounds",
            cat(&[&hdr1, &out_of_bounds]),
            BAD_NAME,
        ),
        case(
            "name without terminating label",
            cat(&[&hdr1, &[3, b'w', b'w', b'w']]),
            BAD_NAME,
        ),
        case(
            "question without type/class",
            cat(&[&hdr1, &name("www.example.com.")]),
            BAD_NAME,
        ),
        case(
            "question with half a class",
            cat(&[&hdr1, &www[..www.len() - 1]]),
            BAD_NAME,
        ),
        case(
            "trailing garbage after question",
            cat(&[&hdr1, &www, &[0xde, 0xad]]),
            FORMERR,
        ),
        case(
            "ARCOUNT=1 but nothing there",
            cat(&[&hdr1_ar(1), &www]),
            FORMERR,
        ),
        // --- EDNS (RFC 6891).
        // 6.1.1: more than one OPT is FORMERR.
        case(
            "two OPT records",
            cat(&[&hdr1_ar(2), &www, &opt(), &opt()]),
            FORMERR,
        ),
        // 6.1.2: the OPT owner MUST be the root; a malformed OPT is a format error.
        case(
            "OPT with non-root owner",
            cat(&[&hdr1_ar(1), &www, &opt_with(&name("example.com."), 0, &[])]),
            FORMERR,
        )
        .knot(
            Expect::Answer,
            "Knot ignores the OPT owner name and answers normally",
        ),
        // 6.1.1: OPT only in the additional section.
        case(
            "OPT in answer section",
            cat(&[&header(0, 1, 1, 0, 0), &www, &opt()]),
            FORMERR,
        ),
        // 6.1.2: option length larger than the RDATA.
        case(
            "OPT option length beyond RDATA",
            cat(&[&hdr1_ar(1), &www, &opt_with(&[0], 0, &[0, 10, 0, 8, 1, 2])]),
            FORMERR,
        ),
        case(
            "OPT option header cut short",
            cat(&[&hdr1_ar(1), &www, &opt_with(&[0], 0, &[0, 10, 0])]),
            FORMERR,
        ),
        case(
            "OPT RDLEN beyond packet",
            {
                let mut o = opt();
                let n = o.len();
                o[n - 1] = 50; // RDLEN 50, no data follows
                cat(&[&hdr1_ar(1), &www, &o])
            },
            FORMERR,
        ),
        // 6.1.3: unsupported version -> BADVERS (with an OPT of version 0).
        case(
            "EDNS version 1",
            cat(&[&hdr1_ar(1), &www, &opt_with(&[0], 1, &[])]),
            Expect::Rcode(&[BADVERS]),
        ),
        // 6.1.1: OPT as QTYPE is a meta-type; it cannot be queried.
        // A meta-type cannot be queried: FORMERR, or (Knot) NODATA since no such RRset exists.
        case(
            "QTYPE OPT",
            query_with(0, 41),
            Expect::Rcode(&[FormErr, NoError]),
        ),
        // --- Opcodes (RFC 1035 4.1.1, RFC 1996, RFC 2136): only QUERY is implemented.
        case(
            "opcode IQUERY (1)",
            query_with(opcode(1), 1),
            Expect::Rcode(&[NotImp]),
        ),
        case(
            "opcode STATUS (2)",
            query_with(opcode(2), 1),
            Expect::Rcode(&[NotImp]),
        ),
        case(
            "opcode 3 (unassigned)",
            query_with(opcode(3), 1),
            Expect::Rcode(&[NotImp]),
        ),
        case(
            "opcode 15 (unassigned)",
            query_with(opcode(15), 1),
            Expect::Rcode(&[NotImp]),
        ),
        case(
            "NOTIFY",
            query_with(opcode(4) | 0x0400, 6),
            Expect::Rcode(&[NotImp]),
        )
        .knot(
            Expect::Rcode(&[NotAuth]),
            "Knot implements NOTIFY and refuses it with NOTAUTH without an ACL; Muninn has \
                 no secondary zones yet (RFC 1996 4.7: NOTIMP when not supported)",
        ),
        case("UPDATE", query_with(opcode(5), 6), Expect::Rcode(&[NotImp])).knot(
            Expect::Rcode(&[NotAuth]),
            "Knot implements UPDATE and refuses it with NOTAUTH without an ACL; Muninn has \
                 no dynamic update (RFC 2136 3.8: NOTIMP)",
        ),
        // --- Zone transfers over UDP (RFC 5936 4.2: AXFR is TCP only).
        case(
            "AXFR over UDP",
            query_with(0, 252),
            Expect::Rcode(&[Refused, NotImp]),
        ),
        // --- Odd but well-formed queries: answered normally.
        case("TC=1 in the query", query_with(0x0200, 1), Expect::Answer),
        case(
            "Z bit set in the query",
            query_with(0x0040, 1),
            Expect::Answer,
        ),
        case(
            "RCODE=5 in the query",
            query_with(0x0005, 1),
            Expect::Answer,
        ),
        case(
            "OPT payload 0 (treated as 512)",
            cat(&[&hdr1_ar(1), &www, &{
                let mut o = opt();
                o[3] = 0;
                o[4] = 0;
                o
            }]),
            Expect::Answer,
        ),
        case(
            "unknown EDNS option",
            cat(&[
                &hdr1_ar(1),
                &www,
                &opt_with(&[0], 0, &[0xfd, 0xe9, 0, 2, 0xab, 0xcd]),
            ]),
            Expect::Answer,
        ),
        case(
            "A record in the answer section",
            cat(&[
                &header(0, 1, 1, 0, 0),
                &www,
                &[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4],
            ]),
            Expect::Answer,
        ),
        // --- Random garbage: anything but a crash; an answer must be FORMERR with the id.
        case(
            "garbage 1",
            garbage(1, 40),
            Expect::SilenceOr(&[FormErr, NotImp]),
        ),
        case(
            "garbage 2",
            garbage(2, 300),
            Expect::SilenceOr(&[FormErr, NotImp]),
        ),
        case(
            "garbage 3",
            garbage(3, 1500),
            Expect::SilenceOr(&[FormErr, NotImp]),
        ),
        case(
            "garbage 4",
            garbage(4, 12),
            Expect::SilenceOr(&[FormErr, NotImp]),
        ),
        case(
            "valid header + garbage",
            cat(&[&hdr1, &garbage(5, 100)]),
            Expect::SilenceOr(&[FormErr]),
        ),
        // --- TCP.
        case("TCP: QDCOUNT=0", header(0, 0, 0, 0, 0), FORMERR).tcp(),
        case(
            "TCP: compression loop",
            cat(&[&hdr1, &self_pointer]),
            BAD_NAME,
        )
        .tcp(),
        case(
            "TCP: EDNS version 1",
            cat(&[&hdr1_ar(1), &www, &opt_with(&[0], 1, &[])]),
            Expect::Rcode(&[BADVERS]),
        )
        .tcp(),
        case(
            "TCP: opcode 3",
            query_with(opcode(3), 1),
            Expect::Rcode(&[NotImp]),
        )
        .tcp(),
        case(
            "TCP: QR=1",
            cat(&[&header(0x8000, 1, 0, 0, 0), &www]),
            Expect::Silence,
        )
        .tcp(),
        case("TCP: zero-length message", vec![0, 0], Expect::Silence).tcp_raw(),
        case(
            "TCP: 5-byte message",
            cat(&[&[0, 5], &header(0, 1, 0, 0, 0)[..5]]),
            Expect::Silence,
        )
        .tcp_raw(),
        case("TCP: 1 byte then close", vec![0], Expect::Silence).tcp_raw(),
    ];
    // AXFR over TCP is refused while transfers are not configured.
    cases.push(
        case(
            "TCP: AXFR without ACL",
            {
                let mut p = header(0, 1, 0, 0, 0);
                p.extend(question("example.com.", 252));
                p
            },
            Expect::Rcode(&[Refused, NotAuth]),
        )
        .tcp(),
    );
    cases
}

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------

/// What came back for one packet.
#[derive(Debug)]
enum Got {
    Silence,
    Answer(Vec<u8>),
}

fn send(addr: SocketAddr, c: &Case) -> Got {
    let timeout = SILENCE_TIMEOUT;
    let r = match c.transport {
        Transport::Udp => common::udp_exchange(addr, &c.packet, timeout),
        Transport::Tcp => common::tcp_exchange(addr, &c.packet, timeout),
        Transport::TcpRaw => common::tcp_exchange_stream(addr, &c.packet, timeout),
    };
    match r {
        Ok(Some(bytes)) => Got::Answer(bytes),
        Ok(None) => Got::Silence,
        Err(e) => panic!("{}: transport error {e} (server gone?)", c.name),
    }
}

/// Checks `got` against `expect` (`id` = the id the packet carried); `Err` describes the problem.
fn check(expect: &Expect, id: Option<&[u8]>, got: &Got) -> Result<(), String> {
    let allowed = match (expect, got) {
        (Expect::Silence | Expect::SilenceOr(_), Got::Silence) => return Ok(()),
        (Expect::Answer, Got::Silence) => return Err("expected an answer, got silence".into()),
        (Expect::Answer, Got::Answer(b)) => {
            let m = Message::from_vec(b).map_err(|e| format!("undecodable answer ({e})"))?;
            if m.metadata.response_code != NoError || m.answers.is_empty() {
                return Err(format!("expected a positive answer, got {}", describe(b)));
            }
            return Ok(());
        }
        (Expect::Silence, Got::Answer(b)) => {
            return Err(format!("expected silence, got {}", describe(b)));
        }
        (Expect::Rcode(_), Got::Silence) => return Err("expected an answer, got silence".into()),
        (Expect::Rcode(r) | Expect::SilenceOr(r), Got::Answer(_)) => *r,
    };
    let Got::Answer(bytes) = got else {
        unreachable!()
    };
    if bytes.get(..2) != id {
        return Err(format!("id not echoed: {}", describe(bytes)));
    }
    let msg = Message::from_vec(bytes)
        .map_err(|e| format!("undecodable answer ({e}): {}", hex(bytes)))?;
    if msg.metadata.message_type != MessageType::Response {
        return Err(format!("QR not set: {}", describe(bytes)));
    }
    // Compare numerically: 16 is both BADVERS and BADSIG (RFC 6895 2.3) and hickory decodes it
    // as BADSIG.
    let rcode = u16::from(msg.metadata.response_code);
    if !allowed.iter().any(|&r| u16::from(r) == rcode) {
        return Err(format!(
            "expected one of {allowed:?}, got {}",
            describe(bytes)
        ));
    }
    // An error answer carries no records (RFC 1035 4.1.1, RFC 6891 7); NOERROR here is NODATA.
    if !msg.answers.is_empty() || (rcode != 0 && !msg.authorities.is_empty()) {
        return Err(format!("error answer with records: {}", describe(bytes)));
    }
    // BADVERS comes in an OPT with version 0, the highest we support (RFC 6891 6.1.3).
    if rcode == u16::from(BADVERS) && msg.edns.as_ref().map(|e| e.version()) != Some(0) {
        return Err(format!(
            "BADVERS without a version-0 OPT: {}",
            describe(bytes)
        ));
    }
    Ok(())
}

fn describe(bytes: &[u8]) -> String {
    match Message::from_vec(bytes) {
        Ok(m) => format!(
            "id={:#06x} {:?} {} q={} an={} ns={} ar={} edns={:?}",
            m.metadata.id,
            m.metadata.message_type,
            m.metadata.response_code,
            m.queries.len(),
            m.answers.len(),
            m.authorities.len(),
            m.additionals.len(),
            m.edns.as_ref().map(|e| (e.version(), e.max_payload()))
        ),
        Err(e) => format!("undecodable ({e}) {}", hex(bytes)),
    }
}

/// The server still answers a normal query correctly (over UDP and TCP).
fn assert_healthy(addr: SocketAddr, after: &str) {
    for tcp in [false, true] {
        let opts = QueryOpts {
            tcp,
            edns: true,
            timeout: Duration::from_secs(3),
            ..QueryOpts::default()
        };
        let m = common::try_query(addr, "www.example.com.", RecordType::A, &opts)
            .unwrap_or_else(|e| panic!("after {after:?}: normal query ({opts}) failed: {e}"));
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "after {after:?}"
        );
        assert!(m.metadata.authoritative, "after {after:?}");
        let addrs: Vec<_> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => a.0.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(addrs, ["192.0.2.10"], "after {after:?}");
    }
}

/// Runs every case; `knot` selects Knot's expectations. Returns the failures.
fn run(server: &mut common::Server, knot: bool) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases() {
        let expect = match (&c.knot, knot) {
            (Some((e, _)), true) => e,
            _ => &c.expect,
        };
        let got = send(server.addr, &c);
        let message = match c.transport {
            Transport::TcpRaw => c.packet.get(2..).unwrap_or_default(),
            Transport::Udp | Transport::Tcp => &c.packet,
        };
        if let Err(e) = check(expect, message.get(..2), &got) {
            failures.push(format!(
                "{} [{:?}] packet {}: {e}",
                c.name,
                c.transport,
                hex(&c.packet)
            ));
        }
        server.assert_alive();
        assert_healthy(server.addr, c.name);
    }
    failures
}

#[test]
fn table_is_broad() {
    let cases = cases();
    assert!(cases.len() >= 40, "{}", cases.len());
    assert!(
        cases
            .iter()
            .filter(|c| c.transport != Transport::Udp)
            .count()
            >= 5
    );
    // Every listed Knot difference has a reason.
    assert!(
        cases
            .iter()
            .all(|c| c.knot.as_ref().is_none_or(|(_, why)| !why.is_empty()))
    );
}

/// The reference behaves as the table says (same rcode as Muninn must give, or the listed
/// difference), which also validates the packets themselves.
#[test]
fn knot_matches_table() {
    let Some(mut knot) = common::start_knot() else {
        return;
    };
    let failures = run(&mut knot, true);
    assert!(failures.is_empty(), "knotd:\n{}", failures.join("\n"));
}

#[test]
fn muninn_rejects_malformed_packets() {
    let mut muninn = common::start_muninn();
    let failures = run(&mut muninn, false);
    assert!(
        failures.is_empty(),
        "{} of {} malformed-packet cases failed:\n{}",
        failures.len(),
        cases().len(),
        failures.join("\n")
    );
}
