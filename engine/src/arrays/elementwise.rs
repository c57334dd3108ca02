//! Elementwise arithmetic and math: `+ - * /` and unary `-` between arrays
//! and scalars on either side, `abs sqrt exp ln powf **`, and elementwise
//! `min`/`max`.
//!
//! Types: f64 with f64 or i64 (array or scalar) gives f64; i64 with i64
//! gives i64, checked (an overflow or a division by zero is an error naming
//! the element); i64 with an f64 scalar gives f64. `sqrt exp ln powf` of an
//! i64 array give f64.

use super::{map_vec, runtime, same_len, try_map_vec, zip_vec, F64Array, I64Array, RhaiResult};
use rhai::{Engine, FLOAT, INT};
use std::rc::Rc;

fn f64s(a: &I64Array) -> Vec<f64> {
    a.0.iter().map(|x| *x as f64).collect()
}

/// An i64 operation that failed at element `k` on `x` and `y`.
fn int_failure(verb: &str, sym: &str, k: usize, x: i64, y: i64) -> Box<rhai::EvalAltResult> {
    if (sym == "/") && y == 0 {
        return runtime(format!(
            "integer division by zero at element {k} ({x} / 0); i64 arrays have no infinity: use to_f64() for IEEE division"
        ));
    }
    runtime(format!(
        "integer overflow in {verb} at element {k} ({x} {sym} {y}); i64 arrays never wrap: use to_f64() for floating point"
    ))
}

/// Registers `name` for every pairing of f64 arrays with f64 or i64
/// arrays and scalars.
/// Generic over `f` (not a fn pointer) so each operation's loop is
/// compiled with `f` inlined and vectorized.
fn float_op<F>(engine: &mut Engine, name: &'static str, verb: &'static str, f: F)
where
    F: Fn(f64, f64) -> f64 + Copy + Send + Sync + 'static,
{
    engine
        .register_fn(
            name,
            move |a: F64Array, b: F64Array| -> RhaiResult<F64Array> {
                same_len(verb, a.0.len(), b.0.len())?;
                Ok(F64Array::new(zip_vec(a.0, &b.0, f)))
            },
        )
        .register_fn(
            name,
            move |a: F64Array, b: I64Array| -> RhaiResult<F64Array> {
                same_len(verb, a.0.len(), b.0.len())?;
                Ok(F64Array::new(zip_vec(a.0, &b.0, |x, y| f(x, y as f64))))
            },
        )
        .register_fn(
            name,
            move |a: I64Array, b: F64Array| -> RhaiResult<F64Array> {
                same_len(verb, a.0.len(), b.0.len())?;
                Ok(F64Array::new(zip_vec(b.0, &a.0, |y, x| f(x as f64, y))))
            },
        )
        .register_fn(name, move |a: F64Array, b: FLOAT| {
            F64Array::new(map_vec(a.0, |x| f(x, b)))
        })
        .register_fn(name, move |a: FLOAT, b: F64Array| {
            F64Array::new(map_vec(b.0, |y| f(a, y)))
        })
        .register_fn(name, move |a: F64Array, b: INT| {
            let b = b as f64;
            F64Array::new(map_vec(a.0, |x| f(x, b)))
        })
        .register_fn(name, move |a: INT, b: F64Array| {
            let a = a as f64;
            F64Array::new(map_vec(b.0, |y| f(a, y)))
        })
        .register_fn(name, move |a: I64Array, b: FLOAT| {
            F64Array::new(a.0.iter().map(|x| f(*x as f64, b)).collect())
        })
        .register_fn(name, move |a: FLOAT, b: I64Array| {
            F64Array::new(b.0.iter().map(|y| f(a, *y as f64)).collect())
        });
}

/// Registers `name` for i64 arrays with i64 arrays and scalars, checked.
fn int_op<F>(engine: &mut Engine, name: &'static str, verb: &'static str, f: F)
where
    F: Fn(i64, i64) -> Option<i64> + Copy + Send + Sync + 'static,
{
    engine
        .register_fn(
            name,
            move |a: I64Array, b: I64Array| -> RhaiResult<I64Array> {
                same_len(verb, a.0.len(), b.0.len())?;
                let b = b.0;
                try_map_vec(a.0, |k, x| {
                    f(x, b[k]).ok_or_else(|| int_failure(verb, name, k, x, b[k]))
                })
                .map(I64Array::new)
            },
        )
        .register_fn(name, move |a: I64Array, b: INT| -> RhaiResult<I64Array> {
            try_map_vec(a.0, |k, x| {
                f(x, b).ok_or_else(|| int_failure(verb, name, k, x, b))
            })
            .map(I64Array::new)
        })
        .register_fn(name, move |a: INT, b: I64Array| -> RhaiResult<I64Array> {
            try_map_vec(b.0, |k, y| {
                f(a, y).ok_or_else(|| int_failure(verb, name, k, a, y))
            })
            .map(I64Array::new)
        });
}

