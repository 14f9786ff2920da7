//! Batched UDP DNS load generator.
//!
//! One dnsperf process tops out near 150k queries/s on the project's 2-core machine, below
//! what a fast server answers, so this generator sends and receives with
//! `sendmmsg`/`recvmmsg` (through `muninn::sys`) from one thread and several sockets.
//!
//! It reads a dnsperf-format query file (`name TYPE` per line), sends the queries in order
//! (looping) either at a fixed rate (`--rate`) or as fast as a per-socket window of
//! outstanding queries allows, matches responses by (socket, message id, question), and
//! prints one machine-readable `key=value` line: achieved QPS, mean/p50/p99/p99.9/max
//! latency, lost queries, rcode counts. With `--per-second` it also prints one line per
//! second of sending (the queries sent in that second: count, lost, p50/p99 latency), used
//! by `benches/load.sh reload` to see the latency bump while a big zone reloads.
//!
//! An answer's latency runs from just before the `sendmmsg` that sent its query to the
//! kernel's receive time of the answer (`SO_TIMESTAMPNS`), not to the moment this process
//! reads it: on a 2-core box a kernel thread that preempts the generator for 8 ms would
//! otherwise show up as 8 ms of server latency for every answer waiting in its sockets
//! (seen with perf sched: nearly all the >1 ms p99 spikes of an idle server).
//!
//! Run pinned to a core other than the server's: `taskset -c 1 loadgen --server ...`.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use muninn::sys::{MAX_BATCH, enable_rx_timestamps, recv_batch_stamped, send_batch};
use socket2::{Domain, Protocol, Socket, Type};

#[derive(Parser, Debug)]
#[command(
    about = "Batched UDP DNS load generator (sendmmsg/recvmmsg)",
    args_override_self = true
)]
struct Args {
    /// Server address.
    #[arg(short = 's', long, default_value = "127.0.0.1:53")]
    server: SocketAddr,
    /// dnsperf-format query file: one "name TYPE" per line ('#' starts a comment).
    #[arg(short = 'd', long)]
    queries: PathBuf,
    /// How long to send, in seconds.
    #[arg(short = 'l', long, default_value_t = 10.0)]
    duration: f64,
    /// Target rate in queries per second; 0 sends as fast as the window allows.
    #[arg(short = 'Q', long, default_value_t = 0)]
    rate: u64,
    /// Number of UDP sockets (source ports); each has its own 16-bit id space.
    #[arg(short = 'c', long, default_value_t = 8)]
    sockets: usize,
    /// Most queries in flight per socket (also caps fixed-rate mode). 8 x 16 = 128 in
    /// flight saturate one server core; more than ~200 only overflows the server's default
    /// socket receive buffer and shows up as loss.
    #[arg(short = 'w', long, default_value_t = 16)]
    window: usize,
    /// Datagrams per sendmmsg/recvmmsg call.
    #[arg(short = 'b', long, default_value_t = 32)]
    batch: usize,
    /// A query without response after this long counts as lost.
    #[arg(short = 't', long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Add an EDNS(0) OPT record advertising this UDP payload size (0: no EDNS).
    #[arg(long, default_value_t = 0)]
    edns: u16,
    /// Also print one line per second of sending.
    #[arg(long)]
    per_second: bool,
    /// Stop sending early on SIGUSR1 (then drain and report as usual), so a caller can end
    /// the run when the event it watches is over; `--duration` is then the upper bound.
    #[arg(long)]
    stop_on_usr1: bool,
    /// Write the process id to this file (for `kill -USR1`).
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Free-form label echoed at the start of the result line.
    #[arg(long, default_value = "loadgen")]
    label: String,
    /// Poll this zone's SOA serial (one query every `--watch-interval-ms`, on its own
    /// socket, from this process: an outside poller spawning `kdig` would steal CPU from
    /// the server or the generator and show up in the very latency being measured).
    #[arg(long)]
    watch_soa: Option<String>,
    /// With `--watch-soa`: the serial to wait for; its first sighting is reported.
    #[arg(long)]
    watch_serial: Option<u32>,
    /// With `--watch-serial`: stop sending this many seconds after the serial is first seen.
    #[arg(long)]
    after_serial_s: Option<f64>,
    #[arg(long, default_value_t = 100)]
    watch_interval_ms: u64,
    /// With `--per-second`: watch for this file to appear (checked every millisecond) and
    /// take its appearance as the start of the event being measured (a reload). The run
    /// is then summarised in phases: `before` (whole seconds before the mark), `after`
    /// (from the first whole second after the `--watch-serial` serial was first seen or
    /// `--mark-end-file` appeared) and `during`, each
    /// with the quantiles of all its queries and of its per-second p99s. The caller
    /// creates the file with a shell builtin (`: >FILE`) right before it triggers the
    /// event, so no process is forked on the measured cores.
    #[arg(long)]
    mark_file: Option<PathBuf>,
    /// With `--mark-file`: this file's appearance ends the event (when no watched serial
    /// does), e.g. a purge job seen finished.
    #[arg(long)]
    mark_end_file: Option<PathBuf>,
    /// Time answers when this process reads them, not when the kernel received them
    /// (`SO_TIMESTAMPNS`, the default): then any time the generator spends off the CPU
    /// (preempted by a kernel thread on its core, say) counts as the server's latency.
    #[arg(long)]
    user_timestamps: bool,
}

