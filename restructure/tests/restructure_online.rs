//! Online restructuring under real concurrency: several plans with four writer
//! threads, abort in each phase, conversion failures, long transactions postponing
//! the switch, non-convergence, duplicate keys, a panicking row function, control.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{plans, setup, wait_for_phase, Writers, TABLE};
use kirikae_engine::{Column, ColumnType, Database, Key, Schema, SessionInfo, Value};
use kirikae_restructure::{
    start, Conversion, HoldEnd, HoldKind, NonConvergence, Phase, Plan, RestructureError,
    RestructureOptions, RestructureReport, Step, Strategy, Transform,
};
use kirikae_testkit::wait_for;

fn run_plan_under_load(name: &str, plan: Plan, strategy: Strategy) {
    const ROWS: i64 = 100_000;
    let db = setup(ROWS);
    let writers = Writers::start(&db, 4, ROWS, 7);
    std::thread::sleep(Duration::from_millis(50));
    let agreed = Arc::new(AtomicBool::new(false));
    let options = RestructureOptions {
        strategy,
        verify: true,
        duty_cycle: 1.0,
        // Correctness under load is the point here; another test's writers share the
        // two cores, and a 1 ms bound could be preempted on every try.
        stall_max: Duration::from_millis(20),
        inspect_at_switch: Some(common::inspector(&plan, &agreed)),
        ..RestructureOptions::default()
    };
    let old_id = db.table(TABLE).expect("t").id();
    let report = start(&db, TABLE, plan, options)
        .expect("start")
        .wait()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        agreed.load(Ordering::SeqCst),
        "{name}: new table != plan(old) at the switch"
    );
    assert_eq!(
        report.mismatches,
        Some(0),
        "{name}: verification mismatches"
    );
    assert_eq!(report.holds.last().map(|h| h.end), Some(HoldEnd::Switched));
    assert_ne!(db.table(TABLE).expect("t").id(), old_id, "{name}: switched");
    // Writers keep going on the new table.
    let at_switch = writers.committed();
    wait_for(
        "writers to commit on the new table",
        Duration::from_secs(30),
        || writers.committed() > at_switch + 100,
    );
    let counts = writers.stop();
    // A write after the switch lands in the new table.
    let s = db.session(SessionInfo::default());
    let t = db.table(TABLE).expect("t");
    let before = t.len();
    let fresh = 9_000_000_000i64;
    s.insert(TABLE, common::row_for(t.schema(), fresh, 5))
        .expect("insert after switch");
    assert_eq!(t.len(), before + 1);
    eprintln!(
        "{name} ({strategy:?}): copied {} rows in {:?}, {} rounds, stall {:?}, {} writer txns",
        report.rows_copied,
        report.phase1,
        report.rounds,
        report.stall,
        counts.committed.load(Ordering::Relaxed)
    );
}

#[test]
fn every_plan_under_four_writer_threads() {
    for (name, plan) in plans() {
        run_plan_under_load(name, plan, Strategy::LockHistory);
    }
}

#[test]
fn the_journal_baseline_gives_the_same_result() {
    let (name, plan) = plans().swap_remove(2);
    run_plan_under_load(name, plan, Strategy::Journal);
}

fn add_column() -> Plan {
    plans().swap_remove(0).1
}

/// Checks that the old table still serves writes, on a record of its own: the random
/// writers of a test may have deleted any record they share.
fn assert_old_table_serves(db: &Database, old_id: u64) {
    static PROBE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(-1);
    let t = db.table(TABLE).expect("t");
    assert_eq!(t.id(), old_id, "the old table still serves");
    assert!(!t.has_write_observer(), "the lock history was removed");
    let s = db.session(SessionInfo::default());
    let id = PROBE.fetch_sub(1, Ordering::Relaxed);
    let schema = t.schema();
    let (key, balance) = (common::key_for(schema, id), common::balance_column(schema));
    s.insert(TABLE, common::row_for(schema, id, 0))
        .expect("inserts still work");
    s.update_columns(TABLE, &key, &[(balance, Value::Int(1))])
        .expect("updates still work");
    let row = s.get(TABLE, &key).expect("get").expect("probe");
    assert_eq!(
        row[schema.column_index(balance).expect("balance")],
        Value::Int(1)
    );
}

