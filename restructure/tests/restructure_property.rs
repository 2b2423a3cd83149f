//! Property test: random plan × random concurrent schedule (writer threads running
//! multi-record transactions that commit or roll back, deletes, re-inserts that reuse
//! RIDs, and a transaction held open across phase boundaries). At the switch, with
//! writers held, the new table equals plan(old table); after the switch every
//! committed write is visible in the new table.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{balance_column, key_for, plans, row_for, setup, Writers, TABLE};
use kirikae_engine::{SessionInfo, Value};
use kirikae_restructure::{start, RestructureOptions};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    plan: usize,
    rows: i64,
    threads: u64,
    chunk_rows: usize,
    journal: bool,
    spanning_ms: u64,
    spanning_commits: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..plans().len(),
        100i64..3_000,
        1u64..=3,
        8usize..512,
        any::<bool>(),
        0u64..30,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |(plan, rows, threads, chunk_rows, journal, spanning_ms, spanning_commits, seed)| {
                Case {
                    plan,
                    rows,
                    threads,
                    chunk_rows,
                    journal,
                    spanning_ms,
                    spanning_commits,
                    seed,
                }
            },
        )
}

fn run(c: Case) {
    let (name, plan) = plans().swap_remove(c.plan);
    let db = setup(c.rows);
    let writers = Writers::start(&db, c.threads, c.rows, c.seed);

    // A transaction opened before the restructure and held across phase boundaries.
    let spanning = {
        let db = db.clone();
        let (ms, commits, id) = (
            c.spanning_ms,
            c.spanning_commits,
            (c.seed % c.rows as u64) as i64,
        );
        std::thread::spawn(move || {
            let s = db.session(SessionInfo::default());
            let schema = db.table(TABLE).expect("t").schema().clone();
            let mut tx = s.begin();
            let locked = tx
                .update_columns(
                    TABLE,
                    &key_for(&schema, id),
                    &[(balance_column(&schema), Value::Int(-1))],
                )
                .is_ok();
            std::thread::sleep(Duration::from_millis(ms));
            if locked && commits {
                tx.commit().expect("commit");
            } else {
                tx.rollback();
            }
        })
    };

    let agreed = Arc::new(AtomicBool::new(false));
    let options = RestructureOptions {
        strategy: common::strategy(c.journal),
        chunk_rows: c.chunk_rows,
        verify: true,
        duty_cycle: 1.0,
        switch_retry_pause: Duration::from_millis(5),
        inspect_at_switch: Some(common::inspector(&plan, &agreed)),
        ..RestructureOptions::default()
    };
    let report = start(&db, TABLE, plan, options)
        .expect("start")
        .wait()
        .unwrap_or_else(|e| panic!("{name} {c:?}: {e}"));
    spanning.join().expect("spanning transaction");
    assert!(
        agreed.load(Ordering::SeqCst),
        "{name} {c:?}: new table != plan(old) at the switch"
    );
    assert_eq!(report.mismatches, Some(0), "{name} {c:?}");

    // Writes committed after the switch are in the new table.
    std::thread::sleep(Duration::from_millis(5));
    writers.stop();
    let t = db.table(TABLE).expect("t");
    let s = db.session(SessionInfo::default());
    let schema = t.schema().clone();
    let id = 50_000_000 + c.seed as i64 % 1000;
    s.insert(TABLE, row_for(&schema, id, 42))
        .expect("insert after switch");
    let got = t
        .get(&key_for(&schema, id))
        .expect("visible in the new table");
    assert_eq!(got.to_vec(), row_for(&schema, id, 42));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn the_new_table_equals_the_plan_of_the_old_one_at_the_switch(c in case()) {
        run(c);
    }
}
