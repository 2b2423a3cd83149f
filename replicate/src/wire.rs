//! The wire protocol between a primary and its peer: length-prefixed frames
//! ([`crate::frame`]: `payload length (u32 LE) | CRC-32 (u32 LE) | postcard`), with a
//! maximum frame size checked before anything is buffered, and a `Hello` handshake
//! that refuses other protocol versions. Every message that carries operations has the
//! primary's sequence number (its commit order) and the sender's epoch, so that a peer
//! can apply in order, drop duplicates, and fence a stale primary. Connections open
//! with an authenticated handshake ([`crate::handshake`]).

use kirikae_engine::Schema;
use serde::{Deserialize, Serialize};

use crate::copied_rows::CopiedRows;
use crate::epoch::Epoch;
use crate::error::WireError;
use crate::frame::{self, FrameFault};
use crate::mode::Mode;
use crate::seq::Seq;
use crate::writes::Writes;

/// The protocol version this build speaks (5: transactions may carry catalog
/// changes, `Operation::Ddl`).
pub const PROTOCOL_VERSION: u16 = 5;
/// Default maximum payload per frame.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// One protocol message (version 3: every message carries its sender's epoch;
/// version 4: the resync messages).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// First message in each direction.
    Hello {
        /// Protocol version of the sender.
        version: u16,
        /// The sender's epoch (grows at each failover).
        epoch: Epoch,
        /// The sender's node name.
        node: String,
        /// Highest sequence the sender has applied (a peer) or sent (a primary).
        last_seq: Seq,
        /// Fresh random bytes the other side's proof must cover (see
        /// [`crate::handshake`]).
        nonce: [u8; 32],
    },
    /// The second step of the handshake: an HMAC-SHA256 proving the sender holds the
    /// pair's key.
    Proof {
        /// HMAC-SHA256 over the other side's nonce and the sender's `Hello`.
        mac: [u8; 32],
    },
    /// A committed transaction shipped without waiting (async or ordered).
    Ship {
        /// Primary commit order.
        seq: Seq,
        /// Primary's epoch.
        epoch: Epoch,
        /// Async (per-key order), ordered (commit order), or sync (a sync commit
        /// replayed from the difference file: apply and commit at once).
        mode: Mode,
        /// Its writes (shared with the primary's window until acknowledged).
        operations: Writes,
        /// Answer with `Applied` and the responses, to be verified.
        verify: bool,
    },
    /// A sync transaction to apply and hold open.
    Prepare {
        /// Primary commit order.
        seq: Seq,
        /// Primary's epoch.
        epoch: Epoch,
        /// Its writes (shared with the primary's window until acknowledged).
        operations: Writes,
        /// The primary's response digest of each operation, logged by the backup: at
        /// a promotion, an in-doubt transaction commits only if they match its own.
        responses: Vec<u64>,
    },
    /// The peer applied a prepared transaction and holds it open.
    Prepared {
        /// The transaction's sequence.
        seq: Seq,
        /// The backup's epoch (the session's; a primary that sees a higher one is
        /// fenced).
        epoch: Epoch,
        /// One digest per operation of the peer's response (see `digest`), compared
        /// with the primary's own.
        responses: Vec<u64>,
    },
    /// The peer could not apply a shipped or prepared transaction.
    Rejected {
        /// The transaction's sequence.
        seq: Seq,
        /// The backup's epoch (the session's; a primary that sees a higher one is
        /// fenced).
        epoch: Epoch,
        /// Why.
        reason: String,
    },
    /// Make a prepared transaction permanent.
    Commit {
        /// The transaction's sequence.
        seq: Seq,
        /// The primary's epoch (must be the session's).
        epoch: Epoch,
    },
    /// Roll a prepared transaction back.
    Abort {
        /// The transaction's sequence.
        seq: Seq,
        /// The primary's epoch (must be the session's).
        epoch: Epoch,
    },
    /// Everything up to `seq` is applied at the peer.
    Ack {
        /// Highest applied sequence.
        seq: Seq,
        /// The backup's epoch (see `Prepared`).
        epoch: Epoch,
    },
    /// Liveness, both directions.
    Heartbeat {
        /// The sender's epoch.
        epoch: Epoch,
        /// Highest sequence sent (primary) or applied (peer).
        last_seq: Seq,
    },
    /// The peer applied a shipped transaction marked `verify`.
    Applied {
        /// The transaction's sequence.
        seq: Seq,
        /// The backup's epoch (see `Prepared`).
        epoch: Epoch,
        /// One digest per operation of the peer's response.
        responses: Vec<u64>,
    },
    /// A resync begins: the peer's data is replaced by the tables that follow
    /// (`ResyncTable`, `ResyncRows`), copied while the primary keeps committing. Every
    /// transaction up to `from_seq` is in the copy; those after it arrive as `Ship`s
    /// beside the copy, and the peer applies them over it once the copy is complete.
    ResyncBegin {
        /// The primary's epoch.
        epoch: Epoch,
        /// Every transaction up to here is in the copy.
        from_seq: Seq,
    },
    /// A table of the copy: the peer replaces its own table of that name with an
    /// empty one of this schema.
    ResyncTable {
        /// The primary's epoch.
        epoch: Epoch,
        /// The table's name.
        table: String,
        /// Its schema.
        schema: Schema,
        /// About how many rows follow (the peer sizes the table's index for them
        /// up front, instead of growing it with pauses on the way).
        rows: u64,
    },
    /// Rows of a table of the copy (a key seen twice: the later row wins).
    ResyncRows {
        /// The primary's epoch.
        epoch: Epoch,
        /// The table, announced by a `ResyncTable` before.
        table: String,
        /// The rows.
        rows: CopiedRows,
    },
    /// The copy is complete.
    ResyncEnd {
        /// The primary's epoch.
        epoch: Epoch,
        /// Rows sent in all, a check.
        rows: u64,
    },
    /// The peer loaded the copy and applied what came beside it: it resolved every
    /// transaction up to `seq` and is in step.
    Resynced {
        /// The backup's epoch (see `Prepared`).
        epoch: Epoch,
        /// Highest resolved sequence.
        seq: Seq,
    },
}

