//! `BinaryTreeCommunicator`: engines reducing and broadcasting among
//! themselves, without the hub or the client.
//!
//! # Design
//!
//! Every engine binds a ROUTER that its children's DEALERs connect to; the
//! root also binds a PUB that every other engine's SUB connects to. A
//! reduction flows up the tree (child DEALER → parent ROUTER); the result
//! comes down in one publish from the root.
//!
//! The layers, as everywhere in zpar: frames ⇄ decoded messages
//! ([`wire`]), a state machine with no I/O that makes every protocol
//! decision ([`collective::Collective`]), and a thin socket loop that feeds
//! it and performs what it returns (`tree.rs`). The script path (a Rhai
//! function) and the named path (`"sum"`, `"prod"`, `"min"`, `"max"` on
//! numeric arrays, in 1 MiB chunks, `native.rs`) share the machine and
//! differ only in their [`collective::Combine`] step.
//!
//! **By size**, as MPI chooses: a named allreduce of an array of at least
//! [`LARGE_MIN_BYTES`] starts with a roster round and then goes through
//! shared memory when every engine is on one host ([`shared`]) or round a
//! pipelined ring otherwise ([`ring`], its own machine with no I/O); both
//! fold in rank order. A script allreduce keeps the tree but passes large
//! arrays between engines of one host through mapped segments
//! (`Transport`). `com.last_algorithm` says which path ran.
//!
//! - **Order.** The ROUTER tells a parent which child sent which partial, so
//!   it combines `own, children in ascending id` — for the pre-order trees
//!   (`bintree`-shaped) that is the sequential left fold in id order, and an
//!   associative but non-commutative `f` gives the sequential answer.
//! - **Sequence numbers.** Every collective call advances a counter on every
//!   engine (they all make the same calls in the same order) and every
//!   message carries it. Older messages (left over from a failed call) are
//!   dropped; newer ones (a fast child already in the next call) are kept
//!   for later, decoded. Calls in a row can never mix.
//! - **Faults.** Every wait has a deadline (default 30 s, per communicator
//!   and per call). A parent waits a little longer the higher it sits
//!   (`timeout + height × timeout/4`), so the engine nearest a dead peer
//!   notices first and sends the failure up; the root publishes it, and
//!   every engine fails with an error naming the engine that did not answer.
//! - **Connect handshake.** PUB drops what it sends before a subscription is
//!   in place, so `connect` does not sleep: the root publishes probes until
//!   every engine has seen one and reported `ready` up the tree, then
//!   publishes `go`.
//!
//! Wire frames, up (DEALER → ROUTER) and down (PUB → SUB): `[kind, seq, k,
//! json, buffers…]` with kind `part`, `fail`, `ready`, `probe` or `go`.
//! Values use the protocol's value codec, so numeric arrays travel as raw
//! buffers.

use crate::convert::{encode_dynamic, from_value, pretty_type};
use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext, FLOAT, INT};
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use zpar_protocol::bulk;
use zpar_protocol::Value;

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

/// The script type. Clones share one communicator.
#[derive(Clone)]
pub struct BinaryTreeCommunicator(Rc<RefCell<Comm>>);

pub mod collective;
mod driver;
mod errors;
mod native;
pub mod ring;
pub mod shared;
mod shared_allreduce;
mod tree;
pub mod wire;
use crate::arrays::{F64Array, I64Array};
use collective::{Call, Combine};
use driver::drive;
use errors::{err, DriveError};
use native::Op;
pub use native::{CHUNK_ELEMS, LARGE_MIN_BYTES};
use shared::Slot;
use tree::{secs, Comm};
use wire::Payload;
use zpar_protocol::error::Chain;

/// A script value as a piece: `{"value": …}` and its buffers.
fn encode(d: &Dynamic) -> RhaiResult<Payload> {
    let mut buffers = Vec::new();
    let json =
        encode_dynamic(d, &mut buffers, None).map_err(|e| err(format!("communicator: {e}")))?;
    Ok(Payload {
        json: json!({ "value": json }),
        buffers,
    })
}

