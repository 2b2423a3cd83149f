//! Catch-up pacing (seed 000 §4.3: when replay is slower than new work, the service
//! must be restricted): while a catch-up's backlog does not shrink, each new commit
//! is held back a little, more each period it still does not, up to
//! `catchup_pace_max`; once the backlog shrinks the hold eases off. If the backlog
//! passes `catchup_backlog_max_txns` anyway, a resync is cheaper than chasing it: the
//! link gives up the catch-up and the next connection resyncs the peer.

use super::{micros, Link, LinkState, Micros};

/// How often the backlog's trend is looked at.
const PERIOD_US: Micros = 100_000;
/// The first hold, when a catch-up starts losing ground.
const FIRST_PACE_US: Micros = 20;

/// The pacing of one catch-up.
#[derive(Debug, Default)]
pub(super) struct Pacing {
    /// Backlog at the last look, and when that was.
    last: Option<(u64, Micros)>,
    /// The hold each new commit gets now.
    pace_us: Micros,
}

impl Link {
    /// How long a new commit should wait before it is submitted (µs): nonzero only
    /// while a catch-up is losing ground (see the module docs).
    pub fn commit_pace_us(&self) -> Micros {
        match self.state {
            LinkState::CatchingUp => self.pacing.pace_us,
            _ => 0,
        }
    }

    /// The catch-up's backlog looked at `now` (from `tick`).
    pub(super) fn pace(&mut self, now: Micros) {
        let Some(cu) = self.catch_up.as_ref() else {
            self.pacing = Pacing::default();
            return;
        };
        let backlog = self.seq.since(cu.cursor);
        if backlog > self.config.catchup_backlog_max_txns {
            let reason = format!(
                "the catch-up's backlog reached {backlog} transactions (limit {}): a resync \
                 is cheaper",
                self.config.catchup_backlog_max_txns
            );
            self.require_resync(reason.clone());
            return self.go_down(now, reason);
        }
        let max = micros(self.config.catchup_pace_max);
        match self.pacing.last {
            Some((_, at)) if now.saturating_sub(at) < PERIOD_US => return,
            Some((before, _)) if backlog >= before && max > 0 => {
                let next = (self.pacing.pace_us * 2).max(FIRST_PACE_US);
                self.pacing.pace_us = next.min(max);
            }
            _ => self.pacing.pace_us /= 2,
        }
        self.pacing.last = Some((backlog, now));
        self.metrics.commit_pace_us = self.pacing.pace_us;
    }
}
