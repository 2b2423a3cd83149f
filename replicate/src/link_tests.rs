//! The link's bounds and durability rules, driven directly (the seeded simulation
//! covers the protocol).

use kirikae_engine::{Operation, Value};

use crate::epoch::Epoch;
use crate::link::{
    Event, Link, LinkConfig, LinkState, LogState, Micros, Persisted, Ready, Submitted, SyncOutcome,
};
use crate::mode::{Mode, WhenPeerDown};
use crate::seq::Seq;
use crate::writes::Writes;

/// A link in step with a peer at sequence 0 that needs no copy (a resync of an
/// empty peer is `link/resync.rs`'s business).
fn duplex_link(config: LinkConfig) -> Link {
    let config = LinkConfig {
        resync: false,
        ..config
    };
    let mut link = Link::new(config, LogState::default(), 0);
    link.connected(1, Seq::ZERO, Epoch::NONE);
    assert_eq!(
        link.state(),
        LinkState::Duplex,
        "an empty catch-up ends at once"
    );
    let _ = link.ready();
    link
}

/// A sync transaction submitted at `now` on a duplex link: its sequence (it waits).
fn submit_sync(link: &mut Link, now: Micros) -> Seq {
    match link.submit(now, Mode::Sync, WhenPeerDown::Fail, insert(1, 8), Vec::new) {
        Ok(Submitted::Waiting { seq }) => seq,
        other => panic!("a sync transaction on a duplex link waits: {other:?}"),
    }
}

/// An insert of key `k` with `payload` bytes, encoded as a committing thread
/// encodes it (so the frames the tests size are the spliced ones).
fn insert(k: i64, payload: usize) -> Writes {
    Writes::encoded(vec![Operation::Insert {
        table: "t".into(),
        row: vec![Value::Int(k), Value::from(vec![0u8; payload])].into(),
    }])
}

/// An async insert of key `k` submitted at `now` (the link keeps it, or spills it
/// to the difference file if down).
fn submit_async(link: &mut Link, now: Micros, k: i64) {
    link.submit(
        now,
        Mode::Async,
        WhenPeerDown::Continue,
        insert(k, 8),
        Vec::new,
    )
    .expect("submit");
}

