//! # kirikae-restructure
//!
//! Two-phase online restructuring (seed 001): change a table's schema or layout while
//! transactions keep running on it.
//!
//! 1. **Phase 1, copy and restructure.** A new table is created; the old table's
//!    *lock history* is enabled (before the first record is copied); every record is
//!    copied through the [`Plan`] in chunks while the service keeps reading and writing.
//!    The history records only the RIDs of records locked for update.
//! 2. **Phase 2, update synchronization.** Rounds take the history, re-read each RID's
//!    *current* record from the old table and apply it to the new one, until the next
//!    round fits in the allowed stall.
//! 3. **Switch.** New writers are held, in-flight writers finish, the last RIDs are
//!    drained, the name switches to the new table and writers continue there. Readers
//!    never wait.
//!
//! The lock history costs memory in proportion to records touched (a bitmap at most),
//! where a journal costs every write times its row size; [`Strategy::Journal`] is kept
//! as the measured baseline. An abort or error at any point leaves the old table
//! untouched and serving.
//!
//! ## Example
//!
//! ```
//! use kirikae_engine::{Column, ColumnType, Database, Key, Schema, SessionInfo, Value};
//! use kirikae_restructure::{start, Conversion, Plan, RestructureOptions, Step};
//!
//! let db = Database::new();
//! db.create_table("subscriber", Schema::new(vec![
//!     Column::new("imsi", ColumnType::Text),
//!     Column::new("msisdn", ColumnType::Text),
//! ], &["imsi"]).unwrap()).unwrap();
//! let s = db.session(SessionInfo::default());
//! for i in 0..1000 {
//!     s.insert("subscriber", vec![format!("44010{i:010}").into(), format!("090{i:08}").into()]).unwrap();
//! }
//!
//! let plan = Plan::new(vec![
//!     Step::ChangeType { column: "msisdn".into(), conversion: Conversion::TextToInt },
//!     Step::AddColumn { column: Column::new("plan", ColumnType::Text).default_value("basic") },
//! ]);
//! // A write in flight while the restructure starts: the switch waits for it, and
//! // the new table gets its result.
//! let mut tx = s.begin();
//! tx.update_columns("subscriber", &Key::from("440100000000007"), &[("msisdn", "09099999999".into())]).unwrap();
//! let handle = start(&db, "subscriber", plan, RestructureOptions::default()).unwrap();
//! tx.commit().unwrap();
//! let report = handle.wait().unwrap();
//!
//! assert_eq!(report.rows_final, 1000);
//! let row = s.get("subscriber", &Key::from("440100000000007")).unwrap().unwrap();
//! assert_eq!(row[1], Value::Int(9_099_999_999));
//! assert_eq!(row[2], Value::from("basic"));
//! ```
#![deny(missing_docs)]

mod announcement;
mod context;
mod control;
mod conversion;
mod error;
mod job;
mod journal;
mod lock_history;
mod options;
mod pace;
mod phase;
mod phase1;
mod phase2;
mod plan;
mod progress;
mod replica;
mod report;
mod rounds;
mod switch;
mod tracker;
mod twin;
mod verify;

pub use announcement::Announcement;
pub use control::{start, RestructureHandle};
pub use conversion::Conversion;
pub use error::{ConversionError, RestructureError, Result};
pub use journal::{Journal, JournalEntry};
pub use lock_history::LockHistory;
pub use options::{NonConvergence, RestructureOptions, Strategy, SwitchInspector};
pub use phase::Phase;
pub use plan::{CompiledTransform, Plan, RowFailure, RowFn, Step, Transform};
pub use progress::Progress;
pub use replica::Replica;
pub use report::{Hold, HoldEnd, HoldKind, RestructureReport};
pub use verify::tables_agree;
