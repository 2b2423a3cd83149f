//! Replicated restructures when something goes wrong: an abort on the primary, a
//! backup down or restarted in the middle, a failover in the middle, a backup too
//! slow for a sync catalog change. The table never ends switched on one node only.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use kirikae::engine::{Key, SessionInfo, Value};
use kirikae::restructure::{start, RestructureError, RestructureOptions};
use kirikae::RestructureReplica;
use kirikae_testkit::wait_for;

/// An abort on the primary is announced; the backup aborts its own restructure of
/// the table, which keeps serving with its old schema on both nodes.
#[test]
fn an_abort_on_the_primary_aborts_the_backups_restructure() {
    let handler = replica_handler();
    let pair = pair_with(&ddl_rules("sync"), Some(handler.clone()));
    let old_schema = pair.db.table(T).unwrap().schema().as_ref().clone();
    // Slow enough to be aborted while it copies.
    let h = slow_restructure(&pair.db, 1_000);
    // Sync: the backup started its own before `start` returned.
    assert_eq!(handler.0.running(), vec![T.to_owned()]);
    h.abort();
    assert!(matches!(h.wait(), Err(RestructureError::Aborted { .. })));
    wait_for(
        "the backup to abort its own",
        Duration::from_secs(10),
        || handler.0.running().is_empty(),
    );
    let s = pair.db.session(SessionInfo::default());
    s.update_columns(T, &Key::from(1), &[("v", Value::Int(-1))])
        .unwrap();
    assert!(pair.primary.wait_caught_up(Duration::from_secs(10)));
    assert_eq!(
        pair.replica.table(T).unwrap().schema().as_ref(),
        &old_schema
    );
    assert_same(&pair);
    pair.stop();
}

/// A backup down while the primary restructures gets the restructure from the
/// difference file, in order: its plan, the transactions around it, its switch.
#[test]
fn a_backup_down_during_the_restructure_gets_it_in_order_from_the_difference_file() {
    let pair = pair(&ddl_rules("sync"));
    let Pair {
        db,
        primary,
        backup,
        dirs,
        ..
    } = pair;
    let addr = backup.local_addr();
    assert!(primary.wait_caught_up(Duration::from_secs(10)));
    stop_backup(&primary, backup);
    let writers = Writers::start(&db);
    start(&db, T, add_column(), RestructureOptions::default())
        .unwrap()
        .wait()
        .unwrap();
    writers.stop_after(200);
    // Restarted from its log over a fresh database, it is caught up.
    let (replica, _handler, backup) = restart_backup(addr, dirs.0.path());
    assert_equal_and_stop(primary, &db, &replica, backup);
}

/// A backup restarted after the switch, from its log alone (no checkpoint since the
/// restructure began), runs the restructure again as it replays the log: the plan,
/// the transactions around it, the switch at the primary's sequence. Without it,
/// the replayed switch found no handler and every later write of the table was
/// refused (the demo lost the new schema that way).
#[test]
fn a_backup_restarted_after_the_switch_replays_the_restructure_from_its_log() {
    let pair = pair_tuned(&ddl_rules("sync"), Some(replica_handler()), |c| {
        c.access_log.checkpoint_bytes = u64::MAX;
    });
    let Pair {
        db,
        primary,
        backup,
        dirs,
        ..
    } = pair;
    let addr = backup.local_addr();
    // A backup that joined by resync checkpoints once the copy is in: that one
    // comes before the restructure, not after.
    assert!(primary.wait_caught_up(Duration::from_secs(10)));
    wait_for("the join's checkpoint", Duration::from_secs(30), || {
        let stats = backup.status().stats;
        stats.checkpoints >= stats.resyncs
    });
    let checkpoints = backup.status().stats.checkpoints;
    let writers = Writers::start(&db);
    start(&db, T, add_column(), RestructureOptions::default())
        .unwrap()
        .wait()
        .unwrap();
    writers.stop_after(200);
    assert!(primary.wait_caught_up(Duration::from_secs(10)));
    assert_eq!(
        backup.status().stats.checkpoints,
        checkpoints,
        "no checkpoint since it began: the log replays all of it"
    );
    backup.stop().unwrap();
    let (replica, _handler, backup) = restart_backup(addr, dirs.0.path());
    let switched = |changes: &[kirikae::replicate::CatalogChangeAt]| {
        changes
            .iter()
            .rev()
            .find(|c| c.table == T && c.change == "switched")
            .map(|c| (c.seq, c.replayed))
    };
    let primary_switch = switched(&primary.catalog_changes()).expect("the primary switched");
    let stats = backup.status().stats;
    let replayed: Vec<_> = stats.catalog_changes.iter().cloned().collect();
    assert_eq!(
        switched(&replayed),
        Some((primary_switch.0, true)),
        "{replayed:?}"
    );
    assert_eq!(stats.rejected, 0, "{stats:?}");
    // Writes after the restart apply to the new table there too.
    let s = db.session(SessionInfo::default());
    for k in 1..=50 {
        s.update_columns(T, &Key::from(k), &[("v", Value::Int(-k))])
            .unwrap();
    }
    assert_equal_and_stop(primary, &db, &replica, backup);
}

