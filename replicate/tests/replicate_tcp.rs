//! Replication end to end over real TCP on loopback, with the peer in this process:
//! each mode, both-side rollback, a peer stopped under load and restarted from its
//! log, and in-doubt sync transactions.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kirikae_engine::{Column, ColumnType, Database, EngineError, Key, Schema, SessionInfo, Value};
use kirikae_replicate::handshake::BackupHandshake;
use kirikae_replicate::{
    table_checksum, AccessLogOptions, Backup, BackupConfig, Event, LinkConfig, LinkState, PeerKey,
    RecordLog, RecordLogOptions, ReplicateError, Replication, Replicator, ReplicatorConfig,
    RuleSet, Seq,
};

use kirikae_testkit::{kv_database, kv_row, wait_for};

const T: &str = "acct";

fn database() -> Database {
    kv_database(&[T, "scratch"])
}

fn rules(default: &str) -> RuleSet {
    RuleSet::parse(
        &format!(
            r#"
            default = "{default}"
            [[rule]]
            name = "scratch is not replicated"
            table = "scratch"
            mode = "skip"
            "#
        ),
        "test.toml",
    )
    .expect("rules")
}

/// A fast link. These tests start both sides empty and look at catch-up from the
/// difference file and divergence, so a peer at sequence 0 is not resynced here
/// (`tests/resync.rs` is about that).
fn link() -> LinkConfig {
    LinkConfig {
        resync: false,
        heartbeat_every: Duration::from_millis(20),
        peer_timeout: Duration::from_millis(300),
        sync_timeout: Duration::from_millis(300),
        reconnect_min: Duration::from_millis(10),
        reconnect_max: Duration::from_millis(100),
        ..LinkConfig::default()
    }
}

/// The pair's pre-shared key in these tests.
fn test_key() -> PeerKey {
    PeerKey::new(b"replicate-tcp-test-key-0123456789".to_vec()).expect("key")
}

fn peer_config(log: Option<&Path>) -> BackupConfig {
    BackupConfig {
        key: Some(test_key()),
        log_dir: log.map(Path::to_owned),
        access_log: AccessLogOptions::default().with_fsync(false),
        heartbeat_every: Duration::from_millis(20),
        ..BackupConfig::default()
    }
}

fn replicator(db: &Database, peer: std::net::SocketAddr, default: &str, dir: &Path) -> Replicator {
    replicator_with(db, peer, rules(default), link(), dir)
}

fn replicator_with(
    db: &Database,
    peer: std::net::SocketAddr,
    rules: RuleSet,
    link: LinkConfig,
    dir: &Path,
) -> Replicator {
    Replicator::start(
        db,
        ReplicatorConfig {
            key: Some(test_key()),
            peer,
            rules,
            link,
            difference_dir: dir.to_owned(),
            difference: RecordLogOptions {
                fsync: false,
                ..RecordLogOptions::default()
            },
        },
    )
    .expect("replicator")
}

fn checksum(db: &Database, table: &str) -> u64 {
    table_checksum(&db.table(table).expect("table"))
}

