//! `kirikae bench replicate`: the telecom traffic replicated to a peer (a `kirikae
//! backup` process, over loopback TCP, through the delay/loss proxy where there is
//! delay or loss to emulate) under the seed-000 mixed
//! policy and each pure mode, at several RTTs and loss rates, against the same
//! traffic unreplicated — like seed 000's Fig. 5 — plus a catch-up measurement after
//! a peer outage.

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use kirikae::engine::Database;
use kirikae::replicate::{
    AccessLogOptions, Backup, BackupConfig, Event, Impairment, LinkConfig, LoopbackProxy, PeerKey,
    RecordLogOptions, Replicator, ReplicatorConfig, RuleSet,
};
use kirikae_workload::telecom::{self, Traffic, TrafficReport};
use serde::Serialize;

use crate::bench_drain::{drain, Drain};
use crate::bench_replay::Replay;
use crate::measure::{cores_busy, process_cpu_us};
use crate::node_process::BackupProcess;
use crate::nodes::MIXED_RULES;

/// The policy of seed 000's own experiment (§6.1), built in (also in
/// replicate/rules/seed000-exact.toml).
const EXACT_RULES: &str = include_str!("../../replicate/rules/seed000-exact.toml");
use crate::CliError;

/// Options of `kirikae bench replicate`.
#[derive(clap::Args, Debug)]
// A negative number is a value (refused with its option\'s range), not a flag.
#[command(allow_negative_numbers = true)]
pub struct ReplicateBenchArgs {
    /// Subscribers in the tables.
    #[arg(long, default_value_t = 100_000, value_parser = crate::arg_ranges::rows)]
    pub subscribers: u64,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 8, value_parser = crate::arg_ranges::threads)]
    pub sessions: usize,
    /// Seconds measured per cell.
    #[arg(long, default_value_t = 2.0, value_parser = crate::arg_ranges::positive_seconds)]
    pub seconds: f64,
    /// Round-trip times to add, ms (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,1,10", value_parser = crate::arg_ranges::rtt_ms)]
    pub rtt_ms: Vec<f64>,
    /// Loss rates, percent (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,0.1,1", value_parser = crate::arg_ranges::percent)]
    pub loss_pct: Vec<f64>,
    /// Policies (comma-separated): mixed (seed 000's mixed policy; also
    /// `seed000-mixed`), exact (the policy of its own experiment, §6.1: writes
    /// ordered, every commit sync; also `seed000-exact`), and each mode alone:
    /// async, ordered, sync.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mixed,exact,async,ordered,sync"
    )]
    pub policies: Vec<String>,
    /// Incoming operations per second during the catch-up measurement.
    #[arg(long, default_value_t = 20_000.0, value_parser = crate::arg_ranges::rate)]
    pub catchup_rate: f64,
    /// Seconds the peer is down before the catch-up.
    #[arg(long, default_value_t = 2.0, value_parser = crate::arg_ranges::seconds)]
    pub outage: f64,
    /// The backup's apply lanes (async transactions in parallel by key). Default:
    /// one per core beyond the first, at most 4 (`BackupConfig::apply_lanes`).
    #[arg(long, value_parser = crate::arg_ranges::apply_lanes)]
    pub apply_lanes: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One measured cell.
