//! Bulk purges (`store::purge` + `jobs`): exact counters that never go backwards, dry runs,
//! the SOA and apex NS kept, file-managed zones refused, filters, limits, shutdown between
//! batches, the snapshot updater serving the result, and `kill -9` of `muninn db purge` at
//! random points (20 rounds) leaving a consistent store that a rerun finishes.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use common::{KillOnDrop, Rng, TempDir, muninn_cmd, open_store as open};
use hickory_proto::rr::rdata::{A, NS, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, RecordType};
use muninn::config::Overrides;
use muninn::jobs::{JobError, JobSettings, JobState, JobStatus, Jobs, PurgeSpec};
use muninn::reload::ZoneLoader;
use muninn::store::{
    Change, ChangeKind, Import, Lagged, Managed, NewRecord, Source, Store, StoreError,
    StoreOptions, schema,
};
use muninn::zone::ZoneSet;
use muninn::zone::file::load_zone;
use redb::ReadableDatabase;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const BIN: &str = env!("CARGO_BIN_EXE_muninn");
const TAG: &str = "purge=me";

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn zone_text(serial: u32) -> String {
    format!(
        "$TTL 300\n@ IN SOA ns1 hostmaster {serial} 3600 600 86400 300\n\
         @ IN NS ns1\n@ IN NS ns2\nns1 IN A 192.0.2.53\nns2 IN A 192.0.2.54\n"
    )
}

/// Records of a fresh zone from [`zone_text`].
const BASE: u64 = 5;

fn a(owner: &str, i: u32, tags: &[String]) -> NewRecord {
    NewRecord {
        name: name(owner),
        ttl: 300,
        data: RData::A(A::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)),
        tags: tags.to_vec(),
    }
}

/// Imports `origin` (SOA, two apex NS, two glue A) managed as `managed`.
fn create_zone(store: &Store, dir: &Path, origin: &str, managed: Managed) {
    let file = dir.join(format!("{origin}zone"));
    fs::write(&file, zone_text(100)).unwrap();
    let zone = load_zone(&file, &name(origin), dir).unwrap();
    store
        .import_blocking(Import {
            zone: Arc::new(zone),
            managed,
            file: Some(file),
            fingerprint: None,
            source: Source::Import,
        })
        .unwrap();
}

/// Adds `tagged` A records `t<i>` tagged [`TAG`] and `grp=<i%7>`, and `other` records `u<i>`
/// (half tagged `keep=yes`, half untagged), in change transactions of 5000.
fn add_records(store: &Store, origin: &str, prefix: &str, tagged: u32, other: u32) {
    let mut adds = Vec::new();
    for i in 0..tagged {
        adds.push(a(
            &format!("{prefix}t{i}.{origin}"),
            i,
            &[TAG.to_string(), format!("grp={}", i % 7)],
        ));
    }
    for i in 0..other {
        let tags = if i % 2 == 0 {
            vec!["keep=yes".to_string()]
        } else {
            Vec::new()
        };
        adds.push(a(&format!("{prefix}u{i}.{origin}"), i, &tags));
    }
    for chunk in adds.chunks(5000) {
        store
            .apply_blocking(
                &name(origin),
                Change {
                    add: chunk.to_vec(),
                    delete: Vec::new(),
                },
            )
            .unwrap();
    }
}

fn meta(store: &Store, origin: &str) -> (u32, u64, u64) {
    let m = store.zone_meta(&name(origin)).unwrap().unwrap();
    (m.serial, m.record_count, m.journal_seq)
}

fn total_records(store: &Store) -> u64 {
    store.zones().unwrap().iter().map(|m| m.record_count).sum()
}

/// Tag index entries for `tag`.
fn tagged(store: &Store, tag: &str) -> u64 {
    let txn = store.database().begin_read().unwrap();
    let tags = txn.open_table(schema::TAGS).unwrap();
    let mut lo = tag.as_bytes().to_vec();
    lo.push(0);
    let mut hi = tag.as_bytes().to_vec();
    hi.push(1);
    tags.range(lo.as_slice()..hi.as_slice()).unwrap().count() as u64
}

fn assert_check(store: &Store) {
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report}");
}

/// A heavy runtime and a job registry on `store`.
struct Harness {
    rt: tokio::runtime::Runtime,
    token: CancellationToken,
    tracker: TaskTracker,
    jobs: Jobs,
}

