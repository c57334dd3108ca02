//! Named elementwise reductions (`"sum"`, `"prod"`, `"min"`, `"max"`) on
//! numeric arrays, pipelined in chunks up and down the tree.
//!
//! A script function must see whole values, so the general path sends whole
//! arrays. A named elementwise operation need not: here each array travels
//! as chunks of [`CHUNK_ELEMS`] elements, each its own message, so a parent
//! combines and forwards chunk k while chunk k+1 is still on the wire, and
//! the root publishes chunk k as soon as it is complete. Chunks are combined
//! straight from the received frames into the engine's own array: no
//! intermediate copy, no script call per element.

use super::collective::{Call, Combine};
use super::driver::{drive, drive_ring};
use super::env::RhaiResult;
use super::errors::{err, DriveError};
use super::handle::BinaryTreeCommunicator;
use super::wire::Payload;
use super::{shared, shared_allreduce};
use crate::arrays::{F64Array, I64Array};
use rhai::{Dynamic, FnPtr, NativeCallContext};
use serde_json::json;
use std::time::Duration;

/// Elements per chunk (1 MiB of f64).
pub const CHUNK_ELEMS: usize = 1 << 17;

/// A named elementwise operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// a + b
    Sum,
    /// a * b
    Prod,
    /// the smaller
    Min,
    /// the larger
    Max,
}

impl Op {
    /// Parses `sum`, `prod`, `min`, `max`.
    pub fn parse(name: &str) -> RhaiResult<Op> {
        Ok(match name {
            "sum" | "add" | "+" => Op::Sum,
            "prod" | "mul" | "*" => Op::Prod,
            "min" => Op::Min,
            "max" => Op::Max,
            other => return Err(err(format!("unknown reduction {other:?}: use \"sum\", \"prod\", \"min\" or \"max\", or pass a function"))),
        })
    }

    pub(super) fn f64(self, a: f64, b: f64) -> f64 {
        match self {
            Op::Sum => a + b,
            Op::Prod => a * b,
            Op::Min => a.min(b),
            Op::Max => a.max(b),
        }
    }

    pub(super) fn i64(self, a: i64, b: i64) -> i64 {
        match self {
            Op::Sum => a.wrapping_add(b),
            Op::Prod => a.wrapping_mul(b),
            Op::Min => a.min(b),
            Op::Max => a.max(b),
        }
    }

    /// The same operation on two scalars (ints stay ints).
    pub fn scalars(self, a: &Dynamic, b: &Dynamic) -> RhaiResult<Dynamic> {
        if let (Ok(x), Ok(y)) = (a.as_int(), b.as_int()) {
            return Ok(Dynamic::from(self.i64(x, y)));
        }
        let num = |d: &Dynamic| {
            d.as_float()
                .ok()
                .or_else(|| d.as_int().ok().map(|i| i as f64))
        };
        match (num(a), num(b)) {
            (Some(x), Some(y)) => Ok(Dynamic::from(self.f64(x, y))),
            _ => Err(err(format!(
                "a named reduction takes numbers or numeric arrays, not {} and {}",
                a.type_name(),
                b.type_name()
            ))),
        }
    }
}

/// An element type of the named operations.
trait Numeric: shared::Elem {
    /// `op(a, b)`.
    fn apply(op: Op, a: Self, b: Self) -> Self;
    /// An array of them as this engine's own data.
    fn into_own(v: Vec<Self>) -> Own;
    /// An array of them as a script value.
    fn into_dynamic(v: Vec<Self>) -> Dynamic;
}

impl Numeric for f64 {
    fn apply(op: Op, a: f64, b: f64) -> f64 {
        op.f64(a, b)
    }
    fn into_own(v: Vec<f64>) -> Own {
        Own::F(v)
    }
    fn into_dynamic(v: Vec<f64>) -> Dynamic {
        Dynamic::from(F64Array::new(v))
    }
}

