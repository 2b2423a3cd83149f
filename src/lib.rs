//! kirikae: an embedded main-memory database for services that must never stop.
//!
//! This facade re-exports the layers: [`engine`] (tables, RIDs, locks, transactions,
//! catalog switch, hooks, snapshots), [`restructure`] and [`replicate`].
pub use kirikae_engine as engine;
pub use kirikae_replicate as replicate;
pub use kirikae_restructure as restructure;

pub mod scenario;
pub mod telecom;
pub mod workload;
