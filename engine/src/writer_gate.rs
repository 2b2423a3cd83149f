//! The per-table writer gate: counts transactions writing a table, and lets a switch
//! hold new writers, wait for in-flight ones, and retire the table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

const HELD: u64 = 1 << 63;
const RETIRED: u64 = 1 << 62;
const COUNT: u64 = RETIRED - 1;

/// Why a writer could not enter.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The table was switched away or dropped: resolve its name again.
    Retired,
    /// Held for longer than the writer's timeout.
    Held,
}

/// State word: `HELD | RETIRED | in-flight writer count`. Entering and leaving cost one
/// atomic each; the mutex and condvar are touched only while a hold is on.
pub(crate) struct WriterGate {
    state: AtomicU64,
    mutex: Mutex<()>,
    changed: Condvar,
}

/// Upper bound on one condvar sleep, so that a missed notification costs at most this.
const NAP: Duration = Duration::from_millis(2);

impl WriterGate {
    pub fn new() -> WriterGate {
        WriterGate {
            state: AtomicU64::new(0),
            mutex: Mutex::new(()),
            changed: Condvar::new(),
        }
    }

    /// Registers one writer, waiting up to `timeout` while the gate is held.
    pub fn enter(&self, timeout: Duration) -> Result<(), Refusal> {
        let deadline = Instant::now() + timeout;
        loop {
            let prev = self.state.fetch_add(1, Ordering::SeqCst);
            debug_assert!(prev & COUNT < COUNT, "writer count overflow");
            if prev & (HELD | RETIRED) == 0 {
                return Ok(());
            }
            self.leave();
            if prev & RETIRED != 0 {
                return Err(Refusal::Retired);
            }
            let mut guard = self.mutex.lock();
            loop {
                let s = self.state.load(Ordering::SeqCst);
                if s & RETIRED != 0 || s & HELD == 0 {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(Refusal::Held);
                }
                self.changed.wait_for(&mut guard, (deadline - now).min(NAP));
            }
        }
    }

    /// Unregisters one writer.
    pub fn leave(&self) {
        let prev = self.state.fetch_sub(1, Ordering::SeqCst);
        debug_assert!(prev & COUNT > 0, "leave without enter");
        if prev & HELD != 0 && prev & COUNT == 1 {
            self.notify();
        }
    }

    fn notify(&self) {
        let _guard = self.mutex.lock();
        self.changed.notify_all();
    }

    /// Holds new writers. `false` if already held (or retired).
    pub fn hold(&self) -> bool {
        let prev = self.state.fetch_or(HELD, Ordering::SeqCst);
        if prev & RETIRED != 0 {
            if prev & HELD == 0 {
                self.state.fetch_and(!HELD, Ordering::SeqCst);
            }
            return false;
        }
        prev & HELD == 0
    }

    /// Writers currently registered.
    pub fn in_flight(&self) -> u64 {
        self.state.load(Ordering::SeqCst) & COUNT
    }

    /// Waits until no writer is registered; `false` on timeout.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        debug_assert!(
            self.state.load(Ordering::SeqCst) & HELD != 0,
            "wait_idle without hold"
        );
        let deadline = Instant::now() + timeout;
        let mut guard = self.mutex.lock();
        loop {
            if self.in_flight() == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.changed.wait_for(&mut guard, (deadline - now).min(NAP));
        }
    }

    /// Lifts the hold; held writers proceed.
    pub fn release(&self) {
        self.state.fetch_and(!HELD, Ordering::SeqCst);
        self.notify();
    }

    /// Marks the table retired and lifts any hold: held and future writers are told to
    /// resolve the name again.
    pub fn retire(&self) {
        self.state.fetch_or(RETIRED, Ordering::SeqCst);
        self.state.fetch_and(!HELD, Ordering::SeqCst);
        self.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn hold_waits_for_in_flight_writers_and_blocks_new_ones() {
        let gate = Arc::new(WriterGate::new());
        gate.enter(Duration::ZERO).expect("open gate");
        assert!(gate.hold());
        assert!(!gate.hold(), "second hold refused");
        assert_eq!(gate.enter(Duration::from_millis(5)), Err(Refusal::Held));
        assert!(!gate.wait_idle(Duration::from_millis(5)));
        let g = Arc::clone(&gate);
        let leaver = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            g.leave();
        });
        assert!(gate.wait_idle(Duration::from_secs(5)));
        leaver.join().expect("thread");
        gate.release();
        gate.enter(Duration::ZERO).expect("released");
        gate.leave();
    }

    #[test]
    fn held_writers_wake_on_release_and_on_retire() {
        let gate = Arc::new(WriterGate::new());
        assert!(gate.hold());
        let g = Arc::clone(&gate);
        let writer = std::thread::spawn(move || g.enter(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(10));
        gate.retire();
        assert_eq!(writer.join().expect("thread"), Err(Refusal::Retired));
        assert!(!gate.hold(), "a retired gate cannot be held");
        assert_eq!(gate.in_flight(), 0);
    }
}
