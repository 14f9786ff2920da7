//! Metrics: real UDP/TCP listeners in-process, known traffic, then `/metrics` scraped over
//! a real TCP socket and every counter checked for its exact value; `/health` before and
//! after ready; unknown paths; the exposition validated by `promtool` when installed.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use muninn::cache::{Entry, Key, Kind, RecordCache, Resolver, ResolverConfig};
use muninn::handler::{DEFAULT_MAX_UDP_PAYLOAD, Handler};
use muninn::metrics::{
    CONTENT_TYPE_OPENMETRICS, CONTENT_TYPE_PROMETHEUS, Metrics, spawn_metrics_server,
};
use muninn::server::{Limits, Listeners};
use muninn::zone::ZoneSet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

mod inproc;
use inproc::Tasks;

const ZONE: &str = "$ORIGIN example.com.\n$TTL 3600\n\
    @ IN SOA ns1 hostmaster 2024010101 7200 3600 1209600 300\n\
    @ IN NS ns1\n\
    ns1 IN A 192.0.2.1\n\
    www IN A 192.0.2.10\n\
    www IN A 192.0.2.11\n\
    mail IN MX 10 www\n";

fn zones() -> ZoneSet {
    inproc::zone_set(ZONE)
}

struct Server {
    listeners: Listeners,
    metrics: Arc<Metrics>,
    http: SocketAddr,
    tasks: Tasks,
}

impl Server {
    fn start() -> Server {
        Server::start_with(None)
    }

    /// With `resolver`: recursion for loopback clients, its maintenance tasks running and
    /// its figures in the metrics.
    fn start_with(resolver: Option<Resolver>) -> Server {
        let zones = Arc::new(ArcSwap::from_pointee(zones()));
        let mut handler = Handler::new(Arc::clone(&zones), DEFAULT_MAX_UDP_PAYLOAD);
        if let Some(r) = &resolver {
            handler = handler.with_resolver(r.clone());
        }
        let handler = Arc::new(handler);
        let tasks = Tasks::default();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let rt = tokio::runtime::Handle::current();
        if let Some(r) = &resolver {
            assert!(r.spawn_maintenance(&rt, tasks.token.child_token(), &tasks.tracker));
        }
        // Two UDP sockets: the scrape must sum their blocks.
        let listeners = tasks.spawn_listeners(handler, &[addr], &[addr], Limits::default(), 2);
        let metrics = Metrics::new(zones);
        metrics.add_listeners(&listeners);
        if let Some(r) = resolver {
            metrics.set_resolver(r);
        }
        let http = spawn_metrics_server(
            &rt,
            addr,
            Arc::clone(&metrics),
            tasks.token.child_token(),
            &tasks.tracker,
        )
        .unwrap();
        Server {
            listeners,
            metrics,
            http,
            tasks,
        }
    }

    async fn stop(self) {
        self.tasks
            .stop("listener and metrics tasks stop after cancellation")
            .await;
    }
}

fn query(id: u16, name: &str, rtype: RecordType, class: DNSClass) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_str(name).unwrap(), rtype);
    q.set_query_class(class);
    msg.add_query(q);
    msg.to_vec().unwrap()
}