#[derive(Debug, Serialize)]
pub struct Cell {
    pub policy: String,
    pub rtt_ms: f64,
    pub loss_pct: f64,
    pub ops_per_s: f64,
    pub commits_per_s: f64,
    pub ratio_to_unreplicated: f64,
    /// The paper's measure (seed 000 Fig. 5): throughput lost to replication, %.
    pub throughput_drop_pct: f64,
    pub commit_latency_us_p50: u64,
    pub commit_latency_us_p99: u64,
    pub failed: u64,
    /// For sync: sessions ÷ RTT, the group-commit bound on commits per second.
    pub sessions_per_rtt: Option<f64>,
    /// For sync through the proxy: round trips per second of as many one-byte
    /// ping-pongs as sessions, through a proxy with the same delay and loss,
    /// measured just before the cell. The network's own bound, beside the ideal
    /// `sessions_per_rtt`: the proxy's two extra hops and its timer's lateness cost
    /// every round trip too (about 40 µs at RTT 1 ms on the 2-core test machine).
    pub network_round_trips_per_s: Option<f64>,
    /// This process's CPU time (user + system) per commit, µs: the primary's, plus
    /// the proxy's where there is one (the backup runs in its own process).
    pub primary_cpu_us_per_commit: f64,
    /// The backup process's CPU time (user + system) per commit, µs.
    pub backup_cpu_us_per_commit: f64,
    /// Cores the two processes kept busy together during the cell (their CPU time
    /// ÷ the cell's length): near the machine's core count, the cell is bound by
    /// CPU, not by the network or by waiting.
    pub cores_busy: f64,
    /// Transactions the backup process applied per second of the cell.
    pub backup_apply_ops_per_s: f64,
    /// Times the link went down during the cell (each `Diverged` event), and the
    /// first reason: a backup that falls too far behind is declared down, and what
    /// it missed goes through the difference file.
    pub link_downs: u64,
    pub link_down_first_reason: Option<String>,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct ReplicateBenchReport {
    pub subscribers: u64,
    pub sessions: usize,
    pub seconds_per_cell: f64,
    pub unreplicated_ops_per_s: f64,
    pub unreplicated_commit_latency_us_p50: u64,
    pub unreplicated_commit_latency_us_p99: u64,
    /// The raw loopback TCP round trip (median, one byte each way), measured in
    /// this run before and after the cells, the lower of the two: the floor of a
    /// sync commit at RTT 0.
    pub tcp_rtt_us: f64,
    pub tcp_rtt_us_before: f64,
    pub tcp_rtt_us_after: f64,
    /// The sync cell at RTT 0 and no loss: its commit p50 ÷ `tcp_rtt_us`. With all
    /// the sessions on the machine's cores this is mostly queueing (Little's law:
    /// sessions ÷ commits per second); the one-session figures below are the
    /// latency of the path itself.
    pub sync_p50_over_tcp_rtt: Option<f64>,
    /// Sync at RTT 0 and no loss with one session (when the grid has that cell):
    /// commit p50, µs, and that ÷ `tcp_rtt_us`.
    pub sync_one_session_p50_us: Option<u64>,
    pub sync_one_session_p50_over_tcp_rtt: Option<f64>,
    /// This process's CPU time per commit unreplicated, µs: the mean of a run
    /// before the cells and one after them (the same binary's figure moved between
    /// 1.95 and 3.18 µs across runs on the 2-core test machine; one end of a run
    /// alone would make the ratios below swing with it).
    pub unreplicated_cpu_us_per_commit: f64,
    pub unreplicated_cpu_us_per_commit_before: f64,
    pub unreplicated_cpu_us_per_commit_after: f64,
    /// The primary's CPU per commit replicated ÷ unreplicated, at RTT 0 without
    /// loss (no proxy): async, and ordered.
    pub primary_cpu_ratio_async: Option<f64>,
    pub primary_cpu_ratio_ordered: Option<f64>,
    /// The backup's apply rate draining a backlog, async ÷ ordered, each the mean
    /// of its two drains in `backup_drain`; `null` when a drain measured no rate (a
    /// backlog too small to time, e.g. `--outage 0`).
    pub backup_apply_ratio_async_over_ordered: Option<f64>,
    pub cells: Vec<Cell>,
    /// The backup's apply rate in each mode: a backlog of the traffic's
    /// transactions drained by a `kirikae backup` process with the machine to
    /// itself (`bench_drain.rs`).
    pub backup_drain: Vec<Drain>,
    /// The backup's apply rate with the machine to itself, async ÷ ordered: the
    /// means of `backup_replay`'s two replays per mode.
    pub backup_replay_ratio_async_over_ordered: Option<f64>,
    /// The backup's apply rate in each mode replaying a restart's access log, the
    /// same transactions in both (`bench_replay.rs`): no primary and no stream
    /// reader share the cores, so async ones use a lane per core.
    pub backup_replay: Vec<Replay>,
    /// Operations per second the peer absorbed while catching up.
    pub catchup_ops_per_s: f64,
    /// Replicated transactions per second arriving meanwhile.
    pub catchup_incoming_per_s: f64,
    /// The two above, ÷; `null` without incoming traffic to compare with.
    pub catchup_ratio: Option<f64>,
    pub catchup_ops_replayed: u64,
    pub catchup_pause_us: u64,
}

pub(crate) fn rules(policy: &str) -> Result<RuleSet, CliError> {
    Ok(match policy {
        // Also by the names of their rule files, as issue 13 calls them.
        "mixed" | "seed000-mixed" => RuleSet::parse(MIXED_RULES, "seed000-mixed.toml")?,
        "exact" | "seed000-exact" => RuleSet::parse(EXACT_RULES, "seed000-exact.toml")?,
        "async" | "ordered" | "sync" => {
            RuleSet::parse(&format!("default = \"{policy}\""), "bench.toml")?
        }
        other => {
            return Err(CliError::Usage(format!(
                "unknown policy `{other}` (mixed or seed000-mixed, exact or seed000-exact, async, ordered, sync)"
            )))
        }
    })
}

pub(crate) fn fresh(subscribers: u64) -> Result<Database, CliError> {
    let db = Database::new();
    telecom::create_tables(&db, subscribers)?;
    Ok(db)
}

pub(crate) fn traffic(args: &ReplicateBenchArgs, rate: Option<f64>) -> Traffic {
    Traffic {
        sessions: args.sessions,
        subscribers: args.subscribers,
        mix: Default::default(),
        rate,
        seed: 11,
    }
}

/// `t` run unreplicated on a fresh database: its report, and this process's CPU time
/// per commit meanwhile, µs.
fn unreplicated(args: &ReplicateBenchArgs, t: &Traffic) -> Result<(TrafficReport, f64), CliError> {
    let db = fresh(args.subscribers)?;
    let cpu_before = process_cpu_us(None);
    let report = run_for(t, &db, args.seconds);
    let cpu_us = process_cpu_us(None).saturating_sub(cpu_before);
    let per_commit = cpu_us as f64 / report.commit_latency_us.len().max(1) as f64;
    Ok((report, per_commit))
}

fn run_for(t: &Traffic, db: &Database, seconds: f64) -> TrafficReport {
    let running = t.start(db);
    std::thread::sleep(Duration::from_secs_f64(seconds));
    running.stop()
}

fn link_config() -> LinkConfig {
    LinkConfig {
        // Cells at 1 % loss see 200 ms retransmissions; keep the peer counted alive.
        peer_timeout: Duration::from_secs(2),
        sync_timeout: Duration::from_secs(2),
        ..LinkConfig::default()
    }
}

/// A link that notices an outage quickly: the catch-up measurement and the demo stop
/// the peer on purpose.
pub fn outage_link_config() -> LinkConfig {
    LinkConfig {
        peer_timeout: Duration::from_millis(300),
        reconnect_max: Duration::from_millis(100),
        ..LinkConfig::default()
    }
}

/// Starts replicating `primary` and waits (up to 10 s) until the link is in step, so
/// that the first commits do not find the peer still connecting.
pub fn start_in_step(primary: &Database, config: ReplicatorConfig) -> Result<Replicator, CliError> {
    let peer = config.peer;
    let replicator = Replicator::start(primary, config)?;
    if !replicator.wait_duplex(Duration::from_secs(10)) {
        return Err(CliError::Usage(format!(
            "the peer at {peer} did not answer within 10 s"
        )));
    }
    Ok(replicator)
}

struct Pair {
    primary: Database,
    replicator: Replicator,
    /// `None` at RTT 0 without loss: the primary connects to the peer directly.
    _proxy: Option<LoopbackProxy>,
    peer: BackupProcess,
    _files: PairFiles,
}

/// A pair's files in a directory of their own: the pre-shared key, and the
/// primary's difference file directory.
pub(crate) struct PairFiles {
    pub dir: tempfile::TempDir,
    pub key_path: std::path::PathBuf,
    pub key: PeerKey,
    pub difference: std::path::PathBuf,
}

impl PairFiles {
    pub fn new() -> Result<PairFiles, CliError> {
        let dir = tempfile::tempdir().map_err(|e| CliError::Usage(format!("tempdir: {e}")))?;
        let key_path = dir.path().join("pair.key");
        let key = crate::nodes::write_key_file(&key_path)?;
        let difference = dir.path().join("difference");
        std::fs::create_dir(&difference)
            .map_err(|e| CliError::Usage(format!("{}: {e}", difference.display())))?;
        Ok(PairFiles {
            dir,
            key_path,
            key,
            difference,
        })
    }
}

fn pair(
    args: &ReplicateBenchArgs,
    policy: &str,
    rtt_ms: f64,
    loss_pct: f64,
) -> Result<Pair, CliError> {
    let primary = fresh(args.subscribers)?;
    let files = PairFiles::new()?;
    // Memory only, like the primary: no access log to fsync.
    let lanes = args.apply_lanes.map(|n| n.to_string());
    let extra: Vec<&str> = match &lanes {
        Some(n) => vec!["--apply-lanes", n],
        None => Vec::new(),
    };
    let peer = BackupProcess::start(files.dir.path(), args.subscribers, &files.key_path, &extra)?;
    let proxy = match proxied(rtt_ms, loss_pct) {
        None => None,
        Some(impairment) => Some(LoopbackProxy::start(peer.addr, impairment)?),
    };
    let replicator = start_in_step(
        &primary,
        ReplicatorConfig {
            key: Some(files.key.clone()),
            peer: proxy.as_ref().map_or(peer.addr, LoopbackProxy::local_addr),
            rules: rules(policy)?,
            link: link_config(),
            difference_dir: files.difference.clone(),
            difference: RecordLogOptions::default(),
        },
    )?;
    Ok(Pair {
        primary,
        replicator,
        _proxy: proxy,
        peer,
        _files: files,
    })
}

/// The backlog drains, each mode twice and each first once: whichever mode drained
/// first after the cells drained slower (seen for either), and one drain of each
/// would put that in their ratio.
pub(crate) const DRAIN_ORDER: [&str; 4] = ["async", "ordered", "ordered", "async"];

/// `a ÷ b`, when both are rates actually measured (positive and finite).
fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0).then(|| a / b)
}

