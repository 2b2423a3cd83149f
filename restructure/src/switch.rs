//! The switch: hold new writers of the old table, wait for in-flight ones, drain the
//! last RIDs, switch the name to the new table, release. Readers never wait.
//!
//! Every attempt is bounded by `stall_max`: waiting for in-flight writers and the
//! final drain share it. An attempt that runs out of time lets writers go (what it did
//! not drain stays pending) and the switch is tried again after a pause, so that a
//! long transaction or a burst of writes costs writers at most `stall_max` per
//! attempt, never the whole wait.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kirikae_engine::WriterHold;

use crate::context::{Context, HoldLog};
use crate::error::{RestructureError, Result};
use crate::phase2::synchronize;
use crate::report::{HoldEnd, HoldKind};
use crate::rounds::Rounds;
use crate::tracker::Left;
use crate::twin::Twin;
use crate::verify::Verification;

/// Where the successful attempt's stall went.
pub(crate) struct Stall {
    pub total: Duration,
    pub wait: Duration,
    pub drain: Duration,
    pub drained: u64,
}

/// A done switch.
pub(crate) struct Switched {
    pub stall: Stall,
    /// Attempts made, the successful one included.
    pub attempts: u32,
}

/// Switches the name to `twin`'s table, trying up to `switch_tries` times; every
/// hold is noted in `holds`. With `verification`, suspicious records are re-checked
/// under the hold and mismatches repaired.
pub(crate) fn switch(
    ctx: &Context,
    rounds: &mut Rounds,
    twin: &mut Twin,
    mut verification: Option<&mut Verification>,
    holds: &mut HoldLog,
) -> Result<Switched> {
    let mut in_flight = 0;
    for attempt in 1..=ctx.options.switch_tries.max(1) {
        // Whatever piled up since phase 2 converged (verification, a postponed
        // attempt) is synced now, with writers running: the drain under the hold
        // must stay within the allowed stall.
        synchronize(ctx, rounds, twin, holds)?;
        if let Some(v) = verification.as_deref_mut() {
            v.recheck(ctx, twin)?;
        }
        ctx.rest_before_hold()?;
        let held_at = Instant::now();
        let deadline = held_at + ctx.options.stall_max;
        let hold = ctx.db.hold_writers(ctx.table())?;
        let mut left = Left::default();
        let attempted = attempt_under(
            ctx,
            rounds,
            twin,
            verification.as_deref_mut(),
            &hold,
            (held_at, deadline),
            &mut left,
        );
        match attempted {
            Ok(Some(mut stall)) => {
                if let Some(inspect) = &ctx.options.inspect_at_switch {
                    inspect(&ctx.old, &twin.table);
                }
                let switched = hold.switch_to(Arc::clone(&twin.table));
                stall.total = held_at.elapsed();
                let end = if switched.is_ok() {
                    HoldEnd::Switched
                } else {
                    HoldEnd::Failed
                };
                holds.note(HoldKind::Switch, end, held_at);
                switched?;
                return Ok(Switched {
                    stall,
                    attempts: attempt,
                });
            }
            Ok(None) => {
                ctx.shared.switch_retries.store(attempt, Ordering::Relaxed);
                in_flight = hold.in_flight();
                let end = if in_flight > 0 {
                    HoldEnd::WritersInFlight
                } else {
                    HoldEnd::OutOfTime
                };
                hold.release();
                holds.note(HoldKind::Switch, end, held_at);
                // Writers (and a long transaction) go on first; then the new table
                // catches up with what they did.
                ctx.shared.nap(ctx.options.switch_retry_pause)?;
                rounds.put_back(ctx, twin, left);
                rounds.run(ctx, twin)?;
            }
            Err(e) => {
                hold.release();
                holds.note(HoldKind::Switch, HoldEnd::Failed, held_at);
                rounds.put_back(ctx, twin, left);
                return Err(e);
            }
        }
    }
    Err(RestructureError::SwitchPostponed {
        table: ctx.table().to_owned(),
        tries: ctx.options.switch_tries,
        in_flight,
        waited: ctx.options.stall_max,
    })
}

/// One attempt under the hold: `Some` when the new table is exactly plan(old) and the
/// switch may happen, `None` when the deadline came first (what was drained and not
/// applied is in `left`).
fn attempt_under(
    ctx: &Context,
    rounds: &mut Rounds,
    twin: &mut Twin,
    verification: Option<&mut Verification>,
    hold: &WriterHold,
    (held_at, deadline): (Instant, Instant),
    left: &mut Left,
) -> Result<Option<Stall>> {
    if hold
        .wait_idle(deadline.saturating_duration_since(Instant::now()))
        .is_err()
    {
        return Ok(None);
    }
    let idle_at = Instant::now();
    // No writer is in flight and none can start: after this drain the new table is
    // exactly plan(old), unless a record is parked on a true duplicate.
    let mut drained = Vec::new();
    loop {
        let round = rounds.run_within(ctx, twin, Some(deadline), Some(&mut drained))?;
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
        rounds.tracker.pending(),
        0,
        "history not empty with writers held"
    );
    if let Some(duplicate) = twin.duplicate() {
        return Err(duplicate);
    }
    if let Some(v) = verification {
        v.under_hold(ctx, twin, &mut drained)?;
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
