//! What lies between the two threads of one direction of the loopback proxy: a
//! bounded queue of chunks, each with the instant it may be delivered, and a pacer
//! that wakes the writer at that instant rather than a timer's lateness after it.
//!
//! Why the pacer: a sleeping thread on this kind of VM wakes 20–150 µs late (an idle
//! virtual CPU must be woken by its host first), and that lateness, on every chunk
//! both ways, was the proxy's own delay on top of the one it emulates: a raw round
//! trip through it at RTT 1 ms took 1.18 ms (p50). Why not a channel: a crossbeam
//! channel's `recv` spins and yields before parking, which costs the two shared
//! cores of the machine; this queue parks at once, and it is bounded, as a TCP
//! window is.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Bytes a direction may hold in flight; past it the reader waits (as a sender
/// waits on a full TCP window).
pub(crate) const IN_FLIGHT_BYTES_MAX: usize = 64 << 20;

/// The most the pacer ever waits out an early wake-up by yielding (it yields
/// rather than spins: on a loaded machine the other runnable threads — the nodes
/// the proxy stands between — get the core meanwhile).
const YIELD_MAX: Duration = Duration::from_micros(200);

/// Wake-ups remembered to estimate the timer's lateness.
const LATENESS_SAMPLES: usize = 16;

/// Wakes a thread at an instant: sleeps until a little before it (by the least
/// lateness among the last wake-ups, so the wake-up rarely comes early), then
/// yields until it. Never returns before the instant.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    lateness: [Duration; LATENESS_SAMPLES],
    next: usize,
    seen: usize,
}

impl Pacer {
    /// How much earlier than an instant to ask the timer for.
    pub(crate) fn lead(&self) -> Duration {
        if self.seen < LATENESS_SAMPLES {
            return Duration::ZERO;
        }
        self.lateness
            .iter()
            .min()
            .copied()
            .unwrap_or_default()
            .min(YIELD_MAX)
    }

    /// Records how late a sleep meant to end at `asked` ended (at `woke`).
    pub(crate) fn record(&mut self, asked: Instant, woke: Instant) {
        self.lateness[self.next] = woke.saturating_duration_since(asked);
        self.next = (self.next + 1) % LATENESS_SAMPLES;
        self.seen = self.seen.saturating_add(1);
    }

    /// Returns at `at` or just after it.
    pub(crate) fn wait_until(&mut self, at: Instant) {
        let now = Instant::now();
        if at <= now {
            return;
        }
        let wake = at.checked_sub(self.lead()).unwrap_or(at).max(now);
        if wake > now {
            std::thread::sleep(wake - now);
            self.record(wake, Instant::now());
        }
        while Instant::now() < at {
            std::thread::yield_now();
        }
    }
}

struct State {
    chunks: VecDeque<(Instant, Vec<u8>)>,
    bytes: usize,
    closed: bool,
}

/// One direction's chunks, in order (see the module docs). Either side may close
/// it; the other then sees the end.
pub(crate) struct DelayQueue {
    state: Mutex<State>,
    /// A chunk was pushed or the queue closed.
    filled: Condvar,
    /// A chunk was taken or the queue closed.
    drained: Condvar,
}

impl DelayQueue {
    pub(crate) fn new() -> DelayQueue {
        DelayQueue {
            state: Mutex::new(State {
                chunks: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
            filled: Condvar::new(),
            drained: Condvar::new(),
        }
    }

    /// Queues `chunk` for delivery at `release`, waiting while
    /// [`IN_FLIGHT_BYTES_MAX`] are in flight; false once the queue is closed.
    pub(crate) fn push(&self, release: Instant, chunk: Vec<u8>) -> bool {
        let mut state = self.state.lock();
        while !state.closed && state.bytes > 0 && state.bytes + chunk.len() > IN_FLIGHT_BYTES_MAX {
            self.drained.wait(&mut state);
        }
        if state.closed {
            return false;
        }
        state.bytes += chunk.len();
        state.chunks.push_back((release, chunk));
        self.filled.notify_one();
        true
    }

    /// The next chunk and its release instant, waiting for one; `None` once the
    /// queue is closed and empty.
    pub(crate) fn pop(&self) -> Option<(Instant, Vec<u8>)> {
        let mut state = self.state.lock();
        loop {
            if let Some((release, chunk)) = state.chunks.pop_front() {
                state.bytes -= chunk.len();
                self.drained.notify_one();
                return Some((release, chunk));
            }
            if state.closed {
                return None;
            }
            self.filled.wait(&mut state);
        }
    }

    /// No more chunks: the writer delivers what is queued and ends, a reader
    /// waiting for room gives up.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.filled.notify_all();
        self.drained.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_never_returns_early_and_learns_the_timers_lateness() {
        let mut pacer = Pacer::default();
        for _ in 0..2 * LATENESS_SAMPLES {
            let at = Instant::now() + Duration::from_micros(300);
            pacer.wait_until(at);
            assert!(Instant::now() >= at);
        }
        assert!(pacer.lead() <= YIELD_MAX);
    }

    #[test]
    fn the_lead_is_the_least_recent_lateness() {
        let mut pacer = Pacer::default();
        let t = Instant::now();
        for i in 0..LATENESS_SAMPLES as u64 {
            pacer.record(t, t + Duration::from_micros(40 + i));
        }
        assert_eq!(pacer.lead(), Duration::from_micros(40));
        // An outlier beyond the spin bound is capped.
        for _ in 0..LATENESS_SAMPLES {
            pacer.record(t, t + Duration::from_secs(1));
        }
        assert_eq!(pacer.lead(), YIELD_MAX);
    }

    #[test]
    fn chunks_come_out_in_order_and_the_end_after_them() {
        let queue = std::sync::Arc::new(DelayQueue::new());
        let t = Instant::now();
        let reader = {
            let queue = std::sync::Arc::clone(&queue);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some((_, chunk)) = queue.pop() {
                    got.push(chunk[0]);
                }
                got
            })
        };
        for i in 0..100u8 {
            assert!(queue.push(t, vec![i]));
        }
        queue.close();
        assert!(!queue.push(t, vec![0]), "closed");
        assert_eq!(
            reader.join().expect("reader"),
            (0..100).collect::<Vec<u8>>()
        );
    }

    #[test]
    fn a_full_queue_holds_the_pusher_until_room_is_made() {
        let queue = std::sync::Arc::new(DelayQueue::new());
        let t = Instant::now();
        assert!(queue.push(t, vec![0; IN_FLIGHT_BYTES_MAX]));
        let pusher = {
            let queue = std::sync::Arc::clone(&queue);
            std::thread::spawn(move || queue.push(t, vec![1; 10]))
        };
        let (_, first) = queue.pop().expect("the first chunk");
        assert_eq!(first.len(), IN_FLIGHT_BYTES_MAX);
        assert!(pusher.join().expect("pusher"));
        assert_eq!(queue.pop().map(|(_, c)| c), Some(vec![1; 10]));
    }
}
