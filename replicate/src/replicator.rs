//! The primary's replication: a [`CommitGate`] that gives every transaction its mode
//! by the rules and hands it to the [`Link`]; the link's shell (threads, socket,
//! difference file) is in `link_shell.rs`.
//!
//! Group commit falls out of the shape: committing threads only queue frames and
//! wait; the link thread writes whatever has accumulated in one `write`, and the peer
//! answers a batch with one acknowledgement, so concurrent sync commits share frames
//! and round trips.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::Receiver;
use kirikae_engine::{
    CatalogChange, CatalogObserver, CommitGate, CommitRequest, Database, ForReplica, GateNote,
    HookError, Operation, SessionInfo, TxnId,
};

use crate::commit_hold;
use crate::commit_policy::{settle, shipment};
use crate::ddl::{event_name, remember, CatalogChangeAt};
use crate::difference_file::DifferenceFile;
use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result};
use crate::freeze_point::{self, FreezePoint};
use crate::handshake::PeerKey;
use crate::leadership::Leadership;
use crate::link::{Event, Link, LinkConfig, LinkMetrics, Rejoin, Submitted, SyncOutcome};
use crate::link_shell::link_thread;
use crate::mode::{Mode, WhenPeerDown};
use crate::outbox;
use crate::record_log::{RecordLog, RecordLogOptions};
use crate::rules::RuleSet;
use crate::seq::Seq;
use crate::shared::Shared;
use crate::sync_waiter::{OutcomeSlot, Waited};
use crate::write_fence::{Refusal, WriteFence};
use crate::writes::Writes;

/// Settings of a [`Replicator`].
#[derive(Clone, Debug)]
pub struct ReplicatorConfig {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Which mode each transaction gets.
    pub rules: RuleSet,
    /// Timing and sizing of the link.
    pub link: LinkConfig,
    /// Directory of the difference file.
    pub difference_dir: PathBuf,
    /// Difference-file settings (segment size, fsync).
    pub difference: RecordLogOptions,
    /// The pair's pre-shared key, proved in every handshake (`None`: the backup must
    /// have none either, and nothing is authenticated).
    pub key: Option<PeerKey>,
}

/// How a commit was replicated: the note on every commit the replicator accepted
/// (see [`Replication::of`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replication {
    /// Its rules say skip.
    Skipped,
    /// Shipped (async or ordered) or queued in the difference file.
    Queued {
        /// Its sequence.
        seq: Seq,
        /// Async or ordered.
        mode: Mode,
    },
    /// A sync commit the peer applied with the same responses.
    Replicated {
        /// Its sequence.
        seq: Seq,
    },
    /// A sync commit made here only (the peer is down, the rule says continue); it
    /// waits in the difference file.
    NotReplicated {
        /// Its sequence.
        seq: Seq,
        /// Why.
        reason: String,
    },
}

impl Replication {
    /// The replication note of a commit, from
    /// [`Transaction::commit_noted`](kirikae_engine::Transaction::commit_noted).
    pub fn of(note: &Option<GateNote>) -> Option<&Replication> {
        note.as_ref()?.downcast_ref::<Replication>()
    }
}

/// A finished hand-over (see [`Replicator::hand_over`]).
#[derive(Clone, Copy, Debug)]
pub struct HandOver {
    /// The last sequence of this primary.
    pub at_seq: Seq,
    /// When commits began to be refused: a switchover's pause starts here.
    pub refusing_since: Instant,
}

/// A hand-over stops commits once the backup is within this many transactions.
const HAND_OVER_LAG_TXNS: u64 = 64;

/// How much longer than the link's sync timeout a sync commit waits for its outcome
/// before settling it itself (the link thread normally settles it at the timeout, on
/// its next tick).
const SYNC_WAIT_GRACE: Duration = Duration::from_millis(100);

/// Replicates a database's commits to a peer (see the module docs).
pub struct Replicator {
    pub(crate) shared: Arc<Shared>,
    database: Database,
    events: Receiver<Event>,
    thread: Option<JoinHandle<()>>,
}

