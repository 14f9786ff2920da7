//! Shared harness for the end-to-end tests: runs `knotd` and the real `muninn` binary on loopback
//! ports, and sends DNS queries (parsed with hickory-proto) or raw bytes to them over std sockets.
//!
//! Every process started here is owned by a [`Server`] guard that kills it by PID on drop, so a
//! panicking test does not leave servers behind.

#![allow(dead_code)] // Each test binary uses a different subset of the harness.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

/// How long a single query waits for its answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a raw packet that may legitimately be ignored waits for an answer.
pub const SILENCE_TIMEOUT: Duration = Duration::from_millis(400);
/// How long a server may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Directory with the shared zone fixtures (`NAME.zone` serves zone `NAME.`).
pub fn zones_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/zones")
}

/// The zones in [`zones_dir`], as (origin, file name), sorted by origin.
pub fn zone_files() -> Vec<(String, String)> {
    let mut zones: Vec<(String, String)> = fs::read_dir(zones_dir())
        .expect("read tests/zones")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter_map(|f| {
            f.strip_suffix(".zone")
                .map(|o| (format!("{o}."), f.clone()))
        })
        .collect();
    zones.sort();
    zones
}

// ---------------------------------------------------------------------------------------------
// Temporary directories and ports
// ---------------------------------------------------------------------------------------------

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "muninn-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A loopback port that is currently free for both UDP and TCP, and not handed out before in
/// this test process (parallel tests must not get the same port between probe and bind).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("local addr").port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free loopback port for UDP+TCP found");
}

// ---------------------------------------------------------------------------------------------
// Server processes
// ---------------------------------------------------------------------------------------------

