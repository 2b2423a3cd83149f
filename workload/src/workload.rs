//! The telecom subscriber workload shared by `kirikae demo` and `kirikae bench`:
//! a subscriber table (≈100 bytes a row), a hot-set key chooser, and worker threads
//! doing mixed point reads and balance updates, counted live and tagged by phase.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::utils::CachePadded;
use hdrhistogram::Histogram;
use kirikae_engine::{
    Column, ColumnType, Database, EngineError, Key, Row, Schema, SessionInfo, Table, Value,
};

/// Name of the subscriber table.
pub const SUBSCRIBER_TABLE: &str = "subscriber";

/// imsi (text, primary key), msisdn (text), status (text), balance (int),
/// last_seen (int, ms), region (text).
pub fn subscriber_schema() -> Schema {
    Schema::new(
        vec![
            Column::new("imsi", ColumnType::Text),
            Column::new("msisdn", ColumnType::Text),
            Column::new("status", ColumnType::Text),
            Column::new("balance", ColumnType::Int),
            Column::new("last_seen", ColumnType::Int),
            Column::new("region", ColumnType::Text),
        ],
        &["imsi"],
    )
    .unwrap_or_else(|e| unreachable!("the subscriber schema is valid: {e}"))
}

/// The IMSI of subscriber number `i` (MCC 440, MNC 10, 10-digit MSIN).
pub fn imsi(i: u64) -> String {
    format!("44010{:010}", i % 10_000_000_000)
}

/// The primary key of subscriber number `i`.
pub fn subscriber_key(i: u64) -> Key {
    Key::from(imsi(i))
}

const REGIONS: [&str; 8] = [
    "kanto", "kansai", "chubu", "kyushu", "tohoku", "hokkaido", "chugoku", "shikoku",
];

/// The initial row of subscriber number `i`.
pub fn subscriber_row(i: u64) -> Row {
    vec![
        Value::from(imsi(i)),
        Value::from(format!("0{:010}", 9_000_000_000 + i % 1_000_000_000)),
        Value::from(if i % 50 == 0 { "suspended" } else { "active" }),
        Value::Int((i % 10_000) as i64 * 10),
        Value::Int(1_700_000_000_000 + i as i64),
        Value::from(REGIONS[(i % 8) as usize]),
    ]
}

/// Creates and fills the subscriber table with `rows` records, calling `progress`
/// with the count loaded every 65,536 rows. The table is filled before it is
/// published, so loading takes no locks.
pub fn load_subscribers(
    db: &Database,
    rows: u64,
    progress: &dyn Fn(u64),
) -> Result<Arc<Table>, EngineError> {
    let table = Arc::new(Table::new(SUBSCRIBER_TABLE, subscriber_schema()));
    for i in 0..rows {
        table.install(subscriber_row(i))?;
        if i % 65_536 == 0 {
            progress(i);
        }
    }
    progress(rows);
    db.add_table(Arc::clone(&table))?;
    Ok(table)
}

/// The PRNG of workload threads: deterministic per seed, the same one the tests use.
pub use kirikae_testkit::Rng;

/// Chooses subscriber numbers: with probability `hot_probability` one of the first
/// `hot_rows` (the hot set, like the busy subscribers of a real network), else any.
#[derive(Clone, Copy, Debug)]
pub struct KeyChooser {
    /// Subscribers in the table.
    pub rows: u64,
    /// Size of the hot set.
    pub hot_rows: u64,
    /// Share of accesses that go to the hot set.
    pub hot_probability: f64,
}

impl KeyChooser {
    /// The default hot set: 1% of the subscribers take 90% of the accesses.
    pub fn hot_set(rows: u64) -> KeyChooser {
        KeyChooser {
            rows,
            hot_rows: (rows / 100).max(1),
            hot_probability: 0.9,
        }
    }

    /// Uniform over all subscribers.
    pub fn uniform(rows: u64) -> KeyChooser {
        KeyChooser {
            rows,
            hot_rows: rows,
            hot_probability: 0.0,
        }
    }

