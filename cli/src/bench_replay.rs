//! The backup's apply rate per mode with the machine to itself (issue 13 §1): a
//! restart's replay of its access log, where no stream is read and no primary runs.
//!
//! A `backup_drain` shares the machine's cores with the primary replaying its
//! difference file and with the backup's own reader, so on 2 cores it measures
//! the pair. Here the same kind of backlog is applied by the backup's applier
//! alone: the telecom traffic is replicated async to an in-process backup that
//! logs it (no checkpoint, so the whole run stays in the log's tail); a copy of
//! that log with every transaction marked ordered is made; then each log is
//! replayed into a freshly loaded database, the async one in one lane per core
//! ([`Applier::replay_log`]), the ordered one in sequence, each mode twice in the
//! order async, ordered, ordered, async. Both replay exactly the same transactions.

use std::path::Path;
use std::time::{Duration, Instant};

use kirikae::engine::{Database, SessionInfo};
use kirikae::replicate::{
    AccessEntry, AccessLog, AccessLogOptions, Applier, Backup, BackupConfig, Mode, PeerKey,
    RecordLogOptions, ReplicatorConfig, APPLY_LANES_MAX, PARALLEL_RUN_TXNS_MIN,
};
use serde::Serialize;

use crate::bench_replicate::{fresh, outage_link_config, rules, start_in_step, traffic};
use crate::bench_replicate::{ReplicateBenchArgs, DRAIN_ORDER};
use crate::measure::{cores_busy, process_cpu_us};
use crate::CliError;

/// How long the backup may take to log the whole run, at most.
const LOGGED_WITHIN: Duration = Duration::from_secs(120);

/// One mode's replay.
#[derive(Debug, Serialize)]
pub struct Replay {
    /// The mode every transaction of the log was marked with.
    pub mode: String,
    /// Transactions replayed.
    pub txns: u64,
    /// Transactions applied per second, from the decoded tail to the last one
    /// applied (reading and decoding the log, the same for both modes, are not in
    /// it).
    pub txns_per_s: f64,
    /// The applier's lanes.
    pub apply_lanes: usize,
    /// Of the transactions, those applied in parallel lanes.
    pub applied_in_lanes: u64,
    /// Of those, the ones whose lanes had to meet (wait for each other).
    pub lane_meetings: u64,
    /// This process's CPU time per transaction meanwhile (all lanes).
    pub cpu_us_per_txn: f64,
    /// Cores the replay kept busy.
    pub cores_busy: f64,
}

/// What [`replays`] measured: each replay, and the async ÷ ordered ratio of the
/// modes' mean rates.
pub struct Replays {
    pub replays: Vec<Replay>,
    pub ratio_async_over_ordered: Option<f64>,
}

/// Logs `args.outage` seconds of the traffic replicated async, then replays it per
/// mode (none when the outage is 0: there is nothing to replay).
pub fn replays(args: &ReplicateBenchArgs) -> Result<Replays, CliError> {
    if args.outage <= 0.0 {
        return Ok(Replays {
            replays: Vec::new(),
            ratio_async_over_ordered: None,
        });
    }
    let async_dir = tempdir()?;
    let ordered_dir = tempdir()?;
    log_traffic(args, async_dir.path())?;
    mark_ordered(async_dir.path(), ordered_dir.path())?;
    let lanes = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, APPLY_LANES_MAX);
    let mut replays = Vec::new();
    for mode in DRAIN_ORDER {
        let (dir, lanes) = match mode {
            "async" => (async_dir.path(), lanes),
            _ => (ordered_dir.path(), 1),
        };
        replays.push(replay(args, mode, dir, lanes)?);
    }
    let ratio_async_over_ordered =
        crate::measure::async_over_ordered(replays.iter().map(|r| (r.mode.as_str(), r.txns_per_s)));
    Ok(Replays {
        replays,
        ratio_async_over_ordered,
    })
}

fn tempdir() -> Result<tempfile::TempDir, CliError> {
    tempfile::tempdir().map_err(|e| CliError::Usage(format!("tempdir: {e}")))
}

