//! Phase 1: copy the old table through the plan into the new one, in chunks, while
//! the service keeps reading and writing the old table.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kirikae_engine::Rid;

use crate::error::Result;
use crate::job::Job;

impl Job {
    /// Copies every record that existed when the copy started (later inserts are in
    /// the lock history). Returns the number of records copied.
    pub(crate) fn copy(&mut self) -> Result<u64> {
        debug_assert!(
            self.old.has_write_observer(),
            "the lock history must be enabled before the first record is copied"
        );
        let bound = self.old.rid_bound();
        let chunk = self.options.chunk_rows.max(1);
        let started = Instant::now();
        let mut copied = 0u64;
        let mut from = 0u64;
        self.pacer.restart();
        while from < bound {
            self.shared.checkpoint()?;
            // Each record is read atomically under its latch (never torn, never
            // uncommitted); what changes after the read is in the lock history.
            let rows = self.old.scan(Rid(from), chunk);
            let Some(&(last, _)) = rows.last() else {
                break;
            };
            for (rid, row) in rows.iter().take_while(|(rid, _)| rid.0 < bound) {
                self.twin.copy(&self.old, *rid, row)?;
                copied += 1;
                self.pacer.step(&self.shared)?;
            }
            from = last.0 + 1;
            self.shared.rows_copied.store(copied, Ordering::Relaxed);
            self.shared
                .history
                .store(self.tracker.pending(), Ordering::Relaxed);
            self.throttle(copied, started)?;
        }
        self.twin.finish_copy(&self.old)?;
        Ok(copied)
    }

    /// Sleeps as needed to keep the copy at or under the rate limit.
    fn throttle(&self, copied: u64, started: Instant) -> Result<()> {
        if let Some(limit) = self.shared.rate_limit() {
            let due = Duration::from_secs_f64(copied as f64 / limit as f64);
            let elapsed = started.elapsed();
            if due > elapsed {
                self.shared.nap(due - elapsed)?;
            }
        }
        Ok(())
    }
}
