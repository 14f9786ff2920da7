//! `muninn records` end to end: the CLI talks to a real server's admin API over loopback;
//! changes are checked over DNS, errors carry the server's message and exit 1.

mod admin_harness;
mod common;

use std::path::Path;
use std::process::{Command, Output};

use admin_harness::{AdminServer, BIN};
use common::free_port;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

fn records(args: &[&str], config: Option<&Path>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("records").args(args).args(["--timeout", "20"]);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.env_remove("RUST_LOG").output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failed(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty());
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn add_list_delete_through_the_cli() {
    let server = AdminServer::start();
    let config = Some(server.config.as_path());
    let zone = "example.test.";

    let out = records(
        &[
            "add",
            zone,
            "www3",
            "300",
            "A",
            "192.0.2.3",
            "--tag",
            "env=prod",
        ],
        config,
    );
    assert_eq!(
        ok(&out),
        "zone example.test.: serial 10 -> 11, 1 added, 0 removed\n"
    );
    server.wait_serial(zone, 11);
    assert_eq!(
        server.answers("www3.example.test.", RecordType::A),
        (ResponseCode::NoError, vec!["300 192.0.2.3".to_string()])
    );

    // Several RDATA words; quoted TXT strings keep their spaces; names relative to the zone.
    ok(&records(
        &[
            "add",
            zone,
            "txt",
            "60",
            "TXT",
            "\"hello world\"",
            "\"two\"",
        ],
        config,
    ));
    ok(&records(
        &["add", zone, "@", "3600", "MX", "10", "mail"],
        config,
    ));
    server.wait_serial(zone, 13);
    let resp = common::query(
        server.dns,
        "txt.example.test.",
        RecordType::TXT,
        &common::QueryOpts::default(),
    );
    let strings: Vec<Vec<u8>> = match resp.answers.first().map(|r| &r.data) {
        Some(RData::TXT(txt)) => txt.txt_data.iter().map(|s| s.to_vec()).collect(),
        other => panic!("no TXT: {other:?}"),
    };
    assert_eq!(strings, [b"hello world".to_vec(), b"two".to_vec()]);
    assert_eq!(
        server.answers("example.test.", RecordType::MX).1,
        ["3600 10 mail.example.test."]
    );

    // --replace replaces the RRset.
    assert_eq!(
        ok(&records(
            &["add", zone, "www3", "120", "A", "192.0.2.33", "--replace"],
            config
        )),
        "zone example.test.: serial 13 -> 14, 1 added, 1 removed\n"
    );

    // List: zone-file lines with tags in a comment; filters; JSON.
    assert_eq!(
        ok(&records(&["list", zone, "--type", "A"], config)),
        "; zone example.test. serial 14\n\
         ns1.example.test.\t300\tIN\tA\t192.0.2.53\n\
         www.example.test.\t300\tIN\tA\t192.0.2.1\n\
         www3.example.test.\t120\tIN\tA\t192.0.2.33\n"
    );
    ok(&records(
        &[
            "add",
            zone,
            "tagged",
            "300",
            "AAAA",
            "2001:db8::1",
            "--tag",
            "env=prod",
            "--tag",
            "team=dns",
        ],
        config,
    ));
    assert_eq!(
        ok(&records(&["list", zone, "--tag", "env=prod"], config)),
        "; zone example.test. serial 15\n\
         tagged.example.test.\t300\tIN\tAAAA\t2001:db8::1\t; env=prod team=dns\n"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&records(
        &["list", zone, "--name", "txt", "--json"],
        config,
    )))
    .unwrap();
    assert_eq!(json["records"][0]["data"], "\"hello world\" \"two\"");
    assert_eq!(json["records"][0]["source"], "api");
    assert_eq!(json["records"].as_array().unwrap().len(), 1);

    // Delete one record, then a whole name.
    assert_eq!(
        ok(&records(
            &["delete", zone, "www3", "A", "192.0.2.33"],
            config
        )),
        "zone example.test.: serial 15 -> 16, 0 added, 1 removed\n"
    );
    ok(&records(&["delete", zone, "txt.example.test."], config));
    server.wait_serial(zone, 17);
    assert_eq!(
        server.answers("www3.example.test.", RecordType::A).0,
        ResponseCode::NXDomain
    );
    assert_eq!(
        server.answers("txt.example.test.", RecordType::TXT).0,
        ResponseCode::NXDomain
    );

    // Without --config: --server and --token-file.
    let url = format!("http://{}", server.api);
    let token = server.dir.path().join("admin.token");
    let out = Command::new(BIN)
        .args([
            "records",
            "list",
            zone,
            "--name",
            "www",
            "--server",
            &url,
            "--token-file",
        ])
        .arg(&token)
        .output()
        .unwrap();
    assert_eq!(
        ok(&out),
        "; zone example.test. serial 17\nwww.example.test.\t300\tIN\tA\t192.0.2.1\n"
    );
}

