//! The change stream: every committed change as an immutable `Arc<ChangeEvent>`, delivered
//! in commit order to any number of independent consumers.
//!
//! What lives here: the ring of events not yet read by every consumer ([`Publisher`], the
//! writer's end, and [`Subscription`], one consumer's position), its two bounds and its
//! counters ([`StreamStats`]). What must not: any store I/O, any waiting by the writer, any
//! work done for a consumer while the ring's lock is held.
//!
//! The ring keeps an event until every consumer has read it or one of its bounds releases
//! it: at most `max_events` events and at most `max_bytes` bytes (by [`ChangeEvent::size`]).
//! Only the newest event may exceed the byte bound alone, so that an event larger than the
//! whole bound still reaches the consumers that keep up. With no consumer an event is
//! released as soon as it is published. [`StreamStats::retained_bytes`] is the exact sum of
//! what the ring holds.
//!
//! The writer appends under a short mutex and never waits. A consumer that falls behind
//! the bounds does not block the writer and does not silently skip events: its next `recv`
//! returns [`Lagged::Resync`] with the exact number of events it missed (logged and
//! counted), after which it must rebuild its state from the store (which holds every
//! committed change) and continues with the oldest retained event.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use hickory_proto::rr::Name;
use tokio::sync::Notify;
use tracing::warn;

use super::schema::{ChangeKind, StoredRecord};

/// One committed change. Never mutated after it is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    pub zone: Name,
    pub kind: ChangeKind,
    /// The zone's journal sequence number of this change (consecutive per zone).
    pub seq: u64,
    pub old_serial: u32,
    pub new_serial: u32,
    pub removed: Vec<StoredRecord>,
    pub added: Vec<StoredRecord>,
}

impl ChangeEvent {
    /// Approximate heap bytes held by the event.
    pub fn size(&self) -> usize {
        let rec = |r: &StoredRecord| {
            std::mem::size_of::<StoredRecord>()
                + r.owner.len()
                + r.rdata.len()
                + r.meta.tags.iter().map(|t| t.len() + 24).sum::<usize>()
        };
        std::mem::size_of::<ChangeEvent>()
            + self.removed.iter().map(rec).sum::<usize>()
            + self.added.iter().map(rec).sum::<usize>()
    }
}

/// Counters of the stream, shared by the writer and the consumers.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Events published.
    pub published: AtomicU64,
    /// Times a consumer fell behind and had to resync.
    pub resyncs: AtomicU64,
    /// Events a lagging consumer never saw (it resynced instead).
    pub skipped: AtomicU64,
    /// Bytes ([`ChangeEvent::size`]) of the events the ring holds: those some consumer has
    /// not read yet, within the bounds. At most `limit_bytes`, or the newest event alone.
    pub retained_bytes: AtomicU64,
    /// Events the ring holds.
    pub retained_events: AtomicU64,
    /// The byte bound of the ring (`[store] change_stream_bytes`).
    pub limit_bytes: AtomicU64,
    /// The event bound of the ring (`[store] change_stream_events`).
    pub limit_events: AtomicU64,
    /// Change transactions seen by the metrics consumer.
    pub updates_seen: AtomicU64,
    /// Whole-zone imports seen by the metrics consumer.
    pub replaces_seen: AtomicU64,
}

/// The events retained and where each consumer stands. Positions count events from the
/// first one published (0); `events[0]` is at position `head`.
struct Ring {
    events: VecDeque<(Arc<ChangeEvent>, usize)>,
    head: u64,
    bytes: usize,
    /// Next position of each live consumer (`None`: a free slot).
    consumers: Vec<Option<u64>>,
    /// Threads parked in [`Subscription::blocking_recv`].
    blocked: usize,
    /// The writer is gone: no event will follow the retained ones.
    closed: bool,
}

impl Ring {
    /// Position of the next event to be published.
    fn end(&self) -> u64 {
        self.head + self.events.len() as u64
    }

    /// First position some consumer still has to read (the end when there is none).
    fn unread_from(&self) -> u64 {
        self.consumers
            .iter()
            .flatten()
            .copied()
            .min()
            .unwrap_or_else(|| self.end())
    }

