//! Seeded simulation of failover under the etcd arbiter: the link simulation's world
//! (the product's link, handshake, backup session and applier over real files) plus
//! a modelled etcd (`sim/etcd_model.rs`), the primary's lease hold
//! ([`LeaseHold`], the code [`Leadership`](kirikae_replicate::Leadership) runs) with
//! its renewals, and the backup's [`PromotionWatch`] with its looks at the leader key
//! and its takeover, all in simulated time. Each seed replicates under link faults
//! for a while, then one of:
//!
//! - the primary **pauses** (SIGSTOP) for 0.3 to 3 lease TTLs, then runs on;
//! - the primary is **cut off from etcd alone**, still heard by its backup;
//! - the primary is **isolated** from etcd and its backup;
//! - the primary **dies**.
//!
//! Checked every time:
//! - **one writer at a time**: when the backup takes the key, the old primary's hold
//!   no longer allows writes, and every write it accepted (a sequence assigned) came
//!   before the takeover; it writes only in its own epoch and the new primary only
//!   in the key's new create revision;
//! - every sync commit acknowledged as replicated is in the promoted database, with
//!   nothing the primary never committed (and it survives a restart);
//! - **liveness**: once the fault is over, exactly one node accepts writes: the new
//!   primary, with the old one fenced by its epoch, or the old primary, with its lease
//!   renewed; a dead primary is replaced within TTL + `failover_after` + a look.
//!
//! `KIRIKAE_SIM_SEEDS=n` runs more seeds; `KIRIKAE_SIM_SEED=s` runs one.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

use std::time::Duration;

use kirikae_replicate::{
    lease_margin, Arbiter, Due, Epoch, EtcdArbiter, LeaseHold, Promotion, PromotionWatch,
};
use kirikae_testkit::Rng;

use sim::etcd_model::{EtcdModel, Node};
use sim::*;

const MS: u64 = 1_000;
const TTL_US: u64 = 300 * MS;
const FAILOVER_AFTER_US: u64 = 150 * MS;
/// The renewer's pace and bound, as in `Leadership` (a third of the TTL).
const RENEW_EVERY_US: u64 = TTL_US / 3;
const CALL_TIMEOUT_US: u64 = 80 * MS;
/// The backup's looks at the key, as in its watcher (half of `failover_after`).
const LOOK_EVERY_US: u64 = FAILOVER_AFTER_US / 2;
/// A refused takeover is tried again this much later, as in the backup.
const RETRY_US: u64 = 100 * MS;

#[derive(Clone, Copy, Debug)]
enum Fault {
    Pause,
    EtcdCut,
    Isolation,
    Crash,
}

/// What the seeds went through, to show the scenarios were real.
#[derive(Default, Debug)]
struct Tally {
    seeds_by_fault: [u64; 4],
    promotions_by_silence: u64,
    promotions_by_vacancy: u64,
    no_promotion: u64,
    takeovers_refused: u64,
    steps_without_lease: u64,
    writes_checked: u64,
    replicated_sync: u64,
    old_primaries_fenced: u64,
    failover_ms_max: u64,
    refused_resyncing: u64,
}

/// A renewal (keep-alive and key check) on its way.
struct Renewal {
    began: u64,
    at_etcd: u64,
    /// etcd's answer and when the primary gets it; `None` until etcd processed it.
    answer: Option<(bool, u64)>,
    /// The request never reached etcd: the call fails at its timeout.
    lost: bool,
}

/// The primary's process, as far as the arbiter is concerned.
struct Primary {
    hold: LeaseHold,
    renewal: Option<Renewal>,
    next_renewal: u64,
    paused_until: u64,
    etcd_cut_until: u64,
    dead: bool,
}

struct World {
    sim: Sim,
    rng: Rng,
    etcd: EtcdModel,
    primary: Primary,
    epoch: Epoch,
    watch: PromotionWatch,
    fed_heard: Option<u64>,
    next_look: u64,
    promoted: Option<(Promotion, u64, Due)>,
    /// When the old primary accepted each of its writes.
    accepted_at: Vec<u64>,
    /// A takeover was due while the backup held no usable copy (its first resync
    /// not complete).
    unpromotable: bool,
    tally: Tally,
}

