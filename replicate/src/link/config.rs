//! How a link is set up, and the state it is in.

use std::time::Duration;

use serde::Serialize;

use crate::epoch::Epoch;
use crate::seq::Seq;
use crate::wire::MAX_FRAME_BYTES;

/// State of the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// No usable peer: non-skip transactions go to the difference file.
    Degraded,
    /// Connected; replaying the difference file while new transactions queue behind it.
    CatchingUp,
    /// Connected; copying the tables to a peer that could not be caught up, new
    /// transactions shipped beside the copy.
    Resyncing,
    /// Connected and current: transactions are shipped as they commit.
    Duplex,
}

/// Timing and sizing of a link.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// This primary's epoch (grows at each failover).
    pub epoch: Epoch,
    /// This node's name, sent in the handshake.
    pub node: String,
    /// A heartbeat goes out when nothing else has for this long.
    pub heartbeat_every: Duration,
    /// A peer silent this long, or an acknowledgement overdue this long, is down.
    pub peer_timeout: Duration,
    /// How long a sync commit waits for the peer's answer.
    pub sync_timeout: Duration,
    /// More unacknowledged transactions than this in memory: the peer is too far
    /// behind and is treated as down.
    pub window_txns_max: usize,
    /// More bytes than this written by committers and not yet taken by the shell (a
    /// peer that reads too slowly): the peer is treated as down.
    pub output_bytes_max: usize,
    /// Every Nth shipped (async or ordered) transaction is verified (0: none); sync
    /// transactions always are.
    pub verify_every: u64,
    /// Records per catch-up step.
    pub catchup_batch_txns: usize,
    /// Most replayed records sent but not yet acknowledged: the catch-up is paced by
    /// the peer's acknowledgements, so a connection lost mid-way wastes at most this.
    pub catchup_window_txns: u64,
    /// Commits pause when the catch-up is this few sequences from the end.
    pub pause_within_txns: u64,
    /// While a catch-up's backlog does not shrink, or a duplex peer's backlog past a
    /// quarter of the limits above (or half of `peer_timeout` old) does not, each
    /// new commit is held back, longer each 100 ms it still does not, up to this
    /// (zero: never), so that the backup converges in bounded time instead of
    /// being declared down.
    pub catchup_pace_max: Duration,
    /// A catch-up whose backlog passes this many transactions is given up for a
    /// resync.
    pub catchup_backlog_max_txns: u64,
    /// Past this size the difference file stops growing and `ResyncRequired` is raised.
    pub difference_cap_bytes: u64,
    /// First delay before reconnecting; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_max: Duration,
    /// Largest frame sent or accepted.
    pub frame_bytes_max: usize,
    /// Transactions are numbered from the one after this: a promoted node's takeover
    /// sequence, so that its history continues the old primary's.
    pub start_after: Seq,
    /// A peer that cannot be caught up from the difference file is resynced (a copy
    /// of the tables while commits go on); without it, such a peer is refused until
    /// an operator steps in.
    pub resync: bool,
    /// A resync's copy goes no faster than this many bytes a second (0: as fast as
    /// the peer takes it), so that it leaves the primary's commits their share.
    pub copy_bytes_per_s: u64,
    /// While resyncing, `peer_timeout` is this long instead (never shorter): the
    /// backup's answers queue behind the copy.
    pub resync_timeout: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            epoch: Epoch(1),
            node: "primary".into(),
            heartbeat_every: Duration::from_millis(100),
            peer_timeout: Duration::from_secs(1),
            sync_timeout: Duration::from_millis(500),
            window_txns_max: 1 << 20,
            output_bytes_max: 64 << 20,
            verify_every: 100,
            catchup_batch_txns: 1024,
            catchup_window_txns: 1 << 16,
            pause_within_txns: 256,
            catchup_pace_max: Duration::from_millis(2),
            catchup_backlog_max_txns: 1 << 24,
            difference_cap_bytes: 1 << 30,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            frame_bytes_max: MAX_FRAME_BYTES,
            start_after: Seq::ZERO,
            resync: true,
            copy_bytes_per_s: 64 << 20,
            resync_timeout: Duration::from_secs(30),
        }
    }
}
