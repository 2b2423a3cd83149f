//! Resync, the primary's side (seed 000 §5.1, last paragraph): a peer that cannot be
//! caught up from the difference file gets a copy of the tables, taken while this
//! primary keeps committing, with the transactions committed meanwhile shipped
//! beside the copy (the backup keeps them in its own log: nothing accumulates here;
//! Valkey's dual channel, not Redis' replica output buffer).
//!
//! 1. On connecting to such a peer the link sends `ResyncBegin { from_seq }` (its
//!    last sequence) and asks the shell for a copy ([`Ready::copy`]); from then on
//!    every new transaction is shipped at once. A sync one is settled by its rule
//!    as while the peer is down: the peer holds no usable copy yet.
//! 2. The shell waits until every transaction up to `from_seq` is visible, then
//!    reads the tables in chunks and hands each to [`Link::copy`] when
//!    [`Link::copy_room`] says the output has room (so the copy never outruns the
//!    socket), then calls [`Link::copy_done`].
//! 3. The peer's `Resynced { seq }` ends it: the link is duplex.
//!
//! A connection lost on the way ends the resync; the next connection starts another
//! one (the peer empties what it had loaded).
//!
//! [`Ready::copy`]: super::Ready::copy

use kirikae_engine::Schema;

use super::{Event, Link, LinkState, Micros};
use crate::copied_rows::CopiedRows;
use crate::seq::Seq;
use crate::wire::Message;

/// What the shell is asked to copy: the tables as they are once every transaction
/// up to `from_seq` is visible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyOrder {
    /// Which resync asks (pieces of an older one are ignored).
    pub resync: u64,
    /// Every transaction up to here must be visible before the copy starts.
    pub from_seq: Seq,
}

/// A piece of the copy, read by the shell.
#[derive(Clone, Debug, PartialEq)]
pub enum CopyPiece {
    /// A table begins (before its rows).
    Table {
        /// Its name.
        name: String,
        /// Its schema.
        schema: Schema,
        /// About how many rows it has.
        rows: u64,
    },
    /// Rows of the table begun last.
    Rows {
        /// The table.
        table: String,
        /// The rows (as the table holds them: shared, not copied).
        rows: CopiedRows,
    },
}

/// Output of the copy that may wait for the shell at once: the primary holds about
/// this much of the copy (the socket's buffers hold the rest in flight).
const COPY_OUTPUT_BYTES_MAX: usize = 1 << 20;

/// A resync under way.
#[derive(Debug)]
pub(super) struct ResyncOut {
    pub(super) id: u64,
    pub(super) from_seq: Seq,
    pub(super) rows: u64,
    pub(super) copied: bool,
    pub(super) started_at: Micros,
}

impl Link {
    /// Whether the output has room for another piece of the copy: at most 1 MiB (and
    /// a quarter of `output_bytes_max`) waits for the shell, so that the copy costs
    /// this primary little memory and commits shipped beside it never find the
    /// output full.
    pub fn copy_room(&self) -> bool {
        self.state == LinkState::Resyncing
            && self.resync.as_ref().is_some_and(|r| !r.copied)
            && self.out_bytes < COPY_OUTPUT_BYTES_MAX.min(self.config.output_bytes_max / 4)
    }

    /// Whether resync `resync` still wants pieces of its copy (it has not ended,
    /// and its copy is not complete).
    pub fn copy_wanted(&self, resync: u64) -> bool {
        self.resync
            .as_ref()
            .is_some_and(|r| r.id == resync && !r.copied)
    }

    /// The shell read a piece of the copy for resync `resync`; `encoded_len`, if
    /// the shell measured it already: sizing a chunk of rows again here would walk
    /// every row while the commits wait for this state machine.
    pub fn copy(&mut self, now: Micros, resync: u64, piece: CopyPiece, encoded_len: Option<usize>) {
        let epoch = self.config.epoch;
        let Some(r) = self.resync.as_mut().filter(|r| r.id == resync && !r.copied) else {
            return;
        };
        let message = match piece {
            CopyPiece::Table { name, schema, rows } => Message::ResyncTable {
                epoch,
                table: name,
                schema,
                rows,
            },
            CopyPiece::Rows { table, rows } => {
                r.rows += rows.len() as u64;
                self.metrics.copied_rows = r.rows;
                Message::ResyncRows { epoch, table, rows }
            }
        };
        match encoded_len {
            Some(len) => self.send_sized(now, message, len),
            None => self.send(now, message),
        }
        self.note_held();
    }

    /// The shell copied every table for resync `resync`.
    pub fn copy_done(&mut self, now: Micros, resync: u64) {
        let epoch = self.config.epoch;
        let Some(r) = self.resync.as_mut().filter(|r| r.id == resync && !r.copied) else {
            return;
        };
        r.copied = true;
        let rows = r.rows;
        self.send(now, Message::ResyncEnd { epoch, rows });
    }

    /// The shell could not take the copy for resync `resync` (why): the connection
    /// goes down and the next one tries again.
    pub fn copy_failed(&mut self, now: Micros, resync: u64, why: String) {
        if self.resync.as_ref().is_some_and(|r| r.id == resync) {
            self.go_down(now, format!("resync copy failed: {why}"));
        }
    }

    /// An operator asks for a resync: the connection (if any) goes down and the next
    /// one resyncs the peer.
    pub fn request_resync(&mut self, now: Micros) {
        self.request_resync_because(now, "an operator asked for a resync".to_owned());
    }

    /// A resync is needed for `reason`: as [`request_resync`](Link::request_resync).
    pub fn request_resync_because(&mut self, now: Micros, reason: String) {
        self.require_resync(reason.clone());
        if self.state != LinkState::Degraded && self.state != LinkState::Resyncing {
            self.go_down(now, reason);
        }
    }

    /// Starts a resync on the connection just made (see the module docs).
    pub(super) fn begin_resync(&mut self, now: Micros) {
        let from_seq = self.seq;
        self.resyncs += 1;
        self.metrics.resyncs += 1;
        self.metrics.copied_rows = 0;
        self.metrics.held_bytes_peak = 0;
        self.resync = Some(ResyncOut {
            id: self.resyncs,
            from_seq,
            rows: 0,
            copied: false,
            started_at: now,
        });
        self.state = LinkState::Resyncing;
        self.acked = from_seq;
        self.sent = from_seq;
        self.last_heard = now;
        self.last_sent_at = now;
        self.ready.copy = Some(CopyOrder {
            resync: self.resyncs,
            from_seq,
        });
        self.send(
            now,
            Message::ResyncBegin {
                epoch: self.config.epoch,
                from_seq,
            },
        );
    }

    /// The peer loaded the copy and applied everything up to `seq`: duplex.
    pub(super) fn resynced(&mut self, now: Micros, seq: Seq) {
        let Some(r) = self.resync.take().filter(|r| r.copied) else {
            return self.go_down(now, "Resynced before the copy was complete".into());
        };
        self.state = LinkState::Duplex;
        self.resync_required = None;
        self.reconnect_delay_us = super::micros(self.config.reconnect_min);
        self.diverged = false;
        self.ack(seq);
        self.ready.events.push(Event::Resynced {
            from_seq: r.from_seq,
            rows: r.rows,
            took_ms: now.saturating_sub(r.started_at) / 1000,
        });
    }
}