/// A running server process; killed (by PID) and reaped on drop.
pub struct Server {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Server {
    /// What the server printed so far (stdout and stderr), for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id (for checks that the guard really stops it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics (with the server log) if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited unexpectedly ({status}); log:\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// Starts `cmd` (output to a log file in `dir`) and waits until every zone's SOA is served.
    fn spawn(
        name: &'static str,
        mut cmd: Command,
        dir: TempDir,
        addr: SocketAddr,
    ) -> Result<Server, String> {
        let log = dir.path().join(format!("{name}.log"));
        let out = fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let mut server = Server {
            name,
            addr,
            child,
            log,
            _dir: dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Polls every served zone's SOA over UDP until all are answered with NOERROR.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let opts = QueryOpts {
            timeout: Duration::from_millis(200),
            ..QueryOpts::default()
        };
        for (origin, _) in zone_files() {
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Err(format!(
                        "{} exited during startup ({status}); log:\n{}",
                        self.name,
                        self.log()
                    ));
                }
                if let Ok(resp) = try_query(self.addr, &origin, RecordType::SOA, &opts)
                    && resp.metadata.response_code == ResponseCode::NoError
                    && !resp.answers.is_empty()
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{} did not serve {origin} SOA within {START_TIMEOUT:?}; log:\n{}",
                        self.name,
                        self.log()
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to exactly this PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `muninn serve --zones DIR --data-dir DIR` on a free loopback port with one worker, its
/// log in a file: the restart and store tests, which stop it gracefully, crash it, signal
/// it and read its log. Killed (by PID) and reaped on drop.
pub struct DataServer {
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl DataServer {
    /// Starts the server and waits for "muninn serving" in its log.
    pub fn start(zones: &Path, data: &Path, log: PathBuf) -> DataServer {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(env!("CARGO_BIN_EXE_muninn"))
            .args(["serve", "--workers", "1", "--listen", &addr.to_string()])
            .arg("--zones")
            .arg(zones)
            .arg("--data-dir")
            .arg(data)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("create log"))
            .spawn()
            .expect("start muninn");
        let mut s = DataServer { addr, child, log };
        s.wait_for("muninn serving", 0);
        s
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to 60 s) until the log holds `needle` more than `already` times.
    pub fn wait_for(&mut self, needle: &str, already: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("muninn exited ({status}):\n{}", self.log());
            }
            if self.log().matches(needle).count() > already {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no {needle:?} in the log:\n{}", self.log());
    }

    /// Sends a signal (`"-HUP"`, `"-TERM"`, ...) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// SIGTERM and wait: a graceful stop. Returns the log.
    pub fn stop(mut self) -> String {
        self.signal("-TERM");
        let _ = self.child.wait();
        self.log()
    }

    /// SIGKILL: a crash. Returns the log.
    pub fn crash(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for DataServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Path of `knotd`, or `None` (skip) when it is not installed. With `CI=true` a missing knotd
/// is a hard failure: CI must run these tests.
pub fn knotd_path() -> Option<PathBuf> {
    let path = std::env::var_os("KNOTD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/knotd"));
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "knotd not found at {} (CI=true): install Debian's `knot` package \
             (apt-get install knot) or set KNOTD=/path/to/knotd",
            path.display()
        );
    }
    eprintln!(
        "SKIP: knotd not found at {} (install `knot` or set KNOTD)",
        path.display()
    );
    None
}

/// Starts knotd serving every zone in [`zones_dir`] on a fresh loopback port.
/// Returns `None` when knotd is not installed (and CI is not set).
pub fn start_knot() -> Option<Server> {
    let knotd = knotd_path()?;
    let mut last_err = String::new();
    // A port picked as free can be taken by someone else before knotd binds it: retry.
    for _ in 0..3 {
        let dir = TempDir::new("knot");
        let port = free_port();
        let conf = dir.path().join("knot.conf");
        fs::create_dir_all(dir.path().join("storage")).expect("mkdir storage");
        fs::create_dir_all(dir.path().join("run")).expect("mkdir run");
        fs::write(&conf, knot_config(dir.path(), port)).expect("write knot.conf");
        let mut cmd = Command::new(&knotd);
        cmd.arg("-c").arg(&conf);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        match Server::spawn("knotd", cmd, dir, addr) {
            Ok(s) => return Some(s),
            Err(e) => last_err = e,
        }
    }
    panic!("knotd failed to start: {last_err}");
}

/// Knot configuration: plain authoritative answers only (no DNSSEC signing, no NSID, no CHAOS
/// identity/version answers, no cookies, no journal), one worker, zones from tests/zones.
fn knot_config(dir: &Path, port: u16) -> String {
    let mut conf = format!(
        "server:\n    rundir: {run}\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    \
         tcp-workers: 1\n    background-workers: 1\n    udp-max-payload: 1232\n    \
         identity: \"\"\n    version: \"\"\n    nsid: \"\"\n\
         database:\n    storage: {storage}\n\
         log:\n  - target: stderr\n    any: info\n\
         template:\n  - id: default\n    storage: {zones}\n    semantic-checks: on\n    \
         journal-content: none\n    zonefile-sync: -1\n    zonefile-load: whole\n    \
         dnssec-signing: off\n\
         zone:\n",
        run = dir.join("run").display(),
        storage = dir.join("storage").display(),
        zones = zones_dir().display(),
    );
    for (origin, file) in zone_files() {
        conf.push_str(&format!("  - domain: {origin}\n    file: {file}\n"));
    }
    conf
}

/// Starts the real `muninn` binary serving every zone in [`zones_dir`] on a fresh loopback port.
pub fn start_muninn() -> Server {
    start_muninn_with_env(&[])
}

/// [`start_muninn`] with extra environment variables for the server process.
pub fn start_muninn_with_env(env: &[(&str, &str)]) -> Server {
    let mut last_err = String::new();
    for _ in 0..3 {
        let dir = TempDir::new("muninn");
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        fs::create_dir_all(dir.path().join("data")).expect("mkdir data");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_muninn"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--zones")
            .arg(zones_dir())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--workers")
            .arg("1")
            .envs(env.iter().copied());
        match Server::spawn("muninn", cmd, dir, addr) {
            Ok(s) => return s,
            Err(e) => last_err = e,
        }
    }
    panic!("muninn failed to start: {last_err}");
}

// ---------------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------------

/// Options of one query.
#[derive(Clone, Debug)]
pub struct QueryOpts {
    /// Add an OPT record (RFC 6891).
    pub edns: bool,
    /// Advertised UDP payload size in the OPT record.
    pub payload: u16,
    /// DNSSEC OK bit (RFC 3225).
    pub dnssec_ok: bool,
    /// Send over TCP (2-byte length prefix, RFC 1035 4.2.2) instead of UDP.
    pub tcp: bool,
    /// Recursion Desired.
    pub rd: bool,
    /// Checking Disabled.
    pub cd: bool,
    pub class: DNSClass,
    pub id: u16,
    pub timeout: Duration,
}

impl Default for QueryOpts {
    fn default() -> Self {
        QueryOpts {
            edns: false,
            payload: 1232,
            dnssec_ok: false,
            tcp: false,
            rd: false,
            cd: false,
            class: DNSClass::IN,
            id: 0x4d55,
            timeout: QUERY_TIMEOUT,
        }
    }
}

impl std::fmt::Display for QueryOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.tcp { "tcp" } else { "udp" })?;
        if self.edns {
            write!(f, " edns={}", self.payload)?;
            if self.dnssec_ok {
                f.write_str(" do")?;
            }
        } else {
            f.write_str(" noedns")?;
        }
        if self.rd {
            f.write_str(" rd")?;
        }
        if self.cd {
            f.write_str(" cd")?;
        }
        if self.class != DNSClass::IN {
            write!(f, " class={}", self.class)?;
        }
        Ok(())
    }
}

