//! The client's error type.

use std::time::Duration;

/// What went wrong with a request or the connection.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The script failed on an engine.
    #[error("engine {engine}: {ename}: {message}{}", location(*.line, *.column))]
    RemoteError {
        /// The engine.
        engine: u32,
        /// Error class (`RuntimeError`, `SyntaxError`, `UnknownName`, ...).
        ename: String,
        /// The script error's message.
        message: String,
        /// 1-based line in the submitted code.
        line: Option<u32>,
        /// 1-based column.
        column: Option<u32>,
    },
    /// The engine died before answering.
    #[error("engine {engine} died before answering request {msg_id}")]
    EngineDied {
        /// The engine.
        engine: u32,
        /// The request.
        msg_id: String,
    },
    /// The request was aborted before it ran.
    #[error("request {msg_id} was aborted on engine {engine} before it ran")]
    Aborted {
        /// The engine.
        engine: u32,
        /// The request.
        msg_id: String,
    },
    /// A wait on this side ran out.
    #[error("timed out after {waited:?}: {what}")]
    Timeout {
        /// How long we waited.
        waited: Duration,
        /// For what.
        what: String,
    },
    /// A task ran past the time limit it set for the engine (`timeout` in
    /// its metadata); the engine stopped it.
    #[error("engine {engine}: {message} (request {msg_id})")]
    TaskTimeout {
        /// The engine that stopped it.
        engine: u32,
        /// The request.
        msg_id: String,
        /// What the engine said.
        message: String,
    },
    /// No engines to run on.
    #[error("no engines are registered with the hub: start some with `zpar engine` or `zpar cluster start`")]
    NoEngines,
    /// A target is not a registered engine.
    #[error("engine {0} is not registered with the hub (it died, left, or never existed)")]
    UnknownEngine(u32),
    /// No hub answered.
    #[error("no hub answered at {url} within {waited:?}: is `zpar hub` running for this profile?")]
    NoHub {
        /// Where we tried.
        url: String,
        /// How long.
        waited: Duration,
    },
    /// Several engines failed; one error each.
    #[error("{} engines failed:\n{}", .0.len(), list(.0))]
    Multiple(Vec<Error>),
    /// The hub refused or could not route a request.
    #[error("the hub refused the request: {ename}: {message}")]
    Hub {
        /// Error class.
        ename: String,
        /// Why.
        message: String,
    },
    /// A value could not be converted.
    #[error("value conversion failed: {0}")]
    Value(String),
    /// The wire format was violated, or a connection file is bad.
    #[error(transparent)]
    Protocol(std::sync::Arc<zpar_protocol::ProtocolError>),
    /// The client's connection has been closed.
    #[error("the client is closed")]
    Closed,
    /// A socket failed.
    #[error("socket error: {0}")]
    Zmq(#[from] zmq::Error),
    /// Starting a local cluster failed.
    #[error("local cluster: {0}")]
    Cluster(String),
}

impl From<zpar_protocol::ProtocolError> for Error {
    fn from(e: zpar_protocol::ProtocolError) -> Error {
        Error::Protocol(std::sync::Arc::new(e))
    }
}

fn location(line: Option<u32>, column: Option<u32>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        (Some(l), None) => format!(" (line {l})"),
        _ => String::new(),
    }
}

fn list(errors: &[Error]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    /// The engine this error concerns, if one.
    pub fn engine(&self) -> Option<u32> {
        match self {
            Error::RemoteError { engine, .. }
            | Error::EngineDied { engine, .. }
            | Error::Aborted { engine, .. }
            | Error::TaskTimeout { engine, .. } => Some(*engine),
            Error::UnknownEngine(e) => Some(*e),
            _ => None,
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
