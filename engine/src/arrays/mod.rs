//! Native numeric arrays for scripts: `F64Array` and `I64Array`, and the
//! toolkit that computes on them without a script call per element.
//!
//! Scatters, pushes and collectives move big numeric data as raw buffers;
//! these types keep it native on the engine too. They are
//! reference-counted, so passing one to a function or storing it in a
//! second variable does not copy it; a write copies only if the data is
//! shared, and an operation on a temporary (`a * 2.0` in `a * 2.0 + 1.0`)
//! reuses its buffer.
//!
//! | module | what |
//! | --- | --- |
//! | this one | the types, `f64_array`/`i64_array`, `a[i]`, `len`, `push`, `to_array`, iteration |
//! | [`elementwise`] | `+ - * /` and unary `-` with arrays and scalars on either side; `abs sqrt exp ln powf **`, elementwise `min`/`max` |
//! | [`reduce`] | `sum mean min max argmin argmax dot norm cumsum` (all but `cumsum` on plain arrays of numbers too) |
//! | [`build`] | `zeros ones linspace arange random normal`; `a[i..j]`, `concat sort reverse filter drop_nan`; conversions |
//!
//! Every operation returns a new array; `a[i] = x` and `push` are the only
//! writes. The rules for edge cases, the same everywhere:
//!
//! - arrays of different lengths are an error, never truncated;
//! - i64 arithmetic is checked: an overflow or a division by zero is an
//!   error naming the element (i64 arrays never wrap; `to_f64()` first for
//!   floating point);
//! - f64 arithmetic is IEEE: `1.0 / 0.0` is `inf`, NaN propagates through
//!   `+ - * /`, `sum`, `mean`, `dot`, `norm`, `cumsum`, and elementwise
//!   `min`/`max`; where an answer would be meaningless with a NaN (`min`,
//!   `max`, `argmin`, `argmax`, `sort`, `to_i64`) it is an error naming the
//!   index (`drop_nan()` removes them);
//! - `min`, `max`, `argmin`, `argmax` and `mean` of an empty array are
//!   errors; `sum`, `dot` and `norm` of empty arrays are 0.
//!
//! Errors are script errors; the engine reports them with the line and
//! column of the call.

/// The toolkit's methods of numeric arrays that a plain array lacks (or
/// takes only some of): a call of one on a plain array is explained as
/// "make it a numeric array first".
pub const NUMERIC_METHODS: &[&str] = &[
    "sum", "mean", "min", "max", "argmin", "argmax", "dot", "norm", "cumsum", "abs", "sqrt", "exp",
    "ln", "powf", "concat", "filter", "drop_nan", "to_f64", "to_i64", "slice",
];

pub mod build;
pub mod elementwise;
pub mod reduce;
#[cfg(test)]
mod tests;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Position, FLOAT, INT};
use std::rc::Rc;

/// A shared, copy-on-write array of f64.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct F64Array(pub Rc<Vec<f64>>);

/// A shared, copy-on-write array of i64.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct I64Array(pub Rc<Vec<i64>>);

pub(crate) type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// A script error; the engine fills in the position of the call.
pub(crate) fn runtime(msg: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(msg.into(), Position::NONE).into()
}

pub(crate) fn same_len(op: &str, a: usize, b: usize) -> RhaiResult<()> {
    if a != b {
        return Err(runtime(format!(
            "cannot {op} arrays of different lengths ({a} and {b})"
        )));
    }
    Ok(())
}

fn index(len: usize, i: INT) -> RhaiResult<usize> {
    let j = if i < 0 { len as INT + i } else { i };
    if j < 0 || j as usize >= len {
        return Err(EvalAltResult::ErrorArrayBounds(len, i, Position::NONE).into());
    }
    Ok(j as usize)
}

/// `f` over every element; in place when `v` is not shared.
pub(crate) fn map_vec<T: Copy>(v: Rc<Vec<T>>, f: impl Fn(T) -> T) -> Vec<T> {
    match Rc::try_unwrap(v) {
        Ok(mut v) => {
            v.iter_mut().for_each(|x| *x = f(*x));
            v
        }
        Err(v) => v.iter().map(|x| f(*x)).collect(),
    }
}

/// `f` over pairs of elements; in `a`'s buffer when it is not shared.
/// The lengths must be equal (checked by the caller).
pub(crate) fn zip_vec<T: Copy, U: Copy>(a: Rc<Vec<T>>, b: &[U], f: impl Fn(T, U) -> T) -> Vec<T> {
    match Rc::try_unwrap(a) {
        Ok(mut v) => {
            v.iter_mut().zip(b).for_each(|(x, y)| *x = f(*x, *y));
            v
        }
        Err(v) => v.iter().zip(b).map(|(x, y)| f(*x, *y)).collect(),
    }
}

