//! What a finished restructure reports.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::options::Strategy;

/// Why writers were held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum HoldKind {
    /// A phase-2 round run with new writers held, because they outpaced the sync
    /// ([`NonConvergence::ThrottleWriters`](crate::NonConvergence::ThrottleWriters)).
    ThrottledRound,
    /// A switch attempt.
    Switch,
}

/// How a hold of writers ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum HoldEnd {
    /// The name switched to the new table.
    Switched,
    /// A held round applied everything pending.
    RoundDone,
    /// `stall_max` came first; writers were let go and what was left stays pending.
    OutOfTime,
    /// Writers in flight did not finish within `stall_max`; the switch is retried.
    WritersInFlight,
    /// The restructure failed during the hold (e.g. a true duplicate key).
    Failed,
}

/// One hold of the table's writers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Hold {
    /// Why writers were held.
    pub kind: HoldKind,
    /// How the hold ended.
    pub end: HoldEnd,
    /// From holding new writers to letting them go (switched or released).
    pub duration: Duration,
}

/// Measurements of a switched restructure.
#[derive(Clone, Debug, Serialize)]
pub struct RestructureReport {
    /// The table restructured.
    pub table: String,
    /// Lock history or journal.
    pub strategy: Strategy,
    /// Records copied in phase 1.
    pub rows_copied: u64,
    /// Records in the new table at the switch.
    pub rows_final: u64,
    /// Phase 1 (copy) duration.
    pub phase1: Duration,
    /// Phase 2 (update synchronization) duration, verification included.
    pub phase2: Duration,
    /// From the first switch attempt to the switch.
    pub switch: Duration,
    /// Converged and kept in step, waiting for the switch command
    /// ([`RestructureOptions::switch_on_command`](crate::RestructureOptions::switch_on_command));
    /// zero without it.
    pub switch_awaited: Duration,
    /// Phase-2 rounds (held rounds and the final drain included).
    pub rounds: u32,
    /// RIDs (or journal entries) applied in phase 2.
    pub synced: u64,
    /// How long new writers were held at the successful switch (the restructure's
    /// own timer; what a writer's call took is measured by the caller).
    pub stall: Duration,
    /// Of the stall: waiting for in-flight writers to finish.
    pub stall_wait: Duration,
    /// Of the stall: the final drain (RIDs applied with writers held).
    pub stall_drain: Duration,
    /// RIDs (or entries) applied in the final drain.
    pub stall_drained: u64,
    /// Switch attempts (more than one when in-flight writers or a burst postponed it).
    pub switch_attempts: u32,
    /// Every hold of writers, in order: held rounds and switch attempts.
    pub holds: Vec<Hold>,
    /// Sum of all holds.
    pub holds_total: Duration,
    /// Longest hold.
    pub hold_max: Duration,
    /// The bound every hold observed (`RestructureOptions::stall_max`).
    pub stall_max: Duration,
    /// Records taken out of the new table because their key went to another record
    /// (key swaps and rotations), and placed again from their current image.
    pub key_evictions: u64,
    /// Phase-1 copy rate.
    pub copy_rows_per_s: f64,
    /// Most memory the lock history held (0 for the journal strategy).
    pub history_peak_bytes: u64,
    /// Most memory the journal held (0 for the lock-history strategy).
    pub journal_peak_bytes: u64,
    /// Memory of the old→new RID maps.
    pub map_bytes: u64,
    /// Records that verification found wrong at the switch (re-synced; 0 unless a
    /// bug); `None` when verification did not run.
    pub mismatches: Option<u64>,
}

impl fmt::Display for RestructureReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |d: Duration| d.as_micros();
        writeln!(
            f,
            "restructure of `{}` ({:?}): {} rows copied in {:.2} s ({:.0} rows/s), {} at the switch",
            self.table,
            self.strategy,
            self.rows_copied,
            self.phase1.as_secs_f64(),
            self.copy_rows_per_s,
            self.rows_final
        )?;
        writeln!(
            f,
            "  phase 2: {:.2} s, {} rounds, {} applied, {} key evictions",
            self.phase2.as_secs_f64(),
            self.rounds,
            self.synced,
            self.key_evictions
        )?;
        writeln!(
            f,
            "  switch: held {} µs (waiting {} µs, draining {} RIDs in {} µs), attempt {}",
            us(self.stall),
            us(self.stall_wait),
            self.stall_drained,
            us(self.stall_drain),
            self.switch_attempts
        )?;
        writeln!(
            f,
            "  writer holds: {}, total {} µs, longest {} µs (bound {} µs)",
            self.holds.len(),
            us(self.holds_total),
            us(self.hold_max),
            us(self.stall_max)
        )?;
        let verification = match self.mismatches {
            Some(n) => format!("{n} mismatches"),
            None => "not run".to_owned(),
        };
        write!(
            f,
            "  lock history {} KiB, journal {} KiB, RID maps {} KiB; verification: {verification}",
            self.history_peak_bytes / 1024,
            self.journal_peak_bytes / 1024,
            self.map_bytes / 1024
        )
    }
}
