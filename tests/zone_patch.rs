//! Zone patches (`Zone::patch`): a differential property test (random change transactions
//! through the real store, each event applied as a patch and compared, answer by answer,
//! with the zone rebuilt from the store), tree rules checked on explicit answers, and the
//! snapshot updater end to end over a real UDP socket.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use common::{QueryOpts, TempDir, query};
use hickory_proto::op::{OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, NULL, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use muninn::auth::answer;
use muninn::store::{
    Change, ChangeEvent, Import, Managed, NewRecord, RecordFilter, Source, Store, StoreOptions,
};
use muninn::wire::request::Request;
use muninn::zone::{PatchError, Zone, ZoneSet};

const ORIGIN: &str = "z.test.";

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn abs(rel: &str) -> Name {
    if rel == "@" {
        name(ORIGIN)
    } else {
        name(&format!("{rel}.{ORIGIN}"))
    }
}

fn rec(owner: &str, ttl: u32, data: RData) -> NewRecord {
    NewRecord {
        name: abs(owner),
        ttl,
        data,
        tags: Vec::new(),
    }
}

fn a(last: u8) -> RData {
    RData::A(A::new(192, 0, 2, last))
}

fn soa(minimum: u32) -> RData {
    RData::SOA(SOA::new(
        name("ns.z.test."),
        name("h.z.test."),
        1,
        3600,
        600,
        86400,
        minimum,
    ))
}

fn dname(target: &str) -> RData {
    let mut wire = Vec::new();
    for label in name(target).iter() {
        wire.push(label.len() as u8);
        wire.extend_from_slice(label);
    }
    wire.push(0);
    RData::Unknown {
        code: RecordType::DNAME,
        rdata: NULL::with(wire),
    }
}

/// The starting zone: apex NS/MX with in-zone targets, a wildcard, a CNAME, and a
/// delegation `d` with glue below it.
fn initial() -> Vec<NewRecord> {
    vec![
        rec("@", 300, soa(300)),
        rec("@", 300, RData::NS(NS(abs("a")))),
        rec("@", 300, RData::NS(NS(abs("b.a")))),
        rec("@", 300, RData::MX(MX::new(10, abs("a")))),
        rec("a", 300, a(1)),
        rec("b.a", 300, a(2)),
        rec("*.b", 300, RData::TXT(TXT::new(vec!["w".into()]))),
        rec("d", 300, RData::NS(NS(abs("ns.d")))),
        rec("d", 300, RData::NS(NS(abs("a")))),
        rec("ns.d", 300, a(53)),
        rec("c", 300, RData::CNAME(CNAME(abs("a")))),
    ]
}

/// A store with `z.test.` imported (store-managed) from `records`.
fn store_with(dir: &TempDir, records: Vec<NewRecord>) -> Store {
    let store = Store::open_dir(&dir.path().join("data"), StoreOptions::default()).unwrap();
    let records: Vec<Record> = records
        .into_iter()
        .map(|r| Record::from_rdata(r.name, r.ttl, r.data))
        .collect();
    let zone = Zone::build(name(ORIGIN), records).unwrap();
    store
        .import_blocking(Import {
            zone: Arc::new(zone),
            managed: Managed::Store,
            file: None,
            fingerprint: None,
            source: Source::Import,
        })
        .unwrap();
    store
}

fn rebuild(store: &Store) -> Zone {
    store.build_zone(&name(ORIGIN)).unwrap().0
}

// ---------------------------------------------------------------------------------------------
// Random changes
// ---------------------------------------------------------------------------------------------

/// xorshift64*: a small deterministic generator (the seed is printed on failure).
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

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// Owners the changes touch (relative): a small tree over a few labels, so that names,
/// empty non-terminals and wildcards come and go at every depth, plus names at and below
/// the delegation `d`.
fn owners() -> Vec<String> {
    let labels = ["a", "b", "*", "c"];
    let mut out: Vec<String> = Vec::new();
    let mut level: Vec<String> = vec![String::new()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for parent in &level {
            for l in labels {
                let n = if parent.is_empty() {
                    l.to_string()
                } else {
                    format!("{l}.{parent}")
                };
                // `*` only as the first label (a wildcard), as zones use it.
                if !parent.contains('*') {
                    next.push(n);
                }
            }
        }
        out.extend(next.iter().cloned());
        level = next;
    }
    out.extend(["d", "ns.d", "x.ns.d", "*.d"].map(String::from));
    out
}

/// Targets of NS/MX/SRV/CNAME: owners (some only synthesized by a wildcard) and an
/// out-of-zone name.
fn target(rng: &mut Rng, owners: &[String]) -> Name {
    match rng.below(10) {
        0 => name("mail.other.example."),
        1 => abs("q.b"),
        2 => abs("q.c.a"),
        _ => abs(rng.pick(owners).as_str()),
    }
}

fn random_data(rng: &mut Rng, owner: &str, owners: &[String]) -> RData {
    match rng.below(100) {
        0..=29 => a(rng.below(4) as u8 + 1),
        30..=39 => RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, rng.below(2) as u16)),
        40..=49 => RData::TXT(TXT::new(vec![format!("t{}", rng.below(3))])),
        50..=61 => RData::MX(MX::new(10 * rng.below(3) as u16, target(rng, owners))),
        62..=67 => RData::SRV(SRV::new(0, 5, 5060, target(rng, owners))),
        68..=77 => RData::CNAME(CNAME(target(rng, owners))),
        // NS only where a cut already is (the apex, `d`), but now and then elsewhere: a
        // new cut, which needs a rebuild.
        78..=87 if owner == "@" || owner == "d" || rng.chance(10) => {
            RData::NS(NS(target(rng, owners)))
        }
        88..=89 => dname("target.other.example."),
        _ => a(rng.below(4) as u8 + 1),
    }
}