#[test]
fn errors_carry_the_servers_message_and_exit_1() {
    let server = AdminServer::start();
    let config = Some(server.config.as_path());
    let zone = "example.test.";

    let err = failed(&records(&["add", zone, "www", "300", "A", "1.2.3"], config));
    assert_eq!(
        err,
        "muninn: records[0]: bad record www.example.test. A: invalid IPv4 address '1.2.3' (HTTP 400)\n"
    );
    let err = failed(&records(
        &["add", zone, "alias", "300", "A", "192.0.2.9"],
        config,
    ));
    assert!(err.contains("would have a CNAME and other data"), "{err}");
    let err = failed(&records(&["delete", zone, "nothere"], config));
    assert_eq!(err, "muninn: the change would change nothing (HTTP 400)\n");
    let err = failed(&records(&["list", "file.test.", "--tag", "bad"], config));
    assert!(err.contains("bad tag \"bad\""), "{err}");
    let err = failed(&records(
        &["add", "file.test.", "x", "300", "A", "192.0.2.9"],
        config,
    ));
    assert!(err.contains("managed by its zone file"), "{err}");
    assert_eq!(server.serial(zone), 10);

    // A wrong token.
    let wrong = server.dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let out = Command::new(BIN)
        .args(["records", "list", zone, "--token-file"])
        .arg(&wrong)
        .arg("--config")
        .arg(&server.config)
        .output()
        .unwrap();
    assert_eq!(failed(&out), "muninn: invalid bearer token (HTTP 403)\n");

    // Nobody listening.
    let port = free_port();
    let out = Command::new(BIN)
        .args([
            "records",
            "list",
            zone,
            "--server",
            &format!("http://127.0.0.1:{port}"),
        ])
        .arg("--token-file")
        .arg(&wrong)
        .output()
        .unwrap();
    let err = failed(&out);
    assert!(
        err.starts_with(&format!(
            "muninn: cannot connect to the admin API at 127.0.0.1:{port}"
        )),
        "{err}"
    );

    // No token at all.
    let out = Command::new(BIN)
        .args(["records", "list", zone])
        .output()
        .unwrap();
    assert!(failed(&out).contains("no token: pass --token-file FILE"));
}

#[test]
fn purge_with_progress_then_dry_run_and_real() {
    let server = AdminServer::start();
    let config = Some(server.config.as_path());
    let batch: Vec<serde_json::Value> = (0..50)
        .map(|i| serde_json::json!({"name": format!("p{i}"), "type": "A", "ttl": 300, "data": format!("192.0.2.{i}"), "tags": ["env=old"]}))
        .collect();
    let r = server.call(
        "POST",
        "/v1/zones/example.test./records",
        Some(&serde_json::json!({"records": batch}).to_string()),
    );
    assert_eq!(r.status, 200, "{r:?}");
    server.wait_serial("example.test.", 11);

    let out = records(&["purge", "--tag", "env=old", "--dry-run"], config);
    let stdout = ok(&out);
    assert!(
        stdout.starts_with(
            "purge job 1 (tag env=old, dry run): 50 would be deleted, 0 kept, 50 processed, in "
        ),
        "{stdout}"
    );
    // Not a terminal: progress lines, the last one complete.
    let stderr = String::from_utf8(out.stderr).unwrap();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("[##############################] 100% 50/50 processed, 50 would go, "),
        "{stderr}"
    );
    assert_eq!(server.serial("example.test."), 11);

    let out = records(
        &["purge", "--tag", "env=old", "--zone", "example.test."],
        config,
    );
    let stdout = ok(&out);
    assert!(
        stdout.starts_with(
            "purge job 2 (tag env=old in zone example.test.): 50 deleted, 0 kept, 50 processed, in "
        ),
        "{stdout}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while server.answers("p49.example.test.", RecordType::A).0 != ResponseCode::NXDomain {
        assert!(std::time::Instant::now() < deadline, "p49 still served");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        server.answers("www.example.test.", RecordType::A).1,
        ["300 192.0.2.1"]
    );

    let err = failed(&records(&["purge", "--tag", "nokey"], config));
    assert_eq!(
        err,
        "muninn: bad tag \"nokey\": expected key=value (key: letters, digits, - _ .; value: no spaces) (HTTP 400)\n"
    );
    let err = failed(&records(
        &["purge", "--tag", "a=b", "--zone", "file.test."],
        config,
    ));
    assert!(err.contains("managed by its zone file"), "{err}");
}
