//! # kirikae-replicate
//!
//! Four-mode (skip / async / ordered / sync) replication to a peer, built on
//! [`kirikae_engine`]'s commit gate and logical operations; filled in by the
//! replication issue.
#![deny(missing_docs)]

pub use kirikae_engine as engine;
