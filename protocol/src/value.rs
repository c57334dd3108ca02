//! Values that travel between clients and engines: JSON plus buffers.
//!
//! Scalars, strings, arrays and maps are plain JSON. Byte blobs and numeric
//! arrays never become JSON text: the JSON holds a small marker object
//! `{"$zpar": "f64", "buffer": i, "frames": k, "len": n}` and the data rides
//! in `k` raw little-endian buffer frames of at most [`CHUNK_BYTES`] each,
//! starting at buffer `i`. Chunking keeps every frame a size ZeroMQ moves
//! well and lets receivers reuse allocations. Other markers: `bytes`, `i64`,
//! `float` (NaN and infinities), `fn` (function source), `ref` (a variable
//! already on the engine) and `map` (a map that itself has a `$zpar` key).
//!
//! A string, array or map whose JSON would reach [`TEXT_IN_BUFFERS_BYTES`]
//! travels the same way: a string's UTF-8 bytes as marker `str`, an array's
//! or map's JSON text as marker `json` (its own numeric arrays and blobs
//! still in buffers of their own, numbered before it). So no value makes a
//! content frame large, and every large value is chunked, streamed through
//! the hub and put in shared memory on one host like a numeric array.

use crate::error::Chain;
use crate::error::{ProtocolError, Result};
use serde_json::{json, Map, Value as Json};
use std::collections::BTreeMap;

/// The largest buffer frame a value is split into, and so a stream chunk's
/// size (`stream`). Measured through the hub with 1, 2 and 4 MiB: 1 MiB
/// pulled 128 MiB a third faster than 4 MiB and pushed it as fast.
pub const CHUNK_BYTES: usize = 1 << 20;

/// A string, array or map whose JSON text would be at least this long
/// travels as buffer frames (markers `str` and `json`), not inside the
/// content frame: a content frame is parsed whole and is limited
/// ([`crate::Limits::max_json_frame`]), buffers are neither.
pub const TEXT_IN_BUFFERS_BYTES: usize = CHUNK_BYTES;

/// How deep `json` markers may nest in one value (each is parsed on its
/// own; a message that nests deeper is refused, not followed).
const MAX_TEXT_NESTING: usize = 16;

const TAG: &str = "$zpar";

/// A value as it travels.
///
/// ```
/// use zpar_protocol::Value;
/// let v = Value::from(vec![1.0, 2.0, 3.0]);
/// let (json, buffers) = v.encode();
/// assert_eq!(buffers.len(), 1); // the floats are not in the JSON
/// assert_eq!(Value::decode(&json, &buffers).unwrap(), v);
/// ```
#[derive(Debug, PartialEq, Default)]
pub enum Value {
    /// Nothing (Rhai's `()`, JSON null).
    #[default]
    Unit,
    /// true or false.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// Text.
    Str(String),
    /// A list of values.
    Array(Vec<Value>),
    /// A map with string keys, in key order.
    Map(BTreeMap<String, Value>),
    /// A byte blob (a buffer).
    Bytes(Vec<u8>),
    /// A numeric array of f64 (a buffer).
    F64Array(Vec<f64>),
    /// A numeric array of i64 (a buffer).
    I64Array(Vec<i64>),
    /// Function source (`|a, b| a + b` or `fn f(x) { .. }`), made a function
    /// on the engine.
    Function(String),
    /// A reference to a variable on the engine (apply arguments only).
    Reference(String),
}

impl Clone for Value {
    /// A deep copy; large arrays and blobs are copied into memory sized once
    /// and advised to huge pages ([`crate::bulk`]), four times faster than
    /// a plain copy into fresh pages for 128 MiB.
    fn clone(&self) -> Value {
        match self {
            Value::Unit => Value::Unit,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::Float(f) => Value::Float(*f),
            Value::Str(s) => Value::Str(s.clone()),
            Value::Array(a) => Value::Array(a.clone()),
            Value::Map(m) => Value::Map(m.clone()),
            Value::Bytes(b) => Value::Bytes(crate::bulk::copy_of(b)),
            Value::F64Array(a) => Value::F64Array(crate::bulk::copy_of(a)),
            Value::I64Array(a) => Value::I64Array(crate::bulk::copy_of(a)),
            Value::Function(s) => Value::Function(s.clone()),
            Value::Reference(s) => Value::Reference(s.clone()),
        }
    }
}

