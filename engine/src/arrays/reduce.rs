//! Reductions: `sum mean min max argmin argmax dot norm cumsum`.
//!
//! Sums run left to right, as a plain loop does, so results match one
//! bit for bit. i64 sums, dots and cumulative sums are checked; `mean` and
//! `norm` of i64 arrays are f64.
//!
//! Plain script arrays of numbers (what `%scatter d = 0..16` or `[1, 2.5]`
//! give) take the same reductions but `cumsum`: all integers reduce as an
//! i64 array, any float makes them an f64 array; anything else in them is
//! an error naming its index.

use super::{runtime, same_len, F64Array, I64Array, RhaiResult};
use rhai::{Array, Dynamic, Engine, FLOAT, INT};
use std::cmp::Ordering;

fn nonempty(what: &str, len: usize) -> RhaiResult<()> {
    if len == 0 {
        return Err(runtime(format!(
            "{what} of an empty array is undefined; check a.len first"
        )));
    }
    Ok(())
}

fn no_nan(what: &str, v: &[f64]) -> RhaiResult<()> {
    if let Some(k) = v.iter().position(|x| x.is_nan()) {
        return Err(runtime(format!(
            "{what} of an array holding NaN (at index {k}) is undefined; remove NaN with a.drop_nan() first"
        )));
    }
    Ok(())
}

/// The index of the first element that `better` prefers to all before it.
fn arg_best<T: Copy>(v: &[T], better: impl Fn(T, T) -> bool) -> usize {
    let mut best = 0;
    for (k, x) in v.iter().enumerate().skip(1) {
        if better(*x, v[best]) {
            best = k;
        }
    }
    best
}

/// f64 reductions; `None` from `pick` means the array was empty.
fn float_extreme(what: &str, v: &[f64], less: bool) -> RhaiResult<usize> {
    nonempty(what, v.len())?;
    no_nan(what, v)?;
    let order = if less {
        Ordering::Less
    } else {
        Ordering::Greater
    };
    Ok(arg_best(v, |x, y| x.partial_cmp(&y) == Some(order)))
}

fn int_extreme(what: &str, v: &[i64], less: bool) -> RhaiResult<usize> {
    nonempty(what, v.len())?;
    Ok(arg_best(v, |x, y| if less { x < y } else { x > y }))
}

fn overflow(what: &str, k: usize) -> Box<rhai::EvalAltResult> {
    runtime(format!(
        "integer overflow in {what} at element {k}; i64 arrays never wrap: use to_f64() for floating point"
    ))
}

/// The checked i64 sum.
pub(crate) fn int_sum(v: &[i64]) -> RhaiResult<i64> {
    let mut s: i64 = 0;
    for (k, x) in v.iter().enumerate() {
        s = s.checked_add(*x).ok_or_else(|| overflow("sum", k))?;
    }
    Ok(s)
}

/// A plain array's numbers, as the numeric array they make.
enum Numbers {
    Ints(Vec<i64>),
    Floats(Vec<f64>),
}

fn numbers(what: &str, a: &Array) -> RhaiResult<Numbers> {
    if a.iter().all(|d| d.is_int()) {
        return Ok(Numbers::Ints(
            a.iter().map(|d| d.as_int().unwrap_or_default()).collect(),
        ));
    }
    a.iter()
        .enumerate()
        .map(|(k, d)| {
            d.as_float()
                .or_else(|_| d.as_int().map(|i| i as f64))
                .map_err(|kind| {
                    runtime(format!(
                        "{what} needs numbers, but element {k} is {}",
                        if kind == "()" {
                            "()".to_string()
                        } else {
                            format!("a {kind}")
                        }
                    ))
                })
        })
        .collect::<RhaiResult<Vec<f64>>>()
        .map(Numbers::Floats)
}

/// A plain array's reduction: through its i64 or f64 array.
fn on_numbers(
    what: &str,
    a: &Array,
    ints: impl FnOnce(&[i64]) -> RhaiResult<Dynamic>,
    floats: impl FnOnce(&[f64]) -> RhaiResult<Dynamic>,
) -> RhaiResult<Dynamic> {
    match numbers(what, a)? {
        Numbers::Ints(v) => ints(&v),
        Numbers::Floats(v) => floats(&v),
    }
}

fn int_dot(a: &[i64], b: &[i64]) -> RhaiResult<i64> {
    same_len("dot", a.len(), b.len())?;
    let mut s: i64 = 0;
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        s = x
            .checked_mul(*y)
            .and_then(|p| s.checked_add(p))
            .ok_or_else(|| overflow("dot", k))?;
    }
    Ok(s)
}

fn float_dot(a: &[f64], b: &[f64]) -> RhaiResult<f64> {
    same_len("dot", a.len(), b.len())?;
    Ok(a.iter().zip(b).map(|(x, y)| x * y).sum())
}

fn as_floats(n: Numbers) -> Vec<f64> {
    match n {
        Numbers::Ints(v) => v.into_iter().map(|x| x as f64).collect(),
        Numbers::Floats(v) => v,
    }
}

