//! The seeded simulation's world, shared by the link simulation
//! (`replicate_sim.rs`) and the failover simulation (`failover_sim.rs`): the
//! primary's [`Link`] (its difference file a real file, carried out as the
//! replicator's shell does), the backup's [`BackupSession`] and [`Applier`] (over a
//! real database and a real access log), the handshake on both sides, and a network
//! with TCP's failure modes: a lost message swallows the rest of its connection, a
//! reordered one resets it, an old connection's messages never reach a new one.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kirikae_engine::{
    Column, ColumnType, CommitRequest, Database, Key, Operation, RowRef, Schema, Session,
    SessionInfo, TxnId, Value,
};
use kirikae_replicate::handshake::{BackupHandshake, PrimaryHandshake};
use kirikae_replicate::{
    shipment, AccessLog, AccessLogOptions, Applier, BackupSession, CopyOrder, CopyPiece,
    DifferenceFile, Event, Link, LinkConfig, LinkState, Message, Mode, PeerKey, RecordLog,
    RecordLogOptions, ReplicateError, RuleSet, Seq, SessionConfig, SyncOutcome, TimeOfDay, Writes,
};
use kirikae_testkit::Rng;

pub mod etcd_model;
mod promoted;
#[allow(unused_imports)] // the link simulation promotes nothing
pub use promoted::{backup_up, check_promoted};

pub const ACCT: &str = "acct";
pub const LEDGER: &str = "ledger";
pub const STEP_US: u64 = 100;
/// The link thread's tick when nothing wakes it (`link_shell.rs`).
pub const LINK_TICK_US: u64 = 1_000;
pub const KEYS: i64 = 40;

pub fn schema() -> Schema {
    Schema::new(
        vec![
            Column::new("k", ColumnType::Int),
            Column::new("v", ColumnType::Int),
        ],
        &["k"],
    )
    .expect("schema")
}

pub fn tables(db: &Database) {
    db.create_table(ACCT, schema()).expect("acct");
    db.create_table(LEDGER, schema()).expect("ledger");
}

/// The peer: a database, its applier, and the log directory that survives restarts.
pub struct PeerNode {
    pub applier: Option<Applier<'static>>,
    pub db: Database,
}

impl PeerNode {
    /// A peer over `dir`, applying async transactions in `lanes` lanes (runs of two
    /// or more in parallel, so that small batches exercise them too).
    pub fn start(dir: &Path, lanes: usize) -> PeerNode {
        let db = Database::new();
        tables(&db);
        // The applier borrows its session for as long as it lives; one small leak per
        // simulated peer incarnation.
        let session: &'static Session = Box::leak(Box::new(db.session(SessionInfo::new(
            "replication",
            "replication",
            None,
        ))));
        let (log, reopened) =
            AccessLog::open(dir, access_options(), &db).expect("backup's access log");
        // The log is replayed in the lanes too, handed a few steps at a time in short
        // runs, so that small histories cross both edges.
        let mut applier = Applier::new(session);
        applier.set_apply_lanes(lanes, 2).expect("apply lanes");
        applier.set_lane_handoff(3, 16);
        applier
            .replay_log(log, reopened)
            .expect("backup recovers from its log");
        PeerNode {
            applier: Some(applier),
            db,
        }
    }

    pub fn applier(&mut self) -> &mut Applier<'static> {
        self.applier.as_mut().expect("peer is up")
    }

    pub fn rows(&self, table: &str) -> BTreeMap<i64, i64> {
        self.db
            .table(table)
            .expect("table")
            .rows()
            .into_iter()
            .map(|(_, r)| (int(&r[0]), int(&r[1])))
            .collect()
    }
}

/// Small segments and frequent checkpoints, retired at once: restarts replay from a
/// checkpoint and a short tail.
pub fn access_options() -> AccessLogOptions {
    AccessLogOptions {
        segments: RecordLogOptions {
            segment_bytes: 1 << 12,
            fsync: false,
        },
        checkpoint_bytes: 1 << 13,
        checkpoint_every: Duration::from_secs(3600),
        retain_age: Duration::ZERO,
        retain_bytes: 0,
    }
}

