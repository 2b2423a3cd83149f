//! Promotion: the backup's database becomes the primary's (seed 003 Fig. 4, steps
//! 410–414; seed 000 §5.1–5.2).
//!
//! 1. Everything logged and not yet applied is applied, in sequence order.
//! 2. Each sync transaction held in doubt (prepared, no decision heard) is committed
//!    if the backup's response digests equal the ones the primary sent with its
//!    `Prepare`: the primary may have committed it and told its client (Table 2,
//!    cases 4 and 5, which are harmless for an application that does not repeat a
//!    commit it got no answer for). One whose digests differ would not have been
//!    committed by the primary either, and is rolled back. A transaction never
//!    prepared here does not exist here.
//! 3. The decisions are logged and made durable, with the new epoch.
//!
//! The caller then raises `Promoted` to the application (its cue to take over the
//! service address) and only then accepts writes.

use super::{Applier, ReplicateError, Result};
use crate::access_log::AccessEntry;
use crate::epoch::Epoch;
use crate::seq::Seq;

/// What a promotion did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Promotion {
    /// The new primary's epoch.
    pub epoch: Epoch,
    /// The takeover sequence: every transaction up to here is in this database, none
    /// above. The new primary numbers its transactions from the next one.
    pub last_seq: Seq,
    /// In-doubt sync transactions committed (their digests matched the primary's).
    pub in_doubt_committed: Vec<Seq>,
    /// In-doubt sync transactions rolled back (their digests differed).
    pub in_doubt_dropped: Vec<Seq>,
}

impl Applier<'_> {
    /// Ok if this backup holds a usable copy to be promoted with; an error while a
    /// resync is under way, or its result is not durable yet (a restart would find
    /// nothing): ask before taking an arbiter's lock, which a refused promotion
    /// would only hold in vain. A checkpoint being written is waited for first (the
    /// one that ends a resync makes its copy durable).
    pub fn promotable(&mut self) -> Result<()> {
        self.finish_checkpoint(true)?;
        if let Some(done) = self.promoted {
            return Err(ReplicateError::Protocol {
                reason: format!("already promoted at {done}"),
            });
        }
        if self.resync.is_some() || self.log.as_ref().is_some_and(|l| l.resyncing()) {
            return Err(super::resync::not_while_resyncing("cannot promote"));
        }
        Ok(())
    }

    /// Promotes this backup's database at `epoch` (greater than every epoch seen):
    /// see the module docs. After it, the applier takes nothing more.
    pub fn promote(&mut self, epoch: Epoch) -> Result<Promotion> {
        if let Some(done) = self.promoted {
            return Err(ReplicateError::Protocol {
                reason: format!("already promoted at {done}"),
            });
        }
        self.promotable()?;
        if epoch <= self.epoch {
            return Err(ReplicateError::Protocol {
                reason: format!("cannot promote at {epoch}: {} was already seen", self.epoch),
            });
        }
        self.apply_queued(&mut Vec::new())?;
        let mut promotion = Promotion {
            epoch,
            last_seq: Seq::ZERO,
            in_doubt_committed: Vec::new(),
            in_doubt_dropped: Vec::new(),
        };
        // Each decision goes the way a primary's would: logged, then applied.
        let decisions: Vec<(Seq, bool)> = self
            .held
            .iter()
            .map(|(seq, held)| (*seq, held.primary == held.here))
            .collect();
        for (seq, commit) in decisions {
            let (entry, list) = if commit {
                (AccessEntry::Commit, &mut promotion.in_doubt_committed)
            } else {
                (AccessEntry::Abort, &mut promotion.in_doubt_dropped)
            };
            list.push(seq);
            self.log(seq, entry, None, false)?;
        }
        self.apply_queued(&mut Vec::new())?;
        debug_assert!(self.held.is_empty() && self.undecided.is_empty() && self.queue.is_empty());
        debug_assert!(
            self.resolved_above.is_empty(),
            "every logged sequence is resolved after a promotion"
        );
        self.epoch = epoch;
        promotion.last_seq = self.resolved;
        // The decisions and the promotion itself, durable before anyone is told: a
        // restart of this node knows it was promoted, at which epoch and sequence.
        if let Some(log) = self.log.as_mut() {
            log.append(self.resolved, epoch, AccessEntry::Promoted)?;
            log.sync()?;
        }
        self.promoted = Some(epoch);
        Ok(promotion)
    }

    /// The epoch this database was promoted at, if it was.
    pub fn promoted(&self) -> Option<Epoch> {
        self.promoted
    }
}
