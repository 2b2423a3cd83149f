//! The backup as a TCP server: connections are authenticated by their own threads
//! (`backup_accept.rs`); one authenticated primary at a time drives the [`Applier`]
//! (a newer authenticated connection replaces the current one). Used by
//! `kirikae backup` and embeddable.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kirikae_engine::Database;
use parking_lot::Mutex;

use crate::access_log::{AccessLog, AccessLogOptions};
use crate::applier::{ApplierStats, Promotion, StartAt};
use crate::arbiter::Arbiter;
use crate::backup_serve::{serve, Command, Serve};
use crate::ddl::DdlHandler;
use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result};
use crate::handshake::PeerKey;
use crate::leadership::Leadership;
use crate::seq::Seq;
use crate::wire::MAX_FRAME_BYTES;
use crossbeam::channel::{Receiver, Sender};

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
    /// Who decides that this backup takes over.
    pub arbiter: Arbiter,
    /// The database already holds the history up to here (the old primary's, at a
    /// planned switchover): see [`Applier::starting_at`](crate::Applier::starting_at).
    /// `None`: the history starts at the log (or at nothing).
    pub start_at: Option<StartAt>,
    /// Anti-flap: after a new epoch begins (this backup starts at a takeover
    /// position, or meets a primary of an epoch above any it had seen), the arbiter
    /// does not promote automatically for this long; an operator still can. A pair
    /// whose nodes keep failing then stops at one automatic failover per window
    /// instead of bouncing.
    pub auto_promotion_window: Duration,
    /// Applies the catalog changes the backup cannot apply by itself (a
    /// restructure's announcement and switch); `None` rejects them.
    pub ddl: Option<Arc<dyn DdlHandler>>,
    /// Lanes applying async transactions in parallel by key (1: in sequence, like
    /// ordered ones; at most [`APPLY_LANES_MAX`](crate::APPLY_LANES_MAX)). Default:
    /// one per core beyond the one that reads, decodes and logs the stream (which
    /// is also lane 0's), at most 4: on 2 cores, 1. Measured on 2 cores shared with
    /// the primary, 2 lanes drained an async backlog 15–20% slower than 1 (the
    /// lanes meet at every transaction whose keys span them, and a waiting lane
    /// competes with the reader for the cores).
    pub apply_lanes: usize,
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
            arbiter: Arbiter::Manual,
            start_at: None,
            auto_promotion_window: Duration::from_secs(60),
            ddl: None,
            apply_lanes: std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1).clamp(1, 4)),
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
    /// Bytes of the access log's segments (0 without a log directory).
    pub log_bytes: u64,
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
    /// Set once this node was promoted: it serves no primary any more.
    pub promoted: Option<Promotion>,
    /// Promotions the arbiter refused (etcd: the leader key was held), and why the
    /// last one was.
    pub takeovers_refused: u64,
    /// Why the last promotion was refused.
    pub last_takeover_refusal: Option<String>,
    /// Automatic promotions held back by the anti-flap window (counted once a
    /// second while held).
    pub auto_promotions_held: u64,
}

/// What a backup tells its embedding application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupEvent {
    /// This node was promoted (seed 000 §5.1 step 2): the application's cue to take
    /// over the service address and start serving writes on the database, as the
    /// new primary numbering from `promotion.last_seq + 1` at `promotion.epoch`
    /// (`LinkConfig::start_after`, `LinkConfig::epoch`). Start that replicator
    /// before the first write: the backup's write fence is lifted here, and a write
    /// made before the replicator's gate is installed is not replicated.
    Promoted {
        /// What the promotion did.
        promotion: Promotion,
        /// Who decided.
        by: PromotedBy,
    },
}

/// Who decided a promotion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::Display)]
pub enum PromotedBy {
    /// An operator command ([`Backup::promote`]).
    #[strum(to_string = "operator command")]
    Operator,
    /// [`Arbiter::Peer`] or [`Arbiter::Etcd`]: the primary was silent this long.
    #[strum(to_string = "primary silent for {silent_ms} ms")]
    Silence {
        /// How long the primary had been silent.
        silent_ms: u64,
    },
    /// [`Arbiter::Etcd`]: the leader key was vacant (its holder's lease expired, so
    /// it accepts no writes), even if that primary was still heard.
    #[strum(to_string = "the leader key was vacant")]
    LeaderKeyVacant,
}

/// How long [`Backup::promote`] waits for the applier thread to take the command
/// (it answers between two batches of a primary's messages).
const PROMOTE_WAIT: Duration = Duration::from_secs(10);

/// A running backup server.
pub struct Backup {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<BackupStatus>>,
    commands: Sender<Command>,
    events: Receiver<BackupEvent>,
    leadership: Arc<Mutex<Option<Leadership>>>,
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
        let (commands, commands_rx) = crossbeam::channel::bounded(4);
        let (events_tx, events) = crossbeam::channel::bounded(64);
        let leadership = Arc::new(Mutex::new(None));
        let serve_args = Serve {
            leadership: Arc::clone(&leadership),
            database,
            listener,
            log,
            config,
            stop: Arc::clone(&stop),
            status: Arc::clone(&status),
            commands: commands_rx,
            events: events_tx,
            ready: ready_tx,
        };
        let thread = std::thread::Builder::new()
            .name("kirikae-backup".into())
            .spawn(move || serve(serve_args))
            .map_err(|e| network("start serving", e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Backup {
                addr,
                stop,
                status,
                commands,
                events,
                leadership,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ended(thread.join())
                .err()
                .unwrap_or(ReplicateError::Shutdown)),
        }
    }

    /// Promotes this node now (the operator's command; with [`Arbiter::Manual`],
    /// give it only once the old primary is confirmed cut off). The current
    /// primary's connection is closed, logged work is applied, in-doubt transactions
    /// are decided, and the promotion is durable before this returns; the node
    /// serves no primary afterwards. [`BackupEvent::Promoted`] is raised too. With
    /// [`Arbiter::Etcd`], the promotion needs the leader key: while another node
    /// holds it, this fails with [`ReplicateError::LeaderKeyHeld`].
    pub fn promote(&self) -> Result<Promotion> {
        let (reply, answer) = crossbeam::channel::bounded(1);
        let gone = || ReplicateError::Protocol {
            reason: "the backup is not serving (stopped, or already promoted)".into(),
        };
        self.commands
            .send_timeout(Command::Promote(reply), PROMOTE_WAIT)
            .map_err(|_| gone())?;
        answer.recv_timeout(PROMOTE_WAIT).map_err(|_| gone())?
    }

    /// With [`Arbiter::Etcd`], after a promotion: the leader key this node now holds
    /// (its lease renewed until dropped). Hand it to the new primary's replicator
    /// ([`Replicator::require_leadership`](crate::Replicator::require_leadership)).
    pub fn take_leadership(&self) -> Option<Leadership> {
        self.leadership.lock().take()
    }

    /// The backup's events (bounded: the oldest are kept, newer ones dropped when
    /// nobody reads).
    pub fn events(&self) -> Receiver<BackupEvent> {
        self.events.clone()
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