/// What the proxy does at `rtt_ms` and `loss_pct`; `None` where there is nothing
/// to impair, and no proxy (its two extra hops would otherwise be most of a sync
/// commit's time at RTT 0).
fn proxied(rtt_ms: f64, loss_pct: f64) -> Option<Impairment> {
    (rtt_ms != 0.0 || loss_pct != 0.0).then(|| Impairment {
        delay: Duration::from_secs_f64(rtt_ms / 2000.0),
        loss: loss_pct / 100.0,
        ..Impairment::default()
    })
}

pub fn run(args: &ReplicateBenchArgs) -> Result<ReplicateBenchReport, CliError> {
    // A policy it does not know is refused before anything runs.
    for policy in &args.policies {
        rules(policy)?;
    }
    let one_session = args.policies.iter().any(|p| p == "sync")
        && args.rtt_ms.contains(&0.0)
        && args.loss_pct.contains(&0.0);
    // The cells, two unreplicated runs, the drains, the replays and the catch-up.
    let cells_total = args.policies.len() * args.rtt_ms.len() * args.loss_pct.len()
        + 4
        + DRAIN_ORDER.len()
        + usize::from(one_session);
    let bar = ProgressBar::new(cells_total as u64);
    bar.set_style(crate::progress::style("{bar:30} {pos}/{len} {msg}"));
    bar.set_message("unreplicated");
    let t = traffic(args, None);
    let (base, base_cpu_before) = unreplicated(args, &t)?;
    let base_ops = base.ops as f64 / base.elapsed.as_secs_f64();
    bar.inc(1);
    // Before the cells and again after them: an idle VM wakes a blocked thread
    // slower than a busy one (14.6 and 75 µs seen in two runs); the lower is kept.
    bar.set_message("raw TCP round trip");
    let tcp_rtt_us_before = crate::tcp_rtt::median_us()?;
    let mut cells = Vec::new();
    for policy in &args.policies {
        for &rtt in &args.rtt_ms {
            for &loss in &args.loss_pct {
                bar.set_message(format!("{policy} rtt {rtt} ms loss {loss} %"));
                let network_round_trips_per_s = match (policy.as_str(), proxied(rtt, loss)) {
                    ("sync", Some(impairment)) => Some(crate::tcp_rtt::through_proxy_per_s(
                        impairment,
                        args.sessions,
                        Duration::from_secs_f64(args.seconds.min(1.0)),
                    )?),
                    _ => None,
                };
                let p = pair(args, policy, rtt, loss)?;
                let events = p.replicator.events();
                let cpu_before = (process_cpu_us(None), process_cpu_us(Some(p.peer.pid())));
                let r = run_for(&t, &p.primary, args.seconds);
                let cpu_us = process_cpu_us(None).saturating_sub(cpu_before.0);
                let backup_cpu_us = process_cpu_us(Some(p.peer.pid())).saturating_sub(cpu_before.1);
                let secs = r.elapsed.as_secs_f64();
                let ops = r.ops as f64 / secs;
                let commits = r.commit_latency_us.len();
                let downs: Vec<String> = events
                    .try_iter()
                    .filter_map(|e| match e {
                        Event::Diverged { reason, .. } => Some(reason),
                        _ => None,
                    })
                    .collect();
                p.replicator.shutdown();
                let backup = p.peer.finish()?;
                let applied = backup["stats"]["applied"].as_u64().unwrap_or(0);
                cells.push(Cell {
                    policy: policy.clone(),
                    rtt_ms: rtt,
                    loss_pct: loss,
                    ops_per_s: ops,
                    commits_per_s: r.commit_latency_us.len() as f64 / secs,
                    ratio_to_unreplicated: ops / base_ops,
                    throughput_drop_pct: 100.0 * (1.0 - ops / base_ops),
                    commit_latency_us_p50: r.commit_latency_us.value_at_quantile(0.5),
                    commit_latency_us_p99: r.commit_latency_us.value_at_quantile(0.99),
                    failed: r.failed,
                    sessions_per_rtt: (policy == "sync" && rtt > 0.0)
                        .then(|| args.sessions as f64 / (rtt / 1000.0)),
                    network_round_trips_per_s,
                    primary_cpu_us_per_commit: cpu_us as f64 / commits.max(1) as f64,
                    backup_cpu_us_per_commit: backup_cpu_us as f64 / commits.max(1) as f64,
                    cores_busy: cores_busy(cpu_us + backup_cpu_us, secs),
                    backup_apply_ops_per_s: applied as f64 / secs,
                    link_downs: downs.len() as u64,
                    link_down_first_reason: downs.into_iter().next(),
                });
                bar.inc(1);
            }
        }
    }
    let sync_one_session_p50_us = if one_session {
        bar.set_message("sync rtt 0 ms, one session");
        let p = pair(args, "sync", 0.0, 0.0)?;
        let one = Traffic {
            sessions: 1,
            ..traffic(args, None)
        };
        let r = run_for(&one, &p.primary, args.seconds);
        p.replicator.shutdown();
        p.peer.finish()?;
        bar.inc(1);
        Some(r.commit_latency_us.value_at_quantile(0.5))
    } else {
        None
    };
    bar.set_message("unreplicated, again");
    let (_, base_cpu_after) = unreplicated(args, &t)?;
    bar.inc(1);
    let base_cpu_us_per_commit = (base_cpu_before + base_cpu_after) / 2.0;
    let tcp_rtt_us_after = crate::tcp_rtt::median_us()?;
    let tcp_rtt_us = tcp_rtt_us_before.min(tcp_rtt_us_after);
    // At RTT 0 without loss: no proxy in this process, the backup in its own.
    let direct = |policy: &str| {
        cells
            .iter()
            .find(|c| c.policy == policy && c.rtt_ms == 0.0 && c.loss_pct == 0.0)
    };
    let cpu_ratio =
        |policy: &str| direct(policy).map(|c| c.primary_cpu_us_per_commit / base_cpu_us_per_commit);
    let sync_p50_over_tcp_rtt = cells
        .iter()
        .find(|c| c.policy == "sync" && c.rtt_ms == 0.0 && c.loss_pct == 0.0)
        .map(|c| c.commit_latency_us_p50 as f64 / tcp_rtt_us);
    let lanes = args
        .apply_lanes
        .unwrap_or(BackupConfig::default().apply_lanes);
    let mut backup_drain = Vec::new();
    for mode in DRAIN_ORDER {
        bar.set_message(format!("the backup draining a backlog, {mode}"));
        backup_drain.push(drain(args, mode, lanes)?);
        bar.inc(1);
    }
    let backup_apply_ratio_async_over_ordered = crate::measure::async_over_ordered(
        backup_drain.iter().map(|d| (d.mode.as_str(), d.txns_per_s)),
    );
    bar.set_message("the backup replaying its access log, per mode");
    let replays = crate::bench_replay::replays(args)?;
    bar.inc(1);
    bar.set_message("catch-up after an outage");
    let (catchup_ops_per_s, incoming, replayed, pause_us) = catch_up(args)?;
    bar.finish_and_clear();
    Ok(ReplicateBenchReport {
        subscribers: args.subscribers,
        sessions: args.sessions,
        seconds_per_cell: args.seconds,
        unreplicated_ops_per_s: base_ops,
        unreplicated_commit_latency_us_p50: base.commit_latency_us.value_at_quantile(0.5),
        unreplicated_commit_latency_us_p99: base.commit_latency_us.value_at_quantile(0.99),
        tcp_rtt_us,
        tcp_rtt_us_before,
        tcp_rtt_us_after,
        sync_p50_over_tcp_rtt,
        sync_one_session_p50_us,
        sync_one_session_p50_over_tcp_rtt: sync_one_session_p50_us.map(|us| us as f64 / tcp_rtt_us),
        unreplicated_cpu_us_per_commit: base_cpu_us_per_commit,
        unreplicated_cpu_us_per_commit_before: base_cpu_before,
        unreplicated_cpu_us_per_commit_after: base_cpu_after,
        primary_cpu_ratio_async: cpu_ratio("async"),
        primary_cpu_ratio_ordered: cpu_ratio("ordered"),
        backup_apply_ratio_async_over_ordered,
        cells,
        backup_drain,
        backup_replay_ratio_async_over_ordered: replays.ratio_async_over_ordered,
        backup_replay: replays.replays,
        catchup_ops_per_s,
        catchup_incoming_per_s: incoming,
        catchup_ratio: ratio(catchup_ops_per_s, incoming),
        catchup_ops_replayed: replayed,
        catchup_pause_us: pause_us,
    })
}

