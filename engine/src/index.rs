//! The primary-key index: key to RID, in shards that each have their own lock.
//!
//! A key's hash picks its shard, and the shard's table ([`ProbeTable`]) finds the
//! entry, usually in one cache line. Readers
//! of a shard share its lock; a writer holds it only for the few instructions of one
//! lookup and change (or, through an [`Entry`], while it latches the record the entry
//! points at: index shard before slot latch, always).
//!
//! Own code rather than a concurrent map crate because filling a new table fast needs
//! one thing such crates do not offer: indexing a batch of keys of one shard under a
//! single lock ([`KeyIndex::insert_batch`], used by [`BulkLoad`](crate::BulkLoad)).
//! With a lock per key, each unlock waits for the entry's store to reach the cache,
//! and inserts that miss the cache run one at a time instead of overlapping.

use parking_lot::{RwLock, RwLockWriteGuard};

use crate::key::Key;
use crate::probe_table::ProbeTable;
use crate::rid::Rid;

type Shard = ProbeTable;

/// One shard, alone on its cache lines so that writers of neighbouring shards do not
/// slow each other down.
#[repr(align(128))]
struct PaddedShard(RwLock<Shard>);

/// Key to RID.
pub(crate) struct KeyIndex {
    hasher: ahash::RandomState,
    shards: Box<[PaddedShard]>,
    /// log2 of the shard count.
    shard_bits: u32,
}

impl KeyIndex {
    /// An index with `shards` shards (a power of two) and room for `records` keys.
    pub fn new(records: usize, shards: usize) -> KeyIndex {
        debug_assert!(shards.is_power_of_two());
        let per_shard = records.div_ceil(shards);
        KeyIndex {
            hasher: ahash::RandomState::new(),
            shards: (0..shards)
                .map(|_| PaddedShard(RwLock::new(ProbeTable::with_capacity(per_shard))))
                .collect(),
            shard_bits: shards.trailing_zeros(),
        }
    }

    /// The hash that places `key` (for [`insert_batch`](KeyIndex::insert_batch)).
    pub fn hash(&self, key: &Key) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard of a hash: its top bits (the shard's table uses the low ones for
    /// the entry's place and bits 32 to 47 as the entry's tag).
    pub fn shard_of_hash(&self, hash: u64) -> usize {
        if self.shard_bits == 0 {
            return 0;
        }
        (hash >> (64 - self.shard_bits)) as usize
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The RID the entry for `key` points at.
    pub fn get(&self, key: &Key) -> Option<Rid> {
        let hash = self.hash(key);
        let shard = self.shards[self.shard_of_hash(hash)].0.read();
        shard.find(hash, key).map(|at| shard.rid_at(at))
    }

    /// Asks for the cache line where `key`'s entry is searched for.
    pub fn prefetch(&self, key: &Key) {
        let hash = self.hash(key);
        self.shards[self.shard_of_hash(hash)]
            .0
            .read()
            .prefetch(hash);
    }

    /// Points `key` at `rid`, whatever it pointed at before.
    pub fn insert(&self, key: Key, rid: Rid) {
        match self.entry(key) {
            Entry::Vacant(v) => v.insert(rid),
            Entry::Occupied(mut o) => o.insert(rid),
        }
    }

    /// Removes the entry for `key` if it points at `rid`; returns whether it did.
    pub fn remove_if(&self, key: &Key, rid: Rid) -> bool {
        let hash = self.hash(key);
        let mut shard = self.shards[self.shard_of_hash(hash)].0.write();
        match shard.find(hash, key) {
            Some(at) if shard.rid_at(at) == rid => {
                shard.remove_at(at, |k| self.hash(k));
                true
            }
            _ => false,
        }
    }

    /// The entry for `key`, with its shard locked for writing until the entry is
    /// dropped.
    pub fn entry(&self, key: Key) -> Entry<'_> {
        let hash = self.hash(&key);
        let shard = self.shards[self.shard_of_hash(hash)].0.write();
        let found = shard.find(hash, &key);
        let at = At {
            index: self,
            shard,
            hash,
            key,
        };
        match found {
            Some(pos) => Entry::Occupied(OccupiedEntry { at, pos }),
            None => Entry::Vacant(VacantEntry { at }),
        }
    }

    /// Indexes a batch of keys, each with its [`hash`](KeyIndex::hash), that all
    /// belong to shard `shard`, under one lock. A key already indexed keeps its
    /// entry; the record that wanted it is appended to `taken` as
    /// `(key, record, holder)`.
    pub fn insert_batch(
        &self,
        shard: usize,
        batch: Vec<(u64, Key, Rid)>,
        taken: &mut Vec<(Key, Rid, Rid)>,
    ) {
        let mut table = self.shards[shard].0.write();
        table.reserve(batch.len(), |k| self.hash(k));
        for (hash, key, rid) in batch {
            debug_assert_eq!(hash, self.hash(&key), "wrong hash for {key}");
            debug_assert_eq!(
                self.shard_of_hash(hash),
                shard,
                "{key} is not in shard {shard}"
            );
            match table.find(hash, &key) {
                Some(at) => taken.push((key, rid, table.rid_at(at))),
                None => table.insert_unique(hash, key, rid, |k| self.hash(k)),
            }
        }
    }

    /// Number of entries (a sum over shards, each read at a different instant).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().len()).sum()
    }
}

