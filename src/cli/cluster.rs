//! `zpar cluster`: starting a hub and its engines (here, over ssh, as
//! mpiexec's ranks or as a Slurm job's tasks), and finding them again
//! through the profile to show or stop them.

use super::args::{CurveArgs, ProfileArgs};
use super::stop::{install_signal_handlers, Interrupted, STOP};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
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
        /// Engines per engine process (`zpar engine --count K`): each keeps
        /// its own id, namespace and thread; thousands fit on one machine.
        #[arg(long, default_value_t = 1, value_name = "K")]
        per_process: usize,
        /// Return at once and leave the cluster running.
        #[arg(long)]
        daemon: bool,
        /// Heartbeat period in milliseconds.
        #[arg(long, default_value_t = 1000)]
        hb_period_ms: u64,
        /// How long to wait for the engines to register, in seconds (a
        /// Slurm job still queued then is cancelled, with Slurm's reason).
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        timeout: u64,
        #[command(flatten)]
        launch: LaunchArgs,
        /// The hub's task records: `memory` or `sqlite:PATH` (see `zpar hub
        /// --db`).
        #[arg(long)]
        db: Option<zpar_hub::Db>,
        /// The hub's load-balancing scheme: leastload, lru or random.
        #[arg(long)]
        scheme: Option<zpar_hub::Scheme>,
        /// The hub binds its ports from this one up (within twelve).
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
    /// How engines start: `local` (this machine), `ssh` (on --hosts), `mpi`
    /// (the ranks of one mpiexec) or `slurm` (the tasks of a Slurm job:
    /// `srun --overlap` inside an allocation, else a batch job).
    #[arg(long = "engines", value_name = "LAUNCHER", default_value = "local",
          value_parser = parse_launcher)]
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
    /// slurm: options for sbatch (or srun inside an allocation), as one
    /// string (e.g. "-p compute -N 2").
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    slurm_args: String,
    /// slurm: the batch job's time limit (sbatch --time, e.g. 2:00:00).
    #[arg(long, value_name = "TIME")]
    time: Option<String>,
    /// slurm: a batch script template of your own; zpar fills {n},
    /// {engine_command}, {job_name} and {output} (see the README).
    #[arg(long, value_name = "PATH")]
    slurm_template: Option<PathBuf>,
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum LauncherKind {
    Local,
    Ssh,
    Mpi,
    Slurm,
}

/// `--engines`: a launcher. The examples and `zpar bench` take a count
/// there, so a number is answered with the option that takes one.
fn parse_launcher(s: &str) -> std::result::Result<LauncherKind, String> {
    match s {
        "local" => Ok(LauncherKind::Local),
        "ssh" => Ok(LauncherKind::Ssh),
        "mpi" => Ok(LauncherKind::Mpi),
        "slurm" => Ok(LauncherKind::Slurm),
        n if n.parse::<usize>().is_ok() => Err(format!(
            "`--engines` takes a launcher (local, ssh, mpi, slurm); for a count of engines use -n {n}"
        )),
        _ => Err("`--engines` takes a launcher: local, ssh, mpi or slurm".to_string()),
    }
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
            LauncherKind::Slurm => EngineLauncher::Slurm(zpar_client::launch::SlurmLaunch {
                slurm_args: split(&self.slurm_args),
                time: self.time.clone(),
                template: self.slurm_template.clone(),
            }),
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
            per_process,
            daemon,
            hb_period_ms,
            timeout,
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
                let running = pids.running();
                if !running.is_empty() {
                    bail!(
                        "a cluster is already running for {} (pids {running:?}); `zpar cluster stop` it first",
                        profile.dir.display(),
                    );
                }
            }
            let started = Instant::now();
            let mut builder = zpar_client::LocalCluster::builder()
                .engines(0)
                .profile_dir(&profile.dir)
                .hub_args(["--hb-period-ms".to_string(), hb_period_ms.to_string()])
                .hub_args(hub_args)
                .engine_args(engine_args)
                .per_process(per_process)
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
            wait_for_engines(
                &client,
                engines,
                started,
                Duration::from_secs(timeout),
                cluster.slurm_jobs(),
                &profile.log_dir(),
            )?;
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
            // A foreground cluster ends only when interrupted: say so in
            // the exit code (130), as every other command does.
            Err(Interrupted("while the cluster ran; it is stopped").into())
        }
        ClusterCmd::Stop { profile } => stop_cluster(&profile.resolve()),
        ClusterCmd::Status { profile } => show_status(&profile.resolve()),
    }
}

