//! Replication modes (seed 000 §4.1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How an operation is replicated, from weakest to strongest.
///
/// | mode | primary waits for peer | order at peer |
/// |---|---|---|
/// | skip | no | — (not replicated) |
/// | async | no | per key only |
/// | ordered | no | primary's commit order |
/// | sync | yes | commit order (RPO = 0) |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Skip => "skip",
            Mode::Async => "async",
            Mode::Ordered => "ordered",
            Mode::Sync => "sync",
        })
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "skip" => Ok(Mode::Skip),
            "async" => Ok(Mode::Async),
            "ordered" => Ok(Mode::Ordered),
            "sync" => Ok(Mode::Sync),
            other => Err(format!(
                "unknown mode `{other}` (skip, async, ordered, sync)"
            )),
        }
    }
}

/// What a sync operation does while the peer is down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenPeerDown {
    /// Commit alone, queue the operation in the difference file, raise `Diverged`.
    #[default]
    Continue,
    /// Refuse the commit: the application gets an error.
    Fail,
}

impl FromStr for WhenPeerDown {
    type Err = String;
    fn from_str(s: &str) -> Result<WhenPeerDown, String> {
        match s {
            "continue" => Ok(WhenPeerDown::Continue),
            "fail" => Ok(WhenPeerDown::Fail),
            other => Err(format!(
                "unknown peer-down action `{other}` (continue, fail)"
            )),
        }
    }
}
