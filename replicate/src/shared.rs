//! The state the replicator's commit gate, its API and its shell threads share: the
//! link core under one lock, the commits waiting for outcomes, the event queue, and
//! stop and poison flags.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam::channel::{Receiver, Sender, TrySendError};
use crossbeam::utils::CachePadded;
use parking_lot::{Condvar, Mutex};

use kirikae_engine::TxnId;

use crate::ddl::CatalogChangeAt;
use crate::handshake::PeerKey;
use crate::leadership::LeaseGuard;
use crate::link::{Event, Link, LinkState, Micros, Ready};
use crate::outbox::Outbox;
use crate::rules::RuleSet;
use crate::seq::Seq;
use crate::sync_waiter::{Waiters, Wakeup};

/// Events kept for the embedder; past this the oldest is dropped (and counted in
/// [`LinkMetrics::events_dropped`]).
pub(crate) const EVENTS_MAX: usize = 4096;

/// Sequences given to commits that are not visible here yet (between the commit
/// gate's acceptance and the engine's publishing of their writes): a resync's copy
/// starts only once none is at or below its start. Every commit adds and removes
/// one entry, the first under the core's lock; only a waiting copy asks for the
/// lowest.
///
/// A list, not a map: it holds one entry per commit between those two points,
/// which is at most the number of sessions committing at once (a handful), and a
/// scan of a few entries in one cache line beats hashing a key, under the lock
/// every replicated commit takes.
#[derive(Default)]
pub(crate) struct Unapplied(Vec<(TxnId, Seq)>);

impl Unapplied {
    /// Notes `txn` as committing at `seq` (replacing an earlier note of it).
    pub(crate) fn insert(&mut self, txn: TxnId, seq: Seq) {
        match self.0.iter_mut().find(|(t, _)| *t == txn) {
            Some(entry) => entry.1 = seq,
            None => self.0.push((txn, seq)),
        }
    }

    /// `txn` is visible now (or was never accepted).
    pub(crate) fn remove(&mut self, txn: TxnId) {
        if let Some(i) = self.0.iter().position(|(t, _)| *t == txn) {
            self.0.swap_remove(i);
        }
    }

    /// The lowest sequence not visible yet.
    pub(crate) fn lowest(&self) -> Option<Seq> {
        self.0.iter().map(|&(_, seq)| seq).min()
    }
}

/// Outcomes taken for waiting commits under the core's lock, given when this is
/// dropped: drop it after unlocking.
#[must_use = "drop it once the core is unlocked: that wakes the commits"]
pub(crate) struct Wakeups(Vec<Wakeup>);

impl Wakeups {
    /// Gives the outcomes (wakes their commits).
    pub(crate) fn deliver(self) {
        drop(self.0);
    }
}

pub(crate) struct Core {
    pub(crate) link: Link,
    /// The sync commits waiting for their outcomes. A waiter that gives up removes
    /// its own entry.
    pub(crate) waiters: Waiters,
    /// Connection generation: a reader of an older connection must not touch the link.
    pub(crate) generation: u64,
    /// The link's state when last delivered: a change wakes [`Replicator::wait_duplex`].
    seen_state: crate::LinkState,
}

