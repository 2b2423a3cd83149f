//! Full disks, over real TCP and real filesystems (a 1 MiB tmpfs).
//!
//! The difference file on a full disk: the primary's difference directory is the
//! tmpfs. With the backup down, commits
//! go on into the difference file until the filesystem is full; from then on the
//! primary keeps committing (async commits as before, sync ones alone, saying their
//! record may be lost), raises `ResyncRequired` once and writes no more; when the
//! backup is back it is resynced and ends with the primary's exact tables.
//!
//! The backup's access log on a full disk: the backup cannot log, so it neither
//! applies nor acknowledges; the primary keeps committing (its link down, the rest
//! in its difference file). Once the filesystem has room again the pair recovers,
//! and the backup ends with the primary's exact tables, restarted from its log too.
//! The test waits for the backup to say its write failed for want of space, so the
//! full disk, not a lag, is what it goes through; a second run takes checkpoints
//! in that directory every 64 KiB of log meanwhile.
//!
//! A record cut short by a full disk: a record larger than the log's write buffer
//! goes straight to the file and part of it gets there; the log cuts that fragment,
//! so that the records appended once there is room again read back after a restart
//! (following the fragment, they would have been cut as a torn tail).
//!
//! Needs root (to mount the tmpfs); without it the test says so and passes, as the
//! network-namespace tests do. CI runs as root.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kirikae_engine::{Database, Operation, SessionInfo, Value};
use kirikae_replicate::{
    Backup, Epoch, Event, LinkState, LogRecord, Mode, PeerKey, RecordLog, RecordLogOptions,
    Replication, Replicator, RuleSet, Seq, Writes,
};
use kirikae_testkit::{kv_database, kv_row, wait_for};

const ACCT: &str = "acct";
const LEDGER: &str = "ledger";

fn key() -> PeerKey {
    PeerKey::new(b"disk-full-test-key-0123456789abc".to_vec()).unwrap()
}

/// A tmpfs of `size`, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None`, saying why, where it cannot be mounted (not root).
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Gives the filesystem `size` (e.g. room again after it filled).
    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "remount {size}: {status}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn backup(listen: &str, log: &Path) -> (Database, Backup) {
    common::start_backup(
        &[ACCT, LEDGER],
        listen,
        common::backup_config(key(), Some(log)),
    )
}

fn replicator(db: &Database, peer: std::net::SocketAddr, dir: PathBuf) -> Replicator {
    let mut config = common::sync_replicator_config(peer, key(), &dir);
    config.rules = RuleSet::parse(
        r#"
        default = "async"
        [[rule]]
        table = "ledger"
        mode = "sync"
        "#,
        "disk-full.toml",
    )
    .unwrap();
    // Far above the tmpfs: the filesystem, not the cap, is what runs out.
    config.link.difference_cap_bytes = 1 << 30;
    Replicator::start(db, config).unwrap()
}

fn assert_equal(primary: &Database, replica: &Database) {
    common::assert_tables_equal(primary, replica, &[ACCT, LEDGER]);
}

#[test]
fn a_full_disk_under_the_difference_file_ends_in_a_resync_and_loses_nothing() {
    let Some(tmpfs) = Tmpfs::mount("1m") else {
        return;
    };
    let log = tempfile::tempdir().unwrap();
    let primary = kv_database(&[ACCT, LEDGER]);
    let (replica, backup1) = backup("127.0.0.1:0", log.path());
    let addr = backup1.local_addr();
    let rep = replicator(&primary, addr, tmpfs.path().join("difference"));
    let events = rep.events();
    assert!(
        rep.wait_duplex(Duration::from_secs(10)),
        "{:?}",
        rep.metrics()
    );
    backup1.stop().unwrap();
    wait_for(
        "the link to see the backup gone",
        Duration::from_secs(10),
        || rep.metrics().state != Some(LinkState::Duplex),
    );

    // Commit until the difference file has failed (well past 1 MiB of records),
    // then some more: nothing the primary commits may fail.
    let s = primary.session(SessionInfo::new("app", "app", None));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut resync_required = None;
    let mut k = 0i64;
    let mut after = 0;
    while after < 500 {
        assert!(
            Instant::now() < deadline,
            "no ResyncRequired after {k} commits: {:?}",
            rep.metrics()
        );
        k += 1;
        s.insert(ACCT, kv_row(k, k)).unwrap();
        if resync_required.is_none() {
            resync_required = events.try_iter().find_map(|e| match e {
                Event::ResyncRequired { reason } => Some(reason),
                _ => None,
            });
        } else {
            after += 1;
        }
    }
    let reason = resync_required.unwrap();
    eprintln!("ResyncRequired after {k} commits: {reason}");
    assert!(reason.contains("difference file"), "{reason}");
    // A sync commit with the backup down commits alone, as its rule says.
    let mut tx = s.begin();
    tx.insert(LEDGER, kv_row(1, 1)).unwrap();
    let note = tx.commit_noted().unwrap();
    assert!(
        matches!(
            Replication::of(&note),
            Some(Replication::NotReplicated { .. })
        ),
        "{:?}",
        Replication::of(&note)
    );
    // No second ResyncRequired: the file is written no more.
    assert!(
        !events
            .try_iter()
            .any(|e| matches!(e, Event::ResyncRequired { .. })),
        "raised once"
    );

    // The backup comes back (same address and log): resynced, then equal.
    let (replica2, backup2) = backup(&addr.to_string(), log.path());
    drop(replica);
    common::resynced(&rep, Duration::from_secs(60));
    assert!(
        rep.wait_caught_up(Duration::from_secs(20)),
        "{:?}",
        rep.metrics()
    );
    assert_equal(&primary, &replica2);
    rep.shutdown();
    drop(backup2);
}

