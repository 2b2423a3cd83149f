//! `kirikae backup`: the backup end of replication as a process, over the same
//! deterministic telecom tables as `kirikae primary`; restructures its primary
//! announces run here too, and once promoted it can serve (`--serve-after-promotion`).

use std::collections::VecDeque;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use kirikae::engine::Database;
use kirikae::replicate::{
    AccessLogOptions, Arbiter, Backup, BackupConfig, BackupEvent, CatalogChangeAt, EtcdArbiter,
};
use kirikae::restructure::RestructureOptions;
use kirikae::RestructureReplica;
use kirikae_workload::telecom;

use crate::node_events;
use crate::nodes::{checksums, load_key, resolve, serve_admin, unshare, EtcdArgs, ReportArgs};
use crate::promoted::{self, ServeConfig, Serving};
use crate::scheduled_restructure::schemas;
use crate::CliError;

#[derive(Args, Debug)]
// A negative number is a value (refused with its option\'s range), not a flag.
#[command(allow_negative_numbers = true)]
pub struct BackupArgs {
    /// Address to listen on (port 0: any free port; the chosen address is printed).
    #[arg(long)]
    listen: String,
    /// Subscribers in the initial tables (must match the primary's).
    #[arg(long, default_value_t = 10_000, value_parser = crate::arg_ranges::rows)]
    subscribers: u64,
    /// Log applied transactions here, so a restarted peer recovers its tables.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Lanes applying async transactions in parallel by key (1: in sequence, like
    /// ordered ones). Default: one per core
    /// beyond the first, at most 4 (`BackupConfig::apply_lanes`).
    #[arg(long, value_parser = crate::arg_ranges::apply_lanes)]
    apply_lanes: Option<usize>,
    /// Do not fsync the log (faster; a machine crash may lose acknowledged work).
    #[arg(long)]
    no_fsync: bool,
    /// The pair's pre-shared key (at least 16 bytes, e.g. `openssl rand -hex 32`);
    /// only a primary holding the same key is served. Without it, anyone who can
    /// reach the port is trusted.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Who decides a takeover: `manual` (an operator, once the primary is confirmed
    /// cut off) or `peer` (this backup, after `--failover-after-ms` of silence from
    /// its primary; a partition can then make two primaries).
    #[arg(long, value_enum, default_value_t = ArbiterArg::Manual)]
    arbiter: ArbiterArg,
    /// With `--arbiter peer` or `etcd`: the primary's silence that counts as its
    /// failure.
    #[arg(long, default_value_t = 2_000, value_parser = crate::arg_ranges::failover_ms)]
    failover_after_ms: u64,
    /// Anti-flap: after a takeover (a new epoch), no automatic promotion for this
    /// long (an operator still can).
    #[arg(long, default_value_t = 60_000)]
    auto_promotion_window_ms: u64,
    #[command(flatten)]
    etcd: EtcdArgs,
    /// Serve the admin endpoint here (`/metrics`, `/role`, `/status`, `POST
    /// /promote`); operator commands need the key file's admin token.
    #[arg(long)]
    admin: Option<String>,
    /// Stop when standard input closes, printing the tables' checksums as JSON.
    #[arg(long)]
    until_stdin_closes: bool,
    /// Once promoted, serve: replicate to this address (the old primary's node,
    /// restarted as a backup), take writes, and run the telecom traffic
    /// (`--sessions`, `--rate`) until stopped.
    #[arg(long, value_parser = resolve, requires = "difference_dir")]
    serve_after_promotion: Option<SocketAddr>,
    /// With `--serve-after-promotion`: the new primary's difference file (empty).
    #[arg(long)]
    difference_dir: Option<PathBuf>,
    /// With `--serve-after-promotion`: the traffic's sessions.
    #[arg(long, default_value_t = 2, value_parser = crate::arg_ranges::threads)]
    sessions: usize,
    /// With `--serve-after-promotion`: the traffic's operations per second.
    #[arg(long, value_parser = crate::arg_ranges::rate)]
    rate: Option<f64>,
    /// With `--serve-after-promotion`: the old primary's `--ack-log`; every commit
    /// it acknowledged as replicated is looked up here once promoted.
    #[arg(long)]
    check_ack_log: Option<PathBuf>,
    #[command(flatten)]
    report: ReportArgs,
}

/// `--arbiter`'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ArbiterArg {
    /// Only an operator promotes.
    Manual,
    /// The backup promotes itself after its primary's silence.
    Peer,
    /// etcd decides: the backup promotes only once it holds the pair's leader key.
    Etcd,
}

