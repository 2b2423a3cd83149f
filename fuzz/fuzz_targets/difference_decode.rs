#![no_main]
//! `cargo +nightly fuzz run difference_decode`; the harness is shared with the stable replay test.

#[path = "../harness/repair.rs"]
mod repair;

#[path = "../harness/difference_decode.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
