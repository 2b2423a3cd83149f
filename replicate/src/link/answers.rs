//! The peer's answers: acknowledgements, a sync transaction's `Prepared` (digests
//! compared, then `Commit` or `Abort`), an async or ordered transaction's `Applied`,
//! and `Rejected`.

use kirikae_engine::{Key, Operation};

use super::window::Status;
use super::{Event, Link, LinkState, Micros, SyncOutcome};
use crate::seq::Seq;
use crate::wire::Message;

/// The key an operation addresses (an insert's is in its row; shown as the row; a
/// catalog change addresses none).
fn operation_key(op: &Operation) -> Key {
    match op {
        Operation::Update { key, .. } | Operation::Delete { key, .. } => key.clone(),
        Operation::Insert { row, .. } => Key::new(row.to_vec()),
        Operation::Ddl { .. } => Key::new(Vec::new()),
    }
}

impl Link {
    /// A message from the peer.
    pub fn receive(&mut self, now: Micros, message: Message) {
        if self.state == LinkState::Degraded {
            return;
        }
        self.last_heard = now;
        if let Some(epoch) = message.epoch() {
            let ours = self.config.epoch;
            if epoch > ours {
                // Promoted while this primary still had the connection: whatever the
                // backup resolved is the most the new primary took over after.
                return self.fence(epoch, self.acked);
            }
            if epoch < ours && !matches!(message, Message::Hello { .. }) {
                return self.go_down(
                    now,
                    format!("the backup answered at {epoch} in a session of {ours}"),
                );
            }
        }
        match message {
            Message::Ack { seq, .. } | Message::Heartbeat { last_seq: seq, .. } => self.ack(seq),
            Message::Prepared { seq, responses, .. } => self.prepared(seq, responses),
            Message::Applied { seq, responses, .. } => {
                let expected = self.window.get_mut(seq).and_then(|e| e.responses.take());
                if let Some(expected) = expected {
                    self.compare(seq, &expected, &responses);
                }
            }
            Message::Rejected { seq, reason, .. } => self.rejected(seq, reason),
            Message::Resynced { seq, .. } => self.resynced(now, seq),
            Message::ResyncBegin { .. }
            | Message::ResyncTable { .. }
            | Message::ResyncRows { .. }
            | Message::ResyncEnd { .. }
            | Message::Hello { .. }
            | Message::Proof { .. }
            | Message::Ship { .. }
            | Message::Prepare { .. }
            | Message::Commit { .. }
            | Message::Abort { .. } => {
                self.go_down(now, "peer sent a primary's message".into());
            }
        }
    }

    pub(super) fn ack(&mut self, seq: Seq) {
        if seq <= self.acked {
            return;
        }
        self.acked = seq.min(self.sent);
        self.window
            .ack_through(self.acked, &mut self.ready.released.0);
        self.rolled_back.acknowledged_through(self.acked);
        self.retire(self.acked);
    }

    pub(super) fn retire(&mut self, seq: Seq) {
        let through = self.ready.retire_through.map_or(seq, |r| r.max(seq));
        self.ready.retire_through = Some(through);
    }

    pub(super) fn prepared(&mut self, seq: Seq, responses: Vec<u64>) {
        let expected = match self.window.get_mut(seq) {
            Some(e) if matches!(e.status, Status::Preparing { .. }) => {
                e.responses.take().unwrap_or_default()
            }
            _ => return,
        };
        let mismatch = self.compare(seq, &expected, &responses);
        let (status, message, outcome) = match mismatch {
            None => (
                Status::Committed,
                Message::Commit {
                    seq,
                    epoch: self.config.epoch,
                },
                SyncOutcome::Replicated,
            ),
            Some(reason) => (
                Status::Aborted,
                Message::Abort {
                    seq,
                    epoch: self.config.epoch,
                },
                SyncOutcome::Refused { reason },
            ),
        };
        if let Some(e) = self.window.get_mut(seq) {
            e.status = status;
        }
        self.queue(message);
        self.ready.outcomes.push((seq, outcome));
    }

    /// Compares response digests of `seq`; raises `Mismatch` and returns what differed.
    pub(super) fn compare(&mut self, seq: Seq, expected: &[u64], got: &[u64]) -> Option<String> {
        let at = if expected.len() != got.len() {
            Some(expected.len().min(got.len()))
        } else {
            expected.iter().zip(got).position(|(a, b)| a != b)
        }?;
        let (table, key) = self
            .window
            .get_mut(seq)
            .and_then(|e| e.operations.operations().ok()?.get(at).cloned())
            .map(|op| (op.table().to_owned(), operation_key(&op)))
            .unwrap_or_else(|| (String::new(), Key::new(Vec::new())));
        let detail = if expected.len() != got.len() {
            format!(
                "{} responses from the peer, {} here",
                got.len(),
                expected.len()
            )
        } else {
            format!("operation {at} found a different record at the peer")
        };
        self.metrics.mismatches += 1;
        self.ready.events.push(Event::Mismatch {
            seq,
            table: table.clone(),
            key: key.clone(),
            detail: detail.clone(),
        });
        Some(format!("{detail} ({table} {key:?}, sequence {seq})"))
    }

    /// The peer could not apply `seq`. A sync transaction still preparing is aborted
    /// here too. Anything else the peer now lacks for good: an apply error, reported
    /// even when the window no longer holds `seq` (the peer refused it while
    /// replaying its access log after a restart, long after acknowledging it) and
    /// whatever the link's state (a `Diverged` already raised for a down link does
    /// not hide it).
    pub(super) fn rejected(&mut self, seq: Seq, reason: String) {
        let preparing = self
            .window
            .get_mut(seq)
            .filter(|e| matches!(e.status, Status::Preparing { .. }));
        if let Some(e) = preparing {
            e.status = Status::Aborted;
            self.queue(Message::Abort {
                seq,
                epoch: self.config.epoch,
            });
            self.ready.outcomes.push((
                seq,
                SyncOutcome::Refused {
                    reason: format!("peer refused: {reason}"),
                },
            ));
        } else {
            self.metrics.apply_errors += 1;
            self.ready.events.push(Event::Diverged {
                since_seq: seq,
                reason: format!("peer could not apply {seq}: {reason}"),
            });
        }
    }
}
