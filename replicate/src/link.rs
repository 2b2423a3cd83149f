//! The primary's side of the link to its peer, as a deterministic state machine with no
//! I/O of its own (the raft-rs way): the shell feeds it submissions, received messages,
//! connection changes and the time, and carries out what it asks for — frames to
//! send, events to raise, sync outcomes to hand back. The difference file is the one
//! resource it touches directly, through [`DiffLog`].
//!
//! Sequence discipline: every non-skip transaction gets the next sequence, and every
//! sequence reaches the peer in order — as a `Ship`, a `Prepare` (then `Commit` or
//! `Abort`), or, after an outage, replayed from the difference file. The peer's
//! acknowledged sequence therefore means "everything up to here is resolved there",
//! and everything above it is either in the in-memory window (duplex) or in the
//! difference file (degraded, catching up).

use std::collections::VecDeque;
use std::time::Duration;

use kirikae_engine::{Key, Operation};
use serde::Serialize;

use crate::error::{ReplicateError, Result};
use crate::mode::{Mode, WhenPeerDown};
use crate::record_log::{LogRecord, RecordLog};
use crate::wire::{encode, Message, MAX_FRAME_BYTES, PROTOCOL_VERSION};

/// Output a catch-up tick produces before handing it to the shell.
const CATCHUP_BYTES_PER_TICK: usize = 4 << 20;

/// Microseconds on the shell's monotonic clock.
pub type Micros = u64;

/// Where the difference file lives for the link; [`RecordLog`] in production.
pub trait DiffLog {
    /// Appends a record (sequences strictly increase).
    fn append(&mut self, record: &LogRecord) -> Result<()>;
    /// Makes appended records durable.
    fn sync(&mut self) -> Result<()>;
    /// Up to `limit` records above `after`, in order.
    fn read_batch(&mut self, after: u64, limit: usize) -> Result<Vec<LogRecord>>;
    /// Drops what the peer has acknowledged.
    fn retire_through(&mut self, seq: u64) -> Result<()>;
    /// Highest sequence held.
    fn last_seq(&self) -> Option<u64>;
    /// Bytes held.
    fn bytes(&self) -> u64;
}

impl DiffLog for RecordLog {
    fn append(&mut self, record: &LogRecord) -> Result<()> {
        RecordLog::append(self, record)
    }
    fn sync(&mut self) -> Result<()> {
        RecordLog::sync(self)
    }
    fn read_batch(&mut self, after: u64, limit: usize) -> Result<Vec<LogRecord>> {
        RecordLog::read_batch(self, after, limit)
    }
    fn retire_through(&mut self, seq: u64) -> Result<()> {
        RecordLog::retire_through(self, seq).map(drop)
    }
    fn last_seq(&self) -> Option<u64> {
        RecordLog::last_seq(self)
    }
    fn bytes(&self) -> u64 {
        RecordLog::bytes(self)
    }
}

/// State of the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// No usable peer: non-skip transactions go to the difference file.
    Degraded,
    /// Connected; replaying the difference file while new transactions queue behind it.
    CatchingUp,
    /// Connected and current: transactions are shipped as they commit.
    Duplex,
}

/// Timing and sizing of a link.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// This primary's epoch (grows at each failover).
    pub epoch: u64,
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
    pub catchup_batch: usize,
    /// Most replayed records sent but not yet acknowledged: the catch-up is paced by
    /// the peer's acknowledgements, so a connection lost mid-way wastes at most this.
    pub catchup_window: u64,
    /// Commits pause when the catch-up is this few sequences from the end.
    pub pause_within: u64,
    /// Past this size the difference file stops growing and `ResyncRequired` is raised.
    pub difference_cap_bytes: u64,
    /// First delay before reconnecting; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_max: Duration,
    /// Largest frame sent or accepted.
    pub max_frame_bytes: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            epoch: 1,
            node: "primary".into(),
            heartbeat_every: Duration::from_millis(100),
            peer_timeout: Duration::from_secs(1),
            sync_timeout: Duration::from_millis(500),
            window_txns_max: 1 << 20,
            output_bytes_max: 64 << 20,
            verify_every: 100,
            catchup_batch: 1024,
            catchup_window: 1 << 16,
            pause_within: 256,
            difference_cap_bytes: 1 << 30,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            max_frame_bytes: MAX_FRAME_BYTES,
        }
    }
}

