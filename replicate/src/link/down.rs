//! Going down and staying durable: a lost connection moves the window to the
//! difference file and settles undecided sync transactions by their rule; what the
//! shell reports of the difference file releases commits waiting for durability.

use super::window::Status;
use super::{Event, Link, LinkState, Micros, Persisted, SyncOutcome};
use crate::epoch::Epoch;
use crate::mode::{Mode, WhenPeerDown};
use crate::record_log::LogRecord;
use crate::seq::Seq;
use crate::writes::Writes;

/// `outcome` with `note` added to its reason.
fn with_note(outcome: SyncOutcome, note: &str) -> SyncOutcome {
    match outcome {
        SyncOutcome::CommittedAlone { reason } => SyncOutcome::CommittedAlone {
            reason: reason + note,
        },
        other => other,
    }
}

impl Link {
    /// What the shell did with the difference-file part of the last [`Ready`](super::Ready).
    pub fn persisted(&mut self, now: Micros, report: Persisted) {
        self.appended_through = self.appended_through.max(report.appended_through);
        self.durable_through = self.durable_through.max(report.durable_through);
        self.log_bytes = report.bytes;
        if let Some(error) = report.error {
            let reason = format!("cannot write the difference file: {error}");
            self.require_resync(reason.clone());
            // Nothing more will become durable: settle who waits for it.
            let note = format!(" (its difference-file record may be lost: {error})");
            for (seq, outcome) in std::mem::take(&mut self.awaiting_durable) {
                self.ready.outcomes.push((seq, with_note(outcome, &note)));
            }
            if self.state == LinkState::CatchingUp {
                self.go_down(now, reason);
            }
            return;
        }
        let durable = self.durable_through;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.awaiting_durable)
            .into_iter()
            .partition(|(seq, _)| *seq <= durable);
        self.awaiting_durable = waiting;
        self.ready.outcomes.extend(ready);
        if self.state == LinkState::CatchingUp {
            self.pump(now);
        }
    }

    /// A sync transaction's waiter gave up on `seq` at its own deadline (the shell did
    /// not carry out the link's output in time). An undecided one is settled, with
    /// every other undecided sync transaction, as the link's own sync timeout does:
    /// the peer is treated as down. One committed alone whose record is not durable
    /// yet is released as it is, saying so.
    pub fn expire_sync(&mut self, now: Micros, seq: Seq) {
        let undecided = self
            .window
            .get_mut(seq)
            .is_some_and(|e| matches!(e.status, Status::Preparing { .. }));
        if undecided {
            return self.go_down(
                now,
                format!("sync transaction {seq} got no answer before its waiter's deadline"),
            );
        }
        if let Some(i) = self.awaiting_durable.iter().position(|(s, _)| *s == seq) {
            let (seq, outcome) = self.awaiting_durable.remove(i);
            let note = " (its difference-file record was not yet durable at the waiter's deadline)";
            self.ready.outcomes.push((seq, with_note(outcome, note)));
        }
    }

    pub(super) fn diverge(&mut self, since_seq: Seq, reason: String) {
        if !self.diverged {
            self.diverged = true;
            self.ready
                .events
                .push(Event::Diverged { since_seq, reason });
        }
    }

    pub(super) fn require_resync(&mut self, reason: String) {
        if self.resync_required.is_none() {
            self.resync_required = Some(reason.clone());
            self.ready.events.push(Event::ResyncRequired { reason });
        }
    }

    /// Hands a record of `len` encoded bytes to the shell for the difference file
    /// (unless the file is past its cap).
    pub(super) fn record(&mut self, record: LogRecord, len: usize) {
        self.diverge(record.seq, self.down_reason());
        if self.resync_required.is_some() {
            return;
        }
        self.log_last_seq = Some(record.seq);
        self.log_bytes += len as u64;
        self.unsynced = true;
        self.ready.persist.push(record);
        if self.log_bytes > self.config.difference_cap_bytes {
            self.require_resync(format!(
                "difference file holds {} bytes (cap {})",
                self.log_bytes, self.config.difference_cap_bytes
            ));
        }
    }

    /// Duplex or catching up → degraded: settle undecided sync transactions by their
    /// rule, move the window to the difference file (made durable at once), ask the
    /// shell to close.
    pub(super) fn go_down(&mut self, now: Micros, reason: String) {
        tracing::info!("replication link down: {reason}");
        self.state = LinkState::Degraded;
        // Messages for the connection being dropped; the window goes to the
        // difference file and is replayed from there.
        self.ready.messages.clear();
        self.out_bytes = 0;
        self.catch_up = None;
        let resyncing = self.resync.take().is_some();
        self.ready.close = true;
        self.down_since = now;
        self.reconnect_at = now;
        if resyncing {
            // A resync that failed is tried again after a growing pause, so that
            // whatever made it fail cannot turn it into a busy loop.
            self.reconnect_at = now + self.reconnect_delay_us;
            self.reconnect_delay_us =
                (self.reconnect_delay_us * 2).min(super::micros(self.config.reconnect_max));
        }
        self.diverge(self.acked.next(), reason.clone());
        for mut e in self.window.take_all() {
            if let Status::Preparing { when_down, .. } = e.status {
                match when_down {
                    WhenPeerDown::Continue => {
                        e.status = Status::Committed;
                        let outcome = SyncOutcome::CommittedAlone {
                            reason: reason.clone(),
                        };
                        self.awaiting_durable.push((e.seq, outcome));
                    }
                    WhenPeerDown::Fail => {
                        e.status = Status::Aborted;
                        let outcome = SyncOutcome::OutcomeUnknown {
                            reason: reason.clone(),
                        };
                        self.ready.outcomes.push((e.seq, outcome));
                    }
                }
            }
            if matches!(e.status, Status::Aborted) {
                self.rolled_back.insert(e.seq);
            }
            let (mode, operations) = match e.status {
                Status::Aborted => (Mode::Skip, Writes::new(Vec::new())),
                // The message that shipped them is gone by now, or still to be
                // written (then it and the record share the same bytes).
                _ => (e.mode, e.operations),
            };
            let record = LogRecord {
                seq: e.seq,
                epoch: self.config.epoch,
                mode,
                operations,
            };
            let len = record.frame_len();
            self.record(record, len);
        }
        self.ready.sync_log = true;
        self.unsynced = false;
    }

    /// A node promoted at `epoch` after `takeover_seq` answered: this primary is
    /// replaced. It raises [`Event::Fenced`] once (with the sequences only this
    /// primary has), refuses every later submission, and stops connecting.
    pub(super) fn fence(&mut self, epoch: Epoch, takeover_seq: Seq) {
        if self.fenced.is_none() {
            tracing::warn!("fenced by the primary of {epoch} (took over after {takeover_seq})");
            let divergent = (self.seq > takeover_seq).then(|| (takeover_seq.next(), self.seq));
            // Rolled back here but perhaps committed there: still in the window (the
            // connection is up) or already moved out of it (it went down before).
            for e in self
                .window
                .iter()
                .filter(|e| matches!(e.status, Status::Aborted))
            {
                self.rolled_back.insert(e.seq);
            }
            let (rolled_back, whole) = self.rolled_back.between(self.acked, takeover_seq);
            self.rejoin = Some(super::rejoin::rejoin(
                epoch,
                takeover_seq,
                self.seq,
                &rolled_back,
                whole,
            ));
            self.ready.events.push(Event::Fenced {
                epoch,
                takeover_seq,
                divergent,
                rolled_back,
            });
            self.fenced = Some(epoch);
        }
        self.ready.close = true;
    }
}
