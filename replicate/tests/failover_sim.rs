//! Seeded simulation of failover, on the same simulated world as the link simulation
//! (the product's link, handshake, backup session and applier over real files).
//! Each seed runs replication under faults for a random while, then one of:
//!
//! - **The primary dies** (its memory gone; whatever it had sent may or may not
//!   still arrive) and the backup is promoted, restarting first if it was down.
//! - **A partition isolates a live primary**; the backup is promoted on its side
//!   while the old primary keeps committing alone; the partition heals, the old
//!   primary reconnects, meets the higher epoch in the handshake, and is fenced.
//!
//! Checked every time:
//! - every sync commit acknowledged as replicated is in the promoted database;
//! - nothing is there that the primary did not commit or still had in doubt (no
//!   phantom), and no in-doubt transaction is dropped (digests always match here);
//! - the promotion survives a restart of the promoted node;
//! - after a partition: the old primary is fenced by the new epoch, reports exactly
//!   its sequences after the takeover as its divergent tail, and accepts nothing
//!   more, so at most one node accepts writes once the epochs have met.
//!
//! `KIRIKAE_SIM_SEEDS=n` runs more seeds; `KIRIKAE_SIM_SEED=s` runs one.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

use kirikae_replicate::{Epoch, Event, Promotion, Rejoin};
use kirikae_testkit::Rng;

use sim::*;

/// What the seeds went through, to show the scenarios were real.
#[derive(Default, Debug)]
struct Tally {
    crashes: u64,
    partitions: u64,
    replicated_sync: u64,
    in_doubt_committed: u64,
    divergent_txns: u64,
    fenced_refusals: u64,
    rejoins_by_catch_up: u64,
    rejoins_by_resync: u64,
    /// Failovers refused: the backup's first resync had not completed.
    refused_resyncing: u64,
}

fn faults(rng: &mut Rng) -> Faults {
    Faults {
        drop: [0.0, 0.001, 0.01][rng.below(3) as usize],
        reorder: [0.0, 0.002, 0.02][rng.below(3) as usize],
        max_delay_us: [200, 2_000, 8_000][rng.below(3) as usize],
        partition_chance: [0.0, 0.0002, 0.001][rng.below(3) as usize],
        restart_chance: [0.0, 0.0001, 0.0005][rng.below(3) as usize],
    }
}

/// The promotion, or `None` if the backup holds no usable copy yet (its first
/// resync is not complete): then no commit can have been acknowledged as replicated.
fn promote(sim: &mut Sim, ctx: &str) -> Option<Promotion> {
    let applier = backup_up(sim).applier();
    if let Err(e) = applier.promotable() {
        assert!(e.to_string().contains("resync"), "{ctx}: {e}");
        assert!(
            sim.replicated_ledger.is_empty(),
            "{ctx}: commits acknowledged as replicated by a backup still resyncing"
        );
        return None;
    }
    let promotion = applier
        .promote(Epoch(2))
        .unwrap_or_else(|e| panic!("{ctx}: promotion failed: {e}"));
    assert!(
        promotion.in_doubt_dropped.is_empty(),
        "{ctx}: an in-doubt transaction with the primary's digests was dropped: {promotion:?}"
    );
    Some(promotion)
}

/// The primary dies mid-traffic.
fn crash(sim: &mut Sim, rng: &mut Rng, faults: &Faults, ctx: &str, tally: &mut Tally) {
    // What it had sent may still arrive, in order, up to some point.
    let conn = sim.conn;
    let in_flight: Vec<_> = std::mem::take(&mut sim.net)
        .into_values()
        .filter(|m| Some(m.conn) == conn && m.to_peer && !sim.broken.contains(&m.conn))
        .collect();
    let arriving = rng.below(in_flight.len() as u64 + 1) as usize;
    let arrived = in_flight.into_iter().take(arriving).map(|m| m.message);
    sim.peer_receive(arrived.collect(), faults);
    sim.backup_session = None;
    sim.conn = None;
    let Some(promotion) = promote(sim, ctx) else {
        tally.refused_resyncing += 1;
        return;
    };
    tally.crashes += 1;
    tally.in_doubt_committed += promotion.in_doubt_committed.len() as u64;
    check_promoted(sim, Epoch(2), ctx);
}

