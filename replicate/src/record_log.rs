//! A record log: a directory of append-only, checksummed segments of records in
//! strictly increasing position. It has two users:
//!
//! - the primary's **difference file** (seed 002, seed 000 §4.3) of [`LogRecord`]s,
//!   positioned by sequence: while the backup is down, every operation not yet
//!   delivered is appended here, so that nothing is lost and the backup can be
//!   brought back by replaying it;
//! - the backup's **access log** ([`AccessRecord`](crate::AccessRecord)s): every
//!   message received, made durable before it is applied.
//!
//! Segments are named `<prefix>-<first position>-<creation time, UTC>.seg` (seed 003
//! \[0079\]: log files named by their creation time, retired by age), e.g.
//! `diff-00000000000000000001-20261122T105103Z.seg`. Each record is one frame of
//! [`crate::frame`]: `length (u32 LE) | CRC-32 of body (u32 LE) | body (postcard)`.
//! Appends are
//! buffered and made durable by [`SegmentLog::sync`] (one fsync per batch). After a
//! crash, the last segment may end in a torn record: opening detects it, keeps every
//! record before it and truncates the rest. Damage anywhere else is an error, and so
//! is damage in the last segment that a whole record follows: a crash tears only a
//! log's end, so those bytes went bad in place, and cutting them would drop the
//! records after them (acknowledged ones, perhaps) without a word.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result};
use crate::frame::{self, FrameFault};
use crate::mode::Mode;
use crate::seq::Seq;
use crate::utc;
use crate::writes::Writes;

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
    /// Its writes (on the primary, as the committing thread encoded them).
    pub operations: Writes,
}

/// A record's fields before its writes.
type RecordHead = (Seq, Epoch, Mode);

impl LogRecord {
    /// The fields before the writes and the writes' encoding, if the committing
    /// thread made one: postcard writes a record's fields in order with nothing in
    /// between, so the encoding is spliced in after them.
    fn spliced(&self) -> Option<(RecordHead, &[u8])> {
        Some((
            (self.seq, self.epoch, self.mode),
            self.operations.encoding()?,
        ))
    }

    /// The length of this record's frame, header included, computed without
    /// encoding it.
    pub(crate) fn frame_len(&self) -> usize {
        match self.spliced() {
            Some((head, encoding)) => frame::spliced_len(&head, encoding, &()),
            None => frame::encoded_len(self),
        }
    }
}

/// What a record log holds: records with a strictly increasing position.
pub trait LogEntry: Serialize + DeserializeOwned {
    /// Segment file names start with this (`diff`, `access`).
    const PREFIX: &'static str;
    /// Strictly increasing through a log.
    fn position(&self) -> u64;
    /// Appends this entry's frame (length, CRC-32, postcard payload) to `out`.
    fn frame_into(&self, max_payload_bytes: usize, out: &mut Vec<u8>) -> Result<(), FrameFault> {
        frame::encode_into(self, max_payload_bytes, out)
    }
    /// The entry in a frame's `payload`, read back from a log this process opened:
    /// opening decoded every record there in full (see `decode_segment`), and what
    /// was appended since, this process wrote. The checksum is verified.
    fn read_back(payload: &[u8], stored_crc: u32) -> Result<Self, FrameFault> {
        frame::open(payload, stored_crc)
    }
}

impl LogEntry for LogRecord {
    const PREFIX: &'static str = "diff";
    fn position(&self) -> u64 {
        self.seq.0
    }
    /// Writes the committing thread encoded are spliced in as they are.
    fn frame_into(&self, max_payload_bytes: usize, out: &mut Vec<u8>) -> Result<(), FrameFault> {
        match self.spliced() {
            Some((head, encoding)) => {
                frame::encode_spliced_into(&head, encoding, &(), max_payload_bytes, out)
            }
            None => frame::encode_into(self, max_payload_bytes, out),
        }
    }
    /// The writes are kept as the bytes they were stored as, not decoded: a
    /// catch-up sends them on as they are (spliced into the frame), and decoding
    /// them only to encode them again took more than half of the primary's CPU
    /// while replaying its difference file to a backup.
    fn read_back(payload: &[u8], stored_crc: u32) -> Result<Self, FrameFault> {
        frame::check(payload, stored_crc)?;
        let ((seq, epoch, mode), writes) = postcard::take_from_bytes::<RecordHead>(payload)
            .map_err(|e| FrameFault::Undecodable(e.to_string()))?;
        if writes.is_empty() {
            return Err(FrameFault::Undecodable(
                "no writes after the record's sequence, epoch and mode".into(),
            ));
        }
        Ok(LogRecord {
            seq,
            epoch,
            mode,
            operations: Writes::from_encoding(writes),
        })
    }
}

