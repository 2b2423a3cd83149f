//! Resync, the backup's side (seed 000 §5.1, last paragraph): the primary copies its
//! tables while it keeps committing, and ships the transactions committed meanwhile
//! beside the copy.
//!
//! 1. `ResyncBegin { from_seq }`: whatever this backup held is dropped (every table
//!    is emptied, local ones too); the access log is marked (a restart before step 4
//!    starts empty and is resynced again). A connection lost before step 3 ends
//!    empties the tables again: the backup is then empty at sequence 0.
//! 2. `ResyncTable` replaces a table with an empty one of the primary's schema;
//!    `ResyncRows` fill it (a key seen twice: the later row wins, it is newer).
//!    `Ship`s arriving meanwhile (sequences after `from_seq`) are logged, not
//!    applied, and acknowledged as logged: they wait on disk, not in the primary's
//!    memory or this one's.
//! 3. `ResyncEnd`: the logged transactions are read back and applied over the copy,
//!    a batch per call (so the session keeps answering), with writes that do not
//!    depend on what the copy caught: an insert of a key the copy has replaces it, an
//!    update or delete of a key it lacks writes or skips. The copy read each key at
//!    some moment after `from_seq`, so it may already hold some of them; applying all
//!    of them in order leaves each key as its last write made it, as on the primary
//!    (the pg_basebackup way: consistent once the log since the copy's start is
//!    replayed). Then `Resynced` goes to the primary.
//! 4. The next flush takes a checkpoint; with it the mark is removed.

use std::collections::BTreeSet;

use std::sync::Arc;

use kirikae_engine::{Database, Key, Operation, RowRef, Schema, Table, Transaction};

use super::{protocol, Applier, Work};
use crate::access_log::{AccessEntry, AccessRecord};
use crate::copied_rows::CopiedRows;
use crate::ddl::{apply_ddl, DdlHandler};
use crate::error::{ReplicateError, Result};
use crate::seq::Seq;
use crate::wire::Message;

/// A table announced with more rows than this is sized for this many up front (the
/// count is the primary's word; memory is this side's).
const PRESIZE_ROWS_MAX: u64 = 1 << 27;

/// Logged transactions read per batch while draining.
const DRAIN_BATCH: usize = 256;
/// Draining goes on for this long per call (then the session answers the primary
/// again): applying outruns logging, so the drain gains on what arrives.
const DRAIN_BUDGET: std::time::Duration = std::time::Duration::from_millis(20);

/// A resync under way at the backup.
#[derive(Debug)]
pub(super) enum ResyncIn {
    /// Taking the copy; transactions beside it are logged, not applied.
    Loading {
        /// Tables of the copy so far.
        tables: BTreeSet<String>,
        /// Rows taken so far.
        rows: u64,
        /// The log's last position before the first transaction beside the copy.
        logged_after: u64,
        /// Without a log: the transactions beside the copy, in memory.
        held: Vec<(Seq, Vec<Operation>)>,
    },
    /// The copy is in; applying what was logged beside it.
    Draining {
        /// Applied up to this log position.
        after: u64,
        held: Vec<(Seq, Vec<Operation>)>,
    },
}

impl<'s> Applier<'s> {
    /// Handles a resync message (see the module docs).
    pub(super) fn take_resync(&mut self, message: Message) -> Result<()> {
        match message {
            Message::ResyncBegin { from_seq, .. } => self.begin_resync(from_seq),
            Message::ResyncTable {
                table,
                schema,
                rows,
                ..
            } => self.resync_table(table, schema, rows),
            Message::ResyncRows { table, rows, .. } => self.resync_rows(&table, rows),
            Message::ResyncEnd { rows, .. } => match self.resync.take() {
                Some(ResyncIn::Loading {
                    rows: taken,
                    logged_after,
                    held,
                    ..
                }) => {
                    if taken != rows {
                        return Err(protocol(format!(
                            "the resync sent {rows} rows, {taken} arrived"
                        )));
                    }
                    self.resync = Some(ResyncIn::Draining {
                        after: logged_after,
                        held,
                    });
                    Ok(())
                }
                other => {
                    self.resync = other;
                    Err(protocol("ResyncEnd without a resync loading".into()))
                }
            },
            other => Err(protocol(format!(
                "{} is not a resync message",
                other.name()
            ))),
        }
    }