#[test]
fn a_full_disk_under_the_backups_access_log_holds_its_acknowledgements_until_there_is_room() {
    a_full_access_log_disk(None);
}

#[test]
fn a_full_disk_under_the_backups_checkpoints_holds_its_acknowledgements_until_there_is_room() {
    // A checkpoint every 64 KiB of log: some are due, and fail, while the disk is full.
    a_full_access_log_disk(Some(64 << 10));
}

/// The backup's log directory fills, then has room again (see the module docs);
/// `checkpoint_bytes`, if given, is how often it takes a checkpoint there.
fn a_full_access_log_disk(checkpoint_bytes: Option<u64>) {
    let Some(tmpfs) = Tmpfs::mount("1m") else {
        return;
    };
    let diff = tempfile::tempdir().unwrap();
    let log = tmpfs.path().join("log");
    let primary = kv_database(&[ACCT, LEDGER]);
    let mut config = common::backup_config(key(), Some(&log));
    if let Some(bytes) = checkpoint_bytes {
        config.access_log.checkpoint_bytes = bytes;
    }
    let (replica, backup1) = common::start_backup(&[ACCT, LEDGER], "127.0.0.1:0", config);
    let addr = backup1.local_addr();
    let rep = replicator(&primary, addr, diff.path().to_owned());
    let events = rep.events();
    assert!(
        rep.wait_duplex(Duration::from_secs(10)),
        "{:?}",
        rep.metrics()
    );

    // Commit until the backup has failed to write its log directory (it says why
    // it dropped the connection), and on for a while: commits go on regardless.
    let s = primary.session(SessionInfo::new("app", "app", None));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut k = 0i64;
    let mut full_at = None;
    loop {
        k += 1;
        s.insert(ACCT, kv_row(k, k)).unwrap();
        match full_at {
            Some(at) if k > at + 2_000 => break,
            Some(_) => {}
            None => {
                let status = backup1.status();
                let full = status
                    .last_disconnect
                    .as_deref()
                    .is_some_and(|r| r.contains("No space left"));
                assert!(
                    Instant::now() < deadline,
                    "the backup's disk never filled after {k} commits: {status:?}"
                );
                if full {
                    eprintln!("{k} commits in: {:?}", status.last_disconnect);
                    full_at = Some(k);
                }
            }
        }
    }
    let acked_while_full = rep.metrics().last_acked_seq;

    // Room again: the pair recovers and the backup holds what the primary does.
    tmpfs.resize("64m");
    let caught_up = rep.wait_caught_up(Duration::from_secs(30));
    if !caught_up {
        for e in events.try_iter() {
            eprintln!("event: {e}");
        }
        eprintln!("backup: {:?}", backup1.status());
    }
    assert!(caught_up, "{:?}", rep.metrics());
    assert!(rep.metrics().last_acked_seq > acked_while_full);
    assert_equal(&primary, &replica);
    let mut files: Vec<String> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    eprintln!("log directory: {files:?}; backup: {:?}", backup1.status());
    // And so does a backup restarted from that log.
    rep.shutdown();
    backup1.stop().unwrap();
    drop(replica);
    let (replica2, backup2) = backup(&addr.to_string(), &log);
    assert_equal(&primary, &replica2);
    drop(backup2);
}

/// A difference-file record of `bytes` bytes of payload at `seq`.
fn record(seq: u64, bytes: usize) -> LogRecord {
    LogRecord {
        seq: Seq(seq),
        epoch: Epoch(1),
        mode: Mode::Async,
        operations: Writes::new(vec![Operation::Insert {
            table: ACCT.into(),
            row: vec![Value::Int(seq as i64), Value::from(vec![7u8; bytes])].into(),
        }]),
    }
}

#[test]
fn a_record_cut_short_by_a_full_disk_leaves_nothing_the_next_ones_follow() {
    let Some(tmpfs) = Tmpfs::mount("64k") else {
        return;
    };
    let options = RecordLogOptions {
        segment_bytes: 1 << 20,
        fsync: false,
    };
    let dir = tmpfs.path().join("log");
    let (mut log, _) = RecordLog::open(&dir, options.clone()).unwrap();
    for seq in 1..=3 {
        log.append(&record(seq, 100)).unwrap();
    }
    log.sync().unwrap();
    // Leave less room than the next record needs (it is larger than the log's
    // write buffer, so it goes straight to the file, and part of it gets there).
    let filler = tmpfs.path().join("filler");
    let mut room = vec![0u8; 40 << 10];
    std::fs::write(&filler, &room).unwrap();
    let err = log
        .append(&record(4, 32 << 10))
        .expect_err("no room for it");
    assert!(err.to_string().contains("No space left"), "{err}");
    // Room again: the log goes on, and every record it took reads back.
    std::fs::remove_file(&filler).unwrap();
    room.clear();
    for seq in 4..=6 {
        log.append(&record(seq, 100)).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    let (mut log, recovery) = RecordLog::open(&dir, options).unwrap();
    assert_eq!(recovery.torn_bytes, 0, "{recovery:?}");
    let seqs: Vec<u64> = log
        .read_batch(Seq(0), 100)
        .unwrap()
        .iter()
        .map(|r| r.seq.0)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
}
