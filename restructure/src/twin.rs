//! The new table (T') and the maps between old and new RIDs, with the one operation
//! both phases use: bring one old RID's state into T'.
//!
//! RIDs are not preserved: T' is filled in old-RID order into fresh slots (so it comes
//! out compact), and `forward[old] = new` says where each old record lives in T'. When
//! the old table reuses a RID (delete, then insert of another record), the state
//! applied to `forward[old]` is the new record's: T' never keeps a stale copy.

use std::sync::Arc;

use kirikae_engine::{EngineError, Rid, Row, RowRef, Table, Value};

use crate::error::{ConversionError, RestructureError, Result};
use crate::plan::CompiledTransform;

/// How many times a key collision in T' is resolved by re-reading the holder before
/// it is taken for a real duplicate.
const COLLISION_RETRIES: usize = 4;

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

/// T' under construction.
pub(crate) struct Twin {
    pub table: Arc<Table>,
    source_name: String,
    transform: CompiledTransform,
    forward: RidMap,
    backward: RidMap,
}

impl Twin {
    /// A twin sized for an old table of `records` records below `rid_bound`.
    pub fn new(
        source_name: &str,
        transform: CompiledTransform,
        records: u64,
        rid_bound: u64,
    ) -> Twin {
        Twin {
            table: Arc::new(Table::with_capacity(
                source_name,
                transform.target().clone(),
                records as usize,
            )),
            source_name: source_name.to_owned(),
            transform,
            forward: RidMap(vec![NONE; rid_bound as usize]),
            backward: RidMap(Vec::with_capacity(records as usize)),
        }
    }

    pub fn transform(&self) -> &CompiledTransform {
        &self.transform
    }

    /// Where the old record `old` lives in T'.
    pub fn forward(&self, old: Rid) -> Option<Rid> {
        self.forward.get(old)
    }

    /// Memory of the two maps.
    pub fn map_bytes(&self) -> u64 {
        self.forward.bytes() + self.backward.bytes()
    }

    /// Re-reads `old`'s current committed state from the old table and applies it.
    pub fn sync(&mut self, old_table: &Table, old: Rid) -> Result<()> {
        let image = old_table.get_by_rid(old);
        self.apply(old_table, old, image.as_deref())
    }

    /// Makes T' hold plan(`image`) for `old` (`None`: the old record is gone).
    pub fn apply(&mut self, old_table: &Table, old: Rid, image: Option<&[Value]>) -> Result<()> {
        self.apply_depth(old_table, old, image, 0)
    }

    fn apply_depth(
        &mut self,
        old_table: &Table,
        old: Rid,
        image: Option<&[Value]>,
        depth: usize,
    ) -> Result<()> {
        let Some(row) = image else {
            if let Some(new) = self.forward.get(old) {
                self.table.remove(new);
                self.forward.set(old, None);
                self.backward.set(new, None);
            }
            return Ok(());
        };
        // Set when the given image was replaced by the record's current one.
        let mut current: Option<RowRef> = None;
        for attempt in 0..=COLLISION_RETRIES {
            // Converted again on each attempt: storing consumes the row, and a
            // collision (rare) may change which image is applied.
            let new_row = self.convert(old_table, old, current.as_deref().unwrap_or(row))?;
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
                .filter(|&other| other != old);
            match holder {
                // The holder may have changed in the old table since it was copied:
                // bring it up to date.
                Some(other) if attempt % 2 == 0 && depth < COLLISION_RETRIES => {
                    let state = old_table.get_by_rid(other);
                    self.apply_depth(old_table, other, state.as_deref(), depth + 1)?;
                }
                // The image being applied may itself be stale (a journal replays old
                // images): use the record's current one; later entries still bring it
                // to its final state.
                Some(_) if current.is_none() => {
                    let Some(now) = old_table.get_by_rid(old) else {
                        return self.apply_depth(old_table, old, None, depth);
                    };
                    current = Some(now);
                }
                Some(other) if attempt == COLLISION_RETRIES || depth >= COLLISION_RETRIES => {
                    return Err(RestructureError::DuplicateKey {
                        table: self.source_name.clone(),
                        key,
                        rid: old,
                        other_rid: other,
                    });
                }
                // The holder vanished meanwhile, or another round may settle it.
                _ => {}
            }
        }
        let new_row = self.convert(old_table, old, current.as_deref().unwrap_or(row))?;
        let key = self.transform.target().key_of(&new_row);
        let other_rid = self
            .table
            .get_with_rid(&key)
            .and_then(|(new, _)| self.backward.get(new))
            .unwrap_or(old);
        Err(RestructureError::DuplicateKey {
            table: self.source_name.clone(),
            key,
            rid: old,
            other_rid,
        })
    }

    fn convert(&self, old_table: &Table, old: Rid, row: &[Value]) -> Result<Row> {
        self.transform.apply(row).map_err(|f| {
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