/// Something the embedder should know about the link.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Event {
    /// The peer stopped receiving or applying transactions from `since_seq` on.
    Diverged {
        /// First sequence not replicated.
        since_seq: u64,
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
        seq: u64,
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
        }
    }
}

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
    /// No answer in time and the rule says `fail`: roll back here; the peer may hold
    /// it prepared and is told it was aborted when it reconnects.
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

/// What [`Link::submit`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Shipped or queued under `seq`; nothing to wait for.
    Queued {
        /// Its sequence.
        seq: u64,
    },
    /// A sync transaction sent as `Prepare`: wait for its outcome.
    Waiting {
        /// Its sequence.
        seq: u64,
    },
    /// A sync transaction settled at once (the peer is down).
    Settled {
        /// Its sequence, if it got one.
        seq: Option<u64>,
        /// The outcome.
        outcome: SyncOutcome,
    },
}

/// Per-link numbers for monitoring.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LinkMetrics {
    /// Current state.
    pub state: Option<LinkState>,
    /// Highest sequence assigned.
    pub last_seq: u64,
    /// Highest sequence sent to the peer.
    pub last_sent_seq: u64,
    /// Highest sequence the peer acknowledged as resolved.
    pub last_acked_seq: u64,
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
    /// Events dropped because the embedder did not read them (the oldest go first).
    pub events_dropped: u64,
}

#[derive(Debug)]
enum Status {
    /// Shipped; waiting for the peer's acknowledgement.
    Shipped,
    /// Sent as `Prepare`; waiting for `Prepared` until `deadline`.
    Preparing {
        deadline: Micros,
        when_down: WhenPeerDown,
    },
    /// A sync transaction decided commit.
    Committed,
    /// A sync transaction decided abort.
    Aborted,
}

/// One unacknowledged transaction in the window.
#[derive(Debug)]
struct Entry {
    seq: u64,
    mode: Mode,
    operations: Vec<Operation>,
    /// The primary's response digests, when the peer's are to be compared.
    responses: Option<Vec<u64>>,
    sent_at: Micros,
    status: Status,
}

/// A catch-up in progress.
#[derive(Debug)]
struct CatchUp {
    /// Highest sequence sent from the difference file.
    cursor: u64,
    replayed: u64,
    paused_at: Option<Micros>,
}

/// The primary's side of one link (see the module docs).
pub struct Link<D: DiffLog> {
    config: LinkConfig,
    state: LinkState,
    diff: D,
    /// Highest sequence assigned.
    seq: u64,
    /// Highest sequence the peer has resolved, as far as we know.
    acked: u64,
    /// Highest sequence sent.
    sent: u64,
    /// Unacknowledged transactions, contiguous and in sequence order (duplex only).
    window: VecDeque<Entry>,
    catch_up: Option<CatchUp>,
    /// Raised `Diverged` and not yet `Recovered`.
    diverged: bool,
    resync_required: bool,
    /// Records appended since the last difference-file sync.
    diff_dirty: bool,
    shipped_count: u64,
    last_heard: Micros,
    last_sent_at: Micros,
    down_since: Micros,
    reconnect_at: Micros,
    reconnect_delay: Duration,
    metrics: LinkMetrics,
    out: Vec<u8>,
    events: Vec<Event>,
    outcomes: Vec<(u64, SyncOutcome)>,
    close: bool,
}

fn micros(d: Duration) -> Micros {
    d.as_micros().min(u64::MAX as u128) as u64
}

