//! Extension points that later layers attach to without the engine knowing them:
//! the write observer (feeds a restructure's lock history), the commit gate (feeds
//! synchronous replication) and the catalog observer (lets replication place a
//! catalog change among the commits), plus the logical operations the gate sees.

use std::any::Any;
use std::sync::Arc;

use compact_str::CompactString;
use serde::de::{Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::HookError;
use crate::key::Key;
use crate::rid::Rid;
use crate::schema::{RowRef, Schema};
use crate::session::SessionInfo;
use crate::table::Table;
use crate::txn_id::TxnId;
use crate::value::Value;

/// Sees the RID of every record of one table that is locked for a write.
///
/// Both methods run with the record's latch held: they must be fast and must not call
/// back into the engine.
///
/// Every change of a committed image made after [`Table::set_write_observer`](crate::Table::set_write_observer)
/// (crate::Table::set_write_observer) returns is reported by `record_published`, even
/// when the writer locked the record before the observer was installed: that is what
/// lets a copier install an observer and then copy without stopping writers.
pub trait WriteObserver: Send + Sync {
    /// A transaction locked `rid` for insert, update, delete or `get_for_update`.
    fn record_locked(&self, rid: Rid);

    /// A commit is making `image` (`None`: deleted) the committed image of `rid`.
    /// By default this reports `rid` to [`record_locked`](WriteObserver::record_locked).
    fn record_published(&self, rid: Rid, image: Option<&RowRef>) {
        let _ = image;
        self.record_locked(rid);
    }
}

/// Decides whether a transaction may commit; installed once per database.
///
/// `prepare` runs with the transaction's locks held, before any of its writes is
/// visible. It may block (e.g. a round trip to a peer). An error vetoes the commit:
/// the transaction is rolled back and `commit` returns
/// [`EngineError::CommitVetoed`](crate::EngineError::CommitVetoed) carrying the error.
/// Once `prepare` accepts, the commit cannot fail.
pub trait CommitGate: Send + Sync {
    /// Accept (Ok) or veto (Err) the transaction described by `request`. An accepted
    /// commit may carry a note, handed back by
    /// [`Transaction::commit_noted`](crate::Transaction::commit_noted). The gate
    /// may take the request's operations (e.g. to ship them without a copy): the
    /// transaction does not look at them again.
    fn prepare(&self, request: &mut CommitRequest<'_>) -> Result<Option<GateNote>, HookError>;

    /// The transaction `txn`, accepted by `prepare`, is now visible.
    fn committed(&self, _txn: TxnId) {}

    /// Whether `prepare` looks at a request's operations and before images. A gate
    /// that decides by the session alone says no: transactions then record
    /// neither (no copy of every row written), and its requests carry none.
    fn wants_operations(&self) -> bool {
        true
    }
}

/// A change of the catalog, as a [`CatalogObserver`] is shown it before it takes
/// effect.
#[derive(Debug)]
pub enum CatalogChange<'a> {
    /// `table` is about to be published under its name (created, loaded or added).
    Added {
        /// The new table; nobody can have written it yet.
        table: &'a Arc<Table>,
    },
    /// `table` is about to be removed from the catalog. Transactions already
    /// writing it may still commit on the detached table afterwards.
    Dropped {
        /// The table leaving the catalog.
        table: &'a Arc<Table>,
    },
    /// The name `old` is published under is about to designate `new` (an online
    /// restructure's switch). `old`'s writers are held and none is in flight.
    Switched {
        /// The table the name designates until now.
        old: &'a Arc<Table>,
        /// The table it designates from now on.
        new: &'a Arc<Table>,
    },
    /// A layer above the engine says something about `table` that a replica must
    /// hear in order (e.g. that a restructure with this plan began or was
    /// abandoned): see [`Database::announce`](crate::Database::announce). The
    /// catalog itself does not change.
    Announced {
        /// The table it is about.
        table: &'a str,
        /// What the layer said, in its own encoding.
        payload: &'a [u8],
        /// What a replica needs of it.
        for_replica: ForReplica<'a>,
    },
}

/// What a replica needs of an announcement ([`CatalogChange::Announced`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForReplica<'a> {
    /// To follow it, like any catalog change.
    Follow,
    /// Nothing it could follow, for this reason (e.g. a restructure by a row
    /// function, which is code): an observer that would ship it vetoes it instead.
    CannotFollow(&'a str),
    /// To hear it even if it cannot answer now: it withdraws an earlier
    /// announcement (e.g. a restructure abandoned), which the replica would
    /// otherwise keep acting on. An observer queues it rather than refusing it.
    MustHear,
}

impl CatalogChange<'_> {
    /// The table name the change is about.
    pub fn table_name(&self) -> &str {
        match self {
            CatalogChange::Added { table } | CatalogChange::Dropped { table } => table.name(),
            CatalogChange::Switched { old, .. } => old.name(),
            CatalogChange::Announced { table, .. } => table,
        }
    }

    /// The change as data, without the tables: what a replica is sent.
    pub fn event(&self) -> CatalogEvent {
        match self {
            CatalogChange::Added { table } => CatalogEvent::Added {
                schema: table.schema().as_ref().clone(),
            },
            CatalogChange::Dropped { .. } => CatalogEvent::Dropped,
            CatalogChange::Switched { new, .. } => CatalogEvent::Switched {
                schema: new.schema().as_ref().clone(),
            },
            CatalogChange::Announced { payload, .. } => CatalogEvent::Announced {
                payload: payload.to_vec(),
            },
        }
    }
}

