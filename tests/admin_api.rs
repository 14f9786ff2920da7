//! The admin HTTP API against the real binary over loopback: authentication, zone and
//! record listing with filters, adds (served over DNS with the next serial), replaces and
//! deletes, every kind of bad input refused with 400 and the zone unchanged, connection
//! and list limits, purge jobs, and a server that refuses to start an unauthenticated API.

mod admin_harness;
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use admin_harness::{AdminServer, BIN, TOKEN, http, write_setup};
use common::TempDir;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

const RECORDS: &str = "/v1/zones/example.test./records";

#[test]
fn authentication_and_zone_list() {
    let server = AdminServer::start();
    let api = server.api;

    let r = http(api, "GET", "/v1/zones", None, None);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"muninn\"")
    );
    assert_eq!(
        r.error(),
        "missing credentials: send Authorization: Bearer <token>"
    );
    // Unknown paths are not revealed to unauthenticated clients either.
    assert_eq!(http(api, "GET", "/v1/nope", None, None).status, 401);
    let r = http(api, "GET", "/v1/zones", Some("Basic dXNlcjpwYXNz"), None);
    assert_eq!(r.status, 401);
    let r = http(api, "GET", "/v1/zones", Some("Bearer wrong-token"), None);
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.error(), "invalid bearer token");
    assert_eq!(r.header("www-authenticate"), None);
    let prefix = &TOKEN[..TOKEN.len() - 1];
    let r = http(
        api,
        "GET",
        "/v1/zones",
        Some(&format!("Bearer {prefix}")),
        None,
    );
    assert_eq!(r.status, 403);

    // RFC 9110 §11.1: the scheme is case-insensitive.
    let r = http(
        api,
        "GET",
        "/v1/zones",
        Some(&format!("bearer {TOKEN}")),
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!([
            {"name": "example.test.", "managed": "store", "serial": 10, "records": 5},
            {"name": "file.test.", "managed": "file", "serial": 1, "records": 3},
        ])
    );

    let r = server.call("GET", "/v1/nope", None);
    assert_eq!(
        (r.status, r.error()),
        (404, "no endpoint /v1/nope".to_string())
    );
    let r = server.call("GET", "/metrics", None);
    assert_eq!(r.status, 404);
    let r = server.call("PUT", "/v1/zones", None);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
    assert_eq!(r.error(), "method PUT not allowed; allowed: GET");
    let r = server.call("PATCH", RECORDS, None);
    assert_eq!(r.header("allow"), Some("GET, POST, DELETE"));
}

fn record<'a>(list: &'a Value, name: &str, rtype: &str) -> &'a Value {
    list["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name && r["type"] == rtype)
        .unwrap_or_else(|| panic!("no {name} {rtype} in {list}"))
}

