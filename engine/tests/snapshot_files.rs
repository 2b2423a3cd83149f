//! Snapshot files: round trip (rows, RIDs, holes), and every kind of damage gives a
//! typed error instead of a panic.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use kirikae_engine::{
    Column, ColumnType, Database, EngineConfig, EngineError, Key, Rid, RowRef, Schema, SessionInfo,
    Value, SNAPSHOT_VERSION,
};

fn sample() -> Database {
    let db = Database::new();
    let schema = Schema::new(
        vec![
            Column::new("imsi", ColumnType::Text),
            Column::new("balance", ColumnType::Int),
            Column::new("rate", ColumnType::Float).nullable(),
            Column::new("active", ColumnType::Bool).default_value(true),
            Column::new("blob", ColumnType::Bytes).nullable(),
        ],
        &["imsi"],
    )
    .expect("schema");
    db.create_table("subscriber", schema).expect("create");
    let kv = Schema::new(
        vec![
            Column::new("a", ColumnType::Int),
            Column::new("b", ColumnType::Int),
        ],
        &["a", "b"],
    )
    .expect("schema");
    db.create_table("pairs", kv).expect("create");
    let s = db.session(SessionInfo::default());
    for i in 0..500i64 {
        s.insert(
            "subscriber",
            vec![
                format!("44010{i:010}").into(),
                (i * 7).into(),
                if i % 3 == 0 {
                    Value::Null
                } else {
                    Value::Float(i as f64 / 3.0)
                },
                (i % 2 == 0).into(),
                if i % 5 == 0 {
                    Value::from(vec![i as u8; 3])
                } else {
                    Value::Null
                },
            ],
        )
        .expect("insert");
        s.insert("pairs", vec![(i % 10).into(), i.into()])
            .expect("insert");
    }
    // Holes: deleted records leave free RIDs that must stay free after a reload.
    for i in (0..500i64).step_by(4) {
        s.delete("subscriber", &Key::from(format!("44010{i:010}")))
            .expect("delete");
    }
    db
}

type Contents = Vec<(String, Vec<(Rid, RowRef)>)>;

fn contents(db: &Database) -> Contents {
    db.tables()
        .iter()
        .map(|t| (t.name().to_owned(), t.rows()))
        .collect()
}

fn load(path: &Path) -> Result<Database, EngineError> {
    Database::open_snapshot(path, EngineConfig::default())
}

#[test]
fn round_trip_keeps_rows_rids_and_free_slots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.snap");
    let db = sample();
    let stats = db.write_snapshot(&path).expect("write");
    assert_eq!(stats.tables, 2);
    assert_eq!(stats.rows, 375 + 500);
    assert_eq!(stats.bytes, std::fs::metadata(&path).expect("meta").len());
    assert!(
        !dir.path().join("db.snap.tmp").exists(),
        "temporary file renamed away"
    );

    let back = load(&path).expect("load");
    assert_eq!(contents(&back), contents(&db));
    let s = back.session(SessionInfo::default());
    let rid = s
        .insert_named(
            "subscriber",
            &[("imsi", "new".into()), ("balance", 1.into())],
        )
        .expect("insert after load");
    assert!(rid.0 < 500, "a hole left by a delete is reused, got {rid}");
    assert!(matches!(
        s.insert_named(
            "subscriber",
            &[("imsi", "440100000000001".into()), ("balance", 1.into())]
        ),
        Err(EngineError::DuplicateKey { .. })
    ));
}

#[test]
fn truncated_files_are_reported_at_every_length() {
    let db = sample();
    let (bytes, _) = db.snapshot_bytes().expect("encode");
    let mut lengths: Vec<usize> = (0..64).collect();
    lengths.extend((64..bytes.len()).step_by(997));
    lengths.push(bytes.len() - 1);
    for len in lengths {
        match Database::from_snapshot_bytes(&bytes[..len], EngineConfig::default()) {
            Err(EngineError::SnapshotTruncated { found_bytes, .. }) => {
                assert_eq!(found_bytes, len as u64)
            }
            Err(EngineError::SnapshotBadMagic { .. }) if len == 0 => {}
            other => panic!(
                "length {len}: expected a truncation error, got {:?}",
                other.map(|_| ())
            ),
        }
    }
}

#[test]
fn flipped_bits_are_caught_by_the_checksum_or_the_header() {
    let db = sample();
    let (bytes, _) = db.snapshot_bytes().expect("encode");
    for at in (0..bytes.len()).step_by(bytes.len() / 300) {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        let err = Database::from_snapshot_bytes(&bad, EngineConfig::default())
            .map(|_| ())
            .expect_err("a flipped bit is detected");
        let expected = match at {
            0..=7 => matches!(err, EngineError::SnapshotBadMagic { .. }),
            8..=11 => matches!(err, EngineError::SnapshotVersion { .. }),
            12..=19 => matches!(
                err,
                EngineError::SnapshotTruncated { .. } | EngineError::SnapshotInvalid { .. }
            ),
            _ => matches!(err, EngineError::SnapshotChecksum { .. }),
        };
        assert!(expected, "byte {at}: unexpected {err}");
    }
}

