//! The handshake that opens every connection between a primary and its backup, as
//! pure code (both sides' shells and the simulation run it): each side sends a
//! `Hello` carrying a fresh random nonce, and proves it holds the pre-shared
//! [`PeerKey`] with an HMAC-SHA256 over the other side's nonce and its own `Hello`.
//!
//! ```text
//! primary → backup   Hello(primary, nonce P)
//! backup  → primary  Hello(backup, nonce B), Proof(HMAC(key, "backup"  | P | Hello B))
//! primary → backup   Proof(HMAC(key, "primary" | B | Hello P))
//! ```
//!
//! Each proof covers the prover's whole `Hello` (epoch, last sequence) and a nonce
//! the verifier just chose, so it can be neither forged, replayed, reflected nor
//! altered in flight. The backup changes no state (epoch, stream position) until the
//! primary's proof checks out: nothing an unauthenticated connection sends reaches
//! the applier. Without a key, the same exchange runs with an empty key: it then
//! proves nothing, and anyone who can reach the port is trusted.
//!
//! The `Hello` must come first and speak our protocol version; the connection state
//! enforces it here, not the frame decoder.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result};
use crate::seq::Seq;
use crate::wire::{Message, PROTOCOL_VERSION};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a nonce and of a proof.
pub const NONCE_BYTES: usize = 32;
/// The shortest key accepted.
pub const KEY_BYTES_MIN: usize = 16;

/// The pre-shared key both ends of a pair hold (never sent).
#[derive(Clone)]
pub struct PeerKey(Vec<u8>);

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerKey({} bytes)", self.0.len())
    }
}

impl PeerKey {
    /// A key of at least [`KEY_BYTES_MIN`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<PeerKey> {
        let bytes = bytes.into();
        if bytes.len() < KEY_BYTES_MIN {
            return Err(ReplicateError::BadKey {
                source_name: "key".into(),
                reason: format!("{} bytes; at least {KEY_BYTES_MIN} are needed", bytes.len()),
            });
        }
        Ok(PeerKey(bytes))
    }

    /// The key in `path`: its contents with surrounding whitespace removed (e.g. the
    /// output of `openssl rand -hex 32`), at least [`KEY_BYTES_MIN`] bytes.
    pub fn from_file(path: &Path) -> Result<PeerKey> {
        let bad = |reason: String| ReplicateError::BadKey {
            source_name: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let trimmed = bytes.trim_ascii();
        PeerKey::new(trimmed.to_vec()).map_err(|e| match e {
            ReplicateError::BadKey { reason, .. } => bad(reason),
            other => other,
        })
    }

    /// A random key (for tests, demos, and a pair started by one process).
    pub fn random() -> Result<PeerKey> {
        Ok(PeerKey(nonce()?.to_vec()))
    }

    fn admin_mac(&self) -> HmacSha256 {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(b"kirikae-admin-v1\0");
        mac
    }

    /// The bearer token that the admin endpoint's operator commands need (see
    /// [`AdminServer`](crate::AdminServer)): derived from the key, so whoever holds
    /// the pair's key file can command its nodes and nobody else.
    pub fn admin_token(&self) -> String {
        let tag = self.admin_mac().finalize().into_bytes();
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `token` is [`PeerKey::admin_token`] (compared in constant time).
    pub fn verifies_admin_token(&self, token: &str) -> bool {
        let bytes: Option<Vec<u8>> = (token.len() == 64)
            .then(|| {
                (0..32)
                    .map(|i| u8::from_str_radix(token.get(2 * i..2 * i + 2)?, 16).ok())
                    .collect()
            })
            .flatten();
        bytes.is_some_and(|b| self.admin_mac().verify_slice(&b).is_ok())
    }
}

/// A fresh random nonce.
fn nonce() -> Result<[u8; NONCE_BYTES]> {
    let mut n = [0u8; NONCE_BYTES];
    getrandom::fill(&mut n).map_err(|e| ReplicateError::Unauthenticated {
        reason: format!("no randomness for a nonce: {e}"),
    })?;
    Ok(n)
}

/// Which side proves.
#[derive(Clone, Copy)]
enum Role {
    Primary,
    Backup,
}

fn proof(
    key: Option<&PeerKey>,
    role: Role,
    challenge: &[u8; NONCE_BYTES],
    hello: &Message,
) -> HmacSha256 {
    let key = key.map_or(&[][..], |k| &k.0[..]);
    // HMAC takes a key of any length.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(b"kirikae-handshake-v2\0");
    mac.update(match role {
        Role::Primary => b"primary\0",
        Role::Backup => b"backup\0\0",
    });
    mac.update(challenge);
    // The Hello as encoded: the proof covers every field the other side acts on.
    mac.update(&postcard::to_stdvec(hello).unwrap_or_default());
    mac
}

fn sign(
    key: Option<&PeerKey>,
    role: Role,
    challenge: &[u8; NONCE_BYTES],
    hello: &Message,
) -> Message {
    let mac = proof(key, role, challenge, hello).finalize().into_bytes();
    let mut bytes = [0u8; NONCE_BYTES];
    bytes.copy_from_slice(&mac);
    Message::Proof { mac: bytes }
}

fn check(
    key: Option<&PeerKey>,
    role: Role,
    challenge: &[u8; NONCE_BYTES],
    hello: &Message,
    proof_message: &Message,
) -> Result<()> {
    let Message::Proof { mac } = proof_message else {
        return Err(unauthenticated(format!(
            "expected a Proof, got {}",
            proof_message.name()
        )));
    };
    proof(key, role, challenge, hello)
        .verify_slice(mac)
        .map_err(|_| unauthenticated("the proof does not match: another key, or a forgery".into()))
}

fn unauthenticated(reason: String) -> ReplicateError {
    ReplicateError::Unauthenticated { reason }
}

/// Checks that `message` is a `Hello` of our protocol version; returns its nonce.
fn hello_nonce(message: &Message) -> Result<[u8; NONCE_BYTES]> {
    match message {
        Message::Hello { version, nonce, .. } if *version == PROTOCOL_VERSION => Ok(*nonce),
        Message::Hello { version, .. } => Err(ReplicateError::Wire(crate::WireError::Version {
            ours: PROTOCOL_VERSION,
            theirs: *version,
        })),
        other => Err(ReplicateError::Wire(crate::WireError::NoHandshake {
            offset: 0,
            got: other.name().to_owned(),
        })),
    }
}

/// `hello` with a fresh nonce.
fn with_nonce(hello: Message) -> Result<Message> {
    match hello {
        Message::Hello {
            version,
            epoch,
            node,
            last_seq,
            ..
        } => Ok(Message::Hello {
            version,
            epoch,
            node,
            last_seq,
            nonce: nonce()?,
        }),
        other => Ok(other),
    }
}

/// The primary's side: send [`hello`](PrimaryHandshake::hello), then check the
/// backup's answer with [`answer`](PrimaryHandshake::answer).
pub struct PrimaryHandshake {
    key: Option<PeerKey>,
    hello: Message,
    nonce: [u8; NONCE_BYTES],
}

/// What the primary learns from a backup whose proof checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupGreeting {
    /// Everything up to here is resolved at the backup.
    pub last_seq: Seq,
    /// The highest epoch the backup has seen.
    pub epoch: Epoch,
    /// Its node name.
    pub node: String,
}