    fn pop_front(&mut self) -> Option<Arc<ChangeEvent>> {
        let (event, size) = self.events.pop_front()?;
        self.head += 1;
        self.bytes -= size;
        Some(event)
    }

    fn publish_stats(&self, stats: &StreamStats) {
        stats
            .retained_bytes
            .store(self.bytes as u64, Ordering::Relaxed);
        stats
            .retained_events
            .store(self.events.len() as u64, Ordering::Relaxed);
    }
}

/// The state shared by the writer and the consumers.
pub(crate) struct Stream {
    ring: Mutex<Ring>,
    /// Wakes consumers waiting in [`Subscription::recv`].
    notify: Notify,
    /// Wakes consumers waiting in [`Subscription::blocking_recv`] (paired with `ring`).
    cond: Condvar,
    stats: Arc<StreamStats>,
}

impl Stream {
    fn lock(&self) -> MutexGuard<'_, Ring> {
        // Nothing panics while the lock is held; a poisoned ring is still consistent.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self, blocked: bool) {
        self.notify.notify_waiters();
        if blocked {
            self.cond.notify_all();
        }
    }
}

/// The writer's end.
pub(crate) struct Publisher {
    stream: Arc<Stream>,
    max_events: usize,
    max_bytes: usize,
    /// Events released by the last publish, dropped after the lock is let go (their
    /// records may be the last references: freeing them must not hold up consumers).
    released: Vec<Arc<ChangeEvent>>,
}

impl Publisher {
    /// A stream keeping at most `max_events` events and `max_bytes` bytes for consumers that
    /// have not read them (each at least 1).
    pub(crate) fn new(max_events: usize, max_bytes: usize, stats: Arc<StreamStats>) -> Publisher {
        let max_events = max_events.max(1);
        let max_bytes = max_bytes.max(1);
        stats
            .limit_events
            .store(max_events as u64, Ordering::Relaxed);
        stats.limit_bytes.store(max_bytes as u64, Ordering::Relaxed);
        Publisher {
            stream: Arc::new(Stream {
                ring: Mutex::new(Ring {
                    events: VecDeque::new(),
                    head: 0,
                    bytes: 0,
                    consumers: Vec::new(),
                    blocked: 0,
                    closed: false,
                }),
                notify: Notify::new(),
                cond: Condvar::new(),
                stats,
            }),
            max_events,
            max_bytes,
            released: Vec::new(),
        }
    }

    /// Publishes one event; never waits for consumers.
    pub(crate) fn publish(&mut self, event: Arc<ChangeEvent>) {
        let size = event.size();
        let stats = &self.stream.stats;
        let blocked = {
            let mut ring = self.stream.lock();
            ring.events.push_back((event, size));
            ring.bytes += size;
            // Read by every consumer (or nobody to read it): nothing to keep.
            let unread = ring.unread_from();
            while ring.head < unread
                && let Some(e) = ring.pop_front()
            {
                self.released.push(e);
            }
            // The bounds release the oldest; the newest stays even when it alone exceeds
            // the byte bound, so a consumer that keeps up still gets it.
            while ring.events.len() > self.max_events
                || (ring.bytes > self.max_bytes && ring.events.len() > 1)
            {
                match ring.pop_front() {
                    Some(e) => self.released.push(e),
                    None => break,
                }
            }
            ring.publish_stats(stats);
            ring.blocked > 0
        };
        stats.published.fetch_add(1, Ordering::Relaxed);
        self.released.clear();
        self.stream.wake(blocked);
    }

    pub(crate) fn stream(&self) -> Arc<Stream> {
        Arc::clone(&self.stream)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let blocked = {
            let mut ring = self.stream.lock();
            ring.closed = true;
            ring.blocked > 0
        };
        self.stream.wake(blocked);
    }
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lagged {
    /// The consumer fell behind the stream's bounds and missed this many events: rebuild
    /// from the store, then keep receiving.
    Resync(u64),
    /// The store was closed; no more events.
    Closed,
}

/// One consumer's position in the stream.
pub struct Subscription {
    stream: Arc<Stream>,
    /// Index of this consumer's position in the ring.
    slot: usize,
    name: String,
}

/// What the ring had for a consumer.
enum Take {
    Event(Arc<ChangeEvent>),
    Missed(u64),
    Closed,
}

impl Subscription {
    /// A consumer starting after the last published event.
    pub(crate) fn new(stream: &Arc<Stream>, name: &str) -> Subscription {
        let slot = {
            let mut ring = stream.lock();
            let end = ring.end();
            match ring.consumers.iter().position(Option::is_none) {
                Some(free) => {
                    if let Some(s) = ring.consumers.get_mut(free) {
                        *s = Some(end);
                    }
                    free
                }
                None => {
                    ring.consumers.push(Some(end));
                    ring.consumers.len() - 1
                }
            }
        };
        Subscription {
            stream: Arc::clone(stream),
            slot,
            name: name.to_string(),
        }
    }

