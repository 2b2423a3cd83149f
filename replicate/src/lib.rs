//! # kirikae-replicate
//!
//! Four-mode replication to a peer (seeds 000, 002, 004; SPEC §3):
//!
//! - **Rules** ([`RuleSet`]): which mode — skip, async, ordered, sync — each operation
//!   and transaction gets, matched on kind, table, user, group, source address and time
//!   of day; what a sync transaction does while the peer is down.
//! - **Wire** ([`Message`], [`FrameDecoder`]): CRC-checked, size-limited frames, a
//!   versioned handshake, sequence numbers (the primary's commit order) and epochs.
//! - **Link** ([`Link`]): the primary's side as a pure state machine (one [`Ready`] out) —
//!   duplex, degraded, catching up; heartbeats, timeouts, backoff; sync outcomes;
//!   the **difference file** (a [`RecordLog`]) while the peer is down, replayed on
//!   reconnect; events [`Event`] and [`LinkMetrics`].
//! - **Applier** ([`Applier`]): the peer's side — in-order apply, idempotent replay,
//!   sync transactions held open between `Prepare` and `Commit`/`Abort`, response
//!   digests ([`response_digest`]) compared by the primary.
//! - **Shells**: [`Replicator`] (installs itself as the database's commit gate and
//!   drives the link over TCP) and [`Backup`] (a TCP server around an applier); a
//!   [`LoopbackProxy`] adds delay and loss for tests and benchmarks.
//!
//! A transaction is replicated as a whole in its mode; operations whose own rule is
//! skip stay local. Sync commits wait for the peer's answer with their locks held;
//! a refusal or a differing answer rolls back both sides
//! ([`ReplicateError::RolledBackOnBoth`]).
//!
//! ```
//! use std::time::Duration;
//! use kirikae_engine::{Column, ColumnType, Database, Schema, SessionInfo, Key};
//! use kirikae_replicate::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let schema = Schema::new(vec![Column::new("k", ColumnType::Int), Column::new("v", ColumnType::Int)], &["k"])?;
//! let (primary, replica) = (Database::new(), Database::new());
//! primary.create_table("t", schema.clone())?;
//! replica.create_table("t", schema)?;
//!
//! let key = PeerKey::random()?; // the pair's pre-shared key, held by both ends
//! let backup_config = BackupConfig { key: Some(key.clone()), ..BackupConfig::default() };
//! let peer = Backup::start(replica.clone(), "127.0.0.1:0", backup_config)?;
//! let dir = std::env::temp_dir().join(format!("kirikae-doc-{}", std::process::id()));
//! let replicator = Replicator::start(&primary, ReplicatorConfig {
//!     peer: peer.local_addr(),
//!     rules: RuleSet::parse("default = \"sync\"", "rules.toml")?,
//!     link: LinkConfig::default(),
//!     difference_dir: dir.clone(),
//!     difference: RecordLogOptions::default(),
//!     key: Some(key),
//! })?;
//! assert!(replicator.wait_duplex(Duration::from_secs(5)), "peer in step");
//! let session = primary.session(SessionInfo::default());
//! let mut tx = session.begin();
//! tx.insert("t", vec![1.into(), 10.into()])?;
//! let note = tx.commit_noted()?;
//! assert!(matches!(Replication::of(&note), Some(Replication::Replicated { seq: Seq(1) })));
//! // When a sync commit returns, the peer has applied it and holds it prepared; the
//! // Commit sent right after makes it visible there.
//! assert!(replicator.wait_caught_up(Duration::from_secs(5)));
//! assert!(replica.session(SessionInfo::default()).get("t", &Key::from(1))?.is_some());
//! replicator.shutdown();
//! std::fs::remove_dir_all(dir)?;
//! # Ok(()) }
//! ```
//!
//! Rules in a file:
//!
//! ```
//! use kirikae_engine::{Operation, SessionInfo};
//! use kirikae_replicate::{Mode, RuleSet, TimeOfDay};
//!
//! let rules = RuleSet::parse(r#"
//!     default = "async"
//!     [[rule]]
//!     name = "billing commits"
//!     kind = "commit"
//!     table = "billing*"
//!     mode = "sync"
//! "#, "example.toml").unwrap();
//! let ops = vec![Operation::Delete { table: "billing_2026".into(), key: 1.into() }];
//! let d = rules.decide_transaction(&ops, &SessionInfo::default(), TimeOfDay::hm(9, 0));
//! assert_eq!(d.mode, Mode::Sync);
//! assert_eq!(d.rule.as_deref(), Some("billing commits"));
//!
//! let err = RuleSet::parse("[[rule]]\nmode = \"fast\"\n", "bad.toml").unwrap_err();
//! assert_eq!(err.to_string(), "rules bad.toml:2:8: unknown mode `fast` (skip, async, ordered, sync)");
//! ```
#![deny(missing_docs)]

