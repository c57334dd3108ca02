//! # zpar-engine: the worker that runs code
//!
//! An engine registers with the hub, then serves requests in one persistent
//! [Rhai](https://rhai.rs) namespace ([`namespace`]): top-level `let`
//! variables and `fn` definitions survive between requests. It owns:
//!
//! - the request loop ([`server`]): execute, apply, push, pull on the mux
//!   and task channels; control (abort, interrupt, clear, shutdown) read
//!   first, and polled mid-script from Rhai's progress callback so an
//!   interrupt stops a running loop; `print` streamed on iopub;
//! - answering every validly signed request, even one it cannot
//!   understand (an error reply of the matching type; `inbound.rs`);
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
mod channels;
pub mod communicator;
pub mod convert;
pub mod heartbeat;
mod inbound;
pub mod kernel;
pub mod namespace;
mod requests;
pub mod server;
pub use kernel::{KernelConfig, KernelError};
pub use namespace::{Namespace, ScriptError};
/// The script engine natives are registered on (`register_fn`).
pub use rhai;
pub use server::{EngineConfig, EngineServer};

/// Why an engine could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No hub answered the registration request in time.
    #[error(
        "no hub answered at {url} within {waited:?}: is `zpar hub` running with this profile?"
    )]
    NoHub {
        /// Where the engine tried.
        url: String,
        /// How long it tried.
        waited: std::time::Duration,
    },
    /// The hub is there, but the security handshake with it failed: the
    /// connection's CURVE keys do not fit the hub's.
    #[error("cannot connect to the hub at {url}: {reason}")]
    Handshake {
        /// Where the engine tried.
        url: String,
        /// What failed, and what to do.
        reason: String,
    },
    /// The hub refused the registration.
    #[error("the hub refused registration: {0}")]
    Refused(String),
    /// The connection file or key was unusable.
    #[error(transparent)]
    Protocol(#[from] zpar_protocol::ProtocolError),
    /// A socket failed.
    #[error("socket error")]
    Zmq(#[from] zmq::Error),
    /// The engine could not serve as a Jupyter kernel.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// An error and its causes on one line (for a reply's evalue, which has
/// no room for a chain).
pub(crate) fn error_line(e: &(dyn std::error::Error + 'static)) -> String {
    zpar_protocol::error::Chain(e).to_string()
}
