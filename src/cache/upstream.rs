//! Queries to the configured upstream resolvers (forwarding, RFC 5625 style).
//!
//! Each attempt uses a fresh UDP socket bound to a random ephemeral port and a random
//! message ID (RFC 5452 §9.2 / the Kaminsky defences), connected to the upstream so the
//! kernel already drops datagrams from other sources. A reply is accepted only if it comes
//! from the upstream's address and port and matches the ID, QR=1, opcode and the question
//! (name ignoring case, type, class) — RFC 5452 §3. Anything else is counted and ignored,
//! and the attempt keeps waiting until its timeout: aborting on the first bad packet would
//! let an attacker cut resolution short (TuDoor). A truncated reply (TC=1) is retried over
//! TCP (RFC 7766 §5).
//!
//! Upstreams are tried in order of their smoothed RTT (updated on every reply and
//! penalized on timeouts and SERVFAIL/REFUSED), so the fastest working one is preferred;
//! each attempt moves on to the next one.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

use crate::cache::Stats;
use crate::metrics::DurationHistogram;
use crate::wire::writer::Writer;

/// EDNS UDP payload size we advertise upstream (DNS Flag Day 2020), and so the largest
/// datagram we expect.
pub const UPSTREAM_PAYLOAD: u16 = 1232;

/// Receive buffer for upstream datagrams: anything longer than we advertised is not valid.
const RECV_BUF: usize = 4096;

/// The result of a successful exchange: the reply and its size on the wire.
#[derive(Debug)]
pub struct Reply {
    pub message: Message,
    pub wire_len: usize,
    pub from: SocketAddr,
}

/// Why no usable answer came back.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream configured")]
    NoUpstreams,
    #[error("every attempt failed (last: {0})")]
    Exhausted(String),
}

/// One upstream server, its smoothed round-trip time and its counters (touched once per
/// upstream attempt, never per client query).
#[derive(Debug)]
struct Server {
    addr: SocketAddr,
    /// Smoothed RTT in microseconds (RFC 6298 style, gain 1/8); 0 = not measured yet.
    srtt_us: AtomicU32,
    /// Attempts sent to this server (as `Stats::upstream_queries`: a TCP retry after a
    /// truncated reply is part of its attempt).
    queries: AtomicU64,
    /// Round-trip times of the attempts it answered usably.
    rtt: DurationHistogram,
}

/// Bucket bounds (seconds) of the upstream round-trip time histogram.
pub const RTT_BUCKETS: [f64; 13] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// What one upstream server has seen, for metrics.
#[derive(Debug)]
pub struct ServerStats<'a> {
    pub addr: SocketAddr,
    pub queries: u64,
    pub srtt: Duration,
    pub rtt: &'a DurationHistogram,
}

/// The upstream servers and how to ask them.
#[derive(Debug)]
pub struct Upstreams {
    servers: Vec<Server>,
    timeout: Duration,
    attempts: u32,
    stats: Arc<Stats>,
}

enum Attempt {
    Answer(Reply),
    /// A reply with an rcode that says "ask someone else" (SERVFAIL, REFUSED, ...).
    Failed(ResponseCode),
}

impl Upstreams {
    pub fn new(
        addrs: &[SocketAddr],
        timeout: Duration,
        attempts: u32,
        stats: Arc<Stats>,
    ) -> Upstreams {
        Upstreams {
            servers: addrs
                .iter()
                .map(|&addr| Server {
                    addr,
                    srtt_us: AtomicU32::new(0),
                    queries: AtomicU64::new(0),
                    rtt: DurationHistogram::new(&RTT_BUCKETS),
                })
                .collect(),
            timeout,
            attempts: attempts.max(1),
            stats,
        }
    }

    /// The configured addresses with their current smoothed RTT.
    pub fn srtt(&self) -> Vec<(SocketAddr, Duration)> {
        self.servers
            .iter()
            .map(|s| {
                let us = s.srtt_us.load(Ordering::Relaxed);
                (s.addr, Duration::from_micros(u64::from(us)))
            })
            .collect()
    }

