//! Request bytes -> response bytes through `Handler::handle`, on a zone built in-process.
//!
//! Cases: a hit (A), NXDOMAIN, a wildcard expansion, a referral, and a CNAME chased inside
//! the zone. `cargo bench --bench answer_path` runs them with divan (wall clock: noisy on
//! the shared 2-core machine). For a stable figure, `benches/callgrind.sh` runs this binary
//! with `ANSWER_PATH_ITERS=N ANSWER_PATH_CASE=hit` (a plain loop, no divan) under
//! `valgrind --tool=callgrind` and prints instructions per query.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use muninn::handler::{DEFAULT_MAX_UDP_PAYLOAD, Handler, Outcome, Transport};
use muninn::zone::{Zone, ZoneSet};

/// Hosts in the in-process zone (same layout as `benches/gen_zone.sh`).
const HOSTS: u32 = 10_000;
const TTL: u32 = 3600;
/// The client address handed to the handler (loopback, like the load tests).
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53_000);

const CASES: &[(&str, &str, RecordType)] = &[
    ("hit", "h4242.bench.test.", RecordType::A),
    ("nxdomain", "nx4242.bench.test.", RecordType::A),
    ("wildcard", "w4242.wild.bench.test.", RecordType::A),
    ("referral", "www.sub.bench.test.", RecordType::A),
    ("cname", "a4240.bench.test.", RecordType::A),
];

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

fn rec(owner: &str, data: RData) -> Record {
    Record::from_rdata(name(owner), TTL, data)
}

fn build_zone() -> Zone {
    let o = "bench.test.";
    let mut v = vec![
        rec(
            o,
            RData::SOA(SOA::new(
                name("ns1.bench.test."),
                name("hostmaster.bench.test."),
                1,
                3600,
                900,
                604_800,
                300,
            )),
        ),
        rec(o, RData::NS(NS(name("ns1.bench.test.")))),
        rec(o, RData::NS(NS(name("ns2.bench.test.")))),
        rec(o, RData::MX(MX::new(10, name("mail.bench.test.")))),
        rec("ns1.bench.test.", RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))),
        rec("ns2.bench.test.", RData::A(A(Ipv4Addr::new(192, 0, 2, 2)))),
        rec(
            "mail.bench.test.",
            RData::A(A(Ipv4Addr::new(192, 0, 2, 25))),
        ),
        rec(
            "*.wild.bench.test.",
            RData::A(A(Ipv4Addr::new(192, 0, 2, 99))),
        ),
        rec(
            "*.wild.bench.test.",
            RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99))),
        ),
        rec(
            "sub.bench.test.",
            RData::NS(NS(name("ns1.sub.bench.test."))),
        ),
        rec(
            "sub.bench.test.",
            RData::NS(NS(name("ns2.sub.bench.test."))),
        ),
        rec(
            "ns1.sub.bench.test.",
            RData::A(A(Ipv4Addr::new(192, 0, 2, 53))),
        ),
        rec(
            "ns2.sub.bench.test.",
            RData::A(A(Ipv4Addr::new(192, 0, 2, 54))),
        ),
    ];
    for i in 0..HOSTS {
        let h = format!("h{i}.bench.test.");
        let [_, b, c, d] = i.to_be_bytes();
        v.push(rec(&h, RData::A(A(Ipv4Addr::new(10, b, c, d)))));
        if i % 2 == 0 {
            let lo = (i % 65_536) as u16;
            let hi = (i / 65_536) as u16;
            v.push(rec(
                &h,
                RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, hi, lo))),
            ));
        }
        if i % 10 == 0 {
            v.push(rec(&h, RData::MX(MX::new(10, name("mail.bench.test.")))));
            v.push(rec(
                &h,
                RData::TXT(TXT::new(vec!["v=spf1 -all".to_string()])),
            ));
        }
        if i % 20 == 0 {
            let target = format!("h{}.bench.test.", (i * 7 + 1) % HOSTS);
            v.push(rec(
                &format!("a{i}.bench.test."),
                RData::CNAME(CNAME(name(&target))),
            ));
        }
    }
    Zone::build(name(o), v).unwrap()
}

fn handler() -> &'static Handler {
    static H: OnceLock<Handler> = OnceLock::new();
    H.get_or_init(|| {
        let mut set = ZoneSet::new();
        set.insert(Arc::new(build_zone()));
        Handler::new(
            Arc::new(ArcSwap::from_pointee(set)),
            DEFAULT_MAX_UDP_PAYLOAD,
        )
    })
}

/// Wire bytes of a query like dnsperf sends (RD set), with EDNS(0) 1232 when `edns`.
fn query(qname: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(qname), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn case(label: &str) -> (&'static str, RecordType) {
    CASES
        .iter()
        .find(|(l, _, _)| *l == label)
        .map(|&(_, n, t)| (n, t))
        .unwrap_or_else(|| {
            panic!("unknown case {label}; known: hit nxdomain wildcard referral cname")
        })
}

/// Checks once that the case really produces the answer it is named after, so that the
/// benchmark cannot silently measure an error path.
fn check(label: &str, resp: &[u8]) {
    let m = Message::from_vec(resp).unwrap();
    let rcode = m.metadata.response_code;
    let ok = match label {
        "hit" | "wildcard" => rcode.low() == 0 && m.answers.len() == 1,
        "cname" => rcode.low() == 0 && m.answers.len() == 2,
        "nxdomain" => rcode.low() == 3 && m.answers.is_empty() && m.authorities.len() == 1,
        "referral" => {
            rcode.low() == 0
                && m.answers.is_empty()
                && m.authorities.len() == 2
                && !m.metadata.authoritative
        }
        _ => false,
    };
    assert!(ok, "case {label} got an unexpected response: {m:?}");
}

fn run(label: &str, edns: bool, bencher: divan::Bencher) {
    let (qname, qtype) = case(label);
    let h = handler();
    let req = query(qname, qtype, edns);
    let mut out = Vec::with_capacity(4096);
    assert_eq!(
        h.handle(&req, Transport::Udp, PEER, &mut out),
        Outcome::Respond
    );
    check(label, &out);
    bencher.bench_local(|| h.handle(black_box(&req), Transport::Udp, PEER, black_box(&mut out)));
}

#[divan::bench(args = ["hit", "nxdomain", "wildcard", "referral", "cname"])]
fn udp(bencher: divan::Bencher, label: &str) {
    run(label, false, bencher);
}

#[divan::bench(args = ["hit", "nxdomain", "wildcard", "referral", "cname"])]
fn udp_edns(bencher: divan::Bencher, label: &str) {
    run(label, true, bencher);
}

fn main() {
    // Callgrind mode: a fixed number of iterations of one case, no divan machinery.
    if let Ok(iters) = std::env::var("ANSWER_PATH_ITERS") {
        let iters: u64 = iters.parse().expect("ANSWER_PATH_ITERS must be a number");
        let label = std::env::var("ANSWER_PATH_CASE").unwrap_or_else(|_| "hit".to_string());
        let edns = std::env::var("ANSWER_PATH_EDNS").is_ok_and(|v| v == "1");
        let (qname, qtype) = case(&label);
        let h = handler();
        let req = query(qname, qtype, edns);
        let mut out = Vec::with_capacity(4096);
        assert_eq!(
            h.handle(&req, Transport::Udp, PEER, &mut out),
            Outcome::Respond
        );
        check(&label, &out);
        for _ in 0..iters {
            black_box(h.handle(black_box(&req), Transport::Udp, PEER, black_box(&mut out)));
        }
        return;
    }
    divan::main();
}