impl PrimaryHandshake {
    /// Starts a handshake; `hello` is the link's (its nonce is replaced by a fresh
    /// one).
    pub fn new(key: Option<PeerKey>, hello: Message) -> Result<PrimaryHandshake> {
        let hello = with_nonce(hello)?;
        let nonce = hello_nonce(&hello)?;
        Ok(PrimaryHandshake { key, hello, nonce })
    }

    /// The `Hello` to send first.
    pub fn hello(&self) -> &Message {
        &self.hello
    }

    /// The backup's `Hello` and `Proof`: if the proof checks out, returns what the
    /// backup said and the primary's own `Proof` to send.
    pub fn answer(
        &self,
        backup_hello: &Message,
        backup_proof: &Message,
    ) -> Result<(BackupGreeting, Message)> {
        let backup_nonce = hello_nonce(backup_hello)?;
        check(
            self.key.as_ref(),
            Role::Backup,
            &self.nonce,
            backup_hello,
            backup_proof,
        )?;
        let Message::Hello {
            last_seq,
            epoch,
            node,
            ..
        } = backup_hello
        else {
            return Err(unauthenticated("no Hello".into()));
        };
        let greeting = BackupGreeting {
            last_seq: *last_seq,
            epoch: *epoch,
            node: node.clone(),
        };
        let own = sign(self.key.as_ref(), Role::Primary, &backup_nonce, &self.hello);
        Ok((greeting, own))
    }
}

/// The backup's side: answer the primary's `Hello` ([`answer`](BackupHandshake::answer)),
/// then check its proof ([`verify`](BackupHandshake::verify)).
pub struct BackupHandshake {
    key: Option<PeerKey>,
    primary_hello: Message,
    nonce: [u8; NONCE_BYTES],
}

/// What the backup learns from a primary whose proof checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrimaryGreeting {
    /// The primary's epoch.
    pub epoch: Epoch,
    /// Its highest sequence sent.
    pub last_seq: Seq,
    /// Its node name.
    pub node: String,
}

impl BackupHandshake {
    /// The primary's first message (`Hello` of our version, or an error) and the
    /// backup's own `Hello` (from the applier; its nonce is replaced): returns the
    /// handshake and the two messages to send (`Hello`, `Proof`).
    pub fn answer(
        key: Option<PeerKey>,
        primary_hello: Message,
        own_hello: Message,
    ) -> Result<(BackupHandshake, [Message; 2])> {
        let primary_nonce = hello_nonce(&primary_hello)?;
        let own_hello = with_nonce(own_hello)?;
        let nonce = hello_nonce(&own_hello)?;
        let own_proof = sign(key.as_ref(), Role::Backup, &primary_nonce, &own_hello);
        Ok((
            BackupHandshake {
                key,
                primary_hello,
                nonce,
            },
            [own_hello, own_proof],
        ))
    }

    /// The primary's `Proof`: if it checks out, what its `Hello` said.
    pub fn verify(self, primary_proof: &Message) -> Result<PrimaryGreeting> {
        check(
            self.key.as_ref(),
            Role::Primary,
            &self.nonce,
            &self.primary_hello,
            primary_proof,
        )?;
        match self.primary_hello {
            Message::Hello {
                epoch,
                last_seq,
                node,
                ..
            } => Ok(PrimaryGreeting {
                epoch,
                last_seq,
                node,
            }),
            _ => Err(unauthenticated("no Hello".into())),
        }
    }
}
