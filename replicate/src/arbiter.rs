//! Who decides that a backup takes over (seed 000 §5.1: normally an operator, after
//! confirming the old primary is cut off from the network).

use std::time::Duration;

use crate::link::Micros;

/// How a backup's promotion is decided.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Arbiter {
    /// Only by an operator command ([`Backup::promote`](crate::Backup::promote)),
    /// given once the operator has confirmed the old primary is cut off (seed 000's
    /// procedure). No split brain unless the operator is wrong.
    #[default]
    Manual,
    /// The backup promotes itself after `failover_after` without a word (message or
    /// heartbeat) from an authenticated primary it had heard in this run; a silence
    /// shorter than that never promotes. A partition that isolates a live primary
    /// then makes two primaries, one on each side: the old one keeps serving until
    /// it hears of the higher epoch.
    Peer {
        /// Silence that counts as the primary being gone.
        failover_after: Duration,
    },
    /// etcd decides (no split brain): after `failover_after` of silence the backup
    /// tries to create the pair's leader key; it promotes only if it got it, at the
    /// key's create revision as its epoch. A primary that is alive keeps the key
    /// (its lease renewed), so the backup cannot take it; one that cannot renew stops
    /// its own writes before its lease can expire (see [`Leadership`](crate::Leadership)).
    Etcd(EtcdArbiter),
}

/// Where and how the etcd arbiter runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdArbiter {
    /// An etcd endpoint (client URL host:port).
    pub endpoint: std::net::SocketAddr,
    /// This pair's key prefix (many pairs may share one etcd cluster).
    pub prefix: String,
    /// The leader lease's time to live.
    pub lease_ttl: Duration,
    /// Silence from the primary before the backup tries to take the key.
    pub failover_after: Duration,
    /// Each etcd call ends within this.
    pub call_timeout: Duration,
}

/// Why an automatic promotion is due (see [`PromotionWatch::due`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// The primary has been silent this long, past `failover_after`.
    Silence(Duration),
    /// [`Arbiter::Etcd`]: the leader key is vacant, so no primary may write (a holder
    /// stops its writes before its lease can expire), even one still heard (cut off
    /// from etcd but not from this backup).
    LeaderKeyVacant,
}

/// When the automatic arbiters call for a promotion, as pure code over the shell's
/// clock: the primary's silence, the leader key's vacancy (etcd), and the anti-flap
/// window that holds an automatic promotion back after a recent takeover. The
/// backup's serving thread drives it over real time; the failover simulation drives
/// it over simulated time.
#[derive(Debug)]
pub struct PromotionWatch {
    after_us: Option<Micros>,
    last_heard: Option<Micros>,
    /// When a primary was first heard in this run.
    first_heard: Option<Micros>,
    /// The last look at the leader key found it vacant (at this time).
    key_vacant: Option<Micros>,
    window_us: Micros,
    /// No automatic promotion before this (a new epoch began recently).
    held_until: Option<Micros>,
}

impl PromotionWatch {
    /// A watch for `arbiter` (manual: never due) with an anti-flap `window`.
    pub fn new(arbiter: &Arbiter, window: Duration) -> PromotionWatch {
        let after_us = match arbiter {
            Arbiter::Manual => None,
            Arbiter::Peer { failover_after }
            | Arbiter::Etcd(EtcdArbiter { failover_after, .. }) => {
                Some(failover_after.as_micros().min(u64::MAX as u128) as Micros)
            }
        };
        PromotionWatch {
            after_us,
            last_heard: None,
            first_heard: None,
            key_vacant: None,
            window_us: window.as_micros().min(u64::MAX as u128) as Micros,
            held_until: None,
        }
    }

    /// A new epoch began at `now` (a takeover somewhere): no automatic promotion
    /// within the window.
    pub fn new_epoch(&mut self, now: Micros) {
        self.held_until = Some(now.saturating_add(self.window_us));
    }

    /// Whether a promotion that is due at `now` is held back by the anti-flap window.
    pub fn held(&self, now: Micros) -> bool {
        self.held_until.is_some_and(|until| now < until)
    }

    /// The primary was heard at `now`.
    pub fn heard(&mut self, now: Micros) {
        self.last_heard = Some(now);
        self.first_heard.get_or_insert(now);
    }

    /// The backup was busy for `busy_us` up to `now` (applying what it had read) and
    /// heard nothing in that time because it was not listening: the primary's
    /// messages wait unread in the socket meanwhile. Such time is no evidence of
    /// silence, so the silence counted so far moves forward by it (at most to
    /// `now`). Without this, a step longer than `failover_after` (a large catalog
    /// change, a slow disk) would make a backup take over from a live primary.
    pub fn busy(&mut self, busy_us: Micros, now: Micros) {
        if let Some(last) = self.last_heard.as_mut() {
            *last = last.saturating_add(busy_us).min(now).max(*last);
        }
    }

    /// The latest look at the leader key (etcd), taken at `at`, found it `vacant`
    /// or held. A look taken before any primary was heard says nothing about it (a
    /// backup started first sees the key vacant until its primary takes it).
    pub fn leader_key_seen(&mut self, vacant: bool, at: Micros) {
        self.key_vacant = vacant.then_some(at);
    }

