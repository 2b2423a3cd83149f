//! Rule-file parsing: time per file of 1,000, 10,000 and 40,000 rules. Linear time
//! shows as a constant time per rule across the three sizes.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kirikae::replicate::RuleSet;

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

criterion_group!(benches, parse);
criterion_main!(benches);