impl Value {
    /// The kind's name, as error messages show it.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Unit => "unit",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Bytes(_) => "blob",
            Value::F64Array(_) => "f64 array",
            Value::I64Array(_) => "i64 array",
            Value::Function(_) => "function",
            Value::Reference(_) => "reference",
        }
    }

    /// Encodes into JSON and buffer frames (numbered from 0).
    pub fn encode(&self) -> (Json, Vec<zmq::Message>) {
        let mut buffers = Vec::new();
        let json = self.encode_into(&mut buffers);
        (json, buffers)
    }

    /// Encodes, appending buffer frames to `buffers` and numbering them after
    /// the ones already there, so several values can share one message.
    pub fn encode_into(&self, buffers: &mut Vec<zmq::Message>) -> Json {
        self.encode_with(buffers, &mut None)
    }

    /// Encodes like [`encode_into`](Self::encode_into), but numeric arrays
    /// and blobs of at least `shared.min_bytes` are written once into a
    /// shared segment (see [`crate::bulk`]) which the JSON names, instead
    /// of into buffer frames. Only for receivers on this host.
    pub fn encode_shared(&self, buffers: &mut Vec<zmq::Message>, shared: &mut SharedOut) -> Json {
        self.encode_with(buffers, &mut Some(shared))
    }

    fn encode_with(
        &self,
        buffers: &mut Vec<zmq::Message>,
        shared: &mut Option<&mut SharedOut>,
    ) -> Json {
        self.encode_sized(buffers, shared).0
    }

    /// Encodes, returning the JSON and about how many bytes its text
    /// takes. A string, array or map whose text would reach
    /// [`TEXT_IN_BUFFERS_BYTES`] goes to buffers (or shared memory) as its
    /// text, and its marker is what is left in the JSON. Sizes add up from
    /// the leaves, so nothing is printed twice and an array of large
    /// arrays, each already a marker, stays in the JSON.
    fn encode_sized(
        &self,
        buffers: &mut Vec<zmq::Message>,
        shared: &mut Option<&mut SharedOut>,
    ) -> (Json, usize) {
        const MARKER_BYTES: usize = 96;
        match self {
            Value::Unit => (Json::Null, 4),
            Value::Bool(b) => (Json::Bool(*b), 5),
            Value::Int(i) => (json!(i), int_text_len(*i)),
            Value::Float(f) if f.is_finite() => (json!(f), 24),
            Value::Float(f) => {
                let v = if f.is_nan() {
                    "nan"
                } else if *f > 0.0 {
                    "inf"
                } else {
                    "-inf"
                };
                (json!({TAG: "float", "v": v}), 32)
            }
            Value::Str(s) if s.len() + 2 >= TEXT_IN_BUFFERS_BYTES => (
                bulk_value("str", s.as_bytes(), s.len(), buffers, shared),
                MARKER_BYTES,
            ),
            Value::Str(s) => (Json::String(s.clone()), s.len() + 2),
            Value::Array(a) => {
                let mut size = 2 + a.len();
                let items = a
                    .iter()
                    .map(|v| {
                        let (json, n) = v.encode_sized(buffers, shared);
                        size += n;
                        json
                    })
                    .collect();
                as_text_if_large(Json::Array(items), size, buffers, shared)
            }
            Value::Map(m) => {
                let mut size = 2;
                let obj: Map<String, Json> = m
                    .iter()
                    .map(|(k, v)| {
                        let (json, n) = v.encode_sized(buffers, shared);
                        size += k.len() + 4 + n;
                        (k.clone(), json)
                    })
                    .collect();
                let json = if m.contains_key(TAG) {
                    json!({TAG: "map", "v": obj})
                } else {
                    Json::Object(obj)
                };
                as_text_if_large(json, size, buffers, shared)
            }
            Value::Bytes(b) => (
                bulk_value("bytes", b, b.len(), buffers, shared),
                MARKER_BYTES,
            ),
            Value::F64Array(a) => (
                bulk_value("f64", f64_bytes(a), a.len(), buffers, shared),
                MARKER_BYTES,
            ),
            Value::I64Array(a) => (
                bulk_value("i64", i64_bytes(a), a.len(), buffers, shared),
                MARKER_BYTES,
            ),
            Value::Function(src) => (json!({TAG: "fn", "source": src}), src.len() + 32),
            Value::Reference(name) => (json!({TAG: "ref", "name": name}), name.len() + 32),
        }
    }

    /// Decodes JSON whose buffer markers index into `buffers`.
    pub fn decode(json: &Json, buffers: &[zmq::Message]) -> Result<Value> {
        Value::decode_nested(json, buffers, &mut TextsSeen::default())
    }

    /// Decodes, `seen` holding the `json` texts decoded so far.
    fn decode_nested(json: &Json, buffers: &[zmq::Message], seen: &mut TextsSeen) -> Result<Value> {
        Ok(match json {
            Json::Null => Value::Unit,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Value::Str(s.clone()),
            Json::Array(a) => Value::Array(
                a.iter()
                    .map(|v| Value::decode_nested(v, buffers, seen))
                    .collect::<Result<_>>()?,
            ),
            Json::Object(obj) => match obj.get(TAG) {
                None => Value::Map(decode_map(obj, buffers, seen)?),
                Some(tag) => decode_tagged(tag, obj, buffers, seen)?,
            },
        })
    }

    /// The value as plain JSON (buffers inlined as arrays of numbers), for
    /// display and for converting into user types with serde.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Unit => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => json!(i),
            Value::Float(f) => json!(f),
            Value::Str(s) => Json::String(s.clone()),
            Value::Array(a) => Json::Array(a.iter().map(Value::to_json).collect()),
            Value::Map(m) => {
                Json::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            Value::Bytes(b) => json!(b),
            Value::F64Array(a) => json!(a),
            Value::I64Array(a) => json!(a),
            Value::Function(s) => Json::String(s.clone()),
            Value::Reference(s) => Json::String(s.clone()),
        }
    }

    /// A value from plain JSON (no markers are interpreted).
    pub fn from_json(json: &Json) -> Value {
        match json {
            Json::Null => Value::Unit,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Value::Str(s.clone()),
            Json::Array(a) => Value::Array(a.iter().map(Value::from_json).collect()),
            Json::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Any serde value, through JSON.
    pub fn from_serde<T: serde::Serialize + ?Sized>(v: &T) -> serde_json::Result<Value> {
        Ok(Value::from_json(&serde_json::to_value(v)?))
    }

    /// Into any serde type, through JSON.
    pub fn to_serde<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_value(self.to_json())
    }

    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number as f64, if this is an int or a float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Unit => write!(f, "()"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Array(a) => {
                write!(f, "[")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
            Value::Map(m) => {
                write!(f, "#{{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                write!(f, "}}")
            }
            Value::Bytes(b) => write!(f, "blob({} bytes)", b.len()),
            Value::F64Array(a) => short_array(f, "f64", a),
            Value::I64Array(a) => short_array(f, "i64", a),
            Value::Function(s) => write!(f, "Fn({s})"),
            Value::Reference(s) => write!(f, "Reference({s:?})"),
        }
    }
}

fn short_array<T: std::fmt::Debug>(
    f: &mut std::fmt::Formatter<'_>,
    kind: &str,
    a: &[T],
) -> std::fmt::Result {
    if a.len() <= 8 {
        write!(f, "{kind}{a:?}")
    } else {
        write!(
            f,
            "{kind}[{:?}, {:?}, ... {:?}; len {}]",
            a[0],
            a[1],
            a[a.len() - 1],
            a.len()
        )
    }
}

