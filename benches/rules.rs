//! Rule-file parsing: time per file of 1,000, 10,000 and 40,000 rules. Linear time
//! shows as a constant time per rule across the three sizes.
//!
//! Deciding a commit's mode under a file of 1,000 rules none of which holds for
//! it (the worst case: every rule is looked at) and under seed 000's mixed policy:
//! by a scan of the rules (`RuleSet::decide`) and as a commit decides
//! (`RuleSet::decide_operations`: through the decision cache for a large file).

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kirikae::engine::{Operation, SessionInfo, Value};
use kirikae::replicate::{Access, AccessKind, RuleSet, TimeOfDay};

/// A rule file of `rules` four-line rules, each with a table pattern.
fn rule_file(rules: usize) -> String {
    let mut text = String::from("default = \"async\"\n");
    for i in 0..rules {
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\ntable = \"t{i}_*\"\nmode = \"skip\"\n"
        ));
    }
    text
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("rules_parse");
    group.sample_size(10);
    for rules in [1_000, 10_000, 40_000] {
        let text = rule_file(rules);
        group.throughput(Throughput::Elements(rules as u64));
        group.bench_with_input(BenchmarkId::from_parameter(rules), &text, |b, text| {
            b.iter(|| RuleSet::parse(text, "bench.toml").expect("parses"))
        });
    }
    group.finish();
}

fn decide(c: &mut Criterion) {
    let large = RuleSet::parse(&rule_file(1_000), "bench.toml").expect("parses");
    let seed000 = RuleSet::parse(
        include_str!("../replicate/rules/seed000-mixed.toml"),
        "seed000-mixed.toml",
    )
    .expect("parses");
    for (name, rules) in [
        ("rules_decide_1000", large),
        ("rules_decide_seed000", seed000),
    ] {
        decide_with(c, name, &rules);
    }
}

fn decide_with(c: &mut Criterion, name: &str, rules: &RuleSet) {
    let session = SessionInfo::new("app", "svc", None);
    let operations = vec![Operation::Insert {
        table: "subscriber".into(),
        row: vec![Value::Int(1)].into(),
    }];
    let mut group = c.benchmark_group(name);
    group.bench_function("scan", |b| {
        b.iter(|| {
            rules.decide(&Access {
                kind: AccessKind::Insert,
                table: Some("subscriber"),
                session: &session,
                time: TimeOfDay(0),
            })
        })
    });
    group.bench_function("cached", |b| {
        b.iter(|| rules.decide_operations(&operations, &session, TimeOfDay(0)))
    });
    group.finish();
}

criterion_group!(benches, parse, decide);
criterion_main!(benches);
