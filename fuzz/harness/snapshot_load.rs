//! Fuzz harness: arbitrary bytes as a snapshot, as they are and as a body behind a
//! repaired header and checksum. Loading never panics; whatever loads re-encodes and
//! reloads to the same contents.

use kirikae_engine::{Database, EngineConfig, Rid, RowRef};

type Contents = Vec<(String, Vec<(Rid, RowRef)>)>;

fn contents(db: &Database) -> Contents {
    db.tables()
        .iter()
        .map(|t| (t.name().to_owned(), t.rows()))
        .collect()
}

/// Runs one input.
pub fn run(data: &[u8]) {
    load(data);
    load(&crate::repair::snapshot(data));
}

fn load(data: &[u8]) {
    let Ok(db) = Database::from_snapshot_bytes(data, EngineConfig::default()) else {
        return;
    };
    let (bytes, _) = db.snapshot_bytes().expect("a loaded database encodes");
    let again = Database::from_snapshot_bytes(&bytes, EngineConfig::default())
        .expect("re-encoded bytes load");
    assert_eq!(contents(&db), contents(&again));
}