/// Polls one zone's SOA serial from the generator's own loop.
struct Watch {
    sock: UdpSocket,
    query: Vec<u8>,
    next_id: u16,
    interval_ns: u64,
    next_poll_ns: u64,
    target: Option<u32>,
    after_ns: Option<u64>,
    /// When the target serial was first seen (ns since start).
    seen_ns: Option<u64>,
    last_serial: Option<u32>,
}

impl Watch {
    fn new(args: &Args, zone: &str) -> anyhow::Result<Watch> {
        let name = Name::from_str(zone).context("--watch-soa: bad zone name")?;
        let mut msg = Message::new(0, MessageType::Query, OpCode::Query);
        msg.add_query(Query::query(name, RecordType::SOA));
        Ok(Watch {
            sock: open_socket(&args.server).context("opening the watch socket")?,
            query: msg.to_vec().context("encoding the SOA query")?,
            next_id: 0,
            interval_ns: args.watch_interval_ms.max(1) * 1_000_000,
            next_poll_ns: 0,
            target: args.watch_serial,
            after_ns: args.after_serial_s.map(|s| (s * 1e9) as u64),
            seen_ns: None,
            last_serial: None,
        })
    }

    /// Sends a poll when one is due, reads answers; returns the new end of sending when
    /// the target serial has just been seen and `--after-serial-s` is set.
    fn poll(&mut self, now: u64) -> Option<u64> {
        if now >= self.next_poll_ns {
            self.next_poll_ns = now + self.interval_ns;
            self.next_id = self.next_id.wrapping_add(1);
            if let Some(id) = self.query.get_mut(..2) {
                id.copy_from_slice(&self.next_id.to_be_bytes());
            }
            let _ = self.sock.send(&self.query);
        }
        let mut buf = [0u8; 4096];
        let mut stop_at = None;
        while let Ok(n) = self.sock.recv(&mut buf) {
            let Some(Ok(msg)) = buf.get(..n).map(Message::from_vec) else {
                continue;
            };
            let serial = msg.answers.iter().find_map(|r| match &r.data {
                hickory_proto::rr::RData::SOA(soa) => Some(soa.serial),
                _ => None,
            });
            if let Some(serial) = serial {
                self.last_serial = Some(serial);
                if self.seen_ns.is_none() && Some(serial) == self.target {
                    self.seen_ns = Some(now);
                    stop_at = self.after_ns.map(|a| now + a);
                }
            }
        }
        stop_at
    }
}

/// A pause of the generator's loop longer than this is the generator being preempted, not
/// work (one iteration sends one batch and reads at most a few hundred answers).
const GEN_STALL_NS: u64 = 1_000_000;

/// Latency histogram: 1 us buckets up to 10 ms, then 100 us buckets up to 10 s.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum_ns: u128,
    max_ns: u64,
}

