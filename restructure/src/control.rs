//! Running a restructure: [`start`] and the handle (progress, pause, resume, rate
//! limit, switch on command, abort, wait).

use std::sync::Arc;
use std::thread::JoinHandle;

use kirikae_engine::{Database, ForReplica};

use crate::announcement::Announcement;
use crate::error::{RestructureError, Result};
use crate::job::Job;
use crate::options::RestructureOptions;
use crate::phase::Phase;
use crate::plan::Transform;
use crate::progress::{Progress, Shared};
use crate::report::RestructureReport;

/// A restructure running on its background thread.
///
/// Dropping the handle without [`wait`](RestructureHandle::wait) aborts the
/// restructure (the old table keeps serving): keep it until the end.
#[must_use = "dropping the handle aborts the restructure; call `wait`"]
pub struct RestructureHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<RestructureReport>>>,
}

/// Starts restructuring `table` of `db` by `transform` on a background thread.
///
/// The returned handle must be kept: dropping it aborts the restructure.
///
/// The transform is validated against the table first: an invalid plan fails here and
/// nothing starts. The start is then announced to the database's catalog observer
/// (see [`Announcement`]), which may refuse it. The old table keeps serving reads
/// and writes throughout; at the end its name switches to the new table.
pub fn start(
    db: &Database,
    table: &str,
    transform: impl Into<Transform>,
    options: RestructureOptions,
) -> Result<RestructureHandle> {
    let old = db.table(table)?;
    let transform = transform.into();
    let compiled = transform.compile(table, old.schema())?;
    // A replicating primary ships this to its backup, which starts the same plan
    // (its catalog observer may veto: e.g. a row function cannot be replicated).
    let plan = transform.plan().cloned();
    let begun = Announcement::Begun { plan: plan.clone() }.encode();
    let for_replica = match &plan {
        Some(_) => ForReplica::Follow,
        None => ForReplica::CannotFollow(
            "the restructure runs a row function, which is code and cannot be \
             replicated: give it a plan (data) instead",
        ),
    };
    db.announce(table, &begun, for_replica)?;
    let shared = Arc::new(Shared::new(table, old.len(), options.rate_limit_rows_per_s));
    let job = Job::new(
        db.clone(),
        old,
        compiled,
        plan,
        options,
        Arc::clone(&shared),
    );
    let thread = std::thread::Builder::new()
        .name(format!("restructure-{table}"))
        .spawn(move || job.run())
        .map_err(|e| RestructureError::Poisoned {
            table: table.to_owned(),
            detail: format!("cannot spawn the worker thread: {e}"),
        })?;
    Ok(RestructureHandle {
        shared,
        thread: Some(thread),
    })
}

impl RestructureHandle {
    /// Where the restructure is now.
    pub fn progress(&self) -> Progress {
        self.shared.progress()
    }

    /// Pauses copying and syncing at the next chunk or round boundary.
    pub fn pause(&self) {
        self.shared.set_paused(true);
    }

    /// Resumes after [`pause`](RestructureHandle::pause).
    pub fn resume(&self) {
        self.shared.set_paused(false);
    }

    /// Limits the phase-1 copy rate (`None`: unlimited), effective from the next chunk.
    pub fn set_rate_limit(&self, rows_per_s: Option<u64>) {
        self.shared.set_rate_limit(rows_per_s);
    }

    /// Stops the restructure within a work slice, in any phase: the
    /// new table is dropped and the old one keeps serving. [`wait`] then returns
    /// [`RestructureError::Aborted`] (or the report, if the switch already happened).
    ///
    /// [`wait`]: RestructureHandle::wait
    pub fn abort(&self) {
        self.shared.abort();
    }

    /// Lets a restructure started with
    /// [`switch_on_command`](RestructureOptions::switch_on_command) switch: at once
    /// if it is waiting in [`Phase::AwaitingSwitch`], else as soon as it converges.
    /// Without that option it changes nothing.
    pub fn switch_now(&self) {
        self.shared.command_switch();
    }

    /// Whether the worker has finished (switched or failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the end; returns the report of a switched restructure.
    pub fn wait(mut self) -> Result<RestructureReport> {
        self.join()
    }

    fn join(&mut self) -> Result<RestructureReport> {
        let Some(thread) = self.thread.take() else {
            return Err(RestructureError::Poisoned {
                table: self.shared.table.clone(),
                detail: "already joined".to_owned(),
            });
        };
        thread.join().unwrap_or_else(|panic| {
            self.shared.set_phase(Phase::Failed);
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".to_owned());
            Err(RestructureError::Poisoned {
                table: self.shared.table.clone(),
                detail,
            })
        })
    }
}

impl Drop for RestructureHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.abort();
            let _ = self.join();
        }
    }
}