/// Options of the logs replayed: no fsync (the bench's files are scratch), and no
/// checkpoint, so that the whole run is the tail a restart replays.
fn log_options() -> AccessLogOptions {
    AccessLogOptions {
        checkpoint_bytes: u64::MAX,
        checkpoint_every: Duration::MAX,
        ..AccessLogOptions::default().with_fsync(false)
    }
}

/// Replicates `args.outage` seconds of the traffic async to an in-process backup
/// logging into `dir`, and waits until it has logged all of it.
fn log_traffic(args: &ReplicateBenchArgs, dir: &Path) -> Result<(), CliError> {
    let primary = fresh(args.subscribers)?;
    let difference = tempdir()?;
    let key = PeerKey::random()?;
    let backup = Backup::start(
        fresh(args.subscribers)?,
        "127.0.0.1:0",
        BackupConfig {
            key: Some(key.clone()),
            access_log: log_options(),
            log_dir: Some(dir.to_owned()),
            apply_lanes: 1,
            ..BackupConfig::default()
        },
    )?;
    let replicator = start_in_step(
        &primary,
        ReplicatorConfig {
            key: Some(key),
            peer: backup.local_addr(),
            rules: rules("async")?,
            link: outage_link_config(),
            difference_dir: difference.path().to_owned(),
            difference: RecordLogOptions::default(),
        },
    )?;
    let running = traffic(args, None).start(&primary);
    std::thread::sleep(Duration::from_secs_f64(args.outage));
    running.stop();
    let last = replicator.metrics().last_seq;
    let deadline = Instant::now() + LOGGED_WITHIN;
    while replicator.metrics().last_acked_seq < last {
        if Instant::now() >= deadline {
            return Err(CliError::Usage(format!(
                "the backup did not log the replay's {last} transactions within {} s",
                LOGGED_WITHIN.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    replicator.shutdown();
    backup.stop()?;
    Ok(())
}

/// Copies the access log in `from` to `to` with every shipped transaction marked
/// ordered.
fn mark_ordered(from: &Path, to: &Path) -> Result<(), CliError> {
    let (_, reopened) = AccessLog::open(from, log_options(), &Database::new())?;
    let (mut copy, _) = AccessLog::open(to, log_options(), &Database::new())?;
    for record in reopened.tail {
        let entry = match record.entry {
            AccessEntry::Ship { operations, .. } => AccessEntry::Ship {
                mode: Mode::Ordered,
                operations,
            },
            other => other,
        };
        copy.append(record.seq, record.epoch, entry)?;
    }
    copy.sync()?;
    Ok(())
}

/// Replays the log in `dir` into a freshly loaded database with `lanes` lanes.
fn replay(
    args: &ReplicateBenchArgs,
    mode: &str,
    dir: &Path,
    lanes: usize,
) -> Result<Replay, CliError> {
    let database = fresh(args.subscribers)?;
    let session = database.session(SessionInfo::new("replication", "replication", None));
    let (log, reopened) = AccessLog::open(dir, log_options(), &database)?;
    let txns = reopened.tail.len() as u64;
    let mut applier = Applier::new(&session);
    applier.set_apply_lanes(lanes, PARALLEL_RUN_TXNS_MIN)?;
    let cpu_before = process_cpu_us(None);
    let started = Instant::now();
    applier.replay_log(log, reopened)?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_us = process_cpu_us(None).saturating_sub(cpu_before);
    let stats = applier.stats();
    if stats.rejected > 0 || stats.applied != txns {
        return Err(CliError::Usage(format!(
            "the {mode} replay applied {} of {txns} transactions ({} rejected)",
            stats.applied, stats.rejected
        )));
    }
    Ok(Replay {
        mode: mode.to_owned(),
        txns,
        txns_per_s: txns as f64 / seconds.max(1e-9),
        apply_lanes: lanes,
        applied_in_lanes: stats.applied_in_lanes,
        lane_meetings: stats.lane_meetings,
        cpu_us_per_txn: cpu_us as f64 / txns.max(1) as f64,
        cores_busy: cores_busy(cpu_us, seconds),
    })
}
