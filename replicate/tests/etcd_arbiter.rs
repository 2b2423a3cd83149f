//! The etcd arbiter against a real etcd (Debian's `etcd-server`, 3.4), started here on
//! loopback ports: one leader per epoch (the key's create revision), writes stopped
//! before the lease can expire when etcd stops answering and resumed when it answers
//! again, and a backup that promotes only once it holds the key. Skipped, loudly,
//! where `etcd` is not installed (`.ci/run` installs it).

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use kirikae_engine::SessionInfo;
use kirikae_replicate::etcd::{Etcd, LocalEtcd};
use kirikae_replicate::{
    Arbiter, Backup, BackupConfig, BackupEvent, EtcdArbiter, Leadership, LinkConfig, PeerKey,
    ReplicateError, Replicator,
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
    let backup = Backup::start(
        replica.clone(),
        "127.0.0.1:0",
        BackupConfig {
            key: Some(key.clone()),
            log_dir: Some(log.path().to_owned()),
            heartbeat_every: Duration::from_millis(20),
            arbiter: Arbiter::Etcd(EtcdArbiter {
                endpoint: server.client,
                prefix: "/kirikae/pair1".into(),
                lease_ttl: ttl,
                failover_after: Duration::from_millis(300),
                call_timeout: Duration::from_millis(500),
            }),
            ..BackupConfig::default()
        },
    )
    .unwrap();
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