pub fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("not an int: {other:?}"),
    }
}

pub struct InFlight {
    pub conn: u64,
    /// Position in its connection and direction (what TCP numbers).
    pub index: u64,
    pub to_peer: bool,
    pub message: Message,
}

#[derive(Clone, Copy)]
pub struct Faults {
    pub drop: f64,
    pub reorder: f64,
    pub max_delay_us: u64,
    pub partition_chance: f64,
    pub restart_chance: f64,
}

/// A resync's copy under way in the simulation.
pub struct Copy {
    pub order: CopyOrder,
    /// Tables still to copy.
    pub tables: Vec<&'static str>,
    /// The table being copied, and the last key copied of it.
    pub table: Option<&'static str>,
    pub after: Option<i64>,
}

/// A sync transaction waiting for its outcome: the changes it makes to the model.
pub struct Waiting {
    pub changes: Vec<(&'static str, i64, Option<i64>)>,
    pub ledger: i64,
}

pub struct Sim {
    pub rng: Rng,
    pub now: u64,
    pub link: Link,
    /// The primary's difference file, carried out from the link's output by the same
    /// code as in the replicator's shell.
    pub diff: DifferenceFile,
    pub peer: Option<PeerNode>,
    pub peer_dir: PathBuf,
    pub peer_down_until: u64,
    pub partition_until: u64,
    pub conn: Option<u64>,
    pub next_conn: u64,
    pub order: u64,
    /// In flight, by (delivery time, send order).
    pub net: BTreeMap<(u64, u64), InFlight>,
    pub last_at: [u64; 2],
    /// Per direction: messages sent and delivered on the current connection.
    pub sent_index: [u64; 2],
    pub delivered_index: [u64; 2],
    /// Connections that lost a message: nothing more gets through them.
    pub broken: BTreeSet<u64>,
    /// The peer's side of the current connection: the product's own session code.
    pub backup_session: Option<BackupSession>,
    /// The rule files transactions draw from: async, ordered, sync (continue), sync
    /// (fail).
    pub rules: [RuleSet; 4],
    /// The primary's committed state of the replicated tables.
    pub model: BTreeMap<(&'static str, i64), i64>,
    pub locked: BTreeSet<i64>,
    pub waiting: BTreeMap<Seq, Waiting>,
    pub replicated_ledger: Vec<i64>,
    pub next_ledger: i64,
    pub events: Vec<Event>,
    pub refused: Vec<String>,
    pub restarts: u64,
    pub other_sync: u64,
    /// Sync commits whose client was told `OutcomeUnknown` (their ledger ids).
    pub unknown_ledger: BTreeSet<i64>,
    /// Submissions refused because the primary was fenced.
    pub fenced_refusals: u64,
    /// Messages a sync commit sent itself ([`Link::take_messages`]).
    pub sent_by_commits: u64,
    /// The primary's process is stopped (paused, or dead for good): it runs no step
    /// and what is sent to it waits (a dead one's connection just times out).
    pub primary_frozen: bool,
    /// When the peer last heard the primary (a message, or a session opened).
    pub peer_heard: Option<u64>,
    /// A resync's copy the link asked for, and how far it got.
    pub copy: Option<Copy>,
    /// Resyncs whose copy was taken to the end.
    pub copies: u64,
    /// Chance that a peer restart finds its log directory gone (its data lost):
    /// it comes back empty and must be resynced.
    pub wipe_on_restart: f64,
    /// Restarts that lost the peer's data.
    pub wipes: u64,
    /// The peer's apply lanes.
    pub lanes: usize,
    pub _dirs: Vec<tempfile::TempDir>,
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        let primary_dir = tempfile::tempdir().expect("tempdir");
        let peer_dir = tempfile::tempdir().expect("tempdir");
        let options = RecordLogOptions {
            segment_bytes: 1 << 14,
            fsync: false,
        };
        let (log, _) = RecordLog::open(primary_dir.path(), options).expect("diff");
        let diff = DifferenceFile::new(log);
        let config = LinkConfig {
            heartbeat_every: Duration::from_millis(5),
            peer_timeout: Duration::from_millis(40),
            sync_timeout: Duration::from_millis(15),
            window_txns_max: 2_000,
            verify_every: 3,
            catchup_batch_txns: 16,
            catchup_window_txns: 64,
            pause_within_txns: 8,
            reconnect_min: Duration::from_millis(2),
            reconnect_max: Duration::from_millis(30),
            ..LinkConfig::default()
        };
        let link = Link::new(config, diff.state(), 0);
        // 1 to 3 lanes: in sequence, and in parallel.
        let lanes = 1 + (seed % 3) as usize;
        let peer = PeerNode::start(peer_dir.path(), lanes);
        Sim {
            rng: Rng::new(seed),
            now: 0,
            link,
            diff,
            peer: Some(peer),
            peer_dir: peer_dir.path().to_owned(),
            peer_down_until: 0,
            partition_until: 0,
            conn: None,
            next_conn: 1,
            order: 0,
            net: BTreeMap::new(),
            last_at: [0; 2],
            sent_index: [0; 2],
            delivered_index: [0; 2],
            broken: BTreeSet::new(),
            backup_session: None,
            rules: [
                r#"default = "async""#,
                r#"default = "ordered""#,
                r#"default = "sync""#,
                "default = \"sync\"\nwhen_peer_down = \"fail\"",
            ]
            .map(|text| RuleSet::parse(text, "sim.toml").expect("rules")),
            model: BTreeMap::new(),
            locked: BTreeSet::new(),
            waiting: BTreeMap::new(),
            replicated_ledger: Vec::new(),
            next_ledger: 0,
            events: Vec::new(),
            refused: Vec::new(),
            restarts: 0,
            other_sync: 0,
            fenced_refusals: 0,
            sent_by_commits: 0,
            primary_frozen: false,
            peer_heard: None,
            copy: None,
            copies: 0,
            wipe_on_restart: 0.0,
            wipes: 0,
            lanes,
            unknown_ledger: BTreeSet::new(),
            _dirs: vec![primary_dir, peer_dir],
        }
    }

