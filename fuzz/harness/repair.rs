//! Structure-aware inputs: a fuzzer's bytes with their lengths and checksums
//! repaired, so that mutations reach the decoders behind the checksums instead of
//! dying at them. Each harness runs an input as it is and repaired.

// Each fuzz target uses one of these.
#![allow(dead_code)]

/// `data` as a run of frames (`payload length u32 LE | CRC-32 u32 LE | payload`):
/// each payload is the next `n` bytes, `n` taken from a two-byte prefix (at most
/// 4 KiB).
pub fn framed(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 4 + 8);
    let mut rest = data;
    while rest.len() >= 2 {
        let want = usize::from(u16::from_le_bytes([rest[0], rest[1]])) % 4096;
        let body = &rest[2..];
        let (payload, after) = body.split_at(want.min(body.len()));
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
        rest = after;
    }
    out
}

/// `data` as the body of a snapshot file with a valid header and checksum.
pub fn snapshot(data: &[u8]) -> Vec<u8> {
    let mut out = kirikae_engine::SNAPSHOT_MAGIC.to_vec();
    out.extend_from_slice(&kirikae_engine::SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(data);
    out
}