async fn udp_ask(sock: &UdpSocket, server: SocketAddr, packet: &[u8]) -> Message {
    sock.send_to(packet, server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .expect("answer within 2 s")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

/// What Prometheus 2.x sends when scraping.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// One HTTP/1.1 request over a fresh TCP connection: (status, content type, body).
async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    http_accept(addr, method, path, None).await
}

async fn http_accept(
    addr: SocketAddr,
    method: &str,
    path: &str,
    accept: Option<&str>,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: muninn\r\n{accept}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
        .await
        .expect("response within 5 s")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("header/body separator");
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

/// Sample lines of an exposition, by series (`name{labels}` exactly as written).
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

async fn scrape(addr: SocketAddr) -> (String, HashMap<String, f64>) {
    let (status, content_type, body) =
        http_accept(addr, "GET", "/metrics", Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, CONTENT_TYPE_OPENMETRICS);
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    let s = samples(&body);
    (body, s)
}

/// Scrapes until `series` has `value` (counters added after the send trail the answer).
async fn scrape_when(addr: SocketAddr, series: &str, value: f64) -> (String, HashMap<String, f64>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (body, s) = scrape(addr).await;
        if s.get(series) == Some(&value) || Instant::now() > deadline {
            return (body, s);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[track_caller]
fn expect(s: &HashMap<String, f64>, series: &str, value: f64) {
    assert_eq!(s.get(series), Some(&value), "{series}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_after_known_traffic() {
    let server = Server::start();
    let udp = server.listeners.udp_addrs()[0];
    let tcp = server.listeners.tcp_addrs()[0];

    // Not ready yet: /health says so.
    let (status, _, body) = http(server.http, "GET", "/health").await;
    assert_eq!((status, body.as_str()), (503, "not ready\n"));

    // UDP: 7 answers, 3 NXDOMAIN, 2 REFUSED (not our zone), 1 REFUSED (class CH),
    // 1 FORMERR (two questions), and 2 dropped: a response (QR=1) and a 5-byte packet.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut id = 0u16;
    let mut ask = async |name: &str, rtype, class| {
        id += 1;
        udp_ask(&sock, udp, &query(id, name, rtype, class)).await
    };
    for _ in 0..7 {
        let r = ask("www.example.com.", RecordType::A, DNSClass::IN).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 2);
    }
    for i in 0..3 {
        let r = ask(
            &format!("nope{i}.example.com."),
            RecordType::A,
            DNSClass::IN,
        )
        .await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
    for _ in 0..2 {
        let r = ask("www.example.org.", RecordType::A, DNSClass::IN).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    }
    let r = ask("version.bind.", RecordType::TXT, DNSClass::CH).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);

    let mut two_questions = Message::new(99, MessageType::Query, OpCode::Query);
    two_questions.add_query(Query::query(
        Name::from_str("a.example.com.").unwrap(),
        RecordType::A,
    ));
    two_questions.add_query(Query::query(
        Name::from_str("b.example.com.").unwrap(),
        RecordType::A,
    ));
    let r = udp_ask(&sock, udp, &two_questions.to_vec().unwrap()).await;
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);

    let mut response = Message::new(100, MessageType::Response, OpCode::Query);
    response.add_query(Query::query(
        Name::from_str("www.example.com.").unwrap(),
        RecordType::A,
    ));
    sock.send_to(&response.to_vec().unwrap(), udp)
        .await
        .unwrap();
    sock.send_to(&[0, 1, 2, 3, 4], udp).await.unwrap();
    // Same client socket, so the same server socket: once this is answered, the two
    // dropped packets before it have been counted.
    let r = ask("www.example.com.", RecordType::A, DNSClass::IN).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);

    // TCP: 4 queries on one connection (2 A, 1 AAAA without data, 1 NXDOMAIN), then close.
    let mut conn = TcpStream::connect(tcp).await.unwrap();
    for (i, (name, rtype)) in [
        ("www.example.com.", RecordType::A),
        ("mail.example.com.", RecordType::MX),
        ("www.example.com.", RecordType::AAAA),
        ("gone.example.com.", RecordType::MX),
    ]
    .into_iter()
    .enumerate()
    {
        let q = query(500 + i as u16, name, rtype, DNSClass::IN);
        conn.write_all(&(q.len() as u16).to_be_bytes())
            .await
            .unwrap();
        conn.write_all(&q).await.unwrap();
        let len = conn.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        conn.read_exact(&mut buf).await.unwrap();
        let r = Message::from_vec(&buf).unwrap();
        let want = if i == 3 {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        };
        assert_eq!(r.metadata.response_code, want);
    }
    drop(conn);

    let m = &server.metrics;
    m.reload().record(true, Duration::from_millis(20));
    m.reload().record(false, Duration::from_millis(3));
    let loaded_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    m.reload()
        .zone_loaded(&Name::from_str("example.com.").unwrap(), loaded_at);
    // A zone not served is not reported, even when recorded.
    m.reload()
        .zone_loaded(&Name::from_str("gone.test.").unwrap(), loaded_at);
    // Zone load sources (the loader's counters, read at scrape time).
    let loads = Arc::new(muninn::reload::LoadStats::default());
    loads.from_file.fetch_add(2, Ordering::Relaxed);
    loads.from_image.fetch_add(3, Ordering::Relaxed);
    loads.image_stale.fetch_add(1, Ordering::Relaxed);
    loads.images_written.fetch_add(4, Ordering::Relaxed);
    loads.imports_superseded.fetch_add(1, Ordering::Relaxed);
    m.set_load_stats(Arc::clone(&loads));
    let job = m.jobs().enqueue("zone_load");
    let _waiting = m.jobs().enqueue("zone_load");
    job.start().finish(true);
    m.set_ready(true);

    let (body, s) = scrape_when(
        server.http,
        "muninn_tcp_connections_closed_total{reason=\"client_close\"}",
        1.0,
    )
    .await;
    let s = if s.get("muninn_messages_received_total{transport=\"udp\"}") == Some(&17.0) {
        s
    } else {
        scrape_when(
            server.http,
            "muninn_messages_received_total{transport=\"udp\"}",
            17.0,
        )
        .await
        .1
    };

    // UDP: 8 + 3 + 2 (qtype A) + TXT + FORMERR (no question: other) answered, 2 dropped.
    expect(
        &s,
        "muninn_messages_received_total{transport=\"udp\"}",
        17.0,
    );
    expect(
        &s,
        "muninn_queries_total{transport=\"udp\",qtype=\"A\"}",
        13.0,
    );
    expect(
        &s,
        "muninn_queries_total{transport=\"udp\",qtype=\"TXT\"}",
        1.0,
    );
    expect(
        &s,
        "muninn_queries_total{transport=\"udp\",qtype=\"other\"}",
        1.0,
    );
    expect(
        &s,
        "muninn_queries_total{transport=\"udp\",qtype=\"MX\"}",
        0.0,
    );
    expect(
        &s,
        "muninn_responses_total{transport=\"udp\",rcode=\"NOERROR\"}",
        8.0,
    );
    expect(
        &s,
        "muninn_responses_total{transport=\"udp\",rcode=\"NXDOMAIN\"}",
        3.0,
    );
    expect(
        &s,
        "muninn_responses_total{transport=\"udp\",rcode=\"REFUSED\"}",
        3.0,
    );
    expect(
        &s,
        "muninn_responses_total{transport=\"udp\",rcode=\"FORMERR\"}",
        1.0,
    );
    expect(
        &s,
        "muninn_responses_total{transport=\"udp\",rcode=\"SERVFAIL\"}",
        0.0,
    );
    expect(
        &s,
        "muninn_queries_dropped_total{transport=\"udp\",reason=\"response\"}",
        1.0,
    );
    expect(
        &s,
        "muninn_queries_dropped_total{transport=\"udp\",reason=\"malformed\"}",
        1.0,
    );
    expect(
        &s,
        "muninn_queries_dropped_total{transport=\"udp\",reason=\"send_error\"}",
        0.0,
    );
    expect(
        &s,
        "muninn_response_latency_seconds_count{transport=\"udp\"}",
        15.0,
    );
    expect(&s, "muninn_queries_in_flight{transport=\"udp\"}", 0.0);

    // TCP.
    expect(&s, "muninn_messages_received_total{transport=\"tcp\"}", 4.0);
    expect(
        &s,
        "muninn_queries_total{transport=\"tcp\",qtype=\"A\"}",
        1.0,
    );
    expect(
        &s,
        "muninn_queries_total{transport=\"tcp\",qtype=\"MX\"}",
        2.0,
    );
    expect(
        &s,
        "muninn_queries_total{transport=\"tcp\",qtype=\"AAAA\"}",
        1.0,
    );
    expect(
        &s,
        "muninn_responses_total{transport=\"tcp\",rcode=\"NOERROR\"}",
        3.0,
    );
    expect(
        &s,
        "muninn_responses_total{transport=\"tcp\",rcode=\"NXDOMAIN\"}",
        1.0,
    );
    expect(
        &s,
        "muninn_response_latency_seconds_count{transport=\"tcp\"}",
        4.0,
    );
    expect(&s, "muninn_tcp_connections_accepted_total", 1.0);
    expect(&s, "muninn_tcp_connections_open", 0.0);
    expect(
        &s,
        "muninn_tcp_connections_closed_total{reason=\"client_close\"}",
        1.0,
    );
    expect(
        &s,
        "muninn_tcp_connections_closed_total{reason=\"idle\"}",
        0.0,
    );
    expect(&s, "muninn_queries_in_flight{transport=\"tcp\"}", 0.0);

    // Zones, reloads, jobs, readiness.
    expect(&s, "muninn_zones", 1.0);
    expect(&s, "muninn_zone_records{zone=\"example.com.\"}", 6.0);
    expect(
        &s,
        "muninn_zone_serial{zone=\"example.com.\"}",
        2024010101.0,
    );
    expect(
        &s,
        "muninn_zone_last_load_timestamp_seconds{zone=\"example.com.\"}",
        1_700_000_000.0,
    );
    assert!(!body.contains("gone.test."));
    expect(&s, "muninn_reloads_total{result=\"success\"}", 1.0);
    expect(&s, "muninn_reloads_total{result=\"failure\"}", 1.0);
    expect(&s, "muninn_reload_duration_seconds_count", 2.0);
    expect(
        &s,
        "muninn_reload_duration_seconds_bucket{le=\"0.005\"}",
        1.0,
    );
    expect(
        &s,
        "muninn_reload_duration_seconds_bucket{le=\"0.05\"}",
        2.0,
    );
    expect(&s, "muninn_heavy_jobs_queued{job=\"zone_load\"}", 1.0);
    expect(&s, "muninn_heavy_jobs_running{job=\"zone_load\"}", 0.0);
    expect(
        &s,
        "muninn_heavy_jobs_total{job=\"zone_load\",result=\"success\"}",
        1.0,
    );
    expect(
        &s,
        "muninn_heavy_job_duration_seconds_count{job=\"zone_load\"}",
        1.0,
    );
    expect(&s, "muninn_ready", 1.0);
    for (series, v) in [
        ("muninn_zone_loads_total{from=\"file\"}", 2.0),
        ("muninn_zone_loads_total{from=\"image\"}", 3.0),
        ("muninn_zone_loads_total{from=\"store\"}", 0.0),
        ("muninn_zone_image_unused_total{reason=\"stale\"}", 1.0),
        ("muninn_zone_image_unused_total{reason=\"missing\"}", 0.0),
        ("muninn_zone_image_writes_total{result=\"success\"}", 4.0),
        ("muninn_zone_image_writes_total{result=\"failure\"}", 0.0),
        ("muninn_zone_imports_total{result=\"superseded\"}", 1.0),
    ] {
        expect(&s, series, v);
    }
    // Recursion is off: no cache or upstream families at all.
    for family in ["muninn_cache_", "muninn_recursion_", "muninn_upstream_"] {
        assert!(!body.contains(family), "{family} present without recursion");
    }
    assert!(s["process_resident_memory_bytes"] > 0.0);
    assert!(s["process_open_fds"] >= 3.0);
    assert!(s.contains_key("process_cpu_seconds_total"));

    // Latency buckets (le label first, as prometheus-client writes it) are cumulative.
    let buckets: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with("muninn_response_latency_seconds_bucket{"))
        .filter(|l| l.contains("transport=\"udp\""))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), muninn::metrics::LATENCY_BUCKETS.len() + 1);
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(buckets.last(), Some(&15.0));

    let (status, _, body) = http(server.http, "GET", "/health").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, _) = http(server.http, "GET", "/nope").await;
    assert_eq!(status, 404);
    let (status, _, _) = http(server.http, "POST", "/metrics").await;
    assert_eq!(status, 405);

    // A connection open at shutdown is closed for that reason.
    let _open = TcpStream::connect(tcp).await.unwrap();
    wait_accepted(&server.listeners, 2).await;
    let stats = Arc::clone(&server.listeners.tcp_stats()[0]);
    server.stop().await;
    assert_eq!(stats.closed.get(muninn::metrics::CloseReason::Shutdown), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_connection_closed_reason() {
    let zones = Arc::new(ArcSwap::from_pointee(zones()));
    let handler = Arc::new(Handler::new(Arc::clone(&zones), DEFAULT_MAX_UDP_PAYLOAD));
    let tasks = Tasks::default();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let limits = Limits {
        tcp_idle_timeout: Duration::from_millis(100),
        max_tcp_connections: 1,
        ..Limits::default()
    };
    let listeners = tasks.spawn_listeners(handler, &[], &[addr], limits, 1);
    let metrics = Metrics::new(zones);
    metrics.add_listeners(&listeners);
    let http_addr = spawn_metrics_server(
        &tokio::runtime::Handle::current(),
        addr,
        Arc::clone(&metrics),
        tasks.token.child_token(),
        &tasks.tracker,
    )
    .unwrap();
    let tcp = listeners.tcp_addrs()[0];

    let mut idle = TcpStream::connect(tcp).await.unwrap();
    wait_accepted(&listeners, 1).await;
    // The second connection is over the cap of 1: closed at once.
    let mut over = TcpStream::connect(tcp).await.unwrap();
    let mut b = [0u8; 1];
    assert_eq!(over.read(&mut b).await.unwrap_or(0), 0);
    // The first is closed once idle.
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), idle.read(&mut b))
            .await
            .unwrap()
            .unwrap_or(0),
        0
    );
    let (_, s) = scrape_when(
        http_addr,
        "muninn_tcp_connections_closed_total{reason=\"idle\"}",
        1.0,
    )
    .await;
    expect(
        &s,
        "muninn_tcp_connections_closed_total{reason=\"idle\"}",
        1.0,
    );
    expect(
        &s,
        "muninn_tcp_connections_closed_total{reason=\"cap\"}",
        1.0,
    );
    expect(&s, "muninn_tcp_connections_accepted_total", 1.0);
    expect(&s, "muninn_tcp_connections_open", 0.0);

    tasks
        .stop("listener and metrics tasks stop after cancellation")
        .await;
}

