//! The zone load path: a changed zone is served before its store import runs, a restart
//! reads the zone image, a missing, stale or damaged image falls back to the store and still
//! serves the right zone, a crash (kill -9) mid-import restarts from the file, and reloads
//! that arrive while an import runs end with the newest version stored. A store-managed zone
//! changed through the admin API restarts from the image written after its compaction, and
//! never from an image older than its last change.

mod admin_harness;
mod common;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use admin_harness::AdminServer;
use arc_swap::ArcSwap;
use common::{DataServer as Server, QueryOpts, TempDir, open_store, query};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RData, RecordType};
use muninn::config::Overrides;
use muninn::reload::{LoadedFrom, ZoneLoader, ZoneOutcome};
use muninn::runtime::Runtimes;
use muninn::store::Fingerprint;
use muninn::zone::ZoneSet;

const BIN: &str = env!("CARGO_BIN_EXE_muninn");

/// A zone with `hosts` hosts `hN` (A 10.x.y.z), a delegation and a wildcard.
fn zone_text(serial: u32, hosts: u32, www: &str) -> String {
    let mut t = format!(
        "$TTL 300\n\
         @ IN SOA ns1 hostmaster {serial} 3600 600 86400 120\n\
         @ IN NS ns1\n\
         ns1 IN A 192.0.2.53\n\
         www IN A {www}\n\
         *.wild IN A 192.0.2.99\n\
         sub IN NS ns.sub\n\
         ns.sub IN A 192.0.2.54\n"
    );
    for i in 0..hosts {
        let _ = writeln!(t, "h{i} IN A 10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
    }
    t
}

/// Test-specific queries on the shared server guard.
impl Server {
    fn sighup(&self) {
        self.signal("-HUP");
    }

    /// rcode and A answers for `qname`.
    fn a(&self, qname: &str) -> (ResponseCode, Vec<String>) {
        let resp = query(self.addr, qname, RecordType::A, &QueryOpts::default());
        let answers = resp.answers.iter().map(|r| r.data.to_string()).collect();
        (resp.metadata.response_code, answers)
    }

    fn serial(&self) -> u32 {
        let soa = query(self.addr, "r.test.", RecordType::SOA, &QueryOpts::default());
        match soa.answers.first().map(|r| &r.data) {
            Some(RData::SOA(s)) => s.serial,
            other => panic!("no SOA: {other:?}"),
        }
    }

    /// The answers that show the zone is the expected version, and whole.
    fn assert_serves(&self, serial: u32, www: &str, hosts: u32) {
        assert_eq!(self.serial(), serial, "{}", self.log());
        let ok = |ip: &str| (ResponseCode::NoError, vec![ip.to_string()]);
        assert_eq!(self.a("www.r.test."), ok(www));
        let last = hosts - 1;
        assert_eq!(
            self.a(&format!("h{last}.r.test.")),
            ok(&format!(
                "10.{}.{}.{}",
                last >> 16,
                (last >> 8) & 255,
                last & 255
            ))
        );
        assert_eq!(self.a("x.wild.r.test."), ok("192.0.2.99"));
        assert_eq!(
            self.a(&format!("h{hosts}.r.test.")),
            (ResponseCode::NXDomain, vec![])
        );
        // A referral: no answer, NS + glue below.
        let resp = query(
            self.addr,
            "a.sub.r.test.",
            RecordType::A,
            &QueryOpts::default(),
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert!(resp.answers.is_empty());
        assert_eq!(resp.authorities.len(), 1);
        assert_eq!(resp.additionals.len(), 1);
    }
}

fn loaded_from(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("zone loaded zone=r.test."))
        .filter_map(|l| l.split("from=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

fn image_file(data: &Path) -> PathBuf {
    let dir = data.join("images");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.pop().unwrap()
}

#[test]
fn restart_reads_the_image_and_a_missing_stale_or_damaged_one_falls_back_to_the_store() {
    const HOSTS: u32 = 2000;
    let dir = TempDir::new("restart-image");
    let zones = dir.path().join("zones");
    let data = dir.path().join("data");
    fs::create_dir_all(&zones).unwrap();
    let file = zones.join("r.test.zone");
    fs::write(&file, zone_text(10, HOSTS, "192.0.2.1")).unwrap();
    let log = |n: &str| dir.path().join(format!("{n}.log"));

    // First start: parsed and served; the import and the image follow. A graceful stop
    // right away waits for them.
    let s = Server::start(&zones, &data, log("1"));
    s.assert_serves(10, "192.0.2.1", HOSTS);
    let out = s.stop();
    assert_eq!(loaded_from(&out), ["file"], "{out}");
    assert!(out.contains("zone imported into the store"), "{out}");
    assert!(out.contains("zone image written"), "{out}");
    let v10_image = fs::read(image_file(&data)).unwrap();

    // Restart: the zone comes from its image, nothing is parsed or built.
    let s = Server::start(&zones, &data, log("2"));
    s.assert_serves(10, "192.0.2.1", HOSTS);
    let out = s.stop();
    assert_eq!(loaded_from(&out), ["image"], "{out}");
    assert!(!out.contains("zone image written"), "{out}");

    // Damaged image (one flipped byte in the tables): refused, the zone is built from the
    // store and the image is written again.
    let path = image_file(&data);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    let mut s = Server::start(&zones, &data, log("3"));
    s.assert_serves(10, "192.0.2.1", HOSTS);
    s.wait_for("zone image written", 0);
    let out = s.stop();
    assert!(
        out.contains("zone image not used") && out.contains("reason=\"damaged\""),
        "{out}"
    );
    assert_eq!(loaded_from(&out), ["store"], "{out}");

    // A new version of the file (SIGHUP): served, imported, imaged.
    let mut s = Server::start(&zones, &data, log("4"));
    assert_eq!(loaded_from(&s.log()), ["image"]);
    fs::write(&file, zone_text(11, HOSTS, "192.0.2.77")).unwrap();
    s.sighup();
    s.wait_for("zone image written", 0);
    s.assert_serves(11, "192.0.2.77", HOSTS);
    let out = s.stop();
    assert_eq!(loaded_from(&out), ["image", "file"], "{out}");

    // Stale image (the one of serial 10, made from an older store state): refused; the
    // store's version (serial 11) is served, never the image's.
    fs::write(&path, &v10_image).unwrap();
    let mut s = Server::start(&zones, &data, log("5"));
    s.assert_serves(11, "192.0.2.77", HOSTS);
    s.wait_for("zone image written", 0);
    let out = s.stop();
    assert!(
        out.contains("zone image not used") && out.contains("reason=\"stale\""),
        "{out}"
    );
    assert_eq!(loaded_from(&out), ["store"], "{out}");

    // Missing image: built from the store, image written again. The temporary file of an
    // image write that a crash interrupted is removed at start.
    fs::remove_file(&path).unwrap();
    let leftover = path.with_file_name("zone-1.zimg.tmp.999999.0");
    fs::write(&leftover, b"half an image").unwrap();
    let mut s = Server::start(&zones, &data, log("6"));
    s.assert_serves(11, "192.0.2.77", HOSTS);
    s.wait_for("zone image written", 0);
    let out = s.stop();
    assert!(
        out.contains("no zone image; building from the store"),
        "{out}"
    );
    assert_eq!(loaded_from(&out), ["store"], "{out}");
    assert!(out.contains("removed an unfinished zone image"), "{out}");
    assert!(!leftover.exists());

    let s = Server::start(&zones, &data, log("7"));
    s.assert_serves(11, "192.0.2.77", HOSTS);
    assert_eq!(loaded_from(&s.stop()), ["image"]);
}

/// Serial and fingerprint stored for `zone`, read with a fresh open.
fn stored(data: &Path, zone: &str) -> Option<(u32, Option<Fingerprint>)> {
    open_store(data)
        .zone_meta(&Name::from_ascii(zone).unwrap())
        .unwrap()
        .map(|m| (m.serial, m.fingerprint))
}

#[test]
fn a_crash_mid_import_restarts_from_the_file() {
    let dir = TempDir::new("restart-crash");
    let zones = dir.path().join("zones");
    let data = dir.path().join("data");
    fs::create_dir_all(&zones).unwrap();
    let file = zones.join("r.test.zone");
    let log = |n: String| dir.path().join(format!("{n}.log"));

    // v1 stored completely.
    fs::write(&file, zone_text(1, 100, "192.0.2.1")).unwrap();
    Server::start(&zones, &data, log("v1".into())).stop();
    assert_eq!(stored(&data, "r.test.").unwrap().0, 1);

    // v2 is large enough that its import takes a while; kill -9 once it started and before
    // it committed. If an import was quicker than the kill, try again with a larger zone.
    let mut hosts = 40_000u32;
    let mut killed_mid_import = false;
    for round in 0..4 {
        fs::write(&file, zone_text(2 + round, hosts, "192.0.2.2")).unwrap();
        let mut s = Server::start(&zones, &data, log(format!("crash{round}")));
        s.wait_for("zone import into the store started", 0);
        let out = s.crash();
        assert_eq!(loaded_from(&out), ["file"], "{out}");
        if !out.contains("zone imported into the store") {
            eprintln!("killed mid-import of {hosts} hosts (round {round})");
            killed_mid_import = true;
            break;
        }
        hosts *= 2;
    }
    assert!(killed_mid_import, "every import finished before the kill");
    // The stored zone and its fingerprint are still those of an earlier complete version.
    let (serial, fp) = stored(&data, "r.test.").unwrap();
    assert_ne!(fp, Some(Fingerprint::of(&file).unwrap()));
    let served_serial = {
        let text = fs::read_to_string(&file).unwrap();
        text.lines()
            .find(|l| l.contains("SOA"))
            .and_then(|l| l.split_whitespace().nth(5))
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    assert_ne!(serial, served_serial);

    // Restart: the file is parsed again (the store did not claim it), served, then stored
    // (waited for here: a debug build on a busy machine may need more than the grace
    // period a stop gives the import).
    let mut s = Server::start(&zones, &data, log("after".into()));
    s.assert_serves(served_serial, "192.0.2.2", hosts);
    s.wait_for("zone image written", 0);
    let out = s.stop();
    assert_eq!(loaded_from(&out), ["file"], "{out}");
    assert!(out.contains("zone image written"), "{out}");
    let (serial, fp) = stored(&data, "r.test.").unwrap();
    assert_eq!(serial, served_serial);
    assert_eq!(fp, Some(Fingerprint::of(&file).unwrap()));

    let out = Command::new(BIN)
        .args(["db", "check", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let s = Server::start(&zones, &data, log("last".into()));
    s.assert_serves(served_serial, "192.0.2.2", hosts);
    assert_eq!(loaded_from(&s.stop()), ["image"]);
}

fn runtimes() -> Runtimes {
    Runtimes::build(&muninn::config::RuntimeConfig {
        workers: 1,
        heavy_workers: 2,
        ..muninn::config::RuntimeConfig::default()
    })
    .unwrap()
}

#[test]
fn reloads_during_an_import_are_served_at_once_and_the_newest_version_is_stored() {
    let dir = TempDir::new("restart-queue");
    let zones_dir = dir.path().join("zones");
    fs::create_dir_all(&zones_dir).unwrap();
    let file = zones_dir.join("r.test.zone");
    let config = dir.path().join("muninn.toml");
    fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[zones]\ndirectory = \"{}\"\n",
            dir.path().join("data").display(),
            zones_dir.display()
        ),
    )
    .unwrap();
    let rt = runtimes();
    let zones = Arc::new(ArcSwap::from_pointee(ZoneSet::new()));
    let mut loader = ZoneLoader::new(Some(config), Overrides::default(), Arc::clone(&zones));
    let key = LowerName::new(&Name::from_ascii("r.test.").unwrap());
    let served = |zones: &ArcSwap<ZoneSet>| zones.load().get(&key).map(|z| z.serial());

    // Three versions in quick succession: each reload publishes its version before its
    // import; the imports queue behind one another (or are superseded while queued).
    const VERSIONS: u32 = 3;
    for v in 1..=VERSIONS {
        fs::write(&file, zone_text(v, 20_000, &format!("192.0.2.{v}"))).unwrap();
        let report = rt.heavy.block_on(loader.reload()).unwrap();
        assert_eq!(report.zones.len(), 1);
        assert_eq!(report.zones[0].from, Some(LoadedFrom::File));
        assert!(matches!(
            report.zones[0].outcome,
            ZoneOutcome::Added | ZoneOutcome::Changed
        ));
        assert_eq!(served(&zones), Some(v));
    }
    rt.heavy.block_on(loader.imports().settled(None));
    let stats = Arc::clone(loader.stats());
    let done = stats.imports_done.load(Ordering::Relaxed);
    let superseded = stats.imports_superseded.load(Ordering::Relaxed);
    eprintln!("{done} imports done, {superseded} superseded");
    assert_eq!(done + superseded, u64::from(VERSIONS), "{stats:?}");
    assert_eq!(stats.imports_failed.load(Ordering::Relaxed), 0);

    // The store holds the newest version, with its fingerprint, record for record.
    let store = loader.store().unwrap().clone();
    let origin = Name::from_ascii("r.test.").unwrap();
    let meta = store.zone_meta(&origin).unwrap().unwrap();
    assert_eq!(meta.serial, VERSIONS);
    assert_eq!(meta.fingerprint, Some(Fingerprint::of(&file).unwrap()));
    let (built, _) = store.build_zone(&origin).unwrap();
    let current = zones.load().get(&key).cloned().unwrap();
    let sets = |z: &muninn::zone::Zone| {
        let mut v: Vec<String> = z.rrsets().map(|s| format!("{s:?}")).collect();
        v.sort();
        v
    };
    assert_eq!(sets(&built), sets(&current));
    // The image written last is that of the stored state.
    let image = store.load_image(&meta).unwrap();
    assert_eq!(sets(&image), sets(&current));

    // An unchanged file on the next reload: nothing parsed, nothing imported.
    let report = rt.heavy.block_on(loader.reload()).unwrap();
    assert_eq!(report.zones[0].outcome, ZoneOutcome::Unchanged);
    assert_eq!(loader.imports().outstanding(), 0);
    drop(store);
    drop(loader);
    rt.shutdown();
}

const RECORDS: &str = "/v1/zones/example.test./records";

/// One API write to the store-managed zone, checked: 200 and the serial it moved to.
fn change(s: &AdminServer, method: &str, body: &str, old: u32, new: u32) {
    let r = s.call(method, RECORDS, Some(body));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (
            r.json()["old_serial"].as_u64(),
            r.json()["new_serial"].as_u64()
        ),
        (Some(u64::from(old)), Some(u64::from(new))),
        "{r:?}"
    );
    s.wait_serial("example.test.", new);
}

/// A whole response as text: rcode, AA, then every record of every section in order.
fn full(resp: &Message) -> Vec<String> {
    let mut out = vec![format!(
        "{:?} aa={}",
        resp.metadata.response_code, resp.metadata.authoritative
    )];
    for (section, records) in [
        ("an", &resp.answers),
        ("ns", &resp.authorities),
        ("ar", &resp.additionals),
    ] {
        for r in records {
            out.push(format!(
                "{section} {} {} {} {}",
                r.name,
                r.ttl,
                r.record_type(),
                r.data
            ));
        }
    }
    out
}

fn ask(s: &AdminServer, qname: &str, rtype: RecordType) -> Vec<String> {
    full(&query(s.dns, qname, rtype, &QueryOpts::default()))
}

/// Number of image writes of the store-managed zone in a log.
fn zone_images_written(log: &str) -> usize {
    log.matches("zone image written zone=example.test.").count()
}

fn example_loaded_from(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("zone loaded zone=example.test."))
        .filter_map(|l| l.split("from=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

/// The answers that show every change of the first test (serial 13) and nothing else.
fn assert_changed_zone(s: &AdminServer) {
    const SOA: &str =
        "ns example.test. 300 SOA ns1.example.test. hostmaster.example.test. 13 3600 600 86400 300";
    assert_eq!(
        ask(s, "example.test.", RecordType::SOA),
        [
            "NoError aa=true",
            "an example.test. 300 SOA ns1.example.test. hostmaster.example.test. 13 3600 600 86400 300",
        ]
    );
    // Added (two types at a new name).
    assert_eq!(
        ask(s, "new.example.test.", RecordType::A),
        ["NoError aa=true", "an new.example.test. 60 A 192.0.2.7"]
    );
    assert_eq!(
        ask(s, "new.example.test.", RecordType::TXT),
        ["NoError aa=true", "an new.example.test. 60 TXT hello"]
    );
    // Replaced: the old address is gone, the TTL is the new one.
    assert_eq!(
        ask(s, "www.example.test.", RecordType::A),
        ["NoError aa=true", "an www.example.test. 120 A 192.0.2.9"]
    );
    // Deleted: the name no longer exists (RFC 2308 §3: SOA in the authority section, TTL
    // the minimum of its TTL and MINIMUM field).
    assert_eq!(
        ask(s, "alias.example.test.", RecordType::CNAME),
        ["NXDomain aa=true", SOA]
    );
    // Untouched data is still there.
    assert_eq!(
        ask(s, "ns1.example.test.", RecordType::A),
        ["NoError aa=true", "an ns1.example.test. 300 A 192.0.2.53"]
    );
}

#[test]
fn a_store_managed_zone_restarts_from_the_image_written_after_its_compaction() {
    let mut s = AdminServer::start();
    // The seed (serial 10) was imported from its file: no image of the zone yet.
    assert_eq!(example_loaded_from(&s.log()), ["file"]);
    change(
        &s,
        "POST",
        r#"{"records":[{"name":"new","type":"A","ttl":60,"data":"192.0.2.7"},{"name":"new","type":"TXT","ttl":60,"data":"hello"}]}"#,
        10,
        11,
    );
    change(
        &s,
        "POST",
        r#"{"records":[{"name":"www","type":"A","ttl":120,"data":"192.0.2.9"}],"replace":true}"#,
        11,
        12,
    );
    change(&s, "DELETE", r#"{"name":"alias"}"#, 12, 13);
    assert_changed_zone(&s);
    // The patched snapshot is compacted once the changes pause; its result is the zone as
    // stored, and its image follows.
    s.wait_for("zone image written zone=example.test.");
    assert_changed_zone(&s);

    let out = s.restart();
    assert_eq!(zone_images_written(&out), 1, "{out}");
    let log = s.log();
    assert_eq!(example_loaded_from(&log), ["image"], "{log}");
    assert_changed_zone(&s);
    // An image read at start is not written again.
    let out = s.restart();
    assert_eq!(zone_images_written(&out), 0, "{out}");
    assert_eq!(example_loaded_from(&s.log()), ["image"]);
    assert_changed_zone(&s);
}

#[test]
fn a_change_committed_after_the_image_is_served_after_a_restart_not_the_stale_image() {
    let mut s = AdminServer::start();
    change(
        &s,
        "POST",
        r#"{"records":[{"name":"www","type":"A","ttl":60,"data":"192.0.2.20"}],"replace":true}"#,
        10,
        11,
    );
    s.wait_for("zone image written zone=example.test.");
    // Committed and served, then a stop long before its compaction (5 s of no change).
    change(
        &s,
        "POST",
        r#"{"records":[{"name":"www","type":"A","ttl":60,"data":"192.0.2.21"}],"replace":true}"#,
        11,
        12,
    );
    let out = s.restart();
    assert_eq!(zone_images_written(&out), 1, "{out}");
    let log = s.log();
    assert_eq!(example_loaded_from(&log), ["store"], "{log}");
    assert!(
        log.contains("zone image not used") && log.contains("reason=\"stale\""),
        "{log}"
    );
    let www = ["NoError aa=true", "an www.example.test. 60 A 192.0.2.21"];
    assert_eq!(ask(&s, "www.example.test.", RecordType::A), www);
    assert_eq!(s.serial("example.test."), 12);

    // The start built the zone from the store and wrote its image: the next restart reads it.
    s.wait_for("zone image written zone=example.test.");
    s.restart();
    assert_eq!(example_loaded_from(&s.log()), ["image"]);
    assert_eq!(ask(&s, "www.example.test.", RecordType::A), www);
    assert_eq!(s.serial("example.test."), 12);
}
