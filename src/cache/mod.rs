//! The caching resolver (forwarder): answers names we are not authoritative for, for
//! clients allowed to recurse, from a cache filled by querying the configured upstreams.
//!
//! Flow of one query (the handler has already asked the zones and checked the client):
//! 1. [`Resolver::start`] (sync, on the listener's worker): a fresh cache hit — directly,
//!    or by following cached CNAME links — is encoded at once, like an authoritative
//!    answer. Otherwise the query takes a per-client slot and a global pending slot (both
//!    bounded; excess gets SERVFAIL at once) and becomes a [`Recursion`] that the listener
//!    runs as a task.
//! 2. [`Recursion::run`]: looks again, then joins the one in-flight upstream fetch for its
//!    key (coalescing: many clients, one upstream query). The fetch is a shared future
//!    polled by its waiters; when every waiter is gone (UDP deadline passed, TCP client
//!    gone, shutdown) it is dropped, and with it the upstream exchange.
//! 3. The fetch caches what it got: positive answers for their TTL, negative ones for the
//!    SOA's TTL (RFC 2308), failures briefly (RFC 9520). Expired data stays in the cache
//!    for the serve-stale window and is served when the upstreams fail (RFC 8767), while a
//!    background task keeps trying to refresh it.
//!
//! Nothing here spawns a task per query; the long-lived tasks (cache maintenance, stale
//! refresh) are started once by [`Resolver::spawn_maintenance`].

pub mod entry;
pub mod upstream;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};
use futures::stream::{FuturesUnordered, StreamExt};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use ipnet::IpNet;
use moka::Expiry;
use moka::notification::RemovalCause;
use serde::Deserialize;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Answer;
use crate::handler::Transport;
use crate::wire::request::Request;
use crate::wire::response::{self, EncodeOptions};

pub use entry::{Entry, Key, KeyBuf, Kind, TtlPolicy, TtlRewrite};
pub use upstream::Upstreams;

/// How often the maintenance task runs the cache's housekeeping (moka does it only on
/// use otherwise, so an idle cache would keep expired entries).
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// Stale-refresh requests queued for the background task; beyond it they are dropped
/// (the next stale hit asks again).
const REFRESH_QUEUE: usize = 1024;

/// Refreshes the background task runs at once.
const MAX_REFRESHES: usize = 32;

/// `[recursion]`: the caching resolver. Off unless `enabled`; only clients in `allow` may
/// use it (everyone else gets REFUSED for names outside our zones, as before).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResolverConfig {
    /// Answer queries for names outside our zones by asking `upstreams`, with a cache.
    /// Default: false.
    pub enabled: bool,
    /// Client networks allowed to recurse, e.g. ["127.0.0.0/8", "::1/128", "10.0.0.0/8"].
    /// Never make this "0.0.0.0/0" on a public address: an open resolver is an
    /// amplification tool. Default: loopback only (["127.0.0.0/8", "::1/128"]).
    pub allow: Vec<IpNet>,
    /// Upstream resolvers to forward to, as "addr:port". Required when enabled.
    pub upstreams: Vec<SocketAddr>,
    /// Time to wait for one upstream reply before trying the next upstream. Default: 1000 ms.
    pub timeout_ms: u64,
    /// Upstream queries sent per question (over all upstreams, fastest first) before giving
    /// up. Default: 3.
    pub attempts: u32,
    /// How long a client's query may wait for its answer; then a UDP query is dropped (the
    /// client has retried or given up) and a TCP query gets SERVFAIL. Default: 4000 ms.
    pub client_timeout_ms: u64,
    /// Memory bound of the cache in bytes (estimated size of the cached data).
    /// Default: 67108864 (64 MiB).
    pub cache_size: u64,
    /// TTLs of cached data are raised to at least this. Default: 0 s.
    pub min_ttl: u32,
    /// TTLs of cached data are capped to this. Default: 86400 s.
    pub max_ttl: u32,
    /// TTLs of cached NXDOMAIN/NODATA answers are capped to this (RFC 2308 §5).
    /// Default: 3600 s.
    pub max_negative_ttl: u32,
    /// How long a resolution failure is cached (RFC 9520 §3.2, at most 300 s). Default: 5 s.
    pub servfail_ttl: u32,
    /// Serve-stale window (RFC 8767): expired data is kept this long and served when the
    /// upstreams fail; 0 disables serve-stale. Default: 86400 s.
    pub stale_window: u32,
    /// TTL of stale records in answers (RFC 8767 §4 recommends 30). Also how long a
    /// failed refresh is not retried (RFC 8767 §5 failure recheck timer). Default: 30 s.
    pub stale_ttl: u32,
    /// When stale data exists, how long a client waits for the upstreams before getting
    /// it (RFC 8767 §5 client response timer). Default: 1800 ms.
    pub stale_answer_after_ms: u64,
    /// Queries of one client IP address waiting for upstream answers at once; beyond it,
    /// SERVFAIL at once. Default: 64.
    pub max_per_client: usize,
    /// Queries waiting for upstream answers at once, over all clients. Default: 4096.
    pub max_pending: usize,
    /// Upstream fetches in flight at once (coalesced: one per distinct question).
    /// Default: 1024.
    pub max_upstream_in_flight: usize,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            enabled: false,
            allow: vec![
                IpNet::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).unwrap_or_default(),
                IpNet::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128).unwrap_or_default(),
            ],
            upstreams: Vec::new(),
            timeout_ms: 1000,
            attempts: 3,
            client_timeout_ms: 4000,
            cache_size: 64 * 1024 * 1024,
            min_ttl: 0,
            max_ttl: 86_400,
            max_negative_ttl: 3_600,
            servfail_ttl: 5,
            stale_window: 86_400,
            stale_ttl: 30,
            stale_answer_after_ms: 1800,
            max_per_client: 64,
            max_pending: 4096,
            max_upstream_in_flight: 1024,
        }
    }
}

