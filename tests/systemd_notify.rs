//! The systemd notify protocol, driven through a NOTIFY_SOCKET this test owns: READY=1 once
//! zones are served, RELOADING=1 then READY=1 around a SIGHUP reload, WATCHDOG=1 pings when
//! WATCHDOG_USEC is set, STOPPING=1 on SIGTERM — in that order.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

/// Receives datagrams until one contains `wanted` (returns everything received meanwhile).
fn wait_for(sock: &UnixDatagram, wanted: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.lines().any(|l| l == wanted);
            seen.push(msg);
            if hit {
                return;
            }
        }
    }
    panic!("no {wanted} within 10 s; received: {seen:?}");
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

#[test]
fn notify_protocol_messages_in_order() {
    let dir = common::TempDir::new("notify");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let path_str = path.to_str().unwrap();
    // 400 ms watchdog: the server pings every 200 ms.
    let server =
        common::start_muninn_with_env(&[("NOTIFY_SOCKET", path_str), ("WATCHDOG_USEC", "400000")]);

    let mut seen = Vec::new();
    wait_for(&sock, "READY=1", &mut seen);
    assert!(
        seen.last().unwrap().contains("STATUS=serving"),
        "READY carries a status: {seen:?}"
    );
    wait_for(&sock, "WATCHDOG=1", &mut seen);

    seen.clear();
    signal(server.pid(), "HUP");
    wait_for(&sock, "RELOADING=1", &mut seen);
    let reloading = seen.last().unwrap().clone();
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 carries MONOTONIC_USEC: {reloading:?}"
    );
    wait_for(&sock, "READY=1", &mut seen);

    seen.clear();
    signal(server.pid(), "TERM");
    wait_for(&sock, "STOPPING=1", &mut seen);
    assert!(
        !seen.iter().any(|m| m.contains("READY=1")),
        "no READY after SIGTERM: {seen:?}"
    );
}
