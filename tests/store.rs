//! The zone store: import and restart from the store (real binary, real sockets), SIGHUP
//! re-import, store-managed zones, change transactions and their rejections, the change
//! stream with a slow consumer, export/import round trips, and `db check`.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use common::{DataServer as Server, QueryOpts, TempDir, open_store as reopen, query};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, CNAME, SOA};
use hickory_proto::rr::{Name, RData, RecordType};
use muninn::config::Overrides;
use muninn::reload::ZoneLoader;
use muninn::runtime::Runtimes;
use muninn::store::{
    Change, Import, Lagged, Managed, NewRecord, RecordFilter, Source, Store, StoreError,
    StoreOptions,
};
use muninn::zone::file::load_zone;
use muninn::zone::{Zone, ZoneSet};
use redb::ReadableTable;

const BIN: &str = env!("CARGO_BIN_EXE_muninn");

const ZONE: &str = "$TTL 300\n\
    @ IN SOA ns1 hostmaster 10 3600 600 86400 300\n\
    @ IN NS ns1\n\
    ns1 IN A 192.0.2.53\n\
    www IN A 192.0.2.1\n\
    alias IN CNAME www\n";

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn a(owner: &str, ip: [u8; 4], tags: &[&str]) -> NewRecord {
    NewRecord {
        name: name(owner),
        ttl: 300,
        data: RData::A(A::new(ip[0], ip[1], ip[2], ip[3])),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

fn open(dir: &Path) -> Store {
    Store::open_dir(dir, StoreOptions::default()).unwrap()
}

fn import(store: &Store, file: &Path, origin: &str, managed: Managed) -> Arc<Zone> {
    let zone = Arc::new(load_zone(file, &name(origin), file.parent().unwrap()).unwrap());
    store
        .import_blocking(Import {
            zone: Arc::clone(&zone),
            managed,
            file: Some(file.to_path_buf()),
            fingerprint: None,
            source: Source::Import,
        })
        .unwrap();
    zone
}

/// Every RRset as (owner wire, type, TTL, sorted RDATAs): what "identical zone" means.
type RRsetKey = (Vec<u8>, u16, u32, Vec<Vec<u8>>);

fn rrsets(zone: &Zone) -> BTreeSet<RRsetKey> {
    zone.rrsets()
        .map(|s| {
            let mut rd: Vec<Vec<u8>> = s.rdatas().map(<[u8]>::to_vec).collect();
            rd.sort();
            (s.owner.to_vec(), u16::from(s.rtype), s.ttl, rd)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------------

/// Test-specific queries on the shared server guard.
impl Server {
    fn a(&self, qname: &str) -> (ResponseCode, Vec<String>, u32) {
        let resp = query(self.addr, qname, RecordType::A, &QueryOpts::default());
        let answers = resp.answers.iter().map(|r| r.data.to_string()).collect();
        let soa = query(self.addr, "a.test.", RecordType::SOA, &QueryOpts::default());
        let serial = match soa.answers.first().map(|r| &r.data) {
            Some(RData::SOA(s)) => s.serial,
            other => panic!("no SOA: {other:?}"),
        };
        (resp.metadata.response_code, answers, serial)
    }
}

#[test]
fn restart_starts_from_the_store_and_sighup_reimports_a_changed_file() {
    let dir = TempDir::new("store-restart");
    let zones = dir.path().join("zones");
    let data = dir.path().join("data");
    fs::create_dir_all(&zones).unwrap();
    let file = zones.join("a.test.zone");
    fs::write(&file, ZONE).unwrap();

    // First start: parsed and imported.
    let s = Server::start(&zones, &data, dir.path().join("1.log"));
    assert_eq!(
        s.a("www.a.test."),
        (ResponseCode::NoError, vec!["192.0.2.1".to_string()], 10)
    );
    let log = s.stop();
    assert!(log.contains("from=\"file\""), "{log}");
    assert!(data.join("muninn.redb").exists());

    // Restart: the file is unchanged, so the zone comes from the store (its image), unparsed.
    let mut s = Server::start(&zones, &data, dir.path().join("2.log"));
    let log = s.log();
    assert!(
        log.contains("zone loaded zone=a.test.") && log.contains("from=\"image\""),
        "{log}"
    );
    assert!(!log.contains("from=\"file\""), "parsed again:\n{log}");
    assert_eq!(
        s.a("www.a.test."),
        (ResponseCode::NoError, vec!["192.0.2.1".to_string()], 10)
    );

    // A changed file is re-imported on SIGHUP and served.
    fs::write(
        &file,
        ZONE.replace(" 10 3600", " 11 3600")
            .replace("192.0.2.1", "192.0.2.99"),
    )
    .unwrap();
    s.signal("-HUP");
    s.wait_for("zone reload done", 0);
    let log = s.log();
    assert!(log.contains("outcome=Changed from=\"file\""), "{log}");
    assert_eq!(
        s.a("www.a.test."),
        (ResponseCode::NoError, vec!["192.0.2.99".to_string()], 11)
    );
    // An unchanged file on the next SIGHUP: nothing is parsed.
    s.signal("-HUP");
    s.wait_for("zone reload done", 1);
    assert_eq!(s.log().matches("from=\"file\"").count(), 1, "{}", s.log());
    s.stop();

    // The import persisted: the next start serves the new version from the store.
    let s = Server::start(&zones, &data, dir.path().join("3.log"));
    assert!(s.log().contains("from=\"image\""), "{}", s.log());
    assert_eq!(
        s.a("www.a.test."),
        (ResponseCode::NoError, vec!["192.0.2.99".to_string()], 11)
    );
    // While the server runs, the db commands are refused with a clear message.
    let out = Command::new(BIN)
        .args(["db", "check", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// In process: loader + store
// ---------------------------------------------------------------------------------------------

fn runtimes() -> Runtimes {
    Runtimes::build(&muninn::config::RuntimeConfig {
        workers: 1,
        heavy_workers: 1,
        heavy_nice: 0,
        heavy_idle_scheduling: false,
        ..Default::default()
    })
    .unwrap()
}

fn served(zones: &ArcSwap<ZoneSet>, origin: &str) -> Option<Arc<Zone>> {
    zones
        .load()
        .get(&hickory_proto::rr::LowerName::new(&name(origin)))
        .cloned()
}

fn a_records(zone: &Zone, owner: &str) -> Vec<String> {
    let mut v: Vec<String> = zone
        .rrset_records(&name(owner), RecordType::A)
        .iter()
        .map(|r| r.data.to_string())
        .collect();
    v.sort();
    v
}

/// Waits until `origin` is served with `serial`.
fn wait_serial(zones: &ArcSwap<ZoneSet>, origin: &str, serial: u32) -> Arc<Zone> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(z) = served(zones, origin)
            && z.serial() == serial
        {
            return z;
        }
        assert!(
            Instant::now() < deadline,
            "{origin} never served serial {serial}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn store_config(dir: &Path, seed: &Path) -> PathBuf {
    let config = dir.join("muninn.toml");
    fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n[zones]\ndirectory = \"\"\n\
             [[zones.zone]]\nname = \"s.test.\"\nfile = \"{}\"\nmanaged = \"store\"\n",
            seed.display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn store_managed_zone_takes_changes_and_survives_restart() {
    let dir = TempDir::new("store-managed");
    let seed = dir.path().join("s.test.zone");
    fs::write(&seed, ZONE).unwrap();
    let config = store_config(dir.path(), &seed);
    let rt = runtimes();
    let zones = Arc::new(ArcSwap::from_pointee(ZoneSet::new()));
    let mut loader = ZoneLoader::new(Some(config.clone()), Overrides::default(), zones.clone());
    let report = rt.heavy.block_on(loader.reload()).unwrap();
    assert_eq!(report.failed(), 0, "{report:?}");
    assert_eq!(served(&zones, "s.test.").unwrap().serial(), 10);
    let store = loader.store().unwrap().clone();

    // One change: bumps the serial and is served without a reload.
    let event = store
        .apply_blocking(
            &name("s.test."),
            Change {
                add: vec![a("new.s.test.", [192, 0, 2, 7], &["env=test"])],
                delete: vec![RecordFilter {
                    name: name("www.s.test."),
                    rtype: None,
                    data: None,
                }],
            },
        )
        .unwrap();
    assert_eq!((event.old_serial, event.new_serial), (10, 11));
    let zone = wait_serial(&zones, "s.test.", 11);
    assert_eq!(a_records(&zone, "new.s.test."), ["192.0.2.7"]);
    assert!(
        zone.rrset_records(&name("www.s.test."), RecordType::A)
            .is_empty()
    );

    // The seed file changing does not matter to a store-managed zone, even on reload.
    fs::write(&seed, ZONE.replace("192.0.2.1", "203.0.113.1")).unwrap();
    let report = rt.heavy.block_on(loader.reload()).unwrap();
    assert_eq!(report.failed(), 0);
    let zone = served(&zones, "s.test.").unwrap();
    assert_eq!(zone.serial(), 11);
    assert!(
        zone.rrset_records(&name("www.s.test."), RecordType::A)
            .is_empty()
    );
    drop((store, loader, zone));
    rt.shutdown();

    // Restart: the zone comes back from the store, change included.
    let rt = runtimes();
    let zones = Arc::new(ArcSwap::from_pointee(ZoneSet::new()));
    let mut loader = ZoneLoader::new(Some(config), Overrides::default(), zones.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        // The previous runtime's tasks may still hold the store for a moment.
        match rt.heavy.block_on(loader.reload()) {
            Err(muninn::reload::ReloadError::Store(StoreError::Locked(_)))
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(report.failed(), 0);
    assert_eq!(
        report.zones[0].parsed_on, None,
        "parsed the seed file again"
    );
    let zone = served(&zones, "s.test.").unwrap();
    assert_eq!(zone.serial(), 11);
    assert_eq!(a_records(&zone, "new.s.test."), ["192.0.2.7"]);
    let meta = loader
        .store()
        .unwrap()
        .zone_meta(&name("s.test."))
        .unwrap()
        .unwrap();
    assert_eq!(meta.managed, Managed::Store);
    let recs = loader.store().unwrap().records(&name("s.test.")).unwrap();
    let new = recs
        .iter()
        .find(|r| r.owner == b"\x03new\x01s\x04test\x00")
        .unwrap();
    assert_eq!(new.meta.tags, ["env=test"]);
    assert_eq!(new.meta.source, Source::Api);
    rt.shutdown();
}

// ---------------------------------------------------------------------------------------------
// Change transactions
// ---------------------------------------------------------------------------------------------

fn snapshot(store: &Store, origin: &str) -> (String, usize, Vec<u64>) {
    let meta = store.zone_meta(&name(origin)).unwrap().unwrap();
    let records = store.records(&name(origin)).unwrap();
    let journal = store.journal(&name(origin)).unwrap();
    (
        format!("{meta:?} {records:?}"),
        records.len(),
        journal.iter().map(|(s, _)| *s).collect(),
    )
}

#[test]
fn changes_bump_the_serial_and_bad_changes_change_nothing() {
    let dir = TempDir::new("store-apply");
    let file = dir.path().join("c.test.zone");
    fs::write(&file, ZONE).unwrap();
    let ffile = dir.path().join("f.test.zone");
    fs::write(&ffile, ZONE).unwrap();
    let store = open(&dir.path().join("data"));
    import(&store, &file, "c.test.", Managed::Store);
    import(&store, &ffile, "f.test.", Managed::File);
    let zone = name("c.test.");

    let before = snapshot(&store, "c.test.");
    type Expect = fn(&StoreError) -> bool;
    let cases: Vec<(Change, Expect)> = vec![
        (
            Change {
                add: vec![a("www.other.test.", [1, 2, 3, 4], &[])],
                ..Change::default()
            },
            |e| matches!(e, StoreError::OutOfZone { .. }),
        ),
        (
            // A CNAME beside the A at www (and a valid add first: rolled back too).
            Change {
                add: vec![
                    a("ok.c.test.", [1, 2, 3, 4], &[]),
                    NewRecord {
                        name: name("www.c.test."),
                        ttl: 300,
                        data: RData::CNAME(CNAME(name("ns1.c.test."))),
                        tags: vec![],
                    },
                ],
                ..Change::default()
            },
            |e| matches!(e, StoreError::CnameConflict(_)),
        ),
        (
            Change {
                add: vec![a("alias.c.test.", [1, 2, 3, 4], &[])],
                ..Change::default()
            },
            |e| matches!(e, StoreError::CnameConflict(_)),
        ),
        (
            Change {
                delete: vec![RecordFilter {
                    name: name("c.test."),
                    rtype: Some(RecordType::SOA),
                    data: None,
                }],
                ..Change::default()
            },
            |e| matches!(e, StoreError::SoaDelete),
        ),
        (
            Change {
                delete: vec![RecordFilter {
                    name: name("c.test."),
                    rtype: Some(RecordType::NS),
                    data: None,
                }],
                ..Change::default()
            },
            |e| matches!(e, StoreError::NoApexNs(_)),
        ),
        (
            Change {
                add: vec![a("t.c.test.", [1, 2, 3, 4], &["no tag"])],
                ..Change::default()
            },
            |e| matches!(e, StoreError::BadTag(_)),
        ),
        (
            Change {
                add: vec![NewRecord {
                    ttl: 1 << 31,
                    ..a("t.c.test.", [1, 2, 3, 4], &[])
                }],
                ..Change::default()
            },
            |e| matches!(e, StoreError::BadRecord { .. }),
        ),
        (
            Change {
                add: vec![NewRecord {
                    name: name("sub.c.test."),
                    ttl: 300,
                    data: RData::SOA(SOA::new(name("a."), name("b."), 1, 1, 1, 1, 1)),
                    tags: vec![],
                }],
                ..Change::default()
            },
            |e| matches!(e, StoreError::BadRecord { .. }),
        ),
        (
            // Deleting what is not there and re-adding what is: nothing to do.
            Change {
                add: vec![a("www.c.test.", [192, 0, 2, 1], &[])],
                delete: vec![RecordFilter {
                    name: name("nothere.c.test."),
                    rtype: None,
                    data: None,
                }],
            },
            |e| matches!(e, StoreError::NoChange),
        ),
    ];
    for (i, (change, expected)) in cases.into_iter().enumerate() {
        let err = store.apply_blocking(&zone, change).unwrap_err();
        assert!(expected(&err), "case {i}: {err}");
        assert_eq!(
            snapshot(&store, "c.test."),
            before,
            "case {i} changed the store"
        );
    }
    let err = store
        .apply_blocking(
            &name("f.test."),
            Change {
                add: vec![a("x.f.test.", [1, 2, 3, 4], &[])],
                ..Change::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::NotStoreManaged(_)), "{err}");
    let err = store
        .apply_blocking(&name("nope.test."), Change::default())
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchZone(_)), "{err}");

    // A good change: serial + 1, journal head, TTL of the RRset follows the new record.
    let event = store
        .apply_blocking(
            &zone,
            Change {
                add: vec![NewRecord {
                    ttl: 60,
                    ..a("www.c.test.", [192, 0, 2, 2], &["team=web"])
                }],
                ..Change::default()
            },
        )
        .unwrap();
    assert_eq!((event.old_serial, event.new_serial), (10, 11));
    // Removed: old SOA, the www A with its old TTL; added: new SOA, www A re-TTLed, new A.
    assert_eq!(event.removed.len(), 2);
    assert_eq!(event.added.len(), 3);
    assert_eq!(event.removed[0].rtype, RecordType::SOA);
    assert_eq!(event.added[0].rtype, RecordType::SOA);
    let (built, meta) = store.build_zone(&zone).unwrap();
    assert_eq!((built.serial(), meta.serial), (11, 11));
    let set = built.rrset_records(&name("www.c.test."), RecordType::A);
    assert_eq!(set.len(), 2);
    assert!(set.iter().all(|r| r.ttl == 60));
    let journal = store.journal(&zone).unwrap();
    let (seq, head) = journal.last().unwrap();
    assert_eq!((*seq, head.new_serial), (meta.journal_seq, 11));

    // An added SOA with a greater serial sets it; RFC 1982 wrap-around from 2^32-1 to 0.
    // A supplied serial is used only when greater (RFC 1982 §3.2): u32::MAX is not greater
    // than 11, but 2^31 + 5 is, and then u32::MAX is; 0 after u32::MAX is the wrap of +1.
    for (given, expect) in [
        (u32::MAX, 12),
        (0x8000_0005, 0x8000_0005),
        (u32::MAX, u32::MAX),
        (0, 0),
        (0, 1),
    ] {
        let event = store
            .apply_blocking(
                &zone,
                Change {
                    add: vec![NewRecord {
                        name: zone.clone(),
                        ttl: 300,
                        data: RData::SOA(SOA::new(
                            name("ns1.c.test."),
                            name("hostmaster.c.test."),
                            given,
                            3600,
                            600,
                            86400,
                            300,
                        )),
                        tags: vec![],
                    }],
                    ..Change::default()
                },
            )
            .unwrap();
        assert_eq!(event.new_serial, expect, "given {given}");
        assert_eq!(store.build_zone(&zone).unwrap().0.serial(), expect);
    }
    assert!(store.check().unwrap().is_ok(), "{}", store.check().unwrap());
}

// ---------------------------------------------------------------------------------------------
// Change stream
// ---------------------------------------------------------------------------------------------

/// Bytes the change stream of [`change_stream_keeps_order_and_a_slow_consumer_resyncs`] may
/// keep: room for a handful of one-record changes (about 600 bytes each with the SOA
/// removed and added), far below the event bound.
const STREAM_BYTES: usize = 4096;

#[test]
fn change_stream_keeps_order_and_a_slow_consumer_resyncs() {
    let dir = TempDir::new("store-stream");
    let file = dir.path().join("e.test.zone");
    fs::write(&file, ZONE).unwrap();
    let store = Store::open_dir(
        &dir.path().join("data"),
        StoreOptions {
            event_capacity: 100_000,
            event_bytes: STREAM_BYTES,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    import(&store, &file, "e.test.", Managed::Store);
    let first_seq = store
        .zone_meta(&name("e.test."))
        .unwrap()
        .unwrap()
        .journal_seq
        + 1;
    const N: u64 = 60;
    let last_seq = first_seq + N - 1;
    let stats = || store.stats();
    assert_eq!(stats().limit_bytes.load(Ordering::Relaxed), 4096);
    assert_eq!(stats().limit_events.load(Ordering::Relaxed), 100_000);

    let slow_progress = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let consumer = |slow: bool, sub: muninn::store::Subscription| {
        let progress = Arc::clone(&slow_progress);
        std::thread::spawn(move || {
            let mut sub = sub;
            let mut seen: Vec<(u64, u32, u32)> = Vec::new();
            // (events seen before, missed count, seq of the next event received)
            let mut resyncs: Vec<(usize, u64, Option<u64>)> = Vec::new();
            loop {
                match sub.blocking_recv() {
                    Ok(e) => {
                        if let Some(r) = resyncs.last_mut()
                            && r.0 == seen.len()
                        {
                            r.2 = Some(e.seq);
                        }
                        seen.push((e.seq, e.old_serial, e.new_serial));
                        if e.seq == last_seq {
                            break;
                        }
                        if slow {
                            progress.store(seen.len(), Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                    Err(Lagged::Resync(n)) => resyncs.push((seen.len(), n, None)),
                    Err(Lagged::Closed) => break,
                }
            }
            (seen, resyncs)
        })
    };
    let fast1 = consumer(false, store.subscribe("fast-1"));
    let fast2 = consumer(false, store.subscribe("fast-2"));
    let slow = consumer(true, store.subscribe("slow"));

    let started = Instant::now();
    let mut largest = 0;
    for i in 0..N {
        let event = store
            .apply_blocking(
                &name("e.test."),
                Change {
                    add: vec![a(&format!("h{i}.e.test."), [10, 0, 0, i as u8], &[])],
                    ..Change::default()
                },
            )
            .unwrap();
        largest = largest.max(event.size());
        // Sampled after every commit: never above the bound (no event here exceeds it).
        let retained = stats().retained_bytes.load(Ordering::Relaxed);
        assert!(
            retained <= STREAM_BYTES as u64,
            "retained {retained} bytes after commit {i}"
        );
    }
    let writer_time = started.elapsed();
    // The bound forces resyncs: it holds only a few of these events.
    assert!(largest * 5 < STREAM_BYTES, "events of {largest} bytes");
    // The writer did not wait for the slow consumer: all commits are done while it has
    // handled only a few events (it spends 200 ms on each).
    let slow_seen_when_writer_done = slow_progress.load(Ordering::SeqCst);
    assert!(
        (slow_seen_when_writer_done as u64) < N / 4,
        "slow consumer saw {slow_seen_when_writer_done} events while the writer ran {writer_time:?}"
    );

    for h in [fast1, fast2] {
        let (seen, resyncs) = h.join().unwrap();
        assert!(resyncs.is_empty(), "fast consumer lagged: {resyncs:?}");
        let seqs: Vec<u64> = seen.iter().map(|s| s.0).collect();
        assert_eq!(seqs, (first_seq..=last_seq).collect::<Vec<_>>());
        for w in seen.windows(2) {
            assert_eq!(w[0].2, w[1].1, "serials not chained: {w:?}");
            assert_eq!(w[1].2, w[1].1.wrapping_add(1));
        }
    }
    let (seen, resyncs) = slow.join().unwrap();
    // It fell behind: told to resync (never a silent gap) with the exact count it missed,
    // then went on in order from the oldest retained event.
    assert!(!resyncs.is_empty(), "slow consumer never lagged");
    for &(before, missed, next) in &resyncs {
        let last_seen = match before {
            0 => first_seq - 1,
            n => seen[n - 1].0,
        };
        assert_eq!(
            next,
            Some(last_seen + missed + 1),
            "resync {resyncs:?} vs seen {seen:?}"
        );
    }
    let skipped: u64 = resyncs.iter().map(|r| r.1).sum();
    assert_eq!(
        seen.len() as u64 + skipped,
        N,
        "events lost without a signal"
    );
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(seen.last().unwrap().0, last_seq);
    assert_eq!(
        stats().resyncs.load(Ordering::Relaxed),
        resyncs.len() as u64
    );
    assert_eq!(stats().skipped.load(Ordering::Relaxed), skipped);
    // Every consumer is gone: nothing is retained for anyone.
    assert_eq!(stats().retained_bytes.load(Ordering::Relaxed), 0);
    assert_eq!(stats().retained_events.load(Ordering::Relaxed), 0);
}

#[test]
fn change_stream_delivers_an_event_larger_than_its_byte_bound() {
    let dir = TempDir::new("store-stream-big");
    let file = dir.path().join("e.test.zone");
    fs::write(&file, ZONE).unwrap();
    let store = Store::open_dir(
        &dir.path().join("data"),
        StoreOptions {
            event_bytes: 1024,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    import(&store, &file, "e.test.", Managed::Store);
    let mut keeps_up = store.subscribe("keeps-up");
    let adds: Vec<NewRecord> = (0..200)
        .map(|i| a(&format!("b{i}.e.test."), [10, 1, 0, i as u8], &["big=yes"]))
        .collect();
    let event = store
        .apply_blocking(
            &name("e.test."),
            Change {
                add: adds.clone(),
                ..Change::default()
            },
        )
        .unwrap();
    assert!(event.size() > 10 * 1024, "{} bytes", event.size());
    // Kept alone, beyond the bound, for the consumer that has not read it yet.
    let st = store.stats();
    assert_eq!(st.retained_events.load(Ordering::Relaxed), 1);
    assert_eq!(
        st.retained_bytes.load(Ordering::Relaxed),
        event.size() as u64
    );
    let got = keeps_up
        .try_recv()
        .expect("the big event is delivered")
        .unwrap();
    assert!(Arc::ptr_eq(&got, &event));
    // The 200 records and the new SOA; the old SOA removed.
    assert_eq!((got.added.len(), got.removed.len()), (201, 1));
    assert!(keeps_up.try_recv().is_none());
    assert_eq!(st.retained_bytes.load(Ordering::Relaxed), 0);
    assert_eq!(st.resyncs.load(Ordering::Relaxed), 0);
}

// ---------------------------------------------------------------------------------------------
// Export / import
// ---------------------------------------------------------------------------------------------

fn round_trip(store: &Store, file: &Path, origin: &str, scratch: &Path) {
    let parsed = import(store, file, origin, Managed::Store);
    let (built, _) = store.build_zone(&name(origin)).unwrap();
    assert_eq!(
        rrsets(&built),
        rrsets(&parsed),
        "{origin}: store differs from file"
    );
    let out = scratch.join(format!("{origin}export"));
    let mut f = fs::File::create(&out).unwrap();
    muninn::store::export::write_zone(&built, &mut f).unwrap();
    drop(f);
    let again = load_zone(&out, &name(origin), scratch)
        .unwrap_or_else(|e| panic!("{origin}: export does not load: {e}"));
    assert_eq!(again.serial(), parsed.serial());
    assert_eq!(rrsets(&again), rrsets(&parsed), "{origin}: export differs");
}

#[test]
fn export_import_round_trip_on_shipped_zones_and_100k_names() {
    let dir = TempDir::new("store-export");
    let store = open(&dir.path().join("data"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![(
        root.join("zones/example.test.zone"),
        "example.test.".to_string(),
    )];
    for (origin, f) in common::zone_files() {
        files.push((common::zones_dir().join(f), origin));
    }
    for (file, origin) in &files {
        round_trip(&store, file, origin, dir.path());
    }

    let big = dir.path().join("big.test.zone");
    let mut text = String::from(
        "$ORIGIN big.test.\n$TTL 3600\n@ SOA ns1 hostmaster 7 7200 3600 1209600 300\n@ NS ns1\nns1 A 192.0.2.1\n",
    );
    for i in 0..100_000u32 {
        let (b, c) = ((i >> 8) as u8, i as u8);
        use std::fmt::Write;
        let _ = match i % 7 {
            0 => writeln!(text, "h{i} A 10.{b}.{c}.1"),
            1 => writeln!(text, "h{i} AAAA 2001:db8::{:x}:{:x}", i >> 16, i & 0xffff),
            2 => writeln!(text, "h{i} 60 TXT \"v={i}\" \"q\\\"uote\""),
            3 => writeln!(text, "h{i} MX 10 h{}.big.test.", i - 3),
            4 => writeln!(text, "H{i}.Sub CNAME h{}", i - 4),
            5 => writeln!(text, "_s{i}._tcp SRV 1 2 {} h{}", i % 65535, i - 5),
            _ => writeln!(text, "h{i} TYPE65000 \\# 3 0102{c:02x}"),
        };
    }
    fs::write(&big, text).unwrap();
    let started = Instant::now();
    round_trip(&store, &big, "big.test.", dir.path());
    eprintln!("100k-name round trip: {:?}", started.elapsed());
    assert!(store.check().unwrap().is_ok());

    // Through the CLI: import, export, re-import elsewhere, export again: same text.
    drop(store);
    let cli = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let d1 = dir.path().join("cli1");
    let d2 = dir.path().join("cli2");
    let e1 = dir.path().join("e1.zone");
    let src = root.join("zones/example.test.zone");
    let msg = cli(&[
        "db",
        "import",
        src.to_str().unwrap(),
        "--origin",
        "example.test",
        "--data-dir",
        d1.to_str().unwrap(),
    ]);
    assert!(msg.contains("imported as store-managed"), "{msg}");
    cli(&[
        "db",
        "export",
        "example.test.",
        "-o",
        e1.to_str().unwrap(),
        "--data-dir",
        d1.to_str().unwrap(),
    ]);
    cli(&[
        "db",
        "import",
        e1.to_str().unwrap(),
        "--origin",
        "example.test.",
        "--data-dir",
        d2.to_str().unwrap(),
    ]);
    let t1 = fs::read_to_string(&e1).unwrap();
    let t2 = cli(&[
        "db",
        "export",
        "example.test.",
        "--data-dir",
        d2.to_str().unwrap(),
    ]);
    assert_eq!(t1, t2);
}

// ---------------------------------------------------------------------------------------------
// db check
// ---------------------------------------------------------------------------------------------

#[test]
fn db_check_reports_orphans_and_missing_index_entries() {
    let dir = TempDir::new("store-check");
    let file = dir.path().join("k.test.zone");
    fs::write(&file, ZONE).unwrap();
    let data = dir.path().join("data");
    {
        let store = open(&data);
        import(&store, &file, "k.test.", Managed::Store);
        store
            .apply_blocking(
                &name("k.test."),
                Change {
                    add: vec![a("t.k.test.", [192, 0, 2, 9], &["env=prod", "owner=x"])],
                    ..Change::default()
                },
            )
            .unwrap();
    }
    let check = || {
        let out = Command::new(BIN)
            .args(["db", "check", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = check();
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("zone k.test.: store-managed, serial 11, 6 records"),
        "{text}"
    );
    assert!(
        text.contains("2 tag index entries") && text.contains(": OK"),
        "{text}"
    );

    // An orphaned index entry, written behind the store's back.
    let tags: redb::TableDefinition<&[u8], ()> = redb::TableDefinition::new("tags");
    let db = redb::Database::open(data.join("muninn.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(tags).unwrap();
        let mut key = b"env=ghost\0".to_vec();
        key.extend_from_slice(&[0, 0, 0, 1, b'x', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        t.insert(key.as_slice(), ()).unwrap();
    }
    txn.commit().unwrap();
    drop(db);
    let (code, text) = check();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("\"env=ghost\": points to no record (orphaned index entry)"),
        "{text}"
    );
    assert!(text.contains("1 problem(s)"), "{text}");

    // And a record whose tag lost its index entry.
    let db = redb::Database::open(data.join("muninn.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(tags).unwrap();
        let victim: Vec<u8> = t
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value().to_vec())
            .find(|k| k.starts_with(b"owner=x\0"))
            .unwrap();
        t.remove(victim.as_slice()).unwrap();
    }
    txn.commit().unwrap();
    drop(db);
    let (code, text) = check();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("tag \"owner=x\" is not indexed"), "{text}");
    assert!(text.contains("2 problem(s)"), "{text}");
}

/// A zone of `n` hosts `h{i}` from `first`, with `ttl`; every 3rd also has an AAAA.
fn hosts_zone(serial: u32, first: usize, n: usize, ttl: u32) -> String {
    let mut z = format!(
        "$TTL 300\n@ IN SOA ns1 hostmaster {serial} 3600 600 86400 300\n@ IN NS ns1\nns1 IN A 192.0.2.53\n"
    );
    for i in first..first + n {
        z.push_str(&format!(
            "h{i} {ttl} IN A 10.{}.{}.{}\n",
            i >> 16 & 255,
            i >> 8 & 255,
            i & 255
        ));
        if i % 3 == 0 {
            z.push_str(&format!("h{i} {ttl} IN AAAA 2001:db8::{i:x}\n"));
        }
    }
    z
}

/// A stored record without its timestamps: owner, type, TTL, RDATA, tags.
type Content = (Vec<u8>, u16, u32, Vec<u8>, Vec<String>);

/// Stored records without their timestamps: what two stores must agree on.
fn contents(store: &Store, origin: &str) -> Vec<Content> {
    store
        .records(&name(origin))
        .unwrap()
        .into_iter()
        .map(|r| (r.owner, u16::from(r.rtype), r.ttl, r.rdata, r.meta.tags))
        .collect()
}

#[test]
fn reimport_writes_only_the_differences_and_ends_equal_to_a_fresh_import() {
    let dir = TempDir::new("store-sync");
    let origin = "s.test.";
    let v1 = dir.path().join("v1.zone");
    let v2 = dir.path().join("v2.zone");
    // v1: h0..h12000 (serial 1, then 2 after the change below). v2 (serial 5): h0..h6000 with TTL 300 kept as is, h6000..h9000 with a new TTL,
    // h9000..h12000 removed, h12000..h17000 added: every kind of difference, each more than
    // one chunk of the merge (4096 differences).
    fs::write(&v1, hosts_zone(1, 0, 12_000, 300)).unwrap();
    let mut z2 = hosts_zone(5, 0, 6_000, 300);
    z2.push_str(
        hosts_zone(5, 6_000, 3_000, 600)
            .split_once("ns1 IN A 192.0.2.53\n")
            .unwrap()
            .1,
    );
    z2.push_str(
        hosts_zone(5, 12_000, 5_000, 300)
            .split_once("ns1 IN A 192.0.2.53\n")
            .unwrap()
            .1,
    );
    fs::write(&v2, z2).unwrap();

    let store = open(&dir.path().join("a"));
    import(&store, &v1, origin, Managed::Store);
    // A tagged record that v2 does not have: its index entry must go with it.
    store
        .apply_blocking(
            &name(origin),
            Change {
                add: vec![a("t.s.test.", [192, 0, 2, 9], &["env=prod"])],
                ..Change::default()
            },
        )
        .unwrap();
    // Owner, type and RDATA: what identifies a record across the two imports.
    let identity =
        |r: &muninn::store::StoredRecord| (r.owner.clone(), u16::from(r.rtype), r.rdata.clone());
    let before: std::collections::HashMap<_, (u64, u64)> = store
        .records(&name(origin))
        .unwrap()
        .iter()
        .map(|r| (identity(r), (r.meta.created, r.meta.updated)))
        .collect();
    // Timestamps are in seconds: let the clock move on so that rewritten records show it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    std::thread::sleep(Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()),
    ));
    let zone2 = import(&store, &v2, origin, Managed::Store);

    let fresh = open(&dir.path().join("b"));
    import(&fresh, &v2, origin, Managed::Store);
    let (got, want) = (contents(&store, origin), contents(&fresh, origin));
    let first_difference = got.iter().zip(&want).position(|(g, w)| g != w);
    assert!(
        got.len() == want.len() && first_difference.is_none(),
        "{} records, a fresh import has {}; first difference at {first_difference:?}: {:?} vs {:?}",
        got.len(),
        want.len(),
        first_difference.and_then(|i| got.get(i)),
        first_difference.and_then(|i| want.get(i)),
    );
    let meta = store.zone_meta(&name(origin)).unwrap().unwrap();
    let fresh_meta = fresh.zone_meta(&name(origin)).unwrap().unwrap();
    assert_eq!(meta.record_count, fresh_meta.record_count);
    assert_eq!(meta.serial, 5);
    let (built, _) = store.build_zone(&name(origin)).unwrap();
    assert_eq!(rrsets(&built), rrsets(&zone2));

    // Records that did not change kept their times; changed and new ones are newer.
    let (mut kept, mut rewritten) = (0, 0);
    for r in store.records(&name(origin)).unwrap() {
        let key = identity(&r);
        let owner = name_from(&r.owner);
        let host: Option<usize> = owner
            .strip_prefix('h')
            .and_then(|o| o.split('.').next())
            .and_then(|n| n.parse().ok());
        let times = (r.meta.created, r.meta.updated);
        match (host, before.get(&key)) {
            // The SOA, with its new serial.
            (None, _) if r.rtype == RecordType::SOA => rewritten += 1,
            // The apex NS, ns1 and h0..h6000: as they were.
            (None, Some(&old)) => {
                assert_eq!(times, old, "{owner}");
                kept += 1;
            }
            (Some(n), Some(&old)) if n < 6_000 => {
                assert_eq!(times, old, "{owner}");
                kept += 1;
            }
            // h6000..h9000: new TTL, same RDATA.
            (Some(n), Some(&(created, updated))) if n < 9_000 => {
                assert_eq!(r.meta.created, created, "{owner}");
                assert!(r.meta.updated > updated, "{owner}");
                rewritten += 1;
            }
            // h12000..: new.
            (Some(n), None) if n >= 12_000 => rewritten += 1,
            other => panic!("unexpected record {owner} {:?}: {other:?}", r.rtype),
        }
    }
    assert!(
        kept > 8_000 && rewritten > 9_000,
        "kept {kept}, rewritten {rewritten}"
    );
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.tag_entries, 0, "{report}");
}

fn name_from(wire: &[u8]) -> String {
    muninn::zone::name_from_wire(wire).unwrap().to_string()
}

// ---------------------------------------------------------------------------------------------
// Figures for 1,000,000 names (run with --ignored --nocapture, release build)
// ---------------------------------------------------------------------------------------------

#[test]
#[ignore]
fn figures_for_a_million_names() {
    let dir = TempDir::new("store-million");
    let big = PathBuf::from("/tmp/parser-bench/big.zone");
    let file = dir.path().join("example.com.zone");
    if big.exists() {
        fs::copy(&big, &file).unwrap();
    } else {
        let mut text = String::from(
            "$ORIGIN example.com.\n$TTL 3600\n@ SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ NS ns1\nns1 A 192.0.2.1\n",
        );
        for i in 0..1_000_000u32 {
            use std::fmt::Write;
            let _ = writeln!(
                text,
                "host{i} A 10.{}.{}.{}",
                i >> 16,
                (i >> 8) as u8,
                i as u8
            );
        }
        fs::write(&file, text).unwrap();
    }
    let origin = name("example.com.");
    let data = dir.path().join("data");

    let t = Instant::now();
    let zone = Arc::new(load_zone(&file, &origin, dir.path()).unwrap());
    let parse = t.elapsed();
    let names = zone.name_count();
    let store = open(&data);
    let t = Instant::now();
    store
        .import_blocking(Import {
            zone: Arc::clone(&zone),
            managed: Managed::Store,
            file: None,
            fingerprint: None,
            source: Source::Import,
        })
        .unwrap();
    let import_time = t.elapsed();
    drop(store);
    drop(zone);
    let size = fs::metadata(data.join("muninn.redb")).unwrap().len();
    let t = Instant::now();
    let store = reopen(&data);
    let (built, _) = store.build_zone(&origin).unwrap();
    let from_store = t.elapsed();
    eprintln!(
        "{names} names: parse file {parse:?}; import {import_time:?}; store file {} MiB; \
         restart from store (open + build) {from_store:?} vs from file (parse) {parse:?}",
        size >> 20
    );
    drop(built);
    drop(store);

    // Single-change latency: commit + rebuild + publish, measured until served.
    let config = dir.path().join("muninn.toml");
    fs::write(
        &config,
        "data_dir = \"data\"\n[zones]\ndirectory = \"\"\n[[zones.zone]]\nname = \"example.com.\"\nmanaged = \"store\"\n",
    )
    .unwrap();
    let rt = runtimes();
    let zones = Arc::new(ArcSwap::from_pointee(ZoneSet::new()));
    let mut loader = ZoneLoader::new(Some(config), Overrides::default(), zones.clone());
    let t = Instant::now();
    rt.heavy.block_on(loader.reload()).unwrap();
    eprintln!("server startup load from store: {:?}", t.elapsed());
    let store = loader.store().unwrap().clone();
    for i in 0..5u8 {
        let t = Instant::now();
        let ev = store
            .apply_blocking(
                &origin,
                Change {
                    add: vec![a(&format!("change{i}.example.com."), [192, 0, 2, i], &[])],
                    ..Change::default()
                },
            )
            .unwrap();
        let committed = t.elapsed();
        wait_serial(&zones, "example.com.", ev.new_serial);
        eprintln!(
            "change {i}: committed in {committed:?}, served after {:?}",
            t.elapsed()
        );
    }
    drop(store);
    drop(loader);
    rt.shutdown();
}