/// A `[recursion]` section that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolverError {
    #[error("recursion.enabled is true but recursion.upstreams is empty")]
    NoUpstreams,
    #[error("recursion.{0} must be greater than 0")]
    Zero(&'static str),
    #[error("recursion.servfail_ttl must be at most 300 (RFC 9520 §3.2)")]
    ServfailTtl,
    #[error("recursion.min_ttl ({min}) is above recursion.max_ttl ({max})")]
    TtlRange { min: u32, max: u32 },
}

impl ResolverConfig {
    /// Checks the values that would make the resolver useless or unsafe.
    pub fn validate(&self) -> Result<(), ResolverError> {
        if self.enabled && self.upstreams.is_empty() {
            return Err(ResolverError::NoUpstreams);
        }
        for (name, value) in [
            ("timeout_ms", self.timeout_ms),
            ("attempts", u64::from(self.attempts)),
            ("client_timeout_ms", self.client_timeout_ms),
            ("cache_size", self.cache_size),
            ("max_per_client", self.max_per_client as u64),
            ("max_pending", self.max_pending as u64),
            ("max_upstream_in_flight", self.max_upstream_in_flight as u64),
        ] {
            if value == 0 {
                return Err(ResolverError::Zero(name));
            }
        }
        if self.servfail_ttl > 300 {
            return Err(ResolverError::ServfailTtl);
        }
        if self.min_ttl > self.max_ttl {
            return Err(ResolverError::TtlRange {
                min: self.min_ttl,
                max: self.max_ttl,
            });
        }
        Ok(())
    }

    fn policy(&self) -> TtlPolicy {
        TtlPolicy {
            min_ttl: self.min_ttl,
            max_ttl: self.max_ttl,
            max_negative_ttl: self.max_negative_ttl,
            servfail_ttl: self.servfail_ttl,
        }
    }
}

/// Counters of the resolver (relaxed atomics; for metrics and tests).
#[derive(Debug, Default)]
pub struct Stats {
    /// Answered from fresh cache data (directly or through cached CNAME links).
    pub cache_hits: AtomicU64,
    /// Not in the cache (or only stale): an upstream fetch was joined or started.
    pub cache_misses: AtomicU64,
    /// Answers made of stale data (RFC 8767).
    pub stale_served: AtomicU64,
    /// SERVFAIL answers (upstream failure without stale data, cached failure, limits).
    pub servfail: AtomicU64,
    /// Upstream fetches started (one per distinct question in flight).
    pub fetches: AtomicU64,
    /// Queries that joined a fetch already in flight.
    pub coalesced: AtomicU64,
    /// Fetches dropped before finishing because every client waiting on them left.
    pub cancelled_fetches: AtomicU64,
    /// Queries sent upstream (every attempt counts; TCP retries count in `upstream_tcp`).
    pub upstream_queries: AtomicU64,
    pub upstream_tcp: AtomicU64,
    pub upstream_timeouts: AtomicU64,
    /// Attempts that failed with an error rcode or a socket error (the sum of
    /// `upstream_rcode_errors` and `upstream_network_errors`).
    pub upstream_errors: AtomicU64,
    /// Attempts answered with an error rcode (SERVFAIL, REFUSED, ...).
    pub upstream_rcode_errors: AtomicU64,
    /// Attempts that failed with a socket error (other than a timeout).
    pub upstream_network_errors: AtomicU64,
    /// Replies accepted from an upstream but unusable (e.g. inconsistent sections): the
    /// fetch fails.
    pub upstream_bad_answers: AtomicU64,
    /// Datagrams/messages ignored while waiting for an upstream reply: wrong source, ID,
    /// question, or not parseable (possible spoofing attempts).
    pub ignored_replies: AtomicU64,
    /// Queries refused a slot because their client had `max_per_client` pending.
    pub client_limited: AtomicU64,
    /// Queries refused a slot because `max_pending` queries were waiting.
    pub pending_limited: AtomicU64,
    /// Fetches not started because `max_upstream_in_flight` fetches were running.
    pub upstream_limited: AtomicU64,
    /// Queries still unanswered at `client_timeout_ms` (UDP: dropped, TCP: SERVFAIL).
    pub client_timeouts: AtomicU64,
    /// Cached entries, as of the last maintenance run.
    pub entries: AtomicU64,
    /// Estimated bytes held by the cache, as of the last maintenance run.
    pub weighted_bytes: AtomicU64,
}