impl Numeric for i64 {
    fn apply(op: Op, a: i64, b: i64) -> i64 {
        op.i64(a, b)
    }
    fn into_own(v: Vec<i64>) -> Own {
        Own::I(v)
    }
    fn into_dynamic(v: Vec<i64>) -> Dynamic {
        Dynamic::from(I64Array::new(v))
    }
}

/// The engine's own data, mutable.
enum Own {
    F(Vec<f64>),
    I(Vec<i64>),
}

impl Own {
    fn len(&self) -> usize {
        match self {
            Own::F(v) => v.len(),
            Own::I(v) => v.len(),
        }
    }

    fn dtype(&self) -> &'static str {
        match self {
            Own::F(_) => "f64",
            Own::I(_) => "i64",
        }
    }

    fn chunk_bytes(&self, k: usize) -> zmq::Message {
        let r = chunk_range(self.len(), k);
        match self {
            Own::F(v) => zmq::Message::from(zpar_protocol::value::f64_bytes(&v[r])),
            Own::I(v) => zmq::Message::from(zpar_protocol::value::i64_bytes(&v[r])),
        }
    }

    /// own[chunk k] = op(own, the chunk in `frame`) (little-endian
    /// elements), or op(the chunk, own) when `received_first`; with no op,
    /// own[chunk k] = the chunk.
    fn combine(&mut self, op: Option<Op>, k: usize, frame: &[u8], received_first: bool) {
        let r = chunk_range(self.len(), k);
        let elems = frame
            .chunks_exact(8)
            .map(|b| <[u8; 8]>::try_from(b).expect("8 bytes"));
        match self {
            Own::F(v) => {
                for (o, b) in v[r].iter_mut().zip(elems) {
                    let x = f64::from_le_bytes(b);
                    *o = match op {
                        None => x,
                        Some(op) if received_first => op.f64(x, *o),
                        Some(op) => op.f64(*o, x),
                    };
                }
            }
            Own::I(v) => {
                for (o, b) in v[r].iter_mut().zip(elems) {
                    let x = i64::from_le_bytes(b);
                    *o = match op {
                        None => x,
                        Some(op) if received_first => op.i64(x, *o),
                        Some(op) => op.i64(*o, x),
                    };
                }
            }
        }
    }

    fn into_dynamic(self) -> Dynamic {
        match self {
            Own::F(v) => Dynamic::from(F64Array::new(v)),
            Own::I(v) => Dynamic::from(I64Array::new(v)),
        }
    }
}

fn chunks(len: usize) -> usize {
    len.div_ceil(CHUNK_ELEMS).max(1)
}

fn chunk_range(len: usize, k: usize) -> std::ops::Range<usize> {
    (k * CHUNK_ELEMS).min(len)..((k + 1) * CHUNK_ELEMS).min(len)
}

/// Checks that piece `k` from `from` fits this engine's array; the frame
/// with its bytes.
fn chunk_of<'a>(part: &'a Payload, from: u32, own: &Own, k: usize) -> Result<&'a [u8], String> {
    let p = &part.json;
    // A roster (the large-array path's first round) says the same inside.
    let roster = !p["roster"].is_null();
    let p = if roster { &p["roster"] } else { p };
    let (dtype, len) = (p["dtype"].as_str(), p["len"].as_u64());
    if dtype != Some(own.dtype()) || len != Some(own.len() as u64) {
        return Err(format!(
            "engine {from} reduces a {} array of {} elements, this engine a {} array of {}",
            dtype.unwrap_or("?"),
            len.unwrap_or(0),
            own.dtype(),
            own.len()
        ));
    }
    if roster {
        return Err(format!(
            "engine {from} reduces its array by the large-array path and this engine along the chunked tree: set com.large_min_bytes the same on every engine"
        ));
    }
    let frame = part
        .buffers
        .first()
        .ok_or_else(|| format!("engine {from} sent a chunk without data"))?;
    if frame.len() != chunk_range(own.len(), k).len() * 8 {
        return Err(format!(
            "engine {from} sent a chunk out of order or of the wrong size"
        ));
    }
    Ok(frame)
}

