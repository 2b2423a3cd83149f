//! Seeded simulation of the replication link: the primary's [`Link`] state machine
//! (its difference file a real file, carried out as the replicator's shell does) and
//! the peer's [`BackupSession`] and [`Applier`] (over a real database and a real log
//! file) — the product's code on both sides, transactions shaped by its commit
//! policy ([`shipment`]) — exchange messages
//! through a simulated network that drops, delays and reorders them, partitions, and
//! restarts the peer. The protocol runs over TCP, so faults act the way they do on a
//! TCP connection: a lost message silently swallows the rest of its connection (a
//! half-open connection, found out by timeouts and gaps), a reordered message is
//! caught by the transport's own numbering and resets the connection, and messages
//! of an old connection never reach a new one. After the faults stop and the link
//! recovers it checks:
//!
//! - no sync commit the primary was told is replicated is missing at the peer;
//! - the peer's tables equal the primary's on every replicated table;
//! - the peer resolved every sequence exactly once, in order (its log is 1..=N);
//! - no false mismatch, refusal or apply error was raised.
//!
//! `KIRIKAE_SIM_SEEDS=n` runs more seeds; `KIRIKAE_SIM_SEED=s` runs one (a failure
//! prints its seed).

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kirikae_engine::{
    Column, ColumnType, CommitRequest, Database, Key, Operation, RowRef, Schema, Session,
    SessionInfo, TxnId, Value,
};
use kirikae_replicate::handshake::{BackupHandshake, PrimaryHandshake};
use kirikae_replicate::{
    shipment, AccessLog, AccessLogOptions, Applier, BackupSession, DifferenceFile, Event, Link,
    LinkConfig, LinkState, Message, Mode, PeerKey, RecordLog, RecordLogOptions, RuleSet, Seq,
    SessionConfig, SyncOutcome, TimeOfDay,
};
use kirikae_testkit::Rng;

const ACCT: &str = "acct";
const LEDGER: &str = "ledger";
const STEP_US: u64 = 100;
const KEYS: i64 = 40;

fn schema() -> Schema {
    Schema::new(
        vec![
            Column::new("k", ColumnType::Int),
            Column::new("v", ColumnType::Int),
        ],
        &["k"],
    )
    .expect("schema")
}

fn tables(db: &Database) {
    db.create_table(ACCT, schema()).expect("acct");
    db.create_table(LEDGER, schema()).expect("ledger");
}

/// The peer: a database, its applier, and the log directory that survives restarts.
struct PeerNode {
    applier: Option<Applier<'static>>,
    db: Database,
}

impl PeerNode {
    fn start(dir: &Path) -> PeerNode {
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
        let applier =
            Applier::recover(session, log, reopened).expect("backup recovers from its log");
        PeerNode {
            applier: Some(applier),
            db,
        }
    }

    fn applier(&mut self) -> &mut Applier<'static> {
        self.applier.as_mut().expect("peer is up")
    }

    fn rows(&self, table: &str) -> BTreeMap<i64, i64> {
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
fn access_options() -> AccessLogOptions {
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

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("not an int: {other:?}"),
    }
}

struct InFlight {
    conn: u64,
    /// Position in its connection and direction (what TCP numbers).
    index: u64,
    to_peer: bool,
    message: Message,
}

#[derive(Clone, Copy)]
struct Faults {
    drop: f64,
    reorder: f64,
    max_delay_us: u64,
    partition_chance: f64,
    restart_chance: f64,
}

