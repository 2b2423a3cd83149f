//! Restructure micro-benchmarks: the write path with the lock history on vs off, and
//! the restructure rate per plan on an idle 200,000-row table (one core, no
//! foreground load; phase 1 dominates).

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kirikae::engine::{Database, SessionInfo, Value};
use kirikae::restructure::{start, LockHistory, RestructureOptions};
use kirikae_workload::workload::{self, KeyChooser, SUBSCRIBER_TABLE};

fn write_path(c: &mut Criterion) {
    const ROWS: u64 = 100_000;
    let db = Database::new();
    let table = workload::load_subscribers(&db, ROWS, &|_| {}).expect("load");
    let keys = KeyChooser::uniform(ROWS).sample(1 << 16, 5);
    let session = db.session(SessionInfo::new("bench", "bench", None));
    let mut group = c.benchmark_group("write_path");
    group.throughput(Throughput::Elements(1));
    for history in [false, true] {
        table.set_write_observer(history.then(|| Arc::new(LockHistory::for_rid_bound(ROWS)) as _));
        let mut i = 0usize;
        let name = if history {
            "update_history_on"
        } else {
            "update_history_off"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let changes = [("balance", Value::Int(i as i64))];
                session
                    .update_columns(SUBSCRIBER_TABLE, &keys[i & (keys.len() - 1)], &changes)
                    .expect("update");
            })
        });
    }
    table.set_write_observer(None);
    group.finish();
}

fn copy_rate(c: &mut Criterion) {
    const ROWS: u64 = 200_000;
    let mut group = c.benchmark_group("restructure_idle_table");
    group.throughput(Throughput::Elements(ROWS));
    group.sample_size(10);
    for plan_name in ["demo", "add-column", "msisdn-to-int", "reorganize"] {
        let plan = workload::subscriber_plan(plan_name).expect("plan");
        group.bench_function(plan_name, |b| {
            b.iter_batched(
                || {
                    let db = Database::new();
                    workload::load_subscribers(&db, ROWS, &|_| {}).expect("load");
                    db
                },
                // The database is returned so that dropping it is not timed.
                |db| {
                    let full_speed = RestructureOptions {
                        duty_cycle: 1.0,
                        ..RestructureOptions::default()
                    };
                    let report = start(&db, SUBSCRIBER_TABLE, plan.clone(), full_speed)
                        .expect("start")
                        .wait()
                        .expect("restructure");
                    (db, report)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, write_path, copy_rate);
criterion_main!(benches);
