//! Commit pacing (seed 000 §4.3: when the peer falls behind new work, the service
//! must be restricted, not the peer given up).
//!
//! Two backlogs are watched. A catch-up's: the difference file's records not yet
//! replayed. A duplex link's: the transactions the peer has not acknowledged, once
//! they pass a quarter of `window_txns_max` or `output_bytes_max`, or the oldest
//! has waited half of `peer_timeout`: limits past which the peer is declared down.
//! A backup that applies more slowly than the primary commits (async and ordered
//! commits do not wait for it) would otherwise reach them and be declared down,
//! raising `Diverged` under an ordinary load. (Half, not a quarter, of the timeout:
//! a slow network's round trip alone ages every transaction.)
//!
//! While the backlog does not shrink, each new commit is held back a little, more
//! each period it still does not, up to `catchup_pace_max`; once it shrinks the
//! hold eases off, and once a duplex one is back under those marks there is none.
//! If a catch-up's backlog passes `catchup_backlog_max_txns` anyway, a resync is
//! cheaper than chasing it: the link gives up the catch-up and the next connection
//! resyncs the peer. A committing thread sleeps its holds in pieces of a
//! millisecond (`commit_hold.rs`).

use super::{micros, Link, LinkState, Micros};

/// How often the backlog's trend is looked at.
const PERIOD_US: Micros = 100_000;
/// The first hold, when a backlog starts growing.
const FIRST_PACE_US: Micros = 20;
/// A duplex backlog is paced once it holds more than 1/this of `window_txns_max`
/// or `output_bytes_max`: the rest leaves the pacing a few periods to catch a
/// burst before the limit.
const DUPLEX_PACE_FROM_FRACTION: usize = 4;
/// ... or once its oldest transaction has waited 1/this of the peer timeout.
const DUPLEX_PACE_FROM_AGE_FRACTION: u64 = 2;

/// The pacing of one connection's backlog.
#[derive(Debug, Default)]
pub(super) struct Pacing {
    /// Backlog at the last look, and when that was.
    last: Option<(u64, Micros)>,
    /// The hold each new commit gets now.
    pace_us: Micros,
}

impl Link {
    /// How long a new commit should wait before it is submitted (µs): nonzero only
    /// while the peer's backlog grows (see the module docs).
    pub fn commit_pace_us(&self) -> Micros {
        match self.state {
            LinkState::CatchingUp | LinkState::Duplex => self.pacing.pace_us,
            LinkState::Degraded | LinkState::Resyncing => 0,
        }
    }

    /// The backlog looked at `now` (from `tick`).
    pub(super) fn pace(&mut self, now: Micros) {
        // The backlog, and whether it is one to hold commits back for.
        let (backlog, heavy) = match (self.state, self.catch_up.as_ref()) {
            (LinkState::CatchingUp, Some(cu)) => {
                let backlog = self.seq.since(cu.cursor);
                if backlog > self.config.catchup_backlog_max_txns {
                    let reason = format!(
                        "the catch-up's backlog reached {backlog} transactions (limit {}): a \
                         resync is cheaper",
                        self.config.catchup_backlog_max_txns
                    );
                    self.require_resync(reason.clone());
                    return self.go_down(now, reason);
                }
                (backlog, true)
            }
            (LinkState::Duplex, _) => (self.window.len() as u64, self.duplex_heavy(now)),
            _ => {
                self.pacing = Pacing::default();
                self.metrics.commit_pace_us = 0;
                return;
            }
        };
        let max = micros(self.config.catchup_pace_max);
        match self.pacing.last {
            // A duplex backlog back under the marks has room again: no hold at all
            // (holding on while it eases off would cost the commits of several
            // periods for nothing).
            _ if !heavy && self.state == LinkState::Duplex => self.pacing.pace_us = 0,
            Some((_, at)) if now.saturating_sub(at) < PERIOD_US => return,
            Some((before, _)) if heavy && backlog >= before && max > 0 => {
                let next = (self.pacing.pace_us * 2).max(FIRST_PACE_US);
                self.pacing.pace_us = next.min(max);
            }
            _ => self.pacing.pace_us /= 2,
        }
        self.pacing.last = Some((backlog, now));
        self.metrics.commit_pace_us = self.pacing.pace_us;
    }

    /// Whether a duplex peer's backlog is past a mark short of a limit that would
    /// have it declared down (see the module docs): transactions held, bytes not
    /// yet written, or the age of the oldest unacknowledged one.
    fn duplex_heavy(&self, now: Micros) -> bool {
        let oldest_us = self
            .window
            .front()
            .map_or(0, |e| now.saturating_sub(e.sent_at));
        self.window.len() > self.config.window_txns_max / DUPLEX_PACE_FROM_FRACTION
            || self.out_bytes > self.config.output_bytes_max / DUPLEX_PACE_FROM_FRACTION
            || oldest_us > micros(self.io_timeout()) / DUPLEX_PACE_FROM_AGE_FRACTION
    }
}
