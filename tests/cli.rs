//! The `kirikae` binary as a user runs it: the demo completes with a report, and the
//! engine benchmark prints well-formed JSON with consistent ratios.

use std::process::Command;

fn kirikae(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kirikae"))
        .args(args)
        .output()
        .expect("run kirikae");
    assert!(
        out.status.success(),
        "kirikae {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn demo_restructures_under_load_and_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plot = dir.path().join("demo.svg");
    let out = kirikae(&[
        "demo",
        "--rows",
        "20000",
        "--before",
        "0.3",
        "--after",
        "0.3",
        "--replicate",
        "1.5",
        "--replicate-subscribers",
        "5000",
        "--plot",
        plot.to_str().expect("utf-8 path"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("20000 subscribers"), "{text}");
    assert!(text.contains("switch stall"), "{text}");
    assert!(text.contains("verification: 0 mismatches"), "{text}");
    // Subscriber 7 before: msisdn is text; after: an integer and a new plan_id column.
    let after = text
        .lines()
        .find(|l| l.contains("subscriber 7 after"))
        .unwrap_or_else(|| panic!("no row shown: {text}"));
    assert!(after.contains("9000000007, \"active\""), "{after}");
    assert!(after.trim_end().ends_with(", 0)"), "{after}");
    assert!(text.contains("caught up: true"), "{text}");
    assert!(text.contains("Diverged since"), "{text}");
    assert!(text.contains("Recovered:"), "{text}");
    for table in ["subscriber", "billing", "call_event"] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("checksum {table} ")))
            .unwrap_or_else(|| panic!("no checksum for {table}: {text}"));
        assert!(line.trim_end().ends_with("equal"), "{line}");
    }
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(
        svg.starts_with("<svg") && svg.contains("polyline"),
        "an SVG with a line"
    );
}

#[test]
fn bench_engine_prints_json_with_every_field() {
    let out = kirikae(&[
        "bench",
        "engine",
        "--rows",
        "2000",
        "--seconds",
        "0.05",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    for side in ["kirikae", "sqlite"] {
        for op in ["get", "update"] {
            for suffix in ["", "_2t"] {
                let field = format!("{side}_{op}_ops_per_s{suffix}");
                let v = report[&field]
                    .as_f64()
                    .unwrap_or_else(|| panic!("missing {field}"));
                assert!(v > 0.0, "{field} = {v}");
            }
        }
    }
    let ratio = report["get_ratio"].as_f64().expect("get_ratio");
    let expected = report["kirikae_get_ops_per_s"].as_f64().expect("k")
        / report["sqlite_get_ops_per_s"].as_f64().expect("s");
    assert!((ratio - expected).abs() < 1e-9 * expected.max(1.0));
}

#[test]
fn bad_arguments_are_refused_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_kirikae"))
        .args(["bench", "engine", "--rows", "many"])
        .output()
        .expect("run kirikae");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value"));
}