    /// The next event in commit order. Cancel safe: a dropped future loses no event.
    pub async fn recv(&mut self) -> Result<Arc<ChangeEvent>, Lagged> {
        let stream = Arc::clone(&self.stream);
        loop {
            // Registered before looking, so a publish in between still wakes us.
            let mut notified = pin!(stream.notify.notified());
            notified.as_mut().enable();
            let taken = self.take(&mut stream.lock());
            if let Some(t) = taken {
                return self.finish(t);
            }
            notified.await;
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Result<Arc<ChangeEvent>, Lagged>> {
        let taken = self.take(&mut self.stream.lock());
        taken.map(|t| self.finish(t))
    }

    /// Blocking [`Subscription::recv`] for plain threads.
    pub fn blocking_recv(&mut self) -> Result<Arc<ChangeEvent>, Lagged> {
        let stream = Arc::clone(&self.stream);
        let mut ring = stream.lock();
        loop {
            if let Some(t) = self.take(&mut ring) {
                drop(ring);
                return self.finish(t);
            }
            ring.blocked += 1;
            ring = stream
                .cond
                .wait(ring)
                .unwrap_or_else(PoisonError::into_inner);
            ring.blocked -= 1;
        }
    }

    /// Takes this consumer's next event from the ring, if there is one (under the lock).
    fn take(&self, ring: &mut Ring) -> Option<Take> {
        let head = ring.head;
        let end = ring.end();
        let Some(Some(pos)) = ring.consumers.get_mut(self.slot) else {
            // Our slot is registered until drop; without it there is nothing to read.
            return Some(Take::Closed);
        };
        if *pos < head {
            // The bounds released events we had not read: tell, then go on from the oldest.
            let missed = head - *pos;
            *pos = head;
            return Some(Take::Missed(missed));
        }
        if *pos >= end {
            return ring.closed.then_some(Take::Closed);
        }
        let read = *pos;
        let (event, _) = ring.events.get(usize::try_from(read - head).ok()?)?;
        let event = Arc::clone(event);
        *pos += 1;
        if read == head {
            // We may have been the last to read the oldest: release what all have read.
            // Only the event just read can go, and we hold it, so this frees nothing here.
            let unread = ring.unread_from();
            while ring.head < unread && ring.pop_front().is_some() {}
            ring.publish_stats(&self.stream.stats);
        }
        Some(Take::Event(event))
    }

    fn finish(&self, taken: Take) -> Result<Arc<ChangeEvent>, Lagged> {
        match taken {
            Take::Event(e) => Ok(e),
            Take::Missed(n) => Err(self.lagged(n)),
            Take::Closed => Err(Lagged::Closed),
        }
    }

    fn lagged(&self, n: u64) -> Lagged {
        let stats = &self.stream.stats;
        stats.resyncs.fetch_add(1, Ordering::Relaxed);
        stats.skipped.fetch_add(n, Ordering::Relaxed);
        warn!(
            consumer = %self.name,
            missed = n,
            "change stream consumer fell behind; resynchronizing from the store"
        );
        Lagged::Resync(n)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut released = Vec::new();
        {
            let mut ring = self.stream.lock();
            if let Some(s) = ring.consumers.get_mut(self.slot) {
                *s = None;
            }
            // Events only this consumer still had to read go now (freed after the lock).
            let unread = ring.unread_from();
            while ring.head < unread
                && let Some(e) = ring.pop_front()
            {
                released.push(e);
            }
            ring.publish_stats(&self.stream.stats);
        }
        drop(released);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hickory_proto::rr::RecordType;

    use super::*;
    use crate::store::schema::{RecordMeta, Source};

    /// Event `seq` carrying `records` removed records of 100 RDATA bytes each.
    fn event(seq: u64, records: usize) -> Arc<ChangeEvent> {
        let rec = StoredRecord {
            owner: b"\x01a\x04test\x00".to_vec(),
            rtype: RecordType::TXT,
            ttl: 300,
            rdata: vec![7; 100],
            meta: RecordMeta {
                tags: vec!["k=v".into()],
                created: 1,
                updated: 1,
                source: Source::Api,
            },
        };
        Arc::new(ChangeEvent {
            zone: Name::from_ascii("test.").unwrap(),
            kind: ChangeKind::Update,
            seq,
            old_serial: seq as u32,
            new_serial: seq as u32 + 1,
            removed: vec![rec; records],
            added: Vec::new(),
        })
    }

    fn stream(max_events: usize, max_bytes: usize) -> (Publisher, Arc<StreamStats>) {
        let stats = Arc::new(StreamStats::default());
        (
            Publisher::new(max_events, max_bytes, Arc::clone(&stats)),
            stats,
        )
    }

    fn load(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    fn seq(r: Option<Result<Arc<ChangeEvent>, Lagged>>) -> Result<u64, Lagged> {
        r.expect("an event is waiting").map(|e| e.seq)
    }

    #[test]
    fn without_consumers_nothing_is_retained() {
        let (mut p, stats) = stream(8, 1 << 20);
        for i in 0..5 {
            p.publish(event(i, 3));
        }
        assert_eq!(load(&stats.published), 5);
        assert_eq!(load(&stats.retained_bytes), 0);
        assert_eq!(load(&stats.retained_events), 0);
        assert_eq!(load(&stats.limit_bytes), 1 << 20);
        assert_eq!(load(&stats.limit_events), 8);
        // A consumer starts after the last published event.
        let mut sub = Subscription::new(&p.stream(), "late");
        assert!(sub.try_recv().is_none());
        p.publish(event(5, 1));
        assert_eq!(seq(sub.try_recv()), Ok(5));
        assert!(sub.try_recv().is_none());
    }

    #[test]
    fn events_are_released_once_every_consumer_has_read_them() {
        let (mut p, stats) = stream(100, 1 << 20);
        let size = event(0, 2).size() as u64;
        let mut a = Subscription::new(&p.stream(), "a");
        let mut b = Subscription::new(&p.stream(), "b");
        for i in 0..4 {
            p.publish(event(i, 2));
        }
        assert_eq!(load(&stats.retained_bytes), 4 * size);
        for i in 0..4 {
            assert_eq!(seq(a.try_recv()), Ok(i));
        }
        // `b` has read none: all four stay.
        assert_eq!(load(&stats.retained_events), 4);
        assert_eq!(seq(b.try_recv()), Ok(0));
        assert_eq!(seq(b.try_recv()), Ok(1));
        assert_eq!(load(&stats.retained_events), 2);
        assert_eq!(load(&stats.retained_bytes), 2 * size);
        // Dropping the slowest consumer releases what only it still needed.
        drop(b);
        assert_eq!(load(&stats.retained_bytes), 0);
        assert_eq!(load(&stats.retained_events), 0);
        assert!(a.try_recv().is_none());
        assert_eq!(load(&stats.resyncs), 0);
    }

    #[test]
    fn byte_bound_releases_the_oldest_and_the_laggard_is_told_exactly() {
        let size = event(0, 10).size();
        // Room for 3 events by bytes, 100 by count.
        let bound = 3 * size + size / 2;
        let (mut p, stats) = stream(100, bound);
        let mut fast = Subscription::new(&p.stream(), "fast");
        let mut slow = Subscription::new(&p.stream(), "slow");
        for i in 0..10 {
            p.publish(event(i, 10));
            assert_eq!(seq(fast.try_recv()), Ok(i));
            assert!(load(&stats.retained_bytes) <= bound as u64);
        }
        assert_eq!(load(&stats.retained_events), 3);
        assert_eq!(load(&stats.retained_bytes), 3 * size as u64);
        // 7 released before `slow` read them: one resync of exactly 7, then 7, 8, 9.
        assert_eq!(seq(slow.try_recv()), Err(Lagged::Resync(7)));
        assert_eq!(
            (load(&stats.resyncs), load(&stats.skipped)),
            (1, 7),
            "counted"
        );
        for i in 7..10 {
            assert_eq!(seq(slow.try_recv()), Ok(i));
        }
        assert!(slow.try_recv().is_none());
        assert!(fast.try_recv().is_none());
        assert_eq!(load(&stats.retained_bytes), 0);
    }

    #[test]
    fn count_bound_applies_too() {
        let (mut p, stats) = stream(4, 1 << 30);
        let mut slow = Subscription::new(&p.stream(), "slow");
        for i in 0..10 {
            p.publish(event(i, 1));
        }
        assert_eq!(load(&stats.retained_events), 4);
        assert_eq!(seq(slow.try_recv()), Err(Lagged::Resync(6)));
        assert_eq!(seq(slow.try_recv()), Ok(6));
    }

    #[test]
    fn an_event_larger_than_the_bound_reaches_a_consumer_that_keeps_up() {
        let big = event(1, 1000);
        let bound = big.size() / 10;
        let (mut p, stats) = stream(100, bound);
        let mut sub = Subscription::new(&p.stream(), "keeps-up");
        let mut other = Subscription::new(&p.stream(), "behind");
        p.publish(event(0, 1));
        assert_eq!(seq(sub.try_recv()), Ok(0));
        p.publish(Arc::clone(&big));
        // Only the big one is kept (the small one `other` had not read is released).
        assert_eq!(load(&stats.retained_events), 1);
        assert_eq!(load(&stats.retained_bytes), big.size() as u64);
        let got = sub.try_recv().unwrap().unwrap();
        assert!(Arc::ptr_eq(&got, &big));
        assert_eq!(seq(other.try_recv()), Err(Lagged::Resync(1)));
        assert_eq!(seq(other.try_recv()), Ok(1));
        assert_eq!(load(&stats.retained_bytes), 0);
        // The next one replaces it: still only the newest beyond the bound.
        let mut behind = Subscription::new(&p.stream(), "new");
        p.publish(event(2, 1000));
        p.publish(event(3, 1000));
        assert_eq!(load(&stats.retained_events), 1);
        assert_eq!(seq(behind.try_recv()), Err(Lagged::Resync(1)));
        assert_eq!(seq(behind.try_recv()), Ok(3));
    }

    #[test]
    fn async_and_blocking_consumers_wake_and_see_the_close() {
        let (mut p, _stats) = stream(16, 1 << 20);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut a = Subscription::new(&p.stream(), "async");
        let mut b = Subscription::new(&p.stream(), "blocking");
        let blocking = std::thread::spawn(move || {
            let (mut seen, mut skipped) = (Vec::new(), 0);
            loop {
                match b.blocking_recv() {
                    Ok(e) => seen.push(e.seq),
                    Err(Lagged::Resync(n)) => skipped += n,
                    Err(Lagged::Closed) => return (seen, skipped),
                }
            }
        });
        let asynchronous = std::thread::spawn(move || {
            rt.block_on(async {
                let (mut seen, mut skipped) = (Vec::new(), 0);
                loop {
                    // A cancelled recv (the timeout) must lose nothing.
                    match tokio::time::timeout(Duration::from_millis(1), a.recv()).await {
                        Err(_) => continue,
                        Ok(Ok(e)) => seen.push(e.seq),
                        Ok(Err(Lagged::Resync(n))) => skipped += n,
                        Ok(Err(Lagged::Closed)) => return (seen, skipped),
                    }
                }
            })
        });
        for i in 0..200 {
            p.publish(event(i, 1));
            if i % 16 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        // Closing after the last event: both drain it, then see Closed.
        drop(p);
        for h in [blocking, asynchronous] {
            let (seen, skipped) = h.join().unwrap();
            // A 16-event bound may have made either lag: what it saw is in order, ends
            // with the last event, and every event it missed was reported.
            assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
            assert_eq!(seen.last(), Some(&199));
            assert_eq!(seen.len() as u64 + skipped, 200, "{seen:?}");
        }
    }
}
