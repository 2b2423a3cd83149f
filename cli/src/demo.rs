//! `kirikae demo`: the whole story on real processes over loopback.
//!
//! A primary (`kirikae primary`) runs the telecom traffic under the seed-000 mixed
//! policy, replicating to a backup (`kirikae backup`, its own process, access log
//! fsynced). Then, a beat apart:
//! 1. the subscriber table is restructured online on the primary; the backup runs
//!    the same plan and both switch at the same sequence of the stream;
//! 2. the backup is killed (SIGKILL) and restarted from its log: it catches up;
//! 3. the primary is killed: the backup (peer arbiter) takes over and serves the
//!    traffic; the old primary's node comes back as the new backup, empty, and is
//!    resynced while the new primary serves.
//!
//! Everything is measured outside the nodes, as a user would see it: the failover
//! is from the kill to the first write the new primary accepted; a lost commit is
//! one the dead primary acknowledged as replicated and the new primary lacks;
//! checksums and schemas are compared between the last two nodes at the end.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use indicatif::ProgressBar;
use plotters::style::RGBColor;

use crate::ack_log::unix_ms;
use crate::demo_report::{print_report, DemoReport, Stalls};
use crate::demo_story::{Heard, Story, BACKUP, PRIMARY, REJOINED};
use crate::node_process::{free_port, Node};
use crate::plot::{Mark, Span};
use crate::progress::{style, PlainLines};
use crate::CliError;

/// Options of `kirikae demo`.
#[derive(clap::Args, Debug)]
// A negative number is a value (refused with its option\'s range), not a flag.
#[command(allow_negative_numbers = true)]
pub struct DemoArgs {
    /// Subscribers in the tables (both nodes load the same ones).
    #[arg(long, default_value_t = 200_000, value_parser = crate::arg_ranges::rows)]
    pub subscribers: u64,
    /// Sessions of the traffic.
    #[arg(long, default_value_t = 2, value_parser = crate::arg_ranges::threads)]
    pub sessions: usize,
    /// Operations per second of the traffic.
    #[arg(long, default_value_t = 10_000.0, value_parser = crate::arg_ranges::rate)]
    pub rate: f64,
    /// The restructure's plan (demo, add-column, msisdn-to-int, drop-column,
    /// rename-column, reorganize).
    #[arg(long, default_value = "demo")]
    pub plan: String,
    /// Seconds between two steps of the story.
    #[arg(long, default_value_t = 2.0, value_parser = crate::arg_ranges::positive_seconds)]
    pub beat: f64,
    /// The primary's silence after which the backup takes over.
    #[arg(long, default_value_t = 500, value_parser = crate::arg_ranges::failover_ms)]
    pub failover_after_ms: u64,
    /// Where to write the throughput plot (SVG).
    #[arg(long, default_value = "kirikae-demo.svg")]
    pub plot: PathBuf,
    /// End with one JSON object on standard output instead of the report.
    #[arg(long)]
    pub json: bool,
}