/// The record cache: a byte-bounded moka cache of [`Entry`]s, each kept for its TTL plus
/// the serve-stale window (freshness is checked on read).
#[derive(Clone)]
pub struct RecordCache {
    cache: moka::future::Cache<Key, Arc<Entry>>,
    stale_window: Duration,
    max_bytes: u64,
    removals: Arc<Removals>,
}

/// Entries the cache dropped on its own, counted by its eviction listener (which moka
/// runs during housekeeping, not on lookups).
#[derive(Debug, Default)]
struct Removals {
    /// Evicted to stay within the memory bound.
    size: AtomicU64,
    /// Dropped at the end of their lifetime (TTL plus the serve-stale window).
    expired: AtomicU64,
}

/// Per-entry expiry: the entry's TTL (+ stale window), counted from when it was stored.
struct Lifetime {
    stale_window: Duration,
}

impl Expiry<Key, Arc<Entry>> for Lifetime {
    fn expire_after_create(&self, _: &Key, v: &Arc<Entry>, at: Instant) -> Option<Duration> {
        Some(v.remaining_lifetime(at, self.stale_window))
    }

    fn expire_after_update(
        &self,
        _: &Key,
        v: &Arc<Entry>,
        at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.remaining_lifetime(at, self.stale_window))
    }
}

impl RecordCache {
    /// A cache holding at most about `max_bytes` of entries (by [`Entry::weight`]).
    pub fn new(max_bytes: u64, stale_window: Duration) -> RecordCache {
        let removals = Arc::new(Removals::default());
        let counts = Arc::clone(&removals);
        let cache = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &Key, v: &Arc<Entry>| {
                v.weight()
                    .saturating_add(u32::try_from(k.memory()).unwrap_or(u32::MAX))
            })
            .expire_after(Lifetime { stale_window })
            .eviction_listener(move |_, _, cause| {
                let c = match cause {
                    RemovalCause::Size => &counts.size,
                    RemovalCause::Expired => &counts.expired,
                    RemovalCause::Explicit | RemovalCause::Replaced => return,
                };
                c.fetch_add(1, Ordering::Relaxed);
            })
            .build();
        RecordCache {
            cache,
            stale_window,
            max_bytes,
            removals,
        }
    }

    /// Entries evicted so far to stay within the memory bound.
    pub fn evictions(&self) -> u64 {
        self.removals.size.load(Ordering::Relaxed)
    }

    /// Entries dropped so far at the end of their lifetime (TTL + serve-stale window).
    pub fn expirations(&self) -> u64 {
        self.removals.expired.load(Ordering::Relaxed)
    }

    pub async fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        self.cache.get(key).await
    }

    /// [`RecordCache::get`] with a key built on the stack.
    pub async fn get_buf(&self, key: &KeyBuf) -> Option<Arc<Entry>> {
        self.cache.get(key.as_bytes()).await
    }

    /// Stores `entry` under `key`, first preparing its wire form for `key` (so a hit
    /// copies bytes; the weigher counts them).
    pub async fn insert(&self, key: Key, entry: Arc<Entry>) {
        entry.prepare(&key);
        self.cache.insert(key, entry).await;
    }

    /// Applies pending evictions and expirations (normally done by the maintenance task).
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Estimated bytes held (eventually consistent; exact after `run_pending_tasks`).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn stale_window(&self) -> Duration {
        self.stale_window
    }
}

/// What the cache knows about a key right now.
enum Cached {
    /// Fresh data: one entry, or CNAME link entries followed by the data at the chain end.
    Fresh(Vec<Arc<Entry>>),
    /// Only expired data within the serve-stale window.
    Stale(Arc<Entry>),
    Miss,
}

/// Why a fetch produced no answer (shared by all its waiters, so `Clone`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetchError {
    /// `max_upstream_in_flight` reached: not even tried.
    Overloaded,
    /// Every upstream attempt failed, or the answer was unusable.
    Failed,
}

