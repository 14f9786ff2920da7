//! From request bytes to response bytes: parse, classify, answer, encode.
//!
//! The handler is synchronous on purpose: authoritative answers are a pure function of the
//! request and the current zone snapshot, so listeners call it inline on their worker (no
//! task per query, no await). It reads the zone snapshot through an `ArcSwap` (lock-free)
//! and writes into the caller's own buffer; nothing is shared between concurrent requests.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};

use crate::auth::{self, Answer};
use crate::cache::{self, Recursion, Resolver};
use crate::metrics::{DropReason, QueryCounters, QueryLog};
use crate::wire::request::{self, Rejection, Request};
use crate::wire::response::{self, EncodeOptions};
use crate::zone::ZoneSet;

/// Default for [`Handler::new`]'s `max_udp_payload` (1232, the DNS Flag Day 2020 value).
pub use crate::wire::response::DEFAULT_MAX_UDP_PAYLOAD;

/// How the request arrived; decides the response size limit and what may be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What the listener should do after [`Handler::handle`].
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// `out` holds a complete DNS message to send back.
    Respond,
    /// Send nothing (e.g. the packet was a response, or too short to carry a header).
    Drop,
    /// Not our name, the client may recurse and the cache cannot answer yet: run
    /// [`Recursion::run`] as a task and send what it writes (it is bounded per client and
    /// globally, and stops when its cancellation token fires).
    Recurse(Box<Recursion>),
}

/// Answers queries from the zone snapshot currently published in `zones`.
#[derive(Debug)]
pub struct Handler {
    zones: Arc<ArcSwap<ZoneSet>>,
    opts: EncodeOptions,
    /// The caching resolver, when recursion is enabled.
    resolver: Option<Resolver>,
    /// The sampled query log (off unless configured); the listeners apply it.
    query_log: QueryLog,
}

impl Handler {
    /// `zones` is shared with whoever publishes new snapshots (reload); `max_udp_payload`
    /// caps UDP responses (values below 512 are treated as 512).
    pub fn new(zones: Arc<ArcSwap<ZoneSet>>, max_udp_payload: u16) -> Handler {
        Handler {
            zones,
            opts: EncodeOptions { max_udp_payload },
            resolver: None,
            query_log: QueryLog::OFF,
        }
    }

    /// Turns the sampled query log on (see [`QueryLog`]).
    pub fn with_query_log(mut self, query_log: QueryLog) -> Handler {
        self.query_log = query_log;
        self
    }

    /// The query log listeners apply to the queries they answer.
    #[inline]
    pub fn query_log(&self) -> QueryLog {
        self.query_log
    }

    /// Adds the caching resolver: names outside our zones are then resolved for clients it
    /// allows (see [`Resolver::allows`]), who also see RA=1.
    pub fn with_resolver(mut self, resolver: Resolver) -> Handler {
        self.resolver = Some(resolver);
        self
    }

    pub fn resolver(&self) -> Option<&Resolver> {
        self.resolver.as_ref()
    }

    /// The snapshot cell this handler reads; store a new `ZoneSet` here to publish it.
    pub fn zones(&self) -> &Arc<ArcSwap<ZoneSet>> {
        &self.zones
    }

    /// Handles one DNS message and, when there is something to send, encodes the response
    /// into `out` (cleared first; the message starts at offset 0, without a TCP length
    /// prefix).
    /// prefix). `peer` is the client's address (it decides who may recurse).
    pub fn handle(
        &self,
        bytes: &[u8],
        transport: Transport,
        peer: SocketAddr,
        out: &mut Vec<u8>,
    ) -> Outcome {
        self.respond(bytes, transport, peer, out).outcome()
    }

    /// [`Handler::handle`], also counting the message (question type and response code,
    /// or why it was dropped) in the caller's per-worker block.
    #[inline]
    /// Queries handed to the resolver are counted by the resolver's own statistics.
    pub fn handle_counted(
        &self,
        bytes: &[u8],
        transport: Transport,
        peer: SocketAddr,
        out: &mut Vec<u8>,
        counters: &QueryCounters,
    ) -> Outcome {
        let handled = self.respond(bytes, transport, peer, out);
        match &handled {
            Handled::Answered { qtype, rcode } => counters.answered(*qtype, *rcode),
            Handled::Dropped(reason) => counters.dropped(*reason, 1),
            Handled::Recurse(_) => {}
        }
        handled.outcome()
    }