const FINE_BUCKETS: u64 = 10_000; // 1 us each
const COARSE_BUCKETS: u64 = 99_900; // 100 us each, 10 ms .. 10 s

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; (FINE_BUCKETS + COARSE_BUCKETS + 1) as usize],
            total: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }

    fn bucket(ns: u64) -> usize {
        let us = ns / 1_000;
        let b = if us < FINE_BUCKETS {
            us
        } else {
            FINE_BUCKETS + ((us - FINE_BUCKETS) / 100).min(COARSE_BUCKETS)
        };
        b as usize
    }

    /// Upper edge of a bucket, in microseconds.
    fn bucket_upper_us(b: usize) -> f64 {
        let b = b as u64;
        if b < FINE_BUCKETS {
            (b + 1) as f64
        } else {
            (FINE_BUCKETS + (b - FINE_BUCKETS + 1) * 100) as f64
        }
    }

    fn record(&mut self, ns: u64) {
        if let Some(c) = self.counts.get_mut(Self::bucket(ns)) {
            *c += 1;
        }
        self.total += 1;
        self.sum_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    fn mean_us(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.sum_ns as f64 / self.total as f64 / 1_000.0
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum_ns += other.sum_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// The latency below which a fraction `q` of the samples fall (bucket upper edge, us).
    fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::bucket_upper_us(b).min(self.max_ns as f64 / 1_000.0);
            }
        }
        self.max_ns as f64 / 1_000.0
    }
}

/// Statistics of the queries sent during one second (for `--per-second`).
struct Second {
    sent: u64,
    lost: u64,
    hist: Histogram,
}

/// One in-flight query: when it was sent and which template it used.
#[derive(Clone, Copy)]
struct Slot {
    /// Send time in ns since start, plus one (0 = free).
    sent_ns: u64,
    query: u32,
}

struct Sock {
    sock: UdpSocket,
    next_id: u16,
    slots: Vec<Slot>,
    /// (id, sent_ns) in send order, to expire lost queries.
    fifo: VecDeque<(u16, u64)>,
    outstanding: usize,
}

struct Totals {
    sent: u64,
    received: u64,
    lost: u64,
    mismatched: u64,
    send_errors: u64,
    rcodes: [u64; 16],
    hist: Histogram,
    seconds: Vec<Second>,
    last_rx_ns: u64,
}

impl Totals {
    fn second(&mut self, sent_ns: u64) -> Option<&mut Second> {
        let s = ((sent_ns.saturating_sub(1)) / 1_000_000_000) as usize;
        self.seconds.get_mut(s)
    }
}

fn parse_queries(path: &PathBuf, edns: u16) -> anyhow::Result<Vec<Vec<u8>>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(name), Some(rtype)) = (words.next(), words.next()) else {
            bail!("{}:{}: expected \"name TYPE\"", path.display(), i + 1);
        };
        let name = Name::from_str(name)
            .with_context(|| format!("{}:{}: bad name", path.display(), i + 1))?;
        let rtype = RecordType::from_str(&rtype.to_ascii_uppercase())
            .with_context(|| format!("{}:{}: bad type", path.display(), i + 1))?;
        let mut msg = Message::new(0, MessageType::Query, OpCode::Query);
        // dnsperf sets RD too; authoritative servers copy it and ignore it.
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(name, rtype));
        if edns > 0 {
            let mut e = Edns::new();
            e.set_max_payload(edns);
            msg.set_edns(e);
        }
        out.push(msg.to_vec().context("encoding query")?);
    }
    if out.is_empty() {
        bail!("{}: no queries", path.display());
    }
    if out.len() > u32::MAX as usize {
        bail!("too many queries");
    }
    Ok(out)
}

