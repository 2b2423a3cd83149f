//! Fuzz harness: arbitrary bytes as a difference-file segment, as they are and as
//! frames with repaired lengths and checksums. Decoding never panics; where it stops,
//! the bytes before decode cleanly to the same records.

use kirikae_replicate::decode_segment_bytes;

/// Runs one input.
pub fn run(data: &[u8]) {
    decode(data);
    decode(&crate::repair::framed(data));
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
