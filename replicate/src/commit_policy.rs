//! The commit gate's policy, without I/O: what a transaction ships under the rules,
//! and what a settled outcome means for the commit. The replicator's gate and the
//! seeded simulation both use it.

use kirikae_engine::{CommitRequest, Operation, OperationKind, RowRef};
use smallvec::SmallVec;

use crate::digest::response_digest;
use crate::error::ReplicateError;
use crate::link::SyncOutcome;
use crate::mode::{Mode, WhenPeerDown};
use crate::replicator::Replication;
use crate::rules::{RuleSet, Shipped, TimeOfDay};
use crate::seq::Seq;

/// What a transaction sends to the peer: its mode, what a sync one does while the peer
/// is down, and the operations its rules replicate.
#[derive(Clone, Debug, PartialEq)]
pub struct Shipment {
    /// The transaction's mode (never [`Mode::Skip`]).
    pub mode: Mode,
    /// For sync: commit alone or fail while the peer is down.
    pub when_peer_down: WhenPeerDown,
    /// The operations to replicate, in order (taken from the request).
    pub operations: Vec<Operation>,
    /// For each of the request's operations, its kind if it is shipped: what its
    /// response digest needs once the operations are on their way.
    shipped: ShippedKinds,
}

/// For each of a request's operations, its kind if it is shipped (inline up to four).
type ShippedKinds = SmallVec<[Option<OperationKind>; 4]>;

impl Shipment {
    /// The digest of what each shipped operation found (see [`response_digest`]),
    /// from the request's before images (`before`, one per operation of the
    /// request), for comparison at the peer. Computed only when asked (sync
    /// transactions, and every Nth shipped one).
    pub fn responses(&self, before: &[Option<RowRef>]) -> Vec<u64> {
        before
            .iter()
            .zip(&self.shipped)
            .filter_map(|(before, kind)| Some(response_digest((*kind)?, before.as_deref())))
            .collect()
    }
}

/// What `request` ships under `rules` at `time`; `None` if its rules say skip.
/// The shipped operations are taken from the request, not copied.
pub fn shipment(
    rules: &RuleSet,
    request: &mut CommitRequest<'_>,
    time: TimeOfDay,
) -> Option<Shipment> {
    let mut shipped = Shipped::new();
    let choice = rules.decide_shipment(&request.operations, request.session, time, &mut shipped);
    if choice.mode == Mode::Skip {
        return None;
    }
    let shipped: ShippedKinds = (request.operations.iter().zip(shipped))
        .map(|(op, s)| s.then(|| op.kind()))
        .collect();
    let taken = std::mem::take(&mut request.operations);
    // Usually all of them: the vector itself moves on.
    let operations = if shipped.iter().all(Option::is_some) {
        taken
    } else {
        (taken.into_iter().zip(&shipped))
            .filter(|(_, kind)| kind.is_some())
            .map(|(op, _)| op)
            .collect()
    };
    Some(Shipment {
        mode: choice.mode,
        when_peer_down: choice.when_peer_down,
        operations,
        shipped,
    })
}

/// What a sync transaction's `outcome` means for its commit: a note to commit with,
/// or the error that rolls it back. `seq` is its sequence, if it got one.
pub fn settle(seq: Option<Seq>, outcome: SyncOutcome) -> Result<Replication, ReplicateError> {
    let seq_or_0 = seq.unwrap_or(Seq::ZERO);
    match outcome {
        SyncOutcome::Replicated => Ok(Replication::Replicated { seq: seq_or_0 }),
        SyncOutcome::CommittedAlone { reason } => Ok(Replication::NotReplicated {
            seq: seq_or_0,
            reason,
        }),
        SyncOutcome::Refused { reason } => Err(ReplicateError::RolledBackOnBoth {
            seq: seq_or_0,
            reason,
        }),
        SyncOutcome::OutcomeUnknown { reason } => Err(ReplicateError::OutcomeUnknown {
            seq: seq_or_0,
            reason,
        }),
        SyncOutcome::PeerDown { reason } => Err(ReplicateError::PeerDown { reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kirikae_engine::{Key, RowRef, SessionInfo, TxnId, Value};

    #[test]
    fn only_what_the_rules_replicate_is_shipped_with_its_digests() {
        let rules = RuleSet::parse(
            r#"
            default = "sync"
            [[rule]]
            table = "scratch"
            mode = "skip"
            "#,
            "t.toml",
        )
        .expect("rules");
        let session = SessionInfo::default();
        let operations = vec![
            Operation::Insert {
                table: "scratch".into(),
                row: vec![Value::Int(1)].into(),
            },
            Operation::Delete {
                table: "acct".into(),
                key: Key::from(2),
            },
        ];
        let before: Vec<Option<RowRef>> = vec![None, Some(vec![Value::Int(2)].into())];
        let mut request = CommitRequest {
            txn: TxnId(9),
            session: &session,
            operations: operations.clone(),
            before: &before,
        };
        let noon = TimeOfDay(12 * 3600);
        let shipped = shipment(&rules, &mut request, noon).expect("acct is replicated");
        assert_eq!(shipped.mode, Mode::Sync);
        assert_eq!(shipped.operations, operations[1..].to_vec());
        let responses = shipped.responses(request.before);
        assert_eq!(responses.len(), 1);
        assert_eq!(
            responses[0],
            response_digest(operations[1].kind(), before[1].as_deref())
        );
        let mut only_scratch = CommitRequest {
            operations: operations[..1].to_vec(),
            before: &before[..1],
            ..request
        };
        assert_eq!(shipment(&rules, &mut only_scratch, noon), None);
        assert_eq!(
            only_scratch.operations.len(),
            1,
            "a skipped request keeps them"
        );
    }

    #[test]
    fn outcomes_become_notes_or_the_errors_that_roll_back() {
        let reason = || "r".to_owned();
        assert_eq!(
            settle(Some(Seq(3)), SyncOutcome::Replicated).ok(),
            Some(Replication::Replicated { seq: Seq(3) })
        );
        assert!(matches!(
            settle(
                Some(Seq(3)),
                SyncOutcome::CommittedAlone { reason: reason() }
            ),
            Ok(Replication::NotReplicated { seq: Seq(3), .. })
        ));
        assert!(matches!(
            settle(Some(Seq(3)), SyncOutcome::Refused { reason: reason() }),
            Err(ReplicateError::RolledBackOnBoth { seq: Seq(3), .. })
        ));
        assert!(matches!(
            settle(
                Some(Seq(3)),
                SyncOutcome::OutcomeUnknown { reason: reason() }
            ),
            Err(ReplicateError::OutcomeUnknown { seq: Seq(3), .. })
        ));
        assert!(matches!(
            settle(None, SyncOutcome::PeerDown { reason: reason() }),
            Err(ReplicateError::PeerDown { .. })
        ));
    }
}
