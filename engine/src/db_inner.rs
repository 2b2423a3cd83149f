//! The state a database's handles, sessions and transactions share: catalog,
//! configuration, lock waits, the commit latch and the commit gate. Apart from
//! `database.rs` so that transactions reach it without depending on the public handle.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::RwLock;

use crate::catalog::Catalog;
use crate::hooks::CommitGate;
use crate::lock::LockWaits;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Longest a statement waits for a record lock, or for writers held by a switch,
    /// before failing with a retryable error.
    pub lock_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lock_timeout: Duration::from_millis(500),
        }
    }
}

/// `ArcSwapOption` needs a sized pointee.
pub(crate) struct CommitGateCell(pub Arc<dyn CommitGate>);

pub(crate) struct DbInner {
    pub catalog: Catalog,
    pub config: EngineConfig,
    pub locks: LockWaits,
    /// Multi-record commits hold it shared while publishing; a snapshot holds it
    /// exclusively while it collects rows, so it never sees half a transaction.
    pub commit_latch: RwLock<()>,
    pub commit_gate: ArcSwapOption<CommitGateCell>,
    /// Writer holds begun and ended (see [`WriterHolds`]).
    pub holds_begun: AtomicU64,
    pub holds_ended: AtomicU64,
}
