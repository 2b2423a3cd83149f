//! `kirikae bench restructure`: the subscriber workload with an online restructure in
//! the middle, measured side by side before, during and after (and, with
//! `--strategy both`, the lock history against the journal baseline on the same
//! workload).

use std::time::Duration;

use indicatif::ProgressBar;
use kirikae::engine::Database;
use kirikae::restructure::{RestructureOptions, Strategy};
use kirikae_workload::scenario::{self, ScenarioConfig, ScenarioResult};
use kirikae_workload::workload::{self, PLAN_NAMES};
use serde::Serialize;

use crate::CliError;

/// Which synchronization strategy to measure.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrategyArg {
    /// RIDs only (seed 001).
    LockHistory,
    /// After-images (the baseline).
    Journal,
    /// Both, one after the other on the same workload.
    Both,
}

/// Options of `kirikae bench restructure`.
#[derive(clap::Args, Debug)]
// A negative number is a value (refused with its option\'s range), not a flag.
#[command(allow_negative_numbers = true)]
pub struct RestructureBenchArgs {
    /// Subscribers in the table.
    #[arg(long, default_value_t = 1_000_000, value_parser = crate::arg_ranges::rows)]
    pub rows: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2, value_parser = crate::arg_ranges::threads)]
    pub threads: usize,
    /// The plan (demo, add-column, msisdn-to-int, drop-column, rename-column, reorganize).
    #[arg(long, default_value = "demo")]
    pub plan: String,
    /// Lock history, journal, or both side by side.
    #[arg(long, value_enum, default_value_t = StrategyArg::LockHistory)]
    pub strategy: StrategyArg,
    /// Share of reads in the workload.
    #[arg(long, default_value_t = 0.8, value_parser = crate::arg_ranges::share)]
    pub read_ratio: f64,
    /// Unmeasured warm-up seconds.
    #[arg(long, default_value_t = 1.0, value_parser = crate::arg_ranges::seconds)]
    pub warmup: f64,
    /// Baseline seconds measured before the restructure.
    #[arg(long, default_value_t = 2.0, value_parser = crate::arg_ranges::positive_seconds)]
    pub baseline: f64,
    /// Seconds measured after the switch.
    #[arg(long, default_value_t = 1.0, value_parser = crate::arg_ranges::seconds)]
    pub after: f64,
    /// Copy rate limit, rows/s (default: unlimited).
    #[arg(long, value_parser = crate::arg_ranges::rate_limit)]
    pub rate_limit: Option<u64>,
    /// Share of time the copy may work (0 < d ≤ 1); lower favours the foreground.
    #[arg(long, default_value_t = 0.5, value_parser = crate::arg_ranges::duty)]
    pub duty: f64,
    /// Length of one slice of background work, µs (then it rests per --duty).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub work_slice_us: u64,
    /// Longest the restructure may hold writers at a time, µs.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub stall_max_us: u64,
    /// Skip the verification pass.
    #[arg(long)]
    pub no_verify: bool,
    /// Pause after each operation, µs (0: saturated writers). The kernel's timer
    /// slack makes each pause some 50 µs longer than asked.
    #[arg(long, default_value_t = DEFAULT_THINK_US, value_parser = crate::arg_ranges::think_us)]
    pub think_us: u64,
    /// Also copy an idle table of the same size at full duty (no workload, no
    /// verification), twice: first into fresh memory, then into memory the process
    /// already has.
    #[arg(long)]
    pub idle_copy: bool,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Default think time of the bench and the demo, µs.
pub const DEFAULT_THINK_US: u64 = 50;