/// Settings of a record log.
#[derive(Clone, Debug)]
pub struct RecordLogOptions {
    /// A new segment starts when the current one passes this size.
    pub segment_bytes: u64,
    /// Whether [`SegmentLog::sync`] calls fsync (off only for tests and benches).
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
    /// Highest position found (the sequence, for a difference file).
    pub last_seq: Option<Seq>,
}

struct Segment {
    path: PathBuf,
    /// Position of its first record.
    first: u64,
    /// When it was created (from its name; `None` for a name without a time).
    created: Option<SystemTime>,
    bytes: u64,
}

/// An open log of `R`s in segment files (see the module docs).
pub struct SegmentLog<R: LogEntry> {
    dir: PathBuf,
    options: RecordLogOptions,
    segments: Vec<Segment>,
    writer: Option<BufWriter<File>>,
    last: Option<u64>,
    cursor: Option<ReadCursor>,
    /// A failed write's fragment still to be cut from the current segment: the
    /// segment's length before that write (see [`SegmentLog::append`]).
    fragment_from: Option<u64>,
    entry: PhantomData<fn() -> R>,
}

/// Where the last [`RecordLog::read_batch`] stopped.
#[derive(Clone, Copy)]
struct ReadCursor {
    /// First position of the segment (its identity).
    segment: u64,
    /// Byte offset of the next record in it.
    offset: u64,
    /// The last position returned: a batch asking for records after it resumes here.
    after: u64,
}

/// Reads the record at `*offset`, advancing it.
fn read_record<R: LogEntry>(reader: &mut impl Read, path: &Path, offset: &mut u64) -> Result<R> {
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
    let record =
        R::read_back(&body, stored).map_err(|fault| corrupt(*offset, fault.to_string()))?;
    *offset += (frame::HEADER_BYTES + len) as u64;
    Ok(record)
}

/// Makes `dir`'s entries (files created, renamed or removed) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// The files of `dir`, each with its name (a name that is not UTF-8 reads as empty,
/// so it matches no pattern of ours).
pub(crate) fn files_in(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        files.push((path, name));
    }
    Ok(files)
}

/// Maps an I/O error on `path` to [`ReplicateError::LogIo`].
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReplicateError + '_ {
    move |source| ReplicateError::LogIo {
        path: path.display().to_string(),
        source,
    }
}

/// Why a segment's bytes stop being records before their end.
struct Damage {
    /// What is wrong with the bytes where the records stop.
    reason: String,
    /// What comes after them.
    after: AfterDamage,
}

/// What follows the bytes where a segment's records stop. A crash tears only what was
/// written last, so bytes that a whole record follows were damaged in place (a
/// flipped bit, a bad sector): cutting them as a torn tail would silently drop the
/// records after them.
enum AfterDamage {
    /// No whole record: a torn tail, cut when it ends the log.
    Nothing,
    /// A whole record starts at this offset: damage, refused.
    RecordAt(usize),
    /// The search spent [`DAMAGE_SEARCH_BYTES`] without deciding, at this offset:
    /// refused too, since refusing to open loses nothing and guessing "torn" might.
    Undecided(usize),
}

