//! DNS over TCP (RFC 7766): accept loop with a connection cap, and per connection a reader
//! and a writer that run concurrently, joined by a bounded queue of answers.
//!
//! The reader reads length-prefixed messages (RFC 1035 §4.2.2), answers each one (answers
//! are CPU-only and never wait) and queues the encoded answer; the writer sends queued
//! answers, several per write when the client pipelines. So a client may send many queries
//! back to back without waiting (RFC 7766 §6.2.1.1) and reading continues while earlier
//! answers are written. Answers may be sent in any order (RFC 7766 §7); the client matches
//! them by message id.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::{self, Handler, Outcome, Transport};
use crate::metrics::{CloseReason, DropReason};
use crate::server::{Limits, TcpStats};

/// Read buffer per connection: holds several pipelined queries, so they cost one read.
const READ_BUF_LEN: usize = 4096;

/// The writer stops gathering queued answers into one write beyond this many bytes.
const WRITE_BATCH_LEN: usize = 16 * 1024;

/// Answer buffers larger than this are not kept for reuse (rare large answers should not
/// pin memory for the life of the connection).
const KEEP_BUF_CAPACITY: usize = 4096;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The per-connection part of [`Limits`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    idle_timeout: Duration,
    io_timeout: Duration,
    max_in_flight: usize,
}

impl From<&Limits> for ConnLimits {
    fn from(l: &Limits) -> Self {
        ConnLimits {
            idle_timeout: l.tcp_idle_timeout,
            io_timeout: l.tcp_io_timeout,
            max_in_flight: l.tcp_max_in_flight.max(1),
        }
    }
}

/// One listening socket and what its connections share.
pub(crate) struct Acceptor {
    pub(crate) listener: TcpListener,
    pub(crate) handler: Arc<Handler>,
    pub(crate) limits: ConnLimits,
    /// One permit per open connection (shared by all TCP addresses).
    pub(crate) connections: Arc<Semaphore>,
    /// One permit per answer computed but not yet written (shared by all connections).
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) stats: Arc<TcpStats>,
    pub(crate) token: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

impl Acceptor {
    /// Accepts connections until the token is cancelled.
    pub(crate) async fn run(self) {
        loop {
            let accepted = tokio::select! {
                biased;
                () = self.token.cancelled() => return,
                a = self.listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    self.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        () = self.token.cancelled() => return,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            };
            let Ok(permit) = Arc::clone(&self.connections).try_acquire_owned() else {
                // Over the cap: accept and close at once, rather than leaving the client
                // waiting in the backlog (RFC 7766 §6.2.2 lets servers close connections
                // to manage resources).
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                self.stats.closed.record(CloseReason::Cap);
                drop(stream);
                continue;
            };
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            // Answers are written whole; Nagle would only delay them.
            let _ = stream.set_nodelay(true);
            let conn = Connection {
                handler: Arc::clone(&self.handler),
                limits: self.limits,
                in_flight: Arc::clone(&self.in_flight),
                stats: Arc::clone(&self.stats),
                // Cancelled on shutdown, by the writer when the connection is broken, and
                // when the reader stops (which ends the connection's recursion tasks).
                token: self.token.child_token(),
                peer,
                tracker: self.tracker.clone(),
            };
            self.tracker.spawn(async move {
                conn.serve(stream).await;
                drop(permit);
            });
        }
    }
}

/// One answer on its way to the writer, holding its share of the in-flight cap.
struct Queued {
    message: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

struct Connection {
    handler: Arc<Handler>,
    limits: ConnLimits,
    in_flight: Arc<Semaphore>,
    stats: Arc<TcpStats>,
    token: CancellationToken,
    peer: SocketAddr,
    tracker: TaskTracker,
}

impl Connection {
    async fn serve(self, mut stream: TcpStream) {
        let (rd, wr) = stream.split();
        // The queue bounds answers per connection; the spare channel returns written
        // buffers to the reader for reuse.
        let (queue_tx, queue_rx) = mpsc::channel::<Queued>(self.limits.max_in_flight);
        let (spare_tx, spare_rx) = mpsc::channel::<Vec<u8>>(self.limits.max_in_flight);
        let (read_end, write_end) = tokio::join!(
            self.read_queries(rd, queue_tx, spare_rx),
            self.write_answers(wr, queue_rx, spare_tx),
        );
        // A failed writer cancels the reader, so its reason is the real one.
        self.stats.closed.record(write_end.unwrap_or(read_end));
    }

