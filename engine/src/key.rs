//! Primary-key values.

use std::fmt;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::value::Value;

/// The primary-key values of one record, in primary-key column order.
///
/// A one-column key is stored inline (no allocation), so index entries hold their key
/// bytes in the bucket itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key(SmallVec<[Value; 1]>);

impl Key {
    /// A key of one column.
    pub fn single(v: impl Into<Value>) -> Key {
        Key(smallvec::smallvec![v.into()])
    }

    /// A key from values in primary-key column order.
    pub fn new(values: Vec<Value>) -> Key {
        Key(SmallVec::from_vec(values))
    }

    /// The key's values in primary-key column order.
    pub fn values(&self) -> &[Value] {
        &self.0
    }

    pub(crate) fn from_iter(values: impl Iterator<Item = Value>) -> Key {
        Key(values.collect())
    }
}

impl<T: Into<Value>> From<T> for Key {
    fn from(v: T) -> Self {
        Key::single(v)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
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
