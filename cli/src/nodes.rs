//! `kirikae primary`, and what it shares with `kirikae backup` (`node_backup.rs`):
//! the two ends of replication as real processes, both starting from the same
//! deterministic telecom tables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use kirikae::engine::Database;
use kirikae::replicate::etcd::Etcd;
use kirikae::replicate::{
    leader_key, table_checksum, AdminNode, AdminServer, Leadership, LinkConfig, LinkMetrics,
    PeerKey, RecordLogOptions, Rejoin, Replicator, ReplicatorConfig, RuleSet, ADMIN_IO_TIMEOUT,
};
use kirikae_workload::telecom::{self, Traffic};

use crate::node_events;
use crate::scheduled_restructure::{schemas, ScheduledRestructure};
use crate::CliError;

/// The mixed policy of seed 000, built in (also in replicate/rules/seed000-mixed.toml).
pub const MIXED_RULES: &str = include_str!("../../replicate/rules/seed000-mixed.toml");

/// Where the pair's etcd is (`--etcd`), for `--arbiter etcd` and the primary's
/// leader key.
#[derive(Args, Debug, Clone)]
pub struct EtcdArgs {
    /// An etcd endpoint (`HOST:PORT` of a client URL).
    #[arg(long, value_parser = resolve)]
    pub etcd: Option<SocketAddr>,
    /// The pair's key prefix in etcd.
    #[arg(long, default_value = "/kirikae/pair")]
    pub etcd_prefix: String,
    /// The leader lease's time to live.
    #[arg(long, default_value_t = 2_000, value_parser = crate::arg_ranges::failover_ms)]
    pub lease_ttl_ms: u64,
}

impl EtcdArgs {
    fn etcd(&self) -> Option<Etcd> {
        self.etcd.map(|e| Etcd::new(e, Duration::from_millis(500)))
    }
}

/// Checksums of the telecom tables.
pub fn checksums(db: &Database) -> Result<BTreeMap<String, u64>, CliError> {
    let mut out = BTreeMap::new();
    for t in telecom::TABLES {
        out.insert(t.to_owned(), table_checksum(&*db.table(t)?));
    }
    Ok(out)
}

/// A fresh pair key written to `path`, for the processes a demo or a bench starts
/// to read with `--key-file`.
pub(crate) fn write_key_file(path: &Path) -> Result<PeerKey, CliError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let text = format!("kirikae-pair-{nanos}-{}", std::process::id());
    std::fs::write(path, &text)
        .map_err(|e| CliError::Usage(format!("key file {}: {e}", path.display())))?;
    Ok(PeerKey::from_file(path)?)
}

/// The key in `path`, or a warning that the pair is not authenticated.
pub(crate) fn load_key(path: Option<&PathBuf>) -> Result<Option<PeerKey>, CliError> {
    match path {
        Some(p) => Ok(Some(PeerKey::from_file(p)?)),
        None => {
            eprintln!("warning: no --key-file: the replication pair is not authenticated");
            Ok(None)
        }
    }
}

