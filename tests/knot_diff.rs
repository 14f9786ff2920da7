//! Differential test: Knot DNS (the reference) and Muninn serve the same zones (tests/zones/),
//! get the same systematically generated queries, and must give the same answers: rcode, header
//! flags, question, every section as a multiset of records, and OPT presence/version/DO/payload.
//!
//! All mismatches are reported in one failure (and written to
//! `$CARGO_TARGET_TMPDIR/knot_diff_report.txt`). Intentional differences are listed in
//! [`ALLOWED`], each with its RFC reason, and excluded only for the fields they name.

mod common;

use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use common::{QueryOpts, hex, mix_case};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};

// ---------------------------------------------------------------------------------------------
// Query set
// ---------------------------------------------------------------------------------------------

/// A 60-letter label: under `long.example.com.` (DNAME to a 200-octet target) the substituted
/// name exceeds 255 octets, so the answer must be YXDOMAIN (RFC 6672 2.2).
const LONG_LABEL: &str = "qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq";

/// Query names; each is asked for [`TYPES`] (plus its extra types).
const NAMES: &[(&str, &[RecordType])] = &[
    // Apex, plain data, NODATA and NXDOMAIN.
    ("example.com.", &[]),
    ("www.example.com.", &[]),
    ("mixed-case.example.com.", &[]),
    ("nonexistent.example.com.", &[]),
    ("a.b.nonexistent.example.com.", &[]),
    ("ns1.example.com.", &[]),
    ("mail.example.com.", &[]),
    ("short-ttl.example.com.", &[]),
    ("_sip._udp.example.com.", &[RecordType::SRV]),
    ("_ldap._tcp.example.com.", &[RecordType::SRV]),
    ("_udp.example.com.", &[RecordType::SRV]),
    // Empty non-terminals.
    ("ent.example.com.", &[]),
    ("sub.ent.example.com.", &[]),
    ("host.sub.ent.example.com.", &[]),
    ("nx.sub.ent.example.com.", &[]),
    // Wildcards.
    ("wild.example.com.", &[]),
    ("foo.wild.example.com.", &[]),
    ("a.b.wild.example.com.", &[]),
    ("*.wild.example.com.", &[]),
    ("exists.wild.example.com.", &[]),
    ("ent.wild.example.com.", &[]),
    ("x.ent.wild.example.com.", &[]),
    ("deep.ent.wild.example.com.", &[]),
    ("x.wcname.example.com.", &[]),
    ("x.a.wcname-loop.example.com.", &[]),
    // CNAME chains.
    ("cname1.example.com.", &[]),
    ("cname3.example.com.", &[]),
    ("cname-nx.example.com.", &[]),
    ("cname-nodata.example.com.", &[]),
    ("cname-ent.example.com.", &[]),
    ("loop1.example.com.", &[]),
    ("self.example.com.", &[]),
    ("cname-wild.example.com.", &[]),
    ("cname-child.example.com.", &[]),
    ("cname-other.example.com.", &[]),
    ("cname-ext.example.com.", &[]),
    ("cname-deleg.example.com.", &[]),
    ("cname-dname.example.com.", &[]),
    ("cname-mx.example.com.", &[]),
    // DNAME.
    ("dn.example.com.", &[RecordType::DNAME]),
    ("www.dn.example.com.", &[]),
    ("nx.dn.example.com.", &[]),
    ("www.dn2.example.com.", &[]),
    ("a.b.dn-ext.example.com.", &[]),
    ("www.dn-other.example.com.", &[]),
    ("x.dn-loop.example.com.", &[]),
    ("short.long.example.com.", &[]),
    // Delegations: in-domain glue, sibling glue, out-of-zone NS names, DS at the cut.
    ("child.example.com.", &[]),
    ("www.child.example.com.", &[]),
    ("ns1.child.example.com.", &[]),
    ("nx.child.example.com.", &[]),
    ("cname-up.child.example.com.", &[]),
    ("cname-local.child.example.com.", &[]),
    ("x.wild.child.example.com.", &[]),
    ("sub.child.example.com.", &[]),
    ("host.sub.child.example.com.", &[]),
    ("sibling.example.com.", &[]),
    ("ns.sibling.example.com.", &[]),
    ("deleg.example.com.", &[]),
    ("host.deleg.example.com.", &[]),
    ("ext.example.com.", &[]),
    ("a.ext.example.com.", &[]),
    ("bigdeleg.example.com.", &[]),
    ("ns1.bigdeleg.example.com.", &[]),
    // Large RRsets (truncation).
    ("mid.example.com.", &[]),
    ("many.example.com.", &[]),
    ("bigtxt.example.com.", &[]),
    ("bigmx.example.com.", &[]),
    // The other zone, and names outside every served zone (REFUSED, RFC 2136-era practice).
    ("other.test.", &[]),
    ("www.other.test.", &[]),
    ("cname-back.other.test.", &[]),
    ("nx.other.test.", &[]),
    ("test.", &[]),
    ("example.net.", &[]),
];

const TYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::TXT,
    RecordType::MX,
    RecordType::NS,
    RecordType::SOA,
    RecordType::CNAME,
    RecordType::DS,
    RecordType::ANY,
];

/// One query of the set.
#[derive(Clone, Debug)]
struct Case {
    name: String,
    rtype: RecordType,
    opts: QueryOpts,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} [{}]", self.name, self.rtype, self.opts)
    }
}

/// Deterministic option mix for query number `i`: name case, EDNS (none / 1232 / 512 / 4096+DO),
/// transport, RD and CD all rotate with different periods so that names × types see them all.
fn rotated(i: usize, name: &str) -> (String, QueryOpts) {
    let name = match i % 3 {
        0 => name.to_string(),
        p => mix_case(name, p - 1),
    };
    let mut opts = QueryOpts {
        id: u16::try_from(i % 65536).unwrap(),
        rd: (i / 2) % 2 == 1,
        cd: i % 7 == 3,
        tcp: i % 5 == 4,
        ..QueryOpts::default()
    };
    match i % 4 {
        0 => opts.edns = false,
        1 => (opts.edns, opts.payload) = (true, 1232),
        2 => (opts.edns, opts.payload) = (true, 512),
        _ => (opts.edns, opts.payload, opts.dnssec_ok) = (true, 4096, true),
    }
    (name, opts)
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let long_name = format!("{LONG_LABEL}.long.example.com.");
    let mut names: Vec<(&str, &[RecordType])> = NAMES.to_vec();
    names.push((&long_name, &[]));
    for (name, extra) in names {
        for &rtype in TYPES.iter().chain(extra.iter()) {
            let (name, opts) = rotated(cases.len(), name);
            cases.push(Case { name, rtype, opts });
        }
    }
    // Truncation matrix: every size-sensitive answer with every transport/EDNS combination
    // (RFC 1035 4.2.1 512-octet limit, RFC 6891 6.2.5 payload, RFC 2181 9 TC).
    // Payload 100 must be treated as 512 (RFC 6891 6.2.5).
    let transports: [(bool, bool, u16); 8] = [
        (false, false, 0),
        (false, true, 100),
        (false, true, 512),
        (false, true, 700),
        (false, true, 1232),
        (false, true, 4096),
        (true, false, 0),
        (true, true, 1232),
    ];
    for (name, rtype) in [
        ("mid.example.com.", RecordType::A),
        ("many.example.com.", RecordType::A),
        ("bigtxt.example.com.", RecordType::TXT),
        ("bigmx.example.com.", RecordType::MX),
        ("bigdeleg.example.com.", RecordType::A),
        ("www.bigdeleg.example.com.", RecordType::AAAA),
        ("example.com.", RecordType::MX),
    ] {
        for (tcp, edns, payload) in transports {
            let opts = QueryOpts {
                id: u16::try_from(cases.len()).unwrap(),
                tcp,
                edns,
                payload,
                ..QueryOpts::default()
            };
            cases.push(Case {
                name: name.to_string(),
                rtype,
                opts,
            });
        }
    }
    // Other classes (RFC 1035 3.2.4/3.2.5): CHAOS identity names (disabled in Knot's config,
    // RFC 4892), a served name in CH, and QCLASS ANY.
    for (name, rtype, class) in [
        ("version.bind.", RecordType::TXT, DNSClass::CH),
        ("id.server.", RecordType::TXT, DNSClass::CH),
        ("hostname.bind.", RecordType::TXT, DNSClass::CH),
        ("www.example.com.", RecordType::A, DNSClass::CH),
        ("www.example.com.", RecordType::A, DNSClass::ANY),
        ("nonexistent.example.com.", RecordType::A, DNSClass::ANY),
        ("www.example.com.", RecordType::A, DNSClass::Unknown(4711)),
    ] {
        for tcp in [false, true] {
            let opts = QueryOpts {
                id: u16::try_from(cases.len()).unwrap(),
                tcp,
                edns: tcp,
                class,
                ..QueryOpts::default()
            };
            cases.push(Case {
                name: name.to_string(),
                rtype,
                opts,
            });
        }
    }
    // Types absent from every node: DNSSEC types of an unsigned zone, unknown types
    // (RFC 3597), obsolete and rare types; all NODATA (or NXDOMAIN / referral by name).
    for name in [
        "example.com.",
        "www.example.com.",
        "nonexistent.example.com.",
        "child.example.com.",
        "host.deleg.example.com.",
        "foo.wild.example.com.",
        "x.wcname.example.com.",
    ] {
        for rtype in [
            RecordType::RRSIG,
            RecordType::NSEC,
            RecordType::NSEC3PARAM,
            RecordType::DNSKEY,
            RecordType::NULL,
            RecordType::Unknown(65280),
            RecordType::PTR,
            RecordType::CAA,
            RecordType::SRV,
        ] {
            let (name, opts) = rotated(cases.len(), name);
            cases.push(Case { name, rtype, opts });
        }
    }
    // Header bits and DO on a plain positive answer and on a referral.
    for name in ["WwW.eXaMpLe.CoM.", "HOST.DELEG.EXAMPLE.COM."] {
        for bits in 0..8u8 {
            let opts = QueryOpts {
                id: u16::try_from(cases.len()).unwrap(),
                rd: bits & 1 != 0,
                cd: bits & 2 != 0,
                edns: bits & 4 != 0,
                dnssec_ok: bits & 4 != 0 && bits & 1 != 0,
                ..QueryOpts::default()
            };
            cases.push(Case {
                name: name.to_string(),
                rtype: RecordType::A,
                opts,
            });
        }
    }
    cases
}

