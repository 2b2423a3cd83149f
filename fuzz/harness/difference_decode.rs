//! Fuzz harness: arbitrary bytes as a difference-file segment, as they are and as
//! frames with repaired lengths and checksums. Decoding never panics; where it stops,
//! the bytes before decode cleanly to the same records. The same bytes as one
//! record's payload read back (writes kept encoded, as a catch-up reads them) never
//! panic either, and where the full decode accepts them the two agree.

use kirikae_replicate::{decode_segment_bytes, LogEntry, LogRecord};

/// Runs one input.
pub fn run(data: &[u8]) {
    decode(data);
    decode(&crate::repair::framed(data));
    read_back(data);
}

fn decode(data: &[u8]) {
    let (records, damaged_at) = decode_segment_bytes(data);
    if let Some(valid) = damaged_at {
        assert!(valid < data.len(), "damage reported past the end");
        let (again, clean) = decode_segment_bytes(&data[..valid]);
        assert_eq!(clean, None, "the valid prefix decodes cleanly");
        assert_eq!(again, records);
    }
}

fn read_back(payload: &[u8]) {
    let crc = crc32fast::hash(payload);
    let Ok(back) = LogRecord::read_back(payload, crc) else {
        return;
    };
    // Undecodable writes are an error when asked for, never a panic.
    let _ = back.operations.operations();
    let mut framed = Vec::new();
    framed.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    framed.extend_from_slice(&crc.to_le_bytes());
    framed.extend_from_slice(payload);
    if let (records, None) = decode_segment_bytes(&framed) {
        assert_eq!(
            records,
            vec![back],
            "read back and decoded in full disagree"
        );
    }
}
