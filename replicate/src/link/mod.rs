//! The primary's side of the link to its peer, as a pure state machine (the raft-rs
//! way): inputs in ([`submit`](Link::submit), [`receive`](Link::receive),
//! [`tick`](Link::tick), connection changes, and what the shell did with the last
//! output: [`persisted`](Link::persisted), [`replayed`](Link::replayed)), one
//! [`Ready`] out. No I/O, no clock, no threads: the shell owns the socket and the
//! difference file and carries out each `Ready`.
//!
//! Sequence discipline: every non-skip transaction gets the next sequence, and every
//! sequence reaches the peer in order — as a `Ship`, a `Prepare` (then `Commit` or
//! `Abort`), or, after an outage, replayed from the difference file. The peer's
//! acknowledged sequence therefore means "everything up to here is resolved there",
//! and everything above it is either in the in-memory window (duplex) or in the
//! difference file (degraded, catching up).
//!
//! Durability, per mode, while the peer is down (the transaction goes to the
//! difference file): a sync transaction whose rule says `continue` is settled
//! ([`SyncOutcome::CommittedAlone`]) only once its record is durable (the shell
//! reports it through [`Persisted::durable_through`]); async and ordered
//! transactions return at once, and their records become durable with the next batch
//! (one fsync per tick).

mod config;
mod event;
mod metrics;
mod outcome;
mod ready;
mod window;

use kirikae_engine::{Key, Operation};

pub use config::{LinkConfig, LinkState};
pub use event::Event;
pub use metrics::LinkMetrics;
pub use outcome::{Submitted, SyncOutcome};
pub use ready::{LogState, Persisted, ReadRequest, Ready};

use crate::error::{ReplicateError, Result, WireError};
use crate::frame;
use crate::mode::{Mode, WhenPeerDown};
use crate::record_log::{LogRecord, MAX_RECORD_BYTES};
use crate::seq::Seq;
use crate::wire::{Message, PROTOCOL_VERSION};
use window::{Entry, Status, Window};

/// Output a catch-up produces before the shell sends it.
const CATCHUP_BYTES_PER_ROUND: usize = 4 << 20;

/// Microseconds on the shell's monotonic clock.
pub type Micros = u64;

/// A catch-up in progress.
#[derive(Debug)]
struct CatchUp {
    /// Tells this catch-up's reads from an earlier one's.
    id: u64,
    /// Highest sequence sent from the difference file.
    cursor: Seq,
    replayed: u64,
    paused_at: Option<Micros>,
    /// A read was asked for and not answered yet.
    reading: bool,
}

/// The primary's side of one link (see the module docs).
pub struct Link {
    config: LinkConfig,
    state: LinkState,
    /// Highest sequence assigned.
    seq: Seq,
    /// Highest sequence the peer has resolved, as far as we know.
    acked: Seq,
    /// Highest sequence sent.
    sent: Seq,
    window: Window,
    catch_up: Option<CatchUp>,
    catch_ups: u64,
    /// Raised `Diverged` and not yet `Recovered`.
    diverged: bool,
    resync_required: bool,
    /// Highest sequence handed to the shell for the difference file.
    log_last_seq: Option<Seq>,
    /// Reported by the shell: readable from the difference file up to here.
    appended_through: Seq,
    /// Reported by the shell: durable up to here.
    durable_through: Seq,
    /// The difference file's size (reported by the shell, plus what is on its way).
    log_bytes: u64,
    /// Records handed over since the last fsync was asked for.
    unsynced: bool,
    /// Outcomes of sync transactions committed alone, released once their record is
    /// durable.
    awaiting_durable: Vec<(Seq, SyncOutcome)>,
    shipped_count: u64,
    last_heard: Micros,
    last_sent_at: Micros,
    down_since: Micros,
    reconnect_at: Micros,
    reconnect_delay_us: Micros,
    metrics: LinkMetrics,
    ready: Ready,
    /// Encoded size of `ready.messages`.
    out_bytes: usize,
}

fn micros(d: std::time::Duration) -> Micros {
    d.as_micros().min(u64::MAX as u128) as u64
}

