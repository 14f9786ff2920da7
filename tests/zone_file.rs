//! Zone-file loader: syntax features, line-numbered errors, $INCLUDE confinement, and
//! agreement with Knot DNS on the same files (when knotd/knotc/kdig are installed).

use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use hickory_proto::serialize::txt::Parser;
use muninn::zone::Zone;
use muninn::zone::file::{ZoneFileError, check_zone, load_zone};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/zone_fixtures")
}

fn fx(p: &str) -> PathBuf {
    fixtures().join(p)
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn origin() -> Name {
    name("example.com.")
}

fn tmp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "muninn-zone-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `text` to a fresh temporary zone file.
fn temp_zone(text: &str) -> PathBuf {
    let p = tmp_dir().join("zone");
    std::fs::write(&p, text).unwrap();
    p
}

fn load_text(text: &str) -> Result<Zone, ZoneFileError> {
    let p = temp_zone(text);
    load_zone(&p, &origin(), p.parent().unwrap())
}

/// Comparable form of a record: owner (case kept), type, class, TTL, RDATA wire bytes.
type Key = (String, u16, u16, u32, Vec<u8>);

fn key(r: &Record) -> Key {
    (
        r.name.to_string(),
        u16::from(r.record_type()),
        u16::from(r.dns_class),
        r.ttl,
        r.data.to_bytes().unwrap(),
    )
}

fn all_records(zone: &Zone) -> Vec<Key> {
    let mut v: Vec<Key> = zone.records().map(|r| key(&r)).collect();
    v.sort();
    v
}

fn rrset(zone: &Zone, owner: &str, t: RecordType) -> Vec<Record> {
    zone.rrset_records(&name(owner), t)
}

fn one(zone: &Zone, owner: &str, t: RecordType) -> Record {
    let v = rrset(zone, owner, t);
    assert_eq!(v.len(), 1, "{owner} {t}: {v:?}");
    v.into_iter().next().unwrap()
}

/// Errors as "file-name:line: message".
fn short_errors(errors: &[muninn::zone::file::ZoneError]) -> Vec<String> {
    errors
        .iter()
        .map(|e| {
            let f = e
                .file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!("{f}:{}: {}", e.line, e.message)
        })
        .collect()
}

fn assert_errors(got: &[String], expected: &[(&str, &str)]) {
    assert_eq!(got.len(), expected.len(), "errors: {got:#?}");
    for (g, (pos, msg)) in got.iter().zip(expected) {
        assert!(
            g.starts_with(&format!("{pos}: ")) && g.contains(msg),
            "got {g:?}, expected {pos}: ..{msg}..; all: {got:#?}"
        );
    }
}

#[test]
fn realistic_zone_parses_every_feature() {
    let zone = load_zone(&fx("good.zone"), &origin(), &fixtures()).unwrap();
    let soa = one(&zone, "example.com.", RecordType::SOA);
    assert_eq!(soa.ttl, 3600, "$TTL 1h");
    assert_eq!(
        soa.data,
        RData::SOA(SOA::new(
            name("ns1.example.com."),
            name("hostmaster.example.com."),
            2024010101,
            7200,
            3600,
            604800,
            300
        ))
    );
    let ns: Vec<RData> = rrset(&zone, "example.com.", RecordType::NS)
        .into_iter()
        .map(|r| r.data)
        .collect();
    assert_eq!(
        ns,
        vec![
            RData::NS(NS(name("ns1.example.com."))),
            RData::NS(NS(name("ns2.example.net.")))
        ]
    );
    assert_eq!(
        one(&zone, "example.com.", RecordType::MX).data,
        RData::MX(MX::new(10, name("mail.example.com.")))
    );
    // Owner inheritance after a blank: AAAA belongs to ns1.
    assert_eq!(
        one(&zone, "ns1.example.com.", RecordType::AAAA).data,
        RData::AAAA(AAAA("2001:db8::1".parse::<Ipv6Addr>().unwrap()))
    );
    // TTL and class in either order.
    let mail = one(&zone, "mail.example.com.", RecordType::A);
    assert_eq!((mail.ttl, mail.dns_class), (300, DNSClass::IN));
    assert_eq!(one(&zone, "www.example.com.", RecordType::A).ttl, 600);
    assert_eq!(
        one(&zone, "ftp.example.com.", RecordType::CNAME).data,
        RData::CNAME(CNAME(name("www.example.com.")))
    );
    // Quoted strings with spaces and ';', escapes, several strings kept apart.
    let RData::TXT(txt) = one(&zone, "txt.example.com.", RecordType::TXT).data else {
        panic!()
    };
    let parts: Vec<&[u8]> = txt.txt_data.iter().map(|b| &b[..]).collect();
    assert_eq!(
        parts,
        vec![&b"two words"[..], b"semi;colon", b"plain", b"\"q\"", b"AB"]
    );
    assert_eq!(
        one(&zone, "_sip._tcp.example.com.", RecordType::SRV).data,
        RData::SRV(SRV::new(10, 60, 5060, name("sip.example.com.")))
    );
    assert_eq!(
        one(&zone, "ptr.example.com.", RecordType::PTR).data,
        RData::PTR(PTR(name("www.example.com.")))
    );
    // `\.` inside a label.
    let esc = Name::from_labels(vec![&b"esc.dot"[..], b"example", b"com"]).unwrap();
    assert!(zone.node(&LowerName::new(&esc)).is_some());
    assert_eq!(
        zone.rrset_records(&esc, RecordType::A)[0].data,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 9)))
    );
    assert_eq!(
        one(&zone, "*.wild.example.com.", RecordType::A).data,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 10)))
    );
    // RFC 3597: unknown type kept as opaque data; generic form of a known type made typed.
    let unk = one(&zone, "unk.example.com.", RecordType::Unknown(65400));
    assert_eq!(unk.data.to_bytes().unwrap(), vec![10, 0, 0, 1]);
    assert_eq!(
        one(&zone, "gen.example.com.", RecordType::A).data,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 99)))
    );
    // Types without a hickory struct are stored in wire form, names resolved against $ORIGIN.
    let dn = one(&zone, "dn.example.com.", RecordType::DNAME);
    assert_eq!(dn.data.to_bytes().unwrap(), b"\x07example\x03net\x00");
    let kx = one(&zone, "kx.example.com.", RecordType::Unknown(36));
    assert_eq!(
        kx.data.to_bytes().unwrap(),
        b"\x00\x0a\x04mail\x07example\x03com\x00"
    );
    let ds = one(&zone, "sub.example.com.", RecordType::DS);
    assert_eq!(
        ds.data.to_bytes().unwrap().len(),
        4 + 32,
        "digest split over lines and parentheses"
    );
    // $INCLUDE, with and without an origin; the includer's origin is restored afterwards.
    assert_eq!(
        one(&zone, "host2.example.com.", RecordType::A).data,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 102)))
    );
    assert_eq!(
        one(&zone, "other.example.com.", RecordType::A).data,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 200)))
    );
    assert_eq!(
        one(&zone, "x.other.example.com.", RecordType::A).data,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 201)))
    );
    assert_eq!(
        one(&zone, "after.example.com.", RecordType::A).data,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 99)))
    );
    assert_eq!(zone.record_count(), all_records(&zone).len());
    assert_eq!(zone.record_count(), 31);
}