/// Waits until `engines` engines are registered, showing how many are (a
/// progress bar on a terminal, lines elsewhere); both are gone when it
/// returns. With Slurm jobs, a job that left the queue, or is still
/// queued at the timeout, ends the wait with Slurm's word on it.
fn wait_for_engines(
    client: &zpar_client::Client,
    engines: usize,
    started: Instant,
    timeout: Duration,
    slurm_jobs: &[String],
    log_dir: &std::path::Path,
) -> Result<()> {
    let progress = indicatif::ProgressBar::new(engines as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} starting engines {pos}/{len} [{elapsed}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    // Dropped (its thread joined) on return, before the cluster is said
    // to have started: no line about the wait comes after that.
    let _waiting = (!std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(|| crate::wait::WaitNotice::start(format!("{engines} engines to register")));
    let mut asked_slurm = Instant::now() - Duration::from_secs(1);
    type JobState = std::result::Result<Option<(String, String)>, String>;
    let mut states: Vec<(String, JobState)> = Vec::new();
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
        // Slurm is asked once a second, not at every turn.
        if !slurm_jobs.is_empty() && asked_slurm.elapsed() >= Duration::from_secs(1) {
            asked_slurm = Instant::now();
            states = slurm_jobs
                .iter()
                .map(|j| (j.clone(), zpar_client::launch::slurm_job_state(j)))
                .collect();
            if client.ids().len() < engines {
                // A job squeue could not tell of (a busy controller) is
                // asked about again next time.
                if let Some((job, _)) = states.iter().find(|(_, s)| matches!(s, Ok(None))) {
                    bail!(
                        "the engines' Slurm job {job} ended with {n} of {engines} engines registered; its output is in {}",
                        log_dir.display()
                    );
                }
            }
        }
        if started.elapsed() > timeout {
            let queued: Vec<String> = states
                .iter()
                .filter_map(|(j, s)| {
                    let (state, reason) = s.as_ref().ok()?.as_ref()?;
                    (state == "PENDING").then(|| format!("job {j} is still pending ({reason})"))
                })
                .collect();
            if !queued.is_empty() {
                bail!(
                    "the engines' Slurm {} after {}s, so it is cancelled: ask for resources the partition has, or give --timeout more",
                    queued.join(", "),
                    timeout.as_secs()
                );
            }
            bail!(
                "only {n} of {engines} engines registered within {}s",
                timeout.as_secs()
            );
        }
    }
    progress.finish_and_clear();
    Ok(())
}

/// How long the hub has to answer `stop` and `status`.
const HUB_ANSWER: Duration = Duration::from_secs(2);
/// How long processes have to exit once asked (by the hub, by SIGTERM),
/// and to be gone after SIGKILL.
const GRACE: Duration = Duration::from_secs(5);
/// How long cancelled Slurm jobs have to leave the queue.
const SLURM_CANCEL: Duration = Duration::from_secs(30);

/// `zpar cluster stop`: the hub shuts the cluster down if it still runs;
/// whatever the record names that still runs then is ended by signals. The
/// record stays until every process is gone.
fn stop_cluster(profile: &Profile) -> Result<()> {
    let record = profile.dir.join(zpar_client::cluster::PID_FILE);
    let pids = read_pids(profile)?;
    let hub_ran = pids.is_running(pids.hub);
    if hub_ran {
        // The hub shuts its engines down, on every host.
        let client = zpar_protocol::connection::read_connection_file(&profile.client_file())
            .ok()
            .and_then(|c| zpar_client::Client::from_connection_timeout(c, HUB_ANSWER).ok());
        if let Some(client) = client {
            if let Ok(ar) = client.shutdown(zpar_client::Targets::All, true) {
                ar.wait(Some(GRACE));
            }
        }
        pids.wait_gone(GRACE);
    }
    let ending = pids.terminate(GRACE);
    // The engines' Slurm jobs: cancelled, and gone from the queue before
    // the record is.
    if let Err(e) = zpar_client::launch::scancel(&pids.slurm_jobs) {
        bail!(
            "{e}; {} stays until they are cancelled: run `zpar cluster stop` again",
            record.display()
        );
    }
    // A job squeue cannot tell of counts as still queued: asked again.
    let queued = |j: &String| !matches!(zpar_client::launch::slurm_job_state(j), Ok(None));
    let pauses =
        zpar_protocol::backoff::Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    let left_queue =
        zpar_protocol::backoff::poll_until(Instant::now() + SLURM_CANCEL, pauses, || {
            (!pids.slurm_jobs.iter().any(queued)).then_some(())
        });
    if left_queue.is_none() {
        let still: Vec<&String> = pids.slurm_jobs.iter().filter(|j| queued(j)).collect();
        bail!(
            "Slurm jobs {still:?} are still in the queue {}s after scancel; {} stays until they are gone: run `zpar cluster stop` again",
            SLURM_CANCEL.as_secs(),
            record.display()
        );
    }
    if !ending.left.is_empty() {
        bail!(
            "processes {:?} of the cluster still run after SIGKILL; {} stays until they are gone: run `zpar cluster stop` again",
            ending.left,
            record.display()
        );
    }
    if !hub_ran {
        remove_stale_connection_files(profile, &record);
    }
    let _ = std::fs::remove_file(&record);
    let mut how = Vec::new();
    if !hub_ran {
        how.push(format!("the hub (pid {}) had exited", pids.hub));
    }
    if !ending.terminated.is_empty() {
        how.push(format!("SIGTERM to {:?}", ending.terminated));
    }
    if !ending.killed.is_empty() {
        how.push(format!("SIGKILL to {:?}", ending.killed));
    }
    if !pids.slurm_jobs.is_empty() {
        how.push(format!(
            "Slurm jobs {} cancelled",
            pids.slurm_jobs.join(", ")
        ));
    }
    if how.is_empty() {
        println!("cluster stopped");
    } else {
        println!("cluster stopped ({})", how.join("; "));
    }
    Ok(())
}

/// The connection files a hub that died left behind, so nothing waits on
/// them: only those written before the record (by the recorded hub), not
/// those of a hub started since on the same profile (`zpar hub --reuse`).
fn remove_stale_connection_files(profile: &Profile, record: &std::path::Path) {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(recorded) = modified(record) else {
        return;
    };
    let ipyparallel = profile
        .security_dir()
        .join(zpar_hub::hub::IPYPARALLEL_CLIENT_FILE);
    for file in [profile.client_file(), profile.engine_file(), ipyparallel] {
        if modified(&file).is_some_and(|m| m <= recorded) {
            let _ = std::fs::remove_file(&file);
        }
    }
}

/// `zpar cluster status`: the recorded processes and what the hub says;
/// fails unless the cluster is whole.
fn show_status(profile: &Profile) -> Result<()> {
    let pids = read_pids(profile)?;
    let state = |running: bool| if running { "running" } else { "gone" };
    let hub_runs = pids.is_running(pids.hub);
    let gone: Vec<u32> = pids
        .engines
        .iter()
        .copied()
        .filter(|p| !pids.is_running(*p))
        .collect();
    // Written at once, and a closed pipe (`| head`) is not an error.
    let mut text = String::new();
    if !pids.options.is_empty() {
        text += &format!("started with: {}\n", pids.options.join(" "));
    }
    text += &format!("hub pid {}: {}\n", pids.hub, state(hub_runs));
    for job in &pids.slurm_jobs {
        match zpar_client::launch::slurm_job_state(job) {
            Ok(Some((state, reason))) if reason != "None" => {
                text += &format!("slurm job {job}: {state} ({reason})\n")
            }
            Ok(Some((state, _))) => text += &format!("slurm job {job}: {state}\n"),
            Ok(None) => text += &format!("slurm job {job}: ended, no longer in the queue\n"),
            Err(e) => text += &format!("slurm job {job}: unknown ({e})\n"),
        }
    }
    for p in &pids.engines {
        text += &format!("engine pid {p}: {}\n", state(!gone.contains(p)));
    }
    let mut missing = Vec::new();
    if !hub_runs {
        missing.push(format!("the hub (pid {}) is gone", pids.hub));
    } else {
        let client = zpar_protocol::connection::read_connection_file(&profile.client_file())
            .map_err(zpar_client::Error::from)
            .and_then(|c| zpar_client::Client::from_connection_timeout(c, HUB_ANSWER));
        match client.and_then(|client| Ok((client.queue_status()?, client.ids()))) {
            Ok((q, ids)) => {
                text += &format!("registered engines: {ids:?}\n");
                for (id, e) in q.engines {
                    text += &format!(
                        "  engine {id}: queue {}, completed {}\n",
                        e.queue, e.completed
                    );
                }
                if ids.len() < pids.engines.len() {
                    missing.push(format!(
                        "only {} of {} engines are registered",
                        ids.len(),
                        pids.engines.len()
                    ));
                }
            }
            Err(e) => {
                text += &format!("hub not answering: {}\n", zpar_protocol::error::Chain(&e));
                missing.push(format!("the hub (pid {}) does not answer", pids.hub));
            }
        }
    }
    if !gone.is_empty() {
        missing.push(format!("engine processes {gone:?} are gone"));
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    if !missing.is_empty() {
        bail!(
            "the cluster of {} is not whole: {}; `zpar cluster stop` ends what is left, then `zpar cluster start` a new one",
            profile.dir.display(),
            missing.join(", ")
        );
    }
    Ok(())
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
