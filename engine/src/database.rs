//! The database handle: catalog, configuration, lock waits, commit gate, sessions and
//! the writer hold a restructure's switch uses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use parking_lot::RwLock;

use crate::catalog::Catalog;
use crate::db_inner::{CommitGateCell, DbInner, EngineConfig};
use crate::error::{EngineError, Result};
use crate::hooks::CommitGate;
use crate::hooks::ForReplica;
use crate::key::Key;
use crate::lock::LockWaits;
use crate::rid::Rid;
use crate::schema::{Row, RowRef, Schema};
use crate::session::SessionInfo;
use crate::table::Table;
use crate::txn::Transaction;
use crate::value::Value;

/// How many writer holds (switches, throttled rounds) have begun and ended on a
/// database, for measuring what writers experience: a write that read these before it
/// started and `begun` again after it finished overlapped a hold if `begun != ended`
/// at the start or `begun` moved in between.
///
/// `begun` counts up before new writers are held, `ended` after they are let go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterHolds {
    /// Holds started.
    pub begun: u64,
    /// Holds finished.
    pub ended: u64,
}

impl WriterHolds {
    /// Whether a write that saw `self` when it started and `after` when it finished
    /// overlapped a hold (conservative: a hold that ended between the two reads that
    /// make `self` also counts).
    pub fn overlapped(&self, after: &WriterHolds) -> bool {
        self.begun != self.ended || after.begun != self.begun
    }
}

/// A main-memory database. Cheap to clone (a shared handle), `Send + Sync`.
#[derive(Clone)]
pub struct Database {
    pub(crate) inner: Arc<DbInner>,
}

