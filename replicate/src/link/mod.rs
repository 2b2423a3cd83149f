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
//!
//! Here: the state, submissions, heartbeats and timeouts. The peer's answers are in
//! `answers.rs`, the catch-up after a reconnection in `catch_up.rs`, going down and
//! what the difference file reports in `down.rs`.

mod answers;
mod catch_up;
mod config;
mod down;
mod event;
mod metrics;
mod outcome;
mod pacing;
mod ready;
mod rejoin;
mod resync;
mod window;

pub use config::{LinkConfig, LinkState};
pub use event::Event;
pub use metrics::LinkMetrics;
pub use outcome::{Submitted, SyncOutcome};
pub use ready::{LogState, Persisted, ReadRequest, Ready};
pub use rejoin::Rejoin;
pub use resync::{CopyOrder, CopyPiece};

use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result, WireError};
use crate::frame;
use crate::mode::{Mode, WhenPeerDown};
use crate::record_log::{LogRecord, MAX_RECORD_BYTES};
use crate::seq::Seq;
use crate::wire::{self, Message, PROTOCOL_VERSION};
use crate::writes::Writes;
use catch_up::CatchUp;
use rejoin::RolledBack;
use window::{Entry, Status, Window};

/// Microseconds on the shell's monotonic clock.
pub type Micros = u64;

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
    resync: Option<resync::ResyncOut>,
    resyncs: u64,
    pacing: pacing::Pacing,
    /// Raised `Diverged` and not yet `Recovered`.
    diverged: bool,
    /// Replaced by the primary of this (higher) epoch: no more submissions.
    fenced: Option<Epoch>,
    /// Once fenced: the way back as a backup.
    rejoin: Option<Rejoin>,
    /// Sync transactions rolled back here, their end not yet acknowledged.
    rolled_back: RolledBack,
    /// Why the peer must be resynced, until a resync ends.
    resync_required: Option<String>,
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
    /// An emptied message list the shell gave back, for the next `Ready`.
    spare_messages: Vec<Message>,
}

/// A message list given back is kept for reuse up to this capacity.
const SPARE_MESSAGES_MAX: usize = 4096;

fn micros(d: std::time::Duration) -> Micros {
    d.as_micros().min(u64::MAX as u128) as u64
}