fn open_socket(server: &SocketAddr) -> io::Result<UdpSocket> {
    let (domain, local) = match server {
        SocketAddr::V4(_) => (
            Domain::IPV4,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        ),
        SocketAddr::V6(_) => (
            Domain::IPV6,
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        ),
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    // Large buffers so that bursts are not dropped by the generator's own socket.
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.bind(&local.into())?;
    // Connecting filters out datagrams from anyone but the server.
    s.connect(&(*server).into())?;
    s.set_nonblocking(true)?;
    let s: UdpSocket = s.into();
    // Kernel receive times; without them (never on Linux) answers are timed when read.
    let _ = enable_rx_timestamps(&s);
    Ok(s)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.sockets == 0 || args.window == 0 || args.batch == 0 {
        bail!("--sockets, --window and --batch must be positive");
    }
    let batch = args.batch.min(MAX_BATCH);
    let queries = parse_queries(&args.queries, args.edns)?;
    let mut socks: Vec<Sock> = (0..args.sockets)
        .map(|_| {
            Ok(Sock {
                sock: open_socket(&args.server)?,
                next_id: 0,
                slots: vec![
                    Slot {
                        sent_ns: 0,
                        query: 0
                    };
                    65_536
                ],
                fifo: VecDeque::with_capacity(args.window * 2),
                outstanding: 0,
            })
        })
        .collect::<io::Result<_>>()
        .context("opening sockets")?;

    let mut watch = match &args.watch_soa {
        Some(zone) => Some(Watch::new(&args, zone)?),
        None => None,
    };
    let start_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let stop = Arc::new(AtomicBool::new(false));
    if args.stop_on_usr1 {
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&stop))
            .context("installing the SIGUSR1 handler")?;
    }
    if let Some(path) = &args.pid_file {
        fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for path in [&args.mark_file, &args.mark_end_file].into_iter().flatten() {
        let _ = fs::remove_file(path);
    }
    // When the mark files appeared (ns since start), and when they are next looked for.
    let mut mark_ns: Option<u64> = None;
    let mut mark_end_ns: Option<u64> = None;
    let mut next_mark_check_ns = 0u64;
    let mut duration_ns = (args.duration * 1e9) as u64;
    let timeout_ns = args.timeout_ms * 1_000_000;
    let n_seconds = duration_ns.div_ceil(1_000_000_000) as usize;
    let mut t = Totals {
        sent: 0,
        received: 0,
        lost: 0,
        mismatched: 0,
        send_errors: 0,
        rcodes: [0; 16],
        hist: Histogram::new(),
        seconds: if args.per_second {
            (0..n_seconds)
                .map(|_| Second {
                    sent: 0,
                    lost: 0,
                    hist: Histogram::new(),
                })
                .collect()
        } else {
            Vec::new()
        },
        last_rx_ns: 0,
    };

    // Send buffers: each query template copied with its id patched in.
    let mut out_bufs: Vec<Vec<u8>> = (0..batch).map(|_| Vec::with_capacity(512)).collect();
    let mut out_meta: Vec<(u16, u32)> = vec![(0, 0); batch];
    let mut in_bufs: Vec<Vec<u8>> = (0..batch).map(|_| vec![0u8; 4096]).collect();
    let mut in_lens = vec![0usize; batch];
    let mut in_addrs = vec![args.server; batch];
    let mut in_stamps = vec![0u64; batch];
    let mut kernel_stamps = false;
    let mut next_query = 0usize;
    let mut rr = 0usize;
    // Time spent in loop iterations that neither sent nor received while sending: when it
    // is near zero the generator, not the server, may be the bottleneck.
    let mut idle_ns = 0u64;

    let mut skipped = 0u64;
    let mut last_iter_ns = 0u64;
    let start = Instant::now();
    // The kernel stamps arrivals with the real-time clock: this maps them onto `start`.
    let start_real_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let now_ns = |start: &Instant| start.elapsed().as_nanos() as u64 + 1;
    loop {
        let now = now_ns(&start);
        let iter_start = now;
        // This loop never blocks, so a long gap between two iterations is time the
        // generator itself spent off its CPU (a kernel thread ran on its core). The queries
        // that fell due meanwhile are skipped rather than sent as one burst: a burst the
        // server did not cause would queue up in it and read as server latency. Stalls of
        // the server do not stop this loop, so they are still measured in full.
        let gap = iter_start.saturating_sub(last_iter_ns);
        if args.rate > 0 && last_iter_ns > 0 && gap > GEN_STALL_NS {
            skipped += (u128::from(gap) * u128::from(args.rate) / 1_000_000_000) as u64;
        }
        last_iter_ns = iter_start;
        let mut did_send = false;
        if duration_ns > now && stop.load(Ordering::Relaxed) {
            duration_ns = now;
        }
        if let Some(w) = watch.as_mut()
            && let Some(end) = w.poll(now)
        {
            duration_ns = duration_ns.min(end);
        }
        if let Some(path) = &args.mark_file
            && mark_ns.is_none()
            && now >= next_mark_check_ns
        {
            next_mark_check_ns = now + 1_000_000;
            if path.exists() {
                mark_ns = Some(now);
            }
        }
        if let Some(path) = &args.mark_end_file
            && mark_ns.is_some()
            && mark_end_ns.is_none()
            && now >= next_mark_check_ns
        {
            next_mark_check_ns = now + 1_000_000;
            if path.exists() {
                mark_end_ns = Some(now);
            }
        }
        let sending = now < duration_ns;
        let in_flight: usize = socks.iter().map(|s| s.outstanding).sum();
        if !sending && in_flight == 0 {
            break;
        }
        if !sending && now > duration_ns + timeout_ns + 1_000_000 {
            break;
        }

        // Send one batch on one socket (round-robin).
        if sending {
            let due = if args.rate > 0 {
                let target = (u128::from(now) * u128::from(args.rate) / 1_000_000_000) as u64;
                target.saturating_sub(t.sent + skipped) as usize
            } else {
                usize::MAX
            };
            let nsocks = socks.len();
            let s = &mut socks[rr % nsocks];
            rr += 1;
            let room = args.window.saturating_sub(s.outstanding);
            let k = due.min(room).min(batch);
            let mut n = 0;
            while n < k {
                let id = s.next_id;
                // Never reuse an id whose query is still in flight on this socket.
                if s.slots[id as usize].sent_ns != 0 {
                    break;
                }
                s.next_id = s.next_id.wrapping_add(1);
                let qi = next_query;
                next_query = (next_query + 1) % queries.len();
                let buf = &mut out_bufs[n];
                buf.clear();
                buf.extend_from_slice(&queries[qi]);
                buf[..2].copy_from_slice(&id.to_be_bytes());
                out_meta[n] = (id, qi as u32);
                n += 1;
            }
            if n > 0 {
                let msgs: Vec<(&[u8], SocketAddr)> = out_bufs[..n]
                    .iter()
                    .map(|b| (b.as_slice(), args.server))
                    .collect();
                let sent_at = now_ns(&start);
                let sent = match send_batch(&s.sock, &msgs) {
                    Ok(k) => k,
                    Err(_) => {
                        t.send_errors += 1;
                        0
                    }
                };
                for &(id, qi) in &out_meta[..sent] {
                    s.slots[id as usize] = Slot {
                        sent_ns: sent_at,
                        query: qi,
                    };
                    s.fifo.push_back((id, sent_at));
                    s.outstanding += 1;
                    if let Some(sec) = t.second(sent_at) {
                        sec.sent += 1;
                    }
                }
                t.sent += sent as u64;
                did_send |= sent > 0;
                // Ids of unsent queries are simply skipped; the query order moves on.
            }
        }

        // Receive on every socket until each is drained (or a few batches deep).
        let mut got_any = false;
        for s in socks.iter_mut() {
            for _ in 0..4 {
                let n = match recv_batch_stamped(
                    &s.sock,
                    &mut in_bufs,
                    &mut in_lens,
                    &mut in_addrs,
                    &mut in_stamps,
                ) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => 0,
                    Err(e) => return Err(e).context("recvmmsg"),
                };
                if n == 0 {
                    break;
                }
                got_any = true;
                let rx = now_ns(&start);
                for ((buf, &len), &stamp) in in_bufs.iter().zip(&in_lens).zip(&in_stamps).take(n) {
                    let Some(resp) = buf.get(..len) else { continue };
                    kernel_stamps |= stamp > 0;
                    let at = if stamp > 0 && !args.user_timestamps {
                        // Never later than the read, never before the start.
                        (stamp.saturating_sub(start_real_ns) + 1).min(rx)
                    } else {
                        rx
                    };
                    handle_response(resp, s, &queries, at, &mut t);
                }
                if n < batch {
                    break;
                }
            }
        }

        // Expire queries that timed out.
        let now = now_ns(&start);
        for s in socks.iter_mut() {
            while let Some(&(id, sent_ns)) = s.fifo.front() {
                let slot = &mut s.slots[id as usize];
                if slot.sent_ns != sent_ns {
                    s.fifo.pop_front(); // answered already
                    continue;
                }
                if now.saturating_sub(sent_ns) < timeout_ns {
                    break;
                }
                slot.sent_ns = 0;
                s.fifo.pop_front();
                s.outstanding -= 1;
                t.lost += 1;
                if let Some(sec) = t.second(sent_ns) {
                    sec.lost += 1;
                }
            }
        }
        if !got_any && !did_send {
            if sending {
                idle_ns += now_ns(&start) - iter_start;
            }
            std::hint::spin_loop();
        }
    }
    // Anything still in flight when we gave up waiting is lost.
    for s in &socks {
        t.lost += s.outstanding as u64;
    }

    // Time from the first send to the last response matched.
    let elapsed_s = t.last_rx_ns.max(1) as f64 / 1e9;
    let qps = t.received as f64 / elapsed_s;
    let rc = |i: usize| t.rcodes[i];
    let other: u64 = t.rcodes.iter().sum::<u64>() - rc(0) - rc(2) - rc(3) - rc(5);
    println!(
        "{} qps={:.0} sent={} received={} lost={} lost_pct={:.3} mean_us={:.1} p50_us={:.0} \
         p99_us={:.0} p999_us={:.0} max_us={:.0} noerror={} nxdomain={} servfail={} refused={} \
         other_rcode={} mismatched={} send_errors={} gen_skipped={} gen_idle_pct={:.1} duration_s={:.2} rate={} \
         sockets={} window={}",
        args.label,
        qps,
        t.sent,
        t.received,
        t.lost,
        if t.sent > 0 {
            t.lost as f64 * 100.0 / t.sent as f64
        } else {
            0.0
        },
        t.hist.mean_us(),
        t.hist.quantile_us(0.50),
        t.hist.quantile_us(0.99),
        t.hist.quantile_us(0.999),
        t.hist.max_ns as f64 / 1_000.0,
        rc(0),
        rc(3),
        rc(2),
        rc(5),
        other,
        t.mismatched,
        t.send_errors,
        skipped,
        idle_ns as f64 * 100.0 / duration_ns.max(1) as f64,
        duration_ns as f64 / 1e9,
        args.rate,
        args.sockets,
        args.window,
    );
    println!("start_unix_s={start_unix:.3}");
    println!(
        "answers_timed={}",
        if kernel_stamps && !args.user_timestamps {
            "kernel"
        } else {
            "user"
        }
    );
    if let Some(w) = &watch {
        println!(
            "watch zone={} serial={} first_seen_s={} last_serial={}",
            args.watch_soa.as_deref().unwrap_or(""),
            w.target.map_or("-".to_string(), |t| t.to_string()),
            w.seen_ns
                .map_or("-".to_string(), |ns| format!("{:.3}", ns as f64 / 1e9)),
            w.last_serial.map_or("-".to_string(), |t| t.to_string()),
        );
    }
    let seconds_sent = duration_ns.div_ceil(1_000_000_000) as usize;
    for (i, s) in t.seconds.iter().enumerate().take(seconds_sent) {
        println!(
            "second={} sent={} received={} lost={} p50_us={:.0} p99_us={:.0} max_us={:.0}",
            i,
            s.sent,
            s.hist.total,
            s.lost,
            s.hist.quantile_us(0.50),
            s.hist.quantile_us(0.99),
            s.hist.max_ns as f64 / 1_000.0,
        );
    }
    if let Some(mark) = mark_ns {
        let seen = watch.as_ref().and_then(|w| w.seen_ns).or(mark_end_ns);
        let sent_seconds = t.seconds.get(..seconds_sent).unwrap_or(&t.seconds);
        print_phases(sent_seconds, mark, seen);
    }
    Ok(())
}

