//! The backup's access log: logged before applied, an in-doubt sync transaction held
//! again after a restart, restarts that replay only the tail after a checkpoint,
//! segment names and retirement by age and size behind the checkpoint, and a damaged
//! checkpoint refused with a typed error.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use kirikae_engine::{Database, Key, Operation, Session, SessionInfo};
use kirikae_replicate::{
    AccessEntry, AccessLog, AccessLogOptions, Applier, Epoch, Message, Mode, RecordLogOptions,
    ReplicateError, Seq,
};
use kirikae_testkit::{kv_database, kv_row};

const T: &str = "acct";

fn session(db: &Database) -> Session {
    db.session(SessionInfo::new("replication", "replication", None))
}

fn options(checkpoint_bytes: u64) -> AccessLogOptions {
    AccessLogOptions {
        segments: RecordLogOptions {
            segment_bytes: 1 << 10,
            fsync: true,
        },
        checkpoint_bytes,
        checkpoint_every: Duration::from_secs(3600),
        retain_age: Duration::ZERO,
        retain_bytes: 0,
    }
}

/// A backup process: its own database (tables created empty, as a fresh process
/// would), the applier recovered from `dir`.
fn start<'s>(dir: &Path, session: &'s Session, options: AccessLogOptions) -> Applier<'s> {
    let (log, reopened) = AccessLog::open(dir, options, session.database()).expect("open");
    Applier::recover(session, log, reopened, None).expect("recover")
}

fn hello(applier: &mut Applier<'_>) {
    applier.connected(Epoch(1)).expect("connected");
}

fn ship(seq: u64, k: i64, v: i64) -> Message {
    Message::Ship {
        seq: Seq(seq),
        epoch: Epoch(1),
        mode: Mode::Async,
        operations: vec![Operation::Insert {
            table: T.into(),
            row: kv_row(k, v).into(),
        }]
        .into(),
        verify: false,
    }
}

/// A sync transaction's `Prepare` at `seq` from the primary of `epoch`, inserting
/// `(k, v)`, with the primary's response digest 42.
fn prepare(seq: u64, epoch: u64, k: i64, v: i64) -> Message {
    Message::Prepare {
        seq: Seq(seq),
        epoch: Epoch(epoch),
        operations: vec![Operation::Insert {
            table: T.into(),
            row: kv_row(k, v).into(),
        }]
        .into(),
        responses: vec![42],
    }
}

fn value(db: &Database, k: i64) -> Option<i64> {
    session(db)
        .get(T, &Key::from(k))
        .expect("get")
        .map(|r| match &r[1] {
            kirikae_engine::Value::Int(v) => *v,
            other => panic!("not an int: {other:?}"),
        })
}

#[test]
fn a_transaction_is_logged_before_it_is_applied_and_acknowledged_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let db = kv_database(&[T]);
    let s = session(&db);
    let mut applier = start(dir.path(), &s, options(u64::MAX));
    hello(&mut applier);
    let mut replies = Vec::new();
    applier.handle(ship(1, 7, 70)).unwrap();
    assert!(
        replies.is_empty(),
        "nothing is answered before the log is durable"
    );
    assert_eq!(
        value(&db, 7),
        None,
        "nothing is applied before it is logged"
    );
    assert_eq!((applier.logged_seq(), applier.last_seq()), (Seq(1), Seq(0)));
    applier.flush(&mut replies).unwrap();
    assert_eq!(
        replies,
        vec![Message::Ack {
            seq: Seq(1),
            epoch: Epoch(1),
        }]
    );
    assert_eq!(value(&db, 7), Some(70));
    drop(applier);

    // What the log holds, read back by a fresh process over an empty database.
    let db2 = kv_database(&[T]);
    let (_, reopened) = AccessLog::open(dir.path(), options(u64::MAX), &db2).unwrap();
    assert_eq!(reopened.tail.len(), 1);
    let record = &reopened.tail[0];
    assert_eq!(
        (record.position, record.seq, record.epoch),
        (1, Seq(1), Epoch(1))
    );
    assert!(matches!(
        record.entry,
        AccessEntry::Ship {
            mode: Mode::Async,
            ..
        }
    ));
    assert!(record.created_ms > 1_700_000_000_000, "UTC milliseconds");
}

