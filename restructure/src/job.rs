//! The worker: one restructure from start to switch (or to failure), run on the
//! restructure's background thread. Phases live in `phase1.rs`, `phase2.rs`,
//! `verify.rs` and `switch.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kirikae_engine::{Database, Rid, Table, WriteObserver};

use crate::error::Result;
use crate::journal::Journal;
use crate::lock_history::LockHistory;
use crate::options::{RestructureOptions, Strategy};
use crate::pace::Pacer;
use crate::phase::Phase;
use crate::plan::CompiledTransform;
use crate::progress::Shared;
use crate::report::{Hold, HoldEnd, HoldKind, RestructureReport};
use crate::twin::Twin;

/// See [`Job::rest_before_hold`]: long enough for a preempted write (microseconds)
/// to finish, short enough not to let the history grow.
const REST_BEFORE_HOLD: Duration = Duration::from_micros(100);

/// What phase 2 drains.
pub(crate) enum Tracker {
    History(Arc<LockHistory>),
    Journal(Arc<Journal>),
}

impl Tracker {
    fn new(strategy: Strategy, rid_bound: u64) -> Tracker {
        match strategy {
            Strategy::LockHistory => {
                Tracker::History(Arc::new(LockHistory::for_rid_bound(rid_bound)))
            }
            Strategy::Journal => Tracker::Journal(Arc::new(Journal::new())),
        }
    }

    fn observer(&self) -> Arc<dyn WriteObserver> {
        match self {
            Tracker::History(h) => Arc::clone(h) as Arc<dyn WriteObserver>,
            Tracker::Journal(j) => Arc::clone(j) as Arc<dyn WriteObserver>,
        }
    }

    fn shared(&self) -> Arc<dyn std::any::Any + Send + Sync> {
        match self {
            Tracker::History(h) => Arc::clone(h) as _,
            Tracker::Journal(j) => Arc::clone(j) as _,
        }
    }

    pub fn pending(&self) -> u64 {
        match self {
            Tracker::History(h) => h.len(),
            Tracker::Journal(j) => j.len(),
        }
    }
}

/// Uninstalls the observer from the old table however the job ends (panics included),
/// so that a failed restructure leaves the old table exactly as it was.
struct ObserverGuard(Arc<Table>);

impl Drop for ObserverGuard {
    fn drop(&mut self) {
        self.0.set_write_observer(None);
    }
}

/// How a round ended.
pub(crate) struct Round {
    /// RIDs (or journal entries) applied.
    pub applied: usize,
    /// `false`: the deadline came first; see `left`.
    pub complete: bool,
    /// What the deadline left unapplied: the caller hands it back to the tracker
    /// ([`Job::put_back`]) once writers are let go, so that a hold never pays for it.
    pub left: Left,
}

/// Drained but not applied.
#[derive(Default)]
pub(crate) struct Left {
    rids: Vec<Rid>,
    entries: Vec<crate::journal::JournalEntry>,
}

pub(crate) struct Job {
    pub db: Database,
    pub old: Arc<Table>,
    pub twin: Twin,
    pub tracker: Tracker,
    pub options: RestructureOptions,
    pub shared: Arc<Shared>,
    /// Phase-2 rounds and RIDs applied.
    pub rounds: u32,
    pub synced: u64,
    /// Records that differed during the verification pass, re-checked under the hold.
    pub suspicious: Vec<kirikae_engine::Rid>,
    pub mismatches: u64,
    /// Every time writers were held, in order.
    pub holds: Vec<Hold>,
    /// Slices and rests of the passes that run beside writers.
    pub pacer: Pacer,
    /// Phase-2 rounds beside writers: slices for pause and abort, but no rests, so
    /// that the history converges (a slower round lets writers add more to it, and
    /// then writers are held to throttle them).
    pub round_pacer: Pacer,
}

impl Job {
    pub fn new(
        db: Database,
        old: Arc<Table>,
        transform: CompiledTransform,
        options: RestructureOptions,
        shared: Arc<Shared>,
    ) -> Job {
        Job {
            pacer: Pacer::new(options.duty_cycle, options.work_slice),
            round_pacer: Pacer::new(1.0, options.work_slice),
            twin: Twin::new(old.name(), transform, old.len(), old.rid_bound()),
            tracker: Tracker::new(options.strategy, old.rid_bound()),
            db,
            old,
            options,
            shared,
            rounds: 0,
            synced: 0,
            suspicious: Vec::new(),
            mismatches: 0,
            holds: Vec::new(),
        }
    }

    pub fn run(mut self) -> Result<RestructureReport> {
        let outcome = self.run_phases();
        if outcome.is_err() {
            self.shared.set_phase(Phase::Failed);
            // The new table is not needed any more; freeing it is not the caller's work.
            self.db.free_later(Arc::clone(&self.twin.table) as _);
        }
        // A writer's observer call may still hold the tracker (a journal can be large).
        self.db.free_later(self.tracker.shared());
        // Freeing the maps (16 bytes per record) here would keep this thread on a
        // core writers may be waiting for.
        self.db.free_later(self.twin.take_maps());
        outcome
    }

