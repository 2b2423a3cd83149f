//! Conversions of a column's values from one type to another: the `ChangeType` step of
//! a plan.

use kirikae_engine::{ColumnType, Value};
use serde::{Deserialize, Serialize};

/// A named conversion of a column's values from one type to another. Null stays null.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Conversion {
    /// Decimal text of the integer.
    IntToText,
    /// Parses decimal text (surrounding spaces and a leading `+` allowed); fails on
    /// anything else.
    TextToInt,
    /// Exact for |n| ≤ 2^53, nearest float beyond.
    IntToFloat,
    /// Fails unless the float is integral and in range.
    FloatToInt,
    /// Shortest text that reads back as the same float.
    FloatToText,
    /// Parses text as a float; fails on anything else.
    TextToFloat,
    /// `false` → 0, `true` → 1.
    BoolToInt,
    /// 0 → `false`, 1 → `true`; fails on other values.
    IntToBool,
    /// The UTF-8 bytes of the text.
    TextToBytes,
    /// Fails unless the bytes are UTF-8.
    BytesToText,
}

impl Conversion {
    /// The column type converted from.
    pub fn from_type(self) -> ColumnType {
        use Conversion::*;
        match self {
            IntToText | IntToFloat | IntToBool => ColumnType::Int,
            TextToInt | TextToFloat | TextToBytes => ColumnType::Text,
            FloatToInt | FloatToText => ColumnType::Float,
            BoolToInt => ColumnType::Bool,
            BytesToText => ColumnType::Bytes,
        }
    }

    /// The column type converted to.
    pub fn to_type(self) -> ColumnType {
        use Conversion::*;
        match self {
            IntToText | FloatToText | BytesToText => ColumnType::Text,
            TextToInt | FloatToInt | BoolToInt => ColumnType::Int,
            IntToFloat | TextToFloat => ColumnType::Float,
            IntToBool => ColumnType::Bool,
            TextToBytes => ColumnType::Bytes,
        }
    }

    /// Converts one value; the error says why it cannot be.
    ///
    /// Text to int accepts surrounding whitespace and a sign, as `str::parse` does.
    pub fn apply(self, v: &Value) -> std::result::Result<Value, String> {
        use Conversion::*;
        let wrong = || format!("expected {}, got {v}", self.from_type());
        Ok(match (self, v) {
            (_, Value::Null) => Value::Null,
            (IntToText, Value::Int(n)) => Value::from(n.to_string()),
            (TextToInt, Value::Text(s)) => Value::Int(parse_int(s)?),
            (IntToFloat, Value::Int(n)) => Value::Float(*n as f64),
            (FloatToInt, Value::Float(f)) => {
                if f.fract() != 0.0
                    || !f.is_finite()
                    || *f < -(2f64.powi(63))
                    || *f >= 2f64.powi(63)
                {
                    return Err("not an integral float in i64 range".to_owned());
                }
                Value::Int(*f as i64)
            }
            (FloatToText, Value::Float(f)) => Value::from(format!("{f:?}")),
            (TextToFloat, Value::Text(s)) => Value::Float(
                s.trim()
                    .parse::<f64>()
                    .map_err(|e| format!("not a number ({e})"))?,
            ),
            (BoolToInt, Value::Bool(b)) => Value::Int(i64::from(*b)),
            (IntToBool, Value::Int(0)) => Value::Bool(false),
            (IntToBool, Value::Int(1)) => Value::Bool(true),
            (IntToBool, Value::Int(_)) => return Err("only 0 and 1 convert to bool".to_owned()),
            (TextToBytes, Value::Text(s)) => Value::Bytes(s.as_bytes().into()),
            (BytesToText, Value::Bytes(b)) => {
                Value::from(std::str::from_utf8(b).map_err(|e| format!("not UTF-8 ({e})"))?)
            }
            _ => return Err(wrong()),
        })
    }
}

/// Text to integer. Plain digits (MSISDNs, IMSIs, codes), the common case in a
/// restructure of telecom tables, take a loop of their own: `str::parse` checks for
/// overflow at every digit, which was a tenth of the demo plan's copy time.
fn parse_int(s: &str) -> std::result::Result<i64, String> {
    let digits = s.as_bytes();
    // 18 digits cannot overflow an i64.
    if (1..=18).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) {
        return Ok(digits
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0')));
    }
    s.trim()
        .parse::<i64>()
        .map_err(|e| format!("not an integer ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn text_to_int_agrees_with_str_parse(s in "[ +-]?[0-9]{0,21}[ a]?|[0-9]{18,20}") {
            let ours = parse_int(&s).ok();
            proptest::prop_assert_eq!(ours, s.trim().parse::<i64>().ok(), "{:?}", s);
        }
    }

    #[test]
    fn conversions_round_trip_where_they_should() {
        for n in [0i64, -1, 42, i64::MAX, i64::MIN] {
            let t = Conversion::IntToText
                .apply(&Value::Int(n))
                .expect("to text");
            assert_eq!(
                Conversion::TextToInt.apply(&t).expect("back"),
                Value::Int(n)
            );
        }
        for f in [0.5f64, -3.25, 1e300] {
            let t = Conversion::FloatToText
                .apply(&Value::Float(f))
                .expect("to text");
            assert_eq!(
                Conversion::TextToFloat.apply(&t).expect("back"),
                Value::Float(f)
            );
        }
        assert!(Conversion::FloatToInt.apply(&Value::Float(1.5)).is_err());
        assert!(Conversion::FloatToInt
            .apply(&Value::Float(f64::NAN))
            .is_err());
        assert!(Conversion::IntToBool.apply(&Value::Int(2)).is_err());
        assert!(Conversion::BytesToText
            .apply(&Value::from(vec![0xff]))
            .is_err());
        assert_eq!(
            Conversion::TextToInt.apply(&Value::Null).expect("null"),
            Value::Null
        );
        assert!(Conversion::TextToInt.apply(&Value::from("+-5")).is_err());
        assert_eq!(
            Conversion::TextToInt
                .apply(&Value::from(" +7 "))
                .expect("plus"),
            Value::Int(7)
        );
    }
}