type FetchFuture = BoxFuture<'static, Result<Arc<Entry>, FetchError>>;
type Fetch = Shared<FetchFuture>;
type WeakFetch = WeakShared<FetchFuture>;

/// A request to refresh a key in the background; `flight` keeps an already running fetch
/// alive after the client that started it got stale data.
struct Refresh {
    key: Key,
    flight: Option<Fetch>,
}

struct Inner {
    config: ResolverConfig,
    policy: TtlPolicy,
    stale_window: Duration,
    stale_answer_after: Duration,
    client_timeout: Duration,
    cache: RecordCache,
    upstreams: Upstreams,
    stats: Arc<Stats>,
    /// Fetches in flight, by key. Weak handles: a fetch lives only as long as a waiter
    /// holds it; the id tells a fetch's own entry from a later one for the same key.
    flights: Mutex<HashMap<Key, (u64, WeakFetch)>>,
    flight_seq: AtomicU64,
    upstream_slots: Arc<Semaphore>,
    pending: Arc<Semaphore>,
    clients: Vec<Mutex<HashMap<IpAddr, usize>>>,
    refresh_tx: mpsc::Sender<Refresh>,
    refresh_rx: Mutex<Option<mpsc::Receiver<Refresh>>>,
    /// The token of the running maintenance tasks, if any.
    maintenance: Mutex<Option<CancellationToken>>,
    live_tasks: AtomicUsize,
}

/// Shards of the per-client counters (a lock per shard, taken only on the miss path).
const CLIENT_SHARDS: usize = 16;

/// The caching resolver. Cheap to clone (one `Arc`); keep it across reloads so the cache
/// and the maintenance tasks survive.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("upstreams", &self.inner.config.upstreams)
            .field("entries", &self.inner.cache.entry_count())
            .finish()
    }
}

