//! One UDP socket served by one task: receive a batch, answer each datagram inline into its
//! own buffer, send the batch.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::time::Instant;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::{self, Handler, Outcome, Transport};
use crate::metrics::DropReason;
use crate::server::UdpStats;
use crate::sys;

/// Receive buffer per datagram: the largest UDP payload, so no query is ever cut short
/// (as Knot does). Pages that are never written stay untouched.
const RECV_BUF_LEN: usize = 65535;

/// Initial capacity of a response buffer; grows (once) for larger answers and is reused.
const RESPONSE_BUF_CAPACITY: usize = 1232;

const UNSPECIFIED: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// The state of one socket task. Each batch slot owns its request and response buffer, so
/// no two requests ever share memory.
pub(crate) struct UdpWorker {
    /// Shared with the recursion tasks, which send their answers themselves.
    socket: Arc<UdpSocket>,
    /// Where recursion tasks are spawned (bounded by the resolver's client limits).
    tracker: TaskTracker,
    handler: Arc<Handler>,
    stats: Arc<UdpStats>,
    token: CancellationToken,
    requests: Vec<Vec<u8>>,
    lens: Vec<usize>,
    sources: Vec<SocketAddr>,
    responses: Vec<Vec<u8>>,
}

/// Counters of one batch, added to the shared atomics once per batch.
#[derive(Default)]
struct BatchCounts {
    received: u64,
    answered: u64,
    dropped: u64,
    send_errors: u64,
}

impl UdpWorker {
    pub(crate) fn new(
        socket: UdpSocket,
        handler: Arc<Handler>,
        batch: usize,
        stats: Arc<UdpStats>,
        token: CancellationToken,
        tracker: TaskTracker,
    ) -> UdpWorker {
        let batch = batch.clamp(1, sys::MAX_BATCH);
        UdpWorker {
            socket: Arc::new(socket),
            tracker,
            handler,
            stats,
            token,
            // One zeroed allocation each: `vec![buf; n]` would copy the first buffer into
            // the others and so write every page of them.
            requests: (0..batch).map(|_| vec![0; RECV_BUF_LEN]).collect(),
            lens: vec![0; batch],
            sources: vec![UNSPECIFIED; batch],
            responses: (0..batch)
                .map(|_| Vec::with_capacity(RESPONSE_BUF_CAPACITY))
                .collect(),
        }
    }