/// Builds the wire form of a query; the name keeps its case.
pub fn build_query(name: &str, rtype: RecordType, opts: &QueryOpts) -> Vec<u8> {
    let mut msg = Message::new(opts.id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = opts.rd;
    msg.metadata.checking_disabled = opts.cd;
    let mut q = Query::query(Name::from_ascii(name).expect("query name"), rtype);
    q.set_query_class(opts.class);
    msg.add_query(q);
    if opts.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(opts.payload)
            .set_dnssec_ok(opts.dnssec_ok);
        msg.set_edns(edns);
    }
    msg.to_vec().expect("encode query")
}

/// Sends a query and returns the raw response bytes (checked for the right id).
pub fn try_query_raw(
    addr: SocketAddr,
    name: &str,
    rtype: RecordType,
    opts: &QueryOpts,
) -> io::Result<Vec<u8>> {
    let wire = build_query(name, rtype, opts);
    let resp = if opts.tcp {
        tcp_exchange(addr, &wire, opts.timeout)?
    } else {
        udp_exchange(addr, &wire, opts.timeout)?
    };
    match resp {
        Some(bytes) if bytes.get(..2) == Some(&opts.id.to_be_bytes()[..]) => Ok(bytes),
        Some(bytes) => Err(io::Error::other(format!(
            "response with wrong id: {}",
            hex(&bytes)
        ))),
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no response (timeout or connection closed)",
        )),
    }
}

/// Sends a query and parses the response.
pub fn try_query(
    addr: SocketAddr,
    name: &str,
    rtype: RecordType,
    opts: &QueryOpts,
) -> io::Result<Message> {
    let bytes = try_query_raw(addr, name, rtype, opts)?;
    Message::from_vec(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("undecodable response ({e}): {}", hex(&bytes)),
        )
    })
}

/// Sends a query and parses the response; panics on timeout or garbage.
pub fn query(addr: SocketAddr, name: &str, rtype: RecordType, opts: &QueryOpts) -> Message {
    try_query(addr, name, rtype, opts)
        .unwrap_or_else(|e| panic!("query {name} {rtype} ({opts}) to {addr}: {e}"))
}

/// Sends one UDP datagram from a fresh socket and waits for one datagram back.
/// `Ok(None)` = nothing came back within `timeout`.
pub fn udp_exchange(
    addr: SocketAddr,
    packet: &[u8],
    timeout: Duration,
) -> io::Result<Option<Vec<u8>>> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(addr)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send(packet)?;
    let mut buf = vec![0u8; 65535];
    match sock.recv(&mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        // ICMP port unreachable: nobody listens, which is a failure, not silence.
        Err(e) => Err(e),
    }
}