/// Ordered replication at a steady incoming rate; the peer (with its log) is stopped
/// for the outage, restarted, and timed until `Recovered`.
fn catch_up(args: &ReplicateBenchArgs) -> Result<(f64, f64, u64, u64), CliError> {
    let primary = fresh(args.subscribers)?;
    let log = tempfile::tempdir().map_err(|e| CliError::Usage(format!("tempdir: {e}")))?;
    let dir = tempfile::tempdir().map_err(|e| CliError::Usage(format!("tempdir: {e}")))?;
    let key = PeerKey::random()?;
    let peer_config = || BackupConfig {
        key: Some(key.clone()),
        access_log: AccessLogOptions::default().with_fsync(false),
        log_dir: Some(log.path().to_owned()),
        ..BackupConfig::default()
    };
    let peer = Backup::start(fresh(args.subscribers)?, "127.0.0.1:0", peer_config())?;
    let addr = peer.local_addr();
    let replicator = start_in_step(
        &primary,
        ReplicatorConfig {
            key: Some(key.clone()),
            peer: addr,
            rules: rules("ordered")?,
            link: outage_link_config(),
            difference_dir: dir.path().to_owned(),
            difference: RecordLogOptions::default(),
        },
    )?;
    let events = replicator.events();
    let running = traffic(args, Some(args.catchup_rate)).start(&primary);
    std::thread::sleep(Duration::from_millis(500));
    peer.stop()?;
    let seq_at_outage = replicator.metrics().last_seq;
    let outage_started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.outage));
    let seq_before = replicator.metrics().last_seq;
    let incoming = seq_before.since(seq_at_outage) as f64 / outage_started.elapsed().as_secs_f64();
    // Events from before the outage (e.g. the first connection's) are not this one's.
    while events.try_recv().is_ok() {}
    let peer = Backup::start(fresh(args.subscribers)?, addr, peer_config())?;
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(120);
    let (replayed, pause_us) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Recovered {
                ops_replayed,
                pause_us,
            }) => break (ops_replayed, pause_us),
            Ok(_) => continue,
            Err(_) => return Err(CliError::Usage("the peer never caught up".into())),
        }
    };
    let took = restarted.elapsed().as_secs_f64();
    running.stop();
    replicator.shutdown();
    peer.stop()?;
    Ok((replayed as f64 / took, incoming, replayed, pause_us))
}