// ---------------------------------------------------------------------------------------------
// Normalised responses and their comparison
// ---------------------------------------------------------------------------------------------

/// The parts of a response that are compared.
#[derive(Clone, Debug, PartialEq)]
struct Summary {
    rcode: ResponseCode,
    /// "qr aa tc rd ra ad cd" subset, in that order.
    flags: String,
    /// Question entries exactly as on the wire (case preserved).
    question: Vec<String>,
    /// Sections as sorted multisets of "name ttl class type rdata", case-folded (RFC 4343).
    answer: Vec<String>,
    authority: Vec<String>,
    additional: Vec<String>,
    /// "v0 payload=N [do]" or None without OPT.
    opt: Option<String>,
}

impl Summary {
    fn of(msg: &Message) -> Summary {
        let m = &msg.metadata;
        let mut flags = Vec::new();
        for (set, name) in [
            (true, "qr"),
            (m.authoritative, "aa"),
            (m.truncation, "tc"),
            (m.recursion_desired, "rd"),
            (m.recursion_available, "ra"),
            (m.authentic_data, "ad"),
            (m.checking_disabled, "cd"),
        ] {
            if set && (name != "qr" || m.message_type == hickory_proto::op::MessageType::Response) {
                flags.push(name);
            }
        }
        let section = |records: &[hickory_proto::rr::Record]| {
            let mut v: Vec<String> = records
                .iter()
                .map(|r| r.to_string().to_ascii_lowercase())
                .collect();
            v.sort();
            v
        };
        Summary {
            rcode: m.response_code,
            flags: flags.join(" "),
            question: msg
                .queries
                .iter()
                .map(|q| format!("{} {} {}", q.name(), q.query_class(), q.query_type()))
                .collect(),
            answer: section(&msg.answers),
            authority: section(&msg.authorities),
            additional: section(&msg.additionals),
            opt: msg.edns.as_ref().map(|e| {
                format!(
                    "v{} payload={}{}",
                    e.version(),
                    e.max_payload(),
                    if e.flags().dnssec_ok { " do" } else { "" }
                )
            }),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} flags=[{}] q={:?} opt={}",
            self.rcode,
            self.flags,
            self.question,
            self.opt.as_deref().unwrap_or("none")
        )?;
        for (label, sec) in [
            ("AN", &self.answer),
            ("NS", &self.authority),
            ("AR", &self.additional),
        ] {
            for r in sec {
                write!(f, "\n      {label} {r}")?;
            }
        }
        Ok(())
    }
}

