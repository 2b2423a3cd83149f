//! The etcd arbiter against a real etcd (Debian's `etcd-server`, 3.4), started here on
//! loopback ports: one leader per epoch (the key's create revision), writes stopped
//! before the lease can expire when etcd stops answering and resumed when it answers
//! again, and a backup that promotes only once it holds the key. Skipped, loudly,
//! where `etcd` is not installed (`.ci/run` installs it).

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kirikae_engine::{Database, SessionInfo};
use kirikae_replicate::etcd::{Etcd, LocalEtcd};
use kirikae_replicate::{
    Arbiter, Backup, BackupConfig, BackupEvent, EtcdArbiter, Impairment, Leadership, LinkConfig,
    LoopbackProxy, PeerKey, PromotedBy, ReplicateError, Replicator,
};
use kirikae_testkit::{kv_database, kv_row, wait_for};

const T: &str = "acct";

/// A local etcd and its data directory; resumed (if paused) before it is dropped.
struct EtcdServer {
    local: LocalEtcd,
    client: SocketAddr,
    _dir: tempfile::TempDir,
}

impl EtcdServer {
    fn start() -> Option<EtcdServer> {
        let dir = tempfile::tempdir().unwrap();
        let Some(local) = LocalEtcd::start(dir.path()).expect("etcd starts") else {
            eprintln!(
                "SKIPPED: `etcd` is not installed (apt-get install etcd-server); the etcd arbiter is untested here"
            );
            return None;
        };
        let client = local.addr();
        Some(EtcdServer {
            local,
            client,
            _dir: dir,
        })
    }

    fn etcd(&self) -> Etcd {
        self.local.client(Duration::from_millis(500))
    }

    /// A backup of `replica` under the etcd arbiter at `prefix` (300 ms of silence,
    /// leases of `ttl`), logging in `log`.
    fn backup(
        &self,
        replica: &Database,
        key: &PeerKey,
        log: &Path,
        prefix: &str,
        ttl: Duration,
    ) -> Backup {
        Backup::start(
            replica.clone(),
            "127.0.0.1:0",
            BackupConfig {
                key: Some(key.clone()),
                log_dir: Some(log.to_owned()),
                heartbeat_every: Duration::from_millis(20),
                arbiter: Arbiter::Etcd(EtcdArbiter {
                    endpoint: self.client,
                    prefix: prefix.into(),
                    lease_ttl: ttl,
                    failover_after: Duration::from_millis(300),
                    call_timeout: Duration::from_millis(500),
                }),
                ..BackupConfig::default()
            },
        )
        .unwrap()
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.local.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal}");
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.signal("-CONT");
    }
}

#[test]
fn one_leader_per_epoch_and_writes_stop_before_the_lease_can_expire() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let ttl = Duration::from_secs(2);
    let a = Leadership::acquire(server.etcd(), "/kirikae/pair1", "a", ttl)
        .unwrap()
        .expect("a leads");
    assert!(
        Leadership::acquire(server.etcd(), "/kirikae/pair1", "b", ttl)
            .unwrap()
            .is_none(),
        "one leader at a time"
    );
    // Another pair's key is its own.
    let other = Leadership::acquire(server.etcd(), "/kirikae/pair2", "c", ttl)
        .unwrap()
        .expect("pair 2 has its own leader");
    a.check().unwrap();

    // etcd stops answering: writes stop before the lease could expire.
    server.signal("-STOP");
    let stopped = Instant::now();
    wait_for("writes to stop", Duration::from_secs(5), || {
        a.check().is_err()
    });
    assert!(
        stopped.elapsed() < ttl,
        "stopped after {:?}",
        stopped.elapsed()
    );
    match a.check() {
        Err(ReplicateError::LeaseLost { reason, .. }) => {
            assert!(reason.contains("renewed"), "{reason}")
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    // It answers again, and the key is still a's: writes resume.
    server.signal("-CONT");
    wait_for("writes to resume", Duration::from_secs(10), || {
        a.check().is_ok()
    });

    let epoch = a.epoch();
    a.release().unwrap();
    let b = Leadership::acquire(server.etcd(), "/kirikae/pair1", "b", ttl)
        .unwrap()
        .expect("b leads after a stepped down");
    assert!(b.epoch() > epoch, "{} after {epoch}", b.epoch());
    drop(other);
}

#[test]
fn the_backup_promotes_only_once_it_holds_the_leader_key() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let ttl = Duration::from_secs(2);
    let key = PeerKey::new(vec![4; 32]).unwrap();
    let (log, diff) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let replica = kv_database(&[T]);
    let backup = server.backup(&replica, &key, log.path(), "/kirikae/pair1", ttl);
    let leadership = Leadership::acquire(server.etcd(), "/kirikae/pair1", "a", ttl)
        .unwrap()
        .expect("the primary leads");
    let db = kv_database(&[T]);
    let mut config = common::sync_replicator_config(backup.local_addr(), key, diff.path());
    config.link.epoch = leadership.epoch();
    config.link.peer_timeout = LinkConfig::default().peer_timeout;
    let replicator = Replicator::start(&db, config).unwrap();
    replicator.require_leadership(&leadership).unwrap();
    assert!(replicator.wait_duplex(Duration::from_secs(10)));
    let s = db.session(SessionInfo::default());
    for k in 0..20 {
        s.insert(T, kv_row(k, k)).unwrap();
    }
    // The primary is cut off from its backup but alive, renewing its key: the backup
    // may not take over.
    replicator.shutdown();
    wait_for(
        "the arbiter to refuse twice",
        Duration::from_secs(10),
        || backup.status().takeovers_refused >= 2,
    );
    assert!(backup.status().promoted.is_none());
    assert!(backup
        .status()
        .last_takeover_refusal
        .unwrap_or_default()
        .contains("held by another node"));
    // The primary dies: its lease lapses, and only then the backup takes the key.
    let old_epoch = leadership.epoch();
    let died = Instant::now();
    drop(leadership);
    let promotion = match backup.events().recv_timeout(Duration::from_secs(15)) {
        Ok(BackupEvent::Promoted { promotion, .. }) => promotion,
        Err(e) => panic!("no promotion: {e}"),
    };
    assert!(
        died.elapsed() >= ttl / 2,
        "promoted {:?} after the death",
        died.elapsed()
    );
    assert!(
        promotion.epoch > old_epoch,
        "{} after {old_epoch}",
        promotion.epoch
    );
    assert_eq!(promotion.last_seq.0, 20);
    let held = backup
        .take_leadership()
        .expect("the new primary holds the key");
    assert_eq!(held.epoch(), promotion.epoch);
    held.check().unwrap();
}

