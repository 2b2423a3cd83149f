//! The replication stream's codec, on one shipped transaction of the telecom
//! workload (one update of a subscriber row):
//! - `encode_writes`: what the committing thread does (`Writes::encoded`);
//! - `frame_spliced`: what the link thread then does with those bytes;
//! - `frame_serde`: framing from the operations instead (a transaction replayed
//!   from the difference file), the whole cost before writes were encoded early;
//! - `decode`: what the backup's serving thread does with the frame.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kirikae::engine::Operation;
use kirikae::replicate::{
    encode, encode_into, Epoch, FrameDecoder, Message, Mode, Seq, Writes, MAX_FRAME_BYTES,
};
use kirikae_workload::workload::{subscriber_key, subscriber_row, SUBSCRIBER_TABLE};
use std::hint::black_box;

fn update() -> Vec<Operation> {
    vec![Operation::Update {
        table: SUBSCRIBER_TABLE.into(),
        key: subscriber_key(42_042),
        row: subscriber_row(42_042).into(),
    }]
}

fn ship(operations: Writes) -> Message {
    Message::Ship {
        seq: Seq(1_234_567),
        epoch: Epoch(3),
        mode: Mode::Async,
        operations,
        verify: false,
    }
}

fn codec(c: &mut Criterion) {
    let spliced = ship(Writes::encoded(update()));
    let plain = ship(Writes::new(update()));
    let frame = encode(&spliced, MAX_FRAME_BYTES).unwrap();
    assert_eq!(frame, encode(&plain, MAX_FRAME_BYTES).unwrap());
    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_writes", |b| {
        b.iter_batched(update, Writes::encoded, BatchSize::SmallInput)
    });
    for (name, message) in [("frame_spliced", &spliced), ("frame_serde", &plain)] {
        group.bench_function(name, |b| {
            let mut out = Vec::with_capacity(4096);
            b.iter(|| {
                out.clear();
                encode_into(black_box(message), MAX_FRAME_BYTES, &mut out).unwrap();
                black_box(out.len())
            })
        });
    }
    group.bench_function("decode", |b| {
        b.iter(|| {
            let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
            decoder.push(black_box(&frame));
            black_box(decoder.next_message().unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
