//! Numeric arrays and blobs a program lends: pushed and scattered straight
//! from its own memory, with no `Value` (and no copy of the data) made
//! first.
//!
//! A [`Slice`] borrows `&[f64]`, `&[i64]` or `&[u8]` (and so a `Vec`, an
//! `Arc<[f64]>` or a memory map's bytes through `&*`). [`DirectView::push_slice`]
//! and [`DirectView::scatter_slice`] encode from it exactly as they would a
//! [`Value::F64Array`] they own: into 1 MiB buffer frames through the hub,
//! or, for engines on this host, written once into shared memory (each
//! engine's block into segments of its own for a scatter). The program's
//! array is read once and never cloned.

use crate::client::Request;
use crate::error::Result;
use crate::result::{AsyncResult, Shape};
use crate::view::{partition, targets_meta, DirectView};
use std::collections::BTreeMap;
use std::ops::Range;
use zpar_protocol::bulk::Segment;
use zpar_protocol::error::Chain;
use zpar_protocol::value::{self, f64_bytes, i64_bytes};
use zpar_protocol::{Channel, Content, PushRequest, Value};

/// A numeric array or blob borrowed from the program.
///
/// ```
/// use std::sync::Arc;
/// use zpar_client::Slice;
/// let owned = vec![1.0, 2.0, 3.0];
/// let shared: Arc<[i64]> = Arc::from(vec![1, 2, 3]);
/// assert_eq!(Slice::from(&owned).len(), 3);
/// assert_eq!(Slice::from(&*shared).len(), 3);
/// assert_eq!(Slice::from(&b"abc"[..]).bytes(), b"abc");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slice<'a> {
    /// f64s; an engine gets an `f64_array`.
    F64(&'a [f64]),
    /// i64s; an engine gets an `i64_array`.
    I64(&'a [i64]),
    /// Bytes; an engine gets a blob.
    Bytes(&'a [u8]),
}

impl<'a> Slice<'a> {
    /// The slice of a numeric array or blob value (None for other values).
    pub fn of(v: &'a Value) -> Option<Slice<'a>> {
        match v {
            Value::F64Array(a) => Some(Slice::F64(a)),
            Value::I64Array(a) => Some(Slice::I64(a)),
            Value::Bytes(b) => Some(Slice::Bytes(b)),
            _ => None,
        }
    }

    /// Its elements.
    pub fn len(&self) -> usize {
        match self {
            Slice::F64(a) => a.len(),
            Slice::I64(a) => a.len(),
            Slice::Bytes(b) => b.len(),
        }
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its bytes, as they travel (little-endian).
    pub fn bytes(&self) -> &'a [u8] {
        match self {
            Slice::F64(a) => f64_bytes(a),
            Slice::I64(a) => i64_bytes(a),
            Slice::Bytes(b) => b,
        }
    }

    /// The marker kind on the wire and the bytes of one element.
    fn kind(&self) -> (&'static str, usize) {
        match self {
            Slice::F64(_) => ("f64", 8),
            Slice::I64(_) => ("i64", 8),
            Slice::Bytes(_) => ("bytes", 1),
        }
    }

    /// Elements `r` as a value of their own (a copy).
    pub fn block(&self, r: Range<usize>) -> Value {
        match self {
            Slice::F64(a) => Value::F64Array(a[r].to_vec()),
            Slice::I64(a) => Value::I64Array(a[r].to_vec()),
            Slice::Bytes(b) => Value::Bytes(b[r].to_vec()),
        }
    }

    /// Element `i` as a scalar (a blob has none: a one-byte blob).
    fn item(&self, i: usize) -> Value {
        match self {
            Slice::F64(a) => Value::Float(a[i]),
            Slice::I64(a) => Value::Int(a[i]),
            Slice::Bytes(b) => Value::Bytes(vec![b[i]]),
        }
    }

    /// Encodes elements `r` into buffer frames, straight from the slice.
    fn encode_block(&self, r: Range<usize>, buffers: &mut Vec<zmq::Message>) -> serde_json::Value {
        let (kind, width) = self.kind();
        let bytes = &self.bytes()[r.start * width..r.end * width];
        value::encode_bytes_as(kind, bytes, r.len(), buffers)
    }
}

impl<'a> From<&'a [f64]> for Slice<'a> {
    fn from(a: &'a [f64]) -> Slice<'a> {
        Slice::F64(a)
    }
}

impl<'a> From<&'a Vec<f64>> for Slice<'a> {
    fn from(a: &'a Vec<f64>) -> Slice<'a> {
        Slice::F64(a)
    }
}

impl<'a> From<&'a [i64]> for Slice<'a> {
    fn from(a: &'a [i64]) -> Slice<'a> {
        Slice::I64(a)
    }
}

impl<'a> From<&'a Vec<i64>> for Slice<'a> {
    fn from(a: &'a Vec<i64>) -> Slice<'a> {
        Slice::I64(a)
    }
}

impl<'a> From<&'a [u8]> for Slice<'a> {
    fn from(b: &'a [u8]) -> Slice<'a> {
        Slice::Bytes(b)
    }
}

impl<'a> From<&'a Vec<u8>> for Slice<'a> {
    fn from(b: &'a Vec<u8>) -> Slice<'a> {
        Slice::Bytes(b)
    }
}

impl DirectView {
    /// Sets `name` on every target to a numeric array or blob the program
    /// lends: nothing is cloned, the bytes are copied once, straight onto
    /// the wire or into shared memory (see [`Slice`]).
    ///
    /// ```no_run
    /// # fn main() -> zpar_client::Result<()> {
    /// let client = zpar_client::Client::connect()?;
    /// let data: std::sync::Arc<[f64]> = vec![0.5; 1 << 24].into();
    /// client.all().push_slice("data", &*data)?.get()?;
    /// assert_eq!(data.len(), 1 << 24); // still the program's
    /// # Ok(()) }
    /// ```
    pub fn push_slice<'a>(&self, name: &str, data: impl Into<Slice<'a>>) -> Result<AsyncResult> {
        let data = data.into();
        let ids = self.targets()?;
        let (kind, _) = data.kind();
        let mut buffers = Vec::new();
        let mut shared = self.shared_out(&ids);
        let json = value::encode_bulk(
            kind,
            data.bytes(),
            data.len(),
            &mut buffers,
            shared.as_mut(),
        );
        let mut namespace = BTreeMap::new();
        namespace.insert(name.to_string(), json);
        self.broadcast_to(
            ids,
            Content::PushRequest(PushRequest { namespace }),
            buffers,
            serde_json::Map::new(),
            shared.map(|s| s.segments).unwrap_or_default(),
        )
    }

    /// Splits a numeric array or blob the program lends into contiguous
    /// blocks, one per target (the first `len % n` targets get one item
    /// more), and sets `name` to its block on each; with `flatten`, a
    /// one-item block of numbers is set as the number. Blocks are encoded
    /// straight from `data`; for engines on this host a large one is
    /// written once into shared memory, each engine's block into segments
    /// of its own, all at once, and each engine reads its own.
    ///
    /// ```no_run
    /// # fn main() -> zpar_client::Result<()> {
    /// let client = zpar_client::Client::connect()?;
    /// let xs: Vec<f64> = (0..1_000_000).map(f64::from).collect();
    /// client.all().scatter_slice("xs", &xs, false)?.get()?;
    /// # Ok(()) }
    /// ```
    pub fn scatter_slice<'a>(
        &self,
        name: &str,
        data: impl Into<Slice<'a>>,
        flatten: bool,
    ) -> Result<AsyncResult> {
        let data = data.into();
        let ids = self.targets()?;
        let n = data.len();
        let (kind, width) = data.kind();
        let bytes = data.bytes();
        // Each engine's block in segments of its own (a large block cut
        // once more), all written at once (`Segment::create_many`).
        let blocks: Option<Vec<Vec<Segment>>> = match self.shared_out(&ids) {
            Some(out) if bytes.len() >= out.min_bytes => {
                let cuts: Vec<Vec<&[u8]>> = (0..ids.len())
                    .map(|p| {
                        let r = partition(n, ids.len(), p);
                        zpar_protocol::bulk::pieces_for_writing(
                            &bytes[r.start * width..r.end * width],
                        )
                    })
                    .collect();
                let all: Vec<&[u8]> = cuts.iter().flatten().copied().collect();
                match Segment::create_many(&all) {
                    Ok(segments) => {
                        let mut segments = segments.into_iter();
                        Some(
                            cuts.iter()
                                .map(|c| segments.by_ref().take(c.len()).collect())
                                .collect(),
                        )
                    }
                    Err(e) => {
                        tracing::warn!(error = %Chain(&e), "no shared segment; scattering through the hub");
                        None
                    }
                }
            }
            _ => None,
        };
        let mut requests = Vec::with_capacity(ids.len());
        for (p, id) in ids.iter().enumerate() {
            let range = partition(n, ids.len(), p);
            let mut buffers = Vec::new();
            let json = match &blocks {
                _ if flatten && range.len() == 1 && !matches!(data, Slice::Bytes(_)) => {
                    data.item(range.start).encode_into(&mut buffers)
                }
                Some(blocks) => value::segments_marker(kind, &blocks[p], range.len()),
                None => data.encode_block(range, &mut buffers),
            };
            let mut namespace = BTreeMap::new();
            namespace.insert(name.to_string(), json);
            requests.push(Request {
                channel: Channel::Mux,
                content: Content::PushRequest(PushRequest { namespace }),
                metadata: targets_meta(&[*id]),
                buffers,
                replies: vec![Some(*id)],
            });
        }
        let segments = blocks.into_iter().flatten().flatten().collect();
        let ar = self.submit(requests, Shape::PerReply, segments)?;
        self.finish(ar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_encoded_straight_from_the_slice() {
        let xs: Vec<f64> = (0..10).map(f64::from).collect();
        let s = Slice::from(&xs);
        let mut buffers = Vec::new();
        let json = s.encode_block(3..7, &mut buffers);
        assert_eq!(
            Value::decode(&json, &buffers).unwrap(),
            Value::F64Array(vec![3.0, 4.0, 5.0, 6.0])
        );
        assert_eq!(s.item(9), Value::Float(9.0));
        let v = Value::I64Array(vec![1, 2]);
        assert_eq!(Slice::of(&v), Some(Slice::I64(&[1, 2])));
        assert_eq!(Slice::of(&Value::Int(1)), None);
    }
}