impl Link {
    /// A link that starts degraded (no peer yet) over a difference file in state
    /// `log`, whose last sequence (a primary restarting while degraded) seeds the
    /// sequence counter.
    pub fn new(config: LinkConfig, log: LogState, now: Micros) -> Link {
        // Nothing below `start_after` is this primary's to persist or replay.
        let start = config.start_after;
        let last = log.last_seq.unwrap_or(Seq::ZERO).max(start);
        let reconnect_delay_us = micros(config.reconnect_min);
        Link {
            config,
            state: LinkState::Degraded,
            seq: last,
            // The takeover sequence is where the new backup must already be.
            acked: start,
            sent: start,
            window: Window::default(),
            catch_up: None,
            catch_ups: 0,
            resync: None,
            resyncs: 0,
            pacing: pacing::Pacing::default(),
            diverged: false,
            fenced: None,
            rejoin: None,
            rolled_back: RolledBack::default(),
            resync_required: None,
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
            spare_messages: Vec::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Once fenced: how this primary can come back as its successor's backup.
    pub fn rejoin(&self) -> Option<&Rejoin> {
        self.rejoin.as_ref()
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
        let ready = std::mem::take(&mut self.ready);
        self.ready.messages = std::mem::take(&mut self.spare_messages);
        ready
    }

    /// Gives back the emptied message list of a carried-out [`Ready`]: the next one
    /// reuses it instead of growing a new list, message by message, under the lock
    /// every commit takes.
    pub fn recycle(&mut self, messages: Vec<Message>) {
        debug_assert!(messages.is_empty(), "messages are dropped before");
        if messages.capacity() <= SPARE_MESSAGES_MAX {
            self.spare_messages = messages;
        }
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

    /// Takes the pending messages alone, when nothing in the pending [`Ready`] must
    /// be carried out before them (difference-file appends, reads, a copy, a close)
    /// and the link is duplex: for a committing thread that sends its own
    /// transaction's frame while the link thread sleeps. The rest (retirements,
    /// released entries, notices) stays for the shell. `None` if they cannot go
    /// alone; an empty list if there are none.
    pub fn take_messages(&mut self) -> Option<Vec<Message>> {
        if self.state != LinkState::Duplex || self.ready.has_work_around_messages() {
            return None;
        }
        if self.ready.messages.is_empty() {
            return Some(Vec::new());
        }
        self.out_bytes = 0;
        let spare = std::mem::take(&mut self.spare_messages);
        Some(std::mem::replace(&mut self.ready.messages, spare))
    }

    /// Whether [`ready`](Link::ready) has anything the shell should carry out now
    /// rather than on its next turn: everything but commit decisions and retired
    /// records. A sync transaction's `Commit` or `Abort` follows the peer's
    /// `Prepared`; waking the link thread just to send it costs a wake-up on each
    /// side and a frame of its own, while the next submission's frame (or the
    /// shell's next tick) carries it for free. Its committing thread does not wait
    /// for it: the outcome is a notice. Acknowledgements retire records and release
    /// entries, which can wait for the next turn too; except during a catch-up,
    /// where each may open room for the next batch, which the link's next turn asks
    /// for (so everything is urgent then, as it always was).
    pub fn has_urgent_ready(&self) -> bool {
        let r = &self.ready;
        self.state == LinkState::CatchingUp
            || r.has_work_around_messages()
            || !r.events.is_empty()
            || !r.outcomes.is_empty()
            || r.messages
                .iter()
                .any(|m| !matches!(m, Message::Commit { .. } | Message::Abort { .. }))
    }

    /// The handshake this side sends first on a new connection.
    pub fn hello(&self) -> Message {
        Message::Hello {
            version: PROTOCOL_VERSION,
            epoch: self.config.epoch,
            node: self.config.node.clone(),
            last_seq: self.seq,
            nonce: [0; 32],
        }
    }

    /// Whether the shell should try to connect now (with backoff while degraded;
    /// never once fenced).
    pub fn reconnect_due(&self, now: Micros) -> bool {
        self.state == LinkState::Degraded && self.fenced.is_none() && now >= self.reconnect_at
    }

    /// The epoch of the primary that replaced this one, once fenced.
    pub fn fenced(&self) -> Option<Epoch> {
        self.fenced
    }

    /// A connection attempt failed: back off.
    pub fn connect_failed(&mut self, now: Micros) {
        self.reconnect_at = now + self.reconnect_delay_us;
        self.reconnect_delay_us =
            (self.reconnect_delay_us * 2).min(micros(self.config.reconnect_max));
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
        operations: Writes,
        responses: impl FnOnce() -> Vec<u64>,
    ) -> Result<Submitted> {
        debug_assert!(mode != Mode::Skip, "skip transactions get no sequence");
        debug_assert!(!self.paused(), "submissions wait while a catch-up drains");
        if let Some(by) = self.fenced {
            return Err(ReplicateError::Fenced {
                epoch: self.config.epoch,
                by,
            });
        }
        let seq = self.seq.next();
        let epoch = self.config.epoch;
        // While a resync copies the tables the peer holds nothing usable: a sync
        // transaction is settled by its rule, as while it is down, but every
        // transaction is shipped at once (the peer logs it beside the copy).
        let resyncing = self.state == LinkState::Resyncing;
        if self.state != LinkState::Duplex && mode == Mode::Sync && when_down == WhenPeerDown::Fail
        {
            return Ok(Submitted::Settled {
                seq: None,
                outcome: SyncOutcome::PeerDown {
                    reason: self.down_reason(),
                },
            });
        }
        if self.state != LinkState::Duplex && !resyncing {
            let record = LogRecord {
                seq,
                epoch,
                mode,
                operations,
            };
            let len = record.frame_len();
            if len > MAX_RECORD_BYTES {
                return Err(too_large(len, MAX_RECORD_BYTES));
            }
            // The catch-up ships this record in a frame of its own: one that cannot
            // fit would stop the catch-up there for good, and every later commit
            // with it. Refused now, before it has a sequence.
            let shipped = len - frame::HEADER_BYTES + SHIP_EXTRA_BYTES_MAX;
            if shipped > self.config.frame_bytes_max {
                return Err(too_large(shipped, self.config.frame_bytes_max));
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
        let (message, responses, status) = if resyncing {
            (
                Message::Ship {
                    seq,
                    epoch,
                    mode,
                    operations: operations.clone(),
                    verify: false,
                },
                None,
                Status::Shipped,
            )
        } else if mode == Mode::Sync {
            let deadline = now + micros(self.config.sync_timeout);
            let responses = responses();
            (
                Message::Prepare {
                    seq,
                    epoch,
                    operations: operations.clone(),
                    responses: responses.clone(),
                },
                Some(responses),
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
                    operations: operations.clone(),
                    verify,
                },
                verify.then(responses),
                Status::Shipped,
            )
        };
        let len = wire::encoded_len(&message);
        if len - frame::HEADER_BYTES > self.config.frame_bytes_max {
            return Err(too_large(
                len - frame::HEADER_BYTES,
                self.config.frame_bytes_max,
            ));
        }
        self.seq = seq;
        self.sent = seq;
        self.send_sized(now, message, len);
        let waiting = matches!(status, Status::Preparing { .. });
        self.window.push(Entry {
            seq,
            mode,
            operations,
            responses,
            sent_at: now,
            status,
            bytes: len,
        });
        self.note_held();
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
        } else if resyncing && mode == Mode::Sync {
            Submitted::Settled {
                seq: Some(seq),
                outcome: SyncOutcome::CommittedAlone {
                    reason: self.down_reason(),
                },
            }
        } else {
            Submitted::Queued { seq }
        })
    }

    /// Advances time: asks for an fsync of what was handed to the difference file
    /// (one per tick's batch), heartbeats, timeouts, catch-up progress.
    pub fn tick(&mut self, now: Micros) {
        if std::mem::take(&mut self.unsynced) {
            self.ready.sync_log = true;
        }
        match self.state {
            LinkState::Degraded => return,
            LinkState::CatchingUp => {
                self.pump(now);
                self.pace(now);
            }
            LinkState::Duplex => self.pace(now),
            LinkState::Resyncing => {}
        }
        if self.state == LinkState::Degraded {
            return;
        }
        // A backup taking a copy is busy (loading, sizing tables) and its answers
        // queue behind the copy on the connection: a longer bound, so that a slow
        // but live backup is not dropped and resynced from scratch, again and again.
        let timeout = micros(self.io_timeout());
        if now.saturating_sub(self.last_heard) > timeout {
            let ms = (now - self.last_heard) / 1000;
            return self.go_down(now, format!("no word from the peer for {ms} ms"));
        }
        if let Some(seq) = self.window.expired_sync(now) {
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

    /// Notes what the link holds for the peer now (see `LinkMetrics::held_bytes_peak`).
    fn note_held(&mut self) {
        let held = (self.window.bytes() + self.out_bytes) as u64;
        self.metrics.held_bytes_peak = self.metrics.held_bytes_peak.max(held);
    }

    /// How long the peer may stay silent, and a write to it may take, now:
    /// `peer_timeout`, or `resync_timeout` while resyncing.
    pub fn io_timeout(&self) -> std::time::Duration {
        match self.state {
            LinkState::Resyncing => self.config.resync_timeout.max(self.config.peer_timeout),
            _ => self.config.peer_timeout,
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
            LinkState::Resyncing => "peer is being resynced".into(),
            _ => "peer is catching up".into(),
        }
    }

    /// Queues a message for the peer.
    fn send(&mut self, now: Micros, message: Message) {
        self.queue(message);
        self.last_sent_at = now;
    }

    /// [`send`](Link::send) of a message known to encode to `len` bytes.
    fn send_sized(&mut self, now: Micros, message: Message, len: usize) {
        self.out_bytes += len;
        self.ready.messages.push(message);
        self.last_sent_at = now;
    }

    /// Queues a message for the peer without counting it as activity (a decision
    /// about a transaction already sent is not a heartbeat).
    fn queue(&mut self, message: Message) {
        self.out_bytes += wire::encoded_len(&message);
        self.ready.messages.push(message);
    }
}

/// A `Ship` of a record's transaction encodes to at most this many bytes more than
/// the record (the message's tag and its `verify` flag).
pub(crate) const SHIP_EXTRA_BYTES_MAX: usize = 8;

fn too_large(len: usize, max: usize) -> ReplicateError {
    ReplicateError::Wire(WireError::TooLarge {
        offset: 0,
        len: len as u64,
        max: max as u64,
    })
}
