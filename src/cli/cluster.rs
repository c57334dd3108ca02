//! `zpar cluster`: starting a hub and its engines (here, over ssh or as
//! mpiexec's ranks), and finding them again through the profile to show or
//! stop them.

use super::args::{CurveArgs, ProfileArgs};
use super::stop::{install_signal_handlers, Interrupted, STOP};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use zpar_protocol::backoff::{poll_until, Backoff};
use zpar_protocol::Profile;

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub(super) enum ClusterCmd {
    /// Start a hub and N engines; waits until all are registered.
    Start {
        #[command(flatten)]
        profile: ProfileArgs,
        /// Number of engines.
        #[arg(short = 'n', long = "num-engines", default_value_t = 2)]
        engines: usize,
        /// Return at once and leave the cluster running.
        #[arg(long)]
        daemon: bool,
        /// Heartbeat period in milliseconds.
        #[arg(long, default_value_t = 1000)]
        hb_period_ms: u64,
        #[command(flatten)]
        launch: LaunchArgs,
        /// The hub's task records: `memory` or `sqlite:PATH` (see `zpar hub
        /// --db`).
        #[arg(long)]
        db: Option<zpar_hub::Db>,
        /// The hub's load-balancing scheme: leastload, lru or random.
        #[arg(long)]
        scheme: Option<zpar_hub::Scheme>,
        /// The hub binds twelve consecutive ports from this one.
        #[arg(long)]
        port_base: Option<u16>,
        /// Each engine's limit of script operations per request.
        #[arg(long)]
        max_operations: Option<u64>,
        /// Run engines from this program (one whose `main` starts with
        /// `zpar::serve_engines_with`), so they have its native functions.
        #[arg(long, value_name = "PATH")]
        engine_program: Option<PathBuf>,
        /// Each engine also serves as a Jupyter kernel, and writes
        /// kernel-<engine id>.json into its profile's security folder
        /// (`jupyter console --existing FILE`).
        #[arg(long)]
        bind_kernel: bool,
    },
    /// Stop the cluster started for a profile.
    Stop {
        #[command(flatten)]
        profile: ProfileArgs,
    },
    /// Show the cluster of a profile: processes and engines.
    Status {
        #[command(flatten)]
        profile: ProfileArgs,
    },
}

