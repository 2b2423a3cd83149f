//! Shared harness for restructure tests: an `acct` table and writer threads that run
//! multi-record transactions (updates, deletes, re-inserts that reuse RIDs, inserts,
//! rollbacks) until told to stop.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use kirikae_engine::{Column, ColumnType, Database, EngineError, Key, Schema, SessionInfo, Value};
use kirikae_restructure::{
    tables_agree, Conversion, Phase, Plan, RestructureHandle, Step, Strategy, SwitchInspector,
    Transform,
};

pub const TABLE: &str = "acct";

/// The strategy a property case drew: the journal baseline or the lock history.
pub fn strategy(journal: bool) -> Strategy {
    if journal {
        Strategy::Journal
    } else {
        Strategy::LockHistory
    }
}

/// id (int, key), name (text), balance (int), code (numeric text, unique).
pub fn schema() -> Schema {
    Schema::new(
        vec![
            Column::new("id", ColumnType::Int),
            Column::new("name", ColumnType::Text),
            Column::new("balance", ColumnType::Int),
            Column::new("code", ColumnType::Text),
        ],
        &["id"],
    )
    .expect("schema")
}

pub fn row(id: i64, balance: i64) -> Vec<Value> {
    vec![
        id.into(),
        format!("n{id}").into(),
        balance.into(),
        format!("{}", 1_000_000 + id).into(),
    ]
}

/// A row for record `id` in whatever shape the table has now (the plans of these tests
/// rename, drop, add and retype columns): what an application upgraded with the schema
/// would write.
pub fn row_for(schema: &Schema, id: i64, balance: i64) -> Vec<Value> {
    schema
        .columns()
        .iter()
        .map(|c| match (c.name.as_str(), c.ty) {
            ("id", _) => Value::Int(id),
            ("name", _) => Value::from(format!("n{id}")),
            ("balance" | "credit", _) => Value::Int(balance),
            ("code", ColumnType::Int) => Value::Int(1_000_000 + id),
            ("code", _) => Value::from(format!("{}", 1_000_000 + id)),
            _ => c.fill_value().unwrap_or(Value::Null),
        })
        .collect()
}

/// The balance column's current name.
pub fn balance_column(schema: &Schema) -> &'static str {
    if schema.column_index("credit").is_some() {
        "credit"
    } else {
        "balance"
    }
}

/// The key of record `id` in the table's current shape.
pub fn key_for(schema: &Schema, id: i64) -> Key {
    schema.key_of(&row_for(schema, id, 0))
}

pub fn setup(rows: i64) -> Database {
    let db = Database::with_config(kirikae_engine::EngineConfig {
        lock_timeout: std::time::Duration::from_millis(200),
    });
    let t = Arc::new(kirikae_engine::Table::new(TABLE, schema()));
    for id in 0..rows {
        t.install(row(id, 100)).expect("load");
    }
    db.add_table(t).expect("publish");
    db
}

/// The plans every restructure test can pick from, by name.
pub fn plans() -> Vec<(&'static str, Plan)> {
    vec![
        (
            "add-column",
            Plan::new(vec![Step::AddColumn {
                column: Column::new("tier", ColumnType::Int).default_value(1),
            }]),
        ),
        (
            "drop-rename",
            Plan::new(vec![
                Step::DropColumn {
                    name: "name".into(),
                },
                Step::RenameColumn {
                    from: "balance".into(),
                    to: "credit".into(),
                },
            ]),
        ),
        (
            "code-to-int",
            Plan::new(vec![Step::ChangeType {
                column: "code".into(),
                conversion: Conversion::TextToInt,
            }]),
        ),
        (
            "key-to-code",
            Plan::new(vec![
                Step::ChangeType {
                    column: "code".into(),
                    conversion: Conversion::TextToInt,
                },
                Step::ChangePrimaryKey {
                    columns: vec!["code".into()],
                },
            ]),
        ),
        ("reorganize", Plan::new(vec![Step::Reorganize])),
    ]
}

/// What the writers did.
#[derive(Default)]
pub struct Counts {
    pub committed: AtomicU64,
    pub rolled_back: AtomicU64,
    pub retried: AtomicU64,
}

