//! The table of one index shard: keys and RIDs side by side in one array, found by
//! linear probing from the key's hash.
//!
//! Why not a general hash map: the maps at hand (hashbrown's and std's) keep a byte
//! of control data per entry in an array of its own, so once a table's control bytes
//! outgrow the cache (millions of keys), a lookup of a random key misses it twice,
//! once in the control bytes and once in the entry. Here an
//! entry is its key (inline, 24 bytes for a one-column key), a 16-bit tag of its hash
//! and its RID, 32 bytes, two to a cache line: a lookup usually reads one line. The
//! tag lets a probe pass over other keys without comparing them.
//!
//! Deletion shifts the entries after the removed one back (no tombstones), so a probe
//! stops at the first empty entry and the table never has to be cleaned.
//!
//! The price: a key that is absent is known absent only at an empty entry, in the
//! array, where a map with control bytes learns it from those, which stay cached
//! longer. Measured on a 1M-key table grown one insert at a time (3 alternating
//! runs against hashbrown's table): found keys 218–240 ns against 303–361, absent
//! ones 129–181 ns against 40–42, inserts even (485–707 against 504–530), deletes
//! with reinserts 346–372 against 401–476. A subscriber store looks up keys it has
//! far more often than keys it has not, and an insert writes the line its probe read.

use crate::key::Key;
use crate::rid::Rid;
use crate::value::Value;

/// RIDs fit in the low 48 bits of an entry's word (a table addresses about
/// 4 * 10^12 RIDs, see `slots.rs`); the tag takes the top 16.
const RID_BITS: u32 = 48;
const RID_MASK: u64 = (1 << RID_BITS) - 1;
/// The word of an empty entry: no RID reaches `RID_MASK`.
const EMPTY: u64 = u64::MAX;
/// Fewest entries a table that has any keeps.
const MIN_ENTRIES: usize = 8;

/// One entry. `word` is `EMPTY`, or the tag in its top 16 bits and the RID below.
#[derive(Clone)]
struct Entry {
    key: Key,
    word: u64,
}

impl Entry {
    fn empty() -> Entry {
        Entry {
            key: Key::single(Value::Null),
            word: EMPTY,
        }
    }

    fn is_empty(&self) -> bool {
        self.word == EMPTY
    }
}

/// The 16 bits of a hash an entry keeps: not the low ones, which pick the home
/// entry and so are mostly equal among the keys a probe meets, nor the top ones,
/// which pick the shard and so are equal among all keys of a table.
fn tag(hash: u64) -> u64 {
    (hash >> 32) & 0xffff
}

/// An entry's word: `tag` (already shifted into the top 16 bits) and `rid`.
fn word(tag_bits: u64, rid: Rid) -> u64 {
    debug_assert!(rid.0 < RID_MASK, "{rid} does not fit an index entry");
    tag_bits | rid.0
}

/// Entries for `keys` keys at most three quarters full (a power of two, or 0).
fn entries_for(keys: usize) -> usize {
    if keys == 0 {
        return 0;
    }
    keys.saturating_mul(4)
        .div_ceil(3)
        .max(MIN_ENTRIES)
        .next_power_of_two()
}

/// Key to RID for the keys of one shard. Positions returned by
/// [`find`](ProbeTable::find) stay valid until the next insert or remove.
///
/// Methods that may move entries take `hash_of`, which must give each key the hash
/// it was inserted with.
pub(crate) struct ProbeTable {
    entries: Box<[Entry]>,
    len: usize,
}

impl ProbeTable {
    /// A table with room for `keys` keys before it grows.
    pub fn with_capacity(keys: usize) -> ProbeTable {
        ProbeTable {
            entries: vec![Entry::empty(); entries_for(keys)].into_boxed_slice(),
            len: 0,
        }
    }

