//! Making and reshaping arrays: `zeros ones linspace arange random normal`,
//! slices `a[i..j]` and `a[i..=j]`, `concat sort reverse filter drop_nan`.
//!
//! `random` and `normal` are seeded (fastrand's wyrand, already a workspace
//! dependency: small, fast, and reproducible for a given seed on every
//! platform); normal samples come from a Box–Muller transform over it, so
//! no distribution crate is needed for one distribution.

use super::{runtime, F64Array, I64Array, RhaiResult};
use rhai::{Dynamic, Engine, ImmutableString, FLOAT, INT};
use std::ops::{Range, RangeInclusive};

type InclusiveRange = RangeInclusive<INT>;
use std::rc::Rc;

/// Most elements a constructor makes (2^32: 32 GiB of f64), so a typo
/// gives an error rather than an allocation failure.
pub const MAX_LEN: usize = 1 << 32;

fn length(what: &str, n: INT) -> RhaiResult<usize> {
    if n < 0 || n as u64 > MAX_LEN as u64 {
        return Err(runtime(format!(
            "{what}: the length must be between 0 and {MAX_LEN}, not {n}"
        )));
    }
    Ok(n as usize)
}

fn number(what: &str, d: &Dynamic) -> RhaiResult<f64> {
    d.as_float()
        .ok()
        .or_else(|| d.as_int().ok().map(|i| i as f64))
        .ok_or_else(|| runtime(format!("{what} must be a number, not a {}", d.type_name())))
}

/// `n` evenly spaced values from `start` to `stop`, both included.
pub fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![start],
        _ => {
            let step = (stop - start) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|k| start + k as f64 * step).collect();
            v[n - 1] = stop;
            v
        }
    }
}

fn arange(start: &Dynamic, stop: &Dynamic, step: &Dynamic) -> RhaiResult<Dynamic> {
    if let (Ok(a), Ok(b), Ok(s)) = (start.as_int(), stop.as_int(), step.as_int()) {
        if s == 0 {
            return Err(runtime("arange: the step must not be 0".into()));
        }
        let span = (b as i128 - a as i128 + s as i128 - s.signum() as i128) / s as i128;
        let n = length("arange", span.max(0).min(i64::MAX as i128) as INT)?;
        return Ok(Dynamic::from(I64Array::new(
            (0..n as i64).map(|k| a + k * s).collect(),
        )));
    }
    let (a, b, s) = (
        number("arange: start", start)?,
        number("arange: stop", stop)?,
        number("arange: step", step)?,
    );
    if s == 0.0 || !s.is_finite() || !a.is_finite() || !b.is_finite() {
        return Err(runtime(format!(
            "arange: start, stop and step must be finite and the step not 0 (got {a}, {b}, {s})"
        )));
    }
    let span = ((b - a) / s).ceil().max(0.0);
    let n = length("arange", span.min(i64::MAX as f64) as INT)?;
    Ok(Dynamic::from(F64Array::new(
        (0..n).map(|k| a + k as f64 * s).collect(),
    )))
}

/// `n` uniform samples in [0, 1) from `seed`.
pub fn random(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.f64()).collect()
}

/// `n` normal samples (mean 0, sd 1) from `seed`, by Box–Muller.
pub fn normal(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = Vec::with_capacity(n + 1);
    while v.len() < n {
        let u1 = 1.0 - rng.f64(); // (0, 1]: ln is finite
        let u2 = rng.f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        v.push(r * c);
        v.push(r * s);
    }
    v.truncate(n);
    v
}

/// Bounds `i..j` (negative: from the end) checked against `len`.
fn bounds(len: usize, i: INT, j: INT) -> RhaiResult<Range<usize>> {
    let at = |x: INT| if x < 0 { len as INT + x } else { x };
    let (a, b) = (at(i), at(j));
    if a < 0 || b < a || b as usize > len {
        return Err(runtime(format!(
            "slice {i}..{j} is out of bounds for an array of length {len}"
        )));
    }
    Ok(a as usize..b as usize)
}

fn inclusive(r: &InclusiveRange) -> (INT, INT) {
    // `a[i..=-1]` is up to the end.
    let end = *r.end();
    (*r.start(), if end == -1 { INT::MAX } else { end + 1 })
}

type Cmp = fn(f64, f64) -> bool;

fn comparison(op: &str) -> RhaiResult<Cmp> {
    Ok(match op {
        "<" => |x, y| x < y,
        "<=" => |x, y| x <= y,
        ">" => |x, y| x > y,
        ">=" => |x, y| x >= y,
        "==" => |x, y| x == y,
        "!=" => |x, y| x != y,
        other => {
            return Err(runtime(format!(
                "filter: unknown comparison {other:?}; use one of < <= > >= == !="
            )))
        }
    })
}

