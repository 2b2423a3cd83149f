//! The new table (T') and the maps between old and new RIDs, with the one operation
//! both phases use: bring one old RID's state into T'.
//!
//! RIDs are not preserved: T' is filled in old-RID order into fresh slots (so it comes
//! out compact), and `forward[old] = new` says where each old record lives in T'. When
//! the old table reuses a RID (delete, then insert of another record), the state
//! applied to `forward[old]` is the new record's: T' never keeps a stale copy.
//!
//! ## Key collisions
//!
//! T' is indexed by the new primary key, and T' holds a mix of current and stale
//! images while phases 1 and 2 run. A transaction that swaps or rotates keys among
//! records (a→tmp, b→a, tmp→b) makes the record being applied collide with a record
//! whose T' image is stale. Such a holder is **evicted**: taken out of T' and of the
//! RID maps, and placed again from its current image once the record being applied is
//! stored (which may evict another stale holder, and so on along the rotation).
//!
//! When the holder's *current* image has the same new key, two live records of T want
//! one key of T'. That may be transient (a change in flight between the two reads) or
//! a true duplicate of plan(T). The record being applied is then **parked**: kept out
//! of T' and placed again by every later round. Only a record still parked with
//! writers held at the switch is a true duplicate in plan(T) at the switch instant:
//! [`RestructureError::DuplicateKey`], naming both records.

use std::collections::BTreeMap;
use std::sync::Arc;

use kirikae_engine::{BulkLoad, EngineError, Key, Rid, RowRef, Table, Value};

use crate::error::{ConversionError, RestructureError, Result};
use crate::plan::CompiledTransform;

/// Evictions one application may cascade into before the rest is parked for the next
/// round (a rotation through this many records is already extraordinary).
const MAX_EVICTIONS: usize = 1024;

/// `Vec`-backed RID map; `NONE` marks an absent entry.
#[derive(Default)]
struct RidMap(Vec<u64>);

const NONE: u64 = u64::MAX;

impl RidMap {
    fn get(&self, rid: Rid) -> Option<Rid> {
        self.0
            .get(rid.0 as usize)
            .copied()
            .filter(|&r| r != NONE)
            .map(Rid)
    }

    fn set(&mut self, rid: Rid, to: Option<Rid>) {
        let i = rid.0 as usize;
        if i >= self.0.len() {
            if to.is_none() {
                return;
            }
            self.0.resize((i + 1).max(self.0.len() * 5 / 4), NONE);
        }
        self.0[i] = to.map_or(NONE, |r| r.0);
    }

    fn bytes(&self) -> u64 {
        (self.0.capacity() * 8) as u64
    }
}

/// Why a record is parked: the new key it wants and the record (old RID) holding it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Collision {
    pub key: Key,
    pub holder: Rid,
}

/// T' under construction.
pub(crate) struct Twin {
    pub table: Arc<Table>,
    source_name: String,
    transform: CompiledTransform,
    forward: RidMap,
    backward: RidMap,
    /// Old records kept out of T' because their current new key is held by another
    /// record's current image; placed again by every round.
    parked: BTreeMap<Rid, Collision>,
    /// Stale key holders evicted so far (for the report).
    evictions: u64,
    /// Phase 1's copy, until its keys are indexed (see [`Twin::copy`]).
    bulk: Option<BulkLoad>,
}

impl Twin {
    /// A twin sized for an old table of `records` records below `rid_bound`.
    pub fn new(
        source_name: &str,
        transform: CompiledTransform,
        records: u64,
        rid_bound: u64,
    ) -> Twin {
        let table = Arc::new(Table::with_capacity(
            source_name,
            transform.target().clone(),
            records as usize,
        ));
        Twin {
            bulk: Some(BulkLoad::new(Arc::clone(&table), records as usize)),
            table,
            source_name: source_name.to_owned(),
            transform,
            forward: RidMap(vec![NONE; rid_bound as usize]),
            backward: RidMap(Vec::with_capacity(records as usize)),
            parked: BTreeMap::new(),
            evictions: 0,
        }
    }

