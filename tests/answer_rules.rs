//! Answer rules (RFC 1034 §4.3.2, 2308, 4035 §3.1.4.1, 4592, 6672, 8482, 9471), checked
//! section by section. The expected answers were compared with Knot DNS 3.2 serving the
//! same zones (see the report of the `answer` branch); where Knot orders an RRset's records
//! canonically we keep zone-file order, which the RFCs leave free.

use std::sync::Arc;

use hickory_proto::op::{OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinDecodable;
use hickory_proto::serialize::txt::Parser;
use muninn::auth::{ZoneAnswer, answer};
use muninn::wire::request::Request;
use muninn::zone::{WireRRset, Zone, ZoneSet};

const EXAMPLE: &str = r#"
$TTL 3600
@ IN SOA ns1.example.com. hostmaster.example.com. 1 7200 3600 1209600 300
@ NS ns1.example.com.
@ NS ns2.example.com.
@ MX 10 mail.example.com.
@ MX 20 mail.other.org.
@ MX 30 mx.sub.example.com.
ns1 A 192.0.2.1
ns2 A 192.0.2.2
ns2 AAAA 2001:db8::2
mail A 192.0.2.10
mail AAAA 2001:db8::10
www A 192.0.2.20
www TXT "hello"
alias CNAME www
alias2 CNAME alias
loop1 CNAME loop2
loop2 CNAME loop1
self CNAME self
dangling CNAME nothere
toother CNAME www.other.org.
tosub CNAME www.sub.example.com.
todeleg CNAME host.deleg
towild CNAME foo.wild
_sip._tcp SRV 0 5 5060 sip
_sip._tcp SRV 0 5 5060 sipext.other.org.
sip A 192.0.2.30
a.b.c A 192.0.2.40
*.wild A 192.0.2.50
*.wild MX 10 mail
*.wildc CNAME www
*.c A 192.0.2.60
*.ent A 192.0.2.61
x.y.ent A 192.0.2.62
*.wl CNAME x.wl
deleg NS ns.deleg
deleg NS ns.other.org.
deleg NS ns1.example.com.
deleg NS ns.sibling
ns.deleg A 192.0.2.100
ns.deleg AAAA 2001:db8::100
deep.below.deleg A 192.0.2.101
sibling NS ns.sibling
ns.sibling A 192.0.2.110
sub NS ns.sub
ns.sub A 192.0.2.120
ttl TXT "x"
mxglue MX 1 ns.deleg
mxglue MX 2 bar.wild
mxglue MX 3 alias
c1 CNAME c2
c2 CNAME c3
c3 CNAME c4
c4 CNAME c5
c5 CNAME c6
c6 CNAME c7
c7 CNAME c8
c8 A 192.0.2.80
"#;

const LONG_TARGET: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.\
aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.\
aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.\
aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.";

const SUB: &str = r#"
$TTL 600
@ IN SOA ns.sub.example.com. h.sub.example.com. 5 7200 3600 1209600 60
@ NS ns
ns A 192.0.2.120
www A 192.0.2.121
mx A 192.0.2.122
@ MX 5 www.example.com.
@ MX 6 www
"#;

const OTHER: &str = r#"
$TTL 300
@ IN SOA ns.other.org. h.other.org. 7 7200 3600 1209600 900
@ NS ns
ns A 198.51.100.1
www A 198.51.100.2
back CNAME www.example.com.
"#;

const DS_HEX: &str = "49fd46e6c4b45c55d4ac69cbd3cd34ac1afe51de5c2e5e6e27f8db0d7d1e0c8a";

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// Records from zone text via hickory's parser (test convenience only).
fn parse(origin: &str, text: &str) -> Vec<Record> {
    let (_, sets) = Parser::new(text, None, Some(name(origin))).parse().unwrap();
    sets.into_values().flat_map(|s| s.into_iter()).collect()
}

/// A record of a type hickory 0.26 has no struct for, as `RData::Unknown` (RFC 3597).
fn unknown(owner: &str, ttl: u32, rtype: RecordType, wire: Vec<u8>) -> Record {
    Record::from_rdata(
        name(owner),
        ttl,
        RData::Unknown {
            code: rtype,
            rdata: NULL::with(wire),
        },
    )
}

fn name_wire(n: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name(n).iter() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

fn dname(owner: &str, target: &str) -> Record {
    unknown(owner, 3600, RecordType::DNAME, name_wire(target))
}

fn ds(owner: &str) -> Record {
    let mut wire = vec![0x30, 0x39, 8, 2];
    for i in (0..DS_HEX.len()).step_by(2) {
        wire.push(u8::from_str_radix(&DS_HEX[i..i + 2], 16).unwrap());
    }
    unknown(owner, 3600, RecordType::DS, wire)
}

fn example_zone() -> Zone {
    let mut records = parse("example.com.", EXAMPLE);
    records.push(dname("dn.example.com.", "target.example.net."));
    records.push(dname("dnl.example.com.", LONG_TARGET));
    records.push(dname("dnin.example.com.", "c.example.com."));
    records.push(dname("dl.example.com.", "sub.dl.example.com."));
    records.push(ds("deleg.example.com."));
    Zone::build(name("example.com."), records).unwrap()
}

fn zones() -> ZoneSet {
    let mut set = ZoneSet::new();
    set.insert(Arc::new(example_zone()));
    set.insert(Arc::new(
        Zone::build(name("sub.example.com."), parse("sub.example.com.", SUB)).unwrap(),
    ));
    set.insert(Arc::new(
        Zone::build(name("other.org."), parse("other.org.", OTHER)).unwrap(),
    ));
    set
}

fn request(qname: &str, qtype: RecordType) -> Request {
    Request {
        id: 7,
        opcode: OpCode::Query,
        query: Query::query(name(qname), qtype),
        recursion_desired: false,
        checking_disabled: false,
        edns: None,
    }
}

/// One line per record: `owner ttl TYPE rdata`; checks that every record carries its
/// RRset's owner, type and TTL.
fn lines(sets: &[WireRRset<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    for set in sets {
        let records = set.records();
        assert!(!records.is_empty(), "empty RRset {set:?}");
        assert_eq!(records.len(), set.len(), "undecodable record in {set:?}");
        let owner = set.owner_name().unwrap();
        for r in &records {
            // Case-sensitive: answers keep the zone's spelling (or the query's, when
            // synthesized).
            assert_eq!(
                r.name.to_string(),
                owner.to_string(),
                "record owner differs from RRset owner"
            );
            assert_eq!(r.ttl, set.ttl, "record TTL differs from RRset TTL");
            assert_eq!(r.record_type(), set.rtype);
            let rdata = match &r.data {
                RData::Unknown {
                    code: RecordType::DNAME,
                    rdata,
                } => Name::from_bytes(&rdata.anything).unwrap().to_string(),
                RData::Unknown { rdata, .. } => {
                    rdata.anything.iter().map(|b| format!("{b:02x}")).collect()
                }
                other => other.to_string(),
            };
            out.push(format!("{} {} {} {}", r.name, r.ttl, set.rtype, rdata));
        }
    }
    out
}

struct Expect<'a> {
    rcode: ResponseCode,
    aa: bool,
    answer: &'a [&'a str],
    authority: &'a [&'a str],
    additional: &'a [&'a str],
    required: usize,
}

