//! The backup's side of the link: logs what the primary sends, then applies it to
//! the backup's database, with no network of its own (the [`Backup`](crate::Backup)
//! server and the simulation both drive it).
//!
//! - **Log first** (seed 003 Fig. 6): each message is checked, appended to the
//!   [`AccessLog`], and queued; [`flush`](Applier::flush) makes the batch durable,
//!   then applies it, then answers. `Prepared`, `Applied` and `Ack` therefore all mean
//!   "logged": a backup that crashes and restarts applies it again from its log.
//! - Ordered and sync transactions are applied in the order they arrive, which is
//!   the primary's sequence order. Runs of async ones are applied in parallel lanes
//!   by key ([`set_apply_lanes`](Applier::set_apply_lanes); see `lanes.rs`), which
//!   keeps each key's order; their answers and positions are the same as in
//!   sequence.
//! - A sequence already seen is a duplicate and ignored, so replay is idempotent.
//! - A sync transaction is applied and held open (its locks kept) until `Commit` or
//!   `Abort`; it may also be settled by a replay from the primary's difference file.
//!   Its `Prepare` is in the log with the primary's response digests, so a restarted
//!   backup holds it again (in doubt) until it hears the decision.
//! - Two positions: **logged** (every sequence up to it is in the log) and
//!   **applied** (every sequence up to it is resolved: applied, committed, aborted or
//!   failed). `Ack` carries the applied one: the primary keeps what the backup has
//!   not resolved.
//! - From time to time a checkpoint (a snapshot at a sequence) lets the log retire
//!   its older segments; a restart loads it and replays only the tail.

mod first_positions;
mod lanes;
mod prefetch;
mod promotion;
mod resync;

pub use lanes::{APPLY_LANES_MAX, CHUNK_STEPS, PARALLEL_RUN_TXNS_MIN, RUN_TXNS_MAX};

pub use promotion::Promotion;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use kirikae_engine::{Operation, Session, SessionInfo, Transaction};

use crate::access_log::{AccessEntry, AccessLog, AccessRecord, Reopened};
use crate::checkpoint::Checkpoint;
use crate::ddl::{apply_ddl, event_name, remember, CatalogChangeAt, DdlHandler};
use crate::digest::response_digest;
use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result};
use crate::mode::Mode;
use crate::seq::Seq;
use crate::utc;
use crate::wire::{Message, PROTOCOL_VERSION};
use crate::writes::Writes;
use first_positions::FirstPositions;
use lanes::{Done, Job, Lanes, Outcome};

/// A restart replays its log's tail this many records at a time, its runs of async
/// transactions left open from one slice to the next.
const REPLAY_SLICE_RECORDS: usize = 1024;

/// Counts kept by an [`Applier`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplierStats {
    /// Transactions applied (shipped, or prepared and committed).
    pub applied: u64,
    /// Of those, async ones applied in parallel lanes (see
    /// [`Applier::set_apply_lanes`]).
    pub applied_in_lanes: u64,
    /// Of those, transactions whose keys the run had last touched in several lanes,
    /// so that those lanes met (waited for each other) to apply them.
    pub lane_meetings: u64,
    /// Messages ignored as already seen.
    pub duplicates: u64,
    /// Transactions the backup could not apply (reported to the primary).
    pub rejected: u64,
    /// Prepared transactions aborted.
    pub aborted: u64,
    /// Access-log records replayed at start.
    pub recovered: u64,
    /// Checkpoints taken.
    pub checkpoints: u64,
    /// Access-log segments retired behind a checkpoint.
    pub segments_retired: u64,
    /// Resyncs begun.
    pub resyncs: u64,
    /// The latest catalog changes applied, oldest first (at most 64): each at the
    /// sequence the primary gave it (its [`Replicator::catalog_changes`]), with how
    /// long applying it held the stream. Shared: the backup publishes its stats
    /// with every batch of answers, and this changes only with a catalog change.
    ///
    /// [`Replicator::catalog_changes`]: crate::Replicator::catalog_changes
    pub catalog_changes: Arc<VecDeque<CatalogChangeAt>>,
}

/// A sync transaction applied and held open until its decision.
struct Held<'s> {
    txn: Transaction<'s>,
    /// The primary's response digests (from its `Prepare`).
    primary: Vec<u64>,
    /// This backup's, from applying it.
    here: Vec<u64>,
}

/// A logged entry, to be applied at the end of the batch (the entry itself: what
/// was logged is what is applied).
struct Work {
    seq: Seq,
    entry: AccessEntry,
    /// A shipped transaction the primary wants `Applied` for.
    verify: bool,
}