/// What the servers can differ in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// No (decodable) response from one side.
    Response,
    Rcode,
    Flags,
    Question,
    Answer,
    Authority,
    Additional,
    Opt,
}

/// An intentional, RFC-justified difference: for queries matching `applies`, `field` is not
/// compared.
struct Allowed {
    what: &'static str,
    field: Field,
    applies: fn(&Case, &Summary, &Summary) -> bool,
    reason: &'static str,
}

/// The (short) list of intentional differences.
const ALLOWED: &[Allowed] = &[
    Allowed {
        what: "CD set in the query: Muninn copies CD into the response, Knot clears it",
        field: Field::Flags,
        applies: |c, k, m| c.opts.cd && without_cd(&m.flags) == k.flags,
        reason: "RFC 4035 3.1.6: a (security-aware) name server MUST copy the CD bit from the \
                 query into the response; Knot 3.2 always clears it (prepare_answer())",
    },
    Allowed {
        what: "qtype ANY with data at the name: which RRset(s) are returned",
        field: Field::Answer,
        applies: |c, k, m| {
            c.rtype == RecordType::ANY && !k.answer.is_empty() && !m.answer.is_empty()
        },
        reason: "RFC 8482 4.1: a responder may return one RRset (Knot: the first one in its \
                 node) or a subset of the RRsets of the name",
    },
    Allowed {
        what: "qtype ANY with data at the name: additional records for the chosen RRset",
        field: Field::Additional,
        applies: |c, k, m| {
            c.rtype == RecordType::ANY && !k.answer.is_empty() && !m.answer.is_empty()
        },
        reason: "RFC 8482 4.1 (follows from the RRset choice above)",
    },
    Allowed {
        what: "both set TC: which records of the partial sections fitted",
        field: Field::Answer,
        applies: both_truncated,
        reason: "RFC 2181 9 / RFC 1035 4.2.1: a TC response is discarded and retried over TCP; \
                 its partial content depends on record order and compression",
    },
    Allowed {
        what: "both set TC: partial authority section",
        field: Field::Authority,
        applies: both_truncated,
        reason: "RFC 2181 9 (as above)",
    },
    Allowed {
        what: "both set TC: partial additional section",
        field: Field::Additional,
        applies: both_truncated,
        reason: "RFC 2181 9 (as above)",
    },
];

/// `flags` without "cd".
fn without_cd(flags: &str) -> String {
    flags
        .split(' ')
        .filter(|f| *f != "cd")
        .collect::<Vec<_>>()
        .join(" ")
}

