//! What became of a submitted transaction.

use crate::seq::Seq;

/// How a sync transaction ended, as far as replication is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The peer applied it with the same responses; commit (the peer is told).
    Replicated,
    /// The peer is down and the rule says `continue`: commit here only; it waits in
    /// the difference file.
    CommittedAlone {
        /// Why it was not replicated.
        reason: String,
    },
    /// The peer refused it or answered differently: roll back (the peer is told).
    Refused {
        /// What the peer said or what differed.
        reason: String,
    },
    /// No answer in time and the rule says `fail`: roll back here; the backup may hold
    /// it prepared and is told it was aborted when it reconnects, unless it takes over
    /// first, which commits it.
    OutcomeUnknown {
        /// Why.
        reason: String,
    },
    /// The peer is down and the rule says `fail`: nothing was sent; roll back.
    PeerDown {
        /// Why it is down.
        reason: String,
    },
}

/// What [`Link::submit`](super::Link::submit) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Shipped or queued under `seq`; nothing to wait for.
    Queued {
        /// Its sequence.
        seq: Seq,
    },
    /// A sync transaction sent as `Prepare`: wait for its outcome.
    Waiting {
        /// Its sequence.
        seq: Seq,
    },
    /// A sync transaction settled at once (the peer is down).
    Settled {
        /// Its sequence, if it got one.
        seq: Option<Seq>,
        /// The outcome.
        outcome: SyncOutcome,
    },
}
