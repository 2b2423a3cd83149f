//! Transaction ids.

use std::fmt;

/// A transaction's id: unique in the process, never [`TxnId::NONE`]. A record's lock
/// is the id of the transaction that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(pub u64);

impl TxnId {
    /// No transaction: the owner of an unlocked record.
    pub const NONE: TxnId = TxnId(0);

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