macro_rules! from_impls {
    ($($t:ty => |$v:ident| $e:expr;)*) => { $(impl From<$t> for Value { fn from($v: $t) -> Value { $e } })* };
}

from_impls! {
    () => |_v| Value::Unit;
    bool => |v| Value::Bool(v);
    i64 => |v| Value::Int(v);
    i32 => |v| Value::Int(v.into());
    u32 => |v| Value::Int(v.into());
    usize => |v| Value::Int(v as i64);
    f64 => |v| Value::Float(v);
    &str => |v| Value::Str(v.to_string());
    String => |v| Value::Str(v);
    Vec<f64> => |v| Value::F64Array(v);
    Vec<i64> => |v| Value::I64Array(v);
    Vec<u8> => |v| Value::Bytes(v);
    Vec<Value> => |v| Value::Array(v);
    BTreeMap<String, Value> => |v| Value::Map(v);
}

/// Encodes an f64 slice straight into buffer frames (one copy), as
/// [`Value::F64Array`] would be, without building a `Value` first.
pub fn encode_f64s(a: &[f64], buffers: &mut Vec<zmq::Message>) -> Json {
    chunked("f64", f64_bytes(a), a.len(), buffers)
}

/// Encodes an i64 slice straight into buffer frames, like [`encode_f64s`].
pub fn encode_i64s(a: &[i64], buffers: &mut Vec<zmq::Message>) -> Json {
    chunked("i64", i64_bytes(a), a.len(), buffers)
}

/// Encodes bytes straight into buffer frames, like [`encode_f64s`].
pub fn encode_bytes(b: &[u8], buffers: &mut Vec<zmq::Message>) -> Json {
    chunked("bytes", b, b.len(), buffers)
}

/// Encodes `len` elements of `kind` (`f64`, `i64`, `bytes`) given as their
/// bytes as [`Value::encode_shared`] would (into `shared` when given and
/// the bytes reach its `min_bytes`, else into buffer frames), without
/// building a `Value` first: for data a program only lends.
pub fn encode_bulk(
    kind: &str,
    bytes: &[u8],
    len: usize,
    buffers: &mut Vec<zmq::Message>,
    shared: Option<&mut SharedOut>,
) -> Json {
    bulk_value(kind, bytes, len, buffers, &mut { shared })
}

/// Encodes `len` elements of `kind` (`f64`, `i64`, `bytes`) given as their
/// bytes, like [`encode_f64s`].
pub fn encode_bytes_as(
    kind: &str,
    bytes: &[u8],
    len: usize,
    buffers: &mut Vec<zmq::Message>,
) -> Json {
    chunked(kind, bytes, len, buffers)
}

fn chunked(kind: &str, bytes: &[u8], len: usize, buffers: &mut Vec<zmq::Message>) -> Json {
    let first = buffers.len();
    if bytes.is_empty() {
        buffers.push(zmq::Message::new());
    }
    for chunk in bytes.chunks(CHUNK_BYTES) {
        buffers.push(zmq::Message::from(chunk));
    }
    json!({TAG: kind, "buffer": first, "frames": buffers.len() - first, "len": len})
}

/// The length of an integer's decimal text.
fn int_text_len(i: i64) -> usize {
    let digits = i
        .unsigned_abs()
        .checked_ilog10()
        .map_or(1, |d| d as usize + 1);
    digits + usize::from(i < 0)
}

/// `json` (about `size` bytes of text) as it is, or, from
/// [`TEXT_IN_BUFFERS_BYTES`] on, its text in buffers or shared memory
/// behind a `json` marker. A marker in shared memory lists the segments
/// its text names (`"holds"`), so the receiver that removes a value's
/// segments finds them without parsing the text.
fn as_text_if_large(
    json: Json,
    size: usize,
    buffers: &mut Vec<zmq::Message>,
    shared: &mut Option<&mut SharedOut>,
) -> (Json, usize) {
    if size < TEXT_IN_BUFFERS_BYTES {
        return (json, size);
    }
    let held = if shared.is_some() {
        shared_segments(&json)
    } else {
        Vec::new()
    };
    let text = serde_json::to_vec(&json).expect("JSON values always print");
    let mut marker = bulk_value("json", &text, text.len(), buffers, shared);
    if !held.is_empty() {
        marker["holds"] = json!(held);
    }
    (marker, 96)
}

/// Where [`Value::encode_shared`] puts large arrays: the segments it
/// wrote, which the sender keeps until every receiver has read them.
#[derive(Debug)]
pub struct SharedOut {
    /// Arrays and blobs of at least this many bytes go to a segment.
    pub min_bytes: usize,
    /// The segments written so far.
    pub segments: Vec<crate::bulk::Segment>,
    /// How many receivers read the segments at once (engines a value is
    /// pushed to); markers say so, and each reader then takes its share
    /// of the cores ([`crate::bulk::read_sharing`]).
    pub readers: usize,
}

impl SharedOut {
    /// Segments for arrays of at least `min_bytes`.
    pub fn new(min_bytes: usize) -> SharedOut {
        SharedOut {
            min_bytes,
            segments: Vec::new(),
            readers: 1,
        }
    }

    /// The same, for `readers` receivers reading at once.
    pub fn for_readers(self, readers: usize) -> SharedOut {
        SharedOut { readers, ..self }
    }
}

fn bulk_value(
    kind: &str,
    bytes: &[u8],
    len: usize,
    buffers: &mut Vec<zmq::Message>,
    shared: &mut Option<&mut SharedOut>,
) -> Json {
    if let Some(out) = shared.as_deref_mut() {
        if bytes.len() >= out.min_bytes.max(1) {
            match write_shared(kind, bytes, len, out) {
                Ok(marker) => return marker,
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "no shared segment; sending the value inline")
                }
            }
        }
    }
    chunked(kind, bytes, len, buffers)
}

