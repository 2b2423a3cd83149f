//! The primary's replication: a [`CommitGate`] that gives every transaction its mode
//! by the rules and hands it to the [`Link`], plus the thin TCP shell that drives the
//! link (one thread that connects, ticks and writes; one reader per connection).
//!
//! Group commit falls out of the shape: committing threads only queue frames and
//! wait; the link thread writes whatever has accumulated in one `write`, and the peer
//! answers a batch with one acknowledgement, so concurrent sync commits share frames
//! and round trips.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use kirikae_engine::{CommitGate, CommitRequest, Database, GateNote, HookError, Operation};
use parking_lot::{Condvar, Mutex};

use crate::difference_file::{DifferenceFile, DifferenceOptions};
use crate::digest::response_digest;
use crate::error::{ReplicateError, Result};
use crate::link::{Event, Link, LinkConfig, LinkMetrics, Micros, Submitted, SyncOutcome};
use crate::mode::Mode;
use crate::rules::{RuleSet, TimeOfDay};
use crate::wire::{encode, FrameDecoder, Message};

/// Settings of a [`Replicator`].
#[derive(Clone, Debug)]
pub struct ReplicatorConfig {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Which mode each transaction gets.
    pub rules: RuleSet,
    /// Timing and sizing of the link.
    pub link: LinkConfig,
    /// Directory of the difference file.
    pub difference_dir: PathBuf,
    /// Difference-file settings (segment size, fsync).
    pub difference: DifferenceOptions,
}

/// How a commit was replicated: the note on every commit the replicator accepted
/// (see [`Replication::of`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replication {
    /// Its rules say skip.
    Skipped,
    /// Shipped (async or ordered) or queued in the difference file.
    Queued {
        /// Its sequence.
        seq: u64,
        /// Async or ordered.
        mode: Mode,
    },
    /// A sync commit the peer applied with the same responses.
    Replicated {
        /// Its sequence.
        seq: u64,
    },
    /// A sync commit made here only (the peer is down, the rule says continue); it
    /// waits in the difference file.
    NotReplicated {
        /// Its sequence.
        seq: u64,
        /// Why.
        reason: String,
    },
}

impl Replication {
    /// The replication note of a commit, from
    /// [`Transaction::commit_noted`](kirikae_engine::Transaction::commit_noted).
    pub fn of(note: &Option<GateNote>) -> Option<&Replication> {
        note.as_ref()?.downcast_ref::<Replication>()
    }
}

struct Core {
    link: Link<DifferenceFile>,
    outcomes: HashMap<u64, SyncOutcome>,
    /// Connection generation: a reader of an older connection must not touch the link.
    generation: u64,
    /// The link's state when last drained: a change wakes [`Replicator::wait_duplex`].
    seen_state: crate::LinkState,
}

struct Shared {
    core: Mutex<Core>,
    /// Sync outcomes settled, a catch-up pause ended, or the link changed state.
    settled: Condvar,
    /// Output is waiting for the link thread.
    wake: Condvar,
    writer_idle: AtomicBool,
    rules: RuleSet,
    epoch: Instant,
    events: Sender<Event>,
    stop: AtomicBool,
    peer: SocketAddr,
}

impl Shared {
    fn now(&self) -> Micros {
        self.epoch.elapsed().as_micros() as Micros
    }

    /// Moves what the link produced (events, outcomes) to where it goes.
    fn drain(&self, core: &mut Core) {
        for e in core.link.take_events() {
            let _ = self.events.send(e);
        }
        let outcomes = core.link.take_outcomes();
        let state = core.link.state();
        let changed = state != core.seen_state;
        core.seen_state = state;
        if !outcomes.is_empty() || changed {
            core.outcomes.extend(outcomes);
            self.settled.notify_all();
        }
    }