    pub fn transform(&self) -> &CompiledTransform {
        &self.transform
    }

    /// Where the old record `old` lives in T'.
    pub fn forward(&self, old: Rid) -> Option<Rid> {
        self.forward.get(old)
    }

    /// Takes the RID maps out (they are not needed once the switch happened or the
    /// restructure failed), so that the caller can have them freed in the background.
    pub fn take_maps(&mut self) -> Arc<dyn std::any::Any + Send + Sync> {
        Arc::new((
            std::mem::take(&mut self.forward.0),
            std::mem::take(&mut self.backward.0),
        ))
    }

    /// Memory of the two maps.
    pub fn map_bytes(&self) -> u64 {
        self.forward.bytes() + self.backward.bytes()
    }

    /// Records parked on a key collision.
    pub fn parked(&self) -> u64 {
        self.parked.len() as u64
    }

    /// Stale key holders evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Phase 1: stores plan(`row`) for `old`, which must not be in T' yet. T''s key
    /// index is built by [`finish_copy`](Twin::finish_copy), in one pass that is far
    /// cheaper than inserting keys in RID order (see [`BulkLoad`]); key collisions
    /// are resolved there.
    pub fn copy(&mut self, old_table: &Table, old: Rid, row: &[Value]) -> Result<()> {
        let Some(mut load) = self.bulk.take() else {
            return self.apply(old_table, old, Some(row));
        };
        debug_assert!(self.forward.get(old).is_none(), "{old} copied twice");
        let stored = self.convert(old_table, old, row).and_then(|new_row| {
            load.push(new_row)
                .map_err(|e| self.rejected(old_table, old, row, e))
        });
        self.bulk = Some(load);
        let new = stored?;
        self.forward.set(old, Some(new));
        self.backward.set(new, Some(old));
        Ok(())
    }

    /// Ends phase 1's bulk copy: indexes T''s keys, and places each record whose new
    /// key another copied record took again from its current image, as [`apply`]
    /// would (evicting a stale holder, or parking a true collision).
    ///
    /// [`apply`]: Twin::apply
    pub fn finish_copy(&mut self, old_table: &Table) -> Result<()> {
        let Some(load) = self.bulk.take() else {
            return Ok(());
        };
        // Every displaced record leaves the maps before any is placed again: placing
        // one may reuse the RID another was displaced from.
        let mut again = Vec::new();
        for displaced in load.finish() {
            let Some(old) = self.backward.get(displaced.rid) else {
                debug_assert!(false, "copied record {} has no old RID", displaced.rid);
                continue;
            };
            self.forward.set(old, None);
            self.backward.set(displaced.rid, None);
            again.push(old);
        }
        for old in again {
            self.sync(old_table, old)?;
        }
        Ok(())
    }

    /// Re-reads `old`'s current committed state from the old table and applies it.
    pub fn sync(&mut self, old_table: &Table, old: Rid) -> Result<()> {
        let image = old_table.get_by_rid(old);
        self.apply(old_table, old, image.as_deref())
    }

    /// Places every parked record again from its current image; returns how many
    /// were tried.
    pub fn retry_parked(&mut self, old_table: &Table) -> Result<usize> {
        let parked: Vec<Rid> = self.parked.keys().copied().collect();
        for &old in &parked {
            self.sync(old_table, old)?;
        }
        Ok(parked.len())
    }

    /// A record still parked: with writers held, a true duplicate in plan(T).
    pub fn duplicate(&self) -> Option<RestructureError> {
        let (&rid, collision) = self.parked.iter().next()?;
        Some(RestructureError::DuplicateKey {
            table: self.source_name.clone(),
            key: collision.key.clone(),
            rid,
            other_rid: collision.holder,
        })
    }