/// What [`Resolver::start`] decided.
pub enum Start {
    /// `out` holds the answer (this many bytes; 0 = nothing to send).
    Answered(usize),
    /// The answer needs the upstreams: run this (see [`Recursion::run`]).
    Recurse(Box<Recursion>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Resolver {
    /// Builds the resolver (cache and upstream table); starts no task.
    pub fn new(config: ResolverConfig) -> Result<Resolver, ResolverError> {
        config.validate()?;
        let stats = Arc::new(Stats::default());
        let stale_window = Duration::from_secs(u64::from(config.stale_window));
        let upstreams = Upstreams::new(
            &config.upstreams,
            Duration::from_millis(config.timeout_ms),
            config.attempts,
            Arc::clone(&stats),
        );
        let (refresh_tx, refresh_rx) = mpsc::channel(REFRESH_QUEUE);
        let inner = Inner {
            policy: config.policy(),
            stale_window,
            stale_answer_after: Duration::from_millis(config.stale_answer_after_ms),
            client_timeout: Duration::from_millis(config.client_timeout_ms),
            cache: RecordCache::new(config.cache_size, stale_window),
            upstreams,
            stats,
            flights: Mutex::new(HashMap::new()),
            flight_seq: AtomicU64::new(0),
            upstream_slots: Arc::new(Semaphore::new(
                config.max_upstream_in_flight.min(Semaphore::MAX_PERMITS),
            )),
            pending: Arc::new(Semaphore::new(
                config.max_pending.min(Semaphore::MAX_PERMITS),
            )),
            clients: (0..CLIENT_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            refresh_tx,
            refresh_rx: Mutex::new(Some(refresh_rx)),
            maintenance: Mutex::new(None),
            live_tasks: AtomicUsize::new(0),
            config,
        };
        Ok(Resolver {
            inner: Arc::new(inner),
        })
    }

    pub fn config(&self) -> &ResolverConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub fn cache(&self) -> &RecordCache {
        &self.inner.cache
    }

    pub fn upstreams(&self) -> &Upstreams {
        &self.inner.upstreams
    }

    /// Whether `ip` may recurse (and so also sees RA=1).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.inner.config.allow.iter().any(|net| net.contains(&ip))
    }

    /// Starts answering `req` (a QUERY for a name outside our zones, from an allowed
    /// client): from the cache at once if possible, else as a [`Recursion`] to run.
    /// `msg` is the message `req` was parsed from: a hit copies the question from it.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &self,
        req: Request,
        msg: &[u8],
        transport: Transport,
        peer: SocketAddr,
        max_size: u16,
        opts: &EncodeOptions,
        out: &mut Vec<u8>,
    ) -> Start {
        let inner = &self.inner;
        // The key straight from the message's question when it is plain (it always is from
        // real clients): no allocation, no hickory `Name` walk.
        let (key, question_len) = match KeyBuf::from_message(msg, &req) {
            Some((key, len)) => (key, Some(len)),
            None => (KeyBuf::for_request(&req), None),
        };
        let now = Instant::now();
        // The lookup only waits when moka's housekeeping is contended; then it is left to
        // the task below.
        if let Some(direct) = inner.cache.get_buf(&key).now_or_never() {
            if let Some(e) = &direct
                && e.is_fresh(now)
            {
                inner.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                let rewrite = TtlRewrite::Age(e.age(now));
                let len = question_len
                    .and_then(|q| {
                        e.write_prepared(&req, msg, &key, q, rewrite, max_size, opts, out)
                    })
                    .unwrap_or_else(|| {
                        write_fresh(&req, std::slice::from_ref(e), now, max_size, opts, out)
                    });
                return Start::Answered(len);
            }
            if let Some(Cached::Fresh(chain)) =
                inner.lookup_with(&key.to_key(), direct, now).now_or_never()
            {
                inner.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Start::Answered(write_fresh(&req, &chain, now, max_size, opts, out));
            }
        }
        if !req.recursion_desired {
            // RFC 1034 §4.3.1: without RD only local data is used; we have none.
            return Start::Answered(write_rcode(
                &req,
                ResponseCode::Refused,
                max_size,
                opts,
                out,
            ));
        }
        // Over a limit: SERVFAIL at once, counted under the limit that shed it.
        let shed = |limit: &AtomicU64, out: &mut Vec<u8>| {
            limit.fetch_add(1, Ordering::Relaxed);
            inner.stats.servfail.fetch_add(1, Ordering::Relaxed);
            Start::Answered(write_rcode(
                &req,
                ResponseCode::ServFail,
                max_size,
                opts,
                out,
            ))
        };
        let Ok(pending) = Arc::clone(&inner.pending).try_acquire_owned() else {
            return shed(&inner.stats.pending_limited, out);
        };
        let Some(client) = ClientSlot::take(inner, peer.ip()) else {
            return shed(&inner.stats.client_limited, out);
        };
        Start::Recurse(Box::new(Recursion {
            inner: Arc::clone(inner),
            req,
            transport,
            max_size,
            opts: *opts,
            _client: client,
            _pending: pending,
        }))
    }

    /// Starts the long-lived tasks on `rt`, tracked by `tracker` and stopped by `token`:
    /// cache maintenance (housekeeping every second, statistics) and the serve-stale
    /// refresher. Does nothing (returns false) when they already run, so calling it again
    /// on every reload keeps exactly one set.
    pub fn spawn_maintenance(
        &self,
        rt: &Handle,
        token: CancellationToken,
        tracker: &TaskTracker,
    ) -> bool {
        let inner = &self.inner;
        let mut running = lock(&inner.maintenance);
        if running.as_ref().is_some_and(|t| !t.is_cancelled()) {
            return false;
        }
        *running = Some(token.clone());
        let live = TaskCount::new(inner);
        tracker.spawn_on(maintain(Arc::clone(inner), token.clone(), live), rt);
        // The receiver is handed back when a previous refresher ends; if one is still
        // winding down, the next spawn after it ended starts a new one.
        if let Some(rx) = lock(&inner.refresh_rx).take() {
            let live = TaskCount::new(inner);
            tracker.spawn_on(refresher(Arc::clone(inner), rx, token, live), rt);
        }
        true
    }

    /// Maintenance tasks currently alive (for tests and metrics).
    pub fn maintenance_tasks(&self) -> usize {
        self.inner.live_tasks.load(Ordering::Relaxed)
    }

    /// Queries waiting for upstream answers now (holding a `max_pending` slot).
    pub fn pending(&self) -> usize {
        let max = self.inner.config.max_pending.min(Semaphore::MAX_PERMITS);
        max.saturating_sub(self.inner.pending.available_permits())
    }

    /// Upstream fetches running now (holding a `max_upstream_in_flight` slot).
    pub fn upstream_in_flight(&self) -> usize {
        let max = self
            .inner
            .config
            .max_upstream_in_flight
            .min(Semaphore::MAX_PERMITS);
        max.saturating_sub(self.inner.upstream_slots.available_permits())
    }
}

impl Inner {
    /// Looks `key` up: fresh data directly, else fresh data through cached CNAME links,
    /// else stale data.
    async fn lookup(&self, key: &Key, now: Instant) -> Cached {
        let direct = self.cache.get(key).await;
        self.lookup_with(key, direct, now).await
    }

    /// [`Inner::lookup`] with the direct entry already looked up.
    async fn lookup_with(&self, key: &Key, direct: Option<Arc<Entry>>, now: Instant) -> Cached {
        if let Some(e) = &direct
            && e.is_fresh(now)
        {
            return Cached::Fresh(vec![Arc::clone(e)]);
        }
        if let Some(chain) = self.follow(key, now).await {
            return Cached::Fresh(chain);
        }
        match direct {
            Some(e) if e.is_servable_stale(now, self.stale_window) => Cached::Stale(e),
            _ => Cached::Miss,
        }
    }

