//! The backup's access log (seed 000 §3; seed 003 Fig. 6: the log is durable before
//! the work it records is done): every transaction and decision the backup receives
//! is appended and made durable **before** it is applied, and an acknowledgement
//! means "logged". A restart loads the last [`Checkpoint`] and replays the log after
//! it, so a sync transaction prepared but not yet decided (in doubt) is held again,
//! and nothing acknowledged is lost.
//!
//! Segments are named by their first log position and creation time (UTC) and
//! retired by age and size, only behind a checkpoint.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use kirikae_engine::{Database, Operation};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::epoch::Epoch;
use crate::error::Result;
use crate::mode::Mode;
use crate::record_log::{io, sync_dir, LogEntry, RecordLogOptions, SegmentLog};
use crate::seq::Seq;
use crate::utc;

/// What the backup received for one sequence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AccessEntry {
    /// A transaction to apply and commit: async, ordered, or a sync one the primary
    /// committed alone and replayed.
    Ship {
        /// The mode its rules gave it.
        mode: Mode,
        /// Its writes.
        operations: Vec<Operation>,
    },
    /// A sync transaction to apply and hold open until its decision (in doubt until
    /// then).
    Prepare {
        /// Its writes.
        operations: Vec<Operation>,
        /// The primary's response digest of each operation: at a promotion, an
        /// in-doubt transaction is committed only if the backup's own match them.
        responses: Vec<u64>,
    },
    /// The decision for a prepared transaction: commit it.
    Commit,
    /// The sequence resolves as nothing: a prepared transaction rolled back, or one
    /// the backup never held.
    Abort,
    /// This node was promoted: its record's epoch is the new primary's, its sequence
    /// the takeover sequence. Nothing from a primary follows.
    Promoted,
}

/// One record of the access log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccessRecord {
    /// The record's place in the log (strictly increasing; decisions come after their
    /// transaction, so sequences alone do not order the log).
    pub position: u64,
    /// The primary's sequence of the transaction.
    pub seq: Seq,
    /// The primary's epoch that sent it.
    pub epoch: Epoch,
    /// When the backup logged it (milliseconds since the Unix epoch, UTC).
    pub created_ms: u64,
    /// What was received.
    pub entry: AccessEntry,
}

impl LogEntry for AccessRecord {
    const PREFIX: &'static str = "access";
    fn position(&self) -> u64 {
        self.position
    }
}

/// Present in the log directory while a resync is under way (see
/// [`AccessLog::begin_resync`]).
const RESYNC_MARKER: &str = "RESYNC";

/// Settings of the access log.
#[derive(Clone, Debug)]
pub struct AccessLogOptions {
    /// Segment size and fsync.
    pub segments: RecordLogOptions,
    /// A checkpoint is taken once the log has grown this much since the last one.
    pub checkpoint_bytes: u64,
    /// ... or once this much time has passed since the last one (with new records).
    pub checkpoint_every: Duration,
    /// Segments behind a checkpoint are kept until they are this old ...
    pub retain_age: Duration,
    /// ... or until the log holds more than this.
    pub retain_bytes: u64,
}

impl Default for AccessLogOptions {
    fn default() -> Self {
        AccessLogOptions {
            segments: RecordLogOptions::default(),
            checkpoint_bytes: 256 << 20,
            checkpoint_every: Duration::from_secs(300),
            retain_age: Duration::from_secs(3600),
            retain_bytes: 1 << 30,
        }
    }
}

impl AccessLogOptions {
    /// These options with fsync on or off (off only for tests and benches: an
    /// acknowledgement then survives a process crash, not a machine crash).
    pub fn with_fsync(mut self, fsync: bool) -> AccessLogOptions {
        self.segments.fsync = fsync;
        self
    }
}

/// The open access log and its checkpoint.
pub struct AccessLog {
    dir: PathBuf,
    options: AccessLogOptions,
    log: SegmentLog<AccessRecord>,
    checkpoint: Option<Checkpoint>,
    /// Log size when the last checkpoint was taken (or the log opened).
    bytes_at_checkpoint: u64,
    checkpoint_at: Instant,
}

/// What opening found: the checkpoint (already restored into the database) and the
/// records after it, to replay in order.
pub struct Reopened {
    /// The checkpoint restored, if any.
    pub checkpoint: Option<Checkpoint>,
    /// Records after the checkpoint's position.
    pub tail: Vec<AccessRecord>,
}

