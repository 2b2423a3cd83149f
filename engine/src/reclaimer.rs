//! The reclaimer: frees retired tables (and other retired structures) on a background
//! thread, so that no foreground thread ever pays for freeing a million records.
//!
//! Why it is needed: after a switch, the old table is still referenced by whoever held
//! an `Arc<Table>` at that moment: a writer held at the switch, a transaction still
//! finishing, a reader's view of the previous catalog map, the restructure itself.
//! Whichever of them drops the last reference would free the whole table inside its
//! own call (tens of milliseconds for a million rows).
//!
//! Why it is safe: the reclaimer keeps its own reference to every retired table, so no
//! other holder can be the last one. It frees a table only once [`Arc::try_unwrap`]
//! succeeds, i.e. when its reference is the only one left (no weak references to
//! tables are ever made). A retired table is no longer in the catalog, so nobody can
//! obtain a new reference except by cloning an existing one, and there is none left
//! to clone: once unique, it stays unique. The records are then dropped in bounded
//! chunks with a yield between chunks.
//!
//! Why it runs at the lowest priority (nice 19, Linux): on a machine whose cores are
//! all busy with writers, a reclaimer at normal priority takes a core for itself and
//! leaves writers to share the others in 4 ms scheduler ticks, so a write that crosses
//! a tick waits milliseconds (seen with 2 writers on 2 cores after a 10M-row switch).
//! Freed memory can wait; writers cannot.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::slots::Slot;
use crate::table::Table;

/// Records dropped between two yields.
const CHUNK_SLOTS: usize = 4096;
/// How often retired items still referenced elsewhere are checked again.
const RECHECK: Duration = Duration::from_millis(2);

/// Something handed over for freeing later.
enum Retired {
    Table(Arc<Table>),
    Other(Arc<dyn Any + Send + Sync>),
}

/// Counts a [`crate::Database`] reports about its reclaimer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimStats {
    /// Items retired and not yet freed (still referenced, or being freed).
    pub pending: u64,
    /// Tables freed so far.
    pub tables_freed: u64,
    /// Other structures freed so far.
    pub others_freed: u64,
}

#[derive(Default)]
struct Queue {
    incoming: Vec<Retired>,
    /// The database is gone: free what is unique, leave the rest to its holders, stop.
    closing: bool,
    /// Whether the thread was started.
    started: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    pending: AtomicU64,
    tables_freed: AtomicU64,
    others_freed: AtomicU64,
}

/// One database's reclaimer. The thread starts at the first retirement or hold of
/// writers, whichever comes first, and ends when the database is dropped.
pub(crate) struct Reclaimer {
    shared: Arc<Shared>,
}

impl Reclaimer {
    pub fn new() -> Reclaimer {
        Reclaimer {
            shared: Arc::new(Shared::default()),
        }
    }

    /// Hands a retired table over; it is freed once nobody else references it.
    pub fn retire_table(&self, table: Arc<Table>) {
        self.hand_over(Retired::Table(table));
    }

    /// Starts the thread if it is not running yet. The database calls this before it
    /// holds writers, so that a switch never pays for starting a thread.
    pub fn start(&self) {
        let mut queue = self.shared.queue.lock();
        if queue.started {
            return;
        }
        queue.started = true;
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("kirikae-reclaimer".into())
            .spawn(move || {
                lower_priority();
                run(&shared)
            });
        if let Err(e) = spawned {
            // Without a thread the items stay referenced here until the database is
            // dropped: memory is held longer, nothing is freed in the foreground.
            tracing::warn!("cannot start the reclaimer thread: {e}");
            queue.started = false;
        }
    }

    /// Hands any retired structure over (e.g. a restructure's lock history, which a
    /// writer's observer call may still hold).
    pub fn retire(&self, item: Arc<dyn Any + Send + Sync>) {
        self.hand_over(Retired::Other(item));
    }

    pub fn stats(&self) -> ReclaimStats {
        ReclaimStats {
            pending: self.shared.pending.load(Ordering::Relaxed),
            tables_freed: self.shared.tables_freed.load(Ordering::Relaxed),
            others_freed: self.shared.others_freed.load(Ordering::Relaxed),
        }
    }

    fn hand_over(&self, item: Retired) {
        self.shared.pending.fetch_add(1, Ordering::Relaxed);
        self.start();
        self.shared.queue.lock().incoming.push(item);
        self.shared.wake.notify_one();
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        self.shared.queue.lock().closing = true;
        self.shared.wake.notify_one();
    }
}

/// Nice 19 for the calling thread only (on Linux, `setpriority` on a thread id
/// applies to that thread). Failing to lower it costs speed, not correctness.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
        tracing::warn!("cannot lower the reclaimer's priority: {e}");
    }
}

fn run(shared: &Shared) {
    let mut waiting: Vec<Retired> = Vec::new();
    loop {
        let closing = {
            let mut queue = shared.queue.lock();
            if queue.incoming.is_empty() && !queue.closing {
                if waiting.is_empty() {
                    shared.wake.wait(&mut queue);
                } else {
                    shared.wake.wait_for(&mut queue, RECHECK);
                }
            }
            waiting.append(&mut queue.incoming);
            queue.closing
        };
        let mut still = Vec::with_capacity(waiting.len());
        for item in waiting.drain(..) {
            match item {
                Retired::Table(table) => match Arc::try_unwrap(table) {
                    Ok(table) => {
                        tear_down(table);
                        shared.tables_freed.fetch_add(1, Ordering::Relaxed);
                        shared.pending.fetch_sub(1, Ordering::Relaxed);
                    }
                    Err(table) => still.push(Retired::Table(table)),
                },
                Retired::Other(mut other) => {
                    if Arc::get_mut(&mut other).is_some() {
                        drop(other);
                        shared.others_freed.fetch_add(1, Ordering::Relaxed);
                        shared.pending.fetch_sub(1, Ordering::Relaxed);
                    } else {
                        still.push(Retired::Other(other));
                    }
                }
            }
        }
        waiting = still;
        if closing {
            // The database is gone; whoever still holds an item frees it.
            shared
                .pending
                .fetch_sub(waiting.len() as u64, Ordering::Relaxed);
            return;
        }
    }
}

