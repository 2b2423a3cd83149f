//! Frames: round trips however the bytes arrive, and every kind of bad
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
        nonce: [7; 32],
    }
}

fn all_messages() -> Vec<Message> {
    let ops = vec![
        Operation::Insert {
            table: "subscriber".into(),
            row: vec!["440101234567890".into(), 5.into()].into(),
        },
        Operation::Delete {
            table: "session".into(),
            key: Key::from(9),
        },
    ];
    vec![
        hello(PROTOCOL_VERSION),
        Message::Proof { mac: [9; 32] },
        Message::Ship {
            seq: Seq(42),
            epoch: Epoch(3),
            mode: Mode::Ordered,
            // Framed from the committing thread's encoding (the Prepare below from
            // its operations): both ways are pinned.
            operations: Writes::encoded(ops.clone()),
            verify: true,
        },
        Message::Prepare {
            seq: Seq(43),
            epoch: Epoch(3),
            operations: ops.into(),
            responses: vec![0xdead_beef, 7],
        },
        Message::Prepared {
            seq: Seq(43),
            epoch: Epoch(2),
            responses: vec![0xdead_beef, 7],
        },
        Message::Applied {
            seq: Seq(42),
            epoch: Epoch(2),
            responses: vec![1, 2],
        },
        Message::Rejected {
            seq: Seq(44),
            epoch: Epoch(2),
            reason: "duplicate key".into(),
        },
        Message::Commit {
            seq: Seq(43),
            epoch: Epoch(2),
        },
        Message::Abort {
            seq: Seq(44),
            epoch: Epoch(2),
        },
        Message::Ack {
            seq: Seq(43),
            epoch: Epoch(2),
        },
        Message::Heartbeat {
            epoch: Epoch(3),
            last_seq: Seq(44),
        },
        Message::ResyncBegin {
            epoch: Epoch(3),
            from_seq: Seq(44),
        },
        Message::ResyncTable {
            epoch: Epoch(3),
            table: "kv".into(),
            schema: kirikae_engine::Schema::new(
                vec![
                    kirikae_engine::Column::new("k", kirikae_engine::ColumnType::Int),
                    kirikae_engine::Column::new("v", kirikae_engine::ColumnType::Text).nullable(),
                ],
                &["k"],
            )
            .expect("schema"),
            rows: 2,
        },
        Message::ResyncRows {
            epoch: Epoch(3),
            table: "kv".into(),
            rows: CopiedRows::from(vec![
                vec![1.into(), "one".into()],
                vec![2.into(), kirikae_engine::Value::Null],
            ]),
        },
        Message::ResyncEnd {
            epoch: Epoch(3),
            rows: 2,
        },
        Message::Resynced {
            epoch: Epoch(2),
            seq: Seq(45),
        },
        // Catalog changes (protocol 5).
        Message::Ship {
            seq: Seq(46),
            epoch: Epoch(2),
            mode: Mode::Sync,
            operations: vec![
                Operation::Ddl {
                    table: "kv".into(),
                    event: kirikae_engine::CatalogEvent::Announced {
                        payload: vec![1, 2],
                    },
                },
                Operation::Ddl {
                    table: "kv".into(),
                    event: kirikae_engine::CatalogEvent::Dropped,
                },
            ]
            .into(),
            verify: false,
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
        epoch: Epoch(2),
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
    "2e0000005db3cd7b000503097072696d6172792d612907070707070707070707",
    "0707070707070707070707070707070707070707070721000000953f89580109",
    "0909090909090909090909090909090909090909090909090909090909090932",
    "00000042187b71022a030202000a7375627363726962657202040f3434303130",
    "31323334353637383930020a020773657373696f6e0102120137000000084eeb",
    "40032b0302000a7375627363726962657202040f343430313031323334353637",
    "383930020a020773657373696f6e01021202effdb6f50d070a0000000eb415c8",
    "042b0202effdb6f50d0706000000e8f9b0c50a2a0202010211000000f6399d42",
    "052c020d6475706c6963617465206b657903000000e539b263062b0203000000",
    "15c5312d072c0203000000ef142c69082b0203000000bddd65e909032c030000",
    "00d309e1ea0b032c14000000ae3066210c03026b7602016b0100000176030100",
    "01016b02120000009202431e0d03026b760202020204036f6e65020204000300",
    "0000f7c6fc300e030203000000d8a0f4830f022d13000000f8c62f2b022e0203",
    "0203026b760302010203026b760100",
);

mod spliced {
    use kirikae_engine::{Key, Operation, Value};
    use proptest::collection::vec;
    use proptest::prelude::*;

    use crate::epoch::Epoch;
    use crate::seq::Seq;
    use crate::wire::{self, encode, FrameDecoder, Message, MAX_FRAME_BYTES};
    use crate::writes::Writes;
    use crate::{Mode, WireError};

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            // Across the 24 bytes a text keeps inline.
            "[a-z0-9é]{0,40}".prop_map(|s| Value::from(s.as_str())),
            vec(any::<u8>(), 0..300).prop_map(Value::from),
        ]
    }

    fn operation() -> impl Strategy<Value = Operation> {
        let table = "[a-z_]{1,40}";
        let key = prop_oneof![
            any::<i64>().prop_map(Key::from),
            vec(value(), 1..3).prop_map(Key::new),
        ];
        prop_oneof![
            (table, vec(value(), 0..8)).prop_map(|(t, row)| Operation::Insert {
                table: t.as_str().into(),
                row: row.into(),
            }),
            (table, key.clone(), vec(value(), 0..8)).prop_map(|(t, key, row)| {
                Operation::Update {
                    table: t.as_str().into(),
                    key,
                    row: row.into(),
                }
            }),
            (table, key).prop_map(|(t, key)| Operation::Delete {
                table: t.as_str().into(),
                key,
            }),
        ]
    }

    fn message(
        writes: Writes,
        seq: u64,
        epoch: u64,
        mode: Mode,
        responses: Option<Vec<u64>>,
    ) -> Message {
        match responses {
            Some(responses) => Message::Prepare {
                seq: Seq(seq),
                epoch: Epoch(epoch),
                operations: writes,
                responses,
            },
            None => Message::Ship {
                seq: Seq(seq),
                epoch: Epoch(epoch),
                mode,
                operations: writes,
                verify: seq % 2 == 0,
            },
        }
    }

    proptest! {
        /// A `Ship` or `Prepare` whose writes the committing thread encoded frames to
        /// the very bytes serde writes from its operations, its length is known
        /// without framing it, and it decodes back to the same message.
        #[test]
        fn a_spliced_frame_is_the_frame_serde_writes(
            ops in vec(operation(), 0..5),
            seq in any::<u64>(),
            epoch in any::<u64>(),
            mode in prop_oneof![Just(Mode::Async), Just(Mode::Ordered), Just(Mode::Sync)],
            responses in proptest::option::of(vec(any::<u64>(), 0..4)),
        ) {
            let spliced = message(Writes::encoded(ops.clone()), seq, epoch, mode, responses.clone());
            let encoded = matches!(
                &spliced,
                Message::Ship { operations, .. } | Message::Prepare { operations, .. }
                    if operations.encoding().is_some()
            );
            prop_assert!(encoded, "the committing thread's encoding is made");
            let plain = message(Writes::new(ops), seq, epoch, mode, responses);
            let frame = encode(&spliced, MAX_FRAME_BYTES).expect("encodes");
            prop_assert_eq!(&frame, &encode(&plain, MAX_FRAME_BYTES).expect("encodes"));
            prop_assert_eq!(wire::encoded_len(&spliced), frame.len());
            prop_assert_eq!(wire::encoded_len(&plain), frame.len());
            let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
            decoder.push(&frame);
            prop_assert_eq!(decoder.next_message().expect("decodes"), Some(plain));
        }
    }

    /// The frame limit holds for a spliced frame as for any other, and a refused one
    /// leaves the output as it was.
    #[test]
    fn a_spliced_frame_over_the_limit_is_refused() {
        let ops = vec![Operation::Insert {
            table: "t".into(),
            row: vec![Value::from(vec![7u8; 1000])].into(),
        }];
        let ship = message(Writes::encoded(ops), 1, 1, Mode::Async, None);
        let mut out = vec![1, 2, 3];
        let refused = wire::encode_into(&ship, 500, &mut out);
        assert!(
            matches!(refused, Err(WireError::TooLarge { max: 500, .. })),
            "{refused:?}"
        );
        assert_eq!(out, [1, 2, 3]);
    }
}

