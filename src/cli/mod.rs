//! The `zpar` command line: argument parsing and the glue that turns each
//! subcommand into a library call (`zpar_hub::Hub`, `zpar_engine::EngineServer`,
//! `LocalCluster`, the console, the bench).
//!
//! It lives in the library rather than in `main.rs` so that a program can
//! serve as its own hub and engine processes: [`LocalCluster`] runs the
//! `zpar` binary when it can find one, and otherwise re-runs the current
//! program with `ZPAR_CHILD_ROLE` set, which [`run_as_child_if_asked`] (called
//! first thing in `main`) turns into `zpar hub …` or `zpar engine …`. That is
//! how `cargo run --example bintree_script` works on a fresh checkout, where
//! cargo has built the example but not the `zpar` binary. Like a binary, this
//! glue reports errors with `anyhow`.
//!
//! [`LocalCluster`]: crate::LocalCluster

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zpar_client::launch::CONNECTION_INFO_VAR;
use zpar_protocol::backoff::{poll_until, Backoff};

mod args;
mod cluster;
mod kernel;
mod stop;
use args::{CurveArgs, ProfileArgs};
use cluster::{run_cluster, ClusterCmd};
use stop::{install_signal_handlers, STOP};
pub use stop::{wait_for_interrupt, Interrupted};

/// Interactive parallel computing for Rust on ZeroMQ.
#[derive(Parser)]
#[command(
    name = "zpar",
    version,
    about,
    after_help = "Exit codes: 0 success; 1 failure (the message says what and what to do); \
                  2 wrong usage; 130 interrupted (Ctrl-C)."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a hub: binds its channels and writes the connection files.
    Hub(HubArgs),
    /// Run an engine that registers with a hub and executes Rhai code.
    Engine(EngineArgs),
    /// Start, stop or inspect a local cluster (a hub and N engines).
    Cluster {
        #[command(subcommand)]
        action: ClusterCmd,
    },
    /// An interactive console against a hub (%px, %push, %scatter, ...).
    Console(crate::console::ConsoleArgs),
    /// A standalone Rhai kernel for Jupyter (`-f CONNECTION_FILE`, no hub),
    /// or `install` its kernelspec.
    Kernel(kernel::KernelArgs),
    /// Measure zpar against raw ZeroMQ on this machine.
    Bench(crate::bench::BenchArgs),
    /// A live web page of a cluster, served on 127.0.0.1 with a token.
    Dashboard(crate::dashboard::DashboardArgs),
}

#[derive(Args)]
struct HubArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Interface to listen on: an address of this host, or 0.0.0.0 for all.
    #[arg(long, default_value = "127.0.0.1")]
    ip: String,
    /// Address written into the connection files for clients and engines
    /// to connect to (default: --ip; for 0.0.0.0, this host's outward
    /// address).
    #[arg(long)]
    location: Option<String>,
    /// Bind the hub's ports from this one up (to this + 11; + 6, + 8 and
    /// + 9 are left unused) instead of random ports.
    #[arg(long)]
    port_base: Option<u16>,
    /// Reuse the ports, key and CURVE keys of the profile's existing
    /// connection files, encrypting as the files say unless --curve or
    /// --no-curve is given (restart a hub in place).
    #[arg(long)]
    reuse: bool,
    #[command(flatten)]
    curve: CurveArgs,
    /// HMAC key (default: a fresh random key).
    #[arg(long)]
    key: Option<String>,
    /// Heartbeat period in milliseconds.
    #[arg(long, default_value_t = 1000)]
    hb_period_ms: u64,
    /// Missed heartbeats before an engine is declared dead.
    #[arg(long, default_value_t = 3)]
    hb_misses: u64,
    /// Seconds a request may go unanswered before the hub asks its engine
    /// what became of it: one lost on a dropped connection is then sent
    /// again, or failed with `Lost`.
    #[arg(long, default_value_t = zpar_hub::core::DEFAULT_RECALL_AFTER.as_secs_f64())]
    recall_after: f64,
    /// Send every engine every chunk of a large value itself, instead of
    /// relaying it from engine to engine (for networks where engines cannot
    /// reach each other's ports).
    #[arg(long)]
    no_relay: bool,
    /// Load-balancing scheme: leastload, lru or random.
    #[arg(long, default_value = "leastload")]
    scheme: zpar_hub::Scheme,
    /// Task records: `memory` (bounded) or `sqlite:PATH` (kept across
    /// restarts).
    #[arg(long, default_value = "memory")]
    db: zpar_hub::Db,
    /// Most records the memory store keeps (oldest finished dropped first).
    #[arg(long, default_value_t = zpar_hub::DEFAULT_DB_LIMIT)]
    db_limit: usize,
    /// Largest request or result buffers recorded, in bytes (default:
    /// 64 KiB in memory, 64 MiB with SQLite).
    #[arg(long)]
    db_max_buffer: Option<usize>,
}

