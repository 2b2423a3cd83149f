//! What `kirikae demo` reports: the JSON object of `--json` and the human report.

use std::path::PathBuf;

use serde::Serialize;

/// The longest stall of each node's writers across the restructure.
#[derive(Debug, Serialize)]
pub struct Stalls {
    /// The primary's longest write while its restructure ran (begin to commit,
    /// as the session saw it).
    pub primary: Option<u64>,
    /// The backup's longest pause of its apply for the restructure (its
    /// convergence wait and its own switch).
    pub backup: Option<u64>,
}

/// What `kirikae demo --json` prints.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub subscribers: u64,
    pub plan: String,
    /// The sequence at which the primary switched the table.
    pub switch_seq_primary: Option<u64>,
    /// The sequence at which the backup switched it.
    pub switch_seq_backup: Option<u64>,
    pub writer_stall_us_max: Stalls,
    /// The primary's longest write in the second before the restructure (the
    /// noise floor).
    pub writer_us_max_before_restructure: Option<u64>,
    /// How long the primary's switch held the table's writers, by its own timer
    /// (a sync switch includes the backup's).
    pub primary_switch_hold_us: Option<u64>,
    /// The backup's outage: SIGKILL to restart, s.
    pub backup_down_s: f64,
    /// From its restart until the primary saw it in step again, s.
    pub backup_catch_up_s: Option<f64>,
    /// SIGKILL of the primary to the first write the new primary accepted.
    pub failover_ms: Option<f64>,
    /// Commits the dead primary acknowledged as replicated (sync) that the new
    /// primary lacks.
    pub lost_acknowledged_sync: Option<u64>,
    /// How many such commits were looked up.
    pub acknowledged_sync_checked: Option<u64>,
    /// From the new primary's first write until its new backup (the old primary's
    /// node, empty) was in step, s.
    pub rejoin_s: Option<f64>,
    /// The new primary's and its new backup's tables, at the end.
    pub checksums_equal: bool,
    pub schemas_equal: bool,
    /// The restructured table's columns at the end (on both, if equal).
    pub subscriber_columns: Vec<String>,
    /// The whole story, s.
    pub seconds: f64,
    pub plot: PathBuf,
}

/// Prints `r` for a person.
pub fn print_report(r: &DemoReport) {
    let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    say!();
    say!(
        "kirikae demo — {} subscribers, plan `{}`, {:.1} s on real processes over loopback",
        r.subscribers,
        r.plan,
        r.seconds
    );
    say!(
        "  restructure: switched at sequence {} on the primary and {} on the backup",
        opt(r.switch_seq_primary),
        opt(r.switch_seq_backup)
    );
    say!(
        "  longest write on the primary while it ran {} µs (in the second before: {} µs; the switch held writers {} µs); the backup's apply paused at most {} µs for it",
        opt(r.writer_stall_us_max.primary),
        opt(r.writer_us_max_before_restructure),
        opt(r.primary_switch_hold_us),
        opt(r.writer_stall_us_max.backup)
    );
    say!(
        "  backup outage: down {:.1} s, caught up {} s after its restart",
        r.backup_down_s,
        r.backup_catch_up_s
            .map_or("-".to_owned(), |c| format!("{c:.2}"))
    );
    say!(
        "  failover: {} ms from the kill to the first accepted write; {} of {} acknowledged sync commits lost",
        r.failover_ms.map_or("-".to_owned(), |f| format!("{f:.0}")),
        opt(r.lost_acknowledged_sync),
        opt(r.acknowledged_sync_checked)
    );
    say!(
        "  old primary rejoined as backup (resynced) {} s after the takeover",
        r.rejoin_s.map_or("-".to_owned(), |c| format!("{c:.2}"))
    );
    say!(
        "  at the end: checksums {}, schemas {}; subscriber columns: {}",
        if r.checksums_equal {
            "equal"
        } else {
            "DIFFERENT"
        },
        if r.schemas_equal {
            "equal"
        } else {
            "DIFFERENT"
        },
        r.subscriber_columns.join(", ")
    );
    say!("  throughput plot: {}", r.plot.display());
}
