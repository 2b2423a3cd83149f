//! The one record codec of the wire protocol and of the difference file:
//! `payload length (u32 LE) | CRC-32 of payload (u32 LE) | payload (postcard)`.
//!
//! Both formats are pinned by golden-bytes tests (`wire_tests.rs`,
//! `record_log_tests.rs`); this is the only code that writes or reads the layout.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes before each payload: its length and its CRC-32.
pub const HEADER_BYTES: usize = 8;

/// Why bytes are not a valid frame, or a value cannot be framed. Callers wrap it into
/// their own error with where it happened (stream offset, file, segment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameFault {
    /// The header announces (or the value encodes to) more than the limit.
    TooLarge {
        /// Payload length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The payload does not match its CRC-32.
    Checksum {
        /// CRC in the header.
        stored: u32,
        /// CRC of the payload as read.
        computed: u32,
    },
    /// The payload passed its checksum but does not decode (or the value does not
    /// encode).
    Undecodable(String),
}

impl std::fmt::Display for FrameFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameFault::TooLarge { len, max } => {
                write!(f, "{len} bytes exceeds the {max}-byte maximum")
            }
            FrameFault::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            FrameFault::Undecodable(reason) => write!(f, "undecodable: {reason}"),
        }
    }
}

/// The length of `value`'s frame, header included, computed without encoding it.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    HEADER_BYTES
        + postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
            .unwrap_or(usize::MAX - HEADER_BYTES)
}

/// Frames `value`; fails if its payload is over `max_payload_bytes`.
pub fn encode<T: Serialize>(value: &T, max_payload_bytes: usize) -> Result<Vec<u8>, FrameFault> {
    let mut frame = Vec::new();
    encode_into(value, max_payload_bytes, &mut frame)?;
    Ok(frame)
}

/// Appends `value`'s frame to `out` (what [`encode`] returns, without a buffer of
/// its own: a sender framing many messages reuses one). On failure `out` is as it
/// was.
pub fn encode_into<T: Serialize>(
    value: &T,
    max_payload_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameFault> {
    // A unit encodes to nothing: the frame of `value` alone.
    encode_spliced_into(value, &[], &(), max_payload_bytes, out)
}

/// Fills in the header of the frame that starts at `start` and runs to the end of
/// `out`, once its payload is checked against `max_payload_bytes`; on failure the
/// frame is cut off again.
fn seal(start: usize, max_payload_bytes: usize, out: &mut Vec<u8>) -> Result<(), FrameFault> {
    let body = start + HEADER_BYTES;
    let payload_len = out.len() - body;
    let Some(len) = u32::try_from(payload_len)
        .ok()
        .filter(|&n| n as usize <= max_payload_bytes)
    else {
        out.truncate(start);
        return Err(FrameFault::TooLarge {
            len: payload_len as u64,
            max: max_payload_bytes as u64,
        });
    };
    let crc = crc32fast::hash(&out[body..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..body].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Frames `head`, then `raw` as it is (bytes already in postcard), then `tail`: the
/// frame of a value whose fields encode to those three in turn, without encoding
/// the part already encoded. Fails if its payload is over `max_payload_bytes`; on
/// failure `out` is as it was.
pub fn encode_spliced_into<H: Serialize, T: Serialize>(
    head: &H,
    raw: &[u8],
    tail: &T,
    max_payload_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameFault> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    let mut encoded = postcard::to_extend(head, Tail(out)).map(drop);
    if encoded.is_ok() {
        out.extend_from_slice(raw);
        encoded = postcard::to_extend(tail, Tail(out)).map(drop);
    }
    if let Err(e) = encoded {
        out.truncate(start);
        return Err(FrameFault::Undecodable(e.to_string()));
    }
    seal(start, max_payload_bytes, out)
}

/// The length of the frame [`encode_spliced_into`] makes, computed without encoding.
pub fn spliced_len<H: Serialize, T: Serialize>(head: &H, raw: &[u8], tail: &T) -> usize {
    encoded_len(head) + raw.len() + encoded_len(tail) - HEADER_BYTES
}

/// Postcard's writer for [`encode_into`]: appends to a borrowed buffer.
struct Tail<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Tail<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// The header at the front of `bytes`: the payload length, checked against
/// `max_payload_bytes` before anything is buffered, and the stored CRC. `None` if
/// fewer than [`HEADER_BYTES`] bytes are there.
pub fn header(bytes: &[u8], max_payload_bytes: usize) -> Result<Option<(usize, u32)>, FrameFault> {
    let Some(head) = bytes.get(..HEADER_BYTES) else {
        return Ok(None);
    };
    let word = |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let len = word(0) as usize;
    if len > max_payload_bytes {
        return Err(FrameFault::TooLarge {
            len: len as u64,
            max: max_payload_bytes as u64,
        });
    }
    Ok(Some((len, word(4))))
}

/// Checks `payload` against its stored CRC.
pub fn check(payload: &[u8], stored_crc: u32) -> Result<(), FrameFault> {
    let computed = crc32fast::hash(payload);
    if computed != stored_crc {
        return Err(FrameFault::Checksum {
            stored: stored_crc,
            computed,
        });
    }
    Ok(())
}

/// Checks `payload` against its stored CRC and decodes it as exactly one `T`.
pub fn open<T: DeserializeOwned>(payload: &[u8], stored_crc: u32) -> Result<T, FrameFault> {
    check(payload, stored_crc)?;
    match postcard::take_from_bytes::<T>(payload) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(FrameFault::Undecodable(format!(
            "{} bytes after the value",
            rest.len()
        ))),
        Err(e) => Err(FrameFault::Undecodable(e.to_string())),
    }
}

/// The frame at the front of `bytes`: its value and its total length, or `None` if
/// the frame is not complete yet.
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    max_payload_bytes: usize,
) -> Result<Option<(T, usize)>, FrameFault> {
    let Some((len, stored)) = header(bytes, max_payload_bytes)? else {
        return Ok(None);
    };
    let Some(payload) = bytes.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Ok(None);
    };
    Ok(Some((open(payload, stored)?, HEADER_BYTES + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_every_fault_is_named() {
        let frame = encode(&(7u32, "seven".to_owned()), 100).expect("encode");
        assert_eq!(frame.len(), HEADER_BYTES + 7);
        assert_eq!(encoded_len(&(7u32, "seven".to_owned())), frame.len());
        let (value, used): ((u32, String), usize) =
            decode(&frame, 100).expect("valid").expect("complete");
        assert_eq!((value, used), ((7, "seven".to_owned()), frame.len()));
        for cut in 0..frame.len() {
            assert_eq!(decode::<(u32, String)>(&frame[..cut], 100), Ok(None));
        }
        assert!(matches!(
            encode(&vec![0u8; 200], 100),
            Err(FrameFault::TooLarge { max: 100, .. })
        ));
        assert!(matches!(
            decode::<(u32, String)>(&frame, 3),
            Err(FrameFault::TooLarge { len: 7, max: 3 })
        ));
        let mut bad = frame.clone();
        bad[HEADER_BYTES] ^= 1;
        assert!(matches!(
            decode::<(u32, String)>(&bad, 100),
            Err(FrameFault::Checksum { .. })
        ));
        let short = encode(&1u8, 100).expect("encode");
        assert!(matches!(
            decode::<(u32, String)>(&short, 100),
            Err(FrameFault::Undecodable(_))
        ));
        let long = encode(&(1u8, 2u8), 100).expect("encode");
        assert!(
            matches!(decode::<u8>(&long, 100), Err(FrameFault::Undecodable(r)) if r.contains("after"))
        );
    }
}
