//! The catalog observer: what it is shown, its veto, and a switch's exact place
//! among the commits that the commit gate sees.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::*;

fn schema() -> Schema {
    Schema::new(vec![Column::new("k", ColumnType::Int)], &["k"]).expect("schema")
}

/// What the hooks saw, in one sequence: commits (their inserted keys) and changes.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Commit(Vec<i64>),
    Added(String),
    Dropped(String),
    Switched { name: String, new_id: u64 },
    Announced(String, Vec<u8>),
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    /// Each change as a replica would be sent it.
    events: Mutex<Vec<CatalogEvent>>,
    veto: AtomicBool,
}

impl CatalogObserver for Recorder {
    fn prepare(&self, change: &CatalogChange<'_>) -> std::result::Result<(), HookError> {
        if self.veto.load(Ordering::SeqCst) {
            return Err(format!("no changes of {} today", change.table_name()).into());
        }
        self.events.lock().push(change.event());
        self.seen.lock().push(match change {
            CatalogChange::Added { table } => Seen::Added(table.name().to_owned()),
            CatalogChange::Dropped { table } => Seen::Dropped(table.name().to_owned()),
            CatalogChange::Switched { old, new } => Seen::Switched {
                name: old.name().to_owned(),
                new_id: new.id(),
            },
            CatalogChange::Announced { table, payload, .. } => {
                Seen::Announced((*table).to_owned(), payload.to_vec())
            }
        });
        Ok(())
    }
}

impl CommitGate for Recorder {
    fn prepare(
        &self,
        request: &mut CommitRequest<'_>,
    ) -> std::result::Result<Option<GateNote>, HookError> {
        let keys = request
            .operations
            .iter()
            .filter_map(|op| match op {
                Operation::Insert { row, .. } => row[0].as_int(),
                _ => None,
            })
            .collect();
        self.seen.lock().push(Seen::Commit(keys));
        Ok(None)
    }
}

fn switch_to_empty_twin(db: &Database, name: &str) -> Arc<Table> {
    let twin = Arc::new(Table::new(name, schema()));
    let hold = db.hold_writers(name).expect("hold");
    hold.wait_idle(Duration::from_secs(5)).expect("idle");
    hold.switch_to(Arc::clone(&twin)).expect("switch");
    twin
}

#[test]
fn the_observer_is_shown_each_change_in_order_and_its_veto_leaves_the_catalog_as_it_was() {
    let db = Database::new();
    let recorder = Arc::new(Recorder::default());
    db.set_catalog_observer(Some(recorder.clone()));
    db.create_table("a", schema()).expect("create");
    db.add_table(Arc::new(Table::new("b", schema())))
        .expect("add");
    let twin = switch_to_empty_twin(&db, "a");
    db.drop_table("b").expect("drop");
    db.announce("a", b"a plan", ForReplica::Follow)
        .expect("announce");
    assert_eq!(
        *recorder.seen.lock(),
        vec![
            Seen::Added("a".into()),
            Seen::Added("b".into()),
            Seen::Switched {
                name: "a".into(),
                new_id: twin.id()
            },
            Seen::Dropped("b".into()),
            Seen::Announced("a".into(), b"a plan".to_vec()),
        ]
    );
    let kv = schema();
    assert_eq!(
        *recorder.events.lock(),
        vec![
            CatalogEvent::Added { schema: kv.clone() },
            CatalogEvent::Added { schema: kv.clone() },
            CatalogEvent::Switched { schema: kv },
            CatalogEvent::Dropped,
            CatalogEvent::Announced {
                payload: b"a plan".to_vec()
            },
        ]
    );

    recorder.veto.store(true, Ordering::SeqCst);
    let vetoed = db.create_table("c", schema()).expect_err("vetoed");
    match &vetoed {
        EngineError::CatalogChangeVetoed { table, source } => {
            assert_eq!(table, "c");
            assert!(source.to_string().contains("no changes of c"), "{source}");
        }
        other => panic!("expected a veto, got {other:?}"),
    }
    assert!(db.drop_table("a").is_err());
    assert!(matches!(
        db.announce("a", b"another", ForReplica::Follow),
        Err(EngineError::CatalogChangeVetoed { .. })
    ));
    let other = Arc::new(Table::new("a", schema()));
    let hold = db.hold_writers("a").expect("hold");
    assert!(matches!(
        hold.switch_to(other),
        Err(EngineError::CatalogChangeVetoed { .. })
    ));
    assert_eq!(db.table_names(), vec!["a".to_owned()]);
    assert_eq!(db.table("a").expect("a").id(), twin.id(), "not switched");
    // The vetoed switch's hold is gone: writers go on.
    let s = db.session(SessionInfo::default());
    s.insert("a", vec![1.into()])
        .expect("insert after the veto");

    db.set_catalog_observer(None);
    db.create_table("c", schema())
        .expect("no observer, no veto");
}