/// Writes `bytes` (`len` elements of `kind`) into shared segments and
/// returns the marker that names them; `out` keeps the segments. A large
/// value is cut into one segment per core, written at once
/// ([`crate::bulk::Segment::create_many`]); its marker then lists them,
/// `{"shm": [names], "parts": [bytes of each]}`, and a reader reads them
/// in order.
pub fn write_shared(
    kind: &str,
    bytes: &[u8],
    len: usize,
    out: &mut SharedOut,
) -> std::io::Result<Json> {
    let pieces = crate::bulk::pieces_for_writing(bytes);
    let segments = crate::bulk::Segment::create_many(&pieces)?;
    let mut marker = segments_marker(kind, &segments, len);
    if out.readers > 1 {
        marker["readers"] = json!(out.readers);
    }
    out.segments.extend(segments);
    Ok(marker)
}

/// The marker of `len` elements of `kind` held, in order and each from
/// its start, by `segments` (one or more; see [`write_shared`]).
pub fn segments_marker(kind: &str, segments: &[crate::bulk::Segment], len: usize) -> Json {
    match segments {
        [one] => shared_marker(kind, one.name(), 0, len),
        many => json!({
            TAG: kind,
            "shm": many.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "parts": many.iter().map(|s| s.len()).collect::<Vec<_>>(),
            "offset": 0,
            "len": len,
            "host": crate::bulk::host_id(),
        }),
    }
}

/// The marker of `len` elements of `kind` (`f64`, `i64`, `bytes`) at byte
/// `offset` of the shared segment `name` (see [`crate::bulk`]).
pub fn shared_marker(kind: &str, name: &str, offset: usize, len: usize) -> Json {
    json!({TAG: kind, "shm": name, "offset": offset, "len": len, "host": crate::bulk::host_id()})
}

/// The names of the shared segments a value's JSON refers to (a receiver
/// removes a reply's segments once it has read them).
pub fn shared_segments(json: &Json) -> Vec<String> {
    let mut out = Vec::new();
    collect_segments(json, &mut out);
    out
}

fn collect_segments(json: &Json, out: &mut Vec<String>) {
    match json {
        Json::Array(a) => a.iter().for_each(|v| collect_segments(v, out)),
        Json::Object(o) => {
            if o.contains_key(TAG) {
                for key in ["shm", "holds"] {
                    match o.get(key) {
                        Some(Json::String(name)) => out.push(name.clone()),
                        Some(Json::Array(names)) => {
                            out.extend(names.iter().filter_map(Json::as_str).map(str::to_string))
                        }
                        _ => {}
                    }
                }
            }
            let marker = o.contains_key(TAG);
            o.iter()
                .filter(|(k, _)| !(marker && *k == "holds"))
                .for_each(|(_, v)| collect_segments(v, out));
        }
        _ => {}
    }
}

fn decode_map(
    obj: &Map<String, Json>,
    buffers: &[zmq::Message],
    seen: &mut TextsSeen,
) -> Result<BTreeMap<String, Value>> {
    obj.iter()
        .map(|(k, v)| Ok((k.clone(), Value::decode_nested(v, buffers, seen)?)))
        .collect()
}

/// The `json` texts one decode has parsed (by where they are) and how deep
/// it is in them. A text is parsed at most once and at most
/// [`MAX_TEXT_NESTING`] deep, so a message whose texts name each other,
/// or one text many times, is refused instead of parsed without end.
#[derive(Default)]
struct TextsSeen {
    depth: usize,
    places: std::collections::HashSet<String>,
}

/// Bytes per element of a buffer marker's kind.
fn width_of(kind: &str) -> usize {
    match kind {
        "f64" | "i64" => 8,
        _ => 1,
    }
}

/// A `str` or `json` marker's value, from its bytes (`place`: where its
/// text is, its first buffer or its segment).
fn decode_text(
    kind: &str,
    place: String,
    bytes: Vec<u8>,
    buffers: &[zmq::Message],
    seen: &mut TextsSeen,
) -> Result<Value> {
    let text = String::from_utf8(bytes)
        .map_err(|e| ProtocolError::Value(format!("a {kind} value is not UTF-8: {e}")))?;
    if kind == "str" {
        return Ok(Value::Str(text));
    }
    if seen.depth >= MAX_TEXT_NESTING {
        return Err(ProtocolError::Value(format!(
            "json markers nest deeper than {MAX_TEXT_NESTING}"
        )));
    }
    if !seen.places.insert(place) {
        return Err(ProtocolError::Value(
            "a json text is named twice in one message".into(),
        ));
    }
    let json: Json = serde_json::from_str(&text)
        .map_err(|e| ProtocolError::Value(format!("a json value is not JSON: {e}")))?;
    seen.depth += 1;
    let value = Value::decode_nested(&json, buffers, seen);
    seen.depth -= 1;
    value
}

