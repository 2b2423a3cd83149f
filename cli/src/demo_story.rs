//! The demo's story as the demo process follows it: the nodes' event lines heard,
//! the step it is at, and the live progress line.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use crate::node_events;
use crate::node_process::{Line, Node};
use crate::progress::PlainLines;
use crate::CliError;

/// Roles in the story.
pub const PRIMARY: &str = "primary";
pub const BACKUP: &str = "backup";
pub const REJOINED: &str = "old primary, rejoining as backup";

/// What the nodes said so far, as the story needs it.
#[derive(Default)]
pub struct Heard {
    /// Per node: its last status event and when it arrived.
    pub status: BTreeMap<String, (Instant, serde_json::Value)>,
    /// (seconds, ops/s) of the node serving writes.
    pub points: Vec<(f64, f64)>,
    pub restructure_started_s: Option<f64>,
    pub restructure: Option<serde_json::Value>,
    pub switch_s: Option<f64>,
    /// The backup's live catalog changes (not replayed at a restart).
    pub backup_catalog: Vec<serde_json::Value>,
    pub serving: Option<(f64, serde_json::Value)>,
}

impl Heard {
    /// `node` serves writes and its backup is in step (the link is duplex: no
    /// catch-up or copy under way).
    pub fn in_step(&self, node: &str) -> bool {
        self.status
            .get(node)
            .is_some_and(|(_, s)| s["state"] == "Duplex")
    }
}

/// The story's clock, its nodes, and what they said.
pub struct Story {
    pub started: Instant,
    pub heard: Heard,
    pub bar: ProgressBar,
    pub plain: PlainLines,
    pub phase: &'static str,
    pub json: bool,
}

impl Story {
    pub fn t(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.started).as_secs_f64()
    }

    /// Tells the operator of a step.
    pub fn say(&mut self, what: &str) {
        let line = format!("{:>6.1}s  {what}", self.t(Instant::now()));
        if self.json || self.plain.enabled() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Takes in what `node` printed.
    pub fn hear(&mut self, node: &str, lines: Vec<Line>) {
        for Line { at, text } in lines {
            let Some((event, value)) = node_events::parse(&text) else {
                continue;
            };
            let t = self.t(at);
            match event.as_str() {
                "status" => {
                    let ops = value["ops"].as_u64().unwrap_or(0);
                    if let Some((was_at, was)) = self.heard.status.get(node) {
                        let dt = at.saturating_duration_since(*was_at).as_secs_f64();
                        let d_ops = ops.saturating_sub(was["ops"].as_u64().unwrap_or(0));
                        if dt > 0.0 {
                            self.heard.points.push((t, d_ops as f64 / dt));
                        }
                    }
                    self.heard.status.insert(node.to_owned(), (at, value));
                }
                "restructure_started" => self.heard.restructure_started_s = Some(t),
                "restructure" => {
                    self.heard.switch_s = Some(t);
                    self.heard.restructure = Some(value);
                }
                "catalog_applied" if value["replayed"] == false && node == BACKUP => {
                    self.heard.backup_catalog.push(value)
                }
                "serving" => self.heard.serving = Some((t, value)),
                _ => {}
            }
        }
    }

    /// Hears `nodes` until `done` holds, for at most `timeout`; the error names
    /// `what` was awaited.
    pub fn wait(
        &mut self,
        nodes: &mut [&mut Node],
        what: &str,
        timeout: Duration,
        done: impl Fn(&Heard) -> bool,
    ) -> Result<(), CliError> {
        let deadline = Instant::now() + timeout;
        loop {
            for node in nodes.iter_mut() {
                let lines = node.drain();
                self.hear(&node.name, lines);
            }
            self.show();
            if done(&self.heard) {
                return Ok(());
            }
            if Instant::now() > deadline {
                // Each node's last status, so that a run that did not get there
                // says where it stood (link state, sequences, lag).
                let last: Vec<String> = nodes
                    .iter()
                    .map(|n| match self.heard.status.get(&n.name) {
                        Some((at, status)) => format!(
                            "{}: {status} ({:.1} s ago)",
                            n.name,
                            at.elapsed().as_secs_f64()
                        ),
                        None => format!("{}: no status heard", n.name),
                    })
                    .collect();
                return Err(CliError::Usage(format!(
                    "demo: {what} did not happen within {} s; last status: {}",
                    timeout.as_secs(),
                    last.join("; ")
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Hears `nodes` for `seconds`.
    pub fn hold(&mut self, nodes: &mut [&mut Node], seconds: f64) -> Result<(), CliError> {
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        self.wait(
            nodes,
            "a pause",
            Duration::from_secs_f64(seconds + 5.0),
            |_| Instant::now() >= until,
        )
    }

    pub fn show(&mut self) {
        let rate = self.heard.points.last().map_or(0.0, |p| p.1);
        // The node serving writes: the one whose status came last.
        let serving = self.heard.status.iter().max_by_key(|(_, (at, _))| *at);
        let link = serving.map_or(String::new(), |(node, (_, s))| {
            format!(
                "{node} serving, link {} seq {} acked {}",
                s["state"].as_str().unwrap_or("?"),
                s["seq"],
                s["acked"]
            )
        });
        let msg = format!("{:<30} {rate:>8.0} ops/s   {link}", self.phase);
        let t = self.t(Instant::now());
        if !self.json && self.plain.due(t) {
            eprintln!("{t:>6.1}s  {msg}");
        }
        self.bar.set_message(msg);
        self.bar.tick();
    }
}