#[test]
fn an_in_doubt_sync_transaction_is_held_again_after_a_restart_then_decided() {
    let dir = tempfile::tempdir().unwrap();
    let prepare = prepare(2, 1, 9, 90);
    {
        let db = kv_database(&[T]);
        let s = session(&db);
        let mut applier = start(dir.path(), &s, options(u64::MAX));
        hello(&mut applier);
        let mut replies = Vec::new();
        applier.handle(ship(1, 1, 10)).unwrap();
        applier.handle(prepare.clone()).unwrap();
        applier.flush(&mut replies).unwrap();
        assert!(matches!(replies[0], Message::Prepared { seq: Seq(2), .. }));
        assert_eq!(applier.held(), 1);
        // The process dies with the transaction prepared: its decision never came.
    }
    let db = kv_database(&[T]);
    let s = session(&db);
    let mut applier = start(dir.path(), &s, options(u64::MAX));
    assert_eq!(
        applier.held(),
        1,
        "the prepared transaction is in doubt again"
    );
    assert_eq!((applier.last_seq(), applier.logged_seq()), (Seq(1), Seq(2)));
    assert_eq!(value(&db, 1), Some(10));
    assert_eq!(value(&db, 9), None, "held, not committed");
    hello(&mut applier);
    assert_eq!(
        applier.logged_seq(),
        Seq(2),
        "a new stream does not unlog anything"
    );
    let mut replies = Vec::new();
    // The primary's replay of its decision: a sync commit it kept.
    applier
        .handle(Message::Ship {
            seq: Seq(2),
            epoch: Epoch(1),
            mode: Mode::Sync,
            operations: Vec::new().into(),
            verify: false,
        })
        .unwrap();
    applier.flush(&mut replies).unwrap();
    assert_eq!(applier.held(), 0);
    assert_eq!(applier.last_seq(), Seq(2));
    assert_eq!(value(&db, 9), Some(90));
    drop(applier);

    // And the decision itself is logged: the next restart commits it again.
    let db = kv_database(&[T]);
    let s = session(&db);
    let applier = start(dir.path(), &s, options(u64::MAX));
    assert_eq!((applier.held(), applier.last_seq()), (0, Seq(2)));
    assert_eq!(value(&db, 9), Some(90));
}

#[test]
fn a_restart_loads_the_checkpoint_and_replays_only_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let n = 400u64;
    {
        let db = kv_database(&[T]);
        let s = session(&db);
        let mut applier = start(dir.path(), &s, options(4 << 10));
        hello(&mut applier);
        for seq in 1..=n {
            let mut replies = Vec::new();
            let k = (seq % 50) as i64;
            let op = if seq <= 50 {
                ship(seq, k, seq as i64)
            } else {
                Message::Ship {
                    seq: Seq(seq),
                    epoch: Epoch(1),
                    mode: Mode::Ordered,
                    operations: vec![Operation::Update {
                        table: T.into(),
                        key: Key::from(k),
                        row: kv_row(k, seq as i64).into(),
                    }]
                    .into(),
                    verify: false,
                }
            };
            applier.handle(op).unwrap();
            applier.flush(&mut replies).unwrap();
        }
        let stats = applier.stats();
        assert!(stats.checkpoints > 0, "{stats:?}");
        assert!(stats.segments_retired > 0, "{stats:?}");
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let segment = names
        .iter()
        .find(|n| n.starts_with("access-"))
        .expect("a segment");
    // access-<20-digit first position>-<YYYYMMDDTHHMMSSZ>.seg
    assert_eq!(
        segment.len(),
        "access-".len() + 20 + 1 + 16 + ".seg".len(),
        "{segment}"
    );
    assert!(segment.ends_with("Z.seg"), "{segment}");
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".snap")).count(),
        1,
        "older snapshots are deleted: {names:?}"
    );

    let db = kv_database(&[T]);
    let s = session(&db);
    let applier = start(dir.path(), &s, options(4 << 10));
    assert_eq!(applier.last_seq(), Seq(n));
    assert!(
        applier.stats().recovered < n / 2,
        "replayed {} records of {n}",
        applier.stats().recovered
    );
    for k in 0..50i64 {
        let last = (n as i64 - k) / 50 * 50 + k;
        let expect = if last > n as i64 { last - 50 } else { last };
        assert_eq!(value(&db, k), Some(expect), "key {k}");
    }
}