/// The primary loses etcd but not its backup: its heartbeats go on, so silence never
/// calls for a takeover, yet its lease lapses and it accepts nothing more. The backup
/// sees the leader key vacant and takes over; the old primary meets the new epoch
/// and is fenced. Without the vacancy look the pair would serve no writes at all
/// until etcd came back for the old primary.
#[test]
fn a_primary_cut_off_from_etcd_alone_is_replaced_though_its_backup_still_hears_it() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let ttl = Duration::from_secs(1);
    let key = PeerKey::new(vec![5; 32]).unwrap();
    let (log, diff) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let replica = kv_database(&[T]);
    let backup = server.backup(&replica, &key, log.path(), "/kirikae/pair3", ttl);
    // The primary reaches etcd only through this proxy.
    let proxy = LoopbackProxy::start(server.client, Impairment::default()).unwrap();
    let through_proxy = Etcd::new(proxy.local_addr(), Duration::from_millis(300));
    let leadership = Leadership::acquire(through_proxy, "/kirikae/pair3", "a", ttl)
        .unwrap()
        .expect("the primary leads");
    let db = kv_database(&[T]);
    let mut config = common::sync_replicator_config(backup.local_addr(), key, diff.path());
    config.link.epoch = leadership.epoch();
    let replicator = Replicator::start(&db, config).unwrap();
    replicator.require_leadership(&leadership).unwrap();
    assert!(
        replicator.wait_duplex(Duration::from_secs(10)),
        "{:?} {:?} {:?}",
        replicator.metrics(),
        backup.status(),
        replicator.events().try_iter().collect::<Vec<_>>()
    );
    let s = db.session(SessionInfo::default());
    let mut acknowledged = Vec::new();
    let mut k = 0;
    while acknowledged.len() < 20 {
        s.insert(T, kv_row(k, k)).unwrap();
        acknowledged.push(k);
        k += 1;
    }
    drop(proxy);
    let cut = Instant::now();
    // Writes go on until the lease can no longer be vouched for, then stop.
    loop {
        // A write's lease check comes after this instant: an accepted write proves
        // the lease was vouched for at a moment after it.
        let admitted = Instant::now();
        match s.insert(T, kv_row(k, k)) {
            Ok(_) => {
                acknowledged.push(k);
                assert!(
                    admitted.duration_since(cut) < ttl,
                    "a write admitted {:?} after the cut was accepted",
                    admitted.duration_since(cut)
                );
            }
            Err(e) => {
                assert!(e.to_string().contains("lease"), "{e}");
                break;
            }
        }
        k += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let (promotion, by) = match backup.events().recv_timeout(Duration::from_secs(15)) {
        Ok(BackupEvent::Promoted { promotion, by }) => (promotion, by),
        Err(e) => panic!("no promotion: {e}"),
    };
    assert_eq!(
        by,
        PromotedBy::LeaderKeyVacant,
        "the primary was still heard"
    );
    assert!(promotion.epoch > leadership.epoch());
    let rows = replica.table(T).unwrap().rows();
    assert_eq!(
        rows.len(),
        acknowledged.len(),
        "every acknowledged sync commit, nothing else"
    );
    assert_eq!(promotion.last_seq.0, acknowledged.len() as u64);
    // The old primary learns of the new epoch and stays shut.
    wait_for(
        "the old primary to be fenced",
        Duration::from_secs(10),
        || replicator.fenced() == Some(promotion.epoch),
    );
    assert!(s.insert(T, kv_row(k, k)).is_err());
}
