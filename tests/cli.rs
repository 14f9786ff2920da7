//! The `muninn` command line, run as a real process.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_muninn");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

const GOOD_ZONE: &str = "$ORIGIN example.org.\n\
$TTL 300\n\
@ IN SOA ns1 hostmaster 42 3600 600 86400 300\n\
@ IN NS ns1\n\
ns1 IN A 192.0.2.1\n\
www IN A 192.0.2.2\n";

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("muninn-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn muninn(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn check_zone_accepts_the_shipped_zone() {
    let zone = Path::new(REPO).join("zones/example.test.zone");
    let out = muninn(&["check-zone", p(&zone)]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    // Origin taken from the file name, serial read from the SOA.
    assert!(text.contains("zone example.test.: OK"), "{text}");
    assert!(text.contains("serial 2024010101"), "{text}");
}

#[test]
fn check_zone_reports_every_error_as_file_line() {
    let dir = TempDir::new("badzone");
    let zone = dir.write(
        "example.org.zone",
        &format!("{GOOD_ZONE}bad1 IN A 192.0.2.300\nbad2 IN AAAA 2001:db8::g\nbad3 IN MX mail\n"),
    );
    let out = muninn(&["check-zone", p(&zone)]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for line in [7, 8, 9] {
        let prefix = format!("{}:{line}: ", zone.display());
        assert!(
            text.lines().any(|l| l.starts_with(&prefix)),
            "no error at line {line}:\n{text}"
        );
    }
    // Exactly the three bad lines, plus the summary.
    assert_eq!(text.lines().count(), 4, "{text}");
}

#[test]
fn check_zone_origin_flag_and_default() {
    let dir = TempDir::new("origin");
    // Not named NAME.zone: the origin cannot be guessed.
    let zone = dir.write("db.example", GOOD_ZONE);
    let out = muninn(&["check-zone", p(&zone)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--origin"));

    let out = muninn(&["check-zone", p(&zone), "--origin", "example.org"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // With another origin the records fall outside the zone.
    let out = muninn(&["check-zone", p(&zone), "--origin", "example.net."]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains(&format!("{}:", zone.display())));
}

#[test]
fn check_zone_missing_file_fails() {
    let out = muninn(&["check-zone", "/nonexistent/example.org.zone"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("/nonexistent/example.org.zone"));
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let config = Path::new(REPO).join("config.toml");
    let out = muninn(&["check-config", p(&config)]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("OK"), "{text}");
}

#[test]
fn check_config_names_an_unknown_key_and_its_line() {
    let dir = TempDir::new("badconfig");
    let config = dir.write(
        "muninn.toml",
        "[server]\nlisten = [\"127.0.0.1:5300\"]\n\n[limits]\nmax_udp_paylaod = 1232\n",
    );
    let out = muninn(&["check-config", p(&config)]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("max_udp_paylaod"), "{text}");
    assert!(text.contains("line 5"), "{text}");
    assert!(text.contains(p(&config)), "{text}");
}

#[test]
fn check_config_rejects_semantic_errors() {
    let dir = TempDir::new("semconfig");
    let config = dir.write("muninn.toml", "[limits]\nmax_udp_payload = 400\n");
    let out = muninn(&["check-config", p(&config)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("max_udp_payload"), "{}", stdout(&out));

    let config = dir.write("nodir.toml", "[zones]\ndirectory = \"missing\"\n");
    let out = muninn(&["check-config", p(&config)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("missing"), "{}", stdout(&out));
}

#[test]
fn help_and_version() {
    let out = muninn(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for word in ["serve", "check-zone", "check-config"] {
        assert!(text.contains(word), "{text}");
    }
    let out = muninn(&["serve", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for flag in ["--config", "--listen", "--zones", "--data-dir", "--workers"] {
        assert!(text.contains(flag), "{text}");
    }
    let out = muninn(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out).trim(),
        format!("muninn {}", env!("CARGO_PKG_VERSION"))
    );
    // Usage errors exit 2 (clap's convention).
    assert_eq!(
        muninn(&["serve", "--listen", "nowhere"]).status.code(),
        Some(2)
    );
    assert_eq!(muninn(&[]).status.code(), Some(2));
}

#[test]
fn serve_with_a_bad_config_exits_non_zero() {
    let dir = TempDir::new("servebad");
    let config = dir.write("muninn.toml", "bogus = 1\n");
    let out = muninn(&["serve", "--config", p(&config)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
}