fn nan_min(x: f64, y: f64) -> f64 {
    if x.is_nan() || y.is_nan() {
        f64::NAN
    } else {
        x.min(y)
    }
}

fn nan_max(x: f64, y: f64) -> f64 {
    if x.is_nan() || y.is_nan() {
        f64::NAN
    } else {
        x.max(y)
    }
}

/// `name(a)` for f64 arrays, and for i64 arrays (giving f64) if `ints`.
fn unary<F>(engine: &mut Engine, name: &'static str, ints: bool, f: F)
where
    F: Fn(f64) -> f64 + Copy + Send + Sync + 'static,
{
    engine.register_fn(name, move |a: F64Array| F64Array::new(map_vec(a.0, f)));
    if ints {
        engine.register_fn(name, move |a: I64Array| {
            F64Array::new(a.0.iter().map(|x| f(*x as f64)).collect())
        });
    }
}

/// Registers elementwise operations and math.
pub fn register(engine: &mut Engine) {
    float_op(engine, "+", "add", |x, y| x + y);
    float_op(engine, "-", "subtract", |x, y| x - y);
    float_op(engine, "*", "multiply", |x, y| x * y);
    float_op(engine, "/", "divide", |x, y| x / y);
    float_op(engine, "min", "take the minimum of", nan_min);
    float_op(engine, "max", "take the maximum of", nan_max);
    float_op(engine, "powf", "raise", f64::powf);
    float_op(engine, "**", "raise", f64::powf);
    for name in ["powf", "**"] {
        engine.register_fn(name, |a: I64Array, p: INT| {
            F64Array::new(a.0.iter().map(|x| (*x as f64).powf(p as f64)).collect())
        });
    }
    int_op(engine, "+", "add", i64::checked_add);
    int_op(engine, "-", "subtract", i64::checked_sub);
    int_op(engine, "*", "multiply", i64::checked_mul);
    int_op(engine, "/", "divide", i64::checked_div);
    int_op(engine, "min", "take the minimum of", |x, y| Some(x.min(y)));
    int_op(engine, "max", "take the maximum of", |x, y| Some(x.max(y)));

    unary(engine, "-", false, |x| -x);
    unary(engine, "abs", false, f64::abs);
    unary(engine, "sqrt", true, f64::sqrt);
    unary(engine, "exp", true, f64::exp);
    unary(engine, "ln", true, f64::ln);
    engine
        .register_fn("-", |a: I64Array| -> RhaiResult<I64Array> {
            try_map_vec(a.0, |k, x| {
                x.checked_neg().ok_or_else(|| {
                    runtime(format!(
                        "integer overflow negating element {k} ({x}); i64 arrays never wrap"
                    ))
                })
            })
            .map(I64Array::new)
        })
        .register_fn("abs", |a: I64Array| -> RhaiResult<I64Array> {
            try_map_vec(a.0, |k, x| {
                x.checked_abs().ok_or_else(|| {
                    runtime(format!(
                        "integer overflow in abs at element {k} ({x}); i64 arrays never wrap"
                    ))
                })
            })
            .map(I64Array::new)
        })
        .register_fn("to_f64", |a: &mut I64Array| F64Array::new(f64s(a)))
        .register_fn("to_f64", |a: &mut F64Array| a.clone())
        .register_fn("to_i64", |a: &mut I64Array| a.clone())
        .register_fn("to_i64", |a: &mut F64Array| -> RhaiResult<I64Array> {
            to_i64(&a.0).map(I64Array::new)
        })
        .register_fn("f64_array", |a: I64Array| F64Array::new(f64s(&a)))
        .register_fn("i64_array", |a: F64Array| -> RhaiResult<I64Array> {
            to_i64(&a.0).map(I64Array::new)
        });
}

/// Truncates toward zero; NaN, infinities and values outside i64 are
/// errors naming the element.
pub(crate) fn to_i64(v: &Rc<Vec<f64>>) -> RhaiResult<Vec<i64>> {
    // 2^63 as f64: the first value past i64::MAX.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    v.iter()
        .enumerate()
        .map(|(k, &x)| {
            if !(-LIMIT..LIMIT).contains(&x) {
                Err(runtime(format!(
                    "cannot convert element {k} ({x}) to i64: it is NaN, infinite or out of range"
                )))
            } else {
                Ok(x as i64)
            }
        })
        .collect()
}
