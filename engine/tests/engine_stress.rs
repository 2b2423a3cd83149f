//! Stress: threads transfer balances between accounts in transactions while another
//! thread takes snapshots. The total is conserved at the end and in every snapshot
//! (a snapshot never sees half a transfer); lock timeouts and deadlocks are retried,
//! never lost.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kirikae_engine::{
    Column, ColumnType, Database, EngineConfig, EngineError, Key, Schema, SessionInfo, Value,
};

use kirikae_testkit::Rng;

const INITIAL: i64 = 1_000;

fn setup(accounts: i64) -> Database {
    let db = Database::with_config(EngineConfig {
        lock_timeout: Duration::from_millis(200),
    });
    let schema = Schema::new(
        vec![
            Column::new("id", ColumnType::Int),
            Column::new("balance", ColumnType::Int),
        ],
        &["id"],
    )
    .expect("schema");
    db.create_table("account", schema).expect("create");
    let s = db.session(SessionInfo::default());
    for id in 0..accounts {
        s.insert("account", vec![id.into(), INITIAL.into()])
            .expect("load");
    }
    db
}

fn total_in_snapshot(db: &Database) -> (i64, u64) {
    let (bytes, _) = db.snapshot_bytes().expect("snapshot");
    let copy = Database::from_snapshot_bytes(&bytes, EngineConfig::default()).expect("reload");
    let t = copy.table("account").expect("table");
    let rows = t.rows();
    (
        rows.iter().map(|(_, r)| r[1].as_int().expect("int")).sum(),
        rows.len() as u64,
    )
}

struct Counts {
    committed: AtomicU64,
    retried: AtomicU64,
}

fn transfer_loop(db: &Database, seed: u64, accounts: i64, stop: &AtomicBool, counts: &Counts) {
    let s = db.session(SessionInfo::new("teller", "bank", None));
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::Relaxed) {
        let a = rng.below(accounts as u64) as i64;
        let b = rng.below(accounts as u64) as i64;
        if a == b {
            continue;
        }
        let amount = rng.below(50) as i64;
        loop {
            let mut tx = s.begin();
            let attempt = (|| -> Result<(), EngineError> {
                let from = tx
                    .get_for_update("account", &Key::from(a))?
                    .expect("account a");
                let to = tx
                    .get_for_update("account", &Key::from(b))?
                    .expect("account b");
                let from_balance = from[1].as_int().expect("int");
                let to_balance = to[1].as_int().expect("int");
                tx.update_columns(
                    "account",
                    &Key::from(a),
                    &[("balance", Value::Int(from_balance - amount))],
                )?;
                tx.update_columns(
                    "account",
                    &Key::from(b),
                    &[("balance", Value::Int(to_balance + amount))],
                )?;
                Ok(())
            })();
            match attempt {
                Ok(()) => {
                    tx.commit().expect("commit");
                    counts.committed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) if e.is_retryable() => {
                    tx.rollback();
                    counts.retried.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => panic!("transfer {a}->{b}: {e}"),
            }
        }
    }
}

/// Runs transfers for at least `duration` and until `min_committed` transfers and 6
/// snapshots were made (a loaded machine gets more time, up to a minute), checking
/// the total in snapshots all along.
fn run(accounts: i64, threads: u64, duration: Duration, min_committed: u64) -> (u64, u64, u64) {
    let db = setup(accounts);
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts {
        committed: AtomicU64::new(0),
        retried: AtomicU64::new(0),
    });
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let (db, stop, counts) = (db.clone(), Arc::clone(&stop), Arc::clone(&counts));
            std::thread::spawn(move || {
                transfer_loop(&db, 0x9e37_79b9 * (i + 1), accounts, &stop, &counts)
            })
        })
        .collect();
    let started = Instant::now();
    let mut snapshots = 0;
    let enough = |snapshots: u64| {
        started.elapsed() >= duration
            && counts.committed.load(Ordering::Relaxed) >= min_committed
            && snapshots > 5
    };
    while !enough(snapshots) && started.elapsed() < Duration::from_secs(60) {
        let (total, rows) = total_in_snapshot(&db);
        assert_eq!(rows, accounts as u64);
        assert_eq!(total, accounts * INITIAL, "a snapshot saw half a transfer");
        snapshots += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let t = db.table("account").expect("table");
    let total: i64 = t
        .rows()
        .iter()
        .map(|(_, r)| r[1].as_int().expect("int"))
        .sum();
    assert_eq!(total, accounts * INITIAL, "money created or destroyed");
    (
        counts.committed.load(Ordering::Relaxed),
        counts.retried.load(Ordering::Relaxed),
        snapshots,
    )
}

#[test]
fn transfers_conserve_the_total_under_contention() {
    let (committed, retried, snapshots) = run(1_000, 4, Duration::from_secs(2), 1_001);
    eprintln!("1000 accounts: {committed} transfers, {retried} retries, {snapshots} snapshots");
    assert!(committed > 1_000, "the workload made progress");
    assert!(snapshots > 5);
}

#[test]
fn transfers_on_few_hot_accounts_survive_deadlocks() {
    let (committed, retried, _) = run(4, 4, Duration::from_secs(2), 101);
    eprintln!("4 accounts: {committed} transfers, {retried} retries");
    assert!(committed > 100, "hot accounts still make progress");
}
