//! Primary-key values.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::value::Value;

/// The primary-key values of one record, in primary-key column order.
///
/// A one-column key is its value itself (no allocation, no length): 24 bytes, so
/// an index entry (key and RID) is 32 and two fit in a cache line without either
/// straddling two (a 40-byte entry, as a small vector with its capacity made it,
/// crossed a line boundary at every other position). Cloning and comparing one,
/// which every update does, touches no length either.
#[derive(Clone)]
pub struct Key(Repr);

#[derive(Clone)]
enum Repr {
    One(Value),
    /// Any other number of columns (none included, for a key-less placeholder).
    Many(Box<[Value]>),
}

impl Key {
    /// A key of one column.
    pub fn single(v: impl Into<Value>) -> Key {
        Key(Repr::One(v.into()))
    }

    /// A key from values in primary-key column order.
    pub fn new(mut values: Vec<Value>) -> Key {
        match (values.pop(), values.is_empty()) {
            (Some(one), true) => Key(Repr::One(one)),
            (last, _) => {
                values.extend(last);
                Key(Repr::Many(values.into_boxed_slice()))
            }
        }
    }

    /// The key's values in primary-key column order.
    pub fn values(&self) -> &[Value] {
        match &self.0 {
            Repr::One(v) => std::slice::from_ref(v),
            Repr::Many(vs) => vs,
        }
    }

    pub(crate) fn from_iter(values: impl Iterator<Item = Value>) -> Key {
        let mut values = values;
        match (values.next(), values.next()) {
            (Some(one), None) => Key(Repr::One(one)),
            (first, second) => Key::new(first.into_iter().chain(second).chain(values).collect()),
        }
    }
}

// Debug output, equality, order and hash are those of the values, whatever the
// representation.
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Key").field(&self.values()).finish()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.values() == other.values()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.values().cmp(other.values())
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.values().hash(state);
    }
}

// On the wire and on disk a key is the sequence of its values, as it always was.
impl Serialize for Key {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.values())
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<Value>::deserialize(deserializer).map(Key::new)
    }
}

impl<T: Into<Value>> From<T> for Key {
    fn from(v: T) -> Self {
        Key::single(v)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.values() {
            [one] => write!(f, "{one}"),
            many => {
                f.write_str("(")?;
                for (i, v) in many.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str(")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::Key;
    use crate::rid::Rid;
    use crate::value::Value;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            "[a-z0-9]{0,40}".prop_map(|s| Value::text(&s)),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::from),
        ]
    }

    #[test]
    fn a_key_shows_its_values() {
        assert_eq!(format!("{:?}", Key::from(5)), "Key([Int(5)])");
        assert_eq!(
            format!("{:?}", Key::new(vec![Value::Int(1), Value::from("a")])),
            r#"Key([Int(1), Text("a")])"#
        );
    }

    #[test]
    fn an_index_entry_of_a_one_column_key_fills_half_a_cache_line() {
        assert_eq!(std::mem::size_of::<(Key, Rid)>(), 32);
    }

    proptest! {
        /// However a key is built, it is its values: equal, ordered, hashed and
        /// encoded as they are (the encoding is the one a vector of values has,
        /// which the wire and snapshots have always used).
        #[test]
        fn a_key_is_its_values(
            values in prop::collection::vec(value(), 0..4),
            others in prop::collection::vec(value(), 0..4),
        ) {
            let key = Key::new(values.clone());
            prop_assert_eq!(key.values(), &values[..]);
            let built = Key::from_iter(values.clone().into_iter());
            prop_assert_eq!(&built, &key);
            if let [one] = &values[..] {
                prop_assert_eq!(&Key::single(one.clone()), &key);
            }
            let hasher = ahash::RandomState::new();
            prop_assert_eq!(hasher.hash_one(&built), hasher.hash_one(&key));
            let other = Key::new(others.clone());
            prop_assert_eq!(key.cmp(&other), values.cmp(&others));
            prop_assert_eq!(key == other, values == others);
            let bytes = postcard::to_allocvec(&key).unwrap_or_default();
            prop_assert_eq!(&bytes, &postcard::to_allocvec(&values).unwrap_or_default());
            let back: Key = postcard::from_bytes(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, key);
        }
    }
}
