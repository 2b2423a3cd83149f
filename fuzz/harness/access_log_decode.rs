//! Fuzz harness: arbitrary bytes as a segment of the backup's access log, as they are
//! and as frames with repaired lengths and checksums. Decoding never panics; where it
//! stops, the bytes before decode cleanly to the same records, and every record
//! re-encodes to what decodes to itself.

use kirikae_replicate::{decode_entries, AccessRecord};

/// Runs one input.
pub fn run(data: &[u8]) {
    decode(data);
    decode(&crate::repair::framed(data));
}

fn decode(data: &[u8]) {
    let (records, damaged_at) = decode_entries::<AccessRecord>(data);
    if let Some(valid) = damaged_at {
        assert!(valid < data.len(), "damage reported past the end");
        let (again, clean) = decode_entries::<AccessRecord>(&data[..valid]);
        assert_eq!(clean, None, "the valid prefix decodes cleanly");
        assert_eq!(again, records);
    }
}