impl Message {
    /// The sender's epoch; `None` only for `Proof` (it is bound to a `Hello`).
    pub fn epoch(&self) -> Option<Epoch> {
        match self {
            Message::Hello { epoch, .. }
            | Message::Ship { epoch, .. }
            | Message::Prepare { epoch, .. }
            | Message::Prepared { epoch, .. }
            | Message::Rejected { epoch, .. }
            | Message::Commit { epoch, .. }
            | Message::Abort { epoch, .. }
            | Message::Ack { epoch, .. }
            | Message::Heartbeat { epoch, .. }
            | Message::Applied { epoch, .. }
            | Message::ResyncBegin { epoch, .. }
            | Message::ResyncTable { epoch, .. }
            | Message::ResyncRows { epoch, .. }
            | Message::ResyncEnd { epoch, .. }
            | Message::Resynced { epoch, .. } => Some(*epoch),
            Message::Proof { .. } => None,
        }
    }

    /// The message's kind, for errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::Proof { .. } => "Proof",
            Message::Ship { .. } => "Ship",
            Message::Prepare { .. } => "Prepare",
            Message::Prepared { .. } => "Prepared",
            Message::Rejected { .. } => "Rejected",
            Message::Commit { .. } => "Commit",
            Message::Abort { .. } => "Abort",
            Message::Ack { .. } => "Ack",
            Message::Heartbeat { .. } => "Heartbeat",
            Message::Applied { .. } => "Applied",
            Message::ResyncBegin { .. } => "ResyncBegin",
            Message::ResyncTable { .. } => "ResyncTable",
            Message::ResyncRows { .. } => "ResyncRows",
            Message::ResyncEnd { .. } => "ResyncEnd",
            Message::Resynced { .. } => "Resynced",
        }
    }
}

/// Encodes `message` as one frame. Fails if it exceeds `frame_bytes_max`: the sender
/// checks the same limit the receiver enforces.
pub fn encode(message: &Message, frame_bytes_max: usize) -> Result<Vec<u8>, WireError> {
    let mut frame = Vec::new();
    encode_into(message, frame_bytes_max, &mut frame)?;
    Ok(frame)
}

