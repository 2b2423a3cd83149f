//! The switch: hold new writers of the old table, wait for in-flight ones, drain the
//! last RIDs, switch the name to the new table, release. Readers never wait.
//!
//! Every attempt is bounded by `stall_max`: waiting for in-flight writers and the
//! final drain share it. An attempt that runs out of time lets writers go (what it did
//! not drain stays pending) and the switch is tried again after a pause, so that a
//! long transaction or a burst of writes costs writers at most `stall_max` per
//! attempt, never the whole wait.

use std::time::{Duration, Instant};

use kirikae_engine::WriterHold;

use crate::error::{RestructureError, Result};
use crate::job::Job;
use crate::report::{HoldEnd, HoldKind};

/// Where the switch's stall went.
pub(crate) struct Stall {
    pub total: Duration,
    pub wait: Duration,
    pub drain: Duration,
    pub drained: u64,
}

impl Job {
    /// Returns how long new writers were held at the switch and the attempts made.
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
            self.rest_before_hold()?;
            let held_at = Instant::now();
            let deadline = held_at + self.options.stall_max;
            let hold = self.db.hold_writers(&self.shared.table)?;
            let mut left = crate::job::Left::default();
            let attempt_result = self.attempt(&hold, held_at, deadline, &mut left);
            match attempt_result {
                Ok(Some(mut stall)) => {
                    if let Some(inspect) = &self.options.inspect_at_switch {
                        inspect(&self.old, &self.twin.table);
                    }
                    let switched = hold.switch_to(std::sync::Arc::clone(&self.twin.table));
                    stall.total = held_at.elapsed();
                    let end = if switched.is_ok() {
                        HoldEnd::Switched
                    } else {
                        HoldEnd::Failed
                    };
                    self.note_hold(HoldKind::Switch, end, held_at);
                    switched?;
                    return Ok((stall, attempt));
                }
                Ok(None) => {
                    self.shared
                        .switch_retries
                        .store(attempt, std::sync::atomic::Ordering::Relaxed);
                    in_flight = hold.in_flight();
                    let end = if in_flight > 0 {
                        HoldEnd::WritersInFlight
                    } else {
                        HoldEnd::OutOfTime
                    };
                    hold.release();
                    self.note_hold(HoldKind::Switch, end, held_at);
                    // Writers (and a long transaction) go on first; then the new
                    // table catches up with what they did.
                    self.shared.nap(self.options.switch_retry_pause)?;
                    self.put_back(left);
                    self.round()?;
                }
                Err(e) => {
                    hold.release();
                    self.note_hold(HoldKind::Switch, HoldEnd::Failed, held_at);
                    self.put_back(left);
                    return Err(e);
                }
            }
        }
        Err(RestructureError::SwitchPostponed {
            table: self.shared.table.clone(),
            tries: self.options.switch_tries,
            in_flight,
            waited: self.options.stall_max,
        })
    }

    /// One attempt under the hold: `Some` when the new table is exactly plan(old) and
    /// the switch may happen, `None` when `deadline` came first.
    fn attempt(
        &mut self,
        hold: &WriterHold,
        held_at: Instant,
        deadline: Instant,
        left: &mut crate::job::Left,
    ) -> Result<Option<Stall>> {
        if hold
            .wait_idle(deadline.saturating_duration_since(Instant::now()))
            .is_err()
        {
            return Ok(None);
        }
        let idle_at = Instant::now();
        // No writer is in flight and none can start: after this drain the new table
        // is exactly plan(old), unless a record is parked on a true duplicate.
        let mut drained = Vec::new();
        loop {
            let round = self.round_within(Some(deadline), Some(&mut drained))?;
            if !round.complete {
                *left = round.left;
                return Ok(None);
            }
            if round.applied == 0 {
                break;
            }
        }
        let drained_at = Instant::now();
        debug_assert_eq!(
            self.tracker.pending(),
            0,
            "history not empty with writers held"
        );
        if let Some(duplicate) = self.twin.duplicate() {
            return Err(duplicate);
        }
        if self.options.verify {
            self.verify_under_hold(&mut drained)?;
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        Ok(Some(Stall {
            total: held_at.elapsed(),
            wait: idle_at - held_at,
            drain: drained_at - idle_at,
            drained: drained.len() as u64,
        }))
    }
}
