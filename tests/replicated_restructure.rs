//! Restructures replicate (issue 12): a table restructured online on a replicating
//! primary is restructured on its backup too, by the same plan, online while the
//! backup keeps applying, and switched at the primary's switch in the stream. Over
//! real TCP, under writers, in each mode, for every plan kind. The failure cases
//! are in `replicated_restructure_faults.rs`.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use kirikae::engine::{Column, ColumnType, Database, Value};
use kirikae::replicate::{table_checksum, Backup, Replicator};
use kirikae::restructure::{start, Plan, RestructureError, RestructureOptions, Step, Transform};
use kirikae_testkit::wait_for;

fn restructure_under_writers(rules: &str) {
    let pair = pair(rules);
    let old_id = pair.replica.table(T).unwrap().id();
    let writers = Writers::start(&pair.db);
    let report = start(
        &pair.db,
        T,
        add_column(),
        RestructureOptions {
            stall_max: Duration::from_millis(20),
            ..RestructureOptions::default()
        },
    )
    .unwrap()
    .wait()
    .unwrap_or_else(|e| panic!("{rules}: {e}"));
    writers.stop_after(200);
    assert!(
        pair.primary.wait_caught_up(Duration::from_secs(30)),
        "{rules}: {:?}",
        pair.primary.metrics()
    );
    assert_ne!(
        pair.replica.table(T).unwrap().id(),
        old_id,
        "{rules}: the backup switched"
    );
    assert_same(&pair);
    let m = pair.primary.metrics();
    assert_eq!((m.mismatches, m.apply_errors), (0, 0), "{rules}: {m:?}");
    eprintln!(
        "{rules}: {} rows copied, primary stall {:?}",
        report.rows_copied, report.stall
    );
    pair.stop();
}

#[test]
fn a_restructure_on_the_primary_runs_on_the_backup_and_both_switch_in_each_mode() {
    for mode in ["sync", "ordered", "async"] {
        restructure_under_writers(&ddl_rules(mode));
    }
}

/// A row function is code and cannot be shipped: refused on the primary before it
/// starts while the rules replicate the table's catalog changes, in every mode (an
/// async backup would otherwise refuse it only later, and diverge); allowed when
/// they skip them.
#[test]
fn a_row_function_restructure_is_refused_while_its_catalog_changes_replicate() {
    for mode in ["sync", "ordered", "async", "skip"] {
        let pair = pair(&ddl_rules(mode));
        let schema = pair.db.table(T).unwrap().schema().as_ref().clone();
        let custom = Transform::Custom {
            target: schema,
            map: Arc::new(|row: &[Value]| Ok(row.to_vec())),
        };
        let started = start(&pair.db, T, custom, RestructureOptions::default());
        match (mode, started) {
            ("skip", Ok(h)) => {
                h.wait().unwrap();
            }
            ("skip", Err(e)) => panic!("skip: refused: {e}"),
            (_, Err(RestructureError::Engine(e))) => {
                let text = format!("{e}: {:?}", std::error::Error::source(&e));
                assert!(text.contains("row function"), "{mode}: {text}");
            }
            (_, Err(other)) => panic!("{mode}: unexpected error: {other}"),
            (_, Ok(_)) => panic!("{mode}: a row function restructure started"),
        }
        assert!(pair.replica.table(T).is_ok());
        assert!(pair.primary.wait_caught_up(Duration::from_secs(10)));
        let m = pair.primary.metrics();
        assert_eq!(m.apply_errors, 0, "{mode}: {m:?}");
        assert_same(&pair);
        pair.stop();
    }
}

/// A plan of steps on the `acct` table that keep `k` (the key) and `v` (which the
/// writers update): columns added, renamed and dropped again, a reorganization.
fn random_plan() -> impl proptest::strategy::Strategy<Value = Plan> {
    use proptest::prelude::*;
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(text, rename, drop, reorganize)| {
            let column = if text {
                Column::new("x", ColumnType::Text).default_value("basic")
            } else {
                Column::new("x", ColumnType::Int).nullable()
            };
            let mut steps = vec![Step::AddColumn { column }];
            let mut name = "x".to_owned();
            if rename {
                steps.push(Step::RenameColumn {
                    from: name.clone(),
                    to: "y".into(),
                });
                name = "y".into();
            }
            if drop {
                steps.push(Step::DropColumn { name });
            }
            if reorganize {
                steps.push(Step::Reorganize);
            }
            Plan::new(steps)
        },
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 12,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Any such plan, in any mode, under writers, with the restructure started a
    /// random while into their writes: both nodes end with the same schema and rows.
    #[test]
    fn any_plan_in_any_mode_ends_with_equal_schemas_and_rows(
        plan in random_plan(),
        mode in proptest::sample::select(vec!["sync", "ordered", "async"]),
        lead_commits in 0u64..2_000,
    ) {
        let pair = pair(&ddl_rules(mode));
        let writers = Writers::start(&pair.db);
        wait_for("the writers' lead", Duration::from_secs(30), || {
            writers.committed() >= lead_commits
        });
        start(&pair.db, T, plan.clone(), RestructureOptions::default())
            .unwrap()
            .wait()
            .unwrap_or_else(|e| panic!("{plan:?} ({mode}): {e}"));
        writers.stop_after(100);
        proptest::prop_assert!(pair.primary.wait_caught_up(Duration::from_secs(30)));
        let m = pair.primary.metrics();
        proptest::prop_assert_eq!((m.mismatches, m.apply_errors), (0, 0), "{:?}", m);
        assert_same(&pair);
        pair.stop();
    }
}

