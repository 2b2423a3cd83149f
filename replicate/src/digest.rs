//! Response digests (seed 004, verification): what an operation found when it ran,
//! reduced to 64 bits so the primary and its peer can compare their responses
//! without shipping rows back. The operation itself (table, key, new row) is the
//! same on both sides by construction; what can differ is the image it replaced, and
//! whether there was one.

use kirikae_engine::{OperationKind, Value};
use serde::Serialize;

/// The digest of one operation's response: its kind and the image it replaced
/// (`None`: there was no record, as for an insert). Stable across processes, builds
/// and platforms (postcard bytes hashed with XXH3-64).
pub fn response_digest(kind: OperationKind, before: Option<&[Value]>) -> u64 {
    #[derive(Serialize)]
    struct Response<'a> {
        kind: OperationKind,
        before: Option<&'a [Value]>,
    }
    // Serializing plain values into a Vec cannot fail; an empty encoding would still
    // hash consistently on both sides.
    let bytes = postcard::to_stdvec(&Response { kind, before }).unwrap_or_default();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// An order-independent checksum of a table's committed rows (the wrapping sum of
/// each row's XXH3-64 over its postcard bytes): equal tables have equal checksums
/// whatever their RIDs, layouts or insertion orders.
pub fn table_checksum(table: &kirikae_engine::Table) -> u64 {
    table.rows().iter().fold(0u64, |sum, (_, row)| {
        let bytes = postcard::to_stdvec(&row[..]).unwrap_or_default();
        sum.wrapping_add(xxhash_rust::xxh3::xxh3_64(&bytes))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_differ_when_the_replaced_image_differs() {
        let a: Vec<Value> = vec![1.into(), "x".into()];
        let b: Vec<Value> = vec![1.into(), "y".into()];
        let d = |k, v: Option<&Vec<Value>>| response_digest(k, v.map(|v| v.as_slice()));
        assert_eq!(
            d(OperationKind::Update, Some(&a)),
            d(OperationKind::Update, Some(&a))
        );
        assert_ne!(
            d(OperationKind::Update, Some(&a)),
            d(OperationKind::Update, Some(&b))
        );
        assert_ne!(
            d(OperationKind::Update, Some(&a)),
            d(OperationKind::Delete, Some(&a))
        );
        assert_ne!(
            d(OperationKind::Insert, None),
            d(OperationKind::Update, Some(&a))
        );
        // Pinned: the digest is part of the wire protocol and must not drift.
        assert_eq!(
            d(OperationKind::Insert, None),
            xxhash_rust::xxh3::xxh3_64(&[0, 0])
        );
    }
}
