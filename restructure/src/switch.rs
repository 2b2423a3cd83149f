//! The switch: hold new writers of the old table, wait for in-flight ones, drain the
//! last RIDs, switch the name to the new table, release. Readers never wait.

use std::time::{Duration, Instant};

use crate::error::{RestructureError, Result};
use crate::job::Job;

/// Where the switch's stall went.
pub(crate) struct Stall {
    pub total: Duration,
    pub wait: Duration,
    pub drain: Duration,
    pub drained: u64,
}

impl Job {
    /// Returns how long new writers were held and the attempts made.
    pub(crate) fn switch(&mut self) -> Result<(Stall, u32)> {
        let mut in_flight = 0;
        for attempt in 1..=self.options.switch_tries.max(1) {
            // Whatever piled up since phase 2 converged (verification, a postponed
            // attempt) is synced now, with writers running: the drain under the hold
            // must stay within the allowed stall.
            self.synchronize()?;
            if self.options.verify {
                self.recheck_suspicious()?;
            }
            let held_at = Instant::now();
            let hold = self.db.hold_writers(&self.shared.table)?;
            if hold.wait_idle(self.options.switch_wait).is_err() {
                // A long transaction holds records of the table: let everyone go on,
                // keep the new table in sync, and try again.
                in_flight = hold.in_flight();
                hold.release();
                self.round()?;
                self.shared
                    .nap(self.options.switch_wait.min(Duration::from_millis(20)))?;
                continue;
            }
            let idle_at = Instant::now();
            // No writer is in flight and none can start: after this drain the new
            // table is exactly plan(old).
            let mut drained = Vec::new();
            while self.round_noting(Some(&mut drained))? > 0 {}
            let drained_at = Instant::now();
            debug_assert_eq!(
                self.tracker.pending(),
                0,
                "history not empty with writers held"
            );
            if self.options.verify {
                self.verify_under_hold(&mut drained)?;
            }
            if let Some(inspect) = &self.options.inspect_at_switch {
                inspect(&self.old, &self.twin.table);
            }
            hold.switch_to(std::sync::Arc::clone(&self.twin.table))?;
            let stall = Stall {
                total: held_at.elapsed(),
                wait: idle_at - held_at,
                drain: drained_at - idle_at,
                drained: drained.len() as u64,
            };
            return Ok((stall, attempt));
        }
        Err(RestructureError::SwitchPostponed {
            table: self.shared.table.clone(),
            tries: self.options.switch_tries,
            in_flight,
            waited: self.options.switch_wait,
        })
    }
}
