//! Property test: random sequences of autocommit operations and transactions (with
//! rollbacks, key changes and RID reuse) against a `BTreeMap` model. After every step
//! the table, its index and the model agree, and RIDs are stable and unique.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use kirikae_engine::{Database, EngineError, Key, Rid, SessionInfo, Value};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Begin,
    Commit,
    Rollback,
    Insert(i64, i64),
    Update(i64, i64, i64),
    UpdateColumn(i64, i64),
    Delete(i64),
    GetForUpdate(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0i64..8;
    prop_oneof![
        1 => Just(Op::Begin),
        1 => Just(Op::Commit),
        1 => Just(Op::Rollback),
        3 => (k.clone(), any::<i64>()).prop_map(|(k, v)| Op::Insert(k, v)),
        2 => (k.clone(), k.clone(), any::<i64>()).prop_map(|(k, n, v)| Op::Update(k, n, v)),
        2 => (k.clone(), any::<i64>()).prop_map(|(k, v)| Op::UpdateColumn(k, v)),
        2 => k.clone().prop_map(Op::Delete),
        1 => k.prop_map(Op::GetForUpdate),
    ]
}

/// key -> (value, rid)
type Model = BTreeMap<i64, (i64, Rid)>;

fn check_table(db: &Database, committed: &Model) {
    let t = db.table("t").expect("table");
    let scanned: BTreeMap<i64, (i64, Rid)> = t
        .rows()
        .into_iter()
        .map(|(rid, row)| {
            (
                row[0].as_int().expect("int"),
                (row[1].as_int().expect("int"), rid),
            )
        })
        .collect();
    assert_eq!(&scanned, committed, "scan vs model");
    assert_eq!(t.len(), committed.len() as u64);
    for k in 0..8 {
        let got = t
            .get_with_rid(&Key::from(k))
            .map(|(rid, row)| (row[1].as_int().expect("int"), rid));
        assert_eq!(got, committed.get(&k).copied(), "index lookup of key {k}");
    }
}

fn rids_unique(m: &Model) {
    let rids: BTreeSet<Rid> = m.values().map(|(_, r)| *r).collect();
    assert_eq!(rids.len(), m.len(), "two live records share a RID: {m:?}");
}

fn run(ops: Vec<Op>) {
    let db = kirikae_testkit::kv_database(&["t"]);
    let s = db.session(SessionInfo::default());
    let mut committed = Model::new();
    // The open transaction and its working view of the model.
    let mut open: Option<(kirikae_engine::Transaction<'_>, Model)> = None;

    for op in ops {
        match op {
            Op::Begin => {
                if open.is_none() {
                    open = Some((s.begin(), committed.clone()));
                }
            }
            Op::Commit => {
                if let Some((tx, work)) = open.take() {
                    tx.commit().expect("commit");
                    committed = work;
                }
            }
            Op::Rollback => {
                if let Some((tx, _)) = open.take() {
                    tx.rollback();
                }
            }
            Op::Insert(k, v) => {
                let row = vec![Value::Int(k), Value::Int(v)];
                let (res, view) = match open.as_mut() {
                    Some((tx, work)) => (tx.insert("t", row), work),
                    None => (s.insert("t", row), &mut committed),
                };
                match (res, view.contains_key(&k)) {
                    (Ok(rid), false) => {
                        assert!(
                            view.values().all(|(_, r)| *r != rid),
                            "insert reused a live RID"
                        );
                        view.insert(k, (v, rid));
                    }
                    (Err(EngineError::DuplicateKey { .. }), true) => {}
                    (other, exists) => panic!("insert {k}: {other:?}, model exists={exists}"),
                }
            }
            Op::Update(k, n, v) => {
                let row = vec![Value::Int(n), Value::Int(v)];
                let (res, view) = match open.as_mut() {
                    Some((tx, work)) => (tx.update("t", &Key::from(k), row), work),
                    None => (s.update("t", &Key::from(k), row), &mut committed),
                };
                let expected_rid = view.get(&k).map(|(_, r)| *r);
                let clash = n != k && view.contains_key(&n);
                match (res, expected_rid) {
                    (Ok(rid), Some(old)) if !clash => {
                        assert_eq!(rid, old, "update keeps the RID");
                        view.remove(&k);
                        view.insert(n, (v, rid));
                    }
                    (Err(EngineError::DuplicateKey { .. }), Some(_)) if clash => {}
                    (Err(EngineError::KeyNotFound { .. }), None) => {}
                    (other, m) => panic!("update {k}->{n}: {other:?}, model {m:?} clash={clash}"),
                }
            }
            Op::UpdateColumn(k, v) => {
                let (res, view) = match open.as_mut() {
                    Some((tx, work)) => (
                        tx.update_columns("t", &Key::from(k), &[("v", Value::Int(v))]),
                        work,
                    ),
                    None => (
                        s.update_columns("t", &Key::from(k), &[("v", Value::Int(v))]),
                        &mut committed,
                    ),
                };
                match (res, view.get_mut(&k)) {
                    (Ok(rid), Some(entry)) => {
                        assert_eq!(rid, entry.1);
                        entry.0 = v;
                    }
                    (Err(EngineError::KeyNotFound { .. }), None) => {}
                    (other, m) => panic!("update_columns {k}: {other:?}, model {m:?}"),
                }
            }
            Op::Delete(k) => {
                let (res, view) = match open.as_mut() {
                    Some((tx, work)) => (tx.delete("t", &Key::from(k)), work),
                    None => (s.delete("t", &Key::from(k)), &mut committed),
                };
                match (res, view.remove(&k)) {
                    (Ok(rid), Some((_, old))) => assert_eq!(rid, old),
                    (Err(EngineError::KeyNotFound { .. }), None) => {}
                    (other, m) => panic!("delete {k}: {other:?}, model {m:?}"),
                }
            }
            Op::GetForUpdate(k) => {
                if let Some((tx, work)) = open.as_mut() {
                    let got = tx.get_for_update("t", &Key::from(k)).expect("lock");
                    assert_eq!(
                        got.map(|r| r[1].as_int().expect("int")),
                        work.get(&k).map(|(v, _)| *v)
                    );
                }
            }
        }
        rids_unique(&committed);
        if let Some((tx, work)) = open.as_ref() {
            rids_unique(work);
            for k in 0..8 {
                let got = tx
                    .get("t", &Key::from(k))
                    .expect("get")
                    .map(|r| r[1].as_int().expect("int"));
                assert_eq!(
                    got,
                    work.get(&k).map(|(v, _)| *v),
                    "transaction's own view of key {k}"
                );
            }
        } else {
            check_table(&db, &committed);
        }
    }
    if let Some((tx, _)) = open.take() {
        tx.rollback();
    }
    check_table(&db, &committed);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_a_btreemap_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops);
    }
}
