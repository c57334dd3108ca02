//! # zpar-engine: the worker that runs code
//!
//! An engine registers with the hub, then serves requests in one persistent
//! [Rhai](https://rhai.rs) namespace ([`namespace`]): top-level `let`
//! variables and `fn` definitions survive between requests. It owns:
//!
//! - the engine's core (`core/`): a state machine with no I/O, in the
//!   hub core's shape, that decides what every request gets — execute,
//!   apply, push, pull on the mux and task channels; control (abort,
//!   interrupt, clear, shutdown) read first, and served mid-script from
//!   Rhai's progress callback so an interrupt stops a running loop; why a
//!   script stops ([`stop`]); `busy`/`idle` and the execution count;
//! - the thin loop around it (`serve.rs`): one receive path over every
//!   socket (`io.rs`), decoded so that every validly signed request gets
//!   an answer, even one it cannot understand (`inbound.rs`); the run in
//!   the namespace (`run.rs`); a large request's chunk stream
//!   (`stream_in.rs`); start-up in [`server`];
//! - the heartbeat, on a thread of its own ([`heartbeat`]);
//! - value conversion between scripts and the wire ([`convert`]) and native
//!   numeric arrays ([`arrays`]);
//! - the `BinaryTreeCommunicator` ([`communicator`]): engines reducing and
//!   broadcasting among themselves over their own sockets, the protocol a
//!   state machine without I/O ([`communicator::collective`]);
//! - serving as a Jupyter kernel ([`kernel`]): a cluster engine bound as a
//!   kernel beside the hub (same namespace, one request at a time), or a
//!   standalone kernel with no hub ([`EngineServer::kernel`]);
//! - CURVE, when the hub runs with it: its sockets to the hub are CURVE
//!   clients with the connection's keys, its communicators' sockets CURVE
//!   servers and clients with the pair the hub gives at registration; keys
//!   that do not fit the hub's end the registration wait at once
//!   ([`EngineError::Handshake`]).
//!
//! It is a library so a Rust program can add native functions and run its
//! own engine binary:
//!
//! ```no_run
//! use zpar_engine::{EngineConfig, EngineServer};
//! let file = zpar_protocol::Profile::named("default").engine_file();
//! let conn = zpar_protocol::connection::read_connection_file(&file).unwrap();
//! let mut server = EngineServer::new(EngineConfig::new(conn));
//! server.on_setup(|e| { e.register_fn("dot", |a: i64, b: i64| a * b); });
//! server.run().unwrap();
//! ```

pub mod arrays;
pub mod communicator;
pub mod convert;
mod core;
mod error;
pub mod heartbeat;
mod hub_watch;
mod inbound;
mod io;
pub mod kernel;
pub mod namespace;
mod relay;
mod run;
mod serve;
pub mod server;
pub mod stop;
mod stream_in;
pub use error::EngineError;
pub use kernel::{KernelConfig, KernelError};
pub use namespace::{Namespace, ScriptError};
/// The script engine natives are registered on (`register_fn`).
pub use rhai;
pub use server::{EngineConfig, EngineServer};
