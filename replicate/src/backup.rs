//! The backup as a TCP server: connections are authenticated by their own threads
//! (`backup_accept.rs`); one authenticated primary at a time drives the [`Applier`]
//! (a newer authenticated connection replaces the current one). Used by
//! `kirikae backup` and embeddable.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kirikae_engine::{Database, SessionInfo};
use parking_lot::Mutex;

use crate::access_log::{AccessLog, AccessLogOptions, Reopened};
use crate::applier::{Applier, ApplierStats};
use crate::backup_accept::{accept_loop, Handshaken};
use crate::backup_session::{BackupSession, SessionConfig};
use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result};
use crate::handshake::PeerKey;
use crate::link::Micros;
use crate::seq::Seq;
use crate::wire::{encode, FrameDecoder, MAX_FRAME_BYTES};
use crossbeam::channel::Receiver;

/// Settings of a backup server.
#[derive(Clone, Debug)]
pub struct BackupConfig {
    /// This node's name, sent in the handshake.
    pub node: String,
    /// Where the backup keeps its access log and checkpoints, so a restarted process
    /// recovers its tables (`None`: memory only; a restart loses everything).
    pub log_dir: Option<PathBuf>,
    /// The access log's segments (and whether it is fsynced before each
    /// acknowledgement), checkpoints and retention.
    pub access_log: AccessLogOptions,
    /// A heartbeat goes out when nothing else has for this long.
    pub heartbeat_every: Duration,
    /// A primary silent this long is dropped.
    pub primary_timeout: Duration,
    /// Largest frame accepted or sent.
    pub frame_bytes_max: usize,
    /// The pair's pre-shared key: only a primary that proves it holds the same key
    /// is served (`None`: no authentication; anyone who reaches the port is trusted).
    pub key: Option<PeerKey>,
    /// A connection must finish its handshake within this, however it trickles.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at most; connections beyond are closed at once.
    pub handshakes_max: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            node: "peer".into(),
            log_dir: None,
            access_log: AccessLogOptions::default(),
            heartbeat_every: Duration::from_millis(100),
            primary_timeout: Duration::from_secs(2),
            frame_bytes_max: MAX_FRAME_BYTES,
            key: None,
            handshake_timeout: Duration::from_secs(2),
            handshakes_max: 16,
        }
    }
}

/// What a running backup reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackupStatus {
    /// Whether an authenticated primary is connected.
    pub connected: bool,
    /// The highest primary epoch seen.
    pub epoch: Epoch,
    /// Highest sequence up to which everything is applied (resolved).
    pub last_seq: Seq,
    /// Highest sequence up to which everything is in the access log.
    pub logged_seq: Seq,
    /// Sync transactions held open (in doubt until their decision).
    pub held: usize,
    /// Counts.
    pub stats: ApplierStats,
    /// Why the last connection ended.
    pub last_disconnect: Option<String>,
    /// Connections refused before or during their handshake (wrong key, forged or
    /// missing proof, too slow, too many at once).
    pub handshakes_refused: u64,
    /// The last refusal: the address and why.
    pub last_refusal: Option<String>,
}