const SOA: &str =
    "example.com. 300 SOA ns1.example.com. hostmaster.example.com. 1 7200 3600 1209600 300";
const DELEG_NS: [&str; 4] = [
    "deleg.example.com. 3600 NS ns.deleg.example.com.",
    "deleg.example.com. 3600 NS ns.other.org.",
    "deleg.example.com. 3600 NS ns1.example.com.",
    "deleg.example.com. 3600 NS ns.sibling.example.com.",
];
const DELEG_GLUE: [&str; 4] = [
    "ns.deleg.example.com. 3600 A 192.0.2.100",
    "ns.deleg.example.com. 3600 AAAA 2001:db8::100",
    "ns1.example.com. 3600 A 192.0.2.1",
    "ns.sibling.example.com. 3600 A 192.0.2.110",
];

fn check_answer(a: &ZoneAnswer<'_>, what: &str, e: &Expect<'_>) {
    assert_eq!(a.rcode, e.rcode, "{what}: rcode");
    assert_eq!(a.authoritative, e.aa, "{what}: AA");
    assert_eq!(lines(&a.answers), e.answer, "{what}: answer section");
    assert_eq!(
        lines(&a.authorities),
        e.authority,
        "{what}: authority section"
    );
    assert_eq!(
        lines(&a.additionals),
        e.additional,
        "{what}: additional section"
    );
    assert_eq!(
        a.required_additionals, e.required,
        "{what}: required additionals"
    );
}

fn check(zs: &ZoneSet, qname: &str, qtype: RecordType, e: Expect<'_>) {
    let req = request(qname, qtype);
    let a = answer(&req, zs).unwrap_or_else(|| panic!("{qname} {qtype}: no zone"));
    check_answer(&a, &format!("{qname} {qtype}"), &e);
}