impl World {
    fn new(seed: u64) -> World {
        let sim = Sim::new(seed);
        let epoch = sim.link.config().epoch;
        let mut etcd = EtcdModel::new(TTL_US);
        let revision = etcd.create(Node::Primary, 0).expect("a fresh etcd");
        assert_eq!(
            Epoch(revision),
            epoch,
            "the primary's epoch is its key's revision"
        );
        let arbiter = Arbiter::Etcd(EtcdArbiter {
            endpoint: "127.0.0.1:2379".parse().unwrap(),
            prefix: "/sim".into(),
            lease_ttl: Duration::from_micros(TTL_US),
            failover_after: Duration::from_micros(FAILOVER_AFTER_US),
            call_timeout: Duration::from_micros(CALL_TIMEOUT_US),
        });
        World {
            sim,
            rng: Rng::new(seed ^ 0xe7cd_a4b1),
            etcd,
            primary: Primary {
                hold: LeaseHold::granted(epoch, Duration::from_micros(TTL_US), 0),
                renewal: None,
                next_renewal: RENEW_EVERY_US,
                paused_until: 0,
                etcd_cut_until: 0,
                dead: false,
            },
            epoch,
            watch: PromotionWatch::new(&arbiter, Duration::from_secs(3600)),
            fed_heard: None,
            next_look: 0,
            promoted: None,
            accepted_at: Vec::new(),
            unpromotable: false,
            tally: Tally::default(),
        }
    }

    fn frozen(&self, now: u64) -> bool {
        self.primary.dead || now < self.primary.paused_until
    }

    /// One step of simulated time for every party.
    fn step(&mut self, faults: &Faults) {
        let now = self.sim.now + STEP_US;
        self.etcd_serves(now);
        let frozen = self.frozen(now);
        if !frozen {
            self.renew(now);
        }
        // The commit path's check, at the moment a sequence would be assigned.
        let lease_ok = self.primary.hold.check(now).is_ok();
        if !frozen && !lease_ok {
            self.tally.steps_without_lease += 1;
        }
        self.sim.primary_frozen = frozen;
        let before = self.sim.link.metrics(now).last_seq;
        self.sim.step(faults, lease_ok);
        assert_eq!(self.sim.now, now);
        if self.sim.link.metrics(now).last_seq > before {
            assert!(lease_ok, "a write without a valid lease");
            self.accepted_at.push(now);
        }
        if self.promoted.is_none() {
            self.backup_arbitrates(now);
        }
    }

    /// etcd processes a renewal that reached it (independently of the primary's
    /// pauses: the request was already on its way).
    fn etcd_serves(&mut self, now: u64) {
        let Some(r) = self.primary.renewal.as_mut() else {
            return;
        };
        if r.answer.is_some() || r.lost || r.at_etcd > now {
            return;
        }
        if now < self.primary.etcd_cut_until {
            r.lost = true;
            return;
        }
        let alive = self.etcd.keep_alive(Node::Primary, self.epoch.0, now);
        let back = now + 200 + self.rng.below(3 * MS);
        r.answer = Some((alive, back));
    }

    /// The primary's renewal thread.
    fn renew(&mut self, now: u64) {
        if let Some(r) = &self.primary.renewal {
            match r.answer {
                Some((alive, back)) if back <= now => {
                    if alive {
                        self.primary.hold.renewed(r.began);
                    } else {
                        self.primary.hold.lose();
                    }
                    self.primary.renewal = None;
                }
                _ if now >= r.began + CALL_TIMEOUT_US => self.primary.renewal = None,
                _ => {}
            }
        }
        if self.primary.renewal.is_none()
            && now >= self.primary.next_renewal
            && !self.primary.hold.lost()
        {
            self.primary.next_renewal = now + RENEW_EVERY_US;
            self.primary.renewal = Some(Renewal {
                began: now,
                at_etcd: now + 200 + self.rng.below(3 * MS),
                answer: None,
                lost: false,
            });
        }
    }

