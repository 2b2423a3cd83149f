//! Table schemas: typed columns and a primary key.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::key::Key;
use crate::value::{ColumnType, Value};

/// A record's values, in schema column order: what writers pass in.
pub type Row = Vec<Value>;

/// A committed record as readers get it: shared and immutable, so a read copies
/// nothing and a later write never changes what a reader holds.
pub type RowRef = std::sync::Arc<[Value]>;

/// One column of a schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Column name, unique in its schema.
    pub name: String,
    /// The type every non-null value must have.
    pub ty: ColumnType,
    /// Whether [`Value::Null`] is allowed.
    pub nullable: bool,
    /// Value used when a named insert leaves the column out.
    pub default: Option<Value>,
}

impl Column {
    /// A non-nullable column without default.
    pub fn new(name: impl Into<String>, ty: ColumnType) -> Column {
        Column {
            name: name.into(),
            ty,
            nullable: false,
            default: None,
        }
    }

    /// The same column, nullable.
    pub fn nullable(mut self) -> Column {
        self.nullable = true;
        self
    }

    /// The same column with a default value.
    pub fn default_value(mut self, v: impl Into<Value>) -> Column {
        self.default = Some(v.into());
        self
    }

    /// The value a named insert uses when it leaves this column out: its default,
    /// else null if nullable, else `None`.
    pub fn fill_value(&self) -> Option<Value> {
        match (&self.default, self.nullable) {
            (Some(d), _) => Some(d.clone()),
            (None, true) => Some(Value::Null),
            (None, false) => None,
        }
    }
}

/// A validated table schema: at least one column, unique names, a primary key of
/// one or more non-nullable columns, defaults that fit their columns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SchemaDef", into = "SchemaDef")]
pub struct Schema {
    columns: Vec<Column>,
    primary_key: Vec<usize>,
}

/// The serialized form of a [`Schema`]; decoding re-runs validation.
#[derive(Serialize, Deserialize)]
struct SchemaDef {
    columns: Vec<Column>,
    primary_key: Vec<String>,
}

impl TryFrom<SchemaDef> for Schema {
    type Error = EngineError;
    fn try_from(def: SchemaDef) -> Result<Schema> {
        let names: Vec<&str> = def.primary_key.iter().map(String::as_str).collect();
        Schema::new(def.columns.clone(), &names)
    }
}

impl From<Schema> for SchemaDef {
    fn from(s: Schema) -> SchemaDef {
        let primary_key = s.primary_key_names().map(str::to_owned).collect();
        SchemaDef {
            columns: s.columns,
            primary_key,
        }
    }
}

fn invalid(column: &str, reason: impl Into<String>) -> EngineError {
    EngineError::InvalidSchema {
        column: column.to_owned(),
        reason: reason.into(),
    }
}

impl Schema {
    /// Validates and builds a schema whose primary key is the named columns, in order.
    ///
    /// ```
    /// use kirikae_engine::{Column, ColumnType, Schema};
    /// let schema = Schema::new(
    ///     vec![
    ///         Column::new("imsi", ColumnType::Text),
    ///         Column::new("balance", ColumnType::Int).default_value(0),
    ///     ],
    ///     &["imsi"],
    /// )
    /// .unwrap();
    /// assert_eq!(schema.column_index("balance"), Some(1));
    /// assert!(Schema::new(vec![Column::new("a", ColumnType::Int)], &["b"]).is_err());
    /// ```
    pub fn new(columns: Vec<Column>, primary_key: &[&str]) -> Result<Schema> {
        if columns.is_empty() {
            return Err(invalid("", "a schema needs at least one column"));
        }
        for (i, c) in columns.iter().enumerate() {
            if c.name.is_empty() {
                return Err(invalid("", format!("column {i} has an empty name")));
            }
            if columns[..i].iter().any(|o| o.name == c.name) {
                return Err(invalid(&c.name, "name used twice"));
            }
            match &c.default {
                Some(Value::Null) if !c.nullable => {
                    return Err(invalid(&c.name, "null default on a non-nullable column"))
                }
                Some(d) if d.column_type().is_some_and(|t| t != c.ty) => {
                    return Err(invalid(
                        &c.name,
                        format!("default {d} is not of type {}", c.ty),
                    ))
                }
                _ => {}
            }
        }
        if primary_key.is_empty() {
            return Err(invalid("", "a primary key needs at least one column"));
        }
        let mut pk = Vec::with_capacity(primary_key.len());
        for name in primary_key {
            let idx = columns
                .iter()
                .position(|c| c.name == *name)
                .ok_or_else(|| invalid(name, "primary-key column does not exist"))?;
            if pk.contains(&idx) {
                return Err(invalid(name, "named twice in the primary key"));
            }
            if columns[idx].nullable {
                return Err(invalid(name, "primary-key columns cannot be nullable"));
            }
            pk.push(idx);
        }
        Ok(Schema {
            columns,
            primary_key: pk,
        })
    }

