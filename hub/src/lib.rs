//! # zpar-hub: the controller between clients and engines
//!
//! The hub is the one process everyone connects to. It owns:
//!
//! - **registration and queries** (ROUTER): engines get ids 0, 1, 2, … in
//!   order, never reused; clients get the engine table, queue status;
//! - **heartbeats** (PUB ping + ROUTER pong, on a thread of their own,
//!   [`heartbeat`]): an engine that misses `hb_misses` beats is unregistered
//!   and every request pending on it fails with `EngineDied`;
//! - **routing**: direct (mux), load-balanced (task) and control requests
//!   from client-facing ROUTERs to engine-facing ROUTERs, one message with a
//!   target list fanned out here; replies routed back by the client identity
//!   they carry; iopub forwarded from engines to clients;
//! - **task records** ([`records`]): every request and its reply, in memory
//!   or in SQLite, committed before the reply goes out;
//! - **notifications** (PUB): engines joining and leaving;
//! - **encryption**: with CURVE on (by default when it binds beyond
//!   loopback) every socket above is a CURVE server with the keypair of
//!   the connection files, and engines get their communicators' pair at
//!   registration; a thread ([`handshakes`]) logs, at debug level, each
//!   peer whose keys do not fit.
//!
//! It does not run code, parse request contents or copy buffers.
//!
//! The crate is in two layers. [`core`] is the logic — engine table,
//! scheduler, dependencies, retries, records, queries — as a state machine
//! with no I/O: `HubCore::handle(event, now) -> Vec<Action>`, unit-tested by
//! feeding it events. [`hub`] binds the sockets, runs the poll loop, turns
//! what it receives into events and performs the actions; [`config`] is
//! what it is given to start ([`HubConfig`]).
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! let profile = zpar_protocol::Profile::named("default");
//! let hub = zpar_hub::Hub::bind(zpar_hub::HubConfig::new(profile)).unwrap();
//! println!("clients connect to port {}", hub.client_connection().registration);
//! static STOP: AtomicBool = AtomicBool::new(false);
//! hub.run(&STOP).unwrap(); // until STOP is set or a client shuts the cluster down
//! ```

pub mod config;
pub mod core;
pub mod handshakes;
pub mod heartbeat;
pub mod hub;
pub mod records;
mod unroutable;
pub use crate::core::{registry, scheduler};
pub use config::{CurveMode, Db, HubConfig, PortPlan, DEFAULT_DB_LIMIT};
pub use hub::Hub;
pub use scheduler::Scheme;

/// Why a hub could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A port could not be bound.
    #[error("cannot bind {addr} (is another hub using this port?)")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: zmq::Error,
    },
    /// `--ip` is not an address of this host.
    #[error("{ip} is not an address of this host: give --ip one of its addresses (see `ip addr`), or 0.0.0.0 for all of them")]
    NotLocal {
        /// The address asked for.
        ip: String,
    },
    /// Bound on every interface, but no address to tell peers.
    #[error("the hub binds {ip} (every interface) but cannot tell which address peers should use: give it with --location ADDRESS")]
    NoLocation {
        /// The wildcard bound.
        ip: String,
    },
    /// Writing a connection file or making the session failed.
    #[error(transparent)]
    Protocol(#[from] zpar_protocol::ProtocolError),
    /// A socket failed.
    #[error("socket error")]
    Zmq(#[from] zmq::Error),
    /// A thread of the hub could not start.
    #[error("cannot start the hub's thread for {what} (is the system out of threads or memory?)")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The task database's files could not be created private (0600).
    #[error("cannot create the task database {path} and its -wal and -shm files with mode 0600 (does its folder exist, and may you write there?)")]
    DbFile {
        /// The database file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The task database could not be opened.
    #[error("cannot open the task database {path}")]
    Db {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
}