    /// A connection ended in the middle of a resync: what was loaded is incomplete,
    /// so this backup goes back to empty at sequence 0 (a primary then resyncs it, or
    /// catches it up from its first transaction).
    pub(super) fn resync_interrupted(&mut self) -> Result<()> {
        if self.resync.take().is_some() {
            self.forget(Seq::ZERO)?;
        }
        Ok(())
    }

    /// Drops everything this backup held: held transactions, queued work, and the
    /// rows of every table (each is replaced by an empty one of its schema).
    fn forget(&mut self, at: Seq) -> Result<()> {
        // Held transactions roll back as they drop; nothing queued is applied.
        self.held.clear();
        self.undecided.clear();
        self.queue.clear();
        self.resolved_above.clear();
        self.first_position.clear();
        let database = self.session.database();
        for table in database.tables() {
            let schema = Schema::clone(table.schema());
            database.drop_table(table.name())?;
            database.create_table(table.name(), schema)?;
        }
        self.resolved = at;
        self.stream_seq = at;
        self.logged = at;
        Ok(())
    }

    fn begin_resync(&mut self, from_seq: Seq) -> Result<()> {
        // A checkpoint of what is being replaced must not end the new resync's mark.
        self.finish_checkpoint(true)?;
        self.forget(from_seq)?;
        // The copy replaces what those transactions would have changed.
        self.unreported.clear();
        self.stream_seq = from_seq;
        self.logged = from_seq;
        self.stats.resyncs += 1;
        let logged_after = match self.log.as_mut() {
            Some(log) => {
                log.begin_resync()?;
                log.next_position() - 1
            }
            None => 0,
        };
        self.resync = Some(ResyncIn::Loading {
            tables: BTreeSet::new(),
            rows: 0,
            logged_after,
            held: Vec::new(),
        });
        Ok(())
    }

    fn resync_table(&mut self, table: String, schema: Schema, rows: u64) -> Result<()> {
        let Some(ResyncIn::Loading { tables, .. }) = self.resync.as_mut() else {
            return Err(protocol(format!("table {table} of no resync")));
        };
        let database = self.session.database();
        if database.table(&table).is_ok() {
            database.drop_table(&table)?;
        }
        // Sized for its rows up front: growing a large index on the way stalls the
        // session long enough for the primary to give up on it.
        let presized = rows.min(PRESIZE_ROWS_MAX) as usize;
        database.add_table(Arc::new(Table::with_capacity(&table, schema, presized)))?;
        tables.insert(table);
        Ok(())
    }

