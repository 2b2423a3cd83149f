//! Phase 2: update synchronization. Rounds take what changed in the old table and
//! apply its current state to the new one, until the next round would fit in the
//! allowed stall.

use crate::control::NonConvergence;
use crate::error::{RestructureError, Result};
use crate::job::Job;

impl Job {
    pub(crate) fn synchronize(&mut self) -> Result<()> {
        let mut best = u64::MAX;
        let mut stuck = 0u32;
        loop {
            self.shared.checkpoint()?;
            self.round()?;
            // The final drain must fit in the stall budget together with waiting for
            // in-flight writers and the switch itself: aim for a quarter of it.
            if self.next_round_estimate() <= self.options.max_stall / 4 {
                return Ok(());
            }
            let pending = self.tracker.pending();
            if pending < best {
                best = pending;
                stuck = 0;
            } else {
                stuck += 1;
            }
            let out_of_rounds = self.rounds >= self.options.max_rounds;
            if stuck >= self.options.stall_rounds || out_of_rounds {
                match self.options.on_non_convergence {
                    NonConvergence::KeepGoing if !out_of_rounds => {}
                    // Writers outpace the sync: one round with them held catches up, and
                    // the switch follows at once (it drains the rest under its own hold).
                    NonConvergence::ThrottleWriters if !out_of_rounds => {
                        return self.round_with_writers_held();
                    }
                    _ => {
                        return Err(RestructureError::NotConverging {
                            table: self.shared.table.clone(),
                            rounds: self.rounds,
                            history: pending,
                        })
                    }
                }
            }
        }
    }

    /// A round during which new writers wait: they cannot add to the history while it
    /// is applied. Bounded by the switch wait; in-flight writers keep going.
    fn round_with_writers_held(&mut self) -> Result<()> {
        let hold = self.db.hold_writers(&self.shared.table)?;
        self.round()?;
        hold.release();
        Ok(())
    }
}
