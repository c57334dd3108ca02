//! The seed workflow (IPython's `bintree_script.py`) in Rust: set up a
//! binary-tree interconnect between engines, then allreduce and reduce along
//! it, without data passing through the hub or this client. As the seed runs
//! `bintree.py` on the engines, this runs `examples/bintree.rhai` there with
//! `view.run` (the `connect` helper and the reductions `add` and `mul`).
//!
//! ```text
//! cargo run --release --example bintree_script              # own cluster of 4
//! cargo run --release --example bintree_script -- --engines 8
//! cargo run --release --example bintree_script -- --profile default   # a running cluster
//! ```

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use zpar::{bintree, print_bintree, subtree, Client, LocalCluster, Reference, Value};

struct Options {
    engines: usize,
    profile: Option<String>,
    profile_dir: Option<String>,
}

fn options() -> Result<Options> {
    let mut o = Options {
        engines: 4,
        profile: None,
        profile_dir: None,
    };
    let mut args = std::env::args().skip(1).peekable();
    // `cargo run --example bintree_script -- --engines 8` passes no `--`;
    // the same words given to the built program do.
    args.next_if_eq("--");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--engines" | "-n" => o.engines = args.next().context("--engines N")?.parse()?,
            "--profile" => o.profile = Some(args.next().context("--profile NAME")?),
            "--profile-dir" => o.profile_dir = Some(args.next().context("--profile-dir DIR")?),
            "-h" | "--help" => {
                println!(
                    "usage: bintree_script [--engines N] [--profile NAME | --profile-dir DIR]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if o.engines == 0 {
        bail!("--engines must be at least 1");
    }
    Ok(o)
}

fn show(values: &[Value]) -> String {
    Value::Array(values.to_vec()).to_string()
}

fn main() -> Result<()> {
    // Without an installed `zpar`, the local cluster's hub and engines are
    // this very program in another role.
    zpar::cli::run_as_child_if_asked();
    let opts = options()?;
    // Connect to a running cluster when asked to; otherwise start our own.
    let (_cluster, rc) = match (&opts.profile, &opts.profile_dir) {
        (None, None) => {
            let cluster = LocalCluster::start(opts.engines).context("starting a local cluster")?;
            let client = cluster.client()?;
            (Some(cluster), client)
        }
        (p, d) => {
            let profile =
                zpar::Profile::resolve(p.as_deref(), d.as_deref().map(std::path::Path::new));
            let client = Client::from_file(&profile.client_file())?;
            client.wait_for_engines(1, Duration::from_secs(30))?;
            (None, client)
        }
    };

    // connect client and create views
    let ids = rc.ids();
    let root_id = ids[0];
    let mut root = rc.view(root_id);
    root.block = true;
    let mut view = rc.all();
    view.block = true;

    // generate binary tree of parents
    let btree = bintree(&ids);
    println!("setting up binary tree interconnect:");
    print_bintree(&btree);

    // run bintree.rhai on every engine: the `connect` helper and the
    // reduction functions `add` and `mul`
    // (found from any working directory; the seed used a relative path)
    view.run(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bintree.rhai"))?
        .get()?;

    let id_values: Vec<Value> = ids.iter().map(|&i| Value::Int(i.into())).collect();
    view.scatter("id", Value::Array(id_values), true)?.get()?;
    view.set("root_id", Value::Int(root_id.into()))?;

    // create the Communicator objects on the engines
    view.execute("let com = BinaryTreeCommunicator(id, id == root_id);")?
        .get()?;
    let pub_url = root.apply_sync("|| com.pub_url", vec![])?.remove(0);

    // gather the connection information into a dict
    let ar = view.apply_async("|| com.info", vec![])?;
    let peers: BTreeMap<String, Value> = ar
        .get_dict()?
        .into_iter()
        .map(|(id, info)| (id.to_string(), info))
        .collect();
    // this is a dict, keyed by engine ID, of the connection info for the EngineCommunicators

    // connect the engines to each other (`connect` is from bintree.rhai):
    let tree: BTreeMap<String, Value> = btree
        .iter()
        .map(|(c, p)| {
            (
                c.to_string(),
                p.map_or(Value::Unit, |p| Value::Int(p.into())),
            )
        })
        .collect();
    view.apply_sync(
        "connect",
        vec![
            Reference("com"),
            Value::Map(peers),
            Value::Map(tree),
            pub_url,
            Value::Int(root_id.into()),
        ],
    )?;

    // scatter some data
    let data: Vec<Value> = (0..1000).map(Value::Int).collect();
    view.scatter("data", Value::Array(data), false)?;

    // perform cumulative sum via allreduce
    view.execute("let data_sum = com.allreduce(add, data, false);")?
        .get()?;
    let data_sum = view.get("data_sum")?;
    println!("allreduce sum of data on all engines: {}", show(&data_sum));

    // perform cumulative sum *without* final broadcast
    // when not broadcasting with allreduce, the final result resides on the root node:
    view.execute("let ids_sum = com.reduce(add, id, true);")?
        .get()?;
    let root_sum = root.get("ids_sum")?;
    println!("reduce sum of engine ids (not broadcast): {}", root_sum[0]);
    let partials = view.get("ids_sum")?;
    println!("partial result on each engine: {}", show(&partials));

    // The seed only prints; we also check, so this command fails loudly.
    let expect_total: i64 = ids.iter().map(|&i| i64::from(i)).sum();
    if data_sum.iter().any(|v| *v != Value::Int(499_500)) {
        bail!("allreduce gave {data_sum:?}, expected 499500 everywhere");
    }
    if root_sum[0] != Value::Int(expect_total) {
        bail!(
            "reduce gave {} at the root, expected {expect_total}",
            root_sum[0]
        );
    }
    for (id, got) in ids.iter().zip(&partials) {
        let want: i64 = subtree(*id, &btree).iter().map(|&i| i64::from(i)).sum();
        if *got != Value::Int(want) {
            bail!("engine {id} holds {got}, expected its subtree's sum {want}");
        }
    }
    Ok(())
}