    /// Reads and answers queries until EOF, an error, a timeout or cancellation. Dropping
    /// `queue` on return lets the writer finish the answers already queued.
    async fn read_queries(
        &self,
        rd: ReadHalf<'_>,
        queue: mpsc::Sender<Queued>,
        mut spare: mpsc::Receiver<Vec<u8>>,
    ) -> CloseReason {
        // A client that closed its side is gone: queries of it still waiting for upstream
        // answers are cancelled (and with them upstream fetches nobody else waits for).
        let _cancel_recursions = self.token.clone().drop_guard();
        let mut rd = BufReader::with_capacity(READ_BUF_LEN, rd);
        let mut query: Vec<u8> = Vec::new();
        loop {
            // Wait for the next message to start: the idle timeout applies (RFC 7766 §6.2.3).
            let started = tokio::select! {
                biased;
                () = self.token.cancelled() => return CloseReason::Shutdown,
                r = timeout(self.limits.idle_timeout, rd.fill_buf()) => r,
            };
            match started {
                Err(_elapsed) => {
                    self.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    return CloseReason::Idle;
                }
                Ok(Err(_)) => return CloseReason::Error,
                Ok(Ok([])) => return CloseReason::ClientClose,
                Ok(Ok(_)) => {}
            }
            // A started message must arrive completely in time (slow-sender protection).
            let complete = timeout(self.limits.io_timeout, async {
                let len = rd.read_u16().await?;
                query.resize(usize::from(len), 0);
                rd.read_exact(&mut query).await?;
                Ok::<(), io::Error>(())
            })
            .await;
            match complete {
                Ok(Ok(())) => {}
                // EOF in the middle of a message
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return CloseReason::ClientClose;
                }
                Ok(Err(_)) => return CloseReason::Error,
                Err(_elapsed) => {
                    self.stats.io_timeouts.fetch_add(1, Ordering::Relaxed);
                    return CloseReason::IoTimeout;
                }
            }
            let received = Instant::now();
            self.stats.queries.fetch_add(1, Ordering::Relaxed);

            // Over the global in-flight cap, stop reading this connection until answers
            // have been written somewhere.
            let permit = match Arc::clone(&self.in_flight).try_acquire_owned() {
                Ok(p) => p,
                Err(_) => tokio::select! {
                    biased;
                    () = self.token.cancelled() => return CloseReason::Shutdown,
                    p = Arc::clone(&self.in_flight).acquire_owned() => match p {
                        Ok(p) => p,
                        // Semaphore closed: never happens, but stop.
                        Err(_) => return CloseReason::Error,
                    },
                },
            };
            let mut message = spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(512));
            let counters = &self.stats.counters;
            let query_log = self.handler.query_log();
            let logged = query_log.sample();
            match self.handler.handle_counted(
                &query,
                Transport::Tcp,
                self.peer,
                &mut message,
                counters,
            ) {
                Outcome::Respond => {
                    let latency = received.elapsed();
                    counters.latency(latency, 1);
                    if logged {
                        query_log.log(self.peer, Transport::Tcp, &message, latency);
                    }
                    let queued = Queued {
                        message,
                        _permit: permit,
                    };
                    // Waits while the per-connection queue is full (the client is not
                    // reading); fails when the writer gave up on the connection.
                    if queue.send(queued).await.is_err() {
                        // The writer's reason is recorded instead.
                        return CloseReason::Error;
                    }
                }
                Outcome::Drop => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Recurse(job) => {
                    // Answered when ready, in any order (RFC 7766 §7); the queue sender
                    // it holds keeps the writer open until then.
                    let queue = queue.clone();
                    let token = self.token.clone();
                    let peer = self.peer;
                    let stats = Arc::clone(&self.stats);
                    let qtype = job.qtype();
                    self.tracker.spawn(async move {
                        if job.run(&token, &mut message).await {
                            let counters = &stats.counters;
                            counters.answered(Some(qtype), handler::response_rcode(&message));
                            counters.latency(received.elapsed(), 1);
                            if logged {
                                let latency = received.elapsed();
                                query_log.log(peer, Transport::Tcp, &message, latency);
                            }
                            let queued = Queued {
                                message,
                                _permit: permit,
                            };
                            let _ = queue.send(queued).await;
                        }
                    });
                }
            }
        }
    }

    /// Writes queued answers, each with its 2-byte length (RFC 1035 §4.2.2), until the
    /// reader is done and the queue is empty, then closes the sending side.
    async fn write_answers(
        &self,
        mut wr: WriteHalf<'_>,
        mut queue: mpsc::Receiver<Queued>,
        spare: mpsc::Sender<Vec<u8>>,
    ) -> Option<CloseReason> {
        let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH_LEN);
        // Permits are released only once the bytes are handed to the kernel.
        let mut written: Vec<Queued> = Vec::with_capacity(self.limits.max_in_flight);
        while let Some(first) = queue.recv().await {
            batch.clear();
            append(&mut batch, first, &mut written);
            while batch.len() < WRITE_BATCH_LEN {
                match queue.try_recv() {
                    Ok(next) => append(&mut batch, next, &mut written),
                    Err(_) => break,
                }
            }
            let answered = written.len() as u64;
            match timeout(self.limits.io_timeout, wr.write_all(&batch)).await {
                Ok(Ok(())) => {
                    self.stats.answered.fetch_add(answered, Ordering::Relaxed);
                }
                Ok(Err(_)) => {
                    self.give_up(&written, &queue);
                    return Some(CloseReason::Error);
                }
                Err(_elapsed) => {
                    // The client does not read its answers: give up on it.
                    self.stats.io_timeouts.fetch_add(1, Ordering::Relaxed);
                    self.give_up(&written, &queue);
                    return Some(CloseReason::IoTimeout);
                }
            }
            for q in written.drain(..) {
                let mut message = q.message;
                if message.capacity() <= KEEP_BUF_CAPACITY {
                    message.clear();
                    let _ = spare.try_send(message);
                }
            }
        }
        let _ = timeout(self.limits.io_timeout, wr.shutdown()).await;
        None
    }

    /// Stops the reader and counts the answers that will never be written.
    fn give_up(&self, written: &[Queued], queue: &mpsc::Receiver<Queued>) {
        self.token.cancel();
        let lost = (written.len() + queue.len()) as u64;
        self.stats.counters.dropped(DropReason::SendError, lost);
    }
}

/// Appends one length-prefixed answer to `batch` and keeps it (with its permit) in
/// `written` until the batch is on the wire.
fn append(batch: &mut Vec<u8>, queued: Queued, written: &mut Vec<Queued>) {
    // The encoder never produces more than 65535 bytes; anything else is not sent.
    if let Ok(len) = u16::try_from(queued.message.len()) {
        batch.extend_from_slice(&len.to_be_bytes());
        batch.extend_from_slice(&queued.message);
    }
    written.push(queued);
}