    /// Follows fresh cached CNAME links from the key's name to fresh data for the key's
    /// type at the chain's end (RFC 1034 §4.3.2 step 3a, done with cached data).
    async fn follow(&self, key: &Key, now: Instant) -> Option<Vec<Arc<Entry>>> {
        if key.qtype() == RecordType::CNAME || key.qtype() == RecordType::ANY {
            return None;
        }
        let mut chain = Vec::new();
        let mut name = key.name();
        for _ in 0..entry::MAX_CHAIN {
            let link_key = Key::new(&name, RecordType::CNAME, key.class(), key.dnssec_ok());
            let link = self
                .cache
                .get(&link_key)
                .await
                .filter(|e| e.is_fresh(now) && e.kind() == Kind::Positive)?;
            let target = cname_target(&link, &name)?;
            chain.push(link);
            let end_key = Key::new(&target, key.qtype(), key.class(), key.dnssec_ok());
            if let Some(end) = self.cache.get(&end_key).await
                && end.is_fresh(now)
                && end.kind() != Kind::ServFail
            {
                chain.push(end);
                return Some(chain);
            }
            name = target;
        }
        None
    }

    /// The fetch for `key`: the one in flight, or a new one.
    fn join(self: &Arc<Self>, key: &Key) -> Fetch {
        let mut flights = lock(&self.flights);
        if let Some((_, weak)) = flights.get(key)
            && let Some(fetch) = weak.upgrade()
        {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            return fetch;
        }
        let id = self.flight_seq.fetch_add(1, Ordering::Relaxed);
        let guard = FlightGuard {
            inner: Arc::clone(self),
            key: key.clone(),
            id,
            done: false,
        };
        let fetch = fetch(Arc::clone(self), key.clone(), guard).boxed().shared();
        if let Some(weak) = fetch.downgrade() {
            flights.insert(key.clone(), (id, weak));
        }
        fetch
    }

    /// Asks the upstreams and caches the outcome.
    async fn fetch_once(&self, key: &Key) -> Result<Arc<Entry>, FetchError> {
        let Ok(_slot) = Arc::clone(&self.upstream_slots).try_acquire_owned() else {
            self.stats.upstream_limited.fetch_add(1, Ordering::Relaxed);
            return Err(FetchError::Overloaded);
        };
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let query = key.query();
        let reply = match self.upstreams.resolve(&query, key.dnssec_ok()).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(name = %query.name(), qtype = %key.qtype(), error = %e, "upstream failure");
                return self.failed(key).await;
            }
        };
        let now = Instant::now();
        let entry = match Entry::from_response(&query, &reply.message, &self.policy, now) {
            Ok(entry) => entry,
            Err(_) => {
                self.stats
                    .upstream_bad_answers
                    .fetch_add(1, Ordering::Relaxed);
                return self.failed(key).await;
            }
        };
        let derived = entry.derived(key);
        let entry = Arc::new(entry);
        if entry.is_cacheable() {
            self.cache.insert(key.clone(), Arc::clone(&entry)).await;
            for (k, e) in derived {
                if e.is_cacheable() {
                    self.cache.insert(k, Arc::new(e)).await;
                }
            }
        }
        Ok(entry)
    }

    /// Remembers a failure (RFC 9520 §3.2: resolution failures must be cached), unless
    /// usable data for the key is cached: stale data stands in for it (RFC 8767).
    async fn failed(&self, key: &Key) -> Result<Arc<Entry>, FetchError> {
        let now = Instant::now();
        let keep = self
            .cache
            .get(key)
            .await
            .is_some_and(|e| e.is_fresh(now) || e.is_servable_stale(now, self.stale_window));
        if !keep {
            let failure = Entry::servfail(&self.policy, now);
            if failure.is_cacheable() {
                self.cache.insert(key.clone(), Arc::new(failure)).await;
            }
        }
        Err(FetchError::Failed)
    }

    fn schedule_refresh(&self, key: Key, flight: Option<Fetch>) {
        // A full queue drops the request: the next stale hit asks again.
        let _ = self.refresh_tx.try_send(Refresh { key, flight });
    }
}

/// The target of the CNAME at `owner` held by a link entry.
fn cname_target(link: &Entry, owner: &hickory_proto::rr::Name) -> Option<hickory_proto::rr::Name> {
    link.answers()
        .iter()
        .find(|s| s.rtype == RecordType::CNAME && s.name == *owner)
        .and_then(|s| s.records.first())
        .and_then(|r| match &r.data {
            RData::CNAME(c) => Some(c.0.clone()),
            _ => None,
        })
}

