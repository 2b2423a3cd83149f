//! Async transactions applied in parallel lanes by key (seed 000
//! `000_dba34147e3f02a99.txt` §4.1–4.2: an async operation keeps only its key's
//! order, an ordered one the primary's whole order, which is why only async ones may
//! be applied in parallel).
//!
//! The applier gathers a **run**: consecutive async transactions of a batch, each
//! placed in the lane of the run's last transaction on any of its keys, or, if the
//! run has not touched them yet, in the lane with the least to do. One whose keys
//! were last touched in several lanes is a **meeting** of them: each finishes what
//! comes before it in sequence order, the lowest applies it while the others wait,
//! then all go on; its keys are the lowest lane's from then on.
//!
//! Placing by what the run touched, rather than by a hash of each key, is what makes
//! the lanes worth having: a telecom charge updates a subscriber and inserts a
//! billing record, and two hashed keys fall in different lanes half the time (a
//! meeting, which costs both lanes a wait, every other transaction with 2 lanes).
//! Keys new to the run have no order to keep, so such a transaction meets nobody.
//!
//! Anything else ends the run (an ordered or sync transaction, a commit or abort, a
//! catalog change, a row that does not fit its table): the run is applied first,
//! then it alone. So two transactions on the same key are applied in the primary's
//! order, and nothing crosses an ordered transaction either way.
//!
//! Lane 0 is the applier's own thread; the others are threads of their own. Each is
//! handed its share of a run in chunks of [`CHUNK_STEPS`] while the applier is
//! still gathering the run, so they apply while lane 0 places (the hand-off holds
//! nothing but the run's own steps, already in memory; the applier waits for every
//! lane before it answers). A small run is not worth waking a thread for and is
//! applied on lane 0 alone, in sequence order.
//!
//! The tables have no secondary unique index, so transactions on different keys
//! never conflict: a run's outcome does not depend on how its lanes interleave.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use kirikae_engine::{Database, Operation, Schema, Session, SessionInfo, Value};
use parking_lot::{Condvar, Mutex};
use smallvec::SmallVec;

use super::{apply, prefetch};
use crate::error::{ReplicateError, Result};
use crate::seq::Seq;

/// Runs shorter than this are applied on the applier's thread alone by default:
/// waking another costs more than it saves.
pub const PARALLEL_RUN_TXNS_MIN: usize = 16;

/// How much a job placed on lane 0 counts, in sixteenths of one placed on another
/// lane, when new keys go to the idlest lane (see [`Lanes::gather`]), at first and
/// at most and least. Lane 0's thread also places the run (and, live, reads the
/// stream): its share is smaller, by as much as makes the lanes finish together
/// (see [`Lanes::balance`]).
const LANE_0_WEIGHT_START: usize = 32;
const LANE_0_WEIGHT_MIN: usize = 16;
const LANE_0_WEIGHT_MAX: usize = 96;

/// A lane's steps are handed to its thread as soon as this many are gathered (once
/// the run is long enough to be applied in parallel): a few µs of hand-off per
/// chunk, and the lane starts while the rest of the run is placed.
pub const CHUNK_STEPS: usize = 256;

/// Runs are applied once this long. The keys a run has placed are looked up for
/// every transaction gathered: a run of 4 096 charges places ~8 000 keys, whose
/// table stays in a core's cache; at 64 Ki transactions the lookups missed it and
/// placing took 0.25 µs more per transaction (a restart's replay, 587 000 charges
/// and updates, 2 lanes). Each run ends with the lanes waiting for each other,
/// which is what a longer run saves.
pub const RUN_TXNS_MAX: usize = 1 << 13;

/// Lanes at most ([`BackupConfig::apply_lanes`](crate::BackupConfig::apply_lanes)).
pub const APPLY_LANES_MAX: usize = 64;

/// An async transaction of a run.
pub(super) struct Job {
    pub seq: Seq,
    pub operations: Vec<Operation>,
    /// The primary wants `Applied` for it.
    pub verify: bool,
}

/// What became of a job (a failure may also be a meeting's that was not kept).
pub(super) struct Done {
    pub seq: Seq,
    pub verify: bool,
    pub outcome: Outcome,
}

