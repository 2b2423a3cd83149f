//! The peer's side of the link: applies what the primary sends to the peer's
//! database, with no network of its own (the [`Peer`](crate::Peer) server and the
//! simulation both drive it).
//!
//! - Transactions are applied in the order they arrive, which is the primary's
//!   sequence order: ordered ones in commit order, async ones too (which keeps their
//!   per-key order).
//! - A sequence already resolved is a duplicate and ignored, so replay is idempotent.
//! - A sync transaction is applied and held open (its locks kept) until `Commit` or
//!   `Abort`; it may also be settled by a replay from the primary's difference file.
//! - "Resolved" means applied, committed, aborted, or failed (reported). The peer
//!   acknowledges the highest sequence up to which everything is resolved *and*
//!   written to its own log, so the primary never forgets what the peer still needs.
//!
//! The optional log is the peer's own record log (every resolved sequence,
//! in order; an aborted or failed one as an empty `Skip` record): reopening it rebuilds
//! the tables a peer process held when it was killed.

use std::collections::BTreeMap;

use kirikae_engine::{Operation, OperationKind, Session, Transaction};

use crate::digest::response_digest;
use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result};
use crate::mode::Mode;
use crate::record_log::{LogRecord, RecordLog};
use crate::seq::Seq;
use crate::wire::{Message, PROTOCOL_VERSION};

/// Counts kept by an [`Applier`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplierStats {
    /// Transactions applied (shipped, or prepared and committed).
    pub applied: u64,
    /// Messages ignored as already resolved.
    pub duplicates: u64,
    /// Transactions the peer could not apply (reported to the primary).
    pub rejected: u64,
    /// Prepared transactions aborted.
    pub aborted: u64,
    /// Transactions replayed from the peer's own log at start.
    pub recovered: u64,
}

/// The peer's state machine (see the module docs).
pub struct Applier<'s> {
    session: &'s Session,
    log: Option<RecordLog>,
    /// Everything up to here is resolved and logged.
    resolved: Seq,
    /// Resolved above `resolved`, waiting for the gap below to close; logged in order.
    pending_log: BTreeMap<Seq, LogRecord>,
    /// Sync transactions applied and held open.
    held: BTreeMap<Seq, (Transaction<'s>, Vec<Operation>)>,
    /// Sequences of this connection's stream seen so far (for gap detection).
    stream_seq: Seq,
    /// Highest primary epoch seen; older primaries are refused.
    epoch: Epoch,
    stats: ApplierStats,
}