#[derive(Args, Debug)]
// A negative number is a value (refused with its option\'s range), not a flag.
#[command(allow_negative_numbers = true)]
pub struct PrimaryArgs {
    /// The peer's address (`HOST:PORT`; a name such as `localhost` is resolved).
    #[arg(long, value_parser = resolve)]
    peer: SocketAddr,
    /// Directory of the difference file. It must be empty, unless `--resume`.
    #[arg(long)]
    difference_dir: PathBuf,
    /// Use a difference directory left by an earlier run: what it holds is replayed
    /// into the peer. Without it such a directory is refused, so that stale
    /// transactions never reach a fresh peer.
    #[arg(long)]
    resume: bool,
    /// The pair's pre-shared key (the backup's `--key-file`).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Write one JSON line per acknowledged commit here (table, key, how it was
    /// replicated, sequence), flushed before the session goes on.
    #[arg(long)]
    ack_log: Option<PathBuf>,
    /// With `--etcd`: hold the pair's leader key (its revision is this primary's
    /// epoch) and accept writes only while its lease is alive.
    #[command(flatten)]
    etcd: EtcdArgs,
    /// Serve the admin endpoint here (`/metrics`, `/role`, `/status`, `POST
    /// /hand-over`); operator commands need the key file's admin token.
    #[arg(long)]
    admin: Option<String>,
    /// Rule file (default: the built-in seed-000 mixed policy).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Subscribers in the initial tables (must match the peer's).
    #[arg(long, default_value_t = 10_000, value_parser = crate::arg_ranges::rows)]
    subscribers: u64,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 2, value_parser = crate::arg_ranges::threads)]
    sessions: usize,
    /// Operations per second over all sessions (default: as fast as possible).
    #[arg(long, value_parser = crate::arg_ranges::rate)]
    rate: Option<f64>,
    /// How long to run (0: until SIGINT or SIGTERM, which end the run with the same
    /// final report).
    #[arg(long, default_value_t = 5.0, value_parser = crate::arg_ranges::seconds)]
    seconds: f64,
    /// The resync copy's rate limit, MiB/s (0: as fast as the peer takes it): what a
    /// peer that must be copied (empty, or past catching up) may take from this
    /// primary.
    #[arg(long, default_value_t = 64)]
    copy_mib_per_s: u64,
    /// Restructure the subscriber table online this many seconds into the run (the
    /// backup runs the same plan and switches at the same point of the stream).
    #[arg(long, value_parser = crate::arg_ranges::seconds)]
    restructure_at_s: Option<f64>,
    /// The plan of `--restructure-at-s` (demo, add-column, msisdn-to-int,
    /// drop-column, rename-column, reorganize).
    #[arg(long, default_value = "demo")]
    plan: String,
    #[command(flatten)]
    report: ReportArgs,
}

/// How a node reports as it runs.
#[derive(Args, Debug, Clone, Copy)]
pub struct ReportArgs {
    /// A status line this often.
    #[arg(long, default_value_t = 500, value_parser = crate::arg_ranges::status_every_ms)]
    pub status_every_ms: u64,
    /// Also print event lines (`event {json}`) for a process that drives this one:
    /// status, restructure, catalog changes, promotion, first write.
    #[arg(long)]
    pub events: bool,
}

/// The status line of a node serving writes (and its event line, with `--events`).
pub(crate) fn status_line(report: &ReportArgs, started: Instant, ops: u64, m: &LinkMetrics) {
    let t_s = started.elapsed().as_secs_f64();
    say!(
        "{t_s:>6.1}s ops {ops:>9} state {:?} seq {} acked {} difference {} B",
        m.state,
        m.last_seq,
        m.last_acked_seq,
        m.difference_bytes
    );
    if report.events {
        node_events::emit(serde_json::json!({
            "event": "status",
            "t_s": t_s,
            "ops": ops,
            "state": m.state.map(|s| format!("{s:?}")),
            "seq": m.last_seq.0,
            "acked": m.last_acked_seq.0,
        }));
    }
}

/// Serves `node`'s admin endpoint on `addr`, if given (commands need `key`'s admin
/// token).
pub(crate) fn serve_admin<N: AdminNode>(
    addr: Option<&str>,
    node: &Arc<N>,
    key: Option<&PeerKey>,
) -> Result<Option<AdminServer>, CliError> {
    let Some(addr) = addr else { return Ok(None) };
    let node: Arc<dyn AdminNode> = node.clone();
    let server = AdminServer::start(addr, node, key.cloned())?;
    say!("admin endpoint on http://{}", server.local_addr());
    Ok(Some(server))
}