pub(super) enum Outcome {
    /// Committed, with its response digests.
    Applied(Vec<u64>),
    /// Could not be applied: the failing operation and why (reported to the primary).
    Rejected(usize, ReplicateError),
    /// Not applied: its commit failed, or its lanes never met. The applier stops
    /// (the connection is closed) and the transaction stays unresolved.
    Failed(ReplicateError),
}

/// Applies one job on `session`, committing it. A panic (an engine bug) fails the
/// job instead of the lane's thread, which other lanes may be waiting for.
fn run_job(session: &Session, job: Job) -> Done {
    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        match apply(session, None, job.operations, job.verify) {
            Ok((txn, responses)) => match txn.commit() {
                Ok(()) => Outcome::Applied(responses),
                Err(e) => Outcome::Failed(ReplicateError::Engine(e)),
            },
            Err((at, e)) => Outcome::Rejected(at, e),
        }
    }));
    Done {
        seq: job.seq,
        verify: job.verify,
        outcome: applied.unwrap_or_else(|_| {
            Outcome::Failed(protocol(format!("applying {} panicked", job.seq)))
        }),
    }
}

fn protocol(reason: String) -> ReplicateError {
    ReplicateError::Protocol { reason }
}

/// How long a lane waits for the others at a meeting, at most: far beyond any
/// transaction's lock waits, so reaching it means a lane is stuck.
const MEETING_WAIT_MAX: Duration = Duration::from_secs(60);

/// How long a lane spins at a meeting before it parks.
const MEETING_SPIN: Duration = Duration::from_micros(50);

/// How often a lane waiting at a meeting looks whether the run was halted.
const HALT_CHECK_EVERY: Duration = Duration::from_millis(10);

/// Where the lanes of a transaction whose keys fall in several of them meet: each
/// finishes what comes before it, the lowest then applies it while the others wait,
/// and all go on.
struct Meeting {
    seq: Seq,
    /// Lanes arrived besides the one applying it, and whether it is applied.
    state: Mutex<(usize, bool)>,
    changed: Condvar,
    others: usize,
}

impl Meeting {
    /// Waits until `ready` holds of the state; an error if the run is halted or
    /// `MEETING_WAIT_MAX` passes first (`what` says what was awaited).
    fn wait(
        &self,
        halted: &AtomicBool,
        what: &str,
        ready: impl Fn(&(usize, bool)) -> bool,
    ) -> Result<()> {
        // The other lanes are usually a few transactions away: a short spin saves
        // the wake-up of a parked thread (tens of µs on a small VM).
        let spin_until = Instant::now() + MEETING_SPIN;
        loop {
            if ready(&self.state.lock()) {
                return Ok(());
            }
            if Instant::now() >= spin_until || halted.load(Ordering::Relaxed) {
                break;
            }
            std::hint::spin_loop();
        }
        let deadline = Instant::now() + MEETING_WAIT_MAX;
        let mut state = self.state.lock();
        while !ready(&state) {
            if halted.load(Ordering::Acquire) {
                return Err(protocol(format!(
                    "apply lanes: halted while {what} {}",
                    self.seq
                )));
            }
            if Instant::now() >= deadline {
                return Err(protocol(format!(
                    "apply lanes: {} s {what} {}",
                    MEETING_WAIT_MAX.as_secs(),
                    self.seq
                )));
            }
            self.changed.wait_for(&mut state, HALT_CHECK_EVERY);
        }
        Ok(())
    }

    /// The lane applying it: waits for the others to arrive.
    fn wait_for_others(&self, halted: &AtomicBool) -> Result<()> {
        self.wait(halted, "waiting for the lanes spanned by", |s| {
            s.0 >= self.others
        })
    }

    /// The lane applying it is done.
    fn applied(&self) {
        self.state.lock().1 = true;
        self.changed.notify_all();
    }

    /// Another lane it spans: arrives, and waits until it is applied.
    fn arrive_and_wait(&self, halted: &AtomicBool) -> Result<()> {
        self.state.lock().0 += 1;
        self.changed.notify_all();
        self.wait(halted, "waiting for", |s| s.1)
    }
}

