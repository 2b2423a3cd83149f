//! Waiting for record locks: bounded waits, deadlock detection on a waits-for graph,
//! and wake-ups striped by RID so that a release wakes only likely waiters.
//!
//! Record locks themselves are the `owner` field of a slot (see `slots.rs`); this
//! module only decides how long a transaction sleeps before it looks again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::rid::Rid;
use crate::slots::Slot;
use crate::txn_id::TxnId;

const STRIPES: usize = 64;
/// Longest single sleep: bounds the cost of a wake-up lost to a race.
const NAP: Duration = Duration::from_millis(2);

struct Stripe {
    mutex: Mutex<()>,
    released: Condvar,
    waiters: AtomicUsize,
}

/// Why a wait ended without the lock being released.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WaitFailure {
    /// The deadline passed.
    Timeout,
    /// Waiting would close a cycle in the waits-for graph.
    Deadlock,
}

pub(crate) struct LockWaits {
    stripes: Box<[Stripe]>,
    /// Edge `a -> b`: transaction `a` waits for a lock `b` holds. Touched only on
    /// contention, so one mutex makes the cycle check atomic at no cost to the fast path.
    waits_for: Mutex<HashMap<TxnId, TxnId>>,
}

impl LockWaits {
    pub fn new() -> LockWaits {
        LockWaits {
            stripes: (0..STRIPES)
                .map(|_| Stripe {
                    mutex: Mutex::new(()),
                    released: Condvar::new(),
                    waiters: AtomicUsize::new(0),
                })
                .collect(),
            waits_for: Mutex::new(HashMap::new()),
        }
    }

    fn stripe(&self, table_id: u64, rid: Rid) -> &Stripe {
        let h = rid.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ table_id;
        &self.stripes[(h >> 32) as usize % STRIPES]
    }

    /// Sleeps until `holder` no longer owns `slot`, the deadline passes, or waiting
    /// would deadlock. The caller must not hold the slot latch.
    pub fn wait(
        &self,
        table_id: u64,
        rid: Rid,
        slot: &Slot,
        me: TxnId,
        holder: TxnId,
        deadline: Instant,
    ) -> Result<(), WaitFailure> {
        debug_assert_ne!(me, holder, "a transaction never waits for itself");
        {
            let mut graph = self.waits_for.lock();
            graph.insert(me, holder);
            let mut cur = holder;
            // The graph is acyclic before this edge, so the walk ends within its size.
            for _ in 0..graph.len() {
                match graph.get(&cur) {
                    Some(&next) if next == me => {
                        graph.remove(&me);
                        return Err(WaitFailure::Deadlock);
                    }
                    Some(&next) => cur = next,
                    None => break,
                }
            }
        }
        let stripe = self.stripe(table_id, rid);
        let mut guard = stripe.mutex.lock();
        // Registered before the owner is checked: a release after our check sees the
        // count and takes the stripe mutex, which we hold until we sleep.
        stripe.waiters.fetch_add(1, Ordering::SeqCst);
        let outcome = loop {
            if slot.latch().owner != holder {
                break Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(WaitFailure::Timeout);
            }
            stripe
                .released
                .wait_for(&mut guard, (deadline - now).min(NAP));
        };
        stripe.waiters.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        self.waits_for.lock().remove(&me);
        outcome
    }

    /// Wakes waiters of `rid` after its lock was released (latch already dropped).
    pub fn wake(&self, table_id: u64, rid: Rid) {
        let stripe = self.stripe(table_id, rid);
        if stripe.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = stripe.mutex.lock();
            stripe.released.notify_all();
        }
    }
}