    /// Per-server counters, in configuration order.
    pub fn server_stats(&self) -> impl Iterator<Item = ServerStats<'_>> {
        self.servers.iter().map(|s| ServerStats {
            addr: s.addr,
            queries: s.queries.load(Ordering::Relaxed),
            srtt: Duration::from_micros(u64::from(s.srtt_us.load(Ordering::Relaxed))),
            rtt: &s.rtt,
        })
    }

    /// Asks the upstreams `query` (with DO=`dnssec_ok`), failing over on timeouts, errors
    /// and SERVFAIL/REFUSED/other error rcodes, until one answers with NOERROR or NXDOMAIN
    /// or the attempts are used up.
    pub async fn resolve(&self, query: &Query, dnssec_ok: bool) -> Result<Reply, UpstreamError> {
        if self.servers.is_empty() {
            return Err(UpstreamError::NoUpstreams);
        }
        let mut order: Vec<usize> = (0..self.servers.len()).collect();
        order.sort_by_key(|&i| {
            self.servers
                .get(i)
                .map_or(0, |s| s.srtt_us.load(Ordering::Relaxed))
        });
        // Let servers that lost out recover slowly, so one bad period is not held against
        // them forever (as Unbound's RTT decay does).
        for &i in order.iter().skip(1) {
            if let Some(s) = self.servers.get(i) {
                let v = s.srtt_us.load(Ordering::Relaxed);
                s.srtt_us.store(v - v / 32, Ordering::Relaxed);
            }
        }

        let mut packet = build_query(query, dnssec_ok);
        let mut last = String::from("no attempt");
        for attempt in 0..self.attempts as usize {
            let Some(server) = order
                .get(attempt % order.len())
                .and_then(|&i| self.servers.get(i))
            else {
                break;
            };
            let id: u16 = rand::random();
            if let Some(slot) = packet.get_mut(..2) {
                slot.copy_from_slice(&id.to_be_bytes());
            }
            self.stats.upstream_queries.fetch_add(1, Ordering::Relaxed);
            server.queries.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let deadline = started + self.timeout;
            let result = match self.udp(server.addr, &packet, id, query, deadline).await {
                Ok(Attempt::Answer(reply)) if reply.message.metadata.truncation => {
                    self.stats.upstream_tcp.fetch_add(1, Ordering::Relaxed);
                    // RFC 7766 §5: retry over TCP, with a fresh timeout.
                    let deadline = Instant::now() + self.timeout;
                    self.tcp(server.addr, &packet, id, query, deadline).await
                }
                other => other,
            };
            match result {
                Ok(Attempt::Answer(reply)) => {
                    let rtt = started.elapsed();
                    server.sample(rtt);
                    server.rtt.observe(rtt);
                    return Ok(reply);
                }
                Ok(Attempt::Failed(rcode)) => {
                    self.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .upstream_rcode_errors
                        .fetch_add(1, Ordering::Relaxed);
                    server.sample(self.timeout);
                    last = format!("{} answered {rcode}", server.addr);
                }
                Err(e) => {
                    if e.kind() == io::ErrorKind::TimedOut {
                        self.stats.upstream_timeouts.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .upstream_network_errors
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    server.sample(self.timeout);
                    last = format!("{}: {e}", server.addr);
                }
            }
        }
        Err(UpstreamError::Exhausted(last))
    }

    /// One UDP exchange from a fresh socket.
    async fn udp(
        &self,
        addr: SocketAddr,
        packet: &[u8],
        id: u16,
        query: &Query,
        deadline: Instant,
    ) -> io::Result<Attempt> {
        let local = match addr.ip() {
            IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(addr).await?;
        socket.send(packet).await?;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let (n, from) = match timeout_at(deadline, socket.recv_from(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => return Err(io::ErrorKind::TimedOut.into()),
            };
            let bytes = buf.get(..n).unwrap_or_default();
            if from != addr {
                self.stats.ignored_replies.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match accept(bytes, id, query) {
                Some(message) => return Ok(classify(message, n, from)),
                None => {
                    self.stats.ignored_replies.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// One TCP exchange (RFC 1035 §4.2.2 framing), on a new connection.
    async fn tcp(
        &self,
        addr: SocketAddr,
        packet: &[u8],
        id: u16,
        query: &Query,
        deadline: Instant,
    ) -> io::Result<Attempt> {
        let exchange = async {
            let mut stream = TcpStream::connect(addr).await?;
            let _ = stream.set_nodelay(true);
            let len = u16::try_from(packet.len()).map_err(io::Error::other)?;
            let mut framed = Vec::with_capacity(packet.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(packet);
            stream.write_all(&framed).await?;
            let mut buf = Vec::new();
            loop {
                let len = usize::from(stream.read_u16().await?);
                buf.resize(len, 0);
                stream.read_exact(&mut buf).await?;
                match accept(&buf, id, query) {
                    Some(message) => return Ok(classify(message, len, addr)),
                    None => {
                        self.stats.ignored_replies.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        };
        match timeout_at(deadline, exchange).await {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }
}

impl Server {
    /// Folds one RTT sample into the smoothed RTT (gain 1/8, RFC 6298 §2).
    fn sample(&self, rtt: Duration) {
        let sample = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX).max(1);
        let old = self.srtt_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            ((u64::from(old) * 7 + u64::from(sample)) / 8) as u32
        };
        self.srtt_us.store(new.max(1), Ordering::Relaxed);
    }
}

fn classify(message: Message, wire_len: usize, from: SocketAddr) -> Attempt {
    let rcode = message.metadata.response_code;
    if message.metadata.truncation
        || rcode == ResponseCode::NoError
        || rcode == ResponseCode::NXDomain
    {
        Attempt::Answer(Reply {
            message,
            wire_len,
            from,
        })
    } else {
        Attempt::Failed(rcode)
    }
}

/// Parses `bytes` and returns the message if it is the reply to our query `id` for
/// `query` (RFC 5452 §3): QR=1, same ID, opcode QUERY, exactly our question (name
/// compared ignoring ASCII case, RFC 4343; same type and class).
pub fn accept(bytes: &[u8], id: u16, query: &Query) -> Option<Message> {
    // Cheap checks on the header before decoding anything.
    let [id_hi, id_lo, flags1, _] = *bytes.first_chunk::<4>()?;
    if u16::from_be_bytes([id_hi, id_lo]) != id || flags1 & 0x80 == 0 {
        return None;
    }
    let message = Message::from_vec(bytes).ok()?;
    let m = &message.metadata;
    if m.message_type != MessageType::Response || m.op_code != OpCode::Query || m.id != id {
        return None;
    }
    match message.queries.as_slice() {
        [q] if q.name() == query.name()
            && q.query_type() == query.query_type()
            && q.query_class() == query.query_class() =>
        {
            Some(message)
        }
        _ => None,
    }
}

/// The wire form of our query: RD=1, one question, an OPT record advertising
/// [`UPSTREAM_PAYLOAD`] with DO as asked (RFC 6891, RFC 3225). The ID (first two bytes) is
/// set per attempt.
pub fn build_query(query: &Query, dnssec_ok: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let mut w = Writer::new(&mut out);
    w.put_query(query);
    w.put_u8(0);
    w.put_u16(u16::from(RecordType::OPT));
    w.put_u16(UPSTREAM_PAYLOAD);
    w.put_u32(if dnssec_ok { 0x8000 } else { 0 });
    w.put_u16(0);
    // ID 0 (set later), RD=1; QDCOUNT=1, ARCOUNT=1.
    w.set_header(&[0, 0, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    out
}