#[test]
fn other_versions_and_foreign_files_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sample();
    let (mut bytes, _) = db.snapshot_bytes().expect("encode");
    bytes[8..12].copy_from_slice(&(SNAPSHOT_VERSION + 1).to_le_bytes());
    let path = dir.path().join("future.snap");
    std::fs::write(&path, &bytes).expect("write");
    match load(&path) {
        Err(e @ EngineError::SnapshotVersion { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("future.snap") && msg.contains("version 2"),
                "{msg}"
            );
        }
        other => panic!("expected SnapshotVersion, got {:?}", other.map(|_| ())),
    }
    let foreign = dir.path().join("foreign");
    std::fs::write(&foreign, b"PK\x03\x04 definitely a zip file").expect("write");
    assert!(matches!(
        load(&foreign),
        Err(EngineError::SnapshotBadMagic { .. })
    ));
    assert!(matches!(
        load(&dir.path().join("missing")),
        Err(EngineError::SnapshotIo { .. })
    ));
}

#[test]
fn a_valid_checksum_over_an_invalid_body_is_still_refused() {
    // Forge a body that decodes but breaks the table: two rows with the same key.
    let db = sample();
    let (bytes, _) = db.snapshot_bytes().expect("encode");
    let body = &bytes[24..];
    let mut forged = body.to_vec();
    // Rewrite every "44010000000000" prefix digit that differs into one key: find two
    // texts and make the second a copy of the first.
    let needle = b"440100000000001";
    let other = b"440100000000002";
    let pos = forged
        .windows(other.len())
        .position(|w| w == other)
        .expect("second key present");
    forged[pos..pos + needle.len()].copy_from_slice(needle);
    let mut file = bytes[..24].to_vec();
    file[20..24].copy_from_slice(&crc32_ieee(&forged).to_le_bytes());
    file.extend_from_slice(&forged);
    match Database::from_snapshot_bytes(&file, EngineConfig::default()) {
        Err(EngineError::SnapshotInvalid { table, reason, .. }) => {
            assert_eq!(table, "subscriber");
            assert!(reason.contains("duplicate"), "{reason}");
        }
        other => panic!("expected SnapshotInvalid, got {:?}", other.map(|_| ())),
    }
}

/// CRC-32 (IEEE), bit by bit: an independent check of the format's checksum.
fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The bytes of a small snapshot, pinned: a snapshot written by an older build must
/// load in a newer one. If this fails on purpose, bump `SNAPSHOT_VERSION` (and keep
/// reading the old one).
#[test]
fn the_snapshot_encoding_is_pinned() {
    let db = Database::new();
    let schema = Schema::new(
        vec![
            Column::new("imsi", ColumnType::Text),
            Column::new("balance", ColumnType::Int),
            Column::new("blob", ColumnType::Bytes).nullable(),
        ],
        &["imsi"],
    )
    .expect("schema");
    db.create_table("s", schema).expect("create");
    let session = db.session(SessionInfo::default());
    session
        .insert("s", vec!["4401".into(), Value::Int(-3), vec![7u8].into()])
        .expect("insert");
    session
        .insert("s", vec!["4402".into(), Value::Int(5), Value::Null])
        .expect("insert");
    let (bytes, _) = db.snapshot_bytes().expect("snapshot");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, GOLDEN_SNAPSHOT, "the snapshot encoding changed");
}

/// Magic, version, payload length and CRC-32, then the postcard payload (tables with
/// their schemas, rows with their RIDs), hex.
const GOLDEN_SNAPSHOT: &str = concat!(
    "4b524b534e415000010000003e00000000000000845c81050101730304696d73",
    "690300000762616c616e636501000004626c6f620401000104696d7369020003",
    "04043434303102050501070103040434343032020a00",
);

/// Two writers race to one path, many times: every call succeeds, leaves no
/// temporary file behind, and the file is always one writer's whole snapshot.
#[test]
fn concurrent_writers_to_one_path_each_publish_their_own_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.snap");
    let a = sample();
    let b = Database::new();
    b.create_table(
        "other",
        Schema::new(vec![Column::new("k", ColumnType::Int)], &["k"]).unwrap(),
    )
    .unwrap();
    std::thread::scope(|scope| {
        for db in [&a, &b] {
            let path = &path;
            scope.spawn(move || {
                for _ in 0..40 {
                    db.write_snapshot(path).expect("each write publishes");
                }
            });
        }
        for _ in 0..40 {
            if let Ok(loaded) = load(&path) {
                let c = contents(&loaded);
                assert!(c == contents(&a) || c == contents(&b), "a mix of writers");
            }
        }
    });
    let c = contents(&load(&path).unwrap());
    assert!(c == contents(&a) || c == contents(&b));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("db.snap")],
        "temporary files left"
    );
}