/// What the commit gate, the API and the shell threads share (see the module docs).
///
/// Layout: every commit writes the core's lock, the list of unapplied commits and
/// (when the link thread sleeps) `writer_idle`, and only reads the flags (fenced,
/// handing over, poisoned, pace). Each of the written ones has cache lines of its
/// own ([`CachePadded`]): a flag sharing a line with them would be fetched from the
/// other core on every commit (seen under perf as the commit path's costliest loads).
pub(crate) struct Shared {
    pub(crate) core: CachePadded<Mutex<Core>>,
    /// The connection's writing end (see `outbox.rs`): taken before `core` by the
    /// link thread, only tried by a committing thread that holds `core`.
    pub(crate) outbox: CachePadded<Mutex<Outbox>>,
    /// The link changed state (a catch-up pause ended, duplex reached or lost).
    pub(crate) settled: Condvar,
    /// Work is waiting for the link thread.
    pub(crate) wake: Condvar,
    pub(crate) writer_idle: CachePadded<AtomicBool>,
    pub(crate) rules: RuleSet,
    epoch: Instant,
    events: Sender<Event>,
    /// The same channel's receiving end, to drop the oldest event when it is full.
    events_oldest: Receiver<Event>,
    pub(crate) events_dropped: AtomicU64,
    pub(crate) stop: AtomicBool,
    /// Set when a replication thread panicked (see [`ReplicateError::Poisoned`]).
    poisoned: Mutex<Option<String>>,
    /// Whether `poisoned` is set: what every commit reads (taking the lock would
    /// write its line).
    is_poisoned: AtomicBool,
    pub(crate) peer: SocketAddr,
    /// The link's frame limit (fixed at start).
    pub(crate) frame_bytes_max: usize,
    /// The pair's key, for handshakes.
    pub(crate) key: Option<PeerKey>,
    /// The epoch of the primary that replaced this one (0: not fenced). Every commit
    /// checks it first, the ones its rules skip included.
    pub(crate) fenced_by: AtomicU64,
    /// Set by a planned switchover: every new commit is refused, those already
    /// submitted finish.
    pub(crate) handing_over: AtomicBool,
    /// When the link thread's current socket write began, µs on [`Shared::now`]'s
    /// clock plus one (0: not writing).
    pub(crate) writing_since: CachePadded<AtomicU64>,
    /// In etcd mode, the leader lease every commit needs alive.
    pub(crate) lease: std::sync::OnceLock<LeaseGuard>,
    pub(crate) unapplied: CachePadded<Mutex<Unapplied>>,
    /// `LinkConfig::copy_bytes_per_s`.
    pub(crate) copy_bytes_per_s: u64,
    /// The link's `commit_pace_us`, published for commits to read without the lock.
    pub(crate) commit_pace_us: AtomicU64,
    /// The latest catalog changes sequenced (see [`Replicator::catalog_changes`]).
    ///
    /// [`Replicator::catalog_changes`]: crate::Replicator::catalog_changes
    pub(crate) catalog_changes: Mutex<std::collections::VecDeque<CatalogChangeAt>>,
    /// The catalog change sequenced and not yet published (the catalog's lock
    /// allows one at a time), and whether it was shipped.
    pub(crate) catalog_txn: Mutex<Option<(kirikae_engine::TxnId, bool)>>,
}

impl Shared {
    /// The shared state around `link`; also returns the receiving end of the event
    /// queue, for the embedder.
    pub(crate) fn new(
        link: Link,
        rules: RuleSet,
        peer: SocketAddr,
        key: Option<PeerKey>,
    ) -> (Arc<Shared>, Receiver<Event>) {
        let (tx, rx) = crossbeam::channel::bounded(EVENTS_MAX);
        let frame_bytes_max = link.config().frame_bytes_max;
        let copy_bytes_per_s = link.config().copy_bytes_per_s;
        let shared = Arc::new(Shared {
            core: CachePadded::new(Mutex::new(Core {
                link,
                waiters: Waiters::default(),
                generation: 0,
                seen_state: LinkState::Degraded,
            })),
            outbox: CachePadded::new(Mutex::new(Outbox::default())),
            settled: Condvar::new(),
            wake: Condvar::new(),
            writer_idle: CachePadded::new(AtomicBool::new(false)),
            rules,
            epoch: Instant::now(),
            events: tx,
            events_oldest: rx.clone(),
            events_dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            poisoned: Mutex::new(None),
            is_poisoned: AtomicBool::new(false),
            peer,
            frame_bytes_max,
            key,
            fenced_by: AtomicU64::new(0),
            handing_over: AtomicBool::new(false),
            lease: std::sync::OnceLock::new(),
            writing_since: CachePadded::new(AtomicU64::new(0)),
            unapplied: CachePadded::new(Mutex::new(Unapplied::default())),
            copy_bytes_per_s,
            commit_pace_us: AtomicU64::new(0),
            catalog_changes: Mutex::new(std::collections::VecDeque::new()),
            catalog_txn: Mutex::new(None),
        });
        (shared, rx)
    }

    pub(crate) fn now(&self) -> Micros {
        self.epoch.elapsed().as_micros() as Micros
    }

    /// Delivers the link's events, then takes the rest of its output for the link
    /// thread; the outcomes for waiting commits are returned, to be given once the
    /// core is unlocked (see [`Shared::deliver_notices`]).
    pub(crate) fn take_ready(&self, core: &mut Core) -> (Ready, Wakeups) {
        let wakeups = self.deliver_notices(core);
        (core.link.ready(), wakeups)
    }

