//! A transaction's writes as the stream carries them: on the primary, their
//! encoding, made once by the committing thread; on a backup, the operations
//! decoded from the stream.
//!
//! Why the primary encodes them there: the committing thread has just built the rows,
//! so they are in its core's cache, and it holds no shared lock at that point. Framed
//! later on the link thread, the same rows were read from another core's cache: in
//! `bench replicate` (async, 8 sessions) that framing took 0.54 µs of the primary's
//! 6 µs of CPU per commit under perf, against 0.19 µs for the same message framed in
//! a loop (`cargo bench --bench wire`). The link thread now copies the bytes in: its
//! framing fell to 0.17 µs per commit, the encoding here costs 0.25 µs (same bench,
//! same profile).
//!
//! And why it keeps only the encoding: a transaction stays in the window until the
//! backup acknowledges it, and goes from there to the difference file if the backup
//! goes down. Its bytes are all either needs, and a single block to free: 102
//! bytes for an update of a subscriber row, against about 520 for the operations
//! (their list, and the row image they kept alive after the table moved on).

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use kirikae_engine::Operation;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::WireError;
use crate::operation_encoding::encode_operations;

/// The operations of one transaction, shared between the message that ships them,
/// the primary's window and the difference file's record (never copied).
///
/// Serializes exactly as the `Vec<Operation>` it stands for, whichever form it
/// holds; equality compares the operations.
#[derive(Clone)]
pub struct Writes(Form);

#[derive(Clone)]
enum Form {
    /// Built by hand or decoded from a stream or a file.
    Operations(Arc<Vec<Operation>>),
    /// Made by [`Writes::encoded`]: `postcard` of the operations, byte for byte what
    /// serializing them writes.
    Encoded(Arc<[u8]>),
}

thread_local! {
    /// The committing thread's encoding buffer, kept between its commits.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A committing thread's buffer above this is given back after use (a huge
/// transaction does not pin its size for the thread's life).
const BUFFER_KEPT_BYTES_MAX: usize = 64 << 10;

impl Writes {
    /// The operations as they are (framed from the operations when sent).
    pub fn new(operations: Vec<Operation>) -> Writes {
        Writes(Form::Operations(Arc::new(operations)))
    }

    /// The operations' encoding, made now; the operations themselves are dropped. If
    /// they do not encode, they are kept as they are: framing them later reports why.
    pub fn encoded(operations: Vec<Operation>) -> Writes {
        let encoding = BUFFER.with_borrow_mut(|kept| {
            let mut buffer = std::mem::take(kept);
            buffer.clear();
            let buffer = if encode_operations(&operations, &mut buffer) {
                buffer
            } else {
                postcard::to_extend(&operations, buffer).ok()?
            };
            let encoding = Arc::<[u8]>::from(&buffer[..]);
            if buffer.capacity() <= BUFFER_KEPT_BYTES_MAX {
                *kept = buffer;
            }
            Some(encoding)
        });
        match encoding {
            Some(bytes) => Writes(Form::Encoded(bytes)),
            None => Writes::new(operations),
        }
    }

    /// Writes stored as `bytes`, the postcard encoding of their operations (what
    /// [`encoding`](Writes::encoding) gave, or a frame's serialized `Vec<Operation>`),
    /// kept as they are: decoded only if the operations are asked for.
    pub(crate) fn from_encoding(bytes: &[u8]) -> Writes {
        Writes(Form::Encoded(Arc::from(bytes)))
    }

    /// Their encoding, if [`Writes::encoded`] made one (or they were read back).
    pub fn encoding(&self) -> Option<&[u8]> {
        match &self.0 {
            Form::Encoded(bytes) => Some(bytes),
            Form::Operations(_) => None,
        }
    }

    /// The operations (decoded from the encoding if that is what is held).
    pub fn operations(&self) -> Result<Cow<'_, [Operation]>, WireError> {
        match &self.0 {
            Form::Operations(operations) => Ok(Cow::Borrowed(operations)),
            Form::Encoded(bytes) => decode(bytes).map(Cow::Owned),
        }
    }

    /// The operations, taken out (copied only if still shared, decoded if encoded).
    pub fn into_operations(self) -> Result<Vec<Operation>, WireError> {
        match self.0 {
            Form::Operations(operations) => Ok(Arc::unwrap_or_clone(operations)),
            Form::Encoded(bytes) => decode(&bytes),
        }
    }
}

/// Decodes an encoding [`Writes::encoded`] made (fails only if it was damaged).
fn decode(bytes: &[u8]) -> Result<Vec<Operation>, WireError> {
    postcard::from_bytes(bytes).map_err(|e| WireError::Decode {
        offset: 0,
        reason: format!("writes encoded by the committing thread: {e}"),
    })
}

impl From<Vec<Operation>> for Writes {
    fn from(operations: Vec<Operation>) -> Writes {
        Writes::new(operations)
    }
}

impl fmt::Debug for Writes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operations() {
            Ok(operations) => operations.fmt(f),
            Err(e) => write!(f, "<{e}>"),
        }
    }
}

impl PartialEq for Writes {
    fn eq(&self, other: &Writes) -> bool {
        match (self.operations(), other.operations()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

impl Serialize for Writes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Frames and records splice an encoding in without coming here (see
        // `wire::encode_into`, `LogRecord::encode_into`); this is for other formats.
        let operations = self.operations().map_err(serde::ser::Error::custom)?;
        operations.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Writes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Writes, D::Error> {
        Vec::<Operation>::deserialize(deserializer).map(Writes::new)
    }
}