/// The body of a fetch; `guard` notices when it is dropped unfinished.
async fn fetch(
    inner: Arc<Inner>,
    key: Key,
    mut guard: FlightGuard,
) -> Result<Arc<Entry>, FetchError> {
    let result = inner.fetch_once(&key).await;
    guard.done = true;
    result
}

/// Lives inside a fetch future: on drop (finished, or abandoned by every waiter) it removes
/// the fetch from the in-flight map, and counts abandoned fetches.
struct FlightGuard {
    inner: Arc<Inner>,
    key: Key,
    id: u64,
    done: bool,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if !self.done {
            self.inner
                .stats
                .cancelled_fetches
                .fetch_add(1, Ordering::Relaxed);
        }
        let mut flights = lock(&self.inner.flights);
        if flights.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            flights.remove(&self.key);
        }
    }
}

/// One of a client's `max_per_client` slots, released on drop.
struct ClientSlot {
    inner: Arc<Inner>,
    ip: IpAddr,
}

impl ClientSlot {
    fn take(inner: &Arc<Inner>, ip: IpAddr) -> Option<ClientSlot> {
        let ip = ip.to_canonical();
        let mut shard = lock(inner.client_shard(ip)?);
        let count = shard.entry(ip).or_insert(0);
        if *count >= inner.config.max_per_client {
            return None;
        }
        *count += 1;
        drop(shard);
        Some(ClientSlot {
            inner: Arc::clone(inner),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some(shard) = self.inner.client_shard(self.ip) {
            let mut shard = lock(shard);
            if let Some(count) = shard.get_mut(&self.ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    shard.remove(&self.ip);
                }
            }
        }
    }
}

impl Inner {
    fn client_shard(&self, ip: IpAddr) -> Option<&Mutex<HashMap<IpAddr, usize>>> {
        let h = match ip {
            IpAddr::V4(a) => u32::from(a) as usize,
            IpAddr::V6(a) => (u128::from(a) >> 64) as usize ^ (u128::from(a) as usize),
        };
        self.clients
            .get(h.wrapping_mul(0x9E37_79B9) >> 7 & (CLIENT_SHARDS - 1))
    }
}

/// A query waiting for the upstreams, holding its client's slot and a pending slot.
pub struct Recursion {
    inner: Arc<Inner>,
    req: Request,
    transport: Transport,
    max_size: u16,
    opts: EncodeOptions,
    _client: ClientSlot,
    _pending: OwnedSemaphorePermit,
}

impl Recursion {
    /// The question type, for the listener's per-type counters.
    pub fn qtype(&self) -> hickory_proto::rr::RecordType {
        self.req.query.query_type()
    }
}

impl fmt::Debug for Recursion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recursion")
            .field("query", &self.req.query)
            .field("transport", &self.transport)
            .finish()
    }
}

impl PartialEq for Recursion {
    fn eq(&self, other: &Self) -> bool {
        self.req == other.req && self.transport == other.transport
    }
}

impl Recursion {
    /// The query being resolved.
    pub fn request(&self) -> &Request {
        &self.req
    }