#[test]
fn abort_in_each_phase_leaves_the_old_table_serving() {
    // Copying: a slow copy.
    let db = setup(20_000);
    let old_id = db.table(TABLE).expect("t").id();
    let h = start(
        &db,
        TABLE,
        add_column(),
        RestructureOptions {
            rate_limit_rows_per_s: Some(20_000),
            chunk_rows: 256,
            ..RestructureOptions::default()
        },
    )
    .expect("start");
    wait_for_phase(&h, Phase::Copying);
    h.abort();
    match h.wait() {
        Err(RestructureError::Aborted {
            phase: Phase::Copying,
            ..
        }) => {}
        other => panic!("expected abort while copying, got {other:?}"),
    }
    assert_old_table_serves(&db, old_id);

    // Syncing: writers outpace a zero stall budget, so phase 2 keeps going.
    let writers = Writers::start(&db, 2, 20_000, 3);
    let h = start(
        &db,
        TABLE,
        add_column(),
        RestructureOptions {
            stall_max: Duration::ZERO,
            on_non_convergence: NonConvergence::KeepGoing,
            ..RestructureOptions::default()
        },
    )
    .expect("start");
    wait_for_phase(&h, Phase::Syncing);
    h.abort();
    match h.wait() {
        Err(RestructureError::Aborted {
            phase: Phase::Syncing,
            ..
        }) => {}
        other => panic!("expected abort while syncing, got {other:?}"),
    }
    writers.stop();
    assert_old_table_serves(&db, old_id);

    // Switching: a long transaction keeps postponing the switch. (It inserts its own
    // record: the random writers above may have deleted any existing one.)
    let s = db.session(SessionInfo::default());
    let mut long = s.begin();
    long.insert(TABLE, common::row(777_777_777, 5))
        .expect("lock");
    let h = start_postponable(&db, 1_000);
    h.abort();
    match h.wait() {
        Err(RestructureError::Aborted {
            phase: Phase::Switching,
            ..
        }) => {}
        other => panic!("expected abort while switching, got {other:?}"),
    }
    long.commit()
        .expect("the long transaction was never disturbed");
    assert_old_table_serves(&db, old_id);
}

/// Starts adding a column with short switch attempts, and waits until it is trying to
/// switch (a long transaction is expected to postpone it).
fn start_postponable(db: &Database, tries: u32) -> kirikae_restructure::RestructureHandle {
    let h = start(
        db,
        TABLE,
        add_column(),
        RestructureOptions {
            switch_retry_pause: Duration::from_millis(10),
            switch_tries: tries,
            ..RestructureOptions::default()
        },
    )
    .expect("start");
    wait_for_phase(&h, Phase::Switching);
    h
}

#[test]
fn a_conversion_failure_names_the_record_and_keeps_the_old_table() {
    let db = setup(1_000);
    let old_id = db.table(TABLE).expect("t").id();
    let s = db.session(SessionInfo::default());
    s.update_columns(TABLE, &Key::from(777), &[("code", "12-34".into())])
        .expect("bad code");
    let plan = plans().swap_remove(2).1;
    match start(&db, TABLE, plan, RestructureOptions::default())
        .expect("start")
        .wait()
    {
        Err(RestructureError::Conversion(e)) => {
            assert_eq!(e.key, Key::from(777));
            assert_eq!(e.column, "code");
            assert_eq!(e.value, "\"12-34\"");
            assert_eq!(
                db.table(TABLE)
                    .expect("t")
                    .get_with_rid(&Key::from(777))
                    .expect("row")
                    .0,
                e.rid
            );
        }
        other => panic!("expected a conversion error, got {other:?}"),
    }
    assert_old_table_serves(&db, old_id);
}

