//! A restructure that switches on command (what a backup needs to switch at its
//! primary's point of the stream): converged, it keeps the new table in step under
//! live writers until told; a command given early switches as soon as it converges;
//! an abort while waiting leaves the old table serving.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{plans, setup, wait_for_phase, Writers, TABLE};
use kirikae_restructure::{
    start, Phase, Plan, RestructureError, RestructureHandle, RestructureOptions, Transform,
};
use kirikae_testkit::wait_for;

const ROWS: i64 = 20_000;

fn add_column() -> Plan {
    plans().swap_remove(0).1
}

/// A table of [`ROWS`] under two writers, being given a column by a restructure
/// that switches on command, with an inspector that records whether new =
/// plan(old) at the switch.
struct OnCommand {
    db: kirikae_engine::Database,
    old_id: u64,
    writers: Writers,
    agreed: Arc<AtomicBool>,
    handle: RestructureHandle,
}

fn on_command(writers_seed: u64) -> OnCommand {
    on_command_with(writers_seed, RestructureOptions::default().rounds_max)
}

fn on_command_with(writers_seed: u64, rounds_max: u32) -> OnCommand {
    let db = setup(ROWS);
    let old_id = db.table(TABLE).unwrap().id();
    let writers = Writers::start(&db, 2, ROWS, writers_seed);
    let plan = add_column();
    let agreed = Arc::new(AtomicBool::new(false));
    let options = RestructureOptions {
        switch_on_command: true,
        duty_cycle: 1.0,
        // Two writer threads share the two cores with the restructure.
        stall_max: Duration::from_millis(20),
        inspect_at_switch: Some(common::inspector(&plan, &agreed)),
        rounds_max,
        ..RestructureOptions::default()
    };
    let handle = start(&db, TABLE, plan, options).unwrap();
    OnCommand {
        db,
        old_id,
        writers,
        agreed,
        handle,
    }
}

#[test]
fn converged_it_keeps_in_step_under_writers_until_told_then_switches_to_plan_of_old() {
    let OnCommand {
        db,
        old_id,
        writers,
        agreed,
        handle: h,
    } = on_command(5);
    wait_for_phase(&h, Phase::AwaitingSwitch);
    // Writers go on for a while; nothing switches.
    let at = writers.committed();
    wait_for(
        "writers to commit while it waits",
        Duration::from_secs(30),
        || writers.committed() > at + 2_000,
    );
    assert_eq!(h.progress().phase, Phase::AwaitingSwitch);
    assert_eq!(db.table(TABLE).unwrap().id(), old_id, "not switched yet");
    h.switch_now();
    let report = h.wait().unwrap();
    writers.stop();
    assert!(
        agreed.load(Ordering::SeqCst),
        "new table != plan(old) at the switch"
    );
    assert_ne!(db.table(TABLE).unwrap().id(), old_id, "switched");
    assert!(report.switch_awaited > Duration::ZERO, "{report:?}");
}

/// Waiting is not failing to converge: a backup's copy may wait for its primary's
/// switch for longer than `rounds_max` rounds (the primary's own switch under load
/// took seconds), and it was failing there with `NotConverging` while the primary
/// switched.
#[test]
fn waiting_for_the_command_longer_than_rounds_max_rounds_is_not_a_failure_to_converge() {
    let rounds_max = 20;
    let OnCommand {
        db,
        old_id,
        writers,
        agreed,
        handle: h,
    } = on_command_with(8, rounds_max);
    wait_for_phase(&h, Phase::AwaitingSwitch);
    wait_for("rounds past the bound", Duration::from_secs(60), || {
        h.is_finished() || h.progress().round > 3 * rounds_max
    });
    assert_eq!(h.progress().phase, Phase::AwaitingSwitch, "still waiting");
    h.switch_now();
    h.wait().unwrap();
    writers.stop();
    assert!(agreed.load(Ordering::SeqCst));
    assert_ne!(db.table(TABLE).unwrap().id(), old_id);
}

#[test]
fn a_command_given_before_convergence_switches_as_soon_as_it_converges() {
    let OnCommand {
        db,
        old_id,
        writers,
        agreed,
        handle: h,
    } = on_command(6);
    h.switch_now();
    h.wait().unwrap();
    writers.stop();
    assert!(agreed.load(Ordering::SeqCst));
    assert_ne!(db.table(TABLE).unwrap().id(), old_id);
}

#[test]
fn an_abort_while_it_waits_for_the_command_leaves_the_old_table_serving() {
    let OnCommand {
        db,
        old_id,
        writers,
        agreed,
        handle: h,
    } = on_command(7);
    wait_for_phase(&h, Phase::AwaitingSwitch);
    h.abort();
    match h.wait() {
        Err(RestructureError::Aborted { phase, .. }) => assert_eq!(phase, Phase::AwaitingSwitch),
        other => panic!("expected an abort, got {other:?}"),
    }
    let at = writers.committed();
    wait_for("writers to go on", Duration::from_secs(30), || {
        writers.committed() > at + 100
    });
    writers.stop();
    let now = db.table(TABLE).unwrap();
    assert_eq!(now.id(), old_id, "the old table serves");
    assert!(!now.has_write_observer(), "the lock history was removed");
    assert!(!agreed.load(Ordering::SeqCst), "never switched");
}

/// A replica told twice that a restructure of a table began (the first start was
/// rolled back on the primary after the replica took it) runs the newer one.
#[test]
fn a_replica_told_of_a_second_start_replaces_the_first() {
    use kirikae_engine::CatalogEvent;
    use kirikae_restructure::{Announcement, Replica};
    let db = setup(2_000);
    let replica = Replica::new(RestructureOptions::default());
    let begun = CatalogEvent::Announced {
        payload: Announcement::Begun {
            plan: Some(add_column()),
        }
        .encode(),
    };
    replica.apply(&db, TABLE, &begun).unwrap();
    replica.apply(&db, TABLE, &begun).unwrap();
    assert_eq!(replica.running(), vec![TABLE.to_owned()]);
    let target = Transform::Plan(add_column())
        .compile(TABLE, &common::schema())
        .unwrap()
        .target()
        .clone();
    replica
        .apply(
            &db,
            TABLE,
            &CatalogEvent::Switched {
                schema: target.clone(),
            },
        )
        .unwrap();
    assert!(replica.running().is_empty());
    assert_eq!(db.table(TABLE).unwrap().schema().as_ref(), &target);
}