/// The named path's combine step: chunk `k` of the children's arrays into
/// chunk `k` of this engine's, elementwise, straight from the frames.
struct Chunks {
    op: Op,
    own: Own,
    root: u32,
    /// Whether a received chunk is the left operand: on the ring it is the
    /// fold of the ranks before this one; in the tree, a child's comes
    /// after its parent's own.
    received_first: bool,
}

impl Combine<Payload> for Chunks {
    fn combine(&mut self, k: usize, child: u32, part: Payload) -> Result<(), String> {
        let frame = chunk_of(&part, child, &self.own, k)?;
        self.own
            .combine(Some(self.op), k, frame, self.received_first);
        Ok(())
    }

    fn piece(&mut self, k: usize) -> Result<Payload, String> {
        let json =
            json!({"n": chunks(self.own.len()), "len": self.own.len(), "dtype": self.own.dtype()});
        Ok(Payload {
            json,
            buffers: vec![self.own.chunk_bytes(k)],
        })
    }

    fn accept(&mut self, k: usize, part: Payload) -> Result<(), String> {
        let frame = chunk_of(&part, self.root, &self.own, k)?;
        self.own.combine(None, k, frame, false);
        Ok(())
    }
}

impl BinaryTreeCommunicator {
    /// `reduce` / `allreduce` with a named operation: numeric arrays go
    /// the chunked way, scalars the general way with a native function.
    pub(super) fn reduce_named(
        &self,
        ctx: &NativeCallContext,
        op: Op,
        value: Dynamic,
        flat: bool,
        all: bool,
        timeout: Option<Duration>,
    ) -> RhaiResult<Dynamic> {
        self.call(|| {
            let scalar = FnPtr::new(match op {
                Op::Sum => "zpar_reduce_sum",
                Op::Prod => "zpar_reduce_prod",
                Op::Min => "zpar_reduce_min",
                Op::Max => "zpar_reduce_max",
            })
            .expect("valid names");
            if !flat {
                // Fold this engine's own sequence first, as with a function.
                return self.reduce(ctx, &scalar, value, false, all, timeout);
            }
            if all {
                if let Some(result) = self.allreduce_large(op, &value, timeout)? {
                    return Ok(result);
                }
            }
            let own = if let Some(a) = value.read_lock::<F64Array>() {
                Some(Own::F(a.as_slice().to_vec()))
            } else {
                value
                    .read_lock::<I64Array>()
                    .map(|a| Own::I(a.as_slice().to_vec()))
            };
            match own {
                Some(own) => self.reduce_chunked(op, own, all, timeout),
                None => self.reduce(ctx, &scalar, value, true, all, timeout),
            }
        })
    }

    /// The large-array allreduce when it applies (a numeric array of at
    /// least [`LARGE_MIN_BYTES`](super::env::LARGE_MIN_BYTES) on more than one engine): shared memory
    /// or the ring, as the roster decides. `None`: use the chunked tree.
    fn allreduce_large(
        &self,
        op: Op,
        value: &Dynamic,
        timeout: Option<Duration>,
    ) -> RhaiResult<Option<Dynamic>> {
        let (engines, base) = {
            let c = self.0.borrow();
            (c.links()?.engines, timeout.unwrap_or(c.timeout))
        };
        let bytes = if let Some(a) = value.read_lock::<F64Array>() {
            std::mem::size_of_val(a.as_slice())
        } else if let Some(a) = value.read_lock::<I64Array>() {
            std::mem::size_of_val(a.as_slice())
        } else {
            0
        };
        let large_min = self.0.borrow().large_min_bytes;
        if engines < 2 || bytes < large_min {
            return Ok(None);
        }
        if let Some(a) = value.read_lock::<F64Array>() {
            return self.allreduce_large_of(op, a.as_slice(), base).map(Some);
        }
        if let Some(a) = value.read_lock::<I64Array>() {
            return self.allreduce_large_of(op, a.as_slice(), base).map(Some);
        }
        Ok(None)
    }

