//! # zpar-hub: the controller between clients and engines
//!
//! The hub is the one process everyone connects to. It owns:
//!
//! - **registration and queries** (ROUTER): engines get ids 0, 1, 2, … in
//!   order, never reused; clients get the engine table, queue status;
//! - **heartbeats** (PUB ping + ROUTER pong, on a thread of their own,
//!   [`heartbeat`]): an engine that misses `hb_misses` beats is unregistered
//!   and every request pending on it fails with `EngineDied`;
//! - **routing** ([`hub`]): direct (mux), load-balanced (task) and control
//!   requests from client-facing ROUTERs to engine-facing ROUTERs, one
//!   message with a target list fanned out here; replies routed back by the
//!   client identity they carry; iopub forwarded from engines to clients;
//! - **notifications** (PUB): engines joining and leaving.
//!
//! It does not run code, parse request contents or copy buffers. The engine
//! table ([`registry`]) and the load-balancing choice ([`scheduler`]) are
//! plain state machines, tested without sockets.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! let profile = zpar_protocol::Profile::named("default");
//! let hub = zpar_hub::Hub::bind(zpar_hub::HubConfig::new(profile)).unwrap();
//! println!("clients connect to port {}", hub.client_connection().registration);
//! static STOP: AtomicBool = AtomicBool::new(false);
//! hub.run(&STOP).unwrap(); // until STOP is set or a client shuts the cluster down
//! ```

pub mod heartbeat;
pub mod hub;
mod queries;
pub mod records;
pub mod registry;
mod requests;
pub mod scheduler;
pub use hub::{Db, Hub, HubConfig, PortPlan, DEFAULT_DB_LIMIT};
pub use scheduler::Scheme;

/// Why a hub could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A port could not be bound.
    #[error("cannot bind {addr}: {source} (is another hub using this port?)")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: zmq::Error,
    },
    /// Writing a connection file or making the session failed.
    #[error(transparent)]
    Protocol(#[from] zpar_protocol::ProtocolError),
    /// A socket failed.
    #[error("socket error: {0}")]
    Zmq(#[from] zmq::Error),
    /// The task database could not be opened.
    #[error("cannot open the task database {path}: {source}")]
    Db {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
}
