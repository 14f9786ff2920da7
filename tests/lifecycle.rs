//! The real `muninn` binary: startup, SIGHUP reloads, SIGTERM shutdown.
//!
//! Each test starts its own server on 127.0.0.1 with a free port and a temporary zones
//! directory; the [`Server`] guard kills the process by PID on drop, also when a test fails.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

mod common;
use common::{TempDir, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_muninn");
const ORIGIN: &str = "reload.test.";

/// A zone whose `www` has address 192.0.2.`host`, and `extra` more A records to make
/// parsing take some time.
fn zone_text(serial: u32, host: u8, extra: usize) -> String {
    let mut z = format!(
        "$ORIGIN {ORIGIN}\n$TTL 300\n\
         @ IN SOA ns1 hostmaster {serial} 3600 600 86400 300\n\
         @ IN NS ns1\n\
         ns1 IN A 192.0.2.53\n\
         www IN A 192.0.2.{host}\n"
    );
    for i in 0..extra {
        z.push_str(&format!("h{i} IN A 198.51.100.{}\n", i % 250));
    }
    z
}

/// A temporary directory (removed on drop) with an empty `zones` subdirectory.
fn temp_dir(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::create_dir_all(dir.path().join("zones")).unwrap();
    dir
}

/// The zone file of [`ORIGIN`] in the zones directory of `dir`.
fn zone_file(dir: &TempDir) -> PathBuf {
    dir.path().join("zones").join(format!("{}zone", ORIGIN))
}

/// Replaces the zone file atomically (write + rename), as editors and deploy tools do.
fn write_zone(dir: &TempDir, text: &str) {
    let tmp = dir.path().join("zone.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, zone_file(dir)).unwrap();
}

/// A running server; killed (by PID) and reaped on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Starts `muninn serve` on a free port, serving the zones directory of `dir`, and
    /// waits until it answers. The config file names another zones directory and worker
    /// count: the command-line flags must win, also on reloads.
    fn start(dir: &TempDir, grace_ms: u64) -> Server {
        let config = dir.path().join("muninn.toml");
        std::fs::write(
            &config,
            format!(
                "[zones]\ndirectory = \"no-such-dir\"\n\
                 [runtime]\nworkers = 1\n\
                 [limits]\nshutdown_grace_ms = {grace_ms}\ntcp_idle_timeout_ms = 60000\n"
            ),
        )
        .unwrap();
        let log = dir.path().join("muninn.log");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", &addr.to_string(), "--workers", "2", "--zones"])
            .arg(dir.path().join("zones"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server { child, addr, log };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("muninn exited early ({status}):\n{}", self.log_text());
            }
            if self.log_text().contains("muninn serving") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("muninn did not start:\n{}", self.log_text());
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` at least `count` times.
    fn wait_log(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.log_text().matches(needle).count() >= count {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("log never showed {needle:?} x{count}:\n{}", self.log_text());
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one query over UDP and returns the parsed response.
fn query(server: SocketAddr, name: &str, rtype: RecordType) -> Result<Message, String> {
    let mut msg = Message::query();
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let wire = msg.to_vec().unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    socket.send_to(&wire, server).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).map_err(|e| e.to_string())?;
    let response = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())?;
    if response.metadata.id != msg.metadata.id {
        return Err("response id does not match".into());
    }
    Ok(response)
}

/// The last octet of www's address, after checking the whole response is the
/// authoritative one-record answer.
fn www_host(server: SocketAddr) -> Result<u8, String> {
    let name = format!("www.{ORIGIN}");
    let r = query(server, &name, RecordType::A)?;
    let m = &r.metadata;
    if m.message_type != MessageType::Response
        || m.response_code != ResponseCode::NoError
        || !m.authoritative
        || m.truncation
    {
        return Err(format!("bad header: {m:?}"));
    }
    if r.queries.len() != 1 || r.queries[0].name().to_string() != name {
        return Err(format!("bad question: {:?}", r.queries));
    }
    if !r.authorities.is_empty() || !r.additionals.is_empty() {
        return Err(format!("unexpected records: {r:?}"));
    }
    match r.answers.as_slice() {
        [rec] if rec.name.to_string() == name && rec.ttl == 300 => match &rec.data {
            RData::A(a) if a.0.octets()[..3] == [192, 0, 2] => Ok(a.0.octets()[3]),
            other => Err(format!("bad rdata {other:?}")),
        },
        other => Err(format!("bad answer section {other:?}")),
    }
}

fn soa_serial(server: SocketAddr) -> u32 {
    let r = query(server, ORIGIN, RecordType::SOA).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    match r.answers.as_slice() {
        [rec] => match &rec.data {
            RData::SOA(soa) => soa.serial,
            other => panic!("not a SOA: {other:?}"),
        },
        other => panic!("bad SOA answer {other:?}"),
    }
}

/// Polls until www has address `host` or the deadline passes.
fn wait_for_host(server: SocketAddr, host: u8) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = Err(String::new());
    while Instant::now() < deadline {
        last = www_host(server);
        if last == Ok(host) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("www never became .{host}; last: {last:?}");
}

#[test]
fn sighup_serves_the_changed_zone() {
    let dir = temp_dir("changed");
    write_zone(&dir, &zone_text(1, 1, 0));
    let server = Server::start(&dir, 2000);
    assert_eq!(www_host(server.addr), Ok(1));
    assert_eq!(soa_serial(server.addr), 1);
    // The initial parse ran on a heavy-job thread, not a latency worker.
    assert!(
        server.log_text().contains("thread=\"muninn-heavy-"),
        "{}",
        server.log_text()
    );

    // --workers overrode the config file's 1.
    assert!(
        server.log_text().contains(" workers=2 "),
        "{}",
        server.log_text()
    );

    write_zone(&dir, &zone_text(2, 2, 0));
    server.signal("HUP");
    wait_for_host(server.addr, 2);
    assert_eq!(soa_serial(server.addr), 2);
    server.wait_log("zone reload done", 1);
    assert!(
        server.log_text().contains("changed=1"),
        "{}",
        server.log_text()
    );
}

#[test]
fn broken_zone_keeps_the_old_version() {
    let dir = temp_dir("broken");
    write_zone(&dir, &zone_text(1, 1, 0));
    let server = Server::start(&dir, 2000);
    assert_eq!(www_host(server.addr), Ok(1));

    // Line 7 is invalid; the rest would change www.
    let broken = format!("{}bad IN A 192.0.2.999\n", zone_text(2, 2, 0));
    write_zone(&dir, &broken);
    server.signal("HUP");
    server.wait_log("zone reload done", 1);
    let log = server.log_text();
    let location = format!("{}:7:", zone_file(&dir).display());
    assert!(log.contains(&location), "no {location} in log:\n{log}");
    assert!(log.contains("previous version still served"), "{log}");
    assert_eq!(www_host(server.addr), Ok(1));
    assert_eq!(soa_serial(server.addr), 1);

    // Once fixed, the next reload picks it up.
    write_zone(&dir, &zone_text(3, 3, 0));
    server.signal("HUP");
    wait_for_host(server.addr, 3);
}

#[test]
fn queries_are_answered_throughout_reloads() {
    let dir = temp_dir("continuous");
    // Big enough that each reload takes a noticeable time.
    write_zone(&dir, &zone_text(1, 1, 20_000));
    let server = Server::start(&dir, 2000);
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut sent, mut seen) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                sent += 1;
                match www_host(addr) {
                    Ok(host) => seen.push(host),
                    Err(e) => return Err(format!("query {sent} failed: {e}")),
                }
            }
            Ok((sent, seen))
        })
    };
    for round in 2..=4u8 {
        write_zone(&dir, &zone_text(u32::from(round), round, 20_000));
        server.signal("HUP");
        wait_for_host(addr, round);
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, seen) = client.join().unwrap().unwrap();
    assert_eq!(seen.len(), sent);
    assert!(sent > 10, "only {sent} queries sent");
    // Each answer is one whole version: the sequence never goes back.
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&4));
}

#[test]
fn overlapping_sighups_are_harmless() {
    let dir = temp_dir("overlap");
    write_zone(&dir, &zone_text(1, 1, 20_000));
    let server = Server::start(&dir, 2000);
    write_zone(&dir, &zone_text(2, 2, 20_000));
    for _ in 0..20 {
        server.signal("HUP");
        std::thread::sleep(Duration::from_millis(2));
    }
    wait_for_host(server.addr, 2);
    // Coalesced: far fewer reloads than signals, and the server is still healthy.
    server.wait_log("zone reload done", 1);
    std::thread::sleep(Duration::from_millis(500));
    let log = server.log_text();
    let reloads = log.matches("zone reload done").count();
    let requests = log.matches("SIGHUP").count();
    assert!(reloads <= requests, "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    assert_eq!(soa_serial(server.addr), 2);

    // Another change after the burst is still picked up.
    write_zone(&dir, &zone_text(3, 3, 0));
    server.signal("HUP");
    wait_for_host(server.addr, 3);
}

#[test]
fn sigterm_exits_zero_within_the_grace_period() {
    let dir = temp_dir("term");
    write_zone(&dir, &zone_text(1, 1, 0));
    let mut server = Server::start(&dir, 1500);
    assert_eq!(www_host(server.addr), Ok(1));
    // An idle TCP client must not hold the shutdown past the grace period.
    let mut idle = TcpStream::connect(server.addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let sent = Instant::now();
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_millis(1500 + 1500))
        .unwrap_or_else(|| panic!("still running:\n{}", server.log_text()));
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
    assert!(sent.elapsed() < Duration::from_millis(1500 + 1000));
    assert!(server.log_text().contains("stopping"));
    // The connection was closed by the server.
    idle.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(idle.read(&mut buf), Ok(0) | Err(_)));
    // No longer answering.
    assert!(query(server.addr, &format!("www.{ORIGIN}"), RecordType::A).is_err());
}

#[test]
fn sigint_also_stops_cleanly() {
    let dir = temp_dir("int");
    write_zone(&dir, &zone_text(1, 1, 0));
    let mut server = Server::start(&dir, 1000);
    server.signal("INT");
    let status = server.wait_exit(Duration::from_secs(3)).unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn zone_added_and_removed_on_reload() {
    let dir = temp_dir("addremove");
    write_zone(&dir, &zone_text(1, 1, 0));
    let server = Server::start(&dir, 1000);
    let other: &Path = &dir.path().join("zones").join("other.test.zone");
    std::fs::write(
        other,
        "$TTL 60\n@ IN SOA ns hm 7 3600 600 86400 60\n@ IN NS ns\nns IN A 192.0.2.7\n",
    )
    .unwrap();
    server.signal("HUP");
    server.wait_log("zone reload done", 1);
    let r = query(server.addr, "ns.other.test.", RecordType::A).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert_eq!(r.answers.len(), 1);

    std::fs::remove_file(other).unwrap();
    server.signal("HUP");
    server.wait_log("zone reload done", 2);
    let r = query(server.addr, "ns.other.test.", RecordType::A).unwrap();
    // Not in any served zone any more (RFC 1034 §4.3.2 step 2: not authoritative).
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(r.answers.is_empty());
    assert_eq!(www_host(server.addr), Ok(1));
}
