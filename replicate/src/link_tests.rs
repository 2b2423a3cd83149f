//! The link's bounds, driven directly (the seeded simulation covers the protocol).

use kirikae_engine::{Operation, Value};

use crate::error::Result;
use crate::link::{DiffLog, Event, Link, LinkConfig, LinkState, Submitted, SyncOutcome};
use crate::mode::{Mode, WhenPeerDown};
use crate::record_log::LogRecord;

/// A difference file in memory.
#[derive(Default)]
struct MemoryLog(Vec<LogRecord>);

impl DiffLog for MemoryLog {
    fn append(&mut self, record: &LogRecord) -> Result<()> {
        self.0.push(record.clone());
        Ok(())
    }
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
    fn read_batch(&mut self, after: u64, limit: usize) -> Result<Vec<LogRecord>> {
        Ok(self
            .0
            .iter()
            .filter(|r| r.seq > after)
            .take(limit)
            .cloned()
            .collect())
    }
    fn retire_through(&mut self, seq: u64) -> Result<()> {
        self.0.retain(|r| r.seq > seq);
        Ok(())
    }
    fn last_seq(&self) -> Option<u64> {
        self.0.last().map(|r| r.seq)
    }
    /// Records, not bytes: what the tests count.
    fn bytes(&self) -> u64 {
        self.0.len() as u64
    }
}

fn duplex_link(config: LinkConfig) -> Link<MemoryLog> {
    let mut link = Link::new(config, MemoryLog::default(), 0);
    link.connected(1, 0);
    assert_eq!(
        link.state(),
        LinkState::Duplex,
        "an empty catch-up ends at once"
    );
    let _ = link.take_output();
    link
}

fn insert(k: i64, payload: usize) -> Vec<Operation> {
    vec![Operation::Insert {
        table: "t".into(),
        row: vec![Value::Int(k), Value::from(vec![0u8; payload])],
    }]
}

fn diverged_reason(link: &mut Link<MemoryLog>) -> String {
    link.take_events()
        .into_iter()
        .find_map(|e| match e {
            Event::Diverged { reason, .. } => Some(reason),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn output_the_shell_does_not_take_is_bounded() {
    let mut link = duplex_link(LinkConfig {
        output_bytes_max: 10_000,
        ..LinkConfig::default()
    });
    let mut seq = 0;
    while link.state() == LinkState::Duplex {
        seq += 1;
        assert!(seq < 100, "never went down");
        let submitted = link
            .submit(
                2,
                Mode::Async,
                WhenPeerDown::Continue,
                insert(seq, 1000),
                Vec::new,
            )
            .expect("submit");
        assert_eq!(submitted, Submitted::Queued { seq: seq as u64 });
    }
    assert!(seq >= 9, "went down after {seq} transactions of ~1 KB");
    assert!(diverged_reason(&mut link).contains("wait to be sent"));
    assert!(
        link.take_output().is_empty(),
        "frames of a dropped connection"
    );
    assert!(link.take_close());
    // Nothing is lost: the whole window is in the difference file (this log's
    // "bytes" are its record count).
    assert_eq!(link.metrics(3).difference_bytes, seq as u64);
}

#[test]
fn a_waiter_past_its_deadline_settles_its_sync_transaction_by_its_rule() {
    for (when_down, expected) in [
        (WhenPeerDown::Fail, "unknown"),
        (WhenPeerDown::Continue, "alone"),
    ] {
        let mut link = duplex_link(LinkConfig::default());
        let Submitted::Waiting { seq } = link
            .submit(2, Mode::Sync, when_down, insert(1, 8), Vec::new)
            .expect("submit")
        else {
            panic!("a sync transaction on a duplex link waits");
        };
        // Unknown sequences and settled ones are left alone.
        link.expire_sync(3, seq + 100);
        assert_eq!(link.state(), LinkState::Duplex);
        link.expire_sync(3, seq);
        assert_eq!(link.state(), LinkState::Degraded);
        let outcomes = link.take_outcomes();
        assert_eq!(outcomes.len(), 1);
        let (settled, outcome) = &outcomes[0];
        assert_eq!(*settled, seq);
        let reason = match (outcome, expected) {
            (SyncOutcome::OutcomeUnknown { reason }, "unknown") => reason,
            (SyncOutcome::CommittedAlone { reason }, "alone") => reason,
            other => panic!("{when_down:?}: {other:?}"),
        };
        assert!(reason.contains("waiter's deadline"), "{reason}");
        link.expire_sync(4, seq);
        assert!(link.take_outcomes().is_empty(), "settled once");
    }
}
