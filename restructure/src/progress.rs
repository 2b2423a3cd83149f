//! Where a restructure is, and the state its handle and its worker thread share
//! (phase, counters, pause, rate limit, abort).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{RestructureError, Result};
use crate::phase::Phase;

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
    /// Switch attempts that ended without switching (writers let go and the switch
    /// retried: a long transaction, or the stall bound reached).
    pub switch_retries: u32,
    /// Time since start.
    pub elapsed: Duration,
    /// Estimated time to the end of the current phase, when known.
    pub eta: Option<Duration>,
    /// The worker is stopped at a pause (set once it has finished its slice after
    /// [`pause`](crate::RestructureHandle::pause); nothing moves until resumed).
    pub paused: bool,
}

pub(crate) struct Shared {
    pub table: String,
    phase: AtomicU8,
    pub rows_copied: AtomicU64,
    pub rows_total: AtomicU64,
    pub history: AtomicU64,
    pub round: AtomicU32,
    pub switch_retries: AtomicU32,
    /// Nanoseconds per phase-2 RID, for the ETA.
    pub sync_ns_per_rid: AtomicU64,
    paused: AtomicBool,
    /// The worker is waiting in [`Shared::checkpoint`] because of a pause.
    holding_for_pause: AtomicBool,
    aborted: AtomicBool,
    /// [`RestructureHandle::switch_now`](crate::RestructureHandle::switch_now) was called.
    switch_commanded: AtomicBool,
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
            switch_retries: AtomicU32::new(0),
            sync_ns_per_rid: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            holding_for_pause: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            switch_commanded: AtomicBool::new(false),
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

    /// Lets a restructure waiting for the command switch.
    pub fn command_switch(&self) {
        self.switch_commanded.store(true, Ordering::SeqCst);
    }

    pub fn switch_commanded(&self) -> bool {
        self.switch_commanded.load(Ordering::SeqCst)
    }

    pub fn rate_limit(&self) -> Option<u64> {
        Some(self.rate_limit.load(Ordering::Relaxed)).filter(|&r| r > 0)
    }

    /// Returns once not paused; fails if aborted.
    pub fn checkpoint(&self) -> Result<()> {
        let outcome = loop {
            if self.aborted.load(Ordering::SeqCst) {
                break Err(RestructureError::Aborted {
                    table: self.table.clone(),
                    phase: self.phase(),
                });
            }
            if !self.paused.load(Ordering::SeqCst) {
                break Ok(());
            }
            self.holding_for_pause.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
        };
        self.holding_for_pause.store(false, Ordering::SeqCst);
        outcome
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

    /// Pauses (or resumes) the work at the next slice or round boundary.
    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Limits the copy rate (`None`: unlimited).
    pub(crate) fn set_rate_limit(&self, rows_per_s: Option<u64>) {
        self.rate_limit
            .store(rows_per_s.unwrap_or(0), Ordering::SeqCst);
    }

    /// Where the restructure is now.
    pub(crate) fn progress(&self) -> Progress {
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
            paused: self.holding_for_pause.load(Ordering::SeqCst),
            rows_copied: copied,
            rows_total: total,
            history,
            round: self.round.load(Ordering::Relaxed),
            switch_retries: self.switch_retries.load(Ordering::Relaxed),
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
