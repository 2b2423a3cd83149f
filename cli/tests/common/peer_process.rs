//! A `kirikae backup` process driven by a test: spawned over a data directory,
//! finished through its standard input (its last line is a JSON report), or killed.

// Each test binary uses a part of this.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use kirikae::engine::Database;
use kirikae::replicate::{
    table_checksum, LinkConfig, PeerKey, RecordLogOptions, ReplicatorConfig, RuleSet,
};
use kirikae_workload::telecom;

/// The pair's pre-shared key: the backup process reads it from a file.
pub const KEY: &str = "kirikae-process-test-key-0123456789";

/// [`KEY`] as the replicator takes it.
pub fn key() -> PeerKey {
    PeerKey::new(KEY.as_bytes().to_vec()).expect("key")
}

/// A primary's database: the telecom tables with `subscribers`.
pub fn telecom_db(subscribers: u64) -> Database {
    let db = Database::new();
    telecom::create_tables(&db, subscribers).expect("tables");
    db
}

/// A replicator to the peer process at `peer`: quick to notice it gone and to
/// reconnect, the difference file in `dir` without fsync.
pub fn replicator_config(peer: SocketAddr, rules: RuleSet, dir: &Path) -> ReplicatorConfig {
    ReplicatorConfig {
        key: Some(key()),
        peer,
        rules,
        link: LinkConfig {
            peer_timeout: Duration::from_millis(500),
            reconnect_min: Duration::from_millis(20),
            reconnect_max: Duration::from_millis(200),
            ..LinkConfig::default()
        },
        difference_dir: dir.to_owned(),
        difference: RecordLogOptions {
            fsync: false,
            ..RecordLogOptions::default()
        },
    }
}

/// Each telecom table of `db` has the checksum the peer's final `report` gives.
pub fn assert_checksums_equal(db: &Database, report: &serde_json::Value, what: &str) {
    for t in telecom::TABLES {
        let ours = table_checksum(&db.table(t).expect("table"));
        let theirs = report["checksums"][t].as_u64().expect("checksum");
        assert_eq!(ours, theirs, "{what}: table {t} differs");
    }
}

/// `kirikae primary` replicating to `peer` with telecom tables of `subscribers`,
/// `rate` operations per second for `seconds` (0: until stopped), its difference
/// file in `diff`, with the key of the backup whose data directory is `data`.
pub fn primary_command(
    peer: SocketAddr,
    (subscribers, rate, seconds): (u64, u64, f64),
    diff: &Path,
    data: &Path,
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kirikae"));
    c.args(["primary", "--peer", &peer.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .args(["--subscribers", &subscribers.to_string()])
        .args(["--rate", &rate.to_string()])
        .arg("--difference-dir")
        .arg(diff)
        .arg("--key-file")
        .arg(data.with_extension("key"));
    c
}

/// The last line of `text` that is JSON: a process's final report.
pub fn last_json_line(text: &str) -> serde_json::Value {
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .unwrap_or_else(|| panic!("no JSON report in {text:?}"))
}

/// A `kirikae backup` process and its pipes.
pub struct PeerProcess {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: BufReader<ChildStdout>,
    pub addr: SocketAddr,
}

impl PeerProcess {
    /// `kirikae backup` listening on `listen` (port 0: any) over `data_dir`, with
    /// telecom tables of `subscribers`.
    pub fn spawn(listen: &str, data_dir: &Path, subscribers: u64) -> PeerProcess {
        PeerProcess::spawn_with(listen, data_dir, subscribers, &[])
    }

    /// [`spawn`](PeerProcess::spawn) with more arguments.
    pub fn spawn_with(
        listen: &str,
        data_dir: &Path,
        subscribers: u64,
        extra: &[&str],
    ) -> PeerProcess {
        let key_file = data_dir.with_extension("key");
        std::fs::write(&key_file, format!("{KEY}\n")).expect("key file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kirikae"))
            .args([
                "backup",
                "--listen",
                listen,
                "--no-fsync",
                "--until-stdin-closes",
            ])
            .args(["--subscribers", &subscribers.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--key-file")
            .arg(&key_file)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn kirikae backup");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the peer's first line");
        let addr = line
            .split_whitespace()
            .nth(4)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        PeerProcess {
            child,
            stdin,
            stdout,
            addr,
        }
    }

    /// Stops it by closing its stdin; returns its final report.
    pub fn finish(mut self) -> serde_json::Value {
        drop(self.stdin.take());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).expect("report");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "peer exited with {status}");
        // The report is the last line (event lines may come before it).
        last_json_line(&rest)
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }
}