impl<'s> Applier<'s> {
    /// An applier over `session`'s database. With a `log`, first re-applies what it
    /// holds (a restarted peer process recovering its tables).
    pub fn new(session: &'s Session, mut log: Option<RecordLog>) -> Result<Applier<'s>> {
        let mut stats = ApplierStats::default();
        let mut resolved = Seq::ZERO;
        let mut epoch = Epoch::NONE;
        if let Some(log) = log.as_mut() {
            for record in log.read_after(Seq::ZERO)? {
                if record.mode != Mode::Skip {
                    apply(session, &record.operations)
                        .map_err(|(_, e)| e)?
                        .0
                        .commit()?;
                }
                resolved = record.seq;
                epoch = epoch.max(record.epoch);
                stats.recovered += 1;
            }
        }
        Ok(Applier {
            session,
            log,
            resolved,
            pending_log: BTreeMap::new(),
            held: BTreeMap::new(),
            stream_seq: resolved,
            epoch,
            stats,
        })
    }

    /// Highest sequence up to which everything is resolved and logged.
    pub fn last_seq(&self) -> Seq {
        self.resolved
    }

    /// Counts so far.
    pub fn stats(&self) -> &ApplierStats {
        &self.stats
    }

    /// Sync transactions held open.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// This side's handshake.
    pub fn hello(&self, node: &str) -> Message {
        Message::Hello {
            version: PROTOCOL_VERSION,
            epoch: self.epoch,
            node: node.to_owned(),
            last_seq: self.resolved,
        }
    }

    /// A primary connected with `epoch`: refuses a stale one; the new stream starts
    /// right after what is resolved.
    pub fn connected(&mut self, epoch: Epoch) -> Result<()> {
        if epoch < self.epoch {
            return Err(protocol(format!(
                "primary {epoch} is older than {} already seen",
                self.epoch
            )));
        }
        self.epoch = epoch;
        self.stream_seq = self.resolved;
        Ok(())
    }

    /// Handles one message, pushing replies. An error means the stream is unusable
    /// (a gap, a stale epoch, a log that cannot be written): close the connection.
    pub fn handle(&mut self, message: Message, replies: &mut Vec<Message>) -> Result<()> {
        match message {
            Message::Ship {
                seq,
                epoch,
                mode,
                operations,
                verify,
            } => {
                self.check_epoch(epoch)?;
                if let Some((txn, ops)) = self.take_held(seq) {
                    // A sync commit the primary kept after losing the link: the held
                    // transaction is the same one; make it permanent.
                    txn.commit()?;
                    self.stats.applied += 1;
                    return self.resolve(seq, Mode::Sync, ops);
                }
                if !self.is_new(seq)? {
                    return Ok(());
                }
                match apply(self.session, &operations) {
                    Ok((txn, responses)) => {
                        txn.commit()?;
                        self.stats.applied += 1;
                        if verify {
                            replies.push(Message::Applied { seq, responses });
                        }
                        self.resolve(seq, mode, operations)
                    }
                    Err((at, e)) => self.reject(seq, at, &e, replies),
                }
            }
            Message::Prepare {
                seq,
                epoch,
                operations,
            } => {
                self.check_epoch(epoch)?;
                if self.held.contains_key(&seq) {
                    self.stream_seq = self.stream_seq.max(seq);
                    self.stats.duplicates += 1;
                    return Ok(());
                }
                if !self.is_new(seq)? {
                    return Ok(());
                }
                match apply(self.session, &operations) {
                    Ok((txn, responses)) => {
                        self.held.insert(seq, (txn, operations));
                        replies.push(Message::Prepared { seq, responses });
                        Ok(())
                    }
                    Err((at, e)) => self.reject(seq, at, &e, replies),
                }
            }
            Message::Commit { seq } => match self.take_held(seq) {
                Some((txn, ops)) => {
                    txn.commit()?;
                    self.stats.applied += 1;
                    self.resolve(seq, Mode::Sync, ops)
                }
                None => {
                    self.stats.duplicates += 1;
                    Ok(())
                }
            },
            Message::Abort { seq } => {
                if let Some((txn, _)) = self.take_held(seq) {
                    txn.rollback();
                    self.stats.aborted += 1;
                    return self.resolve(seq, Mode::Skip, Vec::new());
                }
                // An abort replayed for a transaction this peer never saw prepared
                // (it restarted): the sequence is resolved all the same.
                if self.is_new(seq)? {
                    self.stats.aborted += 1;
                    return self.resolve(seq, Mode::Skip, Vec::new());
                }
                Ok(())
            }
            Message::Heartbeat { epoch, .. } => self.check_epoch(epoch),
            Message::Hello { .. }
            | Message::Prepared { .. }
            | Message::Rejected { .. }
            | Message::Ack { .. }
            | Message::Applied { .. } => {
                Err(protocol(format!("unexpected {message:?} from the primary")))
            }
        }
    }

    /// Ends a batch of messages: makes the log durable and acknowledges.
    pub fn flush(&mut self, replies: &mut Vec<Message>) -> Result<()> {
        if let Some(log) = self.log.as_mut() {
            log.sync()?;
        }
        replies.push(Message::Ack { seq: self.resolved });
        Ok(())
    }

    /// Reports a transaction the peer could not apply; its sequence is resolved (as
    /// nothing) all the same.
    fn reject(
        &mut self,
        seq: Seq,
        at: usize,
        error: &ReplicateError,
        replies: &mut Vec<Message>,
    ) -> Result<()> {
        self.stats.rejected += 1;
        replies.push(Message::Rejected {
            seq,
            reason: format!("operation {at}: {error}"),
        });
        self.resolve(seq, Mode::Skip, Vec::new())
    }

    /// Removes a held transaction; the stream has reached its sequence.
    fn take_held(&mut self, seq: Seq) -> Option<(Transaction<'s>, Vec<Operation>)> {
        let held = self.held.remove(&seq)?;
        self.stream_seq = self.stream_seq.max(seq);
        Some(held)
    }

    fn check_epoch(&self, epoch: Epoch) -> Result<()> {
        if epoch < self.epoch {
            return Err(protocol(format!("message of {epoch} after {}", self.epoch)));
        }
        Ok(())
    }

    /// Whether `seq` is the next in the stream (true), already seen (false, a
    /// duplicate), or beyond a gap (an error: something was lost on the way).
    fn is_new(&mut self, seq: Seq) -> Result<bool> {
        if seq <= self.stream_seq || seq <= self.resolved || self.pending_log.contains_key(&seq) {
            self.stats.duplicates += 1;
            self.stream_seq = self.stream_seq.max(seq);
            return Ok(false);
        }
        if seq != self.stream_seq.next() {
            return Err(protocol(format!(
                "sequence {seq} after {}: the stream has a gap",
                self.stream_seq
            )));
        }
        self.stream_seq = seq;
        Ok(true)
    }

    /// Marks `seq` resolved; logs everything that has become contiguous.
    fn resolve(&mut self, seq: Seq, mode: Mode, operations: Vec<Operation>) -> Result<()> {
        debug_assert!(seq > self.resolved, "resolved twice: {seq}");
        self.pending_log.insert(
            seq,
            LogRecord {
                seq,
                epoch: self.epoch,
                mode,
                operations,
            },
        );
        while let Some(entry) = self.pending_log.first_entry() {
            if *entry.key() != self.resolved.next() {
                break;
            }
            let record = entry.remove();
            if let Some(log) = self.log.as_mut() {
                log.append(&record)?;
            }
            self.resolved = record.seq;
        }
        Ok(())
    }
}

/// Applies `operations` in one transaction, left open; returns it with the response
/// digest of each operation, or the index of the failing operation and why.
fn apply<'s>(
    session: &'s Session,
    operations: &[Operation],
) -> std::result::Result<(Transaction<'s>, Vec<u64>), (usize, ReplicateError)> {
    let mut txn = session.begin();
    let mut responses = Vec::with_capacity(operations.len());
    for (i, op) in operations.iter().enumerate() {
        let fail = |e: kirikae_engine::EngineError| (i, ReplicateError::Engine(e));
        let digest = match op {
            Operation::Insert { table, row } => {
                txn.insert(table, row.clone()).map_err(fail)?;
                response_digest(OperationKind::Insert, None)
            }
            Operation::Update { table, key, row } => {
                let before = txn.get_for_update(table, key).map_err(fail)?;
                txn.update(table, key, row.clone()).map_err(fail)?;
                response_digest(OperationKind::Update, before.as_deref())
            }
            Operation::Delete { table, key } => {
                let before = txn.get_for_update(table, key).map_err(fail)?;
                txn.delete(table, key).map_err(fail)?;
                response_digest(OperationKind::Delete, before.as_deref())
            }
        };
        responses.push(digest);
    }
    Ok((txn, responses))
}

fn protocol(reason: String) -> ReplicateError {
    ReplicateError::Protocol { reason }
}
