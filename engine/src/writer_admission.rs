//! Writer admission, per table: counts transactions writing a table, and lets a switch
//! hold new writers, wait for in-flight ones, and retire the table.
//!
//! The in-flight count is sharded per thread so that writers on different threads do
//! not share a cache line. Entering is "increment my shard, then read the flags";
//! holding is "set the flag, then sum the shards". With sequentially consistent
//! operations on both sides (the Dekker pattern), either the writer sees the hold, or
//! the holder's sum sees the writer.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam::utils::CachePadded;
use parking_lot::{Condvar, Mutex};

const HELD: u64 = 1;
const RETIRED: u64 = 2;
const SHARDS: usize = 16;

/// Why a writer could not enter.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The table was switched away or dropped: resolve its name again.
    Retired,
    /// Held for longer than the writer's timeout.
    Held,
}

/// A registration: leave through the same shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entered(usize);

pub(crate) struct WriterAdmission {
    flags: AtomicU64,
    shards: [CachePadded<AtomicU64>; SHARDS],
    mutex: Mutex<()>,
    changed: Condvar,
}

/// How long a held writer waits on a core before it sleeps: a little more than the
/// default bound on a hold (1 ms), so that a hold within its bound never puts a
/// writer to sleep.
const SPIN: Duration = Duration::from_millis(2);

/// Upper bound on one condvar sleep, so that a missed notification costs at most this.
const NAP: Duration = Duration::from_millis(2);

fn my_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = Cell::new(NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
    }
    SHARD.with(Cell::get)
}

impl WriterAdmission {
    pub fn new() -> WriterAdmission {
        WriterAdmission {
            flags: AtomicU64::new(0),
            shards: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
            mutex: Mutex::new(()),
            changed: Condvar::new(),
        }
    }

    /// Registers one writer, waiting up to `timeout` while the admission is held.
    pub fn enter(&self, timeout: Duration) -> Result<Entered, Refusal> {
        let shard = my_shard();
        // The clock is read only once there is something to wait for: this is
        // every write's path.
        let mut deadline = None;
        loop {
            self.shards[shard].fetch_add(1, Ordering::SeqCst);
            let flags = self.flags.load(Ordering::SeqCst);
            if flags == 0 {
                return Ok(Entered(shard));
            }
            self.leave(Entered(shard));
            if flags & RETIRED != 0 {
                return Err(Refusal::Retired);
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
            if self.spin_while_held(deadline) {
                continue;
            }
            let mut guard = self.mutex.lock();
            loop {
                let f = self.flags.load(Ordering::SeqCst);
                if f & RETIRED != 0 || f & HELD == 0 {
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

    /// Waits for the hold to end without sleeping, for up to [`SPIN`] (or `deadline`),
    /// yielding the core to any thread that wants it. `true` once the hold ended (or
    /// the table was retired).
    ///
    /// Why not sleep at once: a sleeping writer is woken by the release while the
    /// restructure thread still runs, every core busy; the scheduler then queues it
    /// behind another writer for a whole tick (4 ms seen with 2 writers on 2 cores)
    /// instead of the ≤ 1 ms the hold took. A spinning writer is already on a core.
    /// Yielding keeps it from slowing the holder if they share one.
    fn spin_while_held(&self, deadline: Instant) -> bool {
        let until = (Instant::now() + SPIN).min(deadline);
        loop {
            let f = self.flags.load(Ordering::SeqCst);
            if f & RETIRED != 0 || f & HELD == 0 {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::yield_now();
        }
    }

    /// Unregisters one writer.
    pub fn leave(&self, entered: Entered) {
        let prev = self.shards[entered.0].fetch_sub(1, Ordering::SeqCst);
        debug_assert!(prev > 0, "leave without enter");
        if self.flags.load(Ordering::SeqCst) & HELD != 0 {
            self.notify();
        }
    }

    fn notify(&self) {
        let _guard = self.mutex.lock();
        self.changed.notify_all();
    }

    /// Holds new writers. `false` if already held (or retired).
    pub fn hold(&self) -> bool {
        let prev = self.flags.fetch_or(HELD, Ordering::SeqCst);
        if prev & RETIRED != 0 {
            if prev & HELD == 0 {
                self.flags.fetch_and(!HELD, Ordering::SeqCst);
            }
            return false;
        }
        prev & HELD == 0
    }

    /// Writers currently registered.
    pub fn in_flight(&self) -> u64 {
        self.shards.iter().map(|s| s.load(Ordering::SeqCst)).sum()
    }

    /// Waits until no writer is registered; `false` on timeout.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        debug_assert!(
            self.flags.load(Ordering::SeqCst) & HELD != 0,
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
        self.flags.fetch_and(!HELD, Ordering::SeqCst);
        self.notify();
    }

    /// Marks the table retired and lifts any hold: held and future writers are told to
    /// resolve the name again.
    pub fn retire(&self) {
        self.flags.fetch_or(RETIRED, Ordering::SeqCst);
        self.flags.fetch_and(!HELD, Ordering::SeqCst);
        self.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn hold_waits_for_in_flight_writers_and_blocks_new_ones() {
        let admission = Arc::new(WriterAdmission::new());
        let entered = admission.enter(Duration::ZERO).expect("open admission");
        assert!(admission.hold());
        assert!(!admission.hold(), "second hold refused");
        assert_eq!(
            admission.enter(Duration::from_millis(5)),
            Err(Refusal::Held)
        );
        assert!(!admission.wait_idle(Duration::from_millis(5)));
        let g = Arc::clone(&admission);
        // Leaving from another thread (a transaction moved across threads) still counts.
        let leaver = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            g.leave(entered);
        });
        assert!(admission.wait_idle(Duration::from_secs(5)));
        leaver.join().expect("thread");
        admission.release();
        let e = admission.enter(Duration::ZERO).expect("released");
        admission.leave(e);
        assert_eq!(admission.in_flight(), 0);
    }

    #[test]
    fn held_writers_wake_on_release_and_on_retire() {
        let admission = Arc::new(WriterAdmission::new());
        assert!(admission.hold());
        let g = Arc::clone(&admission);
        let writer = std::thread::spawn(move || g.enter(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(10));
        admission.retire();
        assert_eq!(writer.join().expect("thread"), Err(Refusal::Retired));
        assert!(!admission.hold(), "a retired admission cannot be held");
        assert_eq!(admission.in_flight(), 0);
    }

    #[test]
    fn many_threads_entering_and_leaving_never_slip_past_a_hold() {
        let admission = Arc::new(WriterAdmission::new());
        let inside = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (admission, inside, stop) = (
                    Arc::clone(&admission),
                    Arc::clone(&inside),
                    Arc::clone(&stop),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(e) = admission.enter(Duration::from_millis(50)) {
                            inside.fetch_add(1, Ordering::SeqCst);
                            inside.fetch_sub(1, Ordering::SeqCst);
                            admission.leave(e);
                        }
                    }
                })
            })
            .collect();
        for _ in 0..50 {
            assert!(admission.hold());
            assert!(admission.wait_idle(Duration::from_secs(5)));
            for _ in 0..100 {
                assert_eq!(
                    inside.load(Ordering::SeqCst),
                    0,
                    "a writer entered during the hold"
                );
            }
            admission.release();
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().expect("writer");
        }
    }
}
