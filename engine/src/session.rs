//! Who is calling: the identity a session carries into every transaction.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The caller's identity, fixed for a session's life. Replication rules match on it
/// (user, group, source address), and the commit gate receives it with every commit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionInfo {
    /// User id of the caller.
    pub user: String,
    /// Group id of the caller.
    pub group: String,
    /// Network address the caller came from, if it came over a network.
    pub source: Option<IpAddr>,
}

impl SessionInfo {
    /// A session identity.
    pub fn new(user: impl Into<String>, group: impl Into<String>, source: Option<IpAddr>) -> Self {
        SessionInfo {
            user: user.into(),
            group: group.into(),
            source,
        }
    }
}