    /// The columns, in row order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Positions of the primary-key columns, in key order.
    pub fn primary_key(&self) -> &[usize] {
        &self.primary_key
    }

    /// Names of the primary-key columns, in key order.
    pub fn primary_key_names(&self) -> impl Iterator<Item = &str> {
        self.primary_key
            .iter()
            .map(|&i| self.columns[i].name.as_str())
    }

    /// Position of the named column.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The named column.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Position of the named column, or [`EngineError::UnknownColumn`] naming `table`.
    pub fn require_column(&self, table: &str, name: &str) -> Result<usize> {
        self.column_index(name)
            .ok_or_else(|| EngineError::UnknownColumn {
                table: table.to_owned(),
                column: name.to_owned(),
            })
    }

    /// Checks that `row` fits this schema: arity, types, nullability.
    pub fn validate_row(&self, table: &str, row: &[Value]) -> Result<()> {
        if row.len() != self.columns.len() {
            return Err(EngineError::WrongArity {
                table: table.to_owned(),
                expected: self.columns.len(),
                found: row.len(),
            });
        }
        for (c, v) in self.columns.iter().zip(row) {
            check_value(table, c, v)?;
        }
        Ok(())
    }

    /// Checks that `key` fits this schema's primary key: arity and types.
    pub fn validate_key(&self, table: &str, key: &Key) -> Result<()> {
        if key.values().len() != self.primary_key.len() {
            return Err(EngineError::WrongArity {
                table: table.to_owned(),
                expected: self.primary_key.len(),
                found: key.values().len(),
            });
        }
        for (&i, v) in self.primary_key.iter().zip(key.values()) {
            check_value(table, &self.columns[i], v)?;
        }
        Ok(())
    }

    /// The primary key of a row that fits this schema.
    pub fn key_of(&self, row: &[Value]) -> Key {
        Key::from_iter(self.primary_key.iter().map(|&i| row[i].clone()))
    }

    /// Whether `row`'s primary key equals `key`, without building a [`Key`].
    pub fn key_matches(&self, row: &[Value], key: &Key) -> bool {
        key.values().len() == self.primary_key.len()
            && self
                .primary_key
                .iter()
                .zip(key.values())
                .all(|(&i, v)| row.get(i) == Some(v))
    }

    /// Builds a full row from `(column, value)` pairs, filling the columns left out
    /// with their default (or null); validates the result.
    pub fn row_from_named(&self, table: &str, pairs: &[(&str, Value)]) -> Result<Row> {
        let mut row: Vec<Option<Value>> = vec![None; self.columns.len()];
        for (name, v) in pairs {
            let i = self.require_column(table, name)?;
            row[i] = Some(v.clone());
        }
        let row = row
            .into_iter()
            .zip(&self.columns)
            .map(|(v, c)| {
                v.or_else(|| c.fill_value())
                    .ok_or_else(|| EngineError::NullViolation {
                        table: table.to_owned(),
                        column: c.name.clone(),
                    })
            })
            .collect::<Result<Row>>()?;
        self.validate_row(table, &row)?;
        Ok(row)
    }

