//! What a restructure tells a replica through the catalog observer
//! ([`Database::announce`](kirikae_engine::Database::announce)): that it began with
//! a plan, that it is about to switch, or that it was abandoned. Its switch needs no announcement: the engine shows the
//! catalog observer the switch itself, at its exact place among the commits.

use serde::{Deserialize, Serialize};

use crate::plan::Plan;

/// A restructure's announcement, encoded with postcard in a catalog change's payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Announcement {
    /// A restructure of the table began. `None`: by a row function, which a replica
    /// cannot run (it is code, not data).
    Begun {
        /// Its plan.
        plan: Option<Plan>,
    },
    /// The restructure of the table is about to switch (sent before its writers
    /// are held). A replica waits until its own has converged (starting it first
    /// if it is not running it: restarted from a checkpoint taken after `Begun`),
    /// so that it can switch at the switch with only a final drain.
    Switching {
        /// Its plan, as in `Begun`.
        plan: Option<Plan>,
    },
    /// The restructure of the table stopped without switching.
    Abandoned,
}

impl Announcement {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        // A plan is plain data: encoding it into memory cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a payload; `Err` names what is wrong with it.
    pub fn decode(payload: &[u8]) -> Result<Announcement, String> {
        postcard::from_bytes(payload).map_err(|e| {
            format!(
                "not a restructure announcement ({} bytes): {e}",
                payload.len()
            )
        })
    }
}