    /// Hands the link's pending events to the embedder and takes its outcomes for
    /// the commits waiting for them: the caller gives them (dropping the returned
    /// [`Wakeups`]) once the core is unlocked, since each wakes a thread, a system
    /// call that every other commit would otherwise wait for. Wakes
    /// [`Replicator::wait_duplex`] and paused commits when the link changed state.
    /// The rest of the link's output stays for the link thread (the connection
    /// reader calls this too: a sync commit learns its outcome without waiting for
    /// the link thread). Called with the core locked.
    pub(crate) fn deliver_notices(&self, core: &mut Core) -> Wakeups {
        let (events, outcomes) = core.link.take_notices();
        for e in events {
            if let Event::Fenced { epoch, .. } = &e {
                self.fenced_by.store(epoch.0, Ordering::SeqCst);
            }
            self.raise(e);
        }
        let wakeups = Wakeups(
            outcomes
                .into_iter()
                .filter_map(|(seq, outcome)| core.waiters.settle_later(seq, outcome))
                .collect(),
        );
        self.commit_pace_us
            .store(core.link.commit_pace_us(), Ordering::Relaxed);
        let state = core.link.state();
        if state != core.seen_state {
            core.seen_state = state;
            self.settled.notify_all();
        }
        wakeups
    }

    /// Queues an event for the embedder, dropping the oldest when the queue is full
    /// (an embedder that never reads events must not make memory grow).
    pub(crate) fn raise(&self, event: Event) {
        let mut event = event;
        loop {
            match self.events.try_send(event) {
                Ok(()) => return,
                Err(TrySendError::Full(e)) => {
                    if self.events_oldest.try_recv().is_ok() {
                        self.events_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    event = e;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }

    /// Why replication stopped, if a thread of it panicked.
    pub(crate) fn poisoned(&self) -> Option<String> {
        if !self.is_poisoned.load(Ordering::Acquire) {
            return None;
        }
        self.poisoned.lock().clone()
    }

    /// Records that a replication thread panicked: every waiting commit wakes (its
    /// slot closes) and every later one fails at once.
    pub(crate) fn poison(&self, detail: String) {
        tracing::error!("{detail}");
        self.poisoned.lock().get_or_insert(detail);
        self.is_poisoned.store(true, Ordering::Release);
        self.core.lock().waiters.close_all();
        self.settled.notify_all();
    }

    /// Runs `body` as the thread `name`; a panic in it poisons the replicator.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        name: &str,
        body: impl FnOnce(Arc<Shared>) + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        let shared = Arc::clone(self);
        let thread = name.to_owned();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    body(Arc::clone(&shared))
                }));
                if let Err(panic) = outcome {
                    shared.poison(crate::error::panic_detail(&thread, &*panic));
                }
            })
    }

    pub(crate) fn wake_writer(&self) {
        // Read before swapped: the swap would write the line on every commit, and
        // the flag is mostly false under load. A false read is exact: the link
        // thread sets it under the core's lock, which this commit took after it.
        if self.writer_idle.load(Ordering::Acquire)
            && self.writer_idle.swap(false, Ordering::AcqRel)
        {
            self.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use kirikae_engine::TxnId;
    use proptest::prelude::*;

    use super::Unapplied;
    use crate::seq::Seq;

    proptest! {
        /// The list answers as a map of transaction to sequence would, whatever
        /// the order of notes and removals (repeats included).
        #[test]
        fn unapplied_answers_as_a_map_would(
            steps in prop::collection::vec((any::<bool>(), 0u64..6, 0u64..50), 0..60)
        ) {
            let mut list = Unapplied::default();
            let mut model: HashMap<u64, u64> = HashMap::new();
            for (insert, txn, seq) in steps {
                if insert {
                    list.insert(TxnId(txn), Seq(seq));
                    model.insert(txn, seq);
                } else {
                    list.remove(TxnId(txn));
                    model.remove(&txn);
                }
                prop_assert_eq!(list.lowest(), model.values().min().map(|&s| Seq(s)));
                prop_assert_eq!(list.0.len(), model.len());
            }
        }
    }
}