    fn resync_rows(&mut self, table: &str, rows: CopiedRows) -> Result<()> {
        let Some(ResyncIn::Loading {
            tables,
            rows: taken,
            ..
        }) = self.resync.as_mut()
        else {
            return Err(protocol(format!("rows of {table} of no resync")));
        };
        if !tables.contains(table) {
            return Err(protocol(format!("rows of {table}, a table not announced")));
        }
        *taken += rows.len() as u64;
        // The catalog once per chunk, not once per row.
        let schema = Arc::clone(self.session.database().table(table)?.schema());
        let mut txn = self.session.begin();
        for row in rows.into_owned() {
            put(&mut txn, table, schema.key_of(&row), row.into())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Whether a transaction beside the copy is kept for later (logged, not
    /// applied); without a log it is kept here.
    pub(super) fn beside_copy(&mut self, work: Work) -> Result<bool> {
        let Some(ResyncIn::Loading { held, .. } | ResyncIn::Draining { held, .. }) =
            self.resync.as_mut()
        else {
            return Ok(false);
        };
        match work.entry {
            AccessEntry::Ship { operations, .. } => {
                if self.log.is_none() {
                    held.push((work.seq, operations));
                }
                Ok(true)
            }
            _ => Err(protocol(format!(
                "sequence {}: only shipped transactions come beside a resync",
                work.seq
            ))),
        }
    }

    /// While draining: applies the next batch of what was logged beside the copy.
    /// When none is left, answers `Resynced` and asks for a checkpoint.
    pub(super) fn drain_resync(&mut self, replies: &mut Vec<Message>) -> Result<()> {
        let began = std::time::Instant::now();
        while matches!(self.resync, Some(ResyncIn::Draining { .. }))
            && began.elapsed() < DRAIN_BUDGET
        {
            self.drain_batch(replies)?;
        }
        Ok(())
    }

    fn drain_batch(&mut self, replies: &mut Vec<Message>) -> Result<()> {
        let Some(ResyncIn::Draining { after, held }) = self.resync.as_mut() else {
            return Ok(());
        };
        let batch: Vec<(Seq, Vec<Operation>, u64)> = match self.log.as_mut() {
            Some(log) => log
                .read_after(*after, DRAIN_BATCH)?
                .into_iter()
                .filter_map(|r| match r {
                    AccessRecord {
                        position,
                        seq,
                        entry: AccessEntry::Ship { operations, .. },
                        ..
                    } => Some((seq, operations, position)),
                    _ => None,
                })
                .collect(),
            None => {
                let n = held.len().min(DRAIN_BATCH);
                held.drain(..n).map(|(seq, ops)| (seq, ops, 0)).collect()
            }
        };
        if batch.is_empty() {
            self.resync = None;
            self.checkpoint_soon = true;
            replies.push(Message::Resynced {
                epoch: self.epoch,
                seq: self.resolved,
            });
            return Ok(());
        }
        let db = self.session.database();
        for (seq, operations, position) in batch {
            let mut txn = self.session.begin();
            for op in operations {
                over_copy(db, self.ddl.as_deref(), &mut txn, op)?;
            }
            txn.commit()?;
            self.stats.applied += 1;
            if let Some(ResyncIn::Draining { after, .. }) = self.resync.as_mut() {
                *after = (*after).max(position);
            }
            if seq > self.resolved && !self.resolved_above.contains(&seq) {
                self.resolve(seq);
            }
        }
        Ok(())
    }
}

/// Writes `row`, whose key is `key`, whether or not the key exists.
fn put(txn: &mut Transaction<'_>, table: &str, key: Key, row: RowRef) -> Result<()> {
    if txn.get_for_update(table, &key)?.is_some() {
        txn.update(table, &key, row)?;
    } else {
        txn.insert(table, row)?;
    }
    Ok(())
}

/// Applies `op` so that the key ends as the primary left it, whatever the copy
/// caught of it (see the module docs).
fn over_copy(
    db: &Database,
    ddl: Option<&dyn DdlHandler>,
    txn: &mut Transaction<'_>,
    op: Operation,
) -> Result<()> {
    match op {
        Operation::Insert { table, row } => {
            let key = db.table(&table)?.schema().key_of(&row);
            put(txn, &table, key, row)
        }
        Operation::Update { table, key, row } => {
            let new_key = db.table(&table)?.schema().key_of(&row);
            if new_key != key && txn.get_for_update(&table, &key)?.is_some() {
                txn.delete(&table, &key)?;
            }
            put(txn, &table, new_key, row)
        }
        Operation::Delete { table, key } => {
            if txn.get_for_update(&table, &key)?.is_some() {
                txn.delete(&table, &key)?;
            }
            Ok(())
        }
        // The copy holds the tables as they are now; a catalog change shipped beside
        // it is applied at its place like any other.
        Operation::Ddl { table, event } => apply_ddl(db, ddl, &table, &event),
    }
}

/// Refused while resyncing: the database holds no usable copy.
pub(super) fn not_while_resyncing(what: &str) -> ReplicateError {
    ReplicateError::Protocol {
        reason: format!("{what}: a resync is under way, this backup holds no usable copy"),
    }
}