    pub fn partitioned(&self) -> bool {
        self.now < self.partition_until
    }

    pub fn send(&mut self, to_peer: bool, message: Message, faults: &Faults) {
        let Some(conn) = self.conn else { return };
        if self.broken.contains(&conn) {
            return;
        }
        if self.partitioned() || self.rng.chance(faults.drop) {
            self.broken.insert(conn);
            return;
        }
        let delay = 20 + self.rng.below(faults.max_delay_us.max(1));
        let mut at = self.now + delay;
        let dir = usize::from(to_peer);
        if !self.rng.chance(faults.reorder) {
            at = at.max(self.last_at[dir]);
            self.last_at[dir] = at;
        }
        self.order += 1;
        self.sent_index[dir] += 1;
        self.net.insert(
            (at, self.order),
            InFlight {
                conn,
                index: self.sent_index[dir],
                to_peer,
                message,
            },
        );
    }

    /// Carries out the link's output the way the replicator's shell does: the
    /// difference file, the read a catch-up asks for, messages onto the network,
    /// events and outcomes. Repeats while the link asks for more.
    pub fn flush_primary(&mut self, faults: &Faults) {
        loop {
            let ready = self.link.ready();
            if ready.is_empty() {
                return;
            }
            if let Some(report) = self.diff.persist(&ready) {
                assert_eq!(report.error, None, "the difference file failed");
                self.link.persisted(self.now, report);
            }
            if let Some(order) = ready.copy {
                self.copy = Some(Copy {
                    order,
                    tables: vec![ACCT, LEDGER],
                    table: None,
                    after: None,
                });
            }
            if let Some(read) = ready.read {
                let batch = self.diff.read(read);
                self.link.replayed(self.now, read.catch_up, batch);
            }
            if self.conn.is_some() {
                for m in ready.messages {
                    self.send(true, m, faults);
                }
            }
            if ready.close {
                self.close("primary closed");
            }
            self.events.extend(ready.events);
            for (seq, outcome) in ready.outcomes {
                self.settle(seq, outcome);
            }
        }
    }

