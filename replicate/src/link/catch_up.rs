//! Catch-up: once a connection is up, the peer gets every sequence it has not
//! resolved, read from the difference file in batches paced by its
//! acknowledgements; new transactions pause for the last stretch, and the link goes
//! duplex when nothing is left.

use super::{micros, Event, Link, LinkState, Micros, ReadRequest};
use crate::epoch::Epoch;
use crate::mode::Mode;
use crate::record_log::LogRecord;
use crate::seq::Seq;
use crate::wire::Message;

/// A catch-up in progress.
#[derive(Debug)]
pub(super) struct CatchUp {
    /// Tells this catch-up's reads from an earlier one's.
    pub(super) id: u64,
    /// Highest sequence sent from the difference file.
    pub(super) cursor: Seq,
    pub(super) replayed: u64,
    pub(super) paused_at: Option<Micros>,
    /// A read was asked for and not answered yet.
    pub(super) reading: bool,
}

/// Output a catch-up produces before the shell sends it.
const CATCHUP_BYTES_PER_ROUND: usize = 4 << 20;

impl Link {
    /// A connection is up and the peer's handshake said it has resolved everything up
    /// to `peer_last_seq` and has seen `peer_epoch`. Starts the catch-up; a peer that
    /// cannot be caught up (raising `ResyncRequired`) or is empty is resynced instead
    /// (without `LinkConfig::resync`, one that cannot be caught up is refused and the
    /// connection closed).
    /// A peer of a higher epoch was promoted: this primary is fenced (see
    /// [`Event::Fenced`]).
    pub fn connected(&mut self, now: Micros, peer_last_seq: Seq, peer_epoch: Epoch) {
        debug_assert_eq!(self.state, LinkState::Degraded, "connected twice");
        debug_assert!(self.window.is_empty(), "window spilled when going down");
        // A close asked for when the last connection went down was about that one:
        // carried out on this one, it would end every connection as it is made.
        self.ready.close = false;
        self.pacing = super::pacing::Pacing::default();
        self.metrics.commit_pace_us = 0;
        self.metrics.connects += 1;
        if peer_epoch > self.config.epoch {
            return self.fence(peer_epoch, peer_last_seq);
        }
        // The backoff is not reset here but once the link is duplex: a connection
        // that is made and then fails every time (a resync that cannot complete)
        // must still back off.
        if peer_last_seq == Seq::ZERO && self.config.resync {
            // A brand-new or emptied backup (one restarted in the middle of a
            // resync is emptied): this primary's tables may hold rows from before
            // its replication history began (a bulk load), which only a copy carries.
            if self.acked > Seq::ZERO {
                tracing::warn!("the peer is empty; it had acknowledged {}", self.acked);
            }
            return self.begin_resync(now);
        }
        let refuse = if let Some(reason) = &self.resync_required {
            Some(reason.clone())
        } else if peer_last_seq < self.acked {
            Some(format!(
                "peer lost acknowledged transactions: it has {peer_last_seq}, had acknowledged {}",
                self.acked
            ))
        } else if peer_last_seq > self.seq {
            Some(format!(
                "peer is ahead of this primary: it has {peer_last_seq}, this primary {}",
                self.seq
            ))
        } else if peer_last_seq < self.seq && self.log_last_seq.is_none_or(|l| l < self.seq) {
            Some(format!(
                "sequences {}..={} are not in the difference file",
                peer_last_seq.next(),
                self.seq
            ))
        } else {
            None
        };
        if let Some(reason) = refuse {
            self.require_resync(reason);
            if self.config.resync {
                return self.begin_resync(now);
            }
            self.ready.close = true;
            self.reconnect_at = now + micros(self.config.reconnect_max);
            return;
        }
        self.acked = peer_last_seq;
        self.sent = peer_last_seq;
        self.last_heard = now;
        self.last_sent_at = now;
        self.state = LinkState::CatchingUp;
        self.catch_ups += 1;
        self.catch_up = Some(CatchUp {
            id: self.catch_ups,
            cursor: peer_last_seq,
            replayed: 0,
            paused_at: None,
            reading: false,
        });
        self.retire(peer_last_seq);
        self.pump(now);
    }

    /// The records a [`ReadRequest`] asked for (or why they could not be read).
    pub fn replayed(
        &mut self,
        now: Micros,
        catch_up: u64,
        batch: std::result::Result<Vec<LogRecord>, String>,
    ) {
        let epoch = self.config.epoch;
        let Some(cu) = self.catch_up.as_mut().filter(|c| c.id == catch_up) else {
            return;
        };
        cu.reading = false;
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                let reason = format!("cannot read the difference file: {e}");
                self.require_resync(reason.clone());
                return self.go_down(now, reason);
            }
        };
        if batch.is_empty() {
            return;
        }
        let mut messages = Vec::with_capacity(batch.len());
        for r in batch {
            if r.seq != cu.cursor.next() {
                let reason = format!(
                    "the difference file jumps from {} to {}: the peer needs a full resync",
                    cu.cursor, r.seq
                );
                self.require_resync(reason.clone());
                return self.go_down(now, reason);
            }
            cu.cursor = r.seq;
            cu.replayed += 1;
            messages.push(if r.mode == Mode::Skip {
                Message::Abort { seq: r.seq, epoch }
            } else {
                Message::Ship {
                    seq: r.seq,
                    epoch,
                    mode: r.mode,
                    operations: r.operations,
                    verify: false,
                }
            });
        }
        self.sent = cu.cursor;
        for m in messages {
            self.send(now, m);
        }
        self.pump(now);
    }

    /// Catch-up: asks for the next batch from the difference file; at the end goes
    /// duplex and raises `Recovered`.
    pub(super) fn pump(&mut self, now: Micros) {
        let Some(cu) = self.catch_up.as_mut() else {
            return;
        };
        if cu.reading {
            return;
        }
        let remaining = self.seq.since(cu.cursor);
        if remaining == 0 {
            return self.finish_catch_up(now);
        }
        if remaining <= self.config.pause_within_txns && cu.paused_at.is_none() {
            cu.paused_at = Some(now);
        }
        let in_flight = cu.cursor.since(self.acked);
        let room = self.config.catchup_window_txns.saturating_sub(in_flight);
        let limit = (room as usize).min(self.config.catchup_batch_txns);
        // Paced by the peer's acknowledgements, by what the shell has yet to send, and
        // by what the difference file holds so far.
        if limit == 0
            || self.out_bytes >= CATCHUP_BYTES_PER_ROUND
            || cu.cursor >= self.appended_through
        {
            return;
        }
        cu.reading = true;
        self.ready.read = Some(ReadRequest {
            catch_up: cu.id,
            after: cu.cursor,
            limit,
        });
    }

    pub(super) fn finish_catch_up(&mut self, now: Micros) {
        let Some(cu) = self.catch_up.take() else {
            return;
        };
        let pause_us = cu.paused_at.map_or(0, |at| now.saturating_sub(at));
        self.metrics.replayed += cu.replayed;
        self.state = LinkState::Duplex;
        self.reconnect_delay_us = micros(self.config.reconnect_min);
        if std::mem::take(&mut self.diverged) || cu.replayed > 0 {
            self.ready.events.push(Event::Recovered {
                ops_replayed: cu.replayed,
                pause_us,
            });
        }
    }
}
