//! The link's shell on the primary: one thread that connects (with the link's
//! backoff), ticks the link and carries out each [`Ready`] — the difference file, the
//! socket, the waiting commits — and one reader thread per connection that feeds the
//! peer's messages to the link. All I/O happens here, never under the core's lock:
//! the lock is held only to hand inputs to the link and to take its output. (A sync
//! commit may write its own frame while the link thread sleeps, through the same
//! [`Outbox`]: see `outbox.rs`.)

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kirikae_engine::Database;

use crate::copier::{Copier, Step};
use crate::difference_file::DifferenceFile;
use crate::error::{ReplicateError, Result};
use crate::handshake::PrimaryHandshake;
use crate::link::Ready;
use crate::outbox::Outbox;
use crate::shared::Shared;
use crate::wire::{encode, FrameDecoder, Message};

/// The link thread (see the module docs). Owns the difference file, and copies
/// `database` when the link resyncs the peer.
pub(crate) fn link_thread(shared: Arc<Shared>, mut diff: DifferenceFile, database: Database) {
    let mut connection = Connection::default();
    let mut copier: Option<Copier> = None;
    let mut spare = Vec::new();
    let tick = Duration::from_millis(1);
    while !shared.stop.load(Ordering::SeqCst) {
        let now = shared.now();
        if connection.stream.is_none() && shared.core.lock().link.reconnect_due(now) {
            match connect(&shared) {
                Ok((stream, reader)) => {
                    connection.stream = Some(stream);
                    connection.reader = Some(reader);
                }
                Err(e) => {
                    tracing::debug!("connecting to the peer: {e}");
                    shared.outbox.lock().closed();
                    shared.core.lock().link.connect_failed(shared.now());
                }
            }
        }
        // The outbox before the core: what is taken from the link is written before
        // anyone takes more (see `outbox.rs`).
        let mut outbox = shared.outbox.lock();
        let (mut ready, wakeups) = {
            let mut core = shared.core.lock();
            core.link.recycle(std::mem::take(&mut spare));
            core.link.tick(shared.now());
            outbox.set_io_timeout(core.link.io_timeout());
            shared.take_ready(&mut core)
        };
        wakeups.deliver();
        if let Some(order) = ready.copy.take() {
            copier = Some(Copier::new(order));
        }
        let mut more;
        (more, spare) = carry_out(&shared, ready, &mut diff, &mut connection, &mut outbox);
        drop(outbox);
        if let Some(c) = copier.as_mut() {
            match c.step(&shared, &database) {
                Step::Busy => more = true,
                Step::Idle => {}
                Step::Done => copier = None,
            }
        }
        if !more {
            let mut core = shared.core.lock();
            if core.link.has_ready() {
                continue;
            }
            shared.writer_idle.store(true, Ordering::Release);
            shared.wake.wait_for(&mut core, tick);
            shared.writer_idle.store(false, Ordering::Release);
        }
    }
    // What going down produced (the window moved to the difference file, outcomes)
    // is carried out before the thread ends: nothing in flight is lost.
    let mut outbox = shared.outbox.lock();
    connection.close(&shared, &mut outbox);
    loop {
        let (ready, wakeups) = {
            let mut core = shared.core.lock();
            shared.take_ready(&mut core)
        };
        wakeups.deliver();
        if ready.is_empty() {
            break;
        }
        carry_out(&shared, ready, &mut diff, &mut connection, &mut outbox);
    }
}

/// The current connection to the peer, if any (its writing end is also in the
/// [`Outbox`]).
#[derive(Default)]
struct Connection {
    stream: Option<TcpStream>,
    reader: Option<JoinHandle<()>>,
}