impl Harness {
    fn new(store: &Store, settings: JobSettings) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let jobs = Jobs::new(
            store.clone(),
            rt.handle().clone(),
            token.clone(),
            tracker.clone(),
            settings,
        );
        Harness {
            rt,
            token,
            tracker,
            jobs,
        }
    }

    /// Polls the job until it is no longer running, checking on every poll that no counter
    /// went backwards and that the counters are consistent.
    fn wait(&self, id: u64, mut on_poll: impl FnMut(&JobStatus)) -> (JobStatus, usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last: Option<JobStatus> = None;
        let mut polls = 0;
        loop {
            let s = self.jobs.get(id).expect("job is registered");
            polls += 1;
            assert!(s.processed <= s.total, "{s:?}");
            assert!(
                s.deleted + s.skipped + s.would_delete <= s.processed,
                "{s:?}"
            );
            if let Some(p) = &last {
                assert!(
                    s.processed >= p.processed,
                    "processed went back: {p:?} {s:?}"
                );
                assert!(s.deleted >= p.deleted, "deleted went back: {p:?} {s:?}");
                assert!(s.total >= p.total, "total went back: {p:?} {s:?}");
                assert!(s.skipped >= p.skipped, "skipped went back");
                assert!(s.would_delete >= p.would_delete, "would_delete went back");
                assert!(s.batches >= p.batches, "batches went back");
            }
            on_poll(&s);
            if s.state != JobState::Running {
                return (s, polls);
            }
            assert!(Instant::now() < deadline, "purge never finished: {s:?}");
            last = Some(s);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn run(&self, spec: PurgeSpec) -> JobStatus {
        let started = self.jobs.start_purge(spec).unwrap();
        assert_eq!(started.state, JobState::Running);
        assert_eq!((started.processed, started.deleted), (0, 0));
        self.wait(started.id, |_| {}).0
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.token.cancel();
        self.tracker.close();
        self.rt.block_on(self.tracker.wait());
    }
}

fn settings(batch: usize) -> JobSettings {
    JobSettings {
        purge_batch_size: batch,
        ..JobSettings::default()
    }
}

#[test]
fn counters_are_exact_and_never_go_backwards() {
    let dir = TempDir::new("purge-exact");
    let store = open(&dir.path().join("data"));
    create_zone(&store, dir.path(), "a.test.", Managed::Store);
    create_zone(&store, dir.path(), "b.test.", Managed::Store);
    add_records(&store, "a.test.", "", 8000, 10_000);
    add_records(&store, "b.test.", "", 4000, 6000);
    let n = 12_000;
    let before_total = total_records(&store);
    assert_eq!(before_total, 2 * BASE + 28_000);
    assert_eq!(tagged(&store, TAG), n);
    let (sa, ca, _) = meta(&store, "a.test.");
    let (sb, cb, _) = meta(&store, "b.test.");
    let mut events = store.subscribe("test");

    let h = Harness::new(&store, settings(500));
    let started = h.jobs.start_purge(PurgeSpec::tag(TAG)).unwrap();
    // While it runs, the counter never runs ahead of the store: whatever `deleted` says
    // has already disappeared.
    let (s, polls) = h.wait(started.id, |s| {
        let gone = before_total - total_records(&store);
        assert!(
            s.deleted <= gone,
            "deleted {} but only {gone} gone",
            s.deleted
        );
    });
    assert_eq!(s.state, JobState::Done, "{s:?}");
    assert_eq!(s.kind, "purge");
    assert_eq!(s.error, None);
    assert_eq!(s.total, n);
    assert_eq!(s.processed, n);
    assert_eq!(s.deleted, n);
    assert_eq!(s.skipped, 0);
    assert_eq!(s.would_delete, 0);
    // 8000 of a.test. then 4000 of b.test., 500 per batch, none spanning both zones.
    assert_eq!(s.batches, 24);
    assert!(s.rate > 0.0);
    assert_eq!(s.eta_secs, Some(0.0));
    assert!(s.finished.is_some_and(|f| f >= s.started));
    assert!(polls > 2, "too few polls to see progress: {polls}");

    assert_eq!(before_total - total_records(&store), n);
    assert_eq!(tagged(&store, TAG), 0);
    // The other tags of the deleted records went with them; those of the others stay.
    for g in 0..7 {
        assert_eq!(tagged(&store, &format!("grp={g}")), 0);
    }
    assert_eq!(tagged(&store, "keep=yes"), 8000);
    assert_check(&store);
    // One serial bump (and journal entry, and change event) per batch per zone.
    let (sa2, ca2, _) = meta(&store, "a.test.");
    let (sb2, cb2, _) = meta(&store, "b.test.");
    assert_eq!((sa2 - sa, ca - ca2), (16, 8000));
    assert_eq!((sb2 - sb, cb - cb2), (8, 4000));
    let mut seen: BTreeMap<String, (u32, u64)> = BTreeMap::new();
    while let Some(e) = events.try_recv() {
        let e = e.unwrap();
        assert_eq!(e.kind, ChangeKind::Update);
        assert_eq!(e.new_serial, e.old_serial + 1);
        // The old SOA plus the batch's records; the new SOA.
        assert_eq!((e.removed.len(), e.added.len()), (501, 1));
        assert!(
            e.removed
                .iter()
                .skip(1)
                .all(|r| r.meta.tags.iter().any(|t| t == TAG))
        );
        let entry = seen.entry(e.zone.to_string()).or_default();
        entry.0 += 1;
        entry.1 += e.removed.len() as u64 - 1;
    }
    assert_eq!(seen["a.test."], (16, 8000));
    assert_eq!(seen["b.test."], (8, 4000));
    let journal = store.journal(&name("b.test.")).unwrap();
    let last = &journal.last().unwrap().1;
    assert_eq!(last.new_serial, sb2);
    assert_eq!(last.removed.len(), 501);

    // The same purge again: nothing left to do.
    let again = h.run(PurgeSpec::tag(TAG));
    assert_eq!(
        (again.state, again.total, again.processed, again.deleted),
        (JobState::Done, 0, 0, 0)
    );
    assert_eq!(
        meta(&store, "a.test.").0,
        sa2,
        "an empty purge bumped the serial"
    );
    let listed: Vec<u64> = h.jobs.list().iter().map(|j| j.id).collect();
    assert_eq!(listed, [started.id, again.id]);
}

#[test]
fn a_purge_keeps_the_change_stream_within_its_byte_bound() {
    const BOUND: usize = 128 * 1024;
    let dir = TempDir::new("purge-stream-bound");
    let data = dir.path().join("data");
    let store = Store::open_dir(
        &data,
        StoreOptions {
            event_bytes: BOUND,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    create_zone(&store, dir.path(), "p.test.", Managed::Store);
    add_records(&store, "p.test.", "", 6000, 0);
    let (_, _, seq0) = meta(&store, "p.test.");
    // A consumer that reads nothing while the purge runs: the worst case for the ring.
    let mut idle = store.subscribe("idle");
    let st = store.stats();
    let retained = || st.retained_bytes.load(std::sync::atomic::Ordering::Relaxed);

    let h = Harness::new(&store, settings(200));
    let started = h.jobs.start_purge(PurgeSpec::tag(TAG)).unwrap();
    let mut samples = 0;
    let (s, _) = h.wait(started.id, |_| {
        samples += 1;
        // No event here is larger than the bound, so the bound holds exactly.
        assert!(retained() <= BOUND as u64, "retained {} bytes", retained());
    });
    assert_eq!((s.state, s.deleted, s.batches), (JobState::Done, 6000, 30));
    assert!(samples > 2, "{samples} samples");
    assert!(retained() <= BOUND as u64, "retained {} bytes", retained());
    let kept = st
        .retained_events
        .load(std::sync::atomic::Ordering::Relaxed);
    // Each batch's event carries its 200 removed records: a few fit, not all 30.
    eprintln!("{kept} of 30 purge events kept within {BOUND} bytes");
    assert!((1..30).contains(&kept), "{kept} events kept");

    // The idle consumer is told exactly how many it missed, then gets the rest in order.
    assert_eq!(idle.try_recv().unwrap(), Err(Lagged::Resync(30 - kept)));
    let mut seqs = Vec::new();
    while let Some(e) = idle.try_recv() {
        let e = e.unwrap();
        // The batch's 200 records and the old SOA out, the new SOA in.
        assert_eq!(
            (e.kind, e.removed.len(), e.added.len()),
            (ChangeKind::Update, 201, 1)
        );
        assert!(e.size() <= BOUND);
        seqs.push(e.seq);
    }
    assert_eq!(seqs, (seq0 + 31 - kept..=seq0 + 30).collect::<Vec<_>>());
    assert_eq!(retained(), 0);
    assert_eq!(meta(&store, "p.test.").1, BASE);
    assert_check(&store);
}

#[test]
fn dry_run_changes_nothing_and_reports_the_count() {
    let dir = TempDir::new("purge-dry");
    let store = open(&dir.path().join("data"));
    create_zone(&store, dir.path(), "d.test.", Managed::Store);
    add_records(&store, "d.test.", "", 3000, 2000);
    // The SOA carries the tag too: a real purge would keep it.
    tag_soa(&store, "d.test.");
    let before = (
        meta(&store, "d.test."),
        store.records(&name("d.test.")).unwrap(),
    );
    let journal = store.journal(&name("d.test.")).unwrap().len();

    let h = Harness::new(&store, settings(700));
    let s = h.run(PurgeSpec {
        dry_run: true,
        ..PurgeSpec::tag(TAG)
    });
    assert_eq!(s.state, JobState::Done, "{s:?}");
    assert_eq!((s.total, s.processed), (3001, 3001));
    assert_eq!((s.would_delete, s.deleted, s.skipped), (3000, 0, 1));
    assert_eq!(s.skipped_by.len(), 1);
    assert!(s.skipped_by[0].reason.contains("SOA"), "{s:?}");
    assert_eq!(
        (
            meta(&store, "d.test."),
            store.records(&name("d.test.")).unwrap()
        ),
        before
    );
    assert_eq!(store.journal(&name("d.test.")).unwrap().len(), journal);

    // The real purge deletes exactly what the dry run announced.
    let real = h.run(PurgeSpec::tag(TAG));
    assert_eq!((real.deleted, real.skipped), (s.would_delete, s.skipped));
    assert_eq!(before.0.1 - meta(&store, "d.test.").1, 3000);
    assert_check(&store);
}

/// Re-adds the zone's SOA with the tag [`TAG`].
fn tag_soa(store: &Store, origin: &str) {
    let soa = SOA::new(
        name(&format!("ns1.{origin}")),
        name(&format!("hostmaster.{origin}")),
        1,
        3600,
        600,
        86400,
        300,
    );
    store
        .apply_blocking(
            &name(origin),
            Change {
                add: vec![NewRecord {
                    name: name(origin),
                    ttl: 300,
                    data: RData::SOA(soa),
                    tags: vec![TAG.into()],
                }],
                delete: Vec::new(),
            },
        )
        .unwrap();
}

fn apex_ns(origin: &str, host: &str, tags: &[&str]) -> NewRecord {
    NewRecord {
        name: name(origin),
        ttl: 300,
        data: RData::NS(NS(name(&format!("{host}.{origin}")))),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

fn ns_hosts(store: &Store, origin: &str) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = store
        .records(&name(origin))
        .unwrap()
        .into_iter()
        .filter(|r| {
            r.rtype == RecordType::NS && r.owner_lower() == muninn::zone::case_wire(&name(origin))
        })
        .map(|r| r.rdata)
        .collect();
    v.sort();
    v
}

#[test]
fn soa_and_the_last_apex_ns_are_kept() {
    let dir = TempDir::new("purge-apex");
    let store = open(&dir.path().join("data"));
    // all.test.: SOA and both apex NS tagged: all three kept.
    create_zone(&store, dir.path(), "all.test.", Managed::Store);
    tag_soa(&store, "all.test.");
    store
        .apply_blocking(
            &name("all.test."),
            Change {
                add: vec![
                    apex_ns("all.test.", "ns1", &[TAG]),
                    apex_ns("all.test.", "ns2", &[TAG]),
                ],
                delete: Vec::new(),
            },
        )
        .unwrap();
    add_records(&store, "all.test.", "", 50, 10);
    // some.test.: one of two apex NS tagged: that one goes.
    create_zone(&store, dir.path(), "some.test.", Managed::Store);
    store
        .apply_blocking(
            &name("some.test."),
            Change {
                add: vec![apex_ns("some.test.", "ns2", &[TAG, "x=y"])],
                delete: Vec::new(),
            },
        )
        .unwrap();
    add_records(&store, "some.test.", "", 20, 0);
    let all_ns = ns_hosts(&store, "all.test.");
    assert_eq!(all_ns.len(), 2);
    let (_, all_before, _) = meta(&store, "all.test.");
    let (_, some_before, _) = meta(&store, "some.test.");

    // Batch size 1: the apex rule must hold across batches too.
    let h = Harness::new(&store, settings(1));
    let s = h.run(PurgeSpec::tag(TAG));
    assert_eq!(s.state, JobState::Done, "{s:?}");
    assert_eq!(s.total, 3 + 50 + 1 + 20);
    assert_eq!(s.processed, s.total);
    assert_eq!(s.deleted, 50 + 1 + 20);
    assert_eq!(s.skipped, 3);
    let by: BTreeMap<(String, bool), u64> = s
        .skipped_by
        .iter()
        .map(|k| ((k.zone.clone(), k.reason.contains("NS")), k.count))
        .collect();
    assert_eq!(
        by,
        BTreeMap::from([
            (("all.test.".to_string(), false), 1),
            (("all.test.".to_string(), true), 2)
        ]),
        "{s:?}"
    );
    assert_eq!(ns_hosts(&store, "all.test."), all_ns);
    assert_eq!(all_before - meta(&store, "all.test.").1, 50);
    assert_eq!(
        ns_hosts(&store, "some.test."),
        [b"\x03ns1\x04some\x04test\x00".to_vec()]
    );
    assert_eq!(some_before - meta(&store, "some.test.").1, 21);
    assert_eq!(tagged(&store, TAG), 3);
    assert_eq!(tagged(&store, "x=y"), 0);
    assert_check(&store);
}

#[test]
fn file_managed_zones_are_refused_and_never_purged() {
    let dir = TempDir::new("purge-file");
    let store = open(&dir.path().join("data"));
    create_zone(&store, dir.path(), "s.test.", Managed::Store);
    add_records(&store, "s.test.", "", 100, 0);
    // f.test. was store-managed when its records were tagged, and is file-managed now.
    create_zone(&store, dir.path(), "f.test.", Managed::Store);
    add_records(&store, "f.test.", "", 40, 5);
    store
        .set_managed_blocking(&name("f.test."), Managed::File)
        .unwrap();
    let f_before = meta(&store, "f.test.");

    let h = Harness::new(&store, settings(30));
    let err = h
        .jobs
        .start_purge(PurgeSpec {
            zone: Some("f.test".into()),
            ..PurgeSpec::tag(TAG)
        })
        .unwrap_err();
    assert!(matches!(
        err,
        JobError::Store(StoreError::NotStoreManaged(_))
    ));
    assert_eq!(
        err.to_string(),
        "zone f.test. is managed by its zone file, not by the store (configure managed = \"store\")"
    );
    assert!(h.jobs.list().is_empty(), "a refused purge left a job");

    let s = h.run(PurgeSpec::tag(TAG));
    assert_eq!(s.state, JobState::Done, "{s:?}");
    assert_eq!(
        (s.total, s.processed, s.deleted, s.skipped),
        (140, 140, 100, 40)
    );
    assert_eq!(s.skipped_by.len(), 1);
    assert_eq!(s.skipped_by[0].zone, "f.test.");
    assert!(s.skipped_by[0].reason.contains("file-managed"));
    assert_eq!(meta(&store, "f.test."), f_before);
    assert_eq!(tagged(&store, TAG), 40);

    // With the zone named: only that zone's records are candidates.
    add_records(&store, "s.test.", "again-", 10, 0);
    create_zone(&store, dir.path(), "o.test.", Managed::Store);
    add_records(&store, "o.test.", "", 7, 0);
    let s = h.run(PurgeSpec {
        zone: Some("o.test.".into()),
        ..PurgeSpec::tag(TAG)
    });
    assert_eq!((s.total, s.deleted, s.skipped), (7, 7, 0));
    assert_eq!(tagged(&store, TAG), 40 + 10);
    assert_check(&store);
}

#[test]
fn bad_requests_and_the_job_limit_are_refused() {
    let dir = TempDir::new("purge-limits");
    let store = open(&dir.path().join("data"));
    create_zone(&store, dir.path(), "l.test.", Managed::Store);
    add_records(&store, "l.test.", "", 300, 0);
    let h = Harness::new(
        &store,
        JobSettings {
            purge_batch_size: 1,
            max_jobs: 1,
            jobs_kept: 2,
            ..JobSettings::default()
        },
    );
    for (spec, why) in [
        (PurgeSpec::tag("novalue"), "bad tag"),
        (PurgeSpec::tag("a b=c"), "bad tag"),
        (
            PurgeSpec {
                zone: Some("nope.test.".into()),
                ..PurgeSpec::tag(TAG)
            },
            "zone nope.test. is not in the store",
        ),
        (
            PurgeSpec {
                zone: Some("a..b".into()),
                ..PurgeSpec::tag(TAG)
            },
            "invalid zone name",
        ),
        (
            PurgeSpec {
                rtype: Some("BOGUS".into()),
                ..PurgeSpec::tag(TAG)
            },
            "unknown record type",
        ),
    ] {
        let err = h.jobs.start_purge(spec).unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
    }
    assert!(h.jobs.list().is_empty());

    let first = h.jobs.start_purge(PurgeSpec::tag(TAG)).unwrap();
    let err = h.jobs.start_purge(PurgeSpec::tag("keep=yes")).unwrap_err();
    assert!(matches!(err, JobError::TooMany { max: 1 }), "{err}");
    assert!(err.to_string().contains("max_jobs"), "{err}");
    let (s, _) = h.wait(first.id, |_| {});
    assert_eq!((s.state, s.deleted), (JobState::Done, 300));
    // Finished jobs are kept up to jobs_kept, oldest forgotten first.
    let ids: Vec<u64> = (0..3)
        .map(|_| h.run(PurgeSpec::tag("keep=yes")).id)
        .collect();
    let listed: Vec<u64> = h.jobs.list().iter().map(|j| j.id).collect();
    assert_eq!(listed, ids[1..]);
    assert!(h.jobs.get(first.id).is_none());
}

#[test]
fn type_and_time_filters() {
    let dir = TempDir::new("purge-filters");
    let store = open(&dir.path().join("data"));
    create_zone(&store, dir.path(), "t.test.", Managed::Store);
    add_records(&store, "t.test.", "", 200, 0);
    let txt: Vec<NewRecord> = (0..30)
        .map(|i| NewRecord {
            name: name(&format!("x{i}.t.test.")),
            ttl: 60,
            data: RData::TXT(TXT::new(vec![format!("v{i}")])),
            tags: vec![TAG.into()],
        })
        .collect();
    store
        .apply_blocking(
            &name("t.test."),
            Change {
                add: txt,
                delete: Vec::new(),
            },
        )
        .unwrap();
    let h = Harness::new(&store, settings(64));
    // Everything was updated just now: nothing was updated before an hour ago.
    let s = h.run(PurgeSpec {
        updated_before: Some(schema::now() - 3600),
        ..PurgeSpec::tag(TAG)
    });
    assert_eq!(
        (s.total, s.processed, s.deleted, s.skipped),
        (230, 230, 0, 0)
    );
    let s = h.run(PurgeSpec {
        rtype: Some("txt".into()),
        ..PurgeSpec::tag(TAG)
    });
    assert_eq!((s.total, s.processed, s.deleted), (30, 30, 30));
    assert_eq!(tagged(&store, TAG), 200);
    let s = h.run(PurgeSpec {
        updated_before: Some(schema::now() + 10),
        ..PurgeSpec::tag(TAG)
    });
    assert_eq!((s.total, s.deleted), (200, 200));
    assert_check(&store);
}

#[test]
fn shutdown_stops_between_batches_and_a_rerun_finishes() {
    let dir = TempDir::new("purge-cancel");
    let store = open(&dir.path().join("data"));
    create_zone(&store, dir.path(), "c.test.", Managed::Store);
    add_records(&store, "c.test.", "", 5000, 100);
    let before = total_records(&store);
    let h = Harness::new(&store, settings(10));
    let started = h.jobs.start_purge(PurgeSpec::tag(TAG)).unwrap();
    let (s, _) = h.wait(started.id, |s| {
        if s.deleted > 0 {
            h.token.cancel();
        }
    });
    assert_eq!(s.state, JobState::Cancelled, "{s:?}");
    assert!(s.deleted > 0 && s.deleted < 5000, "{s:?}");
    assert_eq!(s.deleted % 10, 0);
    assert_eq!(before - total_records(&store), s.deleted);
    assert_eq!(s.eta_secs, None);
    let err = h.jobs.start_purge(PurgeSpec::tag(TAG)).unwrap_err();
    assert!(matches!(err, JobError::ShuttingDown));
    assert_check(&store);

    let h2 = Harness::new(&store, settings(1000));
    let rest = h2.run(PurgeSpec::tag(TAG));
    assert_eq!(rest.state, JobState::Done);
    assert_eq!(rest.deleted, 5000 - s.deleted);
    assert_eq!(before - total_records(&store), 5000);
    assert_check(&store);
}

#[test]
fn the_served_zone_follows_the_purge() {
    let dir = TempDir::new("purge-served");
    let seed = dir.path().join("s.test.zone");
    fs::write(&seed, zone_text(10)).unwrap();
    let config = dir.path().join("muninn.toml");
    fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n[zones]\ndirectory = \"\"\n\
             [[zones.zone]]\nname = \"s.test.\"\nfile = \"{}\"\nmanaged = \"store\"\n",
            seed.display()
        ),
    )
    .unwrap();
    let zones = Arc::new(ArcSwap::from_pointee(ZoneSet::new()));
    let mut loader = ZoneLoader::new(Some(config), Overrides::default(), zones.clone());
    let h_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let report = h_rt.block_on(loader.reload()).unwrap();
    assert_eq!(report.failed(), 0, "{report:?}");
    let store = loader.store().unwrap().clone();
    add_records(&store, "s.test.", "", 2000, 300);
    let serial_before = meta(&store, "s.test.").0;
    let served = || {
        zones
            .load()
            .get(&LowerName::new(&name("s.test.")))
            .cloned()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while served().serial() != serial_before {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(served().record_count() as u64, BASE + 2300);

    let h = Harness::new(&store, settings(256));
    let s = h.run(PurgeSpec::tag(TAG));
    assert_eq!((s.state, s.deleted), (JobState::Done, 2000));
    let serial = meta(&store, "s.test.").0;
    assert_eq!(serial, serial_before + 8);
    while served().serial() != serial {
        assert!(Instant::now() < deadline, "the purge was never served");
        std::thread::sleep(Duration::from_millis(5));
    }
    let zone = served();
    assert_eq!(zone.record_count() as u64, BASE + 300);
    assert!(
        zone.rrset_records(&name("t7.s.test."), RecordType::A)
            .is_empty()
    );
    assert_eq!(
        zone.rrset_records(&name("u7.s.test."), RecordType::A).len(),
        1
    );
    drop(h);
    drop(loader);
    h_rt.shutdown_timeout(Duration::from_secs(1));
}

// ---------------------------------------------------------------------------------------------
// The offline command and kill -9
// ---------------------------------------------------------------------------------------------

#[test]
fn db_purge_command_dry_run_and_purge() {
    let dir = TempDir::new("purge-cli");
    let data = dir.path().join("data");
    {
        let store = open(&data);
        create_zone(&store, dir.path(), "k.test.", Managed::Store);
        add_records(&store, "k.test.", "", 1500, 10);
        tag_soa(&store, "k.test.");
    }
    let (code, out, err) = muninn_cmd(&["db", "purge", "--tag", TAG, "--dry-run"], &data);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out,
        "dry run, tag purge=me: 1500 records would be deleted, 1 skipped, 1501 processed of 1501; nothing changed\n\
         skipped 1 in k.test.: the SOA record is never deleted (RFC 1035 §5.2)\n"
    );
    let (code, out, err) = muninn_cmd(
        &[
            "db",
            "purge",
            "--tag",
            TAG,
            "--zone",
            "k.test",
            "--batch-size",
            "100",
        ],
        &data,
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(
            "purged tag purge=me: 1500 deleted, 1 skipped, 1501 processed of 1501, in "
        ),
        "{out}"
    );
    let (code, out, err) = muninn_cmd(&["db", "check"], &data);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("zone k.test.: store-managed, serial 118, 15 records"),
        "{out}"
    );
    let (code, out, err) = muninn_cmd(&["db", "purge", "--tag", "nokey"], &data);
    assert_eq!(code, Some(1));
    assert!(out.is_empty());
    assert!(err.contains("bad tag \"nokey\""), "{err}");
}

const CRASH_ROUNDS: usize = 20;
const CRASH_BATCH: u64 = 250;
const CRASH_POOL: u32 = 20_000;

/// Tops the tagged pool of `x.test.` back up to [`CRASH_POOL`] records when it ran low,
/// with names not used before (`r<round>-t<i>`).
fn refill(data: &Path, round: usize) {
    let store = open(data);
    let left = tagged(&store, TAG) as u32;
    if left < CRASH_POOL / 4 {
        add_records(
            &store,
            "x.test.",
            &format!("r{round}-"),
            CRASH_POOL - left,
            0,
        );
    }
}

#[test]
fn kill_9_during_db_purge_leaves_a_consistent_store_and_a_rerun_finishes() {
    let dir = TempDir::new("purge-crash");
    let data = dir.path().join("data");
    {
        let store = open(&data);
        create_zone(&store, dir.path(), "x.test.", Managed::Store);
        add_records(&store, "x.test.", "", 0, 3000);
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("rng seed {seed}");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let (mut killed_mid_purge, mut finished) = (0, 0);
    // How long to let a purge run before the kill: adapted to this machine and build, so
    // that most kills land mid-purge (halved whenever a purge finished first).
    let mut window_ms = 1000u64;
    for round in 0..CRASH_ROUNDS {
        refill(&data, round);
        let (serial0, count0, tagged0) = {
            let store = open(&data);
            let (s, c, _) = meta(&store, "x.test.");
            (s, c, tagged(&store, TAG))
        };
        let mut purge = KillOnDrop(
            Command::new(BIN)
                .args(["db", "purge", "--tag", TAG, "--batch-size"])
                .arg(CRASH_BATCH.to_string())
                .arg("--data-dir")
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        std::thread::sleep(Duration::from_millis(20 + rng.next() % window_ms));
        match purge.0.try_wait().unwrap() {
            Some(_) => {
                finished += 1;
                window_ms = (window_ms / 2).max(20);
            }
            None => killed_mid_purge += 1,
        }
        let _ = purge.0.kill();
        let _ = purge.0.wait();

        let (code, out, err) = muninn_cmd(&["db", "check"], &data);
        assert_eq!(code, Some(0), "round {round}: db check failed:\n{out}{err}");
        // Exact: every committed batch deleted CRASH_BATCH records (the last one the rest),
        // bumped the serial by one, and nothing else changed.
        let store = open(&data);
        let (serial, count, _) = meta(&store, "x.test.");
        let batches = u64::from(serial.wrapping_sub(serial0));
        let deleted = (CRASH_BATCH * batches).min(tagged0);
        assert_eq!(count0 - count, deleted, "round {round}: {batches} batches");
        assert_eq!(tagged(&store, TAG), tagged0 - deleted, "round {round}");
        assert_eq!(tagged(&store, "keep=yes"), 1500, "round {round}");
    }
    // A rerun finishes the job.
    let tagged_left = tagged(&open(&data), TAG);
    let (code, out, err) = muninn_cmd(&["db", "purge", "--tag", TAG], &data);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with(&format!(
            "purged tag {TAG}: {tagged_left} deleted, 0 skipped"
        )),
        "{out}"
    );
    let store = open(&data);
    assert_eq!(tagged(&store, TAG), 0);
    assert_eq!(meta(&store, "x.test.").1, BASE + 3000);
    assert_check(&store);
    eprintln!(
        "{CRASH_ROUNDS} rounds in {:?}: {killed_mid_purge} killed mid-purge, {finished} finished first",
        started.elapsed()
    );
    assert!(
        killed_mid_purge >= CRASH_ROUNDS / 2,
        "the purge was rarely killed while running"
    );
}

#[test]
fn metrics_show_store_and_purge_figures() {
    let dir = TempDir::new("purge-metrics");
    let store = open(&dir.path().join("data"));
    create_zone(&store, dir.path(), "m.test.", Managed::Store);
    add_records(&store, "m.test.", "", 900, 100);
    let published_before = store
        .stats()
        .published
        .load(std::sync::atomic::Ordering::Relaxed);
    // A consumer that has not read the purge's events yet: the stream keeps them for it.
    let pending = store.subscribe("pending");
    let metrics = muninn::metrics::Metrics::new(Arc::new(ArcSwap::from_pointee(ZoneSet::new())));
    let h = Harness::new(&store, settings(300));
    metrics.set_store(store.clone());
    metrics.set_purge_jobs(h.jobs.clone());
    let s = h.run(PurgeSpec::tag(TAG));
    assert_eq!((s.state, s.deleted, s.batches), (JobState::Done, 900, 3));
    let cancelled = {
        let h2 = Harness::new(&store, settings(300));
        metrics.set_purge_jobs(h2.jobs.clone()); // set once: ignored
        h2.token.cancel();
        h2.jobs.start_purge(PurgeSpec::tag(TAG)).is_err()
    };
    assert!(cancelled);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
    };
    assert_eq!(value("muninn_purge_records_deleted_total"), 900.0);
    assert_eq!(value("muninn_purge_batches_total"), 3.0);
    // No pause unless a query worker waited (another test of this process may fake one).
    let braked = value("muninn_purge_braked_seconds_total");
    assert!((braked - s.braked_secs).abs() < 1e-6, "{braked} {s:?}");
    assert_eq!(value("muninn_purge_jobs_running"), 0.0);
    assert_eq!(value("muninn_purge_jobs_total{state=\"done\"}"), 1.0);
    assert_eq!(value("muninn_purge_jobs_total{state=\"failed\"}"), 0.0);
    assert_eq!(
        value("muninn_store_events_published_total"),
        published_before as f64 + 3.0
    );
    let size = fs::metadata(store.path()).unwrap().len() as f64;
    assert_eq!(value("muninn_store_file_bytes"), size);
    let retained = store
        .stats()
        .retained_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(retained > 300 * 50, "{retained} bytes for 3 batches of 300");
    assert_eq!(value("muninn_store_events_retained_bytes"), retained as f64);
    assert_eq!(value("muninn_store_events_retained"), 3.0);
    assert_eq!(
        value("muninn_store_events_retained_limit_bytes"),
        16.0 * 1024.0 * 1024.0
    );
    assert_eq!(value("muninn_store_events_retained_limit"), 1024.0);
    assert_eq!(value("muninn_store_stream_resyncs_total"), 0.0);
    assert_eq!(value("muninn_store_stream_skipped_events_total"), 0.0);
    assert_eq!(
        value("muninn_store_changes_seen_total{kind=\"update\"}"),
        0.0
    );
    drop(pending);
    assert_eq!(
        store
            .stats()
            .retained_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// The brake (`[store] purge_worker_wait_budget_us`): a purge never pauses while no query
/// worker waits for a CPU, pauses while one does, and still finishes.
#[test]
fn purge_pauses_only_while_a_query_worker_waits_for_a_cpu() {
    let dir = TempDir::new("purge-brake");
    let store = open(&dir.path().join("data"));
    create_zone(&store, dir.path(), "k.test.", Managed::Store);
    add_records(&store, "k.test.", "a", 2000, 0);
    add_records(&store, "k.test.", "b", 2000, 0);
    // Few batches: a braked one may be followed by a pause of up to a second.
    let h = Harness::new(&store, settings(500));

    // No thread of this process is a query worker: no pause.
    let s = h.run(PurgeSpec::tag("grp=0"));
    assert_eq!((s.state, s.deleted), (JobState::Done, 572), "{s:?}");
    assert_eq!(s.braked_secs, 0.0, "{s:?}");

    // A query worker kept waiting for its CPU: the purge pauses.
    let waiting = common::WaitingWorker::start();
    let s = h.run(PurgeSpec::tag(TAG));
    drop(waiting);
    assert_eq!((s.state, s.deleted), (JobState::Done, 4000 - 572), "{s:?}");
    assert!(s.braked_secs > 0.0, "{s:?}");
    assert!(s.braked_secs < s.elapsed_secs, "{s:?}");
    assert_check(&store);
}