/// `node` back from the admin endpoint's request threads once the endpoint is
/// stopped (each ends within its I/O timeout); `None` if one outlives that (the node
/// then stops when the last one lets go of it).
pub(crate) fn unshare<N>(mut node: Arc<N>) -> Option<N> {
    let deadline = Instant::now() + ADMIN_IO_TIMEOUT * 3;
    loop {
        match Arc::try_unwrap(node) {
            Ok(n) => return Some(n),
            Err(shared) if Instant::now() < deadline => {
                node = shared;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return None,
        }
    }
}

/// `HOST:PORT` to the first address it resolves to.
pub fn resolve(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("`{s}`: {e} (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| format!("`{s}` resolves to no address"))
}

/// Refuses a difference directory that already holds files, unless resuming.
fn check_difference_dir(dir: &Path, resume: bool) -> Result<(), CliError> {
    let held: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect(),
        // Created by the replicator.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(CliError::Usage(format!(
                "--difference-dir {}: {e}",
                dir.display()
            )))
        }
    };
    if held.is_empty() || resume {
        return Ok(());
    }
    Err(CliError::Usage(format!(
        "--difference-dir {} holds {} from an earlier run ({}): pass --resume to replay \
         it into the peer, or choose an empty directory",
        dir.display(),
        if held.len() == 1 { "a file" } else { "files" },
        held.join(", ")
    )))
}

pub fn load_rules(path: Option<&PathBuf>) -> Result<RuleSet, CliError> {
    Ok(match path {
        Some(p) => RuleSet::load(p)?,
        None => RuleSet::parse(MIXED_RULES, "seed000-mixed.toml")?,
    })
}

