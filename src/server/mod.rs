//! Listeners: UDP sockets and TCP accept loops that feed the [`Handler`].
//!
//! - UDP ([`udp`]): per listen address, `workers` sockets bound with SO_REUSEPORT (the
//!   kernel spreads datagrams over them), each driven by one long-lived task that receives
//!   a batch with `recvmmsg`, answers every datagram inline into its own response buffer
//!   and sends the batch with `sendmmsg`. No task per datagram, nothing shared between
//!   requests.
//! - TCP ([`tcp`], RFC 7766): one accept loop per address, bounded by a connection cap;
//!   per connection a reader and a writer run concurrently, joined by a bounded queue, so
//!   pipelined queries are read while earlier answers are written.
//!
//! Every queue is bounded: under overload, connections beyond the cap are closed at once
//! and counted, and a connection whose client does not read its answers stops being read.
//! All tasks are spawned on the given runtime, tracked by the caller's `TaskTracker`, and
//! stop when the `CancellationToken` is cancelled (TCP connections first finish writing
//! the answers already computed).

pub mod tcp;
pub mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::Handler;
use crate::metrics::{CloseCounters, QueryCounters, Writer};

/// Resource limits of the listeners. Every queue and every per-client resource is bounded
/// by one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open TCP connections, over all TCP addresses. Connections beyond it are accepted
    /// and closed at once (counted in [`TcpStats::rejected`]).
    pub max_tcp_connections: usize,
    /// A TCP connection with no message started for this long is closed (RFC 7766 §6.2.3;
    /// Knot's `tcp-idle-timeout` default is 10 s).
    pub tcp_idle_timeout: Duration,
    /// Once a message has started arriving, it must be complete within this time; each
    /// batch of answers must be written within it too (slow-read/slow-write protection).
    pub tcp_io_timeout: Duration,
    /// Queries of one TCP connection answered but not yet written; when reached, the
    /// connection is not read further until its client reads.
    pub tcp_max_in_flight: usize,
    /// The same, over all TCP connections together.
    pub max_in_flight: usize,
    /// Datagrams received (and answered) per `recvmmsg` call, 1..=[`crate::sys::MAX_BATCH`].
    pub udp_batch: usize,
    /// SO_RCVBUF / SO_SNDBUF for UDP sockets; `None` keeps the system default.
    pub udp_recv_buffer: Option<usize>,
    pub udp_send_buffer: Option<usize>,
    /// Length of the TCP accept queue (`listen(2)` backlog).
    pub tcp_backlog: i32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tcp_connections: 1024,
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_io_timeout: Duration::from_secs(2),
            tcp_max_in_flight: 64,
            max_in_flight: 4096,
            udp_batch: 32,
            udp_recv_buffer: None,
            udp_send_buffer: None,
            tcp_backlog: 1024,
        }
    }
}

/// Counters of one UDP socket task (all relaxed; read for metrics and tests).
#[derive(Debug)]
pub struct UdpStats {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Responses sent.
    pub answered: AtomicU64,
    /// Datagrams not answered: malformed beyond answering, responses, truncated on
    /// receive, or from source port 0.
    pub dropped: AtomicU64,
    /// Responses the kernel refused to send.
    pub send_errors: AtomicU64,
    /// Receive errors other than "nothing queued".
    pub recv_errors: AtomicU64,
    /// Per-query counters (by type, rcode, drop reason; latency), written by this task only.
    pub counters: QueryCounters,
    /// The same for queries answered after an upstream fetch: written by their tasks, so
    /// shared (they are rare next to the cheap answers above).
    pub recursed: QueryCounters,
}

impl Default for UdpStats {
    fn default() -> Self {
        UdpStats {
            received: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            recv_errors: AtomicU64::new(0),
            counters: QueryCounters::new(Writer::Exclusive),
            recursed: QueryCounters::new(Writer::Shared),
        }
    }
}