/// One step of a lane's share of a run, in sequence order.
enum Step {
    /// Apply `job`; with a meeting, once the other lanes it spans are there.
    Apply(Job, Option<Arc<Meeting>>),
    /// Another lane applies a transaction spanning this one: wait for it there.
    Meet(Arc<Meeting>),
}

/// Takes a lane's steps in order on `session`, adding what became of its jobs to
/// `done`. At a failure (a commit that failed, a meeting not kept) it halts the run:
/// every lane stops before its next step, and what none applied stays unresolved
/// (the primary sends it again on the next connection).
fn run_steps(session: &Session, steps: Vec<Step>, halted: &AtomicBool, done: &mut Vec<Done>) {
    let mut steps = steps.into_iter();
    loop {
        let upcoming = steps.as_slice();
        prefetch::ahead(session.database(), |i| match upcoming.get(i)? {
            Step::Apply(job, _) => Some(&job.operations),
            Step::Meet(_) => None,
        });
        let Some(step) = steps.next() else {
            break;
        };
        if halted.load(Ordering::Acquire) {
            return;
        }
        let failed = match step {
            Step::Apply(job, None) => {
                done.push(run_job(session, job));
                None
            }
            Step::Apply(job, Some(meeting)) => {
                let seq = job.seq;
                let met = meeting.wait_for_others(halted);
                if met.is_ok() {
                    done.push(run_job(session, job));
                }
                // Halted before the others are let go: none of them may go past a
                // transaction of its keys that was not applied.
                if met.is_err() || ends_in_failure(done) {
                    halted.store(true, Ordering::Release);
                }
                meeting.applied();
                met.err().map(|e| (seq, e))
            }
            Step::Meet(meeting) => meeting
                .arrive_and_wait(halted)
                .err()
                .map(|e| (meeting.seq, e)),
        };
        if let Some((seq, e)) = failed {
            done.push(Done {
                seq,
                verify: false,
                outcome: Outcome::Failed(e),
            });
        }
        if ends_in_failure(done) {
            halted.store(true, Ordering::Release);
            return;
        }
    }
}

/// Whether the last outcome is a failure.
fn ends_in_failure(done: &[Done]) -> bool {
    matches!(
        done.last(),
        Some(Done {
            outcome: Outcome::Failed(_),
            ..
        })
    )
}

/// What a lane's thread answers at the end of a run.
struct Answer {
    /// What became of its jobs, in sequence order.
    done: Vec<Done>,
    /// How long it waited for steps since its last answer (lane 0 was reading,
    /// placing, or applying its own share at the end; or the stream was idle).
    idle: Duration,
}

/// What the applier hands a lane's thread.
enum Handed {
    /// The next of its steps in the run.
    Steps(Vec<Step>),
    /// The run is all handed: answer with what became of its jobs.
    EndOfRun,
}

/// A lane on a thread of its own.
struct Worker {
    /// Its session, shared with its thread: a backup's write fence lets it commit
    /// by the address of its identity, which must not move.
    session: Arc<Session>,
    steps: Option<Sender<Handed>>,
    done: Receiver<Answer>,
    thread: Option<JoinHandle<()>>,
    /// It was handed steps of the run being gathered.
    in_run: bool,
}

/// The lanes of one applier, and the run being gathered.
pub(super) struct Lanes {
    workers: Vec<Worker>,
    /// The run: each lane's steps in sequence order.
    run: Vec<Vec<Step>>,
    /// Jobs in the run.
    run_len: usize,
    /// Shorter runs are applied on lane 0 alone.
    parallel_run_min: usize,
    /// Set by a lane that failed: the others stop (shared with the lanes' threads).
    halted: Arc<AtomicBool>,
    /// The schemas the run's keys were taken with (a catalog change ends a run, so
    /// they stay right for it).
    schemas: Vec<(String, Option<Arc<Schema>>)>,
    /// The lane of the run's last transaction on each key it touched, by a hash of
    /// table and key. Two keys with the same hash count as one: at worst a
    /// transaction waits for one it did not need to, never the other way round.
    placed: HashMap<u64, usize, BuildHasherDefault<PlacementHasher>>,
    /// Transactions each lane applies in the run (for placing new keys).
    load: Vec<usize>,
    /// Meetings gathered since [`take_meetings`](Lanes::take_meetings).
    meetings: u64,
    /// A lane's thread was gone when handed steps of this run: it halts.
    lane_lost: bool,
    /// What a job placed on lane 0 counts, in sixteenths (see [`LANE_0_WEIGHT_START`]).
    lane_0_weight: usize,
    /// Steps a lane is handed at a time ([`CHUNK_STEPS`]).
    chunk_steps: usize,
    /// Longest run ([`RUN_TXNS_MAX`]).
    run_txns_max: usize,
}

