//! Script values ⇄ wire values: [`rhai::Dynamic`] ⇄ [`zpar_protocol::Value`].

use crate::arrays::{F64Array, I64Array};
use rhai::{Array, Blob, Dynamic, FnPtr, ImmutableString, Map};
use zpar_protocol::error::Chain;
use zpar_protocol::value::{f64_bytes, i64_bytes, SharedOut};
use zpar_protocol::Value;

/// A script value that cannot leave the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a value of type {type_name} cannot be sent{}", at_path(.path))]
pub struct Untransferable {
    /// The script type's name (`Fn`, `BinaryTreeCommunicator`, ...).
    pub type_name: String,
    /// Where in a nested value it sits (`[2].com`), empty at the top.
    pub path: String,
}

fn at_path(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" (at {path})")
    }
}

/// Converts a script value for the wire. Functions, communicators and other
/// native objects cannot travel; the error names their type and where they
/// sit in a nested value.
pub fn to_value(d: &Dynamic) -> Result<Value, Untransferable> {
    to_value_at(d, &mut String::new())
}

fn to_value_at(d: &Dynamic, path: &mut String) -> Result<Value, Untransferable> {
    if d.is_shared() {
        return to_value_at(&d.flatten_clone(), path);
    }
    if d.is_unit() {
        return Ok(Value::Unit);
    }
    if let Ok(b) = d.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = d.as_int() {
        return Ok(Value::Int(i));
    }
    if let Ok(f) = d.as_float() {
        return Ok(Value::Float(f));
    }
    if let Ok(c) = d.as_char() {
        return Ok(Value::Str(c.to_string()));
    }
    if let Some(s) = d.read_lock::<ImmutableString>() {
        return Ok(Value::Str(s.to_string()));
    }
    if let Some(a) = d.read_lock::<Array>() {
        let mut out = Vec::with_capacity(a.len());
        for (i, v) in a.iter().enumerate() {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            out.push(to_value_at(v, path)?);
            path.truncate(len);
        }
        return Ok(Value::Array(out));
    }
    if let Some(m) = d.read_lock::<Map>() {
        let mut out = std::collections::BTreeMap::new();
        for (k, v) in m.iter() {
            let len = path.len();
            path.push('.');
            path.push_str(k);
            out.insert(k.to_string(), to_value_at(v, path)?);
            path.truncate(len);
        }
        return Ok(Value::Map(out));
    }
    if let Some(b) = d.read_lock::<Blob>() {
        return Ok(Value::Bytes(b.clone()));
    }
    if let Some(a) = d.read_lock::<F64Array>() {
        return Ok(Value::F64Array(a.as_slice().to_vec()));
    }
    if let Some(a) = d.read_lock::<I64Array>() {
        return Ok(Value::I64Array(a.as_slice().to_vec()));
    }
    Err(Untransferable {
        type_name: pretty_type(d),
        path: path.clone(),
    })
}

/// Encodes a script value for the wire, appending its buffers. Numeric
/// arrays and blobs go straight from script memory to frames (one copy), or,
/// with `shared`, large ones into a shared segment for a client on this
/// host.
pub fn encode_dynamic(
    d: &Dynamic,
    buffers: &mut Vec<zmq::Message>,
    shared: Option<&mut SharedOut>,
) -> Result<serde_json::Value, Untransferable> {
    if let Some(out) = shared {
        if let Some(a) = d.read_lock::<F64Array>() {
            return Ok(shared_or_inline(
                "f64",
                f64_bytes(a.as_slice()),
                a.as_slice().len(),
                buffers,
                out,
            ));
        }
        if let Some(a) = d.read_lock::<I64Array>() {
            return Ok(shared_or_inline(
                "i64",
                i64_bytes(a.as_slice()),
                a.as_slice().len(),
                buffers,
                out,
            ));
        }
        if let Some(b) = d.read_lock::<Blob>() {
            return Ok(shared_or_inline("bytes", &b, b.len(), buffers, out));
        }
        return Ok(to_value(d)?.encode_shared(buffers, out));
    }
    if let Some(a) = d.read_lock::<F64Array>() {
        return Ok(zpar_protocol::value::encode_f64s(a.as_slice(), buffers));
    }
    if let Some(a) = d.read_lock::<I64Array>() {
        return Ok(zpar_protocol::value::encode_i64s(a.as_slice(), buffers));
    }
    if let Some(b) = d.read_lock::<Blob>() {
        return Ok(zpar_protocol::value::encode_bytes(&b, buffers));
    }
    Ok(to_value(d)?.encode_into(buffers))
}

