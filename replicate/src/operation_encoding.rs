//! A transaction's operations in `postcard`'s encoding, written directly.
//!
//! Byte for byte what serde and `postcard` write for a `Vec<Operation>` (enum
//! variants and lengths as LEB128 varints, integers zigzagged, floats as 8
//! little-endian bytes, texts and byte strings as length then bytes), without going
//! through serde's serializer for every value. Every replicated commit encodes its
//! writes on the committing thread (`writes.rs`): `cargo bench --bench wire`'s
//! `encode_writes` (one update of a subscriber row, encoded and dropped) took
//! 184–209 ns through serde, 149–160 ns so. The proptest in `wire_tests.rs` holds
//! the two encodings equal over every kind of operation and value. Catalog changes,
//! which are rare, are left to serde.

use kirikae_engine::{Operation, Value};

/// Appends the encoding of `operations` to `out` and returns `true`; or returns
/// `false`, with `out` as it was, if one of them is a catalog change.
pub(crate) fn encode_operations(operations: &[Operation], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    varint(operations.len() as u64, out);
    for op in operations {
        match op {
            Operation::Insert { table, row } => {
                varint(0, out);
                text(table, out);
                values(row, out);
            }
            Operation::Update { table, key, row } => {
                varint(1, out);
                text(table, out);
                values(key.values(), out);
                values(row, out);
            }
            Operation::Delete { table, key } => {
                varint(2, out);
                text(table, out);
                values(key.values(), out);
            }
            Operation::Ddl { .. } => {
                out.truncate(start);
                return false;
            }
        }
    }
    true
}

fn values(values: &[Value], out: &mut Vec<u8>) {
    varint(values.len() as u64, out);
    for v in values {
        match v {
            Value::Null => varint(0, out),
            Value::Bool(b) => {
                varint(1, out);
                out.push(u8::from(*b));
            }
            Value::Int(i) => {
                varint(2, out);
                varint(((*i << 1) ^ (*i >> 63)) as u64, out);
            }
            Value::Float(f) => {
                varint(3, out);
                out.extend_from_slice(&f.to_le_bytes());
            }
            Value::Text(s) => {
                varint(4, out);
                text(s, out);
            }
            Value::Bytes(b) => {
                varint(5, out);
                varint(b.len() as u64, out);
                out.extend_from_slice(b);
            }
        }
    }
}

fn text(s: &str, out: &mut Vec<u8>) {
    varint(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

/// LEB128: seven bits at a time, lowest first, the high bit set on all but the last.
fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[cfg(test)]
mod tests {
    use kirikae_engine::{Key, Operation, Value};

    use super::encode_operations;

    /// The corners of each encoding step, against serde's own bytes (the proptest
    /// in `wire_tests.rs` covers the general case through framing).
    #[test]
    fn edge_values_encode_as_serde_writes_them() {
        let row: Vec<Value> = [i64::MIN, -1, 0, 63, 64, 127, 128, i64::MAX]
            .into_iter()
            .map(Value::Int)
            .chain([
                Value::Null,
                Value::Bool(true),
                Value::Float(-0.0),
                Value::Float(f64::NAN),
                Value::from("é".repeat(100).as_str()),
                Value::from(vec![0xffu8; 200]),
            ])
            .collect();
        let ops = vec![
            Operation::Insert {
                table: "t".into(),
                row: row.clone().into(),
            },
            Operation::Update {
                table: "a_table_name_longer_than_twenty_four".into(),
                key: Key::new(vec![Value::Int(1), Value::from("k")]),
                row: row.into(),
            },
            Operation::Delete {
                table: "t".into(),
                key: Key::from(-5),
            },
        ];
        let mut ours = vec![9u8];
        assert!(encode_operations(&ops, &mut ours));
        let serde = postcard::to_allocvec(&ops).unwrap_or_default();
        assert_eq!(&ours[1..], &serde[..], "appended after what was there");
        let mut none = Vec::new();
        assert!(encode_operations(&[], &mut none));
        assert_eq!(
            none,
            postcard::to_allocvec(&Vec::<Operation>::new()).unwrap_or_default()
        );
    }
}
