//! Snapshots: every table (schema and rows, with their RIDs) in one file. Loading
//! keeps each RID below a bound set by the table's row count (see
//! `kept_rid_bound`); a row beyond it is given a fresh RID.
//!
//! Layout: magic (8 bytes) | format version (u32 LE) | body length (u64 LE) |
//! body CRC-32 (u32 LE) | body (postcard). Written to a temporary file, fsynced, then
//! renamed over the target and the directory fsynced: a crash leaves the old file or
//! the new one, never a mix.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::database::Database;
use crate::db_inner::EngineConfig;
use crate::error::{EngineError, Result};
use crate::rid::Rid;
use crate::schema::{Row, RowRef, Schema};
use crate::table::Table;
use crate::value::Value;

/// First bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"KRKSNAP\0";
/// The snapshot format version this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 4;

#[derive(Serialize)]
struct BodyOut<'a> {
    tables: Vec<TableOut<'a>>,
}

#[derive(Serialize)]
struct TableOut<'a> {
    name: &'a str,
    schema: &'a Schema,
    rows: Vec<(Rid, &'a [Value])>,
}

#[derive(Deserialize)]
struct BodyIn {
    tables: Vec<TableIn>,
}

#[derive(Deserialize)]
struct TableIn {
    name: String,
    schema: Schema,
    rows: Vec<(Rid, Row)>,
}

/// What a snapshot held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Tables written or loaded.
    pub tables: usize,
    /// Records written or loaded.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
}

fn memory_label() -> PathBuf {
    PathBuf::from("<memory>")
}

/// Every table's rows as they were at one moment, collected by
/// [`Database::snapshot_image`] and encoded or written later, on any thread: only
/// the collection holds up multi-record commits.
pub struct SnapshotImage {
    tables: Vec<TableImage>,
}

/// A table and its rows, as collected.
type TableImage = (Arc<Table>, Vec<(Rid, RowRef)>);

impl SnapshotImage {
    /// The snapshot's bytes.
    pub fn encode(&self) -> Result<(Vec<u8>, SnapshotStats)> {
        let body = BodyOut {
            tables: self
                .tables
                .iter()
                .map(|(t, rows)| TableOut {
                    name: t.name(),
                    schema: t.schema(),
                    rows: rows.iter().map(|(rid, row)| (*rid, &**row)).collect(),
                })
                .collect(),
        };
        let payload = postcard::to_stdvec(&body).map_err(|e| EngineError::SnapshotInvalid {
            path: memory_label(),
            table: String::new(),
            reason: format!("encode: {e}"),
        })?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        bytes.extend_from_slice(&SNAPSHOT_MAGIC);
        bytes.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let stats = SnapshotStats {
            tables: self.tables.len(),
            rows: self.tables.iter().map(|(_, r)| r.len() as u64).sum(),
            bytes: bytes.len() as u64,
        };
        Ok((bytes, stats))
    }

    /// Writes the snapshot to `path` atomically and durably.
    pub fn write(&self, path: &Path) -> Result<SnapshotStats> {
        let (bytes, stats) = self.encode()?;
        let io = |source| EngineError::SnapshotIo {
            path: path.to_owned(),
            source,
        };
        // A temporary name of this call's own: two writers to one path each rename
        // their own file, so a call that returns Ok published its own data.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(
            ".tmp.{}.{}",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = path.with_file_name(tmp_name);
        let written = File::create(&tmp).and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        });
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
            let _ = fs::remove_file(&tmp);
            return Err(io(e));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(stats)
    }
}

impl Database {
    /// Collects every table's rows at one moment (no transaction seen in part):
    /// multi-record commits wait while the rows are collected, not while they are
    /// encoded or written.
    pub fn snapshot_image(&self) -> SnapshotImage {
        let tables = self.tables();
        let _exclusive = self.inner.commit_latch.write();
        SnapshotImage {
            tables: tables
                .into_iter()
                .map(|t| {
                    let rows = t.scan(Rid(0), usize::MAX);
                    (t, rows)
                })
                .collect(),
        }
    }

    /// Encodes every table into snapshot bytes (see [`Database::snapshot_image`]).
    pub fn snapshot_bytes(&self) -> Result<(Vec<u8>, SnapshotStats)> {
        self.snapshot_image().encode()
    }

    /// Writes a snapshot of every table to `path` atomically and durably.
    pub fn write_snapshot(&self, path: &Path) -> Result<SnapshotStats> {
        self.snapshot_image().write(path)
    }

    /// Loads a database from a snapshot file.
    pub fn open_snapshot(path: &Path, config: EngineConfig) -> Result<Database> {
        let bytes = fs::read(path).map_err(|source| EngineError::SnapshotIo {
            path: path.to_owned(),
            source,
        })?;
        Database::from_snapshot_bytes_at(&bytes, config, path)
    }

    /// Loads a database from snapshot bytes (e.g. received from a peer).
    pub fn from_snapshot_bytes(bytes: &[u8], config: EngineConfig) -> Result<Database> {
        Database::from_snapshot_bytes_at(bytes, config, &memory_label())
    }

