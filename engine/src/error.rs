//! [`EngineError`]: why an engine could not start or keep running.

use crate::kernel::KernelError;

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
    /// A socket failed (out of file descriptors: it says the limit and
    /// how to raise it).
    #[error("socket error{}", zpar_protocol::net::out_of_files_hint(.0))]
    Zmq(#[from] zmq::Error),
    /// A socket could not bind to a port the system picks (none free, it
    /// says why and what to do).
    #[error("could not bind {what} on {ip}: {source}{}", zpar_protocol::net::no_free_port_hint(.source))]
    Bind {
        /// Which socket.
        what: &'static str,
        /// The address.
        ip: String,
        /// Why.
        source: zmq::Error,
    },
    /// A thread of the engine could not start.
    #[error("could not start {what}")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The engine could not serve as a Jupyter kernel.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}
