//! The difference file: durable append and replay, torn tails cut at the last valid
//! record at every possible byte, damage elsewhere refused, segments and retirement.

use kirikae_engine::{Key, Operation};

use crate::epoch::Epoch;
use crate::seq::Seq;
use crate::*;

fn record(seq: u64) -> LogRecord {
    LogRecord {
        seq: Seq(seq),
        epoch: Epoch(1),
        mode: if seq % 2 == 0 {
            Mode::Ordered
        } else {
            Mode::Async
        },
        operations: writes(
            seq,
            vec![Operation::Update {
                table: "subscriber".into(),
                key: Key::from(format!("44010{seq:010}")),
                row: vec![format!("44010{seq:010}").into(), (seq as i64).into()].into(),
            }],
        ),
    }
}

/// Every other record's writes as a committing thread encodes them: both ways of
/// framing a record are appended, replayed and pinned.
fn writes(seq: u64, operations: Vec<Operation>) -> Writes {
    if seq % 2 == 0 {
        Writes::encoded(operations)
    } else {
        Writes::new(operations)
    }
}

fn options(segment_bytes: u64) -> RecordLogOptions {
    RecordLogOptions {
        segment_bytes,
        fsync: true,
    }
}

fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

#[test]
fn appended_records_survive_reopening_and_replay_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut f, rec) = RecordLog::open(dir.path(), options(1 << 20)).expect("open");
    assert_eq!(rec, Recovery::default());
    for seq in 1..=50 {
        f.append(&record(seq)).expect("append");
    }
    f.sync().expect("sync");
    drop(f);
    let (mut f, rec) = RecordLog::open(dir.path(), options(1 << 20)).expect("reopen");
    assert_eq!(
        (rec.records, rec.torn_bytes, rec.last_seq),
        (50, 0, Some(Seq(50)))
    );
    let all = f.read_after(Seq(0)).expect("read");
    assert_eq!(all, (1..=50).map(record).collect::<Vec<_>>());
    assert_eq!(f.read_after(Seq(45)).expect("read").len(), 5);
    assert!(matches!(
        f.append(&record(50)),
        Err(ReplicateError::LogSequence {
            position: 50,
            last: 50
        })
    ));
    f.append(&record(51)).expect("continues after reopening");
}

/// A record read back keeps its writes as the bytes they were stored as, whichever
/// way they were framed, and frames again to the very bytes it was stored in: a
/// catch-up sends them on without decoding and encoding them again.
#[test]
fn records_read_back_keep_their_writes_encoded_and_frame_to_the_same_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut f, _) = RecordLog::open(dir.path(), options(1 << 20)).expect("open");
    let mut skipped = record(3);
    skipped.mode = Mode::Skip;
    skipped.operations = Writes::new(Vec::new());
    let originals = vec![record(1), record(2), skipped, record(4)];
    for r in &originals {
        f.append(r).expect("append");
    }
    f.sync().expect("sync");
    let read = f.read_after(Seq(0)).expect("read");
    assert_eq!(read, originals);
    for (back, original) in read.iter().zip(&originals) {
        assert!(
            back.operations.encoding().is_some(),
            "{} was decoded",
            back.seq
        );
        let frame_of = |r: &LogRecord| {
            let mut out = Vec::new();
            r.frame_into(crate::record_log::MAX_RECORD_BYTES, &mut out)
                .expect("frame");
            out
        };
        assert_eq!(frame_of(back), frame_of(original), "{}", back.seq);
    }
}

