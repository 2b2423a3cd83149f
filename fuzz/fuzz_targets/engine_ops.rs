#![no_main]
//! `cargo +nightly fuzz run engine_ops`; the harness is shared with the stable replay test.

#[path = "../harness/engine_ops.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
