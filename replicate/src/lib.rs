//! # kirikae-replicate
//!
//! Four-mode replication to a peer (seeds 000, 002, 003, 004). This crate so far holds
//! the operator's **rules** (which mode — skip, async, ordered, sync — each operation
//! and transaction gets, matched on kind, table, user, group, source address and time
//! of day) and the **wire** framing (CRC-checked, size-limited frames, a versioned
//! handshake, sequence numbers and epochs). The link, peer, difference file and
//! failover follow.
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
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod applier;
mod difference_file;
#[cfg(test)]
mod difference_file_tests;
mod digest;
mod error;
mod link;
mod mode;
mod peer;
mod proxy;
mod replicator;
mod rules;
#[cfg(test)]
mod rules_tests;
mod wire;
#[cfg(test)]
mod wire_tests;

pub use applier::{Applier, ApplierStats};
pub use difference_file::{
    decode_segment_bytes, DiffRecord, DifferenceFile, DifferenceOptions, Recovery,
};
pub use digest::{response_digest, table_checksum};
pub use error::{ReplicateError, Result, WireError};
pub use kirikae_engine as engine;
pub use link::{
    DiffLog, Event, Link, LinkConfig, LinkMetrics, LinkState, Micros, Submitted, SyncOutcome,
};
pub use mode::{Mode, WhenPeerDown};
pub use peer::{Peer, PeerConfig, PeerStatus};
pub use proxy::{Impairment, LoopbackProxy};
pub use replicator::{Replication, Replicator, ReplicatorConfig};
pub use rules::{Access, AccessKind, Decision, Rule, RuleSet, TimeOfDay};
pub use wire::{encode, FrameDecoder, Message, MAX_FRAME_BYTES, PROTOCOL_VERSION};
