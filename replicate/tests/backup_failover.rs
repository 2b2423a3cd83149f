//! Failover at the backup over real TCP: an operator's promotion, and the peer
//! arbiter promoting after its primary falls silent. Each ends with every
//! acknowledged sync commit in the promoted database and a `Promoted` event.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kirikae_engine::{CatalogEvent, Database, ForReplica, Key, SessionInfo};
use kirikae_replicate::{
    table_checksum, Arbiter, Backup, BackupConfig, BackupEvent, DdlHandler, Epoch, Event,
    Impairment, LinkConfig, LoopbackProxy, PeerKey, PromotedBy, Promotion, Rejoin, Replication,
    Replicator, ReplicatorConfig, Seq, StartAt,
};
use kirikae_testkit::{kv_database, kv_row, wait_for};

const T: &str = "acct";

fn key() -> PeerKey {
    PeerKey::new(vec![5; 32]).unwrap()
}

/// A backup of [`key`] logging in `dir`, heartbeats every 20 ms.
fn backup_config(arbiter: Arbiter, dir: &std::path::Path) -> BackupConfig {
    BackupConfig {
        key: Some(key()),
        log_dir: Some(dir.to_owned()),
        heartbeat_every: Duration::from_millis(20),
        arbiter,
        ..BackupConfig::default()
    }
}