impl Link {
    /// A link that starts degraded (no peer yet) over a difference file in state
    /// `log`, whose last sequence (a primary restarting while degraded) seeds the
    /// sequence counter.
    pub fn new(config: LinkConfig, log: LogState, now: Micros) -> Link {
        let last = log.last_seq.unwrap_or(Seq::ZERO);
        let reconnect_delay_us = micros(config.reconnect_min);
        Link {
            config,
            state: LinkState::Degraded,
            seq: last,
            acked: Seq::ZERO,
            sent: Seq::ZERO,
            window: Window::default(),
            catch_up: None,
            catch_ups: 0,
            diverged: false,
            resync_required: false,
            log_last_seq: log.last_seq,
            appended_through: last,
            durable_through: last,
            log_bytes: log.bytes,
            unsynced: false,
            awaiting_durable: Vec::new(),
            shipped_count: 0,
            last_heard: now,
            last_sent_at: now,
            down_since: now,
            reconnect_at: now,
            reconnect_delay_us,
            metrics: LinkMetrics::default(),
            ready: Ready::default(),
            out_bytes: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Whether new transactions must wait: the last stretch of a catch-up is draining.
    pub fn paused(&self) -> bool {
        self.catch_up
            .as_ref()
            .is_some_and(|c| c.paused_at.is_some())
    }

    /// What the shell has to do, gathered since the last call (see [`Ready`]).
    pub fn ready(&mut self) -> Ready {
        self.out_bytes = 0;
        std::mem::take(&mut self.ready)
    }

    /// Takes the outcome of `seq` out of the pending [`Ready`], if it is there: for a
    /// commit that settled its own transaction ([`expire_sync`](Link::expire_sync))
    /// and cannot wait for the shell to deliver it.
    pub fn take_outcome(&mut self, seq: Seq) -> Option<SyncOutcome> {
        let i = self.ready.outcomes.iter().position(|(s, _)| *s == seq)?;
        Some(self.ready.outcomes.remove(i).1)
    }

    /// Takes only the events and sync outcomes of the pending [`Ready`] (the part
    /// that needs no I/O), leaving the rest for the shell: so that a thread other than
    /// the shell's (the connection reader) can hand outcomes to waiting commits at
    /// once.
    pub fn take_notices(&mut self) -> (Vec<Event>, Vec<(Seq, SyncOutcome)>) {
        (
            std::mem::take(&mut self.ready.events),
            std::mem::take(&mut self.ready.outcomes),
        )
    }

    /// Whether [`ready`](Link::ready) has anything.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The handshake this side sends first on a new connection.
    pub fn hello(&self) -> Message {
        Message::Hello {
            version: PROTOCOL_VERSION,
            epoch: self.config.epoch,
            node: self.config.node.clone(),
            last_seq: self.seq,
        }
    }

    /// Whether the shell should try to connect now (with backoff while degraded).
    pub fn reconnect_due(&self, now: Micros) -> bool {
        self.state == LinkState::Degraded && now >= self.reconnect_at
    }

    /// A connection attempt failed: back off.
    pub fn connect_failed(&mut self, now: Micros) {
        self.reconnect_at = now + self.reconnect_delay_us;
        self.reconnect_delay_us =
            (self.reconnect_delay_us * 2).min(micros(self.config.reconnect_max));
    }

    /// A connection is up and the peer's handshake said it has resolved everything up
    /// to `peer_last_seq`. Starts the catch-up (or refuses a peer that cannot be
    /// caught up, raising `ResyncRequired` and asking to close).
    pub fn connected(&mut self, now: Micros, peer_last_seq: Seq) {
        debug_assert_eq!(self.state, LinkState::Degraded, "connected twice");
        debug_assert!(self.window.is_empty(), "window spilled when going down");
        self.metrics.connects += 1;
        self.reconnect_delay_us = micros(self.config.reconnect_min);
        let refuse = if self.resync_required {
            Some("the difference file passed its cap".to_owned())
        } else if peer_last_seq < self.acked {
            Some(format!(
                "peer lost acknowledged transactions: it has {peer_last_seq}, had acknowledged {}",
                self.acked
            ))
        } else if peer_last_seq > self.seq {
            Some(format!(
                "peer is ahead of this primary: it has {peer_last_seq}, this primary {}",
                self.seq
            ))
        } else if peer_last_seq < self.seq && self.log_last_seq.is_none_or(|l| l < self.seq) {
            Some(format!(
                "sequences {}..={} are not in the difference file",
                peer_last_seq.next(),
                self.seq
            ))
        } else {
            None
        };
        if let Some(reason) = refuse {
            self.require_resync(reason);
            self.ready.close = true;
            self.reconnect_at = now + micros(self.config.reconnect_max);
            return;
        }
        self.acked = peer_last_seq;
        self.sent = peer_last_seq;
        self.last_heard = now;
        self.last_sent_at = now;
        self.state = LinkState::CatchingUp;
        self.catch_ups += 1;
        self.catch_up = Some(CatchUp {
            id: self.catch_ups,
            cursor: peer_last_seq,
            replayed: 0,
            paused_at: None,
            reading: false,
        });
        self.retire(peer_last_seq);
        self.pump(now);
    }

    /// The connection is gone.
    pub fn disconnected(&mut self, now: Micros, reason: &str) {
        if self.state != LinkState::Degraded {
            self.go_down(now, reason.to_owned());
        }
    }

    /// Offers a committed-to-be transaction with the mode its rules gave it.
    /// `responses` computes the primary's response digests when they are needed.
    /// Fails without assigning a sequence if the transaction is larger than a frame
    /// or a difference-file record.
    pub fn submit(
        &mut self,
        now: Micros,
        mode: Mode,
        when_down: WhenPeerDown,
        operations: Vec<Operation>,
        responses: impl FnOnce() -> Vec<u64>,
    ) -> Result<Submitted> {
        debug_assert!(mode != Mode::Skip, "skip transactions get no sequence");
        debug_assert!(!self.paused(), "submissions wait while a catch-up drains");
        let seq = self.seq.next();
        let epoch = self.config.epoch;
        if self.state != LinkState::Duplex {
            if mode == Mode::Sync && when_down == WhenPeerDown::Fail {
                return Ok(Submitted::Settled {
                    seq: None,
                    outcome: SyncOutcome::PeerDown {
                        reason: self.down_reason(),
                    },
                });
            }
            let record = LogRecord {
                seq,
                epoch,
                mode,
                operations,
            };
            let len = frame::encoded_len(&record);
            if len > MAX_RECORD_BYTES {
                return Err(too_large(len, MAX_RECORD_BYTES));
            }
            self.seq = seq;
            self.record(record, len);
            if mode != Mode::Sync {
                return Ok(Submitted::Queued { seq });
            }
            let outcome = SyncOutcome::CommittedAlone {
                reason: self.down_reason(),
            };
            self.awaiting_durable.push((seq, outcome));
            return Ok(Submitted::Waiting { seq });
        }
        let (message, responses, status) = if mode == Mode::Sync {
            let deadline = now + micros(self.config.sync_timeout);
            (
                Message::Prepare {
                    seq,
                    epoch,
                    operations,
                },
                Some(responses()),
                Status::Preparing {
                    deadline,
                    when_down,
                },
            )
        } else {
            self.shipped_count += 1;
            let verify =
                self.config.verify_every > 0 && self.shipped_count % self.config.verify_every == 0;
            (
                Message::Ship {
                    seq,
                    epoch,
                    mode,
                    operations,
                    verify,
                },
                verify.then(responses),
                Status::Shipped,
            )
        };
        let len = frame::encoded_len(&message);
        if len - frame::HEADER_BYTES > self.config.frame_bytes_max {
            return Err(too_large(
                len - frame::HEADER_BYTES,
                self.config.frame_bytes_max,
            ));
        }
        let operations = match &message {
            Message::Prepare { operations, .. } | Message::Ship { operations, .. } => {
                operations.clone()
            }
            _ => Vec::new(),
        };
        self.seq = seq;
        self.sent = seq;
        self.send(now, message);
        let waiting = matches!(status, Status::Preparing { .. });
        self.window.push(Entry {
            seq,
            mode,
            operations,
            responses,
            sent_at: now,
            status,
        });
        let overflow = if self.window.len() > self.config.window_txns_max {
            Some(format!(
                "peer is {} transactions behind (limit {})",
                self.window.len(),
                self.config.window_txns_max
            ))
        } else if self.out_bytes > self.config.output_bytes_max {
            Some(format!(
                "{} bytes wait to be sent to the peer (limit {})",
                self.out_bytes, self.config.output_bytes_max
            ))
        } else {
            None
        };
        if let Some(reason) = overflow {
            self.go_down(now, reason);
            // A just-sent sync transaction is settled by going down: at once if its
            // rule says fail, once its record is durable if it says continue.
            if let Some(i) = self.ready.outcomes.iter().position(|(s, _)| *s == seq) {
                let (_, outcome) = self.ready.outcomes.remove(i);
                return Ok(Submitted::Settled {
                    seq: Some(seq),
                    outcome,
                });
            }
        }
        Ok(if waiting {
            Submitted::Waiting { seq }
        } else {
            Submitted::Queued { seq }
        })
    }

    /// A message from the peer.
    pub fn receive(&mut self, now: Micros, message: Message) {
        if self.state == LinkState::Degraded {
            return;
        }
        self.last_heard = now;
        match message {
            Message::Ack { seq } | Message::Heartbeat { last_seq: seq, .. } => self.ack(seq),
            Message::Prepared { seq, responses } => self.prepared(seq, responses),
            Message::Applied { seq, responses } => {
                let expected = self.window.get_mut(seq).and_then(|e| e.responses.take());
                if let Some(expected) = expected {
                    self.compare(seq, &expected, &responses);
                }
            }
            Message::Rejected { seq, reason } => self.rejected(seq, reason),
            Message::Hello { .. }
            | Message::Ship { .. }
            | Message::Prepare { .. }
            | Message::Commit { .. }
            | Message::Abort { .. } => {
                self.go_down(now, "peer sent a primary's message".into());
            }
        }
    }

    /// Advances time: asks for an fsync of what was handed to the difference file
    /// (one per tick's batch), heartbeats, timeouts, catch-up progress.
    pub fn tick(&mut self, now: Micros) {
        if std::mem::take(&mut self.unsynced) {
            self.ready.sync_log = true;
        }
        match self.state {
            LinkState::Degraded => return,
            LinkState::CatchingUp => self.pump(now),
            LinkState::Duplex => {}
        }
        if self.state == LinkState::Degraded {
            return;
        }
        let timeout = micros(self.config.peer_timeout);
        if now.saturating_sub(self.last_heard) > timeout {
            let ms = (now - self.last_heard) / 1000;
            return self.go_down(now, format!("no word from the peer for {ms} ms"));
        }
        let expired = self.window.iter().find_map(|e| match e.status {
            Status::Preparing { deadline, .. } if now >= deadline => Some(e.seq),
            _ => None,
        });
        if let Some(seq) = expired {
            return self.go_down(now, format!("sync transaction {seq} timed out"));
        }
        if let Some(front) = self.window.front() {
            if now.saturating_sub(front.sent_at) > timeout {
                let seq = front.seq;
                return self.go_down(now, format!("acknowledgement of {seq} overdue"));
            }
        }
        if now.saturating_sub(self.last_sent_at) >= micros(self.config.heartbeat_every) {
            let beat = Message::Heartbeat {
                epoch: self.config.epoch,
                last_seq: self.sent,
            };
            self.send(now, beat);
        }
    }

    /// What the shell did with the difference-file part of the last [`Ready`].
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

    /// The records a [`ReadRequest`] asked for (or why they could not be read).
    pub fn replayed(
        &mut self,
        now: Micros,
        catch_up: u64,
        batch: std::result::Result<Vec<LogRecord>, String>,
    ) {
        let epoch = self.config.epoch;
        let Some(cu) = self.catch_up.as_mut().filter(|c| c.id == catch_up) else {
            return;
        };
        cu.reading = false;
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                let reason = format!("cannot read the difference file: {e}");
                self.require_resync(reason.clone());
                return self.go_down(now, reason);
            }
        };
        if batch.is_empty() {
            return;
        }
        let mut messages = Vec::with_capacity(batch.len());
        for r in batch {
            if r.seq != cu.cursor.next() {
                let reason = format!(
                    "the difference file jumps from {} to {}: the peer needs a full resync",
                    cu.cursor, r.seq
                );
                self.require_resync(reason.clone());
                return self.go_down(now, reason);
            }
            cu.cursor = r.seq;
            cu.replayed += 1;
            messages.push(if r.mode == Mode::Skip {
                Message::Abort { seq: r.seq }
            } else {
                Message::Ship {
                    seq: r.seq,
                    epoch,
                    mode: r.mode,
                    operations: r.operations,
                    verify: false,
                }
            });
        }
        self.sent = cu.cursor;
        for m in messages {
            self.send(now, m);
        }
        self.pump(now);
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

    /// Current numbers.
    pub fn metrics(&self, now: Micros) -> LinkMetrics {
        let mut m = self.metrics.clone();
        m.state = Some(self.state);
        m.last_seq = self.seq;
        m.last_sent_seq = self.sent;
        m.last_acked_seq = self.acked;
        m.lag_ops = self.seq.since(self.acked);
        m.lag_ms = match (self.state, self.window.front()) {
            (LinkState::Duplex, Some(e)) => now.saturating_sub(e.sent_at) / 1000,
            (LinkState::Duplex, None) => 0,
            _ if m.lag_ops == 0 => 0,
            _ => now.saturating_sub(self.down_since) / 1000,
        };
        m.difference_bytes = self.log_bytes;
        m
    }

    fn down_reason(&self) -> String {
        match self.state {
            LinkState::Degraded => "peer is down".into(),
            _ => "peer is catching up".into(),
        }
    }

    /// Queues a message for the peer.
    fn send(&mut self, now: Micros, message: Message) {
        self.queue(message);
        self.last_sent_at = now;
    }

    /// Queues a message for the peer without counting it as activity (a decision
    /// about a transaction already sent is not a heartbeat).
    fn queue(&mut self, message: Message) {
        self.out_bytes += frame::encoded_len(&message);
        self.ready.messages.push(message);
    }

    fn ack(&mut self, seq: Seq) {
        if seq <= self.acked {
            return;
        }
        self.acked = seq.min(self.sent);
        self.window.ack_through(self.acked);
        self.retire(self.acked);
    }

    fn retire(&mut self, seq: Seq) {
        let through = self.ready.retire_through.map_or(seq, |r| r.max(seq));
        self.ready.retire_through = Some(through);
    }

    fn prepared(&mut self, seq: Seq, responses: Vec<u64>) {
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
                Message::Commit { seq },
                SyncOutcome::Replicated,
            ),
            Some(reason) => (
                Status::Aborted,
                Message::Abort { seq },
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
    fn compare(&mut self, seq: Seq, expected: &[u64], got: &[u64]) -> Option<String> {
        let at = if expected.len() != got.len() {
            Some(expected.len().min(got.len()))
        } else {
            expected.iter().zip(got).position(|(a, b)| a != b)
        }?;
        let (table, key) = self
            .window
            .get_mut(seq)
            .and_then(|e| e.operations.get(at))
            .map(|op| (op.table().to_owned(), operation_key(op)))
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

    fn rejected(&mut self, seq: Seq, reason: String) {
        let Some(e) = self.window.get_mut(seq) else {
            return;
        };
        if matches!(e.status, Status::Preparing { .. }) {
            e.status = Status::Aborted;
            self.queue(Message::Abort { seq });
            self.ready.outcomes.push((
                seq,
                SyncOutcome::Refused {
                    reason: format!("peer refused: {reason}"),
                },
            ));
        } else {
            self.metrics.apply_errors += 1;
            self.diverge(seq, format!("peer could not apply {seq}: {reason}"));
        }
    }

    fn diverge(&mut self, since_seq: Seq, reason: String) {
        if !self.diverged {
            self.diverged = true;
            self.ready
                .events
                .push(Event::Diverged { since_seq, reason });
        }
    }

    fn require_resync(&mut self, reason: String) {
        if !self.resync_required {
            self.resync_required = true;
            self.ready.events.push(Event::ResyncRequired { reason });
        }
    }

    /// Hands a record of `len` encoded bytes to the shell for the difference file
    /// (unless the file is past its cap).
    fn record(&mut self, record: LogRecord, len: usize) {
        self.diverge(record.seq, self.down_reason());
        if self.resync_required {
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
    fn go_down(&mut self, now: Micros, reason: String) {
        tracing::info!("replication link down: {reason}");
        self.state = LinkState::Degraded;
        // Messages for the connection being dropped; the window goes to the
        // difference file and is replayed from there.
        self.ready.messages.clear();
        self.out_bytes = 0;
        self.catch_up = None;
        self.ready.close = true;
        self.down_since = now;
        self.reconnect_at = now;
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
            let (mode, operations) = match e.status {
                Status::Aborted => (Mode::Skip, Vec::new()),
                _ => (e.mode, e.operations),
            };
            let record = LogRecord {
                seq: e.seq,
                epoch: self.config.epoch,
                mode,
                operations,
            };
            let len = frame::encoded_len(&record);
            self.record(record, len);
        }
        self.ready.sync_log = true;
        self.unsynced = false;
    }

    /// Catch-up: asks for the next batch from the difference file; at the end goes
    /// duplex and raises `Recovered`.
    fn pump(&mut self, now: Micros) {
        let Some(cu) = self.catch_up.as_mut() else {
            return;
        };
        if cu.reading {
            return;
        }
        let remaining = self.seq.since(cu.cursor);
        if remaining == 0 {
            return self.finish_catch_up(now);
        }
        if remaining <= self.config.pause_within_txns && cu.paused_at.is_none() {
            cu.paused_at = Some(now);
        }
        let in_flight = cu.cursor.since(self.acked);
        let room = self.config.catchup_window_txns.saturating_sub(in_flight);
        let limit = (room as usize).min(self.config.catchup_batch_txns);
        // Paced by the peer's acknowledgements, by what the shell has yet to send, and
        // by what the difference file holds so far.
        if limit == 0
            || self.out_bytes >= CATCHUP_BYTES_PER_ROUND
            || cu.cursor >= self.appended_through
        {
            return;
        }
        cu.reading = true;
        self.ready.read = Some(ReadRequest {
            catch_up: cu.id,
            after: cu.cursor,
            limit,
        });
    }

    fn finish_catch_up(&mut self, now: Micros) {
        let Some(cu) = self.catch_up.take() else {
            return;
        };
        let pause_us = cu.paused_at.map_or(0, |at| now.saturating_sub(at));
        self.metrics.replayed += cu.replayed;
        self.state = LinkState::Duplex;
        if std::mem::take(&mut self.diverged) || cu.replayed > 0 {
            self.ready.events.push(Event::Recovered {
                ops_replayed: cu.replayed,
                pause_us,
            });
        }
    }
}

fn too_large(len: usize, max: usize) -> ReplicateError {
    ReplicateError::Wire(WireError::TooLarge {
        offset: 0,
        len: len as u64,
        max: max as u64,
    })
}

/// `outcome` with `note` added to its reason.
fn with_note(outcome: SyncOutcome, note: &str) -> SyncOutcome {
    match outcome {
        SyncOutcome::CommittedAlone { reason } => SyncOutcome::CommittedAlone {
            reason: reason + note,
        },
        other => other,
    }
}

/// The key an operation addresses (an insert's is in its row; shown as the row).
fn operation_key(op: &Operation) -> Key {
    match op {
        Operation::Update { key, .. } | Operation::Delete { key, .. } => key.clone(),
        Operation::Insert { row, .. } => Key::new(row.clone()),
    }
}
