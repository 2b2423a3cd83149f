//! Fuzz harness: arbitrary text as a rule file. Parsing never panics; an error names
//! the file with a line and column inside the text; a parsed rule set decides any
//! access without panicking.

use kirikae_engine::SessionInfo;
use kirikae_replicate::{Access, AccessKind, ReplicateError, RuleSet, TimeOfDay};

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match RuleSet::parse(text, "fuzz.toml") {
        Ok(rules) => {
            let session = SessionInfo::new("u", "g", "10.0.0.1".parse().ok());
            for kind in [AccessKind::Insert, AccessKind::Commit, AccessKind::Ddl] {
                for table in [None, Some("subscriber"), Some("billing_x")] {
                    let d = rules.decide(&Access {
                        kind,
                        table,
                        session: &session,
                        time: TimeOfDay::hm(23, 59),
                    });
                    assert!(d.rule.is_some() || d.mode == rules.default_mode());
                }
            }
        }
        Err(ReplicateError::Rules { line, column, .. }) => {
            assert!(
                line >= 1 && line <= text.lines().count().max(1) + 1,
                "line {line} outside the text"
            );
            assert!(column >= 1);
        }
        Err(other) => panic!("parsing text gave a non-rules error: {other}"),
    }
}
