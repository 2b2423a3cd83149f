//! The journal baseline (seed 001 §2.3): the method the lock history replaces. Every
//! commit's after-image is copied into an in-memory journal during phase 1 and
//! replayed in phase 2. It exists to measure seed 001's claim against.

use std::sync::atomic::{AtomicU64, Ordering};

use kirikae_engine::{Rid, Row, RowRef, WriteObserver};
use parking_lot::Mutex;

/// Per-entry bookkeeping besides the encoded image (RID, length, vector slot).
const ENTRY_OVERHEAD: u64 = 40;

/// One journaled write: the RID and its encoded after-image (`None`: deleted).
pub struct JournalEntry {
    /// The record's RID in the old table.
    pub rid: Rid,
    /// postcard-encoded after-image.
    pub image: Option<Vec<u8>>,
}

impl JournalEntry {
    /// The decoded after-image.
    pub fn row(&self) -> Option<Row> {
        self.image.as_ref().map(|bytes| {
            postcard::from_bytes(bytes)
                .unwrap_or_else(|e| unreachable!("journal images are encoded here: {e}"))
        })
    }
}

/// After-images of every write published since installation, in publish order.
#[derive(Default)]
pub struct Journal {
    /// Entries and their bytes, changed together so the count never runs ahead of the
    /// entries it describes.
    pending: Mutex<Pending>,
    peak: AtomicU64,
}

#[derive(Default)]
struct Pending {
    entries: Vec<JournalEntry>,
    bytes: u64,
}

impl Journal {
    /// An empty journal.
    pub fn new() -> Journal {
        Journal::default()
    }

    /// Takes every entry, oldest first.
    pub fn drain(&self) -> Vec<JournalEntry> {
        let mut pending = self.pending.lock();
        pending.bytes = 0;
        std::mem::take(&mut pending.entries)
    }

    /// Puts back entries a drain took but did not apply, ahead of any written since,
    /// so that replay order stays publish order.
    pub fn put_back(&self, mut entries: Vec<JournalEntry>) {
        let bytes: u64 = entries.iter().map(entry_bytes).sum();
        let mut pending = self.pending.lock();
        entries.append(&mut pending.entries);
        pending.entries = entries;
        pending.bytes += bytes;
    }

    /// Entries not yet drained.
    pub fn len(&self) -> u64 {
        self.pending.lock().entries.len() as u64
    }

    /// Whether no entry is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory the pending entries hold now.
    pub fn bytes(&self) -> u64 {
        self.pending.lock().bytes
    }

    /// Most memory the journal held at once.
    pub fn peak_bytes(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

fn entry_bytes(e: &JournalEntry) -> u64 {
    ENTRY_OVERHEAD + e.image.as_ref().map_or(0, |b| b.len() as u64)
}

impl WriteObserver for Journal {
    fn record_locked(&self, _rid: Rid) {}

    fn record_published(&self, rid: Rid, image: Option<&RowRef>) {
        let image = image.map(|row| {
            postcard::to_stdvec(&**row).unwrap_or_else(|e| unreachable!("rows encode: {e}"))
        });
        let entry = JournalEntry { rid, image };
        let size = entry_bytes(&entry);
        let now = {
            let mut pending = self.pending.lock();
            pending.entries.push(entry);
            pending.bytes += size;
            pending.bytes
        };
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
}
