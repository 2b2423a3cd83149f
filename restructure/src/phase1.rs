//! Phase 1: copy the old table through the plan into the new one, in chunks, while
//! the service keeps reading and writing the old table.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::error::Result;
use crate::pace::Pacer;
use crate::progress::Shared;
use crate::tracker::Tracker;
use crate::twin::Twin;

/// Copies every record of the old table that existed when the copy started into
/// `twin` (later inserts are in `tracker`, which must already observe the old table).
/// Returns the number of records copied.
pub(crate) fn copy(
    ctx: &Context,
    twin: &mut Twin,
    tracker: &Tracker,
    pacer: &mut Pacer,
) -> Result<u64> {
    debug_assert!(
        ctx.old.has_write_observer(),
        "the lock history must be enabled before the first record is copied"
    );
    let bound = ctx.old.rid_bound();
    let started = Instant::now();
    let mut copied = 0u64;
    pacer.restart();
    ctx.scan_old(bound, |rows| {
        for (rid, row) in rows.iter().take_while(|(rid, _)| rid.0 < bound) {
            twin.copy(&ctx.old, *rid, row)?;
            copied += 1;
            pacer.step(&ctx.shared)?;
        }
        ctx.shared.rows_copied.store(copied, Ordering::Relaxed);
        ctx.shared
            .history
            .store(tracker.pending(), Ordering::Relaxed);
        throttle(&ctx.shared, copied, started)
    })?;
    twin.finish_copy(&ctx.old)?;
    Ok(copied)
}

/// Sleeps as needed to keep the copy at or under the rate limit.
fn throttle(shared: &Shared, copied: u64, started: Instant) -> Result<()> {
    if let Some(limit) = shared.rate_limit() {
        let due = Duration::from_secs_f64(copied as f64 / limit as f64);
        let elapsed = started.elapsed();
        if due > elapsed {
            shared.nap(due - elapsed)?;
        }
    }
    Ok(())
}