mod access_log;
mod admin;
mod admin_nodes;
mod applier;
mod arbiter;
mod arbitration;
mod backup;
mod backup_accept;
mod backup_reader;
mod backup_serve;
mod backup_session;
mod checkpoint;
mod commit_hold;
mod commit_policy;
mod copied_rows;
mod copier;
mod ddl;
mod decision_cache;
mod difference_file;
mod digest;
mod epoch;
mod error;
pub mod etcd;
mod frame;
mod freeze_point;
pub mod handshake;
#[cfg(test)]
mod handshake_tests;
mod leadership;
mod lease;
mod link;
mod link_shell;
#[cfg(test)]
mod link_tests;
mod mode;
mod operation_encoding;
mod outbox;
mod proxy;
mod proxy_arrival;
mod proxy_queue;
mod record_log;
#[cfg(test)]
mod record_log_tests;
mod replicator;
#[cfg(test)]
mod replicator_tests;
mod rules;
#[cfg(test)]
mod rules_cache_tests;
#[cfg(test)]
mod rules_tests;
mod seq;
mod shared;
mod switchover;
mod sync_waiter;
mod utc;
mod wire;
#[cfg(test)]
mod wire_tests;
mod write_fence;
mod writes;

pub use access_log::{AccessEntry, AccessLog, AccessLogOptions, AccessRecord, Reopened};
pub use admin::{
    admin_request, AdminNode, AdminServer, NodeReport, NodeRole, ADMIN_CONNECTIONS_MAX,
    ADMIN_IO_TIMEOUT, ADMIN_REQUEST_BYTES_MAX,
};
pub use applier::{
    Applier, ApplierStats, Promotion, StartAt, APPLY_LANES_MAX, CHUNK_STEPS, PARALLEL_RUN_TXNS_MIN,
    RUN_TXNS_MAX,
};
pub use arbiter::{Arbiter, Due, EtcdArbiter, PromotionWatch};
pub use backup::{Backup, BackupConfig, BackupEvent, BackupStatus, PromotedBy};
pub use backup_session::{BackupSession, SessionConfig};
pub use checkpoint::Checkpoint;
pub use commit_policy::{settle, shipment, Shipment};
pub use copied_rows::CopiedRows;
pub use ddl::{CatalogChangeAt, DdlHandler};
pub use difference_file::DifferenceFile;
pub use digest::{response_digest, table_checksum};
pub use epoch::Epoch;
pub use error::{ReplicateError, Result, WireError};
pub use freeze_point::FreezePoint;
pub use handshake::PeerKey;
pub use kirikae_engine as engine;
pub use leadership::{leader_key, Leadership};
pub use lease::{margin as lease_margin, LeaseHold};
pub use link::{
    CopyOrder, CopyPiece, Event, Link, LinkConfig, LinkMetrics, LinkState, LogState, Micros,
    Persisted, ReadRequest, Ready, Rejoin, Submitted, SyncOutcome,
};
pub use mode::{Mode, WhenPeerDown};
pub use proxy::{Impairment, LoopbackProxy};
pub use record_log::{
    decode_entries, decode_segment_bytes, LogEntry, LogRecord, RecordLog, RecordLogOptions,
    Recovery, SegmentLog,
};
pub use replicator::{HandOver, Replication, Replicator, ReplicatorConfig};
pub use rules::{Access, AccessKind, Decision, Rule, RuleSet, TimeOfDay};
pub use seq::Seq;
pub use switchover::{switchover, Switched, Switchover, SwitchoverReport};
pub use wire::{encode, encode_into, FrameDecoder, Message, MAX_FRAME_BYTES, PROTOCOL_VERSION};
pub use writes::Writes;