fn decode(p: &Payload) -> RhaiResult<Dynamic> {
    let v = Value::decode(&p.json["value"], &p.buffers)
        .map_err(|e| err(format!("communicator: {e}")))?;
    from_value(v).map_err(err)
}

/// The script path's combine step: `acc = f(acc, part)` with whole values.
struct ScriptFold<'a, 'b> {
    ctx: &'a NativeCallContext<'b>,
    f: &'a FnPtr,
    me: u32,
    acc: Dynamic,
    /// This engine's own error, returned to its script as it is.
    error: Option<Box<EvalAltResult>>,
    /// How its parts travel.
    transport: Transport<'a>,
    /// The root, whose result `accept` takes.
    root: u32,
}

/// How a script allreduce's large values travel between engines on one
/// host: a numeric array of at least [`LARGE_MIN_BYTES`] goes up through
/// the sender's `Up` segment when its parent is on this host, and the
/// root's result down through its `Down` segment when every engine is
/// (each part says whether its whole subtree is). The message carries only
/// the segment's name; the reader copies the array straight from the
/// mapping, instead of it crossing loopback TCP into a frame and from the
/// frame into an array.
///
/// Reuse is safe in an allreduce only: a child writes its `Up` segment
/// again in its next call, which begins after the root's broadcast, so
/// after its parent read it; the root writes `Down` again only once the
/// next call's gather is complete, so after every engine read it.
struct Transport<'a> {
    comm: &'a RefCell<Comm>,
    /// Whether this call may use it (an allreduce, shared memory on).
    allowed: bool,
    is_root: bool,
    /// Whether the parent is on this host.
    parent_here: bool,
    /// Whether this engine's subtree, so far, is all on this host.
    subtree_here: bool,
}

impl Transport<'_> {
    /// Notes whether a child's part says its subtree is on this host.
    fn heard(&mut self, part: &Payload) {
        self.subtree_here &= part.json["node"].as_str() == Some(bulk::host_id());
    }

    /// This engine's piece: through its segment when it may, else inline.
    fn encode(&mut self, acc: &Dynamic) -> RhaiResult<Payload> {
        let receivers_here = if self.is_root {
            self.subtree_here
        } else {
            self.parent_here
        };
        let mapped = if self.allowed && receivers_here {
            self.mapped(acc)?
        } else {
            None
        };
        let mut payload = match mapped {
            Some(p) => p,
            None => encode(acc)?,
        };
        if self.subtree_here && !self.is_root {
            payload.json["node"] = bulk::host_id().into();
        }
        Ok(payload)
    }

    /// A large numeric array, written into this engine's segment.
    fn mapped(&mut self, acc: &Dynamic) -> RhaiResult<Option<Payload>> {
        let slot = if self.is_root { Slot::Down } else { Slot::Up };
        let mut c = self.comm.borrow_mut();
        // No room in shared memory: the value goes inline instead.
        let mut write = |dtype: &str, bytes: &[u8]| -> RhaiResult<Option<Payload>> {
            let seg = match c.shared.own_segment(slot, bytes.len()) {
                Ok(seg) => seg,
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "communicator: no shared segment; sending the value inline");
                    return Ok(None);
                }
            };
            seg.map
                .elems_mut::<u8>(0, bytes.len())
                .copy_from_slice(bytes);
            let json = json!({"mapped": {
                "segment": seg.name, "dtype": dtype, "bytes": bytes.len(), "host": bulk::host_id()
            }});
            Ok(Some(Payload {
                json,
                buffers: Vec::new(),
            }))
        };
        if let Some(a) = acc.read_lock::<F64Array>() {
            let bytes = zpar_protocol::value::f64_bytes(a.as_slice());
            if bytes.len() >= LARGE_MIN_BYTES {
                return write("f64", bytes);
            }
        } else if let Some(a) = acc.read_lock::<I64Array>() {
            let bytes = zpar_protocol::value::i64_bytes(a.as_slice());
            if bytes.len() >= LARGE_MIN_BYTES {
                return write("i64", bytes);
            }
        }
        Ok(None)
    }

    /// A part from engine `from`: from its segment, or inline.
    fn decode(&mut self, from: u32, part: &Payload) -> RhaiResult<Dynamic> {
        let m = &part.json["mapped"];
        if m.is_null() {
            return decode(part);
        }
        let (name, dtype, bytes) = match (
            m["segment"].as_str(),
            m["dtype"].as_str(),
            m["bytes"].as_u64(),
        ) {
            (Some(n), Some(d), Some(b)) if b % 8 == 0 => (n, d, b as usize),
            _ => {
                return Err(err(format!(
                    "communicator: engine {from} sent a malformed shared-memory part"
                )))
            }
        };
        if m["host"].as_str() != Some(bulk::host_id()) {
            return Err(err(format!(
                "communicator: engine {from} sent a value in shared memory of another host; shared memory is only for engines on one host"
            )));
        }
        let mut c = self.comm.borrow_mut();
        let map = c.shared.peer(from, name, bytes).map_err(err)?;
        let len = bytes / 8;
        Ok(match dtype {
            "f64" => {
                let mut v: Vec<f64> = bulk::zeroed(len);
                v.copy_from_slice(map.elems(0, len));
                Dynamic::from(F64Array::new(v))
            }
            "i64" => {
                let mut v: Vec<i64> = bulk::zeroed(len);
                v.copy_from_slice(map.elems(0, len));
                Dynamic::from(I64Array::new(v))
            }
            other => {
                return Err(err(format!(
                    "communicator: engine {from} sent a shared-memory part of type {other:?}"
                )))
            }
        })
    }
}