#[derive(Args)]
struct EngineArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Engine connection file (default: $ZPAR_CONNECTION_INFO if set, which
    /// holds the file's JSON itself, else the profile's zpar-engine.json).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Seconds to keep trying to reach the hub.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Limit of script operations per request (default: none).
    #[arg(long)]
    max_operations: Option<u64>,
    /// Address this engine's communicators bind to and advertise to other
    /// engines (default: this host's address on the route to the hub;
    /// 0.0.0.0 binds all and advertises that one).
    #[arg(long = "ip", alias = "bind-ip")]
    bind_ip: Option<String>,
    /// This engine's uuid (default: a fresh one); with --count K, K uuids
    /// separated by commas.
    #[arg(long)]
    uuid: Option<String>,
    /// How many engines this process runs (packed engines): each has its
    /// own id, namespace and thread, and they share one ZeroMQ context; a
    /// kill of the process is each one's death, and the hub reports each.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Started by mpiexec: ask for the MPI rank (OMPI_COMM_WORLD_RANK,
    /// PMI_RANK or PMIX_RANK) as this engine's id, so ids follow ranks.
    #[arg(long)]
    mpi: bool,
    /// Also serve as a Jupyter kernel: write kernel-<engine id>.json into
    /// the profile's security folder, for `jupyter console --existing`.
    #[arg(long)]
    bind_kernel: bool,
    /// Internal: serve the native kernels `zpar bench compute` measures.
    #[arg(long, hide = true)]
    bench_kernels: bool,
}

/// What is logged unless `ZPAR_LOG` says otherwise: warnings, except in
/// the console, which says in its own lines what the client's warnings
/// would (the hub lost, back again), and must not print raw log lines over
/// its prompt.
fn default_log_filter(command: &Cmd) -> &'static str {
    match command {
        Cmd::Console(_) => "warn,zpar_client=error",
        _ => "warn",
    }
}

/// Logs to standard error, filtered by `ZPAR_LOG`; in colour only on a
/// terminal (a daemon's log file gets plain text).
fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZPAR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// Exit codes of the `zpar` binary (also in `zpar --help`).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// A failure; the message says what happened and what to do.
    pub const FAILURE: i32 = 1;
    /// Wrong usage (clap's code for bad arguments).
    pub const USAGE: i32 = 2;
    /// Interrupted by Ctrl-C (128 + SIGINT).
    pub const INTERRUPTED: i32 = 130;
}

/// Exits with the code `result` calls for; an error is printed on one
/// line, each cause after it (`{:#}` joins anyhow's chain with `": "`).
fn exit_with(result: Result<()>) -> ! {
    match result {
        Ok(()) => std::process::exit(exit::OK),
        Err(e) if e.downcast_ref::<Interrupted>().is_some() => {
            eprintln!("zpar: {e:#}");
            std::process::exit(exit::INTERRUPTED)
        }
        Err(e) => {
            eprintln!("zpar: {e:#}");
            std::process::exit(exit::FAILURE)
        }
    }
}

/// The `zpar` binary's `main`.
pub fn main() {
    let cli = Cli::parse();
    init_logging(default_log_filter(&cli.command));
    exit_with(run(cli));
}

fn run(cli: Cli) -> Result<()> {
    run_with(cli, None)
}

/// A program's own natives for the engines it serves.
type EngineSetup = std::sync::Arc<dyn Fn(&mut zpar_engine::rhai::Engine) + Send + Sync>;