/// A sync transaction waiting for its outcome: the changes it makes to the model.
struct Waiting {
    changes: Vec<(&'static str, i64, Option<i64>)>,
    ledger: i64,
}

struct Sim {
    rng: Rng,
    now: u64,
    link: Link,
    /// The primary's difference file, carried out from the link's output by the same
    /// code as in the replicator's shell.
    diff: DifferenceFile,
    peer: Option<PeerNode>,
    peer_dir: PathBuf,
    peer_down_until: u64,
    partition_until: u64,
    conn: Option<u64>,
    next_conn: u64,
    order: u64,
    /// In flight, by (delivery time, send order).
    net: BTreeMap<(u64, u64), InFlight>,
    last_at: [u64; 2],
    /// Per direction: messages sent and delivered on the current connection.
    sent_index: [u64; 2],
    delivered_index: [u64; 2],
    /// Connections that lost a message: nothing more gets through them.
    broken: BTreeSet<u64>,
    /// The peer's side of the current connection: the product's own session code.
    backup_session: Option<BackupSession>,
    /// The rule files transactions draw from: async, ordered, sync (continue), sync
    /// (fail).
    rules: [RuleSet; 4],
    /// The primary's committed state of the replicated tables.
    model: BTreeMap<(&'static str, i64), i64>,
    locked: BTreeSet<i64>,
    waiting: BTreeMap<Seq, Waiting>,
    replicated_ledger: Vec<i64>,
    next_ledger: i64,
    events: Vec<Event>,
    refused: Vec<String>,
    restarts: u64,
    other_sync: u64,
    _dirs: Vec<tempfile::TempDir>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
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
        let peer = PeerNode::start(peer_dir.path());
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
            _dirs: vec![primary_dir, peer_dir],
        }
    }

    fn partitioned(&self) -> bool {
        self.now < self.partition_until
    }

