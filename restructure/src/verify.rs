//! Verification before the switch: a chunked pass compares plan(old[rid]) with the new
//! table while writers run. Records that differ may just be written since the last
//! round; they are re-checked after two more rounds, and those still differing are
//! re-checked exactly under the switch hold, where a difference is a real mismatch.

use kirikae_engine::{Rid, Table, Value};

use crate::error::Result;
use crate::job::Job;

impl Job {
    pub(crate) fn verify_pass(&mut self) -> Result<()> {
        let mut from = 0u64;
        let bound = self.old.rid_bound();
        let chunk = self.options.chunk_rows.max(1);
        let mut suspicious = Vec::new();
        self.pacer.restart();
        while from < bound {
            self.shared.checkpoint()?;
            let rows = self.old.scan(Rid(from), chunk);
            let Some(&(last, _)) = rows.last() else {
                break;
            };
            for (rid, _) in &rows {
                if !self.agrees(*rid)? {
                    suspicious.push(*rid);
                }
                self.pacer.step(&self.shared)?;
            }
            from = last.0 + 1;
        }
        self.suspicious = suspicious;
        for _ in 0..2 {
            self.round()?;
            self.recheck_suspicious()?;
        }
        Ok(())
    }

    /// Keeps only the suspicious records that still differ (writers running). Called
    /// right before the hold, it leaves records changed since the last round: those
    /// the final drain re-syncs anyway.
    pub(crate) fn recheck_suspicious(&mut self) -> Result<()> {
        let mut still = Vec::new();
        for rid in std::mem::take(&mut self.suspicious) {
            if !self.agrees(rid)? {
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
    pub(crate) fn verify_under_hold(&mut self, drained: &mut [Rid]) -> Result<()> {
        drained.sort_unstable();
        for rid in std::mem::take(&mut self.suspicious) {
            if drained.binary_search(&rid).is_err() && !self.agrees(rid)? {
                self.mismatches += 1;
                self.twin.sync(&self.old, rid)?;
            }
        }
        let (old_len, new_len) = (self.old.len(), self.twin.table.len());
        self.mismatches += old_len.abs_diff(new_len);
        Ok(())
    }

    /// Whether the new table holds plan(old[rid]) for `rid`.
    fn agrees(&self, rid: Rid) -> Result<bool> {
        let expected = match self.old.get_by_rid(rid) {
            Some(row) => match self.twin.transform().apply(&row) {
                Ok(r) => Some(r),
                // Not converted yet: phase 2 will fail on it with a precise error.
                Err(_) => return Ok(false),
            },
            None => None,
        };
        let actual = self
            .twin
            .forward(rid)
            .and_then(|n| self.twin.table.get_by_rid(n));
        Ok(expected.as_deref() == actual.as_deref())
    }
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
