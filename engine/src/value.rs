//! Column values and column types.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// The type of a column. A value of another type is refused at write time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum ColumnType {
    /// `true` / `false`.
    Bool,
    /// Signed 64-bit integer.
    Int,
    /// IEEE-754 double.
    Float,
    /// UTF-8 text.
    Text,
    /// Raw bytes.
    Bytes,
}

/// One cell of a row.
///
/// Values have a total order and a hash that agree with equality, floats included
/// (`f64::total_cmp`, so `NaN == NaN` and `-0.0 != 0.0`): any value can be part of a
/// primary key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Value {
    /// SQL-style null; allowed only in nullable columns.
    Null,
    /// A [`ColumnType::Bool`] value.
    Bool(bool),
    /// A [`ColumnType::Int`] value.
    Int(i64),
    /// A [`ColumnType::Float`] value.
    Float(f64),
    /// A [`ColumnType::Text`] value. Up to 24 bytes are stored inline (no
    /// allocation, no pointer to chase): IMSIs, MSISDNs and codes stay in the row.
    Text(CompactString),
    /// A [`ColumnType::Bytes`] value. A boxed slice, not a `Vec`: with it every value
    /// fits in 24 bytes (the text's spare byte tells the variants apart), a quarter
    /// less memory per row and per index key than 32.
    Bytes(Box<[u8]>),
}

impl Value {
    /// The column type this value belongs to; `None` for [`Value::Null`].
    pub fn column_type(&self) -> Option<ColumnType> {
        match self {
            Value::Null => None,
            Value::Bool(_) => Some(ColumnType::Bool),
            Value::Int(_) => Some(ColumnType::Int),
            Value::Float(_) => Some(ColumnType::Float),
            Value::Text(_) => Some(ColumnType::Text),
            Value::Bytes(_) => Some(ColumnType::Bytes),
        }
    }

    /// Whether this is [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The integer inside, if this is an [`Value::Int`].
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// A text value.
    pub fn text(v: &str) -> Value {
        Value::from(v)
    }

    /// The text inside, if this is a [`Value::Text`].
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(v) => Some(v.as_str()),
            _ => None,
        }
    }

    /// The float inside, if this is a [`Value::Float`].
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            _ => None,
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Float(_) => 3,
            Value::Text(_) => 4,
            Value::Bytes(_) => 5,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Text(a), Value::Text(b)) => a.as_str().cmp(b.as_str()),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            _ => self.tag().cmp(&other.tag()),
        }
    }
}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(self.tag());
        match self {
            Value::Null => {}
            Value::Bool(v) => v.hash(state),
            Value::Int(v) => v.hash(state),
            Value::Float(v) => v.to_bits().hash(state),
            Value::Text(v) => v.as_str().hash(state),
            Value::Bytes(v) => v.hash(state),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v:?}"),
            Value::Text(v) => write!(f, "{:?}", v.as_str()),
            Value::Bytes(v) => {
                f.write_str("0x")?;
                for b in v.iter().take(32) {
                    write!(f, "{b:02x}")?;
                }
                if v.len() > 32 {
                    write!(f, "…({} bytes)", v.len())?;
                }
                Ok(())
            }
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(CompactString::from(v))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(CompactString::from(v))
    }
}
impl From<CompactString> for Value {
    fn from(v: CompactString) -> Self {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v.into_boxed_slice())
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.into())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash_of(v: &Value) -> u64 {
        let mut h = DefaultHasher::new();
        v.hash(&mut h);
        h.finish()
    }

    #[test]
    fn floats_have_a_total_order_consistent_with_hash() {
        let nan = Value::Float(f64::NAN);
        assert_eq!(nan, nan.clone());
        assert_eq!(hash_of(&nan), hash_of(&nan.clone()));
        assert_ne!(Value::Float(0.0), Value::Float(-0.0));
        assert!(Value::Float(1.0) < Value::Float(2.0));
    }

    #[test]
    fn values_of_different_types_never_compare_equal() {
        assert_ne!(Value::Int(1), Value::Float(1.0));
        assert_ne!(Value::Text("1".into()), Value::Int(1));
        assert!(Value::Null < Value::Bool(false));
    }

    #[test]
    fn short_text_and_keys_stay_inline() {
        assert_eq!(std::mem::size_of::<Value>(), 24, "a value fits in 24 bytes");
        assert_eq!(
            std::mem::size_of::<crate::Key>(),
            24,
            "a one-column key is its value"
        );
        assert!(!CompactString::from("440101234567890").is_heap_allocated());
    }

    /// The encoding every file and frame carries values in: variant index, then the
    /// payload (a byte string as length and bytes, whether boxed or in a `Vec`).
    #[test]
    fn encoding_is_pinned() {
        let values = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-2),
            Value::Float(0.5),
            Value::from("ab"),
            Value::from(vec![1u8, 2]),
        ];
        let bytes = postcard::to_stdvec(&values).expect("encodes");
        assert_eq!(
            bytes,
            [
                6, // six values
                0, // Null
                1, 1, // Bool(true)
                2, 3, // Int(-2), zigzag
                3, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f, // Float(0.5), little-endian
                4, 2, b'a', b'b', // Text
                5, 2, 1, 2, // Bytes
            ]
        );
        let back: Vec<Value> = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, values);
    }

    #[test]
    fn display_is_readable() {
        assert_eq!(Value::from("x").to_string(), "\"x\"");
        assert_eq!(Value::from(vec![1u8, 255]).to_string(), "0x01ff");
        assert_eq!(Value::from(None::<i64>).to_string(), "null");
    }
}