impl Replicator {
    /// Opens the difference file, installs the commit gate on `database`, and starts
    /// connecting to the peer. From here on every commit is replicated by the rules;
    /// while the peer is not reachable, commits go to the difference file.
    pub fn start(database: &Database, config: ReplicatorConfig) -> Result<Replicator> {
        let (log, recovery) = RecordLog::open(&config.difference_dir, config.difference)?;
        if recovery.torn_bytes > 0 {
            tracing::warn!(
                "difference file: cut a torn tail of {} bytes after {} records",
                recovery.torn_bytes,
                recovery.records
            );
        }
        let diff = DifferenceFile::new(log);
        let link = Link::new(config.link, diff.state(), 0);
        let (shared, events) = Shared::new(link, config.rules, config.peer, config.key);
        let copied = database.clone();
        let thread = shared
            .spawn("kirikae-link", move |shared| {
                link_thread(shared, diff, copied)
            })
            .map_err(|e| ReplicateError::Network {
                what: "start the link to",
                addr: config.peer.to_string(),
                source: e,
            })?;
        let gate = Arc::new(Gate(Arc::clone(&shared)));
        database.set_commit_gate(Some(gate.clone()));
        // Catalog changes are sequenced by the same gate, at their place among the
        // commits (see `ddl.rs`).
        database.set_catalog_observer(Some(gate));
        Ok(Replicator {
            shared,
            database: database.clone(),
            events,
            thread: Some(thread),
        })
    }

    /// The latest catalog changes (tables added or dropped, restructures announced
    /// and switched), oldest first, each with the sequence it was given: the backup
    /// applies it at the same one (its [`ApplierStats::catalog_changes`]). At most
    /// the last 64.
    ///
    /// [`ApplierStats::catalog_changes`]: crate::ApplierStats::catalog_changes
    pub fn catalog_changes(&self) -> Vec<CatalogChangeAt> {
        self.shared.catalog_changes.lock().iter().cloned().collect()
    }

    /// Events (`Diverged`, `Recovered`, `Mismatch`, `ResyncRequired`), in order.
    /// Each event goes to one receiver; clone it to share. The newest 4096 unread
    /// events are kept; older ones are dropped and counted in
    /// [`LinkMetrics::events_dropped`].
    pub fn events(&self) -> Receiver<Event> {
        self.events.clone()
    }

    /// The link's numbers now.
    pub fn metrics(&self) -> LinkMetrics {
        let now = self.shared.now();
        let mut metrics = self.shared.core.lock().link.metrics(now);
        metrics.events_dropped = self.shared.events_dropped.load(Ordering::Relaxed);
        metrics.writing_ms = match self.shared.writing_since.load(Ordering::Relaxed) {
            0 => 0,
            since => now.saturating_sub(since - 1) / 1000,
        };
        metrics
    }

    /// Ties every commit to `leadership` (etcd arbiter): a commit is accepted only
    /// while its lease is known to be alive. Start the replicator with
    /// `link.epoch = leadership.epoch()`. Once only; a second call is refused.
    pub fn require_leadership(&self, leadership: &Leadership) -> Result<()> {
        let epoch = self.shared.core.lock().link.config().epoch;
        if epoch != leadership.epoch() {
            return Err(ReplicateError::Protocol {
                reason: format!(
                    "the link runs at {epoch}, the leadership gives {}",
                    leadership.epoch()
                ),
            });
        }
        self.shared
            .lease
            .set(leadership.guard())
            .map_err(|_| ReplicateError::Protocol {
                reason: "a leadership is already required".into(),
            })
    }

    /// Resyncs the backup (an operator's command, e.g. after its tables were found to
    /// differ): the connection is dropped and the next one copies the tables to it
    /// while commits go on (see [`Event::Resynced`]).
    pub fn resync(&self) {
        let mut core = self.shared.core.lock();
        let now = self.shared.now();
        core.link.request_resync(now);
        drop(core);
        self.shared.wake_writer();
    }

    /// The epoch of the primary that replaced this one, once it is fenced (then every
    /// commit fails with [`ReplicateError::Fenced`]; see [`Event::Fenced`]).
    pub fn fenced(&self) -> Option<Epoch> {
        match self.shared.fenced_by.load(Ordering::SeqCst) {
            0 => None,
            e => Some(Epoch(e)),
        }
    }

