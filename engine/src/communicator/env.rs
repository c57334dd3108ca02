//! What every part of the communicator shares: what it needs from its
//! engine ([`CommEnv`]), the script-facing result type, the default wait
//! and the size from which a named allreduce takes the large-array path.

use rhai::EvalAltResult;
use std::cell::RefCell;
use std::rc::Rc;

pub(crate) type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// The default wait for any one collective, in seconds.
pub const DEFAULT_TIMEOUT_SECS: f64 = 30.0;

/// What a communicator needs from its engine: the zmq context, the address
/// to bind on and the one to advertise to peers, the engine's id (for
/// messages), and the CURVE pair the hub gave at registration.
#[derive(Clone)]
pub struct CommEnv {
    /// The engine's zmq context.
    pub ctx: zmq::Context,
    /// The interface to bind on (may be a wildcard).
    pub ip: String,
    /// The address peers reach this engine at (`info`'s `host` and URLs).
    pub advertise: String,
    /// The engine's id.
    pub engine_id: u32,
    /// The CURVE pair from the hub's registration reply (None without
    /// CURVE): a communicator's ROUTER and PUB are CURVE servers with it,
    /// its DEALER and SUB clients of it. Updated when the engine registers
    /// again with a restarted hub; a communicator keeps the pair it was
    /// made with.
    pub curve: Rc<RefCell<Option<zpar_protocol::CurveKeys>>>,
}

/// A named allreduce of an array of at least this many bytes takes the
/// large-array path: a roster round, then shared memory when every engine
/// is on one host ([`super::shared`]) or the ring otherwise
/// ([`super::ring`]). Below it the chunked tree is faster: on one host the
/// roster and barrier rounds cost more than the bytes they save. Measured
/// with `zpar bench allreduce` (ARCHITECTURE.md, "Collectives by size").
pub const LARGE_MIN_BYTES: usize = 256 << 10;
