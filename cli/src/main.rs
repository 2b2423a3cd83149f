//! The `kirikae` command: `demo` (the main job) and `bench` (benchmark scenarios).

/// `println!` for the command's output. A closed standard output (the reader went
/// away: a pipe to `head`, a test harness that died) ends the command the way the
/// default SIGPIPE action would, exit status 141, instead of panicking. Defined before
/// the modules so that they all see it.
macro_rules! say {
    () => {
        $crate::stdout_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::stdout_line(format_args!($($arg)*))
    };
}

/// Writes one line to standard output and flushes it; see [`say!`].
fn stdout_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{args}").and_then(|()| out.flush()).is_err() {
        let _ = writeln!(
            std::io::stderr(),
            "kirikae: standard output is closed; stopping"
        );
        std::process::exit(141);
    }
}

mod ack_log;
mod admin_cli;
mod allocator;
mod arg_ranges;
mod bench_drain;
mod bench_engine;
mod bench_failover;
mod bench_replay;
mod bench_replicate;
mod bench_restructure;
mod bench_resync;
mod demo;
mod demo_report;
mod demo_story;
mod measure;
mod memory_hop;
mod node_backup;
mod node_events;
mod node_process;
mod nodes;
mod plot;
mod progress;
mod promoted;
mod scheduled_restructure;
mod tcp_rtt;

use clap::{Parser, Subcommand};

/// mimalloc: faster than the system allocator for the engine's many small rows. With
/// transparent huge pages (its default): without them, freeing a switched-away table
/// stalled writers for tens of milliseconds (README, "Benchmarks").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Errors the command reports before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the engine.
    #[error(transparent)]
    Engine(#[from] kirikae::engine::EngineError),
    /// From SQLite (the benchmark's baseline).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Printing the JSON report.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// From a restructure.
    #[error(transparent)]
    Restructure(#[from] kirikae::restructure::RestructureError),
    /// From the restructure scenario.
    #[error(transparent)]
    Scenario(#[from] kirikae_workload::scenario::ScenarioError),
    /// Writing the plot.
    #[error("plot {path}: {reason}")]
    Plot {
        /// The plot file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// A bad argument value.
    #[error(transparent)]
    Replicate(#[from] kirikae::replicate::ReplicateError),
    #[error("{0}")]
    Usage(String),
    /// `kirikae primary` ended with transactions the peer has not acknowledged.
    #[error(
        "the peer at {peer} did not acknowledge transactions {}..={last_seq} before the \
         end (the link events above say why); what the difference file in {} holds is \
         replayed by a run with --resume",
        acked + 1,
        difference_dir.display()
    )]
    NotCaughtUp {
        /// The peer's address.
        peer: std::net::SocketAddr,
        /// Last transaction committed.
        last_seq: u64,
        /// Last transaction the peer acknowledged.
        acked: u64,
        /// Where the unacknowledged transactions are.
        difference_dir: std::path::PathBuf,
    },
    /// The primary met a node promoted at a higher epoch and stopped accepting writes.
    #[error("fenced: a backup was promoted at epoch {by}; this primary accepts no more writes")]
    Fenced {
        /// The new primary's epoch.
        by: u64,
    },
}

#[derive(Parser, Debug)]
#[command(
    name = "kirikae",
    version,
    about = "Embedded main-memory database: online restructuring and four-mode replication"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The main job: a telecom subscriber workload on a live table, with a report.
    Demo(demo::DemoArgs),
    /// Serve as the backup (applies what a primary sends); `peer` is an alias.
    #[command(alias = "peer")]
    Backup(node_backup::BackupArgs),
    /// Run telecom traffic replicated to a backup.
    Primary(nodes::PrimaryArgs),
    /// A node's status, from its admin endpoint (JSON).
    Status(admin_cli::StatusArgs),
    /// Promote a backup through its admin endpoint.
    Promote(admin_cli::PromoteArgs),
    /// Planned switchover: the primary hands over, the backup is promoted at exactly
    /// that sequence.
    Switchover(admin_cli::SwitchoverArgs),
    /// Benchmark scenarios (machine-readable with --json).
    Bench {
        #[command(subcommand)]
        scenario: BenchScenario,
    },
}

#[derive(Subcommand, Debug)]
enum BenchScenario {
    /// Point reads and updates against SQLite in-memory, side by side.
    Engine(bench_engine::EngineBenchArgs),
    /// The subscriber workload with an online restructure in the middle.
    Restructure(bench_restructure::RestructureBenchArgs),
    /// Replication to a peer over loopback: policies × RTT × loss, and catch-up.
    Replicate(bench_replicate::ReplicateBenchArgs),
    /// Killing the primary under load (per arbiter mode) and planned switchovers.
    Failover(bench_failover::FailoverBenchArgs),
    /// An empty backup joining under the telecom load, whose rate doubles halfway.
    Resync(bench_resync::ResyncBenchArgs),
}

/// Prints a report as JSON on stdout, or as a table.
fn emit<R: serde::Serialize>(json: bool, report: &R, table: fn(&R)) -> Result<(), CliError> {
    if json {
        say!("{}", serde_json::to_string_pretty(report)?);
    } else {
        table(report);
    }
    Ok(())
}

fn main() {
    allocator::configure();
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Backup(args) => node_backup::backup(args),
        Command::Primary(args) => nodes::primary(args),
        Command::Status(args) => admin_cli::status(args),
        Command::Promote(args) => admin_cli::promote(args),
        Command::Switchover(args) => admin_cli::switchover(args),
        Command::Bench {
            scenario: BenchScenario::Engine(args),
        } => bench_engine::run(args).and_then(|r| emit(args.json, &r, bench_engine::print_table)),
        Command::Bench {
            scenario: BenchScenario::Restructure(args),
        } => bench_restructure::run(args)
            .and_then(|r| emit(args.json, &r, bench_restructure::print_table)),
        Command::Bench {
            scenario: BenchScenario::Replicate(args),
        } => bench_replicate::run(args)
            .and_then(|r| emit(args.json, &r, bench_replicate::print_table)),
        Command::Bench {
            scenario: BenchScenario::Failover(args),
        } => {
            bench_failover::run(args).and_then(|r| emit(args.json, &r, bench_failover::print_table))
        }
        Command::Bench {
            scenario: BenchScenario::Resync(args),
        } => bench_resync::run(args).and_then(|r| emit(args.json, &r, bench_resync::print_table)),
    };
    if let Err(e) = outcome {
        eprintln!("kirikae: {e}");
        std::process::exit(1);
    }
}