fn run_with(cli: Cli, setup: Option<EngineSetup>) -> Result<()> {
    match cli.command {
        Cmd::Hub(a) => run_hub(a),
        Cmd::Engine(a) => run_engine(a, setup),
        Cmd::Cluster { action } => run_cluster(action),
        Cmd::Console(a) => {
            let code = crate::console::run(a.config()?)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Cmd::Bench(a) => crate::bench::run(a),
        Cmd::Kernel(a) => kernel::run_kernel(a),
        Cmd::Dashboard(a) => crate::dashboard::run(a),
    }
}

fn run_hub(a: HubArgs) -> Result<()> {
    let profile = a.profile.resolve();
    let mut config = zpar_hub::HubConfig::new(profile.clone());
    config.ip = a.ip;
    config.location = a.location;
    config.key = a.key;
    config.hb_period = Duration::from_millis(a.hb_period_ms.max(10));
    config.hb_misses = a.hb_misses.max(1);
    config.recall_after = Duration::from_secs_f64(a.recall_after.clamp(0.1, 1e9));
    config.relay = !a.no_relay;
    config.scheme = a.scheme;
    config.db = match a.db {
        zpar_hub::Db::Memory { .. } => zpar_hub::Db::Memory {
            limit: a.db_limit.max(1),
        },
        sqlite => sqlite,
    };
    config.max_buffer_bytes = a.db_max_buffer;
    config.curve = a.curve.mode();
    if let Some(base) = a.port_base {
        let p = |i: u16| base.checked_add(i).context("--port-base too high");
        config.ports = zpar_hub::PortPlan {
            registration: p(0)?,
            hb_ping: p(1)?,
            heartbeat: p(2)?,
            mux_client: p(3)?,
            link: p(4)?,
            task_client: p(5)?,
            // 6, 8 and 9 were the engines' task, control and iopub ports.
            control_client: p(7)?,
            iopub_client: p(10)?,
            notification: p(11)?,
        };
    }
    if a.reuse {
        let c: zpar_protocol::ClientConnection =
            zpar_protocol::connection::read_connection_file(&profile.client_file())
                .context("--reuse needs the connection files of an earlier hub")?;
        let e: zpar_protocol::EngineConnection =
            zpar_protocol::connection::read_connection_file(&profile.engine_file())?;
        config.key = Some(c.key.clone());
        // Clients and engines hold these keys: keep them, and keep the
        // hub encrypting, or not, as it did, unless told otherwise.
        config.curve_keys = c.curve()?;
        if config.curve == zpar_hub::CurveMode::Auto {
            config.curve = match config.curve_keys {
                Some(_) => zpar_hub::CurveMode::On,
                None => zpar_hub::CurveMode::Off,
            };
        }
        // Peers keep connecting where the files say; bind there too unless
        // told otherwise (an address that is not this host's, behind NAT
        // say, is served on every interface).
        config.location.get_or_insert_with(|| c.ip.clone());
        if config.ip == "127.0.0.1" && c.ip != "127.0.0.1" {
            config.ip = if zpar_protocol::net::is_local_address(&c.ip) {
                c.ip.clone()
            } else {
                "0.0.0.0".into()
            };
        }
        config.ports = zpar_hub::PortPlan {
            registration: c.registration,
            hb_ping: c.hb_ping.unwrap_or(0),
            heartbeat: e.heartbeat,
            mux_client: c.mux,
            link: e.link,
            task_client: c.task,
            control_client: c.control,
            iopub_client: c.iopub,
            notification: c.notification,
        };
    }
    install_signal_handlers()?;
    let hub = zpar_hub::Hub::bind(config)?;
    println!(
        "zpar hub listening on {} (registration port {}); client file {}",
        hub.client_connection().ip,
        hub.client_connection().registration,
        profile.client_file().display()
    );
    hub.run(&STOP)?;
    Ok(())
}

fn run_engine(a: EngineArgs, setup: Option<EngineSetup>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(a.timeout.max(0.0));
    let from_env = std::env::var(CONNECTION_INFO_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty() && a.file.is_none());
    let conn: zpar_protocol::EngineConnection = match from_env {
        // Launchers and batch systems pass the connection this way: no
        // shared filesystem, and the key stays out of process listings.
        Some(json) => {
            let conn: zpar_protocol::EngineConnection =
                serde_json::from_str(&json).with_context(|| {
                    format!("{CONNECTION_INFO_VAR} does not hold an engine connection file's JSON")
                })?;
            conn.curve().with_context(|| {
                format!("the connection in {CONNECTION_INFO_VAR} is not usable")
            })?;
            conn
        }
        None => {
            let file = a
                .file
                .clone()
                .unwrap_or_else(|| a.profile.resolve().engine_file());
            if a.file.is_some() {
                crate::wait::could_be_written(&file)?;
            }
            // The hub may not have written its file yet: wait for it within
            // --timeout.
            let pauses = Backoff::new(Duration::from_millis(1), Duration::from_millis(200));
            let waiting = crate::wait::WaitNotice::start(format!(
                "{} (the hub writes it when it starts)",
                file.display()
            ));
            // Not found in time: reading it below says which file is missing.
            let _ = poll_until(deadline, pauses, || file.exists().then_some(()));
            drop(waiting);
            zpar_protocol::connection::read_connection_file(&file)?
        }
    };

    let mut config = zpar_engine::EngineConfig::new(conn);
    config.registration_timeout = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    config.max_operations = a.max_operations;
    config.bind_ip = a.bind_ip;
    config.bind_kernel = a.bind_kernel;
    if a.count == 0 {
        bail!("--count is how many engines this process runs: at least 1");
    }
    let uuids: Vec<Option<String>> = match &a.uuid {
        None => vec![None; a.count],
        Some(list) => {
            let uuids: Vec<Option<String>> = list
                .split(',')
                .map(|u| Some(u.trim().to_string()))
                .collect();
            if uuids.len() != a.count {
                bail!(
                    "--uuid names {} engines and --count says {}: give one uuid per engine, \
                     separated by commas",
                    uuids.len(),
                    a.count
                );
            }
            uuids
        }
    };
    // A bound kernel's file goes beside the engine file it came from, or
    // into the profile's security folder.
    config.kernel_dir = match a.file.as_deref().and_then(std::path::Path::parent) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => a.profile.resolve().security_dir(),
    };
    if a.mpi && a.count > 1 {
        bail!("--mpi makes the MPI rank the engine's id, one engine per rank: drop --count");
    }
    if a.mpi {
        let rank = zpar_client::launch::mpi_rank().with_context(|| {
            format!(
                "--mpi, but none of {} is set: start this engine with mpiexec",
                zpar_client::launch::RANK_VARS.join(", ")
            )
        })?;
        config.requested_id = Some(rank);
    }
    install_signal_handlers()?;
    config.stop = Some(zpar_engine::server::StopSignal {
        flag: &STOP,
        wake: stop::stop_signal_fd().context("the stop signal's pipe is not set up")?,
    });
    let serve = move |mut config: zpar_engine::EngineConfig, uuid: Option<String>| {
        config.uuid = uuid;
        let mut server = zpar_engine::EngineServer::new(config);
        if a.bench_kernels {
            server.on_setup(crate::kernels::bench_kernels);
        }
        if let Some(setup) = setup.clone() {
            server.on_setup(move |engine| setup(engine));
        }
        server.run()
    };
    if uuids.len() == 1 {
        serve(config, uuids.into_iter().next().flatten())?;
        return Ok(());
    }
    serve_packed(config, uuids, serve)
}

