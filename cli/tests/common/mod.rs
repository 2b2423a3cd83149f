//! Checks shared by the process tests: a dead primary's ack log held against the
//! database of the backup that took over.

// Each test binary uses a part of this.
#![allow(dead_code)]

pub mod peer_process;

use std::path::Path;

use kirikae::engine::{Database, Key, SessionInfo, Value};
use kirikae::replicate::{Backup, BackupConfig, PeerKey};
use kirikae_workload::telecom;

/// The primary's ack log: each acknowledged commit as JSON (a line cut by the kill is
/// not an acknowledgement).
pub fn acks(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// What a promoted backup holds: its database (telecom tables of `subscribers`)
/// rebuilt from the access log in `data_dir`, as a restart of it would.
pub fn promoted_database(data_dir: &Path, key: &[u8], subscribers: u64) -> Database {
    let db = Database::new();
    telecom::create_tables(&db, subscribers).expect("tables");
    let config = BackupConfig {
        log_dir: Some(data_dir.to_owned()),
        key: Some(PeerKey::new(key.to_vec()).expect("key")),
        ..BackupConfig::default()
    };
    let reopened = Backup::start(db.clone(), "127.0.0.1:0", config).expect("reopen the backup");
    assert!(
        reopened.status().promoted.is_some() || reopened.status().epoch.0 > 1,
        "the reopened backup does not know it was promoted"
    );
    reopened.stop().expect("stop");
    db
}

/// Every commit the ack log calls replicated (sync, answered by the backup) is in
/// `db`; returns how many were checked (at least one, or nothing was tested).
pub fn assert_no_replicated_commit_lost(acks: &[serde_json::Value], db: &Database) -> usize {
    let reader = db.session(SessionInfo::default());
    let mut checked = 0;
    for ack in acks.iter().filter(|a| a["replication"] == "replicated") {
        let table = ack["table"].as_str().expect("table");
        let values: Vec<Value> = serde_json::from_value(ack["key"].clone()).expect("key");
        let found = reader.get(table, &Key::new(values)).expect("get");
        assert!(found.is_some(), "acknowledged as replicated, lost: {ack}");
        checked += 1;
    }
    assert!(
        checked > 0,
        "no replicated commit was acknowledged: nothing checked"
    );
    checked
}
