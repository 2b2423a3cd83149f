//! `kirikae bench failover`: trials of killing the primary under the telecom load and
//! timing the backup's takeover, per arbiter mode, plus planned switchovers.
//!
//! Each failover trial: a backup in this process (its own database, access log and
//! arbiter), the primary a child process (`kirikae primary` with an ack log) running
//! the telecom traffic; once it replicates, it gets SIGKILL. Manual mode: the
//! operator's promote command is given at once (an operator who knows). Peer mode:
//! the backup notices the silence. The clock stops at the first write the promoted
//! node accepts (its own replicator started at the new epoch), which is what a user
//! of the service waits for. Then every commit the dead primary's ack log calls
//! replicated is looked up in the promoted database.
//!
//! Each switchover trial: both nodes in this process, a writer committing through,
//! the roles swapped; the pause is the writer's longest gap between two commits,
//! beside the same writer's longest gap before the switchover (the noise floor).

use std::io::{BufRead, BufReader, IsTerminal};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use indicatif::ProgressBar;
use kirikae::engine::{Database, SessionInfo, Value};
use kirikae::replicate::etcd::LocalEtcd;
use kirikae::replicate::{
    switchover, AccessLogOptions, Arbiter, Backup, BackupConfig, BackupEvent, EtcdArbiter,
    LinkConfig, Promotion, RecordLogOptions, Replicator, ReplicatorConfig, RuleSet, Switchover,
};
use kirikae_workload::telecom;
use kirikae_workload::workload::{subscriber_key, SUBSCRIBER_TABLE};
use parking_lot::Mutex;
use serde::Serialize;

use crate::nodes::MIXED_RULES;
use crate::CliError;

