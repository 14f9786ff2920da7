//! Cache-hit path of the caching resolver, in process: `Handler::handle` on a question whose
//! answer is cached (no sockets, no upstream).
//!
//!   cargo bench --bench cache_hit                      # divan timings
//!   CACHE_HIT_LOOP=200000 valgrind --tool=callgrind target/release/deps/cache_hit-*
//!
//! With `CACHE_HIT_LOOP=n` the binary skips divan and answers `n` cached questions in a plain
//! loop (for callgrind: run it with two values of `n` and divide the difference in
//! instructions by the difference in `n` to get instructions per cache hit).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use muninn::cache::{Entry, Key, Kind, Resolver, ResolverConfig};
use muninn::handler::{Handler, Outcome, Transport};
use muninn::zone::{RRset, ZoneSet};

/// Distinct cached names the questions cycle through.
const NAMES: usize = 20_000;

struct Setup {
    handler: Handler,
    queries: Vec<Vec<u8>>,
    peer: SocketAddr,
}

fn setup() -> Setup {
    let resolver = Resolver::new(ResolverConfig {
        enabled: true,
        upstreams: vec!["127.0.0.1:9".parse().unwrap()],
        ..ResolverConfig::default()
    })
    .unwrap();
    let now = Instant::now();
    let mut queries = Vec::with_capacity(NAMES);
    for i in 0..NAMES {
        let name = Name::from_ascii(format!("h{i}.cache.example.")).unwrap();
        let addr = A::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8);
        let record = Record::from_rdata(name.clone(), 86_400, RData::A(addr));
        let set = RRset {
            name: name.clone(),
            rtype: RecordType::A,
            ttl: 86_400,
            records: vec![record],
        };
        let entry = Entry::new(
            ResponseCode::NoError,
            Kind::Positive,
            vec![set],
            Vec::new(),
            86_400,
            true,
            now,
        );
        let key = Key::new(&name, RecordType::A, DNSClass::IN, false);
        futures::executor::block_on(resolver.cache().insert(key, Arc::new(entry)));
        queries.push(query(i as u16, &format!("h{i}.cache.example")));
    }
    futures::executor::block_on(resolver.cache().run_pending_tasks());
    let handler =
        Handler::new(Arc::new(ArcSwap::from_pointee(ZoneSet::new())), 1232).with_resolver(resolver);
    Setup {
        handler,
        queries,
        peer: "127.0.0.1:40000".parse().unwrap(),
    }
}

/// A query as dnsperf sends it: RD=1, one question, no EDNS.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn run(s: &Setup, n: usize, out: &mut Vec<u8>) -> usize {
    let mut bytes = 0;
    for i in 0..n {
        let q = &s.queries[i % s.queries.len()];
        let outcome = s.handler.handle(q, Transport::Udp, s.peer, out);
        assert_eq!(outcome, Outcome::Respond);
        bytes += out.len();
    }
    bytes
}

fn main() {
    if let Some(n) = std::env::var("CACHE_HIT_LOOP")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let s = setup();
        let mut out = Vec::with_capacity(65_535);
        let bytes = run(&s, n, &mut out);
        let hits = s
            .handler
            .resolver()
            .unwrap()
            .stats()
            .cache_hits
            .load(std::sync::atomic::Ordering::Relaxed);
        println!("{n} queries, {hits} cache hits, {bytes} response bytes");
        return;
    }
    divan::main();
}

#[divan::bench]
fn cache_hit(bencher: divan::Bencher) {
    let s = setup();
    let mut out = Vec::with_capacity(65_535);
    let mut i = 0usize;
    bencher.bench_local(|| {
        i = i.wrapping_add(1);
        let q = &s.queries[i % s.queries.len()];
        s.handler.handle(q, Transport::Udp, s.peer, &mut out)
    });
}
