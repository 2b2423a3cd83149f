//! `kirikae bench resync`: a backup joins empty while the primary (this process)
//! runs the telecom load; the load's rate doubles once half the rows are copied.
//! The backup is a `kirikae backup` process of its own, so that this process's
//! memory is the primary's alone.
//!
//! Measured: the resync's time (backup started → `Resynced`) and attempts; the
//! primary's throughput and write latency before and during the resync, and its
//! write latency afterwards with the backup in step; the primary's resident memory
//! above what it held before the resync; the backup's access log at its largest
//! (where the transactions beside the copy wait); and the tables' checksums on both
//! sides once the load stops.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kirikae::engine::Database;
use kirikae::replicate::{
    admin_request, Event, LinkConfig, LinkMetrics, RecordLogOptions, Replicator, ReplicatorConfig,
    RuleSet,
};
use kirikae_workload::telecom::{self, Mix, Traffic, TrafficReport};
use serde::Serialize;

use crate::node_process::free_port;
use crate::nodes::{checksums, MIXED_RULES};
use crate::CliError;

/// Options of `kirikae bench resync`.
#[derive(clap::Args, Debug)]
// A negative number is a value (refused with its option\'s range), not a flag.
#[command(allow_negative_numbers = true)]
pub struct ResyncBenchArgs {
    /// Subscribers (rows of the largest table) the backup has to copy.
    #[arg(long, default_value_t = 1_000_000, value_parser = crate::arg_ranges::rows)]
    pub rows: u64,
    /// Concurrent sessions of the load.
    #[arg(long, default_value_t = 4, value_parser = crate::arg_ranges::threads)]
    pub sessions: usize,
    /// Operations per second of the load before the resync and during its first
    /// half (doubled for the second half).
    #[arg(long, default_value_t = 10_000.0, value_parser = crate::arg_ranges::rate)]
    pub rate: f64,
    /// Seconds of load measured before the backup joins.
    #[arg(long, default_value_t = 3.0, value_parser = crate::arg_ranges::positive_seconds)]
    pub before_seconds: f64,
    /// A load of reads and updates only (no inserts), so that the tables do not grow
    /// and the primary's resident memory shows what the resync costs alone.
    #[arg(long)]
    pub updates_only: bool,
    /// A control run instead: no backup joins; the same load runs for this many
    /// seconds (doubling halfway), so that the primary's memory growth under the load
    /// alone can be held beside a resync's (give it the resync's `resync_seconds`).
    #[arg(long, value_parser = crate::arg_ranges::positive_seconds)]
    pub without_backup_seconds: Option<f64>,
    /// The copy's rate limit, MiB/s (0: as fast as the backup takes it).
    #[arg(long, default_value_t = 64)]
    pub copy_mib_per_s: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What the bench measured.
#[derive(Debug, Serialize)]
pub struct ResyncBenchReport {
    pub rows: u64,
    pub updates_only: bool,
    pub sessions: usize,
    /// Offered operations per second before, and in the resync's first half.
    pub rate_before: f64,
    /// Offered in the resync's second half.
    pub rate_second_half: f64,
    pub copy_mib_per_s: u64,
    /// A control run (`--without-backup-seconds`): nothing was copied, and the
    /// "during" fields are the load's alone over the same phases.
    pub control: bool,
    /// From starting the backup to the primary's `Resynced` (a control: its length).
    pub resync_seconds: f64,
    pub resync_attempts: u64,
    pub rows_copied: u64,
    pub ops_per_s_before: f64,
    pub ops_per_s_during: f64,
    /// Share of the offered load served during ÷ the same before (1.0: the resync
    /// took nothing from the load).
    pub primary_throughput_ratio_during: f64,
    pub write_latency_us_p99_before: u64,
    pub write_latency_us_p99_during: u64,
    /// Once the backup is in step, the load of `before` again (`None` in a control):
    /// the latency replication costs without a resync (`before` had no backup).
    pub write_latency_us_p99_after: Option<u64>,
    /// Resident memory of this process above its level just before the resync. It
    /// includes the tables' own growth under the load's inserts and the allocator's
    /// under its updates (a control run measures those alone).
    pub primary_extra_memory_bytes_peak: u64,
    /// What the primary's link held for the backup at most during the resync
    /// (unacknowledged transactions and unsent output, encoded), beside one chunk of
    /// the copy.
    pub primary_resync_held_bytes_peak: u64,
    /// The same measure's spread over the `before` load (no resync): its noise.
    pub primary_memory_noise_bytes: u64,
    /// The backup's access log at its largest during the resync.
    pub backup_buffer_bytes_peak: u64,
    pub checksums_equal: bool,
}

fn tempdir() -> Result<tempfile::TempDir, CliError> {
    tempfile::tempdir().map_err(|e| CliError::Usage(format!("tempdir: {e}")))
}

/// This process's resident set, bytes (0 where `/proc` is missing).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Samples [`rss_bytes`] every 20 ms until stopped: (lowest, highest).
struct RssSampler {
    stop: Arc<AtomicBool>,
    low: Arc<AtomicU64>,
    high: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start() -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let low = Arc::new(AtomicU64::new(u64::MAX));
        let high = Arc::new(AtomicU64::new(0));
        let (s, l, h) = (Arc::clone(&stop), Arc::clone(&low), Arc::clone(&high));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let now = rss_bytes();
                l.fetch_min(now, Ordering::Relaxed);
                h.fetch_max(now, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssSampler {
            stop,
            low,
            high,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.low.load(Ordering::Relaxed),
            self.high.load(Ordering::Relaxed),
        )
    }
}

fn traffic(args: &ResyncBenchArgs, seed: u64) -> Traffic {
    Traffic {
        sessions: args.sessions,
        subscribers: args.rows,
        mix: if args.updates_only {
            Mix {
                reads: 0.2,
                updates: 0.8,
                charges: 0.0,
            }
        } else {
            Mix::default()
        },
        rate: Some(args.rate),
        seed,
    }
}

/// The load at its first rate for `--before-seconds`, with `seed`.
fn load_for_before_seconds(args: &ResyncBenchArgs, db: &Database, seed: u64) -> TrafficReport {
    let running = traffic(args, seed).start(db);
    std::thread::sleep(Duration::from_secs_f64(args.before_seconds));
    running.stop()
}

fn p99(h: &Histogram<u64>) -> u64 {
    h.value_at_quantile(0.99)
}

/// The backup process: `kirikae backup` on `listen`, empty tables, its admin
/// endpoint on `admin`; it prints its checksums when its standard input closes.
fn spawn_backup(
    listen: SocketAddr,
    admin: SocketAddr,
    key: &std::path::Path,
    data: &std::path::Path,
) -> Result<Child, CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::Usage(format!("own path: {e}")))?;
    Command::new(exe)
        .args(["backup", "--listen", &listen.to_string()])
        .args(["--subscribers", "1", "--until-stdin-closes"])
        .args(["--admin", &admin.to_string()])
        .arg("--key-file")
        .arg(key)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| CliError::Usage(format!("spawn the backup: {e}")))
}

