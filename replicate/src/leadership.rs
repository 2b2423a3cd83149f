//! The primary's hold on the leader key in etcd (`<prefix>/leader`, attached to a
//! lease): its create revision is the primary's epoch, and writes are allowed only
//! while the lease is known to be alive. A renewal thread keeps the lease; when
//! renewals stop succeeding (etcd unreachable, this process paused), writes stop a
//! safety margin **before** the lease can expire, so that a backup that takes the
//! key after the expiry never overlaps with this primary. When etcd answers again and
//! the key is still this primary's, writes resume; once the lease has expired they
//! never do.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result};
use crate::etcd::{Etcd, LeaseId};

/// The leader key under `prefix` (one prefix per primary/backup pair).
pub fn leader_key(prefix: &str) -> String {
    format!("{}/leader", prefix.trim_end_matches('/'))
}

struct State {
    /// Writes are allowed until this many µs after `origin` (0: never again).
    valid_until_us: AtomicU64,
    /// The lease expired or the key is someone else's: final.
    lost: AtomicBool,
    stop: AtomicBool,
    origin: Instant,
}

/// A held leader key (see the module docs). Dropping it stops renewing (the lease
/// then expires by itself, as when the process dies); [`release`](Leadership::release)
/// hands the key back at once.
pub struct Leadership {
    etcd: Etcd,
    lease: LeaseId,
    key: String,
    epoch: Epoch,
    ttl: Duration,
    state: Arc<State>,
    renewer: Option<JoinHandle<()>>,
}

impl Leadership {
    /// Takes the leader key for `node` with a lease of `ttl`, if nobody holds it.
    /// `Ok(None)`: another node holds it.
    pub fn acquire(
        etcd: Etcd,
        prefix: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<Option<Leadership>> {
        let started = Instant::now();
        let lease = etcd.grant(ttl)?;
        let key = leader_key(prefix);
        let Some(revision) = etcd.create(&key, node, lease)? else {
            let _ = etcd.revoke(lease);
            return Ok(None);
        };
        let state = Arc::new(State {
            valid_until_us: AtomicU64::new(0),
            lost: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            origin: started,
        });
        let mut leadership = Leadership {
            etcd,
            lease,
            key,
            epoch: Epoch(revision as u64),
            ttl,
            state,
            renewer: None,
        };
        extend(&leadership.state, ttl, started);
        leadership.renewer = Some(leadership.spawn_renewer()?);
        Ok(Some(leadership))
    }

    /// The epoch this leadership gives: the leader key's create revision.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Ok while writes are allowed; else why not.
    pub fn check(&self) -> Result<()> {
        check(&self.state, self.epoch)
    }

    /// A handle the commit path can check without holding the leadership.
    pub(crate) fn guard(&self) -> LeaseGuard {
        LeaseGuard {
            state: Arc::clone(&self.state),
            epoch: self.epoch,
        }
    }

    /// Gives the key back now (a planned step down): the next leader need not wait
    /// for the lease to expire.
    pub fn release(mut self) -> Result<()> {
        self.stop_renewing();
        self.state.lost.store(true, Ordering::SeqCst);
        self.etcd.revoke(self.lease)
    }

    fn spawn_renewer(&self) -> Result<JoinHandle<()>> {
        let (etcd, lease, key, epoch, ttl) = (
            self.etcd.clone(),
            self.lease,
            self.key.clone(),
            self.epoch,
            self.ttl,
        );
        let state = Arc::clone(&self.state);
        let every = (ttl / 3).max(Duration::from_millis(50));
        std::thread::Builder::new()
            .name("kirikae-lease".into())
            .spawn(move || {
                while !state.stop.load(Ordering::SeqCst) && !state.lost.load(Ordering::SeqCst) {
                    let at = Instant::now();
                    match etcd.keep_alive(lease).and_then(|alive| {
                        // Alive, and the key still ours (not deleted and recreated).
                        Ok(alive
                            && etcd
                                .get(&key)?
                                .is_some_and(|(_, rev)| rev as u64 == epoch.0))
                    }) {
                        Ok(true) => extend(&state, ttl, at),
                        Ok(false) => {
                            tracing::error!("leader lease lost: {epoch} accepts no more writes");
                            state.lost.store(true, Ordering::SeqCst);
                        }
                        Err(e) => tracing::warn!("cannot renew the leader lease: {e}"),
                    }
                    let next = at + every;
                    while Instant::now() < next && !state.stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })
            .map_err(|e| ReplicateError::Etcd {
                addr: String::new(),
                reason: format!("cannot start the renewal thread: {e}"),
            })
    }

    fn stop_renewing(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.stop_renewing();
    }
}

/// Writes are safe until `ttl - margin` after a renewal that began at `at`: the
/// lease lives at least `ttl` from the moment etcd renewed it, which is after `at`.
fn extend(state: &State, ttl: Duration, at: Instant) {
    let safe = ttl.saturating_sub(margin(ttl));
    let until = (at + safe).saturating_duration_since(state.origin);
    state
        .valid_until_us
        .fetch_max(until.as_micros() as u64, Ordering::SeqCst);
}

/// Writes stop this long before the lease could expire: a quarter of the TTL, at
/// least 100 ms (clock rate differences, a renewal's own time).
fn margin(ttl: Duration) -> Duration {
    (ttl / 4).max(Duration::from_millis(100))
}

/// What the commit path checks (see [`Leadership::check`]).
#[derive(Clone)]
pub(crate) struct LeaseGuard {
    state: Arc<State>,
    epoch: Epoch,
}

impl LeaseGuard {
    pub fn check(&self) -> Result<()> {
        check(&self.state, self.epoch)
    }
}

fn check(state: &State, epoch: Epoch) -> Result<()> {
    if state.lost.load(Ordering::SeqCst) {
        return Err(ReplicateError::LeaseLost {
            epoch,
            reason: "the leader lease expired or the key changed hands".into(),
        });
    }
    let now = state.origin.elapsed().as_micros() as u64;
    if now >= state.valid_until_us.load(Ordering::SeqCst) {
        return Err(ReplicateError::LeaseLost {
            epoch,
            reason: "the leader lease could not be renewed in time (etcd unreachable?)".into(),
        });
    }
    Ok(())
}