/// Counters of the TCP listeners (shared by all connections of one address).
#[derive(Debug)]
pub struct TcpStats {
    pub accepted: AtomicU64,
    /// Connections closed right after accept because `max_tcp_connections` was reached.
    pub rejected: AtomicU64,
    pub accept_errors: AtomicU64,
    /// Connections closed after `tcp_idle_timeout` without a new message.
    pub idle_closed: AtomicU64,
    /// Connections closed because a message or a write did not complete in time.
    pub io_timeouts: AtomicU64,
    pub queries: AtomicU64,
    pub answered: AtomicU64,
    /// Messages not answered (see [`UdpStats::dropped`]).
    pub dropped: AtomicU64,
    /// Per-query counters, shared by the connections of this address.
    pub counters: QueryCounters,
    /// Connections closed, by reason (including those closed at once over the cap).
    pub closed: CloseCounters,
}

impl Default for TcpStats {
    fn default() -> Self {
        TcpStats {
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            idle_closed: AtomicU64::new(0),
            io_timeouts: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            counters: QueryCounters::new(Writer::Shared),
            closed: CloseCounters::default(),
        }
    }
}

/// A plain sum of counters, for reading.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UdpTotals {
    pub received: u64,
    pub answered: u64,
    pub dropped: u64,
    pub send_errors: u64,
    pub recv_errors: u64,
}

/// The running listeners: bound addresses and counters. Dropping it stops nothing; cancel
/// the token given to [`spawn_listeners`] and wait on the tracker for that.
#[derive(Debug)]
pub struct Listeners {
    udp_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    udp_stats: Vec<Arc<UdpStats>>,
    tcp_stats: Vec<Arc<TcpStats>>,
    tcp_in_flight: TcpInFlight,
}

/// Reads how many TCP answers are computed but not yet written, over all connections.
#[derive(Debug, Clone)]
pub struct TcpInFlight {
    permits: Arc<Semaphore>,
    max: usize,
}

impl TcpInFlight {
    pub fn get(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }
}

impl Listeners {
    /// The bound UDP addresses, one per requested address (ports resolved when 0 was asked).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// The bound TCP addresses, one per requested address.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// Counters of every UDP socket task.
    pub fn udp_stats(&self) -> &[Arc<UdpStats>] {
        &self.udp_stats
    }

    /// Counters of every TCP address.
    pub fn tcp_stats(&self) -> &[Arc<TcpStats>] {
        &self.tcp_stats
    }

    /// The TCP in-flight gauge (answers not yet written, all connections).
    pub fn tcp_in_flight(&self) -> TcpInFlight {
        self.tcp_in_flight.clone()
    }

    /// UDP counters summed over all sockets.
    pub fn udp_totals(&self) -> UdpTotals {
        let mut t = UdpTotals::default();
        for s in &self.udp_stats {
            t.received += s.received.load(Ordering::Relaxed);
            t.answered += s.answered.load(Ordering::Relaxed);
            t.dropped += s.dropped.load(Ordering::Relaxed);
            t.send_errors += s.send_errors.load(Ordering::Relaxed);
            t.recv_errors += s.recv_errors.load(Ordering::Relaxed);
        }
        t
    }
}