impl AccessLog {
    /// Opens the access log in `dir`, restores its checkpoint (if any) into
    /// `database`, and returns the records to replay.
    pub fn open(
        dir: &Path,
        options: AccessLogOptions,
        database: &Database,
    ) -> Result<(AccessLog, Reopened)> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // A resync that did not end in a checkpoint left nothing usable: the old
        // history was being replaced, the new one is incomplete. Start empty (the
        // primary resyncs again); positions go on after the last one.
        let resyncing = dir.join(RESYNC_MARKER).exists();
        let checkpoint = match resyncing {
            true => None,
            false => Checkpoint::load(dir)?,
        };
        if let Some(c) = &checkpoint {
            c.restore(dir, database)?;
        }
        let after = checkpoint.as_ref().map_or(0, |c| c.position);
        let mut tail = Vec::new();
        let (log, _, _) = SegmentLog::open_reading(dir, options.segments.clone(), after, |r| {
            if !resyncing {
                tail.push(r);
            }
        })?;
        let bytes_at_checkpoint = log.bytes();
        Ok((
            AccessLog {
                dir: dir.to_owned(),
                options,
                log,
                checkpoint: checkpoint.clone(),
                bytes_at_checkpoint,
                checkpoint_at: Instant::now(),
            },
            Reopened { checkpoint, tail },
        ))
    }

    /// Appends what was received for `seq` (buffered until [`sync`](AccessLog::sync));
    /// returns its position, and the entry back (it is encoded, not copied).
    pub fn append(
        &mut self,
        seq: Seq,
        epoch: Epoch,
        entry: AccessEntry,
    ) -> Result<(u64, AccessEntry)> {
        let position = self.next_position();
        let record = AccessRecord {
            position,
            seq,
            epoch,
            created_ms: utc::unix_ms(SystemTime::now()),
            entry,
        };
        self.log.append(&record)?;
        Ok((position, record.entry))
    }

    /// The position the next record gets.
    pub fn next_position(&self) -> u64 {
        self.log
            .last_position()
            .or(self.checkpoint.as_ref().map(|c| c.position))
            .map_or(1, |p| p + 1)
    }

    /// A resync begins: until the checkpoint that ends it, a restart
    /// ignores the checkpoint and the log (they describe a history being replaced)
    /// and starts empty. Durable on return.
    pub fn begin_resync(&mut self) -> Result<()> {
        let marker = self.dir.join(RESYNC_MARKER);
        std::fs::File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(io(&marker))?;
        sync_dir(&self.dir)?;
        // What the log holds is of the history being replaced: an interrupted
        // resync's attempts must not pile up on disk.
        let through = self.next_position().saturating_sub(1);
        self.log.retire_positions(through)?;
        Ok(())
    }

    /// Whether a resync began and has not ended in a checkpoint yet.
    pub fn resyncing(&self) -> bool {
        self.dir.join(RESYNC_MARKER).exists()
    }

    /// The resync's result is in a checkpoint: restarts use it again.
    fn end_resync(&mut self) -> Result<()> {
        let marker = self.dir.join(RESYNC_MARKER);
        match std::fs::remove_file(&marker) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&marker)(e)),
        }
    }

    /// Up to `limit` records with a position above `after`, in order (what a resync
    /// logged beside the copy, read back to be applied).
    pub fn read_after(&mut self, after: u64, limit: usize) -> Result<Vec<AccessRecord>> {
        self.log.read_positions(after, limit)
    }

    /// Makes everything appended durable.
    pub fn sync(&mut self) -> Result<()> {
        self.log.sync()
    }

    /// Bytes held in the log's segments.
    pub fn bytes(&self) -> u64 {
        self.log.bytes()
    }

    /// Segment files held.
    pub fn segments(&self) -> usize {
        self.log.segment_count()
    }

    /// The current checkpoint.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// Whether a checkpoint is due (the log grew past `checkpoint_bytes`, or
    /// `checkpoint_every` passed with new records).
    pub fn checkpoint_due(&self) -> bool {
        let grown = self.log.bytes().saturating_sub(self.bytes_at_checkpoint);
        grown >= self.options.checkpoint_bytes
            || (grown > 0 && self.checkpoint_at.elapsed() >= self.options.checkpoint_every)
    }

    /// Takes a checkpoint of `database` as `covered` says (its `position`: replay
    /// starts after it), then retires the segments behind it that are past their
    /// retention. Returns the segments retired.
    pub fn take_checkpoint(&mut self, covered: Checkpoint, database: &Database) -> Result<usize> {
        let taken = covered.take(&self.dir, database)?;
        self.checkpoint_taken(taken)
    }

    /// Starts a checkpoint as `covered` says: `database`'s rows are collected here
    /// (commits wait only for that), and written on a thread of its own; hand what it
    /// returns to [`checkpoint_taken`](AccessLog::checkpoint_taken).
    pub fn begin_checkpoint(
        &self,
        covered: Checkpoint,
        database: &Database,
    ) -> Result<std::thread::JoinHandle<Result<Checkpoint>>> {
        let image = database.snapshot_image();
        let dir = self.dir.clone();
        std::thread::Builder::new()
            .name("kirikae-checkpoint".into())
            .spawn(move || covered.write(&dir, &image))
            .map_err(io(&self.dir))
    }

    /// A checkpoint is durable: restarts use it, and the segments behind it past
    /// their retention are retired (how many is returned).
    pub fn checkpoint_taken(&mut self, taken: Checkpoint) -> Result<usize> {
        let behind = taken.position;
        self.checkpoint = Some(taken);
        self.end_resync()?;
        self.checkpoint_at = Instant::now();
        let retired = self.log.retire_behind(
            behind,
            self.options.retain_age,
            self.options.retain_bytes,
            SystemTime::now(),
        )?;
        self.bytes_at_checkpoint = self.log.bytes();
        Ok(retired)
    }
}