async fn wait_accepted(listeners: &Listeners, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while listeners.tcp_stats()[0]
        .accepted
        .load(std::sync::atomic::Ordering::Relaxed)
        < n
    {
        assert!(Instant::now() < deadline, "connection {n} not accepted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `promtool check metrics` accepts the exposition. Skipped when promtool is not
/// installed, except in CI (CI=true), where it must be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_exposition() {
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool is required in CI (apt-get install prometheus)"
        );
        eprintln!("promtool not installed: skipped");
        return;
    }
    // With a resolver, so the cache and upstream families are checked too.
    let resolver = Resolver::new(ResolverConfig {
        enabled: true,
        upstreams: vec!["127.0.0.1:9".parse().unwrap()],
        ..ResolverConfig::default()
    })
    .unwrap();
    let server = Server::start_with(Some(resolver));
    // Some traffic so histograms and labelled series carry values.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp = server.listeners.udp_addrs()[0];
    udp_ask(
        &sock,
        udp,
        &query(1, "www.example.com.", RecordType::A, DNSClass::IN),
    )
    .await;
    server
        .metrics
        .reload()
        .record(true, Duration::from_millis(5));
    server
        .metrics
        .jobs()
        .enqueue("zone_load")
        .start()
        .finish(true);
    // Without an OpenMetrics Accept header (curl, promtool): classic text format, same
    // samples.
    let (_, openmetrics) = scrape(server.http).await;
    let (status, content_type, body) = http(server.http, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, CONTENT_TYPE_PROMETHEUS);
    assert!(body.contains("# TYPE muninn_queries_total counter\n"));
    assert!(body.contains("# TYPE muninn_upstream_rtt_seconds histogram\n"));
    assert!(!body.contains("# EOF"));
    let classic = samples(&body);
    let mut a: Vec<_> = classic.keys().collect();
    let mut b: Vec<_> = openmetrics.keys().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(
        classic["muninn_queries_total{transport=\"udp\",qtype=\"A\"}"],
        1.0
    );

    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Cache, recursion and upstream figures
// ---------------------------------------------------------------------------------------------

/// A scripted upstream over UDP. By query name: `a.test.` and `flaky.test.` have an A
/// record (`flaky.test.` with TTL 1, and SERVFAIL once `flaky_fails` is set), `fail.test.`
/// gets SERVFAIL, `slow.test.` no answer at all, anything else NXDOMAIN with the SOA of
/// `test.` (so it is cached, RFC 2308 §5).
struct FakeUpstream {
    addr: SocketAddr,
    received: Arc<std::sync::atomic::AtomicU64>,
    flaky_fails: Arc<std::sync::atomic::AtomicBool>,
    token: CancellationToken,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl FakeUpstream {
    async fn start() -> FakeUpstream {
        use hickory_proto::rr::RData;
        use hickory_proto::rr::rdata::{A, SOA};
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let flaky_fails = Arc::new(AtomicBool::new(false));
        let token = CancellationToken::new();
        let (rx, fails, stop) = (
            Arc::clone(&received),
            Arc::clone(&flaky_fails),
            token.clone(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, from) = tokio::select! {
                    () = stop.cancelled() => return,
                    r = sock.recv_from(&mut buf) => r.unwrap(),
                };
                rx.fetch_add(1, Ordering::Relaxed);
                let q = Message::from_vec(&buf[..n]).unwrap();
                let question = q.queries[0].clone();
                let qname = question.name().to_ascii().to_ascii_lowercase();
                let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                r.metadata.recursion_desired = true;
                r.metadata.recursion_available = true;
                r.add_query(question.clone());
                let a = |ttl, ip: [u8; 4]| {
                    Record::from_rdata(
                        question.name().clone(),
                        ttl,
                        RData::A(A(std::net::Ipv4Addr::from(ip))),
                    )
                };
                let flaky_fails = fails.load(Ordering::Relaxed);
                match qname.as_str() {
                    "slow.test." => continue,
                    "a.test." => {
                        r.add_answer(a(300, [192, 0, 2, 1]));
                    }
                    "flaky.test." if !flaky_fails => {
                        r.add_answer(a(1, [192, 0, 2, 2]));
                    }
                    "flaky.test." | "fail.test." => {
                        r.metadata.response_code = ResponseCode::ServFail;
                    }
                    _ => {
                        r.metadata.response_code = ResponseCode::NXDomain;
                        let soa = SOA::new(
                            Name::from_str("ns.test.").unwrap(),
                            Name::from_str("hostmaster.test.").unwrap(),
                            1,
                            3600,
                            600,
                            86400,
                            60,
                        );
                        r.add_authority(Record::from_rdata(
                            Name::from_str("test.").unwrap(),
                            300,
                            RData::SOA(soa),
                        ));
                    }
                }
                let _ = sock.send_to(&r.to_vec().unwrap(), from).await;
            }
        });
        FakeUpstream {
            addr,
            received,
            flaky_fails,
            token,
        }
    }
}

