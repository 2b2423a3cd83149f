//! The lock history (seed 001 §2.4): the set of RIDs of the old table locked for
//! update since it was enabled. RIDs only, never row images.
//!
//! A bitmap, one bit per RID, allocated in 8 KiB segments on first touch: memory is
//! proportional to the regions of the table that were written, and never more than
//! table RIDs / 8 bytes. Recording is wait-free (an atomic `fetch_or`, skipped when
//! the bit is already set). Each segment keeps a summary word per 64 bitmap words so
//! that draining skips clean regions.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use kirikae_engine::{Rid, RowRef, WriteObserver};
use parking_lot::Mutex;

const SEGMENT_BITS: u64 = 1 << 16;
const WORDS: usize = (SEGMENT_BITS / 64) as usize;
const SUMMARY_WORDS: usize = WORDS / 64;
/// RIDs the directory covers at least; it covers twice the table's RID bound at
/// creation, so that a table can grow during a restructure. Beyond, RIDs go to
/// `overflow` (correct, just slower).
const MIN_COVERED_RIDS: u64 = 1 << 20;

struct Segment {
    words: Box<[AtomicU64]>,
    /// Bit `i` of summary word `j`: bitmap word `64 j + i` may have bits set.
    summary: [AtomicU64; SUMMARY_WORDS],
}