/// The backup's access-log bytes, from its admin endpoint.
fn backup_log_bytes(admin: SocketAddr) -> Option<u64> {
    let (status, body) = admin_request(admin, "GET", "/status", None).ok()?;
    let report: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
    report.get("log_bytes")?.as_u64()
}

pub fn run(args: &ResyncBenchArgs) -> Result<ResyncBenchReport, CliError> {
    eprintln!("loading {} subscribers …", args.rows);
    let primary = Database::new();
    telecom::create_tables(&primary, args.rows)?;
    let (diff, data) = (tempdir()?, tempdir()?);
    let key_path = data.path().with_extension("key");
    let key = crate::nodes::write_key_file(&key_path)?;
    let (listen, admin) = (free_port()?, free_port()?);
    let replicator = Replicator::start(
        &primary,
        ReplicatorConfig {
            key: Some(key),
            peer: listen,
            rules: RuleSet::parse(MIXED_RULES, "seed000-mixed.toml")?,
            link: LinkConfig {
                copy_bytes_per_s: args.copy_mib_per_s.saturating_mul(1 << 20),
                ..LinkConfig::default()
            },
            difference_dir: diff.path().to_owned(),
            difference: RecordLogOptions::default(),
        },
    )?;
    let events = replicator.events();

    eprintln!("load alone for {} s …", args.before_seconds);
    let noise = RssSampler::start();
    let before = load_for_before_seconds(args, &primary, 1);
    let (noise_low, noise_high) = noise.stop();
    let ops_per_s_before = before.ops as f64 / before.elapsed.as_secs_f64();

    let first = traffic(args, 2).start(&primary);
    let baseline = rss_bytes();
    let memory = RssSampler::start();
    let mut child = match args.without_backup_seconds {
        None => Some(spawn_backup(
            listen,
            admin,
            &key_path,
            &data.path().join("log"),
        )?),
        Some(_) => None,
    };
    let started = Instant::now();
    let mut second = None;
    let mut second_started = None;
    let mut buffer_peak = 0u64;
    let deadline = started + Duration::from_secs(3_600);
    let bar = indicatif::ProgressBar::new(args.rows);
    bar.set_style(crate::progress::style(
        "{prefix:>12} [{bar:30}] {pos}/{len} rows {msg}",
    ));
    bar.set_prefix("resync");
    let rows_copied = loop {
        let m: LinkMetrics = replicator.metrics();
        // A control's "copy" is its clock.
        let progress = match args.without_backup_seconds {
            None => m.copied_rows,
            Some(s) => (started.elapsed().as_secs_f64() / s * args.rows as f64) as u64,
        };
        bar.set_position(progress.min(args.rows));
        if args.without_backup_seconds.is_some() && progress >= args.rows {
            break 0;
        }
        if second.is_none() && progress >= args.rows / 2 {
            second = Some(traffic(args, 3).start(&primary));
            second_started = Some(Instant::now());
            bar.set_message("load doubled");
        }
        if let Some(bytes) = child.as_ref().and_then(|_| backup_log_bytes(admin)) {
            buffer_peak = buffer_peak.max(bytes);
        }
        match events.recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Resynced { rows, .. }) => break rows,
            Ok(e) => {
                // Why an attempt ended, for the operator watching.
                bar.println(format!("{:>6.1}s {e}", started.elapsed().as_secs_f64()));
                continue;
            }
            Err(_) if Instant::now() < deadline => continue,
            _ => return Err(CliError::Usage("no Resynced within an hour".into())),
        }
    };
    let resync_seconds = started.elapsed().as_secs_f64();
    let held_peak = replicator.metrics().held_bytes_peak;
    bar.finish_with_message(format!("in {resync_seconds:.1} s"));
    let during_elapsed = started.elapsed().as_secs_f64();
    let (_, memory_high) = memory.stop();
    let first = first.stop();
    let second_report = second.map(|s| s.stop());
    let mut during_hist = first.commit_latency_us.clone();
    let mut ops_during = first.ops as f64;
    if let Some(s) = &second_report {
        during_hist
            .add(&s.commit_latency_us)
            .map_err(|e| CliError::Usage(format!("histograms: {e}")))?;
        ops_during += s.ops as f64;
    }
    let second_half = second_started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let offered_during = args.rate * (during_elapsed + second_half);
    let ops_per_s_during = ops_during / during_elapsed;
    let served_during = ops_during / offered_during;
    let served_before = before.ops as f64 / (args.rate * before.elapsed.as_secs_f64());

    // The same load with the backup in step: the replication's own price (a sync
    // commit waits for the backup), which `before` (no backup yet) does not pay.
    let after = match child {
        Some(_) if replicator.wait_caught_up(Duration::from_secs(120)) => {
            eprintln!(
                "the same load, backup in step, for {} s …",
                args.before_seconds
            );
            Some(load_for_before_seconds(args, &primary, 4))
        }
        _ => None,
    };

    let attempts = replicator.metrics().resyncs;
    let checksums_equal = match child.as_mut() {
        Some(child) => backup_caught_up_and_equal(&primary, &replicator, child)?,
        None => false,
    };
    replicator.shutdown();
    std::io::stderr().flush().ok();
    Ok(ResyncBenchReport {
        rows: args.rows,
        updates_only: args.updates_only,
        sessions: args.sessions,
        rate_before: args.rate,
        rate_second_half: args.rate * 2.0,
        copy_mib_per_s: args.copy_mib_per_s,
        control: args.without_backup_seconds.is_some(),
        resync_seconds,
        resync_attempts: attempts,
        rows_copied,
        ops_per_s_before,
        ops_per_s_during,
        primary_throughput_ratio_during: served_during / served_before,
        write_latency_us_p99_before: p99(&before.commit_latency_us),
        write_latency_us_p99_after: after.as_ref().map(|a| p99(&a.commit_latency_us)),
        write_latency_us_p99_during: p99(&during_hist),
        primary_extra_memory_bytes_peak: memory_high.saturating_sub(baseline),
        primary_memory_noise_bytes: noise_high.saturating_sub(noise_low),
        primary_resync_held_bytes_peak: held_peak,
        backup_buffer_bytes_peak: buffer_peak,
        checksums_equal,
    })
}