    fn respond(
        &self,
        bytes: &[u8],
        transport: Transport,
        peer: SocketAddr,
        out: &mut Vec<u8>,
    ) -> Handled {
        let req = match request::parse(bytes) {
            Ok(req) => req,
            Err(Rejection::Drop) => {
                // Both cases of `Drop`: a response (QR=1) or too short for a header.
                let qr = bytes.get(2).is_some_and(|f| f & 0x80 != 0);
                return Handled::Dropped(if qr && bytes.len() >= 12 {
                    DropReason::Response
                } else {
                    DropReason::Malformed
                });
            }
            Err(rejection) => {
                let (qtype, rcode) = match &rejection {
                    Rejection::Error { query, rcode, .. } => {
                        (query.as_ref().map(|q| q.query_type()), *rcode)
                    }
                    Rejection::Drop => (None, ResponseCode::FormErr),
                };
                let len = response::encode_error(&rejection, &self.opts, out);
                return Handled::encoded(len, qtype, rcode);
            }
        };
        let max_size = self.max_size(&req, transport);

        if req.opcode != OpCode::Query {
            // Only QUERY is served so far (NOTIFY and UPDATE come with transfers);
            // RFC 1035 §4.1.1 names NOTIMP for unsupported kinds of query.
            return self.refuse(&req, ResponseCode::NotImp, max_size, out);
        }
        let class = req.query.query_class();
        // QCLASS `*` matches every class (RFC 1035 §3.2.5); we only serve IN, so it is answered
        // from IN data, as Knot does.
        if class != DNSClass::IN && class != DNSClass::ANY {
            // Only IN zones are served; like Knot, other classes are REFUSED.
            return self.refuse(&req, ResponseCode::Refused, max_size, out);
        }
        if matches!(req.query.query_type(), RecordType::AXFR | RecordType::IXFR) {
            // AXFR over UDP is not defined (RFC 5936 §4.2), and IXFR over UDP (allowed by
            // RFC 1995 §2) is not offered: both are REFUSED over UDP. Over TCP they are
            // refused too until outgoing transfers exist (a separate piece of work); Knot
            // without a transfer ACL also refuses (NOTAUTH).
            return self.refuse(&req, ResponseCode::Refused, max_size, out);
        }

        // Authoritative data always wins: our zones are answered from the zones, never from
        // the cache.
        let zones = self.zones.load();
        let recursor = self.resolver.as_ref().filter(|r| r.allows(peer.ip()));
        let qtype = Some(req.query.query_type());
        // A pure resolver (no zones) skips the zone lookup.
        let answer = if zones.is_empty() {
            None
        } else {
            auth::answer(&req, &zones)
        };
        match answer {
            Some(answer) => {
                let len = response::encode(&req, &answer, max_size, &self.opts, out);
                if recursor.is_some() {
                    // RA tells a client it may recurse here (RFC 1035 §4.1.1).
                    cache::entry::set_recursion_available(out);
                }
                Handled::encoded(len, qtype, answer.rcode)
            }
            None => match recursor {
                Some(resolver) => {
                    drop(zones);
                    match resolver.start(req, bytes, transport, peer, max_size, &self.opts, out) {
                        cache::Start::Answered(len) => {
                            Handled::encoded(len, qtype, response_rcode(out))
                        }
                        cache::Start::Recurse(job) => Handled::Recurse(job),
                    }
                }
                // Not authoritative for the name and the client may not recurse: REFUSED,
                // as Knot does.
                None => self.refuse(&req, ResponseCode::Refused, max_size, out),
            },
        }
    }

    /// The largest response allowed for `req`: over UDP the requestor's EDNS payload size
    /// (512 without EDNS, RFC 1035 §4.2.1), capped by ours (RFC 6891 §6.2.5); over TCP the
    /// 16-bit length prefix is the only limit (RFC 7766 §8).
    fn max_size(&self, req: &Request, transport: Transport) -> u16 {
        match transport {
            Transport::Tcp => u16::MAX,
            Transport::Udp => self.opts.udp_limit(req),
        }
    }

    /// An empty answer carrying only `rcode` (question and OPT are echoed by the encoder).
    /// Built from empty sections, so unlike an error response it clones nothing.
    fn refuse(
        &self,
        req: &Request,
        rcode: ResponseCode,
        max_size: u16,
        out: &mut Vec<u8>,
    ) -> Handled {
        let answer = Answer::rcode_only(rcode);
        let len = response::encode(req, &answer, max_size, &self.opts, out);
        Handled::encoded(len, Some(req.query.query_type()), rcode)
    }
}

/// The rcode of an encoded response (header only; an OPT's extended bits are not needed
/// for counting cache answers).
pub fn response_rcode(msg: &[u8]) -> ResponseCode {
    ResponseCode::from_low(msg.get(3).map_or(2, |b| b & 0x0f))
}

/// What became of one message, for the listener and its counters.
enum Handled {
    /// `out` holds a response with this rcode to a question of this type (`None` when the
    /// question did not parse).
    Answered {
        qtype: Option<RecordType>,
        rcode: ResponseCode,
    },
    Dropped(DropReason),
    /// Handed to the resolver (see [`Outcome::Recurse`]).
    Recurse(Box<Recursion>),
}

impl Handled {
    fn encoded(len: usize, qtype: Option<RecordType>, rcode: ResponseCode) -> Handled {
        if len == 0 {
            Handled::Dropped(DropReason::EncodeFailed)
        } else {
            Handled::Answered { qtype, rcode }
        }
    }

    fn outcome(self) -> Outcome {
        match self {
            Handled::Answered { .. } => Outcome::Respond,
            Handled::Dropped(_) => Outcome::Drop,
            Handled::Recurse(job) => Outcome::Recurse(job),
        }
    }
}
