//! Record ids.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A record id: the stable slot address of a record inside its table.
///
/// A RID stays the same for the life of the record (updates, including primary-key
/// changes, keep it). Once a delete commits, the RID is free and a later insert may
/// reuse it; locking, the lock history and restructuring speak in RIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rid(pub u64);

impl fmt::Display for Rid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rid {}", self.0)
    }
}