    /// The backup's serving loop: what it heard, its looks at the key, and a
    /// takeover when the watch says so and etcd grants the key.
    fn backup_arbitrates(&mut self, now: u64) {
        if self.sim.peer_heard != self.fed_heard {
            self.fed_heard = self.sim.peer_heard;
            if let Some(heard) = self.fed_heard {
                self.watch.heard(heard);
            }
        }
        if now >= self.next_look {
            self.next_look = now + LOOK_EVERY_US;
            let vacant = self.etcd.vacant(now);
            self.watch.leader_key_seen(vacant, now);
        }
        let Some(due) = self.watch.due(now) else {
            return;
        };
        assert!(!self.watch.held(now), "one takeover per seed");
        // As the backup does: no key taken for a promotion it could not make.
        if backup_up(&mut self.sim).applier().promotable().is_err() {
            self.unpromotable = true;
            self.watch.postpone(now, RETRY_US);
            return;
        }
        let Some(revision) = self.etcd.create(Node::Backup, now) else {
            self.tally.takeovers_refused += 1;
            self.watch.postpone(now, RETRY_US);
            return;
        };
        // The takeover: the old primary may no longer write.
        assert!(
            self.primary.hold.check(now).is_err(),
            "the backup took the key at {now} µs while the primary's hold allows writes \
             until {} µs",
            self.primary.hold.valid_until_us()
        );
        self.sim.close("promoting");
        let promotion = backup_up(&mut self.sim)
            .applier()
            .promote(Epoch(revision))
            .expect("promotion");
        assert!(promotion.in_doubt_dropped.is_empty(), "{promotion:?}");
        self.promoted = Some((promotion, now, due));
    }
}

fn run(seed: u64) -> Tally {
    let mut w = World::new(seed);
    let ctx = format!("seed {seed}");
    let mut rng = Rng::new(seed ^ 0xa4b1_7e55);
    let background = Faults {
        drop: [0.0, 0.001, 0.005][rng.below(3) as usize],
        reorder: [0.0, 0.002, 0.01][rng.below(3) as usize],
        max_delay_us: [200, 2_000, 6_000][rng.below(3) as usize],
        partition_chance: [0.0, 0.0002][rng.below(2) as usize],
        // A backup restart would start a new watch, as a new process does: the
        // failover simulation covers restarts.
        restart_chance: 0.0,
    };
    for _ in 0..2_000 + rng.below(8_000) {
        w.step(&background);
    }
    let fault =
        [Fault::Pause, Fault::EtcdCut, Fault::Isolation, Fault::Crash][rng.below(4) as usize];
    w.tally.seeds_by_fault[fault as usize] += 1;
    let start = w.sim.now;
    let length = TTL_US * [3, 9, 15, 30][rng.below(4) as usize] / 10;
    let over = start + length;
    let p = &mut w.primary;
    match fault {
        Fault::Pause => p.paused_until = over,
        Fault::EtcdCut => p.etcd_cut_until = over,
        Fault::Isolation => {
            p.etcd_cut_until = over;
            w.sim.partition_until = over;
        }
        Fault::Crash => p.dead = true,
    }
    let calm = Faults {
        partition_chance: 0.0,
        ..background
    };
    while w.sim.now < over + 12 * TTL_US {
        w.step(&calm);
    }
    let end = w.sim.now;
    // One writer at a time.
    if let Some((_, at, _)) = &w.promoted {
        if let Some(last) = w.accepted_at.last() {
            assert!(
                last < at,
                "{ctx}: the old primary wrote at {last} µs, after the takeover at {at} µs"
            );
        }
    }
    w.tally.writes_checked += w.accepted_at.len() as u64;
    match w.promoted.take() {
        Some((promotion, at, due)) => {
            assert!(promotion.epoch > w.epoch, "{ctx}");
            match due {
                Due::Silence(_) => w.tally.promotions_by_silence += 1,
                Due::LeaderKeyVacant => w.tally.promotions_by_vacancy += 1,
            }
            let failover_ms = (at - start) / MS;
            if let Fault::Crash = fault {
                assert!(
                    at - start <= TTL_US + FAILOVER_AFTER_US + LOOK_EVERY_US + 10 * MS,
                    "{ctx}: a dead primary replaced only after {failover_ms} ms"
                );
            }
            w.tally.failover_ms_max = w.tally.failover_ms_max.max(failover_ms);
            // The old primary, if alive, met the new epoch and accepts nothing.
            if !w.primary.dead {
                assert_eq!(
                    w.sim.link.fenced(),
                    Some(promotion.epoch),
                    "{ctx}: the old primary was not fenced ({fault:?})"
                );
                w.tally.old_primaries_fenced += 1;
            }
            assert!(
                w.primary.hold.check(end).is_err(),
                "{ctx}: two writers at the end"
            );
            check_promoted(&mut w.sim, promotion.epoch, &ctx);
        }
        None if w.unpromotable => {
            assert!(
                w.sim.replicated_ledger.is_empty(),
                "{ctx}: commits acknowledged as replicated by a backup still resyncing"
            );
            w.tally.refused_resyncing += 1;
        }
        None => {
            // Still the primary's: it must be able to write again.
            assert!(
                !w.primary.dead,
                "{ctx}: the dead primary was never replaced"
            );
            assert!(
                w.primary.hold.check(end).is_ok(),
                "{ctx}: nobody accepts writes after a {fault:?} of {} ms",
                length / MS
            );
            assert_eq!(w.sim.link.fenced(), None, "{ctx}");
            let short = fault_survivable(fault, length);
            assert!(
                short,
                "{ctx}: a {fault:?} of {} ms and no takeover",
                length / MS
            );
            w.tally.no_promotion += 1;
        }
    }
    w.tally.replicated_sync = w.sim.replicated_ledger.len() as u64;
    w.tally
}

