//! Transaction semantics: visibility, undo, RID reuse, key changes, lock waits,
//! deadlocks, hooks and the writer hold.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use parking_lot::Mutex;

use crate::*;

fn db_with(timeout_ms: u64) -> (Database, Session) {
    let db = Database::with_config(EngineConfig {
        lock_timeout: Duration::from_millis(timeout_ms),
    });
    let schema = Schema::new(
        vec![
            Column::new("k", ColumnType::Int),
            Column::new("v", ColumnType::Text).nullable(),
        ],
        &["k"],
    )
    .expect("schema");
    db.create_table("t", schema).expect("create");
    let s = db.session(SessionInfo::new("u", "g", None));
    (db, s)
}

fn row(k: i64, v: &str) -> Row {
    vec![k.into(), v.into()]
}

fn val(s: &Session, k: i64) -> Option<String> {
    s.get("t", &Key::from(k))
        .expect("get")
        .map(|r| r[1].as_text().unwrap_or("").to_owned())
}

#[test]
fn autocommit_crud_and_errors() {
    let (db, s) = db_with(100);
    let rid = s.insert("t", row(1, "a")).expect("insert");
    assert!(matches!(
        s.insert("t", row(1, "b")),
        Err(EngineError::DuplicateKey { .. })
    ));
    assert_eq!(s.update("t", &1.into(), row(1, "b")).expect("update"), rid);
    assert_eq!(val(&s, 1).as_deref(), Some("b"));
    assert_eq!(
        s.get_by_rid("t", rid).expect("by rid").expect("row")[1],
        Value::from("b")
    );
    assert!(matches!(
        s.update("t", &2.into(), row(2, "x")),
        Err(EngineError::KeyNotFound { .. })
    ));
    assert!(matches!(
        s.delete("t", &2.into()),
        Err(EngineError::KeyNotFound { .. })
    ));
    assert!(matches!(
        s.insert("nope", row(1, "a")),
        Err(EngineError::UnknownTable { .. })
    ));
    assert!(matches!(
        s.update_columns("t", &1.into(), &[("zz", 1.into())]),
        Err(EngineError::UnknownColumn { .. })
    ));
    assert!(matches!(
        s.get("t", &Key::from("x")),
        Err(EngineError::TypeMismatch { .. })
    ));
    s.delete("t", &1.into()).expect("delete");
    assert_eq!(val(&s, 1), None);
    assert_eq!(db.table("t").expect("t").len(), 0);
    // The freed RID is reused.
    assert_eq!(s.insert("t", row(9, "z")).expect("insert"), rid);
}

#[test]
fn uncommitted_writes_are_invisible_to_others_and_visible_to_self() {
    let (_db, s) = db_with(100);
    s.insert("t", row(1, "old")).expect("insert");
    let mut tx = s.begin();
    tx.update("t", &1.into(), row(1, "new")).expect("update");
    tx.insert("t", row(2, "fresh")).expect("insert");
    assert_eq!(val(&s, 1).as_deref(), Some("old"));
    assert_eq!(val(&s, 2), None);
    assert_eq!(
        tx.get("t", &1.into()).expect("get").expect("row")[1],
        Value::from("new")
    );
    assert!(tx.get("t", &2.into()).expect("get").is_some());
    tx.commit().expect("commit");
    assert_eq!(val(&s, 1).as_deref(), Some("new"));
    assert_eq!(val(&s, 2).as_deref(), Some("fresh"));
}

