//! Engine micro-benchmarks on a 100,000-subscriber table: point get, autocommit update,
//! insert, and a 4-update transaction.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kirikae::engine::{Database, SessionInfo, Value};
use kirikae_workload::workload::{self, KeyChooser, SUBSCRIBER_TABLE};

const ROWS: u64 = 100_000;

fn setup() -> (Database, std::sync::Arc<Vec<kirikae::engine::Key>>) {
    let db = Database::new();
    workload::load_subscribers(&db, ROWS, &|_| {}).expect("load");
    (db, KeyChooser::uniform(ROWS).sample(1 << 16, 3))
}

fn engine(c: &mut Criterion) {
    let (db, keys) = setup();
    let session = db.session(SessionInfo::new("bench", "bench", None));
    let mask = keys.len() - 1;
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));

    let mut i = 0usize;
    group.bench_function("point_get", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(session.get(SUBSCRIBER_TABLE, &keys[i & mask]).expect("get"));
        })
    });
    group.bench_function("autocommit_update", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let changes = [("balance", Value::Int(i as i64))];
            session
                .update_columns(SUBSCRIBER_TABLE, &keys[i & mask], &changes)
                .expect("update");
        })
    });
    let mut next = ROWS;
    group.bench_function("insert", |b| {
        b.iter(|| {
            next += 1;
            session
                .insert(SUBSCRIBER_TABLE, workload::subscriber_row(next))
                .expect("insert");
        })
    });
    group.throughput(Throughput::Elements(4));
    group.bench_function("transaction_4_updates", |b| {
        b.iter(|| {
            let mut tx = session.begin();
            for k in 0..4 {
                i = i.wrapping_add(1);
                let changes = [("balance", Value::Int(k))];
                tx.update_columns(SUBSCRIBER_TABLE, &keys[i & mask], &changes)
                    .expect("update");
            }
            tx.commit().expect("commit");
        })
    });
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