pub fn backup(args: &BackupArgs) -> Result<(), CliError> {
    let key = load_key(args.key_file.as_ref())?;
    let db = Database::new();
    telecom::create_tables(&db, args.subscribers)?;
    let config = BackupConfig {
        key: key.clone(),
        log_dir: args.data_dir.clone(),
        access_log: AccessLogOptions::default().with_fsync(!args.no_fsync),
        arbiter: match args.arbiter {
            ArbiterArg::Manual => Arbiter::Manual,
            ArbiterArg::Peer => Arbiter::Peer {
                failover_after: Duration::from_millis(args.failover_after_ms),
            },
            ArbiterArg::Etcd => Arbiter::Etcd(EtcdArbiter {
                endpoint: args.etcd.etcd.ok_or_else(|| {
                    CliError::Usage("--arbiter etcd needs --etcd HOST:PORT".into())
                })?,
                prefix: args.etcd.etcd_prefix.clone(),
                lease_ttl: Duration::from_millis(args.etcd.lease_ttl_ms),
                failover_after: Duration::from_millis(args.failover_after_ms),
                call_timeout: Duration::from_millis(500),
            }),
        },
        auto_promotion_window: Duration::from_millis(args.auto_promotion_window_ms),
        // Restructures the primary announces run here too, copying at full duty:
        // this node has no clients of its own to favour, and a copy that lags the
        // primary's makes the apply wait at the primary's `Switching` (and the
        // primary's sync commits with it).
        ddl: Some(Arc::new(RestructureReplica::new(RestructureOptions {
            duty_cycle: 1.0,
            ..RestructureOptions::default()
        }))),
        apply_lanes: args
            .apply_lanes
            .unwrap_or(BackupConfig::default().apply_lanes),
        ..BackupConfig::default()
    };
    let peer = Arc::new(Backup::start(db.clone(), args.listen.as_str(), config)?);
    let events = peer.events();
    let started = Instant::now();
    let status = peer.status();
    say!(
        "kirikae backup listening on {} (recovered {} transactions, at sequence {})",
        peer.local_addr(),
        status.stats.recovered,
        status.last_seq
    );
    let admin = serve_admin(args.admin.as_deref(), &peer, key.as_ref())?;
    let stdin_closed = args.until_stdin_closes.then(watch_stdin);
    let serve = args.serve_after_promotion.map(|peer| ServeConfig {
        peer,
        key: key.clone(),
        difference_dir: args.difference_dir.clone().unwrap_or_default(),
        rules: None,
        sessions: args.sessions,
        subscribers: args.subscribers,
        rate: args.rate,
        check_ack_log: args.check_ack_log.clone(),
        report: args.report,
    });
    let mut serving: Option<Serving> = None;
    let mut catalog_seen = CatalogSeen::default();
    let tick = Duration::from_millis(args.report.status_every_ms);
    let mut last_status = Instant::now();
    loop {
        let done = match &stdin_closed {
            Some(closed) => closed.load(Ordering::SeqCst),
            None => peer.is_finished(),
        };
        if done {
            break;
        }
        for e in events.try_iter() {
            let BackupEvent::Promoted { promotion, by } = e;
            say!(
                "{:>6.1}s Promoted at {} after sequence {} ({by}); in doubt: {} committed, {} rolled back; unix ms {}",
                started.elapsed().as_secs_f64(),
                promotion.epoch,
                promotion.last_seq,
                promotion.in_doubt_committed.len(),
                promotion.in_doubt_dropped.len(),
                crate::ack_log::unix_ms(std::time::SystemTime::now())
            );
            if let (Some(config), None) = (&serve, &serving) {
                let s = promoted::serve(&db, &promotion, peer.take_leadership(), config)?;
                if args.report.events {
                    node_events::emit(s.failover.clone());
                }
                serving = Some(s);
            }
        }
        if args.report.events {
            for change in catalog_seen.new_ones(&peer.status().stats.catalog_changes) {
                let mut value = serde_json::json!(change);
                value["event"] = "catalog_applied".into();
                node_events::emit(value);
            }
        }
        if let Some(s) = &serving {
            for e in s.events() {
                say!("{:>6.1}s {e}", started.elapsed().as_secs_f64());
            }
            if last_status.elapsed() >= tick {
                last_status = Instant::now();
                s.status();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let served = serving.map(Serving::finish);
    let status = peer.status();
    drop(admin);
    if let Some(peer) = unshare(peer) {
        peer.stop()?;
    }
    let report = serde_json::json!({
        "last_seq": status.last_seq,
        "epoch": status.epoch,
        "promoted": status.promoted,
        "handshakes_refused": status.handshakes_refused,
        "takeovers_refused": status.takeovers_refused,
        "last_takeover_refusal": status.last_takeover_refusal,
        "stats": status.stats,
        "served": served,
        "schemas": schemas(&db),
        "checksums": checksums(&db)?,
    });
    say!("{report}");
    Ok(())
}

/// A flag set once standard input closes (read on a thread of its own).
fn watch_stdin() -> Arc<AtomicBool> {
    let closed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&closed);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() {
                break;
            }
        }
        flag.store(true, Ordering::SeqCst);
    });
    closed
}

/// The catalog changes already told, to tell each once.
#[derive(Default)]
struct CatalogSeen {
    /// The sequence of the last one told.
    last: Option<kirikae::replicate::Seq>,
}

impl CatalogSeen {
    /// Those of `changes` (oldest first) after the last one told.
    fn new_ones<'c>(&mut self, changes: &'c VecDeque<CatalogChangeAt>) -> Vec<&'c CatalogChangeAt> {
        let fresh: Vec<_> = changes.iter().filter(|c| c.seq > self.last).collect();
        if let Some(last) = fresh.last() {
            self.last = last.seq;
        }
        fresh
    }
}
