//! Restructures replicate (issue 12): a table restructured online on a replicating
//! primary is restructured on its backup too, by the same plan, online while the
//! backup keeps applying, and switched at the primary's switch in the stream. Over
//! real TCP, under writers, in each mode the rules can give a catalog change.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kirikae::engine::{Column, ColumnType, Database, Key, SessionInfo, Value};
use kirikae::replicate::{
    table_checksum, Backup, BackupConfig, LinkConfig, PeerKey, RecordLogOptions, Replicator,
    ReplicatorConfig, RuleSet,
};
use kirikae::restructure::{
    start, Plan, RestructureError, RestructureHandle, RestructureOptions, Step, Transform,
};
use kirikae::RestructureReplica;
use kirikae_testkit::{kv_database, kv_row, wait_for};

const T: &str = "acct";
const ROWS: i64 = 5_000;

fn key() -> PeerKey {
    PeerKey::new(vec![7; 32]).unwrap()
}

/// A primary and its backup (which runs announced restructures), in step, the
/// table loaded with [`ROWS`] rows through replication.
struct Pair {
    db: Database,
    replica: Database,
    primary: Replicator,
    backup: Backup,
    /// The backup's log and the primary's difference file.
    dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn pair(rules: &str) -> Pair {
    pair_with(
        rules,
        Some(Arc::new(RestructureReplica::new(
            RestructureOptions::default(),
        ))),
    )
}

/// A primary replicating to `peer` by `rules`, its difference file in `dir`.
fn replicator_config(
    peer: std::net::SocketAddr,
    rules: &str,
    dir: &std::path::Path,
) -> ReplicatorConfig {
    ReplicatorConfig {
        key: Some(key()),
        peer,
        rules: RuleSet::parse(rules, "test.toml").unwrap(),
        link: LinkConfig {
            heartbeat_every: Duration::from_millis(20),
            peer_timeout: Duration::from_millis(1_000),
            ..LinkConfig::default()
        },
        difference_dir: dir.to_owned(),
        difference: RecordLogOptions {
            fsync: false,
            ..RecordLogOptions::default()
        },
    }
}

/// A backup logging in `log`, restructures run by `ddl`.
fn backup_config(log: &std::path::Path, ddl: Option<Arc<RestructureReplica>>) -> BackupConfig {
    BackupConfig {
        key: Some(key()),
        log_dir: Some(log.to_owned()),
        heartbeat_every: Duration::from_millis(20),
        ddl: ddl.map(|d| d as Arc<dyn kirikae::replicate::DdlHandler>),
        ..BackupConfig::default()
    }
}

fn replica_handler() -> Arc<RestructureReplica> {
    Arc::new(RestructureReplica::new(RestructureOptions::default()))
}

/// [`pair`] with the backup's DDL handler given.
fn pair_with(rules: &str, ddl: Option<Arc<RestructureReplica>>) -> Pair {
    pair_tuned(rules, ddl, |_| {})
}

/// [`pair_with`], the backup's settings as `tune` leaves them.
fn pair_tuned(
    rules: &str,
    ddl: Option<Arc<RestructureReplica>>,
    tune: impl FnOnce(&mut BackupConfig),
) -> Pair {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (db, replica) = (kv_database(&[T]), kv_database(&[T]));
    let mut config = backup_config(dirs.0.path(), ddl);
    tune(&mut config);
    let backup = Backup::start(replica.clone(), "127.0.0.1:0", config).unwrap();
    let config = replicator_config(backup.local_addr(), rules, dirs.1.path());
    let primary = Replicator::start(&db, config).unwrap();
    assert!(primary.wait_duplex(Duration::from_secs(10)));
    let s = db.session(SessionInfo::default());
    for k in 0..ROWS {
        s.insert(T, kv_row(k, k)).unwrap();
    }
    Pair {
        db,
        replica,
        primary,
        backup,
        dirs,
    }
}

/// Two writers updating `v` (a column every plan here keeps) and inserting rows by
/// column name, until stopped; returns the count of their commits.
struct Writers {
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    fn start(db: &Database) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let threads = (0..2i64)
            .map(|w| {
                let (db, stop, commits) = (db.clone(), stop.clone(), commits.clone());
                std::thread::spawn(move || {
                    let s = db.session(SessionInfo::default());
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        i += 2;
                        let done = if i % 10 == 0 {
                            let k = ROWS + i;
                            s.insert_named(T, &[("k", Value::Int(k)), ("v", Value::Int(k))])
                        } else {
                            let k = Key::from(i % ROWS);
                            s.update_columns(T, &k, &[("v", Value::Int(i))])
                        };
                        match done {
                            Ok(_) => {
                                commits.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) if e.is_retryable() => {}
                            Err(e) => panic!("writer: {e}"),
                        }
                    }
                })
            })
            .collect();
        Writers {
            stop,
            commits,
            threads,
        }
    }

    fn committed(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

/// Adding a column at `rows_per_s`: slow enough to act in the middle of it.
fn slow_restructure(db: &Database, rows_per_s: u64) -> RestructureHandle {
    let options = RestructureOptions {
        rate_limit_rows_per_s: Some(rows_per_s),
        ..RestructureOptions::default()
    };
    start(db, T, add_column(), options).unwrap()
}

fn add_column() -> Plan {
    Plan::new(vec![Step::AddColumn {
        column: Column::new("plan", ColumnType::Text).default_value("basic"),
    }])
}

fn assert_same(pair: &Pair) {
    assert_equal(&pair.db, &pair.replica);
}

fn assert_equal(db: &Database, replica: &Database) {
    let (ours, theirs) = (db.table(T).unwrap(), replica.table(T).unwrap());
    assert_eq!(ours.schema(), theirs.schema(), "schemas differ");
    assert_eq!(ours.len(), theirs.len());
    assert_eq!(
        table_checksum(&ours),
        table_checksum(&theirs),
        "rows differ"
    );
}

fn restructure_under_writers(rules: &str) {
    let pair = pair(rules);
    let old_id = pair.replica.table(T).unwrap().id();
    let writers = Writers::start(&pair.db);
    let report = start(
        &pair.db,
        T,
        add_column(),
        RestructureOptions {
            stall_max: Duration::from_millis(20),
            ..RestructureOptions::default()
        },
    )
    .unwrap()
    .wait()
    .unwrap_or_else(|e| panic!("{rules}: {e}"));
    let at_switch = writers.committed();
    wait_for("writes on the new table", Duration::from_secs(30), || {
        writers.committed() > at_switch + 200
    });
    writers.stop();
    assert!(
        pair.primary.wait_caught_up(Duration::from_secs(30)),
        "{rules}: {:?}",
        pair.primary.metrics()
    );
    assert_ne!(
        pair.replica.table(T).unwrap().id(),
        old_id,
        "{rules}: the backup switched"
    );
    assert_same(&pair);
    let m = pair.primary.metrics();
    assert_eq!((m.mismatches, m.apply_errors), (0, 0), "{rules}: {m:?}");
    eprintln!(
        "{rules}: {} rows copied, primary stall {:?}",
        report.rows_copied, report.stall
    );
    pair.primary.shutdown();
    pair.backup.stop().unwrap();
}

#[test]
fn a_restructure_on_the_primary_runs_on_the_backup_and_both_switch_in_each_mode() {
    for mode in ["sync", "ordered", "async"] {
        restructure_under_writers(&format!(
            "default = \"async\"\n[[rule]]\nname = \"ddl\"\nkind = \"ddl\"\nmode = \"{mode}\"\n"
        ));
    }
}

#[test]
fn a_row_function_restructure_is_refused_while_replicating_synchronously() {
    let pair = pair(SYNC_DDL);
    let schema = pair.db.table(T).unwrap().schema().as_ref().clone();
    let custom = Transform::Custom {
        target: schema,
        map: Arc::new(|row: &[Value]| Ok(row.to_vec())),
    };
    match start(&pair.db, T, custom, RestructureOptions::default()) {
        Err(RestructureError::Engine(e)) => {
            let text = format!("{e}: {:?}", std::error::Error::source(&e));
            assert!(text.contains("row function"), "{text}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a row function restructure started while replicating"),
    }
    assert!(pair.replica.table(T).is_ok());
    assert_same(&pair);
    pair.primary.shutdown();
    pair.backup.stop().unwrap();
}

/// An abort on the primary is announced; the backup aborts its own restructure of
/// the table, which keeps serving with its old schema on both nodes.
#[test]
fn an_abort_on_the_primary_aborts_the_backups_restructure() {
    let handler = replica_handler();
    let pair = pair_with(SYNC_DDL, Some(handler.clone()));
    let old_schema = pair.db.table(T).unwrap().schema().as_ref().clone();
    // Slow enough to be aborted while it copies.
    let h = slow_restructure(&pair.db, 1_000);
    // Sync: the backup started its own before `start` returned.
    assert_eq!(handler.0.running(), vec![T.to_owned()]);
    h.abort();
    assert!(matches!(h.wait(), Err(RestructureError::Aborted { .. })));
    wait_for(
        "the backup to abort its own",
        Duration::from_secs(10),
        || handler.0.running().is_empty(),
    );
    let s = pair.db.session(SessionInfo::default());
    s.update_columns(T, &Key::from(1), &[("v", Value::Int(-1))])
        .unwrap();
    assert!(pair.primary.wait_caught_up(Duration::from_secs(10)));
    assert_eq!(
        pair.replica.table(T).unwrap().schema().as_ref(),
        &old_schema
    );
    assert_same(&pair);
    pair.primary.shutdown();
    pair.backup.stop().unwrap();
}

/// A backup down while the primary restructures gets the restructure from the
/// difference file, in order: its plan, the transactions around it, its switch.
#[test]
fn a_backup_down_during_the_restructure_gets_it_in_order_from_the_difference_file() {
    let pair = pair(SYNC_DDL);
    let Pair {
        db,
        primary,
        backup,
        dirs,
        ..
    } = pair;
    let addr = backup.local_addr();
    assert!(primary.wait_caught_up(Duration::from_secs(10)));
    backup.stop().unwrap();
    wait_for("the link to go down", Duration::from_secs(10), || {
        !primary.wait_duplex(Duration::ZERO)
    });
    let writers = Writers::start(&db);
    start(&db, T, add_column(), RestructureOptions::default())
        .unwrap()
        .wait()
        .unwrap();
    let at_switch = writers.committed();
    wait_for("writes on the new table", Duration::from_secs(30), || {
        writers.committed() > at_switch + 200
    });
    writers.stop();
    // Restarted from its log over a fresh database, it is caught up.
    let replica = kv_database(&[T]);
    let handler = replica_handler();
    let backup = Backup::start(
        replica.clone(),
        addr.to_string(),
        backup_config(dirs.0.path(), Some(handler)),
    )
    .unwrap();
    assert!(
        primary.wait_caught_up(Duration::from_secs(30)),
        "{:?}",
        primary.metrics()
    );
    assert_eq!(primary.metrics().apply_errors, 0, "{:?}", primary.metrics());
    assert_equal(&db, &replica);
    primary.shutdown();
    backup.stop().unwrap();
}

const SYNC_DDL: &str =
    "default = \"async\"\n[[rule]]\nname = \"ddl\"\nkind = \"ddl\"\nmode = \"sync\"\n";

/// A backup restarted in the middle of a restructure, from a checkpoint taken after
/// the restructure began (so the log it replays does not start it again), runs the
/// plan when the primary announces its switch, and ends like the primary.
#[test]
fn a_backup_restarted_mid_restructure_from_a_later_checkpoint_still_switches() {
    let pair = pair_tuned(SYNC_DDL, Some(replica_handler()), |c| {
        c.access_log.checkpoint_bytes = 64 << 10;
    });
    let Pair {
        db,
        primary,
        backup,
        dirs,
        ..
    } = pair;
    let addr = backup.local_addr();
    let writers = Writers::start(&db);
    let h = slow_restructure(&db, 5_000);
    // Sync: the backup runs it already. A checkpoint after that (the writers' log
    // grows past `checkpoint_bytes`), then a restart.
    let before = backup.status().stats.checkpoints;
    wait_for("a checkpoint", Duration::from_secs(30), || {
        backup.status().stats.checkpoints > before
    });
    assert!(!h.is_finished(), "the restructure ended before the restart");
    backup.stop().unwrap();
    let replica = kv_database(&[T]);
    let handler = replica_handler();
    let backup = Backup::start(
        replica.clone(),
        addr.to_string(),
        backup_config(dirs.0.path(), Some(handler.clone())),
    )
    .unwrap();
    assert!(
        handler.0.running().is_empty(),
        "the replay does not start it again: it began before the checkpoint"
    );
    h.wait().unwrap();
    let at_switch = writers.committed();
    wait_for("writes on the new table", Duration::from_secs(30), || {
        writers.committed() > at_switch + 200
    });
    writers.stop();
    assert!(
        primary.wait_caught_up(Duration::from_secs(30)),
        "{:?}",
        primary.metrics()
    );
    assert_eq!(primary.metrics().apply_errors, 0, "{:?}", primary.metrics());
    assert_equal(&db, &replica);
    primary.shutdown();
    backup.stop().unwrap();
}

/// A backup promoted while it runs a restructure for its primary aborts it: the
/// switch never reached it, and the old primary, fenced, cannot switch either. The
/// table keeps its old schema on both nodes, never half of each.
#[test]
fn a_restructure_running_at_failover_is_aborted_on_both_nodes() {
    let handler = replica_handler();
    let pair = pair_with(SYNC_DDL, Some(handler.clone()));
    let old_schema = pair.db.table(T).unwrap().schema().as_ref().clone();
    let h = slow_restructure(&pair.db, 2_000);
    assert_eq!(handler.0.running(), vec![T.to_owned()]);
    pair.backup.promote().unwrap();
    assert!(handler.0.running().is_empty(), "aborted at the promotion");
    assert_eq!(
        pair.replica.table(T).unwrap().schema().as_ref(),
        &old_schema
    );
    // The old primary cannot switch: its switch is a sync catalog change nobody
    // takes any more.
    assert!(h.wait().is_err(), "the old primary switched alone");
    assert_eq!(pair.db.table(T).unwrap().schema().as_ref(), &old_schema);
    pair.primary.shutdown();
    pair.backup.stop().unwrap();
}

/// A plan of steps on the `acct` table that keep `k` (the key) and `v` (which the
/// writers update): columns added, renamed and dropped again, a reorganization.
fn random_plan() -> impl proptest::strategy::Strategy<Value = Plan> {
    use proptest::prelude::*;
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(text, rename, drop, reorganize)| {
            let column = if text {
                Column::new("x", ColumnType::Text).default_value("basic")
            } else {
                Column::new("x", ColumnType::Int).nullable()
            };
            let mut steps = vec![Step::AddColumn { column }];
            let mut name = "x".to_owned();
            if rename {
                steps.push(Step::RenameColumn {
                    from: name.clone(),
                    to: "y".into(),
                });
                name = "y".into();
            }
            if drop {
                steps.push(Step::DropColumn { name });
            }
            if reorganize {
                steps.push(Step::Reorganize);
            }
            Plan::new(steps)
        },
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 12,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Any such plan, in any mode, under writers, with the restructure started a
    /// random while into their writes: both nodes end with the same schema and rows.
    #[test]
    fn any_plan_in_any_mode_ends_with_equal_schemas_and_rows(
        plan in random_plan(),
        mode in proptest::sample::select(vec!["sync", "ordered", "async"]),
        lead_commits in 0u64..2_000,
    ) {
        let rules = format!(
            "default = \"async\"\n[[rule]]\nname = \"ddl\"\nkind = \"ddl\"\nmode = \"{mode}\"\n"
        );
        let pair = pair(&rules);
        let writers = Writers::start(&pair.db);
        wait_for("the writers' lead", Duration::from_secs(30), || {
            writers.committed() >= lead_commits
        });
        start(&pair.db, T, plan.clone(), RestructureOptions::default())
            .unwrap()
            .wait()
            .unwrap_or_else(|e| panic!("{plan:?} ({mode}): {e}"));
        let at_switch = writers.committed();
        wait_for("writes on the new table", Duration::from_secs(30), || {
            writers.committed() > at_switch + 100
        });
        writers.stop();
        proptest::prop_assert!(pair.primary.wait_caught_up(Duration::from_secs(30)));
        let m = pair.primary.metrics();
        proptest::prop_assert_eq!((m.mismatches, m.apply_errors), (0, 0), "{:?}", m);
        assert_same(&pair);
        pair.primary.shutdown();
        pair.backup.stop().unwrap();
    }
}

/// With a sync `ddl` rule, a backup whose copy converges later than the primary's
/// sync timeout never leaves the table switched on one node only. With
/// `when_peer_down = "fail"` the primary's restructure fails before it holds its
/// writers and the backup abandons its own: old schema on both. With `continue`
/// the primary goes on without it and the backup, caught up, switches at the same
/// point of the stream: new schema on both.
#[test]
fn a_backup_too_slow_to_converge_ends_with_the_primarys_schema_either_way() {
    for when_down in ["fail", "continue"] {
        let slow = Arc::new(RestructureReplica::new(RestructureOptions {
            rate_limit_rows_per_s: Some(2_000),
            ..RestructureOptions::default()
        }));
        let rules = format!(
            "default = \"async\"\n[[rule]]\nname = \"ddl\"\nkind = \"ddl\"\nmode = \"sync\"\nwhen_peer_down = \"{when_down}\"\n"
        );
        let pair = pair_with(&rules, Some(slow.clone()));
        let old_id = pair.db.table(T).unwrap().id();
        let outcome = start(&pair.db, T, add_column(), RestructureOptions::default())
            .unwrap()
            .wait();
        let switched = pair.db.table(T).unwrap().id() != old_id;
        assert_eq!(switched, outcome.is_ok());
        assert_eq!(
            switched,
            when_down == "continue",
            "{when_down}: {outcome:?}"
        );
        wait_for(
            "the backup to settle its own",
            Duration::from_secs(30),
            || slow.0.running().is_empty(),
        );
        let s = pair.db.session(SessionInfo::default());
        s.update_columns(T, &Key::from(1), &[("v", Value::Int(-1))])
            .unwrap();
        assert!(
            pair.primary.wait_caught_up(Duration::from_secs(30)),
            "{when_down}: {:?}",
            pair.primary.metrics()
        );
        assert_same(&pair);
        pair.primary.shutdown();
        pair.backup.stop().unwrap();
    }
}

/// Every subscriber plan the CLI knows (a column added, a type changed from text
/// to int, a column dropped, one renamed, a reorganization, two steps at once),
/// under the telecom load replicated with a sync `ddl` rule: both nodes end with
/// the same schemas and rows in every table.
#[test]
fn every_subscriber_plan_under_the_telecom_load_ends_equal_on_both_nodes() {
    use kirikae_workload::telecom::{self, Traffic};
    use kirikae_workload::workload::{subscriber_plan, PLAN_NAMES, SUBSCRIBER_TABLE};
    const SUBSCRIBERS: u64 = 20_000;
    for name in PLAN_NAMES {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (db, replica) = (Database::new(), Database::new());
        telecom::create_tables(&db, SUBSCRIBERS).unwrap();
        telecom::create_tables(&replica, SUBSCRIBERS).unwrap();
        let backup = Backup::start(
            replica.clone(),
            "127.0.0.1:0",
            backup_config(dirs.0.path(), Some(replica_handler())),
        )
        .unwrap();
        // The seed-000 mixed policy, catalog changes sync.
        let rules = format!(
            "{}\n[[rule]]\nname = \"ddl\"\nkind = \"ddl\"\nmode = \"sync\"\n",
            include_str!("../replicate/rules/seed000-mixed.toml")
        );
        let config = replicator_config(backup.local_addr(), &rules, dirs.1.path());
        let primary = Replicator::start(&db, config).unwrap();
        assert!(primary.wait_duplex(Duration::from_secs(10)));
        let running = Traffic {
            sessions: 2,
            subscribers: SUBSCRIBERS,
            mix: Default::default(),
            rate: Some(4_000.0),
            seed: 3,
        }
        .start(&db);
        let plan = subscriber_plan(name).unwrap();
        start(&db, SUBSCRIBER_TABLE, plan, RestructureOptions::default())
            .unwrap()
            .wait()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let report = running.stop();
        assert!(report.ops > 0, "{name}");
        assert!(
            primary.wait_caught_up(Duration::from_secs(30)),
            "{name}: {:?}",
            primary.metrics()
        );
        let m = primary.metrics();
        assert_eq!((m.mismatches, m.apply_errors), (0, 0), "{name}: {m:?}");
        for t in telecom::TABLES {
            let (ours, theirs) = (db.table(t).unwrap(), replica.table(t).unwrap());
            assert_eq!(ours.schema(), theirs.schema(), "{name}: {t} schemas");
            assert_eq!(
                table_checksum(&ours),
                table_checksum(&theirs),
                "{name}: {t} rows"
            );
        }
        primary.shutdown();
        backup.stop().unwrap();
    }
}
