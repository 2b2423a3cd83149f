//! The phases of a restructure, in order.

use serde::Serialize;

/// Where a restructure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Phase {
    /// Compiling the plan, creating the new table.
    Starting,
    /// Phase 1: copying through the plan.
    Copying,
    /// Phase 2: update synchronization rounds.
    Syncing,
    /// Verifying before the switch.
    Verifying,
    /// Converged, keeping the new table in step until told to switch
    /// ([`RestructureOptions::switch_on_command`](crate::RestructureOptions::switch_on_command)).
    AwaitingSwitch,
    /// Holding writers and switching.
    Switching,
    /// Switched: the new table serves.
    Done,
    /// Stopped without switching; the old table serves.
    Failed,
}

impl Phase {
    pub(crate) fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Starting,
            1 => Phase::Copying,
            2 => Phase::Syncing,
            3 => Phase::Verifying,
            4 => Phase::AwaitingSwitch,
            5 => Phase::Switching,
            6 => Phase::Done,
            _ => Phase::Failed,
        }
    }
}
