//! What the link tells the embedder.

use kirikae_engine::Key;
use serde::Serialize;

use crate::epoch::Epoch;
use crate::seq::Seq;

/// Something the embedder should know about the link.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Event {
    /// The peer stopped receiving or applying transactions from `since_seq` on.
    Diverged {
        /// First sequence not replicated.
        since_seq: Seq,
        /// Why.
        reason: String,
    },
    /// The peer has caught up from the difference file and the link is duplex again.
    Recovered {
        /// Transactions replayed from the difference file.
        ops_replayed: u64,
        /// How long commits paused to drain the tail.
        pause_us: u64,
    },
    /// The peer's response differed from the primary's.
    Mismatch {
        /// The transaction.
        seq: Seq,
        /// Its table.
        table: String,
        /// The operation's key (for an insert, its row).
        key: Key,
        /// What differed.
        detail: String,
    },
    /// The peer cannot be caught up from the difference file; it needs a full resync.
    ResyncRequired {
        /// Why.
        reason: String,
    },
    /// A resync ended: the peer holds a copy of the tables and is in step (duplex).
    Resynced {
        /// Every transaction up to here was in the copy; later ones came beside it.
        from_seq: Seq,
        /// Rows copied.
        rows: u64,
        /// From the resync's start to the peer's `Resynced`.
        took_ms: u64,
    },
    /// Another node was promoted at a higher epoch: this primary accepts no more
    /// writes. Its transactions after the takeover sequence (`divergent`, first and
    /// last, if any) exist only here: the new primary never had them.
    Fenced {
        /// The new primary's epoch.
        epoch: Epoch,
        /// Everything up to here is in the new primary.
        takeover_seq: Seq,
        /// This primary's sequences the new primary does not have.
        divergent: Option<(Seq, Seq)>,
        /// Sync transactions rolled back here that the new primary held prepared
        /// and may have committed (seed 000 Table 2): this node and the new
        /// primary may differ on them.
        rolled_back: Vec<Seq>,
    },
}

/// One line an operator can read: the event's name, then what it carries.
impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Diverged { since_seq, reason } => {
                write!(f, "Diverged since {since_seq}: {reason}")
            }
            Event::Recovered {
                ops_replayed,
                pause_us,
            } => write!(
                f,
                "Recovered: {ops_replayed} replayed, commits paused {pause_us} µs"
            ),
            Event::Mismatch {
                seq,
                table,
                key,
                detail,
            } => write!(f, "Mismatch at {seq} in {table} (key {key}): {detail}"),
            Event::ResyncRequired { reason } => write!(f, "ResyncRequired: {reason}"),
            Event::Resynced {
                from_seq,
                rows,
                took_ms,
            } => write!(
                f,
                "Resynced: {rows} rows copied from {from_seq} on, in {took_ms} ms"
            ),
            Event::Fenced {
                epoch,
                takeover_seq,
                divergent,
                rolled_back,
            } => {
                write!(f, "Fenced: replaced by the primary of {epoch}, which took over after {takeover_seq}")?;
                match divergent {
                    Some((first, last)) => {
                        write!(f, "; divergent tail {first}..={last} exists only here")?
                    }
                    None => write!(f, "; no divergent tail")?,
                }
                if !rolled_back.is_empty() {
                    write!(
                        f,
                        "; {} sync transaction(s) rolled back here may be committed there: {rolled_back:?}",
                        rolled_back.len()
                    )?;
                }
                Ok(())
            }
        }
    }
}