    fn wake_writer(&self) {
        if self.writer_idle.swap(false, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }
}

/// Replicates a database's commits to a peer (see the module docs).
pub struct Replicator {
    shared: Arc<Shared>,
    database: Database,
    events: Receiver<Event>,
    thread: Option<JoinHandle<()>>,
}

impl Replicator {
    /// Opens the difference file, installs the commit gate on `database`, and starts
    /// connecting to the peer. From here on every commit is replicated by the rules;
    /// while the peer is not reachable, commits go to the difference file.
    pub fn start(database: &Database, config: ReplicatorConfig) -> Result<Replicator> {
        let (diff, recovery) = DifferenceFile::open(&config.difference_dir, config.difference)?;
        if recovery.torn_bytes > 0 {
            tracing::warn!(
                "difference file: cut a torn tail of {} bytes after {} records",
                recovery.torn_bytes,
                recovery.records
            );
        }
        let (tx, rx) = crossbeam::channel::unbounded();
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                link: Link::new(config.link, diff, 0),
                outcomes: HashMap::new(),
                generation: 0,
                seen_state: crate::LinkState::Degraded,
            }),
            settled: Condvar::new(),
            wake: Condvar::new(),
            writer_idle: AtomicBool::new(false),
            rules: config.rules,
            epoch: Instant::now(),
            events: tx,
            stop: AtomicBool::new(false),
            peer: config.peer,
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("kirikae-link".into())
                .spawn(move || link_thread(shared))
                .map_err(|e| ReplicateError::Network {
                    what: "start the link to",
                    addr: config.peer.to_string(),
                    source: e,
                })?
        };
        database.set_commit_gate(Some(Arc::new(Gate(Arc::clone(&shared)))));
        Ok(Replicator {
            shared,
            database: database.clone(),
            events: rx,
            thread: Some(thread),
        })
    }

    /// Events (`Diverged`, `Recovered`, `Mismatch`, `ResyncRequired`), in order.
    /// Each event goes to one receiver; clone it to share.
    pub fn events(&self) -> Receiver<Event> {
        self.events.clone()
    }

    /// The link's numbers now.
    pub fn metrics(&self) -> LinkMetrics {
        let now = self.shared.now();
        self.shared.core.lock().link.metrics(now)
    }

    /// Waits until the link is duplex (connected, handshake done, the peer in step:
    /// commits replicate in their rules' modes), or `timeout` passes; returns whether
    /// it is. Call it after [`Replicator::start`] so that the first commits do not
    /// find the peer still connecting (and go to the difference file as "peer down").
    pub fn wait_duplex(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut core = self.shared.core.lock();
        loop {
            if core.link.state() == crate::LinkState::Duplex {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Woken by the state change; the bound only caps a missed wake-up.
            self.shared
                .settled
                .wait_for(&mut core, (deadline - now).min(Duration::from_millis(50)));
        }
    }

    /// Waits until the peer has acknowledged everything committed so far, or
    /// `timeout` passes; returns whether it did.
    pub fn wait_caught_up(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let m = self.metrics();
            if m.state == Some(crate::LinkState::Duplex) && m.last_acked_seq == m.last_seq {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// Removes the gate and stops the link (what is unacknowledged stays in the
    /// difference file only if the link was degraded).
    pub fn shutdown(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.database.set_commit_gate(None);
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Gate(Arc<Shared>);

impl CommitGate for Gate {
    fn prepare(
        &self,
        request: &CommitRequest<'_>,
    ) -> std::result::Result<Option<GateNote>, HookError> {
        let shared = &self.0;
        let (decision, shipped) =
            shared
                .rules
                .decide_operations(request.operations, request.session, TimeOfDay::now());
        if decision.mode == Mode::Skip {
            return Ok(Some(Arc::new(Replication::Skipped)));
        }
        let all = shipped.iter().all(|&s| s);
        let operations: Vec<Operation> = if all {
            request.operations.to_vec()
        } else {
            request
                .operations
                .iter()
                .zip(&shipped)
                .filter(|(_, &s)| s)
                .map(|(op, _)| op.clone())
                .collect()
        };
        let responses = || {
            request
                .operations
                .iter()
                .zip(request.before)
                .zip(&shipped)
                .filter(|(_, &s)| s)
                .map(|((op, before), _)| response_digest(op.kind(), before.as_deref()))
                .collect()
        };
        let mut core = shared.core.lock();
        while core.link.paused() && !shared.stop.load(Ordering::Relaxed) {
            shared.settled.wait_for(&mut core, Duration::from_millis(1));
        }
        let now = shared.now();
        let submitted = core.link.submit(
            now,
            decision.mode,
            decision.when_peer_down,
            operations,
            responses,
        )?;
        shared.drain(&mut core);
        shared.wake_writer();
        let (seq, outcome) = match submitted {
            Submitted::Queued { seq } => {
                return Ok(Some(Arc::new(Replication::Queued {
                    seq,
                    mode: decision.mode,
                })))
            }
            Submitted::Settled { seq, outcome } => (seq, outcome),
            Submitted::Waiting { seq } => loop {
                if let Some(o) = core.outcomes.remove(&seq) {
                    break (Some(seq), o);
                }
                if shared.stop.load(Ordering::Relaxed) {
                    return Err(ReplicateError::Shutdown.into());
                }
                shared.settled.wait_for(&mut core, Duration::from_millis(5));
            },
        };
        drop(core);
        let seq_or_0 = seq.unwrap_or(0);
        match outcome {
            SyncOutcome::Replicated => {
                Ok(Some(Arc::new(Replication::Replicated { seq: seq_or_0 })))
            }
            SyncOutcome::CommittedAlone { reason } => {
                Ok(Some(Arc::new(Replication::NotReplicated {
                    seq: seq_or_0,
                    reason,
                })))
            }
            SyncOutcome::Refused { reason } => Err(ReplicateError::RolledBackOnBoth {
                seq: seq_or_0,
                reason,
            }
            .into()),
            SyncOutcome::OutcomeUnknown { reason } => Err(ReplicateError::OutcomeUnknown {
                seq: seq_or_0,
                reason,
            }
            .into()),
            SyncOutcome::PeerDown { reason } => Err(ReplicateError::PeerDown { reason }.into()),
        }
    }
}

/// Connects (with the link's backoff), ticks the link, and writes its output.
fn link_thread(shared: Arc<Shared>) {
    let mut stream: Option<TcpStream> = None;
    let mut reader: Option<JoinHandle<()>> = None;
    let tick = Duration::from_millis(1);
    while !shared.stop.load(Ordering::SeqCst) {
        let now = shared.now();
        if stream.is_none() && shared.core.lock().link.reconnect_due(now) {
            match connect(&shared) {
                Ok((s, r)) => {
                    stream = Some(s);
                    reader = Some(r);
                }
                Err(e) => {
                    tracing::debug!("connecting to the peer: {e}");
                    shared.core.lock().link.connect_failed(shared.now());
                }
            }
        }
        let (out, close) = {
            let mut core = shared.core.lock();
            let now = shared.now();
            core.link.tick(now);
            let out = core.link.take_output();
            let close = core.link.take_close();
            shared.drain(&mut core);
            (out, close)
        };
        if let Some(s) = stream.as_mut() {
            if !out.is_empty() {
                if let Err(e) = s.write_all(&out) {
                    let mut core = shared.core.lock();
                    let now = shared.now();
                    core.link
                        .disconnected(now, &format!("write to the peer: {e}"));
                    shared.drain(&mut core);
                    drop(core);
                    close_connection(&mut stream, &mut reader, &shared);
                    continue;
                }
            }
        }
        if close {
            close_connection(&mut stream, &mut reader, &shared);
        }
        if out.is_empty() {
            let mut core = shared.core.lock();
            shared.writer_idle.store(true, Ordering::Release);
            shared.wake.wait_for(&mut core, tick);
            shared.writer_idle.store(false, Ordering::Release);
        }
    }
    close_connection(&mut stream, &mut reader, &shared);
}

fn close_connection(
    stream: &mut Option<TcpStream>,
    reader: &mut Option<JoinHandle<()>>,
    shared: &Shared,
) {
    {
        let mut core = shared.core.lock();
        core.generation += 1;
        let now = shared.now();
        core.link.disconnected(now, "connection closed");
        shared.drain(&mut core);
    }
    if let Some(s) = stream.take() {
        let _ = s.shutdown(Shutdown::Both);
    }
    if let Some(r) = reader.take() {
        let _ = r.join();
    }
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
            config.max_frame_bytes,
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
    stream
        .write_all(&encode(&hello, max)?)
        .map_err(|e| network("greet", e))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| network("greet", e))?;
    let mut decoder = FrameDecoder::new(max);
    let mut buf = vec![0u8; 64 << 10];
    let peer_last = loop {
        if let Some(m) = decoder.next_message()? {
            match m {
                Message::Hello { last_seq, .. } => break last_seq,
                other => {
                    return Err(ReplicateError::Protocol {
                        reason: format!("expected the peer's Hello, got {other:?}"),
                    })
                }
            }
        }
        let n = stream.read(&mut buf).map_err(|e| network("greet", e))?;
        if n == 0 {
            return Err(ReplicateError::Protocol {
                reason: "the peer closed the connection during the handshake".into(),
            });
        }
        decoder.push(&buf[..n]);
    };
    stream
        .set_read_timeout(None)
        .map_err(|e| network("connect to", e))?;
    let generation = {
        let mut core = shared.core.lock();
        core.generation += 1;
        let now = shared.now();
        core.link.connected(now, peer_last);
        shared.drain(&mut core);
        core.generation
    };
    shared.wake_writer();
    let read_half = stream.try_clone().map_err(|e| network("connect to", e))?;
    let shared2 = Arc::clone(shared);
    let reader = std::thread::Builder::new()
        .name("kirikae-link-reader".into())
        .spawn(move || read_loop(shared2, read_half, decoder, generation))
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
                    shared.drain(&mut core);
                    drop(core);
                    shared.wake_writer();
                    return;
                }
            }
        }
        shared.drain(&mut core);
        drop(core);
        shared.wake_writer();
    };
    let mut core = shared.core.lock();
    if core.generation == generation {
        let now = shared.now();
        core.link.disconnected(now, &reason);
        shared.drain(&mut core);
    }
    drop(core);
    shared.wake_writer();
}
