//! Replays the checked-in fuzz corpora through the same harnesses `cargo fuzz` runs,
//! so that stable CI exercises every fuzz target (and every crash input once fixed).

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[path = "../fuzz/harness/access_log_decode.rs"]
mod access_log_decode;
#[path = "../fuzz/harness/difference_decode.rs"]
mod difference_decode;
#[path = "../fuzz/harness/engine_ops.rs"]
mod engine_ops;
#[path = "../fuzz/harness/frame_decode.rs"]
mod frame_decode;
#[path = "../fuzz/harness/repair.rs"]
mod repair;
#[path = "../fuzz/harness/rules_parse.rs"]
mod rules_parse;
#[path = "../fuzz/harness/snapshot_load.rs"]
mod snapshot_load;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no corpus for {target}");
    for path in &inputs {
        let data = std::fs::read(path).expect("read input");
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: input {} fails", path.display());
    }
    eprintln!("{target}: {} inputs replayed", inputs.len());
}

#[test]
fn access_log_decode_corpus() {
    replay("access_log_decode", access_log_decode::run);
}

#[test]
fn difference_decode_corpus() {
    replay("difference_decode", difference_decode::run);
}

#[test]
fn engine_ops_corpus() {
    replay("engine_ops", engine_ops::run);
}

#[test]
fn frame_decode_corpus() {
    replay("frame_decode", frame_decode::run);
}

#[test]
fn rules_parse_corpus() {
    replay("rules_parse", rules_parse::run);
}

#[test]
fn snapshot_load_corpus() {
    replay("snapshot_load", snapshot_load::run);
}

/// Seeds the snapshot corpus with valid files (run with `--ignored` to regenerate).
#[test]
#[ignore]
fn write_snapshot_seeds() {
    use kirikae_engine::{Column, ColumnType, Database, Schema, SessionInfo, Value};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/snapshot_load");
    let db = Database::new();
    let schema = Schema::new(
        vec![
            Column::new("k", ColumnType::Text),
            Column::new("n", ColumnType::Int).nullable(),
            Column::new("f", ColumnType::Float).default_value(1.5),
            Column::new("b", ColumnType::Bytes).nullable(),
            Column::new("t", ColumnType::Bool).default_value(false),
        ],
        &["k"],
    )
    .expect("schema");
    db.create_table("mixed", schema).expect("create");
    let s = db.session(SessionInfo::default());
    for i in 0..6i64 {
        s.insert(
            "mixed",
            vec![
                format!("k{i}").into(),
                Value::from(Some(i)),
                (i as f64).into(),
                Value::from(vec![i as u8]),
                true.into(),
            ],
        )
        .expect("insert");
    }
    s.delete("mixed", &"k2".into()).expect("delete");
    let (bytes, _) = db.snapshot_bytes().expect("encode");
    std::fs::write(dir.join("valid-mixed"), &bytes).expect("write");
    std::fs::write(dir.join("truncated-mixed"), &bytes[..bytes.len() / 2]).expect("write");
    let (empty, _) = Database::new().snapshot_bytes().expect("encode");
    std::fs::write(dir.join("valid-empty"), &empty).expect("write");
}

/// Seeds the frame corpus with valid and damaged streams (run with `--ignored`).
#[test]
#[ignore]
fn write_frame_seeds() {
    use kirikae_engine::{Key, Operation};
    use kirikae_replicate::{encode, Message, Mode, MAX_FRAME_BYTES};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frame_decode");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    let ops = vec![
        Operation::Update {
            table: "subscriber".into(),
            key: Key::from("440101234567890"),
            row: vec!["440101234567890".into(), 7.into()].into(),
        },
        Operation::Delete {
            table: "session".into(),
            key: Key::from(3),
        },
    ];
    let messages = [
        Message::Ship {
            seq: kirikae_replicate::Seq(1),
            epoch: kirikae_replicate::Epoch(1),
            mode: Mode::Async,
            operations: ops.clone().into(),
            verify: false,
        },
        Message::Prepare {
            seq: kirikae_replicate::Seq(2),
            epoch: kirikae_replicate::Epoch(1),
            operations: ops.into(),
            responses: vec![77],
        },
        Message::Prepared {
            seq: kirikae_replicate::Seq(2),
            epoch: kirikae_replicate::Epoch(1),
            responses: vec![77],
        },
        Message::Applied {
            seq: kirikae_replicate::Seq(1),
            epoch: kirikae_replicate::Epoch(1),
            responses: vec![5, 6],
        },
        Message::Rejected {
            seq: kirikae_replicate::Seq(3),
            epoch: kirikae_replicate::Epoch(1),
            reason: "no".into(),
        },
        Message::Commit {
            seq: kirikae_replicate::Seq(2),
            epoch: kirikae_replicate::Epoch(1),
        },
        Message::Abort {
            seq: kirikae_replicate::Seq(3),
            epoch: kirikae_replicate::Epoch(1),
        },
        Message::Ack {
            seq: kirikae_replicate::Seq(2),
            epoch: kirikae_replicate::Epoch(1),
        },
        Message::Heartbeat {
            epoch: kirikae_replicate::Epoch(1),
            last_seq: kirikae_replicate::Seq(3),
        },
    ];
    let body: Vec<u8> = messages
        .iter()
        .flat_map(|m| encode(m, MAX_FRAME_BYTES).expect("encodes"))
        .collect();
    // First byte: 0x80 = the harness prepends a valid Hello; low bits = chunk size.
    for (name, chunk) in [
        ("all-chunk1", 0x81u8),
        ("all-chunk5", 0x85),
        ("all-whole", 0xff),
    ] {
        let mut input = vec![chunk];
        input.extend_from_slice(&body);
        std::fs::write(dir.join(name), &input).expect("write");
    }
    let mut flipped = vec![0x90u8];
    flipped.extend_from_slice(&body);
    flipped[30] ^= 1;
    std::fs::write(dir.join("flipped"), &flipped).expect("write");
    let mut no_hello = vec![0x10u8];
    no_hello.extend_from_slice(&body);
    std::fs::write(dir.join("no-hello"), &no_hello).expect("write");
    std::fs::write(
        dir.join("huge-length"),
        [0x81u8, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0],
    )
    .expect("write");
}

/// Seeds the difference-file corpus with a real segment and a torn copy (run with
/// `--ignored`).
#[test]
#[ignore]
fn write_difference_seeds() {
    use kirikae_engine::Operation;
    use kirikae_replicate::{LogRecord, Mode, RecordLog, RecordLogOptions};
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/difference_decode");
    std::fs::create_dir_all(&corpus).expect("corpus dir");
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut f, _) = RecordLog::open(dir.path(), RecordLogOptions::default()).expect("open");
    for seq in 1..=4u64 {
        let record = LogRecord {
            seq: kirikae_replicate::Seq(seq),
            epoch: kirikae_replicate::Epoch(2),
            mode: Mode::Ordered,
            operations: vec![Operation::Delete {
                table: "session".into(),
                key: (seq as i64).into(),
            }]
            .into(),
        };
        f.append(&record).expect("append");
    }
    f.sync().expect("sync");
    let segment = std::fs::read_dir(dir.path())
        .expect("dir")
        .next()
        .expect("one segment")
        .expect("entry")
        .path();
    let bytes = std::fs::read(segment).expect("read");
    std::fs::write(corpus.join("four-records"), &bytes).expect("write");
    std::fs::write(corpus.join("torn"), &bytes[..bytes.len() - 3]).expect("write");
}