/// Registers the reductions of plain script arrays of numbers.
fn register_plain(engine: &mut Engine) {
    engine
        .register_fn("sum", |a: &mut Array| {
            on_numbers(
                "sum",
                a,
                |v| int_sum(v).map(Dynamic::from),
                |v| Ok(Dynamic::from(v.iter().sum::<f64>())),
            )
        })
        .register_fn("mean", |a: &mut Array| -> RhaiResult<FLOAT> {
            nonempty("mean", a.len())?;
            Ok(as_floats(numbers("mean", a)?).iter().sum::<f64>() / a.len() as f64)
        })
        .register_fn("min", |a: &mut Array| {
            on_numbers(
                "min",
                a,
                |v| Ok(Dynamic::from(v[int_extreme("min", v, true)?])),
                |v| Ok(Dynamic::from(v[float_extreme("min", v, true)?])),
            )
        })
        .register_fn("max", |a: &mut Array| {
            on_numbers(
                "max",
                a,
                |v| Ok(Dynamic::from(v[int_extreme("max", v, false)?])),
                |v| Ok(Dynamic::from(v[float_extreme("max", v, false)?])),
            )
        })
        .register_fn("argmin", |a: &mut Array| {
            on_numbers(
                "argmin",
                a,
                |v| Ok(Dynamic::from(int_extreme("argmin", v, true)? as INT)),
                |v| Ok(Dynamic::from(float_extreme("argmin", v, true)? as INT)),
            )
        })
        .register_fn("argmax", |a: &mut Array| {
            on_numbers(
                "argmax",
                a,
                |v| Ok(Dynamic::from(int_extreme("argmax", v, false)? as INT)),
                |v| Ok(Dynamic::from(float_extreme("argmax", v, false)? as INT)),
            )
        })
        .register_fn("norm", |a: &mut Array| -> RhaiResult<FLOAT> {
            Ok(as_floats(numbers("norm", a)?)
                .iter()
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt())
        })
        .register_fn("dot", |a: &mut Array, b: Array| -> RhaiResult<Dynamic> {
            match (numbers("dot", a)?, numbers("dot", &b)?) {
                (Numbers::Ints(x), Numbers::Ints(y)) => int_dot(&x, &y).map(Dynamic::from),
                (x, y) => float_dot(&as_floats(x), &as_floats(y)).map(Dynamic::from),
            }
        });
}

/// Registers the reductions.
pub fn register(engine: &mut Engine) {
    register_plain(engine);
    engine
        .register_fn("sum", |a: &mut F64Array| a.0.iter().sum::<f64>())
        .register_fn("mean", |a: &mut F64Array| -> RhaiResult<FLOAT> {
            nonempty("mean", a.0.len())?;
            Ok(a.0.iter().sum::<f64>() / a.0.len() as f64)
        })
        .register_fn("min", |a: &mut F64Array| -> RhaiResult<FLOAT> {
            Ok(a.0[float_extreme("min", &a.0, true)?])
        })
        .register_fn("max", |a: &mut F64Array| -> RhaiResult<FLOAT> {
            Ok(a.0[float_extreme("max", &a.0, false)?])
        })
        .register_fn("argmin", |a: &mut F64Array| -> RhaiResult<INT> {
            Ok(float_extreme("argmin", &a.0, true)? as INT)
        })
        .register_fn("argmax", |a: &mut F64Array| -> RhaiResult<INT> {
            Ok(float_extreme("argmax", &a.0, false)? as INT)
        })
        .register_fn(
            "dot",
            |a: &mut F64Array, b: F64Array| -> RhaiResult<FLOAT> { float_dot(&a.0, &b.0) },
        )
        .register_fn("norm", |a: &mut F64Array| {
            a.0.iter().map(|x| x * x).sum::<f64>().sqrt()
        })
        .register_fn("cumsum", |a: &mut F64Array| {
            let mut s = 0.0;
            F64Array::new(
                a.0.iter()
                    .map(|x| {
                        s += x;
                        s
                    })
                    .collect(),
            )
        });
    engine
        .register_fn("sum", |a: &mut I64Array| int_sum(&a.0))
        .register_fn("mean", |a: &mut I64Array| -> RhaiResult<FLOAT> {
            nonempty("mean", a.0.len())?;
            // i128 cannot overflow for any length a Vec can have.
            let s: i128 = a.0.iter().map(|x| *x as i128).sum();
            Ok(s as f64 / a.0.len() as f64)
        })
        .register_fn("min", |a: &mut I64Array| -> RhaiResult<INT> {
            Ok(a.0[int_extreme("min", &a.0, true)?])
        })
        .register_fn("max", |a: &mut I64Array| -> RhaiResult<INT> {
            Ok(a.0[int_extreme("max", &a.0, false)?])
        })
        .register_fn("argmin", |a: &mut I64Array| -> RhaiResult<INT> {
            Ok(int_extreme("argmin", &a.0, true)? as INT)
        })
        .register_fn("argmax", |a: &mut I64Array| -> RhaiResult<INT> {
            Ok(int_extreme("argmax", &a.0, false)? as INT)
        })
        .register_fn("dot", |a: &mut I64Array, b: I64Array| -> RhaiResult<INT> {
            int_dot(&a.0, &b.0)
        })
        .register_fn("norm", |a: &mut I64Array| {
            a.0.iter()
                .map(|x| (*x as f64) * (*x as f64))
                .sum::<f64>()
                .sqrt()
        })
        .register_fn("cumsum", |a: &mut I64Array| -> RhaiResult<I64Array> {
            let mut s: i64 = 0;
            a.0.iter()
                .enumerate()
                .map(|(k, x)| {
                    s = s.checked_add(*x).ok_or_else(|| overflow("cumsum", k))?;
                    Ok(s)
                })
                .collect::<RhaiResult<Vec<i64>>>()
                .map(I64Array::new)
        });
}
