//! Record slots addressed by RID: a growable array that never moves a slot, and the
//! free list that makes RIDs of deleted records reusable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use parking_lot::{Mutex, MutexGuard};

use crate::rid::Rid;
use crate::schema::RowRef;
use crate::txn_id::TxnId;

/// Size of segment 0; segment `k` holds `FIRST_SEGMENT << k` slots.
const FIRST_SEGMENT: u64 = 1024;
/// Segments `0..SEGMENTS` give `FIRST_SEGMENT * (2^SEGMENTS - 1)` RIDs (about 4 * 10^12).
const SEGMENTS: usize = 32;

/// What the owning transaction will do to the slot at commit.
#[derive(Clone, Debug)]
pub(crate) enum Pending {
    /// Locked (for update, or by `get_for_update`) but not changed.
    Unchanged,
    /// Replace the committed image (insert or update).
    Put(RowRef),
    /// Remove the record.
    Delete,
}

/// The state of one slot, guarded by the slot's latch.
///
/// Invariant: `pending` is `Unchanged` whenever `owner` is [`TxnId::NONE`].
#[derive(Debug)]
pub(crate) struct SlotState {
    /// The image every other transaction sees; `None` for a free or not yet committed slot.
    pub committed: Option<RowRef>,
    /// Transaction holding the record lock, [`TxnId::NONE`] if none.
    pub owner: TxnId,
    /// The owner's uncommitted change.
    pub pending: Pending,
}

impl SlotState {
    /// The image `txn` sees: its own pending change if it owns the slot, else the
    /// committed image.
    pub fn visible_to(&self, txn: TxnId) -> Option<&RowRef> {
        if !txn.is_none() && self.owner == txn {
            match &self.pending {
                Pending::Unchanged => self.committed.as_ref(),
                Pending::Put(row) => Some(row),
                Pending::Delete => None,
            }
        } else {
            self.committed.as_ref()
        }
    }
}

/// One slot. The latch is held only for a few instructions at a time; record locks
/// (held to end of transaction) live in `SlotState::owner`.
pub(crate) struct Slot {
    state: Mutex<SlotState>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: Mutex::new(SlotState {
                committed: None,
                owner: TxnId::NONE,
                pending: Pending::Unchanged,
            }),
        }
    }

    /// Asks for the slot's cache lines (a slot may straddle two).
    pub fn prefetch(&self) {
        crate::prefetch::prefetch(self);
    }

    pub fn latch(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock()
    }
}

/// Slots `0..bound` of one table. Segments are allocated on first use and never move,
/// so a `&Slot` stays valid for the table's life.
pub(crate) struct SlotArray {
    segments: [OnceLock<Box<[Slot]>>; SEGMENTS],
    /// RIDs below this have been handed out at least once.
    bound: AtomicU64,
    /// RIDs free for reuse (deleted and committed, or rolled-back inserts).
    free: Mutex<Vec<u64>>,
    /// Length of `free`, kept under its lock, read without it: a table being filled
    /// (a bulk load, a copy) allocates without taking the lock for every record.
    free_len: AtomicU64,
}

/// Segment index and offset of a RID.
fn locate(rid: u64) -> (usize, usize) {
    let x = rid / FIRST_SEGMENT + 1;
    let seg = 63 - x.leading_zeros() as u64;
    let start = FIRST_SEGMENT * ((1u64 << seg) - 1);
    (seg as usize, (rid - start) as usize)
}

impl SlotArray {
    pub fn new() -> SlotArray {
        SlotArray {
            segments: std::array::from_fn(|_| OnceLock::new()),
            bound: AtomicU64::new(0),
            free: Mutex::new(Vec::new()),
            free_len: AtomicU64::new(0),
        }
    }

    /// Total RIDs this array can address.
    pub fn capacity() -> u64 {
        FIRST_SEGMENT * ((1u64 << SEGMENTS) - 1)
    }

    /// One past the highest RID ever handed out.
    pub fn bound(&self) -> u64 {
        self.bound.load(Ordering::Acquire)
    }

