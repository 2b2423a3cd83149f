//! Fuzz harness: arbitrary bytes decoded into a bounded sequence of engine operations
//! (autocommit and transactional, with rollbacks, key changes and deletes) run against
//! a `BTreeMap` model; the two must agree after every step.

use std::collections::BTreeMap;

use kirikae_engine::{Column, ColumnType, Database, EngineError, Key, Schema, SessionInfo, Value};

const KEYS: u8 = 16;
const MAX_OPS: usize = 512;

type Model = BTreeMap<i64, i64>;

fn table_contents(db: &Database) -> Model {
    db.table("t")
        .expect("table")
        .rows()
        .into_iter()
        .map(|(_, r)| (r[0].as_int().expect("int"), r[1].as_int().expect("int")))
        .collect()
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let db = Database::new();
    let schema = Schema::new(
        vec![
            Column::new("k", ColumnType::Int),
            Column::new("v", ColumnType::Int),
        ],
        &["k"],
    )
    .expect("schema");
    db.create_table("t", schema).expect("create");
    let s = db.session(SessionInfo::default());
    let mut committed = Model::new();
    let mut open: Option<(kirikae_engine::Transaction<'_>, Model)> = None;

    for chunk in data.chunks(3).take(MAX_OPS) {
        let [op, a, b] = match *chunk {
            [op, a, b] => [op, a, b],
            _ => break,
        };
        let k = i64::from(a % KEYS);
        let n = i64::from(b % KEYS);
        let v = i64::from(b);
        match op % 8 {
            0 => {
                if open.is_none() {
                    open = Some((s.begin(), committed.clone()));
                }
            }
            1 => {
                if let Some((tx, work)) = open.take() {
                    if a % 2 == 0 {
                        tx.commit().expect("commit");
                        committed = work;
                    } else {
                        tx.rollback();
                    }
                }
            }
            op => {
                let (outcome, view) = match open.as_mut() {
                    Some((tx, work)) => (
                        apply(op, k, n, v, |o| match o {
                            Call::Insert(row) => tx.insert("t", row).map(|_| ()),
                            Call::Update(key, row) => tx.update("t", &key, row).map(|_| ()),
                            Call::Delete(key) => tx.delete("t", &key).map(|_| ()),
                        }),
                        work,
                    ),
                    None => (
                        apply(op, k, n, v, |o| match o {
                            Call::Insert(row) => s.insert("t", row).map(|_| ()),
                            Call::Update(key, row) => s.update("t", &key, row).map(|_| ()),
                            Call::Delete(key) => s.delete("t", &key).map(|_| ()),
                        }),
                        &mut committed,
                    ),
                };
                model_step(op, k, n, v, outcome, view);
            }
        }
        if open.is_none() {
            assert_eq!(table_contents(&db), committed, "table and model diverged");
        }
    }
    drop(open);
    assert_eq!(
        table_contents(&db),
        committed,
        "rollback on drop restored the model"
    );
}

enum Call {
    Insert(Vec<Value>),
    Update(Key, Vec<Value>),
    Delete(Key),
}

fn apply(
    op: u8,
    k: i64,
    n: i64,
    v: i64,
    mut call: impl FnMut(Call) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    match op {
        2 | 3 => call(Call::Insert(vec![k.into(), v.into()])),
        4 => call(Call::Update(Key::from(k), vec![k.into(), v.into()])),
        5 => call(Call::Update(Key::from(k), vec![n.into(), v.into()])),
        _ => call(Call::Delete(Key::from(k))),
    }
}

fn model_step(op: u8, k: i64, n: i64, v: i64, outcome: Result<(), EngineError>, m: &mut Model) {
    match (op, outcome) {
        (2 | 3, Ok(())) => assert!(
            m.insert(k, v).is_none(),
            "insert of existing key {k} accepted"
        ),
        (2 | 3, Err(EngineError::DuplicateKey { .. })) => assert!(m.contains_key(&k)),
        (4, Ok(())) => assert!(
            m.insert(k, v).is_some(),
            "update of missing key {k} accepted"
        ),
        (5, Ok(())) => {
            assert!(
                m.remove(&k).is_some(),
                "key change of missing key {k} accepted"
            );
            assert!(
                m.insert(n, v).is_none(),
                "key change onto existing key {n} accepted"
            );
        }
        (4 | 5, Err(EngineError::KeyNotFound { .. })) => assert!(!m.contains_key(&k)),
        (5, Err(EngineError::DuplicateKey { .. })) => assert!(n != k && m.contains_key(&n)),
        (6 | 7, Ok(())) => assert!(m.remove(&k).is_some(), "delete of missing key {k} accepted"),
        (6 | 7, Err(EngineError::KeyNotFound { .. })) => assert!(!m.contains_key(&k)),
        (op, other) => panic!("op {op} on key {k}: unexpected {other:?}"),
    }
}
