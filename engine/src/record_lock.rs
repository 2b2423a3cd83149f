//! Record locks on one table: the primitives a [`Transaction`](crate::Transaction)
//! is built from. A record's lock is its slot's `owner`; its uncommitted change is
//! the slot's `pending` image; the key index points a key at the RID that holds it.
//!
//! Each primitive keeps the table's lock order (index shard, then slot latch) and
//! leaves the table consistent on every return, errors included: what a transaction
//! must remember to undo (records locked, keys claimed) is what these functions
//! return, and the transaction keeps that list.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{EngineError, Result};
use crate::index::Entry;
use crate::key::Key;
use crate::lock::{LockWaits, WaitFailure};
use crate::rid::Rid;
use crate::schema::RowRef;
use crate::slots::{Pending, SlotArray};
use crate::table::Table;
use crate::txn_id::TxnId;

/// How one statement waits for record locks: all its waits share one deadline, set
/// at the first wait, so a statement never waits longer than the lock timeout.
pub(crate) struct Waiter<'a> {
    locks: &'a LockWaits,
    owner: TxnId,
    timeout: Duration,
    deadline: Option<Instant>,
}

impl<'a> Waiter<'a> {
    pub fn new(locks: &'a LockWaits, owner: TxnId, timeout: Duration) -> Waiter<'a> {
        Waiter {
            locks,
            owner,
            timeout,
            deadline: None,
        }
    }

    /// Waits until `holder` may have released `rid` of `t`, within the deadline.
    fn wait(&mut self, t: &Table, rid: Rid, holder: TxnId) -> Result<()> {
        let deadline = *self
            .deadline
            .get_or_insert_with(|| Instant::now() + self.timeout);
        let Some(slot) = t.slots.get(rid) else {
            return Ok(());
        };
        self.locks
            .wait(t.id(), rid, slot, self.owner, holder, deadline)
            .map_err(|failure| match failure {
                WaitFailure::Timeout => EngineError::LockTimeout {
                    table: t.name().to_owned(),
                    rid,
                    holder,
                    waited_ms: self.timeout.as_millis() as u64,
                },
                WaitFailure::Deadlock => EngineError::Deadlock {
                    table: t.name().to_owned(),
                    rid,
                    holder,
                },
            })
    }
}

/// A record found by key and locked by its owner.
pub(crate) struct Locked {
    pub rid: Rid,
    /// The image as the owner sees it (its own pending change included).
    pub image: RowRef,
    /// `false`: the owner already held the lock (nothing new to remember).
    pub newly: bool,
}

/// A new record's RID, and whether its key's index entry was pointed at it (the
/// owner must then remember the claim, to undo it on rollback).
pub(crate) struct Inserted {
    pub rid: Rid,
    pub claimed: bool,
}

impl Table {
    /// The record with `key` as `owner` sees it (its own pending change included).
    pub(crate) fn visible(&self, owner: TxnId, key: &Key) -> Option<RowRef> {
        let rid = self.index.get(key)?;
        let slot = self.slots.get(rid)?;
        let st = slot.latch();
        st.visible_to(owner)
            .filter(|r| self.schema().key_matches(r, key))
            .cloned()
    }

    /// Locks the record with `key` for `owner`; `None` if there is none.
    pub(crate) fn lock_by_key(
        &self,
        owner: TxnId,
        key: &Key,
        waiter: &mut Waiter<'_>,
    ) -> Result<Option<Locked>> {
        loop {
            let Some(rid) = self.index.get(key) else {
                return Ok(None);
            };
            let Some(slot) = self.slots.get(rid) else {
                return Ok(None);
            };
            let mut st = slot.latch();
            if st.owner == owner {
                let image = st
                    .visible_to(owner)
                    .filter(|r| self.schema().key_matches(r, key));
                return Ok(image.map(|r| Locked {
                    rid,
                    image: Arc::clone(r),
                    newly: false,
                }));
            }
            if !st.owner.is_none() {
                let holder = st.owner;
                drop(st);
                waiter.wait(self, rid, holder)?;
                continue;
            }
            let Some(image) = st
                .committed
                .clone()
                .filter(|r| self.schema().key_matches(r, key))
            else {
                return Ok(None);
            };
            st.owner = owner;
            self.notify_locked(rid);
            return Ok(Some(Locked {
                rid,
                image,
                newly: true,
            }));
        }
    }

    /// Inserts `row` with `key` as `owner`'s pending change: a new locked record, or
    /// (a record `owner` deleted) that record again.
    pub(crate) fn insert_locked(
        &self,
        owner: TxnId,
        key: &Key,
        row: &RowRef,
        waiter: &mut Waiter<'_>,
    ) -> Result<Inserted> {
        loop {
            match self.index.entry(key.clone()) {
                Entry::Vacant(v) => {
                    let rid = self.lock_new(owner, Arc::clone(row))?;
                    v.insert(rid);
                    return Ok(Inserted { rid, claimed: true });
                }
                Entry::Occupied(mut o) => {
                    let rid = o.get();
                    let Some(slot) = self.slots.get(rid) else {
                        o.remove();
                        continue;
                    };
                    let mut st = slot.latch();
                    if st.owner == owner {
                        match st.visible_to(owner) {
                            Some(r) if self.schema().key_matches(r, key) => {
                                return Err(self.duplicate(key.clone()));
                            }
                            Some(_) => {
                                // The owner moved that record to another key: the entry
                                // is its own to redirect (rollback restores it).
                                drop(st);
                                let new_rid = self.lock_new(owner, Arc::clone(row))?;
                                o.insert(new_rid);
                                return Ok(Inserted {
                                    rid: new_rid,
                                    claimed: true,
                                });
                            }
                            None => {
                                // Deleted earlier by the owner: take it back.
                                st.pending = Pending::Put(Arc::clone(row));
                                return Ok(Inserted {
                                    rid,
                                    claimed: false,
                                });
                            }
                        }
                    } else if !st.owner.is_none() {
                        let holder = st.owner;
                        drop(st);
                        drop(o);
                        waiter.wait(self, rid, holder)?;
                    } else if st
                        .committed
                        .as_ref()
                        .is_some_and(|r| self.schema().key_matches(r, key))
                    {
                        return Err(self.duplicate(key.clone()));
                    } else {
                        // Unreachable under the index discipline; repaired rather than trusted.
                        drop(st);
                        o.remove();
                    }
                }
            }
        }
    }

