//! What the link asks of its shell, and what the shell reports back: the raft-rs
//! `Ready` pattern. The link does no I/O; the shell carries out a [`Ready`] and tells
//! the link what became of it ([`Link::persisted`](super::Link::persisted),
//! [`Link::replayed`](super::Link::replayed)).

use crate::record_log::LogRecord;
use crate::seq::Seq;
use crate::wire::Message;

use super::event::Event;
use super::outcome::SyncOutcome;

/// Everything the link produced since the last [`Link::ready`](super::Link::ready).
///
/// The shell carries it out in field order:
/// 1. append `persist` to the difference file, in order; then fsync it if `sync_log`;
///    then drop the records up to `retire_through`; and report with
///    [`Link::persisted`](super::Link::persisted);
/// 2. read the records `read` asks for and hand them to
///    [`Link::replayed`](super::Link::replayed);
/// 3. encode and send `messages` on the current connection, in order; then close it
///    if `close`;
/// 4. hand `events` to the embedder and each outcome to the commit waiting for it.
#[derive(Debug, Default)]
pub struct Ready {
    /// Records for the difference file, in sequence order.
    pub persist: Vec<LogRecord>,
    /// Make everything appended so far durable (one fsync for the batch).
    pub sync_log: bool,
    /// The peer has resolved everything up to here: those records can go.
    pub retire_through: Option<Seq>,
    /// Records the catch-up needs next.
    pub read: Option<ReadRequest>,
    /// A resync began: the shell is to copy the tables (see
    /// [`CopyOrder`](super::CopyOrder)).
    pub copy: Option<super::CopyOrder>,
    /// Messages for the peer, in order.
    pub messages: Vec<Message>,
    /// Drop the connection (after sending `messages`).
    pub close: bool,
    /// For the embedder, in order.
    pub events: Vec<Event>,
    /// Settled sync transactions, by sequence.
    pub outcomes: Vec<(Seq, SyncOutcome)>,
    /// Acknowledged transactions the link let go of: nothing to do but drop them,
    /// which the shell does after letting go of the link.
    pub released: Released,
}

/// Transactions the link no longer holds (see [`Ready::released`]): opaque, only
/// to be dropped.
#[derive(Debug, Default)]
pub struct Released(pub(super) Vec<super::window::Entry>);

impl Ready {
    /// Whether it holds work the shell carries out before its messages (step 1 and
    /// 2 of the order above) or a close after them.
    pub(crate) fn has_work_around_messages(&self) -> bool {
        !self.persist.is_empty()
            || self.sync_log
            || self.read.is_some()
            || self.copy.is_some()
            || self.close
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && !self.sync_log
            && self.retire_through.is_none()
            && self.read.is_none()
            && self.copy.is_none()
            && self.messages.is_empty()
            && !self.close
            && self.events.is_empty()
            && self.outcomes.is_empty()
    }
}

/// Records the catch-up asks for: up to `limit` records with sequences above `after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    /// Which catch-up asks (an answer for an older one is ignored).
    pub catch_up: u64,
    /// Read records above this sequence.
    pub after: Seq,
    /// At most this many.
    pub limit: usize,
}

/// What the shell did with a [`Ready`]'s difference-file part.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persisted {
    /// Every record up to this sequence is in the difference file (readable).
    pub appended_through: Seq,
    /// Every record up to this sequence is durable (fsynced).
    pub durable_through: Seq,
    /// Bytes the difference file holds now.
    pub bytes: u64,
    /// What failed, if anything did: the difference file can no longer be trusted.
    pub error: Option<String>,
}

/// The difference file a link starts over (a primary restarting while degraded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    /// Its last sequence, if it holds any record.
    pub last_seq: Option<Seq>,
    /// Its size.
    pub bytes: u64,
}