/// A [`CatalogChange`] as serializable data (the table's name travels beside it,
/// in [`Operation::Ddl`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CatalogEvent {
    /// A table of this schema was created (or loaded) under the name.
    Added {
        /// Its schema.
        schema: Schema,
    },
    /// The table was dropped.
    Dropped,
    /// The name switched to a restructured table of this schema.
    Switched {
        /// The new table's schema.
        schema: Schema,
    },
    /// An announcement of a layer above the engine (see [`CatalogChange::Announced`]).
    Announced {
        /// Its payload, in that layer's encoding.
        payload: Vec<u8>,
    },
}

/// Sees every change of the catalog before it takes effect; installed once per
/// database ([`Database::set_catalog_observer`](crate::Database::set_catalog_observer)).
///
/// `prepare` runs with the catalog's change lock held, so changes are shown one at
/// a time in the order they take effect. For a switch it runs while no transaction
/// is writing the old table and none can start: every commit that wrote the old
/// table has passed the [`CommitGate`] before the call, and every later writer of
/// the name writes the new table after it. That is the switch's exact place in the
/// commit order, which a replica needs to switch at the same point.
///
/// It must not change the catalog itself (that would deadlock); it may block
/// briefly (writers of a switched table wait meanwhile). An error vetoes the
/// change: the catalog stays as it was and the caller gets
/// [`EngineError::CatalogChangeVetoed`](crate::EngineError::CatalogChangeVetoed).
pub trait CatalogObserver: Send + Sync {
    /// Accept (Ok) or veto (Err) `change`.
    fn prepare(&self, change: &CatalogChange<'_>) -> Result<(), HookError>;

    /// `change`, which `prepare` accepted, took effect: the catalog shows it now
    /// (an announcement: it was made). Called under the catalog's lock, before the
    /// next change is prepared.
    fn published(&self, change: &CatalogChange<'_>) {
        let _ = change;
    }
}

/// What a commit gate attaches to a commit it accepted; the gate's own type, to be
/// downcast by whoever knows it.
pub type GateNote = Arc<dyn Any + Send + Sync>;

/// What the commit gate is shown.
#[derive(Debug)]
pub struct CommitRequest<'a> {
    /// The transaction's id, unique in this process.
    pub txn: TxnId,
    /// Who runs it.
    pub session: &'a SessionInfo,
    /// Its writes, in the order they were made (the gate's to keep); empty if the
    /// gate does not want them ([`CommitGate::wants_operations`]).
    pub operations: Vec<Operation>,
    /// For each operation, the image it replaced as the transaction saw it (`None`
    /// for an insert): what a peer compares its own responses against.
    pub before: &'a [Option<RowRef>],
}

