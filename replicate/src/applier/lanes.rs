//! Async transactions applied in parallel lanes by key (seed 000
//! `000_dba34147e3f02a99.txt` §4.1–4.2: an async operation keeps only its key's
//! order, an ordered one the primary's whole order, which is why only async ones may
//! be applied in parallel).
//!
//! The applier gathers a **run**: consecutive async transactions of a batch, each
//! placed in the lane its keys hash to. Anything else ends the run (an ordered or
//! sync transaction, a commit or abort, a catalog change, an async transaction whose
//! keys fall in several lanes): the run is applied first, the lanes in parallel and
//! each lane in sequence order, and the transaction that ended it then alone, as
//! before. So two transactions on the same key are applied in the primary's order,
//! and nothing crosses an ordered transaction either way.
//!
//! Lane 0 is the applier's own thread; the others are threads of their own, each
//! with one run's share at a time (a bounded hand-off: the applier waits for every
//! lane before it goes on). A small run is not worth waking a thread for and is
//! applied on lane 0 alone, which keeps the same per-key order.
//!
//! The tables have no secondary unique index, so transactions on different keys
//! never conflict: a run's outcome does not depend on how its lanes interleave.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::{Receiver, Sender};
use kirikae_engine::{Database, Key, Operation, Schema, Session, SessionInfo, Value};

use super::apply;
use crate::error::{ReplicateError, Result};
use crate::seq::Seq;

/// Runs shorter than this are applied on the applier's thread alone by default:
/// waking another costs more than it saves.
pub const PARALLEL_RUN_TXNS_MIN: usize = 16;

/// Lanes at most ([`BackupConfig::apply_lanes`](crate::BackupConfig::apply_lanes)).
pub const APPLY_LANES_MAX: usize = 64;

/// An async transaction of a run.
pub(super) struct Job {
    pub seq: Seq,
    pub operations: Vec<Operation>,
    /// The primary wants `Applied` for it.
    pub verify: bool,
}

/// What became of a job.
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
    /// The commit itself failed: the backup cannot go on.
    Failed(ReplicateError),
}

/// Applies one job on `session`, committing it.
fn run_job(session: &Session, job: Job) -> Done {
    let outcome = match apply(session, None, &job.operations) {
        Ok((txn, responses)) => match txn.commit() {
            Ok(()) => Outcome::Applied(responses),
            Err(e) => Outcome::Failed(ReplicateError::Engine(e)),
        },
        Err((at, e)) => Outcome::Rejected(at, e),
    };
    Done {
        seq: job.seq,
        verify: job.verify,
        outcome,
    }
}

/// A lane on a thread of its own.
struct Worker {
    /// Its session, shared with its thread: a backup's write fence lets it commit
    /// by the address of its identity, which must not move.
    session: Arc<Session>,
    jobs: Option<Sender<Vec<Job>>>,
    done: Receiver<Vec<Done>>,
    thread: Option<JoinHandle<()>>,
}

/// The lanes of one applier, and the run being gathered.
pub(super) struct Lanes {
    workers: Vec<Worker>,
    /// The run: each lane's jobs in sequence order.
    run: Vec<Vec<Job>>,
    /// Jobs in the run.
    run_len: usize,
    /// Shorter runs are applied on lane 0 alone.
    parallel_run_min: usize,
    /// The schemas the run's keys were taken with (a catalog change ends a run, so
    /// they stay right for it).
    schemas: Vec<(String, Option<Arc<Schema>>)>,
}