/// Whether the primary may keep its key through `fault` of `length`: only a fault
/// shorter than the lease lets its renewals resume in time (the rest must end in a
/// takeover).
fn fault_survivable(fault: Fault, length: u64) -> bool {
    match fault {
        Fault::Crash => false,
        Fault::Pause | Fault::EtcdCut | Fault::Isolation => length < TTL_US,
    }
}

#[test]
fn under_the_etcd_arbiter_one_node_writes_at_a_time_and_one_always_can() {
    assert_eq!(
        lease_margin(Duration::from_micros(TTL_US)),
        Duration::from_millis(100),
        "the margin this simulation's timings assume"
    );
    let Some((_, total)) = run_seeds(run, |total: &mut Tally, t| {
        for (a, b) in total.seeds_by_fault.iter_mut().zip(t.seeds_by_fault) {
            *a += b;
        }
        total.promotions_by_silence += t.promotions_by_silence;
        total.promotions_by_vacancy += t.promotions_by_vacancy;
        total.no_promotion += t.no_promotion;
        total.takeovers_refused += t.takeovers_refused;
        total.steps_without_lease += t.steps_without_lease;
        total.writes_checked += t.writes_checked;
        total.replicated_sync += t.replicated_sync;
        total.old_primaries_fenced += t.old_primaries_fenced;
        total.failover_ms_max = total.failover_ms_max.max(t.failover_ms_max);
        total.refused_resyncing += t.refused_resyncing;
    }) else {
        return;
    };
    // The seeds must reach every path: both reasons to promote, faults survived
    // without a takeover, takeovers refused while the key was held, writes refused
    // for want of a lease, old primaries fenced.
    assert!(total.seeds_by_fault.iter().all(|&n| n > 0), "{total:?}");
    assert!(
        total.promotions_by_silence > 0 && total.promotions_by_vacancy > 0,
        "{total:?}"
    );
    assert!(
        total.no_promotion > 0 && total.takeovers_refused > 0,
        "{total:?}"
    );
    assert!(
        total.steps_without_lease > 0 && total.old_primaries_fenced > 0,
        "{total:?}"
    );
}