/// Sends one DNS message over a new TCP connection (with the 2-byte length prefix) and reads one
/// length-prefixed message back. `Ok(None)` = the server closed the connection or stayed silent.
pub fn tcp_exchange(
    addr: SocketAddr,
    msg: &[u8],
    timeout: Duration,
) -> io::Result<Option<Vec<u8>>> {
    let len = u16::try_from(msg.len()).expect("TCP message too long");
    let mut stream = len.to_be_bytes().to_vec();
    stream.extend_from_slice(msg);
    tcp_exchange_stream(addr, &stream, timeout)
}

/// Writes raw `stream` bytes (the caller frames them) to a new TCP connection and reads one
/// length-prefixed message back. `Ok(None)` = closed or silent until `timeout`.
pub fn tcp_exchange_stream(
    addr: SocketAddr,
    stream_bytes: &[u8],
    timeout: Duration,
) -> io::Result<Option<Vec<u8>>> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    s.write_all(stream_bytes)?;
    let mut len = [0u8; 2];
    if !read_exact_or_none(&mut s, &mut len)? {
        return Ok(None);
    }
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    Ok(read_exact_or_none(&mut s, &mut msg)?.then_some(msg))
}

/// Fills `buf`; `Ok(false)` on EOF, reset or timeout before it is full.
fn read_exact_or_none(s: &mut TcpStream, buf: &mut [u8]) -> io::Result<bool> {
    match s.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Lower-case hex dump, for failure messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Mixes the case of the letters in `name` (every other letter upper-case, starting with the
/// first when `phase` is 0, the second when it is 1), to test case-insensitive matching and
/// case preservation (RFC 4343).
pub fn mix_case(name: &str, phase: usize) -> String {
    let mut n = phase;
    name.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                n += 1;
                if n.is_multiple_of(2) {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            } else {
                c
            }
        })
        .collect()
}

// ---- store and offline-command helpers (purge, store, store_crash, restart tests) ----------

/// Opens the zone store in `data`, waiting up to 10 s for a handle that this process or a
/// stopping server still holds (redb's file lock).
pub fn open_store(data: &Path) -> muninn::store::Store {
    use muninn::store::{Store, StoreError, StoreOptions};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open_dir(data, StoreOptions::default()) {
            Ok(s) => return s,
            Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Kills (SIGKILL, by PID) and reaps the child on drop, also when the test fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A small deterministic generator (xorshift), seeded by the test and printed so that a
/// failing run can be repeated.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs the `muninn` binary with `args` and `--data-dir data`: exit code, stdout, stderr.
pub fn muninn_cmd(args: &[&str], data: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_muninn"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A thread named like a query worker (`muninn-lat-0`) and a spinning thread, both pinned to
/// CPU 0 (with `taskset`): the "worker" waits on a run queue about half of the time, as a
/// real one does when work competes for its core. Both stop and are joined on drop.
pub struct WaitingWorker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl WaitingWorker {
    pub fn start() -> WaitingWorker {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = [muninn::runtime::LATENCY_THREAD_PREFIX, "spinner-"]
            .into_iter()
            .map(|prefix| {
                let stop = std::sync::Arc::clone(&stop);
                let (tx, rx) = std::sync::mpsc::channel();
                let t = std::thread::Builder::new()
                    .name(format!("{prefix}0"))
                    .spawn(move || {
                        let me = fs::read_link("/proc/thread-self").unwrap();
                        tx.send(me.file_name().unwrap().to_string_lossy().into_owned())
                            .unwrap();
                        while !stop.load(Ordering::Relaxed) {
                            std::hint::spin_loop();
                        }
                    })
                    .unwrap();
                let tid = rx.recv().unwrap();
                let pinned = Command::new("taskset")
                    .args(["-p", "-c", "0", &tid])
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(pinned.success(), "taskset {tid}");
                t
            })
            .collect();
        WaitingWorker { stop, threads }
    }
}

impl Drop for WaitingWorker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