impl ScriptFold<'_, '_> {
    fn failed(&mut self, e: Box<EvalAltResult>) -> String {
        let text = format!("engine {}: {e}", self.me);
        self.error = Some(e);
        text
    }
}

impl Combine<Payload> for ScriptFold<'_, '_> {
    fn combine(&mut self, _k: usize, child: u32, part: Payload) -> Result<(), String> {
        self.transport.heard(&part);
        let v = self
            .transport
            .decode(child, &part)
            .map_err(|e| self.failed(e))?;
        let acc = std::mem::take(&mut self.acc);
        self.acc = self
            .f
            .call_within_context(self.ctx, (acc, v))
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    fn piece(&mut self, _k: usize) -> Result<Payload, String> {
        self.transport.encode(&self.acc).map_err(|e| self.failed(e))
    }

    fn accept(&mut self, _k: usize, part: Payload) -> Result<(), String> {
        let root = self.root;
        self.acc = self
            .transport
            .decode(root, &part)
            .map_err(|e| self.failed(e))?;
        Ok(())
    }
}

/// Tree rounds (sequence numbers) each collective call uses up, whichever
/// path it takes and wherever it fails: a large named allreduce runs a
/// roster and then a barrier or the ring (whose call takes the second
/// number), every other call one round. Engines stay in step after a
/// failure that only some of them saw.
const CALL_ROUNDS: u64 = 2;

impl BinaryTreeCommunicator {
    /// Runs one collective call; afterwards the communicator's rounds are
    /// at the call's last number, whatever happened.
    fn call<R>(&self, body: impl FnOnce() -> RhaiResult<R>) -> RhaiResult<R> {
        let base = self.0.borrow().collective.as_ref().map(|m| m.seq());
        let result = body();
        if let Some(base) = base {
            if let Some(m) = self.0.borrow_mut().collective.as_mut() {
                m.skip_to(base + CALL_ROUNDS);
            }
        }
        result
    }

    /// The base timeout of a call: its own, or the communicator's.
    fn timeout_or_default(&self, timeout: Option<Duration>) -> Duration {
        timeout.unwrap_or(self.0.borrow().timeout)
    }

