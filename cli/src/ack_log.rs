//! `--ack-log FILE`: one JSON line per acknowledged commit, written and flushed to the
//! file before the committing session goes on, so that an outside checker can hold
//! the new primary to every commit this node acknowledged, even after a SIGKILL.
//!
//! A line: `{"t_ms":…,"began_ms":…,"table":…,"key":[…],"replication":"replicated|queued|not_replicated|skipped","seq":…,"mode":…}`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kirikae::engine::{Database, Key, SessionInfo, Value};
use kirikae::replicate::Replication;
use kirikae_workload::telecom::{Acknowledged, CommitObserver};
use parking_lot::Mutex;

use crate::CliError;

/// Opens (truncating) `path` and returns the observer that writes to it.
pub fn open(path: &Path) -> Result<CommitObserver, CliError> {
    let file = File::create(path)
        .map_err(|e| CliError::Usage(format!("--ack-log {}: {e}", path.display())))?;
    let out = Mutex::new(BufWriter::new(file));
    Ok(Arc::new(move |ack: Acknowledged<'_>| {
        let line = line(&ack);
        let mut out = out.lock();
        // A full disk must not stop the service; the checker sees the gap.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }))
}

/// Milliseconds since the Unix epoch (0 for a clock before it): the time base of the
/// ack log, and of the lines a checker compares with it.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn line(ack: &Acknowledged<'_>) -> serde_json::Value {
    let t_ms = unix_ms(SystemTime::now());
    let (replication, seq, mode) = match Replication::of(ack.note) {
        Some(Replication::Replicated { seq }) => {
            ("replicated", Some(seq.0), Some("sync".to_owned()))
        }
        Some(Replication::Queued { seq, mode }) => ("queued", Some(seq.0), Some(mode.to_string())),
        Some(Replication::NotReplicated { seq, .. }) => {
            ("not_replicated", Some(seq.0), Some("sync".to_owned()))
        }
        Some(Replication::Skipped) | None => ("skipped", None, None),
    };
    serde_json::json!({
        "t_ms": t_ms,
        "began_ms": unix_ms(ack.began),
        "table": ack.table,
        "key": ack.key.values(),
        "replication": replication,
        "seq": seq,
        "mode": mode,
    })
}

/// Reads the dead primary's ack log: `(lost, dual, checked)`: replicated commits
/// missing from `db`, commits acknowledged after `promoted_ms`, replicated commits
/// looked up.
pub fn check(path: &Path, db: &Database, promoted_ms: u64) -> Result<(u64, u64, u64), CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("ack log {}: {e}", path.display())))?;
    let reader = db.session(SessionInfo::default());
    let (mut lost, mut dual, mut checked) = (0, 0, 0);
    for line in text.lines() {
        // A line cut by the kill is not an acknowledgement.
        let Ok(ack) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if ack["t_ms"].as_u64().is_some_and(|t| t > promoted_ms) {
            dual += 1;
        }
        if ack["replication"] != "replicated" {
            continue;
        }
        checked += 1;
        let table = ack["table"].as_str().unwrap_or_default();
        let values: Vec<Value> = serde_json::from_value(ack["key"].clone())?;
        if reader.get(table, &Key::new(values))?.is_none() {
            lost += 1;
        }
    }
    Ok((lost, dual, checked))
}
