//! A real Prometheus scrapes the real `muninn` binary: Muninn runs with `[metrics]` on a
//! loopback port, answers a known number of queries, Prometheus (Debian's `prometheus`
//! package) scrapes it every second, and its query API must then report exactly that many
//! queries in `muninn_queries_total`.
//!
//! Skipped when `prometheus` is not installed, except with CI=true, where it must be.
//! Both processes are owned by guards that kill them by PID on drop (also on panic).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{QueryOpts, TempDir, free_port, query};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const ZONE: &str = "$ORIGIN scrape.test.\n$TTL 300\n\
    @ IN SOA ns hostmaster 7 3600 600 86400 300\n\
    @ IN NS ns\n\
    ns IN A 192.0.2.53\n\
    www IN A 192.0.2.80\n";

/// The whole test must stay well under this.
const DEADLINE: Duration = Duration::from_secs(25);

/// A child process, killed (SIGKILL to its PID) and reaped on drop.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name, child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Err(log) when the process has exited.
    fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); log:\n{}",
                self.name,
                self.log()
            )),
            _ => Ok(()),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The prometheus binary, or None (skip) when it is not installed and CI is not set.
fn prometheus_path() -> Option<PathBuf> {
    let path = std::env::var_os("PROMETHEUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "prometheus not found at {} (CI=true): install Debian's `prometheus` package \
             (apt-get install prometheus) or set PROMETHEUS=/path/to/prometheus",
            path.display()
        );
    }
    eprintln!(
        "SKIP: prometheus not found at {} (install `prometheus` or set PROMETHEUS)",
        path.display()
    );
    None
}

/// One HTTP/1.1 GET (connection closed after it): (status, body).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// The sample values of a Prometheus instant-vector API answer
/// (`..."result":[{"metric":{...},"value":[<time>,"<value>"]},...]`).
fn vector_values(json: &str) -> Vec<f64> {
    json.split("\"value\":[")
        .skip(1)
        .filter_map(|rest| {
            let after = rest.split_once(',')?.1.trim_start();
            after.strip_prefix('"')?.split('"').next()?.parse().ok()
        })
        .collect()
}

/// Muninn serving `scrape.test.` on `dns`, with metrics on `metrics`; Err(log) when it
/// does not become ready (e.g. a port was taken meanwhile).
fn start_muninn(
    dir: &Path,
    dns: SocketAddr,
    metrics: SocketAddr,
    started: Instant,
) -> Result<Proc, String> {
    let zones = dir.join("zones");
    fs::create_dir_all(&zones).unwrap();
    fs::write(zones.join("scrape.test.zone"), ZONE).unwrap();
    let config = dir.join("muninn.toml");
    fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n\
             [server]\nlisten = [\"{dns}\"]\n\
             [zones]\ndirectory = \"zones\"\n\
             [runtime]\nworkers = 1\n\
             [metrics]\nenabled = true\nlisten = \"{metrics}\"\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_muninn"));
    cmd.arg("serve").arg("--config").arg(&config);
    let mut muninn = Proc::spawn("muninn", cmd, dir.join("muninn.log"));
    // /health answers 200 once zones are loaded and the listeners run.
    loop {
        muninn.alive()?;
        if matches!(http_get(metrics, "/health"), Ok((200, _))) {
            return Ok(muninn);
        }
        if started.elapsed() > DEADLINE / 2 {
            return Err(format!("muninn not ready; log:\n{}", muninn.log()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Prometheus scraping `target` every second, its API on `web`.
fn start_prometheus(binary: &Path, dir: &Path, target: SocketAddr, web: SocketAddr) -> Proc {
    let config = dir.join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: muninn\n    static_configs:\n      \
             - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let tsdb = dir.join("tsdb");
    fs::create_dir_all(&tsdb).unwrap();
    let mut cmd = Command::new(binary);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg(format!("--web.listen-address={web}"))
        .arg("--log.level=warn");
    Proc::spawn("prometheus", cmd, dir.join("prometheus.log"))
}

#[test]
fn prometheus_scrapes_query_counters() {
    let Some(prometheus) = prometheus_path() else {
        return;
    };
    let started = Instant::now();
    let dir = TempDir::new("prom");
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));

    // A port picked as free may be taken before muninn binds it: try again.
    let mut attempt = 0;
    let (_muninn, dns, metrics) = loop {
        attempt += 1;
        let (dns, metrics) = (loopback(free_port()), loopback(free_port()));
        let sub = dir.path().join(format!("muninn-{attempt}"));
        fs::create_dir_all(&sub).unwrap();
        match start_muninn(&sub, dns, metrics, started) {
            Ok(m) => break (m, dns, metrics),
            Err(log) if attempt >= 3 => panic!("muninn did not start: {log}"),
            Err(_) => {}
        }
    };

    // 12 UDP and 3 TCP queries, every one answered.
    let mut sent = 0u32;
    for i in 0..12u16 {
        let (name, rcode) = if i % 3 == 0 {
            ("nope.scrape.test.", ResponseCode::NXDomain)
        } else {
            ("www.scrape.test.", ResponseCode::NoError)
        };
        let opts = QueryOpts {
            id: i,
            ..QueryOpts::default()
        };
        let r = query(dns, name, RecordType::A, &opts);
        assert_eq!(r.metadata.response_code, rcode, "{name}");
        sent += 1;
    }
    for i in 0..3u16 {
        let opts = QueryOpts {
            id: 100 + i,
            tcp: true,
            ..QueryOpts::default()
        };
        let r = query(dns, "scrape.test.", RecordType::SOA, &opts);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
        sent += 1;
    }

    let web = loopback(free_port());
    let mut prom = start_prometheus(&prometheus, dir.path(), metrics, web);
    let mut last = String::from("no answer from the Prometheus API yet");
    loop {
        if let Err(log) = prom.alive() {
            panic!("{log}");
        }
        if let Ok((200, body)) = http_get(web, "/api/v1/query?query=muninn_queries_total") {
            let values = vector_values(&body);
            if !values.is_empty() && values.iter().sum::<f64>() == f64::from(sent) {
                break;
            }
            last = body;
        }
        if started.elapsed() > DEADLINE {
            let targets = http_get(web, "/api/v1/targets")
                .map(|(_, b)| b)
                .unwrap_or_default();
            panic!(
                "Prometheus did not report {sent} queries in time.\nlast query answer: {last}\n\
                 targets: {targets}\nprometheus log:\n{}",
                prom.log()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // The per-type split survived the scrape too, and the target is up.
    let (_, body) = http_get(
        web,
        "/api/v1/query?query=sum%20by%20(qtype)%20(muninn_queries_total%7Bqtype%3D%22SOA%22%7D)",
    )
    .unwrap();
    assert_eq!(vector_values(&body), [3.0], "{body}");
    let (_, body) = http_get(web, "/api/v1/query?query=up%7Bjob%3D%22muninn%22%7D").unwrap();
    assert_eq!(vector_values(&body), [1.0], "{body}");
    assert!(started.elapsed() < DEADLINE, "took {:?}", started.elapsed());
}