    /// Runs `call` with the script combine step; the result is this
    /// engine's value (the root's for a broadcast).
    fn run_script(
        &self,
        ctx: &NativeCallContext,
        f: &FnPtr,
        value: Dynamic,
        call: Call,
        what: &str,
    ) -> RhaiResult<Dynamic> {
        let (me, root, transport) = {
            let mut c = self.0.borrow_mut();
            c.last_algorithm = "tree";
            let allowed = call.gather && call.broadcast && c.shared.allowed && shared::enabled();
            let links = c.links()?;
            let transport = Transport {
                comm: &self.0,
                allowed,
                is_root: links.tree.is_root(),
                parent_here: links.parent_here,
                subtree_here: true,
            };
            (c.id, links.tree.root, transport)
        };
        let mut fold = ScriptFold {
            ctx,
            f,
            me,
            acc: value,
            error: None,
            transport,
            root,
        };
        match drive(&self.0, call, &mut fold) {
            Ok(()) => Ok(fold.acc),
            Err(DriveError::Script(e)) => Err(e),
            Err(DriveError::Collective(e)) => Err(fold
                .error
                .take()
                .unwrap_or_else(|| err(format!("{what} failed: {e}")))),
        }
    }

    pub(super) fn reduce(
        &self,
        ctx: &NativeCallContext,
        f: &FnPtr,
        value: Dynamic,
        flat: bool,
        all: bool,
        timeout: Option<Duration>,
    ) -> RhaiResult<Dynamic> {
        self.call(|| {
            self.0.borrow().links()?;
            let value = if flat {
                value
            } else {
                fold_sequence(ctx, f, value)?
            };
            let call = Call::reduce(1, all, self.timeout_or_default(timeout));
            self.run_script(ctx, f, value, call, "collective")
        })
    }

    fn publish(&self, ctx: &NativeCallContext, value: Dynamic) -> RhaiResult<Dynamic> {
        self.call(|| {
            {
                let c = self.0.borrow();
                c.links()?;
                if !c.is_root {
                    return Err(err(format!(
                        "publish: engine {} is not the root; call consume() here",
                        c.id
                    )));
                }
            }
            let call = Call::broadcast_only(self.timeout_or_default(None));
            let keep = FnPtr::new("barrier_keep_left").expect("valid name");
            self.run_script(ctx, &keep, value, call, "publish")
        })
    }

