//! UDP listener: many concurrent queries each get the answer to their own question,
//! bursts larger than a receive batch, response size limits. The server runs in-process
//! on 127.0.0.1, port 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use muninn::server::{Limits, UdpTotals};
use muninn::zone::ZoneSet;
use tokio::net::UdpSocket;

mod inproc;
use inproc::{InProc, host_addr};

const HOSTS: u32 = 1000;

fn zone_text() -> String {
    let mut z = inproc::hosts_zone_text(HOSTS);
    // About 900 bytes of answer: over 512, under 1232.
    inproc::push_txt(&mut z, "mid", 8);
    // About 2 KB: over 1232.
    inproc::push_txt(&mut z, "large", 20);
    z
}

fn zones() -> ZoneSet {
    inproc::zone_set(&zone_text())
}

fn host_name(i: u32) -> Name {
    Name::from_str(&format!("h{i}.example.com.")).unwrap()
}

/// The DNS listeners on 127.0.0.1, UDP and TCP on one port.
fn start(limits: Limits, workers: usize) -> InProc {
    start_on("127.0.0.1:0".parse().unwrap(), limits, workers)
}

fn start_on(addr: SocketAddr, limits: Limits, workers: usize) -> InProc {
    InProc::start(zones(), &[addr], &[addr], limits, workers)
}

fn query(id: u16, name: &Name, rtype: RecordType, edns_payload: Option<u16>) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(name.clone(), rtype));
    if let Some(p) = edns_payload {
        let mut e = Edns::new();
        e.set_max_payload(p);
        msg.set_edns(e);
    }
    msg.to_vec().unwrap()
}

fn assert_a_answer(resp: &Message, i: u32) {
    let name = host_name(i);
    assert_eq!(resp.metadata.message_type, MessageType::Response);
    assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    assert!(resp.metadata.authoritative);
    assert!(!resp.metadata.truncation);
    assert_eq!(resp.queries.len(), 1);
    assert_eq!(resp.queries[0].name(), &name);
    assert_eq!(
        resp.answers,
        vec![Record::from_rdata(name, 3600, RData::A(A(host_addr(i))))]
    );
    assert!(resp.authorities.is_empty());
}