    /// The next subscriber number.
    pub fn next(&self, rng: &mut Rng) -> u64 {
        if rng.chance(self.hot_probability) {
            rng.below(self.hot_rows.max(1))
        } else {
            rng.below(self.rows.max(1))
        }
    }

    /// `n` keys drawn in advance, so that building keys is not part of what is
    /// measured.
    pub fn sample(&self, n: usize, seed: u64) -> Arc<Vec<Key>> {
        let mut rng = Rng::new(seed);
        Arc::new(
            (0..n)
                .map(|_| subscriber_key(self.next(&mut rng)))
                .collect(),
        )
    }
}

/// Phases a workload's measurements are split by (set by whoever drives the run).
pub const PHASES: usize = 4;

/// Write latencies are also kept per slice of this long, so that a window before a
/// restructure can be compared with one of equal length during it.
pub const SLICE: Duration = Duration::from_millis(100);

/// Mixed reads and balance updates on the subscriber table.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Worker threads.
    pub threads: usize,
    /// Share of operations that are point reads; the rest update balance and last_seen.
    pub read_ratio: f64,
    /// Which subscribers are touched.
    pub keys: KeyChooser,
    /// Pause after each operation, in µs (0: saturated writers, no pause at all).
    pub think_us: u64,
}

/// A workload running on its threads.
pub struct RunningWorkload {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    counters: Arc<Vec<CachePadded<AtomicU64>>>,
    workers: Vec<JoinHandle<WorkloadReport>>,
    epoch: Instant,
}

/// What one worker (or, merged, the whole run) measured.
#[derive(Debug)]
pub struct WorkloadReport {
    /// Point reads done.
    pub reads: u64,
    /// Updates committed.
    pub writes: u64,
    /// Updates retried after a retryable error (lock timeout, writers held).
    pub retries: u64,
    /// Write latency in µs, one histogram per phase.
    pub write_latency_us: Vec<Histogram<u64>>,
    /// Write latency in µs per [`SLICE`] since the workload started.
    pub slices: Vec<Histogram<u64>>,
    /// The longest write (µs, retries included) that overlapped a hold of writers
    /// (a restructure's held round or switch), as the writer's call saw it.
    pub held_write_us_max: u64,
    /// Writes that overlapped a hold.
    pub held_writes: u64,
}

impl WorkloadReport {
    fn new() -> WorkloadReport {
        WorkloadReport {
            reads: 0,
            writes: 0,
            retries: 0,
            write_latency_us: (0..PHASES).map(|_| new_histogram()).collect(),
            slices: Vec::new(),
            held_write_us_max: 0,
            held_writes: 0,
        }
    }

    fn merge(&mut self, other: &WorkloadReport) {
        self.reads += other.reads;
        self.writes += other.writes;
        self.retries += other.retries;
        self.held_write_us_max = self.held_write_us_max.max(other.held_write_us_max);
        self.held_writes += other.held_writes;
        for (t, h) in self
            .write_latency_us
            .iter_mut()
            .zip(&other.write_latency_us)
        {
            add(t, h);
        }
        for (i, h) in other.slices.iter().enumerate() {
            add(slice(&mut self.slices, i), h);
        }
    }

    /// Write latency over slices `range` (merged).
    pub fn latency_over(&self, range: std::ops::Range<usize>) -> Histogram<u64> {
        let mut total = new_histogram();
        for h in self.slices.get(range).unwrap_or_default() {
            add(&mut total, h);
        }
        total
    }
}

fn add(total: &mut Histogram<u64>, h: &Histogram<u64>) {
    total
        .add(h)
        .unwrap_or_else(|e| unreachable!("same bounds: {e}"));
}

/// The histogram of slice `i`, created (with the ones before it) on first use.
fn slice(slices: &mut Vec<Histogram<u64>>, i: usize) -> &mut Histogram<u64> {
    while slices.len() <= i {
        slices.push(new_histogram());
    }
    &mut slices[i]
}

/// 1 µs to 60 s, two significant digits: small enough to keep one per slice.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2)
        .unwrap_or_else(|e| unreachable!("static histogram bounds are valid: {e}"))
}