/// Options of `kirikae bench failover`.
#[derive(clap::Args, Debug)]
// A negative number is a value (refused with its option\'s range), not a flag.
#[command(allow_negative_numbers = true)]
pub struct FailoverBenchArgs {
    /// Trials per arbiter mode (and switchovers).
    #[arg(long, default_value_t = 20, value_parser = crate::arg_ranges::trials)]
    pub trials: u64,
    /// Subscribers in the tables.
    #[arg(long, default_value_t = 10_000, value_parser = crate::arg_ranges::rows)]
    pub subscribers: u64,
    /// The primary's operations per second.
    #[arg(long, default_value_t = 2_000.0, value_parser = crate::arg_ranges::rate)]
    pub rate: f64,
    /// The peer and etcd arbiters' silence before they promote.
    #[arg(long, default_value_t = 500, value_parser = crate::arg_ranges::failover_ms)]
    pub failover_after_ms: u64,
    /// The etcd mode's leader lease (etcd 3.4 grants at least 1.5 s by default).
    #[arg(long, default_value_t = 2_000, value_parser = crate::arg_ranges::failover_ms)]
    pub lease_ttl_ms: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One arbiter mode's trials.
#[derive(Debug, Serialize)]
pub struct ModeReport {
    /// `manual`, `peer` or `etcd`.
    pub mode: &'static str,
    /// Trials run.
    pub trials: u64,
    /// Kill to the first write the promoted node accepted.
    pub failover_ms_p50: f64,
    /// The same, 99th percentile (the worst, at these trial counts).
    pub failover_ms_p99: f64,
    /// Commits acknowledged as replicated by the dead primary and missing after.
    pub lost_acknowledged_sync: u64,
    /// Commits the old primary acknowledged after the new one took over.
    pub dual_primary_acknowledged: u64,
    /// Commits acknowledged as replicated, over all trials (what was checked).
    pub acknowledged_sync_checked: u64,
    /// etcd mode: the leader lease's TTL (its goal is p99 ≤ TTL + 1 s).
    pub lease_ttl_ms: Option<u64>,
}

/// What `kirikae bench failover` measured.
#[derive(Debug, Serialize)]
pub struct FailoverReport {
    /// Per arbiter mode (etcd only where `etcd` is installed).
    pub modes: Vec<ModeReport>,
    /// Switchovers run.
    pub switchover_trials: u64,
    /// The writer's longest gap between commits across a switchover, worst trial.
    pub switchover_pause_us_max: u64,
    /// The same writer's longest gap in an equal window before (noise floor).
    pub writer_gap_us_max_before: u64,
    /// The switchover's own timer (hand-over to the new primary started), worst
    /// trial: the part of the pause the switchover itself takes.
    pub switchover_own_us_max: u64,
}

fn fresh(subscribers: u64) -> Result<Database, CliError> {
    let db = Database::new();
    telecom::create_tables(&db, subscribers)?;
    Ok(db)
}

fn tempdir() -> Result<tempfile::TempDir, CliError> {
    tempfile::tempdir().map_err(|e| CliError::Usage(format!("tempdir: {e}")))
}

/// Runs the trials.
pub fn run(args: &FailoverBenchArgs) -> Result<FailoverReport, CliError> {
    let bar = ProgressBar::new(args.trials * 3);
    bar.set_style(crate::progress::style(
        "failover {bar:30} {pos}/{len} {msg}",
    ));
    // Where bars are invisible (a log, CI), a plain line per trial.
    let plain = !std::io::stderr().is_terminal();
    let mut modes = Vec::new();
    // The etcd mode runs against a local etcd (Debian's etcd-server), when installed.
    let etcd_dir = tempdir()?;
    let etcd = LocalEtcd::start(etcd_dir.path())?;
    if etcd.is_none() {
        eprintln!("failover: `etcd` is not installed: the etcd mode is skipped");
    }
    let mode_names: Vec<&'static str> = ["manual", "peer", "etcd"]
        .into_iter()
        .filter(|m| *m != "etcd" || etcd.is_some())
        .collect();
    for mode in mode_names {
        let mut times = Vec::new();
        let mut report = ModeReport {
            mode,
            trials: args.trials,
            failover_ms_p50: 0.0,
            failover_ms_p99: 0.0,
            lost_acknowledged_sync: 0,
            dual_primary_acknowledged: 0,
            acknowledged_sync_checked: 0,
            lease_ttl_ms: (mode == "etcd").then_some(args.lease_ttl_ms),
        };
        for _ in 0..args.trials {
            let arbiter = match mode {
                "manual" => TrialArbiter::Manual,
                "peer" => TrialArbiter::Peer,
                _ => TrialArbiter::Etcd(
                    etcd.as_ref()
                        .map(LocalEtcd::addr)
                        .ok_or_else(|| CliError::Usage("no etcd".into()))?,
                ),
            };
            let t = kill_trial(args, arbiter)?;
            if plain {
                eprintln!(
                    "failover {mode}: {:.0} ms, {} lost of {} checked",
                    t.failover_ms, t.lost, t.checked
                );
            }
            bar.set_message(format!("{mode} {:.0} ms", t.failover_ms));
            times.push(t.failover_ms);
            report.lost_acknowledged_sync += t.lost;
            report.dual_primary_acknowledged += t.dual;
            report.acknowledged_sync_checked += t.checked;
            bar.inc(1);
        }
        times.sort_by(f64::total_cmp);
        report.failover_ms_p50 = percentile(&times, 0.50);
        report.failover_ms_p99 = percentile(&times, 0.99);
        modes.push(report);
    }
    let (mut pause, mut before, mut own) = (0u64, 0u64, 0u64);
    for _ in 0..args.trials {
        let (p, b, o) = switchover_trial(args)?;
        if plain {
            eprintln!("switchover: writer paused {p} µs (before: {b} µs; switchover's own {o} µs)");
        }
        pause = pause.max(p);
        before = before.max(b);
        own = own.max(o);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(FailoverReport {
        modes,
        switchover_trials: args.trials,
        switchover_pause_us_max: pause,
        writer_gap_us_max_before: before,
        switchover_own_us_max: own,
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Trial {
    failover_ms: f64,
    lost: u64,
    dual: u64,
    checked: u64,
}

/// Who promotes in a kill trial.
#[derive(Clone, Copy)]
enum TrialArbiter {
    Manual,
    Peer,
    /// etcd at this endpoint.
    Etcd(SocketAddr),
}

fn kill_trial(args: &FailoverBenchArgs, arbiter_kind: TrialArbiter) -> Result<Trial, CliError> {
    let (data, diff, new_diff) = (tempdir()?, tempdir()?, tempdir()?);
    let key_path = data.path().with_extension("key");
    let key = crate::nodes::write_key_file(&key_path)?;
    let acks = diff.path().with_extension("acks");
    let db = fresh(args.subscribers)?;
    let failover_after = Duration::from_millis(args.failover_after_ms);
    // A prefix per trial: each trial is its own pair.
    let prefix = format!("/kirikae/bench/{}", data.path().display());
    let arbiter = match arbiter_kind {
        TrialArbiter::Manual => Arbiter::Manual,
        TrialArbiter::Peer => Arbiter::Peer { failover_after },
        TrialArbiter::Etcd(endpoint) => Arbiter::Etcd(EtcdArbiter {
            endpoint,
            prefix: prefix.clone(),
            lease_ttl: Duration::from_millis(args.lease_ttl_ms),
            failover_after,
            call_timeout: Duration::from_millis(500),
        }),
    };
    let backup = Backup::start(
        db.clone(),
        "127.0.0.1:0",
        BackupConfig {
            key: Some(key.clone()),
            log_dir: Some(data.path().to_owned()),
            access_log: AccessLogOptions::default().with_fsync(false),
            heartbeat_every: Duration::from_millis(20),
            arbiter,
            ..BackupConfig::default()
        },
    )?;
    let exe = std::env::current_exe().map_err(|e| CliError::Usage(format!("own path: {e}")))?;
    let mut primary = Command::new(exe);
    primary.args([
        "primary",
        "--peer",
        &backup.local_addr().to_string(),
        "--seconds",
        "0",
    ]);
    // etcd: the primary holds the pair's leader key, as a real one would.
    if let TrialArbiter::Etcd(endpoint) = arbiter_kind {
        primary
            .args(["--etcd", &endpoint.to_string(), "--etcd-prefix", &prefix])
            .args(["--lease-ttl-ms", &args.lease_ttl_ms.to_string()]);
    }
    let mut child = primary
        .args(["--subscribers", &args.subscribers.to_string()])
        .args(["--rate", &args.rate.to_string()])
        .arg("--difference-dir")
        .arg(diff.path())
        .arg("--key-file")
        .arg(&key_path)
        .arg("--ack-log")
        .arg(&acks)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| CliError::Usage(format!("spawn the primary: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| CliError::Usage("the primary's stdout".into()))?;
    // Replicating: a status line with an acknowledged sequence.
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let Some(Ok(line)) = lines.next() else {
            return Err(CliError::Usage(
                "the primary ended before replicating".into(),
            ));
        };
        if line.contains(" ops ") && !line.contains("acked 0 ") {
            break;
        }
        if Instant::now() > deadline {
            return Err(CliError::Usage(
                "the primary did not replicate within 30 s".into(),
            ));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    child
        .kill()
        .map_err(|e| CliError::Usage(format!("SIGKILL: {e}")))?;
    let killed = Instant::now();
    let _ = child.wait();
    let promotion: Promotion = match arbiter_kind {
        TrialArbiter::Manual => backup.promote()?,
        TrialArbiter::Peer | TrialArbiter::Etcd(_) => {
            match backup.events().recv_timeout(Duration::from_secs(30)) {
                Ok(BackupEvent::Promoted { promotion, .. }) => promotion,
                Err(_) => return Err(CliError::Usage("no promotion within 30 s".into())),
            }
        }
    };
    // etcd: the new primary writes only under the key it took.
    let leadership = backup.take_leadership();
    let promoted_ms = crate::ack_log::unix_ms(SystemTime::now());
    // The new primary: its first accepted write ends the failover.
    let replicator = crate::promoted::take_over(
        &db,
        &promotion,
        leadership.as_ref(),
        ReplicatorConfig {
            key: Some(key),
            // Nobody listens there (the dead primary's node would be the new
            // backup; rejoining it needs a resync): the new primary runs degraded.
            peer: crate::node_process::free_port()?,
            rules: RuleSet::parse(MIXED_RULES, "seed000-mixed.toml")?,
            link: LinkConfig {
                reconnect_min: Duration::from_millis(200),
                ..LinkConfig::default()
            },
            difference_dir: new_diff.path().to_owned(),
            difference: RecordLogOptions::default(),
        },
    )?;
    let failover_ms = killed.elapsed().as_secs_f64() * 1000.0;
    replicator.shutdown();
    let (lost, dual, checked) = crate::ack_log::check(&acks, &db, promoted_ms)?;
    drop(backup);
    Ok(Trial {
        failover_ms,
        lost,
        dual,
        checked,
    })
}

/// One switchover under a writer; returns the writer's longest gap across it and in
/// an equal window before it, and the switchover's own timer, µs.
fn switchover_trial(args: &FailoverBenchArgs) -> Result<(u64, u64, u64), CliError> {
    let dirs = [tempdir()?, tempdir()?, tempdir()?, tempdir()?];
    let key = crate::nodes::write_key_file(&dirs[0].path().join("pair.key"))?;
    let (a_db, b_db) = (fresh(args.subscribers)?, fresh(args.subscribers)?);
    let backup_config = |dir: &Path| BackupConfig {
        key: Some(key.clone()),
        log_dir: Some(dir.to_owned()),
        access_log: AccessLogOptions::default().with_fsync(false),
        heartbeat_every: Duration::from_millis(20),
        ..BackupConfig::default()
    };
    let replicator_config = |peer: SocketAddr, dir: &Path| -> Result<ReplicatorConfig, CliError> {
        Ok(ReplicatorConfig {
            key: Some(key.clone()),
            peer,
            rules: RuleSet::parse(MIXED_RULES, "seed000-mixed.toml")?,
            link: LinkConfig {
                heartbeat_every: Duration::from_millis(20),
                reconnect_min: Duration::from_millis(5),
                reconnect_max: Duration::from_millis(50),
                ..LinkConfig::default()
            },
            difference_dir: dir.to_owned(),
            difference: RecordLogOptions {
                fsync: false,
                ..RecordLogOptions::default()
            },
        })
    };
    let b = Backup::start(b_db.clone(), "127.0.0.1:0", backup_config(dirs[0].path()))?;
    let a = Replicator::start(&a_db, replicator_config(b.local_addr(), dirs[1].path())?)?;
    if !a.wait_duplex(Duration::from_secs(10)) {
        return Err(CliError::Usage(
            "the backup did not answer within 10 s".into(),
        ));
    }
    let current = Arc::new(Mutex::new(a_db.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let gaps = Arc::new(Mutex::new(Vec::<(Instant, Duration)>::new()));
    let writer = {
        let (current, stop, gaps) = (Arc::clone(&current), Arc::clone(&stop), Arc::clone(&gaps));
        let subscribers = args.subscribers.max(1);
        let rate = args.rate;
        std::thread::spawn(move || {
            let mut last_ok = Instant::now();
            let mut i = 0u64;
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                // The telecom load's pace: the switchover, not a saturated backup,
                // is what is measured.
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let db = current.lock().clone();
                let s = db.session(SessionInfo::new("app", "service", None));
                let changes = [("balance", Value::Int(i as i64))];
                if s.update_columns(SUBSCRIBER_TABLE, &subscriber_key(i % subscribers), &changes)
                    .is_ok()
                {
                    let now = Instant::now();
                    gaps.lock().push((now, now - last_ok));
                    last_ok = now;
                    i += 1;
                } else {
                    // Refused (handed over): a client backs off briefly, rather than
                    // spin on a core the switchover needs.
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let window_start = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let new_backup_listen = crate::node_process::free_port()?;
    let hand_over = a.hand_over(Duration::from_secs(5))?;
    let hand_over_since = hand_over.refusing_since;
    let switched = switchover(Switchover {
        primary: a,
        hand_over,
        old_primary_db: a_db,
        backup: b,
        new_primary_db: b_db.clone(),
        new_primary: replicator_config(new_backup_listen, dirs[2].path())?,
        new_backup_listen,
        new_backup: backup_config(dirs[3].path()),
    })?;
    *current.lock() = b_db;
    let own = switched.report.writes_paused_us;
    let refusing_since = hand_over_since;
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let _ = writer.join();
    switched.primary.shutdown();
    let gaps = gaps.lock();
    let max_in = |from: Instant, to: Instant| {
        gaps.iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, g)| g.as_micros() as u64)
            .max()
            .unwrap_or(0)
    };
    // The gap that ends first after commits were refused spans the pause.
    let across = max_in(refusing_since, Instant::now());
    let before = max_in(window_start, refusing_since);
    Ok((across, before, own))
}

/// The report as a table.
pub fn print_table(r: &FailoverReport) {
    say!("mode      trials  failover p50   p99      lost acknowledged  dual-primary  (sync acks checked)");
    for m in &r.modes {
        say!(
            "{:<8}  {:>6}  {:>9.0} ms  {:>5.0} ms  {:>17}  {:>12}  ({})",
            m.mode,
            m.trials,
            m.failover_ms_p50,
            m.failover_ms_p99,
            m.lost_acknowledged_sync,
            m.dual_primary_acknowledged,
            m.acknowledged_sync_checked
        );
    }
    say!(
        "switchover: {} trials, writer paused at most {} µs (its longest gap before: {} µs)",
        r.switchover_trials,
        r.switchover_pause_us_max,
        r.writer_gap_us_max_before
    );
}
