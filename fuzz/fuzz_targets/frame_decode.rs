#![no_main]
//! `cargo +nightly fuzz run frame_decode`; the harness is shared with the stable replay test.

#[path = "../harness/repair.rs"]
mod repair;

#[path = "../harness/frame_decode.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
