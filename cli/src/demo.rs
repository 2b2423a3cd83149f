//! `kirikae demo`: the main job. A telecom subscriber table under a live workload is
//! restructured online in the middle of the run (a new column, and msisdn from text to
//! integer), with live progress, a final report, and a throughput-over-time plot.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar};
use kirikae::engine::Database;
use kirikae::restructure::{Phase, RestructureOptions};
use kirikae_workload::scenario::{self, ScenarioConfig, AFTER};
use kirikae_workload::workload::{self, SUBSCRIBER_TABLE};

use crate::progress::{style, PlainLines};
use crate::CliError;

/// Options of `kirikae demo`.
#[derive(clap::Args, Debug)]
// A negative number is a value (refused with its option\'s range), not a flag.
#[command(allow_negative_numbers = true)]
pub struct DemoArgs {
    /// Subscribers to load.
    #[arg(long, default_value_t = 1_000_000, value_parser = crate::arg_ranges::rows)]
    pub rows: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2, value_parser = crate::arg_ranges::threads)]
    pub threads: usize,
    /// Seconds of workload measured before the restructure (after 1 s of warm-up).
    #[arg(long, default_value_t = 3.0, value_parser = crate::arg_ranges::positive_seconds)]
    pub before: f64,
    /// Seconds of workload measured after the switch.
    #[arg(long, default_value_t = 3.0, value_parser = crate::arg_ranges::seconds)]
    pub after: f64,
    /// Share of operations that are reads.
    #[arg(long, default_value_t = 0.8, value_parser = crate::arg_ranges::share)]
    pub read_ratio: f64,
    /// Share of time the restructure copy may work (lower favours the workload).
    #[arg(long, default_value_t = 0.5, value_parser = crate::arg_ranges::duty)]
    pub duty: f64,
    /// Pause after each operation, µs (0: saturated writers).
    #[arg(long, default_value_t = crate::bench_restructure::DEFAULT_THINK_US, value_parser = crate::arg_ranges::think_us)]
    pub think_us: u64,
    /// Seconds of replicated traffic in the second part (0: skip it).
    #[arg(long, default_value_t = 6.0, value_parser = crate::arg_ranges::seconds)]
    pub replicate: f64,
    /// Subscribers in the replication part.
    #[arg(long, default_value_t = 100_000, value_parser = crate::arg_ranges::rows)]
    pub replicate_subscribers: u64,
    /// Where to write the throughput plot (SVG).
    #[arg(long, default_value = "kirikae-demo.svg")]
    pub plot: PathBuf,
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<(), CliError> {
    // The plot is written at the end: find out now, not after minutes of work, that
    // it cannot be.
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&args.plot)
        .map_err(|e| CliError::Plot {
            path: args.plot.display().to_string(),
            reason: format!("cannot be written: {e}"),
        })?;
    let db = Database::new();
    let bars = MultiProgress::new();
    let load = bars.add(ProgressBar::new(args.rows));
    load.set_style(style(
        "load      [{bar:40}] {pos}/{len} subscribers {per_sec}",
    ));
    let mut plain = PlainLines::for_stderr();
    if plain.enabled() {
        eprintln!("loading {} subscribers", args.rows);
    }
    let started = Instant::now();
    workload::load_subscribers(&db, args.rows, &|n| load.set_position(n))?;
    load.finish();
    let load_s = started.elapsed().as_secs_f64();
    let sample_key = workload::subscriber_key(7);
    let before_row = db.table(SUBSCRIBER_TABLE)?.get(&sample_key);

    let live = bars.add(ProgressBar::new_spinner());
    live.set_style(style("workload  {spinner} {msg}"));
    let copy = bars.add(ProgressBar::new(args.rows));
    copy.set_style(style("copy      [{bar:40}] {pos}/{len} rows  {msg}"));
    let sync = bars.add(ProgressBar::new_spinner());
    sync.set_style(style("sync      {spinner} {msg}"));
    let phase_names = ["warm-up", "baseline", "RESTRUCTURING", "after switch"];
    let config = ScenarioConfig {
        threads: args.threads,
        read_ratio: args.read_ratio,
        think_us: args.think_us,
        rows: args.rows,
        warmup: Duration::from_secs(1),
        baseline: Duration::from_secs_f64(args.before),
        after: Duration::from_secs_f64(args.after),
        plan: workload::subscriber_plan("demo")
            .ok_or_else(|| CliError::Usage("demo plan".into()))?,
        options: RestructureOptions {
            verify: true,
            duty_cycle: args.duty,
            ..RestructureOptions::default()
        },
    };
    let result = scenario::run(&db, &config, &mut |tick| {
        if plain.due(tick.sample.t_s) {
            let restructure = tick.restructure.as_ref().map_or(String::new(), |p| {
                format!(
                    "  {:?}: copied {}/{}, {} RIDs in the lock history, round {}",
                    p.phase, p.rows_copied, p.rows_total, p.history, p.round
                )
            });
            eprintln!(
                "{:>6.1}s {:>10.0} ops/s  {}{restructure}",
                tick.sample.t_s, tick.sample.ops_per_s, phase_names[tick.sample.phase]
            );
        }
        live.set_message(format!(
            "{:>10.0} ops/s   t={:>5.1}s   {}",
            tick.sample.ops_per_s, tick.sample.t_s, phase_names[tick.sample.phase]
        ));
        live.tick();
        if let Some(p) = tick.restructure {
            copy.set_length(p.rows_total.max(1));
            copy.set_position(p.rows_copied);
            if p.phase == Phase::Copying {
                copy.set_message(
                    p.eta
                        .map_or(String::new(), |e| format!("eta {:.1}s", e.as_secs_f64())),
                );
            } else {
                copy.set_message("done".to_owned());
            }
            sync.set_message(format!(
                "{:?}: {} RIDs in the lock history, round {}",
                p.phase, p.history, p.round
            ));
            sync.tick();
        }
    })?;
    live.finish();
    copy.finish();
    sync.finish();

    let r = &result.report;
    let after_row = db.table(SUBSCRIBER_TABLE)?.get(&sample_key);
    say!();
    say!(
        "kirikae demo — {} subscribers (loaded in {load_s:.2} s), {} worker threads, think {} µs",
        args.rows,
        args.threads,
        args.think_us
    );
    say!("  plan: add column plan_id (default 0); msisdn text -> int");
    say!(
        "  throughput  before {:>10.0} ops/s   during {:>10.0} ops/s ({:.0}%)   after {:>10.0} ops/s",
        result.baseline_ops_per_s,
        result.during_ops_per_s,
        100.0 * result.during_ops_per_s / result.baseline_ops_per_s.max(1e-9),
        result.after_ops_per_s
    );
    say!(
        "  restructure phase 1 {:.2} s ({:.0} rows/s), phase 2 {:.2} s ({} rounds, {} RIDs)",
        r.phase1.as_secs_f64(),
        r.copy_rows_per_s,
        r.phase2.as_secs_f64(),
        r.rounds,
        r.synced,
    );
    say!(
        "  switch: the longest write held by it took {} µs as the writer saw it ({} writes held); \
         the switch's own timer: {} µs; {} hold(s), longest {} µs",
        result.writer_stall_us_max,
        result.workload.held_writes,
        r.stall.as_micros(),
        r.holds.len(),
        r.hold_max.as_micros()
    );
    say!(
        "  lock history peak {} KiB; verification: {}",
        r.history_peak_bytes / 1024,
        r.mismatches
            .map_or("not run".to_owned(), |m| format!("{m} mismatches"))
    );
    for (name, w) in [("before", &result.before), ("during", &result.during)] {
        say!(
            "  write latency {name:<6}  p99.99 {:>5} µs  max {:>6} µs  ({} writes in {:.1} s)",
            w.p99_99_us,
            w.max_us,
            w.writes,
            w.seconds
        );
    }
    let after = &result.workload.write_latency_us[AFTER];
    say!(
        "  write latency after   p99.99 {:>5} µs  max {:>6} µs  ({} writes)",
        after.value_at_quantile(0.9999),
        after.max(),
        after.len()
    );
    show_row("  subscriber 7 before", before_row.as_deref());
    show_row("  subscriber 7 after ", after_row.as_deref());
    crate::plot::throughput(
        &args.plot,
        &result.samples,
        result.restructure_window_s,
        "kirikae: subscriber workload during an online restructure",
    )?;
    say!("  throughput plot: {}", args.plot.display());
    if args.replicate > 0.0 {
        crate::demo_replication::run(
            &MultiProgress::new(),
            args.replicate_subscribers,
            args.threads,
            args.replicate,
        )?;
    }
    Ok(())
}

fn show_row(label: &str, row: Option<&[kirikae::engine::Value]>) {
    match row {
        Some(values) => {
            let cells: Vec<String> = values.iter().map(ToString::to_string).collect();
            say!("{label}: ({})", cells.join(", "));
        }
        None => say!("{label}: (missing)"),
    }
}