/// Engines that share one ZeroMQ context and one heartbeat connection to
/// the hub: libzmq allows 1,023 sockets per context, and an engine holds
/// about twenty (its link to the hub, relay and their inproc pipes).
const ENGINES_PER_CONTEXT: usize = 40;

/// Runs one engine per uuid slot on a thread of its own, sharing ZeroMQ
/// contexts ([`ENGINES_PER_CONTEXT`] to one); returns when every one has
/// stopped, failing if any did (each failure is logged as it happens,
/// naming the engine's place).
fn serve_packed(
    mut config: zpar_engine::EngineConfig,
    uuids: Vec<Option<String>>,
    serve: impl Fn(zpar_engine::EngineConfig, Option<String>) -> Result<(), zpar_engine::EngineError>
        + Send
        + Sync
        + Clone
        + 'static,
) -> Result<()> {
    let count = uuids.len();
    // Each engine holds about a dozen descriptors (its connections to the
    // hub, its relay socket, its context's share).
    zpar_protocol::net::raise_open_file_limit();
    let contexts: Vec<zpar_engine::server::SharedContext> = (0..count
        .div_ceil(ENGINES_PER_CONTEXT))
        .map(|_| zpar_engine::server::SharedContext::new(zmq::Context::new()))
        .collect();
    let threads: Vec<_> = uuids
        .into_iter()
        .enumerate()
        .map(|(i, uuid)| {
            config.context = Some(contexts[i / ENGINES_PER_CONTEXT].clone());
            let (config, serve) = (config.clone(), serve.clone());
            std::thread::Builder::new()
                .name(format!("zpar-engine-{i}"))
                .spawn(move || {
                    let served = serve(config, uuid);
                    if let Err(e) = &served {
                        tracing::error!(place = i, of = count, error = %zpar_protocol::error::Chain(e), "a packed engine stopped");
                    }
                    served.is_ok()
                })
                .with_context(|| format!("starting the thread of engine {i} of {count}"))
        })
        .collect::<Result<_>>()?;
    let failed = threads
        .into_iter()
        .map(|t| t.join().unwrap_or(false))
        .filter(|ok| !ok)
        .count();
    if failed > 0 {
        bail!("{failed} of the {count} engines of this process failed (see the lines above)");
    }
    Ok(())
}

