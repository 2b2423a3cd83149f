//! `kirikae bench engine`: point reads and autocommit updates on the subscriber table,
//! kirikae against SQLite in-memory (bundled, prepared statements, `WITHOUT ROWID`
//! primary-key table), same rows and same keys, side by side in one run.
//!
//! kirikae returns a shared row (no copy); SQLite copies the six columns out, as an
//! application must. With two threads SQLite runs one connection behind a mutex (an
//! in-memory database is private to its connection).

use std::hint::black_box;
use std::time::Duration;

use kirikae::engine::{Database, Key, SessionInfo, Value};
use kirikae_workload::workload::{self, KeyChooser, SUBSCRIBER_TABLE};
use parking_lot::Mutex;
use rusqlite::{params, Connection};
use serde::Serialize;

use crate::measure::{ops_per_s, ops_per_s_local};
use crate::memory_hop;
use crate::CliError;

/// Options of `kirikae bench engine`.
#[derive(clap::Args, Debug)]
// A negative number is a value (refused with its option\'s range), not a flag.
#[command(allow_negative_numbers = true)]
pub struct EngineBenchArgs {
    /// Subscribers in the table.
    #[arg(long, default_value_t = 200_000, value_parser = crate::arg_ranges::rows)]
    pub rows: u64,
    /// Seconds per measured cell.
    #[arg(long, default_value_t = 2.0, value_parser = crate::arg_ranges::positive_seconds)]
    pub seconds: f64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The measured figures.
#[derive(Debug, Serialize)]
pub struct EngineBenchReport {
    rows: u64,
    seconds_per_cell: f64,
    kirikae_get_ops_per_s: f64,
    sqlite_get_ops_per_s: f64,
    kirikae_update_ops_per_s: f64,
    sqlite_update_ops_per_s: f64,
    get_ratio: f64,
    update_ratio: f64,
    /// Point reads of keys the table does not have (each sampled key with a
    /// character added), 1 thread: kirikae's index learns a key is absent in its
    /// entry array (`probe_table.rs`), a cost its found keys do not pay.
    kirikae_get_absent_ops_per_s: f64,
    sqlite_get_absent_ops_per_s: f64,
    get_absent_ratio: f64,
    kirikae_get_ops_per_s_2t: f64,
    sqlite_get_ops_per_s_2t: f64,
    kirikae_update_ops_per_s_2t: f64,
    sqlite_update_ops_per_s_2t: f64,
    get_ratio_2t: f64,
    update_ratio_2t: f64,
    /// One dependent load from a random cache line of a working set as large as
    /// the one the gets touch (`memory_hop.rs`), ns: the floor under a point read
    /// on this machine, measured just before and just after the 1-thread gets
    /// (the lower of the two).
    memory_hop_ns: f64,
    /// A kirikae get's time over one memory hop.
    kirikae_get_hops: f64,
    /// A SQLite get's time over one memory hop.
    sqlite_get_hops: f64,
}

/// Keys the gets and updates pick from (a power of two).
const SAMPLE_KEYS: usize = 1 << 16;
/// Cache lines a get touches: the index entry, the record's slot and two of the
/// record's own (its header and the column read).
const LINES_PER_GET: usize = 4;

const SELECT: &str =
    "SELECT imsi, msisdn, status, balance, last_seen, region FROM subscriber WHERE imsi = ?1";
const UPDATE: &str = "UPDATE subscriber SET balance = ?1, last_seen = ?2 WHERE imsi = ?3";

fn sqlite_with_subscribers(rows: u64) -> Result<Connection, CliError> {
    let mut conn = Connection::open_in_memory()?;
    conn.execute_batch(
        "CREATE TABLE subscriber (
            imsi TEXT NOT NULL PRIMARY KEY, msisdn TEXT NOT NULL, status TEXT NOT NULL,
            balance INTEGER NOT NULL, last_seen INTEGER NOT NULL, region TEXT NOT NULL
        ) WITHOUT ROWID;",
    )?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare("INSERT INTO subscriber VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        for i in 0..rows {
            let row: Vec<rusqlite::types::Value> = workload::subscriber_row(i)
                .into_iter()
                .map(|v| match v {
                    Value::Int(n) => rusqlite::types::Value::Integer(n),
                    Value::Text(s) => rusqlite::types::Value::Text(s.into()),
                    other => rusqlite::types::Value::Text(other.to_string()),
                })
                .collect();
            insert.execute(rusqlite::params_from_iter(row))?;
        }
    }
    tx.commit()?;
    Ok(conn)
}