    /// `row` with the named columns replaced; validates the result.
    pub fn apply_changes(
        &self,
        table: &str,
        row: &[Value],
        changes: &[(&str, Value)],
    ) -> Result<Row> {
        let mut out = row.to_vec();
        for (name, v) in changes {
            let i = self.require_column(table, name)?;
            check_value(table, &self.columns[i], v)?;
            out[i] = v.clone();
        }
        Ok(out)
    }
}

fn check_value(table: &str, c: &Column, v: &Value) -> Result<()> {
    match v.column_type() {
        None if c.nullable => Ok(()),
        None => Err(EngineError::NullViolation {
            table: table.to_owned(),
            column: c.name.clone(),
        }),
        Some(t) if t == c.ty => Ok(()),
        Some(t) => Err(EngineError::TypeMismatch {
            table: table.to_owned(),
            column: c.name.clone(),
            expected: c.ty,
            found: t,
            value: v.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::new(
            vec![
                Column::new("id", ColumnType::Int),
                Column::new("name", ColumnType::Text).nullable(),
                Column::new("n", ColumnType::Int).default_value(7),
            ],
            &["id"],
        )
        .expect("valid schema")
    }

    #[test]
    fn rejects_bad_schemas_naming_the_column() {
        let cases: Vec<(Vec<Column>, Vec<&str>, &str)> = vec![
            (vec![], vec!["a"], ""),
            (vec![Column::new("a", ColumnType::Int); 2], vec!["a"], "a"),
            (vec![Column::new("a", ColumnType::Int)], vec![], ""),
            (vec![Column::new("a", ColumnType::Int)], vec!["b"], "b"),
            (
                vec![Column::new("a", ColumnType::Int).nullable()],
                vec!["a"],
                "a",
            ),
            (
                vec![Column::new("a", ColumnType::Int).default_value("x")],
                vec!["a"],
                "a",
            ),
            (vec![Column::new("a", ColumnType::Int)], vec!["a", "a"], "a"),
        ];
        for (cols, pk, col) in cases {
            match Schema::new(cols.clone(), &pk) {
                Err(EngineError::InvalidSchema { column, .. }) => {
                    assert_eq!(column, col, "{cols:?}")
                }
                other => panic!("{cols:?} {pk:?}: expected InvalidSchema, got {other:?}"),
            }
        }
    }

    #[test]
    fn validates_rows() {
        let s = schema();
        assert!(s
            .validate_row("t", &[1.into(), Value::Null, 2.into()])
            .is_ok());
        assert!(matches!(
            s.validate_row("t", &[1.into()]),
            Err(EngineError::WrongArity {
                expected: 3,
                found: 1,
                ..
            })
        ));
        assert!(matches!(
            s.validate_row("t", &["x".into(), Value::Null, 2.into()]),
            Err(EngineError::TypeMismatch { ref column, .. }) if column == "id"
        ));
        assert!(matches!(
            s.validate_row("t", &[1.into(), Value::Null, Value::Null]),
            Err(EngineError::NullViolation { ref column, .. }) if column == "n"
        ));
    }

    #[test]
    fn named_rows_fill_defaults_and_nulls() {
        let s = schema();
        let row = s.row_from_named("t", &[("id", 5.into())]).expect("fills");
        assert_eq!(row, vec![5.into(), Value::Null, 7.into()]);
        assert!(matches!(
            s.row_from_named("t", &[("nope", 5.into())]),
            Err(EngineError::UnknownColumn { ref column, .. }) if column == "nope"
        ));
        assert!(matches!(
            s.row_from_named("t", &[("name", "x".into())]),
            Err(EngineError::NullViolation { ref column, .. }) if column == "id"
        ));
    }

    #[test]
    fn keys() {
        let s = schema();
        let row = vec![5.into(), Value::Null, 7.into()];
        assert_eq!(s.key_of(&row), Key::single(5));
        assert!(s.key_matches(&row, &Key::single(5)));
        assert!(!s.key_matches(&row, &Key::single(6)));
        assert!(s.validate_key("t", &Key::single("x")).is_err());
    }

    #[test]
    fn serde_round_trip_revalidates() {
        let s = schema();
        let bytes = postcard::to_stdvec(&s).expect("encodes");
        let back: Schema = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, s);
    }
}