/// One strategy's figures.
#[derive(Debug, Serialize)]
pub struct RestructureFigures {
    strategy: Strategy,
    plan: String,
    rows: u64,
    threads: usize,
    think_us: u64,
    duty_cycle: f64,
    baseline_ops_per_s: f64,
    during_ops_per_s: f64,
    after_ops_per_s: f64,
    throughput_ratio: f64,
    /// The longest write (as the writer's call took it) that overlapped any hold.
    writer_stall_us_max: u64,
    writes_held: u64,
    write_latency_us_max_before: u64,
    write_latency_us_p99_99_before: u64,
    write_latency_us_max_during: u64,
    write_latency_us_p99_99_during: u64,
    window_s_before: f64,
    window_s_during: f64,
    /// The restructure's own timer of the switch hold (not what writers saw).
    switch_stall_us: u64,
    switch_stall_wait_us: u64,
    switch_stall_drain_us: u64,
    switch_stall_drained: u64,
    switch_attempts: u32,
    holds: usize,
    holds_total_us: u64,
    hold_max_us: u64,
    stall_max_us: u64,
    key_evictions: u64,
    copy_rows_per_s: f64,
    phase1_ms: f64,
    phase2_ms: f64,
    rounds: u32,
    synced: u64,
    history_peak_bytes: u64,
    journal_peak_bytes: u64,
    mismatches: Option<u64>,
    /// `--idle-copy`: the copy rate on an idle table, into fresh memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_copy_rows_per_s: Option<f64>,
    /// `--idle-copy`: the same into memory the process already had.
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_copy_rows_per_s_warm: Option<f64>,
}

/// The whole report: one strategy, or both and their ratios.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RestructureBenchReport {
    /// `--strategy lock-history` or `journal`.
    One(Box<RestructureFigures>),
    /// `--strategy both`.
    Both {
        /// The lock history run.
        lock_history: Box<RestructureFigures>,
        /// The journal run.
        journal: Box<RestructureFigures>,
        /// history peak bytes / journal peak bytes (seed 001 claims ≪ 1).
        memory_ratio: f64,
        /// lock-history phase 2 time / journal phase 2 time.
        phase2_time_ratio: f64,
    },
}

pub(crate) fn figures(r: &ScenarioResult, args: &RestructureBenchArgs) -> RestructureFigures {
    let us = |d: Duration| d.as_micros() as u64;
    RestructureFigures {
        strategy: r.report.strategy,
        plan: args.plan.clone(),
        rows: args.rows,
        threads: args.threads,
        think_us: args.think_us,
        duty_cycle: args.duty,
        baseline_ops_per_s: r.baseline_ops_per_s,
        during_ops_per_s: r.during_ops_per_s,
        after_ops_per_s: r.after_ops_per_s,
        throughput_ratio: r.during_ops_per_s / r.baseline_ops_per_s.max(1e-9),
        writer_stall_us_max: r.writer_stall_us_max,
        writes_held: r.workload.held_writes,
        write_latency_us_max_before: r.before.max_us,
        write_latency_us_p99_99_before: r.before.p99_99_us,
        write_latency_us_max_during: r.during.max_us,
        write_latency_us_p99_99_during: r.during.p99_99_us,
        window_s_before: r.before.seconds,
        window_s_during: r.during.seconds,
        switch_stall_us: us(r.report.stall),
        switch_stall_wait_us: us(r.report.stall_wait),
        switch_stall_drain_us: us(r.report.stall_drain),
        switch_stall_drained: r.report.stall_drained,
        switch_attempts: r.report.switch_attempts,
        holds: r.report.holds.len(),
        holds_total_us: us(r.report.holds_total),
        hold_max_us: us(r.report.hold_max),
        stall_max_us: us(r.report.stall_max),
        key_evictions: r.report.key_evictions,
        copy_rows_per_s: r.report.copy_rows_per_s,
        phase1_ms: r.report.phase1.as_secs_f64() * 1e3,
        phase2_ms: r.report.phase2.as_secs_f64() * 1e3,
        rounds: r.report.rounds,
        synced: r.report.synced,
        history_peak_bytes: r.report.history_peak_bytes,
        journal_peak_bytes: r.report.journal_peak_bytes,
        mismatches: r.report.mismatches,
        idle_copy_rows_per_s: None,
        idle_copy_rows_per_s_warm: None,
    }
}