    /// The roster, then shared memory or the ring, for `own`.
    fn allreduce_large_of<T: Numeric>(
        &self,
        op: Op,
        own: &[T],
        base: Duration,
    ) -> RhaiResult<Dynamic> {
        let roster = shared_allreduce::roster(&self.0, own, base)?;
        if shared_allreduce::all_shared(&roster) {
            let out = shared_allreduce::reduce_shared(
                &self.0,
                own,
                &roster,
                |x, y| T::apply(op, x, y),
                base,
            )?;
            return Ok(T::into_dynamic(out));
        }
        self.allreduce_ring(op, T::into_own(own.to_vec()), &roster, base)
    }

    /// The ring allreduce over the roster's engines, in its order.
    fn allreduce_ring(
        &self,
        op: Op,
        own: Own,
        roster: &[shared_allreduce::Entry],
        base: Duration,
    ) -> RhaiResult<Dynamic> {
        let ids: Vec<u32> = roster.iter().map(|e| e.id).collect();
        let prev = {
            let mut c = self.0.borrow_mut();
            let me = c.id;
            let rank = ids.iter().position(|i| *i == me).ok_or_else(|| {
                err(format!(
                    "collective failed: engine {me} is not in its own roster"
                ))
            })?;
            let next_url = roster[(rank + 1) % ids.len()].url.clone();
            let ctx = c.ctx.clone();
            c.join_ring(&ctx, ids.clone(), &next_url)?;
            c.last_algorithm = "ring";
            ids[(rank + ids.len() - 1) % ids.len()]
        };
        let pieces = chunks(own.len());
        let mut comb = Chunks {
            op,
            own,
            root: prev,
            received_first: true,
        };
        drive_ring(&self.0, pieces, base, &mut comb).map_err(DriveError::into_script)?;
        Ok(comb.own.into_dynamic())
    }

    fn reduce_chunked(
        &self,
        op: Op,
        own: Own,
        all: bool,
        timeout: Option<Duration>,
    ) -> RhaiResult<Dynamic> {
        let (root, base) = {
            let c = self.0.borrow();
            (c.links()?.tree.root, timeout.unwrap_or(c.timeout))
        };
        self.0.borrow_mut().last_algorithm = "chunked";
        let call = Call::reduce(chunks(own.len()), all, base);
        let mut comb = Chunks {
            op,
            own,
            root,
            received_first: false,
        };
        drive(&self.0, call, &mut comb).map_err(DriveError::into_script)?;
        Ok(comb.own.into_dynamic())
    }
}

/// Registers the scalar forms of the named operations.
pub fn register_scalar_ops(engine: &mut rhai::Engine) {
    for (name, op) in [
        ("zpar_reduce_sum", Op::Sum),
        ("zpar_reduce_prod", Op::Prod),
        ("zpar_reduce_min", Op::Min),
        ("zpar_reduce_max", Op::Max),
    ] {
        engine.register_fn(name, move |a: Dynamic, b: Dynamic| op.scalars(&a, &b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_covers_the_array() {
        for len in [
            0,
            1,
            CHUNK_ELEMS - 1,
            CHUNK_ELEMS,
            CHUNK_ELEMS + 1,
            3 * CHUNK_ELEMS + 5,
        ] {
            let n = chunks(len);
            let total: usize = (0..n).map(|k| chunk_range(len, k).len()).sum();
            assert_eq!(total, len);
        }
    }

    #[test]
    fn combine_and_ops() {
        let mut own = Own::F(vec![1.0, 5.0]);
        let other: Vec<u8> = [2.0f64, 3.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        own.combine(Some(Op::Max), 0, &other, false);
        assert!(matches!(&own, Own::F(v) if *v == vec![2.0, 5.0]));
        let s = Op::Sum
            .scalars(&Dynamic::from(2_i64), &Dynamic::from(3_i64))
            .unwrap();
        assert_eq!(s.as_int().unwrap(), 5);
        assert!(Op::parse("median").is_err());
    }
}
