//! Running a restructure: options, the handle (progress, pause, resume, rate limit,
//! abort, wait) and the state shared between the handle and the worker thread.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kirikae_engine::{Database, Table};
use serde::Serialize;

use crate::error::{RestructureError, Result};
use crate::job::Job;
use crate::plan::Transform;
use crate::report::RestructureReport;

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
    /// Give up with [`RestructureError::NotConverging`].
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
    /// Switch attempts before giving up with [`RestructureError::SwitchPostponed`].
    pub switch_tries: u32,
    /// The journal baseline fails with [`RestructureError::NotConverging`] once its
    /// pending images hold more than this (writers outpacing its replay would
    /// otherwise grow it without bound).
    pub journal_bytes_max: u64,
    /// Compare plan(old) with new before switching (a chunked pass, re-checked under
    /// the hold); mismatches are re-synced and counted in the report.
    pub verify: bool,
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
            .finish_non_exhaustive()
    }
}

/// Where a restructure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Phase {
    /// Compiling the plan, creating the new table.
    Starting,
    /// Phase 1: copying through the plan.
    Copying,
    /// Phase 2: update synchronization rounds.
    Syncing,
    /// Verifying before the switch.
    Verifying,
    /// Holding writers and switching.
    Switching,
    /// Switched: the new table serves.
    Done,
    /// Stopped without switching; the old table serves.
    Failed,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Starting,
            1 => Phase::Copying,
            2 => Phase::Syncing,
            3 => Phase::Verifying,
            4 => Phase::Switching,
            5 => Phase::Done,
            _ => Phase::Failed,
        }
    }
}

/// A progress reading.
#[derive(Clone, Debug, Serialize)]
pub struct Progress {
    /// Current phase.
    pub phase: Phase,
    /// Records copied in phase 1.
    pub rows_copied: u64,
    /// Records in the table when phase 1 started.
    pub rows_total: u64,
    /// RIDs (or journal entries) waiting for phase 2.
    pub history: u64,
    /// Phase-2 rounds run.
    pub round: u32,
    /// Time since start.
    pub elapsed: Duration,
    /// Estimated time to the end of the current phase, when known.
    pub eta: Option<Duration>,
}

pub(crate) struct Shared {
    pub table: String,
    phase: AtomicU8,
    pub rows_copied: AtomicU64,
    pub rows_total: AtomicU64,
    pub history: AtomicU64,
    pub round: AtomicU32,
    /// Nanoseconds per phase-2 RID, for the ETA.
    pub sync_ns_per_rid: AtomicU64,
    paused: AtomicBool,
    aborted: AtomicBool,
    /// 0: unlimited.
    rate_limit: AtomicU64,
    started: Instant,
    copy_started_ns: AtomicU64,
}

impl Shared {
    pub fn new(table: &str, rows_total: u64, rate_limit_rows_per_s: Option<u64>) -> Shared {
        Shared {
            table: table.to_owned(),
            phase: AtomicU8::new(Phase::Starting as u8),
            rows_copied: AtomicU64::new(0),
            rows_total: AtomicU64::new(rows_total),
            history: AtomicU64::new(0),
            round: AtomicU32::new(0),
            sync_ns_per_rid: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            rate_limit: AtomicU64::new(rate_limit_rows_per_s.unwrap_or(0)),
            started: Instant::now(),
            copy_started_ns: AtomicU64::new(0),
        }
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::SeqCst))
    }

    pub fn set_phase(&self, p: Phase) {
        if p == Phase::Copying {
            self.copy_started_ns
                .store(self.started.elapsed().as_nanos() as u64, Ordering::SeqCst);
        }
        self.phase.store(p as u8, Ordering::SeqCst);
    }

    /// The next checkpoint fails with [`RestructureError::Aborted`].
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
    }

    pub fn rate_limit(&self) -> Option<u64> {
        Some(self.rate_limit.load(Ordering::Relaxed)).filter(|&r| r > 0)
    }

    /// Returns once not paused; fails if aborted.
    pub fn checkpoint(&self) -> Result<()> {
        loop {
            if self.aborted.load(Ordering::SeqCst) {
                return Err(RestructureError::Aborted {
                    table: self.table.clone(),
                    phase: self.phase(),
                });
            }
            if !self.paused.load(Ordering::SeqCst) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sleeps up to `d`, waking early on abort.
    pub fn nap(&self, d: Duration) -> Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.checkpoint()?;
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(5)));
        }
        Ok(())
    }

    fn progress(&self) -> Progress {
        let phase = self.phase();
        let copied = self.rows_copied.load(Ordering::Relaxed);
        let total = self.rows_total.load(Ordering::Relaxed);
        let history = self.history.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        let eta = match phase {
            Phase::Copying if copied > 0 => {
                let copying = elapsed.saturating_sub(Duration::from_nanos(
                    self.copy_started_ns.load(Ordering::Relaxed),
                ));
                Some(copying.mul_f64(total.saturating_sub(copied) as f64 / copied as f64))
            }
            Phase::Syncing => Some(Duration::from_nanos(
                history.saturating_mul(self.sync_ns_per_rid.load(Ordering::Relaxed)),
            )),
            _ => None,
        };
        Progress {
            phase,
            rows_copied: copied,
            rows_total: total,
            history,
            round: self.round.load(Ordering::Relaxed),
            elapsed,
            eta,
        }
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.phase)?;
        if self.rows_total > 0 {
            write!(
                f,
                ": {}/{} rows copied ({:.0}%)",
                self.rows_copied,
                self.rows_total,
                100.0 * self.rows_copied as f64 / self.rows_total as f64
            )?;
        }
        write!(
            f,
            ", {} pending in the lock history, round {}, {:.1} s elapsed",
            self.history,
            self.round,
            self.elapsed.as_secs_f64()
        )?;
        if let Some(eta) = self.eta {
            write!(f, ", eta {:.1} s", eta.as_secs_f64())?;
        }
        Ok(())
    }
}