/// A sync primary and its backup over TCP, in step.
struct Pair {
    /// The backup's database.
    replica: Database,
    backup: Backup,
    /// The primary's database.
    db: Database,
    primary: Replicator,
    /// The backup's log and the primary's difference file.
    dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Pair {
    /// Starts both ends (the settings as `tune` leaves them) and waits until duplex.
    fn start(
        arbiter: Arbiter,
        tune: impl FnOnce(&mut BackupConfig, &mut ReplicatorConfig),
    ) -> Pair {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (replica, db) = (kv_database(&[T]), kv_database(&[T]));
        let mut backup_config = backup_config(arbiter, dirs.0.path());
        // The address is filled in once the backup listens.
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let mut primary_config = common::sync_replicator_config(any, key(), dirs.1.path());
        tune(&mut backup_config, &mut primary_config);
        let backup = Backup::start(replica.clone(), "127.0.0.1:0", backup_config).unwrap();
        primary_config.peer = backup.local_addr();
        let primary = Replicator::start(&db, primary_config).unwrap();
        assert!(primary.wait_duplex(Duration::from_secs(10)));
        Pair {
            replica,
            backup,
            db,
            primary,
            dirs,
        }
    }
}

/// `n` sync commits, each acknowledged as replicated; returns their keys.
fn acknowledged_sync_commits(db: &Database, n: i64) -> Vec<i64> {
    let s = db.session(SessionInfo::default());
    let keys: Vec<i64> = (0..n).collect();
    for &k in &keys {
        let mut tx = s.begin();
        tx.insert(T, kv_row(k, k)).unwrap();
        let note = tx.commit_noted().unwrap();
        assert!(
            matches!(Replication::of(&note), Some(Replication::Replicated { .. })),
            "{note:?}"
        );
    }
    keys
}

fn holds_all(db: &Database, keys: &[i64]) -> bool {
    let s = db.session(SessionInfo::default());
    keys.iter()
        .all(|k| s.get(T, &Key::from(*k)).unwrap().is_some())
}

#[test]
fn an_operator_promotes_the_backup_with_every_acknowledged_commit() {
    let Pair {
        replica,
        backup,
        db,
        primary: replicator,
        dirs: _dirs,
    } = Pair::start(Arbiter::Manual, |_, _| {});
    let keys = acknowledged_sync_commits(&db, 50);

    let promotion = backup.promote().unwrap();
    assert_eq!(promotion.epoch, Epoch(2), "the primary's epoch 1, plus one");
    // Every acknowledged sync commit is in the promoted database: applied, or held in
    // doubt with matching digests and committed by the promotion.
    assert_eq!(promotion.last_seq, Seq(50));
    assert!(promotion.in_doubt_dropped.is_empty(), "{promotion:?}");
    assert!(holds_all(&replica, &keys));
    match backup
        .events()
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
    {
        BackupEvent::Promoted { promotion: p, by } => {
            assert_eq!((p, by), (promotion.clone(), PromotedBy::Operator))
        }
    }
    assert_eq!(backup.status().promoted, Some(promotion));
    assert!(backup.promote().is_err(), "promoted once");
    // The old primary is cut off: it cannot get back in.
    wait_for(
        "the old primary to see the backup gone",
        Duration::from_secs(10),
        || !replicator.wait_duplex(Duration::ZERO),
    );
    replicator.shutdown();
}

#[test]
fn the_peer_arbiter_promotes_after_the_primary_falls_silent() {
    let failover_after = Duration::from_millis(500);
    let Pair {
        replica,
        backup,
        db,
        primary: replicator,
        dirs: _dirs,
    } = Pair::start(Arbiter::Peer { failover_after }, |_, _| {});
    let keys = acknowledged_sync_commits(&db, 20);

    // The primary goes away (its process would die here: the connection closes and
    // nothing more comes).
    let gone_at = Instant::now();
    replicator.shutdown();
    let event = backup
        .events()
        .recv_timeout(Duration::from_secs(10))
        .expect("a promotion");
    let elapsed = gone_at.elapsed();
    let BackupEvent::Promoted { promotion, by } = event;
    match by {
        PromotedBy::Silence { silent_ms } => assert!(silent_ms >= 500, "{silent_ms}"),
        other => panic!("expected a silence, got {other}"),
    }
    assert!(elapsed >= failover_after, "promoted after {elapsed:?}");
    assert_eq!(promotion.last_seq, Seq(20));
    assert!(holds_all(&replica, &keys));
    assert_eq!(backup.status().promoted, Some(promotion));
}

#[test]
fn the_old_primary_is_fenced_by_the_promoted_backup_and_reports_its_divergent_tail() {
    let Pair {
        replica,
        backup,
        db,
        primary: replicator,
        dirs: _dirs,
    } = Pair::start(Arbiter::Manual, |_, _| {});
    let keys = acknowledged_sync_commits(&db, 10);
    let promotion = backup.promote().unwrap();
    assert_eq!((promotion.epoch, promotion.last_seq), (Epoch(2), Seq(10)));
    assert!(holds_all(&replica, &keys));

    // The old primary is alive (a partition, a pause): until it reconnects and meets
    // the higher epoch, its commits go through alone, and only it has them.
    let s = db.session(SessionInfo::default());
    let mut alone = 0;
    for k in 100..200 {
        match s.insert(T, kv_row(k, k)) {
            Ok(_) => alone += 1,
            Err(e) => {
                assert!(
                    e.to_string().contains("replaced by the primary of epoch 2"),
                    "{e}"
                );
                break;
            }
        }
        if replicator.fenced().is_some() {
            break;
        }
    }
    wait_for(
        "the old primary to be fenced",
        Duration::from_secs(10),
        || replicator.fenced() == Some(Epoch(2)),
    );
    let fenced = replicator
        .events()
        .try_iter()
        .find_map(|e| match e {
            kirikae_replicate::Event::Fenced {
                epoch,
                takeover_seq,
                divergent,
                rolled_back,
            } => {
                assert!(rolled_back.is_empty(), "{rolled_back:?}");
                Some((epoch, takeover_seq, divergent))
            }
            _ => None,
        })
        .expect("a Fenced event");
    let tail = (alone > 0).then(|| (Seq(11), Seq(10 + alone)));
    assert_eq!(fenced, (Epoch(2), Seq(10), tail), "{alone} committed alone");
    match (alone, replicator.rejoin()) {
        (0, Some(Rejoin::CatchUp(at))) => assert_eq!((at.seq, at.epoch), (Seq(10), Epoch(2))),
        (_, Some(Rejoin::ResyncRequired { reason })) if alone > 0 => {
            assert!(reason.contains("after the takeover at 10"), "{reason}")
        }
        (alone, other) => panic!("{alone} committed alone, rejoin {other:?}"),
    }
    // Every write is refused now, replicated or not.
    let err = s.insert(T, kv_row(1_000, 1)).expect_err("fenced");
    assert!(err.to_string().contains("accepts no writes"), "{err}");
    assert!(
        !holds_all(&replica, &[100]),
        "the divergent tail never reached the new primary"
    );
    replicator.shutdown();
}

/// An old primary with nothing the new one lacks comes back as its backup: started
/// over its own database at the takeover position, caught up by the new primary from
/// its log, and in step from then on.
#[test]
fn a_fenced_primary_without_a_divergent_tail_rejoins_as_the_new_backup_by_catch_up() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let Pair {
        replica,
        backup: fence,
        db,
        primary: old,
        dirs: _pair_dirs,
    } = Pair::start(Arbiter::Manual, |_, _| {});
    let keys = acknowledged_sync_commits(&db, 10);
    assert!(old.wait_caught_up(Duration::from_secs(10)));
    let promotion = fence.promote().unwrap();
    // Idle, the old primary reconnects and meets the higher epoch.
    wait_for(
        "the old primary to be fenced",
        Duration::from_secs(10),
        || old.fenced().is_some(),
    );
    let Some(Rejoin::CatchUp(start_at)) = old.rejoin() else {
        panic!("no catch-up: {:?}", old.rejoin());
    };
    assert_eq!(
        (start_at.seq, start_at.epoch),
        (promotion.last_seq, promotion.epoch)
    );
    old.shutdown();