fn both_truncated(_: &Case, k: &Summary, m: &Summary) -> bool {
    k.flags.split(' ').any(|f| f == "tc") && m.flags.split(' ').any(|f| f == "tc")
}

/// Differences between the reference (`k`) and the tested server (`m`), minus allowed ones.
/// `allow` = false compares everything (used when both sides are Knot).
fn compare(case: &Case, k: &Summary, m: &Summary, allow: bool) -> Vec<(Field, String)> {
    let mut diffs = Vec::new();
    let mut check = |field: Field, same: bool, detail: String| {
        if same {
            return;
        }
        let excused = allow
            && ALLOWED
                .iter()
                .any(|a| a.field == field && (a.applies)(case, k, m));
        if !excused {
            diffs.push((field, detail));
        }
    };
    check(
        Field::Rcode,
        k.rcode == m.rcode,
        format!("rcode {} vs {}", k.rcode, m.rcode),
    );
    check(
        Field::Flags,
        k.flags == m.flags,
        format!("flags [{}] vs [{}]", k.flags, m.flags),
    );
    check(
        Field::Question,
        k.question == m.question,
        format!("question {:?} vs {:?}", k.question, m.question),
    );
    for (field, label, a, b) in [
        (Field::Answer, "answer", &k.answer, &m.answer),
        (Field::Authority, "authority", &k.authority, &m.authority),
        (
            Field::Additional,
            "additional",
            &k.additional,
            &m.additional,
        ),
    ] {
        check(field, a == b, section_diff(label, a, b));
    }
    check(
        Field::Opt,
        k.opt == m.opt,
        format!("OPT {:?} vs {:?}", k.opt, m.opt),
    );
    diffs
}