#[test]
fn agrees_with_hickory_parser_where_it_has_support() {
    let text = "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1 hostmaster ( 1 7200 3600\n 1209600 300 ) ; c\n\
        @ NS ns1\n  NS ns2.example.net.\n@ MX 10 mail\nns1 A 192.0.2.1\n AAAA 2001:db8::1\n\
        mail 60 IN A 192.0.2.2\nwww IN 120 CNAME ns1\nt TXT \"a b\" c \"d;e\"\n_s._tcp SRV 1 2 3 t\np PTR www\n";
    let ours = all_records(&load_text(text).unwrap());
    let (_, sets) = Parser::new(text, None, Some(origin())).parse().unwrap();
    let mut theirs: Vec<Key> = sets
        .values()
        .flat_map(|s| s.records_without_rrsigs().map(key))
        .collect();
    theirs.sort();
    // hickory lowercases names (IDNA); our names keep case, all lowercase here anyway.
    assert_eq!(ours, theirs);
}

#[test]
fn ttl_default_follows_knot() {
    // No $TTL: Knot gives 3600 to records without TTL, not the previous TTL, not SOA MINIMUM.
    let zone = load_zone(&fx("nottl.zone"), &origin(), &fixtures()).unwrap();
    assert_eq!(one(&zone, "example.com.", RecordType::SOA).ttl, 3600);
    assert_eq!(one(&zone, "a.example.com.", RecordType::A).ttl, 100);
    assert_eq!(one(&zone, "b.example.com.", RecordType::A).ttl, 3600);
    // With $TTL (units) the default changes mid-file.
    let zone = load_text(
        "@ SOA ns host 1 2 3 4 5\n@ NS ns\n$TTL 1h30m\nns A 192.0.2.1\n$TTL 1w\nx A 192.0.2.2\n",
    )
    .unwrap();
    assert_eq!(one(&zone, "ns.example.com.", RecordType::A).ttl, 5400);
    assert_eq!(one(&zone, "x.example.com.", RecordType::A).ttl, 604800);
}