    /// Serves the socket until the token is cancelled.
    pub(crate) async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                () = self.token.cancelled() => return,
                ready = self.socket.readable() => {
                    if ready.is_err() {
                        self.stats.recv_errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            }
            let received = {
                let UdpWorker {
                    socket,
                    requests,
                    lens,
                    sources,
                    ..
                } = &mut self;
                socket.try_io(Interest::READABLE, || {
                    sys::recv_batch(&**socket, requests, lens, sources)
                })
            };
            match received {
                Ok(n) => {
                    if !self.answer_and_send(n).await {
                        return;
                    }
                }
                // Readiness was stale; `try_io` cleared it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    self.stats.recv_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Answers the first `n` received datagrams and sends the responses. Returns false
    /// when the token was cancelled while waiting to send.
    async fn answer_and_send(&mut self, n: usize) -> bool {
        // Latency is measured per batch: one clock read when the batch is in hand, one
        // when its last response is encoded. Every response of the batch waits for that
        // point before it is sent, so the batch time is each one's true receive-to-encoded
        // time, at two clock reads per batch instead of two per query.
        let started = Instant::now();
        let qc = &self.stats.counters;
        qc.set_in_flight(n as u64);
        let mut counts = BatchCounts {
            received: n as u64,
            ..BatchCounts::default()
        };
        let query_log = self.handler.query_log();
        // Which slots have a response to send, in order.
        let mut ready = [0usize; sys::MAX_BATCH];
        let mut m = 0usize;
        for (slot, (((request, len), source), response)) in self
            .requests
            .iter()
            .zip(&self.lens)
            .zip(&self.sources)
            .zip(self.responses.iter_mut())
            .enumerate()
            .take(n)
        {
            let Some(bytes) = request.get(..*len) else {
                counts.dropped += 1;
                qc.dropped(DropReason::Malformed, 1);
                continue;
            };
            // A reply to port 0 cannot be delivered; such packets are spoofed or broken.
            if source.port() == 0 {
                counts.dropped += 1;
                qc.dropped(DropReason::SourcePortZero, 1);
                continue;
            }
            let logged = query_log.sample();
            match self
                .handler
                .handle_counted(bytes, Transport::Udp, *source, response, qc)
            {
                Outcome::Respond => {
                    if logged {
                        query_log.log(*source, Transport::Udp, response, started.elapsed());
                    }
                    if let Some(r) = ready.get_mut(m) {
                        *r = slot;
                        m += 1;
                    }
                }
                Outcome::Drop => counts.dropped += 1,
                Outcome::Recurse(job) => {
                    let socket = Arc::clone(&self.socket);
                    let stats = Arc::clone(&self.stats);
                    let token = self.token.clone();
                    let dest = *source;
                    let qtype = job.qtype();
                    self.tracker.spawn(async move {
                        let mut out = Vec::new();
                        if job.run(&token, &mut out).await {
                            let counters = &stats.recursed;
                            counters.answered(Some(qtype), handler::response_rcode(&out));
                            counters.latency(started.elapsed(), 1);
                            if logged {
                                query_log.log(dest, Transport::Udp, &out, started.elapsed());
                            }
                            match socket.send_to(&out, dest).await {
                                Ok(_) => stats.answered.fetch_add(1, Ordering::Relaxed),
                                Err(_) => stats.send_errors.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                    });
                }
            }
        }

        let mut msgs: [(&[u8], SocketAddr); sys::MAX_BATCH] = [(&[], UNSPECIFIED); sys::MAX_BATCH];
        for (msg, &slot) in msgs.iter_mut().zip(&ready).take(m) {
            if let (Some(response), Some(dest)) = (self.responses.get(slot), self.sources.get(slot))
            {
                *msg = (response.as_slice(), *dest);
            }
        }
        let msgs = msgs.get(..m).unwrap_or_default();
        if m > 0 {
            qc.latency(started.elapsed(), m as u64);
        }

        let mut sent = 0usize;
        let mut cancelled = false;
        while sent < msgs.len() {
            let rest = msgs.get(sent..).unwrap_or_default();
            match self
                .socket
                .try_io(Interest::WRITABLE, || sys::send_batch(&*self.socket, rest))
            {
                Ok(0) => {
                    // Should not happen (sendmmsg reports an error instead); avoid spinning.
                    counts.send_errors += rest.len() as u64;
                    break;
                }
                Ok(k) => {
                    counts.answered += k as u64;
                    sent += k;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Send buffer full: wait (this also stops reading, so the kernel sheds
                    // new queries rather than us queueing them).
                    tokio::select! {
                        biased;
                        () = self.token.cancelled() => { cancelled = true; break; }
                        w = self.socket.writable() => if w.is_err() {
                            counts.send_errors += rest.len() as u64;
                            break;
                        },
                    }
                }
                Err(_) => {
                    // This datagram cannot be sent (e.g. unreachable destination); skip it.
                    counts.send_errors += 1;
                    sent += 1;
                }
            }
        }

        let s = &self.stats;
        s.counters
            .dropped(DropReason::SendError, counts.send_errors);
        s.counters.set_in_flight(0);
        s.received.fetch_add(counts.received, Ordering::Relaxed);
        s.answered.fetch_add(counts.answered, Ordering::Relaxed);
        s.dropped.fetch_add(counts.dropped, Ordering::Relaxed);
        s.send_errors
            .fetch_add(counts.send_errors, Ordering::Relaxed);
        !cancelled
    }
}