/// Runs the story; prints the report (or JSON) and writes the plot.
pub fn run(args: &DemoArgs) -> Result<(), CliError> {
    if kirikae_workload::workload::subscriber_plan(&args.plan).is_none() {
        return Err(CliError::Usage(format!(
            "--plan: unknown plan `{}` (one of: {})",
            args.plan,
            kirikae_workload::workload::PLAN_NAMES.join(", ")
        )));
    }
    // The plot is written at the end: find out now that it cannot be.
    std::fs::File::create(&args.plot).map_err(|e| CliError::Plot {
        path: args.plot.display().to_string(),
        reason: format!("cannot be written: {e}"),
    })?;
    let report = story(args)?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn story(args: &DemoArgs) -> Result<DemoReport, CliError> {
    let temp = tempfile::tempdir().map_err(|e| CliError::Usage(format!("work directory: {e}")))?;
    let root = temp.path().to_owned();
    // KIRIKAE_DEMO_KEEP=1 keeps the nodes' logs and output for a look afterwards.
    let _temp = match std::env::var_os("KIRIKAE_DEMO_KEEP") {
        Some(_) => {
            eprintln!("the nodes' files stay in {}", temp.keep().display());
            None
        }
        None => Some(temp),
    };
    let path = |name: &str| root.as_path().join(name).display().to_string();
    crate::nodes::write_key_file(&root.join("pair.key"))?;
    let (backup_addr, rejoin_addr) = (free_port()?, free_port()?);
    let common = |v: &[&str]| -> Vec<String> {
        let mut out: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
        out.extend(
            [
                "--subscribers",
                &args.subscribers.to_string(),
                "--key-file",
                &path("pair.key"),
                "--events",
                "--status-every-ms",
                "200",
            ]
            .map(str::to_owned),
        );
        out
    };
    let rate = args.rate.to_string();
    let sessions = args.sessions.to_string();
    let backup_args = common(&[
        "backup",
        "--listen",
        &backup_addr.to_string(),
        "--data-dir",
        &path("backup-log"),
        "--arbiter",
        "peer",
        "--failover-after-ms",
        &args.failover_after_ms.to_string(),
        "--until-stdin-closes",
        "--serve-after-promotion",
        &rejoin_addr.to_string(),
        "--difference-dir",
        &path("backup-difference"),
        "--sessions",
        &sessions,
        "--rate",
        &rate,
        "--check-ack-log",
        &path("primary.acks"),
    ]);
    let restructure_at = (args.beat * 1.5).to_string();
    let primary_args = common(&[
        "primary",
        "--peer",
        &backup_addr.to_string(),
        "--difference-dir",
        &path("primary-difference"),
        "--ack-log",
        &path("primary.acks"),
        "--seconds",
        "0",
        "--sessions",
        &sessions,
        "--rate",
        &rate,
        "--restructure-at-s",
        &restructure_at,
        "--plan",
        &args.plan,
    ]);
    let rejoin_args = common(&[
        "backup",
        "--listen",
        &rejoin_addr.to_string(),
        "--data-dir",
        &path("rejoined-log"),
        "--until-stdin-closes",
    ]);

    let bar = ProgressBar::new_spinner();
    bar.set_style(style("demo {spinner} {msg}"));
    let mut s = Story {
        started: Instant::now(),
        heard: Heard::default(),
        bar,
        plain: PlainLines::for_stderr(),
        phase: "starting both nodes",
        json: args.json,
    };
    let minute = Duration::from_secs(60);
    s.say(&format!(
        "{} subscribers on each node; {BACKUP} on {backup_addr}; traffic {} ops/s in {} sessions, mixed policy",
        args.subscribers, args.rate, args.sessions
    ));
    let mut backup = Node::spawn(BACKUP, &backup_args, root.as_path())?;
    let mut primary = Node::spawn(PRIMARY, &primary_args, root.as_path())?;
    s.wait(
        &mut [&mut primary, &mut backup],
        "replication in step",
        minute,
        |h| h.in_step(PRIMARY),
    )?;
    s.say("replicating: the backup is in step");

    s.phase = "traffic; restructure soon";
    s.wait(
        &mut [&mut primary, &mut backup],
        "the restructure's start",
        minute,
        |h| h.restructure_started_s.is_some() || h.restructure.is_some(),
    )?;
    s.say(&format!(
        "online restructure of subscriber begun (plan {})",
        args.plan
    ));
    s.phase = "RESTRUCTURING on both nodes";
    s.wait(
        &mut [&mut primary, &mut backup],
        "the restructure's end",
        minute * 2,
        |h| h.restructure.is_some(),
    )?;
    let restructure = s.heard.restructure.clone().unwrap_or_default();
    if restructure["switched"] != true {
        return Err(CliError::Usage(format!(
            "demo: the restructure failed: {}",
            restructure["error"]
        )));
    }
    // The backup's switch: it is in the stream at the primary's, so it is
    // applied once the backup caught up.
    s.wait(
        &mut [&mut primary, &mut backup],
        "the backup's switch",
        minute,
        |h| h.backup_catalog.iter().any(|c| c["change"] == "switched"),
    )?;
    let switch_seq_backup = s
        .heard
        .backup_catalog
        .iter()
        .rev()
        .find(|c| c["change"] == "switched" && c["table"] == "subscriber")
        .and_then(|c| c["seq"].as_u64());
    s.say(&format!(
        "switched: primary at sequence {}, backup at sequence {}",
        restructure["switch_seq"],
        switch_seq_backup.map_or("-".to_owned(), |q| q.to_string())
    ));

    s.phase = "traffic after the switch";
    s.hold(&mut [&mut primary, &mut backup], args.beat)?;
    backup.kill()?;
    let backup_killed = Instant::now();
    s.say("backup killed (SIGKILL): commits go to the primary's difference file");
    s.phase = "BACKUP DOWN";
    s.heard.status.remove(BACKUP);
    s.hold(&mut [&mut primary], args.beat)?;
    let mut backup = Node::spawn(BACKUP, &backup_args, root.as_path())?;
    let backup_restarted = Instant::now();
    s.say("backup restarted from its access log");
    s.phase = "backup catching up";
    // In step again: the primary's last status after the restart says so.
    let restarted_at = backup_restarted;
    s.wait(
        &mut [&mut primary, &mut backup],
        "the backup's catch-up",
        minute,
        move |h| {
            h.status
                .get(PRIMARY)
                .is_some_and(|(at, _)| *at > restarted_at)
                && h.in_step(PRIMARY)
        },
    )?;
    let caught_up = Instant::now();
    s.say(&format!(
        "backup caught up in {:.2} s",
        caught_up.duration_since(backup_restarted).as_secs_f64()
    ));

    s.phase = "traffic, both in step";
    s.hold(&mut [&mut primary, &mut backup], args.beat)?;
    primary.kill()?;
    let primary_killed = Instant::now();
    let killed_ms = unix_ms(SystemTime::now());
    // Nobody serves from here to the takeover: the plot shows it.
    let last_rate = s.heard.points.last().map_or(0.0, |p| p.1);
    let killed_s = s.t(primary_killed);
    s.heard
        .points
        .extend([(killed_s, last_rate), (killed_s, 0.0)]);
    s.say(&format!(
        "primary killed (SIGKILL); its node restarts empty as the new backup on {rejoin_addr}"
    ));
    s.phase = "FAILOVER";
    s.heard.status.remove(PRIMARY);
    let mut rejoined = Node::spawn(REJOINED, &rejoin_args, root.as_path())?;
    s.wait(
        &mut [&mut backup, &mut rejoined],
        "the takeover",
        minute,
        |h| h.serving.is_some(),
    )?;
    let (serving_s, serving) = s.heard.serving.clone().unwrap_or_default();
    s.heard.points.push((serving_s, 0.0));
    let failover_ms = serving["first_write_unix_ms"]
        .as_u64()
        .map(|first| first.saturating_sub(killed_ms) as f64);
    s.say(&format!(
        "the backup took over and accepted a write {} ms after the kill; {} of the old primary's replicated commits looked up, {} missing",
        failover_ms.map_or("?".to_owned(), |f| format!("{f:.0}")),
        serving["acknowledged_sync_checked"],
        serving["lost_acknowledged_sync"]
    ));
    s.phase = "new backup being resynced";
    let served_since = Instant::now();
    s.wait(
        &mut [&mut backup, &mut rejoined],
        "the new backup's resync",
        minute * 2,
        move |h| {
            h.status
                .get(BACKUP)
                .is_some_and(|(at, _)| *at > served_since)
                && h.in_step(BACKUP)
        },
    )?;
    let rejoined_at = Instant::now();
    s.say(&format!(
        "the old primary's node is in step as the new backup ({:.2} s after the takeover)",
        s.t(rejoined_at) - serving_s
    ));
    s.phase = "traffic on the new pair";
    s.hold(&mut [&mut backup, &mut rejoined], args.beat)?;
    s.phase = "stopping";
    let (lines, new_primary) = backup.finish(minute)?;
    s.hear(BACKUP, lines);
    let (_, new_backup) = rejoined.finish(minute)?;
    let seconds = s.t(Instant::now());
    s.bar.finish_and_clear();

    let columns = |r: &serde_json::Value| -> Vec<String> {
        serde_json::from_value(r["schemas"]["subscriber"].clone()).unwrap_or_default()
    };
    let backup_stall = s
        .heard
        .backup_catalog
        .iter()
        .filter(|c| c["table"] == "subscriber")
        .filter_map(|c| c["took_us"].as_u64())
        .max();
    let t = |at: Instant| s.t(at);
    let plot_spans = [
        Span {
            from_s: s.heard.restructure_started_s.unwrap_or(0.0),
            to_s: s.heard.switch_s.unwrap_or(0.0),
            label: "online restructure (both nodes)".into(),
            color: RGBColor(255, 160, 0),
        },
        Span {
            from_s: t(backup_killed),
            to_s: t(caught_up),
            label: "backup down, then catching up".into(),
            color: RGBColor(128, 128, 128),
        },
        Span {
            from_s: t(primary_killed),
            to_s: serving_s,
            label: "failover (kill to first write)".into(),
            color: RGBColor(220, 0, 0),
        },
    ];
    let marks = [
        Mark {
            at_s: s.heard.switch_s.unwrap_or(0.0),
            label: "switch".into(),
            color: RGBColor(200, 0, 200),
        },
        Mark {
            at_s: t(rejoined_at),
            label: "old primary in step as backup".into(),
            color: RGBColor(0, 150, 0),
        },
    ];
    crate::plot::throughput(
        &args.plot,
        &s.heard.points,
        &plot_spans,
        &marks,
        "kirikae: telecom traffic through a restructure, a backup outage and a failover",
    )?;
    Ok(DemoReport {
        subscribers: args.subscribers,
        plan: args.plan.clone(),
        switch_seq_primary: restructure["switch_seq"].as_u64(),
        switch_seq_backup,
        writer_stall_us_max: Stalls {
            primary: restructure["writer_stall_us_max"].as_u64(),
            backup: backup_stall,
        },
        writer_us_max_before_restructure: restructure["writer_us_max_before"].as_u64(),
        primary_switch_hold_us: restructure["stall_us"].as_u64(),
        backup_down_s: backup_restarted.duration_since(backup_killed).as_secs_f64(),
        backup_catch_up_s: Some(caught_up.duration_since(backup_restarted).as_secs_f64()),
        failover_ms,
        lost_acknowledged_sync: serving["lost_acknowledged_sync"].as_u64(),
        acknowledged_sync_checked: serving["acknowledged_sync_checked"].as_u64(),
        rejoin_s: Some(t(rejoined_at) - serving_s),
        checksums_equal: new_primary["checksums"].is_object()
            && new_primary["checksums"] == new_backup["checksums"],
        schemas_equal: new_primary["schemas"].is_object()
            && new_primary["schemas"] == new_backup["schemas"],
        subscriber_columns: columns(&new_primary),
        seconds,
        plot: args.plot.clone(),
    })
}
