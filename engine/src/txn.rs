//! Transactions: record locks held to the end, uncommitted images kept beside the
//! committed ones (so undo is exact and readers never see uncommitted data), and the
//! commit protocol with the commit gate.
//!
//! Index discipline: while a transaction owns a record, every index entry pointing to
//! that record's RID is created, redirected or removed by that transaction only, and
//! all of its index changes are made before it releases the lock. Other transactions
//! therefore never see a stale entry on an unlocked record.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::db_inner::{CommitGateCell, DbInner};
use crate::error::{EngineError, Result};
use crate::hooks::{CommitRequest, GateNote, Operation};
use crate::key::Key;
use crate::record_lock::Waiter;
use crate::rid::Rid;
use crate::schema::RowRef;
use crate::session::SessionInfo;
use crate::slots::Pending;
use crate::table::Table;
use crate::txn_id::TxnId;
use crate::value::Value;
use crate::writer_admission::{Entered, Refusal};

/// How many times a writer re-resolves a table name that keeps being switched away.
const MAX_RESOLVE: usize = 8;

/// One record this transaction has locked.
struct WriteEntry {
    /// Index into `Transaction::entered`.
    table: usize,
    rid: Rid,
    /// The committed key when the lock was taken; `None` for a record this
    /// transaction inserted.
    original_key: Option<Key>,
    /// Index entries this transaction pointed at `rid` (inserted keys, new keys).
    claimed: Vec<Key>,
}

/// A multi-statement transaction.
///
/// Isolation is **read committed** with exclusive record locks held to the end:
/// reads never see another transaction's uncommitted writes, a transaction sees its own
/// writes, and two transactions never write the same record concurrently. Plain reads
/// take no lock, so a record read twice may change in between; use
/// [`get_for_update`](Transaction::get_for_update) to lock what you read (e.g. a balance
/// before changing it). A transaction's writes become visible together with respect to
/// snapshots; a concurrent reader of several records may see some of them before others.
///
/// One corner: a transaction that moves a record off key `K` (a key-changing update)
/// and then inserts a new record with `K` redirects `K`'s index entry to the new,
/// uncommitted record; until it ends, other readers looking up `K` find nothing
/// rather than the old committed record.
///
/// A failed statement leaves no change behind and the transaction stays usable; after
/// a [retryable](EngineError::is_retryable) error the caller should roll back and retry.
/// Dropping an open transaction rolls it back.
pub struct Transaction<'s> {
    db: &'s DbInner,
    session: &'s SessionInfo,
    id: TxnId,
    /// Inline for one record: an autocommit allocates nothing here.
    writes: SmallVec<[WriteEntry; 1]>,
    /// Tables whose writer admission this transaction has entered (left at the end).
    entered: SmallVec<[(Arc<Table>, Entered); 1]>,
    /// The commit gate in force when the transaction began.
    commit_gate: Option<Arc<CommitGateCell>>,
    /// Whether `ops` and `before` are recorded: a gate wants them.
    records_ops: bool,
    /// Whether it wrote anything (a commit without writes asks no gate).
    wrote: bool,
    /// Logical operations, recorded only when there is a gate to show them to.
    ops: Vec<Operation>,
    /// The image each of `ops` replaced (`None` for an insert), as this transaction saw it.
    before: Vec<Option<RowRef>>,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Open,
    /// Publishing images; only a panic (e.g. in an observer) can interrupt this.
    Publishing,
    Finished,
}