impl Segment {
    fn new() -> Segment {
        Segment {
            words: (0..WORDS).map(|_| AtomicU64::new(0)).collect(),
            summary: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The RIDs of one table locked for update since it was installed as the table's
/// write observer.
pub struct LockHistory {
    directory: Box<[OnceLock<Box<Segment>>]>,
    /// Directory indices of allocated segments, so draining visits only those.
    allocated: Mutex<Vec<usize>>,
    overflow: Mutex<std::collections::BTreeSet<u64>>,
    /// RIDs currently recorded.
    len: AtomicU64,
    segments: AtomicUsize,
}

impl Default for LockHistory {
    fn default() -> Self {
        LockHistory::new()
    }
}

impl LockHistory {
    /// An empty history for a small table.
    pub fn new() -> LockHistory {
        LockHistory::for_rid_bound(0)
    }

    /// An empty history for a table whose RIDs are below `rid_bound` now.
    pub fn for_rid_bound(rid_bound: u64) -> LockHistory {
        let covered = rid_bound.saturating_mul(2).max(MIN_COVERED_RIDS);
        let segments = covered.div_ceil(SEGMENT_BITS) as usize;
        LockHistory {
            directory: (0..segments).map(|_| OnceLock::new()).collect(),
            allocated: Mutex::new(Vec::new()),
            overflow: Mutex::new(Default::default()),
            len: AtomicU64::new(0),
            segments: AtomicUsize::new(0),
        }
    }

    fn segment(&self, index: usize) -> &Segment {
        self.directory[index].get_or_init(|| {
            self.allocated.lock().push(index);
            self.segments.fetch_add(1, Ordering::Relaxed);
            Box::new(Segment::new())
        })
    }

    /// Adds `rid`.
    pub fn record(&self, rid: Rid) {
        let seg = (rid.0 / SEGMENT_BITS) as usize;
        if seg >= self.directory.len() {
            if self.overflow.lock().insert(rid.0) {
                self.len.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
        let bit_in_seg = (rid.0 % SEGMENT_BITS) as usize;
        let (word, bit) = (bit_in_seg / 64, 1u64 << (bit_in_seg % 64));
        let segment = self.segment(seg);
        // Hot records are locked again and again: a read avoids bouncing the line.
        if segment.words[word].load(Ordering::Relaxed) & bit != 0 {
            return;
        }
        if segment.words[word].fetch_or(bit, Ordering::SeqCst) & bit == 0 {
            self.len.fetch_add(1, Ordering::SeqCst);
        }
        // After the word: a drain that clears this summary bit first finds the word bit.
        segment.summary[word / 64].fetch_or(1 << (word % 64), Ordering::SeqCst);
    }

    /// Whether `rid` is recorded (not yet drained).
    pub fn contains(&self, rid: Rid) -> bool {
        let seg = (rid.0 / SEGMENT_BITS) as usize;
        if seg >= self.directory.len() {
            return self.overflow.lock().contains(&rid.0);
        }
        let bit_in_seg = (rid.0 % SEGMENT_BITS) as usize;
        self.directory[seg].get().is_some_and(|s| {
            s.words[bit_in_seg / 64].load(Ordering::SeqCst) & (1 << (bit_in_seg % 64)) != 0
        })
    }

    /// RIDs recorded and not yet drained.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::SeqCst)
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes and clears every recorded RID, in ascending order. A RID recorded while
    /// draining is either taken now or kept for the next drain, never lost.
    pub fn drain(&self) -> Vec<Rid> {
        let mut segments = self.allocated.lock().clone();
        segments.sort_unstable();
        let mut out = Vec::with_capacity(self.len() as usize);
        for seg_index in segments {
            let Some(segment) = self.directory[seg_index].get() else {
                continue;
            };
            let base = seg_index as u64 * SEGMENT_BITS;
            for (j, summary) in segment.summary.iter().enumerate() {
                let mut dirty = summary.swap(0, Ordering::SeqCst);
                while dirty != 0 {
                    let w = j * 64 + dirty.trailing_zeros() as usize;
                    dirty &= dirty - 1;
                    let mut bits = segment.words[w].swap(0, Ordering::SeqCst);
                    self.len
                        .fetch_sub(u64::from(bits.count_ones()), Ordering::SeqCst);
                    while bits != 0 {
                        out.push(Rid(base + w as u64 * 64 + u64::from(bits.trailing_zeros())));
                        bits &= bits - 1;
                    }
                }
            }
        }
        let overflow = std::mem::take(&mut *self.overflow.lock());
        self.len.fetch_sub(overflow.len() as u64, Ordering::SeqCst);
        out.extend(overflow.into_iter().map(Rid));
        out
    }

    /// Memory held: segments allocated (they are kept until the history is dropped, so
    /// this is also the peak) plus the directory.
    pub fn bytes(&self) -> u64 {
        let segment = std::mem::size_of::<Segment>() + WORDS * 8;
        let directory = self.directory.len() * std::mem::size_of::<OnceLock<Box<Segment>>>();
        (self.segments.load(Ordering::Relaxed) * segment + directory) as u64
            + self.overflow.lock().len() as u64 * 40
    }
}

impl WriteObserver for LockHistory {
    fn record_locked(&self, rid: Rid) {
        self.record(rid);
    }

    fn record_published(&self, rid: Rid, _image: Option<&RowRef>) {
        self.record(rid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn records_drains_in_order_and_counts() {
        let h = LockHistory::new();
        for r in [5u64, 1, 70_000, 5, 64, 63] {
            h.record(Rid(r));
        }
        assert_eq!(h.len(), 5);
        assert!(h.contains(Rid(64)) && !h.contains(Rid(65)));
        assert_eq!(h.drain(), [1, 5, 63, 64, 70_000].map(Rid).to_vec());
        assert!(h.is_empty());
        assert!(h.drain().is_empty());
        let far = Rid(1 << 40); // beyond the directory: kept in the overflow set
        h.record(far);
        assert_eq!(h.drain(), vec![far]);
    }

    #[test]
    fn memory_is_proportional_to_touched_regions() {
        let h = LockHistory::new();
        let empty = h.bytes();
        h.record(Rid(1));
        h.record(Rid(2));
        let one = h.bytes() - empty;
        assert!(one <= 8 * 1024 + 256, "{one}");
        h.record(Rid(10 * SEGMENT_BITS));
        assert_eq!(h.bytes() - empty, 2 * one);
    }

    #[test]
    fn concurrent_records_during_drains_are_never_lost() {
        let h = Arc::new(LockHistory::new());
        let writers: Vec<_> = (0..3u64)
            .map(|t| {
                let h = Arc::clone(&h);
                std::thread::spawn(move || {
                    for i in 0..200_000u64 {
                        h.record(Rid((i * 7 + t) % 150_000));
                    }
                })
            })
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        while !writers.iter().all(|w| w.is_finished()) {
            seen.extend(h.drain());
        }
        for w in writers {
            w.join().expect("writer");
        }
        seen.extend(h.drain());
        let expected: std::collections::BTreeSet<Rid> = (0..3u64)
            .flat_map(|t| (0..200_000u64).map(move |i| Rid((i * 7 + t) % 150_000)))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(h.len(), 0);
    }
}