/// A large array into a shared segment (inline if that fails or it is
/// small), without building a wire value first.
fn shared_or_inline(
    kind: &str,
    bytes: &[u8],
    len: usize,
    buffers: &mut Vec<zmq::Message>,
    out: &mut SharedOut,
) -> serde_json::Value {
    if bytes.len() >= out.min_bytes {
        match zpar_protocol::value::write_shared(kind, bytes, len, out) {
            Ok(marker) => return marker,
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "no shared segment; sending the result inline")
            }
        }
    }
    zpar_protocol::value::encode_bytes_as(kind, bytes, len, buffers)
}

/// The script-facing name of a value's type.
pub fn pretty_type(d: &Dynamic) -> String {
    let name = d.type_name();
    if d.is::<FnPtr>() {
        return "Fn".to_string();
    }
    name.rsplit("::").next().unwrap_or(name).to_string()
}

/// Converts a wire value for scripts. Functions and references need the
/// namespace and are resolved by the caller; here they are errors.
pub fn from_value(v: Value) -> Result<Dynamic, String> {
    Ok(match v {
        Value::Unit => Dynamic::UNIT,
        Value::Bool(b) => b.into(),
        Value::Int(i) => i.into(),
        Value::Float(f) => f.into(),
        Value::Str(s) => s.into(),
        Value::Array(a) => {
            let arr: Array = a.into_iter().map(from_value).collect::<Result<_, _>>()?;
            arr.into()
        }
        Value::Map(m) => {
            let mut map = Map::new();
            for (k, v) in m {
                map.insert(k.into(), from_value(v)?);
            }
            map.into()
        }
        Value::Bytes(b) => Dynamic::from_blob(b),
        Value::F64Array(a) => Dynamic::from(F64Array::new(a)),
        Value::I64Array(a) => Dynamic::from(I64Array::new(a)),
        Value::Function(src) => {
            return Err(format!(
                "a function ({src}) cannot be nested inside another value"
            ))
        }
        Value::Reference(name) => {
            return Err(format!(
                "Reference({name:?}) is only allowed as an apply argument"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn round_trips_through_script_values() {
        let mut m = BTreeMap::new();
        m.insert("xs".to_string(), Value::F64Array(vec![1.0, 2.0]));
        m.insert("n".to_string(), Value::Int(3));
        for v in [
            Value::Unit,
            Value::Bool(false),
            Value::Int(5),
            Value::Float(2.5),
            Value::Str("s".into()),
            Value::Array(vec![Value::Int(1), Value::Str("a".into())]),
            Value::Map(m),
            Value::Bytes(vec![1, 2, 3]),
            Value::I64Array(vec![4, 5]),
        ] {
            let d = from_value(v.clone()).unwrap();
            assert_eq!(to_value(&d).unwrap(), v);
        }
    }

    #[test]
    fn function_pointers_do_not_travel() {
        let engine = rhai::Engine::new();
        let d: Dynamic = engine.eval(r#"[1, #{f: Fn("abs")}]"#).unwrap();
        let e = to_value(&d).unwrap_err();
        assert_eq!(e.type_name, "Fn");
        assert_eq!(
            e.to_string(),
            "a value of type Fn cannot be sent (at [1].f)"
        );
    }
}