#[test]
fn rfc3597_forms() {
    let zone = load_text(
        "@ CLASS1 SOA ns host 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n\
         a TYPE1 192.0.2.2\nb A \\# 4 C0 00 02 03\nm MX \\# 6 000A 026D7800\ne TYPE65400 \\# 0\n",
    )
    .unwrap();
    assert_eq!(
        one(&zone, "a.example.com.", RecordType::A).data,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 2)))
    );
    assert_eq!(
        one(&zone, "b.example.com.", RecordType::A).data,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 3)))
    );
    assert_eq!(
        one(&zone, "m.example.com.", RecordType::MX).data,
        RData::MX(MX::new(10, name("mx.")))
    );
    assert!(
        one(&zone, "e.example.com.", RecordType::Unknown(65400))
            .data
            .to_bytes()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn escapes_in_names_and_strings_are_decimal() {
    let zone = load_text("@ SOA ns host 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n\\065b\\.c A 192.0.2.4\nt TXT \"x\\059y\\\"z\" a\\ b\n").unwrap();
    let n = Name::from_labels(vec![&b"Ab.c"[..], b"example", b"com"]).unwrap();
    assert!(zone.node(&LowerName::new(&n)).is_some());
    let RData::TXT(txt) = one(&zone, "t.example.com.", RecordType::TXT).data else {
        panic!()
    };
    assert_eq!(&txt.txt_data[0][..], b"x;y\"z");
    assert_eq!(&txt.txt_data[1][..], b"a b");
}

#[test]
fn semantic_errors_are_all_reported_with_lines() {
    let errors = check_zone(&fx("semantic.zone"), &origin(), &fixtures());
    assert_errors(
        &short_errors(&errors),
        &[
            ("semantic.zone:3", "no NS records at the zone apex"),
            ("semantic.zone:6", "CNAME and other data at c.example.com."),
            (
                "semantic.zone:8",
                "more than one CNAME record at c2.example.com.",
            ),
            ("semantic.zone:9", "out-of-zone data: x.example.org."),
            (
                "semantic.zone:13",
                "MX record mx.sub.example.com. is below delegation point sub.example.com.",
            ),
            (
                "semantic.zone:14",
                "TXT record at delegation point sub.example.com.",
            ),
            (
                "semantic.zone:17",
                "A record y.d.example.com. is below the DNAME at d.example.com.",
            ),
            ("semantic.zone:18", "more than one SOA record"),
            (
                "semantic.zone:19",
                "SOA record at other.example.com. is not at the zone apex",
            ),
        ],
    );
    // load_zone refuses with the same list, one error per line.
    let err = load_zone(&fx("semantic.zone"), &origin(), &fixtures()).unwrap_err();
    assert_eq!(err.to_string().lines().count(), 9);
    assert!(
        err.to_string()
            .lines()
            .next()
            .unwrap()
            .ends_with("semantic.zone:3: no NS records at the zone apex example.com.")
    );
}

#[test]
fn syntax_errors_are_all_reported_with_lines() {
    let errors = check_zone(&fx("syntax.zone"), &origin(), &fixtures());
    assert_errors(
        &short_errors(&errors),
        &[
            ("syntax.zone:5", "invalid IPv4 address '192.0.2.256'"),
            ("syntax.zone:6", "TTL 2147483648 exceeds 2^31-1"),
            ("syntax.zone:7", "unknown record type 'BOGUS'"),
            ("syntax.zone:8", "class CH is not supported"),
            ("syntax.zone:9", "invalid MX preference 'ten'"),
            (
                "syntax.zone:10",
                "RFC 3597 RDATA length 3 does not match 2 octets",
            ),
            ("syntax.zone:11", "empty label"),
            ("syntax.zone:13", "')' without '('"),
            ("syntax.zone:14", "unknown directive $BOGUS"),
            ("syntax.zone:15", "'(' is never closed"),
        ],
    );
}

#[test]
fn missing_soa_and_missing_file() {
    let p = temp_zone("ns A 192.0.2.1\n");
    let e = short_errors(&check_zone(&p, &origin(), p.parent().unwrap()));
    assert_errors(&e, &[("zone:0", "no SOA record at the zone apex")]);
    let missing = fx("does-not-exist.zone");
    assert!(matches!(
        load_zone(&missing, &origin(), &fixtures()),
        Err(ZoneFileError::Io { .. })
    ));
    assert_eq!(check_zone(&missing, &origin(), &fixtures()).len(), 1);
}

#[test]
fn include_must_stay_inside_root() {
    // Root = inc/: `../outside` and an absolute path are refused, a sibling is fine.
    let errors = check_zone(&fx("inc/escape.zone"), &origin(), &fx("inc"));
    assert_errors(
        &short_errors(&errors),
        &[
            ("escape.zone:6", "outside the include root"),
            ("escape.zone:7", "outside the include root"),
        ],
    );
    // The same file with the parent as root: `../outside/secret.inc` now resolves.
    let errors = check_zone(&fx("inc/escape.zone"), &origin(), &fixtures());
    assert_errors(
        &short_errors(&errors),
        &[("escape.zone:7", "outside the include root")],
    );

    // A symlink inside the root pointing outside is refused after canonicalization.
    let root = tmp_dir();
    let outside = tmp_dir().join("x.inc");
    std::fs::write(&outside, "leak A 192.0.2.1\n").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link.inc")).unwrap();
    let zone = root.join("zone");
    std::fs::write(
        &zone,
        "@ SOA ns host 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n$INCLUDE link.inc\n",
    )
    .unwrap();
    let e = short_errors(&check_zone(&zone, &origin(), &root));
    assert_errors(&e, &[("zone:4", "outside the include root")]);

    // Self-inclusion stops at the depth limit instead of looping.
    let root = tmp_dir();
    let zone = root.join("zone");
    std::fs::write(
        &zone,
        "@ SOA ns host 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n$INCLUDE self.inc\n",
    )
    .unwrap();
    std::fs::write(root.join("self.inc"), "$INCLUDE self.inc\n").unwrap();
    let e = short_errors(&check_zone(&zone, &origin(), &root));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("self.inc:1: ") && e[0].contains("nested deeper"),
        "{e:?}"
    );
}