    /// The slot of `rid`, if that RID has been handed out.
    pub fn get(&self, rid: Rid) -> Option<&Slot> {
        if rid.0 >= self.bound() {
            return None;
        }
        let (seg, off) = locate(rid.0);
        self.segments[seg].get().map(|s| &s[off])
    }

    fn materialize(&self, rid: u64) -> &Slot {
        let (seg, off) = locate(rid);
        let segment = self.segments[seg].get_or_init(|| {
            let len = (FIRST_SEGMENT << seg) as usize;
            (0..len).map(|_| Slot::new()).collect()
        });
        &segment[off]
    }

    /// A RID for a new record: a freed one if any, else the next never-used one.
    /// `None` when the array is full.
    pub fn allocate(&self) -> Option<(Rid, &Slot)> {
        // A RID freed concurrently with a read of 0 here is reused by a later call.
        if self.free_len.load(Ordering::Acquire) > 0 {
            let mut free = self.free.lock();
            if let Some(rid) = free.pop() {
                self.free_len.store(free.len() as u64, Ordering::Release);
                return Some((Rid(rid), self.materialize(rid)));
            }
        }
        let rid = self
            .bound
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b < Self::capacity()).then_some(b + 1)
            })
            .ok()?;
        Some((Rid(rid), self.materialize(rid)))
    }

    /// Makes `rid` reusable. The caller guarantees its slot is empty and unowned and
    /// no index entry points to it.
    pub fn release(&self, rid: Rid) {
        debug_assert!(rid.0 < self.bound());
        let mut free = self.free.lock();
        free.push(rid.0);
        self.free_len.store(free.len() as u64, Ordering::Release);
    }

    /// Claims a specific RID (snapshot load); RIDs skipped over become free.
    /// Only for a table nobody else uses yet.
    pub fn claim_exact(&self, rid: Rid) -> Option<&Slot> {
        if rid.0 >= Self::capacity() {
            return None;
        }
        let bound = self.bound();
        let mut free = self.free.lock();
        if rid.0 >= bound {
            free.extend((bound..rid.0).rev());
            self.bound.store(rid.0 + 1, Ordering::Release);
        } else {
            let pos = free.iter().position(|&r| r == rid.0)?;
            free.swap_remove(pos);
        }
        self.free_len.store(free.len() as u64, Ordering::Release);
        drop(free);
        Some(self.materialize(rid.0))
    }

    /// The allocated segments, for freeing a table piece by piece.
    pub fn into_segments(self) -> Vec<Box<[Slot]>> {
        self.segments
            .into_iter()
            .filter_map(|mut s| s.take())
            .collect()
    }

    #[cfg(test)]
    /// Number of RIDs waiting in the free list.
    pub fn free_count(&self) -> usize {
        self.free.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_covers_every_rid_once() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(1023), (0, 1023));
        assert_eq!(locate(1024), (1, 0));
        assert_eq!(locate(3071), (1, 2047));
        assert_eq!(locate(3072), (2, 0));
        let last = SlotArray::capacity() - 1;
        let (seg, off) = locate(last);
        assert_eq!(seg, SEGMENTS - 1);
        assert_eq!(off as u64, (FIRST_SEGMENT << (SEGMENTS - 1)) - 1);
    }

    #[test]
    fn freed_rids_are_reused_last_in_first_out() {
        let a = SlotArray::new();
        let r: Vec<Rid> = (0..5).map(|_| a.allocate().expect("room").0).collect();
        assert_eq!(r, (0..5).map(Rid).collect::<Vec<_>>());
        a.release(Rid(1));
        a.release(Rid(3));
        assert_eq!(a.allocate().expect("room").0, Rid(3));
        assert_eq!(a.allocate().expect("room").0, Rid(1));
        assert_eq!(a.allocate().expect("room").0, Rid(5));
        assert!(a.get(Rid(6)).is_none());
    }

    #[test]
    fn claim_exact_frees_the_gap() {
        let a = SlotArray::new();
        assert!(a.claim_exact(Rid(3)).is_some());
        assert_eq!(a.bound(), 4);
        assert_eq!(a.free_count(), 3);
        assert!(a.claim_exact(Rid(1)).is_some());
        assert!(a.claim_exact(Rid(1)).is_none());
        assert_eq!(a.free_count(), 2);
    }
}