/// "answer: only knot: [...]; only muninn: [...]" for two sorted multisets.
fn section_diff(label: &str, a: &[String], b: &[String]) -> String {
    let only = |x: &[String], y: &[String]| {
        let mut y: Vec<&String> = y.iter().collect();
        x.iter()
            .filter(|r| match y.iter().position(|o| o == r) {
                Some(p) => {
                    y.remove(p);
                    false
                }
                None => true,
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    format!(
        "{label}: only reference {:?}; only tested {:?}",
        only(a, b),
        only(b, a)
    )
}

/// Result of sending one case to one server.
type Outcome = Result<(Summary, Vec<u8>), String>;

fn ask(addr: SocketAddr, case: &Case) -> Outcome {
    let bytes = common::try_query_raw(addr, &case.name, case.rtype, &case.opts)
        .map_err(|e| e.to_string())?;
    let msg = Message::from_vec(&bytes)
        .map_err(|e| format!("undecodable response ({e}): {}", hex(&bytes)))?;
    Ok((Summary::of(&msg), bytes))
}

fn show(o: &Outcome) -> String {
    match o {
        Ok((s, _)) => s.to_string(),
        Err(e) => format!("ERROR {e}"),
    }
}

/// Runs every case against both servers; returns (number of cases, report of mismatches).
fn run_diff(
    reference: SocketAddr,
    tested: SocketAddr,
    tested_name: &str,
    allow: bool,
) -> (usize, Vec<String>) {
    let cases = cases();
    let mut report = Vec::new();
    let mut excused = 0;
    for (i, case) in cases.iter().enumerate() {
        let k = ask(reference, case);
        let m = ask(tested, case);
        let diffs = match (&k, &m) {
            (Ok((ks, _)), Ok((ms, _))) => {
                let strict = compare(case, ks, ms, false);
                let kept = compare(case, ks, ms, allow);
                if strict.len() > kept.len() {
                    excused += 1;
                }
                kept
            }
            (Err(_), Err(_)) => Vec::new(), // Both silent/broken alike.
            _ => vec![(Field::Response, "only one side answered".to_string())],
        };
        if !diffs.is_empty() {
            let mut s = format!("#{i} {case}\n");
            for (_, d) in &diffs {
                let _ = writeln!(s, "  DIFF {d}");
            }
            let _ = writeln!(s, "  knot:   {}", show(&k));
            let _ = write!(s, "  {tested_name:<7} {}", show(&m));
            report.push(s);
        }
    }
    if allow {
        eprintln!(
            "knot_diff: {excused} of {} queries differ only in listed intentional ways",
            cases.len()
        );
    }
    (cases.len(), report)
}

fn fail_with_report(total: usize, report: &[String], tested: &str) {
    if report.is_empty() {
        return;
    }
    let mut text = format!(
        "{} of {total} queries differ between knotd and {tested}.\nIntentional differences \
         (excluded):\n",
        report.len()
    );
    for a in ALLOWED {
        let _ = writeln!(text, "  - {} [{:?}]: {}", a.what, a.field, a.reason);
    }
    text.push('\n');
    text.push_str(&report.join("\n"));
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("knot_diff_report.txt");
    let _ = std::fs::write(&path, &text);
    panic!("{text}\n(report also written to {})", path.display());
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The query set is big enough and systematic.
#[test]
fn query_set_covers_the_matrix() {
    let cases = cases();
    assert!(cases.len() >= 150, "only {} queries", cases.len());
    assert!(cases.iter().any(|c| c.opts.tcp) && cases.iter().any(|c| !c.opts.tcp));
    assert!(cases.iter().any(|c| c.opts.edns) && cases.iter().any(|c| !c.opts.edns));
    assert!(cases.iter().any(|c| c.opts.rd) && cases.iter().any(|c| !c.opts.rd));
    assert!(
        cases
            .iter()
            .any(|c| c.name.chars().any(|ch| ch.is_ascii_uppercase()))
    );
    assert!(cases.iter().any(|c| c.opts.dnssec_ok));
}

/// Proves the harness and comparison on the reference alone: two knotd instances on the same
/// zones must agree on every query, with no exclusions at all.
#[test]
fn knot_agrees_with_itself() {
    let Some(a) = common::start_knot() else {
        return;
    };
    let Some(b) = common::start_knot() else {
        return;
    };
    let (total, report) = run_diff(a.addr, b.addr, "knot#2", false);
    assert!(total >= 150);
    // Agreement must come from real answers, not from both sides failing alike.
    let mut rcodes = std::collections::BTreeMap::new();
    let mut truncated = 0;
    for case in cases() {
        let (s, _) = ask(a.addr, &case).unwrap_or_else(|e| panic!("{case}: {e}"));
        truncated += usize::from(s.flags.contains("tc"));
        *rcodes.entry(s.rcode.to_string()).or_insert(0) += 1;
    }
    eprintln!("knot self-check: {total} queries, rcodes {rcodes:?}, {truncated} truncated");
    for rcode in [
        "No Error",
        "Non-Existent Domain",
        "Query Refused",
        "Name should not exist",
    ] {
        assert!(
            rcodes.contains_key(rcode),
            "no {rcode} answer in the set: {rcodes:?}"
        );
    }
    assert!(truncated > 5, "only {truncated} truncated answers");
    fail_with_report(total, &report, "a second knotd");
}

/// Proves the comparison detects real differences: alter a Knot answer in each compared field.
#[test]
fn comparison_detects_altered_answers() {
    let Some(knot) = common::start_knot() else {
        return;
    };
    let case = |name: &str, rtype, edns| Case {
        name: name.to_string(),
        rtype,
        opts: QueryOpts {
            edns,
            ..QueryOpts::default()
        },
    };
    let get = |c: &Case| common::query(knot.addr, &c.name, c.rtype, &c.opts);

    let www = case("www.example.com.", RecordType::A, true);
    let orig = get(&www);
    let base = Summary::of(&orig);
    assert_eq!(base.answer.len(), 1, "{base}");
    assert!(compare(&www, &base, &base, true).is_empty());

    type Alter = fn(&mut Message);
    let alterations: [(&str, Field, Alter); 9] = [
        ("TTL", Field::Answer, |m| m.answers[0].ttl += 1),
        ("drop record", Field::Answer, |m| {
            m.answers.clear();
        }),
        ("AA flag", Field::Flags, |m| {
            m.metadata.authoritative = false
        }),
        ("RA flag", Field::Flags, |m| {
            m.metadata.recursion_available = true
        }),
        ("rcode", Field::Rcode, |m| {
            m.metadata.response_code = ResponseCode::NXDomain
        }),
        ("OPT payload", Field::Opt, |m| {
            m.edns.as_mut().unwrap().set_max_payload(4096);
        }),
        ("OPT missing", Field::Opt, |m| m.edns = None),
        ("extra authority", Field::Authority, |m| {
            let r = m.answers[0].clone();
            m.authorities.push(r);
        }),
        ("question case", Field::Question, |m| {
            let q = &mut m.queries[0];
            let upper = q.name().to_ascii().to_ascii_uppercase();
            q.set_name(hickory_proto::rr::Name::from_ascii(&upper).unwrap());
        }),
    ];
    for (what, field, alter) in alterations {
        let mut altered = orig.clone();
        alter(&mut altered);
        // Round-trip through the wire so the altered answer is what a server would send.
        let altered = Message::from_vec(&altered.to_vec().unwrap()).unwrap();
        let diffs = compare(&www, &base, &Summary::of(&altered), true);
        assert!(
            diffs.iter().any(|(f, _)| *f == field),
            "altered {what} not detected as {field:?}: {diffs:?}"
        );
    }

    // Exclusions are narrow: a different ANY RRset is excused, a different rcode for ANY is not.
    let any = case("www.example.com.", RecordType::ANY, false);
    let k = Summary::of(&get(&any));
    let mut other = get(&case("www.example.com.", RecordType::AAAA, false));
    other.queries = get(&any).queries;
    let m = Summary::of(&other);
    assert!(compare(&any, &k, &m, true).is_empty(), "ANY choice excused");
    assert!(!compare(&any, &k, &m, false).is_empty(), "ANY choice seen");
    // The CD exclusion only covers queries that set CD.
    let mut cd = base.clone();
    cd.flags.push_str(" cd");
    assert!(
        compare(&www, &base, &cd, true)
            .iter()
            .any(|(f, _)| *f == Field::Flags)
    );
    let mut www_cd = www.clone();
    www_cd.opts.cd = true;
    assert!(compare(&www_cd, &base, &cd, true).is_empty());
    let mut nx = m.clone();
    nx.rcode = ResponseCode::NXDomain;
    assert!(
        compare(&any, &k, &nx, true)
            .iter()
            .any(|(f, _)| *f == Field::Rcode)
    );
}

/// The harness guard stops the server process when dropped, also when the test panics.
#[test]
fn server_guard_stops_process() {
    let Some(knot) = common::start_knot() else {
        return;
    };
    let pid = knot.pid();
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists());
    let caught = std::panic::catch_unwind(move || {
        let _guard = knot;
        panic!("test failure while the server runs");
    });
    assert!(caught.is_err());
    // Reaped by the guard: the PID no longer exists (or was reused by an unrelated process).
    let comm = std::fs::read_to_string(proc_dir.join("comm")).unwrap_or_default();
    assert_ne!(
        comm.trim(),
        "knotd",
        "knotd {pid} still running after the guard dropped"
    );
}

/// The real comparison: Muninn against knotd on every query of the set.
#[test]
fn muninn_matches_knot() {
    let Some(knot) = common::start_knot() else {
        return;
    };
    let muninn = common::start_muninn();
    let (total, report) = run_diff(knot.addr, muninn.addr, "muninn:", true);
    eprintln!(
        "knot_diff: {total} queries compared, {} mismatches",
        report.len()
    );
    fail_with_report(total, &report, "muninn");
}