#[test]
fn never_panics_on_truncated_or_mangled_input() {
    let text = std::fs::read(fx("good.zone")).unwrap();
    let dir = tmp_dir();
    let p = dir.join("zone");
    for cut in (0..text.len()).step_by(7) {
        std::fs::write(&p, &text[..cut]).unwrap();
        let _ = check_zone(&p, &origin(), &dir);
    }
    for (i, b) in [b'(', b')', b'"', b'\\', b';', 0xff, b'\n']
        .into_iter()
        .enumerate()
    {
        let mut t = text.clone();
        for pos in (i * 13..t.len()).step_by(97) {
            t[pos] = b;
        }
        std::fs::write(&p, &t).unwrap();
        let _ = check_zone(&p, &origin(), &dir);
    }
}

// ---- Knot DNS comparison -------------------------------------------------------------

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn knot_conf(dir: &Path, zone_file: &Path, port: u16) -> PathBuf {
    let conf = dir.join("knot.conf");
    std::fs::create_dir_all(dir.join("db")).unwrap();
    std::fs::write(
        &conf,
        format!(
            "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\ndatabase:\n    storage: \"{d}/db\"\n\
             acl:\n  - id: local\n    address: 127.0.0.1\n    action: transfer\n\
             zone:\n  - domain: example.com.\n    file: \"{z}\"\n    acl: local\n",
            d = dir.display(),
            z = zone_file.display()
        ),
    )
    .unwrap();
    conf
}

