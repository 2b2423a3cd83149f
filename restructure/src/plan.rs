//! Plans: what a restructure does to each row, as serde data (or a closure), validated
//! against the table before anything starts and compiled to a row mapper.

use std::fmt;
use std::sync::Arc;

use kirikae_engine::{Column, Row, RowRef, Schema, Value};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::conversion::Conversion;
use crate::error::{RestructureError, Result};

/// One step of a plan; steps apply in order, each to the result of the previous one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Step {
    /// Appends a column; existing rows get its default (or null if nullable).
    AddColumn {
        /// The new column; needs a default unless nullable.
        column: Column,
    },
    /// Removes a column (not part of the primary key).
    DropColumn {
        /// The column to drop.
        name: String,
    },
    /// Renames a column.
    RenameColumn {
        /// Current name.
        from: String,
        /// New name.
        to: String,
    },
    /// Changes a column's type through a named conversion.
    ChangeType {
        /// The column.
        column: String,
        /// How each value converts.
        conversion: Conversion,
    },
    /// Makes these columns the primary key; records that collide abort the plan.
    ChangePrimaryKey {
        /// The new key columns, in order.
        columns: Vec<String>,
    },
    /// Compacts RIDs and reclaims holes. Every restructure copies into fresh slots in
    /// RID order, so this step changes no value; it names the intent.
    Reorganize,
}

/// A restructure plan: a sequence of steps. Serializable, so it can be stored, shown
/// and replicated.
///
/// ```
/// use kirikae_restructure::{Conversion, Plan, Step};
/// use kirikae_engine::{Column, ColumnType};
/// let plan = Plan::new(vec![
///     Step::AddColumn { column: Column::new("plan_id", ColumnType::Int).default_value(0) },
///     Step::ChangeType { column: "msisdn".into(), conversion: Conversion::TextToInt },
/// ]);
/// let bytes = postcard::to_stdvec(&plan).unwrap();
/// assert_eq!(postcard::from_bytes::<Plan>(&bytes).unwrap(), plan);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The steps, applied in order.
    pub steps: Vec<Step>,
}

impl Plan {
    /// A plan of these steps.
    pub fn new(steps: Vec<Step>) -> Plan {
        Plan { steps }
    }
}

/// A row function supplied by an embedder: maps an old row to a new one, or says why
/// it cannot.
pub type RowFn = Arc<dyn Fn(&[Value]) -> std::result::Result<Row, String> + Send + Sync>;

/// What a restructure applies: a data [`Plan`], or a closure with its target schema.
#[derive(Clone)]
pub enum Transform {
    /// A serializable plan.
    Plan(Plan),
    /// An embedder's row function and the schema its rows fit.
    Custom {
        /// Schema of the new table.
        target: Schema,
        /// The row function.
        map: RowFn,
    },
}

impl fmt::Debug for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::Plan(p) => f.debug_tuple("Plan").field(p).finish(),
            Transform::Custom { target, .. } => f
                .debug_struct("Custom")
                .field("target", target)
                .finish_non_exhaustive(),
        }
    }
}

impl Transform {
    /// The plan, if this is one (a row function is code, not data).
    pub fn plan(&self) -> Option<&Plan> {
        match self {
            Transform::Plan(plan) => Some(plan),
            Transform::Custom { .. } => None,
        }
    }
}

impl From<Plan> for Transform {
    fn from(p: Plan) -> Transform {
        Transform::Plan(p)
    }
}

/// Where a new column's value comes from.
#[derive(Clone, Debug)]
enum Source {
    /// An old column, through zero or more conversions.
    Old(usize, Vec<Conversion>),
    /// The same value for every row.
    Constant(Value),
}

#[derive(Clone)]
enum Mapper {
    Columns(Vec<Source>),
    Custom(RowFn),
}

/// A transform checked against a source schema: the new schema and a row mapper.
#[derive(Clone)]
pub struct CompiledTransform {
    target: Schema,
    mapper: Mapper,
    /// Old column names, for error messages.
    source_names: Vec<String>,
}

/// Why one row did not map.
#[derive(Clone, Debug, PartialEq)]
pub struct RowFailure {
    /// The column (old name) whose value failed; empty for a row function.
    pub column: String,
    /// The value, rendered.
    pub value: String,
    /// Why.
    pub reason: String,
}

impl Transform {
    /// Checks the transform against `source` (the table's schema) and compiles it.
    /// Errors name the column at fault.
    pub fn compile(&self, table: &str, source: &Schema) -> Result<CompiledTransform> {
        let source_names = source.columns().iter().map(|c| c.name.clone()).collect();
        match self {
            Transform::Custom { target, map } => Ok(CompiledTransform {
                target: target.clone(),
                mapper: Mapper::Custom(Arc::clone(map)),
                source_names,
            }),
            Transform::Plan(plan) => {
                let (target, sources) = compile_plan(table, plan, source)?;
                Ok(CompiledTransform {
                    target,
                    mapper: Mapper::Columns(sources),
                    source_names,
                })
            }
        }
    }
}