    fn send(&mut self, to_peer: bool, message: Message, faults: &Faults) {
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
    fn flush_primary(&mut self, faults: &Faults) {
        loop {
            let ready = self.link.ready();
            if ready.is_empty() {
                return;
            }
            if let Some(report) = self.diff.persist(&ready) {
                assert_eq!(report.error, None, "the difference file failed");
                self.link.persisted(self.now, report);
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

    fn close(&mut self, why: &str) {
        self.backup_session = None;
        if self.conn.take().is_some() {
            self.link.disconnected(self.now, why);
        }
    }

    fn settle(&mut self, seq: Seq, outcome: SyncOutcome) {
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
            SyncOutcome::OutcomeUnknown { .. } | SyncOutcome::PeerDown { .. } => {}
        }
    }

    fn count_sync(&mut self, replicated: bool) {
        if !replicated {
            self.other_sync += 1;
        }
    }

    fn commit_model(&mut self, changes: &[(&'static str, i64, Option<i64>)]) {
        for (table, k, v) in changes {
            match v {
                Some(v) => self.model.insert((table, *k), *v),
                None => self.model.remove(&(table, *k)),
            };
        }
    }

    /// Generates one transaction valid against the model and submits it.
    fn transaction(&mut self) {
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
                        row,
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
                            row,
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
                row: vec![ledger.into(), 1.into()],
            });
            befores.push(None);
            changes.push((LEDGER, ledger, Some(1)));
        }
        if ops.is_empty() {
            return;
        }
        let session = SessionInfo::default();
        let request = CommitRequest {
            txn: TxnId(1),
            session: &session,
            operations: &ops,
            before: &befores,
        };
        let mut shipped =
            shipment(&self.rules[rules], &request, TimeOfDay(0)).expect("no rule says skip");
        assert_eq!(shipped.mode, mode, "rule file {rules}");
        let operations = std::mem::take(&mut shipped.operations);
        let submitted = self
            .link
            .submit(self.now, mode, shipped.when_peer_down, operations, || {
                shipped.responses(&request)
            })
            .expect("submit");
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
    }

    fn deliver(&mut self, faults: &Faults) {
        let later = self.net.split_off(&(self.now + 1, 0));
        let arrived = std::mem::replace(&mut self.net, later);
        for m in arrived.into_values() {
            if Some(m.conn) != self.conn || self.broken.contains(&m.conn) {
                continue;
            }
            let dir = usize::from(m.to_peer);
            if m.index != self.delivered_index[dir] + 1 {
                // Out of order: the transport resets the connection.
                self.close("connection reset (reordered segment)");
                continue;
            }
            self.delivered_index[dir] = m.index;
            if m.to_peer {
                self.peer_receive(m.message, faults);
            } else {
                self.link.receive(self.now, m.message);
                self.flush_primary(faults);
            }
        }
    }

    fn peer_receive(&mut self, message: Message, faults: &Faults) {
        let (Some(peer), Some(session)) = (self.peer.as_mut(), self.backup_session.as_mut()) else {
            return;
        };
        let mut replies = Vec::new();
        let result = session.receive(self.now, [message], peer.applier(), &mut replies);
        self.peer_send(replies, faults);
        if result.is_err() {
            // A gap or a stale message: the peer drops the connection, as over TCP.
            self.close("peer closed");
        }
    }

    fn peer_tick(&mut self, faults: &Faults) {
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

    fn peer_send(&mut self, replies: Vec<Message>, faults: &Faults) {
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

    fn maybe_connect(&mut self, faults: &Faults) {
        if self.conn.is_some() || !self.link.reconnect_due(self.now) {
            return;
        }
        let reachable = !self.partitioned() && self.peer.is_some();
        if !reachable {
            self.link.connect_failed(self.now);
            return;
        }
        // The handshake, through the product's code on both sides (instantly: its
        // faults are the TCP tests' business): hellos and proofs with the pair's key,
        // then the backup's session opens over the applier.
        let peer = self.peer.as_mut().expect("peer up");
        let key = Some(PeerKey::new(vec![7; 32]).expect("key"));
        let shaken = PrimaryHandshake::new(key.clone(), self.link.hello()).and_then(|primary| {
            let own = peer.applier().hello("peer");
            let (backup, [hello, proof]) =
                BackupHandshake::answer(key, primary.hello().clone(), own)?;
            let (at_primary, proof) = primary.answer(&hello, &proof)?;
            Ok((at_primary, backup.verify(&proof)?))
        });
        let opened = shaken.and_then(|(at_primary, at_backup)| {
            let config = SessionConfig {
                node: "peer".into(),
                heartbeat_every: Duration::from_millis(5),
                primary_timeout: Duration::from_millis(40),
            };
            let session = BackupSession::open(config, self.now, &at_backup, peer.applier())?;
            Ok((at_primary, session))
        });
        let Ok((greeting, mut session)) = opened else {
            self.link.connect_failed(self.now);
            return;
        };
        session.sent(self.now);
        self.backup_session = Some(session);
        self.conn = Some(self.next_conn);
        self.next_conn += 1;
        self.last_at = [self.now; 2];
        self.sent_index = [0; 2];
        self.delivered_index = [0; 2];
        self.link
            .connected(self.now, greeting.last_seq, greeting.epoch);
        self.flush_primary(faults);
    }

    fn faults(&mut self, faults: &Faults) {
        if self.rng.chance(faults.partition_chance) {
            self.partition_until = self.now + 1_000 + self.rng.below(80_000);
        }
        if self.peer.is_some() && self.rng.chance(faults.restart_chance) {
            self.restarts += 1;
            self.peer = None; // held transactions roll back, the database is gone
            self.close("peer process died");
            self.peer_down_until = self.now + self.rng.below(60_000);
        }
        if self.peer.is_none() && self.now >= self.peer_down_until {
            self.peer = Some(PeerNode::start(&self.peer_dir));
        }
    }

    fn step(&mut self, faults: &Faults, submit: bool) {
        self.now += STEP_US;
        self.faults(faults);
        self.maybe_connect(faults);
        if submit && !self.link.paused() && self.rng.chance(0.4) {
            self.transaction();
            self.flush_primary(faults);
        }
        self.deliver(faults);
        self.link.tick(self.now);
        self.flush_primary(faults);
        self.peer_tick(faults);
    }

    fn settled(&self) -> bool {
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

/// What a run went through, to show the faults were real.
#[derive(Default, Debug)]
struct Tally {
    recoveries: u64,
    replayed: u64,
    restarts: u64,
    replicated_sync: u64,
    alone_or_failed_sync: u64,
    connects: u64,
    checkpoints: u64,
    segments_retired: u64,
}

fn run(seed: u64) -> Tally {
    let mut sim = Sim::new(seed);
    let mut rng = Rng::new(seed ^ 0x5eed);
    let faults = Faults {
        drop: [0.0, 0.001, 0.01][rng.below(3) as usize],
        reorder: [0.0, 0.002, 0.02][rng.below(3) as usize],
        max_delay_us: [200, 2_000, 8_000][rng.below(3) as usize],
        partition_chance: [0.0, 0.0002, 0.001][rng.below(3) as usize],
        restart_chance: [0.0, 0.0001, 0.0005][rng.below(3) as usize],
    };
    for _ in 0..20_000 {
        sim.step(&faults, true);
    }
    let calm = Faults {
        drop: 0.0,
        reorder: 0.0,
        max_delay_us: 200,
        partition_chance: 0.0,
        restart_chance: 0.0,
    };
    sim.partition_until = 0;
    sim.peer_down_until = 0;
    let mut steps = 0;
    while !sim.settled() {
        sim.step(&calm, false);
        steps += 1;
        assert!(
            steps < 200_000,
            "seed {seed}: the link did not recover: {:?}, {} waiting",
            sim.link.metrics(sim.now),
            sim.waiting.len()
        );
    }
    // Let the last acknowledgements land.
    for _ in 0..100 {
        sim.step(&calm, false);
    }

    let ctx = format!("seed {seed}");
    assert!(
        sim.refused.is_empty(),
        "{ctx}: false refusals {:?}",
        sim.refused
    );
    for e in &sim.events {
        match e {
            Event::Mismatch { .. } | Event::ResyncRequired { .. } | Event::Fenced { .. } => {
                panic!("{ctx}: unexpected {e:?}")
            }
            Event::Diverged { reason, .. } => {
                assert!(!reason.contains("could not apply"), "{ctx}: {reason}")
            }
            Event::Recovered { .. } => {}
        }
    }
    let peer = sim.peer.as_ref().expect("peer up");
    let ledger = peer.rows(LEDGER);
    for id in &sim.replicated_ledger {
        assert!(
            ledger.contains_key(id),
            "{ctx}: replicated sync commit {id} missing at the peer"
        );
    }
    let model_rows = |t: &str| -> BTreeMap<i64, i64> {
        sim.model
            .iter()
            .filter(|((table, _), _)| *table == t)
            .map(|((_, k), v)| (*k, *v))
            .collect()
    };
    assert_eq!(peer.rows(ACCT), model_rows(ACCT), "{ctx}: acct differs");
    assert_eq!(ledger, model_rows(LEDGER), "{ctx}: ledger differs");
    let metrics = sim.link.metrics(sim.now);
    let last = metrics.last_seq;
    let mut tally = Tally {
        restarts: sim.restarts,
        replicated_sync: sim.replicated_ledger.len() as u64,
        alone_or_failed_sync: sim.other_sync,
        connects: metrics.connects,
        replayed: metrics.replayed,
        ..Tally::default()
    };
    for e in &sim.events {
        if let Event::Recovered { .. } = e {
            tally.recoveries += 1;
        }
    }
    let stats = peer.applier.as_ref().expect("applier").stats().clone();
    tally.checkpoints = stats.checkpoints;
    tally.segments_retired = stats.segments_retired;
    assert_eq!(
        peer.applier.as_ref().expect("applier").last_seq(),
        last,
        "{ctx}: the backup resolved every sequence"
    );
    drop(sim.peer.take());
    // A backup restarted from its checkpoint and the log after it holds exactly what
    // the primary committed.
    let again = PeerNode::start(&sim.peer_dir);
    assert_eq!(
        again.rows(ACCT),
        model_rows(ACCT),
        "{ctx}: acct after restart"
    );
    assert_eq!(
        again.rows(LEDGER),
        model_rows(LEDGER),
        "{ctx}: ledger after restart"
    );
    tally
}

#[test]
fn the_link_survives_drops_delays_reorders_partitions_and_peer_restarts() {
    if let Ok(seed) = std::env::var("KIRIKAE_SIM_SEED") {
        let tally = run(seed.parse().expect("KIRIKAE_SIM_SEED is a number"));
        eprintln!("{tally:?}");
        return;
    }
    let seeds: u64 = std::env::var("KIRIKAE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48);
    let mut total = Tally::default();
    for seed in 0..seeds {
        let t = run(seed);
        total.recoveries += t.recoveries;
        total.replayed += t.replayed;
        total.restarts += t.restarts;
        total.replicated_sync += t.replicated_sync;
        total.alone_or_failed_sync += t.alone_or_failed_sync;
        total.connects += t.connects;
        total.checkpoints += t.checkpoints;
        total.segments_retired += t.segments_retired;
    }
    eprintln!("{seeds} seeds: {total:?}");
    // The seeds must actually exercise outages, replays and restarts.
    assert!(total.restarts > 0 && total.recoveries > seeds && total.replayed > 0);
    assert!(total.replicated_sync > 0 && total.alone_or_failed_sync > 0);
    assert!(total.checkpoints > 0 && total.segments_retired > 0);
}