/// Owner, type and data of each listed record.
fn listed(server: &AdminServer, query: &str) -> Vec<String> {
    let r = server.call("GET", &format!("{RECORDS}{query}"), None);
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r["name"].as_str().unwrap(),
                r["type"].as_str().unwrap(),
                r["data"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn changes_are_served_over_dns_with_the_next_serial() {
    let server = AdminServer::start();
    assert_eq!(server.serial("example.test."), 10);
    assert_eq!(
        server.answers("www2.example.test.", RecordType::A).0,
        ResponseCode::NXDomain
    );

    // Add: relative names in owners and RDATA, tags; one transaction.
    let r = server.call(
        "POST",
        RECORDS,
        Some(
            &json!({"records": [
                {"name": "www2", "type": "A", "ttl": 300, "data": "192.0.2.2", "tags": ["team=dns", "env=prod"]},
                {"name": "@", "type": "mx", "ttl": 3600, "data": "10 mail"},
            ]})
            .to_string(),
        ),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"old_serial": 10, "new_serial": 11, "added": 2, "removed": 0})
    );
    server.wait_serial("example.test.", 11);
    assert_eq!(
        server.answers("www2.example.test.", RecordType::A),
        (ResponseCode::NoError, vec!["300 192.0.2.2".to_string()])
    );
    assert_eq!(
        server.answers("example.test.", RecordType::MX).1,
        ["3600 10 mail.example.test."]
    );

    // List: every record with its metadata, and each filter.
    let r = server.call("GET", RECORDS, None);
    assert_eq!(r.status, 200);
    let list = r.json();
    assert_eq!(
        (list["zone"].clone(), list["serial"].clone()),
        (json!("example.test."), json!(11))
    );
    assert_eq!(list["truncated"], json!(false));
    assert_eq!(list["records"].as_array().unwrap().len(), 7);
    let www2 = record(&list, "www2.example.test.", "A");
    assert_eq!(www2["ttl"], 300);
    assert_eq!(www2["data"], "192.0.2.2");
    assert_eq!(www2["tags"], json!(["env=prod", "team=dns"]));
    assert_eq!(www2["source"], "api");
    assert!(www2["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(www2["updated"], www2["created"]);
    let www = record(&list, "www.example.test.", "A");
    assert_eq!(
        (www["source"].clone(), www["tags"].clone()),
        (json!("file"), json!([]))
    );
    let soa = record(&list, "example.test.", "SOA");
    assert_eq!(
        soa["data"],
        "ns1.example.test. hostmaster.example.test. 11 3600 600 86400 300"
    );
    assert_eq!(
        record(&list, "alias.example.test.", "CNAME")["data"],
        "www.example.test."
    );

    assert_eq!(
        listed(&server, "?name=www2"),
        ["www2.example.test. A 192.0.2.2"]
    );
    assert_eq!(
        listed(&server, "?type=A"),
        [
            "ns1.example.test. A 192.0.2.53",
            "www.example.test. A 192.0.2.1",
            "www2.example.test. A 192.0.2.2"
        ]
    );
    assert_eq!(
        listed(&server, "?tag=env=prod"),
        ["www2.example.test. A 192.0.2.2"]
    );
    assert_eq!(
        listed(&server, "?tag=env%3Dprod&type=A"),
        ["www2.example.test. A 192.0.2.2"]
    );
    assert!(listed(&server, "?tag=env=dev").is_empty());
    assert!(listed(&server, "?tag=env=prod&type=MX").is_empty());
    assert_eq!(
        listed(&server, "?name=example.test.&type=MX"),
        ["example.test. MX 10 mail.example.test."]
    );
    assert_eq!(
        listed(&server, "?name=WWW&type=a"),
        ["www.example.test. A 192.0.2.1"]
    );

    // Replace: the RRset named is replaced in the same transaction.
    let r = server.call(
        "POST",
        RECORDS,
        Some(
            r#"{"records":[{"name":"www","type":"A","ttl":60,"data":"192.0.2.9"}],"replace":true}"#,
        ),
    );
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            json!({"old_serial": 11, "new_serial": 12, "added": 1, "removed": 1})
        )
    );
    server.wait_serial("example.test.", 12);
    assert_eq!(
        server.answers("www.example.test.", RecordType::A).1,
        ["60 192.0.2.9"]
    );

    // Adding to an RRset gives it the new record's TTL (RFC 2181 §5.2).
    let r = server.call(
        "POST",
        RECORDS,
        Some(r#"{"records":[{"name":"www","type":"A","ttl":120,"data":"192.0.2.10"}]}"#),
    );
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            json!({"old_serial": 12, "new_serial": 13, "added": 2, "removed": 1})
        )
    );
    server.wait_serial("example.test.", 13);
    assert_eq!(
        server.answers("www.example.test.", RecordType::A).1,
        ["120 192.0.2.10", "120 192.0.2.9"]
    );

    // Delete one record, one RRset, one name.
    let r = server.call(
        "DELETE",
        RECORDS,
        Some(r#"{"name":"www","type":"A","data":"192.0.2.9"}"#),
    );
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            json!({"old_serial": 13, "new_serial": 14, "added": 0, "removed": 1})
        )
    );
    server.wait_serial("example.test.", 14);
    assert_eq!(
        server.answers("www.example.test.", RecordType::A).1,
        ["120 192.0.2.10"]
    );
    let r = server.call("DELETE", RECORDS, Some(r#"{"name":"@","type":"MX"}"#));
    assert_eq!((r.status, r.json()["removed"].clone()), (200, json!(1)));
    let r = server.call("DELETE", RECORDS, Some(r#"{"name":"www2.example.test."}"#));
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            json!({"old_serial": 15, "new_serial": 16, "added": 0, "removed": 1})
        )
    );
    server.wait_serial("example.test.", 16);
    assert_eq!(
        server.answers("www2.example.test.", RecordType::A).0,
        ResponseCode::NXDomain
    );
    assert!(server.answers("example.test.", RecordType::MX).1.is_empty());
    assert!(listed(&server, "?tag=env=prod").is_empty());

    // A supplied SOA replaces the SOA; its greater serial wins (RFC 1982).
    let r = server.call(
        "POST",
        RECORDS,
        Some(r#"{"records":[{"name":"@","type":"SOA","ttl":300,"data":"ns1 hostmaster 100 7200 600 86400 60"}]}"#),
    );
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            json!({"old_serial": 16, "new_serial": 100, "added": 1, "removed": 1})
        )
    );
    server.wait_serial("example.test.", 100);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let server = AdminServer::start_with("max_body_size = 4096\n");
    let before = server.call("GET", RECORDS, None).body;
    let add = |name: &str, rtype: &str, data: &str| {
        json!({"records": [{"name": name, "type": rtype, "ttl": 300, "data": data}]}).to_string()
    };
    let big = add("big", "TXT", &"\"x\" ".repeat(2000));
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("POST", RECORDS, add("a..b", "A", "192.0.2.1"), 400, "bad owner name \"a..b\""),
        ("POST", RECORDS, add("www", "A", "192.0.2"), 400, "records[0]: bad record www.example.test. A: invalid IPv4 address '192.0.2'"),
        ("POST", RECORDS, add("www", "MX", "10"), 400, "MX record needs 2 RDATA fields, found 1"),
        ("POST", RECORDS, add("www", "A", "192.0.2.1\n192.0.2.2"), 400, "one line"),
        ("POST", RECORDS, add("www", "BOGUS", "1"), 400, "records[0]: unknown record type \"BOGUS\""),
        ("POST", RECORDS, add("alias", "A", "192.0.2.5"), 400, "alias.example.test. would have a CNAME and other data"),
        ("POST", RECORDS, add("www", "CNAME", "elsewhere.test."), 400, "www.example.test. would have a CNAME and other data"),
        ("POST", RECORDS, add("www.other.test.", "A", "192.0.2.1"), 400, "www.other.test. is not in zone example.test."),
        ("POST", "/v1/zones/nope.test./records", add("www", "A", "192.0.2.1"), 400, "zone nope.test. is not served here"),
        ("GET", "/v1/zones/nope.test./records", String::new(), 400, "zone nope.test. is not served here"),
        ("POST", "/v1/zones/file.test./records", add("www", "A", "192.0.2.1"), 400, "zone file.test. is managed by its zone file"),
        ("POST", RECORDS, "{".into(), 400, "bad JSON body: EOF while parsing"),
        ("POST", RECORDS, r#"{"records":[],"bogus":1}"#.into(), 400, "bad JSON body: unknown field `bogus`"),
        ("POST", RECORDS, r#"{"records":[{"name":"www","type":"A","data":"192.0.2.1"}]}"#.into(), 400, "bad JSON body: missing field `ttl`"),
        ("POST", RECORDS, r#"{"records":[]}"#.into(), 400, "no records given"),
        ("POST", RECORDS, r#"{"records":[{"name":"w","type":"A","ttl":4294967295,"data":"192.0.2.1"}]}"#.into(), 400, "TTL 4294967295 exceeds 2^31-1"),
        ("POST", RECORDS, r#"{"records":[{"name":"w","type":"A","ttl":1,"data":"192.0.2.1","tags":["noequals"]}]}"#.into(), 400, "bad tag \"noequals\""),
        ("POST", RECORDS, big, 413, "request body larger than admin.max_body_size (4096 bytes)"),
        ("DELETE", RECORDS, r#"{"name":"nothere"}"#.into(), 400, "the change would change nothing"),
        ("DELETE", RECORDS, r#"{"name":"@","type":"SOA"}"#.into(), 400, "the SOA record cannot be deleted"),
        ("DELETE", RECORDS, r#"{"name":"@","type":"NS"}"#.into(), 400, "zone example.test. would have no NS records at its apex"),
        ("DELETE", RECORDS, r#"{"name":"www","data":"192.0.2.1"}"#.into(), 400, "\"data\" needs \"type\""),
        ("GET", "/v1/zones/example.test./records?color=red", String::new(), 400, "unknown query parameter \"color\""),
        ("GET", "/v1/zones/example.test./records?tag=x", String::new(), 400, "bad tag \"x\""),
        ("GET", "/v1/zones/example.test./records?type=NOPE", String::new(), 400, "unknown record type \"NOPE\""),
        ("GET", "/v1/zones/a..b/records", String::new(), 400, "bad zone name \"a..b\""),
    ];
    for (method, path, body, status, message) in &cases {
        let body = (!body.is_empty()).then_some(body.as_str());
        let r = server.call(method, path, body);
        assert_eq!(r.status, *status, "{method} {path} {body:?}: {r:?}");
        assert!(
            r.error().contains(message),
            "{method} {path} {body:?}: {:?} does not contain {message:?}",
            r.error()
        );
    }
    // Nothing changed: same serial over DNS, same records.
    assert_eq!(server.serial("example.test."), 10);
    assert_eq!(server.call("GET", RECORDS, None).body, before);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn limits_bound_connections_idle_clients_and_lists() {
    let server = AdminServer::start_with(
        "max_connections = 1\nheader_timeout_ms = 500\nmax_list_records = 3\n",
    );
    // An idle connection holds the only slot: the next one is closed without a reply.
    let mut idle = TcpStream::connect(server.api).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut second = TcpStream::connect(server.api).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = Vec::new();
    let started = Instant::now();
    let closed = match second.read_to_end(&mut buf) {
        Ok(n) => n == 0,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "{:?}", String::from_utf8_lossy(&buf));
    assert!(started.elapsed() < Duration::from_secs(1));
    // The idle one is closed once its request head is overdue.
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let _ = idle.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(3));
    // Then the slot is free again (the server notices the closed connection shortly).
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(server.api).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let req = format!(
            "GET /v1/zones HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        );
        let mut reply = String::new();
        if s.write_all(req.as_bytes()).is_ok() {
            let _ = s.read_to_string(&mut reply);
        }
        if reply.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed: {reply:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A list stops at max_list_records and says so.
    let list = server.call("GET", RECORDS, None).json();
    assert_eq!(list["records"].as_array().unwrap().len(), 3);
    assert_eq!(list["truncated"], true);
    let list = server
        .call("GET", &format!("{RECORDS}?type=A"), None)
        .json();
    assert_eq!(list["records"].as_array().unwrap().len(), 2);
    assert_eq!(list["truncated"], false);
}

/// Runs `muninn serve --config CONFIG` and expects it to exit with an error (killed if it
/// does not within 20 s); returns its standard error.
fn serve_fails(config: &std::path::Path) -> String {
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("muninn serve kept running with {}", config.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "{err}");
    err
}

#[test]
fn an_unauthenticated_api_is_never_served() {
    let dir = TempDir::new("admin-notoken");
    let (config, _, _) = write_setup(dir.path(), "", "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("token_file = \"admin.token\"\n", "")).unwrap();
    let err = serve_fails(&config);
    assert!(
        err.contains("admin.token_file: required when admin.enabled = true"),
        "{err}"
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("admin.token_file"));

    // A token file that is empty or missing stops the server too.
    std::fs::write(&config, &text).unwrap();
    std::fs::write(dir.path().join("admin.token"), "\n").unwrap();
    let err = serve_fails(&config);
    assert!(err.contains("the token is empty"), "{err}");
    std::fs::remove_file(dir.path().join("admin.token")).unwrap();
    let err = serve_fails(&config);
    assert!(
        err.contains("admin.token_file") && err.contains("cannot read"),
        "{err}"
    );
}

/// Polls a job until it is no longer running (20 s at most).
fn finished_job(server: &AdminServer, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = server.call("GET", &format!("/v1/jobs/{id}"), None);
        assert_eq!(r.status, 200, "{r:?}");
        let job = r.json();
        if job["state"] != "running" {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} still running: {job}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn purge_jobs() {
    let server = AdminServer::start();
    let mut records: Vec<Value> = (0..30)
        .map(|i| json!({"name": format!("old{i}"), "type": "A", "ttl": 300, "data": format!("192.0.2.{i}"), "tags": ["batch=old"]}))
        .collect();
    records.push(json!({"name": "keep", "type": "A", "ttl": 300, "data": "192.0.2.200", "tags": ["batch=keep"]}));
    records.push(json!({"name": "both", "type": "TXT", "ttl": 300, "data": "\"x\"", "tags": ["batch=old", "pin=yes"]}));
    let r = server.call(
        "POST",
        RECORDS,
        Some(&json!({"records": records}).to_string()),
    );
    assert_eq!(r.status, 200, "{r:?}");
    server.wait_serial("example.test.", 11);

    // Dry run: counts, changes nothing.
    let r = server.call(
        "POST",
        "/v1/purges",
        Some(r#"{"tag":"batch=old","dry_run":true}"#),
    );
    assert_eq!(r.status, 202, "{r:?}");
    let job = r.json();
    let id = job["id"].as_u64().unwrap();
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/jobs/{id}").as_str())
    );
    assert_eq!(job["kind"], "purge");
    assert_eq!(job["spec"]["tag"], "batch=old");
    assert_eq!(job["spec"]["dry_run"], true);
    let job = finished_job(&server, id);
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(
        (job["processed"].clone(), job["deleted"].clone()),
        (json!(31), json!(0))
    );
    assert_eq!(job["error"], Value::Null);
    assert_eq!(server.serial("example.test."), 11);
    assert_eq!(listed(&server, "?tag=batch=old").len(), 31);

    // The real purge, limited to the zone.
    let r = server.call(
        "POST",
        "/v1/purges",
        Some(r#"{"tag":"batch=old","zone":"example.test."}"#),
    );
    assert_eq!(r.status, 202, "{r:?}");
    let id2 = r.json()["id"].as_u64().unwrap();
    assert_ne!(id2, id);
    let job = finished_job(&server, id2);
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(
        (
            job["processed"].clone(),
            job["deleted"].clone(),
            job["total"].clone()
        ),
        (json!(31), json!(31), json!(31))
    );
    assert!(job["finished"].as_u64().unwrap() >= job["started"].as_u64().unwrap());
    assert!(listed(&server, "?tag=batch=old").is_empty());
    assert_eq!(
        listed(&server, "?tag=batch=keep"),
        ["keep.example.test. A 192.0.2.200"]
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.answers("old7.example.test.", RecordType::A).0 != ResponseCode::NXDomain {
        assert!(Instant::now() < deadline, "old7 still served");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.serial("example.test.") > 11);
    assert_eq!(
        server.answers("both.example.test.", RecordType::TXT).0,
        ResponseCode::NXDomain
    );
    assert_eq!(
        server.answers("keep.example.test.", RecordType::A).1,
        ["300 192.0.2.200"]
    );

    let r = server.call("GET", "/v1/jobs", None);
    assert_eq!(r.status, 200);
    let ids: Vec<u64> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [id, id2]);
    let r = server.call("GET", "/v1/jobs/999", None);
    assert_eq!((r.status, r.error()), (404, "no job 999".to_string()));
    let r = server.call("GET", "/v1/jobs/abc", None);
    assert_eq!(
        (r.status, r.error()),
        (400, "bad job id \"abc\"".to_string())
    );
    assert_eq!(server.call("GET", "/v1/purges", None).status, 405);

    // Refused purges start no job.
    for (body, message) in [
        (r#"{"tag":"nope"}"#, "bad tag \"nope\""),
        (
            r#"{"tag":"a=b","zone":"file.test."}"#,
            "zone file.test. is managed by its zone file",
        ),
        (
            r#"{"tag":"a=b","zone":"nope.test."}"#,
            "zone nope.test. is not served here",
        ),
        (r#"{"tag":"a=b","dryrun":true}"#, "unknown field `dryrun`"),
        (r#"{"zone":"example.test."}"#, "missing field `tag`"),
    ] {
        let r = server.call("POST", "/v1/purges", Some(body));
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert!(r.error().contains(message), "{body}: {:?}", r.error());
    }
    assert_eq!(
        server
            .call("GET", "/v1/jobs", None)
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