#[test]
fn segments_behind_a_checkpoint_stay_until_they_pass_their_age_or_the_size_cap() {
    let dir = tempfile::tempdir().unwrap();
    let keep = AccessLogOptions {
        retain_age: Duration::from_secs(3600),
        retain_bytes: u64::MAX,
        ..options(4 << 10)
    };
    let db = kv_database(&[T]);
    let s = session(&db);
    let mut applier = start(dir.path(), &s, keep);
    hello(&mut applier);
    for seq in 1..=200 {
        let mut replies = Vec::new();
        applier.handle(ship(seq, seq as i64, 1)).unwrap();
        applier.flush(&mut replies).unwrap();
    }
    assert!(applier.stats().checkpoints > 0);
    assert_eq!(
        applier.stats().segments_retired,
        0,
        "young and under the cap"
    );
    drop(applier);

    // The same directory under a size cap: the next checkpoint retires down to it.
    let capped = AccessLogOptions {
        retain_age: Duration::from_secs(3600),
        retain_bytes: 8 << 10,
        ..options(4 << 10)
    };
    let db = kv_database(&[T]);
    let s = session(&db);
    let mut applier = start(dir.path(), &s, capped);
    hello(&mut applier);
    for seq in 201..=400 {
        let mut replies = Vec::new();
        applier.handle(ship(seq, seq as i64, 1)).unwrap();
        applier.flush(&mut replies).unwrap();
    }
    assert!(
        applier.stats().segments_retired > 0,
        "{:?}",
        applier.stats()
    );
    let bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("access-"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(bytes <= (8 << 10) + (2 << 10), "log holds {bytes} bytes");
}

#[test]
fn a_damaged_checkpoint_manifest_is_a_typed_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = kv_database(&[T]);
        let s = session(&db);
        let mut applier = start(dir.path(), &s, options(1 << 10));
        hello(&mut applier);
        for seq in 1..=50 {
            let mut replies = Vec::new();
            applier.handle(ship(seq, seq as i64, 1)).unwrap();
            applier.flush(&mut replies).unwrap();
        }
        assert!(applier.stats().checkpoints > 0);
    }
    let manifest = dir.path().join("CHECKPOINT");
    let mut bytes = std::fs::read(&manifest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&manifest, bytes).unwrap();
    let db = kv_database(&[T]);
    match AccessLog::open(dir.path(), options(1 << 10), &db) {
        Err(ReplicateError::LogCorrupt { path, .. }) => assert!(path.ends_with("CHECKPOINT")),
        Err(other) => panic!("expected LogCorrupt, got {other}"),
        Ok(_) => panic!("a damaged manifest was accepted"),
    }
}

#[test]
fn a_commit_or_abort_from_an_older_epoch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = kv_database(&[T]);
    let s = session(&db);
    let mut applier = start(dir.path(), &s, options(u64::MAX));
    applier.connected(Epoch(3)).unwrap();
    let prepare = prepare(1, 3, 4, 40);
    applier.handle(prepare).unwrap();
    for stale in [
        Message::Commit {
            seq: Seq(1),
            epoch: Epoch(2),
        },
        Message::Abort {
            seq: Seq(1),
            epoch: Epoch(2),
        },
    ] {
        let err = applier.handle(stale).unwrap_err();
        assert!(err.to_string().contains("epoch 2 after epoch 3"), "{err}");
    }
    let mut replies = Vec::new();
    applier.flush(&mut replies).unwrap();
    assert_eq!(applier.held(), 1, "still held, waiting for its own primary");
}

