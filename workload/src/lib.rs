//! Workloads for kirikae's demo, benches and tests; not part of the database's API.
//!
//! - [`workload`]: the subscriber table, its restructure plans, key choosers and the
//!   read/update workers that time every write.
//! - [`scenario`]: a workload with an online restructure in the middle, measured
//!   before, during and after.
//! - [`telecom`]: the telecom traffic mix (reads, subscriber updates, charges, call
//!   events) that the replication demo and benches run.

pub mod scenario;
pub mod telecom;
pub mod workload;