impl<'s> Transaction<'s> {
    pub(crate) fn begin(db: &'s DbInner, session: &'s SessionInfo) -> Transaction<'s> {
        let commit_gate = db.commit_gate.load_full();
        Transaction {
            db,
            session,
            id: TxnId::next(),
            writes: SmallVec::new(),
            entered: SmallVec::new(),
            records_ops: commit_gate.as_ref().is_some_and(|g| g.0.wants_operations()),
            commit_gate,
            wrote: false,
            ops: Vec::new(),
            before: Vec::new(),
            state: State::Open,
        }
    }

    /// This transaction's id (unique in the process; the lock holder in errors).
    pub fn id(&self) -> TxnId {
        self.id
    }

    /// The record with `key` as this transaction sees it (its own writes included).
    pub fn get(&self, table: &str, key: &Key) -> Result<Option<RowRef>> {
        let entered = self.entered.iter().find(|(t, _)| t.name() == table);
        let t = match entered {
            Some((t, _)) => Arc::clone(t),
            None => self.db.catalog.get(table)?,
        };
        t.schema().validate_key(t.name(), key)?;
        Ok(t.visible(self.id, key))
    }

    /// Locks the record with `key` for update and returns it as this transaction sees
    /// it; `None` (and no lock) if there is no such record.
    pub fn get_for_update(&mut self, table: &str, key: &Key) -> Result<Option<RowRef>> {
        let (ti, t) = self.writable(table)?;
        t.schema().validate_key(t.name(), key)?;
        Ok(self.lock_key(ti, &t, key)?.map(|(_, row)| row))
    }

    /// Inserts `row` (all columns, in schema order); returns its RID.
    pub fn insert(&mut self, table: &str, row: impl Into<RowRef>) -> Result<Rid> {
        let (ti, t) = self.writable(table)?;
        self.insert_into(ti, &t, row.into())
    }

    /// [`insert`](Transaction::insert) into the table this transaction writes as `ti`.
    fn insert_into(&mut self, ti: usize, t: &Arc<Table>, row: RowRef) -> Result<Rid> {
        t.schema().validate_row(t.name(), &row)?;
        let key = t.schema().key_of(&row);
        let op = self.records_ops.then(|| Operation::Insert {
            table: t.name().into(),
            row: RowRef::clone(&row),
        });
        let mut waiter = self.waiter();
        let inserted = t.insert_locked(self.id, &key, &row, &mut waiter)?;
        if inserted.claimed {
            self.writes.push(WriteEntry {
                table: ti,
                rid: inserted.rid,
                original_key: None,
                claimed: vec![key],
            });
        }
        self.wrote = true;
        if let Some(op) = op {
            self.ops.push(op);
            self.before.push(None);
        }
        Ok(inserted.rid)
    }

    /// Inserts a row given as `(column, value)` pairs; left-out columns get their
    /// default (or null).
    pub fn insert_named(&mut self, table: &str, values: &[(&str, Value)]) -> Result<Rid> {
        // The row is built for the table it goes into: resolved once, so that a
        // switch in between cannot hand it a row of the old schema.
        let (ti, t) = self.writable(table)?;
        let row = t.schema().row_from_named(table, values)?;
        self.insert_into(ti, &t, row.into())
    }

    /// Replaces the record with `key` by `row` (which may carry a new key); returns
    /// its RID, which does not change.
    pub fn update(&mut self, table: &str, key: &Key, row: impl Into<RowRef>) -> Result<Rid> {
        self.update_keeping(table, key, row.into(), |_| ())
            .map(|(rid, ())| rid)
    }

    /// [`update`](Transaction::update), returning the image it replaced as this
    /// transaction saw it: what a replica's response digest needs, found by the
    /// update's own lookup instead of a [`get_for_update`](Transaction::get_for_update)
    /// before it.
    pub fn update_returning_before(
        &mut self,
        table: &str,
        key: &Key,
        row: impl Into<RowRef>,
    ) -> Result<RowRef> {
        self.update_keeping(table, key, row.into(), RowRef::clone)
            .map(|(_, before)| before)
    }

    /// [`update`](Transaction::update), also returning what `keep` takes of the
    /// image replaced.
    fn update_keeping<B>(
        &mut self,
        table: &str,
        key: &Key,
        row: RowRef,
        keep: impl FnOnce(&RowRef) -> B,
    ) -> Result<(Rid, B)> {
        let (ti, t) = self.writable(table)?;
        t.schema().validate_key(t.name(), key)?;
        t.schema().validate_row(t.name(), &row)?;
        let Some((rid, current)) = self.lock_key(ti, &t, key)? else {
            return Err(not_found(&t, key));
        };
        let kept = keep(&current);
        self.put_locked(ti, &t, rid, key, current, row)?;
        Ok((rid, kept))
    }

    /// Changes the named columns of the record with `key`; returns its RID.
    pub fn update_columns(
        &mut self,
        table: &str,
        key: &Key,
        changes: &[(&str, Value)],
    ) -> Result<Rid> {
        let (ti, t) = self.writable(table)?;
        t.schema().validate_key(t.name(), key)?;
        // Validate before locking: a bad column name must not leave a lock behind.
        for (name, _) in changes {
            t.schema().require_column(t.name(), name)?;
        }
        let Some((rid, current)) = self.lock_key(ti, &t, key)? else {
            return Err(not_found(&t, key));
        };
        let row = t.schema().apply_changes(t.name(), &current, changes)?;
        // Built in a Vec, then moved into the shared image: one allocation more
        // than building the image in place, and faster (tests/update_allocations.rs).
        self.put_locked(ti, &t, rid, key, current, row.into())?;
        Ok(rid)
    }

    /// Deletes the record with `key`; returns the RID it had. The RID becomes reusable
    /// when the delete commits.
    pub fn delete(&mut self, table: &str, key: &Key) -> Result<Rid> {
        self.delete_keeping(table, key, |_| ()).map(|(rid, ())| rid)
    }

    /// [`delete`](Transaction::delete), returning the image it removed as this
    /// transaction saw it (see [`update_returning_before`](Transaction::update_returning_before)).
    pub fn delete_returning_before(&mut self, table: &str, key: &Key) -> Result<RowRef> {
        self.delete_keeping(table, key, RowRef::clone)
            .map(|(_, before)| before)
    }

    /// [`delete`](Transaction::delete), also returning what `keep` takes of the
    /// image removed.
    fn delete_keeping<B>(
        &mut self,
        table: &str,
        key: &Key,
        keep: impl FnOnce(&RowRef) -> B,
    ) -> Result<(Rid, B)> {
        let (ti, t) = self.writable(table)?;
        t.schema().validate_key(t.name(), key)?;
        let Some((rid, current)) = self.lock_key(ti, &t, key)? else {
            return Err(not_found(&t, key));
        };
        t.set_pending(self.id, rid, Pending::Delete);
        self.wrote = true;
        let kept = keep(&current);
        if self.records_ops {
            self.ops.push(Operation::Delete {
                table: t.name().into(),
                key: key.clone(),
            });
            self.before.push(Some(current));
        }
        Ok((rid, kept))
    }

    /// Makes every write visible and releases the locks. With a commit gate installed,
    /// the gate is asked first; a veto rolls everything back and returns
    /// [`EngineError::CommitVetoed`].
    pub fn commit(self) -> Result<()> {
        self.commit_noted().map(drop)
    }

    /// [`commit`](Transaction::commit), also returning the note the commit gate
    /// attached to its acceptance (e.g. replication's "committed here only").
    pub fn commit_noted(mut self) -> Result<Option<GateNote>> {
        let Some(gate) = self.commit_gate.clone().filter(|_| self.wrote) else {
            self.apply();
            return Ok(None);
        };
        debug_assert_eq!(self.ops.len(), self.before.len());
        let mut request = CommitRequest {
            txn: self.id,
            session: self.session,
            operations: std::mem::take(&mut self.ops),
            before: &self.before,
        };
        match gate.0.prepare(&mut request) {
            Ok(note) => {
                // The gate has read them; held longer, they would keep every
                // committed image shared and published by replacement.
                self.before.clear();
                self.apply();
                gate.0.committed(self.id);
                Ok(note)
            }
            Err(source) => {
                self.state = State::Finished;
                self.undo();
                Err(EngineError::CommitVetoed { source })
            }
        }
    }

    /// Discards every write and releases the locks.
    pub fn rollback(mut self) {
        self.state = State::Finished;
        self.undo();
    }

    /// Registers as a writer of `table` (resolving its name again if a switch retired
    /// the table we found); returns its index in `entered` and the table.
    fn writable(&mut self, table: &str) -> Result<(usize, Arc<Table>)> {
        if let Some(i) = self.entered.iter().position(|(t, _)| t.name() == table) {
            return Ok((i, Arc::clone(&self.entered[i].0)));
        }
        let timeout = self.db.config.lock_timeout;
        for _ in 0..MAX_RESOLVE {
            let t = self.db.catalog.get(table)?;
            match t.admission.enter(timeout) {
                Ok(entered) => {
                    self.entered.push((Arc::clone(&t), entered));
                    return Ok((self.entered.len() - 1, t));
                }
                Err(Refusal::Retired) => continue,
                Err(Refusal::Held) => {
                    return Err(EngineError::WritersHeld {
                        table: table.to_owned(),
                        waited_ms: timeout.as_millis() as u64,
                    })
                }
            }
        }
        Err(EngineError::WritersHeld {
            table: table.to_owned(),
            waited_ms: 0,
        })
    }

    /// A waiter for one statement's lock waits.
    fn waiter(&self) -> Waiter<'s> {
        Waiter::new(&self.db.locks, self.id, self.db.config.lock_timeout)
    }

    /// Locks the record with `key`; returns its RID and its image as this transaction
    /// sees it, or `None` if there is no such record.
    fn lock_key(&mut self, ti: usize, t: &Table, key: &Key) -> Result<Option<(Rid, RowRef)>> {
        let Some(locked) = t.lock_by_key(self.id, key, &mut self.waiter())? else {
            return Ok(None);
        };
        if locked.newly {
            self.writes.push(WriteEntry {
                table: ti,
                rid: locked.rid,
                original_key: Some(key.clone()),
                claimed: Vec::new(),
            });
        }
        Ok(Some((locked.rid, locked.image)))
    }

    /// Sets `row` as the pending image of the locked record at `rid`, whose key and
    /// image as this transaction sees them are `key` and `current`.
    fn put_locked(
        &mut self,
        ti: usize,
        t: &Table,
        rid: Rid,
        key: &Key,
        current: RowRef,
        row: RowRef,
    ) -> Result<()> {
        if !t.schema().key_matches(&row, key) {
            let new_key = t.schema().key_of(&row);
            if t.claim_key(self.id, rid, &new_key, &mut self.waiter())? {
                if let Some(w) = self
                    .writes
                    .iter_mut()
                    .rev()
                    .find(|w| w.table == ti && w.rid == rid)
                {
                    w.claimed.push(new_key);
                }
            }
        }
        self.wrote = true;
        if self.records_ops {
            self.ops.push(Operation::Update {
                table: t.name().into(),
                key: key.clone(),
                row: RowRef::clone(&row),
            });
            self.before.push(Some(current));
        }
        t.set_pending(self.id, rid, Pending::Put(row));
        Ok(())
    }

    /// Commit, after the gate accepted: (1) publish every pending image (under the
    /// commit latch when several records change, so snapshots see all or none), (2) fix
    /// the index while still owning, (3) release the locks and free emptied RIDs.
    fn apply(&mut self) {
        self.state = State::Publishing;
        let mut stale: SmallVec<[(usize, Key); 1]> = SmallVec::new();
        {
            let _latch = (self.writes.len() > 1).then(|| self.db.commit_latch.read());
            for (wi, w) in self.writes.iter().enumerate() {
                let t = &self.entered[w.table].0;
                let committed = t.publish(self.id, w.rid);
                for k in w.original_key.iter().chain(&w.claimed) {
                    if !committed
                        .as_ref()
                        .is_some_and(|r| t.schema().key_matches(r, k))
                    {
                        stale.push((wi, k.clone()));
                    }
                }
            }
        }
        for (wi, k) in &stale {
            let w = &self.writes[*wi];
            self.entered[w.table].0.index.remove_if(k, w.rid);
        }
        self.release_all();
    }

    /// Rollback: restore original index entries first (so no key is ever briefly
    /// absent), then drop this transaction's claims, then release the locks. The
    /// committed images were never touched.
    fn undo(&mut self) {
        let any_claims = self.writes.iter().any(|w| !w.claimed.is_empty());
        for w in &self.writes {
            let t = &self.entered[w.table].0;
            // Without claims, no entry of this transaction's records was redirected.
            if let (true, Some(k)) = (any_claims, &w.original_key) {
                t.index.insert(k.clone(), w.rid);
            }
        }
        for w in self.writes.iter().rev() {
            let t = &self.entered[w.table].0;
            for k in &w.claimed {
                if w.original_key.as_ref() != Some(k) {
                    t.index.remove_if(k, w.rid);
                }
            }
        }
        self.discard_pending();
        self.release_all();
    }

    fn discard_pending(&self) {
        for w in &self.writes {
            self.entered[w.table]
                .0
                .set_pending(self.id, w.rid, Pending::Unchanged);
        }
    }

    fn release_all(&mut self) {
        for w in self.writes.drain(..) {
            let t = &self.entered[w.table].0;
            t.unlock(self.id, w.rid);
            self.db.locks.wake(t.id(), w.rid);
        }
        for (t, entered) in self.entered.drain(..) {
            t.admission.leave(entered);
        }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        match self.state {
            State::Open => self.undo(),
            // A hook panicked while images were being published. What is published
            // stays; the rest is dropped and every lock and writer registration is
            // released, so that the table is not wedged behind a dead transaction.
            State::Publishing => {
                self.discard_pending();
                self.release_all();
            }
            State::Finished => {}
        }
    }
}

fn not_found(t: &Table, key: &Key) -> EngineError {
    EngineError::KeyNotFound {
        table: t.name().to_owned(),
        key: key.clone(),
    }
}