    // The new backup over the old primary's database; the new primary follows on.
    let (rejoined, new) = rejoin_as_backup(&db, &replica, &promotion, Some(start_at), &dirs);
    assert!(new.wait_duplex(Duration::from_secs(10)));
    let s = replica.session(SessionInfo::default());
    for k in 500..520 {
        s.insert(T, kv_row(k, k)).unwrap();
    }
    assert!(new.wait_caught_up(Duration::from_secs(10)));
    let later: Vec<i64> = (500..520).collect();
    assert!(holds_all(&db, &keys) && holds_all(&db, &later));
    assert_eq!(rejoined.status().last_seq, Seq(promotion.last_seq.0 + 20));
    new.shutdown();
    rejoined.stop().unwrap();
    fence.stop().unwrap();
}

/// The old primary's `db` started as the backup of the promoted `replica` (from
/// `start_at`, or with a fresh log), logging in `dirs[0]`, and the new primary's
/// replicator to it in the promotion's epoch, its difference file in `dirs[1]`.
fn rejoin_as_backup(
    db: &Database,
    replica: &Database,
    promotion: &Promotion,
    start_at: Option<StartAt>,
    dirs: &[tempfile::TempDir],
) -> (Backup, Replicator) {
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listen.local_addr().unwrap();
    drop(listen);
    let rejoined = Backup::start(
        db.clone(),
        addr,
        BackupConfig {
            key: Some(key()),
            log_dir: Some(dirs[0].path().to_owned()),
            start_at,
            ..BackupConfig::default()
        },
    )
    .unwrap();
    let mut config = common::sync_replicator_config(addr, key(), dirs[1].path());
    config.link = LinkConfig {
        epoch: promotion.epoch,
        start_after: promotion.last_seq,
        ..config.link
    };
    (rejoined, Replicator::start(replica, config).unwrap())
}

/// Anti-flap: a backup that starts at a takeover position (a new epoch has just
/// begun) does not promote itself when that primary falls silent within the window;
/// it says so, and an operator can still promote it.
#[test]
fn within_the_anti_flap_window_a_silent_primary_is_not_replaced_automatically() {
    let arbiter = Arbiter::Peer {
        failover_after: Duration::from_millis(200),
    };
    let Pair {
        replica,
        backup,
        db,
        primary: replicator,
        dirs: _dirs,
    } = Pair::start(arbiter, |backup, primary| {
        backup.start_at = Some(kirikae_replicate::StartAt {
            seq: Seq(0),
            epoch: Epoch(2),
        });
        backup.auto_promotion_window = Duration::from_secs(60);
        primary.link.epoch = Epoch(2);
    });
    let keys = acknowledged_sync_commits(&db, 5);
    replicator.shutdown();
    wait_for(
        "the held automatic promotion to be reported",
        Duration::from_secs(10),
        || backup.status().auto_promotions_held > 0,
    );
    assert_eq!(backup.status().promoted, None, "promoted within the window");
    let promotion = backup.promote().unwrap();
    assert_eq!((promotion.epoch, promotion.last_seq), (Epoch(3), Seq(5)));
    assert!(holds_all(&replica, &keys));
    backup.stop().unwrap();
}

/// A catalog change the backup takes long to apply (here 1.5 s in its handler).
#[derive(Debug, Default)]
struct SlowHandler {
    done: AtomicBool,
}

