//! Planned switchover over real TCP, with a writer committing throughout: the roles
//! swap at one sequence, the writer moves to the new primary, nothing is lost or
//! doubled, and the new backup (the old primary's database) is caught up.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kirikae_engine::{EngineError, Key, SessionInfo};
use kirikae_replicate::{
    switchover, table_checksum, Backup, BackupConfig, Epoch, PeerKey, ReplicateError, Replicator,
    ReplicatorConfig, Seq, Switchover,
};
use kirikae_testkit::{kv_database, kv_row, wait_for};
use parking_lot::Mutex;

const T: &str = "acct";

fn key() -> PeerKey {
    PeerKey::new(vec![9; 32]).unwrap()
}

fn backup_config(dir: &std::path::Path) -> BackupConfig {
    common::backup_config(key(), Some(dir))
}

/// The shared sync configuration, reconnecting faster (5–50 ms): the new primary
/// finds the new backup sooner.
fn replicator_config(peer: std::net::SocketAddr, dir: &std::path::Path) -> ReplicatorConfig {
    let mut config = common::sync_replicator_config(peer, key(), dir);
    config.link.reconnect_min = Duration::from_millis(5);
    config.link.reconnect_max = Duration::from_millis(50);
    config
}

/// Whether a commit error means "the primary moved: retry on the new one".
fn moved(e: &EngineError) -> bool {
    match e {
        EngineError::CommitVetoed { source } => {
            source.downcast_ref::<ReplicateError>().is_some_and(|r| {
                matches!(
                    r,
                    ReplicateError::HandedOver { .. } | ReplicateError::NotPrimary
                )
            })
        }
        _ => false,
    }
}

#[test]
fn a_switchover_swaps_roles_at_one_sequence_with_nothing_lost_or_doubled() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a_db, b_db) = (kv_database(&[T]), kv_database(&[T]));
    let b = Backup::start(b_db.clone(), "127.0.0.1:0", backup_config(dirs[0].path())).unwrap();
    let a = Replicator::start(&a_db, replicator_config(b.local_addr(), dirs[1].path())).unwrap();
    assert!(a.wait_duplex(Duration::from_secs(10)));

    // The writer commits unique keys to whichever database is the primary's.
    let current = Arc::new(Mutex::new(a_db.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (current, stop) = (Arc::clone(&current), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            let mut gap_max = Duration::ZERO;
            let mut last_ok = Instant::now();
            let mut k = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let db = current.lock().clone();
                let s = db.session(SessionInfo::default());
                match s.insert(T, kv_row(k, k)) {
                    Ok(_) => {
                        gap_max = gap_max.max(last_ok.elapsed());
                        last_ok = Instant::now();
                        acknowledged.push(k);
                        k += 1;
                    }
                    // Handed over: the same key again, on the new primary when it is
                    // there.
                    Err(e) if moved(&e) => std::thread::yield_now(),
                    Err(e) => panic!("commit of {k}: {e}"),
                }
            }
            (acknowledged, gap_max)
        })
    };
    wait_for(
        "commits on the old primary",
        Duration::from_secs(10),
        || a.metrics().last_acked_seq >= Seq(200),
    );

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let new_backup_listen = free.local_addr().unwrap();
    drop(free);
    let hand_over = a.hand_over(Duration::from_secs(5)).unwrap();
    let switched = switchover(Switchover {
        primary: a,
        hand_over,
        old_primary_db: a_db.clone(),
        backup: b,
        new_primary_db: b_db.clone(),
        new_primary: replicator_config(new_backup_listen, dirs[2].path()),
        new_backup_listen,
        new_backup: backup_config(dirs[3].path()),
    })
    .unwrap();
    *current.lock() = b_db.clone();
    let report = switched.report.clone();
    assert_eq!(report.epoch, Epoch(2));
    assert!(report.at_seq >= Seq(200), "{report:?}");

    // The writer goes on at the new primary; the new backup catches up.
    let at = report.at_seq;
    wait_for(
        "commits on the new primary",
        Duration::from_secs(10),
        || switched.primary.metrics().last_seq >= Seq(at.0 + 200),
    );
    stop.store(true, Ordering::SeqCst);
    let (acknowledged, gap_max) = writer.join().unwrap();
    assert!(
        switched.primary.wait_caught_up(Duration::from_secs(10)),
        "{:?}",
        switched.primary.metrics()
    );
    wait_for(
        "the new backup to apply everything",
        Duration::from_secs(10),
        || switched.backup.status().last_seq == switched.primary.metrics().last_seq,
    );
    // Nothing lost, nothing doubled: every acknowledged key once on both sides, and
    // the two databases equal.
    for db in [&a_db, &b_db] {
        let s = db.session(SessionInfo::default());
        for k in &acknowledged {
            assert!(s.get(T, &Key::from(*k)).unwrap().is_some(), "key {k} lost");
        }
        assert_eq!(db.table(T).unwrap().len(), acknowledged.len() as u64);
    }
    assert_eq!(
        table_checksum(&a_db.table(T).unwrap()),
        table_checksum(&b_db.table(T).unwrap())
    );
    eprintln!(
        "switchover at {} to {}: writes paused {} µs (switch), longest gap between a writer's commits {} µs",
        report.at_seq,
        report.epoch,
        report.writes_paused_us,
        gap_max.as_micros()
    );
    switched.primary.shutdown();
}

#[test]
fn a_hand_over_that_cannot_finish_gives_the_primary_back_its_commits() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a_db, b_db) = (kv_database(&[T]), kv_database(&[T]));
    let b = Backup::start(b_db, "127.0.0.1:0", backup_config(dirs[0].path())).unwrap();
    let a = Replicator::start(&a_db, replicator_config(b.local_addr(), dirs[1].path())).unwrap();
    assert!(a.wait_duplex(Duration::from_secs(10)));
    let s = a_db.session(SessionInfo::default());
    s.insert(T, kv_row(1, 1)).unwrap();
    b.stop().unwrap();
    // A commit the backup never acknowledges (made alone, by the default rule).
    s.insert(T, kv_row(2, 2)).unwrap();
    match a.hand_over(Duration::from_millis(200)) {
        Err(ReplicateError::HandOverStalled {
            last_seq, acked, ..
        }) => {
            assert!(acked < last_seq, "{acked} of {last_seq}")
        }
        other => panic!("expected a stalled hand-over, got {other:?}"),
    }
    s.insert(T, kv_row(3, 3))
        .expect("the primary accepts commits again");
    a.shutdown();
}
