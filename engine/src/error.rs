//! The engine's error type.

use std::path::PathBuf;

use crate::key::Key;
use crate::rid::Rid;
use crate::value::ColumnType;

/// A boxed error from an embedder's hook (commit gate, catalog observer), kept as
/// the source of [`EngineError::CommitVetoed`] or
/// [`EngineError::CatalogChangeVetoed`] so the embedder can downcast it.
pub type HookError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything the engine can refuse, each naming what was wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No table of that name in the catalog.
    #[error("unknown table `{table}`")]
    UnknownTable {
        /// The name asked for.
        table: String,
    },
    /// `create_table` with a name already in the catalog.
    #[error("table `{table}` already exists")]
    TableExists {
        /// The name asked for.
        table: String,
    },
    /// A schema that cannot be used, e.g. a key column that does not exist.
    #[error("invalid schema: column `{column}`: {reason}")]
    InvalidSchema {
        /// The column at fault (empty when the schema as a whole is at fault).
        column: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A column name the table's schema does not have.
    #[error("table `{table}` has no column `{column}`")]
    UnknownColumn {
        /// The table written to.
        table: String,
        /// The column named.
        column: String,
    },
    /// A row or key with the wrong number of values.
    #[error("table `{table}`: expected {expected} values, got {found}")]
    WrongArity {
        /// The table written to.
        table: String,
        /// Values the schema needs.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// A value of the wrong type for its column.
    #[error("table `{table}` column `{column}`: expected {expected}, got {found} ({value})")]
    TypeMismatch {
        /// The table written to.
        table: String,
        /// The column at fault.
        column: String,
        /// The column's type.
        expected: ColumnType,
        /// The given value's type.
        found: ColumnType,
        /// The given value, rendered.
        value: String,
    },
    /// Null given for a column that is not nullable.
    #[error("table `{table}` column `{column}` is not nullable")]
    NullViolation {
        /// The table written to.
        table: String,
        /// The column at fault.
        column: String,
    },
    /// An insert (or key change) to a primary key that already exists.
    #[error("table `{table}`: duplicate primary key {key}")]
    DuplicateKey {
        /// The table written to.
        table: String,
        /// The key that exists already.
        key: Key,
    },
    /// An update or delete of a primary key that does not exist.
    #[error("table `{table}`: no record with primary key {key}")]
    KeyNotFound {
        /// The table written to.
        table: String,
        /// The key asked for.
        key: Key,
    },
    /// No committed record at this RID.
    #[error("table `{table}`: no record at {rid}")]
    RidNotFound {
        /// The table read or written.
        table: String,
        /// The RID asked for.
        rid: Rid,
    },
    /// A RID that is already in use (snapshot load with a repeated RID).
    #[error("table `{table}`: {rid} is already in use")]
    RidTaken {
        /// The table loaded.
        table: String,
        /// The repeated RID.
        rid: Rid,
    },
    /// The table has no more RIDs to give.
    #[error("table `{table}` is full ({capacity} RIDs)")]
    TableFull {
        /// The table written to.
        table: String,
        /// Its RID capacity.
        capacity: u64,
    },
    /// A record lock was not granted within the lock timeout.
    #[error("table `{table}` {rid}: lock held by {holder}, gave up after {waited_ms} ms")]
    LockTimeout {
        /// The table of the record.
        table: String,
        /// The record waited for.
        rid: Rid,
        /// The transaction holding it.
        holder: crate::TxnId,
        /// How long this transaction waited.
        waited_ms: u64,
    },
    /// Waiting for this lock would close a cycle of waiting transactions; this
    /// transaction should roll back and retry.
    #[error("table `{table}` {rid}: deadlock with {holder}; roll back and retry")]
    Deadlock {
        /// The table of the record.
        table: String,
        /// The record that would close the cycle.
        rid: Rid,
        /// The transaction holding it.
        holder: crate::TxnId,
    },
    /// New writers of the table are held for a switch, past this writer's lock timeout.
    #[error("table `{table}`: writers held for a switch, gave up after {waited_ms} ms")]
    WritersHeld {
        /// The table held.
        table: String,
        /// How long this writer waited.
        waited_ms: u64,
    },
    /// A switch waited too long for in-flight writers of the table to finish.
    #[error("table `{table}`: {in_flight} writer(s) still in flight after {waited_ms} ms")]
    WritersInFlight {
        /// The table held.
        table: String,
        /// Transactions still writing it.
        in_flight: u64,
        /// How long the switch waited.
        waited_ms: u64,
    },
    /// A second hold of the same table's writers.
    #[error("table `{table}`: writers are already held by another switch")]
    AlreadyHeld {
        /// The table.
        table: String,
    },
    /// A switch of a name that no longer designates the table whose writers are held.
    #[error("table `{table}` was replaced or dropped while its writers were held")]
    SwitchTargetChanged {
        /// The name being switched.
        table: String,
    },
    /// The commit gate refused the transaction; it was rolled back.
    #[error("commit vetoed, transaction rolled back: {source}")]
    CommitVetoed {
        /// The gate's reason.
        #[source]
        source: HookError,
    },
    /// The catalog observer refused a change of `table`; the catalog is unchanged.
    #[error("catalog change of table `{table}` vetoed: {source}")]
    CatalogChangeVetoed {
        /// The table the change was about.
        table: String,
        /// The observer's reason.
        #[source]
        source: HookError,
    },
    /// Reading or writing a snapshot file failed.
    #[error("snapshot {path}: {source}")]
    SnapshotIo {
        /// The snapshot file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the snapshot magic number.
    #[error("snapshot {path}: not a kirikae snapshot (bad magic number)")]
    SnapshotBadMagic {
        /// The snapshot file.
        path: PathBuf,
    },
    /// A snapshot of a format version this build does not read.
    #[error("snapshot {path}: format version {found}, this build reads version {supported}")]
    SnapshotVersion {
        /// The snapshot file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The file is shorter than its header says.
    #[error("snapshot {path}: truncated, {expected_bytes} bytes expected, {found_bytes} present")]
    SnapshotTruncated {
        /// The snapshot file.
        path: PathBuf,
        /// Bytes the header promises.
        expected_bytes: u64,
        /// Bytes present.
        found_bytes: u64,
    },
    /// The body's checksum does not match: the file is corrupt.
    #[error(
        "snapshot {path}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )]
    SnapshotChecksum {
        /// The snapshot file.
        path: PathBuf,
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the body as read.
        computed: u32,
    },
    /// The body passed its checksum but does not decode, or decodes to something invalid.
    #[error("snapshot {path}: table `{table}`: {reason}")]
    SnapshotInvalid {
        /// The snapshot file.
        path: PathBuf,
        /// The table at fault (empty if the body as a whole is at fault).
        table: String,
        /// What is wrong.
        reason: String,
    },
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    /// Whether retrying the whole transaction may succeed (lock timeouts, deadlocks,
    /// writers held for a switch). Such errors leave the transaction to be rolled back.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            EngineError::LockTimeout { .. }
                | EngineError::Deadlock { .. }
                | EngineError::WritersHeld { .. }
        )
    }
}
