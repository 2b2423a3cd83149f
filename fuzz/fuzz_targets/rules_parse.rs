#![no_main]
//! `cargo +nightly fuzz run rules_parse`; the harness is shared with the stable replay test.

#[path = "../harness/rules_parse.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