#[test]
fn rollback_restores_everything_including_rids() {
    let (db, s) = db_with(100);
    let r1 = s.insert("t", row(1, "a")).expect("insert");
    let r2 = s.insert("t", row(2, "b")).expect("insert");
    let bound = db.table("t").expect("t").rid_bound();
    {
        let mut tx = s.begin();
        tx.delete("t", &1.into()).expect("delete");
        tx.update("t", &2.into(), row(20, "moved"))
            .expect("pk change");
        let r3 = tx.insert("t", row(3, "c")).expect("insert");
        assert!(
            r3.0 >= bound,
            "a delete's RID is not reusable before commit"
        );
        tx.rollback();
    }
    assert_eq!(val(&s, 1).as_deref(), Some("a"));
    assert_eq!(val(&s, 2).as_deref(), Some("b"));
    assert_eq!(val(&s, 20), None);
    assert_eq!(val(&s, 3), None);
    let t = db.table("t").expect("t");
    assert_eq!(t.get_with_rid(&1.into()).expect("row").0, r1);
    assert_eq!(t.get_with_rid(&2.into()).expect("row").0, r2);
    assert_eq!(t.len(), 2);
    // The rolled-back insert's RID is free again.
    assert_eq!(s.insert("t", row(4, "d")).expect("insert").0, bound);
    // Dropping an open transaction rolls back too.
    {
        let mut tx = s.begin();
        tx.delete("t", &4.into()).expect("delete");
    }
    assert_eq!(val(&s, 4).as_deref(), Some("d"));
}

#[test]
fn primary_key_change_keeps_the_rid_and_moves_the_index() {
    let (db, s) = db_with(100);
    let rid = s.insert("t", row(1, "a")).expect("insert");
    s.insert("t", row(2, "b")).expect("insert");
    assert!(matches!(
        s.update("t", &1.into(), row(2, "clash")),
        Err(EngineError::DuplicateKey { .. })
    ));
    assert_eq!(s.update("t", &1.into(), row(5, "a")).expect("move"), rid);
    assert_eq!(val(&s, 1), None);
    assert_eq!(val(&s, 5).as_deref(), Some("a"));
    assert_eq!(db.table("t").expect("t").index.len(), 2);
}

#[test]
fn a_key_moved_away_can_be_reused_in_the_same_transaction() {
    let (db, s) = db_with(100);
    let rid = s.insert("t", row(1, "a")).expect("insert");
    for commit in [false, true] {
        let mut tx = s.begin();
        tx.update("t", &1.into(), row(7, "moved")).expect("move");
        let new_rid = tx.insert("t", row(1, "newcomer")).expect("reuse key");
        assert_ne!(new_rid, rid);
        if commit {
            tx.commit().expect("commit");
            assert_eq!(val(&s, 1).as_deref(), Some("newcomer"));
            assert_eq!(val(&s, 7).as_deref(), Some("moved"));
            let t = db.table("t").expect("t");
            assert_eq!(t.get_with_rid(&7.into()).expect("row").0, rid);
        } else {
            tx.rollback();
            assert_eq!(val(&s, 1).as_deref(), Some("a"));
            assert_eq!(val(&s, 7), None);
        }
    }
}

#[test]
fn delete_then_insert_of_the_same_key_in_one_transaction() {
    let (_db, s) = db_with(100);
    let rid = s.insert("t", row(1, "a")).expect("insert");
    let mut tx = s.begin();
    tx.delete("t", &1.into()).expect("delete");
    assert!(tx.get("t", &1.into()).expect("get").is_none());
    assert_eq!(tx.insert("t", row(1, "again")).expect("insert"), rid);
    tx.commit().expect("commit");
    assert_eq!(val(&s, 1).as_deref(), Some("again"));
}

#[test]
fn a_writer_waits_for_the_lock_holder_then_proceeds() {
    let (_db, s) = db_with(5_000);
    s.insert("t", row(1, "a")).expect("insert");
    let s2 = s.clone();
    let barrier = Arc::new(Barrier::new(2));
    let b2 = Arc::clone(&barrier);
    let holder = std::thread::spawn(move || {
        let mut tx = s2.begin();
        tx.update("t", &1.into(), row(1, "first")).expect("update");
        b2.wait();
        std::thread::sleep(Duration::from_millis(50));
        tx.commit().expect("commit");
    });
    barrier.wait();
    let mut tx = s.begin();
    let seen = tx
        .get_for_update("t", &1.into())
        .expect("waits")
        .expect("row");
    assert_eq!(
        seen[1],
        Value::from("first"),
        "lock granted only after the holder committed"
    );
    tx.commit().expect("commit");
    holder.join().expect("thread");
}