impl Lanes {
    /// `lanes` lanes (1: none in parallel; at most [`APPLY_LANES_MAX`]), the extra
    /// ones applying through clones of `session`; runs of fewer than
    /// `parallel_run_min` transactions are applied on lane 0 alone.
    pub fn new(session: &Session, lanes: usize, parallel_run_min: usize) -> Result<Lanes> {
        let lanes = lanes.clamp(1, APPLY_LANES_MAX);
        let mut workers = Vec::with_capacity(lanes - 1);
        for lane in 1..lanes {
            let (jobs_tx, jobs_rx) = crossbeam::channel::bounded::<Vec<Job>>(1);
            let (done_tx, done_rx) = crossbeam::channel::bounded::<Vec<Done>>(1);
            let session = Arc::new(session.clone());
            let own = Arc::clone(&session);
            let thread = std::thread::Builder::new()
                .name(format!("apply-lane-{lane}"))
                .spawn(move || {
                    for jobs in jobs_rx {
                        let done = jobs.into_iter().map(|j| run_job(&own, j)).collect();
                        if done_tx.send(done).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| ReplicateError::Protocol {
                    reason: format!("apply lane {lane}: cannot start its thread: {e}"),
                })?;
            workers.push(Worker {
                session,
                jobs: Some(jobs_tx),
                done: done_rx,
                thread: Some(thread),
            });
        }
        Ok(Lanes {
            workers,
            run: (0..lanes).map(|_| Vec::new()).collect(),
            run_len: 0,
            parallel_run_min,
            schemas: Vec::new(),
        })
    }

    /// One lane, the applier's own thread: everything in sequence.
    pub fn single() -> Lanes {
        Lanes {
            workers: Vec::new(),
            run: vec![Vec::new()],
            run_len: 0,
            parallel_run_min: PARALLEL_RUN_TXNS_MIN,
            schemas: Vec::new(),
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

    /// Adds the async transaction `job` to the run if all its keys fall in one lane;
    /// gives it back otherwise (apply the run, then it alone).
    pub fn gather(&mut self, database: &Database, job: Job) -> std::result::Result<(), Job> {
        if self.count() == 1 {
            return Err(job);
        }
        match self.lane_of(database, &job.operations) {
            Some(lane) => {
                self.run[lane].push(job);
                self.run_len += 1;
                Ok(())
            }
            None => Err(job),
        }
    }

    /// Applies the run gathered so far (lanes in parallel, each in sequence order) on
    /// `session` and the lanes' own; returns what became of each job, in sequence
    /// order, and whether the lanes ran in parallel.
    pub fn apply_run(&mut self, session: &Session) -> (Vec<Done>, bool) {
        self.schemas.clear();
        if self.run_len == 0 {
            return (Vec::new(), false);
        }
        let run_len = std::mem::take(&mut self.run_len);
        let mut done = Vec::with_capacity(run_len);
        if run_len < self.parallel_run_min {
            let mut jobs: Vec<Job> = self.run.iter_mut().flat_map(std::mem::take).collect();
            jobs.sort_unstable_by_key(|j| j.seq);
            done.extend(jobs.into_iter().map(|j| run_job(session, j)));
            return (done, false);
        }
        let mut sent = Vec::with_capacity(self.workers.len());
        for (worker, jobs) in self.workers.iter().zip(self.run[1..].iter_mut()) {
            if jobs.is_empty() {
                continue;
            }
            let jobs = std::mem::take(jobs);
            match worker.jobs.as_ref().map(|tx| tx.send(jobs)) {
                Some(Ok(())) => sent.push(worker),
                // The lane's thread is gone (it cannot panic short of a bug): its
                // jobs come back and are applied here, in order.
                Some(Err(e)) => {
                    done.extend(e.into_inner().into_iter().map(|j| run_job(session, j)))
                }
                None => {}
            }
        }
        done.extend(
            std::mem::take(&mut self.run[0])
                .into_iter()
                .map(|j| run_job(session, j)),
        );
        for worker in sent {
            match worker.done.recv() {
                Ok(d) => done.extend(d),
                Err(_) => done.push(Done {
                    seq: Seq::ZERO,
                    verify: false,
                    outcome: Outcome::Failed(ReplicateError::Protocol {
                        reason: "an apply lane's thread ended with its jobs".into(),
                    }),
                }),
            }
        }
        done.sort_unstable_by_key(|d| d.seq);
        debug_assert!(done.len() >= run_len, "a run lost jobs");
        (done, true)
    }

    /// The one lane all of `operations`' keys hash to, if there is one.
    fn lane_of(&mut self, database: &Database, operations: &[Operation]) -> Option<usize> {
        let lanes = self.count();
        let mut lane = None;
        let mut same = |table: &str, key: &Key| {
            let here = lane_of_key(table, key, lanes);
            *lane.get_or_insert(here) == here
        };
        for op in operations {
            let all_same = match op {
                Operation::Insert { table, row } => {
                    same(table, &self.key_of(database, table, row)?)
                }
                // An update may give the record a new key: both keys count.
                Operation::Update { table, key, row } => {
                    same(table, key) && same(table, &self.key_of(database, table, row)?)
                }
                Operation::Delete { table, key } => same(table, key),
                Operation::Ddl { .. } => false,
            };
            if !all_same {
                return None;
            }
        }
        lane
    }

    /// The key `row` has in `table` (None if there is no such table or the row does
    /// not fit it: the transaction is then applied alone, and rejected there).
    fn key_of(&mut self, database: &Database, table: &str, row: &[Value]) -> Option<Key> {
        let schema = match self.schemas.iter().find(|(t, _)| t == table) {
            Some((_, schema)) => schema.clone(),
            None => {
                let schema = database.table(table).ok().map(|t| Arc::clone(t.schema()));
                self.schemas.push((table.to_owned(), schema.clone()));
                schema
            }
        }?;
        (row.len() == schema.columns().len()).then(|| schema.key_of(row))
    }
}

/// The lane of `key` in `table`, among `lanes`.
fn lane_of_key(table: &str, key: &Key, lanes: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    table.hash(&mut hasher);
    key.hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

impl Drop for Lanes {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            drop(worker.jobs.take());
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
