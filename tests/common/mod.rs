//! What the replicated-restructure tests share: a primary and its backup in step
//! over TCP (the backup running announced restructures), writers, plans, checks.

// Each test binary uses a part of this; test code: a failed unwrap is the test
// failing, with its message.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kirikae::engine::{Column, ColumnType, Database, Key, SessionInfo, Value};
use kirikae::replicate::{
    table_checksum, Backup, BackupConfig, LinkConfig, PeerKey, RecordLogOptions, Replicator,
    ReplicatorConfig, RuleSet,
};
use kirikae::restructure::{start, Plan, RestructureHandle, RestructureOptions, Step};
use kirikae::RestructureReplica;
use kirikae_testkit::{kv_database, kv_row, wait_for};

pub const T: &str = "acct";
pub const ROWS: i64 = 5_000;

pub fn key() -> PeerKey {
    PeerKey::new(vec![7; 32]).unwrap()
}

/// A primary and its backup (which runs announced restructures), in step, the
/// table loaded with [`ROWS`] rows through replication.
pub struct Pair {
    pub db: Database,
    pub replica: Database,
    pub primary: Replicator,
    pub backup: Backup,
    /// The backup's log and the primary's difference file.
    pub dirs: (tempfile::TempDir, tempfile::TempDir),
}

pub fn pair(rules: &str) -> Pair {
    pair_with(rules, Some(replica_handler()))
}

impl Pair {
    /// Both ends stopped.
    pub fn stop(self) {
        self.primary.shutdown();
        self.backup.stop().unwrap();
    }
}

/// A primary replicating to `peer` by `rules`, its difference file in `dir`.
pub fn replicator_config(
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
pub fn backup_config(log: &std::path::Path, ddl: Option<Arc<RestructureReplica>>) -> BackupConfig {
    BackupConfig {
        key: Some(key()),
        log_dir: Some(log.to_owned()),
        heartbeat_every: Duration::from_millis(20),
        ddl: ddl.map(|d| d as Arc<dyn kirikae::replicate::DdlHandler>),
        ..BackupConfig::default()
    }
}

pub fn replica_handler() -> Arc<RestructureReplica> {
    Arc::new(RestructureReplica::new(RestructureOptions::default()))
}

/// [`pair`] with the backup's DDL handler given.
pub fn pair_with(rules: &str, ddl: Option<Arc<RestructureReplica>>) -> Pair {
    pair_tuned(rules, ddl, |_| {})
}

/// [`pair_with`], the backup's settings as `tune` leaves them.
pub fn pair_tuned(
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
pub struct Writers {
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    pub fn start(db: &Database) -> Writers {
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

    pub fn committed(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Stops them once they have committed `more` transactions after this call
    /// (on the new table, after a switch).
    pub fn stop_after(self, more: u64) {
        let at = self.committed();
        wait_for("more writes", Duration::from_secs(30), || {
            self.committed() > at + more
        });
        self.stop();
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

/// Adding a column at `rows_per_s`: slow enough to act in the middle of it.
pub fn slow_restructure(db: &Database, rows_per_s: u64) -> RestructureHandle {
    let options = RestructureOptions {
        rate_limit_rows_per_s: Some(rows_per_s),
        ..RestructureOptions::default()
    };
    start(db, T, add_column(), options).unwrap()
}

pub fn add_column() -> Plan {
    Plan::new(vec![Step::AddColumn {
        column: Column::new("plan", ColumnType::Text).default_value("basic"),
    }])
}

pub fn assert_same(pair: &Pair) {
    assert_equal(&pair.db, &pair.replica);
}

pub fn assert_equal(db: &Database, replica: &Database) {
    let (ours, theirs) = (db.table(T).unwrap(), replica.table(T).unwrap());
    assert_eq!(ours.schema(), theirs.schema(), "schemas differ");
    assert_eq!(ours.len(), theirs.len());
    assert_eq!(
        table_checksum(&ours),
        table_checksum(&theirs),
        "rows differ"
    );
}

/// Async by default, catalog changes in `mode`.
pub fn ddl_rules(mode: &str) -> String {
    format!("default = \"async\"\n[[rule]]\nname = \"ddl\"\nkind = \"ddl\"\nmode = \"{mode}\"\n")
}

/// Stops `backup` and waits until `primary` saw it go (its link is down).
pub fn stop_backup(primary: &Replicator, backup: Backup) {
    backup.stop().unwrap();
    wait_for("the link to go down", Duration::from_secs(10), || {
        !primary.wait_duplex(Duration::ZERO)
    });
}

/// A backup restarted over a fresh database from its log in `log`, on `addr`.
pub fn restart_backup(
    addr: std::net::SocketAddr,
    log: &std::path::Path,
) -> (Database, Arc<RestructureReplica>, Backup) {
    let replica = kv_database(&[T]);
    let handler = replica_handler();
    let config = backup_config(log, Some(handler.clone()));
    let backup = Backup::start(replica.clone(), addr.to_string(), config).unwrap();
    (replica, handler, backup)
}

/// [`assert_caught_up_and_equal`], then both nodes stopped.
pub fn assert_equal_and_stop(
    primary: Replicator,
    db: &Database,
    replica: &Database,
    backup: Backup,
) {
    // Acknowledged means logged at a backup with a log: applied (a switch's plan
    // run, say) may come a little later.
    let last_seq = primary.metrics().last_seq;
    wait_for("the backup applied all", Duration::from_secs(30), || {
        backup.status().last_seq >= last_seq
    });
    assert_caught_up_and_equal(&primary, db, replica);
    primary.shutdown();
    backup.stop().unwrap();
}

/// `primary` has caught up, without apply errors, and `db` and `replica` hold the
/// same schema and rows.
pub fn assert_caught_up_and_equal(primary: &Replicator, db: &Database, replica: &Database) {
    assert!(
        primary.wait_caught_up(Duration::from_secs(30)),
        "{:?}",
        primary.metrics()
    );
    assert_eq!(primary.metrics().apply_errors, 0, "{:?}", primary.metrics());
    assert_equal(db, replica);
}
