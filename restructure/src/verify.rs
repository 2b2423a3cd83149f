//! Verification before the switch: a chunked pass compares plan(old[rid]) with the new
//! table while writers run. Records that differ may just be written since the last
//! round; they are re-checked after two more rounds, and those still differing are
//! re-checked exactly under the switch hold, where a difference is a real mismatch.

use kirikae_engine::{Rid, Table, Value};

use crate::context::Context;
use crate::error::Result;
use crate::pace::Pacer;
use crate::rounds::Rounds;
use crate::twin::Twin;

/// What verification found so far.
#[derive(Default)]
pub(crate) struct Verification {
    /// Records that differed beside writers, re-checked under the hold.
    suspicious: Vec<Rid>,
    /// Real differences found (and repaired) under the hold.
    pub mismatches: u64,
}

impl Verification {
    /// The pass beside writers, then two rounds each followed by a re-check.
    pub fn pass(
        &mut self,
        ctx: &Context,
        rounds: &mut Rounds,
        twin: &mut Twin,
        pacer: &mut Pacer,
    ) -> Result<()> {
        let mut suspicious = Vec::new();
        pacer.restart();
        ctx.scan_old(ctx.old.rid_bound(), |rows| {
            for (rid, _) in rows {
                if !agrees(ctx, twin, *rid)? {
                    suspicious.push(*rid);
                }
                pacer.step(&ctx.shared)?;
            }
            Ok(())
        })?;
        self.suspicious = suspicious;
        for _ in 0..2 {
            rounds.run(ctx, twin)?;
            self.recheck(ctx, twin)?;
        }
        Ok(())
    }

    /// Keeps only the suspicious records that still differ (writers running). Called
    /// right before the hold, it leaves records changed since the last round: those
    /// the final drain re-syncs anyway.
    pub fn recheck(&mut self, ctx: &Context, twin: &Twin) -> Result<()> {
        let mut still = Vec::new();
        for rid in std::mem::take(&mut self.suspicious) {
            if !agrees(ctx, twin, rid)? {
                still.push(rid);
            }
        }
        self.suspicious = still;
        Ok(())
    }

    /// Under the hold, after the final drain: every difference is a mismatch. Each is
    /// counted and repaired. Records the final drain just applied (`drained`, sorted
    /// here) were re-read from their current image with writers held, so they are
    /// exact by construction; a RID phase 2 missed is never among them.
    pub fn under_hold(
        &mut self,
        ctx: &Context,
        twin: &mut Twin,
        drained: &mut [Rid],
    ) -> Result<()> {
        drained.sort_unstable();
        for rid in std::mem::take(&mut self.suspicious) {
            if drained.binary_search(&rid).is_err() && !agrees(ctx, twin, rid)? {
                self.mismatches += 1;
                twin.sync(&ctx.old, rid)?;
            }
        }
        let (old_len, new_len) = (ctx.old.len(), twin.table.len());
        self.mismatches += old_len.abs_diff(new_len);
        Ok(())
    }
}

/// Whether the new table holds plan(old[rid]) for `rid`.
fn agrees(ctx: &Context, twin: &Twin, rid: Rid) -> Result<bool> {
    let expected = match ctx.old.get_by_rid(rid) {
        Some(row) => match twin.transform().apply(&row) {
            Ok(r) => Some(r),
            // Not converted yet: phase 2 will fail on it with a precise error.
            Err(_) => return Ok(false),
        },
        None => None,
    };
    let actual = twin.forward(rid).and_then(|n| twin.table.get_by_rid(n));
    Ok(expected.as_deref() == actual.as_deref())
}

/// Test support: whether `new` equals `plan(old)` record for record (by new key).
pub fn tables_agree(
    old: &Table,
    new: &Table,
    apply: impl Fn(&[Value]) -> Option<Vec<Value>>,
) -> bool {
    let mut expected: Vec<Vec<Value>> = old.rows().iter().filter_map(|(_, r)| apply(r)).collect();
    let mut actual: Vec<Vec<Value>> = new.rows().iter().map(|(_, r)| r.to_vec()).collect();
    expected.sort();
    actual.sort();
    expected == actual
}