#[test]
fn a_bad_value_written_during_the_copy_fails_in_phase_two() {
    let db = setup(20_000);
    let h = start(
        &db,
        TABLE,
        plans().swap_remove(2).1,
        RestructureOptions {
            rate_limit_rows_per_s: Some(100_000),
            chunk_rows: 512,
            ..RestructureOptions::default()
        },
    )
    .expect("start");
    wait_for_phase(&h, Phase::Copying);
    let s = db.session(SessionInfo::default());
    s.update_columns(TABLE, &Key::from(3), &[("code", "x".into())])
        .expect("bad code");
    match h.wait() {
        Err(RestructureError::Conversion(e)) => assert_eq!(e.key, Key::from(3)),
        other => panic!("expected a conversion error, got {other:?}"),
    }
}

#[test]
fn a_long_transaction_postpones_the_switch_then_lets_it_happen() {
    let db = setup(5_000);
    let s = db.session(SessionInfo::default());
    let mut long = s.begin();
    long.update_columns(TABLE, &Key::from(5), &[("balance", Value::Int(55))])
        .expect("lock");
    let h = start_postponable(&db, 200);
    wait_for(
        "a switch attempt postponed by the lock",
        Duration::from_secs(30),
        || h.progress().switch_retries > 0,
    );
    long.commit().expect("commit");
    let report = h.wait().expect("switched after the long transaction");
    assert!(report.switch_attempts > 1, "postponed at least once");
    let r = s.get(TABLE, &Key::from(5)).expect("get").expect("row");
    assert_eq!(
        r[2],
        Value::Int(55),
        "the long transaction's write reached the new table"
    );
    assert_eq!(r[4], Value::Int(1), "and the new column");

    // With too few tries, the switch gives up and the old table keeps serving.
    let mut long = s.begin();
    long.update_columns(TABLE, &Key::from(6), &[("balance", Value::Int(66))])
        .expect("lock");
    let old_id = db.table(TABLE).expect("t").id();
    let outcome = start(
        &db,
        TABLE,
        Plan::new(vec![Step::Reorganize]),
        RestructureOptions {
            switch_retry_pause: Duration::from_millis(5),
            switch_tries: 3,
            ..RestructureOptions::default()
        },
    )
    .expect("start")
    .wait();
    match outcome {
        Err(RestructureError::SwitchPostponed {
            tries: 3,
            in_flight: 1,
            ..
        }) => {}
        other => panic!("expected SwitchPostponed, got {other:?}"),
    }
    long.commit().expect("commit");
    assert_old_table_serves(&db, old_id);
}

/// Writers that only update existing records, as fast as they can: the history is
/// bounded by the table, so a sync that cannot keep up saturates instead of growing.
fn updaters(
    db: &Database,
    threads: u64,
    rows: i64,
) -> (Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles = (0..threads)
        .map(|t| {
            let (db, stop) = (db.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let s = db.session(SessionInfo::default());
                let mut i = t as i64;
                while !stop.load(Ordering::Relaxed) {
                    i = (i + 7919) % rows;
                    match s.update_columns(TABLE, &Key::from(i), &[("balance", Value::Int(i))]) {
                        Ok(_) => {}
                        Err(e) if e.is_retryable() => {}
                        Err(kirikae_engine::EngineError::UnknownTable { .. }) => break,
                        Err(e) => panic!("updater: {e}"),
                    }
                }
            })
        })
        .collect();
    (stop, handles)
}

fn stop_updaters(stop: &AtomicBool, handles: Vec<std::thread::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("updater");
    }
}

/// Restructures `db`'s table of `rows` records through `transform` while `threads`
/// updaters keep writing it; returns how the restructure ended.
fn restructure_under_updaters(
    db: &Database,
    rows: i64,
    threads: u64,
    transform: impl Into<Transform>,
    options: RestructureOptions,
) -> Result<RestructureReport, RestructureError> {
    let (stop, handles) = updaters(db, threads, rows);
    let outcome = start(db, TABLE, transform, options).expect("start").wait();
    stop_updaters(&stop, handles);
    outcome
}