/// Binds every UDP and TCP address and starts serving them on `rt` (the latency runtime).
///
/// - `udp`: each address gets `workers` SO_REUSEPORT sockets (at least one), each served by
///   one task. Port 0 is resolved once, so all sockets of an address share its port.
/// - `tcp`: each address gets one listening socket and one accept loop.
/// - All tasks (listeners and TCP connections) are spawned through `tracker` and stop when
///   `token` is cancelled.
///
/// Binding is done before anything is spawned, so an error (e.g. address in use) leaves
/// nothing running. Must not be called from within an async context that forbids blocking;
/// it does not block, but it registers sockets with `rt`'s reactor.
#[allow(clippy::too_many_arguments)]
pub fn spawn_listeners(
    rt: &Handle,
    handler: Arc<Handler>,
    udp: &[SocketAddr],
    tcp: &[SocketAddr],
    limits: Limits,
    workers: usize,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> io::Result<Listeners> {
    let limits = sanitize(limits);
    let workers = workers.max(1);
    let _enter = rt.enter();

    // Bind everything first.
    let mut udp_sockets = Vec::new();
    let mut udp_addrs = Vec::new();
    for addr in udp {
        let first = bind_udp(*addr, &limits)?;
        let bound = first.local_addr()?;
        log_udp_buffer(&first, bound, &limits);
        udp_addrs.push(bound);
        udp_sockets.push(first);
        for _ in 1..workers {
            udp_sockets.push(bind_udp(bound, &limits)?);
        }
    }
    let mut tcp_listeners = Vec::new();
    let mut tcp_addrs = Vec::new();
    for addr in tcp {
        let listener = bind_tcp(*addr, &limits)?;
        tcp_addrs.push(listener.local_addr()?);
        tcp_listeners.push(listener);
    }

    let mut udp_stats = Vec::new();
    for socket in udp_sockets {
        let stats = Arc::new(UdpStats::default());
        udp_stats.push(Arc::clone(&stats));
        let worker = udp::UdpWorker::new(
            socket,
            Arc::clone(&handler),
            limits.udp_batch,
            stats,
            token.clone(),
            tracker.clone(),
        );
        tracker.spawn_on(worker.run(), rt);
    }

    let connections = Arc::new(Semaphore::new(limits.max_tcp_connections));
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    let mut tcp_stats = Vec::new();
    for listener in tcp_listeners {
        let stats = Arc::new(TcpStats::default());
        tcp_stats.push(Arc::clone(&stats));
        let acceptor = tcp::Acceptor {
            listener,
            handler: Arc::clone(&handler),
            limits: tcp::ConnLimits::from(&limits),
            connections: Arc::clone(&connections),
            in_flight: Arc::clone(&in_flight),
            stats,
            token: token.clone(),
            tracker: tracker.clone(),
        };
        tracker.spawn_on(acceptor.run(), rt);
    }

    Ok(Listeners {
        udp_addrs,
        tcp_addrs,
        udp_stats,
        tcp_stats,
        tcp_in_flight: TcpInFlight {
            permits: in_flight,
            max: limits.max_in_flight,
        },
    })
}

/// Clamps limits to values the primitives accept (a zero-capacity channel or semaphore
/// would stall; tokio semaphores have a maximum).
fn sanitize(mut limits: Limits) -> Limits {
    limits.max_tcp_connections = limits.max_tcp_connections.min(Semaphore::MAX_PERMITS);
    limits.max_in_flight = limits.max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
    limits.tcp_max_in_flight = limits.tcp_max_in_flight.max(1);
    limits.udp_batch = limits.udp_batch.clamp(1, crate::sys::MAX_BATCH);
    limits.tcp_backlog = limits.tcp_backlog.max(1);
    limits
}

fn new_socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        // Serve exactly the configured address family on this socket, so "::" and
        // "0.0.0.0" can both be configured.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Says what receive buffer the kernel granted, when it is less than what was asked for
/// (capped by net.core.rmem_max); once per address, not per worker socket.
fn log_udp_buffer(socket: &tokio::net::UdpSocket, addr: SocketAddr, limits: &Limits) {
    let Some(asked) = limits.udp_recv_buffer else {
        return;
    };
    // Linux reports twice the size it grants (the doubled value covers bookkeeping; see
    // socket(7), SO_RCVBUF).
    match socket2::SockRef::from(socket).recv_buffer_size() {
        Ok(got) if got / 2 < asked => tracing::info!(
            %addr,
            asked,
            granted = got / 2,
            "UDP receive buffer capped by net.core.rmem_max; raise it to absorb longer stalls"
        ),
        Ok(got) => tracing::debug!(%addr, granted = got / 2, "UDP receive buffer"),
        Err(e) => tracing::debug!(%addr, "reading SO_RCVBUF: {e}"),
    }
}

fn bind_udp(addr: SocketAddr, limits: &Limits) -> io::Result<tokio::net::UdpSocket> {
    let socket = new_socket(addr, Type::DGRAM, Protocol::UDP)?;
    socket.set_reuse_port(true)?;
    if let Some(size) = limits.udp_recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(size) = limits.udp_send_buffer {
        socket.set_send_buffer_size(size)?;
    }
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

fn bind_tcp(addr: SocketAddr, limits: &Limits) -> io::Result<tokio::net::TcpListener> {
    let socket = new_socket(addr, Type::STREAM, Protocol::TCP)?;
    // Restarting must not wait for old connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(limits.tcp_backlog)?;
    tokio::net::TcpListener::from_std(socket.into())
}