/// A partition isolates the live primary; the backup is promoted on its side; the
/// partition heals and the old primary meets the new epoch.
fn partition(sim: &mut Sim, rng: &mut Rng, faults: &Faults, ctx: &str, tally: &mut Tally) {
    // Some old primaries are quiet when cut off and take no writes afterwards (an
    // idle service, clients that follow the new primary): they may rejoin by
    // catch-up.
    let writes_while_cut = rng.chance(0.7);
    if !writes_while_cut {
        let mut steps = 0;
        while sim.link.metrics(sim.now).last_acked_seq < sim.link.metrics(sim.now).last_seq
            && steps < 200_000
        {
            sim.step(faults, false);
            steps += 1;
        }
    }
    sim.partition_until = u64::MAX;
    sim.close("partitioned");
    for _ in 0..rng.below(3_000) {
        sim.step(faults, writes_while_cut);
    }
    let Some(promotion) = promote(sim, ctx) else {
        tally.refused_resyncing += 1;
        return;
    };
    tally.partitions += 1;
    tally.in_doubt_committed += promotion.in_doubt_committed.len() as u64;
    // The old primary keeps committing alone on its side.
    for _ in 0..rng.below(3_000) {
        sim.step(faults, writes_while_cut);
    }
    let alone_until = sim.link.metrics(sim.now).last_seq;
    sim.partition_until = 0;
    let calm = Faults {
        drop: 0.0,
        reorder: 0.0,
        max_delay_us: 200,
        partition_chance: 0.0,
        restart_chance: 0.0,
    };
    let mut steps = 0;
    while sim.link.fenced().is_none() {
        sim.step(&calm, writes_while_cut);
        steps += 1;
        assert!(
            steps < 100_000,
            "{ctx}: the old primary was never fenced: {:?} {:?}",
            sim.link.metrics(sim.now),
            sim.peer
                .as_ref()
                .map(|p| p.db.table(LEDGER).map(|t| t.len()))
        );
    }
    assert_eq!(sim.link.fenced(), Some(Epoch(2)), "{ctx}");
    let last = sim.link.metrics(sim.now).last_seq;
    assert!(last >= alone_until, "{ctx}");
    let fenced: Vec<_> = sim
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Fenced {
                epoch,
                takeover_seq,
                divergent,
                ..
            } => Some((*epoch, *takeover_seq, *divergent)),
            _ => None,
        })
        .collect();
    let expected_tail = (last > promotion.last_seq).then(|| (promotion.last_seq.next(), last));
    assert_eq!(
        fenced,
        vec![(Epoch(2), promotion.last_seq, expected_tail)],
        "{ctx}: one Fenced event naming exactly the sequences only the old primary has"
    );
    if let Some((first, last)) = expected_tail {
        tally.divergent_txns += last.0 - first.0 + 1;
    }
    // A catch-up rejoin is offered only when the old primary's database is exactly
    // the new primary's at the takeover: the model of what the old primary committed
    // against the promoted node's tables.
    match sim.link.rejoin() {
        Some(Rejoin::CatchUp(at)) => {
            assert_eq!((at.seq, at.epoch), (promotion.last_seq, Epoch(2)), "{ctx}");
            let model = [ACCT, LEDGER].map(|table| sim.model_rows(table));
            // Down (a restart while the old primary wrote)? Up again from its log.
            let node = backup_up(sim);
            for (table, model) in [ACCT, LEDGER].into_iter().zip(model) {
                assert_eq!(
                    node.rows(table),
                    model,
                    "{ctx}: catch-up offered, but table {table} differs from the new primary's"
                );
            }
            tally.rejoins_by_catch_up += 1;
        }
        Some(Rejoin::ResyncRequired { .. }) => tally.rejoins_by_resync += 1,
        None => panic!("{ctx}: fenced without a way back"),
    }
    // Nothing more is accepted by the old primary.
    let before = sim.fenced_refusals;
    for _ in 0..500 {
        sim.step(&calm, true);
    }
    assert!(
        sim.fenced_refusals > before,
        "{ctx}: no submission was tried"
    );
    assert_eq!(
        sim.link.metrics(sim.now).last_seq,
        last,
        "{ctx}: a write after fencing"
    );
    tally.fenced_refusals += sim.fenced_refusals;
    // Sync commits the old primary made alone after the promotion are its divergent
    // tail, not phantoms of the new primary: the check below allows only what the
    // primary committed, and the new primary has none of the tail.
    check_promoted(sim, Epoch(2), ctx);
}

fn run(seed: u64) -> Tally {
    let mut sim = Sim::new(seed);
    let mut rng = Rng::new(seed ^ 0xfa11_0fe4);
    let faults = faults(&mut rng);
    for _ in 0..2_000 + rng.below(12_000) {
        sim.step(&faults, true);
    }
    let mut tally = Tally::default();
    let ctx = format!("seed {seed}");
    if rng.chance(0.5) {
        crash(&mut sim, &mut rng, &faults, &ctx, &mut tally);
    } else {
        partition(&mut sim, &mut rng, &faults, &ctx, &mut tally);
    }
    tally.replicated_sync = sim.replicated_ledger.len() as u64;
    tally
}

#[test]
fn failover_keeps_every_acknowledged_sync_commit_and_fences_the_old_primary() {
    let Some((_, total)) = run_seeds(run, |total: &mut Tally, t| {
        total.crashes += t.crashes;
        total.partitions += t.partitions;
        total.replicated_sync += t.replicated_sync;
        total.in_doubt_committed += t.in_doubt_committed;
        total.divergent_txns += t.divergent_txns;
        total.fenced_refusals += t.fenced_refusals;
        total.rejoins_by_catch_up += t.rejoins_by_catch_up;
        total.rejoins_by_resync += t.rejoins_by_resync;
        total.refused_resyncing += t.refused_resyncing;
    }) else {
        return;
    };
    // The seeds must exercise both scenarios, in-doubt commits and divergent tails.
    assert!(total.crashes > 0 && total.partitions > 0, "{total:?}");
    assert!(
        total.replicated_sync > 0 && total.divergent_txns > 0,
        "{total:?}"
    );
    assert!(
        total.rejoins_by_catch_up > 0 && total.rejoins_by_resync > 0,
        "both ways back: {total:?}"
    );
}
