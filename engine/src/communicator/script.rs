//! The script path of a collective: a Rhai function folds whole values
//! up the tree (`reduce`, `allreduce`, `barrier`), or the root's value
//! comes down (`publish`/`consume`); large arrays between engines of one
//! host pass through mapped segments ([`Transport`]).

use super::collective::{Call, Combine};
use super::driver::drive;
use super::env::RhaiResult;
use super::env::LARGE_MIN_BYTES;
use super::errors::{err, DriveError};
use super::handle::BinaryTreeCommunicator;
use super::shared::{self, Slot};
use super::tree::Comm;
use super::wire::Payload;
use crate::arrays::{F64Array, I64Array};
use crate::convert::{encode_dynamic, from_value, pretty_type};
use rhai::{Dynamic, EvalAltResult, FnPtr, NativeCallContext};
use serde_json::json;
use std::cell::RefCell;
use std::time::Duration;
use zpar_protocol::bulk;
use zpar_protocol::error::Chain;
use zpar_protocol::Value;

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

impl BinaryTreeCommunicator {
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

    pub(super) fn publish(&self, ctx: &NativeCallContext, value: Dynamic) -> RhaiResult<Dynamic> {
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

    pub(super) fn consume(
        &self,
        ctx: &NativeCallContext,
        timeout: Option<Duration>,
    ) -> RhaiResult<Dynamic> {
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
