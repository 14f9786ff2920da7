//! The sampled query log of the real `muninn` binary: with `query_log_sample = 1` every
//! query (UDP and TCP) gives one JSON event on the target `muninn::query` with its client,
//! transport, name, type, rcode, size and latency; with 1 in 5, exactly every fifth query
//! of a worker is logged; without `query_log` nothing is.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{QueryOpts, TempDir, build_query, free_port};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const ZONE: &str = "$ORIGIN log.test.\n$TTL 300\n\
    @ IN SOA ns hostmaster 1 3600 600 86400 300\n\
    @ IN NS ns\n\
    ns IN A 192.0.2.53\n\
    www IN A 192.0.2.80\n";

/// The muninn binary serving `log.test.` with the given `[log]` section; killed by PID on
/// drop.
struct Muninn {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for Muninn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Muninn {
    fn start(log_section: &str) -> Muninn {
        for _ in 0..3 {
            let dir = TempDir::new("qlog");
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            fs::create_dir_all(dir.path().join("zones")).unwrap();
            fs::write(dir.path().join("zones/log.test.zone"), ZONE).unwrap();
            let config = dir.path().join("muninn.toml");
            fs::write(
                &config,
                format!(
                    "[server]\nlisten = [\"{addr}\"]\n[zones]\ndirectory = \"zones\"\n\
                     [runtime]\nworkers = 1\n[log]\nformat = \"json\"\n{log_section}"
                ),
            )
            .unwrap();
            let log = dir.path().join("muninn.log");
            let out = fs::File::create(&log).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_muninn"))
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap();
            let mut m = Muninn {
                child,
                log,
                addr,
                _dir: dir,
            };
            // Ready once it logs that it serves (no probe queries: they would be logged).
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if m.log_text().contains("muninn serving") {
                    return m;
                }
                if let Ok(Some(_)) = m.child.try_wait() {
                    break; // e.g. the port was taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!("muninn did not start:\n{}", m.log_text());
        }
        panic!("muninn did not start in 3 attempts");
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The query log events so far.
    fn query_events(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("\"target\":\"muninn::query\""))
            .map(String::from)
            .collect()
    }

    /// Waits until `n` events are logged (they are written before the answer is sent, so
    /// this is normally immediate), then returns them.
    fn wait_events(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let events = self.query_events();
            if events.len() >= n || Instant::now() > deadline {
                return events;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn udp_ask(sock: &UdpSocket, server: SocketAddr, name: &str, id: u16) -> Message {
    let opts = QueryOpts {
        id,
        ..QueryOpts::default()
    };
    sock.send_to(&build_query(name, RecordType::A, &opts), server)
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

fn client_socket() -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock
}

#[test]
fn every_query_is_logged_with_sample_one() {
    let m = Muninn::start("query_log = true\nquery_log_sample = 1\n");
    let sock = client_socket();
    let client = sock.local_addr().unwrap();
    let mut expected = Vec::new();
    for i in 0..6u16 {
        let (name, rcode, want) = match i % 3 {
            0 => ("www.log.test.", ResponseCode::NoError, "NOERROR"),
            1 => ("nope.log.test.", ResponseCode::NXDomain, "NXDOMAIN"),
            _ => ("elsewhere.example.", ResponseCode::Refused, "REFUSED"),
        };
        let r = udp_ask(&sock, m.addr, name, i);
        assert_eq!(r.metadata.response_code, rcode);
        expected.push((client, "udp", name, want));
    }
    // Two queries on one TCP connection.
    let mut tcp = TcpStream::connect(m.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let tcp_client = tcp.local_addr().unwrap();
    for i in 0..2u16 {
        let q = build_query(
            "www.log.test.",
            RecordType::A,
            &QueryOpts {
                id: 100 + i,
                ..QueryOpts::default()
            },
        );
        tcp.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
        tcp.write_all(&q).unwrap();
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tcp.read_exact(&mut buf).unwrap();
        let r = Message::from_vec(&buf).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        expected.push((tcp_client, "tcp", "www.log.test.", "NOERROR"));
    }

    let events = m.wait_events(expected.len());
    assert_eq!(events.len(), expected.len(), "{events:#?}");
    for (event, (client, transport, qname, rcode)) in events.iter().zip(&expected) {
        for field in [
            "\"level\":\"INFO\"".to_string(),
            format!("\"client\":\"{client}\""),
            format!("\"transport\":\"{transport}\""),
            format!("\"qname\":\"{qname}\""),
            "\"qtype\":\"A\"".to_string(),
            format!("\"rcode\":\"{rcode}\""),
            "\"latency_us\":".to_string(),
        ] {
            assert!(event.contains(&field), "{field} missing in {event}");
        }
        // The size is the response's: more than a header and the question.
        let size: usize = event
            .split("\"size\":")
            .nth(1)
            .and_then(|s| s.split([',', '}']).next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no size in {event}"));
        assert!(size > 12 + qname.len(), "{event}");
    }
}

#[test]
fn one_in_n_queries_is_logged() {
    let m = Muninn::start("query_log = true\nquery_log_sample = 5\n");
    let sock = client_socket();
    for i in 0..23u16 {
        let r = udp_ask(&sock, m.addr, "www.log.test.", i);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    }
    // One worker thread: its 5th, 10th, 15th and 20th queries.
    let events = m.wait_events(4);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(m.query_events().len(), 4, "{events:#?}");
}

#[test]
fn query_log_is_off_by_default() {
    let m = Muninn::start("");
    let sock = client_socket();
    for i in 0..10u16 {
        let r = udp_ask(&sock, m.addr, "www.log.test.", i);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    }
    std::thread::sleep(Duration::from_millis(200));
    let log = m.log_text();
    // The server does log (at INFO), just not queries.
    assert!(log.contains("muninn serving"), "{log}");
    assert!(!log.contains("muninn::query"), "{log}");
}