macro_rules! reshaping {
    ($engine:ident, $ty:ident, $elem:ty) => {
        $engine
            .register_indexer_get(|a: &mut $ty, r: Range<INT>| -> RhaiResult<$ty> {
                Ok($ty::new(a.0[bounds(a.0.len(), r.start, r.end)?].to_vec()))
            })
            .register_indexer_get(|a: &mut $ty, r: InclusiveRange| -> RhaiResult<$ty> {
                let (i, j) = inclusive(&r);
                let j = if j == INT::MAX { a.0.len() as INT } else { j };
                Ok($ty::new(a.0[bounds(a.0.len(), i, j)?].to_vec()))
            })
            .register_fn("slice", |a: &mut $ty, i: INT, j: INT| -> RhaiResult<$ty> {
                Ok($ty::new(a.0[bounds(a.0.len(), i, j)?].to_vec()))
            })
            .register_fn("concat", |a: $ty, b: $ty| {
                let mut v = a.into_vec();
                v.extend_from_slice(&b.0);
                $ty::new(v)
            })
            .register_fn("reverse", |a: $ty| {
                let mut v = a.into_vec();
                v.reverse();
                $ty::new(v)
            })
            .register_fn(
                "filter",
                |a: &mut $ty, op: ImmutableString, x: INT| -> RhaiResult<$ty> {
                    let keep = comparison(&op)?;
                    let x = x as f64;
                    Ok($ty::new(
                        a.0.iter().copied().filter(|e| keep(*e as f64, x)).collect(),
                    ))
                },
            )
            .register_fn(
                "filter",
                |a: &mut $ty, op: ImmutableString, x: FLOAT| -> RhaiResult<$ty> {
                    let keep = comparison(&op)?;
                    Ok($ty::new(
                        a.0.iter().copied().filter(|e| keep(*e as f64, x)).collect(),
                    ))
                },
            );
    };
}

/// Registers construction and reshaping.
pub fn register(engine: &mut Engine) {
    reshaping!(engine, F64Array, f64);
    reshaping!(engine, I64Array, i64);
    let one = Dynamic::from(1 as INT);
    let zero = Dynamic::from(0 as INT);
    engine
        .register_fn("zeros", |n: INT| -> RhaiResult<F64Array> {
            Ok(F64Array::new(vec![0.0; length("zeros", n)?]))
        })
        .register_fn("ones", |n: INT| -> RhaiResult<F64Array> {
            Ok(F64Array::new(vec![1.0; length("ones", n)?]))
        })
        .register_fn(
            "linspace",
            |start: Dynamic, stop: Dynamic, n: INT| -> RhaiResult<F64Array> {
                let (a, b) = (
                    number("linspace: start", &start)?,
                    number("linspace: stop", &stop)?,
                );
                Ok(F64Array::new(linspace(a, b, length("linspace", n)?)))
            },
        )
        .register_fn("arange", {
            let (zero, one) = (zero.clone(), one.clone());
            move |stop: Dynamic| arange(&zero, &stop, &one)
        })
        .register_fn("arange", move |start: Dynamic, stop: Dynamic| {
            arange(&start, &stop, &one)
        })
        .register_fn("arange", |start: Dynamic, stop: Dynamic, step: Dynamic| {
            arange(&start, &stop, &step)
        })
        .register_fn("random", |n: INT, seed: INT| -> RhaiResult<F64Array> {
            Ok(F64Array::new(random(length("random", n)?, seed as u64)))
        })
        .register_fn("normal", |n: INT, seed: INT| -> RhaiResult<F64Array> {
            Ok(F64Array::new(normal(length("normal", n)?, seed as u64)))
        })
        .register_fn(
            "normal",
            |n: INT, mean: Dynamic, sd: Dynamic, seed: INT| -> RhaiResult<F64Array> {
                let (m, s) = (number("normal: mean", &mean)?, number("normal: sd", &sd)?);
                let mut v = normal(length("normal", n)?, seed as u64);
                v.iter_mut().for_each(|x| *x = m + s * *x);
                Ok(F64Array::new(v))
            },
        )
        .register_fn("sort", |a: F64Array| -> RhaiResult<F64Array> {
            if let Some(k) = a.0.iter().position(|x| x.is_nan()) {
                return Err(runtime(format!(
                    "cannot sort an array holding NaN (at index {k}); remove NaN with a.drop_nan() first"
                )));
            }
            let mut v = a.into_vec();
            v.sort_unstable_by(f64::total_cmp);
            Ok(F64Array::new(v))
        })
        .register_fn("sort", |a: I64Array| {
            let mut v = a.into_vec();
            v.sort_unstable();
            I64Array::new(v)
        })
        .register_fn("drop_nan", |a: &mut F64Array| {
            if a.0.iter().any(|x| x.is_nan()) {
                F64Array::new(a.0.iter().copied().filter(|x| !x.is_nan()).collect())
            } else {
                F64Array(Rc::clone(&a.0))
            }
        });
}
