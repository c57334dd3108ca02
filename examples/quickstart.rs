//! The README's Rust example, runnable on its own: it starts a local
//! cluster of 2 engines (use `Client::connect()` for a running one).
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use zpar::{LocalCluster, Reference, Value};

fn main() -> zpar::Result<()> {
    zpar::cli::run_as_child_if_asked(); // lets this program serve as hub and engines
    let cluster = LocalCluster::start(2)?;
    let client = cluster.client()?;
    let view = client.all(); // a DirectView
    view.scatter(
        "xs",
        Value::from((0..1000).map(f64::from).collect::<Vec<_>>()),
        false,
    )?
    .get()?;
    view.execute("let part = xs.sum();")?.get()?; // Rhai, in each engine's namespace
    let parts = view.pull("part")?.get()?; // one value per engine
    let tripled = view.apply_sync("|x, k| x * k", vec![Reference("part"), Value::Int(3)])?;
    let squares =
        client
            .load_balanced()
            .map_sync("|x| x * x", (0..10).map(Value::Int).collect(), 2)?;
    let show = |v: Vec<Value>| Value::Array(v).to_string();
    println!(
        "parts {}\ntripled {}\nsquares {}",
        show(parts),
        show(tripled),
        show(squares)
    );
    Ok(())
}