    fn from_snapshot_bytes_at(bytes: &[u8], config: EngineConfig, path: &Path) -> Result<Database> {
        let payload = check_header(bytes, path)?;
        let invalid = |table: &str, reason: String| EngineError::SnapshotInvalid {
            path: path.to_owned(),
            table: table.to_owned(),
            reason,
        };
        let (body, rest): (BodyIn, &[u8]) =
            postcard::take_from_bytes(payload).map_err(|e| invalid("", format!("decode: {e}")))?;
        if !rest.is_empty() {
            return Err(invalid("", format!("{} bytes after the body", rest.len())));
        }
        let db = Database::with_config(config);
        for image in body.tables {
            let table = Table::new(image.name.clone(), image.schema);
            // Rows keep their RIDs up to a bound set by the row count; a row beyond it
            // gets a fresh RID. Slots are allocated up to the highest RID claimed, so
            // a RID taken on trust would let a few bytes of snapshot ask for any
            // amount of memory. Nothing outside the table refers to a RID across a
            // snapshot (replication and restructures address rows by key).
            let rid_bound = kept_rid_bound(image.rows.len());
            let mut renumbered = Vec::new();
            for (rid, row) in image.rows {
                if rid.0 < rid_bound {
                    table
                        .install_at(rid, row)
                        .map_err(|e| invalid(&image.name, format!("RID {}: {e}", rid.0)))?;
                } else {
                    renumbered.push(row);
                }
            }
            for row in renumbered {
                table
                    .install(row)
                    .map_err(|e| invalid(&image.name, e.to_string()))?;
            }
            db.add_table(Arc::new(table))
                .map_err(|e| invalid(&image.name, e.to_string()))?;
        }
        Ok(db)
    }
}

/// Rows of a table of `rows` keep their RIDs below this: twice the row count, and
/// at least 65,536, so a table with a few holes left by deletes loads as it was.
pub(crate) fn kept_rid_bound(rows: usize) -> u64 {
    (rows as u64).saturating_mul(2).max(1 << 16)
}

/// Validates the header and checksum; returns the body.
fn check_header<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a [u8]> {
    let truncated = |expected: usize| EngineError::SnapshotTruncated {
        path: path.to_owned(),
        expected_bytes: expected as u64,
        found_bytes: bytes.len() as u64,
    };
    let magic_len = bytes.len().min(SNAPSHOT_MAGIC.len());
    if bytes[..magic_len] != SNAPSHOT_MAGIC[..magic_len] || bytes.is_empty() {
        return Err(EngineError::SnapshotBadMagic {
            path: path.to_owned(),
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(truncated(HEADER_LEN));
    }
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let version = u32_at(8);
    if version != SNAPSHOT_VERSION {
        return Err(EngineError::SnapshotVersion {
            path: path.to_owned(),
            found: version,
            supported: SNAPSHOT_VERSION,
        });
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&bytes[12..20]);
    let body_len = u64::from_le_bytes(len_bytes);
    let stored = u32_at(20);
    let available = (bytes.len() - HEADER_LEN) as u64;
    if body_len > available {
        let expected = (HEADER_LEN as u64).saturating_add(body_len);
        return Err(EngineError::SnapshotTruncated {
            path: path.to_owned(),
            expected_bytes: expected,
            found_bytes: bytes.len() as u64,
        });
    }
    if body_len < available {
        return Err(EngineError::SnapshotInvalid {
            path: path.to_owned(),
            table: String::new(),
            reason: format!("{} bytes after the body", available - body_len),
        });
    }
    let body = &bytes[HEADER_LEN..];
    let computed = crc32fast::hash(body);
    if computed != stored {
        return Err(EngineError::SnapshotChecksum {
            path: path.to_owned(),
            stored,
            computed,
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;
    use crate::schema::Column;
    use crate::value::ColumnType;

    /// Snapshot bytes of one table `t(k int key)` with `rows` at the given RIDs.
    fn forged(rows: &[(u64, i64)]) -> Vec<u8> {
        let schema = Schema::new(vec![Column::new("k", ColumnType::Int)], &["k"]).unwrap();
        let values: Vec<Vec<Value>> = rows.iter().map(|(_, k)| vec![Value::Int(*k)]).collect();
        let body = BodyOut {
            tables: vec![TableOut {
                name: "t",
                schema: &schema,
                rows: rows
                    .iter()
                    .zip(&values)
                    .map(|((rid, _), v)| (Rid(*rid), v.as_slice()))
                    .collect(),
            }],
        };
        let payload = postcard::to_stdvec(&body).unwrap();
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes
    }

    #[test]
    fn a_row_at_a_huge_rid_costs_no_memory_in_proportion_to_it() {
        for rid in [4_000_000_000_000, u64::MAX - 1, u64::MAX] {
            let bytes = forged(&[(rid, 7), (3, 8)]);
            assert!(bytes.len() < 80, "{} bytes", bytes.len());
            let db = Database::from_snapshot_bytes(&bytes, EngineConfig::default()).unwrap();
            let t = db.table("t").unwrap();
            assert_eq!(t.len(), 2);
            assert!(t.rid_bound() <= kept_rid_bound(2), "{}", t.rid_bound());
            assert_eq!(t.get_with_rid(&Key::from(8)).unwrap().0, Rid(3), "kept");
            assert!(t.get(&Key::from(7)).is_some(), "renumbered, not lost");
        }
    }

    #[test]
    fn a_table_with_holes_keeps_its_rids_and_a_taken_rid_is_an_error() {
        let bytes = forged(&[(0, 1), (500, 2), (65_535, 3)]);
        let db = Database::from_snapshot_bytes(&bytes, EngineConfig::default()).unwrap();
        let t = db.table("t").unwrap();
        for (rid, k) in [(0, 1), (500, 2), (65_535, 3)] {
            assert_eq!(t.get_with_rid(&Key::from(k)).unwrap().0, Rid(rid));
        }
        let err =
            Database::from_snapshot_bytes(&forged(&[(5, 1), (5, 2)]), EngineConfig::default())
                .unwrap_err();
        assert!(err.to_string().contains("RID 5"), "{err}");
    }
}