    /// Allocates a RID for a new record and locks it for `owner` with `row` pending.
    fn lock_new(&self, owner: TxnId, row: RowRef) -> Result<Rid> {
        let (rid, slot) = self
            .slots
            .allocate()
            .ok_or_else(|| EngineError::TableFull {
                table: self.name().to_owned(),
                capacity: SlotArray::capacity(),
            })?;
        let mut st = slot.latch();
        debug_assert!(
            st.committed.is_none() && st.owner.is_none(),
            "allocated a live slot"
        );
        st.owner = owner;
        st.pending = Pending::Put(row);
        self.notify_locked(rid);
        Ok(rid)
    }

    /// Sets the pending change of a record `owner` has locked.
    pub(crate) fn set_pending(&self, owner: TxnId, rid: Rid, pending: Pending) {
        if let Some(slot) = self.slots.get(rid) {
            let mut st = slot.latch();
            debug_assert_eq!(st.owner, owner, "change of a record not locked");
            st.pending = pending;
        }
    }

    /// Points the index entry `new_key` at `rid` (a record `owner` has locked and is
    /// giving a new key), unless another record holds that key. Returns whether the
    /// entry was changed (`false`: it already pointed at `rid`).
    pub(crate) fn claim_key(
        &self,
        owner: TxnId,
        rid: Rid,
        new_key: &Key,
        waiter: &mut Waiter<'_>,
    ) -> Result<bool> {
        loop {
            match self.index.entry(new_key.clone()) {
                Entry::Vacant(v) => {
                    v.insert(rid);
                    return Ok(true);
                }
                Entry::Occupied(mut o) => {
                    let other = o.get();
                    if other == rid {
                        return Ok(false);
                    }
                    if let Some(slot) = self.slots.get(other) {
                        let st = slot.latch();
                        let taken = if st.owner == owner {
                            st.visible_to(owner)
                                .is_some_and(|r| self.schema().key_matches(r, new_key))
                        } else if !st.owner.is_none() {
                            let holder = st.owner;
                            drop(st);
                            drop(o);
                            waiter.wait(self, other, holder)?;
                            continue;
                        } else {
                            st.committed
                                .as_ref()
                                .is_some_and(|r| self.schema().key_matches(r, new_key))
                        };
                        if taken {
                            return Err(self.duplicate(new_key.clone()));
                        }
                    }
                    o.insert(rid);
                    return Ok(true);
                }
            }
        }
    }

    /// Publishes `owner`'s pending change of `rid` as the committed image (the lock
    /// stays) and tells the write observer. Returns the committed image now.
    pub(crate) fn publish(&self, owner: TxnId, rid: Rid) -> Option<RowRef> {
        let slot = self.slots.get(rid)?;
        let mut st = slot.latch();
        debug_assert_eq!(st.owner, owner, "commit of a record not locked");
        match std::mem::replace(&mut st.pending, Pending::Unchanged) {
            Pending::Unchanged => {}
            Pending::Put(row) => match st.committed.as_mut().and_then(Arc::get_mut) {
                // Nobody else holds the committed image (readers clone it only
                // under this latch, which is ours): it takes the new values in
                // place. The table keeps its memory, and the new image, made by
                // this thread, is freed by it: no row freed on one thread after
                // being made on another, which is what spread a busy table's
                // memory (`bench resync`'s control run grew 64–81 MiB on 10M rows).
                Some(image) if image.len() == row.len() => image.clone_from_slice(&row),
                _ => {
                    if st.committed.replace(row).is_none() {
                        self.count_live(1);
                    }
                }
            },
            Pending::Delete => {
                if st.committed.take().is_some() {
                    self.count_live(-1);
                }
            }
        }
        self.notify_published(rid, st.committed.as_ref());
        st.committed.clone()
    }

    /// Releases `owner`'s lock on `rid` (its pending change must be gone) and frees the
    /// RID if the record no longer exists. Waiters are woken by the caller.
    pub(crate) fn unlock(&self, owner: TxnId, rid: Rid) {
        let Some(slot) = self.slots.get(rid) else {
            return;
        };
        let emptied = {
            let mut st = slot.latch();
            debug_assert_eq!(st.owner, owner);
            debug_assert!(matches!(st.pending, Pending::Unchanged));
            st.owner = TxnId::NONE;
            st.committed.is_none()
        };
        if emptied {
            self.slots.release(rid);
        }
    }

    /// The error for a key another record holds.
    pub(crate) fn duplicate(&self, key: Key) -> EngineError {
        EngineError::DuplicateKey {
            table: self.name().to_owned(),
            key,
        }
    }
}
