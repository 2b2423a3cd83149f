//! kirikae: an embedded main-memory database for services that must never stop.
//!
//! This facade re-exports the three layers, and joins two of them where they meet
//! ([`RestructureReplica`]: a backup runs the restructures its primary announces),
//! so that an embedding service compiles only them:
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

use kirikae_engine::{CatalogEvent, Database};

/// A backup's [`DdlHandler`](replicate::DdlHandler) that runs the restructures its
/// primary announces: the same plan, online, while the backup keeps applying, and
/// the switch at the primary's switch in the stream. Give it to
/// [`BackupConfig::ddl`](replicate::BackupConfig::ddl).
///
/// ```
/// use std::sync::Arc;
/// use kirikae::replicate::BackupConfig;
/// use kirikae::restructure::RestructureOptions;
///
/// let config = BackupConfig {
///     ddl: Some(Arc::new(kirikae::RestructureReplica::new(RestructureOptions::default()))),
///     ..BackupConfig::default()
/// };
/// assert!(config.ddl.is_some());
/// ```
#[derive(Debug, Default)]
pub struct RestructureReplica(pub restructure::Replica);

impl RestructureReplica {
    /// Runs the announced restructures with `options` (switching on command).
    pub fn new(options: restructure::RestructureOptions) -> RestructureReplica {
        RestructureReplica(restructure::Replica::new(options))
    }
}

impl replicate::DdlHandler for RestructureReplica {
    fn apply(&self, db: &Database, table: &str, event: &CatalogEvent) -> Result<(), String> {
        self.0.apply(db, table, event)
    }

    fn promoted(&self, _db: &Database) {
        self.0.abort_all();
    }
}
