//! Restructures replicate between real processes: `kirikae primary
//! --restructure-at-s` restructures the subscriber table online under its load, and
//! the `kirikae backup` process runs the same plan and switches at the same point of
//! the stream: both end with the same schemas and the same rows.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;

mod common;

use common::peer_process::{last_json_line, primary_command, PeerProcess};

const SUBSCRIBERS: u64 = 20_000;

#[test]
fn a_restructure_on_a_primary_process_is_run_and_switched_by_its_backup_process() {
    let (data, diff) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let peer = PeerProcess::spawn("127.0.0.1:0", data.path(), SUBSCRIBERS);
    let out = primary_command(
        peer.addr,
        (SUBSCRIBERS, 2000, 3.0),
        diff.path(),
        data.path(),
    )
    .args(["--restructure-at-s", "1", "--plan", "demo"])
    .stderr(Stdio::inherit())
    .output()
    .expect("run kirikae primary");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "primary failed: {text}");
    let primary = last_json_line(&text);
    assert_eq!(primary["restructure"]["switched"], true, "{primary}");
    assert!(
        text.lines()
            .any(|l| l.contains("restructure of subscriber switched")),
        "{text}"
    );
    let subscriber = &primary["schemas"]["subscriber"];
    assert!(
        subscriber
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "plan_id"),
        "{subscriber}"
    );
    let backup = peer.finish();
    assert_eq!(backup["schemas"], primary["schemas"], "schemas differ");
    assert_eq!(backup["checksums"], primary["checksums"], "rows differ");
    assert_eq!(primary["metrics"]["apply_errors"], 0, "{primary}");
}