/// One `phase=` line per phase of a marked run (see `--mark-file`). Whole seconds only, the
/// way `benches/load.sh` classifies the per-second lines: a second is `before` when it ends
/// by the mark, `after` when it starts once the watched serial has been seen.
fn print_phases(seconds: &[Second], mark_ns: u64, seen_ns: Option<u64>) {
    const SEC: u64 = 1_000_000_000;
    let mut phases: [(&str, Histogram, u64, u64, Vec<f64>); 3] = [
        ("before", Histogram::new(), 0, 0, Vec::new()),
        ("during", Histogram::new(), 0, 0, Vec::new()),
        ("after", Histogram::new(), 0, 0, Vec::new()),
    ];
    for (i, s) in seconds.iter().enumerate() {
        let start_ns = i as u64 * SEC;
        let p = if start_ns + SEC <= mark_ns {
            0
        } else if seen_ns.is_some_and(|seen| start_ns >= seen) {
            2
        } else {
            1
        };
        let (_, hist, sent, lost, p99s) = &mut phases[p];
        hist.merge(&s.hist);
        *sent += s.sent;
        *lost += s.lost;
        p99s.push(s.hist.quantile_us(0.99));
    }
    println!(
        "mark_s={:.3} mark_end_s={}",
        mark_ns as f64 / 1e9,
        seen_ns.map_or("-".to_string(), |ns| format!("{:.3}", ns as f64 / 1e9))
    );
    for (name, hist, sent, lost, mut p99s) in phases {
        if p99s.is_empty() {
            continue;
        }
        p99s.sort_by(f64::total_cmp);
        // Nearest-rank quantile of the per-second p99s.
        let q = |f: f64| {
            let rank = ((p99s.len() as f64 * f).ceil() as usize).clamp(1, p99s.len());
            p99s.get(rank - 1).copied().unwrap_or(0.0)
        };
        println!(
            "phase={name} seconds={} sent={sent} lost={lost} p50_us={:.0} p99_us={:.0} \
             p999_us={:.0} max_us={:.0} second_p99_median_us={:.0} second_p99_p90_us={:.0} \
             second_p99_worst_us={:.0}",
            p99s.len(),
            hist.quantile_us(0.50),
            hist.quantile_us(0.99),
            hist.quantile_us(0.999),
            hist.max_ns as f64 / 1_000.0,
            q(0.5),
            q(0.9),
            q(1.0),
        );
    }
}