impl<D: DiffLog> Link<D> {
    /// A link that starts degraded (no peer yet) over `diff`, whose last sequence (a
    /// primary restarting while degraded) seeds the sequence counter.
    pub fn new(config: LinkConfig, diff: D, now: Micros) -> Link<D> {
        let seq = diff.last_seq().unwrap_or(0);
        let reconnect_delay = config.reconnect_min;
        Link {
            config,
            state: LinkState::Degraded,
            seq,
            acked: 0,
            sent: 0,
            diff,
            window: VecDeque::new(),
            catch_up: None,
            diverged: false,
            resync_required: false,
            diff_dirty: false,
            shipped_count: 0,
            last_heard: now,
            last_sent_at: now,
            down_since: now,
            reconnect_at: now,
            reconnect_delay,
            metrics: LinkMetrics::default(),
            out: Vec::new(),
            events: Vec::new(),
            outcomes: Vec::new(),
            close: false,
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
        self.reconnect_at = now + micros(self.reconnect_delay);
        self.reconnect_delay = (self.reconnect_delay * 2).min(self.config.reconnect_max);
    }

    /// A connection is up and the peer's handshake said it has resolved everything up
    /// to `peer_last_seq`. Starts the catch-up (or refuses a peer that cannot be
    /// caught up, raising `ResyncRequired` and asking to close).
    pub fn connected(&mut self, now: Micros, peer_last_seq: u64) {
        debug_assert_eq!(self.state, LinkState::Degraded, "connected twice");
        debug_assert!(self.window.is_empty(), "window spilled when going down");
        self.metrics.connects += 1;
        self.reconnect_delay = self.config.reconnect_min;
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
        } else if peer_last_seq < self.seq
            && self.diff.last_seq().is_none_or(|last| last < self.seq)
        {
            Some(format!(
                "sequences {}..={} are not in the difference file",
                peer_last_seq + 1,
                self.seq
            ))
        } else {
            None
        };
        if let Some(reason) = refuse {
            self.require_resync(reason);
            self.close = true;
            self.reconnect_at = now + micros(self.config.reconnect_max);
            return;
        }
        self.acked = peer_last_seq;
        self.sent = peer_last_seq;
        self.last_heard = now;
        self.last_sent_at = now;
        self.state = LinkState::CatchingUp;
        self.catch_up = Some(CatchUp {
            cursor: peer_last_seq,
            replayed: 0,
            paused_at: None,
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
    /// Fails without assigning a sequence if the transaction cannot be shipped
    /// (larger than a frame) or recorded.
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
        let seq = self.seq + 1;
        if self.state != LinkState::Duplex {
            if mode == Mode::Sync && when_down == WhenPeerDown::Fail {
                return Ok(Submitted::Settled {
                    seq: None,
                    outcome: SyncOutcome::PeerDown {
                        reason: self.down_reason(),
                    },
                });
            }
            self.seq = seq;
            self.record(LogRecord {
                seq,
                epoch: self.config.epoch,
                mode,
                operations,
            })?;
            return Ok(if mode == Mode::Sync {
                Submitted::Settled {
                    seq: Some(seq),
                    outcome: SyncOutcome::CommittedAlone {
                        reason: self.down_reason(),
                    },
                }
            } else {
                Submitted::Queued { seq }
            });
        }
        let epoch = self.config.epoch;
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
        let frame = encode(&message, self.config.max_frame_bytes)?;
        let operations = match message {
            Message::Prepare { operations, .. } | Message::Ship { operations, .. } => operations,
            _ => Vec::new(),
        };
        self.seq = seq;
        self.sent = seq;
        self.out.extend_from_slice(&frame);
        self.last_sent_at = now;
        let waiting = matches!(status, Status::Preparing { .. });
        self.window.push_back(Entry {
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
        } else if self.out.len() > self.config.output_bytes_max {
            Some(format!(
                "{} bytes wait to be sent to the peer (limit {})",
                self.out.len(),
                self.config.output_bytes_max
            ))
        } else {
            None
        };
        if let Some(reason) = overflow {
            self.go_down(now, reason);
            // The outcome of a just-sent sync transaction is settled by going down.
            if let Some(o) = self.outcomes.iter().position(|(s, _)| *s == seq) {
                let (_, outcome) = self.outcomes.remove(o);
                return Ok(Submitted::Settled {
                    seq: Some(seq),
                    outcome,
                });
            }
            return Ok(Submitted::Queued { seq });
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
                if let Some(i) = self.position(seq) {
                    let expected = self.window[i].responses.take();
                    if let Some(expected) = expected {
                        self.compare(i, &expected, &responses);
                    }
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

    /// Advances time: makes difference-file appends durable (one fsync per tick's
    /// batch), heartbeats, timeouts, catch-up progress.
    pub fn tick(&mut self, now: Micros) {
        if std::mem::take(&mut self.diff_dirty) {
            if let Err(e) = self.diff.sync() {
                self.require_resync(format!("cannot sync the difference file: {e}"));
            }
        }
        match self.state {
            LinkState::Degraded => return,
            LinkState::CatchingUp => {
                // Replay as much as the shell can write in one go: catching up must
                // outrun the incoming rate, which a batch per tick would not.
                while self.state == LinkState::CatchingUp && self.out.len() < CATCHUP_BYTES_PER_TICK
                {
                    let before = self.catch_up.as_ref().map(|c| c.cursor);
                    self.pump(now);
                    if self.catch_up.as_ref().map(|c| c.cursor) == before {
                        break;
                    }
                }
            }
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
        for e in &self.window {
            if let Status::Preparing { deadline, .. } = e.status {
                if now >= deadline {
                    let seq = e.seq;
                    return self.go_down(now, format!("sync transaction {seq} timed out"));
                }
            }
        }
        if let Some(front) = self.window.front() {
            if now.saturating_sub(front.sent_at) > timeout {
                let seq = front.seq;
                return self.go_down(now, format!("acknowledgement of {seq} overdue"));
            }
        }
        if now.saturating_sub(self.last_sent_at) >= micros(self.config.heartbeat_every) {
            self.send(
                now,
                &Message::Heartbeat {
                    epoch: self.config.epoch,
                    last_seq: self.sent,
                },
            );
        }
    }

    /// A sync transaction's waiter gave up on `seq` at its own deadline (the shell did
    /// not tick the link in time). Settles it, and every other undecided sync
    /// transaction, as the link's own sync timeout does: the peer is treated as down.
    pub fn expire_sync(&mut self, now: Micros, seq: u64) {
        let undecided = self
            .position(seq)
            .is_some_and(|i| matches!(self.window[i].status, Status::Preparing { .. }));
        if undecided {
            self.go_down(
                now,
                format!("sync transaction {seq} got no answer before its waiter's deadline"),
            );
        }
    }

    /// Frames to write to the peer, in order.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Events raised since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Sync outcomes settled since the last call.
    pub fn take_outcomes(&mut self) -> Vec<(u64, SyncOutcome)> {
        std::mem::take(&mut self.outcomes)
    }

    /// Whether the shell should drop the connection (asked once).
    pub fn take_close(&mut self) -> bool {
        std::mem::take(&mut self.close)
    }

    /// Current numbers.
    pub fn metrics(&self, now: Micros) -> LinkMetrics {
        let mut m = self.metrics.clone();
        m.state = Some(self.state);
        m.last_seq = self.seq;
        m.last_sent_seq = self.sent;
        m.last_acked_seq = self.acked;
        m.lag_ops = self.seq.saturating_sub(self.acked);
        m.lag_ms = match (self.state, self.window.front()) {
            (LinkState::Duplex, Some(e)) => now.saturating_sub(e.sent_at) / 1000,
            (LinkState::Duplex, None) => 0,
            _ if m.lag_ops == 0 => 0,
            _ => now.saturating_sub(self.down_since) / 1000,
        };
        m.difference_bytes = self.diff.bytes();
        m
    }

    fn down_reason(&self) -> String {
        match self.state {
            LinkState::Degraded => "peer is down".into(),
            _ => "peer is catching up".into(),
        }
    }

    fn send(&mut self, now: Micros, message: &Message) {
        match encode(message, self.config.max_frame_bytes) {
            Ok(frame) => {
                self.out.extend_from_slice(&frame);
                self.last_sent_at = now;
            }
            // Only operation-carrying messages can be too large, and those were sized
            // when submitted; a failure here is a bug, surfaced as an outage.
            Err(e) => self.go_down(now, format!("cannot encode a frame: {e}")),
        }
    }

    fn position(&self, seq: u64) -> Option<usize> {
        let first = self.window.front()?.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        debug_assert!(self.window.get(i).is_none_or(|e| e.seq == seq));
        (i < self.window.len()).then_some(i)
    }

    fn ack(&mut self, seq: u64) {
        if seq <= self.acked {
            return;
        }
        self.acked = seq.min(self.sent);
        while self.window.front().is_some_and(|e| e.seq <= self.acked) {
            let e = self.window.pop_front();
            debug_assert!(
                !matches!(e.map(|e| e.status), Some(Status::Preparing { .. })),
                "the peer acknowledged an undecided sync transaction"
            );
        }
        self.retire(self.acked);
    }

    fn retire(&mut self, seq: u64) {
        if let Err(e) = self.diff.retire_through(seq) {
            tracing::warn!("cannot retire difference file segments: {e}");
        }
    }

    fn prepared(&mut self, seq: u64, responses: Vec<u64>) {
        let Some(i) = self.position(seq) else { return };
        if !matches!(self.window[i].status, Status::Preparing { .. }) {
            return;
        }
        let expected = self.window[i].responses.take().unwrap_or_default();
        let outcome = match self.compare(i, &expected, &responses) {
            None => {
                self.window[i].status = Status::Committed;
                self.queue(&Message::Commit { seq });
                SyncOutcome::Replicated
            }
            Some(reason) => {
                self.window[i].status = Status::Aborted;
                self.queue(&Message::Abort { seq });
                SyncOutcome::Refused { reason }
            }
        };
        self.outcomes.push((seq, outcome));
    }

    /// Queues a small control message (cannot exceed a frame).
    fn queue(&mut self, message: &Message) {
        if let Ok(frame) = encode(message, self.config.max_frame_bytes) {
            self.out.extend_from_slice(&frame);
        }
    }

    /// Compares response digests of window entry `i`; raises `Mismatch` and returns
    /// what differed.
    fn compare(&mut self, i: usize, expected: &[u64], got: &[u64]) -> Option<String> {
        let e = &self.window[i];
        let at = if expected.len() != got.len() {
            Some(expected.len().min(got.len()))
        } else {
            expected.iter().zip(got).position(|(a, b)| a != b)
        }?;
        let (table, key) = e
            .operations
            .get(at)
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
        self.events.push(Event::Mismatch {
            seq: e.seq,
            table: table.clone(),
            key: key.clone(),
            detail: detail.clone(),
        });
        Some(format!("{detail} ({table} {key:?}, sequence {})", e.seq))
    }

    fn rejected(&mut self, seq: u64, reason: String) {
        let Some(i) = self.position(seq) else { return };
        match self.window[i].status {
            Status::Preparing { .. } => {
                self.window[i].status = Status::Aborted;
                self.queue(&Message::Abort { seq });
                self.outcomes.push((
                    seq,
                    SyncOutcome::Refused {
                        reason: format!("peer refused: {reason}"),
                    },
                ));
            }
            _ => {
                self.metrics.apply_errors += 1;
                self.diverge(seq, format!("peer could not apply {seq}: {reason}"));
            }
        }
    }

    fn diverge(&mut self, since_seq: u64, reason: String) {
        if !self.diverged {
            self.diverged = true;
            self.events.push(Event::Diverged { since_seq, reason });
        }
    }

    fn require_resync(&mut self, reason: String) {
        if !self.resync_required {
            self.resync_required = true;
            self.events.push(Event::ResyncRequired { reason });
        }
    }

    /// Appends to the difference file (unless it is past its cap).
    fn record(&mut self, record: LogRecord) -> Result<()> {
        let seq = record.seq;
        self.diverge(seq, self.down_reason());
        if self.resync_required {
            return Ok(());
        }
        self.diff.append(&record)?;
        // Made durable in batches by `tick` (group commit for the difference file).
        self.diff_dirty = true;
        if self.diff.bytes() > self.config.difference_cap_bytes {
            self.require_resync(format!(
                "difference file holds {} bytes (cap {})",
                self.diff.bytes(),
                self.config.difference_cap_bytes
            ));
        }
        Ok(())
    }

    /// Duplex or catching up → degraded: settle undecided sync transactions by their
    /// rule, move the window to the difference file, ask the shell to close.
    fn go_down(&mut self, now: Micros, reason: String) {
        tracing::info!("replication link down: {reason}");
        self.state = LinkState::Degraded;
        // Frames for the connection being dropped; the window goes to the difference
        // file and is replayed from there.
        self.out.clear();
        self.catch_up = None;
        self.close = true;
        self.down_since = now;
        self.reconnect_at = now;
        self.diverge(self.acked + 1, reason.clone());
        let window = std::mem::take(&mut self.window);
        let mut failed: Option<ReplicateError> = None;
        for mut e in window {
            if let Status::Preparing { when_down, .. } = e.status {
                let (status, outcome) = match when_down {
                    WhenPeerDown::Continue => (
                        Status::Committed,
                        SyncOutcome::CommittedAlone {
                            reason: reason.clone(),
                        },
                    ),
                    WhenPeerDown::Fail => (
                        Status::Aborted,
                        SyncOutcome::OutcomeUnknown {
                            reason: reason.clone(),
                        },
                    ),
                };
                e.status = status;
                self.outcomes.push((e.seq, outcome));
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
            if self.resync_required {
                continue;
            }
            if let Err(err) = self.diff.append(&record) {
                failed.get_or_insert(err);
            }
        }
        if let Err(err) = self.diff.sync() {
            failed.get_or_insert(err);
        }
        if let Some(err) = failed {
            self.require_resync(format!("cannot write the difference file: {err}"));
        }
    }

    /// Catch-up: sends the next batch from the difference file; near the end pauses
    /// commits; at the end goes duplex and raises `Recovered`.
    fn pump(&mut self, now: Micros) {
        let Some(cu) = self.catch_up.as_mut() else {
            return;
        };
        let in_flight = cu.cursor.saturating_sub(self.acked);
        let room = self.config.catchup_window.saturating_sub(in_flight);
        let limit = (room as usize).min(self.config.catchup_batch);
        if limit == 0 && cu.cursor < self.seq {
            return;
        }
        let batch = match self.diff.read_batch(cu.cursor, limit.max(1)) {
            Ok(b) => b,
            Err(e) => {
                let reason = format!("cannot read the difference file: {e}");
                self.require_resync(reason.clone());
                return self.go_down(now, reason);
            }
        };
        let epoch = self.config.epoch;
        for r in batch {
            if r.seq != cu.cursor + 1 {
                let reason = format!(
                    "the difference file jumps from {} to {}: the peer needs a full resync",
                    cu.cursor, r.seq
                );
                self.require_resync(reason.clone());
                return self.go_down(now, reason);
            }
            cu.cursor = r.seq;
            cu.replayed += 1;
            let message = if r.mode == Mode::Skip {
                Message::Abort { seq: r.seq }
            } else {
                Message::Ship {
                    seq: r.seq,
                    epoch,
                    mode: r.mode,
                    operations: r.operations,
                    verify: false,
                }
            };
            match encode(&message, self.config.max_frame_bytes) {
                Ok(frame) => self.out.extend_from_slice(&frame),
                Err(e) => {
                    let reason = format!("cannot replay {}: {e}", r.seq);
                    self.require_resync(reason.clone());
                    return self.go_down(now, reason);
                }
            }
        }
        self.sent = cu.cursor;
        self.last_sent_at = now;
        let remaining = self.seq.saturating_sub(cu.cursor);
        if remaining == 0 {
            let pause_us = cu.paused_at.map_or(0, |at| now.saturating_sub(at));
            let ops_replayed = cu.replayed;
            self.metrics.replayed += ops_replayed;
            self.catch_up = None;
            self.state = LinkState::Duplex;
            if std::mem::take(&mut self.diverged) || ops_replayed > 0 {
                self.events.push(Event::Recovered {
                    ops_replayed,
                    pause_us,
                });
            }
        } else if remaining <= self.config.pause_within && cu.paused_at.is_none() {
            cu.paused_at = Some(now);
        }
    }
}

/// The key an operation addresses (an insert's is in its row; shown as the row).
fn operation_key(op: &Operation) -> Key {
    match op {
        Operation::Update { key, .. } | Operation::Delete { key, .. } => key.clone(),
        Operation::Insert { row, .. } => Key::new(row.clone()),
    }
}
