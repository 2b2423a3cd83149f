//! Telecom traffic for replication runs (`kirikae primary`, `bench replicate`, the
//! demo): the subscriber table plus a billing table and a call-event table, and
//! sessions doing the mix of seed 000's Fig. 5 — reads (skip under the mixed
//! policy), subscriber updates (ordered), charges that update a balance and insert a
//! billing record in one transaction (a billing commit: sync), and call-event inserts
//! (the rest: async).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use kirikae_engine::{
    Column, ColumnType, Database, EngineError, GateNote, Key, Schema, SessionInfo, Value,
};

use crate::workload::{load_subscribers, subscriber_key, Rng, SUBSCRIBER_TABLE};

/// Billing records: id (int key), imsi, amount.
pub const BILLING_TABLE: &str = "billing";
/// Call events: id (int key), imsi, at.
pub const EVENT_TABLE: &str = "call_event";
/// The replicated tables, for checksums.
pub const TABLES: [&str; 3] = [SUBSCRIBER_TABLE, BILLING_TABLE, EVENT_TABLE];

/// Creates the three tables with `subscribers` deterministic subscriber rows (the same
/// on a primary and its peer, which start from identical data).
pub fn create_tables(db: &Database, subscribers: u64) -> Result<(), EngineError> {
    load_subscribers(db, subscribers, &|_| {})?;
    let schema = |third: &str| {
        Schema::new(
            vec![
                Column::new("id", ColumnType::Int),
                Column::new("imsi", ColumnType::Text),
                Column::new(third, ColumnType::Int),
            ],
            &["id"],
        )
    };
    db.create_table(BILLING_TABLE, schema("amount")?)?;
    db.create_table(EVENT_TABLE, schema("at")?)?;
    Ok(())
}

/// The share of each kind of operation.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// Point reads of a subscriber.
    pub reads: f64,
    /// Subscriber balance updates.
    pub updates: f64,
    /// Charges (balance update + billing insert, one transaction).
    pub charges: f64,
    // The rest: call-event inserts.
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            reads: 0.2,
            updates: 0.5,
            charges: 0.15,
        }
    }
}

/// An acknowledged write, as the workload tells its observer.
#[derive(Debug)]
pub struct Acknowledged<'a> {
    /// The table it wrote last (billing for a charge).
    pub table: &'a str,
    /// The key it wrote there.
    pub key: &'a Key,
    /// The commit gate's note (e.g. how replication took it).
    pub note: &'a Option<GateNote>,
    /// When the transaction began (wall clock): a checker holds a node to having
    /// accepted it no later, e.g. not after another node took over.
    pub began: SystemTime,
}

