//! Seeded simulation of the replication link: the primary's [`Link`] state machine
//! (its difference file a real file, carried out as the replicator's shell does) and
//! the peer's [`BackupSession`] and [`Applier`] (over a real database and a real log
//! file) — the product's code on both sides, transactions shaped by its commit
//! policy ([`shipment`]) — exchange messages
//! through a simulated network that drops, delays and reorders them, partitions, and
//! restarts the peer. The protocol runs over TCP, so faults act the way they do on a
//! TCP connection: a lost message silently swallows the rest of its connection (a
//! half-open connection, found out by timeouts and gaps), a reordered message is
//! caught by the transport's own numbering and resets the connection, and messages
//! of an old connection never reach a new one. After the faults stop and the link
//! recovers it checks:
//!
//! - no sync commit the primary was told is replicated is missing at the peer;
//! - the peer's tables equal the primary's on every replicated table;
//! - the peer resolved every sequence, and a backup restarted from its checkpoint
//!   and access log holds exactly the primary's tables;
//! - no false mismatch, refusal or apply error was raised.
//!
//! Half the sync commits send the link's pending messages themselves
//! ([`Link::take_messages`]), as a committing thread does while the link thread
//! sleeps; the rest of the output waits for the shell's turn.
//!
//! `KIRIKAE_SIM_SEEDS=n` runs more seeds; `KIRIKAE_SIM_SEED=s` runs one (a failure
//! prints its seed).

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

use kirikae_replicate::Event;
use kirikae_testkit::Rng;

use sim::*;

/// What a run went through, to show the faults were real.
#[derive(Default, Debug)]
struct Tally {
    recoveries: u64,
    replayed: u64,
    restarts: u64,
    replicated_sync: u64,
    alone_or_failed_sync: u64,
    connects: u64,
    checkpoints: u64,
    segments_retired: u64,
    resyncs: u64,
    copies: u64,
    wipes: u64,
    /// Async transactions the peer's last incarnation applied in parallel lanes.
    applied_in_lanes: u64,
    /// Messages sync commits sent themselves rather than through the link's turn.
    sent_by_commits: u64,
}

fn run(seed: u64) -> Tally {
    let mut sim = Sim::new(seed);
    // Some restarts lose the backup's data: it must be resynced while commits go on.
    sim.wipe_on_restart = 0.25;
    let mut rng = Rng::new(seed ^ 0x5eed);
    let faults = Faults {
        drop: [0.0, 0.001, 0.01][rng.below(3) as usize],
        reorder: [0.0, 0.002, 0.02][rng.below(3) as usize],
        max_delay_us: [200, 2_000, 8_000][rng.below(3) as usize],
        partition_chance: [0.0, 0.0002, 0.001][rng.below(3) as usize],
        restart_chance: [0.0, 0.0001, 0.0005][rng.below(3) as usize],
    };
    for _ in 0..20_000 {
        sim.step(&faults, true);
    }
    let calm = Faults {
        drop: 0.0,
        reorder: 0.0,
        max_delay_us: 200,
        partition_chance: 0.0,
        restart_chance: 0.0,
    };
    sim.partition_until = 0;
    sim.peer_down_until = 0;
    let mut steps = 0;
    while !sim.settled() {
        sim.step(&calm, false);
        steps += 1;
        assert!(
            steps < 200_000,
            "seed {seed}: the link did not recover: {:?}, {} waiting",
            sim.link.metrics(sim.now),
            sim.waiting.len()
        );
    }
    // Let the last acknowledgements land.
    for _ in 0..100 {
        sim.step(&calm, false);
    }

    let ctx = format!("seed {seed}");
    assert!(
        sim.refused.is_empty(),
        "{ctx}: false refusals {:?}",
        sim.refused
    );
    for e in &sim.events {
        match e {
            Event::Mismatch { .. } | Event::ResyncRequired { .. } | Event::Fenced { .. } => {
                panic!("{ctx}: unexpected {e:?}")
            }
            Event::Diverged { reason, .. } => {
                assert!(!reason.contains("could not apply"), "{ctx}: {reason}")
            }
            Event::Recovered { .. } | Event::Resynced { .. } => {}
        }
    }
    let peer = sim.peer.as_ref().expect("peer up");
    let ledger = peer.rows(LEDGER);
    for id in &sim.replicated_ledger {
        assert!(
            ledger.contains_key(id),
            "{ctx}: replicated sync commit {id} missing at the peer"
        );
    }
    assert_eq!(peer.rows(ACCT), sim.model_rows(ACCT), "{ctx}: acct differs");
    assert_eq!(ledger, sim.model_rows(LEDGER), "{ctx}: ledger differs");
    let metrics = sim.link.metrics(sim.now);
    let last = metrics.last_seq;
    let mut tally = Tally {
        restarts: sim.restarts,
        replicated_sync: sim.replicated_ledger.len() as u64,
        alone_or_failed_sync: sim.other_sync,
        connects: metrics.connects,
        resyncs: metrics.resyncs,
        copies: sim.copies,
        wipes: sim.wipes,
        replayed: metrics.replayed,
        sent_by_commits: sim.sent_by_commits,
        ..Tally::default()
    };
    for e in &sim.events {
        if let Event::Recovered { .. } = e {
            tally.recoveries += 1;
        }
    }
    let stats = peer.applier.as_ref().expect("applier").stats().clone();
    tally.checkpoints = stats.checkpoints;
    tally.segments_retired = stats.segments_retired;
    tally.applied_in_lanes = stats.applied_in_lanes;
    assert_eq!(
        peer.applier.as_ref().expect("applier").last_seq(),
        last,
        "{ctx}: the backup resolved every sequence"
    );
    drop(sim.peer.take());
    // A backup restarted from its checkpoint and the log after it holds exactly what
    // the primary committed.
    let again = PeerNode::start(&sim.peer_dir, sim.lanes);
    assert_eq!(
        again.rows(ACCT),
        sim.model_rows(ACCT),
        "{ctx}: acct after restart"
    );
    assert_eq!(
        again.rows(LEDGER),
        sim.model_rows(LEDGER),
        "{ctx}: ledger after restart"
    );
    tally
}

#[test]
fn the_link_survives_drops_delays_reorders_partitions_and_peer_restarts() {
    let Some((seeds, total)) = run_seeds(run, |total: &mut Tally, t| {
        total.recoveries += t.recoveries;
        total.replayed += t.replayed;
        total.restarts += t.restarts;
        total.replicated_sync += t.replicated_sync;
        total.alone_or_failed_sync += t.alone_or_failed_sync;
        total.connects += t.connects;
        total.checkpoints += t.checkpoints;
        total.segments_retired += t.segments_retired;
        total.resyncs += t.resyncs;
        total.copies += t.copies;
        total.wipes += t.wipes;
        total.applied_in_lanes += t.applied_in_lanes;
        total.sent_by_commits += t.sent_by_commits;
    }) else {
        return;
    };
    // The seeds must actually exercise outages, replays and restarts.
    assert!(total.restarts > 0 && total.recoveries > seeds && total.replayed > 0);
    assert!(total.replicated_sync > 0 && total.alone_or_failed_sync > 0);
    assert!(total.checkpoints > 0 && total.segments_retired > 0);
    // Every seed starts with an empty backup (one resync each); lost data adds more.
    assert!(total.wipes > 0 && total.resyncs > seeds && total.copies > seeds);
    // Sync commits sent frames themselves, between the link's turns.
    assert!(total.sent_by_commits > 0);
    // Two seeds in three apply async transactions in parallel lanes.
    assert!(seeds < 3 || total.applied_in_lanes > 0);
}
