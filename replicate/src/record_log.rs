//! A record log: a directory of append-only, checksummed segments of transactions in
//! sequence order. It has two users:
//!
//! - the primary's **difference file** (seed 002, seed 000 §4.3): while the peer is
//!   down, every operation not yet delivered is appended here, so that nothing is lost
//!   and the peer can be brought back by replaying it;
//! - the **peer's log** of what it resolved, so that a restarted peer recovers its
//!   state and tells the primary where to resume.
//!
//! Segments are named `diff-<first seq>.seg`. Each record is one frame of
//! [`crate::frame`]: `length (u32 LE) | CRC-32 of body (u32 LE) | body (postcard
//! LogRecord)`. Appends are
//! buffered and made durable by [`RecordLog::sync`] (one fsync per batch). After a
//! crash, the last segment may end in a torn record: opening detects it, keeps every
//! record before it and truncates the rest. Damage anywhere else is an error.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use kirikae_engine::Operation;
use serde::{Deserialize, Serialize};

use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result};
use crate::frame;
use crate::mode::Mode;
use crate::seq::Seq;

/// Records larger than this are taken for damage, not data.
pub(crate) const MAX_RECORD_BYTES: usize = 64 << 20;

/// One transaction of a record log (undelivered, in the difference file; resolved, in
/// the peer's log). A record with mode [`Mode::Skip`] and no operations marks a
/// sequence that was aborted (a sync transaction the peer may hold prepared).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Primary commit order; strictly increasing through the file.
    pub seq: Seq,
    /// The primary's epoch when it committed.
    pub epoch: Epoch,
    /// The mode its rules gave it.
    pub mode: Mode,
    /// Its writes.
    pub operations: Vec<Operation>,
}

/// Settings of a record log.
#[derive(Clone, Debug)]
pub struct RecordLogOptions {
    /// A new segment starts when the current one passes this size.
    pub segment_bytes: u64,
    /// Whether [`RecordLog::sync`] calls fsync (off only for tests and benches).
    pub fsync: bool,
}

impl Default for RecordLogOptions {
    fn default() -> Self {
        RecordLogOptions {
            segment_bytes: 64 << 20,
            fsync: true,
        }
    }
}

/// What opening found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Valid records found.
    pub records: u64,
    /// Bytes of a torn tail that were cut off.
    pub torn_bytes: u64,
    /// Highest sequence found.
    pub last_seq: Option<Seq>,
}

struct Segment {
    path: PathBuf,
    first_seq: u64,
    bytes: u64,
}

/// An open record log.
pub struct RecordLog {
    dir: PathBuf,
    options: RecordLogOptions,
    segments: Vec<Segment>,
    writer: Option<BufWriter<File>>,
    last_seq: Option<Seq>,
    cursor: Option<ReadCursor>,
}

/// Where the last [`RecordLog::read_batch`] stopped.
#[derive(Clone, Copy)]
struct ReadCursor {
    /// First sequence of the segment (its identity).
    segment: u64,
    /// Byte offset of the next record in it.
    offset: u64,
    /// The last sequence returned: a batch asking for records after it resumes here.
    after: u64,
}

/// Reads the record at `*offset`, advancing it.
fn read_record(reader: &mut impl Read, path: &Path, offset: &mut u64) -> Result<LogRecord> {
    let corrupt = |offset: u64, reason: String| ReplicateError::LogCorrupt {
        path: path.display().to_string(),
        offset,
        reason,
    };
    let mut header = [0u8; frame::HEADER_BYTES];
    reader
        .read_exact(&mut header)
        .map_err(|e| corrupt(*offset, format!("truncated header: {e}")))?;
    let (len, stored) = frame::header(&header, MAX_RECORD_BYTES)
        .map_err(|fault| corrupt(*offset, fault.to_string()))?
        .ok_or_else(|| corrupt(*offset, "truncated header".into()))?;
    let mut body = vec![0u8; len];
    reader
        .read_exact(&mut body)
        .map_err(|e| corrupt(*offset, format!("truncated record: {e}")))?;
    let record = frame::open::<LogRecord>(&body, stored)
        .map_err(|fault| corrupt(*offset, fault.to_string()))?;
    *offset += (frame::HEADER_BYTES + len) as u64;
    Ok(record)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReplicateError + '_ {
    move |source| ReplicateError::LogIo {
        path: path.display().to_string(),
        source,
    }
}