type SqliteRow = (String, String, String, i64, i64, String);

fn sqlite_get(stmt: &mut rusqlite::Statement<'_>, imsi: &str) -> SqliteRow {
    stmt.query_row(params![imsi], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    })
    .unwrap_or_else(|e| panic!("sqlite get {imsi}: {e}"))
}

/// Runs the benchmark.
pub fn run(args: &EngineBenchArgs) -> Result<EngineBenchReport, CliError> {
    let cell = Duration::from_secs_f64(args.seconds);
    eprintln!("loading {} subscribers into kirikae and SQLite…", args.rows);
    let db = Database::new();
    workload::load_subscribers(&db, args.rows, &|_| {})?;
    let conn = sqlite_with_subscribers(args.rows)?;
    let keys = KeyChooser::uniform(args.rows).sample(SAMPLE_KEYS, 7);
    let texts: Vec<&str> = keys
        .iter()
        .map(|k| k.values()[0].as_text().unwrap_or(""))
        .collect();
    let absent_texts: Vec<String> = texts.iter().map(|t| format!("{t}x")).collect();
    let absent_keys: Vec<Key> = absent_texts.iter().map(|t| Key::from(t.as_str())).collect();
    let mask = keys.len() - 1;
    let pick = |t: usize, i: u64| (i as usize).wrapping_mul(31).wrapping_add(t * 7919) & mask;
    let session = db.session(SessionInfo::new("bench", "bench", None));

    let kirikae_get = |t: usize, i: u64| {
        let row = session.get(SUBSCRIBER_TABLE, &keys[pick(t, i)]);
        black_box(
            row.map(|r| r.map(|r| r[3].as_int()))
                .unwrap_or_else(|e| panic!("{e}")),
        );
    };
    let kirikae_update = |t: usize, i: u64| {
        let changes = [
            ("balance", Value::Int(i as i64)),
            ("last_seen", Value::Int(i as i64)),
        ];
        session
            .update_columns(SUBSCRIBER_TABLE, &keys[pick(t, i)], &changes)
            .unwrap_or_else(|e| panic!("{e}"));
    };

    // The floor is measured around the 1-thread gets, before and after, and the lower
    // figure kept: on a shared host the same hop moves by half between seconds.
    let hop_lines = SAMPLE_KEYS * LINES_PER_GET;
    let hop_before_ns = memory_hop::hop_ns(hop_lines, cell / 2);
    let kirikae_get_1 = ops_per_s_local("kirikae get (1 thread)", cell, &mut |i| kirikae_get(0, i));
    let sqlite_get_1 = {
        let mut stmt = conn.prepare(SELECT)?;
        ops_per_s_local("sqlite get (1 thread)", cell, &mut |i| {
            black_box(sqlite_get(&mut stmt, texts[pick(0, i)]));
        })
    };
    let memory_hop_ns = hop_before_ns.min(memory_hop::hop_ns(hop_lines, cell / 2));
    let kirikae_get_absent = ops_per_s_local("kirikae get, absent keys", cell, &mut |i| {
        let row = session.get(SUBSCRIBER_TABLE, &absent_keys[pick(0, i)]);
        assert!(matches!(row, Ok(None)), "an absent key was found: {row:?}");
    });
    let sqlite_get_absent = {
        let mut stmt = conn.prepare(SELECT)?;
        ops_per_s_local("sqlite get, absent keys", cell, &mut |i| {
            let found = stmt
                .exists(params![absent_texts[pick(0, i)]])
                .unwrap_or_else(|e| panic!("sqlite get: {e}"));
            assert!(!found, "an absent key was found");
        })
    };
    let kirikae_update_1 = ops_per_s_local("kirikae update (1 thread)", cell, &mut |i| {
        kirikae_update(0, i)
    });
    let sqlite_update_1 = {
        let mut stmt = conn.prepare(UPDATE)?;
        ops_per_s_local("sqlite update (1 thread)", cell, &mut |i| {
            let n = stmt
                .execute(params![i as i64, i as i64, texts[pick(0, i)]])
                .unwrap_or_else(|e| panic!("{e}"));
            debug_assert_eq!(n, 1);
        })
    };

    let kirikae_get_2 = ops_per_s("kirikae get (2 threads)", 2, cell, &kirikae_get);
    let conn = Mutex::new(conn);
    let sqlite_get_2 = ops_per_s("sqlite get (2 threads)", 2, cell, &|t, i| {
        let c = conn.lock();
        let mut stmt = c.prepare_cached(SELECT).unwrap_or_else(|e| panic!("{e}"));
        black_box(sqlite_get(&mut stmt, texts[pick(t, i)]));
    });
    let kirikae_update_2 = ops_per_s("kirikae update (2 threads)", 2, cell, &kirikae_update);
    let sqlite_update_2 = ops_per_s("sqlite update (2 threads)", 2, cell, &|t, i| {
        let c = conn.lock();
        let mut stmt = c.prepare_cached(UPDATE).unwrap_or_else(|e| panic!("{e}"));
        stmt.execute(params![i as i64, i as i64, texts[pick(t, i)]])
            .unwrap_or_else(|e| panic!("{e}"));
    });

    let hops = |ops_per_s: f64| 1e9 / ops_per_s / memory_hop_ns;

    Ok(EngineBenchReport {
        rows: args.rows,
        seconds_per_cell: args.seconds,
        kirikae_get_ops_per_s: kirikae_get_1,
        sqlite_get_ops_per_s: sqlite_get_1,
        kirikae_update_ops_per_s: kirikae_update_1,
        sqlite_update_ops_per_s: sqlite_update_1,
        get_ratio: kirikae_get_1 / sqlite_get_1,
        update_ratio: kirikae_update_1 / sqlite_update_1,
        kirikae_get_absent_ops_per_s: kirikae_get_absent,
        sqlite_get_absent_ops_per_s: sqlite_get_absent,
        get_absent_ratio: kirikae_get_absent / sqlite_get_absent,
        kirikae_get_ops_per_s_2t: kirikae_get_2,
        sqlite_get_ops_per_s_2t: sqlite_get_2,
        kirikae_update_ops_per_s_2t: kirikae_update_2,
        sqlite_update_ops_per_s_2t: sqlite_update_2,
        get_ratio_2t: kirikae_get_2 / sqlite_get_2,
        update_ratio_2t: kirikae_update_2 / sqlite_update_2,
        memory_hop_ns,
        kirikae_get_hops: hops(kirikae_get_1),
        sqlite_get_hops: hops(sqlite_get_1),
    })
}

