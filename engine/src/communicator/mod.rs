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

pub mod collective;
mod driver;
mod env;
mod errors;
mod handle;
mod native;
pub mod ring;
mod script;
pub mod shared;
mod shared_allreduce;
mod tree;
pub mod wire;

pub use env::{CommEnv, DEFAULT_TIMEOUT_SECS, LARGE_MIN_BYTES};
pub use handle::BinaryTreeCommunicator;
pub use native::CHUNK_ELEMS;

use env::RhaiResult;
use errors::err;
use native::Op;
use rhai::{Dynamic, Engine, FnPtr, Map, NativeCallContext, FLOAT, INT};
use std::cell::RefCell;
use std::rc::Rc;
use tree::{secs, Comm};

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
    // The same, waiting `wait` seconds for the others rather than the
    // communicator's timeout (which stays as it is, for its collectives).
    let connect_env = env.clone();
    engine.register_fn(
        "connect",
        move |c: &mut BinaryTreeCommunicator,
              peers: Map,
              tree: Map,
              pub_url: &str,
              root_id: INT,
              wait: FLOAT|
              -> RhaiResult<()> {
            c.0.borrow_mut()
                .connect(&connect_env.ctx, peers, tree, pub_url, root_id, secs(wait)?)
        },
    );
    // Connects at a place computed by the caller (`setup_communicator`):
    // `#{parent, children, root, height, tree_height, engines}`, so no
    // engine reads the whole tree.
    let connect_env = env.clone();
    engine.register_fn(
        "connect_place",
        move |c: &mut BinaryTreeCommunicator,
              peers: Map,
              place: Map,
              pub_url: &str,
              wait: FLOAT|
              -> RhaiResult<()> {
            c.0.borrow_mut()
                .connect_place(&connect_env.ctx, peers, place, pub_url, secs(wait)?)
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
