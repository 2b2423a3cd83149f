//! The backup's applier thread: serves one authenticated primary at a time (a newer
//! authenticated connection replaces the current one), answers operator commands,
//! and promotes this node when the operator or the [`Arbiter`] says so.

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use kirikae_engine::{Database, SessionInfo};
use parking_lot::Mutex;

use crate::access_log::{AccessLog, Reopened};
use crate::applier::{Applier, Promotion, PARALLEL_RUN_TXNS_MIN};
use crate::arbitration::{take_over, Arbitration, Takeover};
use crate::backup::{BackupConfig, BackupEvent, BackupStatus, PromotedBy};
use crate::backup_accept::{accept_loop, Handshaken};
use crate::backup_reader::{Arrival, StreamReader};
use crate::backup_session::{BackupSession, SessionConfig};
use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result};
use crate::leadership::Leadership;
use crate::link::Micros;
use crate::wire::{encode_into, FrameDecoder};
use crate::write_fence::{Refusal, WriteFence};

/// An operator's request to the applier thread.
pub(crate) enum Command {
    /// Promote now; the answer goes back on the channel.
    Promote(Sender<Result<Promotion>>),
}

/// What the applier thread is given.
pub(crate) struct Serve {
    /// Where an etcd takeover leaves the leader key for the embedder.
    pub leadership: Arc<Mutex<Option<Leadership>>>,
    pub database: Database,
    pub listener: TcpListener,
    pub log: Option<(AccessLog, Reopened)>,
    pub config: BackupConfig,
    pub stop: Arc<AtomicBool>,
    pub status: Arc<Mutex<BackupStatus>>,
    pub commands: Receiver<Command>,
    pub events: Sender<BackupEvent>,
    pub ready: Sender<Result<()>>,
}

/// Why a connection ended, as the applier thread sees it.
enum Ended {
    /// Closed, broken or refused: the reason.
    Closed(Result<()>),
    /// The primary connected again: serve the new connection.
    Replaced(Box<Handshaken>),
    /// Promote now (an operator command or the arbiter).
    Promote(PromotedBy, Option<Sender<Result<Promotion>>>),
}

/// The clock every part of the applier thread reads.
struct Clock(Instant);

impl Clock {
    fn now(&self) -> Micros {
        self.0.elapsed().as_micros() as Micros
    }
}

