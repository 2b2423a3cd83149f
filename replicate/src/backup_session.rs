//! One primary's connection as the backup sees it once the handshake
//! ([`crate::handshake`]) has checked out, without I/O: every message goes to the
//! [`Applier`]; a heartbeat goes out when the backup has been silent, and a primary
//! silent too long is dropped. The TCP server ([`Backup`](crate::Backup)) and the
//! seeded simulation both drive this same code: they feed it messages and the time
//! and send what it answers.

use std::time::Duration;

use crate::applier::Applier;
use crate::error::{ReplicateError, Result};
use crate::handshake::PrimaryGreeting;
use crate::link::Micros;
use crate::wire::Message;

/// How a peer session behaves (from [`BackupConfig`](crate::BackupConfig)).
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// This node's name, sent in the handshake.
    pub node: String,
    /// A heartbeat goes out when nothing else has for this long.
    pub heartbeat_every: Duration,
    /// A primary silent this long is dropped.
    pub primary_timeout: Duration,
}

/// One connection's state (see the module docs).
#[derive(Debug)]
pub struct BackupSession {
    config: SessionConfig,
    last_heard: Micros,
    last_sent: Micros,
}

fn micros(d: Duration) -> Micros {
    d.as_micros().min(u64::MAX as u128) as u64
}

impl BackupSession {
    /// A session for a primary whose handshake checked out at `now` (`greeting`):
    /// the applier takes its epoch (refusing a stale primary) and starts a new stream.
    pub fn open(
        config: SessionConfig,
        now: Micros,
        greeting: &PrimaryGreeting,
        applier: &mut Applier<'_>,
    ) -> Result<BackupSession> {
        applier.connected(greeting.epoch)?;
        Ok(BackupSession {
            config,
            last_heard: now,
            last_sent: now,
        })
    }

    /// Messages received at `now`, in order, go to `applier`; replies are appended to
    /// `replies`. An error means the connection must be closed (a stale epoch, a gap,
    /// a log that cannot be written, a message only a backup sends).
    pub fn receive(
        &mut self,
        now: Micros,
        messages: impl IntoIterator<Item = Message>,
        applier: &mut Applier<'_>,
        replies: &mut Vec<Message>,
    ) -> Result<()> {
        self.last_heard = now;
        let mut handled = false;
        for message in messages {
            applier.handle(message)?;
            handled = true;
        }
        if handled {
            // One acknowledgement for the batch (and the log made durable once).
            applier.flush(replies)?;
        }
        Ok(())
    }

    /// Time passes: the applier does its pending work (a resync's drain), a heartbeat
    /// is appended to `replies` if the peer has said nothing for `heartbeat_every`; an error if the primary has been silent for
    /// `primary_timeout` (close the connection).
    pub fn tick(
        &mut self,
        now: Micros,
        applier: &mut Applier<'_>,
        replies: &mut Vec<Message>,
    ) -> Result<()> {
        let silent = now.saturating_sub(self.last_heard);
        if silent > micros(self.config.primary_timeout) {
            return Err(ReplicateError::Protocol {
                reason: format!("no word from the primary for {} ms", silent / 1000),
            });
        }
        // A resync's drain goes on between messages.
        applier.work(replies)?;
        if replies.is_empty()
            && now.saturating_sub(self.last_sent) >= micros(self.config.heartbeat_every)
        {
            replies.push(Message::Heartbeat {
                epoch: applier.epoch(),
                last_seq: applier.last_seq(),
            });
        }
        Ok(())
    }

    /// Replies were sent at `now`.
    pub fn sent(&mut self, now: Micros) {
        self.last_sent = now;
    }
}
