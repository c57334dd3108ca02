//! # zpar: interactive parallel computing for Rust on ZeroMQ
//!
//! zpar is IPython's parallel machinery (ipyparallel) for Rust: a **hub**
//! brokers **clients** and **engines** over ZeroMQ; engines run
//! [Rhai](https://rhai.rs) scripts in persistent namespaces; a client holds
//! views over engines to execute code, apply functions, push and pull
//! variables, scatter and gather, and run load-balanced tasks; engines talk
//! to each other directly for collectives such as allreduce.
//!
//! This crate is the facade: it re-exports the client API, so a program
//! writes `use zpar::{Client, Reference};`, and it holds the `zpar`
//! command-line tool (`hub`, `engine`, `cluster`, `console`, `bench`).
//!
//! ```no_run
//! use zpar::{Client, Reference, Value};
//! # fn main() -> zpar::Result<()> {
//! let client = Client::connect()?;                 // ~/.zpar/profile_default
//! let view = client.all();
//! view.scatter("id", Value::from(client.ids().iter().map(|&i| i as i64).collect::<Vec<_>>()), true)?.get()?;
//! let doubled = view.apply_sync("|x| x * 2", vec![Reference("id")])?;
//! println!("{doubled:?}");
//! # Ok(()) }
//! ```
//!
//! The pieces live in their own crates: `zpar-protocol` (wire format),
//! `zpar-hub`, `zpar-engine` and `zpar-client`.

pub mod bench;
pub mod cli;
pub mod console;
pub mod dashboard;
pub mod kernels;
pub mod wait;

pub use cli::serve_engines_with;
pub use zpar_client::*;
/// The script engine a program's natives are registered on, and the numeric
/// arrays they can take and return (see [`serve_engines_with`]).
pub use zpar_engine::{
    arrays::{F64Array, I64Array},
    rhai,
};
pub use zpar_protocol::{ClientConnection, EngineConnection, Profile};
