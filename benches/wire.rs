//! The replication stream's codec: time to frame one shipped transaction of the
//! telecom workload (one update of a subscriber row) and to decode it again. The
//! primary frames every replicated commit on its link thread and the backup decodes
//! each on its serving thread, so these times are a floor under both processes' CPU
//! per transaction.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kirikae::engine::Operation;
use kirikae::replicate::{
    encode, encode_into, Epoch, FrameDecoder, Message, Mode, Seq, MAX_FRAME_BYTES,
};
use kirikae_workload::workload::{subscriber_key, subscriber_row, SUBSCRIBER_TABLE};

fn shipped_update() -> Message {
    Message::Ship {
        seq: Seq(1_234_567),
        epoch: Epoch(3),
        mode: Mode::Async,
        operations: Arc::new(vec![Operation::Update {
            table: SUBSCRIBER_TABLE.into(),
            key: subscriber_key(42_042),
            row: subscriber_row(42_042).into(),
        }]),
        verify: false,
    }
}

fn codec(c: &mut Criterion) {
    let message = shipped_update();
    let frame = encode(&message, MAX_FRAME_BYTES).unwrap();
    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_ship_update", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            out.clear();
            encode_into(black_box(&message), MAX_FRAME_BYTES, &mut out).unwrap();
            black_box(out.len())
        })
    });
    group.bench_function("decode_ship_update", |b| {
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
