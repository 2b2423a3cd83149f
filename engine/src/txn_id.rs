//! Transaction ids.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Transaction ids come from a process-wide counter in blocks of `TXN_ID_BLOCK` per
/// thread, so that threads do not contend on it.
const TXN_ID_BLOCK: u64 = 1024;

/// A transaction's id: unique in the process, never [`TxnId::NONE`]. A record's lock
/// is the id of the transaction that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(pub u64);

impl TxnId {
    /// No transaction: the owner of an unlocked record.
    pub const NONE: TxnId = TxnId(0);

    /// A fresh id: no transaction of this process has or will have it. Every
    /// transaction takes one; a hook that submits work of its own beside
    /// transactions (a catalog change shown to the commit gate) takes one too.
    pub fn next() -> TxnId {
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

    /// Whether this is [`TxnId::NONE`].
    pub fn is_none(self) -> bool {
        self == TxnId::NONE
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "txn {}", self.0)
    }
}