pub(crate) fn serve(s: Serve) -> Result<()> {
    let Serve {
        leadership,
        database,
        listener,
        log,
        config,
        stop,
        status,
        commands,
        events,
        ready,
    } = s;
    let session = database.session(SessionInfo::new("replication", "replication", None));
    // Only the applier writes to a backup's database.
    WriteFence::install(&database, &[session.info()], Refusal::Backup);
    // The catalog changes the log replays need the handler as much as live ones.
    let ddl = config.ddl.clone();
    let recovered = match (config.start_at, log) {
        (Some(start), log) => Applier::starting_at(&session, log, start, ddl),
        (None, Some((log, reopened))) => replay(&database, &session, log, reopened, ddl, &config),
        (None, None) => {
            let mut applier = Applier::new(&session);
            applier.set_ddl_handler(ddl);
            Ok(applier)
        }
    };
    let with_lanes = recovered.and_then(|mut applier| {
        applier.set_apply_lanes(config.apply_lanes, PARALLEL_RUN_TXNS_MIN)?;
        WriteFence::install(&database, &applier.writers(), Refusal::Backup);
        Ok(applier)
    });
    let mut applier = match with_lanes {
        Ok(a) => a,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    publish(&status, &applier);
    let (handshaken_tx, handshaken) = crossbeam::channel::bounded::<Handshaken>(4);
    // The acceptor stops with the applier thread (stopped, or promoted).
    let acceptor_stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let (config, stop, status) = (
            config.clone(),
            Arc::clone(&acceptor_stop),
            Arc::clone(&status),
        );
        std::thread::Builder::new()
            .name("kirikae-accept".into())
            .spawn(move || accept_loop(listener, config, stop, status, handshaken_tx))
    };
    let acceptor = match acceptor {
        Ok(a) => a,
        Err(e) => {
            let _ = ready.send(Err(ReplicateError::Network {
                what: "start accepting on",
                addr: String::new(),
                source: e,
            }));
            return Ok(());
        }
    };
    let _ = ready.send(Ok(()));
    let clock = Clock(Instant::now());
    let mut arbitration = match Arbitration::new(&config, clock.0) {
        Ok(a) => a,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    if config.start_at.is_some() {
        // Started at a takeover position: an epoch has just begun.
        arbitration.watch.new_epoch(clock.now());
    }
    let mut next: Option<Handshaken> = None;
    let mut promote: Option<(PromotedBy, Option<Sender<Result<Promotion>>>)> = None;
    let mut takeover: Option<Takeover> = None;
    'serving: loop {
        while !stop.load(Ordering::SeqCst) && promote.is_none() {
            let conn = match next.take() {
                Some(c) => c,
                None => {
                    crossbeam::channel::select! {
                        recv(handshaken) -> c => match c {
                            Ok(c) => c,
                            Err(_) => break,
                        },
                        recv(commands) -> c => {
                            if let Ok(Command::Promote(reply)) = c {
                                promote = Some((PromotedBy::Operator, Some(reply)));
                            }
                            continue;
                        },
                        default(Duration::from_millis(20)) => {
                            if let Some(by) = arbitration.automatic(clock.now(), &status) {
                                promote = Some((by, None));
                            }
                            continue;
                        },
                    }
                }
            };
            let from = conn.from;
            status.lock().connected = true;
            let ended = connection(
                &mut applier,
                conn,
                &config,
                &stop,
                &status,
                &handshaken,
                &commands,
                &clock,
                &mut arbitration,
            );
            let reason = match ended {
                Ended::Closed(Ok(())) => "primary closed the connection".to_owned(),
                Ended::Closed(Err(e)) => e.to_string(),
                Ended::Replaced(newer) => {
                    next = Some(*newer);
                    "the primary connected again".to_owned()
                }
                Ended::Promote(by, reply) => {
                    let reason = format!("promoting ({by})");
                    promote = Some((by, reply));
                    reason
                }
            };
            tracing::info!("primary {from} disconnected: {reason}");
            let mut s = status.lock();
            s.connected = false;
            s.last_disconnect = Some(reason);
        }
        // A promotion is due: the arbiter gives the epoch (etcd: only with the key).
        match promote.take() {
            None => break 'serving,
            Some((by, reply)) => match applier
                .promotable()
                .and_then(|()| take_over(&config, applier.epoch()))
            {
                Ok(t) => {
                    takeover = Some(t);
                    promote = Some((by, reply));
                    break 'serving;
                }
                Err(e) => {
                    tracing::warn!("no promotion ({by}): {e}");
                    {
                        let mut s = status.lock();
                        s.takeovers_refused += 1;
                        s.last_takeover_refusal = Some(e.to_string());
                    }
                    match reply {
                        Some(reply) => {
                            let _ = reply.send(Err(e));
                        }
                        // Try again a little later, serving meanwhile.
                        None => arbitration.watch.postpone(clock.now(), 100_000),
                    }
                }
            },
        }
    }
    let outcome = match (promote, takeover) {
        (Some((by, reply)), Some(t)) => {
            let epoch = t.epoch;
            *leadership.lock() = t.leadership;
            promote_now(
                &database,
                &mut applier,
                &status,
                &events,
                (by, reply),
                epoch,
            )
        }
        _ => Ok(()),
    };
    if outcome.is_ok() && applier.promoted().is_some() {
        // Promoted: the listener stays up so that the old primary, when it connects,
        // learns of the higher epoch in the (authenticated) handshake and fences
        // itself; its connection is then closed.
        while !stop.load(Ordering::SeqCst) {
            crossbeam::channel::select! {
                recv(handshaken) -> old => if let Ok(old) = old {
                    tracing::warn!(
                        "refused {} ({}): this node is the primary now",
                        old.from,
                        old.greeting.epoch
                    );
                },
                recv(commands) -> c => if let Ok(Command::Promote(reply)) = c {
                    let _ = reply.send(Err(ReplicateError::Protocol {
                        reason: format!("already promoted at {}", applier.epoch()),
                    }));
                },
                default(Duration::from_millis(20)) => {},
            }
        }
    }
    acceptor_stop.store(true, Ordering::SeqCst);
    let _ = acceptor.join();
    if applier.promoted().is_none() {
        database.set_commit_gate(None);
    }
    outcome
}

/// Promotes at `epoch`, publishes the result, raises the event and answers
/// the operator (an automatic promotion's failure ends the thread with it).
/// Recovers from the access log with a lane per core for its async transactions
/// (no stream is read meanwhile: the lanes have the machine), however many the
/// backup applies with once the primary's stream comes.
fn replay<'s>(
    database: &Database,
    session: &'s kirikae_engine::Session,
    log: AccessLog,
    reopened: Reopened,
    ddl: Option<Arc<dyn crate::DdlHandler>>,
    config: &BackupConfig,
) -> Result<Applier<'s>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut applier = Applier::new(session);
    applier.set_ddl_handler(ddl);
    applier.set_apply_lanes(config.apply_lanes.max(cores), PARALLEL_RUN_TXNS_MIN)?;
    WriteFence::install(database, &applier.writers(), Refusal::Backup);
    applier.replay_log(log, reopened)?;
    Ok(applier)
}

fn promote_now(
    database: &Database,
    applier: &mut Applier<'_>,
    status: &Mutex<BackupStatus>,
    events: &Sender<BackupEvent>,
    (by, reply): (PromotedBy, Option<Sender<Result<Promotion>>>),
    epoch: Epoch,
) -> Result<()> {
    let promoted = applier.promote(epoch);
    publish(status, applier);
    if let Ok(p) = &promoted {
        // The application writes here now (through its own replicator's gate).
        database.set_commit_gate(None);
        if let Some(ddl) = applier.ddl_handler() {
            ddl.promoted(database);
        }
        tracing::warn!(
            "promoted at {} after sequence {} ({by})",
            p.epoch,
            p.last_seq
        );
        status.lock().promoted = Some(p.clone());
        // Bounded: an embedder that never reads events does not hold this up.
        let _ = events.try_send(BackupEvent::Promoted {
            promotion: p.clone(),
            by,
        });
    }
    match reply {
        Some(reply) => {
            let _ = reply.send(promoted);
            Ok(())
        }
        None => promoted.map(drop),
    }
}

