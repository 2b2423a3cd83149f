//! What every phase of one restructure reads and never changes (the database, the old
//! table, the options, the state shared with the handle), and the log of writer holds
//! the phases append to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kirikae_engine::{Database, Rid, RowRef, Table};

use crate::error::Result;
use crate::options::RestructureOptions;
use crate::progress::Shared;
use crate::report::{Hold, HoldEnd, HoldKind};

/// See [`Context::rest_before_hold`]: long enough for a preempted write (microseconds)
/// to finish, short enough not to let the history grow.
const REST_BEFORE_HOLD: Duration = Duration::from_micros(100);

/// The fixed inputs of one restructure.
pub(crate) struct Context {
    pub db: Database,
    pub old: Arc<Table>,
    pub options: RestructureOptions,
    pub shared: Arc<Shared>,
}

impl Context {
    /// The restructured table's name (the old table's, and the new one's after the
    /// switch).
    pub fn table(&self) -> &str {
        &self.shared.table
    }

    /// Reads the old table from its first RID up to `bound` in chunks of
    /// `chunk_rows`, checking for cancellation before each, and hands every chunk to
    /// `each`. Each record is read atomically under its latch (never torn, never
    /// uncommitted); what changes after the read is in the lock history. A chunk may
    /// end with records at or past `bound` (inserted meanwhile).
    pub fn scan_old(
        &self,
        bound: u64,
        mut each: impl FnMut(&[(Rid, RowRef)]) -> Result<()>,
    ) -> Result<()> {
        let chunk = self.options.chunk_rows.max(1);
        let mut from = 0u64;
        while from < bound {
            self.shared.checkpoint()?;
            let rows = self.old.scan(Rid(from), chunk);
            let Some(&(last, _)) = rows.last() else {
                break;
            };
            each(&rows)?;
            from = last.0 + 1;
        }
        Ok(())
    }

    /// Rests briefly right before a hold of writers. While this thread runs, a writer
    /// that shares its core waits, at whatever point of its write it was; resting
    /// first lets such a writer finish, so that it waits for the hold, not for the
    /// work before it. Short, because writers add to the history meanwhile.
    pub fn rest_before_hold(&self) -> Result<()> {
        self.shared.nap(REST_BEFORE_HOLD)
    }
}

/// Every time writers were held, in order.
#[derive(Default)]
pub(crate) struct HoldLog(Vec<Hold>);

impl HoldLog {
    /// Notes a hold of writers that began at `held_at` and has just ended.
    pub fn note(&mut self, kind: HoldKind, end: HoldEnd, held_at: Instant) {
        self.0.push(Hold {
            kind,
            end,
            duration: held_at.elapsed(),
        });
    }

    /// The sum of all holds.
    pub fn total(&self) -> Duration {
        self.0.iter().map(|h| h.duration).sum()
    }

    /// The longest hold.
    pub fn max(&self) -> Duration {
        self.0.iter().map(|h| h.duration).max().unwrap_or_default()
    }

    pub fn into_vec(self) -> Vec<Hold> {
        self.0
    }
}
