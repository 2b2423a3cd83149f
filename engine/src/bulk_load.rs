//! Filling a table nobody uses yet, fast: records go into slots at once, their keys
//! are indexed at the end, one index shard at a time.
//!
//! Why: inserting keys in arrival order touches the index at random. For a million
//! keys the index is tens of megabytes, so nearly every insert is a cache miss, and
//! that was most of a restructure's copy time. Grouped by shard, each shard's table
//! (a few thousand entries; see [`Table::with_capacity`]) stays in the core's cache
//! while it is filled.

use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::key::Key;
use crate::rid::Rid;
use crate::schema::RowRef;
use crate::slots::SlotArray;
use crate::table::Table;

/// A record [`BulkLoad::finish`] took back out: its key was already indexed for
/// another record.
#[derive(Clone, Debug, PartialEq)]
pub struct Displaced {
    /// The RID the record had (now free again).
    pub rid: Rid,
    /// Its primary key.
    pub key: Key,
    /// The record that holds the key.
    pub holder: Rid,
}

/// Loads records into a table nobody uses yet: not published in a catalog, no
/// concurrent transactions, no other maintenance call until the load is finished.
///
/// Until [`finish`](BulkLoad::finish), loaded records are in their slots
/// ([`Table::get_by_rid`] sees them) but not in the key index ([`Table::get`] does
/// not). Dropping the loader without `finish` indexes them the same way and frees the
/// records whose key was taken.
pub struct BulkLoad {
    table: Arc<Table>,
    /// Keys waiting to be indexed, by index shard.
    by_shard: Vec<Vec<(u64, Key, Rid)>>,
    finished: bool,
}

impl BulkLoad {
    /// Starts loading into `table`, expecting about `expected_records` records.
    pub fn new(table: Arc<Table>, expected_records: usize) -> BulkLoad {
        let shards = table.index.shard_count();
        let per_shard = expected_records / shards + expected_records / shards / 8 + 1;
        BulkLoad {
            table,
            by_shard: (0..shards).map(|_| Vec::with_capacity(per_shard)).collect(),
            finished: false,
        }
    }

    /// The table being loaded.
    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// Stores `row` as a committed record under a new RID, after checking it against
    /// the schema. Its key is indexed (and checked for duplicates) by
    /// [`finish`](BulkLoad::finish).
    pub fn push(&mut self, row: impl Into<RowRef>) -> Result<Rid> {
        let row: RowRef = row.into();
        let table = &*self.table;
        table.schema().validate_row(table.name(), &row)?;
        let key = table.schema().key_of(&row);
        let (rid, slot) = table.slots.allocate().ok_or(EngineError::TableFull {
            table: table.name().to_owned(),
            capacity: SlotArray::capacity(),
        })?;
        {
            let mut state = slot.latch();
            debug_assert!(state.owner.is_none() && state.committed.is_none());
            state.committed = Some(row);
        }
        table.count_live(1);
        let hash = table.index.hash(&key);
        self.by_shard[table.index.shard_of_hash(hash)].push((hash, key, rid));
        Ok(rid)
    }

    /// Indexes every loaded record, shard by shard. A record whose key another loaded
    /// record already holds is taken back out of the table (its RID freed) and
    /// returned, in no particular order; the caller decides whether that is an error.
    pub fn finish(mut self) -> Vec<Displaced> {
        self.index_all()
    }

    fn index_all(&mut self) -> Vec<Displaced> {
        self.finished = true;
        let table = &*self.table;
        let mut displaced = Vec::new();
        let mut taken = Vec::new();
        for (shard, batch) in std::mem::take(&mut self.by_shard).into_iter().enumerate() {
            table.index.insert_batch(shard, batch, &mut taken);
        }
        for (key, rid, holder) in taken {
            table.remove_unindexed(rid);
            displaced.push(Displaced { rid, key, holder });
        }
        displaced
    }
}

impl Drop for BulkLoad {
    fn drop(&mut self) {
        if !self.finished {
            self.index_all();
        }
    }
}

impl std::fmt::Debug for BulkLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkLoad")
            .field("table", &self.table.name())
            .field(
                "pending",
                &self.by_shard.iter().map(Vec::len).sum::<usize>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, Schema};
    use crate::value::{ColumnType, Value};

    fn table(records: usize) -> Arc<Table> {
        let schema = Schema::new(
            vec![
                Column::new("id", ColumnType::Int),
                Column::new("v", ColumnType::Int),
            ],
            &["id"],
        )
        .expect("schema");
        Arc::new(Table::with_capacity("t", schema, records))
    }

    fn row(id: i64, v: i64) -> Vec<Value> {
        vec![Value::Int(id), Value::Int(v)]
    }

    #[test]
    fn loaded_records_are_indexed_at_finish_and_duplicates_come_back_out() {
        let t = table(20_000);
        let mut load = BulkLoad::new(Arc::clone(&t), 20_000);
        for i in 0..20_000 {
            load.push(row(i, i)).expect("push");
        }
        let dup = load.push(row(17, -1)).expect("push");
        assert_eq!(t.get_by_rid(dup).expect("slot filled")[1], Value::Int(-1));
        assert!(t.get(&Key::from(3i64)).is_none(), "indexed before finish");
        let displaced = load.finish();
        assert_eq!(displaced.len(), 1);
        let d = &displaced[0];
        assert_eq!(d.key, Key::from(17i64));
        // Which of the two keeps the key is the index's business; the other is gone.
        let (kept, _) = t.get_with_rid(&d.key).expect("one of them is indexed");
        assert_eq!(d.holder, kept);
        assert!(t.get_by_rid(d.rid).is_none());
        assert_eq!(t.len(), 20_000);
        for i in (0..20_000).step_by(997) {
            assert_eq!(t.get(&Key::from(i)).expect("indexed")[0], Value::Int(i));
        }
        // The freed RID is reused.
        assert_eq!(t.install(row(50_000, 0)).expect("install"), d.rid);
    }

    #[test]
    fn rows_that_do_not_fit_are_refused_and_a_dropped_load_still_indexes() {
        let t = table(10);
        let mut load = BulkLoad::new(Arc::clone(&t), 10);
        let err = load.push(vec![Value::Int(1)]).expect_err("short row");
        assert!(err.to_string().contains('t'), "{err}");
        load.push(row(1, 1)).expect("push");
        drop(load);
        assert_eq!(t.get(&Key::from(1i64)).expect("indexed")[1], Value::Int(1));
        assert_eq!(t.len(), 1);
    }
}