/// Writers insert unique keys without pause while the table is switched again and
/// again to empty twins. Every commit the gate saw before a switch landed in the
/// table the switch replaced, every later one in the tables after it: the observer
/// is shown the switch at its exact place in the commit order.
#[test]
fn a_switch_is_shown_between_the_last_commit_on_the_old_table_and_the_first_on_the_new() {
    const SWITCHES: usize = 100;
    let db = Database::new();
    let first = db.create_table("t", schema()).expect("create");
    let recorder = Arc::new(Recorder::default());
    db.set_catalog_observer(Some(recorder.clone()));
    db.set_commit_gate(Some(recorder.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let next_key = Arc::new(AtomicI64::new(0));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (db, stop, next_key) = (db.clone(), stop.clone(), next_key.clone());
            std::thread::spawn(move || {
                let s = db.session(SessionInfo::default());
                while !stop.load(Ordering::Relaxed) {
                    let k = next_key.fetch_add(1, Ordering::Relaxed);
                    let done = if w == 0 {
                        // Multi-statement transactions too (rolled back on error).
                        let mut t = s.begin();
                        let k2 = next_key.fetch_add(1, Ordering::Relaxed);
                        t.insert("t", vec![k.into()])
                            .and_then(|_| t.insert("t", vec![k2.into()]))
                            .and_then(|_| t.commit().map(|_| ()))
                    } else {
                        s.insert("t", vec![k.into()]).map(|_| ())
                    };
                    // Switches back to back may make a writer retry (a table
                    // retired again and again while it resolves the name).
                    match done {
                        Ok(()) => {}
                        Err(e) if e.is_retryable() => {}
                        Err(e) => panic!("writer: {e}"),
                    }
                }
            })
        })
        .collect();
    let mut tables = vec![first];
    for _ in 0..SWITCHES {
        // Let some commits land on each table.
        let at = recorder.seen.lock().len();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while recorder.seen.lock().len() < at + 200 {
            assert!(std::time::Instant::now() < deadline, "writers stalled");
            std::thread::yield_now();
        }
        tables.push(switch_to_empty_twin(&db, "t"));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    // Split what the hooks saw at each switch: segment i is table i's commits.
    let seen = recorder.seen.lock().clone();
    let mut segments: Vec<BTreeSet<i64>> = vec![BTreeSet::new()];
    for s in &seen {
        match s {
            Seen::Commit(keys) => segments
                .last_mut()
                .expect("a segment")
                .extend(keys.iter().copied()),
            Seen::Switched { new_id, .. } => {
                assert_eq!(*new_id, tables[segments.len()].id(), "switch order");
                segments.push(BTreeSet::new());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(segments.len(), tables.len());
    for (i, (segment, table)) in segments.iter().zip(&tables).enumerate() {
        let held: BTreeSet<i64> = table
            .rows()
            .iter()
            .filter_map(|(_, r)| r[0].as_int())
            .collect();
        assert_eq!(
            &held, segment,
            "table {i} holds exactly the commits before its switch"
        );
    }
}

/// `insert_named` builds its row for the table it inserts into: with the name
/// switched back and forth between schemas of one and two columns, every insert by
/// column name lands whole (the row was once built from the schema of the table the
/// name designated a moment before).
#[test]
fn insert_named_racing_switches_between_schemas_always_fits_the_table_it_lands_in() {
    let wide = Schema::new(
        vec![
            Column::new("k", ColumnType::Int),
            Column::new("extra", ColumnType::Int).default_value(0),
        ],
        &["k"],
    )
    .expect("schema");
    let db = Database::new();
    db.create_table("t", schema()).expect("create");
    let stop = Arc::new(AtomicBool::new(false));
    let inserted = Arc::new(AtomicI64::new(0));
    let writer = {
        let (db, stop, inserted) = (db.clone(), stop.clone(), inserted.clone());
        std::thread::spawn(move || {
            let s = db.session(SessionInfo::default());
            let mut k = 0i64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                match s.insert_named("t", &[("k", Value::Int(k))]) {
                    Ok(_) => {
                        inserted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.is_retryable() => {}
                    Err(e) => return Err(format!("insert {k}: {e}")),
                }
            }
            Ok(())
        })
    };
    for i in 0..200 {
        // Some inserts between switches, so that they race them.
        let at = inserted.load(Ordering::Relaxed);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while inserted.load(Ordering::Relaxed) < at + 5 && !writer.is_finished() {
            assert!(std::time::Instant::now() < deadline, "the writer stalled");
            std::thread::yield_now();
        }
        let next = if i % 2 == 0 { wide.clone() } else { schema() };
        let twin = Arc::new(Table::new("t", next));
        let hold = db.hold_writers("t").expect("hold");
        hold.wait_idle(Duration::from_secs(5)).expect("idle");
        hold.switch_to(twin).expect("switch");
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer").expect("every insert fits");
    assert!(inserted.load(Ordering::Relaxed) >= 1_000);
}
