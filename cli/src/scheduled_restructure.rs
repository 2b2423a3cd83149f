//! `kirikae primary --restructure-at-s S --plan NAME`: the subscriber table
//! restructured online at S seconds into the run, while it replicates (the backup
//! runs the same plan and switches at the same point of the stream).

use std::collections::BTreeMap;

use kirikae::engine::Database;
use kirikae::restructure::{start, RestructureHandle, RestructureOptions};
use kirikae_workload::workload::{self, PLAN_NAMES, SUBSCRIBER_TABLE};

use crate::CliError;

/// Where the scheduled restructure is.
enum State {
    Waiting,
    Running(RestructureHandle),
    /// Its outcome as the final report shows it.
    Ended(serde_json::Value),
}

/// A restructure of the subscriber table to start at a time of the run.
pub struct ScheduledRestructure {
    at_s: f64,
    plan: String,
    state: State,
}

impl ScheduledRestructure {
    /// At `at_s` seconds, by the plan named `plan` (refused here if unknown).
    pub fn new(at_s: f64, plan: &str) -> Result<ScheduledRestructure, CliError> {
        if workload::subscriber_plan(plan).is_none() {
            return Err(CliError::Usage(format!(
                "--plan: unknown plan `{plan}` (one of: {})",
                PLAN_NAMES.join(", ")
            )));
        }
        Ok(ScheduledRestructure {
            at_s,
            plan: plan.to_owned(),
            state: State::Waiting,
        })
    }

    /// Starts it once `elapsed_s` reaches its time, and notes its end; returns what
    /// to tell the operator.
    pub fn tick(&mut self, db: &Database, elapsed_s: f64) -> Option<String> {
        match &self.state {
            State::Waiting if elapsed_s >= self.at_s => {
                let plan = workload::subscriber_plan(&self.plan)?;
                match start(db, SUBSCRIBER_TABLE, plan, RestructureOptions::default()) {
                    Ok(h) => {
                        self.state = State::Running(h);
                        Some(format!(
                            "restructure of {SUBSCRIBER_TABLE} ({}) started",
                            self.plan
                        ))
                    }
                    Err(e) => {
                        let said = format!("restructure of {SUBSCRIBER_TABLE} refused: {e}");
                        self.state = State::Ended(self.outcome(Err(e.to_string())));
                        Some(said)
                    }
                }
            }
            State::Running(h) if h.is_finished() => Some(self.end()),
            _ => None,
        }
    }

    /// Waits for a running restructure; its outcome for the final report (`null`
    /// if it never started).
    pub fn finish(mut self) -> serde_json::Value {
        if matches!(self.state, State::Running(_)) {
            say!("{}", self.end());
        }
        match self.state {
            State::Ended(v) => v,
            _ => serde_json::Value::Null,
        }
    }

    fn end(&mut self) -> String {
        let State::Running(h) = std::mem::replace(&mut self.state, State::Waiting) else {
            return String::new();
        };
        let (said, outcome) = match h.wait() {
            Ok(r) => (
                format!(
                    "restructure of {SUBSCRIBER_TABLE} switched: {} rows, writers held {} µs",
                    r.rows_final,
                    r.stall.as_micros()
                ),
                Ok(r.stall.as_micros() as u64),
            ),
            Err(e) => (
                format!("restructure of {SUBSCRIBER_TABLE} failed: {e}"),
                Err(e.to_string()),
            ),
        };
        self.state = State::Ended(self.outcome(outcome));
        said
    }

    fn outcome(&self, outcome: Result<u64, String>) -> serde_json::Value {
        serde_json::json!({
            "table": SUBSCRIBER_TABLE,
            "plan": self.plan,
            "switched": outcome.is_ok(),
            "stall_us": outcome.as_ref().ok(),
            "error": outcome.err(),
        })
    }
}

/// Each table's column names, for comparing schemas across nodes.
pub fn schemas(db: &Database) -> BTreeMap<String, Vec<String>> {
    db.tables()
        .iter()
        .map(|t| {
            let columns = t.schema().columns().iter().map(|c| c.name.clone());
            (t.name().to_owned(), columns.collect())
        })
        .collect()
}