impl Damage {
    /// The reason a segment with this damage is refused, or `None` if it is a torn
    /// tail (which only the log's last segment may have).
    fn refusal(self, last_segment: bool) -> Option<String> {
        match self.after {
            AfterDamage::Nothing if last_segment => None,
            AfterDamage::Nothing => Some(self.reason),
            AfterDamage::RecordAt(at) => Some(format!(
                "{}, and a whole record follows at byte {at}: damaged in place, not torn by a crash",
                self.reason
            )),
            AfterDamage::Undecided(at) => Some(format!(
                "{}, and whether a whole record follows is undecided at byte {at}",
                self.reason
            )),
        }
    }
}

/// Bytes a search for a whole record after damage may checksum: every offset's
/// header names a length, and hostile bytes could make the search quadratic.
const DAMAGE_SEARCH_BYTES: u64 = 1 << 30;

/// Decodes the records of one segment's bytes. Returns them, the offset where valid
/// data ends (less than `bytes.len()` if the tail is torn or damaged), and why.
fn decode_segment<R: LogEntry>(bytes: &[u8]) -> (Vec<R>, usize, Option<Damage>) {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let reason = match frame::decode::<R>(&bytes[at..], MAX_RECORD_BYTES) {
            Ok(Some((record, used))) => {
                records.push(record);
                at += used;
                continue;
            }
            Ok(None) => "truncated record".to_owned(),
            Err(fault) => fault.to_string(),
        };
        let damage = Damage {
            reason,
            after: next_record_at::<R>(bytes, at + 1),
        };
        return (records, at, Some(damage));
    }
    (records, at, None)
}

/// Whether a whole record of `R` starts at or after `from`, and where.
fn next_record_at<R: LogEntry>(bytes: &[u8], from: usize) -> AfterDamage {
    let mut hashed = 0u64;
    for at in from..bytes.len() {
        let Ok(Some((len, _))) = frame::header(&bytes[at..], MAX_RECORD_BYTES) else {
            continue;
        };
        if at + frame::HEADER_BYTES + len > bytes.len() {
            continue;
        }
        hashed += len as u64;
        if hashed > DAMAGE_SEARCH_BYTES {
            return AfterDamage::Undecided(at);
        }
        if let Ok(Some(_)) = frame::decode::<R>(&bytes[at..], MAX_RECORD_BYTES) {
            return AfterDamage::RecordAt(at);
        }
    }
    AfterDamage::Nothing
}

/// A segment file's first position and creation time, if `name` is one of `prefix`'s
/// (`<prefix>-<first>[-<UTC time>].seg`).
fn parse_segment_name(name: &str, prefix: &str) -> Option<(u64, Option<SystemTime>)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let rest = rest.strip_suffix(".seg")?;
    let (first, created) = match rest.split_once('-') {
        Some((first, time)) => (first, Some(utc::parse_compact(time)?)),
        None => (rest, None),
    };
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((first.parse().ok()?, created))
}

/// A log of [`LogRecord`]s, positioned by sequence: the difference file.
pub type RecordLog = SegmentLog<LogRecord>;

impl<R: LogEntry> SegmentLog<R> {
    /// Opens (creating if needed) the record log in `dir`, recovering from a torn
    /// tail in its last segment.
    pub fn open(dir: &Path, options: RecordLogOptions) -> Result<(SegmentLog<R>, Recovery)> {
        let (log, recovery, _) = Self::open_reading(dir, options, 0, |_| ())?;
        Ok((log, recovery))
    }

