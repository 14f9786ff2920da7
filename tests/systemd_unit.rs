//! The shipped systemd unit is valid (`systemd-analyze verify`) and says what a packager
//! relies on: notify readiness, SIGHUP reload, a state directory, only CAP_NET_BIND_SERVICE.

use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../systemd/muninn.service");

fn directive(key: &str) -> Vec<&'static str> {
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn unit_declares_notify_reload_state_and_capabilities() {
    assert_eq!(directive("Type"), ["notify"]);
    assert_eq!(directive("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(directive("StateDirectory"), ["muninn"]);
    assert_eq!(directive("AmbientCapabilities"), ["CAP_NET_BIND_SERVICE"]);
    assert_eq!(directive("CapabilityBoundingSet"), ["CAP_NET_BIND_SERVICE"]);
    assert_eq!(directive("NoNewPrivileges"), ["yes"]);
    assert_eq!(directive("ProtectSystem"), ["strict"]);
    assert!(!directive("SystemCallFilter").is_empty());
    assert!(!directive("RestrictAddressFamilies").is_empty());
    assert!(!directive("WatchdogSec").is_empty());
}

#[test]
fn systemd_analyze_verify_passes() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        assert!(
            std::env::var("CI").is_err(),
            "systemd-analyze is missing in CI: install the systemd package"
        );
        eprintln!("SKIP: systemd-analyze not installed");
        return;
    }
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = std::env::temp_dir().join(format!("muninn-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("muninn.service");
    std::fs::write(
        &unit,
        UNIT.replace("/usr/local/bin/muninn", env!("CARGO_BIN_EXE_muninn")),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
