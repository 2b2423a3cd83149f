//! Sequence numbers: the primary's commit order of replicated transactions.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A replicated transaction's place in the primary's commit order: 1, 2, 3, … with
/// no gaps. [`Seq::ZERO`] is "before the first". Encoded as the bare number (the
/// wire and record-log formats are unchanged by the type).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// Before the first transaction.
    pub const ZERO: Seq = Seq(0);

    /// The sequence after this one.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }

    /// How many sequences come after `earlier` up to this one (0 if none).
    pub fn since(self, earlier: Seq) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
