//! The in-memory window of a duplex link: every transaction sent and not yet
//! acknowledged, contiguous and in sequence order.

use crate::writes::Writes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::mode::{Mode, WhenPeerDown};
use crate::seq::Seq;

use super::Micros;

/// Where a transaction in the window stands.
#[derive(Debug)]
pub(super) enum Status {
    /// Shipped; waiting for the peer's acknowledgement.
    Shipped,
    /// Sent as `Prepare`; waiting for `Prepared` until `deadline`.
    Preparing {
        deadline: Micros,
        when_down: WhenPeerDown,
    },
    /// A sync transaction decided commit.
    Committed,
    /// A sync transaction decided abort.
    Aborted,
}

/// One unacknowledged transaction.
#[derive(Debug)]
pub(super) struct Entry {
    pub seq: Seq,
    pub mode: Mode,
    /// Shared with the message that ships them: never copied.
    pub operations: Writes,
    /// The primary's response digests, when the peer's are to be compared.
    pub responses: Option<Vec<u64>>,
    pub sent_at: Micros,
    pub status: Status,
    /// Its message's encoded size: what the entry holds in memory, about.
    pub bytes: usize,
}

/// The window (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Window {
    entries: VecDeque<Entry>,
    /// The encoded size of `entries`.
    bytes: usize,
    /// The deadline of every sync transaction pushed while it was preparing,
    /// earliest first. Entries since decided or released stay until they reach the
    /// top (see [`Window::expired_sync`]): the link ticks often, and a scan of the
    /// whole window there, under the lock every commit takes, cost a few percent
    /// of the primary's CPU with thousands of async transactions in flight.
    deadlines: BinaryHeap<Reverse<(Micros, Seq)>>,
}

impl Window {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The encoded size of the entries held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn front(&self) -> Option<&Entry> {
        self.entries.front()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// The sync transaction in the window still preparing at `now` past its
    /// deadline, the earliest one if several are.
    pub fn expired_sync(&mut self, now: Micros) -> Option<Seq> {
        while let Some(&Reverse((deadline, seq))) = self.deadlines.peek() {
            let preparing = self
                .get(seq)
                .is_some_and(|e| matches!(e.status, Status::Preparing { .. }));
            if preparing {
                return (now >= deadline).then_some(seq);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Appends the next transaction.
    pub fn push(&mut self, entry: Entry) {
        debug_assert!(
            self.entries
                .back()
                .is_none_or(|last| last.seq.next() == entry.seq),
            "window sequences must be contiguous"
        );
        if let Status::Preparing { deadline, .. } = entry.status {
            self.deadlines.push(Reverse((deadline, entry.seq)));
        }
        self.bytes += entry.bytes;
        self.entries.push_back(entry);
    }

    /// Where `seq`'s entry is in `entries`, if it is in the window.
    fn index(&self, seq: Seq) -> Option<usize> {
        let first = self.entries.front()?.seq;
        let i = usize::try_from(seq.0.checked_sub(first.0)?).ok()?;
        (i < self.entries.len()).then_some(i)
    }

    fn get(&self, seq: Seq) -> Option<&Entry> {
        let entry = &self.entries[self.index(seq)?];
        debug_assert_eq!(entry.seq, seq);
        Some(entry)
    }

    /// The entry of `seq`, if it is in the window.
    pub fn get_mut(&mut self, seq: Seq) -> Option<&mut Entry> {
        let i = self.index(seq)?;
        let entry = &mut self.entries[i];
        debug_assert_eq!(entry.seq, seq);
        Some(entry)
    }

    /// Removes the entries up to `seq` (acknowledged as resolved by the peer) into
    /// `released`, for the shell to free outside the lock every commit takes (an
    /// acknowledgement can cover thousands, e.g. at the end of a resync).
    pub fn ack_through(&mut self, seq: Seq, released: &mut Vec<Entry>) {
        while self.entries.front().is_some_and(|e| e.seq <= seq) {
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= e.bytes;
            debug_assert!(
                !matches!(e.status, Status::Preparing { .. }),
                "the peer acknowledged an undecided sync transaction"
            );
            released.push(e);
        }
    }

    /// Empties the window, in sequence order.
    pub fn take_all(&mut self) -> VecDeque<Entry> {
        self.bytes = 0;
        self.deadlines.clear();
        std::mem::take(&mut self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, status: Status) -> Entry {
        Entry {
            seq: Seq(seq),
            mode: Mode::Sync,
            operations: Writes::new(Vec::new()),
            responses: None,
            sent_at: 0,
            status,
            bytes: 10,
        }
    }

    fn preparing(deadline: Micros) -> Status {
        Status::Preparing {
            deadline,
            when_down: WhenPeerDown::Continue,
        }
    }

    #[test]
    fn the_earliest_sync_transaction_still_preparing_past_its_deadline_expires() {
        let mut window = Window::default();
        window.push(entry(1, Status::Shipped));
        window.push(entry(2, preparing(100)));
        window.push(entry(3, preparing(200)));
        assert_eq!(window.expired_sync(99), None);
        assert_eq!(window.expired_sync(100), Some(Seq(2)));
        // Decided: the next one counts, from its own deadline.
        window.get_mut(Seq(2)).expect("in the window").status = Status::Committed;
        assert_eq!(window.expired_sync(150), None);
        assert_eq!(window.expired_sync(200), Some(Seq(3)));
        // Released by an acknowledgement: nothing is left to expire.
        window.get_mut(Seq(3)).expect("in the window").status = Status::Aborted;
        let mut released = Vec::new();
        window.ack_through(Seq(3), &mut released);
        assert_eq!(released.len(), 3);
        assert_eq!(window.expired_sync(10_000), None);
        assert!(window.deadlines.is_empty());
        // Taken out whole (the link went down): none either.
        window.push(entry(4, preparing(300)));
        window.take_all();
        assert_eq!(window.expired_sync(10_000), None);
    }
}
