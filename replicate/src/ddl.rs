//! Catalog changes in the replication stream. On the primary, the replicator is the
//! database's catalog observer: each change (a table added or dropped, a restructure
//! begun, a switch) becomes a transaction of one [`Operation::Ddl`] at its exact
//! place among the commits, moded by the rules on kind `ddl`. On the backup the
//! applier applies it at the same place: a table added or dropped by itself, the
//! rest through the [`DdlHandler`] the embedder installed (the `kirikae` crate's
//! runs restructures), since this crate knows no restructure.
//!
//! [`Operation::Ddl`]: kirikae_engine::Operation::Ddl

use std::collections::VecDeque;
use std::fmt::Debug;

use kirikae_engine::{CatalogEvent, Database};

use crate::error::{ReplicateError, Result};
use crate::seq::Seq;

/// Catalog changes a node remembers for its reports (the oldest are forgotten).
pub(crate) const CATALOG_HISTORY_MAX: usize = 64;

/// A catalog change at its place in the stream, as a node's report shows it: on
/// the primary, where it was sequenced; on the backup, where it was applied. A
/// restructure's switch has the same `seq` on both.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CatalogChangeAt {
    /// Its place in the stream (`None`: the rules skip it, it was not shipped).
    pub seq: Option<Seq>,
    /// The table it is about.
    pub table: String,
    /// `added`, `dropped`, `announced` or `switched`.
    pub change: String,
    /// What it held up, µs. Primary: sequencing it (a sync change waits until the
    /// backup applied it). Backup: applying it, during which the stream waits (a
    /// switch: this node's own switch).
    pub took_us: u64,
    /// Backup: applied again from its access log at start, not as it arrived.
    pub replayed: bool,
}

/// Appends `change` to `history`, forgetting the oldest past
/// [`CATALOG_HISTORY_MAX`].
pub(crate) fn remember(history: &mut VecDeque<CatalogChangeAt>, change: CatalogChangeAt) {
    if history.len() == CATALOG_HISTORY_MAX {
        history.pop_front();
    }
    history.push_back(change);
}

/// Applies the catalog changes a backup cannot apply by itself (announcements, and
/// the switches they lead to).
///
/// `apply` runs on the backup's applier thread at the change's place in the
/// stream: every operation before it is applied, none after. It returns once the
/// change took effect here (a switch: this node's own switch is done); an error
/// rejects the change, and the primary hears why.
pub trait DdlHandler: Send + Sync + Debug {
    /// Applies `event` about `table` to `db`.
    fn apply(
        &self,
        db: &Database,
        table: &str,
        event: &CatalogEvent,
    ) -> std::result::Result<(), String>;

    /// This backup was promoted: whatever it started for the old primary and was
    /// not told to finish will never be (e.g. a restructure waiting for its switch).
    fn promoted(&self, db: &Database) {
        let _ = db;
    }
}

/// Applies `event` about `table`: tables added or dropped here, anything else by
/// `handler`.
pub(crate) fn apply_ddl(
    db: &Database,
    handler: Option<&dyn DdlHandler>,
    table: &str,
    event: &CatalogEvent,
) -> Result<()> {
    match (event, handler) {
        // Already there with that schema (a resync's copy made it): nothing to do.
        (CatalogEvent::Added { schema }, _)
            if db.table(table).is_ok_and(|t| t.schema().as_ref() == schema) =>
        {
            Ok(())
        }
        (CatalogEvent::Added { schema }, _) => {
            db.create_table(table, schema.clone())?;
            Ok(())
        }
        (CatalogEvent::Dropped, _) => {
            db.drop_table(table)?;
            Ok(())
        }
        (_, Some(handler)) => {
            handler
                .apply(db, table, event)
                .map_err(|reason| ReplicateError::DdlFailed {
                    table: table.to_owned(),
                    event: event_name(event).to_owned(),
                    reason,
                })
        }
        (_, None) => Err(ReplicateError::DdlUnsupported {
            table: table.to_owned(),
            event: event_name(event).to_owned(),
        }),
    }
}

/// The change's name in errors.
pub(crate) fn event_name(event: &CatalogEvent) -> &'static str {
    match event {
        CatalogEvent::Added { .. } => "added",
        CatalogEvent::Dropped => "dropped",
        CatalogEvent::Switched { .. } => "switched",
        CatalogEvent::Announced { .. } => "announced",
    }
}
