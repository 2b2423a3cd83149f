//! How a restructure runs: strategy, pacing, bounds on holding writers, what to do
//! when phase 2 does not converge.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kirikae_engine::Table;
use serde::Serialize;

/// How phase 2 learns what changed during phase 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Strategy {
    /// RIDs locked for update (seed 001): memory ∝ records touched; phase 2 reads the
    /// latest image once per RID.
    LockHistory,
    /// After-images of every write (the baseline): memory ∝ writes × row size; phase 2
    /// replays them all.
    Journal,
}

/// What phase 2 does when the history stops shrinking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonConvergence {
    /// Keep running rounds (up to `rounds_max`).
    KeepGoing,
    /// From then on, every round runs with new writers held (each bounded by
    /// `stall_max`), each followed by writers running for as long as the hold, or
    /// for half as long again whenever a held round did not shrink the history (down
    /// to 1/16 of it), until the history fits the stall budget or `rounds_max` is
    /// reached. Writers are never held longer than `stall_max` at a time.
    ThrottleWriters,
    /// Give up with [`RestructureError::NotConverging`](crate::RestructureError::NotConverging).
    Abort,
}

/// Called under the switch hold with the old and new tables, after the final drain:
/// a test can compare plan(old) with new at the switch instant.
pub type SwitchInspector = Arc<dyn Fn(&Table, &Table) + Send + Sync>;

/// Knobs of a restructure. `Default` suits a live telecom table.
#[derive(Clone)]
pub struct RestructureOptions {
    /// Lock history (default) or the journal baseline.
    pub strategy: Strategy,
    /// Records copied per chunk in phase 1.
    pub chunk_rows: usize,
    /// Phase-1 copy rate limit (rows/s); `None` copies as fast as it can.
    pub rate_limit_rows_per_s: Option<u64>,
    /// Share of wall time the copy and verification passes may work (0 < d ≤ 1): after
    /// each slice of work they rest `(1 - d) / d` times as long as the slice took, leaving the
    /// CPU to the foreground. The default, 0.5, favours live traffic (on a 2-core
    /// machine with two busy workers it keeps about 80% of their throughput); 1.0
    /// copies at full speed.
    pub duty_cycle: f64,
    /// Those passes work in slices this long and rest after each (see `duty_cycle`):
    /// a writer that shares a core with the restructure waits about this long at
    /// most. Shorter slices mean more context switches, longer ones longer waits.
    pub work_slice: Duration,
    /// The bound on every hold of writers (like Db2 REORG's MAXRO): a switch attempt
    /// or a held round that reaches it lets writers go and is retried. Phase 2 loops
    /// until the final drain is estimated to take a quarter of it.
    pub stall_max: Duration,
    /// Rounds without the history shrinking before it counts as not converging.
    pub stall_rounds: u32,
    /// What to do then.
    pub on_non_convergence: NonConvergence,
    /// Hard bound on phase-2 rounds.
    pub rounds_max: u32,
    /// Pause between two switch attempts, writers running: while a long transaction
    /// postpones the switch, writers are held at most `stall_max` per this long.
    pub switch_retry_pause: Duration,
    /// Switch attempts before giving up with [`RestructureError::SwitchPostponed`](crate::RestructureError::SwitchPostponed).
    pub switch_tries: u32,
    /// The journal baseline fails with [`RestructureError::NotConverging`](crate::RestructureError::NotConverging) once its
    /// pending images hold more than this (writers outpacing its replay would
    /// otherwise grow it without bound).
    pub journal_bytes_max: u64,
    /// Compare plan(old) with new before switching (a chunked pass, re-checked under
    /// the hold); mismatches are re-synced and counted in the report.
    pub verify: bool,
    /// Once converged, wait for [`RestructureHandle::switch_now`](crate::RestructureHandle::switch_now)
    /// before switching, keeping the new table in step meanwhile (a replica switches
    /// where its primary's stream says, not when it is ready). A command given
    /// earlier switches as soon as the restructure has converged.
    pub switch_on_command: bool,
    /// Test hook run under the switch hold.
    pub inspect_at_switch: Option<SwitchInspector>,
}

impl Default for RestructureOptions {
    fn default() -> Self {
        RestructureOptions {
            strategy: Strategy::LockHistory,
            chunk_rows: 4096,
            rate_limit_rows_per_s: None,
            duty_cycle: 0.5,
            work_slice: Duration::from_micros(500),
            stall_max: Duration::from_millis(1),
            stall_rounds: 8,
            on_non_convergence: NonConvergence::ThrottleWriters,
            rounds_max: 1_000,
            switch_retry_pause: Duration::from_millis(10),
            switch_tries: 100,
            journal_bytes_max: 1 << 30,
            verify: false,
            switch_on_command: false,
            inspect_at_switch: None,
        }
    }
}

impl fmt::Debug for RestructureOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestructureOptions")
            .field("strategy", &self.strategy)
            .field("chunk_rows", &self.chunk_rows)
            .field("rate_limit_rows_per_s", &self.rate_limit_rows_per_s)
            .field("duty_cycle", &self.duty_cycle)
            .field("work_slice", &self.work_slice)
            .field("stall_max", &self.stall_max)
            .field("verify", &self.verify)
            .field("switch_on_command", &self.switch_on_command)
            .finish_non_exhaustive()
    }
}
