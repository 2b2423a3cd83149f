//! Strangers at the backup's port, over real TCP: a forged `Hello` with a huge epoch,
//! forged `Ship` and `Abort` frames, idle connections, a connection that trickles a
//! byte at a time, a primary with another key, a flood of handshakes. None of them
//! changes the backup's state, and none keeps the real primary out.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use kirikae_engine::{Database, Key, Operation, SessionInfo};
use kirikae_replicate::{
    encode, Backup, BackupConfig, Epoch, LinkConfig, Message, Mode, PeerKey, Replication,
    Replicator, Seq, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use kirikae_testkit::{kv_database, kv_row, wait_for};

const T: &str = "acct";

fn key(byte: u8) -> PeerKey {
    PeerKey::new(vec![byte; 32]).unwrap()
}

fn backup(handshake_timeout: Duration) -> Backup {
    Backup::start(
        kv_database(&[T]),
        "127.0.0.1:0",
        BackupConfig {
            key: Some(key(1)),
            heartbeat_every: Duration::from_millis(20),
            handshake_timeout,
            handshakes_max: 8,
            ..BackupConfig::default()
        },
    )
    .unwrap()
}

fn primary(db: &Database, peer: SocketAddr, key: PeerKey, dir: &std::path::Path) -> Replicator {
    Replicator::start(db, common::sync_replicator_config(peer, key, dir)).unwrap()
}

fn frame(m: &Message) -> Vec<u8> {
    encode(m, MAX_FRAME_BYTES).unwrap()
}

fn forged_hello(epoch: u64) -> Message {
    Message::Hello {
        version: PROTOCOL_VERSION,
        epoch: Epoch(epoch),
        node: "mallory".into(),
        last_seq: Seq(1_000_000),
        nonce: [3; 32],
    }
}

/// Commits one sync insert on `db`: replicated, and then applied at the backup.
fn replicates(db: &Database, backup: &Backup, k: i64) {
    let s = db.session(SessionInfo::default());
    let mut tx = s.begin();
    tx.insert(T, kv_row(k, k)).unwrap();
    let note = tx
        .commit_noted()
        .expect("a sync commit through the real primary");
    assert!(
        matches!(Replication::of(&note), Some(Replication::Replicated { .. })),
        "{note:?}"
    );
    wait_for(
        "the commit applied at the backup",
        Duration::from_secs(5),
        || backup.status().last_seq >= Seq(1),
    );
}

#[test]
fn forged_frames_change_nothing_and_the_real_primary_gets_in() {
    let backup = backup(Duration::from_secs(2));
    let addr = backup.local_addr();
    // A forged Hello with a huge epoch, then Ship and Abort frames, all without proof.
    let mut mallory = TcpStream::connect(addr).unwrap();
    let ship = Message::Ship {
        seq: Seq(1),
        epoch: Epoch(u64::MAX / 2),
        mode: Mode::Async,
        operations: vec![Operation::Insert {
            table: T.into(),
            row: kv_row(666, 666).into(),
        }]
        .into(),
        verify: false,
    };
    let mut bytes = frame(&forged_hello(u64::MAX / 2));
    bytes.extend(frame(&Message::Proof { mac: [0; 32] }));
    bytes.extend(frame(&ship));
    bytes.extend(frame(&Message::Abort {
        seq: Seq(2),
        epoch: Epoch(1),
    }));
    mallory.write_all(&bytes).unwrap();
    wait_for("the forgery to be refused", Duration::from_secs(5), || {
        backup.status().handshakes_refused >= 1
    });
    let status = backup.status();
    assert_eq!(status.epoch, Epoch::NONE, "{status:?}");
    assert_eq!((status.last_seq, status.logged_seq), (Seq(0), Seq(0)));
    assert!(
        status
            .last_refusal
            .as_deref()
            .unwrap_or("")
            .contains("does not match"),
        "{status:?}"
    );
    // The connection is closed: reading ends (after the backup's own hello and proof).
    mallory
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = Vec::new();
    assert!(mallory.read_to_end(&mut sink).is_ok(), "closed, not hung");

    let dir = tempfile::tempdir().unwrap();
    let db = kv_database(&[T]);
    let replicator = primary(&db, addr, key(1), dir.path());
    assert!(replicator.wait_duplex(Duration::from_secs(10)));
    replicates(&db, &backup, 1);
    // The real primary's epoch, never the forger's.
    assert_eq!(backup.status().epoch, LinkConfig::default().epoch);
    replicator.shutdown();
}

#[test]
fn idle_and_trickling_connections_never_keep_the_real_primary_out() {
    // Long enough that the strangers are all still in their handshakes while the
    // real primary connects.
    let backup = backup(Duration::from_secs(30));
    let addr = backup.local_addr();
    let idle: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let trickler = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let bytes = frame(&forged_hello(7));
        let started = Instant::now();
        for b in bytes.iter().cycle() {
            if s.write_all(&[*b]).is_err() || started.elapsed() > Duration::from_secs(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let db = kv_database(&[T]);
    let replicator = primary(&db, addr, key(1), dir.path());
    assert!(
        replicator.wait_duplex(Duration::from_secs(10)),
        "the real primary is kept out"
    );
    replicates(&db, &backup, 1);
    assert!(backup.status().connected);
    drop(idle);
    replicator.shutdown();
    drop(backup);
    trickler.join().unwrap();
}

#[test]
fn a_handshake_past_its_deadline_is_refused_however_it_trickles() {
    let backup = backup(Duration::from_millis(300));
    let addr = backup.local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    let bytes = frame(&forged_hello(7));
    // One byte every 50 ms: each read succeeds, the whole never arrives in time.
    for b in bytes.iter().take(20) {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for("the trickler to be refused", Duration::from_secs(5), || {
        backup.status().handshakes_refused >= 1
    });
    let why = backup.status().last_refusal.unwrap_or_default();
    assert!(why.contains("in time"), "{why}");
}

#[test]
fn a_primary_with_another_key_is_refused_and_counted() {
    let backup = backup(Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let db = kv_database(&[T]);
    let replicator = primary(&db, backup.local_addr(), key(2), dir.path());
    wait_for(
        "the wrong key to be refused",
        Duration::from_secs(5),
        || backup.status().handshakes_refused >= 1,
    );
    assert!(!replicator.wait_duplex(Duration::from_millis(300)));
    assert!(!backup.status().connected);
    let s = db.session(SessionInfo::default());
    // Sync with the peer down and the default rule (continue): committed here alone.
    s.insert(T, kv_row(5, 5)).unwrap();
    assert_eq!(backup.status().last_seq, Seq(0));
    assert!(s.get(T, &Key::from(5)).unwrap().is_some());
    replicator.shutdown();
}

#[test]
fn handshakes_beyond_the_cap_are_closed_at_once() {
    let backup = backup(Duration::from_secs(30));
    let addr = backup.local_addr();
    let held: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Let the acceptor take all eight before the ninth.
    wait_for(
        "eight handshakes in progress",
        Duration::from_secs(5),
        || {
            let mut probe = TcpStream::connect(addr).unwrap();
            probe
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut b = [0u8; 1];
            // Closed at once (0 bytes), rather than waiting for our hello.
            matches!(probe.read(&mut b), Ok(0))
        },
    );
    assert!(backup.status().handshakes_refused >= 1);
    assert!(backup
        .status()
        .last_refusal
        .unwrap_or_default()
        .contains("too many handshakes"));
    drop(held);
}
