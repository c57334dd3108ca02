//! Why a running script must stop, as a type.
//!
//! The engine's core decides that a script must stop (an interrupt, its
//! operation limit, its timeout, a shutdown); Rhai's progress callback
//! hands the [`StopReason`] to the script engine as its termination token,
//! and the [`ScriptError`](crate::ScriptError) made from Rhai's error reads
//! it back: the reply's `ename` is the reason's [`ErrorClass`], its
//! `evalue` the reason's text. No string is split to find the class.
//!
//! ```
//! use zpar_engine::stop::{Interrupter, StopReason};
//! use zpar_protocol::ErrorClass;
//! let r = StopReason::Interrupted(Interrupter::Client);
//! assert_eq!(r.class(), ErrorClass::Interrupted);
//! assert_eq!(r.to_string(), "interrupted by the client");
//! ```

use std::fmt;
use zpar_protocol::ErrorClass;

/// Who interrupted a running script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupter {
    /// A client of the hub (`interrupt_request` on control).
    Client,
    /// A Jupyter front end of the engine's kernel.
    KernelClient,
    /// SIGINT to a standalone kernel.
    Signal,
}

/// Why a running script must stop.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// Somebody interrupted it.
    Interrupted(Interrupter),
    /// It ran more operations than its request allowed.
    OperationLimit {
        /// The limit it passed.
        limit: u64,
    },
    /// It ran past its request's timeout.
    Timeout {
        /// The timeout, in seconds.
        seconds: f64,
    },
    /// A client aborted it (an abort with `running`).
    Aborted,
    /// The engine is shutting down.
    EngineShutdown,
    /// A standalone kernel is shutting down.
    KernelShutdown,
}

impl StopReason {
    /// The error class a reply gives the stopped request.
    pub fn class(&self) -> ErrorClass {
        match self {
            StopReason::Interrupted(_)
            | StopReason::Aborted
            | StopReason::EngineShutdown
            | StopReason::KernelShutdown => ErrorClass::Interrupted,
            StopReason::OperationLimit { .. } => ErrorClass::OperationLimit,
            StopReason::Timeout { .. } => ErrorClass::Timeout,
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Interrupted(Interrupter::Client) => {
                f.write_str("interrupted by the client")
            }
            StopReason::Interrupted(Interrupter::KernelClient) => {
                f.write_str("interrupted by the kernel's client")
            }
            StopReason::Interrupted(Interrupter::Signal) => f.write_str("interrupted (SIGINT)"),
            StopReason::Aborted => f.write_str("aborted by a client"),
            StopReason::OperationLimit { limit } => {
                write!(f, "the request exceeded its limit of {limit} operations")
            }
            StopReason::Timeout { seconds } => {
                write!(f, "the request ran past its timeout of {seconds} s")
            }
            StopReason::EngineShutdown => f.write_str("the engine is shutting down"),
            StopReason::KernelShutdown => f.write_str("the kernel is shutting down"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_maps_onto_a_wire_class() {
        for (reason, class) in [
            (StopReason::Interrupted(Interrupter::Signal), "Interrupted"),
            (StopReason::OperationLimit { limit: 5 }, "OperationLimit"),
            (StopReason::Timeout { seconds: 0.5 }, "Timeout"),
            (StopReason::EngineShutdown, "Interrupted"),
            (StopReason::KernelShutdown, "Interrupted"),
        ] {
            assert_eq!(reason.class().as_str(), class);
            assert_eq!(ErrorClass::parse(class), reason.class());
        }
        assert_eq!(
            StopReason::OperationLimit { limit: 5 }.to_string(),
            "the request exceeded its limit of 5 operations"
        );
    }
}
