//! The replicator's shell: bounded event queue, poisoning, a sync waiter's own
//! deadline. End-to-end behaviour over TCP is in the integration tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kirikae_engine::{Database, SessionInfo, Value};

use crate::link::{Event, LinkConfig};
use crate::record_log::RecordLogOptions;
use crate::replicator::{wait_outcome, Replicator, ReplicatorConfig};
use crate::rules::RuleSet;
use crate::seq::Seq;
use crate::shared::EVENTS_MAX;

/// A replicator whose peer address has nobody listening (the link stays degraded).
fn degraded_replicator(dir: &std::path::Path) -> (Database, Replicator) {
    let db = kirikae_testkit::kv_database(&["t"]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let peer: SocketAddr = closed.local_addr().expect("addr");
    drop(closed);
    let rep = Replicator::start(
        &db,
        ReplicatorConfig {
            key: None,
            peer,
            rules: RuleSet::parse("default = \"async\"", "t.toml").expect("rules"),
            link: LinkConfig::default(),
            difference_dir: dir.to_owned(),
            difference: RecordLogOptions {
                fsync: false,
                ..RecordLogOptions::default()
            },
        },
    )
    .expect("replicator");
    (db, rep)
}

#[test]
fn events_nobody_reads_are_bounded_and_the_oldest_go_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, rep) = degraded_replicator(dir.path());
    let events = rep.events();
    while events.try_recv().is_ok() {}
    let extra = 100;
    for i in 0..(EVENTS_MAX + extra) as u64 {
        rep.shared.raise(Event::Diverged {
            since_seq: Seq(i),
            reason: "test".into(),
        });
    }
    let kept: Vec<Event> = events.try_iter().collect();
    assert_eq!(kept.len(), EVENTS_MAX);
    // The link thread may raise an event of its own meanwhile; the test's events are
    // the newest, in order, and end with the last one raised.
    let ours: Vec<u64> = kept
        .iter()
        .filter_map(|e| match e {
            Event::Diverged { since_seq, reason } if reason == "test" => Some(since_seq.0),
            _ => None,
        })
        .collect();
    let last = (EVENTS_MAX + extra - 1) as u64;
    assert!(ours.len() >= EVENTS_MAX - 2, "{} kept", ours.len());
    assert_eq!(ours.last(), Some(&last));
    assert!(
        ours.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap in the newest"
    );
    assert!(rep.metrics().events_dropped >= extra as u64);
}

#[test]
fn a_panicking_replication_thread_makes_commits_fail_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, rep) = degraded_replicator(dir.path());
    let session = db.session(SessionInfo::default());
    session
        .insert("t", vec![Value::Int(1), Value::Int(1)])
        .expect("a degraded link still commits");
    let thread = rep
        .shared
        .spawn("kirikae-test", |_| panic!("injected"))
        .expect("spawn");
    thread.join().expect("the panic is caught");
    let err = session
        .insert("t", vec![Value::Int(2), Value::Int(2)])
        .expect_err("poisoned");
    assert!(
        err.to_string()
            .contains("thread kirikae-test panicked: injected"),
        "{err}"
    );
}

#[test]
fn a_waiting_sync_commit_wakes_when_replication_is_poisoned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, rep) = degraded_replicator(dir.path());
    let slot = rep.shared.core.lock().waiters.register(Seq(7));
    let shared = std::sync::Arc::clone(&rep.shared);
    let poisoner = std::thread::spawn(move || shared.poison("thread x panicked: y".into()));
    let started = Instant::now();
    let err = wait_outcome(&rep.shared, Seq(7), &slot, Duration::from_secs(600))
        .expect_err("the slot closes");
    poisoner.join().expect("poisoner");
    assert!(err.to_string().contains("thread x panicked"), "{err}");
    // Woken by the poisoning, not by its 600 s deadline.
    assert!(started.elapsed() < Duration::from_secs(300));
}