/// A running backup server.
pub struct Backup {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<BackupStatus>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Backup {
    /// Binds `listen` and serves primaries, applying to `database` (which must hold
    /// the replicated tables, e.g. opened from the primary's snapshot). With a log
    /// directory, first recovers what an earlier run applied.
    pub fn start(
        database: Database,
        listen: impl ToSocketAddrs,
        config: BackupConfig,
    ) -> Result<Backup> {
        let shown = listen
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .map(|a| a.to_string())
            .unwrap_or_default();
        let network = |what, source| ReplicateError::Network {
            what,
            addr: shown.clone(),
            source,
        };
        let listener = TcpListener::bind(listen).map_err(|e| network("listen on", e))?;
        let addr = listener.local_addr().map_err(|e| network("listen on", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| network("listen on", e))?;
        let log = match &config.log_dir {
            Some(dir) => Some(AccessLog::open(dir, config.access_log.clone(), &database)?),
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(BackupStatus::default()));
        // Recover before returning, so a caller sees a bad log as an error at once.
        let (ready_tx, ready_rx) = crossbeam::channel::bounded(1);
        let thread = {
            let stop = Arc::clone(&stop);
            let status = Arc::clone(&status);
            std::thread::Builder::new()
                .name("kirikae-peer".into())
                .spawn(move || serve(database, listener, log, config, stop, status, ready_tx))
                .map_err(|e| network("start serving", e))?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Backup {
                addr,
                stop,
                status,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ended(thread.join())
                .err()
                .unwrap_or(ReplicateError::Shutdown)),
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Current status.
    pub fn status(&self) -> BackupStatus {
        self.status.lock().clone()
    }

    /// Whether the server thread has ended (an error, or stopped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops serving (held transactions roll back) and returns how it ended.
    pub fn stop(mut self) -> Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => ended(t.join()),
            None => Ok(()),
        }
    }
}

/// How the server thread ended: its result, or its panic as
/// [`ReplicateError::Poisoned`].
fn ended(joined: std::thread::Result<Result<()>>) -> Result<()> {
    joined.unwrap_or_else(|panic| {
        Err(ReplicateError::Poisoned {
            detail: crate::error::panic_detail("kirikae-peer", &*panic),
        })
    })
}

impl Drop for Backup {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

fn serve(
    database: Database,
    listener: TcpListener,
    log: Option<(AccessLog, Reopened)>,
    config: BackupConfig,
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<BackupStatus>>,
    ready: crossbeam::channel::Sender<Result<()>>,
) -> Result<()> {
    let session = database.session(SessionInfo::new("replication", "replication", None));
    let recovered = match log {
        Some((log, reopened)) => Applier::recover(&session, log, reopened),
        None => Ok(Applier::new(&session)),
    };
    let mut applier = match recovered {
        Ok(a) => a,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    publish(&status, &applier);
    let (handshaken_tx, handshaken) = crossbeam::channel::bounded::<Handshaken>(4);
    let acceptor = {
        let (config, stop, status) = (config.clone(), Arc::clone(&stop), Arc::clone(&status));
        std::thread::Builder::new()
            .name("kirikae-accept".into())
            .spawn(move || accept_loop(listener, config, stop, status, handshaken_tx))
            .map_err(|e| ReplicateError::Network {
                what: "start accepting on",
                addr: String::new(),
                source: e,
            })
    };
    let acceptor = match acceptor {
        Ok(a) => a,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let _ = ready.send(Ok(()));
    let mut next: Option<Handshaken> = None;
    while !stop.load(Ordering::SeqCst) {
        let conn = match next.take() {
            Some(c) => c,
            None => match handshaken.recv_timeout(Duration::from_millis(20)) {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        let from = conn.from;
        status.lock().connected = true;
        let (ended, newer) = connection(&mut applier, conn, &config, &stop, &status, &handshaken);
        let reason = match ended {
            Ok(()) if newer.is_some() => "the primary connected again".to_owned(),
            Ok(()) => "primary closed the connection".to_owned(),
            Err(e) => e.to_string(),
        };
        tracing::info!("primary {from} disconnected: {reason}");
        let mut s = status.lock();
        s.connected = false;
        s.last_disconnect = Some(reason);
        next = newer;
    }
    let _ = acceptor.join();
    Ok(())
}

/// Copies the applier's positions and counts into the status (what handshakes
/// answer with, and what [`Backup::status`] shows).
fn publish(status: &Mutex<BackupStatus>, applier: &Applier<'_>) {
    let mut s = status.lock();
    s.last_seq = applier.last_seq();
    s.logged_seq = applier.logged_seq();
    s.epoch = applier.epoch();
    s.held = applier.held();
    s.stats = applier.stats().clone();
}

/// Serves one authenticated primary until it goes away, breaks the protocol, the
/// backup stops, or the primary connects again (returned: it replaces this one).
fn connection(
    applier: &mut Applier<'_>,
    conn: Handshaken,
    config: &BackupConfig,
    stop: &AtomicBool,
    status: &Mutex<BackupStatus>,
    handshaken: &Receiver<Handshaken>,
) -> (Result<()>, Option<Handshaken>) {
    let Handshaken {
        mut stream,
        early,
        greeting,
        from,
    } = conn;
    let addr = from.to_string();
    let network = |what, source| ReplicateError::Network {
        what,
        addr: addr.clone(),
        source,
    };
    let tick = config.heartbeat_every.min(Duration::from_millis(20));
    if let Err(e) = stream.set_read_timeout(Some(tick)) {
        return (Err(network("serve", e)), None);
    }
    // A primary that stops reading must not hold this thread in a write.
    if let Err(e) = stream.set_write_timeout(Some(config.primary_timeout)) {
        return (Err(network("serve", e)), None);
    }
    let mut decoder = FrameDecoder::new(config.frame_bytes_max);
    decoder.push(&early);
    let mut buf = vec![0u8; 256 << 10];
    let started = Instant::now();
    let now = || started.elapsed().as_micros() as Micros;
    let session_config = SessionConfig {
        node: config.node.clone(),
        heartbeat_every: config.heartbeat_every,
        primary_timeout: config.primary_timeout,
    };
    let mut session = match BackupSession::open(session_config, now(), &greeting, applier) {
        Ok(s) => s,
        Err(e) => return (Err(e), None),
    };
    publish(status, applier);
    let mut out = Vec::new();
    let mut pending = !early.is_empty();
    while !stop.load(Ordering::SeqCst) {
        if let Ok(newer) = handshaken.try_recv() {
            return (Ok(()), Some(newer));
        }
        let n = if pending {
            pending = false;
            0
        } else {
            match stream.read(&mut buf) {
                Ok(0) => return (Ok(()), None),
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => 0,
                Err(e) => return (Err(network("read from", e)), None),
            }
        };
        let mut replies = Vec::new();
        decoder.push(&buf[..n]);
        let mut messages = Vec::new();
        loop {
            match decoder.next_message() {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => break,
                Err(e) => return (Err(e.into()), None),
            }
        }
        let step = if messages.is_empty() {
            Ok(())
        } else {
            session.receive(now(), messages, applier, &mut replies)
        }
        .and_then(|()| session.tick(now(), applier, &mut replies));
        if let Err(e) = step {
            return (Err(e), None);
        }
        if !replies.is_empty() {
            // Status first: once the primary reads an acknowledgement, whoever asks
            // this backup must see at least what was acknowledged.
            publish(status, applier);
            out.clear();
            for r in &replies {
                match encode(r, config.frame_bytes_max) {
                    Ok(frame) => out.extend_from_slice(&frame),
                    Err(e) => return (Err(e.into()), None),
                }
            }
            if let Err(e) = stream.write_all(&out) {
                return (Err(network("write to", e)), None);
            }
            session.sent(now());
        }
    }
    (Ok(()), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_server_thread_ends_as_poisoned_with_its_message() {
        let joined = std::thread::spawn(|| -> Result<()> { panic!("injected") }).join();
        match ended(joined) {
            Err(ReplicateError::Poisoned { detail }) => {
                assert!(
                    detail.contains("kirikae-peer panicked: injected"),
                    "{detail}"
                );
            }
            other => panic!("expected Poisoned, got {other:?}"),
        }
        assert!(ended(Ok(Ok(()))).is_ok());
    }
}
