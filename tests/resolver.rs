//! The caching resolver end to end: the real listeners on 127.0.0.1 with a resolver behind
//! them, asking either a tiny in-test fake upstream (answers from a table, counts queries,
//! can delay, spoof, truncate, fail or go silent) or Knot (tests/common) as a real upstream.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use muninn::cache::{Entry, Key, Kind, RecordCache, Resolver, ResolverConfig};
use muninn::handler::{Handler, Outcome, Transport};
use muninn::server::{Limits, Listeners, spawn_listeners};
use muninn::zone::file::load_zone;
use muninn::zone::{RRset, ZoneSet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use common::{QueryOpts, build_query};

// ---------------------------------------------------------------------------------------------
// Fake upstream
// ---------------------------------------------------------------------------------------------

/// Behaviour switches and counters of the fake upstream.
#[derive(Default)]
struct FakeState {
    /// Queries received (UDP and TCP).
    queries: AtomicUsize,
    tcp_queries: AtomicUsize,
    delay_ms: AtomicU64,
    /// Receive and count, never answer.
    silent: AtomicBool,
    /// Answer UDP with TC=1 and no data.
    truncate_udp: AtomicBool,
    /// Answer SERVFAIL.
    servfail: AtomicBool,
    /// Before the real reply, send one with a wrong ID and one for another question.
    spoof: AtomicBool,
    /// TTL of the answer records.
    ttl: AtomicU64,
    /// (lowercase name, type) -> rdata; CNAMEs are followed.
    table: Mutex<HashMap<(String, RecordType), RData>>,
}

struct FakeUpstream {
    addr: SocketAddr,
    state: Arc<FakeState>,
    token: CancellationToken,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Zone of all fake data: `test.` with SOA TTL 300 and MINIMUM 60, so negative answers are
/// cacheable for 60 s (RFC 2308 §5).
fn fake_soa() -> Record {
    let soa = SOA::new(
        name("ns.test."),
        name("hostmaster.test."),
        1,
        3600,
        600,
        86400,
        60,
    );
    Record::from_rdata(name("test."), 300, RData::SOA(soa))
}

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

fn a(ip: [u8; 4]) -> RData {
    RData::A(A(Ipv4Addr::from(ip)))
}

impl FakeUpstream {
    /// Serves UDP and TCP on the same loopback port.
    async fn start() -> FakeUpstream {
        // The kernel's free UDP port may be taken for TCP: try again with another one.
        let mut bound = None;
        for _ in 0..50 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(addr).await {
                bound = Some((udp, addr, tcp));
                break;
            }
        }
        let (udp, addr, tcp) = bound.expect("no loopback port free for both UDP and TCP");
        let state = Arc::new(FakeState::default());
        state.ttl.store(300, Ordering::Relaxed);
        let token = CancellationToken::new();
        let udp = Arc::new(udp);
        {
            let (state, token, udp) = (Arc::clone(&state), token.clone(), Arc::clone(&udp));
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let (n, from) = tokio::select! {
                        () = token.cancelled() => return,
                        r = udp.recv_from(&mut buf) => match r { Ok(r) => r, Err(_) => continue },
                    };
                    let Ok(query) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    state.queries.fetch_add(1, Ordering::Relaxed);
                    let (state, udp) = (Arc::clone(&state), Arc::clone(&udp));
                    tokio::spawn(async move {
                        for reply in state.replies(&query, true).await {
                            let _ = udp.send_to(&reply, from).await;
                        }
                    });
                }
            });
        }
        {
            let (state, token) = (Arc::clone(&state), token.clone());
            tokio::spawn(async move {
                loop {
                    let (mut stream, _) = tokio::select! {
                        () = token.cancelled() => return,
                        r = tcp.accept() => match r { Ok(r) => r, Err(_) => continue },
                    };
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        while let Ok(len) = stream.read_u16().await {
                            let mut msg = vec![0u8; usize::from(len)];
                            if stream.read_exact(&mut msg).await.is_err() {
                                return;
                            }
                            let Ok(query) = Message::from_vec(&msg) else {
                                return;
                            };
                            state.queries.fetch_add(1, Ordering::Relaxed);
                            state.tcp_queries.fetch_add(1, Ordering::Relaxed);
                            for reply in state.replies(&query, false).await {
                                let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                                framed.extend_from_slice(&reply);
                                if stream.write_all(&framed).await.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            });
        }
        FakeUpstream { addr, state, token }
    }

    fn add(&self, owner: &str, rdata: RData) {
        let key = (owner.to_ascii_lowercase(), rdata.record_type());
        self.state.table.lock().unwrap().insert(key, rdata);
    }

    fn queries(&self) -> usize {
        self.state.queries.load(Ordering::Relaxed)
    }
}

impl FakeState {
    /// The datagrams/messages to send back for `query`, in order.
    async fn replies(&self, query: &Message, udp: bool) -> Vec<Vec<u8>> {
        if self.silent.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let q = query.queries[0].clone();
        let mut resp = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
        resp.metadata.recursion_desired = query.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.add_query(q.clone());
        if let Some(edns) = &query.edns {
            let mut e = Edns::new();
            e.set_max_payload(1232)
                .set_dnssec_ok(edns.flags().dnssec_ok);
            resp.set_edns(e);
        }
        if self.servfail.load(Ordering::Relaxed) {
            resp.metadata.response_code = ResponseCode::ServFail;
            return vec![resp.to_vec().unwrap()];
        }
        if udp && self.truncate_udp.load(Ordering::Relaxed) {
            resp.metadata.truncation = true;
            return vec![resp.to_vec().unwrap()];
        }
        let ttl = self.ttl.load(Ordering::Relaxed) as u32;
        let table = self.table.lock().unwrap().clone();
        let mut current = q.name().to_lowercase();
        let mut rcode = ResponseCode::NXDomain;
        for _ in 0..8 {
            let key = current.to_ascii();
            if let Some(rdata) = table.get(&(key.clone(), q.query_type())) {
                resp.add_answer(Record::from_rdata(current.clone(), ttl, rdata.clone()));
                rcode = ResponseCode::NoError;
                break;
            }
            if let Some(RData::CNAME(c)) = table.get(&(key.clone(), RecordType::CNAME)) {
                resp.add_answer(Record::from_rdata(
                    current.clone(),
                    ttl,
                    RData::CNAME(c.clone()),
                ));
                current = c.0.to_lowercase();
                continue;
            }
            if table.keys().any(|(n, _)| *n == key) {
                rcode = ResponseCode::NoError; // NODATA
            }
            resp.add_authority(fake_soa());
            break;
        }
        resp.metadata.response_code = rcode;
        // Unrelated records a forwarder must not pass on or cache.
        resp.add_additional(Record::from_rdata(
            name("evil.example."),
            ttl,
            a([6, 6, 6, 6]),
        ));
        let real = resp.to_vec().unwrap();
        let mut out = Vec::new();
        if udp && self.spoof.load(Ordering::Relaxed) {
            // Wrong ID, poisoned data.
            let mut wrong_id = resp.clone();
            wrong_id.metadata.id ^= 0x5555;
            wrong_id.answers = vec![Record::from_rdata(q.name().clone(), ttl, a([6, 6, 6, 6]))];
            out.push(wrong_id.to_vec().unwrap());
            // Right ID, another question.
            let mut wrong_q = resp.clone();
            let mut other = q.clone();
            other.set_name(name("evil.test."));
            wrong_q.queries = vec![other];
            wrong_q.answers = vec![Record::from_rdata(q.name().clone(), ttl, a([6, 6, 6, 7]))];
            out.push(wrong_q.to_vec().unwrap());
            // Garbage.
            out.push(vec![0xde, 0xad]);
        }
        out.push(real);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Server under test
// ---------------------------------------------------------------------------------------------

struct Muninn {
    handler: Arc<Handler>,
    resolver: Resolver,
    listeners: Listeners,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Drop for Muninn {
    fn drop(&mut self) {
        self.token.cancel();
        self.tracker.close();
    }
}

impl Muninn {
    fn start(config: ResolverConfig, zones: ZoneSet) -> Muninn {
        let resolver = Resolver::new(config).unwrap();
        let handler = Arc::new(
            Handler::new(Arc::new(ArcSwap::from_pointee(zones)), 1232)
                .with_resolver(resolver.clone()),
        );
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let rt = Handle::current();
        assert!(resolver.spawn_maintenance(&rt, token.child_token(), &tracker));
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let listeners = spawn_listeners(
            &rt,
            Arc::clone(&handler),
            &[any],
            &[any],
            Limits::default(),
            1,
            token.child_token(),
            &tracker,
        )
        .unwrap();
        Muninn {
            handler,
            resolver,
            listeners,
            token,
            tracker,
        }
    }

    fn udp(&self) -> SocketAddr {
        self.listeners.udp_addrs()[0]
    }

    fn tcp(&self) -> SocketAddr {
        self.listeners.tcp_addrs()[0]
    }

    fn stat(&self, f: impl Fn(&muninn::cache::Stats) -> &AtomicU64) -> u64 {
        f(self.resolver.stats()).load(Ordering::Relaxed)
    }
}

fn config(upstreams: &[SocketAddr]) -> ResolverConfig {
    ResolverConfig {
        enabled: true,
        upstreams: upstreams.to_vec(),
        timeout_ms: 500,
        attempts: 2,
        ..ResolverConfig::default()
    }
}

fn rd() -> QueryOpts {
    QueryOpts {
        rd: true,
        ..QueryOpts::default()
    }
}

/// Sends a query over UDP from a fresh socket; `None` when nothing came back in `wait`.
async fn try_ask(
    server: SocketAddr,
    qname: &str,
    qtype: RecordType,
    opts: &QueryOpts,
    wait: Duration,
) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(server).await.unwrap();
    sock.send(&build_query(qname, qtype, opts)).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(wait, sock.recv(&mut buf))
        .await
        .ok()?
        .unwrap();
    let msg = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(msg.metadata.id, opts.id);
    Some(msg)
}

async fn ask(server: SocketAddr, qname: &str, qtype: RecordType) -> Message {
    try_ask(server, qname, qtype, &rd(), Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no answer for {qname} {qtype}"))
}

/// (owner, type, ttl, rdata) of every record of a section, for whole-section comparisons.
/// Owners are lowercased: an owner equal to the question is compressed to it and so takes
/// the question's case (RFC 4343 §4.1 allows either).
fn section(records: &[Record]) -> Vec<(String, RecordType, u32, String)> {
    records
        .iter()
        .map(|r| {
            (
                r.name.to_lowercase().to_ascii(),
                r.record_type(),
                r.ttl,
                r.data.to_string(),
            )
        })
        .collect()
}

fn assert_recursive_header(msg: &Message, rcode: ResponseCode) {
    assert_eq!(msg.metadata.message_type, MessageType::Response);
    assert_eq!(msg.metadata.response_code, rcode, "{msg:?}");
    assert!(msg.metadata.recursion_available, "RA=1 for allowed clients");
    assert!(msg.metadata.recursion_desired);
    assert!(!msg.metadata.authoritative);
    assert!(!msg.metadata.truncation);
}

async fn wait_for(mut cond: impl FnMut() -> bool, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

// ---------------------------------------------------------------------------------------------
// Knot as the upstream
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knot_answer_then_cached_answer_with_lower_ttl() {
    let Some(knot) = common::start_knot() else {
        return;
    };
    let m = Muninn::start(config(&[knot.addr]), ZoneSet::new());

    let first = ask(m.udp(), "www.other.test.", RecordType::A).await;
    assert_recursive_header(&first, ResponseCode::NoError);
    assert_eq!(
        section(&first.answers),
        vec![(
            "www.other.test.".into(),
            RecordType::A,
            7200,
            "198.51.100.200".into()
        )]
    );
    assert!(first.authorities.is_empty());
    assert!(first.additionals.is_empty());
    assert_eq!(m.stat(|s| &s.upstream_queries), 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Mixed case over TCP: same cache entry, question echoed as asked.
    let opts = QueryOpts {
        rd: true,
        tcp: true,
        ..QueryOpts::default()
    };
    let addr = m.tcp();
    let second = tokio::task::spawn_blocking(move || {
        common::query(addr, "WWW.Other.TEST.", RecordType::A, &opts)
    })
    .await
    .unwrap();
    assert_recursive_header(&second, ResponseCode::NoError);
    assert_eq!(second.queries[0].name().to_ascii(), "WWW.Other.TEST.");
    let ttl = second.answers[0].ttl;
    assert!((7190..7200).contains(&ttl), "TTL counts down: {ttl}");
    assert_eq!(second.answers.len(), 1);
    assert_eq!(
        m.stat(|s| &s.upstream_queries),
        1,
        "second answer from cache"
    );
    assert_eq!(m.stat(|s| &s.cache_hits), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knot_nxdomain_and_nodata_cached_for_soa_minimum() {
    let Some(knot) = common::start_knot() else {
        return;
    };
    let m = Muninn::start(config(&[knot.addr]), ZoneSet::new());
    // other.test: SOA TTL 7200, MINIMUM 600 -> negative TTL 600 (RFC 2308 §5).
    let cases = [
        ("nx.other.test.", RecordType::A, ResponseCode::NXDomain),
        ("www.other.test.", RecordType::TXT, ResponseCode::NoError),
    ];
    for (qname, qtype, rcode) in cases {
        let msg = ask(m.udp(), qname, qtype).await;
        assert_recursive_header(&msg, rcode);
        assert!(msg.answers.is_empty());
        let auth = section(&msg.authorities);
        assert_eq!(auth.len(), 1, "{auth:?}");
        assert_eq!(auth[0].0, "other.test.");
        assert_eq!(auth[0].1, RecordType::SOA);
        assert!(
            auth[0].2 <= 600,
            "negative TTL bounded by SOA MINIMUM: {auth:?}"
        );
    }
    let sent = m.stat(|s| &s.upstream_queries);
    assert_eq!(sent, 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (qname, qtype, rcode) in cases {
        let msg = ask(m.udp(), qname, qtype).await;
        assert_recursive_header(&msg, rcode);
        assert!(msg.answers.is_empty());
        let ttl = msg.authorities[0].ttl;
        assert!((590..600).contains(&ttl), "cached, counting down: {ttl}");
    }
    assert_eq!(
        m.stat(|s| &s.upstream_queries),
        sent,
        "both answered from cache"
    );
}

// ---------------------------------------------------------------------------------------------
// Who may recurse
// ---------------------------------------------------------------------------------------------

fn example_zones() -> ZoneSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/zones");
    let zone = load_zone(&dir.join("example.com.zone"), &name("example.com."), &dir).unwrap();
    let mut zones = ZoneSet::new();
    zones.insert(Arc::new(zone));
    zones
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_outside_allowed_networks_is_refused() {
    let up = FakeUpstream::start().await;
    up.add("www.test.", a([192, 0, 2, 1]));
    let m = Muninn::start(config(&[up.addr]), example_zones());
    let query = build_query("www.test.", RecordType::A, &rd());
    let outsider: SocketAddr = "192.0.2.99:5353".parse().unwrap();
    let mut out = Vec::new();

    // Not our name, client not allowed: REFUSED, RA=0, nothing sent upstream.
    let outcome = m.handler.handle(&query, Transport::Udp, outsider, &mut out);
    assert_eq!(outcome, Outcome::Respond);
    let msg = Message::from_vec(&out).unwrap();
    assert_eq!(msg.metadata.response_code, ResponseCode::Refused);
    assert!(!msg.metadata.recursion_available);
    assert!(msg.answers.is_empty());

    // Our zone: answered authoritatively to anyone, RA=0 for the outsider.
    let ours = build_query("www.example.com.", RecordType::A, &rd());
    let outcome = m.handler.handle(&ours, Transport::Udp, outsider, &mut out);
    assert_eq!(outcome, Outcome::Respond);
    let msg = Message::from_vec(&out).unwrap();
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.metadata.authoritative);
    assert!(!msg.metadata.recursion_available);

    // The same from loopback: RA=1 on the authoritative answer; the other name recurses.
    let local: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    assert_eq!(
        m.handler.handle(&ours, Transport::Udp, local, &mut out),
        Outcome::Respond
    );
    let msg = Message::from_vec(&out).unwrap();
    assert!(msg.metadata.authoritative && msg.metadata.recursion_available);
    assert!(matches!(
        m.handler.handle(&query, Transport::Udp, local, &mut out),
        Outcome::Recurse(_)
    ));
    // IPv4-mapped loopback is loopback.
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:5353".parse().unwrap();
    assert!(m.resolver.allows(mapped.ip()));
    assert!(!m.resolver.allows(IpAddr::from([10, 0, 0, 1])));
    assert_eq!(up.queries(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authoritative_zones_never_come_from_the_cache() {
    let up = FakeUpstream::start().await;
    up.add("www.example.com.", a([6, 6, 6, 6]));
    let m = Muninn::start(config(&[up.addr]), example_zones());
    let msg = ask(m.udp(), "www.example.com.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.metadata.authoritative);
    assert!(msg.metadata.recursion_available);
    assert_eq!(
        section(&msg.answers),
        vec![(
            "www.example.com.".into(),
            RecordType::A,
            3600,
            "192.0.2.10".into()
        )]
    );
    // A name under our zone that does not exist is NXDOMAIN from the zone, not recursed.
    let msg = ask(m.udp(), "nothere.example.com.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
    assert!(msg.metadata.authoritative);
    assert_eq!(up.queries(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_cap_gives_quick_servfail() {
    let up = FakeUpstream::start().await;
    let m = Muninn::start(
        ResolverConfig {
            max_per_client: 2,
            ..config(&[up.addr])
        },
        ZoneSet::new(),
    );
    let peer: SocketAddr = "127.0.0.2:4000".parse().unwrap();
    let other: SocketAddr = "127.0.0.3:4000".parse().unwrap();
    let mut out = Vec::new();
    let mut held = Vec::new();
    for i in 0..2 {
        let q = build_query(&format!("n{i}.test."), RecordType::A, &rd());
        match m.handler.handle(&q, Transport::Udp, peer, &mut out) {
            Outcome::Recurse(job) => held.push(job),
            o => panic!("expected recursion, got {o:?}"),
        }
    }
    let q = build_query("n2.test.", RecordType::A, &rd());
    assert_eq!(
        m.handler.handle(&q, Transport::Udp, peer, &mut out),
        Outcome::Respond
    );
    let msg = Message::from_vec(&out).unwrap();
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
    assert!(msg.metadata.recursion_available);
    assert_eq!(m.stat(|s| &s.client_limited), 1);
    // Another client is not affected; releasing a slot frees the client again.
    assert!(matches!(
        m.handler.handle(&q, Transport::Udp, other, &mut out),
        Outcome::Recurse(_)
    ));
    held.pop();
    assert!(matches!(
        m.handler.handle(&q, Transport::Udp, peer, &mut out),
        Outcome::Recurse(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// Upstream handling
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_answer_keeps_only_the_cname_chain() {
    let up = FakeUpstream::start().await;
    up.add("alias.test.", RData::CNAME(CNAME(name("target.test."))));
    up.add("target.test.", a([192, 0, 2, 10]));
    let m = Muninn::start(config(&[up.addr]), ZoneSet::new());

    let msg = ask(m.udp(), "alias.test.", RecordType::A).await;
    assert_recursive_header(&msg, ResponseCode::NoError);
    assert_eq!(
        section(&msg.answers),
        vec![
            (
                "alias.test.".into(),
                RecordType::CNAME,
                300,
                "target.test.".into()
            ),
            (
                "target.test.".into(),
                RecordType::A,
                300,
                "192.0.2.10".into()
            ),
        ]
    );
    // The unrelated additional record was dropped.
    assert!(msg.additionals.is_empty() && msg.authorities.is_empty());
    assert_eq!(up.queries(), 1);
    // The chain's parts answer other questions from the cache.
    let msg = ask(m.udp(), "target.test.", RecordType::A).await;
    assert_eq!(section(&msg.answers)[0].3, "192.0.2.10");
    let msg = ask(m.udp(), "alias.test.", RecordType::CNAME).await;
    assert_eq!(
        section(&msg.answers),
        vec![(
            "alias.test.".into(),
            RecordType::CNAME,
            300,
            "target.test.".into()
        )]
    );
    let evil = ask(m.udp(), "evil.example.", RecordType::A).await;
    assert_eq!(evil.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(up.queries(), 2, "only evil.example. was asked upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_cname_is_combined_with_cached_target() {
    let up = FakeUpstream::start().await;
    up.add("alias.test.", RData::CNAME(CNAME(name("target.test."))));
    up.add("target.test.", a([192, 0, 2, 10]));
    let m = Muninn::start(config(&[up.addr]), ZoneSet::new());
    ask(m.udp(), "target.test.", RecordType::A).await;
    ask(m.udp(), "alias.test.", RecordType::CNAME).await;
    assert_eq!(up.queries(), 2);
    let msg = ask(m.udp(), "Alias.test.", RecordType::A).await;
    assert_recursive_header(&msg, ResponseCode::NoError);
    assert_eq!(
        section(&msg.answers),
        vec![
            (
                "alias.test.".into(),
                RecordType::CNAME,
                300,
                "target.test.".into()
            ),
            (
                "target.test.".into(),
                RecordType::A,
                300,
                "192.0.2.10".into()
            ),
        ]
    );
    assert_eq!(up.queries(), 2, "combined from the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_replies_are_ignored_and_the_real_one_used() {
    let up = FakeUpstream::start().await;
    up.add("www.test.", a([192, 0, 2, 1]));
    up.state.spoof.store(true, Ordering::Relaxed);
    let m = Muninn::start(config(&[up.addr]), ZoneSet::new());
    let msg = ask(m.udp(), "www.test.", RecordType::A).await;
    assert_recursive_header(&msg, ResponseCode::NoError);
    assert_eq!(
        section(&msg.answers),
        vec![("www.test.".into(), RecordType::A, 300, "192.0.2.1".into())]
    );
    assert_eq!(
        m.stat(|s| &s.ignored_replies),
        3,
        "wrong id, wrong question, garbage"
    );
    assert_eq!(up.queries(), 1, "no retry: the real reply was waited for");
    // And that is what got cached.
    let msg = ask(m.udp(), "www.test.", RecordType::A).await;
    assert_eq!(section(&msg.answers)[0].3, "192.0.2.1");
    assert_eq!(up.queries(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_upstream_reply_is_retried_over_tcp() {
    let up = FakeUpstream::start().await;
    up.add("big.test.", a([192, 0, 2, 5]));
    up.state.truncate_udp.store(true, Ordering::Relaxed);
    let m = Muninn::start(config(&[up.addr]), ZoneSet::new());
    let msg = ask(m.udp(), "big.test.", RecordType::A).await;
    assert_recursive_header(&msg, ResponseCode::NoError);
    assert_eq!(section(&msg.answers)[0].3, "192.0.2.5");
    assert_eq!(up.state.tcp_queries.load(Ordering::Relaxed), 1);
    assert_eq!(m.stat(|s| &s.upstream_tcp), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_prefers_the_working_upstream() {
    let bad = FakeUpstream::start().await;
    bad.state.servfail.store(true, Ordering::Relaxed);
    let silent = FakeUpstream::start().await;
    silent.state.silent.store(true, Ordering::Relaxed);
    let good = FakeUpstream::start().await;
    for up in [&bad, &silent, &good] {
        for i in 0..5 {
            up.add(&format!("h{i}.test."), a([192, 0, 2, i]));
        }
    }
    let m = Muninn::start(
        ResolverConfig {
            attempts: 3,
            timeout_ms: 300,
            ..config(&[bad.addr, silent.addr, good.addr])
        },
        ZoneSet::new(),
    );
    let msg = ask(m.udp(), "h0.test.", RecordType::A).await;
    assert_recursive_header(&msg, ResponseCode::NoError);
    assert_eq!(section(&msg.answers)[0].3, "192.0.2.0");
    assert_eq!((bad.queries(), silent.queries(), good.queries()), (1, 1, 1));
    // The working upstream is now the fastest known: asked first.
    for i in 1..5 {
        let msg = ask(m.udp(), &format!("h{i}.test."), RecordType::A).await;
        assert_eq!(section(&msg.answers)[0].3, format!("192.0.2.{i}"));
    }
    assert_eq!((bad.queries(), silent.queries(), good.queries()), (1, 1, 5));
}

// ---------------------------------------------------------------------------------------------
// Coalescing and cancellation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_misses_make_one_upstream_query() {
    let up = FakeUpstream::start().await;
    up.add("popular.test.", a([192, 0, 2, 7]));
    up.state.delay_ms.store(300, Ordering::Relaxed);
    let m = Muninn::start(
        ResolverConfig {
            max_per_client: 200,
            ..config(&[up.addr])
        },
        ZoneSet::new(),
    );
    let server = m.udp();
    let mut tasks = Vec::new();
    for i in 0..100u16 {
        tasks.push(tokio::spawn(async move {
            let opts = QueryOpts {
                rd: true,
                id: i,
                ..QueryOpts::default()
            };
            try_ask(
                server,
                "popular.test.",
                RecordType::A,
                &opts,
                Duration::from_secs(5),
            )
            .await
        }));
    }
    for t in tasks {
        let msg = t.await.unwrap().expect("every client answered");
        assert_recursive_header(&msg, ResponseCode::NoError);
        assert_eq!(
            section(&msg.answers),
            vec![(
                "popular.test.".into(),
                RecordType::A,
                300,
                "192.0.2.7".into()
            )]
        );
    }
    assert_eq!(up.queries(), 1);
    assert_eq!(m.stat(|s| &s.fetches), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_client_deadline_cancels_the_upstream_query() {
    let up = FakeUpstream::start().await;
    up.add("slow.test.", a([192, 0, 2, 8]));
    up.state.silent.store(true, Ordering::Relaxed);
    let m = Muninn::start(
        ResolverConfig {
            timeout_ms: 1000,
            attempts: 3,
            client_timeout_ms: 300,
            ..config(&[up.addr])
        },
        ZoneSet::new(),
    );
    let got = try_ask(
        m.udp(),
        "slow.test.",
        RecordType::A,
        &rd(),
        Duration::from_millis(800),
    )
    .await;
    assert!(got.is_none(), "a UDP query past its deadline is dropped");
    assert!(
        wait_for(
            || m.stat(|s| &s.cancelled_fetches) == 1,
            Duration::from_secs(1)
        )
        .await,
        "the fetch was dropped"
    );
    // Without cancellation the fetch would have retried after 1 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(up.queries(), 1);
    assert_eq!(m.stat(|s| &s.upstream_queries), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_client_closing_cancels_the_upstream_query() {
    let up = FakeUpstream::start().await;
    up.state.silent.store(true, Ordering::Relaxed);
    let m = Muninn::start(
        ResolverConfig {
            timeout_ms: 1000,
            attempts: 3,
            client_timeout_ms: 10_000,
            ..config(&[up.addr])
        },
        ZoneSet::new(),
    );
    let mut stream = TcpStream::connect(m.tcp()).await.unwrap();
    let q = build_query("gone.test.", RecordType::A, &rd());
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    stream.write_all(&framed).await.unwrap();
    assert!(wait_for(|| up.queries() == 1, Duration::from_secs(2)).await);
    assert_eq!(m.stat(|s| &s.cancelled_fetches), 0);
    drop(stream);
    assert!(
        wait_for(
            || m.stat(|s| &s.cancelled_fetches) == 1,
            Duration::from_secs(1)
        )
        .await,
        "closing the connection dropped the fetch"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(up.queries(), 1, "no retry after cancellation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_continues_while_one_client_still_waits() {
    let up = FakeUpstream::start().await;
    up.add("shared.test.", a([192, 0, 2, 9]));
    up.state.delay_ms.store(600, Ordering::Relaxed);
    let m = Muninn::start(
        ResolverConfig {
            timeout_ms: 2000,
            ..config(&[up.addr])
        },
        ZoneSet::new(),
    );
    let mut out = Vec::new();
    let q = build_query("shared.test.", RecordType::A, &rd());
    let peer: SocketAddr = "127.0.0.1:1000".parse().unwrap();
    let Outcome::Recurse(first) = m.handler.handle(&q, Transport::Tcp, peer, &mut out) else {
        panic!("expected recursion");
    };
    let Outcome::Recurse(second) = m.handler.handle(&q, Transport::Tcp, peer, &mut out) else {
        panic!("expected recursion");
    };
    let gone = CancellationToken::new();
    let stays = CancellationToken::new();
    let a = tokio::spawn({
        let gone = gone.clone();
        async move { first.run(&gone, &mut Vec::new()).await }
    });
    let b = tokio::spawn(async move {
        let mut out = Vec::new();
        let sent = second.run(&stays, &mut out).await;
        (sent, out)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    gone.cancel();
    assert!(!a.await.unwrap());
    let (sent, out) = b.await.unwrap();
    assert!(sent);
    let msg = Message::from_vec(&out).unwrap();
    assert_eq!(section(&msg.answers)[0].3, "192.0.2.9");
    assert_eq!(m.stat(|s| &s.cancelled_fetches), 0);
    assert_eq!(up.queries(), 1);
}

// ---------------------------------------------------------------------------------------------
// Serve-stale and failures
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_serves_stale_then_servfail_after_the_window() {
    let up = FakeUpstream::start().await;
    up.add("stale.test.", a([192, 0, 2, 33]));
    up.state.ttl.store(1, Ordering::Relaxed);
    let m = Muninn::start(
        ResolverConfig {
            timeout_ms: 200,
            attempts: 1,
            stale_window: 3,
            stale_answer_after_ms: 100,
            ..config(&[up.addr])
        },
        ZoneSet::new(),
    );
    let stored = Instant::now();
    let msg = ask(m.udp(), "stale.test.", RecordType::A).await;
    assert_eq!(section(&msg.answers)[0].2, 1);
    up.state.silent.store(true, Ordering::Relaxed);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Expired, upstream silent: stale data with TTL 30 (RFC 8767 §4), after the client
    // response timer.
    let msg = ask(m.udp(), "stale.test.", RecordType::A).await;
    assert_recursive_header(&msg, ResponseCode::NoError);
    assert_eq!(
        section(&msg.answers),
        vec![("stale.test.".into(), RecordType::A, 30, "192.0.2.33".into())]
    );
    // The refresh keeps running in the background and fails; then the failure recheck
    // timer serves stale at once, without asking upstream again.
    assert!(wait_for(|| up.queries() == 2, Duration::from_secs(1)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let msg = ask(m.udp(), "stale.test.", RecordType::A).await;
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(section(&msg.answers)[0].2, 30);
    assert_eq!(up.queries(), 2);
    assert!(m.stat(|s| &s.stale_served) >= 2);

    // Past TTL + stale window: SERVFAIL.
    let end = stored + Duration::from_millis(4300);
    tokio::time::sleep(end.saturating_duration_since(Instant::now())).await;
    let msg = ask(m.udp(), "stale.test.", RecordType::A).await;
    assert_recursive_header(&msg, ResponseCode::ServFail);
    assert!(msg.answers.is_empty());
    // The failure is cached (RFC 9520): asked again at once, no new upstream query.
    let before = up.queries();
    let msg = ask(m.udp(), "stale.test.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(up.queries(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_from_all_upstreams_is_cached_briefly() {
    let up = FakeUpstream::start().await;
    up.state.servfail.store(true, Ordering::Relaxed);
    let m = Muninn::start(
        ResolverConfig {
            servfail_ttl: 1,
            ..config(&[up.addr])
        },
        ZoneSet::new(),
    );
    let msg = ask(m.udp(), "broken.test.", RecordType::A).await;
    assert_recursive_header(&msg, ResponseCode::ServFail);
    assert_eq!(up.queries(), 2, "both attempts used");
    let msg = ask(m.udp(), "broken.test.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(up.queries(), 2, "cached failure");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    up.state.servfail.store(false, Ordering::Relaxed);
    up.add("broken.test.", a([192, 0, 2, 44]));
    let msg = ask(m.udp(), "broken.test.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert_eq!(up.queries(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rd_clear_is_answered_from_cache_only() {
    let up = FakeUpstream::start().await;
    up.add("www.test.", a([192, 0, 2, 1]));
    let m = Muninn::start(config(&[up.addr]), ZoneSet::new());
    let no_rd = QueryOpts::default();
    let msg = try_ask(
        m.udp(),
        "www.test.",
        RecordType::A,
        &no_rd,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(msg.metadata.response_code, ResponseCode::Refused);
    assert_eq!(up.queries(), 0);
    ask(m.udp(), "www.test.", RecordType::A).await;
    let msg = try_ask(
        m.udp(),
        "www.test.",
        RecordType::A,
        &no_rd,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert_eq!(section(&msg.answers)[0].3, "192.0.2.1");
    assert_eq!(up.queries(), 1);
}

// ---------------------------------------------------------------------------------------------
// Cache layer and tasks
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_weight_stays_under_its_bound() {
    const BOUND: u64 = 4 * 1024 * 1024;
    let cache = RecordCache::new(BOUND, Duration::from_secs(60));
    let now = std::time::Instant::now();
    let mut max_seen = 0;
    for i in 0..200_000u32 {
        let owner = name(&format!("host-{i}.example.test."));
        let record = Record::from_rdata(owner.clone(), 300, RData::A(A(Ipv4Addr::from(i))));
        let set = RRset {
            name: owner.clone(),
            rtype: RecordType::A,
            ttl: 300,
            records: vec![record],
        };
        let entry = Entry::new(
            ResponseCode::NoError,
            Kind::Positive,
            vec![set],
            Vec::new(),
            300,
            true,
            now,
        );
        let key = Key::new(&owner, RecordType::A, DNSClass::IN, false);
        cache.insert(key, Arc::new(entry)).await;
        if i % 20_000 == 19_999 {
            cache.run_pending_tasks().await;
            max_seen = max_seen.max(cache.weighted_size());
            assert!(cache.weighted_size() <= BOUND, "{}", cache.weighted_size());
        }
    }
    cache.run_pending_tasks().await;
    assert!(cache.weighted_size() <= BOUND);
    assert!(
        max_seen > BOUND / 2,
        "the cache was really used: {max_seen}"
    );
    let count = cache.entry_count();
    assert!(count > 1000 && count < 200_000, "evicted down to {count}");
}

/// An upstream that answers every A query for `h<N>.gen.test.` with 10.x.y.z = N, built
/// by copying the question (no per-query parsing beyond it), so that it keeps up with a
/// million distinct names. Runs until the token is cancelled.
async fn start_synth_upstream(token: CancellationToken) -> SocketAddr {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let (n, from) = tokio::select! {
                () = token.cancelled() => return,
                r = udp.recv_from(&mut buf) => match r { Ok(r) => r, Err(_) => continue },
            };
            let Some(reply) = synth_reply(&buf[..n]) else {
                continue;
            };
            let _ = udp.send_to(&reply, from).await;
        }
    });
    addr
}

/// The index N of a question name `h<N>.gen.test.` in a DNS message, and where the question
/// ends (after QTYPE and QCLASS).
fn synth_question(msg: &[u8]) -> Option<(u32, usize)> {
    let mut at = 12;
    let first = *msg.get(at)? as usize;
    let label = msg.get(at + 1..at + 1 + first)?;
    let index = std::str::from_utf8(label.strip_prefix(b"h")?)
        .ok()?
        .parse()
        .ok()?;
    while *msg.get(at)? != 0 {
        at += 1 + *msg.get(at)? as usize;
    }
    Some((index, at + 5))
}

fn synth_reply(query: &[u8]) -> Option<Vec<u8>> {
    let (index, end) = synth_question(query)?;
    let mut reply = query.get(..end)?.to_vec();
    reply[2] = 0x80 | (query[2] & 0x01); // QR, RD copied
    reply[3] = 0x80; // RA, NOERROR
    reply[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]); // ANCOUNT 1, no OPT
    reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 10]);
    reply.extend_from_slice(&index.to_be_bytes()[1..]);
    Some(reply)
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// Asks `h<from>..h<to>.gen.test. A` over UDP with up to `window` queries in flight and
/// checks every answer (NOERROR, the upstream's address for that name). Returns how many
/// were answered.
fn ask_range(server: SocketAddr, from: u32, to: u32, window: u32) -> u32 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let (mut next, mut outstanding, mut answered) = (from, 0u32, 0u32);
    while next < to || outstanding > 0 {
        while next < to && outstanding < window {
            let q = build_query(&format!("h{next}.gen.test."), RecordType::A, &rd());
            socket.send_to(&q, server).unwrap();
            next += 1;
            outstanding += 1;
        }
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => {
                outstanding -= 1;
                let msg = &buf[..n];
                let (index, _) = synth_question(msg).expect("answer echoes the question");
                assert_eq!(msg[3] & 0x0f, 0, "NOERROR for h{index}");
                assert_eq!(&msg[6..8], &[0, 1], "one answer for h{index}");
                assert_eq!(
                    &msg[n - 3..],
                    &index.to_be_bytes()[1..],
                    "address of h{index}"
                );
                answered += 1;
            }
            // Lost on the loopback (socket buffer): stop waiting for what is out.
            Err(_) => outstanding = 0,
        }
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_memory_stays_bounded_over_a_million_distinct_names() {
    const BOUND: u64 = 4 * 1024 * 1024;
    const NAMES: u32 = 1_000_000;
    const CHUNK: u32 = 100_000;
    let token = CancellationToken::new();
    let upstream = start_synth_upstream(token.clone()).await;
    let m = Muninn::start(
        ResolverConfig {
            cache_size: BOUND,
            ..config(&[upstream])
        },
        ZoneSet::new(),
    );
    let server = m.udp();
    let rss_before = rss_kb();
    let (mut answered, mut max_weight, mut max_rss) = (0u32, 0u64, 0u64);
    for start in (0..NAMES).step_by(CHUNK as usize) {
        answered +=
            tokio::task::spawn_blocking(move || ask_range(server, start, start + CHUNK, 64))
                .await
                .unwrap();
        let cache = m.resolver.cache();
        cache.run_pending_tasks().await;
        let weight = cache.weighted_size();
        assert!(
            weight <= BOUND,
            "after {} names: {weight} > {BOUND}",
            start + CHUNK
        );
        max_weight = max_weight.max(weight);
        max_rss = max_rss.max(rss_kb());
    }
    token.cancel();
    // Nearly every name was asked and answered (a few may be lost on the loopback), the
    // cache was really filled to its bound, and evicted rather than grown.
    assert!(answered >= NAMES / 100 * 99, "answered {answered}");
    assert!(max_weight > BOUND / 2, "the cache was used: {max_weight}");
    let entries = m.resolver.cache().entry_count();
    assert!(entries < u64::from(NAMES) / 10, "{entries} entries kept");
    // Resident memory grew by far less than a million entries would take (~200 MB at
    // ~200 bytes each): what the cache holds is bounded, and nothing else grows per name.
    let growth_mb = max_rss.saturating_sub(rss_before) / 1024;
    assert!(growth_mb < 64, "RSS grew by {growth_mb} MB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_tasks_do_not_multiply_across_reloads() {
    let resolver = Resolver::new(config(&["127.0.0.1:9".parse().unwrap()])).unwrap();
    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    let rt = Handle::current();
    assert_eq!(resolver.maintenance_tasks(), 0);
    assert!(resolver.spawn_maintenance(&rt, root.child_token(), &tracker));
    for _ in 0..20 {
        // A reload keeps the resolver and asks again.
        assert!(!resolver.spawn_maintenance(&rt, root.child_token(), &tracker));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(resolver.maintenance_tasks(), 2);
    assert_eq!(tracker.len(), 2);
    // Shutdown stops them; a later start gets exactly one set again.
    root.cancel();
    assert!(wait_for(|| resolver.maintenance_tasks() == 0, Duration::from_secs(2)).await);
    let root = CancellationToken::new();
    assert!(resolver.spawn_maintenance(&rt, root.child_token(), &tracker));
    assert!(!resolver.spawn_maintenance(&rt, root.child_token(), &tracker));
    assert_eq!(resolver.maintenance_tasks(), 2);
    root.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(2), tracker.wait())
        .await
        .unwrap();
}

#[test]
fn config_defaults_are_safe_and_parse() {
    let d = ResolverConfig::default();
    assert!(!d.enabled);
    assert_eq!(d.allow.len(), 2);
    let r = Resolver::new(ResolverConfig {
        enabled: true,
        upstreams: vec!["127.0.0.1:53".parse().unwrap()],
        ..d.clone()
    })
    .unwrap();
    assert!(r.allows(IpAddr::from([127, 0, 0, 1])));
    assert!(r.allows("::1".parse().unwrap()));
    assert!(!r.allows(IpAddr::from([192, 0, 2, 1])));
    assert!(
        Resolver::new(ResolverConfig {
            enabled: true,
            ..d.clone()
        })
        .is_err(),
        "enabled without upstreams"
    );
    let parsed: ResolverConfig = toml::from_str(
        "enabled = true\nallow = [\"10.0.0.0/8\"]\nupstreams = [\"192.0.2.53:53\"]\n\
         stale_window = 0\n",
    )
    .unwrap();
    assert_eq!(parsed.upstreams, vec!["192.0.2.53:53".parse().unwrap()]);
    assert_eq!(parsed.timeout_ms, d.timeout_ms);
    assert!(toml::from_str::<ResolverConfig>("bogus = 1").is_err());
}

#[test]
fn upstream_reply_must_match_id_and_question() {
    use hickory_proto::op::Query;
    use muninn::cache::upstream::{accept, build_query as upstream_query};
    let q = Query::query(name("www.test."), RecordType::A);
    let wire = upstream_query(&q, true);
    let sent = Message::from_vec(&wire).unwrap();
    assert!(sent.metadata.recursion_desired);
    assert!(sent.edns.as_ref().unwrap().flags().dnssec_ok);
    let reply = |id: u16, qname: &str, qtype: RecordType| {
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(name(qname), qtype));
        m.to_vec().unwrap()
    };
    assert!(accept(&reply(7, "www.test.", RecordType::A), 7, &q).is_some());
    assert!(
        accept(&reply(7, "WWW.Test.", RecordType::A), 7, &q).is_some(),
        "RFC 4343"
    );
    assert!(accept(&reply(8, "www.test.", RecordType::A), 7, &q).is_none());
    assert!(accept(&reply(7, "www.test.", RecordType::AAAA), 7, &q).is_none());
    assert!(accept(&reply(7, "evil.test.", RecordType::A), 7, &q).is_none());
    // A query (QR=0) with the right ID is not a reply.
    let mut query = Message::new(7, MessageType::Query, OpCode::Query);
    query.add_query(q.clone());
    assert!(accept(&query.to_vec().unwrap(), 7, &q).is_none());
    assert!(accept(&[0, 7, 0x80], 7, &q).is_none());
}
