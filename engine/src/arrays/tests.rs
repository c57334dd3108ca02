//! Every toolkit operation against a reference computed in Rust, with the
//! edge cases: empty arrays, length 1, NaN and infinities, i64 overflow.

use super::*;
use crate::namespace::{Namespace, ScriptError};

fn engine() -> Engine {
    let mut e = Engine::new();
    register(&mut e);
    e
}

fn f(code: &str) -> Vec<f64> {
    engine()
        .eval::<F64Array>(code)
        .unwrap_or_else(|e| panic!("{code}: {e}"))
        .into_vec()
}

fn i(code: &str) -> Vec<i64> {
    engine()
        .eval::<I64Array>(code)
        .unwrap_or_else(|e| panic!("{code}: {e}"))
        .into_vec()
}

fn x(code: &str) -> f64 {
    engine()
        .eval::<FLOAT>(code)
        .unwrap_or_else(|e| panic!("{code}: {e}"))
}

fn n(code: &str) -> i64 {
    engine()
        .eval::<INT>(code)
        .unwrap_or_else(|e| panic!("{code}: {e}"))
}

/// The error a namespace reports for `code`, which must fail.
fn err(code: &str) -> ScriptError {
    let mut ns = Namespace::new(engine());
    match ns.execute(code) {
        Ok(v) => panic!("{code} gave {v:?}, expected an error"),
        Err(e) => e,
    }
}

/// Same values, NaN equal to NaN.
fn same(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{got:?} vs {want:?}"
        );
    }
}

const A: [f64; 5] = [1.5, -2.0, 0.0, 4.25, 1e300];
const B: [f64; 5] = [0.5, 3.0, -0.0, 2.0, 1e300];
const LET: &str =
    "let a = f64_array([1.5, -2.0, 0.0, 4.25, 1e300]); let b = f64_array([0.5, 3.0, -0.0, 2.0, 1e300]);";

#[test]
fn float_arithmetic_with_arrays_and_scalars_on_either_side() {
    type Op = fn(f64, f64) -> f64;
    let ops: [(&str, Op); 4] = [
        ("+", |p, q| p + q),
        ("-", |p, q| p - q),
        ("*", |p, q| p * q),
        ("/", |p, q| p / q),
    ];
    for (sym, op) in ops {
        let want: Vec<f64> = A.iter().zip(B).map(|(p, q)| op(*p, q)).collect();
        same(&f(&format!("{LET} a {sym} b")), &want);
        let want: Vec<f64> = A.iter().map(|p| op(*p, 2.5)).collect();
        same(&f(&format!("{LET} a {sym} 2.5")), &want);
        let want: Vec<f64> = A.iter().map(|p| op(2.5, *p)).collect();
        same(&f(&format!("{LET} 2.5 {sym} a")), &want);
        let want: Vec<f64> = A.iter().map(|p| op(*p, 3.0)).collect();
        same(&f(&format!("{LET} a {sym} 3")), &want);
        let want: Vec<f64> = A.iter().map(|p| op(3.0, *p)).collect();
        same(&f(&format!("{LET} 3 {sym} a")), &want);
        // i64 arrays and f64 mix into f64
        let want: Vec<f64> = A
            .iter()
            .zip([1, 2, 3, 4, 5])
            .map(|(p, q)| op(*p, q as f64))
            .collect();
        same(
            &f(&format!("{LET} a {sym} i64_array([1, 2, 3, 4, 5])")),
            &want,
        );
        let want: Vec<f64> = A
            .iter()
            .zip([1, 2, 3, 4, 5])
            .map(|(p, q)| op(q as f64, *p))
            .collect();
        same(
            &f(&format!("{LET} i64_array([1, 2, 3, 4, 5]) {sym} a")),
            &want,
        );
        same(
            &f(&format!("i64_array([1, 2]) {sym} 0.5")),
            &[op(1.0, 0.5), op(2.0, 0.5)],
        );
        same(
            &f(&format!("0.5 {sym} i64_array([1, 2])")),
            &[op(0.5, 1.0), op(0.5, 2.0)],
        );
        // empty and length 1
        same(&f(&format!("f64_array([]) {sym} f64_array([])")), &[]);
        same(&f(&format!("f64_array([]) {sym} 1.0")), &[]);
        same(&f(&format!("f64_array([7.0]) {sym} 2.0")), &[op(7.0, 2.0)]);
    }
    // IEEE: overflow to inf, 0/0 NaN, NaN propagates
    same(
        &f(&format!("{LET} a * b")),
        &A.iter().zip(B).map(|(p, q)| p * q).collect::<Vec<_>>(),
    );
    assert!(f("f64_array([1e308]) * 10.0")[0].is_infinite());
    assert!(f("f64_array([0.0]) / 0.0")[0].is_nan());
    same(
        &f("f64_array([1.0, 2.0]) / 0.0"),
        &[f64::INFINITY, f64::INFINITY],
    );
    let nan = f("let z = f64_array([0.0]) / 0.0; z + 1.0");
    assert!(nan[0].is_nan());
    same(&f("-f64_array([1.0, -2.0])"), &[-1.0, 2.0]);
}

