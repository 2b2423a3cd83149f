//! A model of what the etcd arbiter relies on from etcd, in simulated time: one key
//! per pair, created only when absent and attached to a lease; a lease lives `ttl`
//! from its grant or last keep-alive and takes the key with it when it expires; every
//! change bumps the store's revision, and a key's create revision is its holder's
//! epoch.

/// Who holds the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    Primary,
    Backup,
}

#[derive(Debug)]
struct Held {
    node: Node,
    create_revision: u64,
    expires_us: u64,
}

#[derive(Debug)]
pub struct EtcdModel {
    revision: u64,
    key: Option<Held>,
    ttl_us: u64,
}

impl EtcdModel {
    pub fn new(ttl_us: u64) -> EtcdModel {
        EtcdModel {
            revision: 0,
            key: None,
            ttl_us,
        }
    }

    /// The lease ran out: the key goes (a delete, one revision).
    fn expire(&mut self, now: u64) {
        if self.key.as_ref().is_some_and(|k| k.expires_us <= now) {
            self.key = None;
            self.revision += 1;
        }
    }

    /// A fresh lease and the key, if nobody holds it: its create revision.
    pub fn create(&mut self, node: Node, now: u64) -> Option<u64> {
        self.expire(now);
        if self.key.is_some() {
            return None;
        }
        self.revision += 1;
        self.key = Some(Held {
            node,
            create_revision: self.revision,
            expires_us: now + self.ttl_us,
        });
        Some(self.revision)
    }

    /// A keep-alive of `node`'s lease, answered with whether the key is still the
    /// one it created (the renewer's two calls, as one).
    pub fn keep_alive(&mut self, node: Node, create_revision: u64, now: u64) -> bool {
        self.expire(now);
        match self.key.as_mut() {
            Some(k) if k.node == node && k.create_revision == create_revision => {
                k.expires_us = now + self.ttl_us;
                true
            }
            _ => false,
        }
    }

    /// Whether the key is vacant at `now` (the backup's look).
    pub fn vacant(&mut self, now: u64) -> bool {
        self.expire(now);
        self.key.is_none()
    }

    /// Who holds the key at `now`.
    pub fn holder(&mut self, now: u64) -> Option<(Node, u64)> {
        self.expire(now);
        self.key.as_ref().map(|k| (k.node, k.create_revision))
    }
}
