//! The rows of a resync chunk (`Message::ResyncRows`). The primary sends the rows
//! its tables hold, shared (a reference count each, no copy: the copy of a large
//! table moves every row through here, and copying each one would cost the
//! primary's allocator as much again); the backup receives rows of its own. Both
//! encode alike: a sequence of rows, each a sequence of values.

use kirikae_engine::{Row, RowRef, Value};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Rows of a resync chunk (see the module docs).
#[derive(Clone, Debug)]
pub enum CopiedRows {
    /// As read from the primary's table.
    Shared(Vec<RowRef>),
    /// As decoded (or built by hand).
    Owned(Vec<Row>),
}

impl CopiedRows {
    /// How many rows.
    pub fn len(&self) -> usize {
        match self {
            CopiedRows::Shared(rows) => rows.len(),
            CopiedRows::Owned(rows) => rows.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each row, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[Value]> {
        let (shared, owned) = match self {
            CopiedRows::Shared(rows) => (Some(rows), None),
            CopiedRows::Owned(rows) => (None, Some(rows)),
        };
        let shared = shared.into_iter().flatten().map(|r| &r[..]);
        let owned = owned.into_iter().flatten().map(|r| &r[..]);
        shared.chain(owned)
    }

    /// The rows as owned rows (shared ones are copied).
    pub fn into_owned(self) -> Vec<Row> {
        match self {
            CopiedRows::Shared(rows) => rows.iter().map(|r| r.to_vec()).collect(),
            CopiedRows::Owned(rows) => rows,
        }
    }
}

/// The encoded size of `CopiedRows::Shared(rows)` (without building one).
pub(crate) fn shared_encoded_len(rows: &[RowRef]) -> usize {
    struct View<'a>(&'a [RowRef]);
    impl Serialize for View<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            rows_serialize(self.0.len(), self.0.iter().map(|r| &r[..]), serializer)
        }
    }
    crate::frame::encoded_len(&View(rows))
}

/// A sequence of `len` rows.
fn rows_serialize<'a, S: Serializer>(
    len: usize,
    rows: impl Iterator<Item = &'a [Value]>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    // The length up front: postcard writes it before the rows.
    let mut seq = serializer.serialize_seq(Some(len))?;
    for row in rows {
        seq.serialize_element(row)?;
    }
    seq.end()
}

impl From<Vec<Row>> for CopiedRows {
    fn from(rows: Vec<Row>) -> Self {
        CopiedRows::Owned(rows)
    }
}

impl FromIterator<Row> for CopiedRows {
    fn from_iter<I: IntoIterator<Item = Row>>(rows: I) -> Self {
        CopiedRows::Owned(rows.into_iter().collect())
    }
}

/// Equal when they hold the same rows, however held.
impl PartialEq for CopiedRows {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Serialize for CopiedRows {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        rows_serialize(self.len(), self.iter(), serializer)
    }
}

impl<'de> Deserialize<'de> for CopiedRows {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<Row>::deserialize(deserializer).map(CopiedRows::Owned)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn shared_and_owned_rows_encode_alike_and_decode_owned() {
        let rows: Vec<Row> = vec![vec![1.into(), "one".into()], vec![2.into(), Value::Null]];
        let shared = CopiedRows::Shared(rows.iter().map(|r| Arc::from(r.as_slice())).collect());
        let owned = CopiedRows::from(rows.clone());
        let bytes = postcard::to_stdvec(&shared).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&owned).unwrap());
        assert_eq!(
            bytes,
            postcard::to_stdvec(&rows).unwrap(),
            "a Vec<Row> on the wire"
        );
        let back: CopiedRows = postcard::from_bytes(&bytes).unwrap();
        assert!(matches!(&back, CopiedRows::Owned(r) if *r == rows));
        assert_eq!(back, shared);
        let CopiedRows::Shared(refs) = &shared else {
            unreachable!()
        };
        assert_eq!(shared_encoded_len(refs), crate::frame::encoded_len(&owned));
        assert_eq!(shared.into_owned(), rows);
    }
}
