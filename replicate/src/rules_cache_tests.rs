//! The decision cache against the rules themselves: over random rule files,
//! sessions and transactions, a cached decision is the one a scan of the rules
//! makes (the algorithm of `RuleSet::decide_shipment` before the cache, written
//! out here), however decisions for several rule sets interleave on one thread.
//! Files of 0 to 39 rules: small ones are scanned, large ones go through the cache
//! (`decision_cache::RULES_MIN`).

use kirikae_engine::{Key, Operation, SessionInfo, Value};
use proptest::prelude::*;

use crate::*;

const TABLES: [&str; 3] = ["subscriber", "billing", "event"];
const USERS: [&str; 2] = ["app", "ops"];
const KINDS: [&str; 4] = ["insert", "update", "delete", "commit"];
const MODES: [&str; 4] = ["skip", "async", "ordered", "sync"];

/// One generated rule: what the test knows of it besides what `Rule::matches` says.
#[derive(Clone, Debug)]
struct GenRule {
    kinds: Vec<&'static str>,
    table: Option<&'static str>,
    user: Option<&'static str>,
    mode: &'static str,
    fail_if_down: bool,
}

fn gen_rule() -> impl Strategy<Value = GenRule> {
    (
        proptest::sample::subsequence(KINDS.to_vec(), 0..=2),
        proptest::option::of(proptest::sample::select(vec!["subscriber", "b*", "*"])),
        proptest::option::of(proptest::sample::select(USERS.to_vec())),
        proptest::sample::select(MODES.to_vec()),
        any::<bool>(),
    )
        .prop_map(|(kinds, table, user, mode, fail_if_down)| GenRule {
            kinds,
            table,
            user,
            mode,
            fail_if_down,
        })
}

fn rule_file(default: &str, rules: &[GenRule]) -> String {
    let mut text = format!("default = \"{default}\"\nwhen_peer_down = \"continue\"\n");
    for r in rules {
        text.push_str("[[rule]]\n");
        if !r.kinds.is_empty() {
            let kinds: Vec<String> = r.kinds.iter().map(|k| format!("\"{k}\"")).collect();
            text.push_str(&format!("kind = [{}]\n", kinds.join(", ")));
        }
        if let Some(t) = r.table {
            text.push_str(&format!("table = \"{t}\"\n"));
        }
        if let Some(u) = r.user {
            text.push_str(&format!("user = \"{u}\"\n"));
        }
        let down = if r.fail_if_down { "fail" } else { "continue" };
        text.push_str(&format!(
            "mode = \"{}\"\nwhen_peer_down = \"{down}\"\n",
            r.mode
        ));
    }
    text
}

fn operation(kind: u8, table: &str) -> Operation {
    let key = Key::from(1i64);
    let row = vec![Value::Int(1)];
    match kind % 3 {
        0 => Operation::Insert {
            table: table.into(),
            row: row.into(),
        },
        1 => Operation::Update {
            table: table.into(),
            key,
            row: row.into(),
        },
        _ => Operation::Delete {
            table: table.into(),
            key,
        },
    }
}

/// The decision by a plain scan of the rules (the uncached algorithm).
fn scanned(
    rules: &RuleSet,
    gen: &[GenRule],
    operations: &[Operation],
    session: &SessionInfo,
) -> (Decision, Vec<bool>) {
    let time = TimeOfDay(0);
    let commit = |table| Access {
        kind: AccessKind::Commit,
        table,
        session,
        time,
    };
    let decision = |r: &Rule| Decision {
        mode: r.mode,
        when_peer_down: r.when_peer_down,
        rule: Some(r.name.clone()),
    };
    let commit_rule = rules.rules().iter().zip(gen).find(|(r, g)| {
        g.kinds.contains(&"commit")
            && (r.matches(&commit(None))
                || operations
                    .iter()
                    .any(|op| r.matches(&commit(Some(op.table())))))
    });
    if let Some((r, _)) = commit_rule {
        let shipped = operations.iter().map(|_| r.mode != Mode::Skip).collect();
        return (decision(r), shipped);
    }
    let mut strongest: Option<Decision> = None;
    let mut fail_if_down = false;
    let mut shipped = Vec::new();
    for op in operations {
        let access = Access {
            kind: op.kind().into(),
            table: Some(op.table()),
            session,
            time,
        };
        let d = match rules.rules().iter().find(|r| r.matches(&access)) {
            Some(r) => decision(r),
            None => Decision {
                mode: rules.default_mode(),
                when_peer_down: WhenPeerDown::Continue,
                rule: None,
            },
        };
        fail_if_down |= d.mode == Mode::Sync && d.when_peer_down == WhenPeerDown::Fail;
        shipped.push(d.mode != Mode::Skip);
        if strongest.as_ref().is_none_or(|s| d.mode > s.mode) {
            strongest = Some(d);
        }
    }
    let mut d = strongest.unwrap_or(Decision {
        mode: Mode::Skip,
        when_peer_down: WhenPeerDown::Continue,
        rule: None,
    });
    if fail_if_down {
        d.when_peer_down = WhenPeerDown::Fail;
    }
    (d, shipped)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_cached_decision_is_the_scanned_one(
        sets in proptest::collection::vec(
            (proptest::sample::select(MODES.to_vec()), proptest::collection::vec(gen_rule(), 0..40)),
            1..4,
        ),
        commits in proptest::collection::vec(
            (
                0..4usize,
                proptest::sample::select(USERS.to_vec()),
                proptest::collection::vec((0u8..3, proptest::sample::select(TABLES.to_vec())), 0..4),
            ),
            1..40,
        ),
    ) {
        let parsed: Vec<RuleSet> = sets
            .iter()
            .map(|(default, rules)| RuleSet::parse(&rule_file(default, rules), "gen.toml"))
            .collect::<Result<_>>()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (set, user, ops) in commits {
            let set = set % parsed.len();
            let session = SessionInfo::new(user, "svc", None);
            let operations: Vec<Operation> =
                ops.iter().map(|(k, t)| operation(*k, t)).collect();
            let cached = parsed[set].decide_operations(&operations, &session, TimeOfDay(0));
            let expected = scanned(&parsed[set], &sets[set].1, &operations, &session);
            prop_assert_eq!(cached, expected);
        }
    }
}
