//! How a communicator call fails: script errors, and why a driven state
//! machine ended without a result ([`DriveError`]).

use super::collective::CollectiveError;
use rhai::{Dynamic, EvalAltResult, Position};

/// Why [`super::driver::drive`] or [`super::driver::drive_ring`] ended
/// without a result.
pub(super) enum DriveError {
    /// The collective failed (a peer lost, a deadline passed, ...).
    Collective(CollectiveError),
    /// The communicator could not run it at all (not connected, busy, a
    /// socket error).
    Script(Box<EvalAltResult>),
}

impl DriveError {
    /// The error a script sees: a failed collective says so.
    pub(super) fn into_script(self) -> Box<EvalAltResult> {
        match self {
            DriveError::Script(e) => e,
            DriveError::Collective(e) => err(format!("collective failed: {e}")),
        }
    }
}

/// A script error with this message.
pub(super) fn err(msg: impl Into<String>) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(Dynamic::from(msg.into()), Position::NONE).into()
}

/// A socket operation of the communicator failed.
pub(super) fn zerr(what: &str, e: zmq::Error) -> Box<EvalAltResult> {
    err(format!("communicator: {what}: {e}"))
}

/// A bind to a port the system picks failed (none free, say).
pub(super) fn bind_err(ip: &str, e: zmq::Error) -> Box<EvalAltResult> {
    let hint = zpar_protocol::net::no_free_port_hint(&e);
    err(format!("communicator: bind on {ip}: {e}{hint}"))
}