pub fn print_table(r: &ReplicateBenchReport) {
    say!(
        "{} subscribers, {} sessions, {} s per cell; unreplicated {:.0} ops/s (commit p50 {} µs, p99 {} µs)",
        r.subscribers,
        r.sessions,
        r.seconds_per_cell,
        r.unreplicated_ops_per_s,
        r.unreplicated_commit_latency_us_p50,
        r.unreplicated_commit_latency_us_p99
    );
    say!(
        "{:<8} {:>7} {:>7} {:>12} {:>12} {:>7} {:>7} {:>9} {:>9} {:>8} {:>12}",
        "policy",
        "rtt ms",
        "loss %",
        "ops/s",
        "commits/s",
        "ratio",
        "drop %",
        "p50 µs",
        "p99 µs",
        "failed",
        "sessions/rtt"
    );
    for c in &r.cells {
        say!(
            "{:<8} {:>7} {:>7} {:>12.0} {:>12.0} {:>7.3} {:>7.1} {:>9} {:>9} {:>8} {:>12}",
            c.policy,
            c.rtt_ms,
            c.loss_pct,
            c.ops_per_s,
            c.commits_per_s,
            c.ratio_to_unreplicated,
            c.throughput_drop_pct,
            c.commit_latency_us_p50,
            c.commit_latency_us_p99,
            c.failed,
            c.sessions_per_rtt
                .map(|b| format!("{b:.0}"))
                .unwrap_or_default()
        );
    }
    for c in &r.cells {
        if let (Some(ideal), Some(network)) = (c.sessions_per_rtt, c.network_round_trips_per_s) {
            say!(
                "sync at RTT {} ms, loss {} %: {:.0} commits/s = {:.3} of sessions ÷ RTT; \
                 the proxy alone carries {:.0} round trips/s ({:.3} of it): commits reach {:.3} of \
                 what the emulated network allows",
                c.rtt_ms,
                c.loss_pct,
                c.commits_per_s,
                c.commits_per_s / ideal,
                network,
                network / ideal,
                c.commits_per_s / network.max(1e-9)
            );
        }
    }
    let direct: Vec<String> = r
        .cells
        .iter()
        .filter(|c| c.rtt_ms == 0.0 && c.loss_pct == 0.0)
        .map(|c| {
            format!(
                "{} {:.2} µs ({:.2}×), backup applies {:.0}/s",
                c.policy,
                c.primary_cpu_us_per_commit,
                c.primary_cpu_us_per_commit / r.unreplicated_cpu_us_per_commit.max(1e-9),
                c.backup_apply_ops_per_s
            )
        })
        .collect();
    say!(
        "primary CPU per commit at RTT 0 (backup in its own process): unreplicated {:.2} µs; {}",
        r.unreplicated_cpu_us_per_commit,
        direct.join("; ")
    );
    say!(
        "raw loopback TCP round trip {:.1} µs (median; {:.1} before the cells, {:.1} after){}",
        r.tcp_rtt_us,
        r.tcp_rtt_us_before,
        r.tcp_rtt_us_after,
        r.sync_p50_over_tcp_rtt
            .map(|x| format!("; sync commit p50 at RTT 0 = {x:.1}× it"))
            .unwrap_or_default()
    );
    if let (Some(us), Some(x)) = (
        r.sync_one_session_p50_us,
        r.sync_one_session_p50_over_tcp_rtt,
    ) {
        say!("sync commit p50 at RTT 0 with one session: {us} µs = {x:.1}× the raw round trip");
    }
    let drains: Vec<String> = r
        .backup_drain
        .iter()
        .map(|d| {
            format!(
                "{} {:.0} txns/s ({} in backlog, {} in parallel lanes of {}, {} lane meetings; \
                 CPU per txn {:.2} µs at the backup, {:.2} µs at the primary)",
                d.mode,
                d.txns_per_s,
                d.backlog_txns,
                d.applied_in_lanes,
                d.apply_lanes,
                d.lane_meetings,
                d.backup_cpu_us_per_txn,
                d.primary_cpu_us_per_txn
            )
        })
        .collect();
    let shown = |x: Option<f64>, digits: usize, unit: &str| {
        x.map_or_else(
            || "unmeasured".to_owned(),
            |x| format!("{x:.digits$}{unit}"),
        )
    };
    say!(
        "backup draining a backlog: {}; async ÷ ordered = {}",
        drains.join("; "),
        shown(r.backup_apply_ratio_async_over_ordered, 2, "")
    );
    say!(
        "catch-up: {:.0} ops/s replayed vs {:.0}/s incoming = {} ({} replayed, commits paused {} µs)",
        r.catchup_ops_per_s,
        r.catchup_incoming_per_s,
        shown(r.catchup_ratio, 1, "×"),
        r.catchup_ops_replayed,
        r.catchup_pause_us
    );
}