/// Where a backup over an existing database starts: everything up to `seq` is in
/// the database, and `epoch` is the primary's it will follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StartAt {
    /// The last sequence the database holds.
    pub seq: Seq,
    /// The epoch of the primary it follows.
    pub epoch: Epoch,
}

/// The backup's state machine (see the module docs).
pub struct Applier<'s> {
    /// Set by a promotion: this database is now the primary's, nothing more is taken.
    promoted: Option<Epoch>,
    session: &'s Session,
    log: Option<AccessLog>,
    /// Everything up to here is resolved.
    resolved: Seq,
    /// Resolved above `resolved`, waiting for the gap below to close (their effects,
    /// if any, are committed).
    resolved_above: BTreeSet<Seq>,
    /// Sync transactions applied and held open.
    held: BTreeMap<Seq, Held<'s>>,
    /// Prepared (logged) and not decided yet: held, or queued.
    undecided: BTreeSet<Seq>,
    /// Logged and not applied yet, in log order.
    queue: Vec<Work>,
    /// First access-log position of each sequence above `resolved`: a checkpoint
    /// replays from the lowest.
    first_position: FirstPositions,
    /// Highest sequence of this connection's stream (gap detection); everything up to
    /// it is logged.
    stream_seq: Seq,
    /// Highest sequence logged by earlier streams (a new stream restarts at
    /// `resolved`).
    logged: Seq,
    /// Highest primary epoch seen; older primaries are refused.
    epoch: Epoch,
    /// Replaying the log at start: records are not logged again, and sequences the
    /// checkpoint already holds are not applied again.
    replaying: Option<BTreeSet<Seq>>,
    /// A resync under way.
    resync: Option<resync::ResyncIn>,
    /// Take a checkpoint at the next flush (a resync just ended).
    checkpoint_soon: bool,
    /// A checkpoint being written on its own thread.
    writing: Option<std::thread::JoinHandle<Result<Checkpoint>>>,
    /// Applies the catalog changes the applier cannot apply by itself.
    ddl: Option<Arc<dyn DdlHandler>>,
    /// Where async transactions are applied in parallel by key.
    lanes: Lanes,
    /// Transactions refused while replaying the log at start, when no primary was
    /// there to be told: `(sequence, reason)`, reported on the next connection.
    /// Without this the primary, which counted them as delivered, would never learn
    /// that this backup lacks them.
    unreported: Vec<(Seq, String)>,
    stats: ApplierStats,
}

impl<'s> Applier<'s> {
    /// An applier with no log (memory only: a restart loses everything).
    pub fn new(session: &'s Session) -> Applier<'s> {
        Applier {
            promoted: None,
            session,
            log: None,
            resolved: Seq::ZERO,
            resolved_above: BTreeSet::new(),
            held: BTreeMap::new(),
            undecided: BTreeSet::new(),
            queue: Vec::new(),
            first_position: FirstPositions::default(),
            stream_seq: Seq::ZERO,
            logged: Seq::ZERO,
            epoch: Epoch::NONE,
            replaying: None,
            resync: None,
            checkpoint_soon: false,
            writing: None,
            ddl: None,
            lanes: Lanes::single(),
            unreported: Vec::new(),
            stats: ApplierStats::default(),
        }
    }

    /// Applies async transactions in `lanes` parallel lanes by key from now on (1:
    /// all in sequence, as ordered ones always are; at most [`APPLY_LANES_MAX`]);
    /// a run of fewer than `parallel_run_txns_min` consecutive async transactions
    /// is applied in sequence all the same ([`PARALLEL_RUN_TXNS_MIN`] is what a
    /// backup uses). An error if a lane's thread cannot be started.
    pub fn set_apply_lanes(&mut self, lanes: usize, parallel_run_txns_min: usize) -> Result<()> {
        self.lanes = Lanes::new(self.session, lanes, parallel_run_txns_min)?;
        Ok(())
    }

    /// Hands the lanes their steps `chunk_steps` at a time and applies a run of async
    /// transactions once it is `run_txns_max` long (each at least 1; by default
    /// [`CHUNK_STEPS`] and [`RUN_TXNS_MAX`]). The answers do not depend on either:
    /// tests make them small so that short histories cross their edges. Set after
    /// [`set_apply_lanes`](Applier::set_apply_lanes), which restores the defaults.
    pub fn set_lane_handoff(&mut self, chunk_steps: usize, run_txns_max: usize) {
        self.lanes.set_handoff(chunk_steps, run_txns_max);
    }

    /// Installs the handler of the catalog changes this applier cannot apply by
    /// itself (see [`DdlHandler`]); without one they are rejected.
    pub fn set_ddl_handler(&mut self, handler: Option<Arc<dyn DdlHandler>>) {
        self.ddl = handler;
    }

    /// The identities this applier commits with: its session's and its lanes'.
    pub(crate) fn writers(&self) -> Vec<&SessionInfo> {
        std::iter::once(self.session.info())
            .chain(self.lanes.sessions())
            .collect()
    }

    /// The handler of catalog changes, if any.
    pub(crate) fn ddl_handler(&self) -> Option<&Arc<dyn DdlHandler>> {
        self.ddl.as_ref()
    }

    /// An applier whose database already holds the history up to `start.seq` (the old
    /// primary's database at a planned switchover); with a log, the database is
    /// checkpointed at that position first, so a restart can rebuild it. Refused if
    /// the log already holds another history.
    pub fn starting_at(
        session: &'s Session,
        log: Option<(AccessLog, Reopened)>,
        start: StartAt,
        ddl: Option<Arc<dyn DdlHandler>>,
    ) -> Result<Applier<'s>> {
        let mut applier = match log {
            Some((log, reopened)) => {
                let fresh = reopened.checkpoint.is_none() && reopened.tail.is_empty();
                let applier = Applier::recover(session, log, reopened, ddl.clone())?;
                if !fresh {
                    if (applier.resolved, applier.epoch) != (start.seq, start.epoch) {
                        return Err(protocol(format!(
                            "the access log holds {} at {}, not the start position {} at {}",
                            applier.resolved, applier.epoch, start.seq, start.epoch
                        )));
                    }
                    return Ok(applier);
                }
                applier
            }
            None => Applier::new(session),
        };
        applier.ddl = ddl;
        applier.resolved = start.seq;
        applier.stream_seq = start.seq;
        applier.epoch = start.epoch;
        applier.checkpoint()?;
        Ok(applier)
    }