    fn run_phases(&mut self) -> Result<RestructureReport> {
        self.old.set_write_observer(Some(self.tracker.observer()));
        let _guard = ObserverGuard(Arc::clone(&self.old));

        self.shared.set_phase(Phase::Copying);
        let started = Instant::now();
        let copied = self.copy()?;
        let phase1 = started.elapsed();

        self.shared.set_phase(Phase::Syncing);
        let started = Instant::now();
        self.synchronize()?;
        if self.options.verify {
            self.shared.set_phase(Phase::Verifying);
            self.verify_pass()?;
        }
        let phase2 = started.elapsed();

        self.shared.set_phase(Phase::Switching);
        let started = Instant::now();
        let (stall, switch_attempts) = self.switch()?;
        let switch = started.elapsed();
        self.shared.set_phase(Phase::Done);

        let (history_peak_bytes, journal_peak_bytes) = match &self.tracker {
            Tracker::History(h) => (h.bytes(), 0),
            Tracker::Journal(j) => (0, j.peak_bytes()),
        };
        let holds_total = self.holds.iter().map(|h| h.duration).sum();
        let hold_max = self
            .holds
            .iter()
            .map(|h| h.duration)
            .max()
            .unwrap_or_default();
        Ok(RestructureReport {
            table: self.shared.table.clone(),
            strategy: self.options.strategy,
            rows_copied: copied,
            rows_final: self.twin.table.len(),
            phase1,
            phase2,
            switch,
            rounds: self.rounds,
            synced: self.synced,
            stall: stall.total,
            stall_wait: stall.wait,
            stall_drain: stall.drain,
            stall_drained: stall.drained,
            switch_attempts,
            holds: std::mem::take(&mut self.holds),
            holds_total,
            hold_max,
            stall_max: self.options.stall_max,
            key_evictions: self.twin.evictions(),
            copy_rows_per_s: copied as f64 / phase1.as_secs_f64().max(1e-9),
            history_peak_bytes,
            journal_peak_bytes,
            map_bytes: self.twin.map_bytes(),
            mismatches: self.options.verify.then_some(self.mismatches),
        })
    }

    /// Rests briefly right before a hold of writers. While this thread runs, a writer
    /// that shares its core waits, at whatever point of its write it was; resting
    /// first lets such a writer finish, so that it waits for the hold, not for the
    /// work before it. Short, because writers add to the history meanwhile.
    pub fn rest_before_hold(&self) -> Result<()> {
        self.shared.nap(REST_BEFORE_HOLD)
    }

    /// Notes a hold of writers that began at `held_at` and has just ended.
    pub fn note_hold(&mut self, kind: HoldKind, end: HoldEnd, held_at: Instant) {
        self.holds.push(Hold {
            kind,
            end,
            duration: held_at.elapsed(),
        });
    }

    /// One phase-2 round, writers running: take what changed and apply it to the new
    /// table, then place parked records again. Returns how many RIDs (or journal
    /// entries) it applied.
    pub fn round(&mut self) -> Result<usize> {
        Ok(self.round_within(None, None)?.applied)
    }

    /// A round that stops at `deadline` (writers held: no pause, no abort check),
    /// putting back what it did not apply, and notes the RIDs it applied.
    pub fn round_within(
        &mut self,
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
            self.round_pacer.restart();
        }
        match &self.tracker {
            Tracker::History(h) => {
                let rids = h.drain();
                for (i, &rid) in rids.iter().enumerate() {
                    if Self::past(&mut self.round_pacer, &self.shared, deadline)? {
                        round.left.rids = rids[i..].to_vec();
                        round.complete = false;
                        break;
                    }
                    self.twin.sync(&self.old, rid)?;
                    round.applied += 1;
                }
                if let Some(out) = applied_rids.as_mut() {
                    out.extend_from_slice(&rids[..round.applied]);
                }
            }
            Tracker::Journal(j) => {
                let mut entries = j.drain();
                for i in 0..entries.len() {
                    if Self::past(&mut self.round_pacer, &self.shared, deadline)? {
                        round.left.entries = entries.split_off(i);
                        round.complete = false;
                        break;
                    }
                    let e = &entries[i];
                    let row = e.row();
                    self.twin.apply(&self.old, e.rid, row.as_deref())?;
                    round.applied += 1;
                }
                if let Some(out) = applied_rids.as_mut() {
                    out.extend(entries.iter().take(round.applied).map(|e| e.rid));
                }
            }
        }
        if round.complete {
            self.twin.retry_parked(&self.old)?;
        }
        self.rounds += 1;
        self.synced += round.applied as u64;
        if round.applied > 0 {
            let ns = started.elapsed().as_nanos() as u64 / round.applied as u64;
            self.shared
                .sync_ns_per_rid
                .store(ns.max(1), Ordering::Relaxed);
        }
        self.shared.round.store(self.rounds, Ordering::Relaxed);
        self.shared.history.store(self.pending(), Ordering::Relaxed);
        Ok(round)
    }

    /// Hands what a round left unapplied back to the tracker: RIDs are recorded
    /// again, journal entries go back ahead of newer ones.
    pub fn put_back(&self, left: Left) {
        match &self.tracker {
            Tracker::History(h) => left.rids.into_iter().for_each(|rid| h.record(rid)),
            Tracker::Journal(j) => j.put_back(left.entries),
        }
        self.shared.history.store(self.pending(), Ordering::Relaxed);
    }

    /// Whether the round should stop before its next record: past the deadline of a
    /// held round, or (writers running) never, after pacing (which honours pause and
    /// abort).
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

    /// RIDs (or entries) waiting for phase 2, parked records included.
    pub fn pending(&self) -> u64 {
        self.tracker.pending() + self.twin.parked()
    }

    /// Estimated duration of the next round.
    pub fn next_round_estimate(&self) -> Duration {
        let per = self.shared.sync_ns_per_rid.load(Ordering::Relaxed).max(1);
        Duration::from_nanos(self.pending().saturating_mul(per))
    }
}