/// A restructure running on its background thread.
///
/// Dropping the handle without [`wait`](RestructureHandle::wait) aborts the
/// restructure (the old table keeps serving): keep it until the end.
#[must_use = "dropping the handle aborts the restructure; call `wait`"]
pub struct RestructureHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<RestructureReport>>>,
}

/// Starts restructuring `table` of `db` by `transform` on a background thread.
///
/// The returned handle must be kept: dropping it aborts the restructure.
///
/// The transform is validated against the table first: an invalid plan fails here and
/// nothing starts. The old table keeps serving reads and writes throughout; at the end
/// its name switches to the new table.
pub fn start(
    db: &Database,
    table: &str,
    transform: impl Into<Transform>,
    options: RestructureOptions,
) -> Result<RestructureHandle> {
    let old = db.table(table)?;
    let compiled = transform.into().compile(table, old.schema())?;
    let shared = Arc::new(Shared::new(table, old.len(), options.rate_limit_rows_per_s));
    let job = Job::new(db.clone(), old, compiled, options, Arc::clone(&shared));
    let thread = std::thread::Builder::new()
        .name(format!("restructure-{table}"))
        .spawn(move || job.run())
        .map_err(|e| RestructureError::Poisoned {
            table: table.to_owned(),
            detail: format!("cannot spawn the worker thread: {e}"),
        })?;
    Ok(RestructureHandle {
        shared,
        thread: Some(thread),
    })
}

impl RestructureHandle {
    /// Where the restructure is now.
    pub fn progress(&self) -> Progress {
        self.shared.progress()
    }

    /// Pauses copying and syncing at the next chunk or round boundary.
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    /// Resumes after [`pause`](RestructureHandle::pause).
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// Limits the phase-1 copy rate (`None`: unlimited), effective from the next chunk.
    pub fn set_rate_limit(&self, rows_per_s: Option<u64>) {
        self.shared
            .rate_limit
            .store(rows_per_s.unwrap_or(0), Ordering::SeqCst);
    }

    /// Stops the restructure within a work slice, in any phase: the
    /// new table is dropped and the old one keeps serving. [`wait`] then returns
    /// [`RestructureError::Aborted`] (or the report, if the switch already happened).
    ///
    /// [`wait`]: RestructureHandle::wait
    pub fn abort(&self) {
        self.shared.abort();
    }

    /// Whether the worker has finished (switched or failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the end; returns the report of a switched restructure.
    pub fn wait(mut self) -> Result<RestructureReport> {
        self.join()
    }

    fn join(&mut self) -> Result<RestructureReport> {
        let Some(thread) = self.thread.take() else {
            return Err(RestructureError::Poisoned {
                table: self.shared.table.clone(),
                detail: "already joined".to_owned(),
            });
        };
        thread.join().unwrap_or_else(|panic| {
            self.shared.set_phase(Phase::Failed);
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".to_owned());
            Err(RestructureError::Poisoned {
                table: self.shared.table.clone(),
                detail,
            })
        })
    }
}

impl Drop for RestructureHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.abort();
            let _ = self.join();
        }
    }
}