/// Decodes the records of one segment's bytes. Returns them and the offset where valid
/// data ends (less than `bytes.len()` if the tail is torn or damaged).
fn decode_segment(bytes: &[u8]) -> (Vec<LogRecord>, usize, Option<String>) {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match frame::decode::<LogRecord>(&bytes[at..], MAX_RECORD_BYTES) {
            Ok(Some((record, used))) => {
                records.push(record);
                at += used;
            }
            Ok(None) => return (records, at, Some("truncated record".into())),
            Err(fault) => return (records, at, Some(fault.to_string())),
        }
    }
    (records, at, None)
}

impl RecordLog {
    /// Opens (creating if needed) the record log in `dir`, recovering from a torn
    /// tail in its last segment.
    pub fn open(dir: &Path, options: RecordLogOptions) -> Result<(RecordLog, Recovery)> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if let Some(first_seq) = name
                .strip_prefix("diff-")
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                segments.push(Segment {
                    path,
                    first_seq,
                    bytes: 0,
                });
            }
        }
        segments.sort_by_key(|s| s.first_seq);
        let mut recovery = Recovery::default();
        let count = segments.len();
        for (i, seg) in segments.iter_mut().enumerate() {
            let bytes = fs::read(&seg.path).map_err(io(&seg.path))?;
            let (records, valid, problem) = decode_segment(&bytes);
            for r in &records {
                if recovery.last_seq.is_some_and(|last| r.seq <= last) {
                    return Err(ReplicateError::LogCorrupt {
                        path: seg.path.display().to_string(),
                        offset: 0,
                        reason: format!(
                            "sequence {} does not follow {:?}",
                            r.seq, recovery.last_seq
                        ),
                    });
                }
                recovery.last_seq = Some(r.seq);
            }
            recovery.records += records.len() as u64;
            if let Some(reason) = problem {
                if i + 1 < count {
                    return Err(ReplicateError::LogCorrupt {
                        path: seg.path.display().to_string(),
                        offset: valid as u64,
                        reason,
                    });
                }
                // The last segment ends in a torn write: keep what was whole.
                let file = OpenOptions::new()
                    .write(true)
                    .open(&seg.path)
                    .map_err(io(&seg.path))?;
                file.set_len(valid as u64).map_err(io(&seg.path))?;
                file.sync_all().map_err(io(&seg.path))?;
                recovery.torn_bytes = (bytes.len() - valid) as u64;
            }
            seg.bytes = valid as u64;
        }
        let file = RecordLog {
            dir: dir.to_owned(),
            options,
            segments,
            writer: None,
            last_seq: recovery.last_seq,
            cursor: None,
        };
        Ok((file, recovery))
    }

    /// Highest sequence appended.
    pub fn last_seq(&self) -> Option<Seq> {
        self.last_seq
    }

    /// Bytes held in all segments (appended, durable or not).
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Appends one record (buffered until [`sync`](RecordLog::sync)). Sequences
    /// must strictly increase.
    pub fn append(&mut self, record: &LogRecord) -> Result<()> {
        if let Some(last) = self.last_seq.filter(|&last| record.seq <= last) {
            return Err(ReplicateError::LogSequence {
                seq: record.seq,
                last,
            });
        }
        let framed = frame::encode(record, MAX_RECORD_BYTES).map_err(|fault| {
            ReplicateError::LogCorrupt {
                path: self.dir.display().to_string(),
                offset: self.bytes(),
                reason: format!("cannot encode sequence {}: {fault}", record.seq),
            }
        })?;
        let needs_segment = self
            .segments
            .last()
            .is_none_or(|s| s.bytes >= self.options.segment_bytes);
        if needs_segment || self.writer.is_none() {
            self.sync()?;
            if needs_segment {
                let path = self.dir.join(format!("diff-{:020}.seg", record.seq));
                self.segments.push(Segment {
                    path,
                    first_seq: record.seq.0,
                    bytes: 0,
                });
            }
            let path = &self.segments[self.segments.len() - 1].path;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(io(path))?;
            self.writer = Some(BufWriter::new(file));
        }
        let seg = self.segments.len() - 1;
        let path = self.segments[seg].path.clone();
        let w = self.writer.as_mut().ok_or_else(|| ReplicateError::LogIo {
            path: path.display().to_string(),
            source: std::io::Error::other("no open segment"),
        })?;
        w.write_all(&framed).map_err(io(&path))?;
        self.segments[seg].bytes += framed.len() as u64;
        self.last_seq = Some(record.seq);
        Ok(())
    }

    /// Hands buffered records to the OS (readable, not yet durable).
    fn flush(&mut self) -> Result<()> {
        if let Some(w) = self.writer.as_mut() {
            let path = self
                .segments
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            w.flush().map_err(io(&path))?;
        }
        Ok(())
    }

    /// Makes every appended record durable (flush, then fsync if configured).
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        if let (Some(w), true) = (self.writer.as_ref(), self.options.fsync) {
            let path = self
                .segments
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            w.get_ref().sync_data().map_err(io(&path))?;
        }
        Ok(())
    }

    /// Every record with a sequence above `after`, in order (for replay to a peer that
    /// has applied up to `after`). Reads what was appended, synced or not.
    pub fn read_after(&mut self, after: Seq) -> Result<Vec<LogRecord>> {
        self.read_batch(after, usize::MAX)
    }

    /// Up to `limit` records with a sequence above `after`, in order. A batch that
    /// continues where the previous one stopped resumes at its byte offset, so a
    /// catch-up reads the file once, not once per batch.
    pub fn read_batch(&mut self, after: Seq, limit: usize) -> Result<Vec<LogRecord>> {
        let after = after.0;
        self.flush()?;
        let mut out = Vec::new();
        // The last segment that can hold `after + 1`: earlier ones hold only older records.
        let first = self
            .segments
            .iter()
            .rposition(|s| s.first_seq <= after.saturating_add(1))
            .unwrap_or(0);
        for seg in &self.segments[first..] {
            let mut offset = match self.cursor {
                Some(c) if c.segment == seg.first_seq && c.after == after => c.offset,
                _ => 0,
            };
            if offset >= seg.bytes {
                continue;
            }
            let file = File::open(&seg.path).map_err(io(&seg.path))?;
            let mut reader = BufReader::with_capacity(1 << 20, file);
            reader
                .seek(SeekFrom::Start(offset))
                .map_err(io(&seg.path))?;
            while offset < seg.bytes {
                let record = read_record(&mut reader, &seg.path, &mut offset)?;
                if record.seq.0 > after {
                    let seq = record.seq.0;
                    out.push(record);
                    if out.len() >= limit {
                        self.cursor = Some(ReadCursor {
                            segment: seg.first_seq,
                            offset,
                            after: seq,
                        });
                        return Ok(out);
                    }
                }
            }
        }
        self.cursor = None;
        Ok(out)
    }

    /// Deletes segments whose records are all at or below `seq` (acknowledged by the
    /// peer). The segment being written is kept.
    pub fn retire_through(&mut self, seq: Seq) -> Result<usize> {
        let seq = seq.0;
        let mut retired = 0;
        while self.segments.len() > 1 && self.segments[1].first_seq <= seq + 1 {
            let seg = self.segments.remove(0);
            fs::remove_file(&seg.path).map_err(io(&seg.path))?;
            retired += 1;
        }
        if retired > 0 {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
        }
        Ok(retired)
    }
}

/// Test and fuzz support: the records of one segment's bytes, and whether its tail is
/// damaged (`Some(offset)` where valid data ends).
pub fn decode_segment_bytes(bytes: &[u8]) -> (Vec<LogRecord>, Option<usize>) {
    let (records, valid, problem) = decode_segment(bytes);
    (records, problem.map(|_| valid))
}