/// Sends one query per host in `hosts` (ids are host numbers), all back to back, and
/// collects the answers. Lost datagrams (socket buffer overflow under the burst) are
/// re-sent, like any UDP client would; every answer that arrives must be right.
async fn ask_all(server: SocketAddr, hosts: Vec<u32>) -> usize {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut pending: HashMap<u16, u32> = hosts.iter().map(|&i| (i as u16, i)).collect();
    let mut resent = 0usize;
    let mut buf = vec![0u8; 4096];
    for round in 0..10 {
        if round > 0 {
            resent += pending.len();
        }
        for (&id, &i) in &pending {
            let edns = (i % 2 == 0).then_some(1232);
            sock.send_to(&query(id, &host_name(i), RecordType::A, edns), server)
                .await
                .unwrap();
        }
        while !pending.is_empty() {
            let Ok(got) =
                tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await
            else {
                break; // some were lost: resend the rest
            };
            let (n, from) = got.unwrap();
            assert_eq!(from, server);
            let resp = Message::from_vec(&buf[..n]).unwrap();
            let id = resp.metadata.id;
            // A resent query may be answered twice; both answers must be right.
            let i = u32::from(id);
            assert!(
                hosts.contains(&i),
                "answer for a question never asked: {id}"
            );
            assert_a_answer(&resp, i);
            assert_eq!(resp.edns.is_some(), i % 2 == 0);
            pending.remove(&id);
        }
        if pending.is_empty() {
            return resent;
        }
    }
    panic!("{} queries never answered", pending.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_queries_get_their_own_answers() {
    let server = start(Limits::default(), 2);
    let addr = server.udp_addr();
    // 10 client sockets, 100 distinct questions each, all in flight at once.
    let clients: Vec<_> = (0..10u32)
        .map(|c| tokio::spawn(ask_all(addr, (c * 100..(c + 1) * 100).collect())))
        .collect();
    let mut resent = 0;
    for c in clients {
        resent += c.await.unwrap();
    }
    // Counters are added after each batch is sent: wait for the last one.
    let totals = settled(&server, |t| t.answered >= u64::from(HOSTS)).await;
    assert_eq!(totals.answered, totals.received - totals.dropped);
    eprintln!("resent after loss: {resent}; server totals {totals:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_larger_than_batch() {
    let limits = Limits {
        udp_batch: 4,
        ..Limits::default()
    };
    let server = start(limits, 1);
    let addr = server.udp_addr();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // 50 queries back to back: at least 13 receive batches. 50 small datagrams fit in any
    // default socket buffer, so nothing may be lost.
    for i in 0..50u32 {
        sock.send_to(&query(i as u16, &host_name(i), RecordType::A, None), addr)
            .await
            .unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut buf = vec![0u8; 4096];
    while seen.len() < 50 {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("every query of the burst is answered")
            .unwrap();
        let resp = Message::from_vec(&buf[..n]).unwrap();
        let i = u32::from(resp.metadata.id);
        assert_a_answer(&resp, i);
        assert!(seen.insert(i), "answered twice: {i}");
    }
    let totals = settled(&server, |t| t.answered == 50).await;
    assert_eq!(totals.received, 50);
    assert_eq!(totals.answered, 50);
    assert_eq!(totals.dropped, 0);
    server.stop().await;
}

/// Polls the server's UDP counters until `done` holds (they are updated after each batch
/// is sent, so a client can see its answer a moment before the counters move).
async fn settled(server: &InProc, done: impl Fn(&UdpTotals) -> bool) -> UdpTotals {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let t = server.listeners.udp_totals();
        if done(&t) || tokio::time::Instant::now() > deadline {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn ask_one(sock: &UdpSocket, to: SocketAddr, wire: &[u8]) -> Message {
    sock.send_to(wire, to).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("answer in time")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_size_limits() {
    let server = start(Limits::default(), 1);
    let addr = server.udp_addr();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mid = Name::from_str("mid.example.com.").unwrap();
    let large = Name::from_str("large.example.com.").unwrap();

    // No EDNS: 512 bytes at most (RFC 1035 §4.2.1), so the ~900-byte answer is truncated.
    let r = ask_one(&sock, addr, &query(1, &mid, RecordType::TXT, None)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.truncation);
    assert!(r.answers.len() < 8);

    // EDNS 1232: it fits.
    let r = ask_one(&sock, addr, &query(2, &mid, RecordType::TXT, Some(1232))).await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 8);

    // A requested payload below 512 is treated as 512 (RFC 6891 §6.2.5).
    let r = ask_one(&sock, addr, &query(3, &mid, RecordType::TXT, Some(100))).await;
    assert!(r.metadata.truncation);

    // The client allows 4096, but we send at most our configured 1232.
    let r = ask_one(&sock, addr, &query(4, &large, RecordType::TXT, Some(4096))).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.truncation);
    assert!(r.answers.len() < 20);

    // AXFR over UDP is refused (RFC 5936 §4.2: TCP only).
    let apex = Name::from_str("example.com.").unwrap();
    let r = ask_one(&sock, addr, &query(5, &apex, RecordType::AXFR, None)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(r.answers.is_empty());
    let r = ask_one(&sock, addr, &query(6, &apex, RecordType::IXFR, None)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_and_garbage_are_not_answered() {
    let server = start(Limits::default(), 1);
    let addr = server.udp_addr();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A response (QR=1) must never be answered (reflection loops), nor a 3-byte packet.
    let mut resp = Message::new(77, MessageType::Response, OpCode::Query);
    resp.add_query(Query::query(host_name(1), RecordType::A));
    sock.send_to(&resp.to_vec().unwrap(), addr).await.unwrap();
    sock.send_to(&[1, 2, 3], addr).await.unwrap();
    // Then a real query: its answer must be the next (and only) datagram.
    let r = ask_one(&sock, addr, &query(78, &host_name(2), RecordType::A, None)).await;
    assert_eq!(r.metadata.id, 78);
    assert_a_answer(&r, 2);
    let mut buf = [0u8; 512];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf))
            .await
            .is_err(),
        "nothing else may arrive"
    );
    let totals = settled(&server, |t| t.dropped == 2 && t.answered == 1).await;
    assert_eq!(totals.received, 3);
    assert_eq!(totals.answered, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_udp_and_tcp() {
    let any: SocketAddr = "[::1]:0".parse().unwrap();
    if std::net::UdpSocket::bind(any).is_err() {
        eprintln!("no IPv6 loopback; skipping");
        return;
    }
    let server = start_on(any, Limits::default(), 2);
    let udp_addr = server.listeners.udp_addrs()[0];
    let tcp_addr = server.listeners.tcp_addrs()[0];
    assert!(udp_addr.is_ipv6() && udp_addr.port() != 0);

    let sock = UdpSocket::bind(any).await.unwrap();
    let r = ask_one(
        &sock,
        udp_addr,
        &query(11, &host_name(11), RecordType::A, Some(1232)),
    )
    .await;
    assert_eq!(r.metadata.id, 11);
    assert_a_answer(&r, 11);

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(tcp_addr).await.unwrap();
    let wire = query(12, &host_name(12), RecordType::A, None);
    let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&wire);
    stream.write_all(&framed).await.unwrap();
    let len = stream.read_u16().await.unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    let r = Message::from_vec(&buf).unwrap();
    assert_eq!(r.metadata.id, 12);
    assert_a_answer(&r, 12);
    server.stop().await;
}
