//! Settings the TCP tests of this crate share.

// Each test binary uses a part of this.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use kirikae_engine::Database;
use kirikae_replicate::{
    table_checksum, AccessLogOptions, Backup, BackupConfig, Event, LinkConfig, PeerKey,
    RecordLogOptions, Replicator, ReplicatorConfig, RuleSet,
};

/// A primary replicating every commit in sync mode to `peer`, with a fast link
/// (20 ms heartbeats, 500 ms peer timeout, quick reconnects) and no fsync.
pub fn sync_replicator_config(peer: SocketAddr, key: PeerKey, dir: &Path) -> ReplicatorConfig {
    ReplicatorConfig {
        key: Some(key),
        peer,
        rules: RuleSet::parse(r#"default = "sync""#, "test.toml").expect("rules"),
        link: LinkConfig {
            heartbeat_every: Duration::from_millis(20),
            peer_timeout: Duration::from_millis(500),
            reconnect_min: Duration::from_millis(10),
            reconnect_max: Duration::from_millis(100),
            ..LinkConfig::default()
        },
        difference_dir: dir.to_owned(),
        difference: RecordLogOptions {
            fsync: false,
            ..RecordLogOptions::default()
        },
    }
}

/// A backup for these tests: authenticated by `key`, its access log in `log` (if
/// any) without fsync, heartbeats every 20 ms (as `sync_replicator_config`'s).
pub fn backup_config(key: PeerKey, log: Option<&Path>) -> BackupConfig {
    BackupConfig {
        key: Some(key),
        log_dir: log.map(Path::to_owned),
        access_log: AccessLogOptions::default().with_fsync(false),
        heartbeat_every: Duration::from_millis(20),
        ..BackupConfig::default()
    }
}

/// A backup with `config` listening on `listen`, over a new database of
/// `kv_schema` tables named `tables`; returns that database too.
pub fn start_backup(tables: &[&str], listen: &str, config: BackupConfig) -> (Database, Backup) {
    let replica = kirikae_testkit::kv_database(tables);
    let backup = Backup::start(replica.clone(), listen, config).expect("backup");
    (replica, backup)
}

/// The next `Resynced` event of `rep`, within `timeout` (a panic naming its
/// metrics past it).
pub fn resynced(rep: &Replicator, timeout: Duration) -> Event {
    let events = rep.events();
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(e @ Event::Resynced { .. }) => return e,
            Ok(_) => continue,
            Err(e) => panic!("no Resynced: {e}; {:?}", rep.metrics()),
        }
    }
}

/// The replica's `tables` hold the primary's rows exactly.
pub fn assert_tables_equal(primary: &Database, replica: &Database, tables: &[&str]) {
    for &t in tables {
        let (p, r) = (
            primary.table(t).expect("table"),
            replica.table(t).expect("table"),
        );
        assert_eq!(r.len(), p.len(), "{t}: row count");
        assert_eq!(table_checksum(&r), table_checksum(&p), "{t}: contents");
    }
}
