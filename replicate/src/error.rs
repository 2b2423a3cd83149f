//! The replication crate's error type.

/// What replication refuses, naming where.
#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    /// A rule file that does not parse or does not make sense, with the position of
    /// the offending text (1-based line and column).
    #[error("rules {source_name}:{line}:{column}: {message}")]
    Rules {
        /// The file name (or `<memory>`).
        source_name: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a record log (the primary's difference file or the peer's
    /// log; the path tells which) failed.
    #[error("record log {path}: {source}")]
    LogIo {
        /// The segment or directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A record-log segment is damaged before its end (not a torn tail).
    #[error("record log {path}: damaged record at byte {offset}: {reason}")]
    LogCorrupt {
        /// The segment.
        path: String,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An append whose position (a difference file's sequence) does not follow the
    /// last one.
    #[error("record log: position {position} appended after {last}; positions must increase")]
    LogSequence {
        /// The position appended.
        position: u64,
        /// The last position in the log.
        last: u64,
    },
    /// This primary was replaced by one promoted at a higher epoch: it accepts no
    /// writes (seed 000 §5.1: epochs fence the old primary).
    #[error("this primary ({epoch}) was replaced by the primary of {by}: it accepts no writes")]
    Fenced {
        /// This primary's epoch.
        epoch: crate::Epoch,
        /// The new primary's.
        by: crate::Epoch,
    },
    /// This database is a backup's: only the primary's replication writes to it.
    #[error("this node is a backup: commit on the primary")]
    NotPrimary,
    /// A planned switchover is handing this primary's work to its backup: commit on
    /// the new primary.
    #[error("this primary is handing over to its backup after sequence {last_seq}: commit on the new primary")]
    HandedOver {
        /// The last sequence of this primary.
        last_seq: crate::Seq,
    },
    /// A switchover's hand-over did not finish in time; the primary accepts commits
    /// again.
    #[error("hand-over stalled: {acked} of {last_seq} acknowledged after {waited_ms} ms")]
    HandOverStalled {
        /// The last sequence submitted.
        last_seq: crate::Seq,
        /// The last the backup acknowledged.
        acked: crate::Seq,
        /// How long it waited.
        waited_ms: u64,
    },
    /// This primary's leader lease is not known to be alive: it accepts no writes
    /// (until a renewal succeeds, unless the lease is lost for good).
    #[error("no writes at {epoch}: {reason}")]
    LeaseLost {
        /// This primary's epoch.
        epoch: crate::Epoch,
        /// Why.
        reason: String,
    },
    /// Another node holds the pair's leader key: no promotion.
    #[error("the leader key {key} is held by another node: not promoting")]
    LeaderKeyHeld {
        /// The key.
        key: String,
    },
    /// etcd could not be reached or refused a call.
    #[error("etcd {addr}: {reason}")]
    Etcd {
        /// The endpoint.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// A connection's handshake failed: a wrong key, a forged or missing proof.
    #[error("handshake refused: {reason}")]
    Unauthenticated {
        /// What did not check out.
        reason: String,
    },
    /// A pre-shared key could not be used.
    #[error("key {source_name}: {reason}")]
    BadKey {
        /// The key's file (or "key").
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// A frame could not be built or a peer's byte stream is invalid.
    #[error("wire: {0}")]
    Wire(#[from] WireError),
    /// The peer's engine refused an operation, or the primary's could not be read.
    #[error("engine: {0}")]
    Engine(#[from] kirikae_engine::EngineError),
    /// A network operation failed (naming the address and what was tried).
    #[error("{what} {addr}: {source}")]
    Network {
        /// What was tried (connect, listen, ...).
        what: &'static str,
        /// The address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A sync transaction was refused by the peer or answered differently there; it
    /// was rolled back on both sides.
    #[error("sync transaction {seq} rolled back on both sides: {reason}")]
    RolledBackOnBoth {
        /// Its sequence.
        seq: crate::Seq,
        /// The peer's reason or what differed.
        reason: String,
    },
    /// A sync transaction got no answer in time and its rule says `fail`: it was
    /// rolled back here, the backup may hold it prepared and is told to abort it when
    /// it reconnects. If the backup takes over before that, its promotion commits it
    /// (its digests match: seed 000 §5.2, Table 2 case 5): the application must treat
    /// the outcome as unknown, not as a rollback.
    #[error("sync transaction {seq}: outcome unknown at the backup ({reason}); rolled back here, the backup aborts it at reconnect, or commits it if it takes over first")]
    OutcomeUnknown {
        /// Its sequence.
        seq: crate::Seq,
        /// Why there was no answer.
        reason: String,
    },
    /// A sync transaction's rule says `fail` and the peer is down; nothing was sent.
    #[error("sync transaction refused: {reason} and its rule says fail")]
    PeerDown {
        /// Why the peer is down.
        reason: String,
    },
    /// The other side broke the protocol (a gap in sequences, a stale epoch, a
    /// message in the wrong direction); the connection is closed.
    #[error("protocol: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// A catalog change reached a backup that has nothing to apply it with.
    #[error("catalog change {event} of table `{table}`: this backup cannot apply it")]
    DdlUnsupported {
        /// The table.
        table: String,
        /// Which change (added, dropped, switched, announced).
        event: String,
    },
    /// The backup's DDL handler could not apply a catalog change.
    #[error("catalog change {event} of table `{table}`: {reason}")]
    DdlFailed {
        /// The table.
        table: String,
        /// Which change.
        event: String,
        /// The handler's reason.
        reason: String,
    },
    /// The replicator was shut down.
    #[error("replication is shut down")]
    Shutdown,
    /// A replication thread panicked: commits fail at once instead of waiting for a
    /// link nobody drives. Restart the replicator.
    #[error("replication stopped: {detail}")]
    Poisoned {
        /// Which thread, and its panic message.
        detail: String,
    },
    /// A commit waited this long for the last stretch of a catch-up to drain (commits
    /// pause then) and gave up.
    #[error("commit waited {waited_ms} ms for the peer's catch-up to finish")]
    CatchUpStalled {
        /// How long it waited.
        waited_ms: u64,
    },
    /// Reading a rule file failed.
    #[error("rules {path}: {source}")]
    RulesIo {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A byte stream from a peer that is not a valid frame sequence. Offsets count bytes
/// from the start of the connection; the connection must be closed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A frame header announces more than the maximum frame size.
    #[error("frame at byte {offset}: {len} bytes exceeds the {max}-byte maximum")]
    TooLarge {
        /// Stream offset of the frame.
        offset: u64,
        /// Announced payload length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The payload does not match its CRC-32.
    #[error("frame at byte {offset}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// Stream offset of the frame.
        offset: u64,
        /// CRC in the header.
        stored: u32,
        /// CRC of the payload as received.
        computed: u32,
    },
    /// The payload passed its checksum but is not a message.
    #[error("frame at byte {offset}: undecodable message: {reason}")]
    Decode {
        /// Stream offset of the frame.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    Version {
        /// Our version.
        ours: u16,
        /// The peer's.
        theirs: u16,
    },
    /// The first frame was not a `Hello`.
    #[error("frame at byte {offset}: expected a Hello handshake, got {got}")]
    NoHandshake {
        /// Stream offset of the frame.
        offset: u64,
        /// What came instead.
        got: String,
    },
}

/// The replication crate's result type.
pub type Result<T, E = ReplicateError> = std::result::Result<T, E>;

/// What a thread's panic says, for [`ReplicateError::Poisoned`].
pub(crate) fn panic_detail(thread: &str, panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("thread {thread} panicked: {message}")
}