    /// Makes T' hold plan(`image`) for `old` (`None`: the old record is gone), evicting
    /// stale holders of its new key and placing them again from their current images.
    pub fn apply(&mut self, old_table: &Table, old: Rid, image: Option<&[Value]>) -> Result<()> {
        self.finish_copy(old_table)?;
        let mut evicted = Vec::new();
        self.place(old_table, old, image, &mut evicted)?;
        let mut budget = MAX_EVICTIONS;
        while let Some(other) = evicted.pop() {
            if budget == 0 {
                // Placed by the next round: parked records are always retried, and
                // the retry under the switch hold records the real collision, if any.
                let key = Key::new(Vec::new());
                self.parked.insert(other, Collision { key, holder: old });
                continue;
            }
            budget -= 1;
            let current = old_table.get_by_rid(other);
            self.place(old_table, other, current.as_deref(), &mut evicted)?;
        }
        Ok(())
    }

    fn place(
        &mut self,
        old_table: &Table,
        old: Rid,
        image: Option<&[Value]>,
        evicted: &mut Vec<Rid>,
    ) -> Result<()> {
        self.parked.remove(&old);
        let Some(row) = image else {
            self.take_out(old);
            return Ok(());
        };
        // At most twice: after evicting the holder the key is free (only this twin
        // writes T').
        for _ in 0..2 {
            let new_row = self.convert(old_table, old, row)?;
            let stored = match self.forward.get(old) {
                Some(new) => self.table.replace(new, new_row).map(|()| new),
                None => self.table.install(new_row),
            };
            let key = match stored {
                Ok(new) => {
                    self.forward.set(old, Some(new));
                    self.backward.set(new, Some(old));
                    return Ok(());
                }
                Err(EngineError::DuplicateKey { key, .. }) => key,
                Err(e) => return Err(self.rejected(old_table, old, row, e)),
            };
            let holder = self
                .table
                .get_with_rid(&key)
                .and_then(|(new, _)| self.backward.get(new))
                .filter(|&h| h != old);
            let Some(holder) = holder else {
                debug_assert!(false, "T' key {key} held by no other old record");
                break;
            };
            if self.holds_currently(old_table, holder, &key)? {
                self.take_out(old);
                self.parked.insert(old, Collision { key, holder });
                return Ok(());
            }
            // The holder's image in T' is stale (its key moved on in T): take it out
            // and place it again from its current image once this one is stored.
            self.take_out(holder);
            self.evictions += 1;
            evicted.push(holder);
        }
        Err(RestructureError::DuplicateKey {
            table: self.source_name.clone(),
            key: old_table.schema().key_of(row),
            rid: old,
            other_rid: old,
        })
    }

    /// Whether `holder`'s current image in the old table maps to `key`.
    fn holds_currently(&self, old_table: &Table, holder: Rid, key: &Key) -> Result<bool> {
        let Some(current) = old_table.get_by_rid(holder) else {
            return Ok(false);
        };
        let mapped = self.convert(old_table, holder, &current)?;
        let target = self.transform.target();
        // A row that does not fit holds nothing: placing it will fail with its error.
        Ok(target.validate_row(&self.source_name, &mapped).is_ok()
            && target.key_matches(&mapped, key))
    }

    /// Removes `old`'s record from T' and from the maps.
    fn take_out(&mut self, old: Rid) {
        if let Some(new) = self.forward.get(old) {
            self.table.remove(new);
            self.forward.set(old, None);
            self.backward.set(new, None);
        }
    }

    fn convert(&self, old_table: &Table, old: Rid, row: &[Value]) -> Result<RowRef> {
        self.transform.apply_shared(row).map_err(|f| {
            RestructureError::Conversion(Box::new(ConversionError {
                table: self.source_name.clone(),
                rid: old,
                key: old_table.schema().key_of(row),
                column: f.column,
                value: f.value,
                reason: f.reason,
            }))
        })
    }

    /// A row function produced a row that does not fit the target schema.
    fn rejected(
        &self,
        old_table: &Table,
        old: Rid,
        row: &[Value],
        e: EngineError,
    ) -> RestructureError {
        RestructureError::Conversion(Box::new(ConversionError {
            table: self.source_name.clone(),
            rid: old,
            key: old_table.schema().key_of(row),
            column: String::new(),
            value: format!("{row:?}"),
            reason: e.to_string(),
        }))
    }
}