#[test]
fn a_lock_wait_times_out_with_a_clear_error() {
    let (_db, s) = db_with(30);
    s.insert("t", row(1, "a")).expect("insert");
    let mut holder = s.begin();
    holder.update("t", &1.into(), row(1, "x")).expect("update");
    let s2 = s.clone();
    let err = std::thread::spawn(move || s2.update("t", &1.into(), row(1, "y")))
        .join()
        .expect("thread")
        .expect_err("must time out");
    assert!(err.is_retryable());
    match err {
        EngineError::LockTimeout { holder: h, .. } => assert_eq!(h, holder.id()),
        other => panic!("expected LockTimeout, got {other}"),
    }
    holder.commit().expect("commit");
    assert_eq!(val(&s, 1).as_deref(), Some("x"));
}

#[test]
fn deadlocks_are_detected_not_waited_out() {
    let (_db, s) = db_with(10_000);
    s.insert("t", row(1, "a")).expect("insert");
    s.insert("t", row(2, "b")).expect("insert");
    let barrier = Arc::new(Barrier::new(2));
    let run = |first: i64, second: i64| {
        let s = s.clone();
        let barrier = Arc::clone(&barrier);
        std::thread::spawn(move || {
            let mut tx = s.begin();
            tx.get_for_update("t", &first.into()).expect("first lock");
            barrier.wait();
            let started = std::time::Instant::now();
            let outcome = tx.get_for_update("t", &second.into());
            let waited = started.elapsed();
            match outcome {
                Ok(_) => {
                    tx.commit().expect("commit");
                    (false, waited)
                }
                Err(EngineError::Deadlock { .. }) => (true, waited),
                Err(e) => panic!("unexpected {e}"),
            }
        })
    };
    let a = run(1, 2);
    let b = run(2, 1);
    let (da, _) = a.join().expect("thread");
    let (db_, _) = b.join().expect("thread");
    assert!(
        da ^ db_,
        "exactly one transaction is chosen as the deadlock victim"
    );
}

struct Recorder(Mutex<Vec<Rid>>);
impl WriteObserver for Recorder {
    fn record_locked(&self, rid: Rid) {
        self.0.lock().push(rid);
    }
}

#[test]
fn the_write_observer_sees_every_locked_rid_on_lock_and_on_commit() {
    let (db, s) = db_with(100);
    let r1 = s.insert("t", row(1, "a")).expect("insert");
    let rec = Arc::new(Recorder(Mutex::new(Vec::new())));
    db.table("t")
        .expect("t")
        .set_write_observer(Some(rec.clone()));
    let mut tx = s.begin();
    tx.update("t", &1.into(), row(1, "b")).expect("update");
    let r2 = tx.insert("t", row(2, "c")).expect("insert");
    assert_eq!(*rec.0.lock(), vec![r1, r2], "reported when locked");
    tx.commit().expect("commit");
    assert_eq!(
        *rec.0.lock(),
        vec![r1, r2, r1, r2],
        "and again when published"
    );
    s.get("t", &1.into()).expect("get");
    assert_eq!(rec.0.lock().len(), 4, "reads are not reported");
    db.table("t").expect("t").set_write_observer(None);
    s.delete("t", &1.into()).expect("delete");
    assert_eq!(rec.0.lock().len(), 4);
}