fn decode_tagged(
    tag: &Json,
    obj: &Map<String, Json>,
    buffers: &[zmq::Message],
    seen: &mut TextsSeen,
) -> Result<Value> {
    let field = |name: &str| {
        obj.get(name)
            .ok_or_else(|| ProtocolError::Value(format!("a {tag} marker lacks its {name:?} field")))
    };
    let text = |name: &str| -> Result<String> {
        field(name)?.as_str().map(str::to_string).ok_or_else(|| {
            ProtocolError::Value(format!("the {name:?} of a {tag} marker is not a string"))
        })
    };
    match tag.as_str() {
        Some("float") => match text("v")?.as_str() {
            "nan" => Ok(Value::Float(f64::NAN)),
            "inf" => Ok(Value::Float(f64::INFINITY)),
            "-inf" => Ok(Value::Float(f64::NEG_INFINITY)),
            other => Err(ProtocolError::Value(format!(
                "unknown special float {other:?}"
            ))),
        },
        Some("map") => match field("v")? {
            Json::Object(inner) => Ok(Value::Map(decode_map(inner, buffers, seen)?)),
            _ => Err(ProtocolError::Value(
                "a map marker's \"v\" is not an object".into(),
            )),
        },
        Some("fn") => Ok(Value::Function(text("source")?)),
        Some("ref") => Ok(Value::Reference(text("name")?)),
        Some(kind @ ("str" | "json")) => {
            let mut as_bytes = obj.clone();
            as_bytes.insert(TAG.into(), json!("bytes"));
            let place = match (obj.get("shm"), obj.get("buffer")) {
                (Some(shm), _) => format!("shm {shm}"),
                (None, buffer) => format!("buffer {}", buffer.unwrap_or(&Json::Null)),
            };
            match decode_tagged(&json!("bytes"), &as_bytes, buffers, seen)? {
                Value::Bytes(bytes) => decode_text(kind, place, bytes, buffers, seen),
                _ => unreachable!("a bytes marker decodes to bytes"),
            }
        }
        Some(kind @ ("bytes" | "f64" | "i64")) => {
            let num = |name: &str| -> Result<usize> {
                field(name)?.as_u64().map(|n| n as usize).ok_or_else(|| {
                    ProtocolError::Value(format!("the {name:?} of a {kind} marker is not a count"))
                })
            };
            let width = width_of(kind);
            let len = num("len")?;
            if obj.contains_key("shm") {
                // Every segment is opened and checked before anything is
                // allocated; then they are read at once.
                let pieces = shared_fields(kind, obj, len)?;
                let files = pieces
                    .iter()
                    .map(|(name, offset, bytes)| crate::bulk::open_range(name, *offset, *bytes))
                    .collect::<std::io::Result<Vec<_>>>()
                    .map_err(|e| ProtocolError::Value(format!("a {kind} value: {e}")))?;
                let sources: Vec<_> = files
                    .iter()
                    .zip(&pieces)
                    .map(|(file, (_, offset, bytes))| (file, *offset, *bytes))
                    .collect();
                let readers = obj.get("readers").and_then(Json::as_u64).unwrap_or(1);
                return fill_new(kind, len, |out| {
                    let mut jobs = crate::bulk::destinations(out, &sources);
                    crate::bulk::read_sharing(&mut jobs, readers as usize)
                        .map_err(|e| ProtocolError::Value(format!("a {kind} value: {e}")))
                });
            }
            let (first, frames) = (num("buffer")?, num("frames")?);
            let parts = first
                .checked_add(frames)
                .and_then(|end| buffers.get(first..end))
                .ok_or_else(|| {
                    ProtocolError::Value(format!(
                        "a {kind} value names buffers {first}..{} but the message has {}",
                        first.saturating_add(frames),
                        buffers.len()
                    ))
                })?;
            let total: usize = parts.iter().map(|p| p.len()).sum();
            if Some(total) != len.checked_mul(width) {
                return Err(ProtocolError::Value(format!(
                    "a {kind} value of {len} elements arrived with {total} bytes"
                )));
            }
            // Sized once, advised to huge pages when large (`bulk`).
            Ok(match kind {
                "bytes" => {
                    let mut out = crate::bulk::with_capacity(total);
                    for p in parts {
                        out.extend_from_slice(p);
                    }
                    Value::Bytes(out)
                }
                "f64" => {
                    let mut out: Vec<f64> = crate::bulk::zeroed(len);
                    gather(parts, f64_bytes_mut(&mut out));
                    Value::F64Array(out)
                }
                _ => {
                    let mut out: Vec<i64> = crate::bulk::zeroed(len);
                    gather(parts, i64_bytes_mut(&mut out));
                    Value::I64Array(out)
                }
            })
        }
        _ => Err(ProtocolError::Value(format!("unknown value marker {tag}"))),
    }
}

/// The segments (name, byte offset, byte length) of a shared marker of
/// `len` elements of `kind`, in order, after checking it is of this host
/// and that its parts add up to the value.
fn shared_fields<'a>(
    kind: &str,
    obj: &'a Map<String, Json>,
    len: usize,
) -> Result<Vec<(&'a str, usize, usize)>> {
    let bad = |what: &str| ProtocolError::Value(format!("a {kind} marker's {what}"));
    let names: Vec<&str> = match obj.get("shm") {
        Some(Json::String(name)) => vec![name.as_str()],
        Some(Json::Array(names)) if !names.is_empty() => names
            .iter()
            .map(|n| {
                n.as_str()
                    .ok_or_else(|| bad("\"shm\" list holds something other than names"))
            })
            .collect::<Result<_>>()?,
        _ => return Err(bad("\"shm\" is neither a name nor a list of names")),
    };
    let name = names[0];
    let host = obj.get("host").and_then(Json::as_str).unwrap_or_default();
    if host != crate::bulk::host_id() {
        return Err(ProtocolError::Value(format!(
            "a {kind} value is in shared segment {name} of another host (boot id {host:?}); shared segments are only for engines on the sender's host"
        )));
    }
    let offset = obj.get("offset").and_then(Json::as_u64).ok_or_else(|| {
        ProtocolError::Value(format!("the \"offset\" of a {kind} marker is not a count"))
    })? as usize;
    let bytes = len.checked_mul(width_of(kind)).ok_or_else(|| {
        ProtocolError::Value(format!("a {kind} value of {len} elements is too long"))
    })?;
    if names.len() == 1 {
        return Ok(vec![(name, offset, bytes)]);
    }
    // Several segments: each holds its part from its start.
    let parts: Vec<usize> = obj
        .get("parts")
        .and_then(Json::as_array)
        .filter(|p| p.len() == names.len())
        .and_then(|p| p.iter().map(|n| n.as_u64().map(|n| n as usize)).collect())
        .ok_or_else(|| bad("\"parts\" is not one byte count per segment"))?;
    if offset != 0 || parts.iter().try_fold(0usize, |a, p| a.checked_add(*p)) != Some(bytes) {
        return Err(ProtocolError::Value(format!(
            "the parts of a {kind} marker do not add up to its {len} elements"
        )));
    }
    Ok(names
        .into_iter()
        .zip(parts)
        .map(|(n, p)| (n, 0, p))
        .collect())
}

