//! Replication with real processes: the peer as a spawned `kirikae backup` (each mode,
//! killed under load and restarted from its log), and a `kirikae primary` killed with
//! SIGKILL while degraded, leaving a readable difference file.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kirikae::engine::Database;
use kirikae::replicate::{Event, LinkState, RecordLog, RecordLogOptions, Replicator, RuleSet};
use kirikae_testkit::wait_for;
use kirikae_workload::telecom::{self, Traffic};

mod common;

use common::peer_process::{
    assert_checksums_equal, last_json_line, replicator_config, telecom_db, PeerProcess, KEY,
};

const SUBSCRIBERS: u64 = 2_000;

/// `kirikae primary` replicating to `peer` at 2000 operations per second until
/// stopped (see [`common::peer_process::primary_command`]).
fn primary_command(peer: SocketAddr, diff: &Path, data: &Path) -> Command {
    common::peer_process::primary_command(peer, (SUBSCRIBERS, 2000, 0.0), diff, data)
}

fn start(db: &Database, peer: SocketAddr, rules: RuleSet, dir: &Path) -> Replicator {
    Replicator::start(db, replicator_config(peer, rules, dir)).expect("replicator")
}

fn traffic(rate: Option<f64>) -> Traffic {
    Traffic {
        sessions: 2,
        subscribers: SUBSCRIBERS,
        mix: Default::default(),
        rate,
        seed: 7,
    }
}

#[test]
fn each_mode_replicates_to_a_peer_process() {
    for mode in ["async", "ordered", "sync", "mixed"] {
        let data = tempfile::tempdir().expect("tempdir");
        let diff = tempfile::tempdir().expect("tempdir");
        let peer = PeerProcess::spawn("127.0.0.1:0", data.path(), SUBSCRIBERS);
        let rules = if mode == "mixed" {
            RuleSet::load(Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../replicate/rules/seed000-mixed.toml"
            )))
            .expect("rules")
        } else {
            RuleSet::parse(&format!("default = \"{mode}\""), "t.toml").expect("rules")
        };
        let db = telecom_db(SUBSCRIBERS);
        let rep = start(&db, peer.addr, rules, diff.path());
        wait_for("duplex", Duration::from_secs(10), || {
            rep.metrics().state == Some(LinkState::Duplex)
        });
        let running = traffic(None).start(&db);
        // Enough traffic to mean something, however slowly a loaded machine runs it.
        wait_for("1000 operations", Duration::from_secs(60), || {
            running.ops() > 1_000
        });
        let report = running.stop();
        assert!(report.ops > 1_000, "{mode}: {} ops", report.ops);
        assert_eq!(report.failed, 0, "{mode}");
        assert!(
            rep.wait_caught_up(Duration::from_secs(20)),
            "{mode}: caught up"
        );
        let m = rep.metrics();
        assert!(m.last_seq.0 > 500, "{mode}: {m:?}");
        assert_eq!((m.mismatches, m.apply_errors), (0, 0), "{mode}");
        rep.shutdown();
        let peer_report = peer.finish();
        assert_eq!(
            peer_report["last_seq"].as_u64(),
            Some(m.last_seq.0),
            "{mode}"
        );
        assert_checksums_equal(&db, &peer_report, mode);
    }
}