impl DdlHandler for SlowHandler {
    fn apply(&self, _db: &Database, _table: &str, _event: &CatalogEvent) -> Result<(), String> {
        // Stands for a long step (a large copy, a slow disk): the backup reads
        // nothing from its primary meanwhile.
        std::thread::sleep(Duration::from_millis(1500));
        self.done.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// While the backup is busy it is not listening: the primary's messages wait in the
/// socket. A step longer than `failover_after` must not make it take over from a
/// primary that was talking all along.
#[test]
fn a_backup_busy_longer_than_failover_after_does_not_take_over_from_a_live_primary() {
    let handler = Arc::new(SlowHandler::default());
    let ddl: Arc<dyn DdlHandler> = handler.clone();
    let Pair {
        replica,
        backup,
        db,
        primary: replicator,
        dirs: _dirs,
    } = Pair::start(
        Arbiter::Peer {
            failover_after: Duration::from_millis(500),
        },
        |backup, primary| {
            backup.ddl = Some(ddl);
            // The primary keeps the connection through the long step (its own
            // view of a slow backup is not what this test is about).
            primary.link.peer_timeout = Duration::from_secs(5);
            primary.link.sync_timeout = Duration::from_secs(5);
        },
    );
    db.announce(T, b"a long step", ForReplica::Follow).unwrap();
    wait_for("the backup's long step", Duration::from_secs(10), || {
        handler.done.load(Ordering::SeqCst)
    });
    assert!(
        replicator.wait_duplex(Duration::from_secs(10)),
        "the link is back"
    );
    let keys = acknowledged_sync_commits(&db, 5);
    // A sync commit's `Commit` reaches the backup after the commit returned.
    wait_for("the backup to commit them", Duration::from_secs(10), || {
        holds_all(&replica, &keys)
    });
    let status = backup.status();
    assert_eq!(status.promoted, None, "took over from a live primary");
    assert_eq!(
        (status.takeovers_refused, status.last_disconnect.as_deref()),
        (0, None),
        "tried to take over from a live primary, or dropped it: {status:?}"
    );
    assert!(
        backup.events().try_recv().is_err(),
        "an event (a promotion) was raised"
    );
    replicator.shutdown();
    backup.stop().unwrap();
}

/// An old primary that committed alone after the takeover (a partition) holds a
/// divergent tail: it reports the tail's sequences, and it comes back as the new
/// primary's backup only through a resync, which discards the tail (seed 000 §5.1,
/// last paragraph).
#[test]
fn a_fenced_primary_with_a_divergent_tail_rejoins_by_resync_and_loses_only_the_tail() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (replica, db) = (kv_database(&[T]), kv_database(&[T]));
    let fence = Backup::start(
        replica.clone(),
        "127.0.0.1:0",
        backup_config(Arbiter::Manual, dirs[0].path()),
    )
    .unwrap();
    let proxy = LoopbackProxy::start(fence.local_addr(), Impairment::default()).unwrap();
    let old = Replicator::start(
        &db,
        common::sync_replicator_config(proxy.local_addr(), key(), dirs[1].path()),
    )
    .unwrap();
    assert!(old.wait_duplex(Duration::from_secs(10)));
    let keys = acknowledged_sync_commits(&db, 10);

    // Partitioned, the old primary commits alone; then the backup is promoted.
    proxy.partition();
    wait_for(
        "the old primary to lose its peer",
        Duration::from_secs(10),
        || !old.wait_duplex(Duration::ZERO),
    );
    let s = db.session(SessionInfo::default());
    let tail: Vec<i64> = (100..105).collect();
    for &k in &tail {
        s.insert(T, kv_row(k, k)).unwrap();
    }
    let promotion = fence.promote().unwrap();
    assert_eq!((promotion.epoch, promotion.last_seq), (Epoch(2), Seq(10)));
    proxy.heal();
    wait_for(
        "the old primary to be fenced",
        Duration::from_secs(10),
        || old.fenced() == Some(Epoch(2)),
    );
    let divergent = old.events().try_iter().find_map(|e| match e {
        Event::Fenced { divergent, .. } => Some(divergent),
        _ => None,
    });
    assert_eq!(
        divergent,
        Some(Some((Seq(11), Seq(15)))),
        "the tail reported"
    );
    match old.rejoin() {
        Some(Rejoin::ResyncRequired { reason }) => assert!(reason.contains("11..=15"), "{reason}"),
        other => panic!("expected a resync, got {other:?}"),
    }
    old.shutdown();
    assert!(
        holds_all(&db, &tail),
        "the tail is still here before the resync"
    );

    // The old primary's database becomes the new primary's backup (a fresh log: it
    // has nothing the new primary can catch up from); the new primary resyncs it.
    let (rejoined, new) = rejoin_as_backup(&db, &replica, &promotion, None, &dirs[2..]);
    let s = replica.session(SessionInfo::default());
    let later: Vec<i64> = (500..520).collect();
    for &k in &later {
        s.insert(T, kv_row(k, k)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let resynced = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match new.events().recv_timeout(left) {
            Ok(e @ Event::Resynced { .. }) => break e,
            Ok(_) => continue,
            Err(e) => panic!("no Resynced: {e}; {:?}", new.metrics()),
        }
    };
    assert!(new.wait_caught_up(Duration::from_secs(10)), "{resynced}");
    assert!(holds_all(&db, &keys) && holds_all(&db, &later));
    let s = db.session(SessionInfo::default());
    for k in &tail {
        assert!(
            s.get(T, &Key::from(*k)).unwrap().is_none(),
            "divergent row {k} was not discarded"
        );
    }
    let (ours, theirs) = (db.table(T).unwrap(), replica.table(T).unwrap());
    assert_eq!(table_checksum(&ours), table_checksum(&theirs));
    assert_eq!(rejoined.status().last_seq, new.metrics().last_seq);
    new.shutdown();
    rejoined.stop().unwrap();
    fence.stop().unwrap();
}