    /// Opens the log and hands every record above position `after` to `each`, in
    /// order, reading the files once. Returns the log, what opening found, and how
    /// many records were handed over.
    pub fn open_reading(
        dir: &Path,
        options: RecordLogOptions,
        after: u64,
        mut each: impl FnMut(R),
    ) -> Result<(SegmentLog<R>, Recovery, u64)> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut segments = Vec::new();
        for (path, name) in files_in(dir)? {
            if let Some((first, created)) = parse_segment_name(&name, R::PREFIX) {
                segments.push(Segment {
                    path,
                    first,
                    created,
                    bytes: 0,
                });
            }
        }
        segments.sort_by_key(|s| s.first);
        let mut recovery = Recovery::default();
        let mut last: Option<u64> = None;
        let mut handed = 0u64;
        let count = segments.len();
        for (i, seg) in segments.iter_mut().enumerate() {
            let bytes = fs::read(&seg.path).map_err(io(&seg.path))?;
            let (records, valid, problem) = decode_segment::<R>(&bytes);
            recovery.records += records.len() as u64;
            for r in records {
                let position = r.position();
                if last.is_some_and(|l| position <= l) || position < seg.first {
                    return Err(ReplicateError::LogCorrupt {
                        path: seg.path.display().to_string(),
                        offset: 0,
                        reason: format!("position {position} does not follow {last:?}"),
                    });
                }
                last = Some(position);
                if position > after {
                    handed += 1;
                    each(r);
                }
            }
            if let Some(damage) = problem {
                if let Some(reason) = damage.refusal(i + 1 == count) {
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
        recovery.last_seq = last.map(Seq);
        let log = SegmentLog {
            dir: dir.to_owned(),
            options,
            segments,
            writer: None,
            last,
            cursor: None,
            fragment_from: None,
            entry: PhantomData,
        };
        Ok((log, recovery, handed))
    }

    /// Highest position appended.
    pub fn last_position(&self) -> Option<u64> {
        self.last
    }

    /// Bytes held in all segments (appended, durable or not).
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Segment files held.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Appends one record (buffered until [`sync`](SegmentLog::sync)). Positions must
    /// strictly increase.
    pub fn append(&mut self, record: &R) -> Result<()> {
        let position = record.position();
        if let Some(last) = self.last.filter(|&last| position <= last) {
            return Err(ReplicateError::LogSequence { position, last });
        }
        let mut framed = Vec::new();
        record
            .frame_into(MAX_RECORD_BYTES, &mut framed)
            .map_err(|fault| ReplicateError::LogCorrupt {
                path: self.dir.display().to_string(),
                offset: self.bytes(),
                reason: format!("cannot encode position {position}: {fault}"),
            })?;
        self.cut_fragment()?;
        let needs_segment = self
            .segments
            .last()
            .is_none_or(|s| s.bytes >= self.options.segment_bytes);
        if needs_segment || self.writer.is_none() {
            self.sync()?;
            if needs_segment {
                let now = SystemTime::now();
                let name = format!(
                    "{}-{position:020}-{}.seg",
                    R::PREFIX,
                    utc::compact(utc::unix_secs(now))
                );
                self.segments.push(Segment {
                    path: self.dir.join(name),
                    first: position,
                    created: Some(now),
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
        if let Err(e) = w.write_all(&framed) {
            // A record as large as the buffer goes straight to the file, and a write
            // that fails part-way (a full disk) leaves part of it there. The next
            // record must not follow that fragment: a restart would take it for the
            // log's torn end and cut every record after it, acknowledged ones too.
            self.fragment_from = Some(self.segments[seg].bytes);
            let _ = self.cut_fragment();
            return Err(io(&path)(e));
        }
        self.segments[seg].bytes += framed.len() as u64;
        self.last = Some(position);
        Ok(())
    }

    /// Cuts a failed write's fragment from the current segment, if there is one
    /// (see [`append`](SegmentLog::append)); until that succeeds nothing more is
    /// written. A segment shorter than before the write holds no fragment: the
    /// buffer kept what it could not write, and writes it later, in order.
    fn cut_fragment(&mut self) -> Result<()> {
        let (Some(before), Some(w), Some(seg)) = (
            self.fragment_from,
            self.writer.as_ref(),
            self.segments.last(),
        ) else {
            self.fragment_from = None;
            return Ok(());
        };
        let file = w.get_ref();
        let len = file.metadata().map_err(io(&seg.path))?.len();
        if len > before {
            file.set_len(before).map_err(io(&seg.path))?;
        }
        self.fragment_from = None;
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
        self.cut_fragment()?;
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

    /// Up to `limit` records with a position above `after`, in order. A batch that
    /// continues where the previous one stopped resumes at its byte offset, so a
    /// catch-up reads the file once, not once per batch.
    pub fn read_positions(&mut self, after: u64, limit: usize) -> Result<Vec<R>> {
        self.flush()?;
        let mut out = Vec::new();
        // The last segment that can hold `after + 1`: earlier ones hold only older records.
        let first = self
            .segments
            .iter()
            .rposition(|s| s.first <= after.saturating_add(1))
            .unwrap_or(0);
        for seg in &self.segments[first..] {
            let mut offset = match self.cursor {
                Some(c) if c.segment == seg.first && c.after == after => c.offset,
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
                let record: R = read_record(&mut reader, &seg.path, &mut offset)?;
                let position = record.position();
                if position > after {
                    out.push(record);
                    if out.len() >= limit {
                        self.cursor = Some(ReadCursor {
                            segment: seg.first,
                            offset,
                            after: position,
                        });
                        return Ok(out);
                    }
                }
            }
        }
        self.cursor = None;
        Ok(out)
    }

    /// Deletes segments whose records are all at or below position `through`. The
    /// segment being written is kept.
    pub fn retire_positions(&mut self, through: u64) -> Result<usize> {
        self.retire_where(through, |_| true)
    }

    /// Deletes the oldest segments whose records are all at or below position
    /// `behind` (what a checkpoint covers), but only while one of them is older than
    /// `age_max` or the log holds more than `bytes_max`: seed 003 \[0079\], logs older
    /// than a set time are deleted, never one still needed. The segment being written
    /// is kept. Returns how many were deleted.
    pub fn retire_behind(
        &mut self,
        behind: u64,
        age_max: Duration,
        bytes_max: u64,
        now: SystemTime,
    ) -> Result<usize> {
        let mut total = self.bytes();
        self.retire_where(behind, |seg| {
            let old = seg
                .created
                .and_then(|c| now.duration_since(c).ok())
                .is_none_or(|age| age > age_max);
            let retire = old || total > bytes_max;
            if retire {
                total -= seg.bytes;
            }
            retire
        })
    }

    fn retire_where(
        &mut self,
        through: u64,
        mut retire: impl FnMut(&Segment) -> bool,
    ) -> Result<usize> {
        let mut retired = 0;
        while self.segments.len() > 1
            && self.segments[1].first <= through.saturating_add(1)
            && retire(&self.segments[0])
        {
            let seg = self.segments.remove(0);
            fs::remove_file(&seg.path).map_err(io(&seg.path))?;
            retired += 1;
        }
        if retired > 0 {
            // A retired segment's records are gone: a cursor into it is stale.
            self.cursor = None;
            sync_dir(&self.dir)?;
        }
        Ok(retired)
    }
}

impl SegmentLog<LogRecord> {
    /// Highest sequence appended.
    pub fn last_seq(&self) -> Option<Seq> {
        self.last.map(Seq)
    }

    /// Every record with a sequence above `after`, in order (for replay to a backup
    /// that has applied up to `after`). Reads what was appended, synced or not.
    pub fn read_after(&mut self, after: Seq) -> Result<Vec<LogRecord>> {
        self.read_positions(after.0, usize::MAX)
    }

    /// Up to `limit` records with a sequence above `after`, in order.
    pub fn read_batch(&mut self, after: Seq, limit: usize) -> Result<Vec<LogRecord>> {
        self.read_positions(after.0, limit)
    }

    /// Deletes segments whose records are all at or below `seq` (acknowledged by the
    /// backup). The segment being written is kept.
    pub fn retire_through(&mut self, seq: Seq) -> Result<usize> {
        self.retire_positions(seq.0)
    }
}

/// Test and fuzz support: the records of one difference-file segment's bytes, and
/// whether its tail is damaged (`Some(offset)` where valid data ends).
pub fn decode_segment_bytes(bytes: &[u8]) -> (Vec<LogRecord>, Option<usize>) {
    decode_entries(bytes)
}

/// Test and fuzz support: [`decode_segment_bytes`] for a log of any entry type (the
/// backup's access log: [`AccessRecord`](crate::AccessRecord)).
pub fn decode_entries<R: LogEntry>(bytes: &[u8]) -> (Vec<R>, Option<usize>) {
    let (records, valid, problem) = decode_segment::<R>(bytes);
    (records, problem.map(|_| valid))
}