fn ok<'a>(answer: &'a [&'a str]) -> Expect<'a> {
    Expect {
        rcode: ResponseCode::NoError,
        aa: true,
        answer,
        authority: &[],
        additional: &[],
        required: 0,
    }
}

fn nodata<'a>(answer: &'a [&'a str], soa: &'a [&'a str]) -> Expect<'a> {
    Expect {
        authority: soa,
        ..ok(answer)
    }
}

fn nxdomain<'a>(answer: &'a [&'a str], soa: &'a [&'a str]) -> Expect<'a> {
    Expect {
        rcode: ResponseCode::NXDomain,
        authority: soa,
        ..ok(answer)
    }
}

fn referral<'a>(answer: &'a [&'a str], aa: bool) -> Expect<'a> {
    Expect {
        rcode: ResponseCode::NoError,
        aa,
        answer,
        authority: &DELEG_NS,
        additional: &DELEG_GLUE,
        required: 2,
    }
}

#[test]
fn exact_match_positive() {
    let zs = zones();
    check(
        &zs,
        "www.example.com.",
        RecordType::A,
        ok(&["www.example.com. 3600 A 192.0.2.20"]),
    );
    // Case-insensitive lookup (RFC 4343); borrowed RRsets keep the zone's spelling.
    check(
        &zs,
        "WWW.Example.COM.",
        RecordType::TXT,
        ok(&["www.example.com. 3600 TXT hello"]),
    );
}

#[test]
fn nodata_and_nxdomain_carry_soa_with_minimum_ttl() {
    let zs = zones();
    // RFC 2308 §3: SOA TTL 3600, MINIMUM 300 -> 300.
    check(&zs, "ttl.example.com.", RecordType::A, nodata(&[], &[SOA]));
    check(
        &zs,
        "nothing.example.com.",
        RecordType::A,
        nxdomain(&[], &[SOA]),
    );
    // Empty non-terminal: NODATA, not NXDOMAIN (RFC 8020 / 4592 §2.2.2).
    check(&zs, "b.c.example.com.", RecordType::A, nodata(&[], &[SOA]));
    check(
        &zs,
        "q.b.c.example.com.",
        RecordType::A,
        nxdomain(&[], &[SOA]),
    );
}

#[test]
fn name_outside_served_zones_is_none() {
    let zs = zones();
    assert!(answer(&request("foo.org.", RecordType::A), &zs).is_none());
    assert!(answer(&request("example.net.", RecordType::A), &zs).is_none());
    assert!(answer(&request(".", RecordType::NS), &zs).is_none());
}

#[test]
fn cname_chain_inside_zone() {
    let zs = zones();
    check(
        &zs,
        "alias2.example.com.",
        RecordType::A,
        ok(&[
            "alias2.example.com. 3600 CNAME alias.example.com.",
            "alias.example.com. 3600 CNAME www.example.com.",
            "www.example.com. 3600 A 192.0.2.20",
        ]),
    );
    // The CNAME itself is the answer for CNAME and ANY queries.
    check(
        &zs,
        "alias.example.com.",
        RecordType::CNAME,
        ok(&["alias.example.com. 3600 CNAME www.example.com."]),
    );
    check(
        &zs,
        "alias.example.com.",
        RecordType::ANY,
        ok(&["alias.example.com. 3600 CNAME www.example.com."]),
    );
    // Chain ending in NODATA.
    check(
        &zs,
        "alias.example.com.",
        RecordType::MX,
        nodata(&["alias.example.com. 3600 CNAME www.example.com."], &[SOA]),
    );
}

#[test]
fn cname_loops_stop() {
    let zs = zones();
    check(
        &zs,
        "loop1.example.com.",
        RecordType::A,
        ok(&[
            "loop1.example.com. 3600 CNAME loop2.example.com.",
            "loop2.example.com. 3600 CNAME loop1.example.com.",
        ]),
    );
    check(
        &zs,
        "self.example.com.",
        RecordType::A,
        ok(&["self.example.com. 3600 CNAME self.example.com."]),
    );
    // A wildcard CNAME pointing back into its own wildcard (Knot gives the same).
    check(
        &zs,
        "a.wl.example.com.",
        RecordType::A,
        ok(&[
            "a.wl.example.com. 3600 CNAME x.wl.example.com.",
            "x.wl.example.com. 3600 CNAME x.wl.example.com.",
        ]),
    );
}

#[test]
fn cname_chain_length_is_capped_like_knot() {
    let zs = zones();
    // Five links, then stop with NOERROR and no authority (Knot's CNAME_CHAIN_MAX = 5).
    check(
        &zs,
        "c1.example.com.",
        RecordType::A,
        ok(&[
            "c1.example.com. 3600 CNAME c2.example.com.",
            "c2.example.com. 3600 CNAME c3.example.com.",
            "c3.example.com. 3600 CNAME c4.example.com.",
            "c4.example.com. 3600 CNAME c5.example.com.",
            "c5.example.com. 3600 CNAME c6.example.com.",
        ]),
    );
    check(
        &zs,
        "c3.example.com.",
        RecordType::A,
        ok(&[
            "c3.example.com. 3600 CNAME c4.example.com.",
            "c4.example.com. 3600 CNAME c5.example.com.",
            "c5.example.com. 3600 CNAME c6.example.com.",
            "c6.example.com. 3600 CNAME c7.example.com.",
            "c7.example.com. 3600 CNAME c8.example.com.",
            "c8.example.com. 3600 A 192.0.2.80",
        ]),
    );
}

#[test]
fn cname_into_nxdomain_and_out_of_zone() {
    let zs = zones();
    check(
        &zs,
        "dangling.example.com.",
        RecordType::A,
        nxdomain(
            &["dangling.example.com. 3600 CNAME nothere.example.com."],
            &[SOA],
        ),
    );
    // Knot does not follow into other zones, even ones it serves.
    check(
        &zs,
        "toother.example.com.",
        RecordType::A,
        ok(&["toother.example.com. 3600 CNAME www.other.org."]),
    );
    check(
        &zs,
        "back.other.org.",
        RecordType::A,
        ok(&["back.other.org. 300 CNAME www.example.com."]),
    );
}

#[test]
fn cname_into_delegation_gives_referral_with_aa() {
    let zs = zones();
    check(
        &zs,
        "todeleg.example.com.",
        RecordType::A,
        referral(
            &["todeleg.example.com. 3600 CNAME host.deleg.example.com."],
            true,
        ),
    );
    // Target in a child zone we also serve: still answered from the parent's view.
    check(
        &zs,
        "tosub.example.com.",
        RecordType::A,
        Expect {
            authority: &["sub.example.com. 3600 NS ns.sub.example.com."],
            additional: &["ns.sub.example.com. 3600 A 192.0.2.120"],
            required: 1,
            ..ok(&["tosub.example.com. 3600 CNAME www.sub.example.com."])
        },
    );
}

#[test]
fn referral_below_cut() {
    let zs = zones();
    for (q, t) in [
        ("deleg.example.com.", RecordType::A),
        ("deleg.example.com.", RecordType::NS),
        ("deleg.example.com.", RecordType::ANY),
        ("host.deleg.example.com.", RecordType::A),
        // Occluded data is never answered.
        ("ns.deleg.example.com.", RecordType::A),
        ("deep.below.deleg.example.com.", RecordType::A),
        ("deep.below.deleg.example.com.", RecordType::DS),
        ("x.y.deleg.example.com.", RecordType::MX),
    ] {
        check(&zs, q, t, referral(&[], false));
    }
}

#[test]
fn referral_with_only_out_of_zone_names() {
    let mut records = parse(
        "example.com.",
        "$TTL 60\n@ SOA ns. h. 1 2 3 4 5\n@ NS ns.\nd NS ns.other.org.\nd NS a.sub.d\n",
    );
    records.extend(parse("example.com.", "$TTL 60\nx A 192.0.2.9\n"));
    let mut zs = ZoneSet::new();
    zs.insert(Arc::new(
        Zone::build(name("example.com."), records).unwrap(),
    ));
    // a.sub.d is in-domain but has no address: nothing to add, nothing required.
    check(
        &zs,
        "www.d.example.com.",
        RecordType::A,
        Expect {
            rcode: ResponseCode::NoError,
            aa: false,
            answer: &[],
            authority: &[
                "d.example.com. 60 NS ns.other.org.",
                "d.example.com. 60 NS a.sub.d.example.com.",
            ],
            additional: &[],
            required: 0,
        },
    );
}

#[test]
fn ds_at_cut_and_child_apex_from_parent_side() {
    let zs = zones();
    check(
        &zs,
        "deleg.example.com.",
        RecordType::DS,
        ok(&[
            "deleg.example.com. 3600 DS 3039080249fd46e6c4b45c55d4ac69cbd3cd34ac1afe51de5c2e5e6e27f8db0d7d1e0c8a",
        ]),
    );
    // Cut without DS: authoritative NODATA from the parent.
    check(
        &zs,
        "sibling.example.com.",
        RecordType::DS,
        nodata(&[], &[SOA]),
    );
    // Child apex served too: DS still comes from the parent (RFC 4035 §3.1.4.1)...
    check(&zs, "sub.example.com.", RecordType::DS, nodata(&[], &[SOA]));
    // ...while everything else at the child apex comes from the child.
    check(
        &zs,
        "sub.example.com.",
        RecordType::NS,
        Expect {
            additional: &["ns.sub.example.com. 600 A 192.0.2.120"],
            ..ok(&["sub.example.com. 600 NS ns.sub.example.com."])
        },
    );
    let sub_soa =
        "sub.example.com. 60 SOA ns.sub.example.com. h.sub.example.com. 5 7200 3600 1209600 60";
    check(
        &zs,
        "x.sub.example.com.",
        RecordType::DS,
        nxdomain(&[], &[sub_soa]),
    );
    // A zone whose parent we do not serve answers DS at its apex itself.
    check(
        &zs,
        "other.org.",
        RecordType::DS,
        nodata(
            &[],
            &["other.org. 300 SOA ns.other.org. h.other.org. 7 7200 3600 1209600 900"],
        ),
    );
}

#[test]
fn parent_and_child_best_zone() {
    let zs = zones();
    check(
        &zs,
        "www.sub.example.com.",
        RecordType::A,
        ok(&["www.sub.example.com. 600 A 192.0.2.121"]),
    );
    // Child data only; out-of-zone MX target gets no additional even though we serve it.
    check(
        &zs,
        "sub.example.com.",
        RecordType::MX,
        Expect {
            additional: &["www.sub.example.com. 600 A 192.0.2.121"],
            ..ok(&[
                "sub.example.com. 600 MX 5 www.example.com.",
                "sub.example.com. 600 MX 6 www.sub.example.com.",
            ])
        },
    );
}

#[test]
fn wildcard_synthesis() {
    let zs = zones();
    check(
        &zs,
        "foo.wild.example.com.",
        RecordType::A,
        ok(&["foo.wild.example.com. 3600 A 192.0.2.50"]),
    );
    check(
        &zs,
        "a.b.wild.example.com.",
        RecordType::A,
        ok(&["a.b.wild.example.com. 3600 A 192.0.2.50"]),
    );
    // NODATA from a wildcard still carries the SOA.
    check(
        &zs,
        "foo.wild.example.com.",
        RecordType::TXT,
        nodata(&[], &[SOA]),
    );
    // Additional data of synthesized MX.
    check(
        &zs,
        "foo.wild.example.com.",
        RecordType::MX,
        Expect {
            additional: &[
                "mail.example.com. 3600 A 192.0.2.10",
                "mail.example.com. 3600 AAAA 2001:db8::10",
            ],
            ..ok(&["foo.wild.example.com. 3600 MX 10 mail.example.com."])
        },
    );
    // The wildcard owner itself is an ordinary name.
    check(
        &zs,
        "*.wild.example.com.",
        RecordType::A,
        ok(&["*.wild.example.com. 3600 A 192.0.2.50"]),
    );
    check(&zs, "wild.example.com.", RecordType::A, nodata(&[], &[SOA]));
    // Synthesized owner keeps the query's spelling.
    check(
        &zs,
        "Foo.Wild.example.com.",
        RecordType::A,
        ok(&["Foo.Wild.example.com. 3600 A 192.0.2.50"]),
    );
    // ANY at a wildcard: one RRset.
    check(
        &zs,
        "q.wild.example.com.",
        RecordType::ANY,
        ok(&["q.wild.example.com. 3600 A 192.0.2.50"]),
    );
}

#[test]
fn wildcard_blocked_by_existing_name_and_ent() {
    let zs = zones();
    // *.c exists, but b.c is an empty non-terminal (a.b.c): no synthesis for b.c...
    check(&zs, "b.c.example.com.", RecordType::A, nodata(&[], &[SOA]));
    // ...nor below it (closest encloser is b.c, which has no wildcard).
    check(
        &zs,
        "q.b.c.example.com.",
        RecordType::A,
        nxdomain(&[], &[SOA]),
    );
    check(
        &zs,
        "zz.c.example.com.",
        RecordType::A,
        ok(&["zz.c.example.com. 3600 A 192.0.2.60"]),
    );
    // *.ent with x.y.ent: y.ent is an ENT and blocks, z.ent is synthesized.
    check(
        &zs,
        "y.ent.example.com.",
        RecordType::A,
        nodata(&[], &[SOA]),
    );
    check(
        &zs,
        "q.y.ent.example.com.",
        RecordType::A,
        nxdomain(&[], &[SOA]),
    );
    check(
        &zs,
        "z.ent.example.com.",
        RecordType::A,
        ok(&["z.ent.example.com. 3600 A 192.0.2.61"]),
    );
    // An existing name with other types: NODATA, not the wildcard.
    check(
        &zs,
        "x.y.ent.example.com.",
        RecordType::TXT,
        nodata(&[], &[SOA]),
    );
}

#[test]
fn wildcard_cname_is_followed() {
    let zs = zones();
    check(
        &zs,
        "x.wildc.example.com.",
        RecordType::A,
        ok(&[
            "x.wildc.example.com. 3600 CNAME www.example.com.",
            "www.example.com. 3600 A 192.0.2.20",
        ]),
    );
    check(
        &zs,
        "x.wildc.example.com.",
        RecordType::TXT,
        ok(&[
            "x.wildc.example.com. 3600 CNAME www.example.com.",
            "www.example.com. 3600 TXT hello",
        ]),
    );
    check(
        &zs,
        "towild.example.com.",
        RecordType::A,
        ok(&[
            "towild.example.com. 3600 CNAME foo.wild.example.com.",
            "foo.wild.example.com. 3600 A 192.0.2.50",
        ]),
    );
}

#[test]
fn dname_substitution() {
    let zs = zones();
    let dn = "dn.example.com. 3600 DNAME target.example.net.";
    check(
        &zs,
        "x.dn.example.com.",
        RecordType::A,
        ok(&[dn, "x.dn.example.com. 3600 CNAME x.target.example.net."]),
    );
    check(
        &zs,
        "a.b.dn.example.com.",
        RecordType::TXT,
        ok(&[dn, "a.b.dn.example.com. 3600 CNAME a.b.target.example.net."]),
    );
    check(
        &zs,
        "x.dn.example.com.",
        RecordType::CNAME,
        ok(&[dn, "x.dn.example.com. 3600 CNAME x.target.example.net."]),
    );
    // The DNAME owner itself: the DNAME for type DNAME, NODATA otherwise.
    check(&zs, "dn.example.com.", RecordType::DNAME, ok(&[dn]));
    check(&zs, "dn.example.com.", RecordType::A, nodata(&[], &[SOA]));
    // Target inside the zone: the chain continues (here into a wildcard).
    let dnin = "dnin.example.com. 3600 DNAME c.example.com.";
    check(
        &zs,
        "zz.dnin.example.com.",
        RecordType::A,
        ok(&[
            dnin,
            "zz.dnin.example.com. 3600 CNAME zz.c.example.com.",
            "zz.c.example.com. 3600 A 192.0.2.60",
        ]),
    );
    check(
        &zs,
        "q.dnin.example.com.",
        RecordType::MX,
        nodata(
            &[dnin, "q.dnin.example.com. 3600 CNAME q.c.example.com."],
            &[SOA],
        ),
    );
    check(
        &zs,
        "q.b.dnin.example.com.",
        RecordType::A,
        nxdomain(
            &[dnin, "q.b.dnin.example.com. 3600 CNAME q.b.c.example.com."],
            &[SOA],
        ),
    );
}

#[test]
fn dname_overflow_is_yxdomain() {
    let zs = zones();
    let dnl = format!("dnl.example.com. 3600 DNAME {LONG_TARGET}");
    // 26 + 241 octets > 255 (RFC 6672 §2.2).
    let q = format!("{}.dnl.example.com.", "a".repeat(25));
    check(
        &zs,
        &q,
        RecordType::A,
        Expect {
            rcode: ResponseCode::YXDomain,
            ..ok(&[dnl.as_str()])
        },
    );
    // 14 + 241 = 255 octets still fits.
    let q = format!("{}.dnl.example.com.", "a".repeat(13));
    let a = answer(&request(&q, RecordType::A), &zs).unwrap();
    assert_eq!(a.rcode, ResponseCode::NoError);
    assert_eq!(a.answers.len(), 2);
    assert_eq!(
        lines(&a.answers)[1],
        format!("{q} 3600 CNAME {}.{LONG_TARGET}", "a".repeat(13))
    );
}

#[test]
fn dname_loop_is_capped() {
    let zs = zones();
    check(
        &zs,
        "x.dl.example.com.",
        RecordType::A,
        ok(&[
            "dl.example.com. 3600 DNAME sub.dl.example.com.",
            "x.dl.example.com. 3600 CNAME x.sub.dl.example.com.",
            "x.sub.dl.example.com. 3600 CNAME x.sub.sub.dl.example.com.",
            "x.sub.sub.dl.example.com. 3600 CNAME x.sub.sub.sub.dl.example.com.",
            "x.sub.sub.sub.dl.example.com. 3600 CNAME x.sub.sub.sub.sub.dl.example.com.",
            "x.sub.sub.sub.sub.dl.example.com. 3600 CNAME x.sub.sub.sub.sub.sub.dl.example.com.",
        ]),
    );
}

#[test]
fn additionals_for_mx_srv_ns() {
    let zs = zones();
    // Out-of-zone targets (other.org, and mx.sub which is in the child zone) get nothing.
    check(
        &zs,
        "example.com.",
        RecordType::MX,
        Expect {
            additional: &[
                "mail.example.com. 3600 A 192.0.2.10",
                "mail.example.com. 3600 AAAA 2001:db8::10",
            ],
            ..ok(&[
                "example.com. 3600 MX 10 mail.example.com.",
                "example.com. 3600 MX 20 mail.other.org.",
                "example.com. 3600 MX 30 mx.sub.example.com.",
            ])
        },
    );
    check(
        &zs,
        "_sip._tcp.example.com.",
        RecordType::SRV,
        Expect {
            additional: &["sip.example.com. 3600 A 192.0.2.30"],
            ..ok(&[
                "_sip._tcp.example.com. 3600 SRV 0 5 5060 sip.example.com.",
                "_sip._tcp.example.com. 3600 SRV 0 5 5060 sipext.other.org.",
            ])
        },
    );
    check(
        &zs,
        "example.com.",
        RecordType::NS,
        Expect {
            additional: &[
                "ns1.example.com. 3600 A 192.0.2.1",
                "ns2.example.com. 3600 A 192.0.2.2",
                "ns2.example.com. 3600 AAAA 2001:db8::2",
            ],
            ..ok(&[
                "example.com. 3600 NS ns1.example.com.",
                "example.com. 3600 NS ns2.example.com.",
            ])
        },
    );
    // Like Knot: glue below a cut and wildcard-matched targets count; a CNAME target
    // (alias) does not (RFC 2181 §10.3).
    check(
        &zs,
        "mxglue.example.com.",
        RecordType::MX,
        Expect {
            additional: &[
                "ns.deleg.example.com. 3600 A 192.0.2.100",
                "ns.deleg.example.com. 3600 AAAA 2001:db8::100",
                "bar.wild.example.com. 3600 A 192.0.2.50",
            ],
            ..ok(&[
                "mxglue.example.com. 3600 MX 1 ns.deleg.example.com.",
                "mxglue.example.com. 3600 MX 2 bar.wild.example.com.",
                "mxglue.example.com. 3600 MX 3 alias.example.com.",
            ])
        },
    );
}

#[test]
fn minimal_any_returns_first_rrset() {
    let zs = zones();
    // RFC 8482 §4.2: one RRset; like Knot, the node's first (here zone order from the
    // test parser, which sorts by type: A before TXT).
    check(
        &zs,
        "www.example.com.",
        RecordType::ANY,
        ok(&["www.example.com. 3600 A 192.0.2.20"]),
    );
    check(
        &zs,
        "nothing.example.com.",
        RecordType::ANY,
        nxdomain(&[], &[SOA]),
    );
    check(
        &zs,
        "b.c.example.com.",
        RecordType::ANY,
        nodata(&[], &[SOA]),
    );
}

#[test]
fn rrsig_and_nsec_queries_are_plain_lookups() {
    let zs = zones();
    check(
        &zs,
        "www.example.com.",
        RecordType::RRSIG,
        nodata(&[], &[SOA]),
    );
    // No CNAME following for NSEC/RRSIG, as Knot.
    check(
        &zs,
        "alias.example.com.",
        RecordType::NSEC,
        nodata(&[], &[SOA]),
    );
}

#[test]
fn answers_borrow_from_the_snapshot() {
    let zs = zones();
    let req = request("example.com.", RecordType::MX);
    let a = answer(&req, &zs).unwrap();
    assert_eq!(a.answers.len(), 1);
    assert!(a.answers.iter().all(|s| s.is_borrowed()));
    assert!(!a.additionals.is_empty());
    assert!(a.additionals.iter().all(|s| s.is_borrowed()));
}

#[test]
fn nested_cut_uses_topmost() {
    let text = "$TTL 60\n@ SOA ns. h. 1 2 3 4 5\n@ NS ns.\nd NS ns.d\nns.d A 192.0.2.1\ne.d NS ns.e.d\nns.e.d A 192.0.2.2\n";
    let mut zs = ZoneSet::new();
    zs.insert(Arc::new(
        Zone::build(name("example.com."), parse("example.com.", text)).unwrap(),
    ));
    for q in [
        "e.d.example.com.",
        "x.e.d.example.com.",
        "ns.e.d.example.com.",
    ] {
        check(
            &zs,
            q,
            RecordType::A,
            Expect {
                rcode: ResponseCode::NoError,
                aa: false,
                answer: &[],
                authority: &["d.example.com. 60 NS ns.d.example.com."],
                additional: &["ns.d.example.com. 60 A 192.0.2.1"],
                required: 1,
            },
        );
    }
    // DS at the inner (occluded) cut is still a referral from the outer one.
    let a = answer(&request("e.d.example.com.", RecordType::DS), &zs).unwrap();
    assert!(!a.authoritative);
    assert_eq!(
        lines(&a.authorities),
        ["d.example.com. 60 NS ns.d.example.com."]
    );
}

/// Build and lookup speed on a large zone; run with
/// `cargo test --release --test answer_rules -- --ignored --nocapture`.
#[test]
#[ignore]
fn large_zone_timing() {
    use std::net::Ipv4Addr;
    use std::time::Instant;

    use hickory_proto::rr::rdata::{A, NS, SOA};

    let origin = name("example.com.");
    let n = 1_000_000u32;
    let mut records = vec![
        Record::from_rdata(
            origin.clone(),
            3600,
            RData::SOA(SOA::new(name("ns."), name("h."), 1, 2, 3, 4, 5)),
        ),
        Record::from_rdata(
            origin.clone(),
            3600,
            RData::NS(NS(name("ns1.example.com."))),
        ),
    ];
    for i in 0..n {
        let owner = name(&format!("host{i}.example.com."));
        if i % 10 == 0 {
            records.push(Record::from_rdata(
                owner.clone(),
                3600,
                RData::NS(NS(name(&format!("ns.host{i}.example.com.")))),
            ));
            records.push(Record::from_rdata(
                name(&format!("ns.host{i}.example.com.")),
                3600,
                RData::A(A(Ipv4Addr::from(i))),
            ));
        } else {
            records.push(Record::from_rdata(
                owner,
                3600,
                RData::A(A(Ipv4Addr::from(i))),
            ));
        }
    }
    let t = Instant::now();
    let zone = Zone::build(origin, records).unwrap();
    println!("build {} names: {:?}", zone.name_count(), t.elapsed());
    let mut zs = ZoneSet::new();
    zs.insert(Arc::new(zone));
    let opts = muninn::wire::response::EncodeOptions::default();
    let mut out = Vec::with_capacity(65536);
    for (q, t) in [
        ("host7.example.com.", RecordType::A),
        ("nope.example.com.", RecordType::A),
        ("www.host10.example.com.", RecordType::A),
        ("host7.example.com.", RecordType::TXT),
        ("host10.example.com.", RecordType::A),
    ] {
        let req = request(q, t);
        // Best of several rounds: the machine running this may be busy.
        let iters = 200_000;
        let mut sink = 0usize;
        let mut answer_only = std::time::Duration::MAX;
        let mut with_encode = std::time::Duration::MAX;
        for _ in 0..7 {
            let start = Instant::now();
            for _ in 0..iters {
                let a = answer(std::hint::black_box(&req), &zs).unwrap();
                sink += a.answers.len() + a.authorities.len();
            }
            answer_only = answer_only.min(start.elapsed() / iters);
            let start = Instant::now();
            for _ in 0..iters {
                let a = answer(std::hint::black_box(&req), &zs).unwrap();
                sink += muninn::wire::response::encode(&req, &a, 65535, &opts, &mut out);
            }
            with_encode = with_encode.min(start.elapsed() / iters);
        }
        println!(
            "{q} {t}: answer {answer_only:?}/query, answer+encode {with_encode:?}/query ({sink})"
        );
    }
    // Names spread over the whole zone, as real traffic is: mostly cache misses.
    let reqs: Vec<Request> = (0..100_000u32)
        .map(|i| {
            let n = i.wrapping_mul(2_654_435_761) % (n + n / 10);
            request(&format!("host{n}.example.com."), RecordType::A)
        })
        .collect();
    let mut best = std::time::Duration::MAX;
    let mut sink = 0usize;
    for _ in 0..7 {
        let start = Instant::now();
        for req in &reqs {
            let a = answer(req, &zs).unwrap();
            sink += muninn::wire::response::encode(req, &a, 65535, &opts, &mut out);
        }
        best = best.min(start.elapsed() / reqs.len() as u32);
    }
    println!("random names: answer+encode {best:?}/query ({sink})");
}
