//! Resync over real TCP: an empty backup joins a primary whose tables hold rows from
//! before its replication history (a bulk load) while two writers keep committing,
//! and ends with the primary's exact tables; a backup stopped in the middle, and a
//! connection cut in the middle, each end in a new resync that completes (never a
//! loop); a backup in the middle of a resync refuses to be promoted; a finished
//! resync survives a backup restart.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kirikae_engine::{Database, Key, SessionInfo};
use kirikae_replicate::{
    table_checksum, AccessLogOptions, Backup, BackupConfig, Event, Impairment, LinkState,
    LoopbackProxy, PeerKey, Replicator, RuleSet,
};
use kirikae_testkit::{kv_database, kv_row, wait_for};

const ACCT: &str = "acct";
const LEDGER: &str = "ledger";
const SCRATCH: &str = "scratch";
const ROWS: i64 = 50_000;

fn key() -> PeerKey {
    PeerKey::new(b"resync-test-key-0123456789abcdef".to_vec()).unwrap()
}

/// The primary's database: `ROWS` accounts loaded before replication starts, a
/// ledger, and a table the rules never replicate.
fn loaded_primary() -> Database {
    let db = kv_database(&[ACCT, LEDGER, SCRATCH]);
    let s = db.session(SessionInfo::default());
    for k in 0..ROWS {
        s.insert(ACCT, kv_row(k, k)).unwrap();
    }
    s.insert(SCRATCH, kv_row(1, 1)).unwrap();
    db
}

fn replicator(db: &Database, peer: std::net::SocketAddr, dir: &Path, rate: u64) -> Replicator {
    let rules = RuleSet::parse(
        r#"
        default = "async"
        [[rule]]
        table = "ledger"
        mode = "sync"
        [[rule]]
        table = "scratch"
        mode = "skip"
        "#,
        "resync.toml",
    )
    .unwrap();
    // The shared fast link, with these rules and this copy rate.
    let mut config = common::sync_replicator_config(peer, key(), dir);
    config.rules = rules;
    config.link.peer_timeout = Duration::from_millis(1000);
    config.link.copy_bytes_per_s = rate;
    Replicator::start(db, config).unwrap()
}

fn backup(listen: &str, log: &Path) -> (Database, Backup) {
    let config = common::backup_config(key(), Some(log));
    common::start_backup(&[ACCT, LEDGER, SCRATCH], listen, config)
}

