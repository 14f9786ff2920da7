//! DNS over TCP listener: pipelining, out-of-band errors, idle and message timeouts,
//! connection cap, shutdown. The server runs in-process on 127.0.0.1, port 0.

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use muninn::server::Limits;
use muninn::zone::ZoneSet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod inproc;
use inproc::{InProc, host_addr};

fn zone_text() -> String {
    let mut z = inproc::hosts_zone_text(100);
    // An RRset of about 2 KB: larger than any UDP limit here, fine over TCP.
    inproc::push_txt(&mut z, "large", 20);
    z
}

fn zones() -> ZoneSet {
    inproc::zone_set(&zone_text())
}

/// The DNS listeners on 127.0.0.1, TCP only, one worker.
fn start(limits: Limits) -> InProc {
    InProc::start(zones(), &[], &["127.0.0.1:0".parse().unwrap()], limits, 1)
}

fn query(id: u16, name: &str, rtype: RecordType, class: DNSClass, edns: bool) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_str(name).unwrap(), rtype);
    q.query_class = class;
    msg.add_query(q);
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        msg.set_edns(e);
    }
    msg.to_vec().unwrap()
}

fn framed(msg: &[u8]) -> Vec<u8> {
    let mut out = (msg.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    out
}

async fn read_message(stream: &mut TcpStream) -> Message {
    let len = stream.read_u16().await.unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

/// Reads until the server closes the connection; returns how long that took.
async fn wait_closed(stream: &mut TcpStream, within: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("connection still open after {within:?}"),
        }
    }
}

fn assert_a_answer(resp: &Message, i: u32) {
    let name = Name::from_str(&format!("h{i}.example.com.")).unwrap();
    assert_eq!(resp.metadata.message_type, MessageType::Response);
    assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    assert!(resp.metadata.authoritative);
    assert!(!resp.metadata.truncation);
    assert_eq!(resp.queries.len(), 1);
    assert_eq!(resp.queries[0].name(), &name);
    assert_eq!(resp.queries[0].query_type(), RecordType::A);
    assert_eq!(
        resp.answers,
        vec![Record::from_rdata(name, 3600, RData::A(A(host_addr(i))))]
    );
    assert!(resp.authorities.is_empty());
}