/// If this process was started by [`LocalCluster`](crate::LocalCluster) to
/// be a hub or an engine (`ZPAR_CHILD_ROLE` is set), run that role with the
/// command-line arguments and exit; otherwise return at once. Call it first
/// in the `main` of a program that starts local clusters, so it works even
/// where no `zpar` binary is installed:
///
/// ```no_run
/// // first thing in main:
/// zpar::cli::run_as_child_if_asked();
/// let cluster = zpar::LocalCluster::start(4).unwrap();
/// ```
pub fn run_as_child_if_asked() {
    if std::env::var_os(zpar_client::cluster::CHILD_ROLE_ENV).is_none() {
        return;
    }
    let args = std::env::args_os().skip(1);
    let cli = Cli::parse_from(std::iter::once(std::ffi::OsString::from("zpar")).chain(args));
    init_logging(default_log_filter(&cli.command));
    exit_with(run(cli));
}

/// Makes this program its own engines, with its own native functions.
///
/// Call it first in `main`. Started by a cluster as an engine
/// (`ZPAR_CHILD_ROLE` set), the program runs `setup` on every script engine
/// it builds — at start and after each `clear` — serves as that engine and
/// exits; started as a hub, it is a hub ([`run_as_child_if_asked`]).
/// Otherwise it returns at once, and every [`LocalCluster`](crate::LocalCluster)
/// the program starts afterwards runs this program as its engines (unless
/// its builder names another [`engine_program`](crate::ClusterBuilder::engine_program)).
/// The same binary is the client and a custom engine.
///
/// Scripts, `apply` and collectives call the natives by name; a script
/// lists them with `native_functions()`. Arguments and results are script
/// values: `i64`, `f64`, `bool`, strings, arrays, maps, and the numeric
/// arrays [`F64Array`](crate::F64Array) and [`I64Array`](crate::I64Array)
/// (which travel as raw buffers).
///
/// ```no_run
/// /// Points of a seeded sample that fall in the unit circle.
/// fn pi_hits(seed: i64, n: i64) -> i64 {
///     let mut rng = fastrand::Rng::with_seed(seed as u64);
///     (0..n).filter(|_| { let (x, y) = (rng.f64(), rng.f64()); x * x + y * y <= 1.0 }).count() as i64
/// }
///
/// fn main() -> zpar::Result<()> {
///     zpar::serve_engines_with(|engine| {
///         engine.register_fn("pi_hits", pi_hits);
///     });
///     let cluster = zpar::LocalCluster::start(2)?; // engines: this program
///     let args = vec![zpar::Value::Int(1), zpar::Value::Int(1000)];
///     let hits = cluster.client()?.all().apply_sync("pi_hits", args)?;
///     assert_eq!(hits[0], zpar::Value::Int(pi_hits(1, 1000)));
///     Ok(())
/// }
/// ```
///
/// The same program serves `zpar cluster start --engine-program PATH` and
/// `LocalCluster::builder().engine_program(PATH)`.
pub fn serve_engines_with(setup: impl Fn(&mut zpar_engine::rhai::Engine) + Send + Sync + 'static) {
    if std::env::var_os(zpar_client::cluster::CHILD_ROLE_ENV).is_none() {
        match std::env::current_exe() {
            Ok(exe) => zpar_client::cluster::set_default_engine_program(exe),
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell this program's path; clusters it starts run plain `zpar engine`s")
            }
        }
        return;
    }
    let args = std::env::args_os().skip(1);
    let cli = Cli::parse_from(std::iter::once(std::ffi::OsString::from("zpar")).chain(args));
    init_logging(default_log_filter(&cli.command));
    exit_with(run_with(cli, Some(std::sync::Arc::new(setup))));
}