pub fn primary(args: &PrimaryArgs) -> Result<(), CliError> {
    let rules = load_rules(args.rules.as_ref())?;
    let key = load_key(args.key_file.as_ref())?;
    let ack_log = args
        .ack_log
        .as_deref()
        .map(crate::ack_log::open)
        .transpose()?;
    check_difference_dir(&args.difference_dir, args.resume)?;
    // SIGINT and SIGTERM end the traffic; the final wait and report still happen.
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| CliError::Usage(format!("cannot handle SIGINT/SIGTERM: {e}")))?;
    let db = Database::new();
    telecom::create_tables(&db, args.subscribers)?;
    let leadership = match args.etcd.etcd() {
        Some(etcd) => {
            let ttl = Duration::from_millis(args.etcd.lease_ttl_ms);
            let held = Leadership::acquire(etcd, &args.etcd.etcd_prefix, "primary", ttl)?;
            let held = held.ok_or_else(|| {
                CliError::Usage(format!(
                    "the leader key {} is held by another node: not starting as primary",
                    leader_key(&args.etcd.etcd_prefix)
                ))
            })?;
            say!("holding the leader key in etcd: {}", held.epoch());
            Some(held)
        }
        None => None,
    };
    let link = LinkConfig {
        epoch: leadership
            .as_ref()
            .map_or(LinkConfig::default().epoch, Leadership::epoch),
        copy_bytes_per_s: args.copy_mib_per_s.saturating_mul(1 << 20),
        ..LinkConfig::default()
    };
    let replicator = Arc::new(Replicator::start(
        &db,
        ReplicatorConfig {
            key: key.clone(),
            peer: args.peer,
            rules,
            link,
            difference_dir: args.difference_dir.clone(),
            difference: RecordLogOptions::default(),
        },
    )?);
    let admin = serve_admin(args.admin.as_deref(), &replicator, key.as_ref())?;
    if let Some(held) = &leadership {
        replicator.require_leadership(held)?;
    }
    let events = replicator.events();
    say!("waiting up to 10 s for the peer at {}", args.peer);
    if replicator.wait_duplex(Duration::from_secs(10)) {
        say!("peer at {} in step: replicating", args.peer);
    } else {
        say!(
            "peer at {} not answering: commits go to the difference file in {} until it does",
            args.peer,
            args.difference_dir.display()
        );
    }
    let mut restructure = args
        .restructure_at_s
        .map(|at| ScheduledRestructure::new(at, &args.plan))
        .transpose()?;
    let traffic = Traffic {
        sessions: args.sessions,
        subscribers: args.subscribers,
        mix: Default::default(),
        rate: args.rate,
        seed: 1,
    }
    .start_observed(&db, ack_log);
    let started = Instant::now();
    let tick = Duration::from_millis(args.report.status_every_ms);
    while !interrupted.load(Ordering::SeqCst)
        && (args.seconds <= 0.0 || started.elapsed().as_secs_f64() < args.seconds)
    {
        // Short sleeps, so that a signal ends the run promptly.
        let slept = Instant::now();
        while slept.elapsed() < tick && !interrupted.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for e in events.try_iter() {
            say!("{:>6.1}s {e}", started.elapsed().as_secs_f64());
        }
        let elapsed_s = started.elapsed().as_secs_f64();
        if let Some(r) = restructure.as_mut() {
            if let Some(said) = r.tick(&db, elapsed_s, &traffic, &replicator) {
                say!("{elapsed_s:>6.1}s {said}");
                let outcome = r.outcome_so_far();
                if args.report.events {
                    node_events::emit(match outcome.is_null() {
                        true => serde_json::json!({"event": "restructure_started"}),
                        false => outcome,
                    });
                }
            }
        }
        if replicator.handed_over() {
            say!(
                "{:>6.1}s handed over at sequence {}: this node accepts no more writes",
                started.elapsed().as_secs_f64(),
                replicator.metrics().last_seq
            );
            break;
        }
        if let Some(by) = replicator.fenced() {
            say!(
                "{:>6.1}s fenced by the primary of {by}: this node accepts no more writes; {}",
                started.elapsed().as_secs_f64(),
                match replicator.rejoin() {
                    Some(Rejoin::CatchUp(at)) => format!(
                        "it can rejoin as the new backup by catch-up (start at sequence {} of {})",
                        at.seq, at.epoch
                    ),
                    Some(Rejoin::ResyncRequired { reason }) =>
                        format!("it needs a full resync to rejoin: {reason}"),
                    None => String::new(),
                }
            );
            break;
        }
        status_line(&args.report, started, traffic.ops(), &replicator.metrics());
    }
    let restructured = restructure.map(|r| r.finish(&traffic, &replicator));
    let report = traffic.stop();
    if interrupted.load(Ordering::SeqCst) {
        say!("interrupted: stopping the traffic");
    }
    let m = replicator.metrics();
    say!(
        "traffic stopped; waiting up to 30 s for the peer to acknowledge up to {} (acked {})",
        m.last_seq,
        m.last_acked_seq
    );
    let fenced = replicator.fenced();
    // Handed over, everything was acknowledged first; meeting the promoted node's
    // epoch afterwards is the switchover's expected end, not a failure.
    let handed_over = replicator.handed_over();
    // A fenced primary's transactions after the takeover exist only here: waiting
    // for them to be acknowledged would be waiting for nothing.
    let caught_up = if handed_over {
        let m = replicator.metrics();
        m.last_acked_seq == m.last_seq
    } else {
        fenced.is_none() && replicator.wait_caught_up(Duration::from_secs(30))
    };
    for e in events.try_iter() {
        say!("{:>6.1}s {e}", started.elapsed().as_secs_f64());
    }
    let m = replicator.metrics();
    let rejoin = replicator.rejoin();
    drop(admin);
    if let Some(replicator) = unshare(replicator) {
        replicator.shutdown();
    }
    let out = serde_json::json!({
        "ops": report.ops,
        "failed": report.failed,
        "caught_up": caught_up,
        "fenced_by": fenced,
        "handed_over": handed_over,
        "rejoin": rejoin,
        "metrics": m,
        "restructure": restructured,
        "schemas": schemas(&db),
        "checksums": checksums(&db)?,
    });
    say!("{out}");
    if let (Some(by), false) = (fenced, handed_over) {
        return Err(CliError::Fenced { by: by.0 });
    }
    if !caught_up {
        return Err(CliError::NotCaughtUp {
            peer: args.peer,
            last_seq: m.last_seq.0,
            acked: m.last_acked_seq.0,
            difference_dir: args.difference_dir.clone(),
        });
    }
    Ok(())
}