fn invalid(table: &str, column: &str, reason: impl Into<String>) -> RestructureError {
    RestructureError::InvalidPlan {
        table: table.to_owned(),
        column: column.to_owned(),
        reason: reason.into(),
    }
}

fn compile_plan(table: &str, plan: &Plan, source: &Schema) -> Result<(Schema, Vec<Source>)> {
    let mut cols: Vec<(Column, Source)> = source
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| (c.clone(), Source::Old(i, Vec::new())))
        .collect();
    let mut key: Vec<String> = source.primary_key_names().map(str::to_owned).collect();
    let find =
        |cols: &[(Column, Source)], name: &str| cols.iter().position(|(c, _)| c.name == name);
    for step in &plan.steps {
        match step {
            Step::AddColumn { column } => {
                if find(&cols, &column.name).is_some() {
                    return Err(invalid(table, &column.name, "column already exists"));
                }
                let fill = column.fill_value().ok_or_else(|| {
                    invalid(
                        table,
                        &column.name,
                        "a new non-nullable column needs a default",
                    )
                })?;
                cols.push((column.clone(), Source::Constant(fill)));
            }
            Step::DropColumn { name } => {
                let i = find(&cols, name).ok_or_else(|| invalid(table, name, "no such column"))?;
                if key.contains(name) {
                    return Err(invalid(
                        table,
                        name,
                        "part of the primary key; change the key first",
                    ));
                }
                cols.remove(i);
            }
            Step::RenameColumn { from, to } => {
                let i = find(&cols, from).ok_or_else(|| invalid(table, from, "no such column"))?;
                if find(&cols, to).is_some() {
                    return Err(invalid(table, to, "column already exists"));
                }
                cols[i].0.name.clone_from(to);
                for k in key.iter_mut().filter(|k| *k == from) {
                    k.clone_from(to);
                }
            }
            Step::ChangeType { column, conversion } => {
                let i =
                    find(&cols, column).ok_or_else(|| invalid(table, column, "no such column"))?;
                let (col, src) = &mut cols[i];
                if col.ty != conversion.from_type() {
                    return Err(invalid(
                        table,
                        column,
                        format!(
                            "is {}, conversion {conversion:?} needs {}",
                            col.ty,
                            conversion.from_type()
                        ),
                    ));
                }
                col.ty = conversion.to_type();
                if let Some(d) = &col.default {
                    col.default = Some(
                        conversion
                            .apply(d)
                            .map_err(|e| invalid(table, column, format!("default {d}: {e}")))?,
                    );
                }
                match src {
                    Source::Old(_, chain) => chain.push(*conversion),
                    Source::Constant(v) => {
                        *v = conversion
                            .apply(v)
                            .map_err(|e| invalid(table, column, format!("fill value {v}: {e}")))?;
                    }
                }
            }
            Step::ChangePrimaryKey { columns } => {
                for c in columns {
                    find(&cols, c).ok_or_else(|| invalid(table, c, "no such column"))?;
                }
                key.clone_from(columns);
            }
            Step::Reorganize => {}
        }
    }
    let key_refs: Vec<&str> = key.iter().map(String::as_str).collect();
    let (columns, sources): (Vec<Column>, Vec<Source>) = cols.into_iter().unzip();
    let target = Schema::new(columns, &key_refs).map_err(|e| match e {
        kirikae_engine::EngineError::InvalidSchema { column, reason } => {
            invalid(table, &column, reason)
        }
        other => invalid(table, "", other.to_string()),
    })?;
    Ok((target, sources))
}

impl CompiledTransform {
    /// The new table's schema.
    pub fn target(&self) -> &Schema {
        &self.target
    }

    /// Maps one old row to its new row. The result fits [`target`](Self::target) for a
    /// plan; a row function's result is checked when it is stored.
    pub fn apply(&self, row: &[Value]) -> std::result::Result<Row, RowFailure> {
        match &self.mapper {
            Mapper::Custom(f) => self.call(f, row),
            Mapper::Columns(sources) => {
                let mut out = Vec::with_capacity(sources.len());
                for s in sources {
                    out.push(self.value(s, row)?);
                }
                Ok(out)
            }
        }
    }