fn assert_refused(resp: &Message, name: &str, rtype: RecordType) {
    assert_eq!(resp.metadata.response_code, ResponseCode::Refused);
    assert!(!resp.metadata.authoritative);
    assert_eq!(resp.queries.len(), 1);
    assert_eq!(resp.queries[0].name(), &Name::from_str(name).unwrap());
    assert_eq!(resp.queries[0].query_type(), rtype);
    assert!(resp.answers.is_empty());
    assert!(resp.authorities.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_all_answered() {
    let server = start(Limits::default());
    let mut stream = TcpStream::connect(server.tcp_addr()).await.unwrap();

    // Ten queries, then three the handler refuses, then a large answer, all in one write.
    let mut wire = Vec::new();
    for i in 0..10u16 {
        let name = format!("h{i}.example.com.");
        wire.extend(framed(&query(
            1000 + i,
            &name,
            RecordType::A,
            DNSClass::IN,
            i % 2 == 0,
        )));
    }
    wire.extend(framed(&query(
        2000,
        "www.example.org.",
        RecordType::A,
        DNSClass::IN,
        false,
    )));
    wire.extend(framed(&query(
        2001,
        "example.com.",
        RecordType::AXFR,
        DNSClass::IN,
        false,
    )));
    wire.extend(framed(&query(
        2002,
        "h1.example.com.",
        RecordType::A,
        DNSClass::CH,
        false,
    )));
    wire.extend(framed(&query(
        2003,
        "large.example.com.",
        RecordType::TXT,
        DNSClass::IN,
        true,
    )));
    stream.write_all(&wire).await.unwrap();

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..14 {
        let resp = tokio::time::timeout(Duration::from_secs(5), read_message(&mut stream))
            .await
            .expect("answer in time");
        let id = resp.metadata.id;
        assert!(seen.insert(id), "answer {id} sent twice");
        match id {
            1000..=1009 => {
                assert_a_answer(&resp, u32::from(id - 1000));
                // EDNS echoed exactly when asked (RFC 6891 §7).
                assert_eq!(resp.edns.is_some(), (id - 1000) % 2 == 0);
            }
            2000 => assert_refused(&resp, "www.example.org.", RecordType::A),
            2001 => assert_refused(&resp, "example.com.", RecordType::AXFR),
            2002 => assert_refused(&resp, "h1.example.com.", RecordType::A),
            2003 => {
                // Over TCP the only limit is 65535 bytes: all 20 records, no TC.
                assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
                assert!(!resp.metadata.truncation);
                assert_eq!(resp.answers.len(), 20);
            }
            other => panic!("unexpected id {other}"),
        }
    }
    let stats = &server.listeners.tcp_stats()[0];
    assert_eq!(stats.queries.load(Ordering::Relaxed), 14);
    drop(stream);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_closed() {
    let limits = Limits {
        tcp_idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start(limits);
    let mut stream = TcpStream::connect(server.tcp_addr()).await.unwrap();
    stream
        .write_all(&framed(&query(
            7,
            "h7.example.com.",
            RecordType::A,
            DNSClass::IN,
            false,
        )))
        .await
        .unwrap();
    assert_a_answer(&read_message(&mut stream).await, 7);

    let took = wait_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
    assert_eq!(
        server.listeners.tcp_stats()[0]
            .idle_closed
            .load(Ordering::Relaxed),
        1
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_message_closed() {
    let limits = Limits {
        tcp_io_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start(limits);
    let mut stream = TcpStream::connect(server.tcp_addr()).await.unwrap();
    // Half a message: the length and a few bytes, then nothing.
    let msg = framed(&query(
        9,
        "h9.example.com.",
        RecordType::A,
        DNSClass::IN,
        false,
    ));
    stream.write_all(&msg[..6]).await.unwrap();
    let took = wait_closed(&mut stream, Duration::from_secs(5)).await;
    // Closed by the message timeout, well before the 10 s idle timeout.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(
        server.listeners.tcp_stats()[0]
            .io_timeouts
            .load(Ordering::Relaxed),
        1
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_enforced() {
    let limits = Limits {
        max_tcp_connections: 2,
        ..Limits::default()
    };
    let server = start(limits);
    let mut open = Vec::new();
    for i in 0..2u32 {
        let mut s = TcpStream::connect(server.tcp_addr()).await.unwrap();
        let name = format!("h{i}.example.com.");
        s.write_all(&framed(&query(
            i as u16,
            &name,
            RecordType::A,
            DNSClass::IN,
            false,
        )))
        .await
        .unwrap();
        assert_a_answer(&read_message(&mut s).await, i);
        open.push(s);
    }

    // The third is accepted and closed at once.
    let mut third = TcpStream::connect(server.tcp_addr()).await.unwrap();
    wait_closed(&mut third, Duration::from_secs(2)).await;
    let stats = &server.listeners.tcp_stats()[0];
    assert_eq!(stats.rejected.load(Ordering::Relaxed), 1);
    assert_eq!(stats.accepted.load(Ordering::Relaxed), 2);

    // Closing one frees its slot.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(server.tcp_addr()).await.unwrap();
        s.write_all(&framed(&query(
            5,
            "h5.example.com.",
            RecordType::A,
            DNSClass::IN,
            false,
        )))
        .await
        .unwrap();
        let len = tokio::time::timeout(Duration::from_secs(2), s.read_u16()).await;
        match len {
            Ok(Ok(len)) => {
                let mut buf = vec![0u8; usize::from(len)];
                s.read_exact(&mut buf).await.unwrap();
                assert_a_answer(&Message::from_vec(&buf).unwrap(), 5);
                break;
            }
            // Rejected: the server has not yet noticed the closed connection.
            _ => {
                assert!(Instant::now() < deadline, "slot never freed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections() {
    let server = start(Limits::default());
    let mut stream = TcpStream::connect(server.tcp_addr()).await.unwrap();
    stream
        .write_all(&framed(&query(
            3,
            "h3.example.com.",
            RecordType::A,
            DNSClass::IN,
            false,
        )))
        .await
        .unwrap();
    assert_a_answer(&read_message(&mut stream).await, 3);
    let addr = server.tcp_addr();
    server.stop().await; // waits for every task, including this connection's
    wait_closed(&mut stream, Duration::from_secs(1)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_does_not_read_is_dropped() {
    let limits = Limits {
        tcp_io_timeout: Duration::from_millis(300),
        tcp_max_in_flight: 4,
        ..Limits::default()
    };
    let server = start(limits);
    let stream = TcpStream::connect(server.tcp_addr()).await.unwrap();
    let (_rd, mut wr) = stream.into_split();
    // Pipeline far more ~2 KB answers than socket buffers hold, and never read them.
    let one = framed(&query(
        1,
        "large.example.com.",
        RecordType::TXT,
        DNSClass::IN,
        false,
    ));
    let flood = tokio::spawn(async move {
        let many: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * 20_000)
            .collect();
        let _ = wr.write_all(&many).await; // fails or blocks once the server gives up
    });
    let stats = &server.listeners.tcp_stats()[0];
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats.io_timeouts.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "stalled writer never timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The server stopped reading once its bounded queue was full: far fewer queries were
    // read than sent.
    let read = stats.queries.load(Ordering::Relaxed);
    assert!(read < 20_000, "read {read} queries");
    flood.abort();
    server.stop().await;
}