#[test]
fn chained_temporaries_reuse_their_buffer_and_leave_variables_alone() {
    let r: Vec<f64> = f("let a = f64_array([1.0, 2.0]); let b = a * 2.0 + 1.0; a + b");
    same(&r, &[4.0, 7.0]);
    same(
        &f("let a = f64_array([1.0, 2.0]); let s = a.sqrt(); a"),
        &[1.0, 2.0],
    );
    same(
        &f("let a = f64_array([1.0, 2.0]); a += 1.0; a"),
        &[2.0, 3.0],
    );
    assert_eq!(
        i("let a = i64_array([1, 2]); let b = a; a = a * 3; b"),
        vec![1, 2]
    );
}

#[test]
fn integer_arithmetic_is_checked() {
    let a = [7i64, -3, 0, 12];
    let b = [2i64, 5, -4, -5];
    type Op = fn(i64, i64) -> i64;
    let ops: [(&str, Op); 4] = [
        ("+", |p, q| p + q),
        ("-", |p, q| p - q),
        ("*", |p, q| p * q),
        ("/", |p, q| p / q),
    ];
    for (sym, op) in ops {
        let want: Vec<i64> = a.iter().zip(b).map(|(p, q)| op(*p, q)).collect();
        assert_eq!(
            i(&format!(
                "i64_array([7, -3, 0, 12]) {sym} i64_array([2, 5, -4, -5])"
            )),
            want
        );
        let want: Vec<i64> = a.iter().map(|p| op(*p, 3)).collect();
        assert_eq!(i(&format!("i64_array([7, -3, 0, 12]) {sym} 3")), want);
        let want: Vec<i64> = b.iter().map(|q| op(60, *q)).collect();
        assert_eq!(i(&format!("60 {sym} i64_array([2, 5, -4, -5])")), want);
        assert_eq!(i(&format!("i64_array([]) {sym} 3")), Vec::<i64>::new());
    }
    let e = err("let a = i64_array([1, 9223372036854775807]);\nlet b = a + 1;");
    assert!(e.message.contains("overflow in add at element 1"), "{e}");
    assert_eq!((e.line, e.column), (Some(2), Some(11)), "{e}");
    let e = err("i64_array([4, 2]) / i64_array([2, 0])");
    assert!(e.message.contains("division by zero at element 1"), "{e}");
    assert!(e.line.is_some() && e.column.is_some(), "{e}");
    let e = err("i64_array([-9223372036854775807 - 1]) / -1");
    assert!(e.message.contains("overflow"), "{e}");
    let e = err("3 * i64_array([4611686018427387904])");
    assert!(
        e.message.contains("overflow in multiply at element 0"),
        "{e}"
    );
    assert!(err("-i64_array([-9223372036854775807 - 1])")
        .message
        .contains("overflow"));
    assert!(err("abs(i64_array([-9223372036854775807 - 1]))")
        .message
        .contains("overflow"));
    assert_eq!(i("-i64_array([1, -2])"), vec![-1, 2]);
    assert_eq!(i("abs(i64_array([1, -2]))"), vec![1, 2]);
}

