//! Primary-key values.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// The primary-key values of one record, in primary-key column order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key(pub Vec<Value>);

impl Key {
    /// A key of one column.
    pub fn single(v: impl Into<Value>) -> Key {
        Key(vec![v.into()])
    }

    /// The key's values in primary-key column order.
    pub fn values(&self) -> &[Value] {
        &self.0
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
