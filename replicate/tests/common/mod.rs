//! Settings the TCP tests of this crate share.

// Each test binary uses a part of this.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use kirikae_replicate::{LinkConfig, PeerKey, RecordLogOptions, ReplicatorConfig, RuleSet};

/// A primary replicating every commit in sync mode to `peer`, with a fast link
/// (20 ms heartbeats, 500 ms peer timeout, quick reconnects) and no fsync.
pub fn sync_replicator_config(peer: SocketAddr, key: PeerKey, dir: &Path) -> ReplicatorConfig {
    ReplicatorConfig {
        key: Some(key),
        peer,
        rules: RuleSet::parse(r#"default = "sync""#, "test.toml").expect("rules"),
        link: LinkConfig {
            heartbeat_every: Duration::from_millis(20),
            peer_timeout: Duration::from_millis(500),
            reconnect_min: Duration::from_millis(10),
            reconnect_max: Duration::from_millis(100),
            ..LinkConfig::default()
        },
        difference_dir: dir.to_owned(),
        difference: RecordLogOptions {
            fsync: false,
            ..RecordLogOptions::default()
        },
    }
}