fn diverged_reason(ready: &Ready) -> String {
    ready
        .events
        .iter()
        .find_map(|e| match e {
            Event::Diverged { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The shell's report after appending and fsyncing everything through `seq`.
fn durable(seq: u64) -> Persisted {
    Persisted {
        appended_through: Seq(seq),
        durable_through: Seq(seq),
        bytes: 0,
        error: None,
    }
}

#[test]
fn output_the_shell_does_not_take_is_bounded() {
    let mut link = duplex_link(LinkConfig {
        output_bytes_max: 10_000,
        ..LinkConfig::default()
    });
    let mut seq = 0;
    while link.state() == LinkState::Duplex {
        seq += 1;
        assert!(seq < 100, "never went down");
        let submitted = link
            .submit(
                2,
                Mode::Async,
                WhenPeerDown::Continue,
                insert(seq, 1000),
                Vec::new,
            )
            .expect("submit");
        assert_eq!(
            submitted,
            Submitted::Queued {
                seq: Seq(seq as u64)
            }
        );
    }
    assert!(seq >= 9, "went down after {seq} transactions of ~1 KB");
    let ready = link.ready();
    assert!(diverged_reason(&ready).contains("wait to be sent"));
    assert!(
        ready.messages.is_empty(),
        "messages of a dropped connection"
    );
    assert!(ready.close);
    // Nothing is lost: the whole window goes to the difference file, made durable.
    let persisted: Vec<u64> = ready.persist.iter().map(|r| r.seq.0).collect();
    assert_eq!(persisted, (1..=seq as u64).collect::<Vec<_>>());
    assert!(ready.sync_log);
}

#[test]
fn a_waiter_past_its_deadline_settles_its_sync_transaction_by_its_rule() {
    for when_down in [WhenPeerDown::Fail, WhenPeerDown::Continue] {
        let mut link = duplex_link(LinkConfig::default());
        let Submitted::Waiting { seq } = link
            .submit(2, Mode::Sync, when_down, insert(1, 8), Vec::new)
            .expect("submit")
        else {
            panic!("a sync transaction on a duplex link waits");
        };
        // Unknown sequences are left alone.
        link.expire_sync(3, Seq(seq.0 + 100));
        assert_eq!(link.state(), LinkState::Duplex);
        link.expire_sync(3, seq);
        assert_eq!(link.state(), LinkState::Degraded);
        let mut ready = link.ready();
        if when_down == WhenPeerDown::Continue {
            // Committed alone: settled once its difference-file record is durable.
            assert!(ready.outcomes.is_empty(), "{:?}", ready.outcomes);
            assert_eq!(ready.persist.len(), 1);
            link.persisted(4, durable(seq.0));
            ready = link.ready();
        }
        assert_eq!(ready.outcomes.len(), 1);
        let (settled, outcome) = &ready.outcomes[0];
        assert_eq!(*settled, seq);
        let reason = match (outcome, when_down) {
            (SyncOutcome::OutcomeUnknown { reason }, WhenPeerDown::Fail) => reason,
            (SyncOutcome::CommittedAlone { reason }, WhenPeerDown::Continue) => reason,
            other => panic!("{other:?}"),
        };
        assert!(reason.contains("waiter's deadline"), "{reason}");
        link.expire_sync(5, seq);
        assert!(link.ready().outcomes.is_empty(), "settled once");
    }
}

#[test]
fn a_sync_commit_made_alone_returns_once_its_record_is_durable() {
    let mut link = Link::new(LinkConfig::default(), LogState::default(), 0);
    let submitted = link
        .submit(
            1,
            Mode::Sync,
            WhenPeerDown::Continue,
            insert(1, 8),
            Vec::new,
        )
        .expect("submit");
    assert_eq!(submitted, Submitted::Waiting { seq: Seq(1) });
    let ready = link.ready();
    assert_eq!(ready.persist.len(), 1);
    assert!(ready.outcomes.is_empty());
    // Appended but not yet durable: still waiting.
    link.persisted(
        2,
        Persisted {
            appended_through: Seq(1),
            durable_through: Seq::ZERO,
            bytes: 100,
            error: None,
        },
    );
    assert!(link.ready().outcomes.is_empty());
    link.tick(3);
    assert!(link.ready().sync_log, "the tick asks for the batch's fsync");
    link.persisted(4, durable(1));
    let outcomes = link.ready().outcomes;
    assert!(
        matches!(
            &outcomes[..],
            [(Seq(1), SyncOutcome::CommittedAlone { .. })]
        ),
        "{outcomes:?}"
    );
    // An async commit does not wait.
    let submitted = link
        .submit(
            5,
            Mode::Async,
            WhenPeerDown::Continue,
            insert(2, 8),
            Vec::new,
        )
        .expect("submit");
    assert_eq!(submitted, Submitted::Queued { seq: Seq(2) });
    // A failed difference file settles who waits, saying the record may be lost.
    link.submit(
        6,
        Mode::Sync,
        WhenPeerDown::Continue,
        insert(3, 8),
        Vec::new,
    )
    .expect("submit");
    link.persisted(
        7,
        Persisted {
            error: Some("disk full".into()),
            ..durable(2)
        },
    );
    let ready = link.ready();
    assert!(
        matches!(&ready.outcomes[..], [(Seq(3), SyncOutcome::CommittedAlone { reason })] if reason.contains("disk full")),
        "{:?}",
        ready.outcomes
    );
    assert!(ready
        .events
        .iter()
        .any(|e| matches!(e, Event::ResyncRequired { .. })));
}

#[test]
fn a_catch_up_reads_through_the_shell_and_ends_duplex() {
    let config = LinkConfig {
        resync: false,
        ..LinkConfig::default()
    };
    let mut link = Link::new(config, LogState::default(), 0);
    for k in 1..=3 {
        link.submit(
            k,
            Mode::Async,
            WhenPeerDown::Continue,
            insert(k as i64, 8),
            Vec::new,
        )
        .expect("submit");
    }
    let persisted = link.ready().persist;
    link.persisted(4, durable(3));
    link.connected(5, Seq::ZERO, Epoch::NONE);
    assert_eq!(link.state(), LinkState::CatchingUp);
    let read = link.ready().read.expect("asks for the records");
    assert_eq!((read.after, read.limit > 0), (Seq::ZERO, true));
    assert!(
        link.has_urgent_ready(),
        "while catching up, any answer may let the next batch go: the shell is woken"
    );
    link.replayed(6, read.catch_up, Ok(persisted));
    let ready = link.ready();
    assert_eq!(ready.messages.len(), 3, "{:?}", ready.messages);
    assert_eq!(link.state(), LinkState::Duplex);
    assert!(ready.events.iter().any(|e| matches!(
        e,
        Event::Recovered {
            ops_replayed: 3,
            ..
        }
    )));
    // An answer for an older catch-up is ignored.
    link.replayed(7, read.catch_up + 5, Err("stale".into()));
    assert_eq!(link.state(), LinkState::Duplex);
}

#[test]
fn notices_can_be_taken_apart_from_the_rest_of_the_output() {
    let mut link = duplex_link(LinkConfig::default());
    let seq = submit_sync(&mut link, 2);
    link.receive(
        3,
        crate::wire::Message::Prepared {
            seq,
            epoch: link.config().epoch,
            responses: Vec::new(),
        },
    );
    let (events, outcomes) = link.take_notices();
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(outcomes, vec![(seq, SyncOutcome::Replicated)]);
    // The Prepare and the Commit stay for the shell, in order.
    let ready = link.ready();
    assert!(ready.outcomes.is_empty());
    assert!(matches!(
        &ready.messages[..],
        [
            crate::wire::Message::Prepare { .. },
            crate::wire::Message::Commit { .. }
        ]
    ));
}

#[test]
fn a_commit_decision_waits_for_the_next_write_and_anything_else_does_not() {
    let mut link = duplex_link(LinkConfig::default());
    let seq = submit_sync(&mut link, 2);
    assert!(link.has_urgent_ready(), "a Prepare to send is urgent");
    let _ = link.ready();
    let prepared = |seq| crate::wire::Message::Prepared {
        seq,
        epoch: LinkConfig::default().epoch,
        responses: Vec::new(),
    };
    link.receive(3, prepared(seq));
    assert!(link.has_urgent_ready(), "an outcome to hand over is urgent");
    let (_, outcomes) = link.take_notices();
    assert_eq!(outcomes, vec![(seq, SyncOutcome::Replicated)]);
    assert!(link.has_ready(), "the Commit is still to be sent");
    assert!(
        !link.has_urgent_ready(),
        "the Commit alone can wait for the next write"
    );
    // An acknowledgement only retires and releases: not urgent either.
    link.receive(
        4,
        crate::wire::Message::Ack {
            seq,
            epoch: LinkConfig::default().epoch,
        },
    );
    assert!(!link.has_urgent_ready());
    // The next submission makes the whole output urgent, decision first.
    let next = submit_sync(&mut link, 5);
    assert!(link.has_urgent_ready());
    let ready = link.ready();
    assert!(matches!(
        &ready.messages[..],
        [
            crate::wire::Message::Commit { seq: s, .. },
            crate::wire::Message::Prepare { seq: n, .. }
        ] if *s == seq && *n == next
    ));
    // A stale answer ends the session: urgent.
    link.receive(
        6,
        crate::wire::Message::Ack {
            seq: Seq::ZERO,
            epoch: Epoch(LinkConfig::default().epoch.0 - 1),
        },
    );
    assert!(link.has_urgent_ready());
}

#[test]
fn a_committing_thread_takes_only_messages_that_can_go_alone() {
    let mut link = duplex_link(LinkConfig::default());
    let seq = submit_sync(&mut link, 2);
    let taken = link
        .take_messages()
        .expect("a duplex link's Prepare goes alone");
    assert!(matches!(&taken[..], [crate::wire::Message::Prepare { seq: s, .. }] if *s == seq));
    assert_eq!(
        link.take_messages().map(|m| m.len()),
        Some(0),
        "taken once: nothing is left to send"
    );
    assert!(link.ready().messages.is_empty(), "nor for the shell");
    // A link gone down has a close and the difference file to see to first.
    link.receive(
        3,
        crate::wire::Message::Ack {
            seq: Seq::ZERO,
            epoch: Epoch(LinkConfig::default().epoch.0 - 1),
        },
    );
    assert!(link.take_messages().is_none());
    assert!(link.ready().close);
}

#[test]
fn an_answer_of_a_higher_epoch_fences_the_primary_and_a_lower_one_ends_the_session() {
    let ours = LinkConfig::default().epoch;
    let mut link = duplex_link(LinkConfig::default());
    link.receive(
        2,
        crate::wire::Message::Ack {
            seq: Seq::ZERO,
            epoch: Epoch(ours.0 - 1),
        },
    );
    let ready = link.ready();
    assert!(ready.close, "a stale answer ends the session");
    assert_eq!(link.state(), LinkState::Degraded);
    assert!(!ready
        .events
        .iter()
        .any(|e| matches!(e, Event::Fenced { .. })));

    let mut link = duplex_link(LinkConfig::default());
    let _seq = submit_sync(&mut link, 3);
    link.receive(
        4,
        crate::wire::Message::Ack {
            seq: Seq::ZERO,
            epoch: Epoch(ours.0 + 1),
        },
    );
    let ready = link.ready();
    assert!(ready.close);
    let fenced = ready.events.iter().find_map(|e| match e {
        Event::Fenced {
            epoch, divergent, ..
        } => Some((*epoch, *divergent)),
        _ => None,
    });
    assert_eq!(
        fenced,
        Some((Epoch(ours.0 + 1), Some((Seq(1), Seq(1))))),
        "fenced, with the unacknowledged sequence as its divergent tail"
    );
    assert!(link
        .submit(5, Mode::Async, WhenPeerDown::Fail, insert(2, 8), Vec::new)
        .is_err());
}

#[test]
fn a_sync_transaction_rolled_back_here_but_held_by_the_new_primary_requires_a_resync() {
    let mut link = duplex_link(LinkConfig::default());
    let seq = submit_sync(&mut link, 2);
    // The link fails before the answer: rolled back here (outcome unknown), while
    // the backup holds it prepared and takes over after it.
    link.disconnected(3, "cut");
    let (_, outcomes) = link.take_notices();
    assert!(matches!(
        &outcomes[..],
        [(s, SyncOutcome::OutcomeUnknown { .. })] if *s == seq
    ));
    let _ = link.ready();
    link.connected(4, seq, Epoch(LinkConfig::default().epoch.0 + 1));
    let (events, _) = link.take_notices();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Fenced { divergent: None, rolled_back, .. } if rolled_back == &vec![seq]
        )),
        "{events:?}"
    );
    assert!(matches!(
        link.rejoin(),
        Some(crate::Rejoin::ResyncRequired { reason }) if reason.contains("rolled back")
    ));
}

/// A transaction whose `Ship` cannot fit a frame is refused at commit in every state
/// of the link, without a sequence: accepted while the peer is down, it would stop
/// the catch-up at it for good. One that fits goes through, catch-up included.
#[test]
fn a_transaction_too_large_to_ship_is_refused_in_every_link_state() {
    let config = LinkConfig {
        frame_bytes_max: 4096,
        // Submissions go on during this short catch-up.
        pause_within_txns: 0,
        resync: false,
        ..LinkConfig::default()
    };
    let too_large = |link: &mut Link, k: i64| {
        let before = link.metrics(10).last_seq;
        for mode in [Mode::Async, Mode::Ordered, Mode::Sync] {
            let err = link
                .submit(10, mode, WhenPeerDown::Continue, insert(k, 4096), Vec::new)
                .expect_err("larger than a frame");
            assert!(err.to_string().contains("4096"), "{err}");
        }
        assert_eq!(link.metrics(10).last_seq, before, "no sequence was used");
    };
    // Degraded: never connected.
    let mut link = Link::new(config.clone(), LogState::default(), 0);
    too_large(&mut link, 100);
    for k in 1..=2 {
        link.submit(
            k,
            Mode::Async,
            WhenPeerDown::Continue,
            insert(k as i64, 3900),
            Vec::new,
        )
        .expect("fits a frame");
    }
    let persisted = link.ready().persist;
    link.persisted(4, durable(2));
    // Catching up: connected with the two records still to replay.
    link.connected(5, Seq::ZERO, Epoch::NONE);
    assert_eq!(link.state(), LinkState::CatchingUp);
    too_large(&mut link, 101);
    let read = link.ready().read.expect("asks for the records");
    link.replayed(6, read.catch_up, Ok(persisted));
    let ready = link.ready();
    for m in &ready.messages {
        let frame = crate::wire::encode(m, 4096).expect("every replayed record fits a frame");
        assert!(frame.len() > 3900);
    }
    // Duplex.
    assert_eq!(link.state(), LinkState::Duplex);
    too_large(&mut link, 102);
}

/// The bound the refusal above relies on: a `Ship` of a record's transaction is at
/// most `SHIP_EXTRA_BYTES_MAX` bytes longer than the record.
#[test]
fn a_ship_is_barely_longer_than_its_record() {
    use crate::record_log::LogRecord;
    use crate::wire::Message;
    for (seq, epoch, payload) in [(1, 1, 0), (u64::MAX, u64::MAX, 70_000)] {
        for mode in [Mode::Async, Mode::Ordered, Mode::Sync, Mode::Skip] {
            let record = LogRecord {
                seq: Seq(seq),
                epoch: Epoch(epoch),
                mode,
                operations: insert(-1, payload),
            };
            let ship = Message::Ship {
                seq: record.seq,
                epoch: record.epoch,
                mode,
                operations: record.operations.clone(),
                verify: true,
            };
            assert!(
                crate::wire::encoded_len(&ship)
                    <= record.frame_len() + crate::link::SHIP_EXTRA_BYTES_MAX
            );
        }
    }
}

/// The close a lost connection asks for is about that connection: a new connection
/// made before the shell took that output is not closed by it (it was, and every
/// connection after it was closed as soon as it was made).
#[test]
fn a_close_asked_for_an_old_connection_does_not_end_the_next_one() {
    let mut link = duplex_link(LinkConfig::default());
    link.disconnected(5, "write to the peer failed");
    assert_eq!(link.state(), LinkState::Degraded);
    link.connected(6, Seq::ZERO, Epoch::NONE);
    let ready = link.ready();
    assert!(!ready.close, "the new connection is kept");
    assert_eq!(link.state(), LinkState::Duplex);
}

/// A catch-up that loses ground holds new commits back, longer each period, up to
/// the bound; once it gains, the hold eases off; past its backlog cap it gives up
/// for a resync (seed 000 §4.3).
#[test]
fn a_catch_up_losing_ground_paces_commits_and_past_its_cap_chooses_a_resync() {
    let config = LinkConfig {
        resync: false,
        pause_within_txns: 0,
        peer_timeout: std::time::Duration::from_secs(3600),
        catchup_pace_max: std::time::Duration::from_millis(2),
        catchup_backlog_max_txns: 400,
        ..LinkConfig::default()
    };
    let mut link = Link::new(config, LogState::default(), 0);
    let mut k = 0i64;
    let mut submit = |link: &mut Link, n: usize, now: Micros| {
        for _ in 0..n {
            k += 1;
            submit_async(link, now, k);
        }
        let last = link.metrics(now).last_seq.0;
        link.persisted(now, durable(last));
        link.ready()
    };
    let persisted = submit(&mut link, 10, 1).persist;
    link.connected(2, Seq::ZERO, Epoch::NONE);
    assert_eq!(link.state(), LinkState::CatchingUp);
    let read = link.ready().read.expect("asks for the records");
    // The reads go unanswered while commits keep coming: the backlog grows.
    let mut now = 2;
    let mut paces = Vec::new();
    for _ in 0..9 {
        now += 100_000;
        submit(&mut link, 10, now);
        link.tick(now);
        paces.push(link.commit_pace_us());
    }
    assert_eq!(paces[0], 0, "first look: no trend yet");
    assert!(paces.windows(2).all(|w| w[1] >= w[0]), "{paces:?}");
    assert_eq!(*paces.last().expect("paces"), 2_000, "bounded: {paces:?}");
    // The catch-up gains: the hold eases off.
    link.replayed(now, read.catch_up, Ok(persisted));
    let batch = submit(&mut link, 0, now);
    let more = batch.read.expect("the next records");
    let _ = more;
    now += 100_000;
    link.tick(now);
    assert!(
        link.commit_pace_us() < 2_000,
        "eased: {}",
        link.commit_pace_us()
    );
    // Past the cap: a resync instead.
    now += 100_000;
    submit(&mut link, 400, now);
    link.tick(now);
    assert_eq!(link.state(), LinkState::Degraded);
    assert!(link
        .ready()
        .events
        .iter()
        .any(|e| matches!(e, Event::ResyncRequired { reason } if reason.contains("backlog"))));
}

/// A resync that fails every time (a copy that cannot be sent) is tried again after
/// a pause that doubles up to `reconnect_max`, even though each connection is made:
/// never a busy loop. A resync that completes resets the pause.
#[test]
fn a_resync_that_keeps_failing_is_retried_after_a_growing_pause() {
    use std::time::Duration;
    let config = LinkConfig {
        reconnect_min: Duration::from_millis(10),
        reconnect_max: Duration::from_millis(80),
        ..LinkConfig::default()
    };
    let mut link = Link::new(config, LogState::default(), 0);
    let mut now = 0;
    let mut pauses = Vec::new();
    for _ in 0..6 {
        while !link.reconnect_due(now) {
            now += 1_000;
        }
        let connected_at = now;
        link.connected(now, Seq::ZERO, Epoch::NONE);
        assert_eq!(
            link.state(),
            LinkState::Resyncing,
            "an empty peer is resynced"
        );
        let order = link.ready().copy.expect("a copy is asked for");
        link.copy_failed(now, order.resync, "a row larger than a frame".into());
        assert_eq!(link.state(), LinkState::Degraded);
        let _ = link.ready();
        let failed_at = now;
        while !link.reconnect_due(now) {
            now += 1_000;
        }
        assert!(now > connected_at);
        pauses.push((now - failed_at) / 1_000);
    }
    assert_eq!(
        pauses,
        [10, 20, 40, 80, 80, 80],
        "milliseconds between attempts"
    );
    // One that completes resets the pause.
    link.connected(now, Seq::ZERO, Epoch::NONE);
    let order = link.ready().copy.expect("a copy is asked for");
    link.copy_done(now, order.resync);
    link.receive(
        now,
        crate::wire::Message::Resynced {
            epoch: link.config().epoch,
            seq: Seq::ZERO,
        },
    );
    assert_eq!(link.state(), LinkState::Duplex);
    link.disconnected(now, "cut");
    link.connect_failed(now);
    assert!(link.reconnect_due(now + 10_000) && !link.reconnect_due(now + 9_000));
}

#[test]
fn a_refusal_of_a_transaction_already_acknowledged_is_still_an_apply_error() {
    let epoch = LinkConfig::default().epoch;
    let mut link = duplex_link(LinkConfig::default());
    let submitted = link.submit(2, Mode::Async, WhenPeerDown::Fail, insert(1, 8), Vec::new);
    assert!(
        matches!(submitted, Ok(Submitted::Queued { seq: Seq(1) })),
        "{submitted:?}"
    );
    let _ = link.ready();
    link.receive(3, crate::wire::Message::Ack { seq: Seq(1), epoch });
    let _ = link.ready();
    // The peer restarted, replayed its access log and could not apply sequence 1.
    link.receive(
        4,
        crate::wire::Message::Rejected {
            seq: Seq(1),
            epoch,
            reason: "duplicate key".into(),
        },
    );
    let ready = link.ready();
    assert_eq!(link.metrics(4).apply_errors, 1);
    let reason = diverged_reason(&ready);
    assert!(
        reason.contains("could not apply 1") && reason.contains("duplicate key"),
        "{reason:?}"
    );
    assert_eq!(link.state(), LinkState::Duplex, "the link itself is fine");
}

/// A duplex backup that applies more slowly than the primary commits is not
/// declared down for it: under a quarter of the link's limits nothing is held back;
/// past it, while the backlog still grows, each commit is held back longer, up to
/// the bound; once the backup gains, the hold eases off, and back under the quarter
/// there is none (seed 000 §4.3).
#[test]
fn a_duplex_backlog_growing_past_a_quarter_of_the_limits_paces_commits() {
    let mut link = duplex_link(LinkConfig {
        window_txns_max: 400,
        peer_timeout: std::time::Duration::from_secs(3600),
        catchup_pace_max: std::time::Duration::from_millis(2),
        ..LinkConfig::default()
    });
    let epoch = LinkConfig::default().epoch;
    let mut last = 0u64;
    let mut now: Micros = 2;
    // Each period: `n` commits, the peer acknowledging all but `behind` of them.
    let mut period = |link: &mut Link, n: u64, behind: u64| {
        now += 100_000;
        for _ in 0..n {
            last += 1;
            submit_async(link, now, last as i64);
        }
        let acked = last.saturating_sub(behind);
        link.receive(
            now,
            crate::wire::Message::Ack {
                seq: Seq(acked),
                epoch,
            },
        );
        link.tick(now);
        let _ = link.ready();
        assert_eq!(link.state(), LinkState::Duplex, "declared down at {now} µs");
        link.commit_pace_us()
    };
    // Growing, but under a quarter of the window: no hold.
    for behind in (10..=90).step_by(10) {
        assert_eq!(period(&mut link, 30, behind), 0, "{behind} behind");
    }
    // Past it and still growing: longer each period, bounded.
    let paces: Vec<Micros> = (0..12)
        .map(|i| period(&mut link, 30, 120 + 10 * i))
        .collect();
    assert!(paces.windows(2).all(|w| w[1] >= w[0]), "{paces:?}");
    assert!(paces[1] > 0, "held back from the second look: {paces:?}");
    assert_eq!(*paces.last().expect("paces"), 2_000, "bounded: {paces:?}");
    // The backup gains, still past the quarter: the hold eases off.
    let easing: Vec<Micros> = (0..3)
        .map(|i| period(&mut link, 30, 220 - 30 * i))
        .collect();
    assert!(easing.windows(2).all(|w| w[1] < w[0]), "{easing:?}");
    assert!(easing[0] < 2_000, "{easing:?}");
    // Back under the quarter: no hold at once.
    assert_eq!(period(&mut link, 30, 50), 0);
    assert_eq!(link.metrics(now).commit_pace_us, 0);
}

/// A duplex peer acknowledging late is paced once its oldest unacknowledged
/// transaction has waited half the peer timeout, not before: a slow network's
/// round trip alone ages every transaction.
#[test]
fn a_duplex_peer_acknowledging_late_is_paced_from_half_the_timeout() {
    let mut link = duplex_link(LinkConfig {
        peer_timeout: std::time::Duration::from_secs(1),
        catchup_pace_max: std::time::Duration::from_millis(2),
        ..LinkConfig::default()
    });
    let epoch = LinkConfig::default().epoch;
    let mut k = 0;
    // Each period: a commit, and an answer from the peer, which has not applied it.
    let mut period = |link: &mut Link, now: Micros| {
        k += 1;
        submit_async(link, now, k);
        link.receive(
            now,
            crate::wire::Message::Heartbeat {
                epoch,
                last_seq: Seq::ZERO,
            },
        );
        link.tick(now);
        let _ = link.ready();
        assert_eq!(link.state(), LinkState::Duplex, "declared down at {now} µs");
        link.commit_pace_us()
    };
    // The first has waited 0 ... 0.4 s: no hold.
    for now in (1..=5).map(|i| 2 + i * 100_000) {
        assert_eq!(period(&mut link, now), 0, "at {now} µs");
    }
    // Past half the timeout, the backlog still growing: held back.
    assert!(period(&mut link, 650_002) > 0);
    assert!(period(&mut link, 750_002) > 0);
}
