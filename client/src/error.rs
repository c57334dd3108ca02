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
    /// The hub is there, but the security handshake with it fails: this
    /// client's CURVE keys (from its connection file) do not fit the
    /// hub's, or one side uses CURVE and the other does not. The hub
    /// answers nothing to such a peer, so this is said instead of a wait.
    #[error("cannot connect to the hub at {url}: {reason}")]
    Handshake {
        /// The hub's registration address.
        url: String,
        /// What failed, and what to do.
        reason: String,
    },
    /// The hub went silent (killed, its host gone) or restarted. Every
    /// request it had not answered fails with this, and new requests fail
    /// at once until it is back; the same [`Client`](crate::Client)
    /// reconnects by itself when a hub comes back on the same connection
    /// file (`zpar hub --reuse`).
    #[error(
        "lost the hub at {url}: {reason}. Requests it had not answered are lost and nothing is \
         sent until it is back; restart it in place with `zpar hub --reuse` (this client \
         reconnects by itself), then `Client::get_result(msg_id)` fetches what finished"
    )]
    HubLost {
        /// The hub's registration address.
        url: String,
        /// What the client saw.
        reason: HubLoss,
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
    /// A request would carry more buffer frames than a message may hold:
    /// the hub and the engines drop such a message, so it was not sent.
    #[error(
        "the request carries {buffers} buffers, more than the {limit} one message may hold, \
         so it was not sent: put the data in fewer, larger values (one numeric array or one \
         byte string is one buffer, whatever its length), or split it over several requests"
    )]
    TooManyBuffers {
        /// Buffers the request would carry.
        buffers: usize,
        /// The most one message may carry.
        limit: usize,
    },
    /// A request's JSON would be larger than one message frame may be:
    /// the hub drops such a message, so it was not sent.
    #[error(
        "the request's {frame} is {bytes} bytes of JSON, more than the {limit} one message          frame may hold, so it was not sent: large values travel as buffers by themselves;          this is code or request text, so split it over several requests"
    )]
    TooLarge {
        /// Which JSON frame (`content`, `metadata`).
        frame: &'static str,
        /// Its size.
        bytes: usize,
        /// The most one frame may hold.
        limit: usize,
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
    /// A socket failed (out of file descriptors: it says the limit and
    /// how to raise it).
    #[error("socket error{}", zpar_protocol::net::out_of_files_hint(.0))]
    Zmq(#[from] zmq::Error),
    /// Starting a local cluster failed.
    #[error("local cluster: {0}")]
    Cluster(String),
    /// A script file for [`DirectView::run`](crate::DirectView::run) could
    /// not be read, or an `import` in it cannot be inlined; nothing was sent.
    #[error("{}{}: {message}", path.display(), place(*.line, *.column))]
    ScriptFile {
        /// The file (for an `import`, the file that has it).
        path: std::path::PathBuf,
        /// 1-based line of the `import`, if it is one.
        line: Option<u32>,
        /// 1-based column of the `import`.
        column: Option<u32>,
        /// What is wrong and what to do.
        message: String,
        /// The I/O error behind it, if one.
        #[source]
        source: Option<std::sync::Arc<std::io::Error>>,
    },
    /// A script file run with [`DirectView::run`](crate::DirectView::run)
    /// failed on an engine here: this file (the run one, or one it
    /// imports), line and column.
    #[error("{}{}: {error}", path.display(), place(*.line, *.column))]
    InFile {
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line in it.
        line: Option<u32>,
        /// 1-based column.
        column: Option<u32>,
        /// The engine's error (a [`RemoteError`](Error::RemoteError)).
        error: Box<Error>,
    },
}

/// `:line:column` after a file name, as compilers write it.
fn place(line: Option<u32>, column: Option<u32>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// How the client found its hub gone, in [`Error::HubLost`].
///
/// ```
/// use std::time::Duration;
/// let why = zpar_client::HubLoss::Silent { silence: Duration::from_secs(3) };
/// assert_eq!(why.to_string(), "no heartbeat or reply from it for 3.0s");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubLoss {
    /// No heartbeat or any other message for this long (the limit,
    /// [`Client::set_hub_timeout`](crate::Client::set_hub_timeout)).
    Silent {
        /// How long the hub had been silent.
        silence: Duration,
    },
    /// Its heartbeats now come from another hub instance: it restarted
    /// in place, forgetting the requests it was running.
    Restarted,
}

impl std::fmt::Display for HubLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubLoss::Silent { silence } => write!(
                f,
                "no heartbeat or reply from it for {:.1}s",
                silence.as_secs_f64()
            ),
            HubLoss::Restarted => write!(f, "it restarted and forgot the requests it was running"),
        }
    }
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
        .map(|e| format!("  - {}", zpar_protocol::error::Chain(e)))
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
            Error::InFile { error, .. } => error.engine(),
            _ => None,
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
