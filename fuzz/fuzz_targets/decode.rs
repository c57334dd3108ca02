//! Fuzz target: arbitrary bytes, split into frames, through zpar-protocol's
//! whole decoder. The body lives in `src/lib.rs` so that the protocol crate's
//! integration tests run it too (`tests/integration/fuzz_decode.rs`).
//!
//! Run with `cargo +nightly fuzz run decode` from the workspace root.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zpar_protocol_fuzz::decode(data));
