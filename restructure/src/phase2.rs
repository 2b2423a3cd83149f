//! Phase 2: update synchronization. Rounds take what changed in the old table and
//! apply its current state to the new one, until the next round would fit in the
//! allowed stall.

use std::time::Instant;

use crate::context::{Context, HoldLog};
use crate::error::{RestructureError, Result};
use crate::options::NonConvergence;
use crate::report::{HoldEnd, HoldKind};
use crate::rounds::Rounds;
use crate::twin::Twin;

/// The least time writers get after a throttled round, as a share of the hold.
const MIN_WRITERS_SHARE: f64 = 1.0 / 16.0;

/// Runs rounds until the next one is estimated to fit in a quarter of the allowed
/// stall. Writers that outpace the rounds are throttled or the restructure fails,
/// as [`NonConvergence`] says; throttled rounds are noted in `holds`.
pub(crate) fn synchronize(
    ctx: &Context,
    rounds: &mut Rounds,
    twin: &mut Twin,
    holds: &mut HoldLog,
) -> Result<()> {
    let mut best = u64::MAX;
    let mut stuck = 0u32;
    loop {
        ctx.shared.checkpoint()?;
        rounds.run(ctx, twin)?;
        // The final drain must fit in the stall budget together with waiting for
        // in-flight writers and the switch itself: aim for a quarter of it.
        if converged(ctx, rounds, twin) {
            return Ok(());
        }
        let pending = rounds.pending(twin);
        if pending < best {
            best = pending;
            stuck = 0;
        } else {
            stuck += 1;
        }
        let out_of_rounds = out_of_rounds(ctx, rounds);
        if stuck >= ctx.options.stall_rounds || out_of_rounds {
            match ctx.options.on_non_convergence {
                NonConvergence::KeepGoing if !out_of_rounds => {}
                // Writers outpace the sync.
                NonConvergence::ThrottleWriters if !out_of_rounds => {
                    return throttle_writers(ctx, rounds, twin, holds)
                }
                _ => return Err(not_converging(ctx, rounds, twin)),
            }
        }
    }
}

fn converged(ctx: &Context, rounds: &Rounds, twin: &Twin) -> bool {
    rounds.next_estimate(ctx, twin) <= ctx.options.stall_max / 4
}

/// Held rounds only (an unheld round lets writers add as much as it applies), each
/// within `stall_max`, until the history fits the stall budget. Writers run after
/// each for a share of the hold: all of it at first, halved whenever a held round
/// leaves more pending than it found (writers still outpace it, e.g. on a busy
/// machine), down to [`MIN_WRITERS_SHARE`], so that throttling converges.
fn throttle_writers(
    ctx: &Context,
    rounds: &mut Rounds,
    twin: &mut Twin,
    holds: &mut HoldLog,
) -> Result<()> {
    let mut writers_share = 1.0f64;
    loop {
        ctx.shared.checkpoint()?;
        if out_of_rounds(ctx, rounds) {
            return Err(not_converging(ctx, rounds, twin));
        }
        let before = rounds.pending(twin);
        // A held round that drained everything leaves only what in-flight writers
        // added: the switch can drain that.
        if throttled_round(ctx, rounds, twin, holds, writers_share)? || converged(ctx, rounds, twin)
        {
            return Ok(());
        }
        if rounds.pending(twin) >= before {
            writers_share = (writers_share / 2.0).max(MIN_WRITERS_SHARE);
        }
    }
}

/// Past `rounds_max`, or (journal baseline) past `journal_bytes_max`.
fn out_of_rounds(ctx: &Context, rounds: &Rounds) -> bool {
    rounds.count - rounds.budget_from >= ctx.options.rounds_max
        || rounds.tracker.journal_bytes() > ctx.options.journal_bytes_max
}

fn not_converging(ctx: &Context, rounds: &Rounds, twin: &Twin) -> RestructureError {
    RestructureError::NotConverging {
        table: ctx.table().to_owned(),
        rounds: rounds.count,
        history: rounds.pending(twin),
    }
}

/// A round during which new writers wait, so that they cannot add to the history
/// while it is applied; in-flight writers keep going. It stops at `stall_max` (what
/// is left stays pending), and writers then run for `writers_share` of the hold
/// before anything holds them again. Returns whether it drained everything.
fn throttled_round(
    ctx: &Context,
    rounds: &mut Rounds,
    twin: &mut Twin,
    holds: &mut HoldLog,
    writers_share: f64,
) -> Result<bool> {
    ctx.rest_before_hold()?;
    let held_at = Instant::now();
    let hold = ctx.db.hold_writers(ctx.table())?;
    let round = rounds.run_within(ctx, twin, Some(held_at + ctx.options.stall_max), None);
    hold.release();
    let end = match &round {
        Ok(r) if r.complete => HoldEnd::RoundDone,
        Ok(_) => HoldEnd::OutOfTime,
        Err(_) => HoldEnd::Failed,
    };
    holds.note(HoldKind::ThrottledRound, end, held_at);
    let round = round?;
    // The rest comes first: writers go before anything else runs here.
    ctx.shared.nap(held_at.elapsed().mul_f64(writers_share))?;
    let complete = round.complete;
    rounds.put_back(ctx, twin, round.left);
    Ok(complete)
}