#[test]
fn length_mismatches_are_errors_with_a_position() {
    for code in [
        "f64_array(2, 0.0) + f64_array(3, 0.0)",
        "f64_array(2, 0.0) / i64_array(3, 0)",
        "i64_array(2, 0) - i64_array(3, 0)",
        "f64_array(2, 0.0).dot(f64_array(3, 0.0))",
        "i64_array(2, 0).dot(i64_array(1, 0))",
        "min(f64_array(2, 0.0), f64_array(1, 0.0))",
    ] {
        let e = err(&format!("let q = 1;\n{code}"));
        assert!(e.message.contains("different lengths"), "{code}: {e}");
        assert_eq!(e.line, Some(2), "{code}: {e}");
        assert!(e.column.is_some(), "{code}: {e}");
    }
}

#[test]
fn math_functions() {
    let v = [4.0, -1.0, 0.0, f64::INFINITY, f64::NAN, 2.25];
    let code = "let v = f64_array([4.0, -1.0, 0.0, 1.0 / 0.0, 0.0 / 0.0, 2.25]);";
    type Op = fn(f64) -> f64;
    let ops: [(&str, Op); 4] = [
        ("abs", f64::abs),
        ("sqrt", f64::sqrt),
        ("exp", f64::exp),
        ("ln", f64::ln),
    ];
    for (name, op) in ops {
        let want: Vec<f64> = v.iter().map(|p| op(*p)).collect();
        same(&f(&format!("{code} v.{name}()")), &want);
        same(&f(&format!("{code} {name}(v)")), &want);
        let want: Vec<f64> = [1i64, 4, 9].iter().map(|p| op(*p as f64)).collect();
        if name != "abs" {
            same(&f(&format!("i64_array([1, 4, 9]).{name}()")), &want);
        }
        same(&f(&format!("f64_array([]).{name}()")), &[]);
    }
    same(
        &f(&format!("{code} v.powf(2.0)")),
        &v.iter().map(|p| p.powf(2.0)).collect::<Vec<_>>(),
    );
    same(
        &f(&format!("{code} v ** 0.5")),
        &v.iter().map(|p| p.powf(0.5)).collect::<Vec<_>>(),
    );
    same(&f("2.0 ** f64_array([1.0, 3.0])"), &[2.0, 8.0]);
    same(&f("i64_array([2, 3]).powf(2)"), &[4.0, 9.0]);
    // elementwise min/max; NaN propagates
    same(
        &f(&format!("{code} min(v, 1.0)")),
        &v.iter()
            .map(|p| if p.is_nan() { *p } else { p.min(1.0) })
            .collect::<Vec<_>>(),
    );
    same(
        &f(&format!("{code} max(v, v * -1.0)")),
        &v.iter()
            .map(|p| if p.is_nan() { *p } else { p.max(-p) })
            .collect::<Vec<_>>(),
    );
    same(
        &f("max(f64_array([1.0, 5.0]), f64_array([3.0, 2.0]))"),
        &[3.0, 5.0],
    );
    assert_eq!(i("min(i64_array([1, 5]), i64_array([3, 2]))"), vec![1, 2]);
    assert_eq!(i("max(i64_array([1, 5]), 3)"), vec![3, 5]);
}