/// Where a cluster's hub listens and how its engines start.
#[derive(Args)]
pub(super) struct LaunchArgs {
    /// How engines start: `local` (this machine), `ssh` (on --hosts) or
    /// `mpi` (the ranks of one mpiexec).
    #[arg(long = "engines", value_name = "LAUNCHER", default_value = "local")]
    launcher: LauncherKind,
    /// ssh: the hosts, comma-separated; `host:k` puts k engines there, the
    /// others share the rest.
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<zpar_client::launch::SshHost>,
    /// ssh: options for every ssh call, as one string (e.g. "-i key -p 2222").
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    ssh_args: String,
    /// ssh: the zpar to run on the hosts.
    #[arg(long, default_value = "zpar")]
    remote_zpar: String,
    /// mpi: options for mpiexec, as one string (e.g. "--host a:2,b:2").
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    mpi_args: String,
    /// The hub's interface (default: 127.0.0.1 for local engines, 0.0.0.0
    /// for ssh and mpi).
    #[arg(long)]
    ip: Option<String>,
    /// The address engines and clients connect to (see `zpar hub
    /// --location`).
    #[arg(long)]
    location: Option<String>,
    #[command(flatten)]
    curve: CurveArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LauncherKind {
    Local,
    Ssh,
    Mpi,
}

impl LaunchArgs {
    /// The hub arguments and the engine launcher these options ask for.
    fn launcher(&self) -> Result<(Vec<String>, zpar_client::launch::EngineLauncher)> {
        use zpar_client::launch::EngineLauncher;
        let split = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let launcher = match self.launcher {
            LauncherKind::Local => EngineLauncher::Local,
            LauncherKind::Ssh => {
                if self.hosts.is_empty() {
                    bail!("--engines ssh needs --hosts, e.g. --hosts node1,node2:3");
                }
                EngineLauncher::Ssh {
                    hosts: self.hosts.clone(),
                    ssh_args: split(&self.ssh_args),
                    remote_zpar: self.remote_zpar.clone(),
                }
            }
            LauncherKind::Mpi => EngineLauncher::Mpi {
                mpi_args: split(&self.mpi_args),
            },
        };
        let default_ip = if self.launcher == LauncherKind::Local {
            "127.0.0.1"
        } else {
            "0.0.0.0"
        };
        let mut hub = vec![
            "--ip".to_string(),
            self.ip.clone().unwrap_or_else(|| default_ip.to_string()),
        ];
        if let Some(l) = &self.location {
            hub.extend(["--location".to_string(), l.clone()]);
        }
        hub.extend(self.curve.hub_args());
        Ok((hub, launcher))
    }
}

pub(super) fn run_cluster(action: ClusterCmd) -> Result<()> {
    match action {
        ClusterCmd::Start {
            profile,
            engines,
            daemon,
            hb_period_ms,
            launch,
            db,
            scheme,
            port_base,
            max_operations,
            engine_program,
            bind_kernel,
        } => {
            let profile = profile.resolve();
            let (mut hub_args, launcher) = launch.launcher()?;
            if let Some(db) = &db {
                hub_args.extend(["--db".to_string(), db.to_string()]);
            }
            if let Some(s) = scheme {
                hub_args.extend(["--scheme".to_string(), s.to_string()]);
            }
            if let Some(p) = port_base {
                hub_args.extend(["--port-base".to_string(), p.to_string()]);
            }
            let mut engine_args = Vec::new();
            if let Some(n) = max_operations {
                engine_args.extend(["--max-operations".to_string(), n.to_string()]);
            }
            if bind_kernel {
                engine_args.push("--bind-kernel".to_string());
            }
            let mut options = hub_args.clone();
            options.extend(engine_args.iter().cloned());
            if let Ok(pids) = read_pids(&profile) {
                if zpar_client::cluster::process_alive(pids.hub) {
                    bail!(
                        "a cluster is already running for {} (hub pid {}); `zpar cluster stop` it first",
                        profile.dir.display(),
                        pids.hub
                    );
                }
            }
            let started = Instant::now();
            let progress = indicatif::ProgressBar::new(engines as u64);
            progress.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} starting engines {pos}/{len} [{elapsed}]",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            let mut builder = zpar_client::LocalCluster::builder()
                .engines(0)
                .profile_dir(&profile.dir)
                .hub_args(["--hb-period-ms".to_string(), hb_period_ms.to_string()])
                .hub_args(hub_args)
                .engine_args(engine_args)
                .launcher(launcher);
            if let Some(program) = engine_program {
                // Checked here so a typo is not a wait for engines that never come.
                let program = std::fs::canonicalize(&program).with_context(|| {
                    format!("--engine-program {}: no such program", program.display())
                })?;
                builder = builder.engine_program(program);
            }
            if daemon {
                builder = builder.log_dir(profile.log_dir());
            }
            let mut cluster = builder.start()?;
            cluster.add_engines(engines)?;
            let client = cluster.client()?;
            install_signal_handlers()?;
            // The progress bar shows on a terminal; elsewhere, lines.
            let _waiting = (!std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .then(|| crate::wait::WaitNotice::start(format!("{engines} engines to register")));
            loop {
                let n = client.ids().len();
                if started.elapsed() > Duration::from_secs(1) {
                    progress.enable_steady_tick(Duration::from_millis(100));
                    progress.set_position(n as u64);
                }
                if n >= engines {
                    break;
                }
                if STOP.load(Ordering::SeqCst) {
                    return Err(Interrupted("while the cluster was starting").into());
                }
                let _ = client.wait_for_engines(engines, Duration::from_millis(100));
                if started.elapsed() > Duration::from_secs(60) {
                    bail!("only {n} of {engines} engines registered within 60 s");
                }
            }
            progress.finish_and_clear();
            let pids = zpar_client::cluster::ClusterPids {
                options,
                ..cluster.pids()
            };
            zpar_protocol::connection::write_json_file(
                &profile.dir.join(zpar_client::cluster::PID_FILE),
                &pids,
            )?;
            println!(
                "cluster started in {:.2}s: hub pid {}, engines {:?} (ids {:?}); profile {}",
                started.elapsed().as_secs_f64(),
                pids.hub,
                pids.engines,
                client.ids(),
                profile.dir.display()
            );
            if bind_kernel {
                print_kernels(&client)?;
            }
            if daemon {
                cluster.detach()?;
                // detach() records the pids; add the options.
                zpar_protocol::connection::write_json_file(
                    &profile.dir.join(zpar_client::cluster::PID_FILE),
                    &pids,
                )?;
                return Ok(());
            }
            println!("press Ctrl-C to stop");
            while !STOP.load(Ordering::SeqCst) {
                // Woken by the signal (EINTR) or, at the latest, each second.
                let _ = client.wait_for_engines(usize::MAX, Duration::from_secs(1));
            }
            drop(client);
            cluster.stop();
            let _ = std::fs::remove_file(profile.dir.join(zpar_client::cluster::PID_FILE));
            println!("cluster stopped");
            Ok(())
        }
        ClusterCmd::Stop { profile } => {
            let profile = profile.resolve();
            let pids = read_pids(&profile)?;
            if let Ok(client) = zpar_client::Client::from_file(&profile.client_file()) {
                if let Ok(ar) = client.shutdown(zpar_client::Targets::All, true) {
                    ar.wait(Some(Duration::from_secs(5)));
                }
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut all = vec![pids.hub];
            all.extend(&pids.engines);
            let pauses = Backoff::new(Duration::from_millis(1), Duration::from_millis(100));
            // Those still alive at the deadline are killed below.
            let _ = poll_until(deadline, pauses, || {
                (!all.iter().any(|p| zpar_client::cluster::process_alive(*p))).then_some(())
            });
            let left: Vec<u32> = all
                .into_iter()
                .filter(|p| zpar_client::cluster::process_alive(*p))
                .collect();
            let _ = std::fs::remove_file(profile.dir.join(zpar_client::cluster::PID_FILE));
            if !left.is_empty() {
                bail!("processes {left:?} did not stop; kill them by hand");
            }
            println!("cluster stopped");
            Ok(())
        }
        ClusterCmd::Status { profile } => {
            let profile = profile.resolve();
            let pids = read_pids(&profile)?;
            let alive = |p: u32| {
                if zpar_client::cluster::process_alive(p) {
                    "running"
                } else {
                    "gone"
                }
            };
            // Written at once, and a closed pipe (`| head`) is not an error.
            let mut text = String::new();
            if !pids.options.is_empty() {
                text += &format!("started with: {}\n", pids.options.join(" "));
            }
            text += &format!("hub pid {}: {}\n", pids.hub, alive(pids.hub));
            for p in &pids.engines {
                text += &format!("engine pid {p}: {}\n", alive(*p));
            }
            match zpar_client::Client::from_connection_timeout(
                zpar_protocol::connection::read_connection_file(&profile.client_file())?,
                Duration::from_secs(2),
            ) {
                Ok(client) => {
                    let q = client.queue_status()?;
                    text += &format!("registered engines: {:?}\n", client.ids());
                    for (id, e) in q.engines {
                        text += &format!(
                            "  engine {id}: queue {}, completed {}\n",
                            e.queue, e.completed
                        );
                    }
                }
                Err(e) => {
                    text += &format!("hub not answering: {}\n", zpar_protocol::error::Chain(&e))
                }
            }
            let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
            Ok(())
        }
    }
}

/// Where each engine's kernel listens (they bound it as they started;
/// asking again returns the same binding).
fn print_kernels(client: &zpar_client::Client) -> Result<()> {
    let key = client.connection().key.clone();
    let values = client
        .all()
        .bind_kernel()?
        .get_timeout(Duration::from_secs(30))
        .context("the engines did not say where their kernels listen")?;
    for v in &values {
        let k = zpar_client::BoundKernel::from_value(v, &key)?;
        println!(
            "engine {} is a Jupyter kernel: jupyter console --existing {}",
            k.engine,
            k.connection_file.display()
        );
    }
    Ok(())
}

fn read_pids(profile: &Profile) -> Result<zpar_client::cluster::ClusterPids> {
    let path = profile.dir.join(zpar_client::cluster::PID_FILE);
    zpar_protocol::connection::read_json_file(&path).with_context(|| {
        format!(
            "no cluster is recorded for {} (start one with `zpar cluster start`)",
            profile.dir.display()
        )
    })
}
