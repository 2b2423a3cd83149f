//! Numbers for monitoring.

use serde::Serialize;

use super::config::LinkState;
use crate::seq::Seq;

/// Per-link numbers for monitoring.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LinkMetrics {
    /// Current state.
    pub state: Option<LinkState>,
    /// Highest sequence assigned.
    pub last_seq: Seq,
    /// Highest sequence sent to the peer.
    pub last_sent_seq: Seq,
    /// Highest sequence the peer acknowledged as resolved.
    pub last_acked_seq: Seq,
    /// Transactions assigned but not acknowledged.
    pub lag_ops: u64,
    /// Age of the oldest unacknowledged transaction, in milliseconds.
    pub lag_ms: u64,
    /// Bytes in the difference file.
    pub difference_bytes: u64,
    /// Responses that differed.
    pub mismatches: u64,
    /// Shipped transactions the peer failed to apply.
    pub apply_errors: u64,
    /// Transactions replayed from the difference file, all catch-ups together.
    pub replayed: u64,
    /// Connections made to the peer.
    pub connects: u64,
    /// Resyncs begun (full copies to a peer that could not be caught up).
    pub resyncs: u64,
    /// Rows the current (or last) resync's copy has sent so far.
    pub copied_rows: u64,
    /// The hold each new commit gets while the peer's backlog grows (µs; see
    /// `LinkConfig::catchup_pace_max`).
    pub commit_pace_us: u64,
    /// The most the link held for the peer at once since the last resync began (the
    /// unacknowledged window and the output the shell had not taken, encoded bytes):
    /// what a resync costs this primary's memory, beside the chunk being copied.
    pub held_bytes_peak: u64,
    /// Events dropped because the embedder did not read them (the oldest go first).
    pub events_dropped: u64,
    /// How long the link thread has been in its current socket write, in
    /// milliseconds (0: not writing): a peer that stopped reading shows here first.
    pub writing_ms: u64,
}
