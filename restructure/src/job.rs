//! The worker: one restructure from start to switch (or to failure), run on the
//! restructure's background thread. It owns the state and hands each phase
//! (`phase1`, `phase2`, `verify`, `switch`) exactly what that phase reads and changes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kirikae_engine::{Database, ForReplica, Table};

use crate::announcement::Announcement;
use crate::context::{Context, HoldLog};
use crate::error::Result;
use crate::options::RestructureOptions;
use crate::pace::Pacer;
use crate::phase::Phase;
use crate::phase1;
use crate::phase2::synchronize;
use crate::plan::{CompiledTransform, Plan};
use crate::progress::Shared;
use crate::report::RestructureReport;
use crate::rounds::Rounds;
use crate::switch::switch;
use crate::tracker::Tracker;
use crate::twin::Twin;
use crate::verify::Verification;

/// Uninstalls the observer from the old table however the job ends (panics included),
/// so that a failed restructure leaves the old table exactly as it was.
struct ObserverGuard(Arc<Table>);

impl Drop for ObserverGuard {
    fn drop(&mut self) {
        self.0.set_write_observer(None);
    }
}

/// How often a converged restructure looks for the switch command; between looks
/// it syncs what writers did, so that the switch's drain stays small.
const AWAIT_SWITCH_NAP: Duration = Duration::from_micros(500);

/// Keeps the new table in step until [`Shared::switch_commanded`] (or an abort).
fn await_switch_command(
    ctx: &Context,
    rounds: &mut Rounds,
    twin: &mut Twin,
    holds: &mut HoldLog,
) -> Result<()> {
    while !ctx.shared.switch_commanded() {
        synchronize(ctx, rounds, twin, holds)?;
        // Converged: the rounds that keep it so until the command comes (the
        // primary's own switch may take seconds under load) do not use up the
        // budget of a convergence; each new one has its own.
        rounds.budget_from = rounds.count;
        ctx.shared.nap(AWAIT_SWITCH_NAP)?;
    }
    Ok(())
}

pub(crate) struct Job {
    ctx: Context,
    twin: Twin,
    rounds: Rounds,
    /// The plan, for the `Switching` announcement (`None`: a row function).
    plan: Option<Plan>,
}

impl Job {
    pub fn new(
        db: Database,
        old: Arc<Table>,
        transform: CompiledTransform,
        plan: Option<Plan>,
        options: RestructureOptions,
        shared: Arc<Shared>,
    ) -> Job {
        let twin = Twin::new(old.name(), transform, old.len(), old.rid_bound());
        let tracker = Tracker::new(options.strategy, old.rid_bound());
        let ctx = Context {
            db,
            old,
            options,
            shared,
        };
        let rounds = Rounds::new(tracker, &ctx);
        Job {
            ctx,
            twin,
            rounds,
            plan,
        }
    }

    pub fn run(mut self) -> Result<RestructureReport> {
        let outcome = self.run_phases();
        let db = &self.ctx.db;
        if outcome.is_err() {
            self.ctx.shared.set_phase(Phase::Failed);
            // A replica running the same plan stops too: a withdrawal, queued for
            // a replica that cannot hear it now (else its copy would wait for a
            // switch that never comes).
            let abandoned = Announcement::Abandoned.encode();
            if let Err(e) = db.announce(self.ctx.table(), &abandoned, ForReplica::MustHear) {
                tracing::warn!("abandoned restructure of {}: {e}", self.ctx.table());
            }
            // The new table is not needed any more; freeing it is not the caller's work.
            db.free_later(Arc::clone(&self.twin.table) as _);
        }
        // A writer's observer call may still hold the tracker (a journal can be large).
        db.free_later(self.rounds.tracker.shared());
        // Freeing the maps (16 bytes per record) here would keep this thread on a
        // core writers may be waiting for.
        db.free_later(self.twin.take_maps());
        outcome
    }

    fn run_phases(&mut self) -> Result<RestructureReport> {
        let Job {
            ctx,
            twin,
            rounds,
            plan,
        } = self;
        ctx.old.set_write_observer(Some(rounds.tracker.observer()));
        let _guard = ObserverGuard(Arc::clone(&ctx.old));
        // The passes beside writers rest between slices; see `pace.rs`.
        let mut pacer = Pacer::new(ctx.options.duty_cycle, ctx.options.work_slice);
        let mut holds = HoldLog::default();

        ctx.shared.set_phase(Phase::Copying);
        let started = Instant::now();
        let copied = phase1::copy(ctx, twin, &rounds.tracker, &mut pacer)?;
        let phase1 = started.elapsed();

        ctx.shared.set_phase(Phase::Syncing);
        let started = Instant::now();
        synchronize(ctx, rounds, twin, &mut holds)?;
        let mut verification = ctx.options.verify.then(Verification::default);
        if let Some(v) = verification.as_mut() {
            ctx.shared.set_phase(Phase::Verifying);
            v.pass(ctx, rounds, twin, &mut pacer)?;
        }
        let phase2 = started.elapsed();

        let started = Instant::now();
        if ctx.options.switch_on_command {
            ctx.shared.set_phase(Phase::AwaitingSwitch);
            await_switch_command(ctx, rounds, twin, &mut holds)?;
        }
        let switch_awaited = started.elapsed();

        // Before the hold: a replica lets its own copy converge now (starting it
        // if it restarted since `Begun`), not while this node's writers are held.
        let switching = Announcement::Switching { plan: plan.clone() };
        ctx.db
            .announce(ctx.table(), &switching.encode(), ForReplica::Follow)?;
        ctx.shared.set_phase(Phase::Switching);
        let started = Instant::now();
        let switched = switch(ctx, rounds, twin, verification.as_mut(), &mut holds)?;
        let switch = started.elapsed();
        ctx.shared.set_phase(Phase::Done);

        let (history_peak_bytes, journal_peak_bytes) = rounds.tracker.peak_bytes();
        let stall = switched.stall;
        Ok(RestructureReport {
            table: ctx.table().to_owned(),
            strategy: ctx.options.strategy,
            rows_copied: copied,
            rows_final: twin.table.len(),
            phase1,
            phase2,
            switch,
            switch_awaited,
            rounds: rounds.count,
            synced: rounds.synced,
            stall: stall.total,
            stall_wait: stall.wait,
            stall_drain: stall.drain,
            stall_drained: stall.drained,
            switch_attempts: switched.attempts,
            holds_total: holds.total(),
            hold_max: holds.max(),
            holds: holds.into_vec(),
            stall_max: ctx.options.stall_max,
            key_evictions: twin.evictions(),
            copy_rows_per_s: copied as f64 / phase1.as_secs_f64().max(1e-9),
            history_peak_bytes,
            journal_peak_bytes,
            map_bytes: twin.map_bytes(),
            mismatches: verification.map(|v| v.mismatches),
        })
    }
}
