//! zpar-engine (in progress)
pub mod arrays;
pub mod communicator;
pub mod convert;
pub mod heartbeat;
pub mod namespace;
pub mod server;
pub use namespace::{Namespace, ScriptError};
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
    /// The hub refused the registration.
    #[error("the hub refused registration: {0}")]
    Refused(String),
    /// The connection file or key was unusable.
    #[error(transparent)]
    Protocol(#[from] zpar_protocol::ProtocolError),
    /// A socket failed.
    #[error("socket error: {0}")]
    Zmq(#[from] zmq::Error),
}