/// Inserts, updates and deletes with two threads; returns the commit count.
fn traffic(db: &Database, keys: i64, rounds: i64) -> u64 {
    let commits = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..2i64 {
            let session = db.session(SessionInfo::new("app", "app", None));
            let commits = &commits;
            s.spawn(move || {
                for i in 0..rounds {
                    let k = t * keys + (i % keys);
                    let mut tx = session.begin();
                    let exists = tx.get(T, &Key::from(k)).expect("get").is_some();
                    let r = if !exists {
                        tx.insert(T, kv_row(k, i))
                    } else if i % 7 == 0 {
                        tx.delete(T, &Key::from(k))
                    } else {
                        tx.update(T, &Key::from(k), kv_row(k, i))
                    };
                    r.expect("write");
                    tx.insert("scratch", kv_row(t * 1_000_000 + i, i))
                        .expect("scratch");
                    tx.commit().expect("commit");
                    commits.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    commits.load(Ordering::Relaxed)
}

/// `wait_duplex` returns as soon as the link is in step with a live peer, and with
/// no peer at all it returns `false` once its timeout has passed (not before).
#[test]
fn wait_duplex_returns_when_in_step_or_when_its_time_is_up() {
    let primary = database();
    let replica = database();
    let peer = Backup::start(replica, "127.0.0.1:0", peer_config(None)).expect("peer");
    let dir = tempfile::tempdir().expect("tempdir");
    let rep = replicator(&primary, peer.local_addr(), "sync", dir.path());
    assert!(
        rep.wait_duplex(Duration::from_secs(10)),
        "duplex with a live peer"
    );
    assert_eq!(rep.metrics().state, Some(LinkState::Duplex));
    drop(rep);

    // A port nobody listens on: the peer from above, stopped.
    let addr = peer.local_addr();
    peer.stop().expect("stop");
    let dir = tempfile::tempdir().expect("tempdir");
    let rep = replicator(&primary, addr, "sync", dir.path());
    let started = std::time::Instant::now();
    assert!(
        !rep.wait_duplex(Duration::from_millis(300)),
        "no peer, no duplex"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn every_mode_replicates_end_to_end_and_skip_tables_stay_local() {
    for mode in ["async", "ordered", "sync"] {
        let primary = database();
        let replica = database();
        let peer = Backup::start(replica.clone(), "127.0.0.1:0", peer_config(None)).expect("peer");
        let dir = tempfile::tempdir().expect("tempdir");
        let rep = replicator(&primary, peer.local_addr(), mode, dir.path());
        assert!(rep.wait_duplex(Duration::from_secs(5)), "duplex");
        let commits = traffic(&primary, 50, 400);
        assert_eq!(commits, 800);
        assert!(
            rep.wait_caught_up(Duration::from_secs(10)),
            "{mode}: caught up"
        );
        assert_eq!(
            checksum(&primary, T),
            checksum(&replica, T),
            "{mode}: acct equal"
        );
        assert!(!primary.table(T).expect("t").is_empty());
        assert_eq!(
            replica.table("scratch").expect("s").len(),
            0,
            "{mode}: skip stays local"
        );
        let m = rep.metrics();
        assert_eq!(
            m.last_seq,
            Seq(800),
            "{mode}: one sequence per replicated commit"
        );
        assert_eq!(m.mismatches, 0);
        assert_eq!(m.apply_errors, 0);
        assert_eq!(peer.status().stats.applied, 800, "{mode}");
        rep.shutdown();
    }
}

/// Sync commits write their own frames while the link thread sleeps, and leave
/// them to it while it is busy with async ones: with four threads mixing both, every
/// frame still reaches the peer in sequence order (a frame out of order would be a
/// protocol error, a gap or a mismatch, and the link would go down).
#[test]
fn frames_written_by_sync_commits_and_by_the_link_thread_keep_sequence_order() {
    let primary = database();
    let replica = database();
    let peer = Backup::start(replica.clone(), "127.0.0.1:0", peer_config(None)).expect("peer");
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = RuleSet::parse(
        &format!(
            r#"
            default = "async"
            [[rule]]
            name = "accounts are sync"
            table = "{T}"
            mode = "sync"
            "#
        ),
        "t.toml",
    )
    .expect("rules");
    // Deadlines far beyond the test's run: a slow machine must not settle a sync
    // commit by its rule or declare the peer down.
    let config = LinkConfig {
        peer_timeout: Duration::from_secs(30),
        sync_timeout: Duration::from_secs(30),
        ..link()
    };
    let rep = replicator_with(&primary, peer.local_addr(), rules, config, dir.path());
    let events = rep.events();
    assert!(rep.wait_duplex(Duration::from_secs(5)), "duplex");
    let (threads, rounds) = (4i64, 300i64);
    std::thread::scope(|s| {
        for t in 0..threads {
            let session = primary.session(SessionInfo::new("app", "app", None));
            s.spawn(move || {
                for i in 0..rounds {
                    let k = t * 1_000 + i % 50;
                    let table = if i % 3 == 0 { T } else { "scratch" };
                    let mut tx = session.begin();
                    let exists = tx.get(table, &Key::from(k)).expect("get").is_some();
                    if exists {
                        tx.update(table, &Key::from(k), kv_row(k, i))
                    } else {
                        tx.insert(table, kv_row(k, i))
                    }
                    .expect("write");
                    tx.commit().expect("commit");
                }
            });
        }
    });
    assert!(rep.wait_caught_up(Duration::from_secs(30)), "caught up");
    for table in [T, "scratch"] {
        assert_eq!(
            checksum(&primary, table),
            checksum(&replica, table),
            "{table}"
        );
    }
    let m = rep.metrics();
    let commits = (threads * rounds) as u64;
    assert_eq!(m.last_seq, Seq(commits));
    assert_eq!((m.mismatches, m.apply_errors), (0, 0));
    assert_eq!(m.state, Some(LinkState::Duplex));
    assert_eq!(peer.status().stats.applied, commits);
    let downs: Vec<_> = events
        .try_iter()
        .filter(|e| matches!(e, Event::Diverged { .. }))
        .collect();
    assert!(downs.is_empty(), "{downs:?}");
    rep.shutdown();
}

#[test]
fn a_sync_commit_the_peer_refuses_rolls_back_on_both_sides() {
    let primary = database();
    let replica = database();
    // A row only the backup has (written before it serves: afterwards only its
    // applier may write there): the primary's insert of the same key fails there.
    replica
        .session(SessionInfo::default())
        .insert(T, kv_row(7, 700))
        .expect("backup-only row");
    let peer = Backup::start(replica.clone(), "127.0.0.1:0", peer_config(None)).expect("peer");
    assert!(
        matches!(
            replica
                .session(SessionInfo::default())
                .insert(T, kv_row(8, 8)),
            Err(EngineError::CommitVetoed { .. })
        ),
        "the application cannot write to a backup's database"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let rep = replicator(&primary, peer.local_addr(), "sync", dir.path());
    wait_for("duplex", Duration::from_secs(5), || {
        rep.metrics().state == Some(LinkState::Duplex)
    });
    let app = primary.session(SessionInfo::new("app", "app", None));
    let mut tx = app.begin();
    tx.insert(T, kv_row(1, 1)).expect("insert");
    let note = tx.commit_noted().expect("replicated commit");
    assert!(matches!(
        Replication::of(&note),
        Some(Replication::Replicated { seq: Seq(1) })
    ));
    let mut tx = app.begin();
    tx.update(T, &Key::from(1), kv_row(1, 2)).expect("update");
    tx.insert(T, kv_row(7, 1)).expect("insert");
    let err = tx.commit().expect_err("the peer refuses");
    let EngineError::CommitVetoed { source } = &err else {
        panic!("expected a veto, got {err:?}")
    };
    let rep_err = source
        .downcast_ref::<ReplicateError>()
        .expect("a replication error");
    assert!(
        matches!(
            rep_err,
            ReplicateError::RolledBackOnBoth { seq: Seq(2), .. }
        ),
        "{rep_err}"
    );
    assert!(
        rep_err.to_string().contains("rolled back on both sides"),
        "{rep_err}"
    );
    // Both sides rolled back: the update of key 1 is undone here and there.
    assert_eq!(app.get(T, &Key::from(7)).expect("get"), None);
    assert_eq!(
        app.get(T, &Key::from(1)).expect("get").expect("row")[1],
        Value::Int(1)
    );
    wait_for("peer resolved 2", Duration::from_secs(5), || {
        peer.status().last_seq == Seq(2)
    });
    let peer_view = replica.session(SessionInfo::default());
    assert_eq!(
        peer_view.get(T, &Key::from(1)).expect("get").expect("row")[1],
        Value::Int(1),
        "the peer rolled the update back too"
    );
    assert_eq!(peer.status().held, 0);
    // The link is still duplex and the next sync commit goes through.
    app.insert(T, kv_row(8, 8)).expect("next commit");
    assert!(rep.wait_caught_up(Duration::from_secs(5)));
    assert_eq!(
        peer_view.get(T, &Key::from(8)).expect("get").expect("row")[1],
        Value::Int(8)
    );
}

#[test]
fn a_peer_stopped_under_load_is_caught_up_from_the_difference_file() {
    let primary = database();
    let peer_log = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = database();
    let peer =
        Backup::start(replica, "127.0.0.1:0", peer_config(Some(peer_log.path()))).expect("peer");
    let addr = peer.local_addr();
    let rep = replicator(&primary, addr, "ordered", dir.path());
    let events = rep.events();
    wait_for("duplex", Duration::from_secs(5), || {
        rep.metrics().state == Some(LinkState::Duplex)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let db = primary.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let s = db.session(SessionInfo::new("app", "app", None));
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let k = i % 500;
                if s.get(T, &Key::from(k)).expect("get").is_some() {
                    s.update(T, &Key::from(k), kv_row(k, i)).expect("update");
                } else {
                    s.insert(T, kv_row(k, i)).expect("insert");
                }
                i += 1;
                // A steady incoming rate (~20k/s) that a catch-up must outrun.
                if i % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            i
        })
    };
    // Stopped once it has logged some of the load (it must recover from its log).
    wait_for(
        "the peer to resolve some transactions",
        Duration::from_secs(30),
        || peer.status().last_seq > Seq(100),
    );
    peer.stop().expect("peer stops");
    wait_for("degraded", Duration::from_secs(5), || {
        rep.metrics().state == Some(LinkState::Degraded)
    });
    wait_for(
        "records in the difference file",
        Duration::from_secs(5),
        || rep.metrics().difference_bytes > 10_000,
    );
    let diverged = events
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("an event ({e}); metrics {:?}", rep.metrics()));
    assert!(matches!(diverged, Event::Diverged { .. }), "{diverged:?}");
    // The peer comes back on the same port with a fresh database and its log.
    let replica = database();
    let peer = Backup::start(replica.clone(), addr, peer_config(Some(peer_log.path())))
        .expect("peer restarts");
    assert!(peer.status().stats.recovered > 0, "recovered from its log");
    let recovered = loop {
        let event = events
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| {
                panic!(
                    "an event ({e}): metrics {:?}, peer {:?}",
                    rep.metrics(),
                    peer.status()
                )
            });
        match event {
            e @ Event::Recovered { .. } => break e,
            Event::Diverged { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    let Event::Recovered { ops_replayed, .. } = recovered else {
        unreachable!()
    };
    assert!(ops_replayed > 0);
    // The load goes on through the recovery until the peer has resolved a good deal.
    wait_for(
        "the peer to resolve 1000 transactions",
        Duration::from_secs(60),
        || peer.status().last_seq > Seq(1000),
    );
    stop.store(true, Ordering::Relaxed);
    let writes = load.join().expect("load");
    assert!(writes > 1000);
    assert!(rep.wait_caught_up(Duration::from_secs(10)));
    assert_eq!(checksum(&primary, T), checksum(&replica, T));
    assert_eq!(rep.metrics().apply_errors, 0);
    assert_eq!(rep.metrics().mismatches, 0);
}

#[test]
fn sync_commits_while_the_peer_is_down_follow_their_rule() {
    let primary = database();
    let dir = tempfile::tempdir().expect("tempdir");
    // Nobody listens here: the link stays degraded.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let rules = RuleSet::parse(
        r#"
        default = "sync"
        [[rule]]
        name = "strict"
        table = "scratch"
        mode = "sync"
        when_peer_down = "fail"
        "#,
        "t.toml",
    )
    .expect("rules");
    let rep = replicator_with(&primary, addr, rules, link(), dir.path());
    let app = primary.session(SessionInfo::new("app", "app", None));
    let mut tx = app.begin();
    tx.insert(T, kv_row(1, 1)).expect("insert");
    let note = tx.commit_noted().expect("continue: commits alone");
    assert!(matches!(
        Replication::of(&note),
        Some(Replication::NotReplicated { seq: Seq(1), .. })
    ));
    let err = app
        .insert("scratch", kv_row(1, 1))
        .expect_err("fail: refused");
    assert!(err.to_string().contains("rule says fail"), "{err}");
    assert_eq!(app.get("scratch", &Key::from(1)).expect("get"), None);
    let diverged = rep
        .events()
        .recv_timeout(Duration::from_secs(2))
        .expect("event");
    assert!(
        matches!(
            diverged,
            Event::Diverged {
                since_seq: Seq(1),
                ..
            }
        ),
        "{diverged:?}"
    );
    rep.shutdown();
    let (mut diff, _) = RecordLog::open(dir.path(), RecordLogOptions::default()).expect("open");
    let records = diff.read_after(Seq::ZERO).expect("read");
    assert_eq!(
        records.len(),
        1,
        "the continued commit waits in the difference file"
    );
    assert_eq!(records[0].seq, Seq(1));
}

/// A peer that completes the handshake, keeps sending heartbeats, and never reads
/// again: the socket buffers fill and the link thread's write blocks. Without a write
/// timeout that thread (which also ticks the link) stopped for good, so nothing ever
/// noticed; now the write gives up after the peer timeout, the link degrades, and
/// commits keep returning.
#[test]
fn a_peer_that_stops_reading_degrades_the_link_instead_of_freezing_it() {
    let (addr, done, silent_peer) = silent_peer();
    let primary = database_with_blobs();
    let dir = tempfile::tempdir().expect("tempdir");
    let rep = replicator_with(
        &primary,
        addr,
        rules("async"),
        // Without the bound on unsent output, so that the write timeout is what ends
        // the connection.
        LinkConfig {
            output_bytes_max: 1 << 30,
            ..link()
        },
        dir.path(),
    );
    assert!(
        rep.wait_duplex(Duration::from_secs(5)),
        "handshake with the silent peer"
    );
    let events = rep.events();
    let session = primary.session(SessionInfo::default());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut k = 0i64;
    let reason = 'found: loop {
        // 64 KiB rows: the socket buffers fill within milliseconds, long before the
        // link's own timers (overdue acknowledgements) could notice anything.
        for _ in 0..100 {
            session
                .insert("blob", vec![k.into(), vec![7u8; 64 << 10].into()])
                .expect("async commits never wait");
            k += 1;
        }
        for e in events.try_iter() {
            if let Event::Diverged { reason, .. } = e {
                break 'found reason;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no Diverged after {k} commits; state {:?}",
            rep.metrics().state
        );
    };
    assert!(reason.contains("write"), "{reason}");
    assert_eq!(rep.metrics().state, Some(LinkState::Degraded));
    // Commits go on, into the difference file.
    session
        .insert(T, kv_row(k, k))
        .expect("commit while degraded");
    done.store(true, Ordering::SeqCst);
    silent_peer.join().expect("silent peer");
}

/// A peer that completes the handshake, keeps sending heartbeats every 10 ms, and never
/// reads again, until `done` is set (then it closes the connection). Returns its
/// address, `done`, and its thread.
fn silent_peer() -> (
    std::net::SocketAddr,
    Arc<AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    use kirikae_replicate::{encode, FrameDecoder, Message, MAX_FRAME_BYTES, PROTOCOL_VERSION};
    use std::io::{Read, Write};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let done = Arc::new(AtomicBool::new(false));
    let done2 = Arc::clone(&done);
    let thread = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("accept");
        let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
        let mut buf = [0u8; 4096];
        let primary_hello = loop {
            if let Some(m) = decoder.next_message().expect("frame") {
                break m;
            }
            let n = socket.read(&mut buf).expect("read hello");
            assert!(n > 0, "closed before its hello");
            decoder.push(&buf[..n]);
        };
        let own = Message::Hello {
            version: PROTOCOL_VERSION,
            epoch: kirikae_replicate::Epoch::NONE,
            node: "silent".into(),
            last_seq: Seq(0),
            nonce: [0; 32],
        };
        // In a session the backup speaks in its primary's epoch.
        let session_epoch = primary_hello.epoch().expect("a Hello has an epoch");
        let (_, answer) =
            BackupHandshake::answer(Some(test_key()), primary_hello, own).expect("handshake");
        for m in &answer {
            socket
                .write_all(&encode(m, MAX_FRAME_BYTES).expect("encode"))
                .expect("answer");
        }
        // Never read again, but keep sending heartbeats (a peer whose reader is stuck
        // while its writer lives): only the blocked write can tell.
        while !done2.load(Ordering::SeqCst) {
            let beat = Message::Heartbeat {
                epoch: session_epoch,
                last_seq: Seq(0),
            };
            if socket
                .write_all(&encode(&beat, MAX_FRAME_BYTES).expect("encode"))
                .is_err()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    (addr, done, thread)
}

/// [`database`] plus a table `blob` (k int, b bytes) for rows large enough to fill
/// socket buffers quickly.
fn database_with_blobs() -> Database {
    let db = database();
    let blobs = Schema::new(
        vec![
            Column::new("k", ColumnType::Int),
            Column::new("b", ColumnType::Bytes),
        ],
        &["k"],
    )
    .expect("schema");
    db.create_table("blob", blobs).expect("blob");
    db
}

/// The link thread is stuck in a write to a peer that stopped reading, for far longer
/// than the sync timeout (its write timeout is the 60 s peer timeout here), so it
/// cannot tick the link. A sync commit must still end at its own deadline (sync
/// timeout + grace), settled by its rule as the link's timeout would settle it.
#[test]
fn a_sync_commit_ends_at_its_own_deadline_while_the_link_thread_is_stuck() {
    let (addr, done, silent_peer) = silent_peer();
    let primary = database_with_blobs();
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = RuleSet::parse(
        r#"
        default = "async"
        [[rule]]
        name = "accounts are sync and strict"
        table = "acct"
        mode = "sync"
        when_peer_down = "fail"
        "#,
        "t.toml",
    )
    .expect("rules");
    let rep = replicator_with(
        &primary,
        addr,
        rules,
        LinkConfig {
            peer_timeout: Duration::from_secs(60),
            sync_timeout: Duration::from_millis(100),
            output_bytes_max: 1 << 30,
            ..link()
        },
        dir.path(),
    );
    assert!(rep.wait_duplex(Duration::from_secs(5)), "handshake");
    let session = primary.session(SessionInfo::default());
    // 64 MiB of async commits: more than loopback's socket buffers hold (4 MiB send,
    // at most 32 MiB receive here), so the link thread ends up blocked in a write.
    for k in 0..1024i64 {
        session
            .insert("blob", vec![k.into(), vec![7u8; 64 << 10].into()])
            .expect("async commits never wait");
    }
    // Whatever the kernel's buffers hold, the link thread is now stuck in a write.
    wait_for(
        "the link thread to be stuck in a write",
        Duration::from_secs(10),
        || rep.metrics().writing_ms >= 200,
    );
    let started = Instant::now();
    let err = session
        .insert(T, kv_row(1, 1))
        .expect_err("no answer and the rule says fail");
    let waited = started.elapsed();
    // Settled by the commit's own deadline, not by the link thread's timeout tick.
    assert!(
        err.to_string().contains("waiter's deadline"),
        "{err} (after {waited:?})"
    );
    assert_eq!(
        session.get(T, &Key::from(1)).expect("get"),
        None,
        "rolled back"
    );
    assert_eq!(rep.metrics().state, Some(LinkState::Degraded));
    done.store(true, Ordering::SeqCst);
    silent_peer.join().expect("silent peer");
    rep.shutdown();
}

/// A transaction larger than a frame, committed while the peer is down, is refused
/// at commit (rolled back, a typed error naming the sizes). Accepted, it could never
/// be replayed: the catch-up would stop at it for good and no later commit would
/// reach the peer. Here the commits around it reach the peer once it is up.
#[test]
fn a_transaction_too_large_to_ship_is_refused_while_the_peer_is_down() {
    let primary = database_with_blobs();
    let replica = database_with_blobs();
    let dir = tempfile::tempdir().expect("tempdir");
    // Nobody listens here yet.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let small_frames = LinkConfig {
        frame_bytes_max: 1 << 16,
        ..link()
    };
    let rep = replicator_with(&primary, addr, rules("async"), small_frames, dir.path());
    let app = primary.session(SessionInfo::new("app", "app", None));
    app.insert("blob", vec![1.into(), vec![1u8; 1000].into()])
        .expect("fits");
    let err = app
        .insert("blob", vec![2.into(), vec![2u8; 70_000].into()])
        .expect_err("larger than a frame");
    assert!(err.to_string().contains("65536"), "{err}");
    assert_eq!(
        app.get("blob", &Key::from(2)).expect("get"),
        None,
        "rolled back"
    );
    app.insert("blob", vec![3.into(), vec![3u8; 1000].into()])
        .expect("fits");
    let backup = Backup::start(replica.clone(), addr, peer_config(None)).expect("backup");
    assert!(rep.wait_duplex(Duration::from_secs(10)), "caught up");
    assert!(rep.wait_caught_up(Duration::from_secs(10)));
    assert_eq!(checksum(&replica, "blob"), checksum(&primary, "blob"));
    assert_eq!(replica.table("blob").expect("blob").len(), 2);
    drop(backup);
}
