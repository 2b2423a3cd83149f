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

use parking_lot::Mutex;

use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result};
use crate::etcd::{Etcd, LeaseId};
use crate::lease::LeaseHold;
use crate::link::Micros;

/// The leader key under `prefix` (one prefix per primary/backup pair).
pub fn leader_key(prefix: &str) -> String {
    format!("{}/leader", prefix.trim_end_matches('/'))
}

/// The hold, shared by the renewal thread and the commit path, over the clock of
/// `origin`. Every commit checks it: `valid_until_us` mirrors the hold's deadline
/// so that the check takes no lock while writes are allowed.
struct State {
    hold: Mutex<LeaseHold>,
    valid_until_us: AtomicU64,
    stop: AtomicBool,
    origin: Instant,
}

impl State {
    fn us(&self, at: Instant) -> Micros {
        at.saturating_duration_since(self.origin).as_micros() as Micros
    }

    fn lost(&self) -> bool {
        self.hold.lock().lost()
    }

    /// Changes the hold and publishes its deadline.
    fn update(&self, change: impl FnOnce(&mut LeaseHold)) {
        let mut hold = self.hold.lock();
        change(&mut hold);
        self.valid_until_us
            .store(hold.valid_until_us(), Ordering::SeqCst);
    }
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
        let epoch = Epoch(revision as u64);
        let hold = LeaseHold::granted(epoch, ttl, 0);
        let state = Arc::new(State {
            valid_until_us: AtomicU64::new(hold.valid_until_us()),
            hold: Mutex::new(hold),
            stop: AtomicBool::new(false),
            origin: started,
        });
        let mut leadership = Leadership {
            etcd,
            lease,
            key,
            epoch,
            ttl,
            state,
            renewer: None,
        };
        leadership.renewer = Some(leadership.spawn_renewer()?);
        Ok(Some(leadership))
    }

    /// The epoch this leadership gives: the leader key's create revision.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Ok while writes are allowed; else why not.
    pub fn check(&self) -> Result<()> {
        check(&self.state)
    }

    /// A handle the commit path can check without holding the leadership.
    pub(crate) fn guard(&self) -> LeaseGuard {
        LeaseGuard {
            state: Arc::clone(&self.state),
        }
    }

    /// Gives the key back now (a planned step down): the next leader need not wait
    /// for the lease to expire.
    pub fn release(mut self) -> Result<()> {
        self.stop_renewing();
        self.state.update(LeaseHold::lose);
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
                while !state.stop.load(Ordering::SeqCst) && !state.lost() {
                    let at = Instant::now();
                    match etcd.keep_alive(lease).and_then(|alive| {
                        // Alive, and the key still ours (not deleted and recreated).
                        Ok(alive
                            && etcd
                                .get(&key)?
                                .is_some_and(|(_, rev)| rev as u64 == epoch.0))
                    }) {
                        Ok(true) => state.update(|h| h.renewed(state.us(at))),
                        Ok(false) => {
                            tracing::error!("leader lease lost: {epoch} accepts no more writes");
                            state.update(LeaseHold::lose);
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

/// What the commit path checks (see [`Leadership::check`]).
#[derive(Clone)]
pub(crate) struct LeaseGuard {
    state: Arc<State>,
}

impl LeaseGuard {
    pub fn check(&self) -> Result<()> {
        check(&self.state)
    }
}

fn check(state: &State) -> Result<()> {
    let now = state.us(Instant::now());
    if now < state.valid_until_us.load(Ordering::SeqCst) {
        return Ok(());
    }
    // Refused: the hold says why.
    state.hold.lock().check(now)
}
