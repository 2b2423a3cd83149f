//! Rule files: the seed-000 policy, every condition, transaction modes, and errors
//! with line and column.

use std::net::IpAddr;

use kirikae_engine::{Key, Operation, SessionInfo};

use crate::*;

fn session(user: &str, group: &str, source: Option<&str>) -> SessionInfo {
    SessionInfo::new(
        user,
        group,
        source.map(|s| s.parse::<IpAddr>().expect("ip")),
    )
}

fn access<'a>(
    kind: AccessKind,
    table: Option<&'a str>,
    s: &'a SessionInfo,
    time: TimeOfDay,
) -> Access<'a> {
    Access {
        kind,
        table,
        session: s,
        time,
    }
}

fn seed000() -> RuleSet {
    let text = include_str!("../rules/seed000-mixed.toml");
    RuleSet::parse(text, "seed000-mixed.toml").expect("the shipped policy parses")
}

#[test]
fn the_seed_000_policy_decides_as_the_paper_says() {
    let rules = seed000();
    let s = session("app", "svc", None);
    let noon = TimeOfDay::hm(12, 0);
    assert_eq!(
        rules
            .decide(&access(AccessKind::Update, Some("subscriber"), &s, noon))
            .mode,
        Mode::Ordered
    );
    assert_eq!(
        rules
            .decide(&access(AccessKind::Insert, Some("subscriber"), &s, noon))
            .mode,
        Mode::Async
    );
    let billing = vec![Operation::Insert {
        table: "billing_cdr".into(),
        row: vec![1.into()].into(),
    }];
    let d = rules.decide_transaction(&billing, &s, noon);
    assert_eq!((d.mode, d.when_peer_down), (Mode::Sync, WhenPeerDown::Fail));
    let updates = vec![
        Operation::Insert {
            table: "session".into(),
            row: vec![1.into()].into(),
        },
        Operation::Update {
            table: "subscriber".into(),
            key: Key::from(1),
            row: vec![1.into()].into(),
        },
    ];
    let d = rules.decide_transaction(&updates, &s, noon);
    assert_eq!(d.mode, Mode::Ordered, "the strongest operation mode wins");
    assert_eq!(d.rule.as_deref(), Some("subscriber updates"));
    assert_eq!(
        rules.decide_transaction(&[], &s, noon).mode,
        Mode::Skip,
        "nothing to ship"
    );
}

#[test]
fn every_condition_must_hold() {
    let rules = RuleSet::parse(
        r#"
default = "skip"
[[rule]]
name = "ops from the billing lan in office hours"
kind = ["insert", "update"]
table = "sub*"
user = "alice"
group = "ops"
source = "10.1.0.0/16"
time = "08:00-18:00"
mode = "sync"
"#,
        "t.toml",
    )
    .expect("parses");
    let ok = session("alice", "ops", Some("10.1.2.3"));
    let at = TimeOfDay::hm(9, 30);
    let d =
        |kind, table: &str, s: &SessionInfo, t| rules.decide(&access(kind, Some(table), s, t)).mode;
    assert_eq!(d(AccessKind::Insert, "subscriber", &ok, at), Mode::Sync);
    assert_eq!(
        d(AccessKind::Delete, "subscriber", &ok, at),
        Mode::Skip,
        "kind"
    );
    assert_eq!(
        d(AccessKind::Insert, "billing", &ok, at),
        Mode::Skip,
        "table"
    );
    assert_eq!(
        d(
            AccessKind::Insert,
            "subscriber",
            &session("bob", "ops", Some("10.1.2.3")),
            at
        ),
        Mode::Skip,
        "user"
    );
    assert_eq!(
        d(
            AccessKind::Insert,
            "subscriber",
            &session("alice", "dev", Some("10.1.2.3")),
            at
        ),
        Mode::Skip,
        "group"
    );
    assert_eq!(
        d(
            AccessKind::Insert,
            "subscriber",
            &session("alice", "ops", Some("10.2.0.1")),
            at
        ),
        Mode::Skip,
        "source"
    );
    assert_eq!(
        d(
            AccessKind::Insert,
            "subscriber",
            &session("alice", "ops", None),
            at
        ),
        Mode::Skip,
        "no source"
    );
    assert_eq!(
        d(AccessKind::Insert, "subscriber", &ok, TimeOfDay::hm(18, 0)),
        Mode::Skip,
        "window end is exclusive"
    );
}

#[test]
fn first_match_wins_and_windows_wrap_midnight() {
    let rules = RuleSet::parse(
        r#"
[[rule]]
time = "22:00-06:00"
mode = "skip"
[[rule]]
source = "192.168.0.7"
mode = "sync"
[[rule]]
mode = "ordered"
"#,
        "t.toml",
    )
    .expect("parses");
    let s = session("u", "g", Some("192.168.0.7"));
    let mode = |h, m| {
        rules
            .decide(&access(
                AccessKind::Insert,
                Some("t"),
                &s,
                TimeOfDay::hm(h, m),
            ))
            .mode
    };
    assert_eq!(mode(23, 0), Mode::Skip);
    assert_eq!(mode(5, 59), Mode::Skip);
    assert_eq!(mode(6, 0), Mode::Sync);
    let other = session("u", "g", Some("192.168.0.8"));
    assert_eq!(
        rules
            .decide(&access(
                AccessKind::Insert,
                Some("t"),
                &other,
                TimeOfDay::hm(12, 0)
            ))
            .mode,
        Mode::Ordered
    );
}