/// A new value of `len` elements of `kind`, allocated once at its final
/// size (huge pages when large, see `bulk`) and filled by `read`.
fn fill_new(kind: &str, len: usize, read: impl FnOnce(&mut [u8]) -> Result<()>) -> Result<Value> {
    Ok(match kind {
        "bytes" => {
            // Zeroed (fresh pages, not written): the read faults them in.
            let mut out: Vec<u8> = crate::bulk::zeroed(len);
            read(&mut out)?;
            Value::Bytes(out)
        }
        "f64" => {
            let mut out: Vec<f64> = crate::bulk::zeroed(len);
            read(f64_bytes_mut(&mut out))?;
            Value::F64Array(out)
        }
        _ => {
            let mut out: Vec<i64> = crate::bulk::zeroed(len);
            read(i64_bytes_mut(&mut out))?;
            Value::I64Array(out)
        }
    })
}

/// The kind of a numeric array or blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkKind {
    /// A blob ([`Value::Bytes`]).
    Bytes,
    /// [`Value::F64Array`].
    F64,
    /// [`Value::I64Array`].
    I64,
}

impl BulkKind {
    fn tag(self) -> &'static str {
        match self {
            BulkKind::Bytes => "bytes",
            BulkKind::F64 => "f64",
            BulkKind::I64 => "i64",
        }
    }

    /// Bytes per element.
    pub fn width(self) -> usize {
        match self {
            BulkKind::Bytes => 1,
            BulkKind::F64 | BulkKind::I64 => 8,
        }
    }
}

/// A value that is one numeric array or blob in a shared segment, which
/// its receiver has opened and taken the name of (see
/// [`bulk::Detached`](crate::bulk::Detached)): nothing is read until it is
/// asked for, and then straight where the caller wants it (a client reads
/// a gather's blocks into their places in the joined array).
///
/// ```
/// use zpar_protocol::value::{SharedOut, SharedValue};
/// use zpar_protocol::Value;
/// if zpar_protocol::bulk::available() {
///     let v = Value::F64Array(vec![2.5; 1 << 18]); // 2 MiB
///     let mut out = SharedOut::new(1 << 20);
///     let json = v.encode_shared(&mut Vec::new(), &mut out);
///     // Receivers remove the name; here the sender's copy is forgotten.
///     out.segments.into_iter().for_each(std::mem::forget);
///     let shared = SharedValue::open(&json).unwrap().unwrap();
///     assert_eq!(shared.elements(), 1 << 18);
///     assert_eq!(shared.to_value().unwrap(), v);
/// }
/// ```
#[derive(Debug)]
pub struct SharedValue {
    kind: BulkKind,
    elements: usize,
    /// Its segments, in order.
    data: Vec<crate::bulk::Detached>,
}

impl SharedValue {
    /// Opens the segments of `json` if `json` is a shared marker (None if
    /// it is any other value), and removes their names.
    pub fn open(json: &Json) -> Option<Result<SharedValue>> {
        let obj = json.as_object()?;
        if !obj.contains_key("shm") {
            return None;
        }
        let kind = match obj.get(TAG)?.as_str()? {
            "bytes" => BulkKind::Bytes,
            "f64" => BulkKind::F64,
            "i64" => BulkKind::I64,
            _ => return None,
        };
        Some((|| {
            let tag = kind.tag();
            let elements = obj.get("len").and_then(Json::as_u64).ok_or_else(|| {
                ProtocolError::Value(format!("the \"len\" of a {tag} marker is not a count"))
            })? as usize;
            let data = shared_fields(tag, obj, elements)?
                .into_iter()
                .map(|(name, offset, bytes)| crate::bulk::Detached::open(name, offset, bytes))
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(|e| ProtocolError::Value(format!("a {tag} value: {e}")))?;
            Ok(SharedValue {
                kind,
                elements,
                data,
            })
        })())
    }

    /// Its kind.
    pub fn kind(&self) -> BulkKind {
        self.kind
    }

    /// How many elements it holds.
    pub fn elements(&self) -> usize {
        self.elements
    }

    /// Where its bytes are, in order: (file, offset, length) of each
    /// segment, to read them elsewhere ([`crate::bulk::destinations`]).
    pub fn sources(&self) -> Vec<(&std::fs::File, usize, usize)> {
        self.data.iter().map(|d| d.source()).collect()
    }

    /// Reads it into a new value.
    pub fn to_value(&self) -> Result<Value> {
        let tag = self.kind.tag();
        let sources = self.sources();
        fill_new(tag, self.elements, |out| {
            crate::bulk::read_many(&mut crate::bulk::destinations(out, &sources))
                .map_err(|e| ProtocolError::Value(format!("a {tag} value: {e}")))
        })
    }
}

