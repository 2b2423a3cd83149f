//! The admin endpoint over real HTTP: roles for load balancers, Prometheus metrics,
//! operator commands only with the pair's admin token, and bad or stalled clients
//! answered without holding anyone up.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use kirikae_engine::SessionInfo;
use kirikae_replicate::{
    admin_request, AdminServer, Backup, BackupConfig, PeerKey, Replicator, ADMIN_CONNECTIONS_MAX,
};
use kirikae_testkit::{kv_database, kv_row, wait_for};

const T: &str = "acct";

fn key() -> PeerKey {
    PeerKey::new(vec![9; 32]).unwrap()
}

/// A backup over an empty table, authenticated with [`key`], logging in `dir`.
fn keyed_backup(dir: &std::path::Path) -> Backup {
    let config = BackupConfig {
        key: Some(key()),
        log_dir: Some(dir.to_owned()),
        ..BackupConfig::default()
    };
    Backup::start(kv_database(&[T]), "127.0.0.1:0", config).unwrap()
}

#[test]
fn a_backup_reports_its_role_and_is_promoted_only_with_the_admin_token() {
    let log = tempfile::tempdir().unwrap();
    let backup = Arc::new(keyed_backup(log.path()));
    let admin = AdminServer::start("127.0.0.1:0", backup.clone(), Some(key())).unwrap();
    let at = admin.local_addr();
    assert_eq!(
        admin_request(at, "GET", "/role", None).unwrap(),
        (503, "backup\n".into())
    );
    let (status, metrics) = admin_request(at, "GET", "/metrics", None).unwrap();
    assert_eq!(status, 200);
    for line in [
        "kirikae_role{role=\"backup\"} 1",
        "kirikae_role{role=\"primary\"} 0",
        "kirikae_epoch 0",
        "kirikae_last_seq 0",
        "# TYPE kirikae_backup_applied counter",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    // Commands: no token, a wrong one, a position the backup does not hold.
    let (status, body) = admin_request(at, "POST", "/promote", None).unwrap();
    assert_eq!(status, 401, "{body}");
    let wrong = PeerKey::new(vec![8; 32]).unwrap().admin_token();
    assert_eq!(
        admin_request(at, "POST", "/promote", Some(&wrong))
            .unwrap()
            .0,
        401
    );
    let token = key().admin_token();
    let (status, body) = admin_request(at, "POST", "/promote?at_seq=5", Some(&token)).unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("holds up to 0, not 5"), "{body}");
    let (status, body) = admin_request(at, "POST", "/promote?at_seq=x", Some(&token)).unwrap();
    assert_eq!(
        (status, body.trim()),
        (400, "at_seq=`x`: expected a non-negative integer")
    );
    assert_eq!(backup.status().promoted, None, "nothing promoted so far");
    let (status, body) = admin_request(at, "POST", "/promote?at_seq=0", Some(&token)).unwrap();
    assert_eq!(status, 200, "{body}");
    let promotion: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        promotion["epoch"], 1,
        "the first epoch: no primary was ever seen"
    );
    assert_eq!(
        admin_request(at, "GET", "/role", None).unwrap(),
        (200, "primary\n".into())
    );
    let (_, status) = admin_request(at, "GET", "/status", None).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        (status["role"].as_str(), status["epoch"].as_u64()),
        (Some("primary"), Some(1))
    );
    admin.stop();
}

#[test]
fn a_primary_hands_over_through_its_admin_endpoint() {
    let (log, diff) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backup = keyed_backup(log.path());
    let db = kv_database(&[T]);
    let config = common::sync_replicator_config(backup.local_addr(), key(), diff.path());
    let primary = Arc::new(Replicator::start(&db, config).unwrap());
    assert!(primary.wait_duplex(Duration::from_secs(10)));
    let s = db.session(SessionInfo::default());
    for k in 0..5 {
        s.insert(T, kv_row(k, k)).unwrap();
    }
    let admin = AdminServer::start("127.0.0.1:0", primary.clone(), Some(key())).unwrap();
    let at = admin.local_addr();
    assert_eq!(
        admin_request(at, "GET", "/role", None).unwrap(),
        (200, "primary\n".into())
    );
    let token = key().admin_token();
    let (status, body) = admin_request(at, "POST", "/promote", Some(&token)).unwrap();
    assert_eq!(status, 409, "a primary is not promoted: {body}");
    let (status, body) =
        admin_request(at, "POST", "/hand-over?timeout_ms=5000", Some(&token)).unwrap();
    assert_eq!(status, 200, "{body}");
    let handed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(handed["at_seq"], 5);
    assert_eq!(
        admin_request(at, "GET", "/role", None).unwrap(),
        (503, "handed_over\n".into())
    );
    assert!(
        s.insert(T, kv_row(99, 99)).is_err(),
        "handed over: no writes"
    );
    // The backup holds exactly the hand-over position.
    assert_eq!(backup.status().last_seq.0, 5);
    admin.stop();
    drop(primary);
    backup.stop().unwrap();
}

#[test]
fn bad_requests_are_named_and_stalled_clients_hold_nobody_up() {
    let backup =
        Arc::new(Backup::start(kv_database(&[T]), "127.0.0.1:0", BackupConfig::default()).unwrap());
    let admin = AdminServer::start("127.0.0.1:0", backup, None).unwrap();
    let at = admin.local_addr();
    let (status, body) = admin_request(at, "GET", "/nothing", None).unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("try /metrics"), "{body}");
    assert_eq!(admin_request(at, "DELETE", "/role", None).unwrap().0, 405);
    // A head that never ends within the limit.
    let mut s = TcpStream::connect(at).unwrap();
    let _ = s.write_all(&vec![b'a'; 16 << 10]);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("request head over"), "{answer}");
    // Idle connections up to the limit: one more is refused at once, not queued.
    let idle: Vec<TcpStream> = (0..ADMIN_CONNECTIONS_MAX)
        .map(|_| TcpStream::connect(at).unwrap())
        .collect();
    wait_for(
        "the idle connections to be taken",
        Duration::from_secs(5),
        || {
            admin_request(at, "GET", "/role", None).is_ok_and(|(status, body)| {
                status == 503 && body.contains("too many admin connections")
            })
        },
    );
    // They time out; the endpoint serves again.
    wait_for(
        "the idle connections to time out",
        Duration::from_secs(10),
        || {
            admin_request(at, "GET", "/role", None).is_ok_and(|(status, _)| status == 503)
                && admin_request(at, "GET", "/metrics", None).is_ok_and(|(status, _)| status == 200)
        },
    );
    drop(idle);
    admin.stop();
}