/// Appends `message`'s frame to `out` (see [`encode`]); on failure `out` is as it
/// was.
pub fn encode_into(
    message: &Message,
    frame_bytes_max: usize,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let framed = match spliced(message) {
        Some((head, encoding, tail)) => {
            frame::encode_spliced_into(&head, encoding, &tail, frame_bytes_max, out)
        }
        None => frame::encode_into(message, frame_bytes_max, out),
    };
    framed.map_err(|fault| match fault {
        FrameFault::TooLarge { len, max } => WireError::TooLarge {
            offset: 0,
            len,
            max,
        },
        other => WireError::Decode {
            offset: 0,
            reason: format!("cannot encode {}: {other}", message.name()),
        },
    })
}

/// The length of `message`'s frame, header included (what [`encode_into`] appends),
/// computed without encoding it.
pub(crate) fn encoded_len(message: &Message) -> usize {
    match spliced(message) {
        Some((head, encoding, tail)) => frame::spliced_len(&head, encoding, &tail),
        None => frame::encoded_len(message),
    }
}

/// The fields before a message's writes, their encoding, and the fields after.
type Spliced<'m> = (Head, &'m [u8], Tail<'m>);

/// What precedes the writes: the variant's tag and the fields before them.
#[derive(Serialize)]
#[serde(untagged)]
enum Head {
    Ship(u32, Seq, Epoch, Mode),
    Prepare(u32, Seq, Epoch),
}

/// What follows the writes in a `Ship` (its flag) or a `Prepare` (its responses).
#[derive(Serialize)]
#[serde(untagged)]
enum Tail<'m> {
    Verify(bool),
    Responses(&'m [u64]),
}

/// Postcard's tags of the two variants that carry writes (their index in
/// [`Message`], as a varint); `wire_tests` checks that a spliced frame is the frame
/// serde writes.
const SHIP_TAG: u32 = 2;
const PREPARE_TAG: u32 = 3;

/// A `Ship` or `Prepare` whose writes were encoded by the committing thread: its
/// frame is spliced from the fields around them and their encoding, which postcard
/// writes in field order with nothing in between. `None` for every other message.
fn spliced(message: &Message) -> Option<Spliced<'_>> {
    match message {
        Message::Ship {
            seq,
            epoch,
            mode,
            operations,
            verify,
        } => Some((
            Head::Ship(SHIP_TAG, *seq, *epoch, *mode),
            operations.encoding()?,
            Tail::Verify(*verify),
        )),
        Message::Prepare {
            seq,
            epoch,
            operations,
            responses,
        } => Some((
            Head::Prepare(PREPARE_TAG, *seq, *epoch),
            operations.encoding()?,
            Tail::Responses(responses),
        )),
        _ => None,
    }
}

/// Splits a byte stream into messages, however the bytes arrive.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already decoded (compacted away lazily, so decoding many
    /// small frames from one large read does not shift the rest after each).
    start: usize,
    /// Stream offset of `buffer[start]`.
    offset: u64,
    frame_bytes_max: usize,
}

impl FrameDecoder {
    /// A decoder for a new connection, enforcing `frame_bytes_max` per payload.
    pub fn new(frame_bytes_max: usize) -> FrameDecoder {
        FrameDecoder {
            buffer: Vec::new(),
            start: 0,
            offset: 0,
            frame_bytes_max,
        }
    }

    /// The bytes received and not decoded yet (to hand a connection to a decoder with
    /// another frame limit once its handshake is done).
    pub fn into_unread(mut self) -> Vec<u8> {
        self.buffer.split_off(self.start)
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start * 2 >= self.buffer.len() {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed. After an error
    /// the connection is unusable. (Which message may come when is the connection's
    /// business: see [`crate::handshake`].)
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        let offset = self.offset;
        let decoded = frame::decode::<Message>(&self.buffer[self.start..], self.frame_bytes_max)
            .map_err(|fault| match fault {
                FrameFault::TooLarge { len, max } => WireError::TooLarge { offset, len, max },
                FrameFault::Checksum { stored, computed } => WireError::Checksum {
                    offset,
                    stored,
                    computed,
                },
                FrameFault::Undecodable(reason) => WireError::Decode { offset, reason },
            })?;
        let Some((message, used)) = decoded else {
            return Ok(None);
        };
        self.start += used;
        self.offset += used as u64;
        Ok(Some(message))
    }
}
