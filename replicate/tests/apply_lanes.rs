//! The backup's apply lanes (issue 13 §1): async transactions applied in parallel by
//! key give the same database, the same answers and the same positions as applying
//! everything in sequence, checked against a simple model of the primary's order.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use kirikae_engine::{Database, Key, Operation, SessionInfo, Value};
use kirikae_replicate::{Applier, ApplierStats, Epoch, Message, Mode, Seq, Writes};
use kirikae_testkit::{kv_database, kv_row};
use proptest::prelude::*;

const TABLES: [&str; 2] = ["acct", "ledger"];

/// One write of a generated transaction: table index, key, and what it does.
#[derive(Clone, Debug)]
enum Write {
    Insert(usize, i64, i64),
    Update(usize, i64, i64),
    /// An update that moves the record to a new key.
    Rekey(usize, i64, i64),
    Delete(usize, i64),
}

#[derive(Clone, Debug)]
struct Txn {
    mode: Mode,
    verify: bool,
    writes: Vec<Write>,
}

fn write() -> impl Strategy<Value = Write> {
    let t = 0..TABLES.len();
    let k = 0..12i64;
    prop_oneof![
        (t.clone(), k.clone(), any::<i64>()).prop_map(|(t, k, v)| Write::Insert(t, k, v)),
        (t.clone(), k.clone(), any::<i64>()).prop_map(|(t, k, v)| Write::Update(t, k, v)),
        (t.clone(), k.clone(), k.clone()).prop_map(|(t, k, to)| Write::Rekey(t, k, to)),
        (t, k).prop_map(|(t, k)| Write::Delete(t, k)),
    ]
}

fn txn() -> impl Strategy<Value = Txn> {
    (
        prop_oneof![4 => Just(Mode::Async), 1 => Just(Mode::Ordered)],
        any::<bool>(),
        prop::collection::vec(write(), 1..4),
    )
        .prop_map(|(mode, verify, writes)| Txn {
            mode,
            verify,
            writes,
        })
}

fn operation(w: &Write) -> Operation {
    match *w {
        Write::Insert(t, k, v) => Operation::Insert {
            table: TABLES[t].into(),
            row: kv_row(k, v).into(),
        },
        Write::Update(t, k, v) => Operation::Update {
            table: TABLES[t].into(),
            key: Key::from(k),
            row: kv_row(k, v).into(),
        },
        Write::Rekey(t, k, to) => Operation::Update {
            table: TABLES[t].into(),
            key: Key::from(k),
            row: kv_row(to, k).into(),
        },
        Write::Delete(t, k) => Operation::Delete {
            table: TABLES[t].into(),
            key: Key::from(k),
        },
    }
}

type Model = BTreeMap<(usize, i64), i64>;

/// The primary's order: each transaction whole or not at all, in sequence.
fn model(txns: &[Txn]) -> (Model, Vec<Seq>) {
    let mut rows = Model::new();
    let mut rejected = Vec::new();
    for (i, t) in txns.iter().enumerate() {
        let mut after = rows.clone();
        let ok = t.writes.iter().all(|w| match *w {
            Write::Insert(t, k, v) => after.insert((t, k), v).is_none(),
            Write::Update(t, k, v) => after.insert((t, k), v).is_some(),
            Write::Rekey(t, k, to) => match after.remove(&(t, k)) {
                Some(_) => after.insert((t, to), k).is_none(),
                None => false,
            },
            Write::Delete(t, k) => after.remove(&(t, k)).is_some(),
        });
        if ok {
            rows = after;
        } else {
            rejected.push(Seq(i as u64 + 1));
        }
    }
    (rows, rejected)
}

fn rows(db: &Database) -> Model {
    let mut all = Model::new();
    for (t, name) in TABLES.iter().enumerate() {
        for (_, r) in db.table(name).unwrap().rows() {
            let int = |v: &Value| match v {
                Value::Int(i) => *i,
                other => panic!("not an int: {other:?}"),
            };
            all.insert((t, int(&r[0])), int(&r[1]));
        }
    }
    all
}

/// How lanes are handed their steps: `chunk` at a time, runs ended at `run_max`.
#[derive(Clone, Copy, Debug)]
struct Handoff {
    chunk: usize,
    run_max: usize,
}

/// The defaults: short histories never reach them.
const DEFAULT_HANDOFF: Handoff = Handoff {
    chunk: kirikae_replicate::CHUNK_STEPS,
    run_max: kirikae_replicate::RUN_TXNS_MAX,
};

/// Applies `txns` in batches of the given sizes on a fresh backup with `lanes`
/// lanes (runs of two or more in parallel); returns its rows, every answer, and
/// its stats (transactions applied in lanes, lane meetings).
fn apply(txns: &[Txn], batches: &[usize], lanes: usize) -> (Model, Vec<Message>, ApplierStats) {
    apply_handing(txns, batches, lanes, DEFAULT_HANDOFF)
}

