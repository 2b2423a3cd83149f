//! How a sync commit waits for its outcome: a one-shot slot per commit, filled by
//! whichever shell thread learns the outcome (the connection reader, the link
//! thread) and closed when replication stops.
//!
//! Why not a channel: a bounded crossbeam channel's `recv` spins and calls
//! `sched_yield` several times before it parks. With eight sync sessions on two
//! cores that was a quarter of the primary's CPU in `kirikae bench replicate`
//! (issue 13 §3); this slot parks at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::link::SyncOutcome;
use crate::seq::Seq;

/// What a waiting commit learns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The link settled it.
    Settled(SyncOutcome),
    /// Replication stopped (shut down or poisoned) before it was settled.
    Closed,
    /// Neither, within the time given.
    TimedOut,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    Settled(SyncOutcome),
    Closed,
}

/// One sync commit's outcome, once known: settled at most once; a later settle or
/// close changes nothing.
#[derive(Debug)]
pub(crate) struct OutcomeSlot {
    state: Mutex<State>,
    filled: Condvar,
}

impl OutcomeSlot {
    fn new() -> OutcomeSlot {
        OutcomeSlot {
            state: Mutex::new(State::Waiting),
            filled: Condvar::new(),
        }
    }

    fn fill(&self, to: State) {
        let mut state = self.state.lock();
        if *state == State::Waiting {
            *state = to;
            self.filled.notify_one();
        }
    }

    /// Waits until the slot is filled or `timeout` passes.
    pub(crate) fn wait(&self, timeout: Duration) -> Waited {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock();
        loop {
            match &*state {
                State::Settled(outcome) => return Waited::Settled(outcome.clone()),
                State::Closed => return Waited::Closed,
                State::Waiting => {}
            }
            if self.filled.wait_until(&mut state, deadline).timed_out() {
                return match &*state {
                    State::Settled(outcome) => Waited::Settled(outcome.clone()),
                    State::Closed => Waited::Closed,
                    State::Waiting => Waited::TimedOut,
                };
            }
        }
    }

    /// The outcome, if it is settled already.
    pub(crate) fn settled(&self) -> Option<SyncOutcome> {
        match &*self.state.lock() {
            State::Settled(outcome) => Some(outcome.clone()),
            _ => None,
        }
    }
}

/// The sync commits waiting for their outcomes, by sequence. Dropping it closes
/// every slot still waiting, so no commit waits for an outcome nobody will give.
#[derive(Debug, Default)]
pub(crate) struct Waiters(HashMap<Seq, Arc<OutcomeSlot>>);

impl Waiters {
    /// A slot for `seq`'s outcome (replacing any older one, which is closed).
    pub(crate) fn register(&mut self, seq: Seq) -> Arc<OutcomeSlot> {
        let slot = Arc::new(OutcomeSlot::new());
        if let Some(old) = self.0.insert(seq, Arc::clone(&slot)) {
            old.fill(State::Closed);
        }
        slot
    }

    /// Takes `seq`'s waiter, if one waits, to give it `outcome` later, outside the
    /// lock these waiters are under: waking a thread is a system call, and the
    /// reader of an acknowledgement wakes a whole batch of commits.
    pub(crate) fn settle_later(&mut self, seq: Seq, outcome: SyncOutcome) -> Option<Wakeup> {
        self.0.remove(&seq).map(|slot| Wakeup(slot, outcome))
    }

    /// Whether a waiter for `seq` is registered (and not yet taken to be woken).
    pub(crate) fn contains(&self, seq: Seq) -> bool {
        self.0.contains_key(&seq)
    }

    /// `seq`'s waiter gave up (it settles its commit itself).
    pub(crate) fn forget(&mut self, seq: Seq) {
        self.0.remove(&seq);
    }

    /// Replication stops: every waiter wakes with [`Waited::Closed`].
    pub(crate) fn close_all(&mut self) {
        for (_, slot) in self.0.drain() {
            slot.fill(State::Closed);
        }
    }
}

/// An outcome taken from [`Waiters`] for its waiter, not given yet: given when
/// this is delivered or dropped (so it cannot be lost).
#[derive(Debug)]
pub(crate) struct Wakeup(Arc<OutcomeSlot>, SyncOutcome);

impl Drop for Wakeup {
    fn drop(&mut self) {
        let outcome = std::mem::replace(
            &mut self.1,
            SyncOutcome::PeerDown {
                reason: String::new(),
            },
        );
        self.0.fill(State::Settled(outcome));
    }
}

impl Drop for Waiters {
    fn drop(&mut self) {
        self.close_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settled_outcome_is_kept_and_a_later_close_changes_nothing() {
        let mut waiters = Waiters::default();
        let slot = waiters.register(Seq(3));
        drop(waiters.settle_later(Seq(3), SyncOutcome::Replicated));
        waiters.close_all();
        assert_eq!(
            slot.wait(Duration::ZERO),
            Waited::Settled(SyncOutcome::Replicated)
        );
        assert_eq!(slot.settled(), Some(SyncOutcome::Replicated));
    }

    #[test]
    fn an_unsettled_slot_times_out_and_a_forgotten_one_is_never_settled() {
        let mut waiters = Waiters::default();
        let slot = waiters.register(Seq(4));
        assert_eq!(slot.wait(Duration::from_millis(1)), Waited::TimedOut);
        waiters.forget(Seq(4));
        assert!(waiters
            .settle_later(Seq(4), SyncOutcome::Replicated)
            .is_none());
        assert_eq!(slot.settled(), None);
    }

    #[test]
    fn an_outcome_settled_later_reaches_its_waiter_when_the_wakeup_is_dropped() {
        let mut waiters = Waiters::default();
        let slot = waiters.register(Seq(6));
        let wakeup = waiters.settle_later(Seq(6), SyncOutcome::Replicated);
        assert!(wakeup.is_some());
        assert!(!waiters.contains(Seq(6)));
        assert_eq!(slot.settled(), None, "not before the wake-up is given");
        drop(wakeup);
        assert_eq!(slot.settled(), Some(SyncOutcome::Replicated));
        assert!(waiters
            .settle_later(Seq(7), SyncOutcome::Replicated)
            .is_none());
    }

    #[test]
    fn a_waiter_on_another_thread_wakes_when_settled_or_closed() {
        for close in [false, true] {
            let mut waiters = Waiters::default();
            let slot = waiters.register(Seq(5));
            let waiting = std::thread::spawn(move || slot.wait(Duration::from_secs(600)));
            if close {
                drop(waiters);
            } else {
                drop(waiters.settle_later(Seq(5), SyncOutcome::Replicated));
            }
            let expected = if close {
                Waited::Closed
            } else {
                Waited::Settled(SyncOutcome::Replicated)
            };
            assert_eq!(waiting.join().expect("waiter"), expected);
        }
    }
}