impl Workload {
    /// Starts the worker threads on `db`'s subscriber table.
    pub fn start(&self, db: &Database) -> RunningWorkload {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicUsize::new(0));
        let counters: Arc<Vec<CachePadded<AtomicU64>>> = Arc::new(
            (0..self.threads)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        );
        let keys = self.keys.sample(1 << 18, 42);
        let epoch = Instant::now();
        let workers = (0..self.threads)
            .map(|i| {
                let session = db.session(SessionInfo::new(format!("worker{i}"), "service", None));
                let (stop, phase, counters, keys) = (
                    Arc::clone(&stop),
                    Arc::clone(&phase),
                    Arc::clone(&counters),
                    Arc::clone(&keys),
                );
                let shape = Shape {
                    read_ratio: self.read_ratio,
                    think: Duration::from_micros(self.think_us),
                    epoch,
                };
                std::thread::spawn(move || {
                    worker(i, &session, &shape, &keys, &stop, &phase, &counters[i])
                })
            })
            .collect();
        RunningWorkload {
            stop,
            phase,
            counters,
            workers,
            epoch,
        }
    }
}

/// What each worker does besides its keys.
struct Shape {
    read_ratio: f64,
    think: Duration,
    /// When the workload started: slices count from here.
    epoch: Instant,
}

fn worker(
    index: usize,
    session: &kirikae_engine::Session,
    shape: &Shape,
    keys: &[Key],
    stop: &AtomicBool,
    phase: &AtomicUsize,
    counter: &AtomicU64,
) -> WorkloadReport {
    let mut rng = Rng::new(index as u64 + 1);
    let mut at = rng.below(keys.len() as u64) as usize;
    let mut report = WorkloadReport::new();
    let db = session.database();
    while !stop.load(Ordering::Relaxed) {
        at = (at + 1) % keys.len();
        let key = &keys[at];
        if rng.chance(shape.read_ratio) {
            let row = session.get(SUBSCRIBER_TABLE, key);
            debug_assert!(matches!(row, Ok(Some(_))), "subscriber {key} readable");
            report.reads += 1;
        } else {
            // The hold counters are read around the whole call, so that a write held
            // at a switch is known as such, whatever the restructure's timers say.
            let holds = db.writer_holds();
            let started = Instant::now();
            let changes = [
                ("balance", Value::Int(rng.below(100_000) as i64)),
                (
                    "last_seen",
                    Value::Int(shape.epoch.elapsed().as_millis() as i64),
                ),
            ];
            loop {
                match session.update_columns(SUBSCRIBER_TABLE, key, &changes) {
                    Ok(_) => break,
                    Err(e) if e.is_retryable() && !stop.load(Ordering::Relaxed) => {
                        report.retries += 1
                    }
                    Err(e) => {
                        // A stopped run may abandon a retry; anything else is a bug.
                        assert!(e.is_retryable(), "update of {key} failed: {e}");
                        break;
                    }
                }
            }
            let us = (started.elapsed().as_micros() as u64).max(1);
            if holds.overlapped(&db.writer_holds()) {
                report.held_write_us_max = report.held_write_us_max.max(us);
                report.held_writes += 1;
            }
            let p = phase.load(Ordering::Relaxed).min(PHASES - 1);
            report.write_latency_us[p].saturating_record(us);
            let i = (started.duration_since(shape.epoch).as_nanos() / SLICE.as_nanos()) as usize;
            slice(&mut report.slices, i).saturating_record(us);
            report.writes += 1;
        }
        counter.fetch_add(1, Ordering::Relaxed);
        if !shape.think.is_zero() {
            std::thread::sleep(shape.think);
        }
    }
    report
}

