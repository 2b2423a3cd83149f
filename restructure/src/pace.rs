//! Pacing of the background passes (copy, unheld phase-2 rounds, verification): work
//! in short slices, rest between slices so that work takes at most `duty_cycle` of
//! wall time.
//!
//! Why slices and not chunks of records: when every core is busy with writers, the
//! restructure thread shares a core with one of them, and that writer waits for as
//! long as the restructure runs before resting. Resting after a fixed number of
//! records let that be 4–30 ms (a chunk of 4096 cache-missing records, or a whole
//! phase-2 round), and every write that crossed it took that long. Resting after a
//! fixed *time* bounds what a writer sharing the core waits to about one slice.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::progress::Shared;

/// Units of work between two looks at the clock.
const CHECK_EVERY: u32 = 16;

/// Splits a pass into slices of at most `slice` (plus one unit), resting after each.
pub(crate) struct Pacer {
    duty_cycle: f64,
    slice: Duration,
    slice_started: Instant,
    steps: u32,
    /// Slices ended so far.
    slices: u64,
}

impl Pacer {
    pub fn new(duty_cycle: f64, slice: Duration) -> Pacer {
        Pacer {
            duty_cycle,
            slice,
            slice_started: Instant::now(),
            steps: 0,
            slices: 0,
        }
    }

    /// Slices ended so far (each followed by its rest, unless at full duty).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn slices(&self) -> u64 {
        self.slices
    }

    /// Starts a slice now (after an idle period that was not work).
    pub fn restart(&mut self) {
        self.slice_started = Instant::now();
        self.steps = 0;
    }

    /// One unit of work done. Once the slice is used up: honours pause and abort,
    /// then rests `(1 - d) / d` times the slice's length.
    pub fn step(&mut self, shared: &Shared) -> Result<()> {
        self.steps += 1;
        if self.steps < CHECK_EVERY {
            return Ok(());
        }
        self.steps = 0;
        let worked = self.slice_started.elapsed();
        if worked < self.slice {
            return Ok(());
        }
        shared.checkpoint()?;
        self.slices += 1;
        if self.duty_cycle > 0.0 && self.duty_cycle < 1.0 {
            shared.nap(worked.mul_f64((1.0 - self.duty_cycle) / self.duty_cycle))?;
        }
        self.restart();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Busy work for `d` (a stand-in for copying records).
    fn spin(d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn rests_after_every_slice_in_proportion_to_the_duty_cycle() {
        let shared = Shared::new("t", 0, None);
        let mut pacer = Pacer::new(0.25, Duration::from_millis(2));
        let started = Instant::now();
        let mut busy = Duration::ZERO;
        // Stop right after a rest: all work so far lies in slices that were rested
        // for, 3× each at a duty cycle of 1/4, and a sleep is never shorter than
        // asked, so the bound holds however the machine schedules this thread.
        while pacer.slices() < 5 {
            let t = Instant::now();
            spin(Duration::from_micros(50));
            busy += t.elapsed();
            pacer.step(&shared).expect("not aborted");
        }
        assert!(
            started.elapsed() >= busy * 4,
            "{:?} of work took {:?}, less than 4× (work plus the rest owed)",
            busy,
            started.elapsed()
        );
    }

    #[test]
    fn full_duty_never_rests_and_still_honours_abort() {
        let shared = Shared::new("t", 0, None);
        let mut pacer = Pacer::new(1.0, Duration::ZERO);
        shared.abort();
        let stopped = (0..CHECK_EVERY).find_map(|_| pacer.step(&shared).err());
        assert!(
            matches!(stopped, Some(crate::RestructureError::Aborted { .. })),
            "{stopped:?}"
        );
    }
}
