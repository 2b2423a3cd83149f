//! How a fenced primary comes back (issue 10 §3): as its successor's backup, caught
//! up from the new primary's log, when its history is a prefix of the new primary's;
//! otherwise only through a full resync.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::applier::StartAt;
use crate::epoch::Epoch;
use crate::seq::Seq;

/// Past this many sync transactions rolled back and not yet acknowledged, the link
/// stops listing them and a fenced primary needs a resync (a bound, not a limit a
/// healthy pair reaches: the backup acknowledges the aborts on every reconnect).
pub(crate) const ROLLED_BACK_MAX: usize = 100_000;

/// What a fenced primary can do next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Rejoin {
    /// Its history is a prefix of the new primary's: start a backup over its database
    /// at this position (`BackupConfig::start_at`), and the new primary (a replicator
    /// with `start_after` = the takeover sequence) catches it up from its log.
    CatchUp(StartAt),
    /// It holds what the new primary does not (or may hold differently): only a full
    /// resync makes it a backup again.
    ResyncRequired {
        /// What differs.
        reason: String,
    },
}

/// Sync transactions this primary rolled back whose end the backup has not
/// acknowledged: a backup that takes over with one of them prepared commits it
/// (seed 000 Table 2), so this primary and its successor may differ on them.
#[derive(Debug, Default)]
pub(crate) struct RolledBack {
    seqs: BTreeSet<Seq>,
    overflowed: bool,
}

impl RolledBack {
    pub fn insert(&mut self, seq: Seq) {
        if self.seqs.len() >= ROLLED_BACK_MAX {
            self.overflowed = true;
        } else {
            self.seqs.insert(seq);
        }
    }

    /// The backup resolved everything up to `acked`: those aborts reached it.
    pub fn acknowledged_through(&mut self, acked: Seq) {
        self.seqs = self.seqs.split_off(&acked.next());
    }

    /// The listed sequences in `(after, through]`, and whether the list is whole.
    pub fn between(&self, after: Seq, through: Seq) -> (Vec<Seq>, bool) {
        let listed = self
            .seqs
            .range(after.next()..)
            .take_while(|s| **s <= through)
            .copied()
            .collect();
        (listed, !self.overflowed)
    }
}

/// The way back for a primary whose last sequence is `last_seq`, fenced by the
/// primary of `epoch` that took over after `takeover_seq`, with `rolled_back`
/// (transactions it rolled back that its successor may have committed; `whole`:
/// the list is complete).
pub(crate) fn rejoin(
    epoch: Epoch,
    takeover_seq: Seq,
    last_seq: Seq,
    rolled_back: &[Seq],
    whole: bool,
) -> Rejoin {
    if last_seq > takeover_seq {
        return Rejoin::ResyncRequired {
            reason: format!(
                "sequences {}..={last_seq} were committed here after the takeover at {takeover_seq}",
                takeover_seq.next()
            ),
        };
    }
    if !whole {
        return Rejoin::ResyncRequired {
            reason: format!(
                "more than {ROLLED_BACK_MAX} rolled-back sync transactions were never acknowledged"
            ),
        };
    }
    if let Some(first) = rolled_back.first() {
        return Rejoin::ResyncRequired {
            reason: format!(
                "{} sync transaction(s) rolled back here (first {first}) may have been committed by the new primary",
                rolled_back.len()
            ),
        };
    }
    Rejoin::CatchUp(StartAt {
        seq: last_seq,
        epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_prefix_without_doubtful_rollbacks_catches_up() {
        let at = |seq| StartAt {
            seq: Seq(seq),
            epoch: Epoch(3),
        };
        assert_eq!(
            rejoin(Epoch(3), Seq(10), Seq(10), &[], true),
            Rejoin::CatchUp(at(10))
        );
        assert!(matches!(
            rejoin(Epoch(3), Seq(10), Seq(12), &[], true),
            Rejoin::ResyncRequired { reason } if reason.contains("11..=12")
        ));
        assert!(matches!(
            rejoin(Epoch(3), Seq(10), Seq(10), &[Seq(9)], true),
            Rejoin::ResyncRequired { reason } if reason.contains("first 9")
        ));
        assert!(matches!(
            rejoin(Epoch(3), Seq(10), Seq(10), &[], false),
            Rejoin::ResyncRequired { .. }
        ));
    }

    #[test]
    fn rolled_back_sequences_are_forgotten_once_acknowledged_and_bounded() {
        let mut r = RolledBack::default();
        for s in [3, 5, 8] {
            r.insert(Seq(s));
        }
        assert_eq!(r.between(Seq(3), Seq(8)), (vec![Seq(5), Seq(8)], true));
        r.acknowledged_through(Seq(5));
        assert_eq!(r.between(Seq::ZERO, Seq(100)), (vec![Seq(8)], true));
        for s in 0..ROLLED_BACK_MAX as u64 + 1 {
            r.insert(Seq(1_000 + s));
        }
        assert!(!r.between(Seq::ZERO, Seq(10)).1, "overflow is reported");
    }
}
