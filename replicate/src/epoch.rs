//! Epochs: which primary's reign a message or record belongs to (seed 000 §5.1–5.2).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A primary's epoch. It grows at each failover; a peer refuses messages of an epoch
/// older than one it has seen, which fences a primary that was replaced. Encoded as
/// the bare number (the wire and record-log formats are unchanged by the type).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// Before any primary (a peer that has seen none).
    pub const NONE: Epoch = Epoch(0);
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}", self.0)
    }
}