fn random_change(rng: &mut Rng, owners: &[String]) -> Change {
    let mut change = Change::default();
    let ttl = [60, 300];
    for _ in 0..rng.below(4) + 1 {
        let owner = if rng.chance(8) {
            "@".to_string()
        } else {
            rng.pick(owners).clone()
        };
        if rng.chance(55) {
            let data = random_data(rng, &owner, owners);
            change.add.push(rec(&owner, *rng.pick(&ttl), data));
        } else {
            let (rtype, data) = match rng.below(3) {
                0 => (None, None),
                1 => {
                    let t = *rng.pick(&[
                        RecordType::A,
                        RecordType::AAAA,
                        RecordType::TXT,
                        RecordType::MX,
                        RecordType::CNAME,
                        RecordType::NS,
                    ]);
                    (Some(t), None)
                }
                _ => {
                    let d = random_data(rng, &owner, owners);
                    (Some(d.record_type()), Some(d))
                }
            };
            change.delete.push(RecordFilter {
                name: abs(&owner),
                rtype,
                data,
            });
        }
    }
    if rng.chance(5) {
        let minimum = *rng.pick(&[60, 300, 600]);
        change.add.push(rec("@", *rng.pick(&ttl), soa(minimum)));
    }
    change
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

fn request(qname: &Name, qtype: RecordType) -> Request {
    Request {
        id: 1,
        opcode: OpCode::Query,
        query: Query::query(qname.clone(), qtype),
        recursion_desired: false,
        checking_disabled: false,
        edns: None,
    }
}

/// Every owner, plus names below them that do not exist (wildcard matches, NXDOMAIN,
/// names below the cut), and the apex.
fn query_names(owners: &[String]) -> Vec<Name> {
    let mut out = vec![name(ORIGIN), abs("q"), abs("q.q.b")];
    for o in owners {
        out.push(abs(o));
        if o.split('.').count() < 3 {
            out.push(abs(&format!("q.{o}")));
        }
    }
    out
}

const QTYPES: [RecordType; 10] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::MX,
    RecordType::TXT,
    RecordType::NS,
    RecordType::CNAME,
    RecordType::SRV,
    RecordType::SOA,
    RecordType::ANY,
    RecordType::DS,
];

/// Every RRset as (owner, type, TTL, data), sorted.
fn contents(zone: &Zone) -> Vec<(Vec<u8>, RecordType, u32, Vec<u8>)> {
    let mut v: Vec<_> = zone
        .rrsets()
        .map(|s| (s.owner.to_vec(), s.rtype, s.ttl, s.rdata.to_vec()))
        .collect();
    v.sort();
    v
}