impl Connection {
    /// Ends the connection: the link is told, the reader thread stops.
    fn close(&mut self, shared: &Shared, outbox: &mut Outbox) {
        outbox.closed();
        {
            let mut core = shared.core.lock();
            core.generation += 1;
            let now = shared.now();
            core.link.disconnected(now, "connection closed");
        }
        if let Some(s) = self.stream.take() {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Carries out `ready` (see [`Ready`] for the order) and reports back to the link.
/// Returns whether the link asked for more at once (the next catch-up batch), and
/// the emptied message list (for [`Link::recycle`](crate::Link::recycle)).
fn carry_out(
    shared: &Shared,
    mut ready: Ready,
    diff: &mut DifferenceFile,
    connection: &mut Connection,
    outbox: &mut Outbox,
) -> (bool, Vec<Message>) {
    let report = diff.persist(&ready);
    let replay = ready.read.map(|request| (request, diff.read(request)));
    let failed = outbox.send(shared, &ready.messages);
    let more = if report.is_some() || replay.is_some() || failed.is_some() {
        let mut core = shared.core.lock();
        let now = shared.now();
        if let Some(report) = report {
            core.link.persisted(now, report);
        }
        if let Some((request, batch)) = replay {
            core.link.replayed(now, request.catch_up, batch);
        }
        if let Some(reason) = &failed {
            core.link.disconnected(now, reason);
        }
        core.link.has_ready()
    } else {
        false
    };
    if failed.is_some() || ready.close {
        connection.close(shared, outbox);
    }
    let mut messages = std::mem::take(&mut ready.messages);
    messages.clear();
    (more, messages)
}

/// Opens a connection, exchanges handshakes, tells the link, starts the reader.
fn connect(shared: &Arc<Shared>) -> Result<(TcpStream, JoinHandle<()>)> {
    let addr = shared.peer;
    let network = |what, source| ReplicateError::Network {
        what,
        addr: addr.to_string(),
        source,
    };
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| network("connect to", e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| network("connect to", e))?;
    let (hello, max, peer_timeout) = {
        let core = shared.core.lock();
        let config = core.link.config();
        (
            core.link.hello(),
            config.frame_bytes_max,
            config.peer_timeout,
        )
    };
    // A peer that accepts and then stops reading (hung, or paused with SIGSTOP) must
    // not block this thread in a write: it also ticks the link, and a frozen link
    // never notices the missing heartbeats, so sync commits would wait forever. A
    // write that cannot finish within the peer timeout ends the connection instead.
    stream
        .set_write_timeout(Some(peer_timeout.max(Duration::from_millis(1))))
        .map_err(|e| network("connect to", e))?;
    let shake = PrimaryHandshake::new(shared.key.clone(), hello)?;
    stream
        .write_all(&encode(shake.hello(), max)?)
        .map_err(|e| network("greet", e))?;
    // A stopped peer's kernel still accepts connections; its answer never comes. The
    // handshake waits no longer than the peer timeout (this thread is not ticking
    // the link meanwhile).
    stream
        .set_read_timeout(Some(peer_timeout.max(Duration::from_millis(1))))
        .map_err(|e| network("greet", e))?;
    let mut decoder = FrameDecoder::new(max);
    let mut buf = vec![0u8; 64 << 10];
    let deadline = std::time::Instant::now() + peer_timeout;
    let mut answer = Vec::with_capacity(2);
    while answer.len() < 2 {
        if let Some(m) = decoder.next_message()? {
            answer.push(m);
            continue;
        }
        if std::time::Instant::now() >= deadline {
            return Err(ReplicateError::Unauthenticated {
                reason: format!("{addr} did not finish the handshake in time"),
            });
        }
        let n = stream.read(&mut buf).map_err(|e| network("greet", e))?;
        if n == 0 {
            return Err(ReplicateError::Protocol {
                reason: "the peer closed the connection during the handshake".into(),
            });
        }
        decoder.push(&buf[..n]);
    }
    let (greeting, proof) = shake.answer(&answer[0], &answer[1])?;
    stream
        .write_all(&encode(&proof, max)?)
        .map_err(|e| network("greet", e))?;
    stream
        .set_read_timeout(None)
        .map_err(|e| network("connect to", e))?;
    // Writable by whoever holds the outbox once the link knows it is connected.
    let write_half = stream.try_clone().map_err(|e| network("connect to", e))?;
    shared.outbox.lock().connected(write_half);
    let generation = {
        let mut core = shared.core.lock();
        core.generation += 1;
        let now = shared.now();
        core.link.connected(now, greeting.last_seq, greeting.epoch);
        core.generation
    };
    shared.wake_writer();
    let read_half = stream.try_clone().map_err(|e| network("connect to", e))?;
    let reader = shared
        .spawn("kirikae-link-reader", move |shared| {
            read_loop(shared, read_half, decoder, generation)
        })
        .map_err(|e| network("connect to", e))?;
    Ok((stream, reader))
}

/// Feeds the peer's messages to the link until the connection ends.
fn read_loop(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    mut decoder: FrameDecoder,
    generation: u64,
) {
    let mut buf = vec![0u8; 256 << 10];
    let reason = loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break "the peer closed the connection".to_owned(),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => break format!("read from the peer: {e}"),
        };
        decoder.push(&buf[..n]);
        let mut core = shared.core.lock();
        if core.generation != generation {
            return;
        }
        let now = shared.now();
        loop {
            match decoder.next_message() {
                Ok(Some(m)) => core.link.receive(now, m),
                Ok(None) => break,
                Err(e) => {
                    core.link
                        .disconnected(now, &format!("bad frame from the peer: {e}"));
                    drop(core);
                    shared.wake_writer();
                    return;
                }
            }
        }
        // Outcomes go to the waiting commits now; the rest (commit decisions to send)
        // stays for the link thread, so the bound on unsent output holds. The thread
        // is woken only for what cannot wait for its next turn: a decision rides on
        // the next submission's write (see `Link::has_urgent_ready`).
        let wakeups = shared.deliver_notices(&mut core);
        let urgent = core.link.has_urgent_ready();
        drop(core);
        wakeups.deliver();
        if urgent {
            shared.wake_writer();
        }
    };
    let mut core = shared.core.lock();
    if core.generation == generation {
        let now = shared.now();
        core.link.disconnected(now, &reason);
    }
    drop(core);
    shared.wake_writer();
}