/// A recursive (RD=1) query.
fn rd_query(id: u16, name: &str) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
    msg.to_vec().unwrap()
}

/// Sends a query and expects no answer within `wait`.
async fn udp_silence(sock: &UdpSocket, wait: Duration) {
    let mut buf = vec![0u8; 4096];
    assert!(
        tokio::time::timeout(wait, sock.recv_from(&mut buf))
            .await
            .is_err(),
        "no answer expected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_and_upstream_counters_after_known_traffic() {
    use std::sync::atomic::Ordering;
    let up = FakeUpstream::start().await;
    let resolver = Resolver::new(ResolverConfig {
        enabled: true,
        upstreams: vec![up.addr],
        timeout_ms: 300,
        attempts: 2,
        client_timeout_ms: 450,
        max_per_client: 1,
        ..ResolverConfig::default()
    })
    .unwrap();
    let server = Server::start_with(Some(resolver.clone()));
    let udp = server.listeners.udp_addrs()[0];
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ask = |id, name: &'static str| {
        let sock = &sock;
        async move { udp_ask(sock, udp, &rd_query(id, name)).await }
    };

    // A miss fetched upstream, then two cache hits.
    for id in 1..=3 {
        let r = ask(id, "a.test.").await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
    }
    // NXDOMAIN is an answer too (and cached).
    let r = ask(4, "nx.test.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    // SERVFAIL from the upstream, twice (two attempts): SERVFAIL to the client.
    let r = ask(5, "fail.test.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    // TTL 1; once expired and failing upstream, the stale data is served (RFC 8767).
    let r = ask(6, "flaky.test.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    up.flaky_fails.store(true, Ordering::Relaxed);
    let r = ask(7, "flaky.test.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers[0].ttl, 30, "stale answers carry stale_ttl");

    // slow.test. never answers: two clients (two addresses) wait on one coalesced fetch;
    // meanwhile the first client's next query is over max_per_client (1): SERVFAIL at once.
    // Attempt 1 times out at 300 ms, attempt 2 is sent; both clients give up at 450 ms
    // (UDP: no answer), so the fetch is dropped before attempt 2 times out.
    let slow_a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let slow_b = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    slow_a
        .send_to(&rd_query(8, "slow.test."), udp)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    slow_b
        .send_to(&rd_query(9, "slow.test."), udp)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let r = ask(10, "other.test.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    let (wa, wb) = tokio::join!(
        udp_silence(&slow_a, Duration::from_millis(900)),
        udp_silence(&slow_b, Duration::from_millis(900)),
    );
    let ((), ()) = (wa, wb);
    assert_eq!(up.received.load(Ordering::Relaxed), 9);

    // Entries: a, nx, fail (a cached failure, RFC 9520), flaky (stale); counted by the
    // cache's housekeeping (every second).
    let (body, s) = scrape_when(server.http, "muninn_cache_entries", 4.0).await;
    let up_label = format!("upstream=\"{}\"", up.addr);
    expect(&s, "muninn_cache_entries", 4.0);
    expect(&s, "muninn_cache_hits_total", 2.0);
    expect(&s, "muninn_cache_misses_total", 7.0);
    expect(&s, "muninn_cache_stale_answers_total", 1.0);
    expect(&s, "muninn_cache_evictions_total", 0.0);
    expect(&s, "muninn_cache_expirations_total", 0.0);
    expect(
        &s,
        "muninn_cache_max_bytes",
        ResolverConfig::default().cache_size as f64,
    );
    let bytes = s["muninn_cache_bytes"];
    assert!(bytes > 0.0 && bytes < 64.0 * 1024.0, "cache bytes {bytes}");
    expect(&s, "muninn_recursion_pending", 0.0);
    expect(&s, "muninn_recursion_coalesced_total", 1.0);
    expect(
        &s,
        "muninn_recursion_shed_total{reason=\"client_limit\"}",
        1.0,
    );
    expect(
        &s,
        "muninn_recursion_shed_total{reason=\"pending_limit\"}",
        0.0,
    );
    expect(
        &s,
        "muninn_recursion_shed_total{reason=\"upstream_limit\"}",
        0.0,
    );
    expect(&s, "muninn_recursion_servfail_total", 2.0);
    expect(&s, "muninn_recursion_client_timeouts_total", 2.0);
    expect(&s, "muninn_upstream_fetches_total", 6.0);
    expect(&s, "muninn_upstream_fetches_cancelled_total", 1.0);
    expect(&s, "muninn_upstream_fetches_in_flight", 0.0);
    expect(
        &s,
        &format!("muninn_upstream_queries_total{{{up_label}}}"),
        9.0,
    );
    expect(&s, "muninn_upstream_tcp_retries_total", 0.0);
    expect(&s, "muninn_upstream_timeouts_total", 1.0);
    expect(&s, "muninn_upstream_errors_total{kind=\"rcode\"}", 4.0);
    expect(&s, "muninn_upstream_errors_total{kind=\"network\"}", 0.0);
    expect(&s, "muninn_upstream_errors_total{kind=\"bad_answer\"}", 0.0);
    expect(&s, "muninn_upstream_ignored_replies_total", 0.0);
    // Three usable replies (a, nx, flaky) timed; errors and timeouts are not.
    expect(
        &s,
        &format!("muninn_upstream_rtt_seconds_count{{{up_label}}}"),
        3.0,
    );
    expect(
        &s,
        &format!("muninn_upstream_rtt_seconds_bucket{{le=\"+Inf\",{up_label}}}"),
        3.0,
    );
    assert!(s[&format!("muninn_upstream_srtt_seconds{{{up_label}}}")] > 0.0);
    assert!(body.contains("# TYPE muninn_upstream_rtt_seconds histogram\n"));
    // The resolver's own figures agree with what is exposed.
    assert_eq!(resolver.stats().cache_hits.load(Ordering::Relaxed), 2);
    // Every answer sent is counted with the listener's answers, whether it came from the
    // cache at once or after an upstream fetch: NOERROR = a.test (miss + 2 hits) + flaky
    // (fetched, then stale); SERVFAIL = fail.test + the per-client cap; the slow.test
    // clients gave up, so nothing was sent to them.
    expect(
        &s,
        "muninn_responses_total{transport=\"udp\",rcode=\"SERVFAIL\"}",
        2.0,
    );
    expect(
        &s,
        "muninn_responses_total{transport=\"udp\",rcode=\"NOERROR\"}",
        5.0,
    );
    expect(
        &s,
        "muninn_responses_total{transport=\"udp\",rcode=\"NXDOMAIN\"}",
        1.0,
    );
    server.stop().await;
}

fn a_entry(owner: &Name, ttl: u32, now: std::time::Instant) -> (Key, Arc<Entry>) {
    use hickory_proto::rr::RData;
    use hickory_proto::rr::rdata::A;
    let record = Record::from_rdata(owner.clone(), ttl, RData::A(A::new(192, 0, 2, 1)));
    let set = muninn::zone::RRset {
        name: owner.clone(),
        rtype: RecordType::A,
        ttl,
        records: vec![record],
    };
    let entry = Entry::new(
        ResponseCode::NoError,
        Kind::Positive,
        vec![set],
        Vec::new(),
        ttl,
        true,
        now,
    );
    (
        Key::new(owner, RecordType::A, DNSClass::IN, false),
        Arc::new(entry),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_counts_evictions_and_expirations() {
    // A small bound: most of 2000 entries must go, and each one that goes is counted.
    let cache = RecordCache::new(16 * 1024, Duration::ZERO);
    let now = std::time::Instant::now();
    const N: u64 = 2000;
    for i in 0..N {
        let (k, e) = a_entry(&Name::from_str(&format!("h{i}.test.")).unwrap(), 300, now);
        cache.insert(k, e).await;
    }
    cache.run_pending_tasks().await;
    let kept = cache.entry_count();
    assert!(kept > 10 && kept < N / 2, "kept {kept}");
    assert_eq!(cache.evictions(), N - kept);
    assert_eq!(cache.expirations(), 0);

    // Without a serve-stale window an entry goes when its TTL ends.
    let cache = RecordCache::new(1024 * 1024, Duration::ZERO);
    for i in 0..3 {
        let (k, e) = a_entry(
            &Name::from_str(&format!("t{i}.test.")).unwrap(),
            1,
            std::time::Instant::now(),
        );
        cache.insert(k, e).await;
    }
    let (k, e) = a_entry(
        &Name::from_str("long.test.").unwrap(),
        300,
        std::time::Instant::now(),
    );
    cache.insert(k, e).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    cache.run_pending_tasks().await;
    assert_eq!(cache.expirations(), 3);
    assert_eq!(cache.evictions(), 0);
    assert_eq!(cache.entry_count(), 1);
}