/// Once the load stopped: whether the backup caught up and its tables' checksums
/// (printed once its standard input closes) equal the primary's.
fn backup_caught_up_and_equal(
    primary: &Database,
    replicator: &Replicator,
    child: &mut Child,
) -> Result<bool, CliError> {
    eprintln!("load stopped; waiting for the backup to catch up …");
    let caught_up = replicator.wait_caught_up(Duration::from_secs(120));
    let primary_sums = checksums(primary)?;
    drop(child.stdin.take());
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| CliError::Usage("the backup's stdout".into()))?;
    let mut backup_sums = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            backup_sums = v.get("checksums").cloned();
        }
    }
    let _ = child.wait();
    Ok(caught_up
        && backup_sums.is_some_and(|b| serde_json::to_value(&primary_sums).is_ok_and(|p| p == b)))
}

pub fn print_table(r: &ResyncBenchReport) {
    if r.control {
        println!(
            "control: no backup; {:.0} → {:.0} ops/s offered for {:.1} s",
            r.rate_before, r.rate_second_half, r.resync_seconds
        );
    } else {
        println!(
            "resync of {} rows ({} copied) at ≤{} MiB/s under {:.0} → {:.0} ops/s offered",
            r.rows, r.rows_copied, r.copy_mib_per_s, r.rate_before, r.rate_second_half
        );
        println!(
            "  took {:.2} s in {} attempt(s); checksums equal: {}",
            r.resync_seconds, r.resync_attempts, r.checksums_equal
        );
    }
    println!(
        "  primary: {:.0} ops/s before, {:.0} during; served share during/before {:.3}",
        r.ops_per_s_before, r.ops_per_s_during, r.primary_throughput_ratio_during
    );
    println!(
        "  write latency p99: {} µs before, {} µs during",
        r.write_latency_us_p99_before, r.write_latency_us_p99_during
    );
    if let Some(after) = r.write_latency_us_p99_after {
        println!("  write latency p99 with the backup in step afterwards: {after} µs");
    }
    println!(
        "  primary extra memory peak {:.1} MiB (noise {:.1} MiB; link held {:.1} MiB); backup buffer peak {:.1} MiB",
        r.primary_extra_memory_bytes_peak as f64 / 1048576.0,
        r.primary_memory_noise_bytes as f64 / 1048576.0,
        r.primary_resync_held_bytes_peak as f64 / 1048576.0,
        r.backup_buffer_bytes_peak as f64 / 1048576.0
    );
}
