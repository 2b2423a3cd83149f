//! Rule decisions remembered per access shape (issue 13 §2): which rule first
//! holds for an operation of a kind on a table by a session identity (user, group,
//! source), and which commit rule first holds for a table.
//!
//! Why: every commit decides once per operation, and a first match is a scan of
//! the rules, glob patterns included; a rule file may hold thousands of rules
//! (`benches/rules.rs` parses 40,000). The answer depends on nothing but those
//! parts, and on the time of day only when a rule has a time window (then the
//! second is part of the question), so it is looked up instead of scanned for.
//!
//! One cache per thread: no lock and no shared cache line on the commit path. It
//! serves one rule set at a time, known by [`RuleSet`](crate::RuleSet)'s identity;
//! a thread that decides for another rule set (a new one, or a changed one) starts
//! afresh, so no answer of one rule set is ever given for another. Bounded: past
//! [`ENTRIES_MAX`] it is emptied.

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use kirikae_engine::SessionInfo;

use crate::rules::AccessKind;

/// Rule sets of fewer rules are scanned, not cached: a lookup (hashing the
/// session's names) costs about what a scan of a dozen rules does (`benches/rules.rs`:
/// seed 000's five rules decide a commit in ~20 ns by a scan, ~340 ns through the
/// cache; 1,000 rules in ~10–14 µs by a scan, ~450 ns through it).
pub(crate) const RULES_MIN: usize = 16;

/// Answers a thread keeps; past it the cache is emptied and refilled.
pub(crate) const ENTRIES_MAX: usize = 4096;

/// What is asked of the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Question {
    /// The first rule holding for an operation of this kind.
    Operation(AccessKind),
    /// The first rule of kind `commit` holding for a commit.
    CommitRule,
}

/// The parts an answer depends on, borrowed from the commit being decided.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Asked<'a> {
    pub question: Question,
    pub table: Option<&'a str>,
    pub session: &'a SessionInfo,
    /// Seconds since midnight, or 0 when no rule has a time window.
    pub time: u32,
}

impl Asked<'_> {
    fn hash(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.question.hash(&mut h);
        self.table.hash(&mut h);
        self.session.user.hash(&mut h);
        self.session.group.hash(&mut h);
        self.session.source.hash(&mut h);
        self.time.hash(&mut h);
        h.finish()
    }
}

/// An answer with the parts it was given for (compared on every hit: two shapes
/// with the same hash must not share an answer).
struct Entry {
    question: Question,
    table: Option<Box<str>>,
    user: Box<str>,
    group: Box<str>,
    source: Option<IpAddr>,
    time: u32,
    /// The index of the first rule that holds, if any does.
    rule: Option<usize>,
}

impl Entry {
    fn answers(&self, asked: &Asked<'_>) -> bool {
        self.question == asked.question
            && self.table.as_deref() == asked.table
            && *self.user == asked.session.user
            && *self.group == asked.session.group
            && self.source == asked.session.source
            && self.time == asked.time
    }
}

#[derive(Default)]
struct Cache {
    /// The identity of the rule set the entries are for.
    rules_id: u64,
    entries: HashMap<u64, Entry>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// The index of the first rule of rule set `rules_id` that holds for `asked`:
/// remembered, or found by `scan` (and then remembered).
pub(crate) fn first_rule(
    rules_id: u64,
    asked: &Asked<'_>,
    scan: impl FnOnce() -> Option<usize>,
) -> Option<usize> {
    CACHE.with(|cache| {
        // A decision made while this thread is already deciding (it cannot
        // happen today) scans rather than fails.
        let Ok(mut cache) = cache.try_borrow_mut() else {
            return scan();
        };
        if cache.rules_id != rules_id {
            cache.rules_id = rules_id;
            cache.entries.clear();
        }
        let hash = asked.hash();
        if let Some(e) = cache.entries.get(&hash) {
            if e.answers(asked) {
                return e.rule;
            }
        }
        let rule = scan();
        if cache.entries.len() >= ENTRIES_MAX {
            cache.entries.clear();
        }
        cache.entries.insert(
            hash,
            Entry {
                question: asked.question,
                table: asked.table.map(Box::from),
                user: asked.session.user.as_str().into(),
                group: asked.session.group.as_str().into(),
                source: asked.session.source,
                time: asked.time,
                rule,
            },
        );
        rule
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked<'a>(table: &'a str, session: &'a SessionInfo) -> Asked<'a> {
        Asked {
            question: Question::Operation(AccessKind::Insert),
            table: Some(table),
            session,
            time: 0,
        }
    }

    #[test]
    fn an_answer_is_remembered_per_rule_set_and_shape() {
        let alice = SessionInfo::new("alice", "ops", None);
        let bob = SessionInfo::new("bob", "ops", None);
        let mut scans = 0;
        let mut ask = |rules_id, a: &Asked<'_>, answer| {
            first_rule(rules_id, a, || {
                scans += 1;
                answer
            })
        };
        assert_eq!(ask(901, &asked("t", &alice), Some(3)), Some(3));
        // Remembered: the scan's answer is not asked again.
        assert_eq!(ask(901, &asked("t", &alice), Some(99)), Some(3));
        // Another user, table or rule set is another question.
        assert_eq!(ask(901, &asked("t", &bob), None), None);
        assert_eq!(ask(901, &asked("u", &alice), Some(1)), Some(1));
        assert_eq!(ask(902, &asked("t", &alice), Some(7)), Some(7));
        assert_eq!(ask(901, &asked("t", &alice), Some(5)), Some(5));
        assert_eq!(scans, 5);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let s = SessionInfo::new("u", "g", None);
        let tables: Vec<String> = (0..ENTRIES_MAX + 10).map(|i| format!("t{i}")).collect();
        for t in &tables {
            first_rule(903, &asked(t, &s), || Some(0));
        }
        CACHE.with(|c| assert!(c.borrow().entries.len() <= ENTRIES_MAX));
    }
}
