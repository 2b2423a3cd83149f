//! Helpers shared by kirikae's tests, so that each crate's tests do not carry their own
//! copies: the two-column table most tests use, one seeded PRNG, and waiting on a
//! condition with a deadline (never a bare sleep before an assertion).
//!
//! ```
//! use kirikae_testkit::{kv_database, kv_row, wait_for, Rng};
//! use std::time::Duration;
//!
//! let db = kv_database(&["acct"]);
//! let session = db.session(kirikae_engine::SessionInfo::default());
//! let mut rng = Rng::new(7);
//! session.insert("acct", kv_row(rng.below(100) as i64, 1)).expect("insert");
//! wait_for("one record", Duration::from_secs(1), || {
//!     db.table("acct").is_ok_and(|t| t.len() == 1)
//! });
//! ```

use std::time::{Duration, Instant};

pub mod netns;

use kirikae_engine::{Column, ColumnType, Database, Schema, Value};

/// The schema of the tests' usual table: `k` (int, primary key), `v` (int).
pub fn kv_schema() -> Schema {
    Schema::new(
        vec![
            Column::new("k", ColumnType::Int),
            Column::new("v", ColumnType::Int),
        ],
        &["k"],
    )
    .unwrap_or_else(|e| panic!("the test schema is valid: {e}"))
}

/// A database with one empty [`kv_schema`] table per name.
pub fn kv_database(tables: &[&str]) -> Database {
    let db = Database::new();
    for name in tables {
        db.create_table(name, kv_schema())
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
    }
    db
}

/// A [`kv_schema`] row.
pub fn kv_row(k: i64, v: i64) -> Vec<Value> {
    vec![Value::Int(k), Value::Int(v)]
}

/// Polls `done` until it holds; panics naming `what` if `timeout` passes first.
pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(100);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// The tests' one PRNG (xorshift64*): small, fast, and the same sequence for the same
/// seed on every machine, so that a failing seed replays.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from any seed (0 included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rng_replays_its_seed_and_spreads() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(3);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(3);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        let mut r = Rng::new(0);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[r.below(10) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }
}