/// A backup restarted in the middle of a restructure, from a checkpoint taken after
/// the restructure began (so the log it replays does not start it again), runs the
/// plan when the primary announces its switch, and ends like the primary.
#[test]
fn a_backup_restarted_mid_restructure_from_a_later_checkpoint_still_switches() {
    let pair = pair_tuned(&ddl_rules("sync"), Some(replica_handler()), |c| {
        c.access_log.checkpoint_bytes = 64 << 10;
    });
    let Pair {
        db,
        primary,
        backup,
        dirs,
        ..
    } = pair;
    let addr = backup.local_addr();
    let writers = Writers::start(&db);
    let h = slow_restructure(&db, 5_000);
    // Sync: the backup runs it already. A checkpoint once everything up to the
    // announcement is applied (the writers' log grows past `checkpoint_bytes`), so
    // that it holds the announcement; then a restart.
    let begun = primary
        .catalog_changes()
        .iter()
        .find(|c| c.table == T && c.change == "announced")
        .and_then(|c| c.seq)
        .expect("the start was sequenced");
    wait_for("the announcement applied", Duration::from_secs(30), || {
        backup.status().last_seq > begun
    });
    // Two more: the first may have begun before the announcement was applied (and
    // replay from before it); the second began after the first ended.
    let before = backup.status().stats.checkpoints;
    wait_for(
        "a checkpoint begun after it",
        Duration::from_secs(30),
        || backup.status().stats.checkpoints > before + 1,
    );
    assert!(!h.is_finished(), "the restructure ended before the restart");
    backup.stop().unwrap();
    let (replica, handler, backup) = restart_backup(addr, dirs.0.path());
    assert!(
        handler.0.running().is_empty(),
        "the replay does not start it again: it began before the checkpoint"
    );
    h.wait().unwrap();
    writers.stop_after(200);
    assert_equal_and_stop(primary, &db, &replica, backup);
}

/// A backup promoted while it runs a restructure for its primary aborts it: the
/// switch never reached it, and the old primary, fenced, cannot switch either. The
/// table keeps its old schema on both nodes, never half of each.
#[test]
fn a_restructure_running_at_failover_is_aborted_on_both_nodes() {
    let handler = replica_handler();
    let pair = pair_with(&ddl_rules("sync"), Some(handler.clone()));
    let old_schema = pair.db.table(T).unwrap().schema().as_ref().clone();
    let h = slow_restructure(&pair.db, 2_000);
    assert_eq!(handler.0.running(), vec![T.to_owned()]);
    pair.backup.promote().unwrap();
    assert!(handler.0.running().is_empty(), "aborted at the promotion");
    assert_eq!(
        pair.replica.table(T).unwrap().schema().as_ref(),
        &old_schema
    );
    // The old primary cannot switch: its switch is a sync catalog change nobody
    // takes any more.
    assert!(h.wait().is_err(), "the old primary switched alone");
    assert_eq!(pair.db.table(T).unwrap().schema().as_ref(), &old_schema);
    pair.stop();
}

/// With a sync `ddl` rule, a backup whose copy converges later than the primary's
/// sync timeout never leaves the table switched on one node only. With
/// `when_peer_down = "fail"` the primary's restructure fails before it holds its
/// writers and the backup abandons its own: old schema on both. With `continue`
/// the primary goes on without it and the backup, caught up, switches at the same
/// point of the stream: new schema on both.
#[test]
fn a_backup_too_slow_to_converge_ends_with_the_primarys_schema_either_way() {
    for when_down in ["fail", "continue"] {
        let slow = Arc::new(RestructureReplica::new(RestructureOptions {
            rate_limit_rows_per_s: Some(2_000),
            ..RestructureOptions::default()
        }));
        let rules = format!("{}when_peer_down = \"{when_down}\"\n", ddl_rules("sync"));
        let pair = pair_with(&rules, Some(slow.clone()));
        let old_id = pair.db.table(T).unwrap().id();
        let outcome = start(&pair.db, T, add_column(), RestructureOptions::default())
            .unwrap()
            .wait();
        let switched = pair.db.table(T).unwrap().id() != old_id;
        assert_eq!(switched, outcome.is_ok());
        assert_eq!(
            switched,
            when_down == "continue",
            "{when_down}: {outcome:?}"
        );
        wait_for(
            "the backup to settle its own",
            Duration::from_secs(30),
            || slow.0.running().is_empty(),
        );
        let s = pair.db.session(SessionInfo::default());
        s.update_columns(T, &Key::from(1), &[("v", Value::Int(-1))])
            .unwrap();
        assert!(
            pair.primary.wait_caught_up(Duration::from_secs(30)),
            "{when_down}: {:?}",
            pair.primary.metrics()
        );
        assert_same(&pair);
        pair.stop();
    }
}

