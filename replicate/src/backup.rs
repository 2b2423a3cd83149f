//! The peer as a TCP server: accepts one primary at a time and drives an
//! [`Applier`] with what it sends. Used by `kirikae peer` and embeddable.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kirikae_engine::{Database, SessionInfo};
use parking_lot::Mutex;

use crate::access_log::{AccessLog, AccessLogOptions, Reopened};
use crate::applier::{Applier, ApplierStats};
use crate::backup_session::{BackupSession, SessionConfig};
use crate::error::{ReplicateError, Result};
use crate::link::Micros;
use crate::seq::Seq;
use crate::wire::{encode, FrameDecoder, MAX_FRAME_BYTES};

/// Settings of a peer server.
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
        }
    }
}

/// What a running peer reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackupStatus {
    /// Whether a primary is connected.
    pub connected: bool,
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
    {
        let mut s = status.lock();
        s.last_seq = applier.last_seq();
        s.logged_seq = applier.logged_seq();
        s.held = applier.held();
        s.stats = applier.stats().clone();
    }
    let _ = ready.send(Ok(()));
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, from)) => {
                status.lock().connected = true;
                let ended = connection(&mut applier, stream, &config, &stop, &status);
                let reason = match ended {
                    Ok(()) => "primary closed the connection".to_owned(),
                    Err(e) => e.to_string(),
                };
                tracing::info!("primary {from} disconnected: {reason}");
                let mut s = status.lock();
                s.connected = false;
                s.last_disconnect = Some(reason);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => {
                return Err(ReplicateError::Network {
                    what: "accept on",
                    addr: listener
                        .local_addr()
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                    source: e,
                })
            }
        }
    }
    Ok(())
}

/// Serves one primary until it goes away, breaks the protocol, or the peer stops.
fn connection(
    applier: &mut Applier<'_>,
    mut stream: TcpStream,
    config: &BackupConfig,
    stop: &AtomicBool,
    status: &Mutex<BackupStatus>,
) -> Result<()> {
    let addr = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let network = |what, source| ReplicateError::Network {
        what,
        addr: addr.clone(),
        source,
    };
    stream
        .set_nonblocking(false)
        .map_err(|e| network("serve", e))?;
    stream.set_nodelay(true).map_err(|e| network("serve", e))?;
    let tick = config.heartbeat_every.min(Duration::from_millis(20));
    stream
        .set_read_timeout(Some(tick))
        .map_err(|e| network("serve", e))?;
    let mut decoder = FrameDecoder::new(config.frame_bytes_max);
    let mut buf = vec![0u8; 256 << 10];
    let started = Instant::now();
    let now = || started.elapsed().as_micros() as Micros;
    let mut session = BackupSession::new(
        SessionConfig {
            node: config.node.clone(),
            heartbeat_every: config.heartbeat_every,
            primary_timeout: config.primary_timeout,
        },
        now(),
    );
    let mut out = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => 0,
            Err(e) => return Err(network("read from", e)),
        };
        let mut replies = Vec::new();
        if n > 0 {
            decoder.push(&buf[..n]);
            let mut messages = Vec::new();
            while let Some(message) = decoder.next_message()? {
                messages.push(message);
            }
            session.receive(now(), messages, applier, &mut replies)?;
        }
        session.tick(now(), applier, &mut replies)?;
        if !replies.is_empty() {
            // Status first: once the primary reads an acknowledgement, whoever asks
            // this peer must see at least what was acknowledged.
            {
                let mut s = status.lock();
                s.last_seq = applier.last_seq();
                s.logged_seq = applier.logged_seq();
                s.held = applier.held();
                s.stats = applier.stats().clone();
            }
            out.clear();
            for r in &replies {
                out.extend_from_slice(&encode(r, config.frame_bytes_max)?);
            }
            stream.write_all(&out).map_err(|e| network("write to", e))?;
            session.sent(now());
        }
    }
    Ok(())
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