/// Kind of a logical operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum OperationKind {
    /// A new record.
    Insert,
    /// A changed record.
    Update,
    /// A removed record.
    Delete,
    /// A change of the catalog (never part of a transaction's writes).
    Ddl,
}

/// One write of a transaction, in logical terms (table, key, values): what
/// replication ships to a peer. Serializable with serde.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Operation {
    /// Insert `row`.
    Insert {
        /// Table name (inline up to 24 bytes: recording a write allocates nothing
        /// for it).
        table: CompactString,
        /// The full new row: the very image the transaction publishes, shared.
        #[serde(deserialize_with = "deserialize_row")]
        row: RowRef,
    },
    /// Replace the record whose key was `key` with `row` (which may carry a new key).
    Update {
        /// Table name.
        table: CompactString,
        /// The key before the update.
        key: Key,
        /// The full new row: the very image the transaction publishes, shared.
        #[serde(deserialize_with = "deserialize_row")]
        row: RowRef,
    },
    /// Delete the record with `key`.
    Delete {
        /// Table name.
        table: CompactString,
        /// The key deleted.
        key: Key,
    },
    /// A change of the catalog, placed in the stream of commits by a catalog
    /// observer (transactions never make one).
    Ddl {
        /// Table name.
        table: CompactString,
        /// What changed.
        event: CatalogEvent,
    },
}

/// A row decoded straight into its shared image, in one allocation where the
/// format says how many values follow (serde's own way for `Arc<[Value]>` fills a
/// `Vec` and copies it: a second allocation and copy for every row a backup
/// receives).
fn deserialize_row<'de, D: Deserializer<'de>>(deserializer: D) -> Result<RowRef, D::Error> {
    struct Row;
    impl<'de> Visitor<'de> for Row {
        type Value = RowRef;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a row of values")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RowRef, A::Error> {
            // A length announced by the input is trusted only this far before the
            // values are there: past it, the row grows as they come.
            const ROW_VALUES_PREALLOCATED_MAX: usize = 4096;
            match seq.size_hint() {
                Some(len) if len <= ROW_VALUES_PREALLOCATED_MAX => {
                    let mut failed = None;
                    // An exact-length iterator: the shared slice is allocated once
                    // and filled in place. After a missing or bad value the rest are
                    // nulls, not read, and the row fails.
                    let row: RowRef = (0..len)
                        .map(|_| {
                            if failed.is_some() {
                                return Value::Null;
                            }
                            match seq.next_element::<Value>() {
                                Ok(Some(v)) => v,
                                Ok(None) => {
                                    failed = Some(A::Error::invalid_length(len, &self));
                                    Value::Null
                                }
                                Err(e) => {
                                    failed = Some(e);
                                    Value::Null
                                }
                            }
                        })
                        .collect();
                    match failed {
                        Some(e) => Err(e),
                        None => Ok(row),
                    }
                }
                _ => {
                    let mut values = Vec::new();
                    while let Some(v) = seq.next_element()? {
                        values.push(v);
                    }
                    Ok(values.into())
                }
            }
        }
    }
    deserializer.deserialize_seq(Row)
}

impl Operation {
    /// The table written.
    pub fn table(&self) -> &str {
        match self {
            Operation::Insert { table, .. }
            | Operation::Update { table, .. }
            | Operation::Delete { table, .. }
            | Operation::Ddl { table, .. } => table,
        }
    }

    /// Insert, update or delete.
    pub fn kind(&self) -> OperationKind {
        match self {
            Operation::Insert { .. } => OperationKind::Insert,
            Operation::Update { .. } => OperationKind::Update,
            Operation::Delete { .. } => OperationKind::Delete,
            Operation::Ddl { .. } => OperationKind::Ddl,
        }
    }
}
