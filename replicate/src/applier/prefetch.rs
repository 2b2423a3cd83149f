//! While one transaction is applied, asking the CPU for the records the next few
//! will write.
//!
//! A backup applies what the primary wrote to keys scattered over tables larger
//! than the caches: each write finds its index entry, then the record's slot, then
//! its image, three misses one after the other. Knowing the transactions queued
//! behind it, the applier asks for each stage's lines a few transactions ahead
//! ([`Table::prefetch`](kirikae_engine::Table::prefetch)), so the misses of
//! several transactions overlap instead of adding up.

use kirikae_engine::{Database, Operation, PrefetchStage};

/// How many transactions ahead each stage is asked for: the entry first, the slot
/// once the entry is near (it holds the RID), the image once the slot is.
const STAGES: [(usize, PrefetchStage); 3] = [
    (6, PrefetchStage::IndexEntry),
    (3, PrefetchStage::Slot),
    (1, PrefetchStage::Image),
];

/// Before the next transaction is applied: `upcoming(i)` is the operations of the
/// one `i` places behind it (`None` if there is none, or it writes nothing).
pub(super) fn ahead<'a>(database: &Database, upcoming: impl Fn(usize) -> Option<&'a [Operation]>) {
    for (distance, stage) in STAGES {
        if let Some(operations) = upcoming(distance) {
            for op in operations {
                prefetch(database, op, stage);
            }
        }
    }
}

fn prefetch(database: &Database, op: &Operation, stage: PrefetchStage) {
    match op {
        Operation::Update { table, key, .. } | Operation::Delete { table, key } => {
            if let Ok(table) = database.table(table) {
                table.prefetch(key, stage);
            }
        }
        // A new key's entry is all an insert looks up.
        Operation::Insert { table, row } if stage == PrefetchStage::IndexEntry => {
            if let Ok(table) = database.table(table) {
                table.prefetch(&table.schema().key_of(row), stage);
            }
        }
        _ => {}
    }
}