#[test]
fn a_transaction_refused_while_replaying_the_log_is_reported_to_the_next_primary() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The backup logged two transactions and stopped before applying them; the
        // second cannot apply (its key is taken by the first).
        let db = kv_database(&[T]);
        let (mut log, _) = AccessLog::open(dir.path(), options(u64::MAX), &db).unwrap();
        for (seq, v) in [(1, 70), (2, 71)] {
            let Message::Ship {
                mode, operations, ..
            } = ship(seq, 7, v)
            else {
                unreachable!("ship builds a Ship");
            };
            let entry = AccessEntry::Ship {
                mode,
                operations: operations.operations().expect("decodes").to_vec(),
            };
            log.append(Seq(seq), Epoch(1), entry).unwrap();
        }
        log.sync().unwrap();
    }
    let db = kv_database(&[T]);
    let s = session(&db);
    let mut applier = start(dir.path(), &s, options(u64::MAX));
    assert_eq!(
        (applier.last_seq(), applier.stats().rejected),
        (Seq(2), 1),
        "both resolved, one of them refused"
    );
    assert_eq!(value(&db, 7), Some(70));
    // The next primary, at a later epoch, is told on the first occasion.
    applier.connected(Epoch(2)).unwrap();
    let mut replies = Vec::new();
    applier.work(&mut replies).unwrap();
    let rejected: Vec<_> = replies
        .iter()
        .filter_map(|m| match m {
            Message::Rejected { seq, epoch, reason } => Some((*seq, *epoch, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(rejected.len(), 1, "{replies:?}");
    let (seq, epoch, reason) = &rejected[0];
    assert_eq!((*seq, *epoch), (Seq(2), Epoch(2)), "{reason}");
    assert!(reason.contains("replaying the access log"), "{reason}");
    // Told once.
    let mut again = Vec::new();
    applier.flush(&mut again).unwrap();
    assert!(
        !again.iter().any(|m| matches!(m, Message::Rejected { .. })),
        "{again:?}"
    );
}

#[test]
fn work_logged_when_a_stream_broke_is_applied_once_when_the_primary_sends_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = kv_database(&[T]);
    let s = session(&db);
    let mut applier = start(dir.path(), &s, options(u64::MAX));
    hello(&mut applier);
    let mut replies = Vec::new();
    applier.handle(ship(1, 1, 10)).unwrap();
    applier.flush(&mut replies).unwrap();
    // Logged, not flushed: the stream broke here (a log write failed on a full
    // disk, say), so nothing was applied or acknowledged past 1.
    applier.handle(ship(2, 2, 20)).unwrap();
    applier.handle(ship(3, 3, 30)).unwrap();
    assert_eq!(applier.last_seq(), Seq(1));
    // The primary connects again and sends everything after 1 again.
    hello(&mut applier);
    replies.clear();
    for seq in 2..=3 {
        applier
            .handle(ship(seq, seq as i64, seq as i64 * 10))
            .unwrap();
    }
    applier.flush(&mut replies).unwrap();
    assert_eq!(
        replies,
        vec![Message::Ack {
            seq: Seq(3),
            epoch: Epoch(1),
        }],
        "applied once each, none refused as a duplicate key"
    );
    assert_eq!((value(&db, 2), value(&db, 3)), (Some(20), Some(30)));
    assert_eq!((applier.stats().applied, applier.stats().rejected), (3, 0));
    // A sync transaction's Prepare, logged when the stream broke: sent again, it is
    // prepared (answered and held) once, not taken for one already held.
    let prepare = prepare(4, 1, 4, 40);
    applier.handle(prepare.clone()).unwrap();
    hello(&mut applier);
    replies.clear();
    applier.handle(prepare).unwrap();
    applier.flush(&mut replies).unwrap();
    assert!(
        matches!(
            replies[..],
            [Message::Prepared { seq: Seq(4), .. }, Message::Ack { .. }]
        ),
        "{replies:?}"
    );
    assert_eq!(applier.held(), 1);
    replies.clear();
    applier
        .handle(Message::Commit {
            seq: Seq(4),
            epoch: Epoch(1),
        })
        .unwrap();
    applier.flush(&mut replies).unwrap();
    assert_eq!((applier.held(), value(&db, 4)), (0, Some(40)));
    drop(applier);
    // Restarted from that log (which may hold 2 and 3 twice): the same rows.
    let db2 = kv_database(&[T]);
    let s2 = session(&db2);
    let again = start(dir.path(), &s2, options(u64::MAX));
    assert_eq!(again.last_seq(), Seq(4));
    assert_eq!(
        (
            value(&db2, 1),
            value(&db2, 2),
            value(&db2, 3),
            value(&db2, 4)
        ),
        (Some(10), Some(20), Some(30), Some(40))
    );
}