    fn consume(&self, ctx: &NativeCallContext, timeout: Option<Duration>) -> RhaiResult<Dynamic> {
        self.call(|| {
            {
                let c = self.0.borrow();
                c.links()?;
                if c.is_root {
                    return Err(err("consume: the root publishes; call publish(value) here"));
                }
            }
            let call = Call::broadcast_only(self.timeout_or_default(timeout));
            let keep = FnPtr::new("barrier_keep_left").expect("valid name");
            self.run_script(ctx, &keep, Dynamic::UNIT, call, "consume")
        })
    }
}

fn fold_sequence(ctx: &NativeCallContext, f: &FnPtr, seq: Dynamic) -> RhaiResult<Dynamic> {
    let items: Vec<Dynamic> = if let Some(a) = seq.read_lock::<rhai::Array>() {
        a.clone()
    } else if let Some(a) = seq.read_lock::<crate::arrays::F64Array>() {
        a.as_slice().iter().map(|x| Dynamic::from(*x)).collect()
    } else if let Some(a) = seq.read_lock::<crate::arrays::I64Array>() {
        a.as_slice().iter().map(|x| Dynamic::from(*x)).collect()
    } else {
        return Err(err(format!(
            "reduce with flat = false needs a sequence (array, f64 or i64 array), not a {}",
            pretty_type(&seq)
        )));
    };
    let mut it = items.into_iter();
    let Some(mut acc) = it.next() else {
        return Err(err(
            "reduce with flat = false: this engine's sequence is empty",
        ));
    };
    for x in it {
        acc = f.call_within_context(ctx, (acc, x))?;
    }
    Ok(acc)
}

/// Registers the `BinaryTreeCommunicator` type and its methods.
pub fn register(engine: &mut Engine, env: CommEnv) {
    let ctor_env = env.clone();
    engine
        .register_type_with_name::<BinaryTreeCommunicator>("BinaryTreeCommunicator")
        .register_fn(
            "BinaryTreeCommunicator",
            move |id: INT, is_root: bool| -> RhaiResult<BinaryTreeCommunicator> {
                Ok(BinaryTreeCommunicator(Rc::new(RefCell::new(Comm::new(
                    &ctor_env, id, is_root,
                )?))))
            },
        )
        .register_get("info", |c: &mut BinaryTreeCommunicator| c.0.borrow().info())
        .register_get("pub_url", |c: &mut BinaryTreeCommunicator| {
            c.0.borrow()
                .publisher
                .as_ref()
                .map(|(_, u)| u.clone())
                .unwrap_or_default()
        })
        .register_get("id", |c: &mut BinaryTreeCommunicator| {
            c.0.borrow().id as INT
        })
        .register_get("is_root", |c: &mut BinaryTreeCommunicator| {
            c.0.borrow().is_root
        })
        .register_get("timeout", |c: &mut BinaryTreeCommunicator| {
            c.0.borrow().timeout.as_secs_f64()
        })
        .register_set(
            "timeout",
            |c: &mut BinaryTreeCommunicator, t: FLOAT| -> RhaiResult<()> {
                c.0.borrow_mut().timeout = secs(t)?;
                Ok(())
            },
        )
        .register_get("large_min_bytes", |c: &mut BinaryTreeCommunicator| {
            c.0.borrow().large_min_bytes as INT
        })
        .register_set(
            "large_min_bytes",
            |c: &mut BinaryTreeCommunicator, bytes: INT| -> RhaiResult<()> {
                c.0.borrow_mut().large_min_bytes = usize::try_from(bytes).map_err(|_| {
                    err(format!("large_min_bytes must not be negative, not {bytes}"))
                })?;
                Ok(())
            },
        )
        .register_get("last_algorithm", |c: &mut BinaryTreeCommunicator| {
            c.0.borrow().last_algorithm.to_string()
        })
        .register_get("shared_memory", |c: &mut BinaryTreeCommunicator| {
            c.0.borrow().shared.allowed
        })
        .register_set(
            "shared_memory",
            |c: &mut BinaryTreeCommunicator, on: bool| c.0.borrow_mut().shared.allowed = on,
        )
        .register_fn(
            "set_timeout",
            |c: &mut BinaryTreeCommunicator, t: FLOAT| -> RhaiResult<()> {
                c.0.borrow_mut().timeout = secs(t)?;
                Ok(())
            },
        )
        .register_fn("to_string", |c: &mut BinaryTreeCommunicator| {
            let c = c.0.borrow();
            format!(
                "BinaryTreeCommunicator(id={}, root={}, connected={})",
                c.id,
                c.is_root,
                c.links.is_some()
            )
        });
    let connect_env = env.clone();
    engine.register_fn(
        "connect",
        move |c: &mut BinaryTreeCommunicator,
              peers: Map,
              tree: Map,
              pub_url: &str,
              root_id: INT|
              -> RhaiResult<()> {
            let timeout = c.0.borrow().timeout;
            c.0.borrow_mut()
                .connect(&connect_env.ctx, peers, tree, pub_url, root_id, timeout)
        },
    );
    engine
        .register_fn(
            "reduce",
            |ctx: NativeCallContext, c: &mut BinaryTreeCommunicator, f: FnPtr, v: Dynamic| {
                c.reduce(&ctx, &f, v, true, false, None)
            },
        )
        .register_fn(
            "reduce",
            |ctx: NativeCallContext,
             c: &mut BinaryTreeCommunicator,
             f: FnPtr,
             v: Dynamic,
             flat: bool| { c.reduce(&ctx, &f, v, flat, false, None) },
        )
        .register_fn(
            "reduce",
            |ctx: NativeCallContext,
             c: &mut BinaryTreeCommunicator,
             f: FnPtr,
             v: Dynamic,
             flat: bool,
             all: bool| { c.reduce(&ctx, &f, v, flat, all, None) },
        )
        .register_fn(
            "reduce",
            |ctx: NativeCallContext,
             c: &mut BinaryTreeCommunicator,
             f: FnPtr,
             v: Dynamic,
             flat: bool,
             all: bool,
             t: FLOAT| { c.reduce(&ctx, &f, v, flat, all, Some(secs(t)?)) },
        )
        .register_fn(
            "allreduce",
            |ctx: NativeCallContext, c: &mut BinaryTreeCommunicator, f: FnPtr, v: Dynamic| {
                c.reduce(&ctx, &f, v, true, true, None)
            },
        )
        .register_fn(
            "allreduce",
            |ctx: NativeCallContext,
             c: &mut BinaryTreeCommunicator,
             f: FnPtr,
             v: Dynamic,
             flat: bool| { c.reduce(&ctx, &f, v, flat, true, None) },
        )
        .register_fn(
            "allreduce",
            |ctx: NativeCallContext,
             c: &mut BinaryTreeCommunicator,
             f: FnPtr,
             v: Dynamic,
             flat: bool,
             t: FLOAT| { c.reduce(&ctx, &f, v, flat, true, Some(secs(t)?)) },
        )
        .register_fn(
            "publish",
            |ctx: NativeCallContext, c: &mut BinaryTreeCommunicator, v: Dynamic| c.publish(&ctx, v),
        )
        .register_fn(
            "consume",
            |ctx: NativeCallContext, c: &mut BinaryTreeCommunicator| c.consume(&ctx, None),
        )
        .register_fn(
            "consume",
            |ctx: NativeCallContext, c: &mut BinaryTreeCommunicator, t: FLOAT| {
                c.consume(&ctx, Some(secs(t)?))
            },
        )
        .register_fn(
            "barrier",
            |ctx: NativeCallContext, c: &mut BinaryTreeCommunicator| {
                let keep = FnPtr::new("barrier_keep_left").expect("valid name");
                c.reduce(&ctx, &keep, Dynamic::UNIT, true, true, None)
                    .map(|_| ())
            },
        )
        .register_fn(
            "barrier",
            |ctx: NativeCallContext, c: &mut BinaryTreeCommunicator, t: FLOAT| {
                let keep = FnPtr::new("barrier_keep_left").expect("valid name");
                c.reduce(&ctx, &keep, Dynamic::UNIT, true, true, Some(secs(t)?))
                    .map(|_| ())
            },
        )
        .register_fn("barrier_keep_left", |a: Dynamic, _b: Dynamic| a);
    native::register_scalar_ops(engine);
    // Named elementwise operations: "sum", "prod", "min", "max".
    type Name = rhai::ImmutableString;
    engine
        .register_fn(
            "reduce",
            |ctx: NativeCallContext, c: &mut BinaryTreeCommunicator, op: Name, v: Dynamic| {
                c.reduce_named(&ctx, Op::parse(&op)?, v, true, false, None)
            },
        )
        .register_fn(
            "reduce",
            |ctx: NativeCallContext,
             c: &mut BinaryTreeCommunicator,
             op: Name,
             v: Dynamic,
             flat: bool| {
                c.reduce_named(&ctx, Op::parse(&op)?, v, flat, false, None)
            },
        )
        .register_fn(
            "reduce",
            |ctx: NativeCallContext,
             c: &mut BinaryTreeCommunicator,
             op: Name,
             v: Dynamic,
             flat: bool,
             all: bool| { c.reduce_named(&ctx, Op::parse(&op)?, v, flat, all, None) },
        )
        .register_fn(
            "allreduce",
            |ctx: NativeCallContext, c: &mut BinaryTreeCommunicator, op: Name, v: Dynamic| {
                c.reduce_named(&ctx, Op::parse(&op)?, v, true, true, None)
            },
        )
        .register_fn(
            "allreduce",
            |ctx: NativeCallContext,
             c: &mut BinaryTreeCommunicator,
             op: Name,
             v: Dynamic,
             flat: bool| { c.reduce_named(&ctx, Op::parse(&op)?, v, flat, true, None) },
        )
        .register_fn(
            "allreduce",
            |ctx: NativeCallContext,
             c: &mut BinaryTreeCommunicator,
             op: Name,
             v: Dynamic,
             flat: bool,
             t: FLOAT| {
                c.reduce_named(&ctx, Op::parse(&op)?, v, flat, true, Some(secs(t)?))
            },
        );
}
