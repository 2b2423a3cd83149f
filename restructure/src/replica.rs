//! The replica's side of replicated restructures: each restructure a primary
//! announces is run here too, online, with the same plan, and switches on command
//! at the primary's switch (see [`RestructureOptions::switch_on_command`]).

use std::collections::HashMap;
use std::time::Duration;

use kirikae_engine::{CatalogEvent, Database, Schema};
use parking_lot::Mutex;

use crate::announcement::Announcement;
use crate::control::{start, RestructureHandle};
use crate::options::RestructureOptions;
use crate::phase::Phase;
use crate::plan::Plan;

/// How often a replica waiting at a `Switching` announcement looks whether its
/// restructure has converged.
const CONVERGED_POLL: Duration = Duration::from_millis(1);

/// Restructures announced by a primary, running on this node until their switch
/// or abandonment arrives. Give it, wrapped, to the backup as its DDL handler.
#[derive(Default)]
pub struct Replica {
    /// Options of the restructures run here (`switch_on_command` is forced on).
    /// A `duty_cycle` under 1.0 lets this node's copy fall behind the primary's,
    /// and then its apply waits at the primary's `Switching` announcement (and the
    /// primary's sync commits with it): a backup with no clients of its own is
    /// best given 1.0, as `kirikae backup` does.
    pub options: RestructureOptions,
    running: Mutex<HashMap<String, RestructureHandle>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// A replica running restructures with `options`.
    pub fn new(options: RestructureOptions) -> Replica {
        Replica {
            options,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Tables whose restructure runs here, waiting for the primary's switch.
    pub fn running(&self) -> Vec<String> {
        let mut tables: Vec<String> = self.running.lock().keys().cloned().collect();
        tables.sort();
        tables
    }

    /// Applies a primary's catalog change of `table`: a restructure's announcement
    /// (begun: start the same plan here; switching: wait until it has converged;
    /// abandoned: abort it) or its switch (switch here and return once done, the
    /// new table's schema checked against the primary's). `Err` says why it cannot.
    pub fn apply(&self, db: &Database, table: &str, event: &CatalogEvent) -> Result<(), String> {
        match event {
            CatalogEvent::Announced { payload } => {
                self.announced(db, table, Announcement::decode(payload)?)
            }
            CatalogEvent::Switched { schema } => self.switched(db, table, schema),
            CatalogEvent::Added { .. } | CatalogEvent::Dropped => Err(format!(
                "a table added or dropped is the replication's to apply, not a restructure's \
                 (`{table}`)"
            )),
        }
    }

    /// This node became the primary: the restructures it ran for the old primary
    /// will never be told to switch, so they are aborted (their tables keep their
    /// old schema, as the old primary's do, whose switch never reached here).
    pub fn abort_all(&self) {
        let running: Vec<RestructureHandle> = self.running.lock().drain().map(|(_, h)| h).collect();
        running.into_iter().for_each(abort);
    }

    fn announced(
        &self,
        db: &Database,
        table: &str,
        announcement: Announcement,
    ) -> Result<(), String> {
        match announcement {
            Announcement::Begun { plan } => {
                let plan = replicable(table, plan)?;
                let mut running = self.running.lock();
                // One the primary no longer runs (its start was rolled back after
                // this node took it): the newer one replaces it.
                if let Some(stale) = running.remove(table) {
                    abort(stale);
                }
                running.insert(table.to_owned(), self.start_here(db, table, plan)?);
                Ok(())
            }
            Announcement::Switching { plan } => {
                // Converged before the primary holds its writers for the switch, so
                // that the switch takes this node only its final drain. With a sync
                // `ddl` rule the primary waits for this, up to its sync timeout;
                // past it the primary's restructure fails and is abandoned here
                // too: never switched on one node only.
                let running = self.running.lock().remove(table);
                let handle = match running {
                    Some(handle) => handle,
                    // Not running here (restarted since `Begun`): start it now.
                    // (Switching at once instead would apply the primary's last
                    // writes to the old table to the new one.)
                    None => self.start_here(db, table, replicable(table, plan)?)?,
                };
                while handle.progress().phase != Phase::AwaitingSwitch {
                    if handle.is_finished() {
                        return handle.wait().map(|_| ()).map_err(|e| e.to_string());
                    }
                    std::thread::sleep(CONVERGED_POLL);
                }
                self.running.lock().insert(table.to_owned(), handle);
                Ok(())
            }
            Announcement::Abandoned => {
                // Aborted (or failed on its own): the old table serves.
                if let Some(handle) = self.running.lock().remove(table) {
                    abort(handle);
                }
                Ok(())
            }
        }
    }

    fn switched(&self, db: &Database, table: &str, schema: &Schema) -> Result<(), String> {
        let handle = self.running.lock().remove(table).ok_or_else(|| {
            format!(
                "the primary switched `{table}` but no restructure of it runs here \
                 (this node missed its start): a resync is needed"
            )
        })?;
        handle.switch_now();
        let report = handle.wait().map_err(|e| e.to_string())?;
        let ours = db.table(table).map_err(|e| e.to_string())?;
        if ours.schema().as_ref() != schema {
            return Err(format!(
                "`{table}` switched here to another schema than the primary's (after {} rows)",
                report.rows_final
            ));
        }
        Ok(())
    }

    /// Starts the primary's `plan` for `table` here, to switch on command.
    fn start_here(
        &self,
        db: &Database,
        table: &str,
        plan: Plan,
    ) -> Result<RestructureHandle, String> {
        let options = RestructureOptions {
            switch_on_command: true,
            ..self.options.clone()
        };
        start(db, table, plan, options).map_err(|e| e.to_string())
    }
}

/// The announced plan; `None` was a row function, which is code and cannot be
/// shipped.
fn replicable(table: &str, plan: Option<Plan>) -> Result<Plan, String> {
    plan.ok_or_else(|| {
        format!(
            "the restructure of `{table}` runs a row function, which cannot be \
             replicated: give it a plan (data) instead"
        )
    })
}

/// Stops `handle`'s restructure and waits for it: its table keeps the old schema.
fn abort(handle: RestructureHandle) {
    handle.abort();
    let _ = handle.wait();
}

impl Drop for Replica {
    fn drop(&mut self) {
        // Restructures still waiting for a switch that will not come now.
        self.abort_all();
    }
}