/// Copies an idle table of `rows` subscribers through `plan` at full duty; returns
/// the copy rate.
fn idle_copy(rows: u64, plan: &kirikae::restructure::Plan) -> Result<f64, CliError> {
    let db = Database::new();
    workload::load_subscribers(&db, rows, &|_| {})?;
    let report = kirikae::restructure::start(
        &db,
        workload::SUBSCRIBER_TABLE,
        plan.clone(),
        RestructureOptions {
            duty_cycle: 1.0,
            ..RestructureOptions::default()
        },
    )?
    .wait()?;
    // The next measurement runs alone: not beside this one's old table being freed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while db.reclaim_stats().pending > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(report.copy_rows_per_s)
}

fn run_one(
    args: &RestructureBenchArgs,
    strategy: Strategy,
) -> Result<RestructureFigures, CliError> {
    let plan = workload::subscriber_plan(&args.plan).ok_or_else(|| {
        CliError::Usage(format!(
            "unknown plan `{}` (one of: {})",
            args.plan,
            PLAN_NAMES.join(", ")
        ))
    })?;
    let db = Database::new();
    let load = ProgressBar::new(args.rows);
    load.set_style(crate::progress::style("load {bar:40} {pos}/{len} rows"));
    workload::load_subscribers(&db, args.rows, &|n| load.set_position(n))?;
    load.finish_and_clear();
    let idle = if args.idle_copy {
        eprintln!("idle copy of {} rows, fresh memory, then warm", args.rows);
        Some((idle_copy(args.rows, &plan)?, idle_copy(args.rows, &plan)?))
    } else {
        None
    };
    let config = ScenarioConfig {
        threads: args.threads,
        read_ratio: args.read_ratio,
        think_us: args.think_us,
        rows: args.rows,
        warmup: Duration::from_secs_f64(args.warmup),
        baseline: Duration::from_secs_f64(args.baseline),
        after: Duration::from_secs_f64(args.after),
        plan,
        options: RestructureOptions {
            strategy,
            verify: !args.no_verify,
            rate_limit_rows_per_s: args.rate_limit,
            duty_cycle: args.duty,
            work_slice: Duration::from_micros(args.work_slice_us),
            stall_max: Duration::from_micros(args.stall_max_us),
            ..RestructureOptions::default()
        },
    };
    let bar = ProgressBar::new_spinner();
    bar.set_style(crate::progress::style("{spinner} {msg}"));
    let result = scenario::run(&db, &config, &mut |tick| {
        let what = match tick.restructure {
            Some(p) => format!(
                "{strategy:?} {:?}: {}/{} rows, history {}, round {}",
                p.phase, p.rows_copied, p.rows_total, p.history, p.round
            ),
            None => format!(
                "phase {}",
                ["warm-up", "baseline", "restructure", "after switch"][tick.sample.phase]
            ),
        };
        bar.set_message(format!("{:>9.0} ops/s  {what}", tick.sample.ops_per_s));
        bar.tick();
    })?;
    bar.finish_and_clear();
    let mut figures = figures(&result, args);
    if let Some((cold, warm)) = idle {
        figures.idle_copy_rows_per_s = Some(cold);
        figures.idle_copy_rows_per_s_warm = Some(warm);
    }
    Ok(figures)
}

/// Runs the benchmark.
pub fn run(args: &RestructureBenchArgs) -> Result<RestructureBenchReport, CliError> {
    Ok(match args.strategy {
        StrategyArg::LockHistory => {
            RestructureBenchReport::One(Box::new(run_one(args, Strategy::LockHistory)?))
        }
        StrategyArg::Journal => {
            RestructureBenchReport::One(Box::new(run_one(args, Strategy::Journal)?))
        }
        StrategyArg::Both => {
            let lock_history = run_one(args, Strategy::LockHistory)?;
            let journal = run_one(args, Strategy::Journal)?;
            RestructureBenchReport::Both {
                memory_ratio: lock_history.history_peak_bytes as f64
                    / journal.journal_peak_bytes.max(1) as f64,
                phase2_time_ratio: lock_history.phase2_ms / journal.phase2_ms.max(1e-9),
                lock_history: Box::new(lock_history),
                journal: Box::new(journal),
            }
        }
    })
}

