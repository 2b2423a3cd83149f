//! The resync copy on the primary, the shell's side of `link/resync.rs`: it waits
//! until every transaction up to the copy's start is visible, then reads the
//! replicated tables in chunks of rows and hands each to the link while the link's
//! output has room and the rate allows (`LinkConfig::copy_bytes_per_s`). It runs on
//! the link thread between two rounds of output, so the copy goes no faster than the
//! socket takes it, and the primary holds one chunk of it at a time.
//!
//! Reading takes no lock that commits need: a chunk is a scan of a few hundred
//! records, each copied as it is at that moment. The backup makes the copy
//! consistent by applying the transactions shipped beside it (see
//! `applier/resync.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kirikae_engine::{Database, Rid, RowRef, Table};

use crate::copied_rows::{shared_encoded_len, CopiedRows};
use crate::link::{CopyOrder, CopyPiece};
use crate::shared::Shared;

/// Rows per chunk.
const CHUNK_ROWS: usize = 512;
/// Encoded bytes per chunk, at most (unless one row is larger).
const CHUNK_BYTES_MAX: usize = 256 << 10;
/// Work per call, so that the link thread keeps ticking the link.
const STEP_BUDGET: Duration = Duration::from_millis(2);
/// How long the copy waits for the transactions before its start to become
/// visible (a sync commit's wait is the longest of them).
const VISIBLE_WAIT_MAX: Duration = Duration::from_secs(10);

/// What a [`Copier::step`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// More to do at once.
    Busy,
    /// Waiting (for visibility, room or rate).
    Idle,
    /// Finished, failed or no longer wanted.
    Done,
}

pub(crate) struct Copier {
    order: CopyOrder,
    ordered_at: Instant,
    /// The replicated tables still to copy; `None` until the copy may start.
    tables: Option<VecDeque<Arc<Table>>>,
    /// The table being copied and the next RID to read.
    current: Option<(Arc<Table>, Rid)>,
    started_at: Instant,
    bytes: u64,
}

impl Copier {
    pub(crate) fn new(order: CopyOrder) -> Copier {
        Copier {
            order,
            ordered_at: Instant::now(),
            tables: None,
            current: None,
            started_at: Instant::now(),
            bytes: 0,
        }
    }

    /// Does a bounded amount of the copy (see [`Step`]).
    pub(crate) fn step(&mut self, shared: &Shared, database: &Database) -> Step {
        let resync = self.order.resync;
        if !shared.core.lock().link.copy_wanted(resync) {
            return Step::Done;
        }
        if self.tables.is_none() {
            let lowest = shared.unapplied.lock().lowest();
            if lowest.is_some_and(|l| l <= self.order.from_seq) {
                if self.ordered_at.elapsed() > VISIBLE_WAIT_MAX {
                    let why = format!(
                        "transaction {} stayed invisible for {} s",
                        lowest.unwrap_or_default(),
                        VISIBLE_WAIT_MAX.as_secs()
                    );
                    shared
                        .core
                        .lock()
                        .link
                        .copy_failed(shared.now(), resync, why);
                    return Step::Done;
                }
                return Step::Idle;
            }
            let tables = database
                .tables()
                .into_iter()
                .filter(|t| !shared.rules.never_replicates(t.name()))
                .collect();
            self.tables = Some(tables);
            self.started_at = Instant::now();
        }
        let rate = shared.copy_bytes_per_s;
        let began = Instant::now();
        while began.elapsed() < STEP_BUDGET {
            if rate > 0 {
                let allowed = rate as f64 * self.started_at.elapsed().as_secs_f64();
                if self.bytes as f64 > allowed {
                    return Step::Idle;
                }
            }
            let (piece, message_len) = match self.next_piece(shared.frame_bytes_max) {
                Ok(Some((piece, bytes, message_len))) => {
                    self.bytes += bytes as u64;
                    (piece, message_len)
                }
                Ok(None) => {
                    shared.core.lock().link.copy_done(shared.now(), resync);
                    return Step::Done;
                }
                Err(why) => {
                    let mut core = shared.core.lock();
                    core.link.copy_failed(shared.now(), resync, why);
                    return Step::Done;
                }
            };
            let mut core = shared.core.lock();
            core.link.copy(shared.now(), resync, piece, message_len);
            if !core.link.copy_room() {
                return Step::Idle;
            }
        }
        Step::Busy
    }

    /// The next piece: a table's announcement, or its next chunk of rows (at most
    /// [`CHUNK_ROWS`] and [`CHUNK_BYTES_MAX`], so that a table of large rows still
    /// goes in frames the peer accepts); `None` when every table is copied. Fails
    /// on a row that no frame of `frame_bytes_max` can carry. With the piece: the
    /// bytes of rows it carries, and (for rows) its message's encoded size, at most.
    #[allow(clippy::type_complexity)]
    fn next_piece(
        &mut self,
        frame_bytes_max: usize,
    ) -> Result<Option<(CopyPiece, usize, Option<usize>)>, String> {
        if let Some((table, next)) = self.current.as_mut() {
            let (rids, mut rows): (Vec<Rid>, Vec<RowRef>) =
                table.scan(*next, CHUNK_ROWS).into_iter().unzip();
            if !rows.is_empty() {
                let mut len = shared_encoded_len(&rows);
                // Halved until it fits: rows this large are rare, so the common
                // chunk is measured once.
                let budget = CHUNK_BYTES_MAX.min(frame_bytes_max / 2);
                while rows.len() > 1 && len > budget {
                    rows.truncate(rows.len() / 2);
                    len = shared_encoded_len(&rows);
                }
                // The message adds its epoch and the table's name to the rows.
                let message_len = len + table.name().len() + 32;
                let last = rids[rows.len() - 1];
                if message_len > frame_bytes_max {
                    return Err(format!(
                        "row {} of table {} encodes to {len} bytes, more than a frame of {frame_bytes_max}",
                        last.0,
                        table.name()
                    ));
                }
                *next = Rid(last.0 + 1);
                let piece = CopyPiece::Rows {
                    table: table.name().to_owned(),
                    rows: CopiedRows::Shared(rows),
                };
                return Ok(Some((piece, len, Some(message_len))));
            }
            self.current = None;
        }
        let Some(table) = self.tables.as_mut().and_then(|t| t.pop_front()) else {
            return Ok(None);
        };
        let piece = CopyPiece::Table {
            name: table.name().to_owned(),
            schema: (**table.schema()).clone(),
            rows: table.len(),
        };
        self.current = Some((table, Rid(0)));
        Ok(Some((piece, 0, None)))
    }
}
