#![no_main]
//! `cargo +nightly fuzz run snapshot_load`; the harness is shared with the stable replay test.

#[path = "../harness/repair.rs"]
mod repair;

#[path = "../harness/snapshot_load.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