/// Told of every acknowledged write (see [`Traffic::start_observed`]).
pub type CommitObserver = Arc<dyn Fn(Acknowledged<'_>) + Send + Sync>;

/// Sessions running the mix.
#[derive(Clone, Debug)]
pub struct Traffic {
    /// Concurrent sessions (threads).
    pub sessions: usize,
    /// Subscribers to choose from (uniformly).
    pub subscribers: u64,
    /// The mix.
    pub mix: Mix,
    /// Operations per second over all sessions (`None`: as fast as possible).
    pub rate: Option<f64>,
    /// Seed of the sessions' choices. It also sets the ids the sessions insert:
    /// traffic of another seed (e.g. a new primary's after a failover) never
    /// inserts an id this one did.
    pub seed: u64,
}

/// What a run did.
#[derive(Debug)]
pub struct TrafficReport {
    /// Operations completed (reads and commits).
    pub ops: u64,
    /// Commits that failed (e.g. a sync commit refused while the peer is down).
    pub failed: u64,
    /// Commit latency of writes, µs.
    pub commit_latency_us: Histogram<u64>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Traffic running on its threads.
pub struct RunningTraffic {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    /// The longest write since it was last taken, µs.
    write_us_max: Arc<AtomicU64>,
    started: Instant,
    threads: Vec<JoinHandle<(u64, Histogram<u64>)>>,
}

impl Traffic {
    /// Starts the sessions on `db`.
    pub fn start(&self, db: &Database) -> RunningTraffic {
        self.start_observed(db, None)
    }

    /// Starts the sessions on `db`, telling `on_commit` of every acknowledged write
    /// (from the committing thread, right after the commit returned and before that
    /// session's next operation).
    pub fn start_observed(
        &self,
        db: &Database,
        on_commit: Option<CommitObserver>,
    ) -> RunningTraffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let write_us_max = Arc::new(AtomicU64::new(0));
        let threads = (0..self.sessions)
            .map(|i| {
                let session = db.session(SessionInfo::new(format!("s{i}"), "service", None));
                let counters = Counters {
                    stop: Arc::clone(&stop),
                    ops: Arc::clone(&ops),
                    write_us_max: Arc::clone(&write_us_max),
                };
                let (me, observer) = (self.clone(), on_commit.clone());
                std::thread::spawn(move || {
                    me.session(i as u64, &session, &counters, observer.as_deref())
                })
            })
            .collect();
        RunningTraffic {
            stop,
            ops,
            write_us_max,
            started: Instant::now(),
            threads,
        }
    }

    fn session(
        &self,
        index: u64,
        session: &kirikae_engine::Session,
        counters: &Counters,
        on_commit: Option<&(dyn Fn(Acknowledged<'_>) + Send + Sync)>,
    ) -> (u64, Histogram<u64>) {
        let mut rng = Rng::new(self.seed.wrapping_mul(31).wrapping_add(index + 1));
        let mut latency = Histogram::new_with_bounds(1, 60_000_000, 3)
            .unwrap_or_else(|e| unreachable!("static histogram bounds are valid: {e}"));
        let mut failed = 0;
        // Seed in the top bits, session below: ids never collide across either.
        let mut next_id = (((self.seed & 0x7f) << 48) | (index << 40)) as i64;
        let per_session = self.rate.map(|r| r / self.sessions as f64);
        let started = Instant::now();
        let mut done = 0u64;
        while !counters.stop.load(Ordering::Relaxed) {
            if let Some(rate) = per_session {
                let due = started + Duration::from_secs_f64(done as f64 / rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            let key = subscriber_key(rng.below(self.subscribers.max(1)));
            let p = rng.below(1_000_000) as f64 / 1e6;
            let t0 = Instant::now();
            let result: Result<bool, EngineError> = if p < self.mix.reads {
                session.get(SUBSCRIBER_TABLE, &key).map(|_| false)
            } else {
                let began = SystemTime::now();
                let mut tx = session.begin();
                let table = if p < self.mix.reads + self.mix.updates {
                    let changes = [("balance", Value::Int(rng.below(100_000) as i64))];
                    tx.update_columns(SUBSCRIBER_TABLE, &key, &changes)
                        .map(|_| SUBSCRIBER_TABLE)
                } else {
                    next_id += 1;
                    let charge = p < self.mix.reads + self.mix.updates + self.mix.charges;
                    let imsi = key.values()[0].clone();
                    if charge {
                        tx.update_columns(
                            SUBSCRIBER_TABLE,
                            &key,
                            &[("balance", Value::Int(rng.below(100_000) as i64))],
                        )
                        .and_then(|_| {
                            tx.insert(BILLING_TABLE, vec![next_id.into(), imsi, 10.into()])
                        })
                        .map(|_| BILLING_TABLE)
                    } else {
                        tx.insert(EVENT_TABLE, vec![next_id.into(), imsi, next_id.into()])
                            .map(|_| EVENT_TABLE)
                    }
                };
                table.and_then(|table| {
                    let note = tx.commit_noted()?;
                    if let Some(observe) = on_commit {
                        // The billing row's key tells one charge from another.
                        let written = if table == SUBSCRIBER_TABLE {
                            key.clone()
                        } else {
                            Key::from(next_id)
                        };
                        observe(Acknowledged {
                            table,
                            key: &written,
                            note: &note,
                            began,
                        });
                    }
                    Ok(true)
                })
            };
            match result {
                Ok(true) => {
                    let us = t0.elapsed().as_micros().max(1) as u64;
                    latency.saturating_record(us);
                    // Read first: a write on the sessions' shared line only when
                    // this one is the longest yet.
                    if us > counters.write_us_max.load(Ordering::Relaxed) {
                        counters.write_us_max.fetch_max(us, Ordering::Relaxed);
                    }
                }
                Ok(false) => {}
                Err(_) => failed += 1,
            }
            done += 1;
            counters.ops.fetch_add(1, Ordering::Relaxed);
        }
        (failed, latency)
    }
}

/// What the sessions share with [`RunningTraffic`].
struct Counters {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    write_us_max: Arc<AtomicU64>,
}

impl RunningTraffic {
    /// Operations so far.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// The longest acknowledged write (begin to commit returned, as the session saw
    /// it), µs, since the last call (or the start), and starts a new window: e.g.
    /// the writers' stall across a restructure's switch.
    pub fn take_write_us_max(&self) -> u64 {
        self.write_us_max.swap(0, Ordering::Relaxed)
    }

    /// Stops the sessions and gathers what they measured.
    pub fn stop(self) -> TrafficReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = TrafficReport {
            ops: 0,
            failed: 0,
            commit_latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|e| unreachable!("static histogram bounds are valid: {e}")),
            elapsed: self.started.elapsed(),
        };
        for t in self.threads {
            if let Ok((failed, h)) = t.join() {
                report.failed += failed;
                let _ = report.commit_latency_us.add(&h);
            }
        }
        report.ops = self.ops.load(Ordering::Relaxed);
        report
    }
}
