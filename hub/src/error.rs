//! [`HubError`]: why a hub could not start or keep running.

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