    /// Resolves the query and encodes the answer into `out`. Returns false when nothing is
    /// to be sent: `token` was cancelled (client gone, shutdown) or, over UDP, the client
    /// timeout passed. Either way the query stops waiting, and when it was the last one
    /// waiting for its upstream fetch, the fetch is dropped.
    pub async fn run(self, token: &CancellationToken, out: &mut Vec<u8>) -> bool {
        let deadline = tokio::time::sleep(self.inner.client_timeout);
        tokio::select! {
            biased;
            () = token.cancelled() => false,
            () = deadline => match self.transport {
                Transport::Udp => {
                    self.inner.stats.client_timeouts.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Transport::Tcp => {
                    self.inner.stats.client_timeouts.fetch_add(1, Ordering::Relaxed);
                    self.inner.stats.servfail.fetch_add(1, Ordering::Relaxed);
                    write_rcode(&self.req, ResponseCode::ServFail, self.max_size, &self.opts, out) > 0
                }
            },
            len = self.resolve(out) => len > 0,
        }
    }

    async fn resolve(&self, out: &mut Vec<u8>) -> usize {
        let inner = &self.inner;
        let key = Key::for_request(&self.req);
        let now = Instant::now();
        let stale = match inner.lookup(&key, now).await {
            Cached::Fresh(chain) => {
                inner.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                return write_fresh(&self.req, &chain, now, self.max_size, &self.opts, out);
            }
            Cached::Stale(e) => Some(e),
            Cached::Miss => None,
        };
        inner.stats.cache_misses.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = &stale
            && s.recheck_pending(now)
        {
            // RFC 8767 §5: a refresh failed recently; answer stale data at once and do
            // not ask again before the recheck time.
            return self.write_stale(s, out);
        }
        let flight = inner.join(&key);
        let result = match &stale {
            Some(s) => match tokio::time::timeout(inner.stale_answer_after, flight.clone()).await {
                Ok(result) => result,
                Err(_) => {
                    // RFC 8767 §5 client response timer: answer stale data now; the
                    // refresher keeps the fetch going.
                    inner.schedule_refresh(key, Some(flight));
                    return self.write_stale(s, out);
                }
            },
            None => flight.await,
        };
        match (result, stale) {
            (Ok(entry), _) => {
                let now = Instant::now();
                write_fresh(&self.req, &[entry], now, self.max_size, &self.opts, out)
            }
            (Err(_), Some(s)) => {
                s.mark_refresh_failed(
                    Instant::now(),
                    Duration::from_secs(u64::from(inner.config.stale_ttl)),
                );
                self.write_stale(&s, out)
            }
            (Err(_), None) => {
                inner.stats.servfail.fetch_add(1, Ordering::Relaxed);
                write_rcode(
                    &self.req,
                    ResponseCode::ServFail,
                    self.max_size,
                    &self.opts,
                    out,
                )
            }
        }
    }

    fn write_stale(&self, entry: &Entry, out: &mut Vec<u8>) -> usize {
        self.inner
            .stats
            .stale_served
            .fetch_add(1, Ordering::Relaxed);
        let ttl = TtlRewrite::Fixed(self.inner.config.stale_ttl);
        entry::write_response(&self.req, &[(entry, ttl)], self.max_size, &self.opts, out)
    }
}

/// Encodes fresh cached data (one entry or a CNAME chain), TTLs counted down.
fn write_fresh(
    req: &Request,
    chain: &[Arc<Entry>],
    now: Instant,
    max_size: u16,
    opts: &EncodeOptions,
    out: &mut Vec<u8>,
) -> usize {
    let parts: Vec<(&Entry, TtlRewrite)> = chain
        .iter()
        .map(|e| (e.as_ref(), TtlRewrite::Age(e.age(now))))
        .collect();
    entry::write_response(req, &parts, max_size, opts, out)
}

/// An empty response with `rcode` and RA=1.
fn write_rcode(
    req: &Request,
    rcode: ResponseCode,
    max_size: u16,
    opts: &EncodeOptions,
    out: &mut Vec<u8>,
) -> usize {
    let answer = Answer::rcode_only(rcode);
    let len = response::encode(req, &answer, max_size, opts, out);
    entry::set_recursion_available(out);
    len
}

/// Counts a live maintenance task from spawn until it ends.
struct TaskCount(Arc<Inner>);

impl TaskCount {
    fn new(inner: &Arc<Inner>) -> TaskCount {
        inner.live_tasks.fetch_add(1, Ordering::Relaxed);
        TaskCount(Arc::clone(inner))
    }
}

impl Drop for TaskCount {
    fn drop(&mut self) {
        self.0.live_tasks.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Cache housekeeping (expiry, eviction) every second, and the size gauges.
async fn maintain(inner: Arc<Inner>, token: CancellationToken, _live: TaskCount) {
    let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = token.cancelled() => return,
            _ = tick.tick() => {
                inner.cache.run_pending_tasks().await;
                inner.stats.entries.store(inner.cache.entry_count(), Ordering::Relaxed);
                inner.stats.weighted_bytes.store(inner.cache.weighted_size(), Ordering::Relaxed);
            }
        }
    }
}

/// Refreshes stale keys in the background (RFC 8767 §5), at most [`MAX_REFRESHES`] at once.
async fn refresher(
    inner: Arc<Inner>,
    mut rx: mpsc::Receiver<Refresh>,
    token: CancellationToken,
    _live: TaskCount,
) {
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            () = token.cancelled() => break,
            Some(()) = running.next(), if !running.is_empty() => {}
            r = rx.recv(), if running.len() < MAX_REFRESHES => match r {
                Some(r) => running.push(refresh_one(Arc::clone(&inner), r)),
                None => break,
            },
        }
    }
    drop(running);
    *lock(&inner.refresh_rx) = Some(rx);
}

async fn refresh_one(inner: Arc<Inner>, refresh: Refresh) {
    let flight = match refresh.flight {
        Some(f) => f,
        None => inner.join(&refresh.key),
    };
    if flight.await.is_err() {
        let now = Instant::now();
        if let Some(e) = inner.cache.get(&refresh.key).await
            && e.is_servable_stale(now, inner.stale_window)
        {
            e.mark_refresh_failed(now, Duration::from_secs(u64::from(inner.config.stale_ttl)));
        }
    }
}
