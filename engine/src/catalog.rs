//! The catalog: table names to tables, with an atomic switch of a name to a new table,
//! every change shown first to the catalog observer if one is installed.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::Mutex;

use crate::error::{EngineError, Result};
use crate::hooks::{CatalogChange, CatalogObserver, ForReplica};
use crate::reclaimer::Reclaimer;
use crate::schema::Schema;
use crate::table::Table;

type TableMap = HashMap<String, Arc<Table>, ahash::RandomState>;

/// `ArcSwapOption` needs a sized pointee.
struct ObserverCell(Arc<dyn CatalogObserver>);

/// Readers load the current map without locking; changes (create, drop, switch) are
/// serialized by `ddl` and publish a new map in one atomic store. Tables taken out of
/// the map go to the reclaimer, which frees them off the foreground.
pub(crate) struct Catalog {
    tables: ArcSwap<TableMap>,
    ddl: Mutex<()>,
    observer: ArcSwapOption<ObserverCell>,
    pub reclaimer: Reclaimer,
}

impl Catalog {
    pub fn new() -> Catalog {
        Catalog {
            tables: ArcSwap::from_pointee(TableMap::default()),
            ddl: Mutex::new(()),
            observer: ArcSwapOption::empty(),
            reclaimer: Reclaimer::new(),
        }
    }

    pub fn get(&self, name: &str) -> Result<Arc<Table>> {
        self.tables
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::UnknownTable {
                table: name.to_owned(),
            })
    }

    /// Runs `f` on the named table without taking a reference count (the hot read path).
    pub fn with<R>(&self, name: &str, f: impl FnOnce(&Table) -> R) -> Result<R> {
        let map = self.tables.load();
        let table = map.get(name).ok_or_else(|| EngineError::UnknownTable {
            table: name.to_owned(),
        })?;
        Ok(f(table))
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tables.load().keys().cloned().collect();
        names.sort();
        names
    }

    pub fn all(&self) -> Vec<Arc<Table>> {
        let mut tables: Vec<Arc<Table>> = self.tables.load().values().cloned().collect();
        tables.sort_by(|a, b| a.name().cmp(b.name()));
        tables
    }

    /// Installs (`None`: removes) the observer; the next change is shown to it.
    pub fn set_observer(&self, observer: Option<Arc<dyn CatalogObserver>>) {
        let _ddl = self.ddl.lock();
        self.observer
            .store(observer.map(|o| Arc::new(ObserverCell(o))));
    }

    /// Tells the observer `change` took effect; called with `ddl` held, after
    /// publishing.
    fn published(&self, change: &CatalogChange<'_>) {
        if let Some(cell) = self.observer.load_full() {
            cell.0.published(change);
        }
    }

    /// Shows `change` to the observer; called with `ddl` held, before publishing.
    fn prepare(&self, change: &CatalogChange<'_>) -> Result<()> {
        let Some(cell) = self.observer.load_full() else {
            return Ok(());
        };
        cell.0
            .prepare(change)
            .map_err(|source| EngineError::CatalogChangeVetoed {
                table: change.table_name().to_owned(),
                source,
            })
    }

    /// Shows an announcement about `table` to the observer, in order with the
    /// catalog's changes (see [`CatalogChange::Announced`]).
    pub fn announce(&self, table: &str, payload: &[u8], for_replica: ForReplica<'_>) -> Result<()> {
        let _ddl = self.ddl.lock();
        let change = CatalogChange::Announced {
            table,
            payload,
            for_replica,
        };
        self.prepare(&change)?;
        self.published(&change);
        Ok(())
    }

    fn publish(&self, change: impl FnOnce(&mut TableMap)) {
        let mut next = TableMap::clone(&self.tables.load());
        change(&mut next);
        self.tables.store(Arc::new(next));
    }

    pub fn create(&self, name: &str, schema: Schema) -> Result<Arc<Table>> {
        let table = Arc::new(Table::new(name, schema));
        self.add(Arc::clone(&table))?;
        Ok(table)
    }

    /// Publishes an existing (unpublished) table under its own name.
    pub fn add(&self, table: Arc<Table>) -> Result<()> {
        let _ddl = self.ddl.lock();
        if self.tables.load().contains_key(table.name()) {
            return Err(EngineError::TableExists {
                table: table.name().to_owned(),
            });
        }
        let change = CatalogChange::Added { table: &table };
        self.prepare(&change)?;
        self.publish(|m| {
            m.insert(table.name().to_owned(), Arc::clone(&table));
        });
        self.published(&change);
        Ok(())
    }

    /// Removes the name; the table is retired so that writers resolving it again get
    /// [`EngineError::UnknownTable`]. Transactions already writing it finish on the
    /// detached table.
    pub fn drop_table(&self, name: &str) -> Result<Arc<Table>> {
        let _ddl = self.ddl.lock();
        let table = self.get(name)?;
        let change = CatalogChange::Dropped { table: &table };
        self.prepare(&change)?;
        self.publish(|m| {
            m.remove(name);
        });
        self.published(&change);
        table.admission.retire();
        self.reclaimer.retire_table(Arc::clone(&table));
        Ok(table)
    }

    /// Points `name` at `new` if it still designates `old`; retires `old`.
    pub fn switch(&self, name: &str, old: &Arc<Table>, new: Arc<Table>) -> Result<()> {
        let _ddl = self.ddl.lock();
        let current = self.get(name)?;
        if !Arc::ptr_eq(&current, old) {
            return Err(EngineError::SwitchTargetChanged {
                table: name.to_owned(),
            });
        }
        let change = CatalogChange::Switched { old, new: &new };
        self.prepare(&change)?;
        self.publish(|m| {
            m.insert(name.to_owned(), Arc::clone(&new));
        });
        self.published(&change);
        // After the new map is visible: a writer told "retired" resolves the name again
        // and must find the new table.
        old.admission.retire();
        self.reclaimer.retire_table(Arc::clone(old));
        Ok(())
    }
}