    /// This primary's epoch.
    pub fn epoch(&self) -> Epoch {
        self.shared.core.lock().link.config().epoch
    }

    /// Whether it has handed over ([`Replicator::hand_over`]) and refuses commits.
    pub fn handed_over(&self) -> bool {
        self.shared.handing_over.load(Ordering::SeqCst)
    }

    /// Once fenced ([`Replicator::fenced`]): whether this node's database can follow
    /// the new primary as its backup by catch-up ([`Rejoin::CatchUp`], with the
    /// position for [`BackupConfig::start_at`](crate::BackupConfig::start_at)), or
    /// only after a full resync.
    pub fn rejoin(&self) -> Option<Rejoin> {
        self.shared.core.lock().link.rejoin().cloned()
    }

    /// Waits until the link is duplex (connected, handshake done, the peer in step:
    /// commits replicate in their rules' modes), or `timeout` passes; returns whether
    /// it is. Call it after [`Replicator::start`] so that the first commits do not
    /// find the peer still connecting (and go to the difference file as "peer down").
    pub fn wait_duplex(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut core = self.shared.core.lock();
        loop {
            if core.link.state() == crate::LinkState::Duplex {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Woken by the state change; the bound only caps a missed wake-up.
            self.shared
                .settled
                .wait_for(&mut core, (deadline - now).min(Duration::from_millis(50)));
        }
    }

    /// Waits until the peer has acknowledged everything committed so far, or
    /// `timeout` passes; returns whether it did.
    pub fn wait_caught_up(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let m = self.metrics();
            if m.state == Some(crate::LinkState::Duplex) && m.last_acked_seq == m.last_seq {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// The first step of a planned switchover (seed 003 \[0034\]): waits, commits
    /// still flowing, until the backup is within a few transactions; then refuses
    /// every new commit ([`ReplicateError::HandedOver`]), lets those already
    /// submitted finish, and waits until the backup has acknowledged all of them.
    /// Returns the hand-over sequence (the backup, promoted now, holds exactly the
    /// history up to it) and when commits began to be refused. Fails (and accepts
    /// commits again) if that does not happen within `timeout`. After a successful
    /// hand-over the database stays closed to writes, also once this replicator is
    /// shut down, until it serves as a backup ([`switchover`](crate::switchover) does
    /// all of that).
    pub fn hand_over(&self, timeout: Duration) -> Result<HandOver> {
        let deadline = Instant::now() + timeout;
        // First, with commits still accepted, let the backup come within a few
        // transactions: the pause then covers only those, not an async backlog. Half
        // the time at most: writers that outpace the backup are then stopped, and the
        // pause covers the backlog.
        let in_step = Duration::from_millis(2);
        let drain_until = Instant::now() + timeout / 2;
        while Instant::now() < drain_until {
            let m = self.metrics();
            if m.state == Some(crate::LinkState::Duplex)
                && m.last_seq.since(m.last_acked_seq) <= HAND_OVER_LAG_TXNS
            {
                break;
            }
            std::thread::sleep(in_step);
        }
        let refusing_since = {
            let _core = self.shared.core.lock();
            self.shared.handing_over.store(true, Ordering::SeqCst);
            Instant::now()
        };
        if self.wait_caught_up(deadline.saturating_duration_since(Instant::now())) {
            return Ok(HandOver {
                at_seq: self.metrics().last_seq,
                refusing_since,
            });
        }
        self.shared.handing_over.store(false, Ordering::SeqCst);
        let m = self.metrics();
        Err(ReplicateError::HandOverStalled {
            last_seq: m.last_seq,
            acked: m.last_acked_seq,
            waited_ms: timeout.as_millis() as u64,
        })
    }

    /// Removes the commit gate and stops the link (what is unacknowledged stays in the
    /// difference file only if the link was degraded).
    pub fn shutdown(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if self.shared.handing_over.load(Ordering::SeqCst) {
            // Handed over: the database stays closed to writes (one gate replaces
            // the other, so no commit slips through in between) until it is a
            // backup's.
            let last_seq = self.metrics().last_seq;
            WriteFence::install(&self.database, &[], Refusal::HandedOver(last_seq));
        } else {
            self.database.set_commit_gate(None);
        }
        self.database.set_catalog_observer(None);
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        // The link thread carries out its last output before it ends (the window to
        // the difference file, made durable): commits waiting for that get their
        // outcome. Only then are the channels of any still waiting closed.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.core.lock().waiters.close_all();
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The commit gate and catalog observer.
struct Gate(Arc<Shared>);

fn handed_over(shared: &Shared) -> ReplicateError {
    let m = shared.core.lock().link.metrics(shared.now());
    ReplicateError::HandedOver {
        last_seq: m.last_seq,
    }
}

impl CommitGate for Gate {
    fn prepare(
        &self,
        request: &mut CommitRequest<'_>,
    ) -> std::result::Result<Option<GateNote>, HookError> {
        self.submit(request, None)
    }

    fn committed(&self, txn: TxnId) {
        self.0.unapplied.lock().remove(txn);
    }
}

impl Gate {
    /// Sequences `request` as its rules say, `when_peer_down` overriding theirs if
    /// given; its replication note, once settled.
    fn submit(
        &self,
        request: &mut CommitRequest<'_>,
        when_peer_down: Option<WhenPeerDown>,
    ) -> std::result::Result<Option<GateNote>, HookError> {
        let shared = &self.0;
        let fenced_by = shared.fenced_by.load(Ordering::SeqCst);
        if fenced_by > 0 {
            let epoch = shared.core.lock().link.config().epoch;
            return Err(ReplicateError::Fenced {
                epoch,
                by: Epoch(fenced_by),
            }
            .into());
        }
        if shared.handing_over.load(Ordering::SeqCst) {
            return Err(handed_over(shared).into());
        }
        if let Some(lease) = shared.lease.get() {
            lease.check()?;
        }
        let Some(mut shipment) = shipment(&shared.rules, request, shared.rules.time_of_day_now())
        else {
            return Ok(Some(Arc::new(Replication::Skipped)));
        };
        if let Some(w) = when_peer_down {
            shipment.when_peer_down = w;
        }
        if let Some(detail) = shared.poisoned() {
            return Err(ReplicateError::Poisoned { detail }.into());
        }
        if shipment.mode == Mode::Sync {
            freeze_point::reached(FreezePoint::BeforePrepare, None);
        }
        // A backlog losing ground holds each commit back a little (bounded by
        // `catchup_pace_max`), before any lock is taken; slept in pieces (see
        // `commit_hold.rs`).
        commit_hold::serve(shared.commit_pace_us.load(Ordering::Relaxed));
        // Encoded here, outside the lock and while the rows are in this core's cache
        // (see `writes.rs`).
        let operations = Writes::encoded(std::mem::take(&mut shipment.operations));
        let mut core = shared.core.lock();
        let sync_timeout = core.link.config().sync_timeout;
        // The clock is read only if there is a pause to time.
        let mut pause_started = None;
        while core.link.paused() {
            let pause_started = *pause_started.get_or_insert_with(Instant::now);
            if shared.stop.load(Ordering::Relaxed) {
                return Err(ReplicateError::Shutdown.into());
            }
            let waited = pause_started.elapsed();
            if waited >= sync_timeout {
                return Err(ReplicateError::CatchUpStalled {
                    waited_ms: waited.as_millis() as u64,
                }
                .into());
            }
            // Woken when the pause ends (the link changes state); the bound only caps
            // a missed wake-up.
            shared.settled.wait_for(
                &mut core,
                (sync_timeout - waited).min(Duration::from_millis(5)),
            );
        }
        // Checked again under the lock that `hand_over` takes to set it: a commit
        // either is in the handed-over history or is refused, never both or neither.
        if shared.handing_over.load(Ordering::SeqCst) {
            drop(core);
            return Err(handed_over(shared).into());
        }
        let now = shared.now();
        let mode = shipment.mode;
        let submitted = core
            .link
            .submit(now, mode, shipment.when_peer_down, operations, || {
                shipment.responses(request.before)
            })?;
        let waiter = match submitted {
            Submitted::Waiting { seq } => Some((seq, core.waiters.register(seq))),
            _ => None,
        };
        let numbered = match submitted {
            Submitted::Queued { seq }
            | Submitted::Waiting { seq }
            | Submitted::Settled { seq: Some(seq), .. } => Some(seq),
            Submitted::Settled { seq: None, .. } => None,
        };
        if let Some(seq) = numbered {
            // Under the core's lock, with the sequence: a resync's copy never starts
            // between the two.
            shared.unapplied.lock().insert(request.txn, seq);
        }
        // A sync commit is going to wait anyway: it sends its own frame if the link
        // thread sleeps, rather than wait for that thread to wake up and send it.
        let sent = if matches!(submitted, Submitted::Waiting { .. }) {
            outbox::send_from_commit(shared, core)
        } else {
            drop(core);
            false
        };
        if !sent {
            shared.wake_writer();
        }
        let accepted = outcome_of(shared, submitted, waiter, mode, sync_timeout);
        if accepted.is_err() {
            shared.unapplied.lock().remove(request.txn);
        }
        accepted
    }
}

impl CatalogObserver for Gate {
    /// A catalog change is replicated as a transaction of one [`Operation::Ddl`]:
    /// moded by the rules on kind `ddl`, sequenced among the commits; a sync one
    /// waits until the backup applied it, and its failure vetoes the change here.
    fn prepare(&self, change: &CatalogChange<'_>) -> std::result::Result<(), HookError> {
        let event = change.event();
        let name = event_name(&event);
        let operations = vec![Operation::Ddl {
            table: change.table_name().into(),
            event,
        }];
        let txn = TxnId::next();
        let session = SessionInfo::new("kirikae", "ddl", None);
        let mut request = CommitRequest {
            txn,
            session: &session,
            operations,
            before: &[None],
        };
        let for_replica = match change {
            CatalogChange::Announced { for_replica, .. } => *for_replica,
            _ => ForReplica::Follow,
        };
        if let ForReplica::CannotFollow(reason) = for_replica {
            // Refused here, whatever the mode: an async backup would refuse it
            // only later, and diverge.
            let (decision, _) = (self.0.rules).decide_operations(
                &request.operations,
                &session,
                self.0.rules.time_of_day_now(),
            );
            if decision.mode != Mode::Skip {
                return Err(ReplicateError::DdlFailed {
                    table: change.table_name().to_owned(),
                    event: name.to_owned(),
                    reason: format!("{reason} (the rules replicate this table's catalog changes)"),
                }
                .into());
            }
        }
        let started = Instant::now();
        let when_peer_down =
            (for_replica == ForReplica::MustHear).then_some(WhenPeerDown::Continue);
        let note = self.submit(&mut request, when_peer_down)?;
        let seq = match Replication::of(&note) {
            Some(
                Replication::Queued { seq, .. }
                | Replication::Replicated { seq }
                | Replication::NotReplicated { seq, .. },
            ) => Some(*seq),
            Some(Replication::Skipped) | None => None,
        };
        let change = CatalogChangeAt {
            seq,
            table: change.table_name().to_owned(),
            change: name.to_owned(),
            took_us: started.elapsed().as_micros() as u64,
            replayed: false,
        };
        remember(&mut self.0.catalog_changes.lock(), change);
        // Unapplied until the catalog shows it (`published`): a resync's copy,
        // which waits for what is sequenced before it to be visible, then sees
        // the catalog with it.
        *self.0.catalog_txn.lock() = Some((txn, seq.is_some()));
        Ok(())
    }

    fn published(&self, change: &CatalogChange<'_>) {
        let Some((txn, shipped)) = self.0.catalog_txn.lock().take() else {
            return;
        };
        CommitGate::committed(self, txn);
        // A table published with rows (a bulk load) carries them outside the
        // stream: the backup gets them by a resync.
        if let (CatalogChange::Added { table }, true) = (change, shipped) {
            if !table.is_empty() {
                let reason = format!(
                    "table {} was added with {} rows (a bulk load), which the stream does not carry",
                    table.name(),
                    table.len()
                );
                let now = self.0.now();
                self.0.core.lock().link.request_resync_because(now, reason);
                self.0.wake_writer();
            }
        }
    }
}

/// The commit's replication note once its transaction is submitted: at once, or
/// after waiting for a sync transaction's outcome.
fn outcome_of(
    shared: &Shared,
    submitted: Submitted,
    waiter: Option<(Seq, Arc<OutcomeSlot>)>,
    mode: Mode,
    sync_timeout: Duration,
) -> std::result::Result<Option<GateNote>, HookError> {
    {
        let (seq, outcome) = match submitted {
            Submitted::Queued { seq } => {
                return Ok(Some(Arc::new(Replication::Queued { seq, mode })));
            }
            Submitted::Settled { seq, outcome } => (seq, outcome),
            Submitted::Waiting { .. } => {
                let Some((seq, slot)) = waiter else {
                    return Err(ReplicateError::Shutdown.into());
                };
                let outcome = wait_outcome(shared, seq, &slot, sync_timeout)?;
                if outcome == SyncOutcome::Replicated {
                    freeze_point::reached(FreezePoint::AfterPrepared, Some(seq));
                }
                (Some(seq), outcome)
            }
        };
        let note = settle(seq, outcome)?;
        Ok(Some(Arc::new(note)))
    }
}

/// Waits for the outcome of sync transaction `seq`, at most the link's sync timeout
/// plus [`SYNC_WAIT_GRACE`]: the link thread settles it at the timeout, but a commit
/// must not wait longer whatever that thread is doing. Past the deadline the commit
/// settles it itself, as the link's own timeout would (one committed alone then
/// waits up to another [`SYNC_WAIT_GRACE`] for its record to be durable).
pub(crate) fn wait_outcome(
    shared: &Shared,
    seq: Seq,
    slot: &OutcomeSlot,
    sync_timeout: Duration,
) -> std::result::Result<SyncOutcome, HookError> {
    let closed = || -> HookError {
        match shared.poisoned() {
            Some(detail) => ReplicateError::Poisoned { detail }.into(),
            None => ReplicateError::Shutdown.into(),
        }
    };
    match slot.wait(sync_timeout + SYNC_WAIT_GRACE) {
        Waited::Settled(outcome) => return Ok(outcome),
        Waited::Closed => return Err(closed()),
        Waited::TimedOut => {}
    }
    // Under the lock: the outcome if it can be had now (given already, on its way,
    // or settled here as the link's timeout would). `None` when its rule committed
    // it alone (the peer counted down just now) and its difference-file record is
    // not durable yet, unless this is the `last` try: the link thread gives it once
    // durable, at its next turn.
    let settle = |last: bool| -> Option<std::result::Result<SyncOutcome, HookError>> {
        let mut core = shared.core.lock();
        if let Some(outcome) = slot.settled() {
            return Some(Ok(outcome));
        }
        if !core.waiters.contains(seq) {
            // Taken to be settled by a thread that gives the outcome once it has
            // unlocked the core (or closed): it is on its way.
            drop(core);
            return Some(match slot.wait(SYNC_WAIT_GRACE) {
                Waited::Settled(outcome) => Ok(outcome),
                Waited::Closed | Waited::TimedOut => Err(closed()),
            });
        }
        core.link.expire_sync(shared.now(), seq);
        let outcome = core.link.take_outcome(seq);
        if outcome.is_some() || last {
            core.waiters.forget(seq);
        }
        drop(core);
        shared.wake_writer();
        match outcome {
            Some(outcome) => Some(Ok(outcome)),
            None if last => Some(Err(closed())),
            None => None,
        }
    };
    if let Some(given) = settle(false) {
        return given;
    }
    if let Waited::Settled(outcome) = slot.wait(SYNC_WAIT_GRACE) {
        return Ok(outcome);
    }
    // Still not durable: released as it is, saying so (the link's own rule at a
    // waiter's deadline).
    settle(true).unwrap_or_else(|| Err(closed()))
}
