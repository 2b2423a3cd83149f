//! A commit gate that refuses the application's writes on a database that is not the
//! primary's: a backup's (only its applier writes there), or an old primary's after
//! a hand-over (until it is a backup). Without it, a write to such a database would
//! commit without being replicated and diverge from the primary.

use std::sync::Arc;

use kirikae_engine::{CommitGate, CommitRequest, Database, GateNote, HookError, SessionInfo};

use crate::error::ReplicateError;
use crate::seq::Seq;

/// Why writes are refused.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Refusal {
    /// The database is a backup's.
    Backup,
    /// The primary handed over after this sequence.
    HandedOver(Seq),
}

/// See the module docs.
pub(crate) struct WriteFence {
    /// The sessions allowed to commit (the applier's and its lanes'), by address:
    /// the gate lives no longer than those sessions, and the addresses are only
    /// compared, never read.
    allowed: Vec<usize>,
    refusal: Refusal,
}

impl WriteFence {
    /// Installs a fence on `database` that lets only the `allowed` sessions commit.
    pub fn install(database: &Database, allowed: &[&SessionInfo], refusal: Refusal) {
        let gate = WriteFence {
            allowed: allowed
                .iter()
                .map(|s| *s as *const SessionInfo as usize)
                .collect(),
            refusal,
        };
        database.set_commit_gate(Some(Arc::new(gate)));
    }
}

impl CommitGate for WriteFence {
    fn prepare(&self, request: &mut CommitRequest<'_>) -> Result<Option<GateNote>, HookError> {
        if self
            .allowed
            .contains(&(request.session as *const SessionInfo as usize))
        {
            return Ok(None);
        }
        Err(match self.refusal {
            Refusal::Backup => ReplicateError::NotPrimary,
            Refusal::HandedOver(last_seq) => ReplicateError::HandedOver { last_seq },
        }
        .into())
    }

    /// The session decides: a backup's applier records no copy of what it writes.
    fn wants_operations(&self) -> bool {
        false
    }
}
