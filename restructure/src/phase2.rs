//! Phase 2: update synchronization. Rounds take what changed in the old table and
//! apply its current state to the new one, until the next round would fit in the
//! allowed stall.

use std::time::Instant;

use crate::error::{RestructureError, Result};
use crate::job::{Job, Tracker};
use crate::options::NonConvergence;
use crate::report::{HoldEnd, HoldKind};

/// The least time writers get after a throttled round, as a share of the hold.
const MIN_WRITERS_SHARE: f64 = 1.0 / 16.0;

impl Job {
    pub(crate) fn synchronize(&mut self) -> Result<()> {
        let mut best = u64::MAX;
        let mut stuck = 0u32;
        loop {
            self.shared.checkpoint()?;
            self.round()?;
            // The final drain must fit in the stall budget together with waiting for
            // in-flight writers and the switch itself: aim for a quarter of it.
            if self.next_round_estimate() <= self.options.stall_max / 4 {
                return Ok(());
            }
            let pending = self.pending();
            if pending < best {
                best = pending;
                stuck = 0;
            } else {
                stuck += 1;
            }
            let out_of_rounds = self.out_of_rounds();
            if stuck >= self.options.stall_rounds || out_of_rounds {
                match self.options.on_non_convergence {
                    NonConvergence::KeepGoing if !out_of_rounds => {}
                    // Writers outpace the sync.
                    NonConvergence::ThrottleWriters if !out_of_rounds => {
                        return self.throttle_writers()
                    }
                    _ => return Err(self.not_converging()),
                }
            }
        }
    }

    /// Held rounds only (an unheld round lets writers add as much as it applies), each
    /// within `stall_max`, until the history fits the stall budget. Writers run after
    /// each for a share of the hold: all of it at first, halved whenever a held round
    /// leaves more pending than it found (writers still outpace it, e.g. on a busy
    /// machine), down to [`MIN_WRITERS_SHARE`], so that throttling converges.
    fn throttle_writers(&mut self) -> Result<()> {
        let mut writers_share = 1.0f64;
        loop {
            self.shared.checkpoint()?;
            if self.out_of_rounds() {
                return Err(self.not_converging());
            }
            let before = self.pending();
            // A held round that drained everything leaves only what in-flight writers
            // added: the switch can drain that.
            if self.throttled_round(writers_share)?
                || self.next_round_estimate() <= self.options.stall_max / 4
            {
                return Ok(());
            }
            if self.pending() >= before {
                writers_share = (writers_share / 2.0).max(MIN_WRITERS_SHARE);
            }
        }
    }

    /// Past `rounds_max`, or (journal baseline) past `journal_bytes_max`.
    fn out_of_rounds(&self) -> bool {
        let journal_full = matches!(&self.tracker,
            Tracker::Journal(j) if j.bytes() > self.options.journal_bytes_max);
        self.rounds >= self.options.rounds_max || journal_full
    }

    fn not_converging(&self) -> RestructureError {
        RestructureError::NotConverging {
            table: self.shared.table.clone(),
            rounds: self.rounds,
            history: self.pending(),
        }
    }

    /// A round during which new writers wait, so that they cannot add to the history
    /// while it is applied; in-flight writers keep going. It stops at `stall_max`
    /// (what is left stays pending), and writers then run for `writers_share` of the
    /// hold before anything holds them again. Returns whether it drained everything.
    fn throttled_round(&mut self, writers_share: f64) -> Result<bool> {
        self.rest_before_hold()?;
        let held_at = Instant::now();
        let hold = self.db.hold_writers(&self.shared.table)?;
        let round = self.round_within(Some(held_at + self.options.stall_max), None);
        hold.release();
        let end = match &round {
            Ok(r) if r.complete => HoldEnd::RoundDone,
            Ok(_) => HoldEnd::OutOfTime,
            Err(_) => HoldEnd::Failed,
        };
        self.note_hold(HoldKind::ThrottledRound, end, held_at);
        let round = round?;
        // The rest comes first: writers go before anything else runs here.
        self.shared.nap(held_at.elapsed().mul_f64(writers_share))?;
        let complete = round.complete;
        self.put_back(round.left);
        Ok(complete)
    }
}