    /// [`apply`](Self::apply) into the shared form a table stores, allocated once at
    /// its exact size (the copy's hot path: no `Vec` moved into an `Arc` afterwards).
    pub fn apply_shared(&self, row: &[Value]) -> std::result::Result<RowRef, RowFailure> {
        match &self.mapper {
            Mapper::Custom(f) => self.call(f, row).map(RowRef::from),
            Mapper::Columns(sources) => {
                // The fallible part first, on the stack; then one exact allocation (an
                // iterator over a range has a trusted length).
                let mut values: SmallVec<[Value; 16]> = SmallVec::new();
                for s in sources {
                    values.push(self.value(s, row)?);
                }
                Ok((0..values.len())
                    .map(|i| std::mem::replace(&mut values[i], Value::Null))
                    .collect())
            }
        }
    }

    fn call(&self, f: &RowFn, row: &[Value]) -> std::result::Result<Row, RowFailure> {
        f(row).map_err(|reason| RowFailure {
            column: String::new(),
            value: format!("{row:?}"),
            reason,
        })
    }

    /// One new column's value from the old row.
    fn value(&self, source: &Source, row: &[Value]) -> std::result::Result<Value, RowFailure> {
        match source {
            Source::Constant(v) => Ok(v.clone()),
            Source::Old(i, chain) => {
                let failed = |reason| RowFailure {
                    column: self.source_names[*i].clone(),
                    value: row[*i].to_string(),
                    reason,
                };
                // The first conversion reads the old value in place: no copy of it.
                let Some((first, rest)) = chain.split_first() else {
                    return Ok(row[*i].clone());
                };
                let mut v = first.apply(&row[*i]).map_err(failed)?;
                for c in rest {
                    v = c.apply(&v).map_err(failed)?;
                }
                Ok(v)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kirikae_engine::ColumnType;

    fn subscriber() -> Schema {
        Schema::new(
            vec![
                Column::new("imsi", ColumnType::Text),
                Column::new("msisdn", ColumnType::Text),
                Column::new("balance", ColumnType::Int),
            ],
            &["imsi"],
        )
        .expect("schema")
    }

    fn compile(steps: Vec<Step>) -> Result<CompiledTransform> {
        Transform::Plan(Plan::new(steps)).compile("sub", &subscriber())
    }

    #[test]
    fn steps_compose_into_a_target_schema_and_a_mapper() {
        let c = compile(vec![
            Step::AddColumn {
                column: Column::new("plan", ColumnType::Text).default_value("basic"),
            },
            Step::ChangeType {
                column: "msisdn".into(),
                conversion: Conversion::TextToInt,
            },
            Step::RenameColumn {
                from: "balance".into(),
                to: "credit".into(),
            },
            Step::ChangeType {
                column: "credit".into(),
                conversion: Conversion::IntToFloat,
            },
            Step::Reorganize,
        ])
        .expect("valid");
        let names: Vec<&str> = c
            .target()
            .columns()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["imsi", "msisdn", "credit", "plan"]);
        let out = c
            .apply(&["440".into(), "09012345678".into(), 5.into()])
            .expect("maps");
        assert_eq!(
            out,
            vec![
                "440".into(),
                Value::Int(9_012_345_678),
                Value::Float(5.0),
                "basic".into()
            ]
        );
    }

    #[test]
    fn conversion_failures_name_the_column_and_value() {
        let c = compile(vec![Step::ChangeType {
            column: "msisdn".into(),
            conversion: Conversion::TextToInt,
        }])
        .expect("valid");
        let err = c
            .apply(&["440".into(), "090-1234".into(), 5.into()])
            .expect_err("fails");
        assert_eq!(err.column, "msisdn");
        assert_eq!(err.value, "\"090-1234\"");
    }

    #[test]
    fn invalid_plans_name_the_column() {
        let cases = vec![
            (
                Step::DropColumn {
                    name: "nope".into(),
                },
                "nope",
            ),
            (
                Step::DropColumn {
                    name: "imsi".into(),
                },
                "imsi",
            ),
            (
                Step::AddColumn {
                    column: Column::new("balance", ColumnType::Int),
                },
                "balance",
            ),
            (
                Step::AddColumn {
                    column: Column::new("x", ColumnType::Int),
                },
                "x",
            ),
            (
                Step::RenameColumn {
                    from: "imsi".into(),
                    to: "msisdn".into(),
                },
                "msisdn",
            ),
            (
                Step::ChangeType {
                    column: "balance".into(),
                    conversion: Conversion::TextToInt,
                },
                "balance",
            ),
            (
                Step::ChangePrimaryKey {
                    columns: vec!["zz".into()],
                },
                "zz",
            ),
            (Step::ChangePrimaryKey { columns: vec![] }, ""),
        ];
        for (step, column) in cases {
            match compile(vec![step.clone()]) {
                Err(RestructureError::InvalidPlan { column: c, .. }) => {
                    assert_eq!(c, column, "{step:?}")
                }
                other => panic!(
                    "{step:?}: expected InvalidPlan, got {:?}",
                    other.map(|_| ())
                ),
            }
        }
    }
}
