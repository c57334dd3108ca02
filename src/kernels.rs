//! The π estimate as a native kernel, and the same estimate as a Rhai
//! loop: what `zpar engine --bench-kernels` serves to `zpar bench compute`,
//! and what `examples/native_kernels.rs` registers on its engines.

/// How many of `n` seeded points in the unit square fall in the quarter
/// circle: a Monte Carlo estimate of π is `4 * hits / n`.
///
/// ```
/// let hits = zpar::kernels::pi_hits(1, 10_000);
/// assert!((4.0 * hits as f64 / 10_000.0 - std::f64::consts::PI).abs() < 0.1);
/// ```
pub fn pi_hits(seed: i64, n: i64) -> i64 {
    let mut rng = fastrand::Rng::with_seed(seed as u64);
    let mut hits = 0;
    for _ in 0..n {
        let (x, y) = (rng.f64(), rng.f64());
        if x * x + y * y <= 1.0 {
            hits += 1;
        }
    }
    hits
}

/// The same estimate as a Rhai function `rhai_pi_hits(seed, n)`, with a
/// generator scripts can run (an LCG modulo 2^31: Rhai's i64 arithmetic is
/// checked, so no wrapping 64-bit generator). Run it on engines to define
/// the function there.
pub const RHAI_PI_HITS: &str = r#"
fn rhai_pi_hits(seed, n) {
    let s = seed % 2147483648;
    let hits = 0;
    for i in 0..n {
        s = (s * 1103515245 + 12345) % 2147483648;
        let x = s.to_float() / 2147483648.0;
        s = (s * 1103515245 + 12345) % 2147483648;
        let y = s.to_float() / 2147483648.0;
        if x * x + y * y <= 1.0 { hits += 1; }
    }
    hits
}
"#;

/// Registers the natives `zpar engine --bench-kernels` serves
/// ([`pi_hits`]).
pub fn bench_kernels(engine: &mut zpar_engine::rhai::Engine) {
    engine.register_fn("pi_hits", pi_hits);
}