    /// Number of keys.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.entries.len().wrapping_sub(1)
    }

    /// The position of `key`, whose hash is `hash`.
    pub fn find(&self, hash: u64, key: &Key) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let mask = self.mask();
        let tag = tag(hash);
        let mut at = hash as usize & mask;
        // Ends: the table is never full (at most three quarters).
        loop {
            let e = &self.entries[at];
            if e.is_empty() {
                return None;
            }
            if e.word >> RID_BITS == tag && e.key == *key {
                return Some(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// Asks for the line where a search for `hash` starts (see
    /// [`prefetch`](crate::prefetch::prefetch)).
    pub fn prefetch(&self, hash: u64) {
        if let Some(e) = self.entries.get(hash as usize & self.mask()) {
            crate::prefetch::prefetch(e);
        }
    }

    /// The RID at a position from [`find`](ProbeTable::find).
    pub fn rid_at(&self, at: usize) -> Rid {
        debug_assert!(!self.entries[at].is_empty(), "no entry at {at}");
        Rid(self.entries[at].word & RID_MASK)
    }

    /// Points the key at a position from [`find`](ProbeTable::find) at `rid`.
    pub fn set_rid(&mut self, at: usize, rid: Rid) {
        let e = &mut self.entries[at];
        debug_assert!(!e.is_empty(), "no entry at {at}");
        e.word = word(e.word & !RID_MASK, rid);
    }

    /// Makes room for `additional` more keys without growing in between.
    pub fn reserve(&mut self, additional: usize, hash_of: impl Fn(&Key) -> u64) {
        let wanted = entries_for(self.len.saturating_add(additional));
        if wanted > self.entries.len() {
            self.rebuild(wanted, hash_of);
        }
    }

    /// Adds `key`, which the table does not have, pointing at `rid`.
    pub fn insert_unique(&mut self, hash: u64, key: Key, rid: Rid, hash_of: impl Fn(&Key) -> u64) {
        debug_assert!(self.find(hash, &key).is_none(), "{key} is already indexed");
        self.reserve(1, hash_of);
        let at = self.first_empty_from(hash);
        self.entries[at] = Entry {
            key,
            word: word(tag(hash) << RID_BITS, rid),
        };
        self.len += 1;
    }

    /// The first empty entry from the home of `hash` on (where a key not in the
    /// table goes).
    fn first_empty_from(&self, hash: u64) -> usize {
        let mask = self.mask();
        let mut at = hash as usize & mask;
        while !self.entries[at].is_empty() {
            at = (at + 1) & mask;
        }
        at
    }

    /// Removes the key at a position from [`find`](ProbeTable::find).
    pub fn remove_at(&mut self, at: usize, hash_of: impl Fn(&Key) -> u64) {
        debug_assert!(!self.entries[at].is_empty(), "no entry at {at}");
        let mask = self.mask();
        let mut hole = at;
        let mut next = (hole + 1) & mask;
        // Every key after the hole up to the next empty entry was probed for from
        // its home; one whose home is not strictly between the hole and it would
        // no longer be found across the hole, so it moves into the hole.
        while !self.entries[next].is_empty() {
            let home = hash_of(&self.entries[next].key) as usize & mask;
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.entries.swap(hole, next);
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.entries[hole] = Entry::empty();
        self.len -= 1;
    }

    fn rebuild(&mut self, entries: usize, hash_of: impl Fn(&Key) -> u64) {
        debug_assert!(entries.is_power_of_two() && entries > self.len);
        let old = std::mem::replace(
            &mut self.entries,
            vec![Entry::empty(); entries].into_boxed_slice(),
        );
        for e in old.into_vec().into_iter().filter(|e| !e.is_empty()) {
            let at = self.first_empty_from(hash_of(&e.key));
            self.entries[at] = e;
        }
    }

    /// Checks that every key is found from its home and the count is right.
    #[cfg(test)]
    fn check(&self, hash_of: impl Fn(&Key) -> u64) {
        let mut live = 0;
        for (at, e) in self.entries.iter().enumerate() {
            if e.is_empty() {
                continue;
            }
            live += 1;
            let hash = hash_of(&e.key);
            assert_eq!(e.word >> RID_BITS, tag(hash), "tag of {} at {at}", e.key);
            assert_eq!(self.find(hash, &e.key), Some(at), "{} not found", e.key);
        }
        assert_eq!(live, self.len);
        assert!(self.entries.is_empty() || self.len * 4 <= self.entries.len() * 3);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::slots::SlotArray;

    #[test]
    fn every_rid_a_table_can_hand_out_fits_an_entry() {
        assert!(SlotArray::capacity() < RID_MASK);
    }

    #[test]
    fn an_entry_of_a_one_column_key_is_half_a_cache_line() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }

    #[test]
    fn a_table_sized_for_4096_keys_is_half_full_with_them() {
        assert_eq!(ProbeTable::with_capacity(4096).entries.len(), 8192);
        assert_eq!(ProbeTable::with_capacity(0).entries.len(), 0);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(i64, u64),
        Remove(i64),
        Redirect(i64, u64),
        Reserve(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..64i64, 0..1000u64).prop_map(|(k, r)| Op::Insert(k, r)),
            3 => (0..64i64).prop_map(Op::Remove),
            1 => (0..64i64, 0..1000u64).prop_map(|(k, r)| Op::Redirect(k, r)),
            1 => (0..40usize).prop_map(Op::Reserve),
        ]
    }

    proptest! {
        /// Against a map, with hashes that crowd the keys into few homes (long
        /// clusters that wrap around the end), every key is found with its RID, an
        /// absent one is not, and the invariants hold after every step.
        #[test]
        fn a_probe_table_is_a_map(
            ops in prop::collection::vec(op(), 0..300),
            homes in 1u64..16,
            spread in any::<u64>(),
        ) {
            let hash_of = |k: &Key| {
                let n = k.values()[0].as_int().unwrap_or(0) as u64;
                // Home from `homes` choices, the tag from the key itself so that
                // keys of one home may share a tag too.
                (n % homes).wrapping_mul(spread | 1) & 0xffff_0000_0000_ffff
                    | (n % 3) << 32
            };
            let mut table = ProbeTable::with_capacity(0);
            let mut model: HashMap<i64, u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, r) => {
                        let key = Key::from(k);
                        if let std::collections::hash_map::Entry::Vacant(v) = model.entry(k) {
                            table.insert_unique(hash_of(&key), key, Rid(r), hash_of);
                            v.insert(r);
                        }
                    }
                    Op::Remove(k) => {
                        let key = Key::from(k);
                        let found = table.find(hash_of(&key), &key);
                        prop_assert_eq!(found.is_some(), model.remove(&k).is_some());
                        if let Some(at) = found {
                            table.remove_at(at, hash_of);
                        }
                    }
                    Op::Redirect(k, r) => {
                        let key = Key::from(k);
                        if let Some(at) = table.find(hash_of(&key), &key) {
                            table.set_rid(at, Rid(r));
                            model.insert(k, r);
                        }
                    }
                    Op::Reserve(n) => table.reserve(n, hash_of),
                }
                table.check(hash_of);
                prop_assert_eq!(table.len(), model.len());
            }
            for k in 0..64i64 {
                let key = Key::from(k);
                let found = table.find(hash_of(&key), &key).map(|at| table.rid_at(at).0);
                prop_assert_eq!(found, model.get(&k).copied(), "key {}", k);
            }
        }
    }
}
