//! The admin endpoint's view of the two node kinds: a [`Backup`] (promotable) and a
//! [`Replicator`] (a primary, which can hand over).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::admin::{AdminNode, NodeReport, NodeRole};
use crate::backup::Backup;
use crate::error::{ReplicateError, Result};
use crate::replicator::Replicator;
use crate::seq::Seq;

/// The numeric fields of `value` (a serialized stats struct), as counters named
/// `prefix_field`.
fn counters(prefix: &str, value: impl serde::Serialize, into: &mut BTreeMap<String, u64>) {
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(value) {
        for (name, v) in fields {
            match v {
                serde_json::Value::Number(n) => {
                    if let Some(n) = n.as_u64() {
                        into.insert(format!("{prefix}_{name}"), n);
                    }
                }
                serde_json::Value::Bool(b) => {
                    into.insert(format!("{prefix}_{name}"), u64::from(b));
                }
                _ => {}
            }
        }
    }
}

impl AdminNode for Backup {
    fn report(&self) -> NodeReport {
        let s = self.status();
        let mut all = BTreeMap::new();
        counters("backup", &s.stats, &mut all);
        counters("backup", &s, &mut all);
        NodeReport {
            role: if s.promoted.is_some() {
                NodeRole::Primary
            } else {
                NodeRole::Backup
            },
            epoch: s.promoted.as_ref().map_or(s.epoch, |p| p.epoch),
            last_seq: s.last_seq,
            lag_txns: s.logged_seq.since(s.last_seq),
            log_bytes: s.log_bytes,
            counters: all,
        }
    }

    fn promote(&self, at_seq: Option<Seq>) -> Result<serde_json::Value> {
        if let Some(at) = at_seq {
            let held = self.status().last_seq;
            if held != at {
                return Err(ReplicateError::Protocol {
                    reason: format!("not promoted: this backup holds up to {held}, not {at}"),
                });
            }
        }
        let promotion = self.promote()?;
        Ok(serde_json::to_value(promotion).unwrap_or_default())
    }
}

impl AdminNode for Replicator {
    fn report(&self) -> NodeReport {
        let m = self.metrics();
        let mut all = BTreeMap::new();
        counters("link", &m, &mut all);
        let role = if self.fenced().is_some() {
            NodeRole::Fenced
        } else if self.handed_over() {
            NodeRole::HandedOver
        } else {
            NodeRole::Primary
        };
        NodeReport {
            role,
            epoch: self.epoch(),
            last_seq: m.last_seq,
            lag_txns: m.lag_ops,
            log_bytes: m.difference_bytes,
            counters: all,
        }
    }

    fn hand_over(&self, timeout: Duration) -> Result<serde_json::Value> {
        let h = Replicator::hand_over(self, timeout)?;
        Ok(serde_json::json!({ "at_seq": h.at_seq, "epoch": self.epoch() }))
    }
}
