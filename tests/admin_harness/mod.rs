//! A real `muninn serve` with the admin API on, for tests/admin_api.rs and
//! tests/records_cli.rs: a store-managed zone `example.test.` (seeded from a file), a
//! file-managed zone `file.test.`, a token file, loopback ports. Also a raw HTTP/1.1 client
//! (std sockets, independent of the crate's own client) and DNS helpers.
//!
//! The process is killed by PID when the guard drops, also when a test fails.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::common::{QueryOpts, TempDir, free_port, query};

pub const BIN: &str = env!("CARGO_BIN_EXE_muninn");
pub const TOKEN: &str = "test-token_0123456789abcdef";

/// The store-managed zone's seed: serial 10.
pub const ZONE: &str = "$TTL 300\n\
    @ IN SOA ns1 hostmaster 10 3600 600 86400 300\n\
    @ IN NS ns1\n\
    ns1 IN A 192.0.2.53\n\
    www IN A 192.0.2.1\n\
    alias IN CNAME www\n";

const FILE_ZONE: &str = "$TTL 300\n\
    @ IN SOA ns1 hostmaster 1 3600 600 86400 300\n\
    @ IN NS ns1\n\
    ns1 IN A 192.0.2.54\n";

pub struct AdminServer {
    child: Child,
    pub dns: SocketAddr,
    pub api: SocketAddr,
    pub config: PathBuf,
    pub dir: TempDir,
    log: PathBuf,
    /// Runs started so far (each logs to its own file).
    runs: u32,
}

fn spawn(config: &Path, log: &Path) -> Child {
    Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Writes the zones, the token file and a config (with `extra` appended to `[admin]`) into
/// `dir`; returns the config path and the DNS and API addresses.
/// Writes the zones, token and config (`runtime_extra` lines in `[runtime]`, `extra` in
/// `[admin]`) into `dir`.
pub fn write_setup(
    dir: &Path,
    runtime_extra: &str,
    extra: &str,
) -> (PathBuf, SocketAddr, SocketAddr) {
    fs::write(dir.join("example.test.zone"), ZONE).unwrap();
    fs::write(dir.join("file.test.zone"), FILE_ZONE).unwrap();
    fs::write(dir.join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.join("muninn.toml");
    fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n\
             [server]\nlisten = [\"{dns}\"]\n\
             [runtime]\nworkers = 1\n{runtime_extra}\
             [zones]\ndirectory = \"\"\n\
             [[zones.zone]]\nname = \"example.test.\"\nfile = \"example.test.zone\"\nmanaged = \"store\"\n\
             [[zones.zone]]\nname = \"file.test.\"\nfile = \"file.test.zone\"\n\
             [admin]\nenabled = true\nlisten = \"{api}\"\ntoken_file = \"admin.token\"\n{extra}"
        ),
    )
    .unwrap();
    (config, dns, api)
}

impl AdminServer {
    pub fn start() -> AdminServer {
        AdminServer::start_with("")
    }

    /// Starts the server with `extra` lines in its `[admin]` section.
    pub fn start_with(extra: &str) -> AdminServer {
        AdminServer::start_configured("", extra)
    }

    /// Starts the server with `runtime_extra` lines in `[runtime]` and `extra` in `[admin]`.
    pub fn start_configured(runtime_extra: &str, extra: &str) -> AdminServer {
        let dir = TempDir::new("admin");
        let (config, dns, api) = write_setup(dir.path(), runtime_extra, extra);
        let log = dir.path().join("muninn.log");
        let child = spawn(&config, &log);
        let mut s = AdminServer {
            child,
            dns,
            api,
            config,
            dir,
            log,
            runs: 1,
        };
        s.wait_for("muninn serving");
        s
    }

    /// A graceful stop (SIGTERM, waited for), then a new start with the same config, data
    /// and ports, logging to a fresh file. Returns the stopped run's log.
    pub fn restart(&mut self) -> String {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
        let _ = self.child.wait();
        let old = self.log();
        self.runs += 1;
        self.log = self.dir.path().join(format!("muninn.{}.log", self.runs));
        self.child = spawn(&self.config, &self.log);
        self.wait_for("muninn serving");
        old
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to 20 s) until the current run's log holds `needle`.
    pub fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("muninn exited ({status}):\n{}", self.log());
            }
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no {needle:?} in the log:\n{}", self.log());
    }

    /// One request with the right token.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        http(
            self.api,
            method,
            path,
            Some(&format!("Bearer {TOKEN}")),
            body,
        )
    }

    /// The zone's SOA serial as served over DNS.
    pub fn serial(&self, zone: &str) -> u32 {
        let resp = query(self.dns, zone, RecordType::SOA, &QueryOpts::default());
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        match resp.answers.first().map(|r| &r.data) {
            Some(RData::SOA(s)) => s.serial,
            other => panic!("no SOA for {zone}: {other:?}"),
        }
    }

    /// Waits (up to 5 s) until the zone's served serial is `serial`: the snapshot updater
    /// publishes a committed change asynchronously.
    pub fn wait_serial(&self, zone: &str, serial: u32) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = self.serial(zone);
            if now == serial {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{zone} still serves serial {now}, expected {serial}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Rcode and answer data (sorted, as text) of a query.
    pub fn answers(&self, name: &str, rtype: RecordType) -> (ResponseCode, Vec<String>) {
        let resp = query(self.dns, name, rtype, &QueryOpts::default());
        let mut data: Vec<String> = resp
            .answers
            .iter()
            .filter(|r| r.record_type() == rtype)
            .map(|r| format!("{} {}", r.ttl, r.data))
            .collect();
        data.sort();
        (resp.metadata.response_code, data)
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP reply: status, headers (lowercase names) and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The `error` of a JSON error reply.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {:?}", self.body))
            .to_string()
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`); `auth` is the whole
/// Authorization header value.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or_default());
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}