struct Gate {
    seen: Mutex<Vec<(String, Vec<Operation>)>>,
    veto_table_t_key: i64,
    committed: AtomicUsize,
}
impl CommitGate for Gate {
    fn prepare(
        &self,
        r: &mut CommitRequest<'_>,
    ) -> std::result::Result<Option<crate::GateNote>, HookError> {
        self.seen
            .lock()
            .push((r.session.user.clone(), r.operations.to_vec()));
        let vetoed = r.operations.iter().any(|op| match op {
            Operation::Insert { row, .. } => row[0] == Value::Int(self.veto_table_t_key),
            _ => false,
        });
        if vetoed {
            Err("peer refused".into())
        } else {
            Ok(None)
        }
    }
    fn committed(&self, _txn: crate::TxnId) {
        self.committed.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn the_commit_gate_sees_operations_and_can_veto() {
    let (db, s) = db_with(100);
    let gate = Arc::new(Gate {
        seen: Mutex::new(Vec::new()),
        veto_table_t_key: 666,
        committed: AtomicUsize::new(0),
    });
    db.set_commit_gate(Some(gate.clone()));
    let mut tx = s.begin();
    tx.insert("t", row(1, "a")).expect("insert");
    tx.update("t", &1.into(), row(1, "b")).expect("update");
    tx.commit().expect("commit");
    {
        let seen = gate.seen.lock();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "u");
        assert_eq!(
            seen[0].1,
            vec![
                Operation::Insert {
                    table: "t".into(),
                    row: row(1, "a").into()
                },
                Operation::Update {
                    table: "t".into(),
                    key: 1.into(),
                    row: row(1, "b").into()
                },
            ]
        );
    }
    let mut tx = s.begin();
    tx.delete("t", &1.into()).expect("delete");
    tx.insert("t", row(666, "bad")).expect("insert");
    match tx.commit() {
        Err(EngineError::CommitVetoed { source }) => assert_eq!(source.to_string(), "peer refused"),
        other => panic!("expected veto, got {other:?}"),
    }
    assert_eq!(
        val(&s, 1).as_deref(),
        Some("b"),
        "vetoed delete rolled back"
    );
    assert_eq!(val(&s, 666), None, "vetoed insert rolled back");
    assert_eq!(gate.committed.load(Ordering::SeqCst), 1);
    // Read-only transactions do not bother the gate.
    s.begin().commit().expect("empty commit");
    assert_eq!(gate.seen.lock().len(), 2);
}

/// Records the before images it is shown and notes each accepted commit.
struct BeforeGate(Mutex<Vec<Vec<Option<Vec<Value>>>>>);
impl CommitGate for BeforeGate {
    fn prepare(
        &self,
        r: &mut CommitRequest<'_>,
    ) -> std::result::Result<Option<crate::GateNote>, HookError> {
        assert_eq!(r.before.len(), r.operations.len());
        let images = r
            .before
            .iter()
            .map(|b| b.as_ref().map(|r| r.to_vec()))
            .collect();
        self.0.lock().push(images);
        Ok(Some(Arc::new(r.operations.len())))
    }
}

#[test]
fn the_commit_gate_sees_before_images_and_its_note_comes_back() {
    let (db, s) = db_with(100);
    s.insert("t", row(1, "a")).expect("seed");
    let gate = Arc::new(BeforeGate(Mutex::new(Vec::new())));
    db.set_commit_gate(Some(gate.clone()));
    let mut tx = s.begin();
    tx.update_columns("t", &1.into(), &[("v", "b".into())])
        .expect("update");
    tx.update("t", &1.into(), row(1, "c")).expect("update");
    tx.insert("t", row(2, "x")).expect("insert");
    tx.delete("t", &1.into()).expect("delete");
    let note = tx.commit_noted().expect("commit").expect("a note");
    assert_eq!(note.downcast_ref::<usize>(), Some(&4));
    assert_eq!(
        gate.0.lock()[0],
        vec![
            Some(row(1, "a")),
            Some(row(1, "b")),
            None,
            Some(row(1, "c"))
        ],
        "each operation sees the image it replaced, its own earlier writes included"
    );
}

/// Decides by the session alone: vetoes every writer but `allowed`, counts what it
/// was shown.
struct SessionGate {
    allowed: String,
    shown: AtomicUsize,
}
impl CommitGate for SessionGate {
    fn prepare(
        &self,
        r: &mut CommitRequest<'_>,
    ) -> std::result::Result<Option<crate::GateNote>, HookError> {
        self.shown
            .fetch_add(r.operations.len() + r.before.len(), Ordering::SeqCst);
        if r.session.user == self.allowed {
            Ok(None)
        } else {
            Err("not this session".into())
        }
    }
    fn wants_operations(&self) -> bool {
        false
    }
}

#[test]
fn a_gate_that_wants_no_operations_is_still_asked_and_shown_none() {
    let (db, s) = db_with(100);
    s.insert("t", row(1, "a")).expect("seed");
    let gate = Arc::new(SessionGate {
        allowed: "applier".into(),
        shown: AtomicUsize::new(0),
    });
    db.set_commit_gate(Some(gate.clone()));
    let refused = s.update("t", &1.into(), row(1, "b"));
    assert!(
        matches!(refused, Err(EngineError::CommitVetoed { .. })),
        "{refused:?}"
    );
    let applier = db.session(SessionInfo::new("applier", "replication", None));
    let mut tx = applier.begin();
    tx.update("t", &1.into(), row(1, "c")).expect("update");
    tx.insert("t", row(2, "x")).expect("insert");
    tx.delete("t", &2.into()).expect("delete");
    tx.commit().expect("allowed");
    assert_eq!(
        s.get("t", &1.into()).expect("get").as_deref(),
        Some(&row(1, "c")[..])
    );
    assert_eq!(
        gate.shown.load(Ordering::SeqCst),
        0,
        "no operation recorded"
    );
}

#[test]
fn a_hold_blocks_new_writers_and_a_switch_moves_them_to_the_new_table() {
    let (db, s) = db_with(5_000);
    s.insert("t", row(1, "a")).expect("insert");
    let old = db.table("t").expect("t");
    let new = Arc::new(Table::new("t", old.schema().as_ref().clone()));
    new.install(row(1, "a")).expect("copy");

    let hold = db.hold_writers("t").expect("hold");
    assert!(matches!(
        db.hold_writers("t"),
        Err(EngineError::AlreadyHeld { .. })
    ));
    let s2 = s.clone();
    let writer = std::thread::spawn(move || s2.insert("t", row(2, "held")));
    std::thread::sleep(Duration::from_millis(30));
    assert!(!writer.is_finished(), "a new writer waits while held");
    assert_eq!(val(&s, 1).as_deref(), Some("a"), "readers are not held");
    hold.wait_idle(Duration::from_secs(1)).expect("idle");
    hold.switch_to(Arc::clone(&new)).expect("switch");
    writer
        .join()
        .expect("thread")
        .expect("insert lands after the switch");
    assert_eq!(new.len(), 2);
    assert_eq!(
        old.len(),
        1,
        "the old table received nothing after the hold"
    );
    assert_eq!(db.table("t").expect("t").id(), new.id());
}

#[test]
fn an_in_flight_writer_postpones_the_switch_and_may_finish_its_work() {
    let (db, s) = db_with(2_000);
    s.insert("t", row(1, "a")).expect("insert");
    let mut long = s.begin();
    long.update("t", &1.into(), row(1, "b")).expect("update");
    let hold = db.hold_writers("t").expect("hold");
    match hold.wait_idle(Duration::from_millis(20)) {
        Err(EngineError::WritersInFlight { in_flight: 1, .. }) => {}
        other => panic!("expected WritersInFlight, got {other:?}"),
    }
    let twin = Arc::new(Table::new(
        "t",
        db.table("t").expect("t").schema().as_ref().clone(),
    ));
    // Switching with a writer in flight is refused, not forced.
    let hold = match hold.switch_to(Arc::clone(&twin)) {
        Err(EngineError::WritersInFlight { .. }) => {
            db.hold_writers("t").expect("re-hold after drop")
        }
        other => panic!("expected refusal, got {other:?}"),
    };
    long.insert("t", row(2, "c"))
        .expect("an in-flight writer passes the hold");
    long.commit().expect("commit");
    hold.wait_idle(Duration::from_secs(1)).expect("idle now");
    hold.release();
    s.insert("t", row(3, "d")).expect("released");
}

#[test]
fn a_writer_held_past_its_timeout_gets_a_retryable_error() {
    let (db, s) = db_with(20);
    let _hold = db.hold_writers("t").expect("hold");
    let err = s.insert("t", row(1, "a")).expect_err("held");
    assert!(matches!(err, EngineError::WritersHeld { .. }));
    assert!(err.is_retryable());
}

#[test]
fn dropped_tables_refuse_writers() {
    let (db, s) = db_with(20);
    db.drop_table("t").expect("drop");
    assert!(matches!(
        s.insert("t", row(1, "a")),
        Err(EngineError::UnknownTable { .. })
    ));
    assert!(db.table_names().is_empty());
}

struct PanicsOnPublish;
impl WriteObserver for PanicsOnPublish {
    fn record_locked(&self, _rid: Rid) {}
    fn record_published(&self, _rid: Rid, _image: Option<&RowRef>) {
        panic!("observer bug");
    }
}

/// Found by the restructure tests: a panicking observer during commit left the
/// record locked and the writer registered forever, postponing every switch.
#[test]
fn a_hook_panicking_during_commit_does_not_wedge_the_table() {
    let (db, s) = db_with(50);
    s.insert("t", row(1, "a")).expect("insert");
    let t = db.table("t").expect("t");
    t.set_write_observer(Some(Arc::new(PanicsOnPublish)));
    let s2 = s.clone();
    let outcome = std::thread::spawn(move || s2.update("t", &1.into(), row(1, "b"))).join();
    assert!(outcome.is_err(), "the commit panicked");
    t.set_write_observer(None);
    assert_eq!(
        t.writers_in_flight(),
        0,
        "the writer registration was released"
    );
    s.update("t", &1.into(), row(1, "c"))
        .expect("the record lock was released");
    let hold = db.hold_writers("t").expect("hold");
    hold.wait_idle(Duration::from_millis(100)).expect("idle");
}

/// An update nobody else can see the committed image of writes it in place (the
/// table keeps its memory); one a reader holds is replaced, and the reader's row
/// never changes under it.
#[test]
fn an_update_writes_in_place_only_when_no_reader_holds_the_image() {
    let (_db, s) = db_with(100);
    s.insert("t", row(1, "a")).expect("insert");
    let before = s.get("t", &Key::from(1)).expect("get").expect("row");
    let held_at = Arc::as_ptr(&before);
    s.update_columns("t", &Key::from(1), &[("v", "b".into())])
        .expect("update");
    assert_eq!(
        before[1].as_text(),
        Some("a"),
        "a held row is never changed"
    );
    let after = s.get("t", &Key::from(1)).expect("get").expect("row");
    assert_eq!(after[1].as_text(), Some("b"));
    assert_ne!(Arc::as_ptr(&after), held_at, "replaced while held");
    let unheld_at = Arc::as_ptr(&after);
    drop((before, after));
    s.update_columns("t", &Key::from(1), &[("v", "c".into())])
        .expect("update");
    let now = s.get("t", &Key::from(1)).expect("get").expect("row");
    assert_eq!(now[1].as_text(), Some("c"));
    assert_eq!(Arc::as_ptr(&now), unheld_at, "written in place");
    // A rolled-back update leaves the image as it was.
    drop(now);
    let mut tx = s.begin();
    tx.update_columns("t", &Key::from(1), &[("v", "d".into())])
        .expect("update");
    tx.rollback();
    assert_eq!(val(&s, 1).as_deref(), Some("c"));
}

#[test]
fn an_update_or_delete_can_return_the_image_it_replaced_as_the_transaction_saw_it() {
    let (_db, s) = db_with(100);
    s.insert("t", row(1, "a")).expect("seed");
    let mut tx = s.begin();
    let first = tx
        .update_returning_before("t", &1.into(), row(1, "b"))
        .expect("update");
    assert_eq!(&first[..], &row(1, "a")[..]);
    let second = tx
        .update_returning_before("t", &1.into(), row(1, "c"))
        .expect("update");
    assert_eq!(&second[..], &row(1, "b")[..], "its own earlier write");
    let removed = tx.delete_returning_before("t", &1.into()).expect("delete");
    assert_eq!(&removed[..], &row(1, "c")[..]);
    assert!(matches!(
        tx.update_returning_before("t", &1.into(), row(1, "d")),
        Err(EngineError::KeyNotFound { .. })
    ));
    assert!(matches!(
        tx.delete_returning_before("t", &9.into()),
        Err(EngineError::KeyNotFound { .. })
    ));
    tx.commit().expect("commit");
    assert_eq!(s.get("t", &1.into()).expect("get"), None);
}