#[test]
fn a_torn_tail_is_cut_at_the_last_valid_record_at_every_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut f, _) = RecordLog::open(dir.path(), options(1 << 20)).expect("open");
    for seq in 1..=3 {
        f.append(&record(seq)).expect("append");
    }
    f.sync().expect("sync");
    drop(f);
    let path = segment_files(dir.path()).remove(0);
    let whole = std::fs::read(&path).expect("read");
    let (records, damaged) = decode_segment_bytes(&whole);
    assert_eq!((records.len(), damaged), (3, None));
    // Where valid data ends once the last byte is gone: the start of the third record.
    let (two, third_starts) = decode_segment_bytes(&whole[..whole.len() - 1]);
    assert_eq!(two.len(), 2);
    let third_starts = third_starts.expect("a torn record");
    for cut in third_starts..whole.len() {
        std::fs::write(&path, &whole[..cut]).expect("tear");
        let (mut f, rec) = RecordLog::open(dir.path(), options(1 << 20)).expect("recovers");
        assert_eq!(rec.records, 2, "cut at {cut}");
        assert_eq!(rec.torn_bytes as usize, cut - third_starts, "cut at {cut}");
        assert_eq!(rec.last_seq, Some(Seq(2)));
        f.append(&record(3)).expect("append after recovery");
        f.sync().expect("sync");
        assert_eq!(
            f.read_after(Seq(0)).expect("read"),
            (1..=3).map(record).collect::<Vec<_>>()
        );
        drop(f);
        std::fs::write(&path, &whole).expect("restore");
    }
    // Garbage after the last record (a write that never completed) is cut too.
    let mut garbage = whole.clone();
    garbage.extend_from_slice(&[0xab; 11]);
    std::fs::write(&path, &garbage).expect("write");
    let (_, rec) = RecordLog::open(dir.path(), options(1 << 20)).expect("recovers");
    assert_eq!((rec.records, rec.torn_bytes), (3, 11));
}

#[test]
fn damage_inside_the_last_segment_that_whole_records_follow_is_refused_not_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut f, _) = RecordLog::open(dir.path(), options(1 << 20)).expect("open");
    for seq in 1..=5 {
        f.append(&record(seq)).expect("append");
    }
    f.sync().expect("sync");
    drop(f);
    let path = segment_files(dir.path()).remove(0);
    let whole = std::fs::read(&path).expect("read");
    // Where the second and third records start: the length of the first one's bytes.
    let (one, second_starts) = decode_segment_bytes(&whole[..whole.len() / 5 + 1]);
    assert_eq!(one.len(), 1);
    let second_starts = second_starts.expect("the second record cut short");
    let (two, third_starts) = decode_segment_bytes(&whole[..2 * second_starts + 1]);
    assert_eq!(two.len(), 2);
    let third_starts = third_starts.expect("the third record cut short");
    // One flipped bit anywhere in the second record: records 3–5 (acknowledged, say)
    // follow it, so opening refuses rather than cut them off as a torn tail.
    for byte in second_starts..third_starts {
        let mut damaged = whole.clone();
        damaged[byte] ^= 0x10;
        std::fs::write(&path, &damaged).expect("damage");
        match RecordLog::open(dir.path(), options(1 << 20)) {
            Err(ReplicateError::LogCorrupt { offset, reason, .. }) => {
                assert_eq!(offset as usize, second_starts, "byte {byte}");
                assert!(
                    reason.contains(&format!("a whole record follows at byte {third_starts}")),
                    "byte {byte}: {reason}"
                );
            }
            other => panic!(
                "byte {byte}: expected LogCorrupt, got {:?}",
                other.map(|(_, r)| r)
            ),
        }
        assert_eq!(
            std::fs::read(&path).expect("read"),
            damaged,
            "left as found"
        );
    }
    // The same flip in the last record is indistinguishable from a torn write: cut.
    let mut damaged = whole.clone();
    let last = whole.len() - 3;
    damaged[last] ^= 0x10;
    std::fs::write(&path, &damaged).expect("damage");
    let (_, rec) = RecordLog::open(dir.path(), options(1 << 20)).expect("a torn tail");
    assert_eq!((rec.records, rec.last_seq), (4, Some(Seq(4))));
    // So is a tail of zeros (a file's length made durable before its data).
    let mut zeros = whole.clone();
    zeros.extend_from_slice(&[0; 4096]);
    std::fs::write(&path, &zeros).expect("write");
    let (_, rec) = RecordLog::open(dir.path(), options(1 << 20)).expect("a torn tail");
    assert_eq!((rec.records, rec.torn_bytes), (5, 4096));
}