/// Asserts that `patched` answers exactly as `rebuilt` (rcode, AA, every section in order,
/// required glue) for every name and type in `names` x [`QTYPES`].
fn assert_same(patched: &Arc<Zone>, rebuilt: &Arc<Zone>, names: &[Name], what: &str) {
    assert_eq!(patched.serial(), rebuilt.serial(), "{what}: serial");
    assert_eq!(
        patched.record_count(),
        rebuilt.record_count(),
        "{what}: record count"
    );
    assert_eq!(
        patched.name_count(),
        rebuilt.name_count(),
        "{what}: name count"
    );
    assert_eq!(contents(patched), contents(rebuilt), "{what}: contents");
    assert_eq!(patched.soa(), rebuilt.soa(), "{what}: SOA");
    assert_eq!(
        patched.negative_soa(),
        rebuilt.negative_soa(),
        "{what}: negative SOA"
    );
    let mut p = ZoneSet::new();
    p.insert(Arc::clone(patched));
    let mut r = ZoneSet::new();
    r.insert(Arc::clone(rebuilt));
    for n in names {
        for t in QTYPES {
            let req = request(n, t);
            assert_eq!(
                answer(&req, &p),
                answer(&req, &r),
                "{what}: answers differ for {n} {t}"
            );
        }
    }
}

/// Why a patch may refuse a change (anything else is a bug).
const EXPECTED_REBUILDS: [&str; 2] = ["zone cut added or removed", "DNAME added or removed"];

/// Applies `steps` random changes; each event is patched onto the current snapshot and
/// compared with the rebuild. Now and then the snapshot is replaced by the rebuild (what
/// compaction does), so patches start both from fresh and from long-patched zones.
fn differential(seed: u64, steps: usize) {
    let dir = TempDir::new("zone-patch-diff");
    let store = store_with(&dir, initial());
    let owners = owners();
    let names = query_names(&owners);
    let mut rng = Rng(seed);
    let mut current = Arc::new(rebuild(&store));
    let (mut patched, mut rebuilds, mut rejected, mut max_ext) = (0, 0, 0, 0);
    for step in 0..steps {
        let change = random_change(&mut rng, &owners);
        let event = match store.apply_blocking(&name(ORIGIN), change.clone()) {
            Ok(e) => e,
            // CNAME conflicts, nothing to delete, last apex NS: the store refuses.
            Err(_) => {
                rejected += 1;
                continue;
            }
        };
        let rebuilt = Arc::new(rebuild(&store));
        let what = format!("seed {seed} step {step} ({change:?})");
        match current.patch(&event) {
            Ok(p) => {
                let p = Arc::new(p);
                assert_same(&p, &rebuilt, &names, &what);
                max_ext = max_ext.max(p.patch_size());
                patched += 1;
                current = if rng.chance(10) { rebuilt } else { p };
            }
            Err(PatchError::NeedsRebuild(why)) => {
                assert!(EXPECTED_REBUILDS.contains(&why), "{what}: {why}");
                rebuilds += 1;
                current = rebuilt;
            }
        }
    }
    eprintln!(
        "seed {seed}: {patched} patched, {rebuilds} rebuilds, {rejected} rejected, \
         largest extension {max_ext} bytes"
    );
    assert!(
        patched > steps / 3,
        "seed {seed}: only {patched} of {steps} changes patched"
    );
}

#[test]
fn patches_answer_exactly_as_rebuilds_seed_1() {
    differential(0x9e37_79b9_7f4a_7c15, 250);
}

#[test]
fn patches_answer_exactly_as_rebuilds_seed_2() {
    differential(0xd1b5_4a32_d192_ed03, 250);
}

#[test]
fn patches_answer_exactly_as_rebuilds_seed_3() {
    differential(0x2545_f491_4f6c_dd1d, 250);
}

// ---------------------------------------------------------------------------------------------
// Explicit tree rules
// ---------------------------------------------------------------------------------------------

fn apply(store: &Store, add: Vec<NewRecord>, delete: Vec<RecordFilter>) -> Arc<ChangeEvent> {
    store
        .apply_blocking(&name(ORIGIN), Change { add, delete })
        .unwrap()
}

fn delete_all(owner: &str) -> RecordFilter {
    RecordFilter {
        name: abs(owner),
        rtype: None,
        data: None,
    }
}

