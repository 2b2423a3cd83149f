//! A transaction's writes as the stream carries them: its operations, and on the
//! primary their encoding, made once by the committing thread.
//!
//! Why the encoding is made there: the committing thread has just built the rows, so
//! they are in its core's cache, and it holds no shared lock at that point. Framed
//! later on the link thread, the same rows were read from another core's cache: in
//! `bench replicate` (async, 8 sessions) that framing took 0.54 µs of the primary's
//! 6 µs of CPU per commit under perf, against 0.19 µs for the same message framed in
//! a loop (`cargo bench --bench wire`). The link thread now copies the bytes in:
//! its framing fell to 0.17 µs per commit, the encoding here costs 0.25 µs (same
//! bench, same profile).

use std::cell::RefCell;
use std::ops::Deref;
use std::sync::Arc;

use kirikae_engine::Operation;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The operations of one transaction, shared between the message that ships them and
/// the primary's window (never copied), with their encoding when the committing
/// thread made one ([`Writes::encoded`]).
///
/// Serializes exactly as the `Vec<Operation>` it holds, so the wire format does not
/// depend on whether an encoding was made; equality compares the operations.
#[derive(Clone, Debug)]
pub struct Writes {
    operations: Arc<Vec<Operation>>,
    /// `postcard` of `operations`, byte for byte what serializing them writes.
    encoding: Option<Arc<[u8]>>,
}

thread_local! {
    /// The committing thread's encoding buffer, kept between its commits.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A committing thread's buffer above this is given back after use (a huge
/// transaction does not pin its size for the thread's life).
const BUFFER_KEPT_BYTES_MAX: usize = 64 << 10;

impl Writes {
    /// The operations, without an encoding (framed from the operations when sent).
    pub fn new(operations: Vec<Operation>) -> Writes {
        Writes {
            operations: Arc::new(operations),
            encoding: None,
        }
    }

    /// The operations with their encoding, made now. If they do not encode, none is
    /// kept: framing them later reports why.
    pub fn encoded(operations: Vec<Operation>) -> Writes {
        let encoding = BUFFER.with_borrow_mut(|kept| {
            let mut buffer = std::mem::take(kept);
            buffer.clear();
            let buffer = postcard::to_extend(&operations, buffer).ok()?;
            let encoding = Arc::<[u8]>::from(&buffer[..]);
            if buffer.capacity() <= BUFFER_KEPT_BYTES_MAX {
                *kept = buffer;
            }
            Some(encoding)
        });
        Writes {
            operations: Arc::new(operations),
            encoding,
        }
    }

    /// Their encoding, if [`Writes::encoded`] made one.
    pub fn encoding(&self) -> Option<&[u8]> {
        self.encoding.as_deref()
    }

    /// The operations, taken out (copied only if still shared).
    pub fn into_operations(self) -> Vec<Operation> {
        Arc::unwrap_or_clone(self.operations)
    }
}

impl Deref for Writes {
    type Target = [Operation];

    fn deref(&self) -> &[Operation] {
        &self.operations
    }
}

impl From<Vec<Operation>> for Writes {
    fn from(operations: Vec<Operation>) -> Writes {
        Writes::new(operations)
    }
}

impl PartialEq for Writes {
    fn eq(&self, other: &Writes) -> bool {
        self.operations == other.operations
    }
}

impl Serialize for Writes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.operations.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Writes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Writes, D::Error> {
        Vec::<Operation>::deserialize(deserializer).map(Writes::new)
    }
}
