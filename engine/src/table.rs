//! A table: record slots addressed by RID, a primary-key index, the write observer
//! and the writer admission (how a switch holds writers).
//!
//! Lock order, everywhere in the crate: index shard, then slot latch, then free list.
//! Nothing touches the index while holding a slot latch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use crossbeam::utils::CachePadded;

use crate::error::{EngineError, Result};
use crate::hooks::WriteObserver;
use crate::index::{Entry, KeyIndex};
use crate::key::Key;
use crate::rid::Rid;
use crate::schema::{Row, RowRef, Schema};
use crate::slots::{SlotArray, SlotState};
use crate::writer_admission::WriterAdmission;

static NEXT_TABLE_ID: AtomicU64 = AtomicU64::new(1);

/// What [`Table::prefetch`] asks for: each stage needs the previous one's lines
/// in the cache to find its own without waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefetchStage {
    /// The index entry.
    IndexEntry,
    /// The record's slot.
    Slot,
    /// The record's committed image.
    Image,
}

/// Keys per index shard a presized table aims at: a shard of 4096 keys (8192 buckets
/// of 41 bytes for a one-column key) is about 330 KB, under a core's L2 cache.
pub const KEYS_PER_SHARD: usize = 4096;
/// Fewest index shards: enough for a few writer threads to rarely meet.
const MIN_SHARDS: usize = 16;
/// Most index shards (each empty shard costs a cache line or two).
const MAX_SHARDS: usize = 1 << 14;

/// `ArcSwapOption` needs a sized pointee.
struct ObserverCell(Arc<dyn WriteObserver>);

