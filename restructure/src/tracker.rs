//! What phase 2 drains: the lock history (RIDs) or, for the baseline, the journal
//! (row images).

use std::sync::Arc;

use kirikae_engine::{Rid, WriteObserver};

use crate::journal::{Journal, JournalEntry};
use crate::lock_history::LockHistory;
use crate::options::Strategy;

/// The write observer installed on the old table for the whole restructure.
pub(crate) enum Tracker {
    History(Arc<LockHistory>),
    Journal(Arc<Journal>),
}

impl Tracker {
    pub fn new(strategy: Strategy, rid_bound: u64) -> Tracker {
        match strategy {
            Strategy::LockHistory => {
                Tracker::History(Arc::new(LockHistory::for_rid_bound(rid_bound)))
            }
            Strategy::Journal => Tracker::Journal(Arc::new(Journal::new())),
        }
    }

    pub fn observer(&self) -> Arc<dyn WriteObserver> {
        match self {
            Tracker::History(h) => Arc::clone(h) as Arc<dyn WriteObserver>,
            Tracker::Journal(j) => Arc::clone(j) as Arc<dyn WriteObserver>,
        }
    }

    /// The tracker as something the database can free later (a writer's observer
    /// call may still hold it).
    pub fn shared(&self) -> Arc<dyn std::any::Any + Send + Sync> {
        match self {
            Tracker::History(h) => Arc::clone(h) as _,
            Tracker::Journal(j) => Arc::clone(j) as _,
        }
    }

    /// RIDs (or journal entries) recorded and not drained yet.
    pub fn pending(&self) -> u64 {
        match self {
            Tracker::History(h) => h.len(),
            Tracker::Journal(j) => j.len(),
        }
    }

    /// Bytes of the journal, 0 for the lock history.
    pub fn journal_bytes(&self) -> u64 {
        match self {
            Tracker::History(_) => 0,
            Tracker::Journal(j) => j.bytes(),
        }
    }

    /// Peak bytes used: `(lock history, journal)`.
    pub fn peak_bytes(&self) -> (u64, u64) {
        match self {
            Tracker::History(h) => (h.bytes(), 0),
            Tracker::Journal(j) => (0, j.peak_bytes()),
        }
    }

    /// Hands back what a round drained but did not apply: RIDs are recorded again,
    /// journal entries go back ahead of newer ones.
    pub fn put_back(&self, left: Left) {
        match self {
            Tracker::History(h) => left.rids.into_iter().for_each(|rid| h.record(rid)),
            Tracker::Journal(j) => j.put_back(left.entries),
        }
    }
}

/// Drained but not applied.
#[derive(Default)]
pub(crate) struct Left {
    pub rids: Vec<Rid>,
    pub entries: Vec<JournalEntry>,
}
