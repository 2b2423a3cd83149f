//! The backup's apply rate in one mode (issue 13 §1, §4): how fast a `kirikae
//! backup` process absorbs a backlog of the telecom traffic's transactions, all
//! replicated in that mode — async ones in its parallel lanes by key, ordered ones
//! in sequence.
//!
//! The backup is frozen (SIGSTOP) while the traffic runs at full speed: the primary
//! declares it down and keeps what it commits in its difference file. The traffic
//! stops, the backup goes on (SIGCONT), the primary reconnects and replays the
//! backlog. The rate is taken from the first acknowledgement after the thaw to the
//! last, so the reconnection is not part of it; the primary does nothing else
//! meanwhile, so the backup has the machine.

use std::time::{Duration, Instant};

use kirikae::replicate::{RecordLogOptions, ReplicatorConfig, Seq};
use serde::Serialize;

use crate::bench_replicate::{
    fresh, outage_link_config, rules, start_in_step, traffic, PairFiles, ReplicateBenchArgs,
};
use crate::measure::{cores_busy, process_cpu_us};
use crate::node_process::BackupProcess;
use crate::CliError;

/// How long the backlog may take to drain, at most.
const DRAIN_WITHIN: Duration = Duration::from_secs(120);

/// One mode's drain.
#[derive(Debug, Serialize)]
pub struct Drain {
    /// The mode every transaction was replicated in.
    pub mode: String,
    /// Transactions in the backlog when the backup was let go on.
    pub backlog_txns: u64,
    /// Transactions applied per second while draining it.
    pub txns_per_s: f64,
    /// The backup's apply lanes.
    pub apply_lanes: usize,
    /// Of the transactions the backup applied, those it applied in parallel lanes.
    pub applied_in_lanes: u64,
    /// Of those, the ones whose lanes had to meet (wait for each other).
    pub lane_meetings: u64,
    /// The backup process's CPU time (all its threads) per transaction applied
    /// while draining: what a mode costs the backup, steadier than a rate on a
    /// shared machine.
    pub backup_cpu_us_per_txn: f64,
    /// This process's CPU time per transaction meanwhile (the primary replaying
    /// its difference file).
    pub primary_cpu_us_per_txn: f64,
    /// Cores the two processes kept busy together while draining: near the
    /// machine's core count, more apply lanes have no core to run on.
    pub cores_busy: f64,
}

/// Measures `mode`'s drain with `apply_lanes` lanes at the backup.
pub fn drain(args: &ReplicateBenchArgs, mode: &str, apply_lanes: usize) -> Result<Drain, CliError> {
    let primary = fresh(args.subscribers)?;
    let files = PairFiles::new()?;
    let lanes = apply_lanes.to_string();
    let peer = BackupProcess::start(
        files.dir.path(),
        args.subscribers,
        &files.key_path,
        &["--apply-lanes", &lanes],
    )?;
    let replicator = start_in_step(
        &primary,
        ReplicatorConfig {
            key: Some(files.key.clone()),
            peer: peer.addr,
            rules: rules(mode)?,
            link: outage_link_config(),
            difference_dir: files.difference.clone(),
            difference: RecordLogOptions::default(),
        },
    )?;
    let running = traffic(args, None).start(&primary);
    // A backup that has acknowledged nothing is resynced, not caught up: it is
    // frozen once it has.
    let deadline = Instant::now() + DRAIN_WITHIN;
    while replicator.metrics().last_acked_seq == Seq::ZERO {
        wait_a_little(deadline, "its first acknowledgement")?;
    }
    peer.freeze(true)?;
    std::thread::sleep(Duration::from_secs_f64(args.outage));
    running.stop();
    let backlog_at = replicator.metrics();
    peer.freeze(false)?;
    let deadline = Instant::now() + DRAIN_WITHIN;
    // From the first acknowledgement after the thaw: the reconnection is not apply.
    let (first_acked, started, cpu_at_start) = loop {
        let m = replicator.metrics();
        if m.last_acked_seq > backlog_at.last_acked_seq {
            let cpu = (process_cpu_us(Some(peer.pid())), process_cpu_us(None));
            break (m.last_acked_seq, Instant::now(), cpu);
        }
        wait_a_little(deadline, "its first acknowledgement after the thaw")?;
    };
    loop {
        let m = replicator.metrics();
        if m.last_acked_seq >= backlog_at.last_seq {
            break;
        }
        wait_a_little(deadline, "the backlog to drain")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let txns = backlog_at.last_seq.since(first_acked);
    let backup_cpu_us = process_cpu_us(Some(peer.pid())).saturating_sub(cpu_at_start.0);
    let primary_cpu_us = process_cpu_us(None).saturating_sub(cpu_at_start.1);
    let per_txn = |cpu_us: u64| cpu_us as f64 / txns.max(1) as f64;
    replicator.shutdown();
    let report = peer.finish()?;
    Ok(Drain {
        mode: mode.to_owned(),
        backlog_txns: backlog_at.last_seq.since(backlog_at.last_acked_seq),
        txns_per_s: txns as f64 / seconds.max(1e-9),
        apply_lanes,
        applied_in_lanes: report["stats"]["applied_in_lanes"].as_u64().unwrap_or(0),
        lane_meetings: report["stats"]["lane_meetings"].as_u64().unwrap_or(0),
        backup_cpu_us_per_txn: per_txn(backup_cpu_us),
        primary_cpu_us_per_txn: per_txn(primary_cpu_us),
        cores_busy: cores_busy(backup_cpu_us + primary_cpu_us, seconds),
    })
}

/// A 1 ms pause, or an error naming `what` once `deadline` has passed.
fn wait_a_little(deadline: Instant, what: &str) -> Result<(), CliError> {
    if Instant::now() >= deadline {
        return Err(CliError::Usage(format!(
            "the backup did not drain its backlog within {} s: waiting for {what}",
            DRAIN_WITHIN.as_secs()
        )));
    }
    std::thread::sleep(Duration::from_millis(1));
    Ok(())
}
