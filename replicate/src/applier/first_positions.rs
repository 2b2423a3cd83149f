//! The first access-log position of each sequence not yet resolved: a checkpoint's
//! log position is just below the lowest of them, so that a restart replays every
//! record of a transaction the checkpoint's snapshot does not hold.
//!
//! Sequences are logged in stream order and resolved mostly in that order too, so
//! a deque kept in sequence order does each step at one end; a sorted map cost a
//! tree insert and a tree removal per transaction on the applier's thread, the one
//! that also places work for the apply lanes.

use std::collections::VecDeque;

use crate::seq::Seq;

/// Sequence → its first log position, in sequence order.
#[derive(Debug, Default)]
pub(super) struct FirstPositions {
    entries: VecDeque<(Seq, u64)>,
}

impl FirstPositions {
    /// Notes `position` for `seq` unless `seq` has a position already.
    pub fn note(&mut self, seq: Seq, position: u64) {
        match self.entries.back() {
            Some(&(last, _)) if last >= seq => {
                if let Err(at) = self.entries.binary_search_by_key(&seq, |&(s, _)| s) {
                    self.entries.insert(at, (seq, position));
                }
            }
            _ => self.entries.push_back((seq, position)),
        }
    }

    /// Forgets `seq` (resolved).
    pub fn forget(&mut self, seq: Seq) {
        match self.entries.front() {
            Some(&(first, _)) if first == seq => {
                self.entries.pop_front();
            }
            _ => {
                if let Ok(at) = self.entries.binary_search_by_key(&seq, |&(s, _)| s) {
                    self.entries.remove(at);
                }
            }
        }
    }

    /// The lowest position noted.
    pub fn lowest(&self) -> Option<u64> {
        self.entries.iter().map(|&(_, p)| p).min()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::FirstPositions;
    use crate::seq::Seq;

    proptest! {
        /// Against a sorted map: any order of notes and forgets gives the same
        /// lowest position.
        #[test]
        fn agrees_with_a_sorted_map(steps in prop::collection::vec((any::<bool>(), 0u64..40, 0u64..1000), 0..200)) {
            let mut deque = FirstPositions::default();
            let mut model = BTreeMap::new();
            for (note, seq, position) in steps {
                if note {
                    deque.note(Seq(seq), position);
                    model.entry(seq).or_insert(position);
                } else {
                    deque.forget(Seq(seq));
                    model.remove(&seq);
                }
                prop_assert_eq!(deque.lowest(), model.values().min().copied());
            }
        }
    }
}