/// Copies the applier's positions and counts into the status (what handshakes
/// answer with, and what [`Backup::status`](crate::Backup::status) shows).
fn publish(status: &Mutex<BackupStatus>, applier: &Applier<'_>) {
    let mut s = status.lock();
    s.last_seq = applier.last_seq();
    s.logged_seq = applier.logged_seq();
    s.log_bytes = applier.log_bytes();
    s.epoch = applier.epoch();
    s.held = applier.held();
    s.stats = applier.stats().clone();
}

/// Serves one authenticated primary until it goes away, breaks the protocol, the
/// backup stops, the primary connects again, or a promotion is due.
#[allow(clippy::too_many_arguments)]
fn connection(
    applier: &mut Applier<'_>,
    conn: Handshaken,
    config: &BackupConfig,
    stop: &AtomicBool,
    status: &Mutex<BackupStatus>,
    handshaken: &Receiver<Handshaken>,
    commands: &Receiver<Command>,
    clock: &Clock,
    arbitration: &mut Arbitration,
) -> Ended {
    let Handshaken {
        mut stream,
        early,
        greeting,
        from,
    } = conn;
    let addr = from.to_string();
    let network = |what, source| {
        Ended::Closed(Err(ReplicateError::Network {
            what,
            addr: addr.clone(),
            source,
        }))
    };
    let tick = config.heartbeat_every.min(Duration::from_millis(20));
    if let Err(e) = stream.set_read_timeout(Some(tick)) {
        return network("serve", e);
    }
    // A primary that stops reading must not hold this thread in a write.
    if let Err(e) = stream.set_write_timeout(Some(config.primary_timeout)) {
        return network("serve", e);
    }
    let mut decoder = FrameDecoder::new(config.frame_bytes_max);
    decoder.push(&early);
    let mut reader = match StreamReader::start(&stream, decoder, addr.clone()) {
        Ok(r) => r,
        Err(e) => return Ended::Closed(Err(e)),
    };
    let session_config = SessionConfig {
        node: config.node.clone(),
        heartbeat_every: config.heartbeat_every,
        primary_timeout: config.primary_timeout,
    };
    let seen = applier.epoch();
    let mut session = match BackupSession::open(session_config, clock.now(), &greeting, applier) {
        Ok(s) => s,
        Err(e) => return Ended::Closed(Err(e)),
    };
    if seen != Epoch::NONE && applier.epoch() > seen {
        // A primary of a new epoch: a takeover happened somewhere.
        arbitration.watch.new_epoch(clock.now());
    }
    arbitration.watch.heard(clock.now());
    publish(status, applier);
    let mut out = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        if let Ok(newer) = handshaken.try_recv() {
            return Ended::Replaced(Box::new(newer));
        }
        if let Ok(Command::Promote(reply)) = commands.try_recv() {
            return Ended::Promote(PromotedBy::Operator, Some(reply));
        }
        if let Some(by) = arbitration.automatic(clock.now(), status) {
            return Ended::Promote(by, None);
        }
        let mut messages = Vec::new();
        let arrival = reader.take(tick, &mut messages);
        let now = clock.now();
        // The messages that came before the connection's end are applied (and
        // answered, if the primary still listens) before it ends.
        let ended = match arrival {
            Arrival::Nothing => None,
            Arrival::Heard => {
                arbitration.watch.heard(now);
                None
            }
            Arrival::Closed => Some(Ok(())),
            Arrival::Failed(e) => Some(Err(e)),
        };
        let mut replies = Vec::new();
        let step = if messages.is_empty() {
            Ok(())
        } else {
            session.receive(now, messages, applier, &mut replies)
        }
        .and_then(|()| session.tick(now, applier, &mut replies));
        if let Err(e) = step {
            return Ended::Closed(Err(e));
        }
        if !replies.is_empty() {
            // Status first: once the primary reads an acknowledgement, whoever asks
            // this backup must see at least what was acknowledged.
            publish(status, applier);
            out.clear();
            for r in &replies {
                if let Err(e) = encode_into(r, config.frame_bytes_max, &mut out) {
                    return Ended::Closed(Err(e.into()));
                }
            }
            if let Err(e) = stream.write_all(&out) {
                return ended.map_or_else(|| network("write to", e), Ended::Closed);
            }
            session.sent(clock.now());
        }
        if let Some(ended) = ended {
            return Ended::Closed(ended);
        }
        let after = clock.now();
        arbitration.watch.busy(after.saturating_sub(now), after);
    }
    Ended::Closed(Ok(()))
}
