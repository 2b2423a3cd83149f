//! The primary's hold on its leader lease as pure code over a clock of microseconds:
//! when writes are allowed, given the renewals etcd confirmed. [`Leadership`] runs it
//! over real time with a renewal thread; the failover simulation runs the same code
//! over simulated time against a modelled etcd.
//!
//! The rule: a renewal that **began** at `t` and was confirmed proves the lease lives
//! until at least `t + ttl` (etcd renewed it after `t`). Writes stop a safety margin
//! earlier, so that a node that takes the key after the expiry never overlaps with
//! this one, even with some clock-rate difference and a short pause between the check
//! and the commit.
//!
//! [`Leadership`]: crate::Leadership

use std::time::Duration;

use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result};
use crate::link::Micros;

/// A held leader lease (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseHold {
    epoch: Epoch,
    safe_us: Micros,
    /// Writes are allowed before this.
    valid_until_us: Micros,
    /// The lease expired or the key is someone else's: final.
    lost: bool,
}

impl LeaseHold {
    /// A lease of `ttl` granted by a request that began at `began_us`, holding the
    /// key whose create revision is `epoch`.
    pub fn granted(epoch: Epoch, ttl: Duration, began_us: Micros) -> LeaseHold {
        let safe = ttl.saturating_sub(margin(ttl));
        let safe_us = safe.as_micros().min(u128::from(u64::MAX)) as Micros;
        LeaseHold {
            epoch,
            safe_us,
            valid_until_us: began_us.saturating_add(safe_us),
            lost: false,
        }
    }

    /// The epoch the lease gives: the leader key's create revision.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// etcd confirmed a renewal (lease alive, key still this one's) that began at
    /// `began_us`. Confirmations may arrive out of order: the latest start counts.
    pub fn renewed(&mut self, began_us: Micros) {
        if !self.lost {
            self.valid_until_us = self
                .valid_until_us
                .max(began_us.saturating_add(self.safe_us));
        }
    }

    /// etcd said the lease is gone or the key changed hands (or it was released):
    /// no write is allowed ever again.
    pub fn lose(&mut self) {
        self.lost = true;
        self.valid_until_us = 0;
    }

    /// Whether the lease is lost for good.
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// Until when writes are allowed (exclusive; 0 once lost).
    pub fn valid_until_us(&self) -> Micros {
        self.valid_until_us
    }

    /// Ok while writes are allowed at `now_us`; else why not.
    pub fn check(&self, now_us: Micros) -> Result<()> {
        if self.lost {
            return Err(ReplicateError::LeaseLost {
                epoch: self.epoch,
                reason: "the leader lease expired or the key changed hands".into(),
            });
        }
        if now_us >= self.valid_until_us {
            return Err(ReplicateError::LeaseLost {
                epoch: self.epoch,
                reason: "the leader lease could not be renewed in time (etcd unreachable?)".into(),
            });
        }
        Ok(())
    }
}

/// Writes stop this long before the lease could expire: a quarter of the TTL, at
/// least 100 ms (clock rate differences, a renewal's own time, a short pause).
pub fn margin(ttl: Duration) -> Duration {
    (ttl / 4).max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_stop_a_margin_before_the_lease_could_expire() {
        let ttl = Duration::from_secs(2);
        let mut hold = LeaseHold::granted(Epoch(7), ttl, 1_000_000);
        assert_eq!(
            hold.valid_until_us(),
            2_500_000,
            "2 s minus a 500 ms margin"
        );
        assert!(hold.check(2_499_999).is_ok());
        assert!(hold.check(2_500_000).is_err(), "at the deadline: no");
        hold.renewed(2_600_000);
        assert!(hold.check(2_700_000).is_ok(), "renewed after a lapse");
        hold.renewed(1_500_000);
        assert_eq!(
            hold.valid_until_us(),
            4_100_000,
            "an older renewal never shortens"
        );
        hold.lose();
        assert!(hold.check(0).is_err());
        hold.renewed(5_000_000);
        assert!(hold.check(5_000_001).is_err(), "lost is final");
        assert_eq!(
            LeaseHold::granted(Epoch(1), Duration::from_millis(200), 0).valid_until_us(),
            100_000,
            "at least 100 ms of margin"
        );
    }
}