#[test]
fn bad_files_are_refused_with_line_and_column() {
    let cases: &[(&str, usize, usize, &str)] = &[
        ("default = \"fast\"\n", 1, 11, "unknown mode `fast`"),
        (
            "[[rule]]\nkind = \"select\"\nmode = \"skip\"\n",
            2,
            8,
            "unknown kind `select`",
        ),
        // Reads are not replicated: a rule on them could never match.
        (
            "[[rule]]\nkind = \"read\"\nmode = \"skip\"\n",
            2,
            8,
            "unknown kind `read`",
        ),
        (
            "[[rule]]\nmode = \"skip\"\nsource = \"10.0.0.0/33\"\n",
            3,
            10,
            "neither an address nor a CIDR",
        ),
        (
            "[[rule]]\nmode = \"skip\"\ntime = \"25:00-01:00\"\n",
            3,
            8,
            "not a time of day",
        ),
        (
            "[[rule]]\nmode = \"skip\"\ntime = \"08:00-08:00\"\n",
            3,
            8,
            "empty",
        ),
        (
            "[[rule]]\nmode = \"skip\"\ntable = \"[abc\"\n",
            3,
            9,
            "table pattern",
        ),
        (
            "[[rule]]\nmode = \"skip\"\nwhen_peer_down = \"panic\"\n",
            3,
            18,
            "unknown peer-down action",
        ),
        (
            "[[rule]]\nmode = \"skip\"\ncolour = \"red\"\n",
            3,
            1,
            "unknown field `colour`",
        ),
        (
            "[[rule]]\nname = \"no mode\"\n",
            1,
            1,
            "missing field `mode`",
        ),
        ("default = \"sync\"\n[[rule]\n", 2, 8, "unclosed"),
    ];
    for (text, line, column, needle) in cases {
        match RuleSet::parse(text, "bad.toml") {
            Err(ReplicateError::Rules {
                line: l,
                column: c,
                message,
                source_name,
            }) => {
                assert_eq!(source_name, "bad.toml");
                assert_eq!((l, c), (*line, *column), "{text:?}: {message}");
                assert!(message.contains(needle), "{text:?}: {message}");
            }
            other => panic!("{text:?}: expected a rules error, got {other:?}"),
        }
    }
}

#[test]
fn rule_files_load_from_disk_and_missing_ones_are_named() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/seed000-mixed.toml");
    let rules = RuleSet::load(&path).expect("loads");
    assert_eq!(rules.rules().len(), 3);
    assert_eq!(rules.rules()[1].line, 15, "the line of its [[rule]] header");
    assert_eq!(rules.default_mode(), Mode::Async);
    let missing = path.with_file_name("nope.toml");
    match RuleSet::load(&missing) {
        Err(ReplicateError::RulesIo { path, .. }) => assert!(path.ends_with("nope.toml")),
        other => panic!("expected RulesIo, got {other:?}"),
    }
}

/// 40,000 rules (each four lines, names carrying their number): every rule knows its
/// line, and an error in the last one names its line and column. Line lookups were
/// once quadratic (99 s for this file); the time is measured by the `rules` bench.
#[test]
fn a_file_of_forty_thousand_rules_keeps_every_line() {
    const RULES: usize = 40_000;
    let mut text = String::from("default = \"async\"\n");
    for i in 0..RULES {
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\ntable = \"t{i}_*\"\nmode = \"skip\"\n"
        ));
    }
    let set = RuleSet::parse(&text, "big.toml").expect("parses");
    assert_eq!(set.rules().len(), RULES);
    for (i, rule) in set.rules().iter().enumerate() {
        assert_eq!(&*rule.name, format!("r{i}"));
        assert_eq!(rule.line, 2 + 4 * i, "{}", rule.name);
    }
    text.push_str("[[rule]]\nmode = \"skip\"\n  kind = \"select\"\n");
    let err = RuleSet::parse(&text, "big.toml").expect_err("bad kind");
    let expected = format!("big.toml:{}:10", 2 + 4 * RULES + 2);
    assert!(
        err.to_string().contains(&expected),
        "{err} (want {expected})"
    );
}

#[test]
fn a_table_never_replicates_only_when_every_access_to_it_is_skipped() {
    let rules = RuleSet::parse(
        r#"
        default = "async"
        [[rule]]
        table = "scratch*"
        mode = "skip"
        [[rule]]
        table = "audit"
        user = "batch"
        mode = "skip"
        [[rule]]
        table = "cache"
        kind = "delete"
        mode = "sync"
        [[rule]]
        table = "cache"
        mode = "skip"
        "#,
        "t.toml",
    )
    .unwrap();
    assert!(rules.never_replicates("scratch_1"));
    assert!(!rules.never_replicates("audit"), "other users replicate");
    assert!(!rules.never_replicates("cache"), "its deletes replicate");
    assert!(
        !rules.never_replicates("subscriber"),
        "the default replicates"
    );
    let skip_all = RuleSet::parse(
        "default = \"skip\"\n[[rule]]\ntable = \"a\"\nmode = \"sync\"\n",
        "t",
    )
    .unwrap();
    assert!(skip_all.never_replicates("b"));
    assert!(!skip_all.never_replicates("a"));
}

#[test]
fn the_clock_is_read_for_a_decision_only_when_a_rule_has_a_time_window() {
    let timeless = RuleSet::parse(
        "default = \"async\"\n[[rule]]\ntable = \"a\"\nmode = \"sync\"\n",
        "t",
    )
    .unwrap();
    assert_eq!(timeless.time_of_day_now(), TimeOfDay(0));
    let timed = RuleSet::parse(
        "default = \"async\"\n[[rule]]\ntable = \"a\"\nmode = \"sync\"\ntime = \"08:00-18:00\"\n",
        "t",
    )
    .unwrap();
    // The clock's time of day, read twice around it.
    let before = TimeOfDay::now();
    let got = timed.time_of_day_now();
    let after = TimeOfDay::now();
    assert!(
        (before <= got && got <= after) || after < before,
        "{before:?} {got:?} {after:?}"
    );
}