/// Copies the parts, in order, into `out` (whose length is their total).
fn gather(parts: &[zmq::Message], out: &mut [u8]) {
    let mut at = 0;
    for p in parts {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
}

// Numeric arrays are moved as their in-memory bytes, which on little-endian
// targets are exactly the wire's little-endian bytes: one copy, no per-element
// work. zpar does not build on big-endian targets (see the compile_error).
#[cfg(not(target_endian = "little"))]
compile_error!("zpar's value codec assumes a little-endian target");

/// The bytes of an f64 slice (native order; zpar runs on little-endian
/// machines, the wire's order).
pub fn f64_bytes(a: &[f64]) -> &[u8] {
    bytemuck::cast_slice(a)
}

/// The bytes of an f64 slice to fill; a `Vec<f64>` destination is aligned,
/// so unaligned received frames are copied into it rather than cast.
pub fn f64_bytes_mut(a: &mut [f64]) -> &mut [u8] {
    bytemuck::cast_slice_mut(a)
}

/// The bytes of an i64 slice (native order, as [`f64_bytes`]).
pub fn i64_bytes(a: &[i64]) -> &[u8] {
    bytemuck::cast_slice(a)
}

/// The bytes of an i64 slice to fill (see [`f64_bytes_mut`]).
pub fn i64_bytes_mut(a: &mut [i64]) -> &mut [u8] {
    bytemuck::cast_slice_mut(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_survive_json_bit_for_bit() {
        // Scalars travel as JSON text: parsing must give back the very f64
        // that was printed, or a value pushed and pulled changes in its last
        // bit (and a message decoded and encoded again is not the same).
        let mut rng = fastrand::Rng::with_seed(7);
        let mut xs = vec![
            3e293,
            0.1,
            1e-300,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            2.5e-308,
        ];
        xs.extend(
            (0..20_000)
                .map(|_| f64::from_bits(rng.u64(..)))
                .filter(|x| x.is_finite()),
        );
        for x in xs {
            let text = serde_json::to_string(&x).unwrap();
            let back: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x:e} printed as {text}");
            let v = Value::Float(x);
            let (json, buffers) = v.encode();
            let again =
                Value::decode(&serde_json::from_str(&json.to_string()).unwrap(), &buffers).unwrap();
            assert!(
                matches!(again, Value::Float(y) if y.to_bits() == x.to_bits()),
                "{x:e}"
            );
        }
    }

    fn round_trip(v: Value) {
        let (json, buffers) = v.encode();
        let text = serde_json::to_string(&json).unwrap();
        let json: Json = serde_json::from_str(&text).unwrap();
        let back = Value::decode(&json, &buffers).unwrap();
        match (&v, &back) {
            (Value::Float(a), Value::Float(b)) if a.is_nan() => assert!(b.is_nan()),
            _ => assert_eq!(back, v, "via {text}"),
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for v in [
            Value::Unit,
            Value::Bool(true),
            Value::Int(-7),
            Value::Int(i64::MAX),
            Value::Float(1.0),
            Value::Float(-0.5),
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::Float(f64::NEG_INFINITY),
            Value::Str(String::new()),
            Value::Str("héllo \"x\"".into()),
            Value::Array(vec![]),
            Value::Map(BTreeMap::new()),
            Value::Bytes(vec![]),
            Value::Bytes(vec![0, 255, 7]),
            Value::F64Array(vec![]),
            Value::F64Array(vec![1.5, -2.0, f64::MAX]),
            Value::I64Array(vec![]),
            Value::I64Array(vec![i64::MIN, 0, 3]),
            Value::Function("|a, b| a + b".into()),
            Value::Reference("com".into()),
        ] {
            round_trip(v);
        }
    }

    #[test]
    fn nested_values_share_one_buffer_list() {
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), Value::F64Array(vec![1.0; 10]));
        m.insert("$zpar".to_string(), Value::Bytes(vec![1, 2]));
        m.insert(
            "nested".to_string(),
            Value::Array(vec![
                Value::I64Array(vec![1, 2]),
                Value::Map(BTreeMap::new()),
            ]),
        );
        let v = Value::Map(m);
        let (_, buffers) = v.encode();
        assert_eq!(buffers.len(), 3);
        round_trip(v);
    }

    #[test]
    fn large_arrays_are_chunked() {
        let n = CHUNK_BYTES / 8 * 2 + 3;
        let v = Value::F64Array((0..n).map(|i| i as f64).collect());
        let (json, buffers) = v.encode();
        assert_eq!(buffers.len(), 3);
        assert_eq!(json["frames"], 3);
        assert_eq!(Value::decode(&json, &buffers).unwrap(), v);
    }

    #[test]
    fn large_strings_arrays_and_maps_travel_as_buffers() {
        let ints = Value::Array((0..300_000).map(Value::Int).collect());
        let text = Value::Str("é".repeat(TEXT_IN_BUFFERS_BYTES));
        let mut fields = BTreeMap::new();
        fields.insert("ints".to_string(), ints.clone());
        fields.insert("floats".to_string(), Value::F64Array(vec![0.5; 1000]));
        fields.insert("small".to_string(), Value::Int(3));
        let map = Value::Map(fields);
        let nested = Value::Array(vec![map.clone(), text.clone(), Value::Int(1)]);
        for v in [ints, text, map, nested] {
            let (json, buffers) = v.encode();
            let printed = serde_json::to_string(&json).unwrap();
            assert!(
                printed.len() < 1000,
                "{} JSON bytes: {printed:.200}",
                printed.len()
            );
            assert!(!buffers.is_empty());
            round_trip(v);
        }
        // Below the bound, plain JSON as before.
        let (json, buffers) = Value::Array((0..1000).map(Value::Int).collect()).encode();
        assert!(json.is_array() && buffers.is_empty());
    }

    #[test]
    fn large_text_in_shared_memory_names_the_segments_it_holds() {
        if !crate::bulk::available() {
            return eprintln!("skipped: no /dev/shm");
        }
        let inner = Value::F64Array(vec![1.5; 1000]);
        let v = Value::Array(
            std::iter::once(inner.clone())
                .chain((0..300_000).map(Value::Int))
                .collect(),
        );
        let mut out = SharedOut::new(64);
        let mut buffers = Vec::new();
        let json = v.encode_shared(&mut buffers, &mut out);
        assert_eq!(json[TAG], "json");
        assert_eq!(out.segments.len(), 2, "the inner array and the text");
        let mut named = shared_segments(&json);
        named.sort();
        let mut written: Vec<String> = out.segments.iter().map(|s| s.name().into()).collect();
        written.sort();
        assert_eq!(named, written);
        assert_eq!(Value::decode(&json, &buffers).unwrap(), v);
    }

    #[test]
    fn bad_text_markers_are_errors() {
        let frame = |b: &[u8]| vec![zmq::Message::from(b)];
        let marker =
            |kind: &str, len: usize| json!({"$zpar": kind, "buffer": 0, "frames": 1, "len": len});
        let e = Value::decode(&marker("str", 2), &frame(&[0xff, 0xfe])).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
        let e = Value::decode(&marker("json", 3), &frame(b"[1,")).unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");
        // A json marker whose text is itself: refused at the nesting bound.
        let mut len = 0;
        let me = loop {
            let text = serde_json::to_vec(&marker("json", len)).unwrap();
            if text.len() == len {
                break text;
            }
            len = text.len();
        };
        let e = Value::decode(&marker("json", len), &frame(&me)).unwrap_err();
        assert!(e.to_string().contains("named twice"), "{e}");
        // A text that names another text twice: refused, not parsed twice.
        let inner = br#"[1, 2]"#.to_vec();
        let twice = serde_json::to_vec(&json!([
            marker("json", inner.len()),
            marker("json", inner.len())
        ]))
        .unwrap();
        let buffers = vec![
            zmq::Message::from(&inner[..]),
            zmq::Message::from(&twice[..]),
        ];
        let outer = json!({"$zpar": "json", "buffer": 1, "frames": 1, "len": twice.len()});
        let e = Value::decode(&outer, &buffers).unwrap_err();
        assert!(e.to_string().contains("named twice"), "{e}");
        // A user's map key "holds" is no marker's: its segments are listed.
        let m = json!({"holds": {"$zpar": "f64", "shm": "zpar-1-x", "offset": 0, "len": 1, "host": "h"}});
        assert_eq!(shared_segments(&m), vec!["zpar-1-x".to_string()]);
    }

    #[test]
    fn bad_markers_are_errors() {
        let buffers = vec![zmq::Message::from(&[0u8; 8][..])];
        for bad in [
            json!({"$zpar": "f64", "buffer": 0, "frames": 1, "len": 2}),
            json!({"$zpar": "f64", "buffer": 1, "frames": 1, "len": 1}),
            json!({"$zpar": "f64", "buffer": usize::MAX, "frames": 2, "len": 1}),
            json!({"$zpar": "f64", "buffer": "x", "frames": 1, "len": 1}),
            json!({"$zpar": "what"}),
            json!({"$zpar": 5}),
            json!({"$zpar": "fn"}),
            json!({"$zpar": "float", "v": "big"}),
            json!({"$zpar": "map", "v": 1}),
        ] {
            assert!(Value::decode(&bad, &buffers).is_err(), "{bad}");
        }
    }

    #[test]
    fn shared_values_round_trip_and_name_their_segments() {
        if !crate::bulk::available() {
            return eprintln!("skipped: no /dev/shm");
        }
        let big = Value::F64Array((0..1000).map(|i| i as f64).collect());
        let small = Value::I64Array(vec![1, 2, 3]);
        let v = Value::Array(vec![big.clone(), small.clone()]);
        let mut out = SharedOut::new(64);
        let mut buffers = Vec::new();
        let json = v.encode_shared(&mut buffers, &mut out);
        assert_eq!(out.segments.len(), 1, "only the large array is shared");
        assert_eq!(buffers.len(), 1, "the small one rides in a frame");
        assert_eq!(
            shared_segments(&json),
            vec![out.segments[0].name().to_string()]
        );
        assert_eq!(Value::decode(&json, &buffers).unwrap(), v);
        // A block of the segment, by offset (as scatter sends it).
        let block = shared_marker("f64", out.segments[0].name(), 8 * 10, 5);
        assert_eq!(
            Value::decode(&block, &[]).unwrap(),
            Value::F64Array(vec![10.0, 11.0, 12.0, 13.0, 14.0])
        );
        // Past its end, another host's, or gone: clear errors.
        let past = shared_marker("f64", out.segments[0].name(), 8 * 999, 2);
        let e = Value::decode(&past, &[]).unwrap_err().to_string();
        assert!(e.contains("holds 8000 bytes"), "{e}");
        let mut elsewhere = block.clone();
        elsewhere["host"] = json!("another-boot");
        let e = Value::decode(&elsewhere, &[]).unwrap_err().to_string();
        assert!(e.contains("of another host"), "{e}");
        drop(out);
        let e = Value::decode(&json, &buffers).unwrap_err().to_string();
        assert!(e.contains("could not be opened"), "{e}");
    }

    #[test]
    fn large_shared_values_are_cut_into_segments_written_at_once() {
        if !crate::bulk::available() {
            return eprintln!("skipped: no /dev/shm");
        }
        let cores = crate::bulk::cores();
        let n = 2 * crate::bulk::PARALLEL_PIECE_BYTES / 8 + 3;
        let v = Value::F64Array((0..n).map(|i| i as f64 * 0.25 - 7.0).collect());
        let mut out = SharedOut::new(64);
        let json = v.encode_shared(&mut Vec::new(), &mut out);
        let names = shared_segments(&json);
        assert_eq!(names.len(), cores.min(2), "one segment per core: {json}");
        assert_eq!(out.segments.len(), names.len());
        assert_eq!(Value::decode(&json, &[]).unwrap(), v);
        if names.len() > 1 {
            // Parts that do not add up, or one missing, are refused.
            let mut short = json.clone();
            short["parts"][0] = json!(8);
            let e = Value::decode(&short, &[]).unwrap_err().to_string();
            assert!(e.contains("do not add up"), "{e}");
            let mut unnamed = json.clone();
            unnamed["shm"][1] = json!(3);
            let e = Value::decode(&unnamed, &[]).unwrap_err().to_string();
            assert!(e.contains("other than names"), "{e}");
        }
        // A receiver that keeps it takes every name and reads it whole.
        let kept = SharedValue::open(&json).unwrap().unwrap();
        assert!(names
            .iter()
            .all(|n| !crate::bulk::segments_of(std::process::id()).contains(n)));
        assert_eq!(kept.to_value().unwrap(), v);
        out.segments.into_iter().for_each(drop);
    }

    #[test]
    fn serde_conversions() {
        let v = Value::from_serde(&vec![(1, "a")]).unwrap();
        assert_eq!(
            v,
            Value::Array(vec![Value::Array(vec![
                Value::Int(1),
                Value::Str("a".into())
            ])])
        );
        let back: Vec<(i64, String)> = v.to_serde().unwrap();
        assert_eq!(back, vec![(1, "a".to_string())]);
        let xs: Vec<f64> = Value::F64Array(vec![1.0, 2.5]).to_serde().unwrap();
        assert_eq!(xs, vec![1.0, 2.5]);
    }
}