/// A locked shard and the key an [`Entry`] is about.
struct At<'a> {
    index: &'a KeyIndex,
    shard: RwLockWriteGuard<'a, Shard>,
    hash: u64,
    key: Key,
}

/// The index entry for one key, its shard locked (see [`KeyIndex::entry`]).
pub(crate) enum Entry<'a> {
    /// The key has an entry.
    Occupied(OccupiedEntry<'a>),
    /// The key has none.
    Vacant(VacantEntry<'a>),
}

/// A key with no entry.
pub(crate) struct VacantEntry<'a> {
    at: At<'a>,
}

impl VacantEntry<'_> {
    /// Points the key at `rid`.
    pub fn insert(self, rid: Rid) {
        let At {
            index,
            mut shard,
            hash,
            key,
        } = self.at;
        shard.insert_unique(hash, key, rid, |k| index.hash(k));
    }
}

/// A key with an entry.
pub(crate) struct OccupiedEntry<'a> {
    at: At<'a>,
    /// Where the entry is in the locked shard's table.
    pos: usize,
}

impl OccupiedEntry<'_> {
    /// The RID the entry points at.
    pub fn get(&self) -> Rid {
        self.at.shard.rid_at(self.pos)
    }

    /// The key.
    pub fn key(&self) -> &Key {
        &self.at.key
    }

    /// Points the entry at `rid` instead.
    pub fn insert(&mut self, rid: Rid) {
        self.at.shard.set_rid(self.pos, rid);
    }

    /// Removes the entry.
    pub fn remove(self) {
        let At {
            index, mut shard, ..
        } = self.at;
        shard.remove_at(self.pos, |k| index.hash(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: i64) -> Key {
        Key::from(i)
    }

    #[test]
    fn entries_insert_redirect_and_remove() {
        let index = KeyIndex::new(0, 4);
        let Entry::Vacant(v) = index.entry(key(1)) else {
            panic!("new index has an entry");
        };
        v.insert(Rid(10));
        assert_eq!(index.get(&key(1)), Some(Rid(10)));
        let Entry::Occupied(mut o) = index.entry(key(1)) else {
            panic!("entry lost");
        };
        assert_eq!((o.get(), o.key()), (Rid(10), &key(1)));
        o.insert(Rid(11));
        assert_eq!(o.get(), Rid(11));
        drop(o);
        assert_eq!(index.get(&key(1)), Some(Rid(11)));
        assert!(!index.remove_if(&key(1), Rid(10)), "points elsewhere");
        assert!(index.remove_if(&key(1), Rid(11)));
        assert_eq!(index.get(&key(1)), None);
        index.insert(key(2), Rid(2));
        index.insert(key(2), Rid(3));
        assert_eq!((index.get(&key(2)), index.len()), (Some(Rid(3)), 1));
        let Entry::Occupied(o) = index.entry(key(2)) else {
            panic!("entry lost");
        };
        o.remove();
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn batches_keep_the_first_holder_of_a_key() {
        let index = KeyIndex::new(1000, 8);
        index.insert(key(5), Rid(500));
        let mut by_shard = vec![Vec::new(); index.shard_count()];
        let mut add = |k: Key, rid: Rid| {
            let hash = index.hash(&k);
            by_shard[index.shard_of_hash(hash)].push((hash, k, rid));
        };
        for i in 0..1000 {
            add(key(i), Rid(i as u64));
        }
        add(key(7), Rid(9999));
        let mut taken = Vec::new();
        for (shard, batch) in by_shard.into_iter().enumerate() {
            index.insert_batch(shard, batch, &mut taken);
        }
        taken.sort_by_key(|t| t.1);
        assert_eq!(
            taken,
            vec![(key(5), Rid(5), Rid(500)), (key(7), Rid(9999), Rid(7))]
        );
        assert_eq!(index.len(), 1000);
        assert_eq!(index.get(&key(5)), Some(Rid(500)));
        assert_eq!(index.get(&key(999)), Some(Rid(999)));
    }

    #[test]
    fn every_shard_gets_keys() {
        let index = KeyIndex::new(0, 64);
        let mut seen = vec![0u32; 64];
        for i in 0..10_000 {
            seen[index.shard_of_hash(index.hash(&key(i)))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "skewed shards: {seen:?}");
    }
}
