//! kirikae: an embedded main-memory database for services that must never stop.
//!
//! This facade re-exports the three layers and nothing else, so that an embedding
//! service compiles only them:
//!
//! - [`engine`]: tables addressed by RID, record locks, transactions, the catalog
//!   switch, write hooks, snapshots.
//! - [`restructure`]: two-phase online restructuring (copy through a plan while a
//!   lock history records changed RIDs, re-sync them, switch the name).
//! - [`replicate`]: four-mode replication (skip / async / ordered / sync) to a peer,
//!   chosen per operation by operator rules.
//!
//! The `kirikae` command (demo, benches, primary and peer processes) is the
//! `kirikae-cli` crate; its workloads are `kirikae-workload`.
//!
//! ```
//! use kirikae::engine::{Column, ColumnType, Database, Key, Schema, SessionInfo, Value};
//! use kirikae::restructure::{start, Plan, RestructureOptions, Step};
//!
//! let db = Database::new();
//! let schema = Schema::new(
//!     vec![Column::new("imsi", ColumnType::Text), Column::new("balance", ColumnType::Int)],
//!     &["imsi"],
//! )?;
//! db.create_table("subscriber", schema)?;
//! let s = db.session(SessionInfo::default());
//! s.insert("subscriber", vec!["440101234567890".into(), Value::Int(100)])?;
//!
//! // Add a column while the table stays in service.
//! let plan = Plan::new(vec![Step::AddColumn {
//!     column: Column::new("plan", ColumnType::Text).default_value("basic"),
//! }]);
//! let report = start(&db, "subscriber", plan, RestructureOptions::default())?.wait()?;
//! assert_eq!(report.rows_final, 1);
//!
//! let row = s.get("subscriber", &Key::from("440101234567890"))?.expect("present");
//! assert_eq!(row[2], Value::from("basic"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
/// The README's Rust examples, compiled and run as doc tests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;

pub use kirikae_engine as engine;
pub use kirikae_replicate as replicate;
pub use kirikae_restructure as restructure;
