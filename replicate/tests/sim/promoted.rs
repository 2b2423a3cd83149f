//! What the failover simulations check once a backup is promoted.

use std::collections::BTreeSet;

use kirikae_replicate::Epoch;

use super::{PeerNode, Sim, LEDGER};

/// The backup, up (restarted from its log if it was down).
pub fn backup_up(sim: &mut Sim) -> &mut PeerNode {
    if sim.peer.is_none() {
        sim.peer = Some(PeerNode::start(&sim.peer_dir, sim.lanes));
    }
    sim.peer.as_mut().expect("up")
}

/// The promoted database holds every acknowledged sync commit and nothing the
/// primary never committed or had in doubt; a restart keeps all of it.
pub fn check_promoted(sim: &mut Sim, epoch: Epoch, ctx: &str) {
    let committed: BTreeSet<i64> = sim
        .model
        .keys()
        .filter(|(t, _)| *t == LEDGER)
        .map(|(_, k)| *k)
        .collect();
    // Still waiting for an answer, or answered `OutcomeUnknown`: the backup may
    // commit these if it takes over.
    let in_doubt: BTreeSet<i64> = sim
        .waiting
        .values()
        .map(|w| w.ledger)
        .chain(sim.unknown_ledger.iter().copied())
        .collect();
    // Down (a restart after the promotion)? Up again from its log.
    let node = backup_up(sim);
    let ledger = node.rows(LEDGER);
    for id in &sim.replicated_ledger {
        assert!(
            ledger.contains_key(id),
            "{ctx}: acknowledged sync commit (ledger {id}) lost by the failover"
        );
    }
    for id in ledger.keys() {
        assert!(
            committed.contains(id) || in_doubt.contains(id),
            "{ctx}: ledger {id} in the promoted database was never committed by the primary"
        );
    }
    drop(sim.peer.take());
    let mut again = PeerNode::start(&sim.peer_dir, sim.lanes);
    assert_eq!(again.applier().promoted(), Some(epoch), "{ctx}");
    assert_eq!(
        again.rows(LEDGER),
        ledger,
        "{ctx}: the promotion after a restart"
    );
    sim.peer = Some(again);
}