    /// A takeover was due but could not happen (the leader key is held): due again
    /// no sooner than `retry_us` after `now` (a vacancy only when seen again).
    pub fn postpone(&mut self, now: Micros, retry_us: Micros) {
        self.key_vacant = None;
        if let (Some(after), Some(last)) = (self.after_us, self.last_heard.as_mut()) {
            *last = (*last).max((now + retry_us).saturating_sub(after));
        }
    }

    /// `Some(why)` if the arbiter says promote at `now`: a primary was heard in this
    /// run, and then was silent for longer than `failover_after` or gave up the
    /// leader key. Before any primary was heard nothing is due: a backup started
    /// before its primary must not take over.
    pub fn due(&self, now: Micros) -> Option<Due> {
        let (after, last) = (self.after_us?, self.last_heard?);
        let silent = now.saturating_sub(last);
        if silent > after {
            Some(Due::Silence(Duration::from_micros(silent)))
        } else if self
            .key_vacant
            .zip(self.first_heard)
            .is_some_and(|(looked, first)| looked > first)
        {
            Some(Due::LeaderKeyVacant)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_primary_heard_and_then_silent_past_the_limit_is_due() {
        let peer = Arbiter::Peer {
            failover_after: Duration::from_millis(500),
        };
        let mut w = PromotionWatch::new(&peer, Duration::from_secs(60));
        assert_eq!(w.due(10_000_000), None, "never heard: never due");
        w.heard(1_000_000);
        assert_eq!(w.due(1_400_000), None, "a blip");
        assert_eq!(w.due(1_500_000), None, "exactly the limit");
        assert_eq!(
            w.due(1_500_001),
            Some(Due::Silence(Duration::from_micros(500_001)))
        );
        w.heard(1_600_000);
        assert_eq!(w.due(1_700_000), None, "heard again");
        let mut manual = PromotionWatch::new(&Arbiter::Manual, Duration::ZERO);
        manual.heard(0);
        assert_eq!(
            manual.due(u64::MAX),
            None,
            "manual never promotes by itself"
        );
    }

    #[test]
    fn time_the_backup_spent_busy_is_not_counted_as_silence() {
        let peer = Arbiter::Peer {
            failover_after: Duration::from_millis(500),
        };
        let mut w = PromotionWatch::new(&peer, Duration::from_secs(60));
        w.heard(1_000_000);
        // Busy from 1.1 s to 2.0 s, then listening again.
        w.busy(900_000, 2_000_000);
        assert_eq!(w.due(2_000_000), None, "not listening is not silence");
        assert_eq!(
            w.due(2_400_000),
            None,
            "500 ms not yet heard while listening"
        );
        assert!(w.due(2_500_001).is_some(), "silent while listening: due");
        let mut w = PromotionWatch::new(&peer, Duration::from_secs(60));
        w.busy(900_000, 2_000_000);
        assert_eq!(w.due(u64::MAX), None, "never heard: still never due");
        w.heard(3_000_000);
        w.busy(10_000_000, 3_100_000);
        assert!(w.due(3_600_001).is_some(), "moved at most to now");
    }

    #[test]
    fn a_new_epoch_holds_automatic_promotion_for_the_window() {
        let peer = Arbiter::Peer {
            failover_after: Duration::from_millis(500),
        };
        let mut w = PromotionWatch::new(&peer, Duration::from_secs(60));
        assert!(!w.held(0), "a fresh pair is not held");
        w.new_epoch(1_000_000);
        w.heard(1_000_000);
        assert!(w.due(2_000_000).is_some(), "silent past the limit: due");
        assert!(w.held(2_000_000), "but within the window");
        assert!(w.held(60_999_999));
        assert!(!w.held(61_000_000), "the window has passed");
    }

    #[test]
    fn a_vacant_leader_key_is_due_only_after_a_primary_was_heard() {
        let etcd = Arbiter::Etcd(EtcdArbiter {
            endpoint: "127.0.0.1:2379".parse().unwrap(),
            prefix: "/p".into(),
            lease_ttl: Duration::from_secs(2),
            failover_after: Duration::from_secs(2),
            call_timeout: Duration::from_millis(500),
        });
        let mut w = PromotionWatch::new(&etcd, Duration::ZERO);
        w.leader_key_seen(true, 500);
        assert_eq!(
            w.due(1_000),
            None,
            "no primary yet: its key is not taken yet"
        );
        w.heard(2_000);
        assert_eq!(
            w.due(2_500),
            None,
            "a look from before the primary was heard"
        );
        w.leader_key_seen(true, 2_800);
        assert_eq!(
            w.due(3_000),
            Some(Due::LeaderKeyVacant),
            "heard, yet the key is vacant"
        );
        w.postpone(3_000, 100_000);
        assert_eq!(w.due(4_000), None, "a failed take waits for the next look");
        w.leader_key_seen(true, 4_500);
        assert_eq!(w.due(5_000), Some(Due::LeaderKeyVacant));
        w.leader_key_seen(false, 5_500);
        assert_eq!(w.due(6_000), None, "held again");
    }
}
