//! The optional query log: one tracing event per sampled query, at INFO on the target
//! [`QUERY_LOG_TARGET`].
//!
//! Off by default. When on, 1 query in `every` is logged. The sampling decision is a
//! thread-local countdown (each worker thread keeps its own; no shared atomic, no RNG), so
//! an unsampled query costs a branch and a thread-local increment. Only a sampled query
//! pays for describing its response (decoding the echoed question) and for the event.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};

use super::counters::{RCODES, rcode_index};
use crate::handler::Transport;

/// The tracing target of query log events (select it with e.g.
/// `RUST_LOG=info,muninn::query=info`, or send it elsewhere in a subscriber).
pub const QUERY_LOG_TARGET: &str = "muninn::query";

thread_local! {
    /// Queries seen by this thread since it last logged one.
    static SEEN: Cell<u32> = const { Cell::new(0) };
}

/// Whether and how often queries are logged. `Copy`: listeners keep their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryLog {
    /// Log 1 query in this many; 0 = off.
    every: u32,
}

impl QueryLog {
    /// The log turned off.
    pub const OFF: QueryLog = QueryLog { every: 0 };

    /// `sample` = log 1 query in this many (0 is taken as 1) when `enabled`.
    pub fn new(enabled: bool, sample: u32) -> QueryLog {
        QueryLog {
            every: if enabled { sample.max(1) } else { 0 },
        }
    }

    pub fn enabled(&self) -> bool {
        self.every > 0
    }

    /// Decides whether the query being handled now is logged (call once per query).
    #[inline]
    pub fn sample(&self) -> bool {
        if self.every == 0 {
            return false;
        }
        SEEN.with(|seen| {
            let n = seen.get().wrapping_add(1);
            if n >= self.every {
                seen.set(0);
                true
            } else {
                seen.set(n);
                false
            }
        })
    }

    /// Emits the event for one sampled query: `response` is the encoded response (its
    /// echoed question and rcode are logged), `latency` the time from receipt to response.
    #[cold]
    pub fn log(
        &self,
        client: SocketAddr,
        transport: Transport,
        response: &[u8],
        latency: Duration,
    ) {
        let (qname, qtype, rcode) = describe(response);
        tracing::info!(
            target: QUERY_LOG_TARGET,
            client = %client,
            transport = %transport_name(transport),
            qname = %qname,
            qtype = %qtype,
            rcode = %rcode,
            size = response.len(),
            latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            "query"
        );
    }
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    }
}

/// Question name, type and rcode of an encoded response; "-" for what it lacks (e.g. a
/// FORMERR answer to a message without a parsable question).
fn describe(response: &[u8]) -> (String, String, String) {
    match Message::from_vec(response) {
        Ok(m) => {
            let (name, qtype) = m.queries.first().map_or_else(
                || ("-".to_string(), "-".to_string()),
                |q| (q.name().to_string(), q.query_type().to_string()),
            );
            (name, qtype, rcode_name(m.metadata.response_code))
        }
        Err(_) => {
            // The header alone still gives the (low 4 bits of the) rcode.
            let rcode = response.get(3).map_or("-".to_string(), |b| {
                rcode_name(ResponseCode::from_low(b & 0x0f))
            });
            ("-".to_string(), "-".to_string(), rcode)
        }
    }
}

/// The rcode's mnemonic as dig prints it ("NXDOMAIN"), or "RCODE<n>".
fn rcode_name(rcode: ResponseCode) -> String {
    match RCODES.get(rcode_index(rcode)) {
        Some(&name) if name != "other" => name.to_string(),
        _ => format!("RCODE{}", u16::from(rcode)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampled(log: QueryLog, n: usize) -> usize {
        (0..n).filter(|_| log.sample()).count()
    }

    #[test]
    fn off_never_samples_and_one_samples_all() {
        assert_eq!(sampled(QueryLog::OFF, 1000), 0);
        assert_eq!(sampled(QueryLog::new(false, 1), 1000), 0);
        assert_eq!(sampled(QueryLog::new(true, 1), 1000), 1000);
        assert_eq!(sampled(QueryLog::new(true, 0), 10), 10);
    }

    #[test]
    fn one_in_n_per_thread() {
        let log = QueryLog::new(true, 100);
        // Threads count on their own: each logs exactly 1 in 100 of its queries.
        let counts: Vec<usize> = (0..3)
            .map(|_| std::thread::spawn(move || sampled(log, 1000)))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert_eq!(counts, [10, 10, 10]);
    }

    #[test]
    fn describes_responses() {
        use hickory_proto::op::{MessageType, OpCode, Query};
        use hickory_proto::rr::{Name, RecordType};
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii("www.example.com.").unwrap(),
            RecordType::AAAA,
        ));
        m.metadata.response_code = ResponseCode::NXDomain;
        let (name, qtype, rcode) = describe(&m.to_vec().unwrap());
        assert_eq!(
            (name.as_str(), qtype.as_str(), rcode.as_str()),
            ("www.example.com.", "AAAA", "NXDOMAIN")
        );
        let (name, _, rcode) = describe(&[0, 7, 0x81, 0x05]);
        assert_eq!((name.as_str(), rcode.as_str()), ("-", "REFUSED"));
        assert_eq!(rcode_name(ResponseCode::BADCOOKIE), "RCODE23");
    }
}
