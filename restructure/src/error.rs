//! The restructure crate's error type.

use std::time::Duration;

use kirikae_engine::{EngineError, Key, Rid};

use crate::phase::Phase;

/// Why a restructure did not start or did not finish. In every case the old table
/// keeps serving and the new table is discarded.
#[derive(Debug, thiserror::Error)]
pub enum RestructureError {
    /// From the engine (unknown table, writers already held, …).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The plan does not fit the table; nothing was started.
    #[error("plan for table `{table}`: column `{column}`: {reason}")]
    InvalidPlan {
        /// The table to restructure.
        table: String,
        /// The column at fault (empty when the plan as a whole is).
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// A record could not be converted by the plan.
    #[error(transparent)]
    Conversion(Box<ConversionError>),
    /// Two records map to the same primary key in the new table (a key change plan).
    #[error("table `{table}`: new primary key {key} produced by both {rid} and {other_rid}")]
    DuplicateKey {
        /// The table restructured.
        table: String,
        /// The colliding new key.
        key: Key,
        /// One record's RID in the old table.
        rid: Rid,
        /// The other record's RID in the old table.
        other_rid: Rid,
    },
    /// The lock history did not shrink for the configured number of rounds.
    #[error("table `{table}`: update synchronization not converging after {rounds} rounds ({history} RIDs pending)")]
    NotConverging {
        /// The table restructured.
        table: String,
        /// Rounds run.
        rounds: u32,
        /// RIDs still in the history.
        history: u64,
    },
    /// Writers in flight kept the switch from happening.
    #[error("table `{table}`: switch postponed {tries} times by {in_flight} in-flight writer(s), waiting {waited:?} each time")]
    SwitchPostponed {
        /// The table restructured.
        table: String,
        /// Attempts made.
        tries: u32,
        /// Writers in flight at the last attempt.
        in_flight: u64,
        /// Wait per attempt.
        waited: Duration,
    },
    /// `abort()` was called.
    #[error("table `{table}`: restructure aborted during {phase:?}")]
    Aborted {
        /// The table restructured.
        table: String,
        /// The phase it was in.
        phase: Phase,
    },
    /// The restructure worker panicked; the old table was left untouched.
    #[error("table `{table}`: restructure worker failed: {detail}")]
    Poisoned {
        /// The table restructured.
        table: String,
        /// The panic message.
        detail: String,
    },
}

/// The restructure crate's result type.
pub type Result<T, E = RestructureError> = std::result::Result<T, E>;

/// A record the plan could not convert: which one, which value, and why.
#[derive(Debug, thiserror::Error)]
#[error("table `{table}` {rid} (key {key}): column `{column}` value {value}: {reason}")]
pub struct ConversionError {
    /// The table restructured.
    pub table: String,
    /// The record's RID in the old table.
    pub rid: Rid,
    /// The record's key in the old table.
    pub key: Key,
    /// The column whose value failed (empty for a row function's error).
    pub column: String,
    /// The value, rendered.
    pub value: String,
    /// Why it failed.
    pub reason: String,
}