/// A table published with rows (a bulk load) while replicating: its rows are not in
/// the stream, so the primary resyncs the backup, which then holds them (before,
/// the backup got the table empty and nobody said so).
#[test]
fn a_bulk_loaded_table_reaches_the_backup_with_its_rows_by_a_resync() {
    use kirikae::engine::Table;
    use kirikae::replicate::{table_checksum, Event};
    use kirikae_testkit::{kv_row, kv_schema};
    let pair = pair(&ddl_rules("sync"));
    assert!(pair.primary.wait_caught_up(Duration::from_secs(10)));
    let events = pair.primary.events();
    // Those of the pair's start (its backup may have joined by a resync).
    events.try_iter().for_each(drop);
    let resyncs = pair.primary.metrics().resyncs;
    let loaded = Arc::new(Table::new("loaded", kv_schema()));
    for k in 0..2_000 {
        loaded.install(kv_row(k, k * 3)).unwrap();
    }
    pair.db.add_table(loaded).unwrap();
    // Writes go on meanwhile.
    let s = pair.db.session(SessionInfo::default());
    for k in 0..50 {
        s.update_columns(T, &Key::from(k), &[("v", Value::Int(-k))])
            .unwrap();
    }
    wait_for("a resync", Duration::from_secs(30), || {
        events
            .try_iter()
            .any(|e| matches!(e, Event::Resynced { .. }))
    });
    assert!(pair.primary.metrics().resyncs > resyncs);
    assert!(pair.primary.wait_caught_up(Duration::from_secs(30)));
    let (ours, theirs) = (
        pair.db.table("loaded").unwrap(),
        pair.replica.table("loaded").unwrap(),
    );
    assert_eq!(theirs.len(), 2_000);
    assert_eq!(table_checksum(&ours), table_checksum(&theirs));
    assert_same(&pair);
    pair.stop();
}

/// A restructure abandoned while the backup is down, under a sync `ddl` rule that
/// fails while the peer is down: the abandonment is a withdrawal, queued in the
/// difference file all the same, so the backup (restarted from its log, which
/// starts the restructure again) hears it and stops its own (before, it waited for
/// a switch that never came).
#[test]
fn an_abandonment_while_the_backup_is_down_reaches_it_later() {
    let rules = "default = \"async\"\n[[rule]]\nname = \"ddl\"\nkind = \"ddl\"\nmode = \"sync\"\nwhen_peer_down = \"fail\"\n";
    let handler = replica_handler();
    let pair = pair_with(rules, Some(handler.clone()));
    let Pair {
        db,
        primary,
        backup,
        dirs,
        ..
    } = pair;
    let addr = backup.local_addr();
    let old_schema = db.table(T).unwrap().schema().as_ref().clone();
    let h = slow_restructure(&db, 1_000);
    assert_eq!(handler.0.running(), vec![T.to_owned()]);
    stop_backup(&primary, backup);
    h.abort();
    assert!(matches!(h.wait(), Err(RestructureError::Aborted { .. })));
    let (replica, handler, backup) = restart_backup(addr, dirs.0.path());
    wait_for(
        "the restarted backup to abandon its restructure",
        Duration::from_secs(30),
        || handler.0.running().is_empty() && primary.wait_duplex(Duration::ZERO),
    );
    assert_caught_up_and_equal(&primary, &db, &replica);
    assert_eq!(replica.table(T).unwrap().schema().as_ref(), &old_schema);
    primary.shutdown();
    backup.stop().unwrap();
}

/// A restructure begun and switched while an empty backup is being copied (the
/// copy slowed to last a while, writers on): the plan and the switch reach the
/// backup among the transactions it buffers beside the copy, and it ends with
/// the primary's schema and rows.
#[test]
fn a_restructure_during_a_resyncs_copy_reaches_the_backup_in_order() {
    use kirikae::replicate::{Backup, Event, Replicator};
    use kirikae_testkit::{kv_database, kv_row};
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Filled before replication starts: the backup must be copied.
    let db = kv_database(&[T]);
    let s = db.session(SessionInfo::default());
    for k in 0..ROWS {
        s.insert(T, kv_row(k, k)).unwrap();
    }
    let replica = kv_database(&[T]);
    let backup = Backup::start(
        replica.clone(),
        "127.0.0.1:0",
        backup_config(dirs.0.path(), Some(replica_handler())),
    )
    .unwrap();
    let mut config = replicator_config(backup.local_addr(), &ddl_rules("sync"), dirs.1.path());
    // A few seconds for the table.
    config.link.copy_bytes_per_s = 30_000;
    let primary = Replicator::start(&db, config).unwrap();
    wait_for("the copy to start", Duration::from_secs(10), || {
        primary.metrics().copied_rows > 0
    });
    let writers = Writers::start(&db);
    start(&db, T, add_column(), RestructureOptions::default())
        .unwrap()
        .wait()
        .unwrap();
    assert!(
        primary.metrics().copied_rows < ROWS as u64,
        "the restructure ended after the copy: {:?}",
        primary.metrics()
    );
    writers.stop_after(200);
    let events = primary.events();
    wait_for("the resync", Duration::from_secs(60), || {
        events
            .try_iter()
            .any(|e| matches!(e, Event::Resynced { .. }))
            || primary.wait_duplex(Duration::ZERO)
    });
    assert_equal_and_stop(primary, &db, &replica, backup);
}