impl Lanes {
    /// `lanes` lanes (1: none in parallel; at most [`APPLY_LANES_MAX`]), the extra
    /// ones applying through clones of `session`; runs of fewer than
    /// `parallel_run_min` transactions are applied on lane 0 alone.
    pub fn new(session: &Session, lanes: usize, parallel_run_min: usize) -> Result<Lanes> {
        let lanes = lanes.clamp(1, APPLY_LANES_MAX);
        let halted = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::with_capacity(lanes - 1);
        for lane in 1..lanes {
            // Unbounded, but it only ever holds steps of the run, which the applier
            // has in memory either way: at most `RUN_TXNS_MAX` transactions'.
            let (steps_tx, steps_rx) = crossbeam::channel::unbounded::<Handed>();
            let (done_tx, done_rx) = crossbeam::channel::bounded::<Answer>(1);
            let session = Arc::new(session.clone());
            let own = Arc::clone(&session);
            let halted = Arc::clone(&halted);
            let thread = std::thread::Builder::new()
                .name(format!("apply-lane-{lane}"))
                .spawn(move || {
                    let mut done = Vec::new();
                    let mut idle = Duration::ZERO;
                    // Waiting for the first run is not idling: the backup starts.
                    let mut answered = false;
                    loop {
                        let waiting = Instant::now();
                        let Ok(handed) = steps_rx.recv() else { break };
                        // From its last answer on, a lane waits for lane 0 (to read,
                        // place, or end the run), or for the stream.
                        if answered {
                            idle += waiting.elapsed();
                        }
                        match handed {
                            Handed::Steps(steps) => run_steps(&own, steps, &halted, &mut done),
                            Handed::EndOfRun => {
                                answered = true;
                                let answer = Answer {
                                    done: std::mem::take(&mut done),
                                    idle: std::mem::take(&mut idle),
                                };
                                if done_tx.send(answer).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                })
                .map_err(|e| {
                    protocol(format!("apply lane {lane}: cannot start its thread: {e}"))
                })?;
            workers.push(Worker {
                session,
                steps: Some(steps_tx),
                done: done_rx,
                thread: Some(thread),
                in_run: false,
            });
        }
        Ok(Lanes {
            workers,
            run: (0..lanes).map(|_| Vec::new()).collect(),
            run_len: 0,
            parallel_run_min,
            halted,
            schemas: Vec::new(),
            placed: HashMap::default(),
            load: vec![0; lanes],
            meetings: 0,
            lane_lost: false,
            lane_0_weight: LANE_0_WEIGHT_START,
            chunk_steps: CHUNK_STEPS,
            run_txns_max: RUN_TXNS_MAX,
        })
    }

    /// One lane, the applier's own thread: everything in sequence.
    pub fn single() -> Lanes {
        Lanes {
            workers: Vec::new(),
            run: vec![Vec::new()],
            run_len: 0,
            parallel_run_min: PARALLEL_RUN_TXNS_MIN,
            halted: Arc::new(AtomicBool::new(false)),
            schemas: Vec::new(),
            placed: HashMap::default(),
            load: vec![0],
            meetings: 0,
            lane_lost: false,
            lane_0_weight: LANE_0_WEIGHT_START,
            chunk_steps: CHUNK_STEPS,
            run_txns_max: RUN_TXNS_MAX,
        }
    }

    /// The identities the lanes' threads commit with.
    pub fn sessions(&self) -> impl Iterator<Item = &SessionInfo> {
        self.workers.iter().map(|w| w.session.info())
    }

    /// How many lanes.
    pub fn count(&self) -> usize {
        self.run.len()
    }

    /// Whether the run is as long as a run gets ([`RUN_TXNS_MAX`]): apply it.
    pub fn run_full(&self) -> bool {
        self.run_len >= self.run_txns_max
    }

    /// Hands lanes `chunk_steps` steps at a time and ends runs at `run_txns_max`
    /// transactions (each at least 1) instead of [`CHUNK_STEPS`] and
    /// [`RUN_TXNS_MAX`]: tests make both small so that short histories cross them.
    pub fn set_handoff(&mut self, chunk_steps: usize, run_txns_max: usize) {
        self.chunk_steps = chunk_steps.max(1);
        self.run_txns_max = run_txns_max.max(1);
    }

    /// Adds the async transaction `job` to the run: to the lane of the run's last
    /// transaction on any of its keys, or, if those are in several lanes, to the
    /// lowest of them with a meeting of them all, or, if the run has not touched
    /// its keys, to the lane with the least to do. Gives it back if its keys cannot
    /// be told (a catalog change, a table not there): apply the run, then it alone.
    pub fn gather(&mut self, database: &Database, job: Job) -> std::result::Result<(), Job> {
        debug_assert!(self.count() > 1, "a single lane gathers no run");
        let Some(keys) = self.key_hashes(database, &job.operations) else {
            return Err(job);
        };
        let mut lanes = keys
            .iter()
            .filter_map(|h| self.placed.get(h))
            .fold(0u64, |mask, &lane| mask | 1 << lane);
        if lanes == 0 {
            let idlest = (0..self.count())
                .min_by_key(|&l| self.load[l] * if l == 0 { self.lane_0_weight } else { 16 })
                .unwrap_or(0);
            lanes = 1 << idlest;
        }
        let first = lanes.trailing_zeros() as usize;
        for h in keys {
            self.placed.insert(h, first);
        }
        self.load[first] += 1;
        let others = (lanes.count_ones() - 1) as usize;
        if others == 0 {
            self.run[first].push(Step::Apply(job, None));
        } else {
            self.meetings += 1;
            let meeting = Arc::new(Meeting {
                seq: job.seq,
                state: Mutex::new((0, false)),
                changed: Condvar::new(),
                others,
            });
            for lane in (first + 1..self.count()).filter(|l| lanes & (1 << l) != 0) {
                self.run[lane].push(Step::Meet(Arc::clone(&meeting)));
            }
            self.run[first].push(Step::Apply(job, Some(meeting)));
        }
        self.run_len += 1;
        if self.run_len >= self.parallel_run_min {
            for lane in 1..self.count() {
                if self.run[lane].len() >= self.chunk_steps {
                    self.hand(lane);
                }
            }
        }
        Ok(())
    }

    /// Hands lane `lane`'s (≥ 1) steps gathered so far to its thread.
    fn hand(&mut self, lane: usize) {
        if self.run[lane].is_empty() {
            return;
        }
        // Room for the next chunk at once: growing a vector step by step from empty
        // cost placing a third of its time (stores to memory not yet in the cache).
        let room = self.chunk_steps;
        let steps = std::mem::replace(&mut self.run[lane], Vec::with_capacity(room));
        if !self.workers.iter().any(|w| w.in_run) {
            // The run's first hand-off: a failure of the run before has been
            // answered for, and must not stop this one.
            self.halted.store(false, Ordering::Release);
        }
        let worker = &mut self.workers[lane - 1];
        worker.in_run = true;
        let sent = worker
            .steps
            .as_ref()
            .map(|tx| tx.send(Handed::Steps(steps)));
        if !matches!(sent, Some(Ok(()))) {
            // The lane's thread is gone (it catches its jobs' panics, so only with
            // the process): the run halts.
            self.lane_lost = true;
            self.halted.store(true, Ordering::Release);
        }
    }

    /// Forgets the run gathered so far without applying it (what a failure left
    /// behind; see `Applier::connected`).
    pub fn discard_run(&mut self) {
        debug_assert!(
            !self.workers.iter().any(|w| w.in_run),
            "a run partly handed to its lanes is applied, never discarded"
        );
        for lane in &mut self.run {
            lane.clear();
        }
        self.run_len = 0;
        self.meetings = 0;
        self.placed.clear();
        self.load.iter_mut().for_each(|n| *n = 0);
    }

    /// The meetings gathered since the last call (a run applied on lane 0 alone
    /// has none: call this only after a run applied in parallel).
    pub fn take_meetings(&mut self) -> u64 {
        std::mem::take(&mut self.meetings)
    }

    /// Applies the run gathered so far (lanes in parallel, each in sequence order) on
    /// `session` and the lanes' own; returns what became of each job, in sequence
    /// order, and whether the lanes ran in parallel. After a failure (the run
    /// halts) some jobs have no outcome: they were not applied.
    pub fn apply_run(&mut self, session: &Session) -> (Vec<Done>, bool) {
        self.schemas.clear();
        self.placed.clear();
        self.load.iter_mut().for_each(|n| *n = 0);
        if self.run_len == 0 {
            return (Vec::new(), false);
        }
        let run_len = std::mem::take(&mut self.run_len);
        let mut done = Vec::with_capacity(run_len);
        if run_len < self.parallel_run_min {
            debug_assert!(
                !self.workers.iter().any(|w| w.in_run),
                "steps are handed only once a run is long enough for the lanes"
            );
            // In sequence order on this thread alone: no meeting to wait at.
            self.meetings = 0;
            let mut jobs: Vec<Job> = (self.run.iter_mut().flat_map(std::mem::take))
                .filter_map(|step| match step {
                    Step::Apply(job, _) => Some(job),
                    Step::Meet(_) => None,
                })
                .collect();
            jobs.sort_unstable_by_key(|j| j.seq);
            let mut jobs = jobs.into_iter();
            loop {
                let upcoming = jobs.as_slice();
                prefetch::ahead(session.database(), |i| Some(&upcoming.get(i)?.operations));
                let Some(job) = jobs.next() else {
                    break;
                };
                done.push(run_job(session, job));
                if ends_in_failure(&done) {
                    break;
                }
            }
            return (done, false);
        }
        if !self.workers.iter().any(|w| w.in_run) {
            self.halted.store(false, Ordering::Release);
        }
        for lane in 1..self.count() {
            self.hand(lane);
        }
        if std::mem::take(&mut self.lane_lost) {
            done.push(Done {
                seq: Seq::ZERO,
                verify: false,
                outcome: Outcome::Failed(protocol("an apply lane's thread is gone".into())),
            });
        }
        for worker in self.workers.iter().filter(|w| w.in_run) {
            if let Some(tx) = worker.steps.as_ref() {
                // A lane gone is found below, when its answer does not come.
                let _ = tx.send(Handed::EndOfRun);
            }
        }
        let steps = std::mem::take(&mut self.run[0]);
        run_steps(session, steps, &self.halted, &mut done);
        let lane_0_done = Instant::now();
        let mut lanes_idle = Vec::with_capacity(self.workers.len());
        for worker in self.workers.iter_mut().filter(|w| w.in_run) {
            worker.in_run = false;
            match worker.done.recv() {
                Ok(answer) => {
                    done.extend(answer.done);
                    lanes_idle.push(answer.idle);
                }
                Err(_) => done.push(Done {
                    seq: Seq::ZERO,
                    verify: false,
                    outcome: Outcome::Failed(protocol(
                        "an apply lane's thread ended with its jobs".into(),
                    )),
                }),
            }
        }
        self.balance(lane_0_done.elapsed(), &lanes_idle);
        // Every lane's share of a run that was halted is cleared for the next.
        for steps in &mut self.run {
            steps.clear();
        }
        // Each lane's answers are in sequence order: a stable sort merges them.
        done.sort_by_key(|d| d.seq);
        (done, true)
    }

    /// After a run in parallel: lane 0 waited `lane_0_waited` for the other lanes at
    /// its end, and they waited `lanes_idle` for steps since the run before.
    /// Whichever waited more had too little to do; lane 0's share of the next runs
    /// is moved a step that way. What lane 0 does besides applying (placing,
    /// reading the stream) and how fast each lane applies depend on the machine and
    /// the traffic, so the share is found rather than fixed. A pause in the stream
    /// counts as the other lanes' idling: it moves the share one step per run at
    /// most, and the runs of a backlog move it back.
    fn balance(&mut self, lane_0_waited: Duration, lanes_idle: &[Duration]) {
        let Some(&idle) = lanes_idle.iter().max() else {
            return;
        };
        let step = 2;
        self.lane_0_weight = if lane_0_waited > idle {
            self.lane_0_weight
                .saturating_sub(step)
                .max(LANE_0_WEIGHT_MIN)
        } else {
            (self.lane_0_weight + step).min(LANE_0_WEIGHT_MAX)
        };
    }

    /// The hashes of the keys `operations` touch (none for a catalog change or a
    /// row that does not fit its table).
    fn key_hashes(
        &mut self,
        database: &Database,
        operations: &[Operation],
    ) -> Option<SmallVec<[u64; 4]>> {
        let mut keys = SmallVec::new();
        for op in operations {
            match op {
                Operation::Insert { table, row } => {
                    let schema = self.schema(database, table, row)?;
                    keys.push(key_hash(table, row_key(schema, row)));
                }
                // An update may give the record a new key: both keys count.
                Operation::Update { table, key, row } => {
                    keys.push(key_hash(table, key.values().iter()));
                    let schema = self.schema(database, table, row)?;
                    if !schema.key_matches(row, key) {
                        keys.push(key_hash(table, row_key(schema, row)));
                    }
                }
                Operation::Delete { table, key } => keys.push(key_hash(table, key.values().iter())),
                Operation::Ddl { .. } => return None,
            }
        }
        (!keys.is_empty()).then_some(keys)
    }

    /// The schema of `table`, if `row` fits it (None if there is no such table or
    /// the row does not fit: the transaction is then applied alone, and rejected
    /// there). Borrowed from the run's cache: placing an operation takes no
    /// reference count.
    fn schema(&mut self, database: &Database, table: &str, row: &[Value]) -> Option<&Schema> {
        let at = match self.schemas.iter().position(|(t, _)| t == table) {
            Some(at) => at,
            None => {
                let schema = database.table(table).ok().map(|t| Arc::clone(t.schema()));
                self.schemas.push((table.to_owned(), schema));
                self.schemas.len() - 1
            }
        };
        let schema = self.schemas[at].1.as_deref()?;
        (row.len() == schema.columns().len()).then_some(schema)
    }
}

/// The primary-key values of `row`, which fits `schema`.
fn row_key<'r>(schema: &'r Schema, row: &'r [Value]) -> impl ExactSizeIterator<Item = &'r Value> {
    schema.primary_key().iter().map(move |&i| &row[i])
}

/// A hash of the key made of `values` in `table`: equal keys hash equal, whether
/// taken from a [`Key`](kirikae_engine::Key) or from a row, without building one.
fn key_hash<'v>(table: &str, values: impl ExactSizeIterator<Item = &'v Value>) -> u64 {
    let mut hasher = PlacementHasher::default();
    table.hash(&mut hasher);
    hasher.write_usize(values.len());
    for v in values {
        v.hash(&mut hasher);
    }
    hasher.finish()
}

/// The hasher of placement: FxHash's multiply-rotate round, finished by a 64-bit
/// mix so that the map's bucket bits depend on every input bit. A few ns per key
/// where SipHash took most of the time spent placing; placement needs no defence
/// against chosen collisions, which cost a wait at worst, never order.
#[derive(Clone, Copy, Default)]
struct PlacementHasher(u64);

impl PlacementHasher {
    fn add(&mut self, word: u64) {
        const K: u64 = 0xf135_7aea_2e62_a9c5;
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(K);
    }
}

impl Hasher for PlacementHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            self.add(u64::from_le_bytes(word));
        }
        let rest = words.remainder();
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // murmur3's fmix64.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        // Lanes dropped with a run partly handed to them (an unwinding applier):
        // nothing could record what they applied, so they stop before their next
        // step rather than apply work a later replay would apply again, and a lane
        // waiting at a meeting that lane 0 will never reach stops at once rather
        // than after `MEETING_WAIT_MAX`.
        self.halted.store(true, Ordering::Release);
        for worker in &mut self.workers {
            drop(worker.steps.take());
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use kirikae_engine::{
        Column, ColumnType, Database, EngineConfig, Key, Operation, Schema, SessionInfo, Value,
    };

    use super::{key_hash, row_key, Job, Lanes};
    use crate::seq::Seq;

    fn insert(seq: u64, k: i64) -> Job {
        Job {
            seq: Seq(seq),
            operations: vec![Operation::Insert {
                table: "t".into(),
                row: vec![Value::Int(k), Value::Int(0)].into(),
            }],
            verify: false,
        }
    }

    /// Lanes dropped with a run half handed (an applier unwinding) stop before their
    /// next step: nothing would record what they applied, and a replay would apply
    /// it again. Lane 1 is held inside its first job by a record lock until the
    /// drop has begun; its second job must then never be applied.
    #[test]
    fn lanes_dropped_with_a_run_handed_stop_before_their_next_step() {
        let db = Database::with_config(EngineConfig {
            // Longer than the test: lane 1 waits for the blocker, never times out.
            lock_timeout: Duration::from_secs(120),
        });
        let schema = Schema::new(
            vec![
                Column::new("k", ColumnType::Int),
                Column::new("v", ColumnType::Int),
            ],
            &["k"],
        )
        .expect("a valid schema");
        db.create_table("t", schema).expect("table t");
        let blocker = db.session(SessionInfo::new("test", "test", None));
        let mut held = blocker.begin();
        held.insert("t", vec![Value::Int(2), Value::Int(9)])
            .expect("the blocker's insert");

        let session = db.session(SessionInfo::new("applier", "applier", None));
        let mut lanes = Lanes::new(&session, 2, 1).expect("lanes");
        lanes.set_handoff(1, 1_000);
        // Key 1 goes to lane 0, which never runs (the run is never applied); keys 2
        // and 3 to lane 1, each handed as soon as placed.
        for job in [insert(1, 1), insert(2, 2), insert(3, 3)] {
            assert!(lanes.gather(&db, job).is_ok(), "placed");
        }
        let halted = Arc::clone(&lanes.halted);
        let dropping = std::thread::spawn(move || drop(lanes));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !halted.load(Ordering::Acquire) {
            assert!(
                Instant::now() < deadline,
                "dropping the lanes did not halt them within 30 s"
            );
            std::thread::yield_now();
        }
        held.rollback();
        dropping
            .join()
            .expect("the drop returns once lane 1 is done");
        let get = |k: i64| {
            session
                .get("t", &Key::single(Value::Int(k)))
                .expect("a read")
        };
        assert!(
            get(3).is_none(),
            "lane 1 applied a step after it was halted"
        );
        assert!(get(1).is_none(), "lane 0's share is never applied");
    }

    #[test]
    fn a_key_hashes_the_same_from_a_row_as_from_the_key_itself() {
        // The key's columns are not the row's first ones, nor in the row's order.
        let schema = Schema::new(
            vec![
                Column::new("balance", ColumnType::Int),
                Column::new("imsi", ColumnType::Text),
                Column::new("slot", ColumnType::Int),
            ],
            &["slot", "imsi"],
        )
        .expect("a valid schema");
        let row = [Value::Int(500), Value::from("440101234567"), Value::Int(3)];
        let key = Key::new(vec![Value::Int(3), Value::from("440101234567")]);
        let from_key = key_hash("subscriber", key.values().iter());
        assert_eq!(key_hash("subscriber", row_key(&schema, &row)), from_key);
        let other = Key::new(vec![Value::Int(4), Value::from("440101234567")]);
        assert_ne!(key_hash("subscriber", other.values().iter()), from_key);
        assert_ne!(key_hash("billing", key.values().iter()), from_key);
    }
}
