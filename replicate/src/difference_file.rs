//! The primary's difference file: a [`RecordLog`] written and read as the link's
//! [`Ready`] asks. Both the replicator's link thread and the seeded simulation carry
//! out the link's output through it.

use crate::link::{LogState, Persisted, ReadRequest, Ready};
use crate::record_log::{LogRecord, RecordLog};
use crate::seq::Seq;

/// The difference file and how far it is durable.
pub struct DifferenceFile {
    log: RecordLog,
    /// Everything up to here has been fsynced.
    durable_through: Seq,
}

impl DifferenceFile {
    /// Over `log` as opened (what reopening found is on disk, hence durable).
    pub fn new(log: RecordLog) -> DifferenceFile {
        let durable_through = log.last_seq().unwrap_or(Seq::ZERO);
        DifferenceFile {
            log,
            durable_through,
        }
    }

    /// What a [`Link`](crate::Link) starting over this file needs to know.
    pub fn state(&self) -> LogState {
        LogState {
            last_seq: self.log.last_seq(),
            bytes: self.log.bytes(),
        }
    }

    /// The difference-file part of `ready`: append, fsync, retire. `None` if it has
    /// none (nothing to report to the link).
    pub fn persist(&mut self, ready: &Ready) -> Option<Persisted> {
        if ready.persist.is_empty() && !ready.sync_log && ready.retire_through.is_none() {
            return None;
        }
        let mut error = None;
        for record in &ready.persist {
            if let Err(e) = self.log.append(record) {
                error = Some(e.to_string());
                break;
            }
        }
        if error.is_none() && ready.sync_log {
            match self.log.sync() {
                Ok(()) => self.durable_through = self.log.last_seq().unwrap_or(Seq::ZERO),
                Err(e) => error = Some(e.to_string()),
            }
        }
        if let Some(seq) = ready.retire_through {
            if let Err(e) = self.log.retire_through(seq) {
                tracing::warn!("cannot retire difference-file segments: {e}");
            }
        }
        Some(Persisted {
            appended_through: self.log.last_seq().unwrap_or(Seq::ZERO),
            durable_through: self.durable_through,
            bytes: self.log.bytes(),
            error,
        })
    }

    /// The records a catch-up asked for (or why they could not be read).
    pub fn read(&mut self, request: ReadRequest) -> Result<Vec<LogRecord>, String> {
        self.log
            .read_batch(request.after, request.limit)
            .map_err(|e| e.to_string())
    }
}