#[test]
fn non_convergence_is_detected() {
    let db = setup(2_000);
    // A slow row function makes every round long enough for the updaters to dirty
    // as many records as it syncs.
    let slow = Transform::Custom {
        target: common::schema(),
        map: Arc::new(|r: &[Value]| {
            std::thread::sleep(Duration::from_micros(20));
            Ok(r.to_vec())
        }),
    };
    let outcome = restructure_under_updaters(
        &db,
        2_000,
        2,
        slow,
        RestructureOptions {
            stall_max: Duration::ZERO,
            stall_rounds: 3,
            on_non_convergence: NonConvergence::Abort,
            duty_cycle: 1.0,
            ..RestructureOptions::default()
        },
    );
    match outcome {
        Err(RestructureError::NotConverging {
            rounds, history, ..
        }) => {
            assert!(rounds >= 3);
            assert!(history > 0);
        }
        other => panic!("expected NotConverging, got {other:?}"),
    }
}

#[test]
fn throttled_rounds_are_bounded_recorded_and_lead_to_the_switch() {
    let db = setup(20_000);
    // Throttle from the first round that does not fit: held rounds happen for sure.
    let report = restructure_under_updaters(
        &db,
        20_000,
        2,
        add_column(),
        RestructureOptions {
            stall_max: Duration::from_millis(2),
            stall_rounds: 0,
            on_non_convergence: NonConvergence::ThrottleWriters,
            verify: true,
            ..RestructureOptions::default()
        },
    )
    .expect("converges by throttling");
    assert_eq!(report.mismatches, Some(0));
    let throttled: Vec<_> = report
        .holds
        .iter()
        .filter(|h| h.kind == HoldKind::ThrottledRound)
        .collect();
    assert!(!throttled.is_empty(), "{:?}", report.holds);
    assert!(throttled
        .iter()
        .all(|h| matches!(h.end, HoldEnd::RoundDone | HoldEnd::OutOfTime)));
    assert_eq!(report.holds.last().map(|h| h.end), Some(HoldEnd::Switched));
    assert_eq!(
        report.holds_total,
        report.holds.iter().map(|h| h.duration).sum::<Duration>()
    );
    assert!(report.hold_max <= report.holds_total);
}

#[test]
fn a_switch_that_cannot_fit_its_bound_lets_writers_go_every_time() {
    let db = setup(2_000);
    // No hold can end within a zero bound: every attempt lets writers go again.
    let outcome = restructure_under_updaters(
        &db,
        2_000,
        1,
        add_column(),
        RestructureOptions {
            stall_max: Duration::ZERO,
            on_non_convergence: NonConvergence::KeepGoing,
            rounds_max: 3,
            ..RestructureOptions::default()
        },
    );
    match outcome {
        Err(RestructureError::NotConverging { .. } | RestructureError::SwitchPostponed { .. }) => {}
        other => panic!("expected the restructure to give up, got {other:?}"),
    }
    // Writers were never stopped for good: the table serves.
    let s = db.session(SessionInfo::default());
    s.update_columns(TABLE, &Key::from(1), &[("balance", Value::Int(3))])
        .expect("writes still work");
}

#[test]
fn a_primary_key_change_with_collisions_names_both_records() {
    let db = setup(100);
    let s = db.session(SessionInfo::default());
    s.update_columns(TABLE, &Key::from(10), &[("code", "1000020".into())])
        .expect("collide with id 20");
    let plan = plans().swap_remove(3).1;
    match start(&db, TABLE, plan, RestructureOptions::default())
        .expect("start")
        .wait()
    {
        Err(RestructureError::DuplicateKey {
            key,
            rid,
            other_rid,
            ..
        }) => {
            assert_eq!(key, Key::from(1_000_020));
            let t = db.table(TABLE).expect("t");
            let mut rids = [rid, other_rid];
            rids.sort();
            let mut expected = [
                t.get_with_rid(&Key::from(10)).expect("10").0,
                t.get_with_rid(&Key::from(20)).expect("20").0,
            ];
            expected.sort();
            assert_eq!(rids, expected);
        }
        other => panic!("expected DuplicateKey, got {other:?}"),
    }
}

