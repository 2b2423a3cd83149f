//! `kirikae demo`: the main job. Loads a subscriber table and runs the telecom
//! workload on it with live progress, then prints a report.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use kirikae::engine::Database;
use kirikae::workload::{self, KeyChooser, Workload};

use crate::CliError;

/// Options of `kirikae demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Subscribers to load.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Seconds of workload.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Share of operations that are reads.
    #[arg(long, default_value_t = 0.8)]
    pub read_ratio: f64,
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<(), CliError> {
    let db = Database::new();
    let load = bar(args.rows, "load     [{bar:40}] {pos}/{len} rows {per_sec}");
    let started = Instant::now();
    workload::load_subscribers(&db, args.rows, &|n| load.set_position(n))?;
    load.finish();
    let load_s = started.elapsed().as_secs_f64();

    let duration = Duration::from_secs_f64(args.seconds);
    let running = Workload {
        threads: args.threads,
        read_ratio: args.read_ratio,
        keys: KeyChooser::hot_set(args.rows),
    }
    .start(&db);
    let live = bar(duration.as_millis() as u64, "workload [{bar:40}] {msg}");
    let started = Instant::now();
    let (mut last_ops, mut last_t) = (0u64, Instant::now());
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(100));
        let (ops, now) = (running.ops(), Instant::now());
        let rate = (ops - last_ops) as f64 / (now - last_t).as_secs_f64();
        (last_ops, last_t) = (ops, now);
        live.set_position(started.elapsed().as_millis() as u64);
        live.set_message(format!("{rate:>10.0} ops/s"));
    }
    let report = running.stop();
    let elapsed = started.elapsed().as_secs_f64();
    live.finish();

    let ops = report.reads + report.writes;
    let lat = &report.write_latency_us[0];
    println!(
        "kirikae demo: {} subscribers loaded in {load_s:.2} s",
        args.rows
    );
    println!(
        "  {} threads, {:.0}% reads: {:.0} ops/s ({} reads, {} writes, {} retries)",
        args.threads,
        args.read_ratio * 100.0,
        ops as f64 / elapsed,
        report.reads,
        report.writes,
        report.retries
    );
    println!(
        "  write latency: p50 {} µs, p99 {} µs, max {} µs",
        lat.value_at_quantile(0.5),
        lat.value_at_quantile(0.99),
        lat.max()
    );
    Ok(())
}
