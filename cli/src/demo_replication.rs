//! The demo's second part: telecom traffic under the seed-000 mixed policy,
//! replicated to a peer on loopback; the peer is stopped midway (the link degrades,
//! commits go to the difference file), restarted from its log (catch-up), and the
//! tables' checksums are compared at the end.

use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar};
use kirikae::engine::Database;
use kirikae::replicate::{
    AccessLogOptions, Backup, BackupConfig, PeerKey, RecordLogOptions, ReplicatorConfig, RuleSet,
};
use kirikae_workload::telecom::{self, Traffic};

use crate::bench_replicate::{outage_link_config, start_in_step};
use crate::nodes::{checksums, MIXED_RULES};
use crate::progress::{style, PlainLines};
use crate::CliError;

/// Runs the replication part for `seconds` (the peer is down for the middle third).
pub fn run(
    bars: &MultiProgress,
    subscribers: u64,
    sessions: usize,
    seconds: f64,
) -> Result<(), CliError> {
    let tempdir = |what: &str| {
        tempfile::tempdir().map_err(|e| CliError::Usage(format!("{what} directory: {e}")))
    };
    let (peer_log, diff_dir) = (tempdir("peer log")?, tempdir("difference file")?);
    let primary = Database::new();
    telecom::create_tables(&primary, subscribers)?;
    let peer_db = |_: ()| -> Result<Database, CliError> {
        let db = Database::new();
        telecom::create_tables(&db, subscribers)?;
        Ok(db)
    };
    // Both ends of the pair prove they hold this key in every handshake.
    let key = PeerKey::random()?;
    let peer_config = || BackupConfig {
        key: Some(key.clone()),
        log_dir: Some(peer_log.path().to_owned()),
        access_log: AccessLogOptions::default().with_fsync(false),
        ..BackupConfig::default()
    };
    let mut replica = peer_db(())?;
    let mut peer = Some(Backup::start(
        replica.clone(),
        "127.0.0.1:0",
        peer_config(),
    )?);
    let addr = peer
        .as_ref()
        .map(Backup::local_addr)
        .ok_or(CliError::Usage("no peer".into()))?;
    // In step before traffic: otherwise the first commits find the peer still
    // connecting and are reported as diverged ("peer is down").
    let replicator = start_in_step(
        &primary,
        ReplicatorConfig {
            key: Some(key.clone()),
            peer: addr,
            rules: RuleSet::parse(MIXED_RULES, "seed000-mixed.toml")?,
            link: outage_link_config(),
            difference_dir: diff_dir.path().to_owned(),
            difference: RecordLogOptions::default(),
        },
    )?;
    let events = replicator.events();
    let traffic = Traffic {
        sessions,
        subscribers,
        mix: Default::default(),
        rate: Some(20_000.0),
        seed: 3,
    }
    .start(&primary);
    let live = bars.add(ProgressBar::new_spinner());
    live.set_style(style("replicate {spinner} {msg}"));
    let mut plain = PlainLines::for_stderr();
    let started = Instant::now();
    let (down_at, up_at) = (seconds / 3.0, 2.0 * seconds / 3.0);
    let mut log = Vec::new();
    let mut last_ops = 0;
    let mut last_t = 0.0;
    while started.elapsed().as_secs_f64() < seconds {
        std::thread::sleep(Duration::from_millis(100));
        let t = started.elapsed().as_secs_f64();
        if t >= down_at && t < up_at {
            if let Some(p) = peer.take() {
                p.stop()?;
                log.push(format!("{t:>5.1}s  peer stopped"));
            }
        } else if t >= up_at && peer.is_none() {
            replica = peer_db(())?;
            peer = Some(Backup::start(replica.clone(), addr, peer_config())?);
            log.push(format!("{t:>5.1}s  peer restarted from its log"));
        }
        for e in events.try_iter() {
            log.push(format!("{t:>5.1}s  {e}"));
        }
        let m = replicator.metrics();
        let ops = traffic.ops();
        let rate = (ops - last_ops) as f64 / (t - last_t).max(1e-3);
        (last_ops, last_t) = (ops, t);
        let status = format!(
            "{rate:>8.0} ops/s  link {:<11}  seq {:>8}  acked {:>8}  lag {:>6} ops {:>5} ms  difference {:>9} B",
            format!("{:?}", m.state.unwrap_or(kirikae::replicate::LinkState::Degraded)),
            m.last_seq,
            m.last_acked_seq,
            m.lag_ops,
            m.lag_ms,
            m.difference_bytes
        );
        if plain.due(t) {
            eprintln!("{t:>6.1}s replicate {status}");
        }
        live.set_message(status);
        live.tick();
    }
    let report = traffic.stop();
    let caught_up = replicator.wait_caught_up(Duration::from_secs(30));
    for e in events.try_iter() {
        log.push(format!("  end  {e}"));
    }
    live.finish();
    let m = replicator.metrics();
    replicator.shutdown();
    if let Some(p) = peer.take() {
        p.stop()?;
    }
    say!();
    say!(
        "replication — mixed policy (reads stay local, subscriber updates ordered, billing commits sync/fail, the rest async), peer on {addr}"
    );
    say!(
        "  {} operations, {} refused (billing commits while the peer was down), {} replicated transactions, caught up: {caught_up}",
        report.ops, report.failed, m.last_seq
    );
    for line in &log {
        say!("  {line}");
    }
    let (ours, theirs) = (checksums(&primary)?, checksums(&replica)?);
    for (table, sum) in &ours {
        let peer_sum = theirs.get(table).copied().unwrap_or_default();
        let verdict = if *sum == peer_sum {
            "equal"
        } else {
            "DIFFERENT"
        };
        say!("  checksum {table:<11} primary {sum:016x}  peer {peer_sum:016x}  {verdict}");
    }
    Ok(())
}