fn handle_response(resp: &[u8], s: &mut Sock, queries: &[Vec<u8>], rx_ns: u64, t: &mut Totals) {
    let (Some(&[id_hi, id_lo]), Some(&flags_lo)) = (resp.get(..2), resp.get(3)) else {
        t.mismatched += 1;
        return;
    };
    let id = u16::from_be_bytes([id_hi, id_lo]);
    let Some(slot) = s.slots.get_mut(id as usize) else {
        return;
    };
    if slot.sent_ns == 0 {
        t.mismatched += 1; // late (already counted lost) or unsolicited
        return;
    }
    // The question must be echoed (RFC 1035 §4.1.2; case may be preserved byte for byte
    // by every server measured here).
    let q = queries
        .get(slot.query as usize)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let qlen = question_len(q);
    let (Some(asked), Some(echoed)) = (q.get(12..12 + qlen), resp.get(12..12 + qlen)) else {
        t.mismatched += 1;
        return;
    };
    if !asked.eq_ignore_ascii_case(echoed) {
        t.mismatched += 1;
        return;
    }
    let lat = rx_ns.saturating_sub(slot.sent_ns);
    let sent_ns = slot.sent_ns;
    slot.sent_ns = 0;
    s.outstanding -= 1;
    t.received += 1;
    t.last_rx_ns = t.last_rx_ns.max(rx_ns);
    t.rcodes[(flags_lo & 0x0f) as usize] += 1;
    t.hist.record(lat);
    if let Some(sec) = t.second(sent_ns) {
        sec.hist.record(lat);
    }
}

/// Length of the question section (QNAME + QTYPE + QCLASS) of a query we encoded ourselves
/// (uncompressed name starting at offset 12).
fn question_len(q: &[u8]) -> usize {
    let mut i = 12;
    while let Some(&l) = q.get(i) {
        i += 1 + l as usize;
        if l == 0 {
            break;
        }
    }
    (i + 4).min(q.len()).saturating_sub(12)
}