impl RunningWorkload {
    /// Operations completed so far, all threads.
    pub fn ops(&self) -> u64 {
        self.counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Tags measurements from now on with `phase` (`< PHASES`).
    pub fn set_phase(&self, phase: usize) {
        debug_assert!(phase < PHASES);
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// When the workload started (slices count from here).
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Stops the threads and merges what they measured.
    pub fn stop(self) -> WorkloadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = WorkloadReport::new();
        for w in self.workers {
            match w.join() {
                Ok(r) => total.merge(&r),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        total
    }
}

/// Restructure plans for the subscriber table, by the names `kirikae bench restructure
/// --plan` takes. Every one keeps `imsi`, `balance` and `last_seen`, so the workload
/// runs unchanged before and after the switch.
pub fn subscriber_plan(name: &str) -> Option<kirikae_restructure::Plan> {
    use kirikae_restructure::{Conversion, Plan, Step};
    let add = Step::AddColumn {
        column: Column::new("plan_id", ColumnType::Int).default_value(0),
    };
    let msisdn = Step::ChangeType {
        column: "msisdn".into(),
        conversion: Conversion::TextToInt,
    };
    Some(Plan::new(match name {
        "demo" => vec![add, msisdn],
        "add-column" => vec![add],
        "msisdn-to-int" => vec![msisdn],
        "drop-column" => vec![Step::DropColumn {
            name: "region".into(),
        }],
        "rename-column" => vec![Step::RenameColumn {
            from: "status".into(),
            to: "state".into(),
        }],
        "reorganize" => vec![Step::Reorganize],
        _ => return None,
    }))
}

/// The names [`subscriber_plan`] knows.
pub const PLAN_NAMES: [&str; 6] = [
    "demo",
    "add-column",
    "msisdn-to-int",
    "drop-column",
    "rename-column",
    "reorganize",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_fit_the_schema_and_are_about_100_bytes() {
        let schema = subscriber_schema();
        let row = subscriber_row(123_456);
        schema.validate_row(SUBSCRIBER_TABLE, &row).expect("valid");
        let bytes = postcard::to_stdvec(&row).expect("encodes").len();
        assert!((50..=120).contains(&bytes), "{bytes} bytes");
    }

    #[test]
    fn the_hot_set_takes_most_accesses() {
        let keys = KeyChooser::hot_set(100_000);
        let mut rng = Rng::new(7);
        let hot = (0..100_000).filter(|_| keys.next(&mut rng) < 1_000).count();
        assert!((89_000..=92_000).contains(&hot), "{hot}");
    }

    #[test]
    fn a_short_run_reads_and_writes() {
        let db = Database::new();
        load_subscribers(&db, 1_000, &|_| {}).expect("load");
        let run = Workload {
            threads: 2,
            read_ratio: 0.5,
            keys: KeyChooser::uniform(1_000),
            think_us: 0,
        }
        .start(&db);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let report = run.stop();
        assert!(report.reads > 0 && report.writes > 0);
        assert_eq!(report.write_latency_us[0].len(), report.writes);
        let sliced: u64 = report.slices.iter().map(Histogram::len).sum();
        assert_eq!(sliced, report.writes);
        assert_eq!(report.held_writes, 0, "nothing held the writers");
    }

    fn wait_for_ops(run: &RunningWorkload, at_least: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while run.ops() < at_least {
            assert!(Instant::now() < deadline, "the workload made no progress");
            std::thread::yield_now();
        }
    }

    #[test]
    fn writes_held_by_a_hold_are_counted_as_held() {
        let db = Database::new();
        load_subscribers(&db, 1_000, &|_| {}).expect("load");
        // The writer must reach a write while the hold is on; on a busy machine it may
        // not be scheduled during a short hold, so try a few times.
        for _ in 0..20 {
            let run = Workload {
                threads: 1,
                read_ratio: 0.0,
                keys: KeyChooser::uniform(1_000),
                think_us: 0,
            }
            .start(&db);
            wait_for_ops(&run, 100);
            let hold = db.hold_writers(SUBSCRIBER_TABLE).expect("hold");
            std::thread::sleep(Duration::from_millis(2));
            hold.release();
            let released_at = run.ops();
            wait_for_ops(&run, released_at + 10);
            let report = run.stop();
            if report.held_writes > 0 {
                assert!(report.held_write_us_max >= 1);
                assert!(
                    report.held_writes < report.writes,
                    "most writes were not held"
                );
                return;
            }
        }
        panic!("no write overlapped any of 20 holds");
    }
}