/// Every subscriber plan the CLI knows (a column added, a type changed from text
/// to int, a column dropped, one renamed, a reorganization, two steps at once),
/// under the telecom load replicated with a sync `ddl` rule: both nodes end with
/// the same schemas and rows in every table.
#[test]
fn every_subscriber_plan_under_the_telecom_load_ends_equal_on_both_nodes() {
    use kirikae_workload::telecom::{self, Traffic};
    use kirikae_workload::workload::{subscriber_plan, PLAN_NAMES, SUBSCRIBER_TABLE};
    const SUBSCRIBERS: u64 = 20_000;
    for name in PLAN_NAMES {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (db, replica) = (Database::new(), Database::new());
        telecom::create_tables(&db, SUBSCRIBERS).unwrap();
        telecom::create_tables(&replica, SUBSCRIBERS).unwrap();
        let backup = Backup::start(
            replica.clone(),
            "127.0.0.1:0",
            backup_config(dirs.0.path(), Some(replica_handler())),
        )
        .unwrap();
        // The seed-000 mixed policy, catalog changes sync.
        let rules = format!(
            "{}\n[[rule]]\nname = \"ddl\"\nkind = \"ddl\"\nmode = \"sync\"\n",
            include_str!("../replicate/rules/seed000-mixed.toml")
        );
        let config = replicator_config(backup.local_addr(), &rules, dirs.1.path());
        let primary = Replicator::start(&db, config).unwrap();
        assert!(primary.wait_duplex(Duration::from_secs(10)));
        let running = Traffic {
            sessions: 2,
            subscribers: SUBSCRIBERS,
            mix: Default::default(),
            rate: Some(4_000.0),
            seed: 3,
        }
        .start(&db);
        let plan = subscriber_plan(name).unwrap();
        start(&db, SUBSCRIBER_TABLE, plan, RestructureOptions::default())
            .unwrap()
            .wait()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let report = running.stop();
        assert!(report.ops > 0, "{name}");
        assert!(
            primary.wait_caught_up(Duration::from_secs(30)),
            "{name}: {:?}",
            primary.metrics()
        );
        let m = primary.metrics();
        assert_eq!((m.mismatches, m.apply_errors), (0, 0), "{name}: {m:?}");
        for t in telecom::TABLES {
            let (ours, theirs) = (db.table(t).unwrap(), replica.table(t).unwrap());
            assert_eq!(ours.schema(), theirs.schema(), "{name}: {t} schemas");
            assert_eq!(
                table_checksum(&ours),
                table_checksum(&theirs),
                "{name}: {t} rows"
            );
        }
        primary.shutdown();
        backup.stop().unwrap();
    }
}

/// A new primary key, replicated: writers by the old key during the copy, then
/// (the switch on command, once they stopped) reads, updates, inserts and deletes
/// by the new two-column key. The backup switches to the same key at the same point
/// and ends with the same rows.
#[test]
fn a_new_primary_key_replicates_and_later_writes_by_it_apply_on_the_backup() {
    use kirikae::engine::{Key, SessionInfo};
    use kirikae::restructure::Phase;
    let pair = pair(&ddl_rules("sync"));
    let writers = Writers::start(&pair.db);
    let plan = Plan::new(vec![
        Step::AddColumn {
            column: Column::new("note", ColumnType::Text).default_value("-"),
        },
        Step::ChangePrimaryKey {
            columns: vec!["k".into(), "v".into()],
        },
    ]);
    let h = start(
        &pair.db,
        T,
        plan,
        RestructureOptions {
            switch_on_command: true,
            ..RestructureOptions::default()
        },
    )
    .unwrap();
    wait_for("the copy to converge", Duration::from_secs(30), || {
        h.progress().phase == Phase::AwaitingSwitch
    });
    writers.stop();
    h.switch_now();
    h.wait().unwrap();
    let key_columns = |db: &Database| -> Vec<String> {
        let t = db.table(T).unwrap();
        t.schema().primary_key_names().map(str::to_owned).collect()
    };
    let s = pair.db.session(SessionInfo::default());
    for k in 0..20i64 {
        let row = s.get(T, &Key::from(k)).ok().flatten();
        assert!(row.is_none(), "the one-column key no longer finds rows");
        let v = pair
            .db
            .table(T)
            .unwrap()
            .scan(kirikae::engine::Rid(0), usize::MAX)
            .into_iter()
            .map(|(_, r)| r)
            .find(|r| r[0] == Value::Int(k))
            .map(|r| r[1].clone())
            .unwrap();
        let key = Key::new(vec![Value::Int(k), v]);
        s.update_columns(T, &key, &[("note", Value::from(format!("n{k}")))])
            .unwrap();
        if k % 5 == 0 {
            s.delete(T, &key).unwrap();
        }
    }
    s.insert_named(
        T,
        &[
            ("k", Value::Int(1)),
            ("v", Value::Int(-1)),
            ("note", Value::from("same k, other v")),
        ],
    )
    .unwrap();
    assert!(pair.primary.wait_caught_up(Duration::from_secs(30)));
    assert_eq!(key_columns(&pair.db), key_columns(&pair.replica));
    let m = pair.primary.metrics();
    assert_eq!((m.mismatches, m.apply_errors), (0, 0), "{m:?}");
    assert_same(&pair);
    pair.stop();
}
