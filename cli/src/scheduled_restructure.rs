//! `kirikae primary --restructure-at-s S --plan NAME`: the subscriber table
//! restructured online at S seconds into the run, while it replicates (the backup
//! runs the same plan and switches at the same point of the stream).

use std::collections::BTreeMap;

use kirikae::engine::Database;
use kirikae::replicate::Replicator;
use kirikae::restructure::{start, RestructureHandle, RestructureOptions};
use kirikae_workload::telecom::RunningTraffic;
use kirikae_workload::workload::{self, PLAN_NAMES, SUBSCRIBER_TABLE};

use crate::CliError;

/// Where the scheduled restructure is.
enum State {
    Waiting,
    /// With the writers' longest write before it began (the noise floor), µs.
    Running(RestructureHandle, u64),
    /// Its outcome as the final report shows it.
    Ended(serde_json::Value),
}

/// A restructure of the subscriber table to start at a time of the run.
pub struct ScheduledRestructure {
    at_s: f64,
    plan: String,
    state: State,
    /// The noise floor's window has begun.
    noise_window: bool,
}

/// The window before the start over which the writers' longest write is taken as
/// the noise floor, s.
const NOISE_WINDOW_S: f64 = 1.0;

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
            noise_window: false,
        })
    }

    /// Starts it once `elapsed_s` reaches its time, and notes its end; returns what
    /// to tell the operator. The writers' stall is read from `traffic`, the
    /// switch's place in the stream from `replicator`.
    pub fn tick(
        &mut self,
        db: &Database,
        elapsed_s: f64,
        traffic: &RunningTraffic,
        replicator: &Replicator,
    ) -> Option<String> {
        match &self.state {
            // The writers' noise floor: the same measure over the second before.
            State::Waiting if elapsed_s >= self.at_s - NOISE_WINDOW_S && !self.noise_window => {
                self.noise_window = true;
                traffic.take_write_us_max();
                None
            }
            State::Waiting if elapsed_s >= self.at_s => {
                let plan = workload::subscriber_plan(&self.plan)?;
                let before_us = traffic.take_write_us_max();
                match start(db, SUBSCRIBER_TABLE, plan, RestructureOptions::default()) {
                    Ok(h) => {
                        self.state = State::Running(h, before_us);
                        Some(format!(
                            "restructure of {SUBSCRIBER_TABLE} ({}) started",
                            self.plan
                        ))
                    }
                    Err(e) => {
                        let said = format!("restructure of {SUBSCRIBER_TABLE} refused: {e}");
                        let outcome = self.outcome(Err(e.to_string()), None, None);
                        self.state = State::Ended(outcome);
                        Some(said)
                    }
                }
            }
            State::Running(h, _) if h.is_finished() => Some(self.end(traffic, replicator)),
            _ => None,
        }
    }

    /// Waits for a running restructure; its outcome for the final report (`null`
    /// if it never started).
    pub fn finish(
        mut self,
        traffic: &RunningTraffic,
        replicator: &Replicator,
    ) -> serde_json::Value {
        if matches!(self.state, State::Running(..)) {
            say!("{}", self.end(traffic, replicator));
        }
        self.outcome_so_far()
    }

    /// The outcome once it ended (`null` before).
    pub fn outcome_so_far(&self) -> serde_json::Value {
        match &self.state {
            State::Ended(v) => v.clone(),
            _ => serde_json::Value::Null,
        }
    }

    fn end(&mut self, traffic: &RunningTraffic, replicator: &Replicator) -> String {
        let State::Running(h, before_us) = std::mem::replace(&mut self.state, State::Waiting)
        else {
            return String::new();
        };
        let outcome = h.wait();
        // Every write from the start to here, as its session timed it.
        let stall_us = traffic.take_write_us_max();
        let switch_seq = replicator
            .catalog_changes()
            .iter()
            .rev()
            .find(|c| c.table == SUBSCRIBER_TABLE && c.change == "switched")
            .and_then(|c| c.seq);
        let said = match &outcome {
            Ok(r) => format!(
                "restructure of {SUBSCRIBER_TABLE} switched at sequence {}: {} rows, writers held {} µs by the switch's timer; longest write meanwhile {stall_us} µs (before: {before_us} µs)",
                switch_seq.map_or("-".to_owned(), |s| s.0.to_string()),
                r.rows_final,
                r.stall.as_micros()
            ),
            Err(e) => format!("restructure of {SUBSCRIBER_TABLE} failed: {e}"),
        };
        let outcome = outcome
            .map(|r| r.stall.as_micros() as u64)
            .map_err(|e| e.to_string());
        let mut value = self.outcome(outcome, Some((stall_us, before_us)), switch_seq);
        value["event"] = "restructure".into();
        self.state = State::Ended(value);
        said
    }

    fn outcome(
        &self,
        outcome: Result<u64, String>,
        writes_us_max: Option<(u64, u64)>,
        switch_seq: Option<kirikae::replicate::Seq>,
    ) -> serde_json::Value {
        serde_json::json!({
            "table": SUBSCRIBER_TABLE,
            "plan": self.plan,
            "switched": outcome.is_ok(),
            "switch_seq": switch_seq.map(|s| s.0),
            "stall_us": outcome.as_ref().ok(),
            "writer_stall_us_max": writes_us_max.map(|w| w.0),
            "writer_us_max_before": writes_us_max.map(|w| w.1),
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