/// Knot's own verdict on a zone file (`knotc zone-check`, the kzonecheck equivalent).
fn knot_accepts(zone_file: &Path) -> bool {
    let dir = tmp_dir();
    let conf = knot_conf(&dir, zone_file, 9);
    Command::new("knotc")
        .arg("-c")
        .arg(&conf)
        .args(["zone-check", "example.com."])
        .output()
        .unwrap()
        .status
        .success()
}

struct Knotd(Child);

impl Drop for Knotd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn knot_accepts_and_rejects_the_same_files() {
    if !have("knotc") {
        eprintln!("SKIP: knotc (Knot DNS) not installed");
        return;
    }
    for good in ["good.zone", "nottl.zone"] {
        assert!(knot_accepts(&fx(good)), "knot rejects {good}");
        assert!(
            check_zone(&fx(good), &origin(), &fixtures()).is_empty(),
            "{good}"
        );
    }
    for bad in ["cname.zone", "dname.zone", "syntax.zone", "semantic.zone"] {
        assert!(!knot_accepts(&fx(bad)), "knot accepts {bad}");
        assert!(
            !check_zone(&fx(bad), &origin(), &fixtures()).is_empty(),
            "{bad}"
        );
    }
}

/// Serves good.zone with knotd, transfers it in RFC 3597 generic form (`kdig +generic`) and
/// loads that dump with our loader: both readings of the file must be the same records.
#[test]
fn knot_reads_the_realistic_zone_identically() {
    if !have("knotd") || !have("kdig") {
        eprintln!("SKIP: knotd/kdig not installed");
        return;
    }
    let dir = tmp_dir();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = knot_conf(&dir, &fx("good.zone"), port);
    let _knotd = Knotd(
        Command::new("knotd")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let dump = loop {
        let out = Command::new("kdig")
            .args([
                "@127.0.0.1".to_string(),
                format!("-p{port}"),
                "example.com.".into(),
                "AXFR".into(),
            ])
            .args(["+generic", "+noall", "+answer", "+timeout=1", "+retry=0"])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        if text.lines().filter(|l| l.contains("TYPE6\t")).count() == 2 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "knotd did not serve the zone: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // AXFR repeats the SOA at the end; drop it.
    let lines: Vec<&str> = dump.lines().collect();
    let body = lines[..lines.len() - 1].join("\n") + "\n";
    let knot = all_records(&load_text(&body).unwrap());
    let ours = all_records(&load_zone(&fx("good.zone"), &origin(), &fixtures()).unwrap());
    assert_eq!(ours.len(), 31);
    assert_eq!(ours, knot);
}

/// Load-speed measurement: `MUNINN_BENCH_ZONE=/path/zone cargo test --release --test
/// zone_file bench_load -- --ignored --nocapture` (origin example.com.).
#[test]
#[ignore]
fn bench_load() {
    let Ok(path) = std::env::var("MUNINN_BENCH_ZONE") else {
        eprintln!("SKIP: set MUNINN_BENCH_ZONE");
        return;
    };
    let path = PathBuf::from(path);
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(std::io::stderr)
        .try_init();
    let t = Instant::now();
    let zone = load_zone(&path, &origin(), path.parent().unwrap()).unwrap();
    let dt = t.elapsed().as_secs_f64();
    let n = zone.record_count();
    eprintln!(
        "loaded {n} records, {} names in {dt:.3} s = {:.0} records/s",
        zone.name_count(),
        n as f64 / dt
    );
}
