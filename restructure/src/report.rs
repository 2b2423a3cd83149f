//! What a finished restructure reports.

use std::time::Duration;

use serde::Serialize;

use crate::control::Strategy;

/// Measurements of a switched restructure.
#[derive(Clone, Debug, Serialize)]
pub struct RestructureReport {
    /// The table restructured.
    pub table: String,
    /// Lock history or journal.
    pub strategy: Strategy,
    /// Records copied in phase 1.
    pub rows_copied: u64,
    /// Records in the new table at the switch.
    pub rows_final: u64,
    /// Phase 1 (copy) duration.
    pub phase1: Duration,
    /// Phase 2 (update synchronization) duration, verification included.
    pub phase2: Duration,
    /// From the first switch attempt to the switch.
    pub switch: Duration,
    /// Phase-2 rounds (the final drain under the hold included).
    pub rounds: u32,
    /// RIDs (or journal entries) applied in phase 2.
    pub synced: u64,
    /// How long new writers were held at the successful switch.
    pub stall: Duration,
    /// Of the stall: waiting for in-flight writers to finish.
    pub stall_wait: Duration,
    /// Of the stall: the final drain (RIDs applied with writers held).
    pub stall_drain: Duration,
    /// RIDs (or entries) applied in the final drain.
    pub stall_drained: u64,
    /// Switch attempts (more than one when in-flight writers postponed it).
    pub switch_attempts: u32,
    /// Phase-1 copy rate.
    pub copy_rows_per_s: f64,
    /// Most memory the lock history held (0 for the journal strategy).
    pub history_peak_bytes: u64,
    /// Most memory the journal held (0 for the lock-history strategy).
    pub journal_peak_bytes: u64,
    /// Memory of the old→new RID maps.
    pub map_bytes: u64,
    /// Records that verification found wrong at the switch (re-synced); 0 unless a bug.
    pub mismatches: u64,
    /// Whether verification ran.
    pub verified: bool,
}
