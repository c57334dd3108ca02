//! Joining a gather's blocks ([`concat`]), also when some are still in
//! shared memory: the result is allocated once at its final size and every
//! shared block is read straight into its place, all of them at once, with
//! no value made of any block first (see ARCHITECTURE.md, "Large values").

use crate::error::{Error, Result};
use zpar_protocol::value::SharedValue;
use zpar_protocol::Value;

/// Joins gathered blocks: numeric arrays into one numeric array, blobs into
/// one blob, anything else into one array (a non-array block counts as one
/// item).
pub fn concat(parts: Vec<Value>) -> Value {
    let refs: Vec<&Value> = parts.iter().collect();
    concat_refs(&refs)
}

/// [`concat`] from borrowed blocks: numeric arrays and blobs are copied
/// once, into a result sized once.
pub(crate) fn concat_refs(parts: &[&Value]) -> Value {
    let blocks: Vec<Block> = parts.iter().map(|p| Block::Value(p)).collect();
    concat_blocks(&blocks).expect("blocks with nothing in shared memory read nothing")
}

/// Blocks of other kinds joined as one list (arrays' items in order, other
/// values as items).
pub(crate) fn concat_as_list(parts: &[&Value]) -> Value {
    let mut out = Vec::new();
    for p in parts {
        match p {
            Value::Array(a) => out.extend(a.iter().cloned()),
            Value::I64Array(a) => out.extend(a.iter().map(|x| Value::Int(*x))),
            Value::F64Array(a) => out.extend(a.iter().map(|x| Value::Float(*x))),
            other => out.push((*other).clone()),
        }
    }
    Value::Array(out)
}

/// One engine's block of a gather: a value, or a value still in shared
/// memory.
pub(crate) enum Block<'a> {
    Value(&'a Value),
    Shared(&'a SharedValue),
}

/// [`concat`] of blocks some of which may still be in
/// shared memory: when every block is an `f64` array or float, an `i64`
/// array or a blob, the result is allocated once and each block copied, or
/// read straight from shared memory, into its place, all reads at once
/// (`bulk::read_many`); otherwise the blocks are read and joined as one list.
/// With no shared block it reads nothing and cannot fail.
pub(crate) fn concat_blocks(blocks: &[Block]) -> Result<Value> {
    use zpar_protocol::value::{f64_bytes, f64_bytes_mut, i64_bytes, i64_bytes_mut, BulkKind};
    let shared_kind = |b: &Block, kind: BulkKind| matches!(b, Block::Shared(s) if s.kind() == kind);
    let as_values = |blocks: &[Block]| -> Result<Value> {
        let read: Vec<Value> = blocks
            .iter()
            .filter_map(|b| match b {
                Block::Shared(s) => Some(s.to_value()),
                Block::Value(_) => None,
            })
            .collect::<std::result::Result<_, _>>()?;
        let mut read = read.iter();
        let refs: Vec<&Value> = blocks
            .iter()
            .map(|b| match b {
                Block::Value(v) => *v,
                Block::Shared(_) => read.next().expect("one read per shared block"),
            })
            .collect();
        Ok(concat_as_list(&refs))
    };
    if blocks.is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    let all = |f: &dyn Fn(&Block) -> bool| blocks.iter().all(f);
    if all(&|b| {
        matches!(b, Block::Value(Value::F64Array(_) | Value::Float(_)))
            || shared_kind(b, BulkKind::F64)
    }) {
        let total = blocks.iter().map(|b| block_len(b)).sum();
        let mut out: Vec<f64> = zpar_protocol::bulk::zeroed(total);
        fill_joined(f64_bytes_mut(&mut out), blocks, |v| match v {
            Value::F64Array(a) => Source::Slice(f64_bytes(a)),
            Value::Float(x) => Source::Word(x.to_le_bytes()),
            _ => unreachable!("checked above"),
        })?;
        return Ok(Value::F64Array(out));
    }
    if all(&|b| matches!(b, Block::Value(Value::I64Array(_))) || shared_kind(b, BulkKind::I64)) {
        let total = blocks.iter().map(|b| block_len(b)).sum();
        let mut out: Vec<i64> = zpar_protocol::bulk::zeroed(total);
        fill_joined(i64_bytes_mut(&mut out), blocks, |v| match v {
            Value::I64Array(a) => Source::Slice(i64_bytes(a)),
            _ => unreachable!("checked above"),
        })?;
        return Ok(Value::I64Array(out));
    }
    if all(&|b| matches!(b, Block::Value(Value::Bytes(_))) || shared_kind(b, BulkKind::Bytes)) {
        let total = blocks.iter().map(|b| block_len(b)).sum();
        let mut out: Vec<u8> = zpar_protocol::bulk::zeroed(total);
        fill_joined(&mut out, blocks, |v| match v {
            Value::Bytes(b) => Source::Slice(b),
            _ => unreachable!("checked above"),
        })?;
        return Ok(Value::Bytes(out));
    }
    as_values(blocks)
}

/// The bytes a block of a joined numeric array or blob brings.
enum Source<'a> {
    Slice(&'a [u8]),
    Word([u8; 8]),
}

/// Elements in a block of a joined numeric array or blob.
fn block_len(b: &Block) -> usize {
    match b {
        Block::Shared(s) => s.elements(),
        Block::Value(Value::F64Array(a)) => a.len(),
        Block::Value(Value::I64Array(a)) => a.len(),
        Block::Value(Value::Bytes(b)) => b.len(),
        Block::Value(_) => 1,
    }
}

/// Fills `dest` with the blocks in order: values are copied, shared
/// blocks read in place, all of those at once.
fn fill_joined<'a>(
    dest: &mut [u8],
    blocks: &[Block<'a>],
    bytes_of: impl Fn(&'a Value) -> Source<'a>,
) -> Result<()> {
    let mut reads = Vec::new();
    let mut rest = dest;
    for b in blocks {
        match b {
            Block::Value(v) => {
                let src = bytes_of(v);
                let bytes: &[u8] = match &src {
                    Source::Slice(s) => s,
                    Source::Word(w) => w,
                };
                let (here, tail) = std::mem::take(&mut rest).split_at_mut(bytes.len());
                here.copy_from_slice(bytes);
                rest = tail;
            }
            Block::Shared(s) => {
                let (here, tail) =
                    std::mem::take(&mut rest).split_at_mut(s.elements() * s.kind().width());
                reads.extend(zpar_protocol::bulk::destinations(here, &s.sources()));
                rest = tail;
            }
        }
    }
    zpar_protocol::bulk::read_many(&mut reads).map_err(|e| {
        Error::Value(format!(
            "a gathered block in shared memory could not be read: {e}"
        ))
    })
}