    pub fn close(&mut self, why: &str) {
        self.backup_session = None;
        if self.conn.take().is_some() {
            self.link.disconnected(self.now, why);
        }
    }

    pub fn settle(&mut self, seq: Seq, outcome: SyncOutcome) {
        let w = self
            .waiting
            .remove(&seq)
            .expect("an outcome for a waiting sync txn");
        for (table, k, _) in &w.changes {
            if *table == ACCT {
                self.locked.remove(k);
            }
        }
        match outcome {
            SyncOutcome::Replicated | SyncOutcome::CommittedAlone { .. } => {
                self.count_sync(outcome == SyncOutcome::Replicated);
                if outcome == SyncOutcome::Replicated {
                    self.replicated_ledger.push(w.ledger);
                }
                self.commit_model(&w.changes);
            }
            SyncOutcome::Refused { reason } => self.refused.push(reason),
            // The backup may commit it if it takes over: the client was told so.
            SyncOutcome::OutcomeUnknown { .. } => {
                self.unknown_ledger.insert(w.ledger);
            }
            SyncOutcome::PeerDown { .. } => {}
        }
    }

    pub fn count_sync(&mut self, replicated: bool) {
        if !replicated {
            self.other_sync += 1;
        }
    }

    /// The model's rows of `table` (key → value): what the primary committed.
    pub fn model_rows(&self, table: &str) -> BTreeMap<i64, i64> {
        self.model
            .iter()
            .filter(|((t, _), _)| *t == table)
            .map(|((_, k), v)| (*k, *v))
            .collect()
    }

