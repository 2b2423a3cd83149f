//! Replication modes (seed 000 §4.1).

use serde::{Deserialize, Serialize};

/// How an operation is replicated, from weakest to strongest.
///
/// | mode | primary waits for peer | order at peer |
/// |---|---|---|
/// | skip | no | — (not replicated) |
/// | async | no | per key only |
/// | ordered | no | primary's commit order |
/// | sync | yes | commit order (RPO = 0) |
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Mode {
    /// Not replicated: data that need not survive a disaster.
    Skip,
    /// Shipped without waiting; only per-key order is kept.
    Async,
    /// Shipped without waiting; applied in the primary's commit order.
    Ordered,
    /// The commit waits for the peer's verified answer.
    Sync,
}

/// What a sync operation does while the peer is down.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum WhenPeerDown {
    /// Commit alone, queue the operation in the difference file, raise `Diverged`.
    #[default]
    Continue,
    /// Refuse the commit: the application gets an error.
    Fail,
}
