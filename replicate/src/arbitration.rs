//! The backup's side of the [`Arbiter`]: when an automatic promotion is due (the
//! pure [`PromotionWatch`], fed by the serving thread's clock and connections and, for
//! etcd, by a thread that looks at the leader key), and what epoch a promotion gets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::Receiver;
use parking_lot::Mutex;

use crate::arbiter::{Arbiter, Due, EtcdArbiter, PromotionWatch};
use crate::backup::{BackupConfig, BackupStatus, PromotedBy};
use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result};
use crate::etcd::Etcd;
use crate::leadership::{leader_key, Leadership};
use crate::link::Micros;

/// The promotion watch and, with etcd, the leader-key watcher feeding it.
pub(crate) struct Arbitration {
    pub watch: PromotionWatch,
    key_looks: Option<KeyWatcher>,
}

impl Arbitration {
    /// The watch and (etcd) its key watcher, reading time as `clock` does.
    pub fn new(config: &BackupConfig, clock: Instant) -> Result<Arbitration> {
        let watch = PromotionWatch::new(&config.arbiter, config.auto_promotion_window);
        let key_looks = match &config.arbiter {
            Arbiter::Etcd(etcd) => Some(KeyWatcher::start(etcd, clock)?),
            _ => None,
        };
        Ok(Arbitration { watch, key_looks })
    }

    /// The arbiter's automatic promotion, if one is due at `now` and the anti-flap
    /// window does not hold it back (a held one is reported and looked at again a
    /// second later).
    pub fn automatic(&mut self, now: Micros, status: &Mutex<BackupStatus>) -> Option<PromotedBy> {
        if let Some(looks) = &self.key_looks {
            for (vacant, at) in looks.looks.try_iter() {
                self.watch.leader_key_seen(vacant, at);
            }
        }
        let due = self.watch.due(now)?;
        if self.watch.held(now) {
            tracing::warn!(
                "{}, but a takeover happened within the anti-flap window: no automatic \
                 promotion (an operator can still promote)",
                by(due)
            );
            status.lock().auto_promotions_held += 1;
            self.watch.postpone(now, 1_000_000);
            return None;
        }
        Some(by(due))
    }
}

fn by(due: Due) -> PromotedBy {
    match due {
        Due::Silence(silent) => PromotedBy::Silence {
            silent_ms: silent.as_millis() as u64,
        },
        Due::LeaderKeyVacant => PromotedBy::LeaderKeyVacant,
    }
}

/// A thread that looks at the pair's leader key every half `failover_after` (at
/// least every 50 ms, at most every second) and reports whether it is vacant. A look
/// that fails (etcd unreachable from here) reports nothing: this backup could not
/// take the key anyway.
struct KeyWatcher {
    /// Whether the key was vacant, and when the look began (µs on the serving
    /// thread's clock).
    looks: Receiver<(bool, Micros)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl KeyWatcher {
    fn start(arbiter: &EtcdArbiter, clock: Instant) -> Result<KeyWatcher> {
        let every =
            (arbiter.failover_after / 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let etcd = Etcd::new(arbiter.endpoint, arbiter.call_timeout);
        let key = leader_key(&arbiter.prefix);
        // One look waiting is enough: a newer one is no more vacant than it.
        let (tx, looks) = crossbeam::channel::bounded(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("kirikae-key-watch".into())
            .spawn(move || {
                while !stopped.load(Ordering::SeqCst) {
                    let at = Instant::now();
                    let at_us = at.saturating_duration_since(clock).as_micros() as Micros;
                    match etcd.get(&key) {
                        Ok(held) => {
                            let _ = tx.try_send((held.is_none(), at_us));
                        }
                        Err(e) => tracing::debug!("cannot look at the leader key: {e}"),
                    }
                    while at.elapsed() < every && !stopped.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })
            .map_err(|e| ReplicateError::Etcd {
                addr: arbiter.endpoint.to_string(),
                reason: format!("cannot start the leader-key watcher: {e}"),
            })?;
        Ok(KeyWatcher {
            looks,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for KeyWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the arbiter granted a promotion.
pub(crate) struct Takeover {
    pub epoch: Epoch,
    /// etcd: the leader key, held from now on.
    pub leadership: Option<Leadership>,
}

/// Asks the arbiter for an epoch above `seen`: manual and peer take the next one;
/// etcd takes the leader key (refused while another node holds it) and its create
/// revision.
pub(crate) fn take_over(config: &BackupConfig, seen: Epoch) -> Result<Takeover> {
    let Arbiter::Etcd(etcd) = &config.arbiter else {
        return Ok(Takeover {
            epoch: Epoch(seen.0 + 1),
            leadership: None,
        });
    };
    let client = Etcd::new(etcd.endpoint, etcd.call_timeout);
    let Some(leadership) = Leadership::acquire(client, &etcd.prefix, &config.node, etcd.lease_ttl)?
    else {
        return Err(ReplicateError::LeaderKeyHeld {
            key: leader_key(&etcd.prefix),
        });
    };
    if leadership.epoch() <= seen {
        return Err(ReplicateError::Protocol {
            reason: format!(
                "the leader key's revision {} is not above {seen}",
                leadership.epoch()
            ),
        });
    }
    Ok(Takeover {
        epoch: leadership.epoch(),
        leadership: Some(leadership),
    })
}
