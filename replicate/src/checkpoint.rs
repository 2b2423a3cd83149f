//! The backup's checkpoint: a snapshot of its database at a replication position,
//! and the access-log position from which a restart replays (seed 000 §5.1: restore a
//! snapshot, then apply the log written after it).
//!
//! Files in the log directory: `checkpoint-<applied seq>.snap` (an engine snapshot)
//! and `CHECKPOINT`, one frame ([`crate::frame`]) naming the current snapshot. The
//! manifest is replaced atomically (temporary file, fsync, rename, directory fsync)
//! after its snapshot is durable, so a crash leaves the old checkpoint or the new one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use kirikae_engine::{Database, SnapshotImage};
use serde::{Deserialize, Serialize};

use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result};
use crate::frame;
use crate::record_log::{files_in, io, sync_dir};
use crate::seq::Seq;

const MANIFEST: &str = "CHECKPOINT";
/// A manifest is a few numbers and a name; anything larger is damage.
const MANIFEST_BYTES_MAX: usize = 1 << 20;

/// What a checkpoint covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every sequence up to here is in the snapshot.
    pub applied: Seq,
    /// Sequences above `applied` whose transactions are committed in the snapshot too
    /// (a sync transaction still held below them kept `applied` from passing them).
    pub also_applied: Vec<Seq>,
    /// The highest epoch seen.
    pub epoch: Epoch,
    /// A restart replays access-log records above this position.
    pub position: u64,
    /// The snapshot's file name, in the same directory.
    pub snapshot: String,
    /// When it was taken (milliseconds since the Unix epoch, UTC).
    pub created_ms: u64,
}

fn corrupt(path: &Path, reason: String) -> ReplicateError {
    ReplicateError::LogCorrupt {
        path: path.display().to_string(),
        offset: 0,
        reason,
    }
}

impl Checkpoint {
    /// The checkpoint in `dir`, if one was taken.
    pub fn load(dir: &Path) -> Result<Option<Checkpoint>> {
        let path = dir.join(MANIFEST);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        match frame::decode::<Checkpoint>(&bytes, MANIFEST_BYTES_MAX) {
            Ok(Some((c, used))) if used == bytes.len() => {
                if c.snapshot.contains(['/', '\\']) || c.snapshot.starts_with('.') {
                    return Err(corrupt(&path, format!("snapshot name {:?}", c.snapshot)));
                }
                Ok(Some(c))
            }
            Ok(Some((_, used))) => Err(corrupt(
                &path,
                format!("{} bytes after the manifest", bytes.len() - used),
            )),
            Ok(None) => Err(corrupt(&path, "truncated manifest".into())),
            Err(fault) => Err(corrupt(&path, fault.to_string())),
        }
    }

    /// The snapshot file's path.
    pub fn snapshot_path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.snapshot)
    }

    /// Snapshots `database` into `dir` and makes this checkpoint (with `snapshot` set
    /// here) the current one; older snapshots are deleted. Durable on return.
    pub fn take(self, dir: &Path, database: &Database) -> Result<Checkpoint> {
        self.write(dir, &database.snapshot_image())
    }

    /// [`take`](Checkpoint::take) with the database's rows already collected (the
    /// slow part, writing, may then run on another thread).
    pub fn write(mut self, dir: &Path, image: &SnapshotImage) -> Result<Checkpoint> {
        self.snapshot = format!("checkpoint-{:020}.snap", self.applied.0);
        let snapshot = self.snapshot_path(dir);
        image.write(&snapshot)?;
        let framed = frame::encode(&self, MANIFEST_BYTES_MAX)
            .map_err(|fault| corrupt(&dir.join(MANIFEST), fault.to_string()))?;
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        {
            let mut file = File::create(&tmp).map_err(io(&tmp))?;
            file.write_all(&framed).map_err(io(&tmp))?;
            file.sync_all().map_err(io(&tmp))?;
        }
        let manifest = dir.join(MANIFEST);
        fs::rename(&tmp, &manifest).map_err(io(&manifest))?;
        sync_dir(dir)?;
        for (path, name) in files_in(dir)? {
            if name.starts_with("checkpoint-") && name.ends_with(".snap") && name != self.snapshot {
                fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        Ok(self)
    }

    /// Loads the snapshot's tables into `database`, replacing tables of the same name.
    pub fn restore(&self, dir: &Path, database: &Database) -> Result<()> {
        let loaded = Database::open_snapshot(&self.snapshot_path(dir), database.config().clone())?;
        for table in loaded.tables() {
            if database.table(table.name()).is_ok() {
                database.drop_table(table.name())?;
            }
            database.add_table(table)?;
        }
        Ok(())
    }
}
