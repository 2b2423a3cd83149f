//! # kirikae-restructure
//!
//! Two-phase online restructuring (phase 1 copy with a lock history, phase 2 update
//! synchronization, atomic switch). Built on [`kirikae_engine`]'s write observer and
//! writer hold; filled in by the restructuring issue.
#![deny(missing_docs)]

pub use kirikae_engine as engine;
