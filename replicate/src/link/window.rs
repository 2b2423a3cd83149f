//! The in-memory window of a duplex link: every transaction sent and not yet
//! acknowledged, contiguous and in sequence order.

use std::collections::VecDeque;
use std::sync::Arc;

use kirikae_engine::Operation;

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
    pub operations: Arc<Vec<Operation>>,
    /// The primary's response digests, when the peer's are to be compared.
    pub responses: Option<Vec<u64>>,
    pub sent_at: Micros,
    pub status: Status,
    /// Its message's encoded size: what the entry holds in memory, about.
    pub bytes: usize,
}

/// The window (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Window(VecDeque<Entry>, usize);

impl Window {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The encoded size of the entries held.
    pub fn bytes(&self) -> usize {
        self.1
    }

    pub fn front(&self) -> Option<&Entry> {
        self.0.front()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.0.iter()
    }

    /// Appends the next transaction.
    pub fn push(&mut self, entry: Entry) {
        debug_assert!(
            self.0
                .back()
                .is_none_or(|last| last.seq.next() == entry.seq),
            "window sequences must be contiguous"
        );
        self.1 += entry.bytes;
        self.0.push_back(entry);
    }

    /// The entry of `seq`, if it is in the window.
    pub fn get_mut(&mut self, seq: Seq) -> Option<&mut Entry> {
        let first = self.0.front()?.seq;
        let i = usize::try_from(seq.0.checked_sub(first.0)?).ok()?;
        let entry = self.0.get_mut(i)?;
        debug_assert_eq!(entry.seq, seq);
        Some(entry)
    }

    /// Removes the entries up to `seq` (acknowledged as resolved by the peer) into
    /// `released`, for the shell to free outside the lock every commit takes (an
    /// acknowledgement can cover thousands, e.g. at the end of a resync).
    pub fn ack_through(&mut self, seq: Seq, released: &mut Vec<Entry>) {
        while self.0.front().is_some_and(|e| e.seq <= seq) {
            let Some(e) = self.0.pop_front() else { break };
            self.1 -= e.bytes;
            debug_assert!(
                !matches!(e.status, Status::Preparing { .. }),
                "the peer acknowledged an undecided sync transaction"
            );
            released.push(e);
        }
    }

    /// Empties the window, in sequence order.
    pub fn take_all(&mut self) -> VecDeque<Entry> {
        self.1 = 0;
        std::mem::take(&mut self.0)
    }
}