/// rcode, answer section as `owner type`, and the authority section's types.
fn ask(zone: &Arc<Zone>, qname: &str, qtype: RecordType) -> (ResponseCode, Vec<String>) {
    let mut set = ZoneSet::new();
    set.insert(Arc::clone(zone));
    let a = answer(&request(&abs(qname), qtype), &set).unwrap();
    let answers = a
        .answers
        .iter()
        .map(|s| format!("{} {}", s.owner_name().unwrap(), s.rtype))
        .collect();
    (a.rcode, answers)
}

#[test]
fn tree_rules_hold_across_patches() {
    let dir = TempDir::new("zone-patch-tree");
    let store = store_with(&dir, initial());
    let mut zone = Arc::new(rebuild(&store));
    let step = |zone: &mut Arc<Zone>, event: Arc<ChangeEvent>| {
        *zone = Arc::new(zone.patch(&event).unwrap());
        assert_eq!(zone.serial(), event.new_serial);
        assert_same(zone, &Arc::new(rebuild(&store)), &[], "tree rules");
    };
    let names_before = zone.name_count();

    // A deep new name creates its empty non-terminals: NODATA there, not NXDOMAIN.
    step(
        &mut zone,
        apply(&store, vec![rec("x.y.w", 60, a(7))], vec![]),
    );
    assert_eq!(zone.name_count(), names_before + 3);
    assert_eq!(
        ask(&zone, "y.w", RecordType::A),
        (ResponseCode::NoError, vec![])
    );
    assert_eq!(
        ask(&zone, "w", RecordType::A),
        (ResponseCode::NoError, vec![])
    );
    assert_eq!(
        ask(&zone, "x.y.w", RecordType::A),
        (ResponseCode::NoError, vec!["x.y.w.z.test. A".into()])
    );

    // A wildcard below it answers for names that do not exist, until it goes again.
    step(
        &mut zone,
        apply(&store, vec![rec("*.y.w", 60, a(8))], vec![]),
    );
    assert_eq!(
        ask(&zone, "q.y.w", RecordType::A),
        (ResponseCode::NoError, vec!["q.y.w.z.test. A".into()])
    );
    step(&mut zone, apply(&store, vec![], vec![delete_all("*.y.w")]));
    assert_eq!(ask(&zone, "q.y.w", RecordType::A).0, ResponseCode::NXDomain);

    // Deleting the only data below `w` removes the name and its childless ancestors.
    step(&mut zone, apply(&store, vec![], vec![delete_all("x.y.w")]));
    assert_eq!(zone.name_count(), names_before);
    for n in ["x.y.w", "y.w", "w"] {
        assert_eq!(
            ask(&zone, n, RecordType::A).0,
            ResponseCode::NXDomain,
            "{n}"
        );
    }

    // A name with children that loses its data stays as an empty non-terminal.
    step(&mut zone, apply(&store, vec![], vec![delete_all("a")]));
    assert_eq!(
        ask(&zone, "a", RecordType::A),
        (ResponseCode::NoError, vec![])
    );
    assert_eq!(
        ask(&zone, "b.a", RecordType::A),
        (ResponseCode::NoError, vec!["b.a.z.test. A".into()])
    );

    // The CNAME flag follows the data: a CNAME answers, then plain data does.
    step(
        &mut zone,
        apply(
            &store,
            vec![rec("e", 60, RData::CNAME(CNAME(abs("b.a"))))],
            vec![],
        ),
    );
    assert_eq!(
        ask(&zone, "e", RecordType::A),
        (
            ResponseCode::NoError,
            vec!["e.z.test. CNAME".into(), "b.a.z.test. A".into()]
        )
    );
    step(
        &mut zone,
        apply(&store, vec![rec("e", 60, a(9))], vec![delete_all("e")]),
    );
    assert_eq!(
        ask(&zone, "e", RecordType::A),
        (ResponseCode::NoError, vec!["e.z.test. A".into()])
    );

    // A new zone cut or DNAME is refused: the caller rebuilds.
    for data in [RData::NS(NS(abs("a"))), dname("x.other.example.")] {
        let event = apply(&store, vec![rec("f", 60, data)], vec![]);
        assert!(matches!(
            zone.patch(&event),
            Err(PatchError::NeedsRebuild(_))
        ));
        zone = Arc::new(rebuild(&store));
    }
    // So is an event that does not continue the snapshot.
    let event = apply(&store, vec![rec("g", 60, a(1))], vec![]);
    let _skipped = apply(&store, vec![rec("g", 60, a(2))], vec![]);
    let stale = Arc::new(zone.patch(&event).unwrap());
    let next = apply(&store, vec![rec("g", 60, a(3))], vec![]);
    assert!(matches!(
        stale.patch(&next),
        Err(PatchError::NeedsRebuild(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// End to end: store-managed zone served over UDP, changes patched in by the updater
// ---------------------------------------------------------------------------------------------

fn a_answer(addr: SocketAddr, qname: &str) -> (ResponseCode, Vec<String>, Option<u32>) {
    let m = query(addr, qname, RecordType::A, &QueryOpts::default());
    let mut ips: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    ips.sort();
    let serial = m.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(s) => Some(s.serial),
        _ => None,
    });
    (m.metadata.response_code, ips, serial)
}

/// Polls `qname` until `pred` holds for its answer (10 s at most).
fn wait_for(
    addr: SocketAddr,
    qname: &str,
    pred: impl Fn(&(ResponseCode, Vec<String>, Option<u32>)) -> bool,
) -> (ResponseCode, Vec<String>, Option<u32>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = a_answer(addr, qname);
        if pred(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{qname}: still {got:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn store_changes_are_served_over_udp() {
    use muninn::config::Overrides;
    use muninn::handler::{DEFAULT_MAX_UDP_PAYLOAD, Handler};
    use muninn::reload::ZoneLoader;
    use muninn::runtime::Runtimes;
    use muninn::server::{Limits, spawn_listeners};

    let dir = TempDir::new("zone-patch-udp");
    drop(store_with(&dir, initial()));
    let config = dir.path().join("muninn.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n[zones]\ndirectory = \"\"\n\
             [[zones.zone]]\nname = \"{ORIGIN}\"\nmanaged = \"store\"\n"
        ),
    )
    .unwrap();
    let rt = Runtimes::build(&muninn::config::RuntimeConfig {
        workers: 1,
        heavy_workers: 1,
        heavy_nice: 0,
        heavy_idle_scheduling: false,
        ..Default::default()
    })
    .unwrap();
    let zones = Arc::new(ArcSwap::from_pointee(ZoneSet::new()));
    let mut loader = ZoneLoader::new(Some(config), Overrides::default(), zones.clone());
    let report = rt.heavy.block_on(loader.reload()).unwrap();
    assert_eq!(report.failed(), 0, "{report:?}");
    let store = loader.store().unwrap().clone();
    let token = tokio_util::sync::CancellationToken::new();
    let tracker = tokio_util::task::TaskTracker::new();
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners = spawn_listeners(
        rt.latency.handle(),
        Arc::new(Handler::new(zones.clone(), DEFAULT_MAX_UDP_PAYLOAD)),
        &[listen],
        &[],
        Limits::default(),
        1,
        token.child_token(),
        &tracker,
    )
    .unwrap();
    let addr = listeners.udp_addrs()[0];

    let before = a_answer(addr, "new.z.test.");
    assert_eq!(before.0, ResponseCode::NXDomain);
    let serial = before.2.unwrap();

    // A new name: served with the new serial, as a patch of the served snapshot.
    let event = apply(&store, vec![rec("new", 60, a(77))], vec![]);
    assert_eq!(event.old_serial, serial);
    wait_for(addr, "new.z.test.", |g| g.0 == ResponseCode::NoError);
    assert_eq!(
        a_answer(addr, "new.z.test."),
        (ResponseCode::NoError, vec!["192.0.2.77".into()], None)
    );
    let served = zones.load().iter().next().cloned().unwrap();
    assert_eq!(served.serial(), event.new_serial);
    assert!(served.patch_size() > 0, "not served as a patch");
    let (rcode, _, soa_serial) = a_answer(addr, "nothere.z.test.");
    assert_eq!(
        (rcode, soa_serial),
        (ResponseCode::NXDomain, Some(event.new_serial))
    );

    // A changed address, then a deletion.
    let event = apply(
        &store,
        vec![rec("new", 60, a(78))],
        vec![RecordFilter {
            name: abs("new"),
            rtype: Some(RecordType::A),
            data: None,
        }],
    );
    wait_for(addr, "new.z.test.", |g| g.1 == ["192.0.2.78"]);
    let (_, _, soa_serial) = a_answer(addr, "nothere.z.test.");
    assert_eq!(soa_serial, Some(event.new_serial));
    apply(&store, vec![], vec![delete_all("new")]);
    wait_for(addr, "new.z.test.", |g| g.0 == ResponseCode::NXDomain);

    // A change a patch cannot take (a new zone cut) is served after a rebuild, and the
    // changes after it are patched again.
    let cut = apply(
        &store,
        vec![rec("sub", 60, RData::NS(NS(abs("a"))))],
        vec![],
    );
    let after = apply(&store, vec![rec("h", 60, a(5))], vec![]);
    wait_for(addr, "h.z.test.", |g| g.0 == ResponseCode::NoError);
    let m = query(addr, "x.sub.z.test.", RecordType::A, &QueryOpts::default());
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(
        m.answers.is_empty() && !m.metadata.authoritative,
        "not a referral: {m:?}"
    );
    assert_eq!(m.authorities.len(), 1);
    assert!(cut.seq < after.seq);
    let served = zones.load().iter().next().cloned().unwrap();
    assert_eq!(served.serial(), after.new_serial);
    drop(served);

    // Once changes pause, the patched snapshot is folded back into flat tables (build-time
    // links for additional data again), serving the same data.
    let deadline = Instant::now() + Duration::from_secs(30);
    while zones.load().iter().next().unwrap().patch_size() > 0 {
        assert!(Instant::now() < deadline, "never compacted");
        std::thread::sleep(Duration::from_millis(20));
    }
    let served = zones.load().iter().next().cloned().unwrap();
    assert_eq!(served.serial(), after.new_serial);
    assert_eq!(
        a_answer(addr, "h.z.test."),
        (ResponseCode::NoError, vec!["192.0.2.5".into()], None)
    );

    token.cancel();
    drop((store, loader, served));
    rt.shutdown();
}

/// Runtimes, loader and store for a store-managed `z.test.` imported from `records`.
fn serve_store_managed(
    dir: &TempDir,
    records: Vec<NewRecord>,
) -> (
    muninn::runtime::Runtimes,
    muninn::reload::ZoneLoader,
    Store,
    Arc<ArcSwap<ZoneSet>>,
) {
    drop(store_with(dir, records));
    let config = dir.path().join("muninn.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n[zones]\ndirectory = \"\"\n\
             [[zones.zone]]\nname = \"{ORIGIN}\"\nmanaged = \"store\"\n"
        ),
    )
    .unwrap();
    let rt = muninn::runtime::Runtimes::build(&muninn::config::RuntimeConfig {
        workers: 1,
        heavy_workers: 1,
        heavy_nice: 0,
        heavy_idle_scheduling: false,
        ..Default::default()
    })
    .unwrap();
    let zones = Arc::new(ArcSwap::from_pointee(ZoneSet::new()));
    let mut loader = muninn::reload::ZoneLoader::new(
        Some(config),
        muninn::config::Overrides::default(),
        zones.clone(),
    );
    let report = rt.heavy.block_on(loader.reload()).unwrap();
    assert_eq!(report.failed(), 0, "{report:?}");
    let store = loader.store().unwrap().clone();
    (rt, loader, store, zones)
}

fn served(zones: &ArcSwap<ZoneSet>) -> Arc<Zone> {
    zones.load().iter().next().cloned().unwrap()
}

#[test]
fn compaction_rebuilds_in_the_background_and_replays_later_changes() {
    let dir = TempDir::new("zone-patch-compact");
    // Big enough that a rebuild takes a while, so changes keep coming during it.
    let mut records = initial();
    for i in 0..50_000u32 {
        records.push(rec(&format!("h{i}"), 300, a((i % 250) as u8)));
    }
    let (rt, loader, store, zones) = serve_store_managed(&dir, records);

    // Each change adds ~20 KB of TXT data, so the extension passes the compaction
    // threshold (256 KiB for a zone this size) after about a dozen changes.
    let txt = "x".repeat(200);
    let mut last = None;
    let mut largest = 0usize;
    for i in 0..40 {
        let add = (0..100)
            .map(|k| {
                let data = RData::TXT(TXT::new(vec![format!("{k:03}{txt}")]));
                rec(&format!("bulk{i}"), 300, data)
            })
            .collect();
        last = Some(apply(&store, add, vec![]));
        largest = largest.max(served(&zones).patch_size());
        // Small changes right behind: those that commit while a compaction runs are
        // replayed onto its result (timing decides how many; the end state is exact
        // either way).
        for k in 0..4 {
            last = Some(apply(
                &store,
                vec![rec(&format!("s{k}.bulk{i}"), 60, a(k))],
                vec![],
            ));
        }
    }
    let last = last.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let zone = loop {
        let z = served(&zones);
        if z.serial() == last.new_serial {
            break z;
        }
        assert!(
            Instant::now() < deadline,
            "serial {} never served",
            last.new_serial
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    // Everything applied, exactly as the store has it ...
    let rebuilt = Arc::new(rebuild(&store));
    let names = [
        abs("bulk39"),
        abs("s3.bulk39"),
        abs("bulk0"),
        abs("s0.bulk0"),
        abs("h7"),
    ];
    assert_same(&zone, &rebuilt, &names, "final");
    // ... and the extension was folded back at least once: 40 changes of ~20 KB would
    // have left ~800 KB in it otherwise.
    assert!(
        zone.patch_size() < 400 << 10 && largest < 700 << 10,
        "no compaction: extension {} bytes, largest seen {largest}",
        zone.patch_size()
    );
    drop((store, loader, zone));
    rt.shutdown();
}

/// The shipped test zones (delegations with required glue, wildcards with MX and
/// delegations below them, SRV, CNAME chains, DNAME): after one patch every answer is the
/// rebuild's, so additional-section data looked up at query time equals the links made
/// at build time. The patch also applies to the parsed zone (what a store-managed zone
/// seeded from its file serves first).
#[test]
fn shipped_zones_answer_the_same_after_a_patch() {
    for (origin, file) in common::zone_files() {
        let dir = TempDir::new("zone-patch-shipped");
        let store = Store::open_dir(&dir.path().join("data"), StoreOptions::default()).unwrap();
        let origin = name(&origin);
        let parsed = muninn::zone::file::load_zone(
            &common::zones_dir().join(&file),
            &origin,
            &common::zones_dir(),
        )
        .unwrap();
        let parsed = Arc::new(parsed);
        store
            .import_blocking(Import {
                zone: Arc::clone(&parsed),
                managed: Managed::Store,
                file: None,
                fingerprint: None,
                source: Source::Import,
            })
            .unwrap();
        let base = Arc::new(store.build_zone(&origin).unwrap().0);
        let marker = Name::from_ascii("patch-marker")
            .unwrap()
            .append_domain(&origin)
            .unwrap();
        let event = store
            .apply_blocking(
                &origin,
                Change {
                    add: vec![NewRecord {
                        name: marker,
                        ttl: 60,
                        data: RData::TXT(TXT::new(vec!["x".into()])),
                        tags: Vec::new(),
                    }],
                    delete: Vec::new(),
                },
            )
            .unwrap();
        let rebuilt = Arc::new(store.build_zone(&origin).unwrap().0);
        let patched = Arc::new(base.patch(&event).unwrap());
        assert!(patched.patch_size() > 0);
        let mut names: Vec<Name> = Vec::new();
        for set in rebuilt.rrsets() {
            let owner = set.owner_name().unwrap();
            if !names.contains(&owner) {
                names.push(owner.clone());
                names.push(
                    Name::from_ascii("zz")
                        .unwrap()
                        .append_domain(&owner)
                        .unwrap(),
                );
            }
        }
        assert_same(&patched, &rebuilt, &names, &format!("{origin}"));

        let from_parsed = parsed.patch(&event).unwrap();
        assert_eq!(from_parsed.serial(), rebuilt.serial());
        assert_eq!(from_parsed.record_count(), rebuilt.record_count());
        assert_eq!(from_parsed.name_count(), rebuilt.name_count());
    }
}