/// Prints the report as a table.
pub fn print_table(report: &RestructureBenchReport) {
    let rows: Vec<&RestructureFigures> = match report {
        RestructureBenchReport::One(f) => vec![f],
        RestructureBenchReport::Both {
            lock_history,
            journal,
            ..
        } => vec![lock_history, journal],
    };
    say!(
        "{:<28}{}",
        "",
        rows.iter()
            .map(|f| format!("{:>16}", format!("{:?}", f.strategy)))
            .collect::<String>()
    );
    let line = |name: &str, v: &dyn Fn(&RestructureFigures) -> String| {
        say!(
            "{name:<28}{}",
            rows.iter()
                .map(|f| format!("{:>16}", v(f)))
                .collect::<String>()
        );
    };
    line("duty cycle", &|f| format!("{:.2}", f.duty_cycle));
    line("baseline ops/s", &|f| {
        format!("{:.0}", f.baseline_ops_per_s)
    });
    line("during ops/s", &|f| format!("{:.0}", f.during_ops_per_s));
    line("throughput ratio", &|f| {
        format!("{:.3}", f.throughput_ratio)
    });
    line("think µs", &|f| f.think_us.to_string());
    line("writer stall max µs", &|f| {
        f.writer_stall_us_max.to_string()
    });
    line("  writes held", &|f| f.writes_held.to_string());
    line("write max before µs", &|f| {
        f.write_latency_us_max_before.to_string()
    });
    line("write p99.99 before µs", &|f| {
        f.write_latency_us_p99_99_before.to_string()
    });
    line("write max during µs", &|f| {
        f.write_latency_us_max_during.to_string()
    });
    line("write p99.99 during µs", &|f| {
        f.write_latency_us_p99_99_during.to_string()
    });
    line("  windows (before/during) s", &|f| {
        format!("{:.1}/{:.1}", f.window_s_before, f.window_s_during)
    });
    line("holds (count)", &|f| f.holds.to_string());
    line("  longest / total µs", &|f| {
        format!("{}/{}", f.hold_max_us, f.holds_total_us)
    });
    line("switch stall µs (internal)", &|f| {
        f.switch_stall_us.to_string()
    });
    line("  waiting for writers µs", &|f| {
        f.switch_stall_wait_us.to_string()
    });
    line("  final drain µs", &|f| {
        f.switch_stall_drain_us.to_string()
    });
    line("  final drain RIDs", &|f| {
        f.switch_stall_drained.to_string()
    });
    line("copy rows/s (under load)", &|f| {
        format!("{:.0}", f.copy_rows_per_s)
    });
    line("idle copy rows/s (fresh/warm)", &|f| match (
        f.idle_copy_rows_per_s,
        f.idle_copy_rows_per_s_warm,
    ) {
        (Some(c), Some(w)) => format!("{c:.0}/{w:.0}"),
        _ => "-".to_owned(),
    });
    line("key evictions", &|f| f.key_evictions.to_string());
    line("phase 1 ms", &|f| format!("{:.1}", f.phase1_ms));
    line("phase 2 ms", &|f| format!("{:.1}", f.phase2_ms));
    line("rounds", &|f| f.rounds.to_string());
    line("synced RIDs/entries", &|f| f.synced.to_string());
    line("history peak bytes", &|f| f.history_peak_bytes.to_string());
    line("journal peak bytes", &|f| f.journal_peak_bytes.to_string());
    line("mismatches", &|f| {
        f.mismatches
            .map_or("not verified".to_owned(), |m| m.to_string())
    });
    if let RestructureBenchReport::Both {
        memory_ratio,
        phase2_time_ratio,
        ..
    } = report
    {
        say!("memory ratio (history/journal): {memory_ratio:.4}; phase-2 time ratio: {phase2_time_ratio:.3}");
    }
}