/// One table. Shared as `Arc<Table>`; all methods take `&self` and are safe to call
/// from many threads.
///
/// Reads through `Table` see committed data only. Writes go through a
/// [`Transaction`](crate::Transaction), except the maintenance methods
/// ([`install`](Table::install), [`replace`](Table::replace), [`remove`](Table::remove)),
/// which are for a table that is not yet published in a catalog (a restructure's new
/// table, a snapshot being loaded) and take no record locks.
pub struct Table {
    id: u64,
    name: String,
    schema: Arc<Schema>,
    pub(crate) slots: SlotArray,
    pub(crate) index: KeyIndex,
    observer: ArcSwapOption<ObserverCell>,
    pub(crate) admission: WriterAdmission,
    /// Committed records. On lines of its own: every insert and delete on any core
    /// writes it, and every write reads the fields beside it (name, schema, slots,
    /// index).
    live: CachePadded<AtomicU64>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Table {
    /// An empty table, not in any catalog.
    pub fn new(name: impl Into<String>, schema: Schema) -> Table {
        Table::with_capacity(name, schema, 0)
    }

    /// An empty table whose index has room for `records` keys without rehashing
    /// (e.g. a restructure's new table, sized like the old one).
    ///
    /// A large capacity also gets more index shards, about one per
    /// [`KEYS_PER_SHARD`] keys: each shard's table then fits in a core's cache while a
    /// [`BulkLoad`](crate::BulkLoad) fills it, and writers contend less.
    pub fn with_capacity(name: impl Into<String>, schema: Schema, records: usize) -> Table {
        let shards = (records / KEYS_PER_SHARD)
            .next_power_of_two()
            .clamp(MIN_SHARDS, MAX_SHARDS);
        Table {
            id: NEXT_TABLE_ID.fetch_add(1, Ordering::Relaxed),
            name: name.into(),
            schema: Arc::new(schema),
            slots: SlotArray::new(),
            index: KeyIndex::new(records, shards),
            observer: ArcSwapOption::empty(),
            admission: WriterAdmission::new(),
            live: CachePadded::new(AtomicU64::new(0)),
        }
    }

    /// Process-unique id of this table (a restructured twin gets a new one).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The name this table was created under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table's schema.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Number of committed records.
    pub fn len(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    /// Whether the table has no committed record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One past the highest RID ever used: a scan from `Rid(0)` to here sees every record.
    pub fn rid_bound(&self) -> u64 {
        self.slots.bound()
    }

    /// Writers (transactions) currently registered on this table.
    pub fn writers_in_flight(&self) -> u64 {
        self.admission.in_flight()
    }

    /// Hints that a write or read of `key` comes soon: asks the CPU for the
    /// cache lines of its `stage`. Changes nothing, waits for nothing.
    pub fn prefetch(&self, key: &Key, stage: PrefetchStage) {
        match stage {
            PrefetchStage::IndexEntry => self.index.prefetch(key),
            PrefetchStage::Slot => {
                if let Some(slot) = self.index.get(key).and_then(|rid| self.slots.get(rid)) {
                    slot.prefetch();
                }
            }
            PrefetchStage::Image => {
                if let Some(slot) = self.index.get(key).and_then(|rid| self.slots.get(rid)) {
                    if let Some(row) = slot.latch().committed.as_ref() {
                        crate::prefetch::prefetch(&row[0]);
                    }
                }
            }
        }
    }

    /// The committed record with primary key `key`.
    pub fn get(&self, key: &Key) -> Option<RowRef> {
        self.get_with_rid(key).map(|(_, row)| row)
    }

    /// The committed record with primary key `key`, and its RID.
    pub fn get_with_rid(&self, key: &Key) -> Option<(Rid, RowRef)> {
        let rid = self.index.get(key)?;
        let st = self.slots.get(rid)?.latch();
        let row = st.committed.clone()?;
        // An entry pointing at an unlocked record is exact (transactions fix the index
        // before releasing a lock). On a locked record it may be the owner's claim of
        // a key the committed image does not have yet: the image decides.
        if st.owner.is_none() {
            debug_assert!(
                self.schema.key_matches(&row, key),
                "index entry {key} is stale at {rid}"
            );
            return Some((rid, row));
        }
        drop(st);
        self.schema.key_matches(&row, key).then_some((rid, row))
    }

    /// The committed record at `rid`.
    pub fn get_by_rid(&self, rid: Rid) -> Option<RowRef> {
        self.slots.get(rid)?.latch().committed.clone()
    }

    /// Up to `limit` committed records with RID `>= from`, in RID order, each read
    /// atomically under its latch (never a torn or uncommitted image). Meant for a
    /// copier that walks the table in chunks while writers run; continue from the
    /// last RID returned plus one.
    pub fn scan(&self, from: Rid, limit: usize) -> Vec<(Rid, RowRef)> {
        let mut out = Vec::with_capacity(limit.min(4096));
        let bound = self.rid_bound();
        let mut rid = from.0;
        while rid < bound && out.len() < limit {
            if let Some(row) = self.get_by_rid(Rid(rid)) {
                out.push((Rid(rid), row));
            }
            rid += 1;
        }
        out
    }

    /// Every committed record in RID order (a full [`scan`](Table::scan)).
    pub fn rows(&self) -> Vec<(Rid, RowRef)> {
        self.scan(Rid(0), usize::MAX)
    }

    /// Installs (or with `None` removes) the write observer. Once this returns, every
    /// later lock for write and every later commit of a write on this table is
    /// reported (see [`WriteObserver`]).
    pub fn set_write_observer(&self, observer: Option<Arc<dyn WriteObserver>>) {
        self.observer
            .store(observer.map(|o| Arc::new(ObserverCell(o))));
    }

    /// Whether a write observer is installed.
    pub fn has_write_observer(&self) -> bool {
        self.observer.load().is_some()
    }

    /// Reports a lock of `rid` to the observer. Call with the slot latch held.
    pub(crate) fn notify_locked(&self, rid: Rid) {
        if let Some(cell) = self.observer.load().as_ref() {
            cell.0.record_locked(rid);
        }
    }

    /// Reports the new committed image of `rid`. Call with the slot latch held, after
    /// changing the image: an observer installed concurrently either sees this call,
    /// or the copier that reads the slot after installing it sees the new image.
    pub(crate) fn notify_published(&self, rid: Rid, image: Option<&RowRef>) {
        if let Some(cell) = self.observer.load().as_ref() {
            cell.0.record_published(rid, image);
        }
    }

    pub(crate) fn count_live(&self, delta: i64) {
        if delta >= 0 {
            self.live.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.live.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Takes the table apart for the reclaimer: its slot segments and its index.
    pub(crate) fn into_storage(self) -> (Vec<Box<[crate::slots::Slot]>>, KeyIndex) {
        (self.slots.into_segments(), self.index)
    }

    /// Empties the slot of a record that was never indexed and frees its RID.
    pub(crate) fn remove_unindexed(&self, rid: Rid) {
        let taken = self.slots.get(rid).and_then(|s| s.latch().committed.take());
        if taken.is_some() {
            self.count_live(-1);
            self.slots.release(rid);
        }
    }

    fn error_duplicate(&self, key: Key) -> EngineError {
        EngineError::DuplicateKey {
            table: self.name.clone(),
            key,
        }
    }

    /// Maintenance: stores `row` as a committed record under a new RID. For tables not
    /// yet published (no concurrent transactions); validates the row and the key.
    pub fn install(&self, row: impl Into<RowRef>) -> Result<Rid> {
        let row: RowRef = row.into();
        self.schema.validate_row(&self.name, &row)?;
        let key = self.schema.key_of(&row);
        match self.index.entry(key) {
            Entry::Occupied(o) => Err(self.error_duplicate(o.key().clone())),
            Entry::Vacant(v) => {
                let (rid, slot) = self.slots.allocate().ok_or(EngineError::TableFull {
                    table: self.name.clone(),
                    capacity: SlotArray::capacity(),
                })?;
                set_committed(&mut slot.latch(), row);
                v.insert(rid);
                self.count_live(1);
                Ok(rid)
            }
        }
    }

    /// Maintenance: stores `row` at exactly `rid` (snapshot load). For tables not yet
    /// published; fails if the RID or the key is taken.
    pub(crate) fn install_at(&self, rid: Rid, row: Row) -> Result<()> {
        let row = RowRef::from(row);
        self.schema.validate_row(&self.name, &row)?;
        let key = self.schema.key_of(&row);
        match self.index.entry(key) {
            Entry::Occupied(o) => Err(self.error_duplicate(o.key().clone())),
            Entry::Vacant(v) => {
                let slot = self
                    .slots
                    .claim_exact(rid)
                    .ok_or_else(|| EngineError::RidTaken {
                        table: self.name.clone(),
                        rid,
                    })?;
                set_committed(&mut slot.latch(), row);
                v.insert(rid);
                self.count_live(1);
                Ok(())
            }
        }
    }

    /// Maintenance: replaces the committed record at `rid` with `row` (which may carry
    /// a new key). For tables not yet published.
    pub fn replace(&self, rid: Rid, row: impl Into<RowRef>) -> Result<()> {
        let row: RowRef = row.into();
        self.schema.validate_row(&self.name, &row)?;
        let new_key = self.schema.key_of(&row);
        let old_row = self
            .get_by_rid(rid)
            .ok_or_else(|| EngineError::RidNotFound {
                table: self.name.clone(),
                rid,
            })?;
        let old_key = self.schema.key_of(&old_row);
        if old_key != new_key {
            match self.index.entry(new_key) {
                Entry::Occupied(o) => return Err(self.error_duplicate(o.key().clone())),
                Entry::Vacant(v) => {
                    v.insert(rid);
                }
            }
            self.index.remove_if(&old_key, rid);
        }
        if let Some(slot) = self.slots.get(rid) {
            set_committed(&mut slot.latch(), row);
        }
        Ok(())
    }

    /// Maintenance: removes the committed record at `rid`, freeing the RID. Returns the
    /// removed image, or `None` if the slot was empty. For tables not yet published.
    pub fn remove(&self, rid: Rid) -> Option<RowRef> {
        let slot = self.slots.get(rid)?;
        let old = slot.latch().committed.take()?;
        self.index.remove_if(&self.schema.key_of(&old), rid);
        self.count_live(-1);
        self.slots.release(rid);
        Some(old)
    }
}

fn set_committed(state: &mut SlotState, row: RowRef) {
    debug_assert!(
        state.owner.is_none(),
        "maintenance write on a locked record"
    );
    state.committed = Some(row);
}
