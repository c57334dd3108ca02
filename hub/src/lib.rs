//! # zpar-hub: the controller between clients and engines
//!
//! The hub is the one process everyone connects to. It owns:
//!
//! - **registration and queries**: engines register over their link and
//!   get ids 0, 1, 2, … in order, never reused; clients ask on a ROUTER for
//!   the engine table, queue status;
//! - **heartbeats** (a ROUTER that pings engines and reads their pongs, a
//!   PUB that pings clients, on a thread of their own, [`heartbeat`]): an
//!   engine that misses `hb_misses` beats is unregistered and every request
//!   pending on it fails with `EngineDied`;
//! - **routing**: direct (mux), load-balanced (task) and control requests
//!   from client-facing ROUTERs to the engines' link ROUTER (one connection
//!   per engine, each message tagged with its channel), one message with a
//!   target list fanned out here; replies routed back by the client identity
//!   they carry; iopub from engines' links published to clients, and the
//!   topics clients subscribe to sent to the engines;
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
mod error;
pub mod handshakes;
pub mod heartbeat;
pub mod hub;
pub mod records;
mod subscriptions;
mod unroutable;
pub use crate::core::{registry, scheduler};
pub use config::{CurveMode, Db, HubConfig, PortPlan, DEFAULT_DB_LIMIT};
pub use error::HubError;
pub use hub::Hub;
pub use scheduler::Scheme;
