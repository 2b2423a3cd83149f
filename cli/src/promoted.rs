//! `kirikae backup --serve-after-promotion PEER`: once promoted, the backup becomes
//! the primary a service would use. It replicates to PEER (the old primary's node,
//! restarted as a backup; an empty one is resynced), takes one write at once (the
//! end of the failover as a user sees it), then runs the telecom traffic until the
//! process is told to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kirikae::engine::{Database, SessionInfo, Value};
use kirikae::replicate::{
    Leadership, LinkConfig, PeerKey, Promotion, RecordLogOptions, Replicator, ReplicatorConfig,
};
use kirikae_workload::telecom::{RunningTraffic, Traffic};
use kirikae_workload::workload::{subscriber_key, SUBSCRIBER_TABLE};

use crate::ack_log::unix_ms;
use crate::nodes::{load_rules, status_line, ReportArgs};
use crate::CliError;

/// What a promoted backup serves with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The new backup (the old primary's node).
    pub peer: SocketAddr,
    /// The pair's key.
    pub key: Option<PeerKey>,
    /// The new primary's difference file (must be empty).
    pub difference_dir: PathBuf,
    /// Rules (`None`: the built-in mixed policy).
    pub rules: Option<PathBuf>,
    /// The traffic's sessions, subscribers and rate.
    pub sessions: usize,
    pub subscribers: u64,
    pub rate: Option<f64>,
    /// The dead primary's `--ack-log`, to look up every commit it acknowledged as
    /// replicated.
    pub check_ack_log: Option<PathBuf>,
    pub report: ReportArgs,
}

/// The promoted node at work.
pub struct Serving {
    replicator: Arc<Replicator>,
    traffic: RunningTraffic,
    started: Instant,
    report: ReportArgs,
    /// What the failover looked like (see [`serve`]).
    pub failover: serde_json::Value,
}

/// Starts serving on `db` after `promotion` (`leadership`: the etcd key the
/// arbiter took, which every commit then needs alive).
pub fn serve(
    db: &Database,
    promotion: &Promotion,
    leadership: Option<Leadership>,
    config: &ServeConfig,
) -> Result<Serving, CliError> {
    let promoted_ms = unix_ms(SystemTime::now());
    let replicator = Arc::new(take_over(
        db,
        promotion,
        leadership.as_ref(),
        ReplicatorConfig {
            key: config.key.clone(),
            peer: config.peer,
            rules: load_rules(config.rules.as_ref())?,
            link: LinkConfig::default(),
            difference_dir: config.difference_dir.clone(),
            difference: RecordLogOptions::default(),
        },
    )?);
    let first_write_ms = unix_ms(SystemTime::now());
    let traffic = Traffic {
        sessions: config.sessions,
        subscribers: config.subscribers,
        mix: Default::default(),
        rate: config.rate,
        // Not the old primary's seed: its ids are not inserted again.
        seed: 2,
    }
    .start(db);
    // Only now, off the failover's path: reading a long ack log takes a while.
    let (lost, dual, checked) = match &config.check_ack_log {
        Some(path) => crate::ack_log::check(path, db, promoted_ms)?,
        None => (0, 0, 0),
    };
    let failover = serde_json::json!({
        "event": "serving",
        "epoch": promotion.epoch.0,
        "takeover_seq": promotion.last_seq.0,
        "promoted_unix_ms": promoted_ms,
        "first_write_unix_ms": first_write_ms,
        "lost_acknowledged_sync": lost,
        "acknowledged_sync_checked": checked,
        "dual_primary_acknowledged": dual,
        "ack_log_checked": config.check_ack_log.is_some(),
    });
    say!(
        "serving as primary at {} (writes accepted since unix ms {first_write_ms}); the old primary's replicated commits: {checked} looked up, {lost} missing",
        promotion.epoch
    );
    Ok(Serving {
        replicator,
        traffic,
        started: Instant::now(),
        report: config.report,
        failover,
    })
}

/// Starts `db` replicating by `config` as the primary `promotion` made it (at its
/// epoch, numbering after its takeover sequence; `config.link`'s own epoch and
/// start are replaced), under `leadership` if the arbiter took one, and takes the
/// first write a user would make: the end of the failover as the user sees it.
pub fn take_over(
    db: &Database,
    promotion: &Promotion,
    leadership: Option<&Leadership>,
    mut config: ReplicatorConfig,
) -> Result<Replicator, CliError> {
    config.link.epoch = promotion.epoch;
    config.link.start_after = promotion.last_seq;
    let replicator = Replicator::start(db, config)?;
    if let Some(held) = leadership {
        replicator.require_leadership(held)?;
    }
    let session = db.session(SessionInfo::new("app", "service", None));
    session.update_columns(
        SUBSCRIBER_TABLE,
        &subscriber_key(0),
        &[("balance", Value::Int(1))],
    )?;
    Ok(replicator)
}

impl Serving {
    /// A status line (and event).
    pub fn status(&self) {
        let m = self.replicator.metrics();
        status_line(&self.report, self.started, self.traffic.ops(), &m);
    }

    /// What the replicator reported since the last call, for the operator.
    pub fn events(&self) -> Vec<String> {
        self.replicator
            .events()
            .try_iter()
            .map(|e| e.to_string())
            .collect()
    }

    /// Stops the traffic, waits up to 30 s for the new backup to acknowledge
    /// everything, and reports.
    pub fn finish(self) -> serde_json::Value {
        let report = self.traffic.stop();
        let caught_up = self.replicator.wait_caught_up(Duration::from_secs(30));
        let m = self.replicator.metrics();
        if let Ok(r) = Arc::try_unwrap(self.replicator) {
            r.shutdown();
        }
        serde_json::json!({
            "ops": report.ops,
            "failed": report.failed,
            "caught_up": caught_up,
            "metrics": m,
            "failover": self.failover,
        })
    }
}