pub struct Writers {
    pub stop: Arc<AtomicBool>,
    pub counts: Arc<Counts>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    /// `threads` writers over ids `0..rows`; thread `t` inserts new ids above
    /// `rows + t * 1_000_000`.
    pub fn start(db: &Database, threads: u64, rows: i64, seed: u64) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let threads = (0..threads)
            .map(|t| {
                let (db, stop, counts) = (db.clone(), Arc::clone(&stop), Arc::clone(&counts));
                std::thread::spawn(move || {
                    writer(&db, t, rows, seed ^ ((t + 1) * 0x9e37_79b9), &stop, &counts)
                })
            })
            .collect();
        Writers {
            stop,
            counts,
            threads,
        }
    }

    /// Transactions committed so far.
    pub fn committed(&self) -> u64 {
        self.counts.committed.load(Ordering::Relaxed)
    }

    pub fn stop(self) -> Arc<Counts> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("writer thread");
        }
        self.counts
    }
}

fn writer(db: &Database, t: u64, rows: i64, seed: u64, stop: &AtomicBool, counts: &Counts) {
    let s = db.session(SessionInfo::new(format!("w{t}"), "test", None));
    let mut rng = kirikae_testkit::Rng::new(seed);
    let mut fresh = rows + (t as i64 + 1) * 1_000_000;
    while !stop.load(Ordering::Relaxed) {
        // Re-read the shape each transaction; a switch in between shows up as a schema
        // error, and the transaction is retried in the new shape.
        let schema = db.table(TABLE).expect("table").schema().clone();
        let mut tx = s.begin();
        let ops = 1 + rng.below(3);
        let mut result: Result<(), EngineError> = Ok(());
        for _ in 0..ops {
            let id = (rng.below(rows as u64)) as i64;
            let key = key_for(&schema, id);
            let balance = Value::Int((rng.below(1000)) as i64);
            let step = match rng.below(10) {
                0..=5 => tx
                    .update_columns(TABLE, &key, &[(balance_column(&schema), balance)])
                    .map(|_| ()),
                // Delete then re-insert the same key: the RID is freed at commit and
                // may be reused by another insert.
                6 => tx.delete(TABLE, &key).map(|_| ()),
                7 => tx.insert(TABLE, row_for(&schema, id, 7)).map(|_| ()),
                8 => {
                    fresh += 1;
                    tx.insert(TABLE, row_for(&schema, fresh, 1)).map(|_| ())
                }
                _ => tx.get_for_update(TABLE, &key).map(|_| ()),
            };
            match step {
                Ok(())
                | Err(EngineError::KeyNotFound { .. } | EngineError::DuplicateKey { .. }) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        match result {
            Ok(()) if rng.below(5) == 0 => {
                tx.rollback();
                counts.rolled_back.fetch_add(1, Ordering::Relaxed);
            }
            Ok(()) => {
                tx.commit().expect("commit");
                counts.committed.fetch_add(1, Ordering::Relaxed);
            }
            Err(
                e @ (EngineError::WrongArity { .. }
                | EngineError::TypeMismatch { .. }
                | EngineError::UnknownColumn { .. }),
            ) if !Arc::ptr_eq(db.table(TABLE).expect("table").schema(), &schema)
                || e.is_retryable() =>
            {
                tx.rollback();
                counts.retried.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.is_retryable() => {
                tx.rollback();
                counts.retried.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("writer {t}: {e}"),
        }
    }
}

/// Waits (30 s at most) until `h` is in `phase`; fails if it finishes first.
pub fn wait_for_phase(h: &RestructureHandle, phase: Phase) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while h.progress().phase != phase {
        assert!(
            std::time::Instant::now() < until,
            "phase {phase:?} never reached: {:?}",
            h.progress()
        );
        assert!(!h.is_finished(), "finished before {phase:?}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// An inspector for `RestructureOptions::inspect_at_switch`: at the switch, sets
/// `agreed` to whether the new table holds exactly `plan` applied to the old one.
pub fn inspector(plan: &Plan, agreed: &Arc<AtomicBool>) -> SwitchInspector {
    let compiled = Transform::Plan(plan.clone())
        .compile(TABLE, &schema())
        .expect("plan");
    let agreed = Arc::clone(agreed);
    Arc::new(move |old, new| {
        let ok = tables_agree(old, new, |r| compiled.apply(r).ok());
        agreed.store(ok, Ordering::SeqCst);
    })
}