impl Default for Database {
    fn default() -> Self {
        Database::new()
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("tables", &self.table_names())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// An empty database with default settings.
    pub fn new() -> Database {
        Database::with_config(EngineConfig::default())
    }

    /// An empty database with the given settings.
    pub fn with_config(config: EngineConfig) -> Database {
        Database {
            inner: Arc::new(DbInner {
                catalog: Catalog::new(),
                config,
                locks: LockWaits::new(),
                commit_latch: RwLock::new(()),
                commit_gate: ArcSwapOption::empty(),
                holds_begun: AtomicU64::new(0),
                holds_ended: AtomicU64::new(0),
            }),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Creates an empty table.
    pub fn create_table(&self, name: &str, schema: Schema) -> Result<Arc<Table>> {
        self.inner.catalog.create(name, schema)
    }

    /// Publishes a table built outside the catalog (e.g. loaded or restructured) under
    /// its own name; fails if the name is taken.
    pub fn add_table(&self, table: Arc<Table>) -> Result<()> {
        self.inner.catalog.add(table)
    }

    /// Removes a table from the catalog.
    pub fn drop_table(&self, name: &str) -> Result<Arc<Table>> {
        self.inner.catalog.drop_table(name)
    }

    /// The table currently published under `name`.
    pub fn table(&self, name: &str) -> Result<Arc<Table>> {
        self.inner.catalog.get(name)
    }

    /// Names of all tables, sorted.
    pub fn table_names(&self) -> Vec<String> {
        self.inner.catalog.names()
    }

    /// All tables, sorted by name.
    pub fn tables(&self) -> Vec<Arc<Table>> {
        self.inner.catalog.all()
    }

    /// A session acting as `info`.
    pub fn session(&self, info: SessionInfo) -> Session {
        Session {
            db: self.clone(),
            info,
        }
    }

    /// Installs (or with `None` removes) the commit gate. Transactions that began
    /// before the change keep the gate they began with.
    pub fn set_commit_gate(&self, gate: Option<Arc<dyn CommitGate>>) {
        self.inner
            .commit_gate
            .store(gate.map(|g| Arc::new(CommitGateCell(g))));
    }

    /// Hands `item` to the background reclaimer, which drops it once nobody else
    /// references it: the caller's thread never pays for freeing it, nor does any
    /// other thread that still holds a reference. For large structures retired while
    /// the service runs (a restructure's lock history or journal, for instance).
    pub fn free_later(&self, item: Arc<dyn std::any::Any + Send + Sync>) {
        self.inner.catalog.reclaimer.retire(item);
    }

    /// What the reclaimer has freed and what it still waits for. Retired tables
    /// (switched away or dropped) are freed there, once the last transaction, reader
    /// or caller holding them lets go.
    pub fn reclaim_stats(&self) -> crate::ReclaimStats {
        self.inner.catalog.reclaimer.stats()
    }

    /// Writer holds begun and ended so far, read `ended` first (see [`WriterHolds`]).
    pub fn writer_holds(&self) -> WriterHolds {
        let ended = self.inner.holds_ended.load(Ordering::SeqCst);
        let begun = self.inner.holds_begun.load(Ordering::SeqCst);
        WriterHolds { begun, ended }
    }

    /// Installs (or with `None` removes) the catalog observer, which is shown every
    /// later create, add, drop and switch before it takes effect and may veto it
    /// (see [`CatalogObserver`](crate::CatalogObserver)).
    pub fn set_catalog_observer(&self, observer: Option<Arc<dyn crate::CatalogObserver>>) {
        self.inner.catalog.set_observer(observer);
    }

    /// Shows the catalog observer an announcement about `table` (e.g. a restructure
    /// layer saying which plan it began), in order with the catalog's changes; the
    /// catalog does not change. `for_replica` says what a replica needs of it (see
    /// [`ForReplica`]). `Ok` without an observer; the observer's veto is
    /// [`EngineError::CatalogChangeVetoed`].
    pub fn announce(&self, table: &str, payload: &[u8], for_replica: ForReplica<'_>) -> Result<()> {
        self.inner.catalog.announce(table, payload, for_replica)
    }

    /// Holds new writers of `name`: transactions that have not yet written the table
    /// wait (up to their lock timeout); those already writing it continue. Readers are
    /// never held. The hold ends when the returned guard is dropped or switches.
    pub fn hold_writers(&self, name: &str) -> Result<WriterHold> {
        let table = self.table(name)?;
        // A switch retires the table: the thread that frees it must not start inside
        // the hold.
        self.inner.catalog.reclaimer.start();
        self.inner.holds_begun.fetch_add(1, Ordering::SeqCst);
        if !table.admission.hold() {
            self.inner.holds_ended.fetch_add(1, Ordering::SeqCst);
            return Err(EngineError::AlreadyHeld {
                table: name.to_owned(),
            });
        }
        Ok(WriterHold {
            db: self.clone(),
            name: name.to_owned(),
            table,
            done: false,
        })
    }
}

/// How long [`WriterHold::switch_to`] waits for writers that registered and are
/// backing off from the hold (preempted between the two, one may take a scheduler
/// tick); a writer still in flight after that was not waited for, and fails it.
const BACKING_OFF_WAIT_MAX: Duration = Duration::from_millis(50);

/// New writers of one table held for a switch (see [`Database::hold_writers`]).
///
/// ```
/// use kirikae_engine::*;
/// let db = Database::new();
/// let schema = Schema::new(vec![Column::new("k", ColumnType::Int)], &["k"]).unwrap();
/// db.create_table("t", schema.clone()).unwrap();
/// let s = db.session(SessionInfo::default());
/// s.insert("t", vec![1.into()]).unwrap();
///
/// let twin = std::sync::Arc::new(Table::new("t", schema));
/// twin.install(vec![1.into()]).unwrap();
/// let hold = db.hold_writers("t").unwrap();
/// hold.wait_idle(std::time::Duration::from_secs(1)).unwrap();
/// hold.switch_to(twin.clone()).unwrap();
/// assert_eq!(db.table("t").unwrap().id(), twin.id());
/// s.insert("t", vec![2.into()]).unwrap(); // lands in the new table
/// assert_eq!(twin.len(), 2);
/// ```
pub struct WriterHold {
    db: Database,
    name: String,
    table: Arc<Table>,
    done: bool,
}

impl WriterHold {
    /// The table whose writers are held.
    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// Transactions still writing the table.
    pub fn in_flight(&self) -> u64 {
        self.table.admission.in_flight()
    }

    /// Waits until no transaction is writing the table. On timeout the hold stays on
    /// and [`EngineError::WritersInFlight`] says how many remain.
    pub fn wait_idle(&self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        if self.table.admission.wait_idle(timeout) {
            Ok(())
        } else {
            Err(EngineError::WritersInFlight {
                table: self.name.clone(),
                in_flight: self.in_flight(),
                waited_ms: started.elapsed().as_millis() as u64,
            })
        }
    }

    /// Publishes `new` under the held name, retires the old table and releases the
    /// hold; held writers continue on `new`. Requires that no writer is in flight
    /// (call [`wait_idle`](WriterHold::wait_idle) first): one still writing after
    /// a short wait fails it with [`EngineError::WritersInFlight`]. Returns the old
    /// table.
    pub fn switch_to(mut self, new: Arc<Table>) -> Result<Arc<Table>> {
        // Once idle under the hold, a registration seen now is a writer that is
        // about to see the hold and back off (it counts itself before it looks):
        // wait for it to go instead of failing the switch.
        self.wait_idle(BACKING_OFF_WAIT_MAX)?;
        self.db.inner.catalog.switch(&self.name, &self.table, new)?;
        self.done = true;
        self.db.inner.holds_ended.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::clone(&self.table))
    }

    /// Lifts the hold without switching.
    pub fn release(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if !self.done {
            self.done = true;
            self.table.admission.release();
            self.db.inner.holds_ended.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for WriterHold {
    fn drop(&mut self) {
        self.end();
    }
}

/// A caller's handle: its identity plus autocommit operations and transactions.
///
/// Single operations (`insert`, `update`, …) commit on their own. Reads see committed
/// data only.
#[derive(Clone, Debug)]
pub struct Session {
    db: Database,
    info: SessionInfo,
}

impl Session {
    /// Who this session acts as.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The database this session belongs to.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Starts a transaction.
    pub fn begin(&self) -> Transaction<'_> {
        Transaction::begin(&self.db.inner, &self.info)
    }

    /// The committed record with `key`.
    pub fn get(&self, table: &str, key: &Key) -> Result<Option<RowRef>> {
        self.db.inner.catalog.with(table, |t| {
            t.schema().validate_key(t.name(), key)?;
            Ok(t.get(key))
        })?
    }

    /// The committed record at `rid`.
    pub fn get_by_rid(&self, table: &str, rid: Rid) -> Result<Option<RowRef>> {
        self.db.inner.catalog.with(table, |t| t.get_by_rid(rid))
    }

    /// Inserts and commits `row`; returns its RID.
    pub fn insert(&self, table: &str, row: Row) -> Result<Rid> {
        self.autocommit(|t| t.insert(table, row))
    }

    /// Inserts and commits a row given as `(column, value)` pairs.
    pub fn insert_named(&self, table: &str, values: &[(&str, Value)]) -> Result<Rid> {
        self.autocommit(|t| t.insert_named(table, values))
    }

    /// Replaces and commits the record with `key`.
    pub fn update(&self, table: &str, key: &Key, row: Row) -> Result<Rid> {
        self.autocommit(|t| t.update(table, key, row))
    }

    /// Changes and commits the named columns of the record with `key`.
    pub fn update_columns(&self, table: &str, key: &Key, changes: &[(&str, Value)]) -> Result<Rid> {
        self.autocommit(|t| t.update_columns(table, key, changes))
    }

    /// Deletes and commits the record with `key`.
    pub fn delete(&self, table: &str, key: &Key) -> Result<Rid> {
        self.autocommit(|t| t.delete(table, key))
    }

    fn autocommit<T>(&self, op: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut txn = self.begin();
        let out = op(&mut txn)?;
        txn.commit()?;
        Ok(out)
    }
}
