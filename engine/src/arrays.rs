//! Native numeric arrays for scripts: `F64Array` and `I64Array`.
//!
//! Scatters, pushes and collectives move big numeric data as raw buffers;
//! these types keep it native on the engine too (no per-element script
//! values). They are reference-counted, so passing one to a function or
//! storing it in a second variable does not copy it; a write copies only if
//! the data is shared.
//!
//! In scripts: `f64_array(n, fill)`, `f64_array([1.0, 2.0])`, `a + b`,
//! `a * 2.0`, `a[i]`, `a[i] = x`, `a.len`, `a.sum()`, `a.to_array()`, and the
//! same for `i64_array`.

use rhai::{Array, Dynamic, Engine, EvalAltResult, Position, FLOAT, INT};
use std::rc::Rc;

/// A shared, copy-on-write array of f64.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct F64Array(pub Rc<Vec<f64>>);

/// A shared, copy-on-write array of i64.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct I64Array(pub Rc<Vec<i64>>);

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

fn runtime(msg: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(msg.into(), Position::NONE).into()
}

fn same_len(op: &str, a: usize, b: usize) -> RhaiResult<()> {
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

            fn zip(
                &self,
                other: &Self,
                op: &str,
                f: impl Fn($elem, $elem) -> $elem,
            ) -> RhaiResult<Self> {
                same_len(op, self.0.len(), other.0.len())?;
                Ok($ty::new(
                    self.0
                        .iter()
                        .zip(other.0.iter())
                        .map(|(a, b)| f(*a, *b))
                        .collect(),
                ))
            }

            fn map(&self, f: impl Fn($elem) -> $elem) -> Self {
                $ty::new(self.0.iter().map(|a| f(*a)).collect())
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
                    .register_fn("+", |a: &mut $ty, b: $ty| a.zip(&b, "add", |x, y| x + y))
                    .register_fn("-", |a: &mut $ty, b: $ty| {
                        a.zip(&b, "subtract", |x, y| x - y)
                    })
                    .register_fn("*", |a: &mut $ty, b: $ty| {
                        a.zip(&b, "multiply", |x, y| x * y)
                    })
                    .register_fn("+", |a: &mut $ty, b: $script| {
                        let b = b as $elem;
                        a.map(|x| x + b)
                    })
                    .register_fn("-", |a: &mut $ty, b: $script| {
                        let b = b as $elem;
                        a.map(|x| x - b)
                    })
                    .register_fn("*", |a: &mut $ty, b: $script| {
                        let b = b as $elem;
                        a.map(|x| x * b)
                    })
                    .register_fn("==", |a: &mut $ty, b: $ty| *a == b)
                    .register_fn("!=", |a: &mut $ty, b: $ty| *a != b)
                    .register_get("len", |a: &mut $ty| a.0.len() as INT)
                    .register_fn("len", |a: &mut $ty| a.0.len() as INT)
                    .register_fn("sum", |a: &mut $ty| {
                        a.0.iter().copied().sum::<$elem>() as $script
                    })
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

/// Registers both array types and their functions on a script engine.
pub fn register(engine: &mut Engine) {
    F64Array::register(engine);
    I64Array::register(engine);
    engine.register_fn("+", |a: &mut F64Array, b: INT| {
        let b = b as f64;
        a.map(|x| x + b)
    });
    engine.register_fn("*", |a: &mut F64Array, b: INT| {
        let b = b as f64;
        a.map(|x| x * b)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let mut e = Engine::new();
        register(&mut e);
        e
    }

    #[test]
    fn elementwise_and_scalar_ops() {
        let e = engine();
        let r: F64Array = e
            .eval("let a = f64_array([1.0, 2.0]); let b = f64_array(2, 0.5); a + b * 2.0")
            .unwrap();
        assert_eq!(r.as_slice(), &[2.0, 3.0]);
        let s: FLOAT = e.eval("f64_array([1, 2, 3]).sum()").unwrap();
        assert_eq!(s, 6.0);
        let i: INT = e
            .eval("let a = i64_array(3, 1); a[1] = 5; a.sum() + a.len")
            .unwrap();
        assert_eq!(i, 10);
    }

    #[test]
    fn writes_do_not_affect_copies() {
        let e = engine();
        let r: INT = e
            .eval("let a = i64_array([1, 2]); let b = a; b[0] = 9; a[0] * 10 + b[0]")
            .unwrap();
        assert_eq!(r, 19);
    }

    #[test]
    fn mismatches_are_script_errors() {
        let e = engine();
        let err = e
            .eval::<F64Array>("f64_array(2, 0.0) + f64_array(3, 0.0)")
            .unwrap_err();
        assert!(err.to_string().contains("different lengths"), "{err}");
        let err = e.eval::<INT>("i64_array(2, 0)[5]").unwrap_err();
        assert!(err.to_string().contains("out of bounds"), "{err}");
        let err = e.eval::<F64Array>(r#"f64_array([1.0, "x"])"#).unwrap_err();
        assert!(err.to_string().contains("element 1"), "{err}");
    }

    #[test]
    fn iterates() {
        let e = engine();
        let r: INT = e
            .eval("let t = 0; for x in i64_array([1, 2, 3]) { t += x } t")
            .unwrap();
        assert_eq!(r, 6);
    }
}