/// Prints the report as a table.
pub fn print_table(r: &EngineBenchReport) {
    say!("{} subscribers, {} s per cell", r.rows, r.seconds_per_cell);
    say!(
        "{:<22} {:>14} {:>14} {:>8}",
        "operation",
        "kirikae ops/s",
        "sqlite ops/s",
        "ratio"
    );
    let line = |name: &str, k: f64, s: f64| say!("{name:<22} {k:>14.0} {s:>14.0} {:>8.1}", k / s);
    line(
        "get, 1 thread",
        r.kirikae_get_ops_per_s,
        r.sqlite_get_ops_per_s,
    );
    line(
        "update, 1 thread",
        r.kirikae_update_ops_per_s,
        r.sqlite_update_ops_per_s,
    );
    line(
        "get absent, 1 thread",
        r.kirikae_get_absent_ops_per_s,
        r.sqlite_get_absent_ops_per_s,
    );
    line(
        "get, 2 threads",
        r.kirikae_get_ops_per_s_2t,
        r.sqlite_get_ops_per_s_2t,
    );
    line(
        "update, 2 threads",
        r.kirikae_update_ops_per_s_2t,
        r.sqlite_update_ops_per_s_2t,
    );
    say!(
        "one dependent load from a random cache line (working set as large as the gets'): \
         {:.0} ns; a get costs {:.1} of them in kirikae, {:.1} in SQLite",
        r.memory_hop_ns,
        r.kirikae_get_hops,
        r.sqlite_get_hops
    );
}