#[test]
fn damage_before_the_last_segment_is_refused_with_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut f, _) = RecordLog::open(dir.path(), options(300)).expect("open");
    for seq in 1..=20 {
        f.append(&record(seq)).expect("append");
    }
    f.sync().expect("sync");
    drop(f);
    let files = segment_files(dir.path());
    assert!(files.len() > 2, "small segments roll over: {files:?}");
    let mut bytes = std::fs::read(&files[0]).expect("read");
    bytes[12] ^= 0xff;
    std::fs::write(&files[0], &bytes).expect("damage");
    match RecordLog::open(dir.path(), options(300)) {
        Err(ReplicateError::LogCorrupt {
            path,
            offset,
            reason,
        }) => {
            assert!(path.ends_with(files[0].file_name().and_then(|n| n.to_str()).expect("name")));
            assert_eq!(offset, 0);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected LogCorrupt, got {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn acknowledged_segments_are_retired_and_replay_stays_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut f, _) = RecordLog::open(dir.path(), options(300)).expect("open");
    for seq in 1..=30 {
        f.append(&record(seq)).expect("append");
    }
    f.sync().expect("sync");
    let before = segment_files(dir.path()).len();
    let bytes_before = f.bytes();
    let retired = f.retire_through(Seq(17)).expect("retire");
    assert!(retired > 0 && segment_files(dir.path()).len() == before - retired);
    assert!(f.bytes() < bytes_before);
    assert_eq!(
        f.read_after(Seq(17)).expect("read"),
        (18..=30).map(record).collect::<Vec<_>>()
    );
    drop(f);
    let (mut f, rec) = RecordLog::open(dir.path(), options(300)).expect("reopen");
    assert_eq!(rec.last_seq, Some(Seq(30)));
    assert_eq!(
        f.read_after(Seq(17)).expect("read"),
        (18..=30).map(record).collect::<Vec<_>>()
    );
}

#[test]
fn batches_resume_where_they_stopped_and_see_later_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut f, _) = RecordLog::open(dir.path(), options(600)).expect("open");
    for seq in 1..=40 {
        f.append(&record(seq)).expect("append");
    }
    assert!(
        segment_files(dir.path()).len() > 2,
        "spans several segments"
    );
    let mut after = Seq(3);
    let mut seen = Vec::new();
    let mut appended = false;
    loop {
        let batch = f.read_batch(after, 7).expect("batch");
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 7);
        after = batch.last().expect("nonempty").seq;
        seen.extend(batch.into_iter().map(|r| r.seq.0));
        if after >= Seq(30) && !appended {
            appended = true;
            for seq in 41..=45 {
                f.append(&record(seq)).expect("append while reading");
            }
        }
    }
    assert_eq!(seen, (4..=45).collect::<Vec<_>>());
    // A batch from an arbitrary point (not where the last stopped) is exact too.
    let again = f.read_batch(Seq(17), 3).expect("batch");
    assert_eq!(
        again.iter().map(|r| r.seq.0).collect::<Vec<_>>(),
        vec![18, 19, 20]
    );
}

/// The bytes of a segment, pinned: a primary restarted by a newer build must read the
/// difference file an older one left. If this fails on purpose, the file format
/// needs a version and a migration.
#[test]
fn the_segment_encoding_is_pinned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut file, _) = RecordLog::open(dir.path(), options(1 << 20)).expect("open");
    file.append(&record(1)).expect("append");
    file.append(&record(2)).expect("append");
    file.sync().expect("sync");
    drop(file);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let bytes = std::fs::read(&files[0]).expect("read");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, GOLDEN_SEGMENT, "the difference-file encoding changed");
    let (records, torn) = decode_segment_bytes(&bytes);
    assert_eq!((records, torn), (vec![record(1), record(2)], None));
}

/// Records 1 and 2, hex: per record, length and CRC-32 (little-endian), then the
/// postcard payload.
const GOLDEN_SEGMENT: &str = concat!(
    "36000000b643ab9f01010101010a7375627363726962657201040f3434303130",
    "3030303030303030303102040f34343031303030303030303030303102023600",
    "0000f4242bb702010201010a7375627363726962657201040f34343031303030",
    "303030303030303202040f3434303130303030303030303030320204",
);
