//! zpar-hub (in progress)
pub mod heartbeat;
pub mod hub;
pub mod registry;
pub mod scheduler;
pub use hub::{Hub, HubConfig, PortPlan};
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
}
