//! Resync with real processes, interrupted (issue 11 §1): a `kirikae backup` killed
//! with SIGKILL in the middle of its copy starts again empty and is resynced to the
//! primary's exact tables; a `kirikae primary` killed in the middle of its backup's
//! copy leaves a backup that refuses to be promoted (it holds half a copy) and says
//! why, instead of serving it. Neither ends in a loop.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kirikae::engine::Database;
use kirikae::replicate::{Event, LinkState, Replicator, RuleSet};
use kirikae_testkit::wait_for;
use kirikae_workload::telecom::Traffic;

mod common;

use common::peer_process::{
    assert_checksums_equal, last_json_line, primary_command, replicator_config, telecom_db,
    PeerProcess,
};

/// Enough rows that a copy at [`COPY_BYTES_PER_S`] takes seconds.
const SUBSCRIBERS: u64 = 60_000;
const COPY_BYTES_PER_S: u64 = 2 << 20;

fn replicator(db: &Database, peer: std::net::SocketAddr, dir: &std::path::Path) -> Replicator {
    let rules = RuleSet::parse(r#"default = "async""#, "test.toml").expect("rules");
    let mut config = replicator_config(peer, rules, dir);
    config.link.copy_bytes_per_s = COPY_BYTES_PER_S;
    Replicator::start(db, config).expect("replicator")
}

fn resynced(rep: &Replicator, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rep.events().recv_timeout(left) {
            Ok(Event::Resynced { rows, .. }) => return rows,
            Ok(_) => continue,
            Err(e) => panic!("no Resynced: {e}; {:?}", rep.metrics()),
        }
    }
}

#[test]
fn a_backup_process_killed_mid_resync_starts_empty_and_is_resynced_to_equal_tables() {
    let (data, diff) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = telecom_db(SUBSCRIBERS);
    // The backup's own tables start (almost) empty: everything comes by the copy.
    let peer = PeerProcess::spawn("127.0.0.1:0", data.path(), 1);
    let addr = peer.addr;
    let rep = replicator(&db, addr, diff.path());
    let running = Traffic {
        sessions: 2,
        subscribers: SUBSCRIBERS,
        mix: Default::default(),
        rate: Some(1_000.0),
        seed: 11,
    }
    .start(&db);
    wait_for("the copy to be under way", Duration::from_secs(30), || {
        let m = rep.metrics();
        m.state == Some(LinkState::Resyncing) && m.copied_rows >= 5_000
    });
    peer.kill();
    wait_for("the link to go down", Duration::from_secs(10), || {
        rep.metrics().state == Some(LinkState::Degraded)
    });
    // Restarted over the same directory: its half copy is not trusted.
    let peer = PeerProcess::spawn(&addr.to_string(), data.path(), 1);
    let rows = resynced(&rep, Duration::from_secs(60));
    assert!(rows >= SUBSCRIBERS, "{rows} rows copied");
    let report = running.stop();
    assert!(
        report.ops > 1_000,
        "only {} operations beside the copies",
        report.ops
    );
    assert!(
        rep.wait_caught_up(Duration::from_secs(30)),
        "{:?}",
        rep.metrics()
    );
    let resyncs = rep.metrics().resyncs;
    assert!(
        (2..=4).contains(&resyncs),
        "{resyncs} resyncs: one killed, one (or a few) after the restart, not a loop"
    );
    rep.shutdown();
    let peer_report = peer.finish();
    assert!(
        peer_report["stats"]["resyncs"].as_u64() >= Some(1),
        "{peer_report}"
    );
    assert_checksums_equal(&db, &peer_report, "after the second resync");
}

#[test]
fn a_primary_process_killed_mid_resync_leaves_a_backup_that_refuses_promotion() {
    let (data, diff) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let peer = PeerProcess::spawn_with(
        "127.0.0.1:0",
        data.path(),
        1,
        &[
            "--arbiter",
            "peer",
            "--failover-after-ms",
            "300",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let PeerProcess {
        mut child,
        stdin,
        mut stdout,
        addr,
    } = peer;
    let admin = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no admin line");
        if let Some(a) = line.trim().strip_prefix("admin endpoint on http://") {
            break a.to_owned();
        }
    };
    // Its copy at 1 MiB/s takes seconds, so the first status lines find it copying.
    let mut primary = primary_command(addr, (4 * SUBSCRIBERS, 1000, 0.0), diff.path(), data.path())
        .args(["--copy-mib-per-s", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn kirikae primary");
    // Its status lines name the link's state: killed once it is copying. Read on
    // a thread, so that a primary that never says so fails the test in bounded time.
    let (tx, lines) = std::sync::mpsc::channel();
    let out = std::io::BufReader::new(primary.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("Resyncing") => break,
            Ok(line) => seen.push(line),
            Err(e) => {
                primary.kill().ok();
                panic!("the primary never said Resyncing ({e}): {seen:#?}");
            }
        }
    }
    primary.kill().unwrap();
    primary.wait().unwrap();
    let status = |admin: &str| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_kirikae"))
            .args(["status", "--admin", admin])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    wait_for(
        "the backup to refuse its promotion",
        Duration::from_secs(20),
        || status(&admin)["counters"]["backup_takeovers_refused"].as_u64() > Some(0),
    );
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let report = last_json_line(&rest);
    assert!(
        report["promoted"].is_null(),
        "promoted half a copy: {report}"
    );
    assert!(!rest.contains("Promoted"), "{rest}");
    let why = report["last_takeover_refusal"].as_str().unwrap_or_default();
    assert!(why.contains("resync"), "{report}");
}