/// [`apply`], handing the lanes their steps as `handoff` says.
fn apply_handing(
    txns: &[Txn],
    batches: &[usize],
    lanes: usize,
    handoff: Handoff,
) -> (Model, Vec<Message>, ApplierStats) {
    let db = kv_database(&TABLES);
    let session = db.session(SessionInfo::new("replication", "replication", None));
    let mut backup = Applier::new(&session);
    backup.set_apply_lanes(lanes, 2).unwrap();
    backup.set_lane_handoff(handoff.chunk, handoff.run_max);
    backup.connected(Epoch(1)).unwrap();
    let mut replies = Vec::new();
    let mut next = 0;
    for &size in batches.iter().cycle() {
        if next == txns.len() {
            break;
        }
        for (i, t) in txns.iter().enumerate().skip(next).take(size) {
            let message = Message::Ship {
                seq: Seq(i as u64 + 1),
                epoch: Epoch(1),
                mode: t.mode,
                operations: Writes::new(t.writes.iter().map(operation).collect()),
                verify: t.verify,
            };
            backup.handle(message).unwrap();
            next = i + 1;
        }
        backup.flush(&mut replies).unwrap();
    }
    assert_eq!(
        backup.last_seq(),
        Seq(txns.len() as u64),
        "every sequence resolved"
    );
    let stats = backup.stats().clone();
    drop(backup);
    (rows(&db), replies, stats)
}

fn rejected(replies: &[Message]) -> Vec<Seq> {
    replies
        .iter()
        .filter_map(|m| match m {
            Message::Rejected { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parallel_lanes_apply_what_the_primarys_order_gives(
        txns in prop::collection::vec(txn(), 1..120),
        batches in prop::collection::vec(1usize..40, 1..6),
        lanes in 2usize..5,
        chunk in 1usize..6,
        run_max in 2usize..30,
    ) {
        let (want_rows, want_rejected) = model(&txns);
        let (in_sequence, answers_in_sequence, one_lane) = apply(&txns, &batches, 1);
        // Steps handed to the lanes a few at a time while the run is placed, and
        // runs ended part-way through a batch.
        let handoff = Handoff { chunk, run_max };
        let (in_lanes, answers_in_lanes, _) = apply_handing(&txns, &batches, lanes, handoff);
        prop_assert_eq!(one_lane.applied_in_lanes, 0);
        prop_assert_eq!(&in_sequence, &want_rows);
        prop_assert_eq!(&in_lanes, &want_rows);
        prop_assert_eq!(rejected(&answers_in_lanes), want_rejected);
        // The same answers (applied digests, rejections, acknowledged positions), in
        // the same order.
        prop_assert_eq!(answers_in_lanes, answers_in_sequence);
    }
}

#[test]
fn a_batch_of_async_single_key_transactions_is_applied_in_lanes_and_ordered_ones_are_not() {
    let txns = |mode| -> Vec<Txn> {
        (0..200)
            .map(|k| Txn {
                mode,
                verify: false,
                writes: vec![Write::Insert(0, k, k)],
            })
            .collect()
    };
    let (rows_async, _, stats) = apply(&txns(Mode::Async), &[200], 4);
    assert_eq!(
        (stats.applied_in_lanes, stats.lane_meetings),
        (200, 0),
        "every async transaction went through the lanes"
    );
    assert_eq!(rows_async.len(), 200);
    let (rows_ordered, _, stats) = apply(&txns(Mode::Ordered), &[200], 4);
    assert_eq!(
        stats.applied_in_lanes, 0,
        "ordered transactions are applied in sequence"
    );
    assert_eq!(rows_ordered, rows_async);
}

#[test]
fn a_transaction_across_lanes_waits_for_the_run_before_it() {
    // Key 0 written by a run of async transactions, then moved by one that also
    // writes other keys (several lanes): it must see the run's last value.
    let mut txns: Vec<Txn> = (0..40)
        .map(|i| Txn {
            mode: Mode::Async,
            verify: false,
            writes: vec![if i == 0 {
                Write::Insert(0, i % 8, i)
            } else if i < 8 {
                Write::Insert(0, i, i)
            } else {
                Write::Update(0, i % 8, i)
            }],
        })
        .collect();
    txns.push(Txn {
        mode: Mode::Async,
        verify: true,
        writes: (0..8).map(|k| Write::Delete(0, k)).collect(),
    });
    txns.push(Txn {
        mode: Mode::Async,
        verify: false,
        writes: vec![Write::Insert(0, 3, 99)],
    });
    let (want, rejected_want) = model(&txns);
    let (got, answers, stats) = apply(&txns, &[txns.len()], 4);
    assert_eq!(got, want);
    assert_eq!(rejected(&answers), rejected_want);
    assert!(rejected_want.is_empty());
    assert!(stats.applied_in_lanes > 0);
    assert!(stats.lane_meetings > 0, "the deletes meet: {stats:?}");
}

#[test]
fn charges_on_distinct_subscribers_spread_over_the_lanes_without_meeting() {
    // Each transaction updates one account and inserts a ledger record under a new
    // key, as a telecom charge does: two keys, which hashed placement would put in
    // different lanes half the time. Then a second round on the same accounts.
    let mut txns: Vec<Txn> = (0..64)
        .map(|k| Txn {
            mode: Mode::Ordered,
            verify: false,
            writes: vec![Write::Insert(0, k, 0)],
        })
        .collect();
    for round in 1..=2 {
        txns.extend((0..64).map(|k| Txn {
            mode: Mode::Async,
            verify: false,
            writes: vec![
                Write::Update(0, k, round),
                Write::Insert(1, round * 1000 + k, k),
            ],
        }));
    }
    let (want, _) = model(&txns);
    let (got, answers, stats) = apply(&txns, &[64, 128], 2);
    assert_eq!(got, want);
    assert!(rejected(&answers).is_empty());
    assert_eq!(
        (stats.applied_in_lanes, stats.lane_meetings),
        (128, 0),
        "{stats:?}"
    );
}
