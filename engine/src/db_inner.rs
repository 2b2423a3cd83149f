//! The state a database's handles, sessions and transactions share: catalog,
//! configuration, lock waits, the commit latch and the commit gate. Apart from
//! `database.rs` so that transactions reach it without depending on the public handle.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::RwLock;

use crate::catalog::Catalog;
use crate::hooks::CommitGate;
use crate::lock::LockWaits;
use crate::txn_id::TxnId;

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

/// Transaction ids come from a process-wide counter in blocks of `TXN_ID_BLOCK` per
/// thread, so that threads do not contend on it.
const TXN_ID_BLOCK: u64 = 1024;

impl DbInner {
    pub fn next_txn_id(&self) -> TxnId {
        static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);
        thread_local! {
            static BLOCK: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
        }
        BLOCK.with(|b| {
            let (mut next, mut end) = b.get();
            if next == end {
                next = NEXT_BLOCK.fetch_add(TXN_ID_BLOCK, Ordering::Relaxed);
                end = next + TXN_ID_BLOCK;
            }
            b.set((next + 1, end));
            debug_assert_ne!(next, 0, "0 means no owner");
            TxnId(next)
        })
    }
}