/// A row is decoded into its shared image in one piece when its length is given: a
/// row shorter than it says, or one announcing more values than it could hold, is a
/// decode error (never a panic, never an allocation of the announced size).
#[test]
fn a_row_that_lies_about_its_length_does_not_decode() {
    use kirikae_engine::{Operation, Value};
    let insert = |values: Vec<Value>| Operation::Insert {
        table: "t".into(),
        row: values.into(),
    };
    let full = postcard::to_allocvec(&insert(vec![Value::Int(1), Value::Int(2)])).expect("encodes");
    let back: Operation = postcard::from_bytes(&full).expect("decodes");
    assert_eq!(back, insert(vec![Value::Int(1), Value::Int(2)]));
    // variant 0, table "t", then the row: its length, its values.
    let row_at = full.len() - 5;
    assert_eq!(full[row_at], 2, "the row's length byte");
    for (len, why) in [
        (vec![3], "one value short"),
        (
            vec![0x80, 0x94, 0xeb, 0xdc, 0x03],
            "a billion values announced",
        ),
    ] {
        let mut lying = full[..row_at].to_vec();
        lying.extend_from_slice(&len);
        lying.extend_from_slice(&full[row_at + 1..]);
        assert!(
            postcard::from_bytes::<Operation>(&lying).is_err(),
            "{why}: {lying:?}"
        );
    }
}
