//! How a committing thread serves the link's commit pace (`Link::commit_pace_us`):
//! the hold is owed per commit, but slept in pieces of at least
//! [`SLEEP_FROM_US`].
//!
//! A sleep costs a thread two context switches, several microseconds of CPU on a
//! virtual machine, and wakes 20–150 µs late there: sleeping a 20 µs hold at every
//! commit cost the primary more CPU per commit than replicating it, and held each
//! commit back four times longer than asked. Owed and slept in millisecond pieces,
//! the same hold restricts the thread's rate as much, for a context switch per
//! piece, and the lateness is a few percent of it.

use std::cell::Cell;
use std::time::Duration;

/// The shortest sleep: holds owed are summed until they reach it.
pub(crate) const SLEEP_FROM_US: u64 = 1_000;

thread_local! {
    /// The hold this thread owes and has not slept yet (µs).
    static OWED_US: Cell<u64> = const { Cell::new(0) };
}

/// Serves a commit's hold of `pace_us` (0: none, and whatever was owed is
/// forgiven: the backlog no longer asks for it). Returns how long it slept.
pub(crate) fn serve(pace_us: u64) -> Duration {
    let owed = if pace_us == 0 {
        0
    } else {
        OWED_US.with(Cell::get).saturating_add(pace_us)
    };
    if owed < SLEEP_FROM_US {
        OWED_US.with(|o| o.set(owed));
        return Duration::ZERO;
    }
    OWED_US.with(|o| o.set(0));
    let hold = Duration::from_micros(owed);
    std::thread::sleep(hold);
    hold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_owed_until_a_millisecond_and_forgiven_when_the_pace_ends() {
        // Each test runs on a thread of its own: nothing is owed at first.
        let slept: Vec<u64> = (0..10).map(|_| serve(300).as_micros() as u64).collect();
        assert_eq!(slept, [0, 0, 0, 1200, 0, 0, 0, 1200, 0, 0]);
        // 600 owed, forgiven.
        assert_eq!(serve(0), Duration::ZERO);
        assert_eq!(serve(900), Duration::ZERO);
        // A hold longer than a piece is slept at once.
        assert_eq!(serve(2_000), Duration::from_micros(2_900));
        assert_eq!(serve(2_000), Duration::from_micros(2_000));
    }
}