#[test]
fn a_panicking_row_function_poisons_the_restructure_not_the_table() {
    let db = setup(1_000);
    let old_id = db.table(TABLE).expect("t").id();
    let transform = Transform::Custom {
        target: common::schema(),
        map: Arc::new(|r: &[Value]| {
            if r[0] == Value::Int(500) {
                panic!("row function bug at 500");
            }
            Ok(r.to_vec())
        }),
    };
    match start(&db, TABLE, transform, RestructureOptions::default())
        .expect("start")
        .wait()
    {
        Err(RestructureError::Poisoned { detail, .. }) => {
            assert!(detail.contains("500"), "{detail}")
        }
        other => panic!("expected Poisoned, got {other:?}"),
    }
    assert_old_table_serves(&db, old_id);
}

#[test]
fn a_row_function_with_its_own_schema() {
    let db = setup(1_000);
    let target = Schema::new(
        vec![
            Column::new("id", ColumnType::Int),
            Column::new("label", ColumnType::Text),
        ],
        &["id"],
    )
    .expect("schema");
    let transform = Transform::Custom {
        target,
        map: Arc::new(|r: &[Value]| {
            let name = r[1].as_text().ok_or("name is text")?;
            Ok(vec![r[0].clone(), format!("{name}:{}", r[2]).into()])
        }),
    };
    start(&db, TABLE, transform, RestructureOptions::default())
        .expect("start")
        .wait()
        .expect("switched");
    let s = db.session(SessionInfo::default());
    let r = s.get(TABLE, &Key::from(9)).expect("get").expect("row");
    assert_eq!(r.to_vec(), vec![Value::Int(9), "n9:100".into()]);
}

#[test]
fn invalid_plans_fail_before_anything_starts() {
    let db = setup(10);
    let plan = Plan::new(vec![Step::ChangeType {
        column: "balance".into(),
        conversion: Conversion::TextToInt,
    }]);
    match start(&db, TABLE, plan, RestructureOptions::default()) {
        Err(RestructureError::InvalidPlan { column, .. }) => assert_eq!(column, "balance"),
        other => panic!("expected InvalidPlan, got {:?}", other.map(|_| ())),
    }
    assert!(!db.table(TABLE).expect("t").has_write_observer());
}

#[test]
fn progress_pause_resume_and_rate_limit() {
    let db = setup(30_000);
    let h = start(
        &db,
        TABLE,
        add_column(),
        RestructureOptions {
            rate_limit_rows_per_s: Some(50_000),
            chunk_rows: 500,
            ..RestructureOptions::default()
        },
    )
    .expect("start");
    wait_for_phase(&h, Phase::Copying);
    wait_for("the first copied rows", Duration::from_secs(30), || {
        h.progress().rows_copied > 0
    });
    let p = h.progress();
    assert_eq!(p.rows_total, 30_000);
    // At 50K rows/s the copy takes 0.6 s; the pause below lands well before its end.
    assert!(p.rows_copied < 30_000, "{p:?}");
    assert!(p.eta.is_some());
    h.pause();
    wait_for(
        "the worker to stop at the pause",
        Duration::from_secs(30),
        || h.progress().paused,
    );
    let paused_at = h.progress().rows_copied;
    // Stopped: nothing may move, however long it stays paused.
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(
        h.progress().rows_copied,
        paused_at,
        "no copying while paused"
    );
    h.resume();
    h.set_rate_limit(None);
    let report = h.wait().expect("finishes");
    assert_eq!(report.rows_copied, 30_000);
}