#[test]
fn reductions() {
    let v: Vec<f64> = (0..1001)
        .map(|k| ((k * 37) % 101) as f64 * 0.37 - 11.0)
        .collect();
    let code = format!("let v = f64_array({v:?});");
    assert_eq!(
        x(&format!("{code} v.sum()")).to_bits(),
        v.iter().sum::<f64>().to_bits()
    );
    assert_eq!(
        x(&format!("{code} v.mean()")),
        v.iter().sum::<f64>() / v.len() as f64
    );
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(*p), h.max(*p)));
    assert_eq!(x(&format!("{code} v.min()")), lo);
    assert_eq!(x(&format!("{code} v.max()")), hi);
    assert_eq!(
        n(&format!("{code} v.argmin()")) as usize,
        v.iter().position(|p| *p == lo).unwrap()
    );
    assert_eq!(
        n(&format!("{code} v.argmax()")) as usize,
        v.iter().position(|p| *p == hi).unwrap()
    );
    assert_eq!(
        x(&format!("{code} v.dot(v)")),
        v.iter().map(|p| p * p).sum::<f64>()
    );
    assert_eq!(
        x(&format!("{code} v.norm()")),
        v.iter().map(|p| p * p).sum::<f64>().sqrt()
    );
    let mut s = 0.0;
    let cum: Vec<f64> = v
        .iter()
        .map(|p| {
            s += p;
            s
        })
        .collect();
    same(&f(&format!("{code} v.cumsum()")), &cum);
    // empty: sums are 0, the rest undefined
    assert_eq!(x("f64_array([]).sum()"), 0.0);
    assert_eq!(x("f64_array([]).dot(f64_array([]))"), 0.0);
    assert_eq!(x("f64_array([]).norm()"), 0.0);
    same(&f("f64_array([]).cumsum()"), &[]);
    for op in ["mean", "min", "max", "argmin", "argmax"] {
        let e = err(&format!("f64_array([]).{op}()"));
        assert!(e.message.contains("empty array"), "{op}: {e}");
        let e = err(&format!("i64_array([]).{op}()"));
        assert!(e.message.contains("empty array"), "{op}: {e}");
    }
    // length 1
    assert_eq!(x("f64_array([2.5]).min()"), 2.5);
    assert_eq!(n("f64_array([2.5]).argmax()"), 0);
    assert_eq!(x("f64_array([-3.0]).norm()"), 3.0);
    // NaN: propagates through sums, an error where order matters
    assert!(x("(f64_array([1.0, 0.0]) / 0.0).sum()").is_nan());
    for op in ["min", "max", "argmin", "argmax"] {
        let e = err(&format!(
            "let z = f64_array([1.0, 0.0, 2.0]) / f64_array([1.0, 0.0, 1.0]);\nz.{op}()"
        ));
        assert!(e.message.contains("NaN (at index 1)"), "{op}: {e}");
        assert_eq!(e.line, Some(2), "{e}");
    }
    assert_eq!(x("f64_array([1.0, -1.0]).max()"), 1.0);
    assert_eq!(x("(f64_array([1.0, -1.0]) / 0.0).min()"), f64::NEG_INFINITY);
    // first of equal extremes
    assert_eq!(n("f64_array([3.0, 1.0, 1.0]).argmin()"), 1);
    // i64
    let w: Vec<i64> = (0..500).map(|k| (k * 7919) % 1000 - 500).collect();
    let code = format!("let w = i64_array({w:?});");
    assert_eq!(n(&format!("{code} w.sum()")), w.iter().sum::<i64>());
    assert_eq!(
        x(&format!("{code} w.mean()")),
        w.iter().sum::<i64>() as f64 / 500.0
    );
    assert_eq!(n(&format!("{code} w.min()")), *w.iter().min().unwrap());
    assert_eq!(n(&format!("{code} w.max()")), *w.iter().max().unwrap());
    assert_eq!(
        n(&format!("{code} w.argmin()")) as usize,
        w.iter().position(|p| p == w.iter().min().unwrap()).unwrap()
    );
    assert_eq!(
        n(&format!("{code} w.argmax()")) as usize,
        w.iter().position(|p| p == w.iter().max().unwrap()).unwrap()
    );
    assert_eq!(
        n(&format!("{code} w.dot(w)")),
        w.iter().map(|p| p * p).sum::<i64>()
    );
    assert_eq!(
        x(&format!("{code} w.norm()")),
        (w.iter().map(|p| (p * p) as f64).sum::<f64>()).sqrt()
    );
    let mut t = 0;
    assert_eq!(
        i(&format!("{code} w.cumsum()")),
        w.iter()
            .map(|p| {
                t += p;
                t
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(n("i64_array([]).sum()"), 0);
    assert_eq!(
        x("i64_array([9223372036854775807, 9223372036854775807]).mean()"),
        i64::MAX as f64
    );
    for code in [
        "i64_array([9223372036854775807, 1]).sum()",
        "i64_array([9223372036854775807, 1]).cumsum()",
        "i64_array([4294967296]).dot(i64_array([4294967296]))",
    ] {
        let e = err(code);
        assert!(e.message.contains("integer overflow"), "{code}: {e}");
    }
}

#[test]
fn construction() {
    same(&f("zeros(3)"), &[0.0; 3]);
    same(&f("ones(2)"), &[1.0; 2]);
    same(&f("zeros(0)"), &[]);
    assert!(err("zeros(-1)").message.contains("length"));
    same(&f("linspace(0.0, 1.0, 5)"), &[0.0, 0.25, 0.5, 0.75, 1.0]);
    same(&f("linspace(2, 3, 1)"), &[2.0]);
    same(&f("linspace(2, 3, 0)"), &[]);
    let l = f("linspace(0.1, 0.7, 7)");
    assert_eq!(l[6], 0.7);
    assert_eq!(i("arange(4)"), vec![0, 1, 2, 3]);
    assert_eq!(i("arange(2, 5)"), vec![2, 3, 4]);
    assert_eq!(i("arange(5, 2, -2)"), vec![5, 3]);
    assert_eq!(i("arange(0)"), Vec::<i64>::new());
    assert_eq!(i("arange(3, 1)"), Vec::<i64>::new());
    same(&f("arange(0.0, 1.0, 0.25)"), &[0.0, 0.25, 0.5, 0.75]);
    same(&f("arange(1, 2.0, 0.5)"), &[1.0, 1.5]);
    assert!(err("arange(0, 5, 0)").message.contains("not be 0"));
    assert!(err("arange(0.0, 5.0, 0.0)").message.contains("not 0"));
    // seeded: the same seed, the same samples; different seeds differ
    let r = f("random(1000, 7)");
    assert_eq!(r, f("random(1000, 7)"));
    assert_ne!(r, f("random(1000, 8)"));
    assert!(r.iter().all(|p| (0.0..1.0).contains(p)));
    assert_eq!(r, build::random(1000, 7));
    let z = f("normal(100000, 3)");
    let mean = z.iter().sum::<f64>() / z.len() as f64;
    let var = z.iter().map(|p| (p - mean) * (p - mean)).sum::<f64>() / z.len() as f64;
    assert!(
        mean.abs() < 0.02 && (var - 1.0).abs() < 0.02,
        "{mean} {var}"
    );
    assert_eq!(f("normal(5, 3)").len(), 5);
    same(&f("normal(3, 10.0, 0.0, 1)"), &[10.0; 3]);
    same(&f("random(0, 1)"), &[]);
}

#[test]
fn slicing_concat_sort_reverse_filter() {
    let code = "let a = f64_array([5.0, 1.0, 4.0, 2.0]);";
    same(&f(&format!("{code} a[1..3]")), &[1.0, 4.0]);
    same(&f(&format!("{code} a[1..=3]")), &[1.0, 4.0, 2.0]);
    same(&f(&format!("{code} a[0..0]")), &[]);
    same(&f(&format!("{code} a[4..4]")), &[]);
    same(&f(&format!("{code} a[-3..-1]")), &[1.0, 4.0]);
    same(&f(&format!("{code} a.slice(-2, 4)")), &[4.0, 2.0]);
    assert_eq!(i("i64_array([1, 2, 3])[1..3]"), vec![2, 3]);
    let e = err(&format!("{code}\na[2..9]"));
    assert!(
        e.message
            .contains("slice 2..9 is out of bounds for an array of length 4"),
        "{e}"
    );
    assert_eq!(e.line, Some(2));
    assert!(err(&format!("{code} a[3..1]"))
        .message
        .contains("out of bounds"));
    same(
        &f(&format!("{code} concat(a, f64_array([9.0]))")),
        &[5.0, 1.0, 4.0, 2.0, 9.0],
    );
    same(
        &f(&format!("{code} a.concat(f64_array([]))")),
        &[5.0, 1.0, 4.0, 2.0],
    );
    assert_eq!(i("concat(i64_array([]), i64_array([1]))"), vec![1]);
    same(&f(&format!("{code} a.sort()")), &[1.0, 2.0, 4.0, 5.0]);
    same(
        &f(&format!("{code} let s = a.sort(); a")),
        &[5.0, 1.0, 4.0, 2.0],
    );
    same(
        &f("f64_array([1.0, -1.0 / 0.0, 1.0 / 0.0, -0.5]).sort()"),
        &[f64::NEG_INFINITY, -0.5, 1.0, f64::INFINITY],
    );
    assert!(err("(f64_array([1.0, 0.0]) / 0.0).sort()")
        .message
        .contains("NaN (at index 1)"));
    same(
        &f("(f64_array([1.0, 0.0, 2.0]) / f64_array([1.0, 0.0, 1.0])).drop_nan()"),
        &[1.0, 2.0],
    );
    assert_eq!(i("i64_array([3, -1, 2]).sort()"), vec![-1, 2, 3]);
    same(&f(&format!("{code} a.reverse()")), &[2.0, 4.0, 1.0, 5.0]);
    assert_eq!(i("i64_array([]).reverse()"), Vec::<i64>::new());
    let v = [5.0, 1.0, 4.0, 2.0];
    type Cmp = fn(&f64, &f64) -> bool;
    let ops: [(&str, Cmp); 6] = [
        ("<", f64::lt),
        ("<=", f64::le),
        (">", f64::gt),
        (">=", f64::ge),
        ("==", f64::eq),
        ("!=", f64::ne),
    ];
    for (op, cmp) in ops {
        let want: Vec<f64> = v.iter().copied().filter(|p| cmp(p, &4.0)).collect();
        same(&f(&format!("{code} a.filter(\"{op}\", 4.0)")), &want);
        same(&f(&format!("{code} a.filter(\"{op}\", 4)")), &want);
        let want: Vec<i64> = [5i64, 1, 4, 2]
            .iter()
            .copied()
            .filter(|p| cmp(&(*p as f64), &4.0))
            .collect();
        assert_eq!(
            i(&format!("i64_array([5, 1, 4, 2]).filter(\"{op}\", 4)")),
            want
        );
    }
    assert!(err(&format!("{code} a.filter(\"=>\", 1.0)"))
        .message
        .contains("unknown comparison"));
}

#[test]
fn conversions() {
    assert_eq!(i("f64_array([1.9, -1.9, 0.0]).to_i64()"), vec![1, -1, 0]);
    assert_eq!(i("i64_array(f64_array([2.5]))"), vec![2]);
    same(&f("i64_array([1, -2]).to_f64()"), &[1.0, -2.0]);
    same(&f("f64_array(i64_array([3]))"), &[3.0]);
    for bad in ["0.0 / 0.0", "1.0 / 0.0", "1e19"] {
        let e = err(&format!("f64_array([1.0, {bad}]).to_i64()"));
        assert!(e.message.contains("element 1"), "{bad}: {e}");
    }
    assert_eq!(n("f64_array([1.5, 2.5]).to_array().len()"), 2);
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

#[test]
fn plain_arrays_of_numbers_reduce_like_numeric_arrays() {
    assert_eq!(n("[3, -1, 4].sum()"), 6);
    assert_eq!(n("[3, -1, 4].min()"), -1);
    assert_eq!(n("[3, -1, 4].max()"), 4);
    assert_eq!(n("[3, -1, 4].argmin()"), 1);
    assert_eq!(n("[3, 9, 9].argmax()"), 1);
    assert_eq!(n("[1, 2, 3].dot([4, 5, 6])"), 32);
    assert_eq!(n("let d = []; for i in 0..16 { d.push(i) } d.sum()"), 120);
    assert_eq!(x("[1, 2].mean()"), 1.5);
    assert_eq!(x("[3, 4].norm()"), 5.0);
    // Any float makes them floats, summed left to right.
    assert_eq!(x("[1, 0.5, 2].sum()"), 3.5);
    assert_eq!(x("[1, 0.5].max()"), 1.0);
    assert_eq!(x("[1, 2].dot([0.5, 0.25])"), 1.0);
    assert_eq!(n("[].sum()"), 0);
    // The rules of numeric arrays hold.
    let e = err("[1, \"two\", 3].sum()");
    assert!(
        e.message
            .contains("sum needs numbers, but element 1 is a string"),
        "{}",
        e.message
    );
    let e = err("[].mean()");
    assert!(
        e.message.contains("mean of an empty array"),
        "{}",
        e.message
    );
    let e = err("[1, 2].dot([1])");
    assert!(e.message.contains("dot"), "{}", e.message);
    let e = err("[9223372036854775807, 1].sum()");
    assert!(
        e.message.contains("integer overflow in sum"),
        "{}",
        e.message
    );
    let e = err("[1.0, 0.0 / 0.0].min()");
    assert!(e.message.contains("NaN"), "{}", e.message);
}
