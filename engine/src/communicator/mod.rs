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
//! - **Order.** The ROUTER tells a parent which child sent which partial, so
//!   it combines `own, children in ascending id` — for the pre-order trees
//!   (`bintree`-shaped) that is the sequential left fold in id order, and an
//!   associative but non-commutative `f` gives the sequential answer.
//! - **Sequence numbers.** Every collective call advances a counter on every
//!   engine (they all make the same calls in the same order) and every
//!   message carries it. Older messages (left over from a failed call) are
//!   dropped; newer ones (a fast child already in the next call) are kept
//!   for later. Calls in a row can never mix.
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
//! Wire frames, up: `[kind, seq, json, buffers…]` with kind `up`, `ready` or
//! `fail`; down (PUB): `[kind, seq, json, buffers…]` with kind `bc`, `probe`,
//! `go` or `fail`. Values use the protocol's value codec, so numeric arrays
//! travel as raw buffers.

use crate::convert::pretty_type;
use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext, FLOAT, INT};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub(crate) type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// The default wait for any one collective, in seconds.
pub const DEFAULT_TIMEOUT_SECS: f64 = 30.0;

/// What a communicator needs from its engine: the zmq context, the address
/// to bind on, and the engine's id (for messages).
#[derive(Clone)]
pub struct CommEnv {
    /// The engine's zmq context.
    pub ctx: zmq::Context,
    /// The interface to bind on.
    pub ip: String,
    /// The engine's id.
    pub engine_id: u32,
}

/// The script type. Clones share one communicator.
#[derive(Clone)]
pub struct BinaryTreeCommunicator(Rc<RefCell<Comm>>);

mod native;
mod tree;
use native::Op;
use tree::{decode, encode, err, secs, Comm};

impl BinaryTreeCommunicator {
    pub(super) fn reduce(
        &self,
        ctx: &NativeCallContext,
        f: &FnPtr,
        value: Dynamic,
        flat: bool,
        all: bool,
        timeout: Option<Duration>,
    ) -> RhaiResult<Dynamic> {
        let mut value = if flat {
            value
        } else {
            fold_sequence(ctx, f, value)?
        };
        let (seq, deadline_children, deadline_bc, is_root, broadcast) = {
            let mut c = self.0.borrow_mut();
            let links = c.links()?;
            let base = timeout.unwrap_or(c.timeout);
            let now = Instant::now();
            let (h, th) = (links.height, links.tree_height);
            c.seq += 1;
            (
                c.seq,
                now + base + base / 4 * h,
                now + base + base / 4 * (th + 1),
                c.is_root,
                all,
            )
        };
        // Children's parts, in id order.
        let parts = {
            let mut c = self.0.borrow_mut();
            match c.gather_children(seq, deadline_children) {
                Ok(p) => p,
                Err(m) => return Err(c.fail(seq, m, broadcast)),
            }
        };
        for part in &parts {
            let v = decode(part)?;
            value = f.call_within_context(ctx, (value, v))?;
        }
        let c = self.0.borrow();
        if !is_root {
            let (payload, buffers) = encode(&value)?;
            c.send_up("up", seq, &payload, buffers)?;
        }
        if !broadcast {
            return Ok(value);
        }
        if is_root {
            let (payload, buffers) = encode(&value)?;
            c.publish_frames("bc", seq, &payload, buffers)?;
            return Ok(value);
        }
        drop(c);
        let inc = self
            .0
            .borrow_mut()
            .receive_broadcast(seq, deadline_bc)
            .map_err(|m| err(format!("collective failed: {m}")))?;
        if inc.kind == "fail" {
            return Err(err(format!(
                "collective failed: {}",
                inc.payload["error"].as_str().unwrap_or("a peer failed")
            )));
        }
        decode(&inc)
    }

    fn publish(&self, value: Dynamic) -> RhaiResult<Dynamic> {
        let mut c = self.0.borrow_mut();
        c.links()?;
        if !c.is_root {
            return Err(err(format!(
                "publish: engine {} is not the root; call consume() here",
                c.id
            )));
        }
        c.seq += 1;
        let (payload, buffers) = encode(&value)?;
        c.publish_frames("bc", c.seq, &payload, buffers)?;
        Ok(value)
    }

    fn consume(&self, timeout: Option<Duration>) -> RhaiResult<Dynamic> {
        let mut c = self.0.borrow_mut();
        let links = c.links()?;
        if c.is_root {
            return Err(err("consume: the root publishes; call publish(value) here"));
        }
        let base = timeout.unwrap_or(c.timeout);
        let deadline = Instant::now() + base + base / 4 * (links.tree_height + 1);
        c.seq += 1;
        let seq = c.seq;
        let inc = c
            .receive_broadcast(seq, deadline)
            .map_err(|m| err(format!("consume failed: {m}")))?;
        decode(&inc)
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
        .register_fn("publish", |c: &mut BinaryTreeCommunicator, v: Dynamic| {
            c.publish(v)
        })
        .register_fn("consume", |c: &mut BinaryTreeCommunicator| c.consume(None))
        .register_fn("consume", |c: &mut BinaryTreeCommunicator, t: FLOAT| {
            c.consume(Some(secs(t)?))
        })
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
