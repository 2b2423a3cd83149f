//! Frames: round trips however the bytes arrive, the handshake, and every kind of bad
//! stream refused with the byte offset of the frame at fault.

use kirikae_engine::{Key, Operation};

use crate::epoch::Epoch;
use crate::seq::Seq;
use crate::*;

fn hello(version: u16) -> Message {
    Message::Hello {
        version,
        epoch: Epoch(3),
        node: "primary-a".into(),
        last_seq: Seq(41),
    }
}

fn all_messages() -> Vec<Message> {
    let ops = vec![
        Operation::Insert {
            table: "subscriber".into(),
            row: vec!["440101234567890".into(), 5.into()],
        },
        Operation::Delete {
            table: "session".into(),
            key: Key::from(9),
        },
    ];
    vec![
        hello(PROTOCOL_VERSION),
        Message::Ship {
            seq: Seq(42),
            epoch: Epoch(3),
            mode: Mode::Ordered,
            operations: ops.clone(),
            verify: true,
        },
        Message::Prepare {
            seq: Seq(43),
            epoch: Epoch(3),
            operations: ops,
            responses: vec![0xdead_beef, 7],
        },
        Message::Prepared {
            seq: Seq(43),
            responses: vec![0xdead_beef, 7],
        },
        Message::Applied {
            seq: Seq(42),
            responses: vec![1, 2],
        },
        Message::Rejected {
            seq: Seq(44),
            reason: "duplicate key".into(),
        },
        Message::Commit { seq: Seq(43) },
        Message::Abort { seq: Seq(44) },
        Message::Ack { seq: Seq(43) },
        Message::Heartbeat {
            epoch: Epoch(3),
            last_seq: Seq(44),
        },
    ]
}

fn stream(messages: &[Message]) -> Vec<u8> {
    messages
        .iter()
        .flat_map(|m| encode(m, MAX_FRAME_BYTES).expect("encodes"))
        .collect()
}

#[test]
fn messages_round_trip_in_any_chunking() {
    let messages = all_messages();
    let bytes = stream(&messages);
    for chunk in [1, 3, 7, 64, bytes.len()] {
        let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
        let mut got = Vec::new();
        for piece in bytes.chunks(chunk) {
            d.push(piece);
            while let Some(m) = d.next_message().expect("valid stream") {
                got.push(m);
            }
        }
        assert_eq!(got, messages, "chunks of {chunk}");
    }
}

#[test]
fn the_handshake_comes_first_and_versions_must_match() {
    let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
    d.push(&stream(&[Message::Ack { seq: Seq(1) }]));
    assert_eq!(
        d.next_message(),
        Err(WireError::NoHandshake {
            offset: 0,
            got: "Ack".into()
        })
    );
    let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
    d.push(&stream(&[hello(PROTOCOL_VERSION + 1)]));
    let err = d.next_message().expect_err("refused");
    assert_eq!(
        err,
        WireError::Version {
            ours: PROTOCOL_VERSION,
            theirs: PROTOCOL_VERSION + 1
        }
    );
    assert!(err.to_string().contains(&format!(
        "we speak {PROTOCOL_VERSION}, the peer speaks {}",
        PROTOCOL_VERSION + 1
    )));
}

#[test]
fn oversized_frames_are_refused_before_they_are_buffered() {
    let mut d = FrameDecoder::new(1024);
    let mut header = (1_000_000u32).to_le_bytes().to_vec();
    header.extend_from_slice(&[0; 4]);
    d.push(&header);
    assert_eq!(
        d.next_message(),
        Err(WireError::TooLarge {
            offset: 0,
            len: 1_000_000,
            max: 1024
        })
    );
    let big = Message::Rejected {
        seq: Seq(1),
        reason: "x".repeat(2048),
    };
    assert!(matches!(
        encode(&big, 1024),
        Err(WireError::TooLarge { .. })
    ));
}

#[test]
fn corruption_is_reported_at_the_frame_offset() {
    let messages = all_messages();
    let first = encode(&messages[0], MAX_FRAME_BYTES)
        .expect("encodes")
        .len() as u64;
    let mut bytes = stream(&messages[..3]);
    let at = first as usize + 8 + 5;
    bytes[at] ^= 0x40;
    let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
    d.push(&bytes);
    assert_eq!(
        d.next_message().expect("first frame fine"),
        Some(messages[0].clone())
    );
    match d.next_message() {
        Err(WireError::Checksum { offset, .. }) => assert_eq!(offset, first),
        other => panic!("expected a checksum error, got {other:?}"),
    }
}

#[test]
fn a_valid_checksum_over_garbage_is_a_decode_error() {
    let payload = [0xffu8; 12];
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
    d.push(&frame);
    assert!(matches!(
        d.next_message(),
        Err(WireError::Decode { offset: 0, .. })
    ));
}

/// The bytes of every message kind, pinned: a reordered enum (here or in the engine's
/// `Value` and `Operation`) or a changed field would silently break mixed-version
/// peers. If this fails on purpose, bump `PROTOCOL_VERSION` and update the bytes.
#[test]
fn the_wire_encoding_is_pinned() {
    let hex: String = stream(&all_messages())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, GOLDEN_STREAM, "the wire encoding changed");
}

/// `stream(&all_messages())`, hex: per frame, length and CRC-32 (little-endian), then
/// the postcard payload.
const GOLDEN_STREAM: &str = concat!(
    "0e000000f84fa1e8000203097072696d6172792d61293200000010345926012a",
    "030202000a7375627363726962657202040f3434303130313233343536373839",
    "30020a020773657373696f6e010212013700000018fde862022b0302000a7375",
    "627363726962657202040f343430313031323334353637383930020a02077365",
    "7373696f6e01021202effdb6f50d07090000006a316d1b032b02effdb6f50d07",
    "05000000355e2cf0092a020102100000004badfd92042c0d6475706c69636174",
    "65206b657902000000fa1f1290052b020000009ad95b25062c02000000787d24",
    "a2072b030000008ab7a7e808032c",
);
