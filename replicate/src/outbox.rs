//! The connection's writing end, shared by the link thread and committing threads.
//!
//! Whoever holds the [`Outbox`] takes the link's messages and writes them before
//! letting go, so frames reach the wire in the link's order. The link thread takes
//! it before the core's lock, blocking; a committing thread, which already holds the
//! core's lock, only tries it and never blocks, so the two orders cannot deadlock.
//!
//! Why a committing thread writes at all: a sync commit made while the link thread
//! sleeps would otherwise wake that thread to send its `Prepare`, one wake-up (tens
//! of µs on a VM) on the path of every sync commit at low load. Under load the link
//! thread is awake and sends many frames per write; commits then leave the writing
//! to it.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::MutexGuard;

use crate::freeze_point::{self, FreezePoint};
use crate::shared::{Core, Shared};
use crate::wire::{encode_into, Message};

/// See the module docs.
#[derive(Default)]
pub(crate) struct Outbox {
    /// The current connection's writing end; `None` between connections.
    stream: Option<TcpStream>,
    /// Encoding buffer, reused.
    out: Vec<u8>,
    /// What the link allows a write now, and what the socket was last set to.
    io_timeout: Duration,
    write_timeout: Duration,
}

impl Outbox {
    /// A new connection's writing end; its socket's write timeout was set at
    /// connecting (to the peer timeout), not yet to the link's.
    pub(crate) fn connected(&mut self, stream: TcpStream) {
        self.stream = Some(stream);
        self.write_timeout = Duration::ZERO;
    }

    /// The connection is gone: nothing more is written until the next one.
    pub(crate) fn closed(&mut self) {
        self.stream = None;
    }

    /// What the link allows a write now ([`Link::io_timeout`](crate::Link::io_timeout)).
    pub(crate) fn set_io_timeout(&mut self, timeout: Duration) {
        self.io_timeout = timeout;
    }

    /// Encodes and writes `messages`; an error is returned as the reason to close.
    /// Without a connection nothing is written (the link has gone down and keeps
    /// what they carried in its window).
    pub(crate) fn send(&mut self, shared: &Shared, messages: &[Message]) -> Option<String> {
        let frame_bytes_max = shared.frame_bytes_max;
        let stream = self.stream.as_mut()?;
        self.out.clear();
        for m in messages {
            if let Message::Commit { seq, .. } = m {
                freeze_point::reached(FreezePoint::BeforeCommitSent, Some(*seq));
            }
            match encode_into(m, frame_bytes_max, &mut self.out) {
                Ok(()) => {}
                // Sizes were checked when the transaction was submitted: a failure
                // here is a bug, surfaced as an outage.
                Err(e) => return Some(format!("cannot encode a frame: {e}")),
            }
        }
        if self.out.is_empty() {
            return None;
        }
        if self.io_timeout != self.write_timeout && !self.io_timeout.is_zero() {
            if let Err(e) = stream.set_write_timeout(Some(self.io_timeout)) {
                return Some(format!("set the write timeout: {e}"));
            }
            self.write_timeout = self.io_timeout;
        }
        shared
            .writing_since
            .store(shared.now() + 1, Ordering::Relaxed);
        let result = stream.write_all(&self.out);
        shared.writing_since.store(0, Ordering::Relaxed);
        if self.out.capacity() > 16 << 20 {
            self.out = Vec::new();
        }
        result.err().map(|e| format!("write to the peer: {e}"))
    }
}

/// Sends the link's pending messages from a committing thread (see the module
/// docs) if the link thread sleeps, the outbox is free and the messages can go
/// alone ([`Link::take_messages`](crate::Link::take_messages)); unlocks `core`
/// either way. Returns whether the caller's messages are on the wire: sent now,
/// or found already sent by whoever held the outbox before (it writes what it
/// takes before letting go). If not, the caller wakes the link thread. A failed
/// write takes the link down, as the link thread's would, and wakes that thread to
/// close the connection.
pub(crate) fn send_from_commit(shared: &Shared, mut core: MutexGuard<'_, Core>) -> bool {
    if !shared.writer_idle.load(Ordering::Acquire) {
        return false;
    }
    let Some(mut outbox) = shared.outbox.try_lock() else {
        return false;
    };
    if outbox.stream.is_none() {
        return false;
    }
    let Some(messages) = core.link.take_messages() else {
        return false;
    };
    outbox.set_io_timeout(core.link.io_timeout());
    // What else the link produced (an event, say) is not left for a tick.
    let urgent = core.link.has_urgent_ready();
    drop(core);
    let failed = outbox.send(shared, &messages);
    if let Some(reason) = failed {
        outbox.closed();
        // The outbox before the core, as the link thread takes them.
        let mut core = shared.core.lock();
        let now = shared.now();
        core.link.disconnected(now, &reason);
        drop(core);
        drop(outbox);
        shared.wake_writer();
    } else if urgent {
        drop(outbox);
        shared.wake_writer();
    }
    true
}