/// Like [`map_vec`], for an `f` that can fail at an element (its index
/// and value are passed).
pub(crate) fn try_map_vec<T: Copy>(
    v: Rc<Vec<T>>,
    f: impl Fn(usize, T) -> RhaiResult<T>,
) -> RhaiResult<Vec<T>> {
    match Rc::try_unwrap(v) {
        Ok(mut v) => {
            for (k, x) in v.iter_mut().enumerate() {
                *x = f(k, *x)?;
            }
            Ok(v)
        }
        Err(v) => v.iter().enumerate().map(|(k, x)| f(k, *x)).collect(),
    }
}

macro_rules! numeric_array {
    ($ty:ident, $elem:ty, $script:ty, $name:literal, $ctor:literal, $from_dyn:expr) => {
        impl $ty {
            /// Wraps a vector without copying it.
            pub fn new(v: Vec<$elem>) -> Self {
                $ty(Rc::new(v))
            }

            /// The elements.
            pub fn as_slice(&self) -> &[$elem] {
                &self.0
            }

            /// Takes the vector out, copying only if it is shared.
            pub fn into_vec(self) -> Vec<$elem> {
                Rc::try_unwrap(self.0).unwrap_or_else(|rc| (*rc).clone())
            }

            fn from_array(a: Array) -> RhaiResult<Self> {
                let conv: fn(&Dynamic) -> Option<$elem> = $from_dyn;
                a.iter()
                    .enumerate()
                    .map(|(i, d)| {
                        conv(d).ok_or_else(|| {
                            runtime(format!(
                                "{}: element {i} is a {}, not a number",
                                $ctor,
                                d.type_name()
                            ))
                        })
                    })
                    .collect::<RhaiResult<Vec<$elem>>>()
                    .map($ty::new)
            }

            fn register(engine: &mut Engine) {
                engine
                    .register_type_with_name::<$ty>($name)
                    .register_fn($ctor, |n: INT, fill: $script| {
                        $ty::new(vec![fill as $elem; n.max(0) as usize])
                    })
                    .register_fn($ctor, $ty::from_array)
                    .register_fn("==", |a: &mut $ty, b: $ty| *a == b)
                    .register_fn("!=", |a: &mut $ty, b: $ty| *a != b)
                    .register_get("len", |a: &mut $ty| a.0.len() as INT)
                    .register_fn("len", |a: &mut $ty| a.0.len() as INT)
                    .register_fn("is_empty", |a: &mut $ty| a.0.is_empty())
                    .register_fn("to_array", |a: &mut $ty| -> Array {
                        a.0.iter().map(|x| Dynamic::from(*x as $script)).collect()
                    })
                    .register_fn("push", |a: &mut $ty, x: $script| {
                        Rc::make_mut(&mut a.0).push(x as $elem)
                    })
                    .register_indexer_get(|a: &mut $ty, i: INT| -> RhaiResult<$script> {
                        Ok(a.0[index(a.0.len(), i)?] as $script)
                    })
                    .register_indexer_set(|a: &mut $ty, i: INT, x: $script| -> RhaiResult<()> {
                        let j = index(a.0.len(), i)?;
                        Rc::make_mut(&mut a.0)[j] = x as $elem;
                        Ok(())
                    })
                    .register_fn("to_string", |a: &mut $ty| format!("{}{:?}", $ctor, a.0))
                    .register_fn("to_debug", |a: &mut $ty| format!("{}{:?}", $ctor, a.0));
                engine.register_iterator::<$ty>();
            }
        }

        impl IntoIterator for $ty {
            type Item = $script;
            type IntoIter = std::vec::IntoIter<$script>;
            fn into_iter(self) -> Self::IntoIter {
                self.0
                    .iter()
                    .map(|x| *x as $script)
                    .collect::<Vec<_>>()
                    .into_iter()
            }
        }
    };
}

numeric_array!(F64Array, f64, FLOAT, "F64Array", "f64_array", |d| d
    .as_float()
    .ok()
    .or_else(|| d.as_int().ok().map(|i| i as f64)));
numeric_array!(I64Array, i64, INT, "I64Array", "i64_array", |d| d
    .as_int()
    .ok());

/// Registers both array types and the whole toolkit on a script engine.
pub fn register(engine: &mut Engine) {
    F64Array::register(engine);
    I64Array::register(engine);
    elementwise::register(engine);
    reduce::register(engine);
    build::register(engine);
}