#[test]
fn a_killed_peer_process_is_caught_up_after_restart() {
    let data = tempfile::tempdir().expect("tempdir");
    let diff = tempfile::tempdir().expect("tempdir");
    let peer = PeerProcess::spawn("127.0.0.1:0", data.path(), SUBSCRIBERS);
    let addr = peer.addr;
    let db = telecom_db(SUBSCRIBERS);
    let rep = start(
        &db,
        addr,
        RuleSet::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../replicate/rules/seed000-mixed.toml"
        )))
        .expect("rules"),
        diff.path(),
    );
    let events = rep.events();
    wait_for("duplex", Duration::from_secs(10), || {
        rep.metrics().state == Some(LinkState::Duplex)
    });
    // A steady load; billing commits are sync with `fail` while the peer is down.
    let running = traffic(Some(8_000.0)).start(&db);
    std::thread::sleep(Duration::from_millis(500));
    peer.kill();
    wait_for("degraded", Duration::from_secs(5), || {
        rep.metrics().state == Some(LinkState::Degraded)
    });
    // The empty peer was first resynced (a copy of the preloaded tables).
    let diverged = loop {
        match events.recv_timeout(Duration::from_secs(5)).expect("event") {
            Event::Resynced { .. } => continue,
            other => break other,
        }
    };
    assert!(matches!(diverged, Event::Diverged { .. }), "{diverged:?}");
    wait_for("the difference file grows", Duration::from_secs(5), || {
        rep.metrics().difference_bytes > 50_000
    });
    let peer = PeerProcess::spawn(&addr.to_string(), data.path(), SUBSCRIBERS);
    let recovered = loop {
        match events.recv_timeout(Duration::from_secs(20)).expect("event") {
            e @ Event::Recovered { .. } => break e,
            Event::Diverged { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    let Event::Recovered { ops_replayed, .. } = recovered else {
        unreachable!()
    };
    assert!(ops_replayed > 100, "{ops_replayed}");
    std::thread::sleep(Duration::from_millis(300));
    let report = running.stop();
    assert!(
        report.failed > 0,
        "sync billing commits failed while the peer was down"
    );
    assert!(rep.wait_caught_up(Duration::from_secs(20)));
    let m = rep.metrics();
    assert_eq!((m.mismatches, m.apply_errors), (0, 0));
    rep.shutdown();
    let peer_report = peer.finish();
    assert_checksums_equal(&db, &peer_report, "after catch-up");
}

#[test]
fn a_primary_killed_while_degraded_leaves_a_readable_difference_file() {
    let diff = tempfile::tempdir().expect("tempdir");
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = nobody.local_addr().expect("addr");
    drop(nobody);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kirikae"))
        .args(["primary", "--peer", &addr.to_string(), "--seconds", "0"])
        .args(["--subscribers", &SUBSCRIBERS.to_string()])
        .arg("--difference-dir")
        .arg(diff.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn kirikae primary");
    let bytes = |dir: &Path| -> u64 {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    wait_for("difference records", Duration::from_secs(20), || {
        bytes(diff.path()) > 200_000
    });
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    let (mut file, recovery) =
        RecordLog::open(diff.path(), RecordLogOptions::default()).expect("readable");
    let records = file
        .read_after(kirikae::replicate::Seq::ZERO)
        .expect("records");
    assert!(recovery.records > 100 && records.len() as u64 == recovery.records);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(
            r.seq,
            kirikae::replicate::Seq(i as u64 + 1),
            "contiguous sequences up to the last valid record"
        );
        let operations = r.operations.operations().expect("decodes");
        assert!(!operations.is_empty() || r.mode == kirikae::replicate::Mode::Skip);
    }
}

/// `kirikae primary --seconds 0` runs until SIGTERM, then stops its traffic, waits for
/// the peer and prints the same final report as a timed run (exit 0: caught up).
#[test]
fn sigterm_ends_a_primary_with_its_final_report() {
    let data = tempfile::tempdir().expect("tempdir");
    let diff = tempfile::tempdir().expect("tempdir");
    let peer = PeerProcess::spawn("127.0.0.1:0", data.path(), SUBSCRIBERS);
    let mut child = primary_command(peer.addr, diff.path(), data.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn kirikae primary");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    // Its first status line: traffic is running (every line arrives within a second).
    while !seen.contains(" ops ") {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).expect("read") > 0,
            "ended early: {seen}"
        );
        seen.push_str(&line);
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("the rest");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}: {seen}{rest}");
    assert!(rest.contains("interrupted"), "{rest}");
    let report = last_json_line(&rest);
    assert_eq!(report["caught_up"], serde_json::Value::Bool(true), "{rest}");
    assert!(report["ops"].as_u64().unwrap_or(0) > 0, "{rest}");
    peer.finish();
}

/// Sends `signal` (STOP, CONT) to a process.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// A peer process paused with SIGSTOP keeps its connection open and says nothing:
/// only the silence tells. Commits must keep returning (a sync one within its own
/// deadline), the link must degrade, and after SIGCONT the peer must be caught up
/// with equal tables.
#[test]
fn a_peer_paused_with_sigstop_degrades_the_link_and_is_caught_up_after_sigcont() {
    let data = tempfile::tempdir().expect("tempdir");
    let diff = tempfile::tempdir().expect("tempdir");
    let peer = PeerProcess::spawn("127.0.0.1:0", data.path(), SUBSCRIBERS);
    let pid = peer.child.id();
    let db = telecom_db(SUBSCRIBERS);
    let rules = RuleSet::parse("default = \"sync\"", "t.toml").expect("rules");
    let rep = start(&db, peer.addr, rules, diff.path());
    let events = rep.events();
    wait_for("duplex", Duration::from_secs(10), || {
        rep.metrics().state == Some(LinkState::Duplex)
    });
    let running = traffic(Some(4_000.0)).start(&db);
    wait_for("some replicated load", Duration::from_secs(10), || {
        rep.metrics().last_acked_seq.0 > 200
    });

    signal(pid, "STOP");
    // A sync commit while the peer is silent: it ends (alone, by its rule) instead of
    // waiting for an answer that never comes.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let committer = {
        let db = db.clone();
        std::thread::spawn(move || {
            let session = db.session(kirikae::engine::SessionInfo::default());
            let row = vec![
                kirikae::engine::Value::Int(1 << 40),
                "440109999999999".into(),
                kirikae::engine::Value::Int(1),
            ];
            let _ = done_tx.send(session.insert(telecom::EVENT_TABLE, row).map(drop));
        })
    };
    let outcome = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a sync commit ends while the peer is stopped");
    assert!(outcome.is_ok(), "the rule says continue: {outcome:?}");
    committer.join().expect("committer");
    wait_for("degraded", Duration::from_secs(10), || {
        rep.metrics().state == Some(LinkState::Degraded)
    });

    signal(pid, "CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left).expect("Recovered after SIGCONT") {
            Event::Recovered { .. } => break,
            // The empty peer's first copy; the outage.
            Event::Resynced { .. } | Event::Diverged { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    let report = running.stop();
    assert!(report.ops > 0);
    assert!(rep.wait_caught_up(Duration::from_secs(20)), "caught up");
    let m = rep.metrics();
    assert_eq!((m.mismatches, m.apply_errors), (0, 0));
    rep.shutdown();
    let peer_report = peer.finish();
    assert_checksums_equal(&db, &peer_report, "after SIGCONT");
}

/// A primary process killed with SIGKILL under traffic: the backup process (peer
/// arbiter, 500 ms) promotes itself, says so as it happens, its takeover sequence
/// covers everything the primary last saw acknowledged, and every sync commit the
/// primary's ack log calls replicated is in the promoted database (rebuilt here from
/// the backup's access log).
#[test]
fn a_backup_process_promotes_itself_when_its_primary_process_is_killed() {
    let data = tempfile::tempdir().expect("tempdir");
    let diff = tempfile::tempdir().expect("tempdir");
    let acks = diff.path().with_extension("acks");
    let PeerProcess {
        mut child,
        stdin,
        stdout,
        addr,
    } = PeerProcess::spawn_with(
        "127.0.0.1:0",
        data.path(),
        SUBSCRIBERS,
        &["--arbiter", "peer", "--failover-after-ms", "500"],
    );
    let mut primary = primary_command(addr, diff.path(), data.path())
        .arg("--ack-log")
        .arg(&acks)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn kirikae primary");
    let mut lines = BufReader::new(primary.stdout.take().expect("stdout"));
    // Replicating: a status line with a sequence acknowledged.
    let acked = loop {
        let mut line = String::new();
        assert!(lines.read_line(&mut line).expect("read") > 0, "ended early");
        let acked: Option<u64> = line
            .split_whitespace()
            .skip_while(|w| *w != "acked")
            .nth(1)
            .and_then(|n| n.parse().ok());
        if let Some(n) = acked.filter(|n| *n > 0) {
            break n;
        }
    };
    primary.kill().expect("SIGKILL");
    primary.wait().expect("wait");
    let killed_at = std::time::Instant::now();
    // The backup's lines, read on their own thread so that waiting is bounded.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let promoted = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the backup promoted itself within 10 s of the kill");
        if line.contains("Promoted at epoch 2") {
            break line;
        }
    };
    assert!(
        killed_at.elapsed() >= Duration::from_millis(400),
        "{promoted}"
    );
    assert!(promoted.contains("primary silent for"), "{promoted}");
    drop(stdin);
    let rest: Vec<String> = rx.iter().collect();
    reader.join().expect("reader");
    let status = child.wait().expect("wait");
    assert!(status.success(), "backup exited with {status}");
    let report: serde_json::Value = rest
        .iter()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .unwrap_or_else(|| panic!("no report in {rest:?}"));
    assert_eq!(
        report["promoted"]["epoch"],
        serde_json::json!(2),
        "{report}"
    );
    let takeover = report["promoted"]["last_seq"].as_u64().expect("last_seq");
    assert!(
        takeover >= acked,
        "took over after {takeover}, {acked} was acknowledged"
    );
    let promoted = common::promoted_database(data.path(), KEY.as_bytes(), SUBSCRIBERS);
    common::assert_no_replicated_commit_lost(&common::acks(&acks), &promoted);
}

/// The `http://ADDR` of an `admin endpoint on http://ADDR` line read from `lines`.
fn admin_addr(lines: &mut impl BufRead) -> String {
    loop {
        let mut line = String::new();
        assert!(
            lines.read_line(&mut line).expect("read") > 0,
            "no admin line"
        );
        if let Some(addr) = line.trim().strip_prefix("admin endpoint on http://") {
            return addr.to_owned();
        }
    }
}

/// `kirikae …` to completion: its stdout, or a panic with what it printed.
fn kirikae(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kirikae"))
        .args(args)
        .output()
        .expect("run kirikae");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kirikae {args:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A planned switchover between two processes, commanded from a third through their
/// admin endpoints: the primary hands over (and ends, caught up), the backup is
/// promoted at exactly the hand-over sequence, and the roles read back as such.
#[test]
fn a_switchover_through_the_admin_endpoints_promotes_the_backup_at_the_hand_over_sequence() {
    let data = tempfile::tempdir().expect("tempdir");
    let diff = tempfile::tempdir().expect("tempdir");
    let key_file = data.path().with_extension("key");
    let key_path = key_file.to_str().expect("utf-8 path");
    let mut peer = PeerProcess::spawn_with(
        "127.0.0.1:0",
        data.path(),
        SUBSCRIBERS,
        &["--admin", "127.0.0.1:0"],
    );
    let backup_admin = admin_addr(&mut peer.stdout);
    let mut primary = primary_command(peer.addr, diff.path(), data.path())
        .args(["--admin", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn kirikae primary");
    let mut lines = BufReader::new(primary.stdout.take().expect("stdout"));
    let primary_admin = admin_addr(&mut lines);
    let status: serde_json::Value =
        serde_json::from_str(&kirikae(&["status", "--admin", &primary_admin])).expect("json");
    assert_eq!(status["role"], "primary", "{status}");
    // The switchover must hand something over: the traffic's first commits may come
    // a while after the admin endpoint (a loaded machine, a debug build).
    wait_for(
        "the primary's first commits",
        Duration::from_secs(30),
        || {
            let status: serde_json::Value =
                serde_json::from_str(&kirikae(&["status", "--admin", &primary_admin]))
                    .expect("json");
            status["last_seq"].as_u64() > Some(0)
        },
    );
    // Unauthenticated commands are refused.
    let refused = Command::new(env!("CARGO_BIN_EXE_kirikae"))
        .args(["promote", "--admin", &backup_admin])
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));

    let said = kirikae(&[
        "switchover",
        "--admin",
        &primary_admin,
        "--backup-admin",
        &backup_admin,
        "--key-file",
        key_path,
    ]);
    let at_seq: u64 = said
        .split("handed over at sequence ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no hand-over sequence in {said}"));
    assert!(at_seq > 0, "{said}");
    let mut rest = String::new();
    lines
        .read_to_string(&mut rest)
        .expect("the primary's output");
    let status = primary.wait().expect("wait");
    assert!(status.success(), "{status}: {rest}");
    assert!(
        rest.contains(&format!("handed over at sequence {at_seq}")),
        "{rest}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&kirikae(&["status", "--admin", &backup_admin])).expect("json");
    assert_eq!(
        (status["role"].as_str(), status["last_seq"].as_u64()),
        (Some("primary"), Some(at_seq)),
        "{status}"
    );
    let report = peer.finish();
    assert_eq!(
        report["promoted"]["last_seq"].as_u64(),
        Some(at_seq),
        "{report}"
    );
}
