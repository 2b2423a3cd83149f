//! # kirikae-engine
//!
//! The main-memory engine under kirikae: typed tables whose records live in slots
//! addressed by a stable [`Rid`], a primary-key index, record-level exclusive locks
//! held to the end of a [`Transaction`], a catalog that can **switch** a table name to
//! a new table atomically, hooks for the layers above, and snapshots.
//!
//! ## Guarantees
//!
//! - **Isolation**: read committed. Readers never see uncommitted data and never wait
//!   for writers; writers lock records exclusively until commit or rollback.
//! - **Bounded waits**: a lock wait ends with the lock, with [`EngineError::Deadlock`]
//!   (waits-for cycle detected at once), or with [`EngineError::LockTimeout`]; never a
//!   hang. Both are [retryable](EngineError::is_retryable).
//! - **Exact undo**: rollback (or dropping an open transaction) restores the previous
//!   state, including which RIDs are in use.
//! - **Switch**: [`Database::hold_writers`] holds new writers of one table, waits for
//!   in-flight ones, and switches its name to another table; readers never wait. The
//!   retired table is freed by a background reclaimer, never inside a caller's read
//!   or write (see [`Database::reclaim_stats`]).
//! - **Hooks**: a [`WriteObserver`] per table sees the RID of every record locked for
//!   write; a [`CommitGate`] sees each transaction's [`Operation`]s before they become
//!   visible and may veto them.
//! - **Snapshots**: atomic, fsynced, checksummed files; bad input gives a typed error.
//!
//! ## Example
//!
//! ```
//! use kirikae_engine::{Column, ColumnType, Database, Key, Schema, SessionInfo, Value};
//!
//! # fn main() -> Result<(), kirikae_engine::EngineError> {
//! let db = Database::new();
//! db.create_table(
//!     "subscriber",
//!     Schema::new(
//!         vec![
//!             Column::new("imsi", ColumnType::Text),
//!             Column::new("balance", ColumnType::Int).default_value(0),
//!         ],
//!         &["imsi"],
//!     )?,
//! )?;
//! let session = db.session(SessionInfo::new("billing", "ops", None));
//!
//! // Autocommit.
//! session.insert("subscriber", vec!["440101234567890".into(), 100.into()])?;
//! session.insert_named("subscriber", &[("imsi", "440109876543210".into())])?;
//!
//! // A transfer in one transaction.
//! let (a, b) = (Key::from("440101234567890"), Key::from("440109876543210"));
//! let mut tx = session.begin();
//! let from = tx.get_for_update("subscriber", &a)?.expect("exists")[1].as_int().unwrap_or(0);
//! tx.update_columns("subscriber", &a, &[("balance", Value::Int(from - 30))])?;
//! tx.update_columns("subscriber", &b, &[("balance", Value::Int(30))])?;
//! tx.commit()?;
//!
//! assert_eq!(session.get("subscriber", &b)?.expect("exists")[1], Value::Int(30));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod bulk_load;
mod catalog;
#[cfg(test)]
mod catalog_tests;
mod database;
mod db_inner;
mod error;
mod hooks;
mod index;
mod key;
mod lock;
mod prefetch;
mod probe_table;
mod reclaimer;
mod record_lock;
mod rid;
mod schema;
mod session;
mod slots;
mod snapshot;
mod table;
mod txn;
mod txn_id;
#[cfg(test)]
mod txn_tests;
mod value;
mod writer_admission;

pub use bulk_load::{BulkLoad, Displaced};
pub use database::{Database, Session, WriterHold, WriterHolds};
pub use db_inner::EngineConfig;
pub use error::{EngineError, HookError, Result};
pub use hooks::{
    CatalogChange, CatalogEvent, CatalogObserver, CommitGate, CommitRequest, ForReplica, GateNote,
    Operation, OperationKind, WriteObserver,
};
pub use key::Key;
pub use reclaimer::ReclaimStats;
pub use rid::Rid;
pub use schema::{Column, Row, RowRef, Schema};
pub use session::SessionInfo;
pub use snapshot::{SnapshotImage, SnapshotStats, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
pub use table::{PrefetchStage, Table, KEYS_PER_SHARD};
pub use txn::Transaction;
pub use txn_id::TxnId;
pub use value::{ColumnType, Value};