    /// An applier over an opened access log: the checkpoint `reopened` names is
    /// already in the database; its tail is replayed here (in-doubt transactions are
    /// held again), its catalog changes through `ddl` (a restructure announced and
    /// switched in the tail is run again: see [`DdlHandler`]). Async transactions are
    /// replayed in sequence; [`replay_log`](Applier::replay_log) on an applier given
    /// lanes first replays them in parallel.
    pub fn recover(
        session: &'s Session,
        log: AccessLog,
        reopened: Reopened,
        ddl: Option<Arc<dyn DdlHandler>>,
    ) -> Result<Applier<'s>> {
        let mut applier = Applier::new(session);
        applier.ddl = ddl;
        applier.replay_log(log, reopened)?;
        Ok(applier)
    }

    /// Makes this new applier (given its lanes and DDL handler, nothing applied
    /// yet) recover from an opened access log, as [`recover`](Applier::recover)
    /// does, applying the tail's runs of async transactions in its lanes: the
    /// answers and positions are those of a replay in sequence, and a restart
    /// with a long tail is ready sooner. An error if this applier has applied or
    /// logged anything already.
    pub fn replay_log(&mut self, log: AccessLog, reopened: Reopened) -> Result<()> {
        if self.log.is_some() || self.resolved != Seq::ZERO || !self.queue.is_empty() {
            return Err(protocol(format!(
                "an access log can only be replayed by a new applier (this one is at {})",
                self.resolved
            )));
        }
        let checkpoint = reopened.checkpoint.unwrap_or_default();
        self.resolved = checkpoint.applied;
        self.stream_seq = checkpoint.applied;
        self.epoch = checkpoint.epoch;
        self.replaying = Some(checkpoint.also_applied.iter().copied().collect());
        let mut replies = Vec::new();
        let mut tail = reopened.tail.into_iter().peekable();
        while tail.peek().is_some() {
            // A slice at a time, the run left open: the lanes apply what is placed
            // while the next slice is read.
            for record in tail.by_ref().take(REPLAY_SLICE_RECORDS) {
                self.replay(record)?;
            }
            // A promotion in the log ends what may be replayed, not what is queued.
            let promoted = self.promoted.take();
            self.place_queued(&mut replies)?;
            self.promoted = promoted;
        }
        self.apply_run(&mut replies)?;
        self.unreported = replies
            .into_iter()
            .filter_map(|reply| match reply {
                Message::Rejected { seq, reason, .. } => Some((seq, reason)),
                _ => None,
            })
            .collect();
        self.replaying = None;
        self.log = Some(log);
        Ok(())
    }

    fn replay(&mut self, record: AccessRecord) -> Result<()> {
        self.stats.recovered += 1;
        self.epoch = self.epoch.max(record.epoch);
        let AccessRecord {
            position,
            seq,
            entry,
            ..
        } = record;
        if entry == AccessEntry::Promoted {
            self.promoted = Some(record.epoch);
            return Ok(());
        }
        if self.promoted.is_some() {
            return Err(protocol(format!(
                "access log position {position}: a record after the promotion"
            )));
        }
        let message = match entry {
            AccessEntry::Ship { mode, operations } => Message::Ship {
                seq,
                epoch: record.epoch,
                mode,
                operations: Writes::new(operations),
                verify: false,
            },
            AccessEntry::Prepare {
                operations,
                responses,
            } => Message::Prepare {
                seq,
                epoch: record.epoch,
                operations: Writes::new(operations),
                responses,
            },
            AccessEntry::Commit => Message::Commit {
                seq,
                epoch: record.epoch,
            },
            AccessEntry::Abort => Message::Abort {
                seq,
                epoch: record.epoch,
            },
            AccessEntry::Promoted => return Ok(()),
        };
        self.take(message, Some(position))
    }

    /// Highest sequence up to which everything is resolved (applied).
    pub fn last_seq(&self) -> Seq {
        self.resolved
    }

    /// Highest sequence up to which everything is in the log.
    pub fn logged_seq(&self) -> Seq {
        self.logged.max(self.stream_seq).max(self.resolved)
    }

    /// Bytes of the access log's segments (0 without a log).
    pub fn log_bytes(&self) -> u64 {
        self.log.as_ref().map_or(0, AccessLog::bytes)
    }

    /// The highest primary epoch seen.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Counts so far.
    pub fn stats(&self) -> &ApplierStats {
        &self.stats
    }

    /// Sync transactions held open (in doubt until their decision).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// This side's handshake.
    pub fn hello(&self, node: &str) -> Message {
        Message::Hello {
            version: PROTOCOL_VERSION,
            epoch: self.epoch,
            node: node.to_owned(),
            // An unfinished resync is emptied when the next primary connects.
            last_seq: match self.resync {
                Some(_) => Seq::ZERO,
                None => self.resolved,
            },
            nonce: [0; 32],
        }
    }

    /// A primary connected with `epoch`: refuses a stale one; the new stream starts
    /// right after what is resolved.
    pub fn connected(&mut self, epoch: Epoch) -> Result<()> {
        // What this connection's stream re-sends is logged already.
        self.logged = self.logged.max(self.stream_seq);
        if let Some(promoted) = self.promoted {
            return Err(protocol(format!(
                "this node was promoted at {promoted}; {epoch} is not its primary"
            )));
        }
        if epoch < self.epoch {
            return Err(protocol(format!(
                "primary {epoch} is older than {} already seen",
                self.epoch
            )));
        }
        self.epoch = epoch;
        self.resync_interrupted()?;
        self.discard_unapplied();
        self.stream_seq = self.resolved;
        Ok(())
    }

    /// Drops the work logged and not applied when the last stream broke off (a log
    /// write, say on a full disk, or a commit failed in the middle of a batch). The
    /// new stream restarts at `resolved`, so the primary, which acknowledgements
    /// release only up to there, sends that work again: applied from here as well,
    /// it was applied twice (duplicate keys, each transaction refused for ever
    /// after, seen with a backup's log on a full tmpfs). Its records may still
    /// reach the log; a replay skips a sequence met twice.
    fn discard_unapplied(&mut self) {
        for work in self.queue.drain(..) {
            if matches!(work.entry, AccessEntry::Prepare { .. }) {
                // Sent again, it is prepared again (a held one is not in the queue).
                self.undecided.remove(&work.seq);
            }
        }
        self.lanes.discard_run();
    }

    /// Handles one message: checked, logged (not yet durable) and queued; its
    /// answers come from [`flush`](Applier::flush). An error means the stream is
    /// unusable (a gap, a stale epoch, a log that cannot be written): close the
    /// connection.
    pub fn handle(&mut self, message: Message) -> Result<()> {
        self.take(message, None)
    }

    /// Checks `message`, logs it (unless it comes from the log, at `replayed`) and
    /// queues its work.
    fn take(&mut self, message: Message, replayed: Option<u64>) -> Result<()> {
        if let Some(epoch) = self.promoted {
            return Err(protocol(format!(
                "this node was promoted at {epoch}; it takes nothing from a primary"
            )));
        }
        // Every message carries its sender's epoch: one from an older primary is
        // refused whatever it is.
        if let Some(epoch) = message.epoch() {
            self.check_epoch(epoch)?;
        }
        match message {
            Message::Ship {
                seq,
                mode,
                operations,
                verify,
                ..
            } => {
                if self.undecided.contains(&seq) {
                    // A sync commit the primary kept after losing the link: the held
                    // transaction is the same one; make it permanent.
                    self.stream_seq = self.stream_seq.max(seq);
                    return self.log(seq, AccessEntry::Commit, replayed, false);
                }
                if !self.is_new(seq)? {
                    return Ok(());
                }
                // A decoded message holds its operations alone: nothing is copied.
                let operations = operations.into_operations()?;
                let entry = AccessEntry::Ship { mode, operations };
                self.log(seq, entry, replayed, verify)
            }
            Message::Prepare {
                seq,
                operations,
                responses,
                ..
            } => {
                if self.undecided.contains(&seq) {
                    self.stream_seq = self.stream_seq.max(seq);
                    self.stats.duplicates += 1;
                    return Ok(());
                }
                if !self.is_new(seq)? {
                    return Ok(());
                }
                self.undecided.insert(seq);
                let entry = AccessEntry::Prepare {
                    operations: operations.into_operations()?,
                    responses,
                };
                self.log(seq, entry, replayed, false)
            }
            Message::Commit { seq, .. } => {
                if !self.undecided.contains(&seq) {
                    self.stats.duplicates += 1;
                    return Ok(());
                }
                self.stream_seq = self.stream_seq.max(seq);
                self.log(seq, AccessEntry::Commit, replayed, false)
            }
            Message::Abort { seq, .. } => {
                if self.undecided.contains(&seq) {
                    self.stream_seq = self.stream_seq.max(seq);
                } else if !self.is_new(seq)? {
                    // An abort replayed for a transaction this backup never saw
                    // prepared (it restarted) is new; one already resolved is not.
                    return Ok(());
                }
                self.log(seq, AccessEntry::Abort, replayed, false)
            }
            Message::Heartbeat { .. } => Ok(()),
            Message::ResyncBegin { .. }
            | Message::ResyncTable { .. }
            | Message::ResyncRows { .. }
            | Message::ResyncEnd { .. } => match replayed {
                // Never logged: a restart during a resync starts empty.
                Some(position) => Err(protocol(format!(
                    "access log position {position}: a resync message"
                ))),
                None => self.take_resync(message),
            },
            Message::Resynced { .. }
            | Message::Hello { .. }
            | Message::Proof { .. }
            | Message::Prepared { .. }
            | Message::Rejected { .. }
            | Message::Ack { .. }
            | Message::Applied { .. } => {
                Err(protocol(format!("unexpected {message:?} from the primary")))
            }
        }
    }

    /// Appends `entry` for `seq` to the log (unless replaying from it), notes the
    /// first position of a sequence above `resolved`, and queues the entry to be
    /// applied once the log is durable.
    fn log(
        &mut self,
        seq: Seq,
        entry: AccessEntry,
        replayed: Option<u64>,
        verify: bool,
    ) -> Result<()> {
        let (position, entry) = match (replayed, self.log.as_mut()) {
            (Some(position), _) => (Some(position), entry),
            (None, Some(log)) => {
                let (position, entry) = log.append(seq, self.epoch, entry)?;
                (Some(position), entry)
            }
            (None, None) => (None, entry),
        };
        if let Some(position) = position {
            self.first_position.note(seq, position);
        }
        let work = Work { seq, entry, verify };
        if self.resync.is_some() {
            // Waits in the log until the copy is in.
            self.beside_copy(work)?;
            return Ok(());
        }
        self.queue.push(work);
        Ok(())
    }

    /// Ends a batch of messages: makes the log durable, applies what it queued,
    /// answers (`Prepared`, `Applied`, `Rejected`, then one `Ack`), and takes a
    /// checkpoint when one is due.
    pub fn flush(&mut self, replies: &mut Vec<Message>) -> Result<()> {
        if let Some(log) = self.log.as_mut() {
            log.sync()?;
        }
        self.drain_resync(replies)?;
        self.apply_queued(replies)?;
        // During a resync the primary keeps nothing for this backup: what is logged
        // here is acknowledged (a restart before the resync's checkpoint starts it
        // over anyway).
        let seq = match self.resync {
            Some(_) => self.logged_seq(),
            None => self.resolved,
        };
        replies.push(Message::Ack {
            seq,
            epoch: self.epoch,
        });
        self.finish_checkpoint(false)?;
        if self.resync.is_none()
            && self.writing.is_none()
            && (self.checkpoint_soon || self.log.as_ref().is_some_and(AccessLog::checkpoint_due))
        {
            self.checkpoint_soon = false;
            self.start_checkpoint()?;
        }
        Ok(())
    }

    /// Work between messages (called as time passes): a resync's drain goes on a
    /// batch at a time, with the same answers a flush gives.
    pub fn work(&mut self, replies: &mut Vec<Message>) -> Result<()> {
        self.finish_checkpoint(false)?;
        self.report_unreported(replies);
        if matches!(self.resync, Some(resync::ResyncIn::Draining { .. })) {
            return self.flush(replies);
        }
        Ok(())
    }

    /// Tells the connected primary of the transactions refused while replaying the
    /// log at start, in the connection's epoch (the primary refuses an older one).
    /// Called only within a connection ([`work`](Applier::work), which a session
    /// calls at every turn), after [`connected`](Applier::connected).
    fn report_unreported(&mut self, replies: &mut Vec<Message>) {
        for (seq, reason) in self.unreported.drain(..) {
            replies.push(Message::Rejected {
                seq,
                epoch: self.epoch,
                reason: format!("{reason} (while replaying the access log at start)"),
            });
        }
    }

    /// Applies the queued work in log order, pushing answers: runs of async
    /// transactions in parallel lanes by key, everything else in sequence.
    fn apply_queued(&mut self, replies: &mut Vec<Message>) -> Result<()> {
        self.place_queued(replies)?;
        self.apply_run(replies)
    }

    /// [`apply_queued`](Applier::apply_queued), leaving the last run of async
    /// transactions open (placed, perhaps partly applied by the other lanes): the
    /// next call goes on with it, and [`apply_run`](Applier::apply_run) ends it.
    fn place_queued(&mut self, replies: &mut Vec<Message>) -> Result<()> {
        let mut queue = std::mem::take(&mut self.queue).into_iter();
        loop {
            let upcoming = queue.as_slice();
            prefetch::ahead(self.session.database(), |i| match &upcoming.get(i)?.entry {
                AccessEntry::Ship { operations, .. } | AccessEntry::Prepare { operations, .. } => {
                    Some(operations)
                }
                _ => None,
            });
            let Some(Work { seq, entry, verify }) = queue.next() else {
                break;
            };
            let entry = match entry {
                AccessEntry::Ship {
                    mode: Mode::Async,
                    operations,
                } if self.lanes.count() > 1 && !self.already_applied(seq) => {
                    let job = Job {
                        seq,
                        operations,
                        verify,
                    };
                    match self.lanes.gather(self.session.database(), job) {
                        Ok(()) if self.lanes.run_full() => {
                            self.apply_run(replies)?;
                            continue;
                        }
                        Ok(()) => continue,
                        Err(job) => AccessEntry::Ship {
                            mode: Mode::Async,
                            operations: job.operations,
                        },
                    }
                }
                entry => entry,
            };
            // Whatever is not part of the run comes after it.
            self.apply_run(replies)?;
            match entry {
                AccessEntry::Ship { operations, .. } => {
                    if self.already_applied(seq) {
                        self.resolve(seq);
                        continue;
                    }
                    match self.apply_noted(seq, operations, verify) {
                        Ok((txn, responses)) => {
                            txn.commit()?;
                            self.shipped_applied(seq, verify.then_some(responses), replies);
                        }
                        Err((at, e)) => self.reject(seq, at, &e, replies),
                    }
                }
                AccessEntry::Prepare {
                    operations,
                    responses: primary,
                } => {
                    if self.already_applied(seq) {
                        self.undecided.remove(&seq);
                        self.resolve(seq);
                        continue;
                    }
                    match self.apply_noted(seq, operations, true) {
                        Ok((txn, responses)) => {
                            replies.push(Message::Prepared {
                                seq,
                                epoch: self.epoch,
                                responses: responses.clone(),
                            });
                            let here = responses;
                            self.held.insert(seq, Held { txn, primary, here });
                        }
                        Err((at, e)) => {
                            self.undecided.remove(&seq);
                            self.reject(seq, at, &e, replies);
                        }
                    }
                }
                AccessEntry::Commit => {
                    self.undecided.remove(&seq);
                    if let Some(held) = self.held.remove(&seq) {
                        held.txn.commit()?;
                        self.stats.applied += 1;
                        self.resolve(seq);
                    }
                }
                AccessEntry::Abort => {
                    self.undecided.remove(&seq);
                    if let Some(held) = self.held.remove(&seq) {
                        held.txn.rollback();
                    }
                    self.stats.aborted += 1;
                    if seq > self.resolved && !self.resolved_above.contains(&seq) {
                        self.resolve(seq);
                    }
                }
                // Never queued: a promotion ends the stream.
                AccessEntry::Promoted => {}
            }
        }
        Ok(())
    }

    /// Applies the run of async transactions gathered so far and answers for them,
    /// in sequence order. After a failure, what was applied is still resolved (the
    /// primary must not send it again), what was not stays unresolved, and the
    /// first failure is returned.
    fn apply_run(&mut self, replies: &mut Vec<Message>) -> Result<()> {
        let (done, parallel) = self.lanes.apply_run(self.session);
        if parallel {
            self.stats.lane_meetings += self.lanes.take_meetings();
        }
        let mut failure = None;
        for Done {
            seq,
            verify,
            outcome,
        } in done
        {
            match outcome {
                Outcome::Applied(responses) => {
                    self.stats.applied_in_lanes += u64::from(parallel);
                    self.shipped_applied(seq, verify.then_some(responses), replies);
                }
                Outcome::Rejected(at, e) => self.reject(seq, at, &e, replies),
                Outcome::Failed(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// A shipped transaction is committed: counted, answered with its response
    /// digests if the primary wants them (`verify`), resolved.
    fn shipped_applied(&mut self, seq: Seq, verify: Option<Vec<u64>>, replies: &mut Vec<Message>) {
        self.stats.applied += 1;
        if let Some(responses) = verify {
            replies.push(Message::Applied {
                seq,
                epoch: self.epoch,
                responses,
            });
        }
        self.resolve(seq);
    }

    /// While replaying: whether the checkpoint's snapshot already holds `seq`.
    fn already_applied(&self, seq: Seq) -> bool {
        self.replaying.as_ref().is_some_and(|s| s.contains(&seq))
    }

    /// Takes a checkpoint now and waits for it to be durable.
    fn checkpoint(&mut self) -> Result<()> {
        self.finish_checkpoint(true)?;
        let Some(covered) = self.covered() else {
            return Ok(());
        };
        let database = self.session.database();
        if let Some(log) = self.log.as_mut() {
            let retired = log.take_checkpoint(covered, database)?;
            self.stats.checkpoints += 1;
            self.stats.segments_retired += retired as u64;
        }
        Ok(())
    }

    /// Starts a checkpoint: the rows are collected here, written on a thread of
    /// their own, so the session keeps answering the primary meanwhile (a large
    /// table takes seconds to write).
    fn start_checkpoint(&mut self) -> Result<()> {
        let (Some(covered), Some(log)) = (self.covered(), self.log.as_ref()) else {
            return Ok(());
        };
        self.writing = Some(log.begin_checkpoint(covered, self.session.database())?);
        Ok(())
    }

    /// Collects the checkpoint being written, once it is done (or waiting for it).
    pub(super) fn finish_checkpoint(&mut self, wait: bool) -> Result<()> {
        if !wait && self.writing.as_ref().is_none_or(|t| !t.is_finished()) {
            return Ok(());
        }
        let Some(thread) = self.writing.take() else {
            return Ok(());
        };
        let taken = thread.join().map_err(|_| ReplicateError::Protocol {
            reason: "the checkpoint's writer panicked".into(),
        })??;
        if let Some(log) = self.log.as_mut() {
            let retired = log.checkpoint_taken(taken)?;
            self.stats.checkpoints += 1;
            self.stats.segments_retired += retired as u64;
        }
        Ok(())
    }

    /// What a checkpoint taken now covers: the database as it is (every resolved
    /// transaction, none held) and the log position from which a restart replays.
    fn covered(&self) -> Option<Checkpoint> {
        let log = self.log.as_ref()?;
        let position = self
            .first_position
            .lowest()
            .map_or(log.next_position() - 1, |p| p - 1);
        let covered = Checkpoint {
            applied: self.resolved,
            also_applied: self.resolved_above.iter().copied().collect(),
            epoch: self.epoch,
            position,
            snapshot: String::new(),
            created_ms: utc::unix_ms(std::time::SystemTime::now()),
        };
        Some(covered)
    }

    /// Reports a transaction the backup could not apply; its sequence is resolved (as
    /// nothing) all the same.
    fn reject(&mut self, seq: Seq, at: usize, error: &ReplicateError, replies: &mut Vec<Message>) {
        self.stats.rejected += 1;
        replies.push(Message::Rejected {
            seq,
            epoch: self.epoch,
            reason: format!("operation {at}: {error}"),
        });
        self.resolve(seq);
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
        if seq <= self.stream_seq || seq <= self.resolved || self.resolved_above.contains(&seq) {
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

    /// [`apply`]s `operations`, the transaction at `seq`; a catalog change (it
    /// travels alone) is also remembered, with how long applying it took. Ordinary
    /// transactions are not timed: this is every applied transaction's path.
    #[allow(clippy::type_complexity)]
    fn apply_noted(
        &mut self,
        seq: Seq,
        operations: Vec<Operation>,
        digests: bool,
    ) -> std::result::Result<(Transaction<'s>, Vec<u64>), (usize, ReplicateError)> {
        let [Operation::Ddl { table, event }] = &operations[..] else {
            return apply(self.session, self.ddl.as_deref(), operations, digests);
        };
        let (table, change) = (table.to_string(), event_name(event).to_owned());
        let started = Instant::now();
        let applied = apply(self.session, self.ddl.as_deref(), operations, digests);
        let change = CatalogChangeAt {
            seq: Some(seq),
            table,
            change,
            took_us: started.elapsed().as_micros() as u64,
            replayed: self.replaying.is_some(),
        };
        remember(Arc::make_mut(&mut self.stats.catalog_changes), change);
        applied
    }

    /// Marks `seq` resolved and advances `resolved` over what has become contiguous.
    fn resolve(&mut self, seq: Seq) {
        debug_assert!(
            seq > self.resolved && !self.resolved_above.contains(&seq),
            "resolved twice: {seq}"
        );
        if seq == self.resolved.next() && self.resolved_above.is_empty() {
            // In order, as nearly every transaction is: no set to go through.
            self.resolved = seq;
            self.first_position.forget(seq);
            return;
        }
        self.resolved_above.insert(seq);
        while self.resolved_above.first() == Some(&self.resolved.next()) {
            self.resolved_above.pop_first();
            self.resolved = self.resolved.next();
            self.first_position.forget(self.resolved);
        }
    }
}

/// Applies `operations` in one transaction, left open; returns it with the response
/// digest of each operation if `digests` asks for them (a sync transaction, a
/// shipped one to verify: the rest would compute them for nothing, 8 % of the
/// backup's CPU per async transaction), or the index of the failing operation and
/// why. The rows move into the database; an update or delete finds the image it
/// digests by its own lookup.
fn apply<'s>(
    session: &'s Session,
    ddl: Option<&dyn DdlHandler>,
    operations: Vec<Operation>,
    digests: bool,
) -> std::result::Result<(Transaction<'s>, Vec<u64>), (usize, ReplicateError)> {
    let mut txn = session.begin();
    let mut responses = Vec::with_capacity(if digests { operations.len() } else { 0 });
    for (i, op) in operations.into_iter().enumerate() {
        let fail = |e: kirikae_engine::EngineError| (i, ReplicateError::Engine(e));
        let kind = op.kind();
        let before = match op {
            Operation::Insert { table, row } => {
                txn.insert(&table, row).map_err(fail)?;
                None
            }
            Operation::Update { table, key, row } if digests => Some(
                txn.update_returning_before(&table, &key, row)
                    .map_err(fail)?,
            ),
            Operation::Update { table, key, row } => {
                txn.update(&table, &key, row).map_err(fail)?;
                None
            }
            Operation::Delete { table, key } if digests => {
                Some(txn.delete_returning_before(&table, &key).map_err(fail)?)
            }
            Operation::Delete { table, key } => {
                txn.delete(&table, &key).map_err(fail)?;
                None
            }
            // The engine cannot undo a catalog change: it takes effect now, even in
            // a sync transaction held open (the primary makes its own change only
            // once this one is prepared).
            Operation::Ddl { table, event } => {
                apply_ddl(session.database(), ddl, &table, &event).map_err(|e| (i, e))?;
                None
            }
        };
        if digests {
            responses.push(response_digest(kind, before.as_deref()));
        }
    }
    Ok((txn, responses))
}

impl Drop for Applier<'_> {
    fn drop(&mut self) {
        // A checkpoint still being written finishes before another applier can open
        // the same directory.
        if let Err(e) = self.finish_checkpoint(true) {
            tracing::warn!("the last checkpoint failed: {e}");
        }
    }
}

fn protocol(reason: String) -> ReplicateError {
    ReplicateError::Protocol { reason }
}
