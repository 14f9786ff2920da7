//! The change stream: every committed change as an immutable `Arc<ChangeEvent>`, delivered
//! in commit order to any number of independent consumers.
//!
//! It is a bounded ring (`tokio::sync::broadcast`): the writer appends and never waits;
//! each consumer has its own position. A consumer that falls more than the capacity behind
//! does not block the writer and does not silently skip events: its next `recv` returns
//! [`Lagged::Resync`] (logged and counted), after which it must rebuild its state from the
//! store (which holds every committed change) and continues with the oldest retained event.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::rr::Name;
use tokio::sync::broadcast;
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
    /// Approximate bytes held by the events in the ring (the bound on memory held for
    /// consumers that have not read them yet).
    pub retained_bytes: AtomicU64,
    /// Change transactions seen by the metrics consumer.
    pub updates_seen: AtomicU64,
    /// Whole-zone imports seen by the metrics consumer.
    pub replaces_seen: AtomicU64,
}

/// The writer's end.
pub(crate) struct Publisher {
    tx: broadcast::Sender<Arc<ChangeEvent>>,
    capacity: usize,
    sizes: VecDeque<usize>,
    stats: Arc<StreamStats>,
}

impl Publisher {
    pub(crate) fn new(capacity: usize, stats: Arc<StreamStats>) -> Publisher {
        let capacity = capacity.max(1);
        let (tx, _) = broadcast::channel(capacity);
        Publisher {
            tx,
            capacity,
            sizes: VecDeque::with_capacity(capacity),
            stats,
        }
    }

    /// Publishes one event; never blocks. With no consumer the event is simply dropped.
    pub(crate) fn publish(&mut self, event: Arc<ChangeEvent>) {
        // The ring keeps the last `capacity` events alive whoever has read them.
        if self.sizes.len() == self.capacity {
            self.sizes.pop_front();
        }
        self.sizes.push_back(event.size());
        self.stats
            .retained_bytes
            .store(self.sizes.iter().sum::<usize>() as u64, Ordering::Relaxed);
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(event);
    }

    pub(crate) fn sender(&self) -> broadcast::Sender<Arc<ChangeEvent>> {
        self.tx.clone()
    }
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lagged {
    /// The consumer fell behind by more than the stream's capacity and missed this many
    /// events: rebuild from the store, then keep receiving.
    Resync(u64),
    /// The store was closed; no more events.
    Closed,
}

/// One consumer's position in the stream.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<ChangeEvent>>,
    name: String,
    stats: Arc<StreamStats>,
}

impl Subscription {
    pub(crate) fn from_sender(
        tx: &broadcast::Sender<Arc<ChangeEvent>>,
        name: &str,
        stats: Arc<StreamStats>,
    ) -> Subscription {
        Subscription {
            rx: tx.subscribe(),
            name: name.to_string(),
            stats,
        }
    }

    /// The next event in commit order.
    pub async fn recv(&mut self) -> Result<Arc<ChangeEvent>, Lagged> {
        let r = self.rx.recv().await;
        self.map(r)
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Result<Arc<ChangeEvent>, Lagged>> {
        match self.rx.try_recv() {
            Err(broadcast::error::TryRecvError::Empty) => None,
            Ok(e) => Some(Ok(e)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Err(self.lagged(n))),
            Err(broadcast::error::TryRecvError::Closed) => Some(Err(Lagged::Closed)),
        }
    }

    /// Blocking [`Subscription::recv`] for plain threads.
    pub fn blocking_recv(&mut self) -> Result<Arc<ChangeEvent>, Lagged> {
        let r = self.rx.blocking_recv();
        self.map(r)
    }

    fn map(
        &self,
        r: Result<Arc<ChangeEvent>, broadcast::error::RecvError>,
    ) -> Result<Arc<ChangeEvent>, Lagged> {
        match r {
            Ok(e) => Ok(e),
            Err(broadcast::error::RecvError::Lagged(n)) => Err(self.lagged(n)),
            Err(broadcast::error::RecvError::Closed) => Err(Lagged::Closed),
        }
    }

    fn lagged(&self, n: u64) -> Lagged {
        self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        self.stats.skipped.fetch_add(n, Ordering::Relaxed);
        warn!(
            consumer = %self.name,
            missed = n,
            "change stream consumer fell behind; resynchronizing from the store"
        );
        Lagged::Resync(n)
    }
}
