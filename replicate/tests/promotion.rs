//! Promotion of a backup (seed 003 steps 410–414, seed 000 §5.2 Table 2): what was
//! logged is applied, in-doubt sync transactions are committed when their digests
//! match the primary's and rolled back otherwise, the promotion is durable, and a
//! promoted node takes nothing more from a primary.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use kirikae_engine::{Database, Key, Operation, OperationKind, Session, SessionInfo};
use kirikae_replicate::{
    response_digest, AccessLog, AccessLogOptions, Applier, Epoch, Message, Mode, Promotion,
    RecordLogOptions, ReplicateError, Seq,
};
use kirikae_testkit::{kv_database, kv_row};

const T: &str = "acct";

fn session(db: &Database) -> Session {
    db.session(SessionInfo::new("replication", "replication", None))
}

fn options() -> AccessLogOptions {
    AccessLogOptions {
        segments: RecordLogOptions {
            segment_bytes: 1 << 16,
            fsync: true,
        },
        checkpoint_every: Duration::from_secs(3600),
        ..AccessLogOptions::default()
    }
}

fn start<'s>(dir: &Path, session: &'s Session) -> Applier<'s> {
    let (log, reopened) = AccessLog::open(dir, options(), session.database()).unwrap();
    Applier::recover(session, log, reopened, None).unwrap()
}

fn insert(k: i64) -> Vec<Operation> {
    vec![Operation::Insert {
        table: T.into(),
        row: kv_row(k, k).into(),
    }]
}

fn ship(seq: u64, k: i64) -> Message {
    Message::Ship {
        seq: Seq(seq),
        epoch: Epoch(1),
        mode: Mode::Ordered,
        operations: insert(k).into(),
        verify: false,
    }
}

/// A `Prepare` whose primary digests are `primary` (the right ones for an insert of a
/// new key are `[response_digest(Insert, None)]`).
fn prepare(seq: u64, k: i64, primary: Vec<u64>) -> Message {
    Message::Prepare {
        seq: Seq(seq),
        epoch: Epoch(1),
        operations: insert(k).into(),
        responses: primary,
    }
}

fn exists(db: &Database, k: i64) -> bool {
    session(db).get(T, &Key::from(k)).unwrap().is_some()
}

#[test]
fn in_doubt_transactions_commit_when_their_digests_match_and_roll_back_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let db = kv_database(&[T]);
    let s = session(&db);
    let mut backup = start(dir.path(), &s);
    backup.connected(Epoch(1)).unwrap();
    let right = vec![response_digest(OperationKind::Insert, None)];
    let mut replies = Vec::new();
    backup.handle(ship(1, 1)).unwrap();
    backup.handle(prepare(2, 2, right)).unwrap();
    backup.handle(prepare(3, 3, vec![0xbad])).unwrap();
    backup.flush(&mut replies).unwrap();
    assert_eq!(backup.held(), 2);
    // Logged and not applied yet when the primary dies.
    backup.handle(ship(4, 4)).unwrap();
    assert!(!exists(&db, 4));

    let promotion = backup.promote(Epoch(2)).unwrap();
    assert_eq!(
        promotion,
        Promotion {
            epoch: Epoch(2),
            last_seq: Seq(4),
            in_doubt_committed: vec![Seq(2)],
            in_doubt_dropped: vec![Seq(3)],
        }
    );
    assert!(exists(&db, 1) && exists(&db, 2) && !exists(&db, 3) && exists(&db, 4));
    assert_eq!((backup.held(), backup.last_seq()), (0, Seq(4)));
    assert_eq!(backup.promoted(), Some(Epoch(2)));

    // A promoted node takes nothing more from a primary, whatever its epoch.
    assert!(matches!(
        backup.handle(ship(5, 5)),
        Err(ReplicateError::Protocol { .. })
    ));
    assert!(backup.connected(Epoch(3)).is_err());
    drop(backup);

    // Durable: a restart comes back promoted, with the same data and nothing held.
    let db = kv_database(&[T]);
    let s = session(&db);
    let again = start(dir.path(), &s);
    assert_eq!(again.promoted(), Some(Epoch(2)));
    assert_eq!(
        (again.held(), again.last_seq(), again.epoch()),
        (0, Seq(4), Epoch(2))
    );
    assert!(exists(&db, 1) && exists(&db, 2) && !exists(&db, 3) && exists(&db, 4));
}

#[test]
fn a_promotion_needs_an_epoch_above_every_one_seen() {
    let db = kv_database(&[T]);
    let s = session(&db);
    let mut backup = Applier::new(&s);
    backup.connected(Epoch(5)).unwrap();
    assert!(backup.promote(Epoch(5)).is_err());
    assert!(backup.promote(Epoch(4)).is_err());
    let p = backup.promote(Epoch(6)).unwrap();
    assert_eq!((p.epoch, p.last_seq), (Epoch(6), Seq(0)));
    assert!(backup.promote(Epoch(7)).is_err(), "promoted once");
}