/// Frees a table nobody else references, a chunk of records at a time.
fn tear_down(table: Table) {
    let (segments, index) = table.into_storage();
    // The index first: its keys are inline values, so dropping it is one pass over its
    // buckets and a few large frees.
    drop(index);
    std::thread::yield_now();
    for segment in segments {
        let mut slots: Vec<Slot> = segment.into_vec();
        while !slots.is_empty() {
            slots.truncate(slots.len().saturating_sub(CHUNK_SLOTS));
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::{Column, ColumnType, Database, Key, Rid, RowRef, Schema, SessionInfo, Value};

    /// Who frees retired tables: the reclaimer, at the lowest priority where it can be set.
    const RECLAIMER: &str = if cfg!(target_os = "linux") {
        "kirikae-reclaimer nice 19"
    } else {
        "kirikae-reclaimer"
    };

    /// A write observer that notes which thread dropped it, and that thread's nice
    /// value: the table it is installed on is freed by the same drop.
    struct DropSpy(Arc<Mutex<Option<String>>>);

    impl crate::WriteObserver for DropSpy {
        fn record_locked(&self, _rid: Rid) {}
        fn record_published(&self, _rid: Rid, _image: Option<&RowRef>) {}
    }

    impl Drop for DropSpy {
        fn drop(&mut self) {
            let name = std::thread::current().name().unwrap_or("?").to_owned();
            #[cfg(target_os = "linux")]
            let name = format!(
                "{name} nice {}",
                rustix::process::getpriority_process(Some(rustix::thread::gettid()))
                    .unwrap_or(i32::MIN)
            );
            *self.0.lock() = Some(name);
        }
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn table_with_rows(db: &Database, rows: i64) {
        let schema = Schema::new(vec![Column::new("k", ColumnType::Int)], &["k"]).expect("schema");
        db.create_table("t", schema).expect("create");
        let s = db.session(SessionInfo::default());
        for k in 0..rows {
            s.insert("t", vec![Value::Int(k)]).expect("insert");
        }
    }

    #[test]
    fn the_last_outside_holder_of_a_switched_table_never_frees_it() {
        let db = Database::new();
        table_with_rows(&db, 10_000);
        let dropped_on = Arc::new(Mutex::new(None));
        let old = db.table("t").expect("t");
        old.set_write_observer(Some(Arc::new(DropSpy(Arc::clone(&dropped_on)))));

        let twin = Arc::new(Table::new("t", old.schema().as_ref().clone()));
        let hold = db.hold_writers("t").expect("hold");
        hold.wait_idle(Duration::from_secs(1)).expect("idle");
        hold.switch_to(Arc::clone(&twin)).expect("switch");
        // This thread is now the only holder besides the reclaimer.
        drop(old);
        wait_until("freed", || dropped_on.lock().is_some());
        assert_eq!(dropped_on.lock().as_deref(), Some(RECLAIMER));
        // Counted once the teardown has returned, a moment after the spy's drop.
        wait_until("counted", || {
            let stats = db.reclaim_stats();
            (stats.tables_freed, stats.pending) == (1, 0)
        });
        // The new table serves.
        let s = db.session(SessionInfo::default());
        s.insert("t", vec![Value::Int(1)])
            .expect("insert into the new table");
        assert_eq!(
            s.get("t", &Key::from(1)).expect("get").map(|r| r.len()),
            Some(1)
        );
    }

    #[test]
    fn a_dropped_table_held_by_an_open_transaction_is_freed_after_it_ends() {
        let db = Database::new();
        table_with_rows(&db, 100);
        let dropped_on = Arc::new(Mutex::new(None));
        db.table("t")
            .expect("t")
            .set_write_observer(Some(Arc::new(DropSpy(Arc::clone(&dropped_on)))));
        let s = db.session(SessionInfo::default());
        let mut tx = s.begin();
        tx.update("t", &Key::from(5), vec![Value::Int(5)])
            .expect("update");
        db.drop_table("t").expect("drop");
        assert_eq!(
            db.reclaim_stats().pending,
            1,
            "still referenced by the transaction"
        );
        tx.commit().expect("commit on the detached table");
        wait_until("freed", || dropped_on.lock().is_some());
        assert_eq!(dropped_on.lock().as_deref(), Some(RECLAIMER));
        wait_until("counted", || db.reclaim_stats().tables_freed == 1);
    }

    #[test]
    fn other_structures_are_freed_once_unique() {
        let db = Database::new();
        let item: Arc<Vec<u8>> = Arc::new(vec![0; 1 << 20]);
        let extra = Arc::clone(&item);
        db.free_later(item);
        assert_eq!(db.reclaim_stats().pending, 1);
        drop(extra);
        wait_until("freed", || db.reclaim_stats().others_freed == 1);
        assert_eq!(db.reclaim_stats().pending, 0);
    }
}
