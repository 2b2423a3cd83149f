//! The worker: one restructure from start to switch (or to failure), run on the
//! restructure's background thread. Phases live in `phase1.rs`, `phase2.rs`,
//! `verify.rs` and `switch.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kirikae_engine::{Database, Rid, Table, WriteObserver};

use crate::control::{Phase, RestructureOptions, Shared, Strategy};
use crate::error::Result;
use crate::journal::Journal;
use crate::lock_history::LockHistory;
use crate::plan::CompiledTransform;
use crate::report::RestructureReport;
use crate::twin::Twin;

/// A round checks for abort and pause this often (records), so that a long round
/// stays controllable.
const CHECKPOINT_EVERY: usize = 4096;

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
        }
    }

    pub fn run(mut self) -> Result<RestructureReport> {
        let outcome = self.run_phases();
        if outcome.is_err() {
            self.shared.set_phase(Phase::Failed);
        }
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
            copy_rows_per_s: copied as f64 / phase1.as_secs_f64().max(1e-9),
            history_peak_bytes,
            journal_peak_bytes,
            map_bytes: self.twin.map_bytes(),
            mismatches: self.mismatches,
            verified: self.options.verify,
        })
    }

    /// One phase-2 round: take what changed and apply it to the new table. Returns how
    /// many RIDs (or journal entries) it applied.
    pub fn round(&mut self) -> Result<usize> {
        self.round_noting(None)
    }

    /// A round that also notes the RIDs it applied.
    pub fn round_noting(&mut self, mut applied_rids: Option<&mut Vec<Rid>>) -> Result<usize> {
        let started = Instant::now();
        let applied = match &self.tracker {
            Tracker::History(h) => {
                let rids = h.drain();
                for (i, &rid) in rids.iter().enumerate() {
                    if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1 {
                        self.shared.checkpoint()?;
                    }
                    self.twin.sync(&self.old, rid)?;
                }
                if let Some(out) = applied_rids.as_mut() {
                    out.extend_from_slice(&rids);
                }
                rids.len()
            }
            Tracker::Journal(j) => {
                let entries = j.drain();
                for (i, e) in entries.iter().enumerate() {
                    if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1 {
                        self.shared.checkpoint()?;
                    }
                    let row = e.row();
                    self.twin.apply(&self.old, e.rid, row.as_deref())?;
                }
                if let Some(out) = applied_rids.as_mut() {
                    out.extend(entries.iter().map(|e| e.rid));
                }
                entries.len()
            }
        };
        self.rounds += 1;
        self.synced += applied as u64;
        if applied > 0 {
            let ns = started.elapsed().as_nanos() as u64 / applied as u64;
            self.shared
                .sync_ns_per_rid
                .store(ns.max(1), Ordering::Relaxed);
        }
        self.shared.round.store(self.rounds, Ordering::Relaxed);
        self.shared
            .history
            .store(self.tracker.pending(), Ordering::Relaxed);
        Ok(applied)
    }

    /// Estimated duration of the next round.
    pub fn next_round_estimate(&self) -> Duration {
        let per = self.shared.sync_ns_per_rid.load(Ordering::Relaxed).max(1);
        Duration::from_nanos(self.tracker.pending().saturating_mul(per))
    }
}
