//! The switch: hold new writers of the old table, wait for in-flight ones, drain the
//! last RIDs, switch the name to the new table, release. Readers never wait.

use std::time::{Duration, Instant};

use crate::error::{RestructureError, Result};
use crate::job::Job;

impl Job {
    /// Returns the stall (how long new writers were held) and the attempts made.
    pub(crate) fn switch(&mut self) -> Result<(Duration, u32)> {
        let mut in_flight = 0;
        for attempt in 1..=self.options.switch_tries.max(1) {
            self.shared.checkpoint()?;
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
            // No writer is in flight and none can start: after this drain the new
            // table is exactly plan(old).
            while self.round()? > 0 {}
            debug_assert_eq!(
                self.tracker.pending(),
                0,
                "history not empty with writers held"
            );
            if self.options.verify {
                self.verify_under_hold()?;
            }
            if let Some(inspect) = &self.options.inspect_at_switch {
                inspect(&self.old, &self.twin.table);
            }
            hold.switch_to(std::sync::Arc::clone(&self.twin.table))?;
            return Ok((held_at.elapsed(), attempt));
        }
        Err(RestructureError::SwitchPostponed {
            table: self.shared.table.clone(),
            tries: self.options.switch_tries,
            in_flight,
            waited: self.options.switch_wait,
        })
    }
}
