//! Phase-2 rounds: take what the tracker recorded and bring each record's current
//! state into the new table. Phase 2, verification and the switch all run rounds;
//! this module keeps their count and the measured cost per RID.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kirikae_engine::Rid;

use crate::context::Context;
use crate::error::Result;
use crate::pace::Pacer;
use crate::progress::Shared;
use crate::tracker::{Left, Tracker};
use crate::twin::Twin;

/// How a round ended.
pub(crate) struct Round {
    /// RIDs (or journal entries) applied.
    pub applied: usize,
    /// `false`: the deadline came first; see `left`.
    pub complete: bool,
    /// What the deadline left unapplied: the caller hands it back
    /// ([`Rounds::put_back`]) once writers are let go, so that a hold never pays for
    /// it.
    pub left: Left,
}

/// The tracker and the rounds run so far.
pub(crate) struct Rounds {
    pub tracker: Tracker,
    /// Rounds beside writers: slices for pause and abort, but no rests, so that the
    /// history converges (a slower round lets writers add more to it, and then
    /// writers are held to throttle them).
    pacer: Pacer,
    /// Rounds run.
    pub count: u32,
    /// The round count `rounds_max` counts from: renewed each time a replica's
    /// copy, converged, keeps itself in step while it awaits the primary's switch
    /// (those rounds are not a failure to converge).
    pub budget_from: u32,
    /// RIDs (or journal entries) applied, all rounds together.
    pub synced: u64,
}

impl Rounds {
    pub fn new(tracker: Tracker, ctx: &Context) -> Rounds {
        Rounds {
            tracker,
            pacer: Pacer::new(1.0, ctx.options.work_slice),
            count: 0,
            budget_from: 0,
            synced: 0,
        }
    }

    /// One round, writers running. Returns how many RIDs (or journal entries) it
    /// applied.
    pub fn run(&mut self, ctx: &Context, twin: &mut Twin) -> Result<usize> {
        Ok(self.run_within(ctx, twin, None, None)?.applied)
    }

    /// A round that stops at `deadline` (writers held: no pause, no abort check),
    /// leaving what it did not apply in [`Round::left`], and notes the RIDs it applied
    /// in `applied_rids`. Parked records are placed again when it completes.
    pub fn run_within(
        &mut self,
        ctx: &Context,
        twin: &mut Twin,
        deadline: Option<Instant>,
        mut applied_rids: Option<&mut Vec<Rid>>,
    ) -> Result<Round> {
        let started = Instant::now();
        let mut round = Round {
            applied: 0,
            complete: true,
            left: Left::default(),
        };
        if deadline.is_none() {
            self.pacer.restart();
        }
        match &self.tracker {
            Tracker::History(h) => {
                let rids = h.drain();
                for (i, &rid) in rids.iter().enumerate() {
                    if past(&mut self.pacer, &ctx.shared, deadline)? {
                        round.left.rids = rids[i..].to_vec();
                        round.complete = false;
                        break;
                    }
                    twin.sync(&ctx.old, rid)?;
                    round.applied += 1;
                }
                if let Some(out) = applied_rids.as_mut() {
                    out.extend_from_slice(&rids[..round.applied]);
                }
            }
            Tracker::Journal(j) => {
                let mut entries = j.drain();
                for i in 0..entries.len() {
                    if past(&mut self.pacer, &ctx.shared, deadline)? {
                        round.left.entries = entries.split_off(i);
                        round.complete = false;
                        break;
                    }
                    let e = &entries[i];
                    let row = e.row();
                    twin.apply(&ctx.old, e.rid, row.as_deref())?;
                    round.applied += 1;
                }
                if let Some(out) = applied_rids.as_mut() {
                    out.extend(entries.iter().take(round.applied).map(|e| e.rid));
                }
            }
        }
        if round.complete {
            twin.retry_parked(&ctx.old)?;
        }
        self.count += 1;
        self.synced += round.applied as u64;
        if round.applied > 0 {
            let ns = started.elapsed().as_nanos() as u64 / round.applied as u64;
            ctx.shared
                .sync_ns_per_rid
                .store(ns.max(1), Ordering::Relaxed);
        }
        ctx.shared.round.store(self.count, Ordering::Relaxed);
        ctx.shared
            .history
            .store(self.pending(twin), Ordering::Relaxed);
        Ok(round)
    }

    /// Hands what a round left unapplied back to the tracker.
    pub fn put_back(&self, ctx: &Context, twin: &Twin, left: Left) {
        self.tracker.put_back(left);
        ctx.shared
            .history
            .store(self.pending(twin), Ordering::Relaxed);
    }

    /// RIDs (or entries) waiting for phase 2, parked records included.
    pub fn pending(&self, twin: &Twin) -> u64 {
        self.tracker.pending() + twin.parked()
    }

    /// Estimated duration of the next round, from the measured cost per RID.
    pub fn next_estimate(&self, ctx: &Context, twin: &Twin) -> Duration {
        let per = ctx.shared.sync_ns_per_rid.load(Ordering::Relaxed).max(1);
        Duration::from_nanos(self.pending(twin).saturating_mul(per))
    }
}

/// Whether the round should stop before its next record: past the deadline of a held
/// round, or (writers running) never, after pacing (which honours pause and abort).
fn past(pacer: &mut Pacer, shared: &Shared, deadline: Option<Instant>) -> Result<bool> {
    match deadline {
        // Before every record: a slow row function must not stretch a hold.
        Some(d) => Ok(Instant::now() >= d),
        None => {
            pacer.step(shared)?;
            Ok(false)
        }
    }
}
