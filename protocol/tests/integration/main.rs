//! zpar-protocol's integration tests, one binary (STYLE.md §14):
//!
//! - `malformed`: every kind of bad input gets its typed `ProtocolError`,
//!   and mutation loops over thousands of valid messages never panic;
//! - `fuzz_decode`: the `decode` fuzz target's body (`fuzz/src/lib.rs`) on a
//!   few hundred deterministic inputs, so it runs without a fuzzer;
//! - `jupyter_interop`: a conversation with Jupyter's own `Session` (Python
//!   `jupyter_client`) over zmq on loopback, signed and unsigned;
//! - `common`, `pyenv`: a deterministic PRNG and message supply; finding or
//!   making the Python the interop test needs.

mod common;
mod fuzz_decode;
mod jupyter_interop;
mod malformed;
mod pyenv;