    pub fn commit_model(&mut self, changes: &[(&'static str, i64, Option<i64>)]) {
        for (table, k, v) in changes {
            match v {
                Some(v) => self.model.insert((table, *k), *v),
                None => self.model.remove(&(table, *k)),
            };
        }
    }

    /// Generates one transaction valid against the model and submits it.
    /// Returns whether it is a sync transaction waiting for its outcome.
    pub fn transaction(&mut self) -> bool {
        // Which rule file this transaction runs under (its mode, and for sync what
        // to do while the peer is down); the product's commit policy applies it.
        let pick = self.rng.below(100);
        let (rules, mode) = match pick {
            0..=39 => (0, Mode::Async),
            40..=69 => (1, Mode::Ordered),
            70..=84 => (2, Mode::Sync),
            _ => (3, Mode::Sync),
        };
        let mut ops = Vec::new();
        let mut befores = Vec::new();
        let mut changes = Vec::new();
        let mut used = BTreeSet::new();
        for _ in 0..1 + self.rng.below(3) {
            let k = self.rng.below(KEYS as u64) as i64;
            if self.locked.contains(&k) || !used.insert(k) {
                continue;
            }
            let v = self.rng.below(1_000_000) as i64;
            let row: Vec<Value> = vec![k.into(), v.into()];
            match self.model.get(&(ACCT, k)).copied() {
                None => {
                    ops.push(Operation::Insert {
                        table: ACCT.into(),
                        row: row.into(),
                    });
                    befores.push(None);
                    changes.push((ACCT, k, Some(v)));
                }
                Some(old) => {
                    let before: Vec<Value> = vec![k.into(), old.into()];
                    if self.rng.chance(0.7) {
                        ops.push(Operation::Update {
                            table: ACCT.into(),
                            key: Key::from(k),
                            row: row.into(),
                        });
                        befores.push(Some(RowRef::from(before)));
                        changes.push((ACCT, k, Some(v)));
                    } else {
                        ops.push(Operation::Delete {
                            table: ACCT.into(),
                            key: Key::from(k),
                        });
                        befores.push(Some(RowRef::from(before)));
                        changes.push((ACCT, k, None));
                    }
                }
            }
        }
        let ledger = self.next_ledger;
        if mode == Mode::Sync {
            self.next_ledger += 1;
            ops.push(Operation::Insert {
                table: LEDGER.into(),
                row: vec![ledger.into(), 1.into()].into(),
            });
            befores.push(None);
            changes.push((LEDGER, ledger, Some(1)));
        }
        if ops.is_empty() {
            return false;
        }
        let session = SessionInfo::default();
        let mut request = CommitRequest {
            txn: TxnId(1),
            session: &session,
            operations: ops,
            before: &befores,
        };
        let mut shipped =
            shipment(&self.rules[rules], &mut request, TimeOfDay(0)).expect("no rule says skip");
        assert_eq!(shipped.mode, mode, "rule file {rules}");
        let operations = Writes::encoded(std::mem::take(&mut shipped.operations));
        let submitted =
            match self
                .link
                .submit(self.now, mode, shipped.when_peer_down, operations, || {
                    shipped.responses(request.before)
                }) {
                Ok(s) => s,
                Err(ReplicateError::Fenced { .. }) => {
                    self.fenced_refusals += 1;
                    return false;
                }
                Err(e) => panic!("submit: {e}"),
            };
        let waiting = matches!(submitted, kirikae_replicate::Submitted::Waiting { .. });
        match submitted {
            kirikae_replicate::Submitted::Queued { .. } => self.commit_model(&changes),
            kirikae_replicate::Submitted::Waiting { seq } => {
                for (t, k, _) in &changes {
                    if *t == ACCT {
                        self.locked.insert(*k);
                    }
                }
                self.waiting.insert(seq, Waiting { changes, ledger });
            }
            kirikae_replicate::Submitted::Settled { outcome, .. } => match outcome {
                SyncOutcome::CommittedAlone { .. } => self.commit_model(&changes),
                SyncOutcome::PeerDown { .. } => {}
                other => panic!("settled at submit with {other:?}"),
            },
        }
        waiting
    }

    pub fn deliver(&mut self, faults: &Faults) {
        let later = self.net.split_off(&(self.now + 1, 0));
        let arrived = std::mem::replace(&mut self.net, later);
        // What reaches the peer in one step is read as one batch, as a backup reads
        // what its socket holds (so async runs reach its apply lanes).
        let mut to_peer = Vec::new();
        for ((_, order), m) in arrived {
            if Some(m.conn) != self.conn || self.broken.contains(&m.conn) {
                continue;
            }
            if !m.to_peer && self.primary_frozen {
                // Waits in the stopped process's socket, in order.
                self.net.insert((self.now + STEP_US, order), m);
                continue;
            }
            let dir = usize::from(m.to_peer);
            if m.index != self.delivered_index[dir] + 1 {
                // Out of order: the transport resets the connection, after what
                // arrived before.
                self.peer_receive(std::mem::take(&mut to_peer), faults);
                self.close("connection reset (reordered segment)");
                continue;
            }
            self.delivered_index[dir] = m.index;
            if m.to_peer {
                to_peer.push(m.message);
            } else {
                self.peer_receive(std::mem::take(&mut to_peer), faults);
                self.link.receive(self.now, m.message);
                self.flush_primary(faults);
            }
        }
        self.peer_receive(to_peer, faults);
    }

    pub fn peer_receive(&mut self, messages: Vec<Message>, faults: &Faults) {
        if messages.is_empty() {
            return;
        }
        let (Some(peer), Some(session)) = (self.peer.as_mut(), self.backup_session.as_mut()) else {
            return;
        };
        self.peer_heard = Some(self.now);
        let mut replies = Vec::new();
        let result = session.receive(self.now, messages, peer.applier(), &mut replies);
        self.peer_send(replies, faults);
        if result.is_err() {
            // A gap or a stale message: the peer drops the connection, as over TCP.
            self.close("peer closed");
        }
    }

    pub fn peer_tick(&mut self, faults: &Faults) {
        if self.conn.is_none() {
            return;
        }
        let (Some(peer), Some(session)) = (self.peer.as_mut(), self.backup_session.as_mut()) else {
            return;
        };
        let mut replies = Vec::new();
        if session
            .tick(self.now, peer.applier(), &mut replies)
            .is_err()
        {
            return self.close("peer timed the primary out");
        }
        self.peer_send(replies, faults);
    }

    pub fn peer_send(&mut self, replies: Vec<Message>, faults: &Faults) {
        if replies.is_empty() {
            return;
        }
        if let Some(session) = self.backup_session.as_mut() {
            session.sent(self.now);
        }
        for r in replies {
            self.send(false, r, faults);
        }
    }

    pub fn maybe_connect(&mut self, faults: &Faults) {
        if self.conn.is_some() || !self.link.reconnect_due(self.now) {
            return;
        }
        let reachable = !self.partitioned() && self.peer.is_some();
        if !reachable {
            self.link.connect_failed(self.now);
            return;
        }
        // The handshake, through the product's code on both sides (instantly: its
        // faults are the TCP tests' business): hellos and proofs with the pair's key.
        // As in the replicator's shell, the link hears of the backup's (proved) hello
        // before the backup has checked the primary's proof; then the backup's
        // session opens over the applier, or the backup closes the connection.
        let peer = self.peer.as_mut().expect("peer up");
        let key = Some(PeerKey::new(vec![7; 32]).expect("key"));
        let shaken = PrimaryHandshake::new(key.clone(), self.link.hello()).and_then(|primary| {
            let own = peer.applier().hello("peer");
            let (backup, [hello, proof]) =
                BackupHandshake::answer(key, primary.hello().clone(), own)?;
            let (at_primary, proof) = primary.answer(&hello, &proof)?;
            Ok((at_primary, backup, proof))
        });
        let Ok((greeting, backup, proof)) = shaken else {
            self.link.connect_failed(self.now);
            return;
        };
        let config = SessionConfig {
            node: "peer".into(),
            heartbeat_every: Duration::from_millis(5),
            primary_timeout: Duration::from_millis(40),
        };
        let opened = backup.verify(&proof).and_then(|at_backup| {
            BackupSession::open(config, self.now, &at_backup, peer.applier())
        });
        self.conn = Some(self.next_conn);
        self.next_conn += 1;
        self.last_at = [self.now; 2];
        self.sent_index = [0; 2];
        self.delivered_index = [0; 2];
        self.link
            .connected(self.now, greeting.last_seq, greeting.epoch);
        match opened {
            Ok(mut session) => {
                session.sent(self.now);
                self.backup_session = Some(session);
                self.peer_heard = Some(self.now);
            }
            Err(_) => self.close("the backup refused the primary"),
        }
        self.flush_primary(faults);
    }

    pub fn faults(&mut self, faults: &Faults) {
        if self.rng.chance(faults.partition_chance) {
            // A random partition never shortens one under way (a scenario's own
            // lasts until the scenario heals it).
            let until = self.now + 1_000 + self.rng.below(80_000);
            self.partition_until = self.partition_until.max(until);
        }
        if self.peer.is_some() && self.rng.chance(faults.restart_chance) {
            self.restarts += 1;
            self.peer = None; // held transactions roll back, the database is gone
            self.close("peer process died");
            if self.rng.chance(self.wipe_on_restart) {
                self.wipes += 1;
                std::fs::remove_dir_all(&self.peer_dir).expect("wipe the peer's log");
            }
            self.peer_down_until = self.now + self.rng.below(60_000);
        }
        if self.peer.is_none() && self.now >= self.peer_down_until {
            self.peer = Some(PeerNode::start(&self.peer_dir, self.lanes));
        }
    }

    pub fn step(&mut self, faults: &Faults, submit: bool) {
        self.now += STEP_US;
        self.faults(faults);
        if self.primary_frozen {
            self.deliver(faults);
            self.peer_tick(faults);
            return;
        }
        self.maybe_connect(faults);
        // Whether the link thread runs this step (link_shell.rs): woken by a
        // submission, by urgent input the reader delivered, at its tick, or kept
        // awake by a copy; otherwise what the link holds waits for its next turn.
        let mut woken = self.copy.is_some() || self.now % LINK_TICK_US < STEP_US;
        if submit && !self.link.paused() && self.rng.chance(0.4) {
            let sync_waiting = self.transaction();
            // While the link thread sleeps, half the time a waiting sync commit sends
            // the pending messages itself, as a committing thread does (outbox.rs),
            // and does not wake it unless something else is urgent.
            let mut sent_itself = false;
            if sync_waiting && !woken && self.conn.is_some() && self.rng.chance(0.5) {
                if let Some(messages) = self.link.take_messages() {
                    self.sent_by_commits += messages.len() as u64;
                    for m in messages {
                        self.send(true, m, faults);
                    }
                    sent_itself = true;
                }
            }
            woken |= !sent_itself || self.link.has_urgent_ready();
        }
        self.deliver(faults);
        if woken || self.link.has_urgent_ready() {
            self.link.tick(self.now);
            self.flush_primary(faults);
            self.copy_some();
            self.flush_primary(faults);
        }
        self.peer_tick(faults);
    }

    /// The resync copy, as the replicator's copier takes it: once every transaction
    /// up to its start is settled (visible), a few rows a step, read from the
    /// primary's state as it is at that step (so later commits may be in it).
    pub fn copy_some(&mut self) {
        let Some(copy) = self.copy.as_mut() else {
            return;
        };
        let id = copy.order.resync;
        if !self.link.copy_wanted(id) {
            self.copy = None;
            return;
        }
        if self.waiting.keys().any(|s| *s <= copy.order.from_seq) {
            return;
        }
        for _ in 0..1 + self.rng.below(3) {
            if !self.link.copy_room() {
                return;
            }
            let Some(copy) = self.copy.as_mut() else {
                return;
            };
            let Some(table) = copy.table else {
                let Some(next) = copy.tables.pop() else {
                    self.link.copy_done(self.now, id);
                    self.copy = None;
                    self.copies += 1;
                    return;
                };
                copy.table = Some(next);
                copy.after = None;
                let piece = CopyPiece::Table {
                    name: next.into(),
                    schema: schema(),
                    rows: self.model.keys().filter(|(t, _)| *t == next).count() as u64,
                };
                self.link.copy(self.now, id, piece, None);
                continue;
            };
            let after = copy.after;
            let rows: Vec<(i64, i64)> = self
                .model
                .range((table, after.map_or(i64::MIN, |a| a + 1))..=(table, i64::MAX))
                .take(1 + self.rng.below(6) as usize)
                .map(|((_, k), v)| (*k, *v))
                .collect();
            let copy = self.copy.as_mut().expect("copying");
            match rows.last() {
                None => copy.table = None,
                Some((last, _)) => {
                    copy.after = Some(*last);
                    let rows = rows
                        .into_iter()
                        .map(|(k, v)| vec![Value::Int(k), Value::Int(v)])
                        .collect();
                    self.link.copy(
                        self.now,
                        id,
                        CopyPiece::Rows {
                            table: table.into(),
                            rows,
                        },
                        None,
                    );
                }
            }
        }
    }

    pub fn settled(&self) -> bool {
        let m = self.link.metrics(self.now);
        self.link.state() == LinkState::Duplex
            && self.waiting.is_empty()
            && m.last_acked_seq == m.last_seq
            && self
                .peer
                .as_ref()
                .is_some_and(|p| p.applier.as_ref().is_some_and(|a| a.held() == 0))
    }
}

/// Runs the seed in `KIRIKAE_SIM_SEED` alone (printing its tally; `None`), or seeds
/// `0..KIRIKAE_SIM_SEEDS` (48 by default), each tally folded into the total:
/// `Some((seeds, total))`, printed too.
pub fn run_seeds<T: Default + std::fmt::Debug>(
    run: impl Fn(u64) -> T,
    fold: impl Fn(&mut T, T),
) -> Option<(u64, T)> {
    if let Ok(seed) = std::env::var("KIRIKAE_SIM_SEED") {
        let tally = run(seed.parse().expect("KIRIKAE_SIM_SEED is a number"));
        eprintln!("{tally:?}");
        return None;
    }
    let seeds: u64 = std::env::var("KIRIKAE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48);
    let mut total = T::default();
    for seed in 0..seeds {
        // Every failure names its seed, whatever panicked (an assertion with its
        // context or an `expect` deep inside).
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(seed))) {
            Ok(tally) => fold(&mut total, tally),
            Err(panic) => {
                eprintln!("seed {seed} failed: replay it with KIRIKAE_SIM_SEED={seed}");
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!("{seeds} seeds: {total:?}");
    Some((seeds, total))
}