/// Two writers updating, deleting and inserting accounts (each its own keys) and
/// adding ledger rows, about 2,000 commits a second each, until stopped.
struct Writers {
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    fn start(db: &Database) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let threads = (0..2i64)
            .map(|t| {
                let (db, stop, commits) = (db.clone(), Arc::clone(&stop), Arc::clone(&commits));
                std::thread::spawn(move || {
                    let s = db.session(SessionInfo::new("app", "app", None));
                    let mut i = 0i64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        if i % 20 == 0 {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        // Spread over the whole table: the copy meets changes both
                        // behind and ahead of where it reads.
                        let k = ((i * 7_919) % (ROWS + 1_000)) / 2 * 2 + t;
                        let mut tx = s.begin();
                        let exists = tx.get(ACCT, &Key::from(k)).unwrap().is_some();
                        let r = match (exists, i % 5) {
                            (true, 0) => tx.delete(ACCT, &Key::from(k)).map(drop),
                            (true, _) => tx.update(ACCT, &Key::from(k), kv_row(k, i)).map(drop),
                            (false, _) => tx.insert(ACCT, kv_row(k, i)).map(drop),
                        };
                        r.unwrap();
                        if i % 10 == 0 {
                            tx.insert(LEDGER, kv_row(t * 1_000_000_000 + i, i)).unwrap();
                        }
                        // A sync commit refused or left in doubt rolls back: fine.
                        if tx.commit().is_ok() {
                            commits.fetch_add(1, Ordering::Relaxed);
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

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.commits.load(Ordering::Relaxed)
    }
}

fn assert_equal(primary: &Database, replica: &Database) {
    common::assert_tables_equal(primary, replica, &[ACCT, LEDGER]);
    assert!(
        replica.table(SCRATCH).unwrap().is_empty(),
        "a table the rules never replicate is not copied"
    );
}

#[test]
fn an_empty_backup_joins_a_loaded_primary_under_load_and_ends_equal() {
    let (diff, log) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = loaded_primary();
    let (replica, backup) = backup("127.0.0.1:0", log.path());
    let writers = Writers::start(&primary);
    // Slow enough that the writers commit hundreds of times during the copy.
    let rep = replicator(&primary, backup.local_addr(), diff.path(), 2 << 20);
    let Event::Resynced { rows, .. } = common::resynced(&rep, Duration::from_secs(60)) else {
        unreachable!()
    };
    assert!(rows >= ROWS as u64 / 2, "{rows} rows copied");
    let commits = writers.stop();
    assert!(commits > 100, "only {commits} commits beside the copy");
    assert!(
        rep.wait_caught_up(Duration::from_secs(20)),
        "{:?}",
        rep.metrics()
    );
    assert_eq!(rep.metrics().state, Some(LinkState::Duplex));
    assert_eq!(rep.metrics().resyncs, 1, "one attempt");
    assert_equal(&primary, &replica);
    // A restart of the backup comes back from the checkpoint taken after the resync.
    let port = backup.local_addr();
    wait_for("the resync's checkpoint", Duration::from_secs(10), || {
        backup.status().stats.checkpoints > 0
    });
    drop(rep);
    backup.stop().unwrap();
    let (again, restarted) = self::backup(&port.to_string(), log.path());
    assert_equal(&primary, &again);
    drop(restarted);
}

#[test]
fn a_backup_stopped_mid_resync_is_resynced_again_from_empty() {
    let (diff, log) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = loaded_primary();
    let (first, backup1) = backup("127.0.0.1:0", log.path());
    let addr = backup1.local_addr();
    let writers = Writers::start(&primary);
    // About 2 s of copy: stopped in the middle of it.
    let rep = replicator(&primary, addr, diff.path(), 512 << 10);
    wait_for("the copy under way", Duration::from_secs(10), || {
        first.table(ACCT).is_ok_and(|t| t.len() > 1_000)
    });
    let err = backup1
        .promote()
        .expect_err("no promotion in the middle of a resync");
    assert!(err.to_string().contains("resync"), "{err}");
    backup1.stop().unwrap();
    assert!(log.path().join("RESYNC").exists(), "the log is marked");
    // The same log directory, a new database: it starts empty and is resynced.
    let (second, backup2) = backup(&addr.to_string(), log.path());
    assert_eq!(backup2.status().last_seq.0, 0, "nothing usable was kept");
    ends_equal_after_another_resync(&rep, writers, &primary, &second);
    drop(backup2);
}

/// The resync that follows an interrupted one completes: the backup ends with the
/// primary's tables, after two resyncs (three if the writers' load made the first
/// connection time out too), never a loop.
fn ends_equal_after_another_resync(
    rep: &Replicator,
    writers: Writers,
    primary: &Database,
    replica: &Database,
) {
    common::resynced(rep, Duration::from_secs(60));
    assert!(writers.stop() > 0);
    assert!(
        rep.wait_caught_up(Duration::from_secs(20)),
        "{:?}",
        rep.metrics()
    );
    let resyncs = rep.metrics().resyncs;
    assert!((2..=3).contains(&resyncs), "{resyncs} resyncs");
    assert_equal(primary, replica);
}

#[test]
fn a_connection_cut_mid_resync_ends_in_a_new_resync_that_completes() {
    let (diff, log) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = loaded_primary();
    let (replica, backup) = backup("127.0.0.1:0", log.path());
    let proxy = LoopbackProxy::start(backup.local_addr(), Impairment::default()).unwrap();
    let writers = Writers::start(&primary);
    let rep = replicator(&primary, proxy.local_addr(), diff.path(), 1 << 20);
    wait_for("the copy under way", Duration::from_secs(10), || {
        replica.table(ACCT).is_ok_and(|t| t.len() > 1_000)
    });
    proxy.cut();
    ends_equal_after_another_resync(&rep, writers, &primary, &replica);
}

#[test]
fn an_operator_resync_copies_the_tables_again_and_repairs_a_divergent_backup() {
    let (diff, log) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = loaded_primary();
    let (replica, backup) = backup("127.0.0.1:0", log.path());
    let rep = replicator(&primary, backup.local_addr(), diff.path(), 0);
    common::resynced(&rep, Duration::from_secs(30));
    assert!(rep.wait_caught_up(Duration::from_secs(10)));
    // The backup's copy goes bad behind replication's back (here: a maintenance
    // write that bypasses the write fence; in the field, a disk or a bug).
    let t = replica.table(ACCT).unwrap();
    let (rid, _) = t.get_with_rid(&Key::from(7)).unwrap();
    t.replace(rid, kv_row(7, -1)).unwrap();
    assert_ne!(
        table_checksum(&t),
        table_checksum(&primary.table(ACCT).unwrap())
    );
    let writers = Writers::start(&primary);
    rep.resync();
    common::resynced(&rep, Duration::from_secs(30));
    writers.stop();
    assert!(
        rep.wait_caught_up(Duration::from_secs(20)),
        "{:?}",
        rep.metrics()
    );
    assert_eq!(rep.metrics().resyncs, 2);
    assert_equal(&primary, &replica);
}

/// Rows so large that a chunk of them would not fit a frame go in smaller chunks:
/// 40 rows of 300 KB with a 1 MiB frame limit (a chunk of 512 rows would be 12 MB,
/// refused by the peer, and the resync would start again for ever).
#[test]
fn a_table_of_rows_larger_than_a_chunk_is_copied_in_frames_the_peer_accepts() {
    use kirikae_engine::{Column, ColumnType, Schema, Value};
    const FRAME: usize = 1 << 20;
    let schema = || {
        Schema::new(
            vec![
                Column::new("k", ColumnType::Int),
                Column::new("blob", ColumnType::Text),
            ],
            &["k"],
        )
        .unwrap()
    };
    let (primary, replica) = (Database::new(), Database::new());
    primary.create_table("blobs", schema()).unwrap();
    replica.create_table("blobs", schema()).unwrap();
    let s = primary.session(SessionInfo::default());
    for k in 0..40i64 {
        let text: String = std::iter::repeat_n((b'a' + (k % 26) as u8) as char, 300_000).collect();
        s.insert("blobs", vec![Value::Int(k), Value::from(text)])
            .unwrap();
    }
    let (diff, log) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backup = Backup::start(
        replica.clone(),
        "127.0.0.1:0",
        BackupConfig {
            key: Some(key()),
            log_dir: Some(log.path().to_owned()),
            access_log: AccessLogOptions::default().with_fsync(false),
            frame_bytes_max: FRAME,
            ..BackupConfig::default()
        },
    )
    .unwrap();
    let mut config = common::sync_replicator_config(backup.local_addr(), key(), diff.path());
    config.link.frame_bytes_max = FRAME;
    let rep = Replicator::start(&primary, config).unwrap();
    let Event::Resynced { rows, .. } = common::resynced(&rep, Duration::from_secs(30)) else {
        unreachable!()
    };
    assert_eq!(rows, 40);
    assert_eq!(rep.metrics().resyncs, 1, "one attempt");
    let (p, r) = (
        primary.table("blobs").unwrap(),
        replica.table("blobs").unwrap(),
    );
    assert_eq!(table_checksum(&r), table_checksum(&p));
    drop(rep);
    backup.stop().unwrap();
}
