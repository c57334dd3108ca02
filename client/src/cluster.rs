//! [`LocalCluster`]: a hub on this machine and its engines, here or on
//! other hosts.
//!
//! It runs the `zpar` binary (`zpar hub`, `zpar engine`), waits until every
//! engine is registered, and stops them all when dropped — also when a test
//! panics. Engines start on this machine by default, or through a
//! [`EngineLauncher`] over `ssh` or `mpiexec` ([`crate::launch`]).
//! `zpar cluster start` uses the same code, and leaves a [`ClusterPids`]
//! record in the profile for `status` and `stop` (`cluster/record.rs`).

use crate::client::Client;
use crate::error::{Error, Result};
use crate::launch::{remote_engine_command, spread, EngineLauncher, CONNECTION_INFO_VAR};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zpar_protocol::backoff::{poll_until, Backoff};
use zpar_protocol::Profile;

mod record;
pub use record::{process_alive, ClusterPids, Ending, ProcessStarts};

/// Set on a process [`LocalCluster`] starts from the current program (when
/// no `zpar` binary is found): the program is to act as `zpar hub …` or
/// `zpar engine …` (see `zpar::cli::run_as_child_if_asked`).
pub const CHILD_ROLE_ENV: &str = "ZPAR_CHILD_ROLE";

/// The pid file `zpar cluster start` leaves in the profile folder (0600,
/// like every file zpar writes: [`zpar_protocol::private`]).
pub const PID_FILE: &str = zpar_protocol::connection::PID_FILE;

/// The engine program clusters use when their builder names none: set by
/// `zpar::serve_engines_with` in a program that serves its own engines.
static DEFAULT_ENGINE_PROGRAM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes `program` the engine program of every cluster this process
/// starts afterwards, unless its builder says otherwise
/// ([`ClusterBuilder::engine_program`]). `zpar::serve_engines_with` calls
/// it with the current program; the first call wins.
///
/// ```no_run
/// zpar_client::cluster::set_default_engine_program(std::env::current_exe().unwrap());
/// let cluster = zpar_client::LocalCluster::start(2).unwrap(); // engines: this program
/// ```
pub fn set_default_engine_program(program: impl Into<PathBuf>) {
    let _ = DEFAULT_ENGINE_PROGRAM.set(program.into());
}

/// How to start a local cluster.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    engines: usize,
    binary: Option<PathBuf>,
    profile_dir: Option<PathBuf>,
    hub_args: Vec<String>,
    engine_args: Vec<String>,
    log_dir: Option<PathBuf>,
    timeout: Duration,
    launcher: EngineLauncher,
    engine_program: Option<PathBuf>,
    per_process: usize,
}

impl ClusterBuilder {
    /// Packs `k` engines into each engine process (`zpar engine --count
    /// k`; default 1): each keeps its own id, namespace and thread, and they
    /// share one ZeroMQ context, so thousands of engines fit on one machine.
    /// A process killed is each of its engines' death. Local and ssh
    /// launchers; under mpiexec each rank is one engine.
    ///
    /// ```no_run
    /// let cluster = zpar_client::LocalCluster::builder().engines(2_000).per_process(100).start().unwrap();
    /// ```
    pub fn per_process(mut self, k: usize) -> Self {
        self.per_process = k.max(1);
        self
    }

    /// Run engines from this program instead of `zpar engine`: a program
    /// whose `main` starts with `zpar::serve_engines_with(..)`, so its
    /// engines have its own native functions. It is started as `PROGRAM
    /// engine …` with `ZPAR_CHILD_ROLE` set; the hub is still `zpar hub`.
    /// Over ssh it must be at the same path on every host.
    ///
    /// ```no_run
    /// let cluster = zpar_client::LocalCluster::builder()
    ///     .engine_program("target/release/examples/native_kernels")
    ///     .engines(2)
    ///     .start()
    ///     .unwrap();
    /// ```
    pub fn engine_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.engine_program = Some(program.into());
        self
    }

    /// How engines start (default: on this machine). Engines on other
    /// hosts need a hub they can reach: give `zpar hub` arguments such as
    /// `--ip 0.0.0.0` with [`hub_args`](Self::hub_args).
    pub fn launcher(mut self, launcher: EngineLauncher) -> Self {
        self.launcher = launcher;
        self
    }

    /// How many engines (default 2).
    pub fn engines(mut self, n: usize) -> Self {
        self.engines = n;
        self
    }

    /// The `zpar` binary to run (default: `$ZPAR_BIN`, else a `zpar` next to
    /// this program or one folder up, else `zpar` on the PATH).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Use this profile folder (default: a fresh temporary one, removed on
    /// drop).
    pub fn profile_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.profile_dir = Some(dir.into());
        self
    }

    /// Extra `zpar hub` arguments (e.g. `--hb-period-ms 100`).
    pub fn hub_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.hub_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Extra `zpar engine` arguments.
    pub fn engine_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.engine_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Send the processes' output to files in this folder instead of
    /// inheriting this process's stderr (for clusters that outlive it).
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// How long to wait for the hub and every engine (default 30 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Starts the hub, then the engines, and waits until all are registered.
    pub fn start(self) -> Result<LocalCluster> {
        let (binary, as_child) = match self.binary.clone().or_else(find_binary) {
            Some(b) => (b, false),
            None => {
                if std::env::var_os(CHILD_ROLE_ENV).is_some() {
                    return Err(Error::Cluster(format!(
                        "this program was started as a cluster process ({CHILD_ROLE_ENV} is set) but did not take \
                         the role: call zpar::serve_engines_with(..) or zpar::cli::run_as_child_if_asked() first in main, or install zpar"
                    )));
                }
                let exe = std::env::current_exe()
                    .map_err(|e| Error::Cluster(format!("current program: {e}")))?;
                (exe, true)
            }
        };
        let (dir, temporary) = match &self.profile_dir {
            Some(d) => (d.clone(), false),
            None => (
                std::env::temp_dir().join(format!("zpar-cluster-{}", zpar_protocol::new_id())),
                true,
            ),
        };
        let profile = Profile::from_dir(&dir);
        // Folders 0700; what an earlier run left open to others, tightened.
        profile.create()?;
        // A stale file from a hub that died must not be mistaken for ours.
        let _ = std::fs::remove_file(profile.client_file());
        let _ = std::fs::remove_file(profile.engine_file());
        let mut engine_args = self.engine_args.clone();
        // Engines keep trying to register as long as the cluster waits for
        // them: thousands starting at once wait their turn at the hub for
        // longer than an engine's default 30 s.
        if !engine_args
            .iter()
            .any(|a| a == "--timeout" || a.starts_with("--timeout="))
        {
            engine_args.push(format!("--timeout={}", self.timeout.as_secs_f64().max(1.0)));
        }
        let mut cluster = LocalCluster {
            hub: None,
            engines: Vec::new(),
            profile,
            temporary,
            binary,
            as_child,
            engine_args,
            log_dir: self.log_dir.clone(),
            client: None,
            detached: false,
            launcher: self.launcher.clone(),
            engine_program: self.engine_program.clone(),
            per_process: self.per_process,
            slurm_jobs: Vec::new(),
        };
        if as_child && cluster.launcher != EngineLauncher::Local {
            return Err(Error::Cluster(
                "engines on other hosts run the zpar binary, and none was found: install zpar (cargo install --path .) or set ZPAR_BIN".into(),
            ));
        }
        let mut hub_cmd = Command::new(&cluster.binary);
        hub_cmd
            .arg("hub")
            .arg("--profile-dir")
            .arg(&dir)
            .args(&self.hub_args);
        let hub = cluster.spawn(hub_cmd, "hub")?;
        cluster.hub = Some(hub);
        let deadline = Instant::now() + self.timeout;
        cluster.wait_for_file(deadline)?;
        let conn = zpar_protocol::connection::read_connection_file(&cluster.profile.client_file())?;
        let client = Client::from_connection_timeout(conn, self.timeout)?;
        cluster.client = Some(client);
        cluster.add_engines(self.engines)?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        cluster.client()?.wait_for_engines(self.engines, left)?;
        Ok(cluster)
    }
}

/// A running hub and its engines; stopped on drop.
///
/// ```no_run
/// use zpar_client::{LocalCluster, Value};
/// # fn main() -> zpar_client::Result<()> {
/// let cluster = LocalCluster::start(4)?;
/// let client = cluster.client()?;
/// let ids = client.all().apply_sync("|| 1", vec![])?;
/// assert_eq!(ids.len(), 4);
/// # Ok(()) } // everything stops here
/// ```
pub struct LocalCluster {
    hub: Option<Child>,
    /// Each engine process, with the uuids of the engines it runs (none
    /// known: mpiexec's).
    engines: Vec<(Vec<String>, Child)>,
    profile: Profile,
    temporary: bool,
    binary: PathBuf,
    /// Processes are this program in a role, not the `zpar` binary.
    as_child: bool,
    engine_args: Vec<String>,
    log_dir: Option<PathBuf>,
    client: Option<Client>,
    detached: bool,
    launcher: EngineLauncher,
    /// Engines run this program in the engine role instead of `binary`.
    engine_program: Option<PathBuf>,
    /// Engines per process.
    per_process: usize,
    /// The Slurm batch jobs submitted for engines, cancelled at the end.
    slurm_jobs: Vec<String>,
}

impl LocalCluster {
    /// A builder with defaults: 2 engines, temporary profile.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            engines: 2,
            per_process: 1,
            binary: None,
            profile_dir: None,
            hub_args: Vec::new(),
            engine_args: Vec::new(),
            log_dir: None,
            timeout: Duration::from_secs(30),
            launcher: EngineLauncher::Local,
            engine_program: DEFAULT_ENGINE_PROGRAM.get().cloned(),
        }
    }

    /// Starts `n` engines with defaults.
    pub fn start(n: usize) -> Result<LocalCluster> {
        LocalCluster::builder().engines(n).start()
    }

    /// A client connected to this cluster (clones share one connection).
    pub fn client(&self) -> Result<Client> {
        self.client.clone().ok_or(Error::Closed)
    }

    /// The profile folder.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The pids of the hub and the engines.
    pub fn pids(&self) -> ClusterPids {
        ClusterPids {
            slurm_jobs: self.slurm_jobs.clone(),
            ..ClusterPids::new(
                self.hub.as_ref().map(Child::id).unwrap_or(0),
                self.engines.iter().map(|(_, c)| c.id()).collect(),
            )
        }
    }

    /// The Slurm batch jobs this cluster submitted for its engines.
    pub fn slurm_jobs(&self) -> &[String] {
        &self.slurm_jobs
    }

    fn spawn(&self, mut cmd: Command, name: &str) -> Result<Child> {
        self.spawn_with_input(cmd.stdin(Stdio::null()), name, None)
    }

    /// Spawns `cmd` (output to the log folder or stderr); writes `input`
    /// and a newline to its standard input, then closes it.
    fn spawn_with_input(
        &self,
        cmd: &mut Command,
        name: &str,
        input: Option<&str>,
    ) -> Result<Child> {
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        cmd.stdout(Stdio::null());
        if self.as_child {
            cmd.env(CHILD_ROLE_ENV, name);
        } else if !cmd.get_envs().any(|(k, _)| k == CHILD_ROLE_ENV) {
            // Only a role the caller gave (a custom engine program) stays.
            cmd.env_remove(CHILD_ROLE_ENV);
        }
        match &self.log_dir {
            Some(d) => {
                // Logs hold the code and errors of tasks: 0700 and 0600.
                zpar_protocol::private::create_dir(d).map_err(|e| {
                    Error::Cluster(format!("cannot create the log folder {}: {e}", d.display()))
                })?;
                let log = d.join(format!("{name}.log"));
                let f = zpar_protocol::private::create_file(&log).map_err(|e| {
                    Error::Cluster(format!("cannot create the log file {}: {e}", log.display()))
                })?;
                cmd.stderr(f);
            }
            None => {
                cmd.stderr(Stdio::inherit());
            }
        }
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd.spawn().map_err(|e| {
            Error::Cluster(if program == self.binary.to_string_lossy() {
                format!(
                    "cannot run {} ({e}); build zpar with `cargo build --release` or set ZPAR_BIN",
                    self.binary.display()
                )
            } else {
                format!("cannot run {program} ({e}): is it installed and on the PATH?")
            })
        })?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            use std::io::Write;
            if let Err(e) = writeln!(stdin, "{text}") {
                let _ = child.kill();
                return Err(Error::Cluster(format!(
                    "{name}: cannot pass the connection to {program}: {e}"
                )));
            }
        }
        Ok(child)
    }

    /// The engine connection as one line of JSON, for launchers.
    fn connection_info(&self) -> Result<String> {
        let conn: zpar_protocol::EngineConnection =
            zpar_protocol::connection::read_connection_file(&self.profile.engine_file())?;
        serde_json::to_string(&conn).map_err(|e| Error::Cluster(format!("connection: {e}")))
    }

    fn wait_for_file(&mut self, deadline: Instant) -> Result<()> {
        let file = self.profile.client_file();
        let hub = &mut self.hub;
        // Polling a file: nothing to block on, so back off gently.
        let pauses = Backoff::new(Duration::from_micros(200), Duration::from_millis(20));
        let seen = poll_until(deadline, pauses, || {
            if file.exists() {
                return Some(Ok(()));
            }
            let exited = hub.as_mut().and_then(|h| h.try_wait().ok().flatten());
            exited.map(|status| {
                Err(Error::Cluster(format!(
                    "the hub exited at start ({status}); see its log above"
                )))
            })
        });
        seen.unwrap_or_else(|| {
            Err(Error::Cluster(format!(
                "the hub wrote no {} in time",
                file.display()
            )))
        })
    }

    /// Starts `n` more engines (does not wait for them), with the cluster's
    /// launcher.
    pub fn add_engines(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        match self.launcher.clone() {
            EngineLauncher::Local => self.add_local_engines(n),
            EngineLauncher::Ssh {
                hosts,
                ssh_args,
                remote_zpar,
            } => {
                let info = self.connection_info()?;
                for (host, k) in spread(&hosts, n).map_err(Error::Cluster)? {
                    for count in packs(k, self.per_process) {
                        let uuids: Vec<String> =
                            (0..count).map(|_| zpar_protocol::new_id()).collect();
                        let mut args = vec!["--uuid".to_string(), uuids.join(",")];
                        if count > 1 {
                            args.extend(["--count".to_string(), count.to_string()]);
                        }
                        args.extend(self.engine_args.iter().cloned());
                        let mut remote = remote_engine_command(&remote_zpar, &args);
                        if let Some(p) = &self.engine_program {
                            remote = format!(
                                "export {CHILD_ROLE_ENV}=engine && {}",
                                remote_engine_command(&p.to_string_lossy(), &args)
                            );
                        }
                        let mut cmd = Command::new("ssh");
                        cmd.args(&ssh_args).arg(&host).arg(remote);
                        let name = format!("engine-{}", self.engines.len());
                        let child = self.spawn_with_input(&mut cmd, &name, Some(&info))?;
                        self.engines.push((uuids, child));
                    }
                }
                Ok(())
            }
            EngineLauncher::Slurm(slurm) => self.add_slurm_engines(n, &slurm),
            EngineLauncher::Mpi { mpi_args } => {
                let info = self.connection_info()?;
                let mut cmd = Command::new("mpiexec");
                cmd.arg("-n")
                    .arg(n.to_string())
                    .args(&mpi_args)
                    // Forwarded by name: the key is in no command line.
                    .args(["-x", CONNECTION_INFO_VAR])
                    .args(
                        self.engine_program
                            .as_ref()
                            .map(|_| ["-x", CHILD_ROLE_ENV])
                            .into_iter()
                            .flatten(),
                    )
                    .arg(self.engine_program.as_ref().unwrap_or(&self.binary))
                    .args(["engine", "--mpi"])
                    .args(&self.engine_args)
                    .env(CONNECTION_INFO_VAR, info)
                    .stdin(Stdio::null());
                if self.engine_program.is_some() {
                    cmd.env(CHILD_ROLE_ENV, "engine");
                }
                let name = format!("mpiexec-{}", self.engines.len());
                let child = self.spawn_with_input(&mut cmd, &name, None)?;
                self.engines.push((Vec::new(), child));
                Ok(())
            }
        }
    }

    /// The engine command a Slurm task runs: this cluster's engine
    /// program, rank as id (`--mpi` reads `SLURM_PROCID`).
    fn slurm_engine_command(&self) -> Vec<String> {
        let program = self.engine_program.as_ref().unwrap_or(&self.binary);
        let mut cmd = vec![
            program.to_string_lossy().into_owned(),
            "engine".to_string(),
            "--mpi".to_string(),
        ];
        cmd.extend(self.engine_args.iter().cloned());
        cmd
    }

    /// Starts `n` engines as Slurm tasks: one `srun --overlap` step inside
    /// an allocation, else a batch job (recorded, cancelled at the end).
    /// The connection travels in the environment, which both pass on.
    fn add_slurm_engines(&mut self, n: usize, slurm: &crate::launch::SlurmLaunch) -> Result<()> {
        let info = self.connection_info()?;
        let engine = self.slurm_engine_command();
        if std::env::var_os("SLURM_JOB_ID").is_some() {
            let mut cmd = Command::new("srun");
            cmd.args(["--overlap", "-n", &n.to_string()])
                .args(&slurm.slurm_args)
                .args(&engine)
                .env(CONNECTION_INFO_VAR, info)
                .stdin(Stdio::null());
            if self.engine_program.is_some() {
                cmd.env(CHILD_ROLE_ENV, "engine");
            }
            let name = format!("srun-{}", self.engines.len());
            let child = self.spawn_with_input(&mut cmd, &name, None)?;
            self.engines.push((Vec::new(), child));
            return Ok(());
        }
        let template = match &slurm.template {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                Error::Cluster(format!(
                    "cannot read the Slurm template {}: {e}",
                    path.display()
                ))
            })?,
            None => crate::launch::SLURM_TEMPLATE.to_string(),
        };
        let k = self.slurm_jobs.len();
        let log_dir = self
            .log_dir
            .clone()
            .unwrap_or_else(|| self.profile.log_dir());
        zpar_protocol::private::create_dir(&log_dir).map_err(|e| {
            Error::Cluster(format!(
                "cannot create the log folder {}: {e}",
                log_dir.display()
            ))
        })?;
        let output = log_dir.join(format!("slurm-engines-{k}.log"));
        let command: Vec<String> = engine
            .iter()
            .map(|a| crate::launch::shell_quote(a))
            .collect();
        let script = crate::launch::slurm_script(
            &template,
            n,
            &command.join(" "),
            "zpar-engines",
            &output.to_string_lossy(),
        );
        let script_file = self.profile.dir.join(format!("slurm-engines-{k}.sh"));
        std::fs::write(&script_file, script)
            .map_err(|e| Error::Cluster(format!("cannot write {}: {e}", script_file.display())))?;
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable");
        if let Some(t) = &slurm.time {
            cmd.args(["--time", t]);
        }
        cmd.args(&slurm.slurm_args)
            .arg(&script_file)
            .env(CONNECTION_INFO_VAR, info)
            .stdin(Stdio::null());
        if self.engine_program.is_some() {
            cmd.env(CHILD_ROLE_ENV, "engine");
        }
        let out = cmd.output().map_err(|e| {
            Error::Cluster(format!(
                "cannot run sbatch ({e}): is Slurm installed and on the PATH?"
            ))
        })?;
        let said = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let lines: Vec<&str> = said
                .lines()
                .map(|l| l.trim().trim_start_matches("sbatch: error: "))
                .filter(|l| !l.is_empty())
                .collect();
            let why = if lines.is_empty() {
                format!("sbatch failed ({}) and said nothing", out.status)
            } else {
                lines.join("; ")
            };
            return Err(Error::Cluster(format!(
                "Slurm refused the engines' job: {why}"
            )));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        // `--parsable`: `JOBID` or `JOBID;CLUSTER`, kept whole (the
        // cluster is where squeue and scancel must ask).
        let job = Some(stdout.trim())
            .filter(|j| !j.is_empty())
            .ok_or_else(|| Error::Cluster(format!("sbatch gave no job id: {stdout:?} {said}")))?
            .to_string();
        tracing::info!(job = %job, engines = n, script = %script_file.display(), "submitted the engines' Slurm job");
        self.slurm_jobs.push(job);
        Ok(())
    }

    fn add_local_engines(&mut self, n: usize) -> Result<()> {
        for count in packs(n, self.per_process) {
            let uuids: Vec<String> = (0..count).map(|_| zpar_protocol::new_id()).collect();
            let mut cmd = Command::new(self.engine_program.as_ref().unwrap_or(&self.binary));
            if self.engine_program.is_some() {
                cmd.env(CHILD_ROLE_ENV, "engine");
            }
            cmd.arg("engine")
                .arg("--profile-dir")
                .arg(&self.profile.dir)
                .arg("--uuid")
                .arg(uuids.join(","));
            if count > 1 {
                cmd.arg("--count").arg(count.to_string());
            }
            cmd.args(&self.engine_args);
            let name = format!("engine-{}", self.engines.len());
            let child = self.spawn(cmd, &name)?;
            self.engines.push((uuids, child));
        }
        Ok(())
    }

    /// The pid of the engine with this id (packed engines share one).
    pub fn engine_pid(&self, id: u32) -> Option<u32> {
        let client = self.client.as_ref()?;
        let uuid = client.inner.table.engines.lock().ok()?.get(&id)?.clone();
        self.engines
            .iter()
            .find(|(u, _)| u.contains(&uuid))
            .map(|(_, c)| c.id())
    }

    /// Kills the engine with this id at once (SIGKILL), as a crash would;
    /// packed engines ([`ClusterBuilder::per_process`]) die with it, each
    /// reported by the hub.
    pub fn kill_engine(&mut self, id: u32) -> Result<()> {
        let pid = self.engine_pid(id).ok_or(Error::UnknownEngine(id))?;
        let (_, child) = self
            .engines
            .iter_mut()
            .find(|(_, c)| c.id() == pid)
            .ok_or(Error::UnknownEngine(id))?;
        child
            .kill()
            .map_err(|e| Error::Cluster(format!("kill engine {id}: {e}")))?;
        let _ = child.wait();
        Ok(())
    }

    /// Kills the hub at once (SIGKILL).
    pub fn kill_hub(&mut self) -> Result<()> {
        if let Some(h) = self.hub.as_mut() {
            h.kill()
                .map_err(|e| Error::Cluster(format!("kill hub: {e}")))?;
            let _ = h.wait();
        }
        Ok(())
    }

    /// Waits until the hub and every engine process have exited (after a
    /// shutdown), without killing them.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut children: Vec<&mut Child> = self.hub.iter_mut().collect();
        children.extend(self.engines.iter_mut().map(|(_, c)| c));
        for c in children {
            // Child has no wait-with-timeout: poll its status with backoff.
            let pauses = Backoff::new(Duration::from_micros(500), Duration::from_millis(20));
            let exited = poll_until(deadline, pauses, || match c.try_wait() {
                Ok(None) => None,
                Ok(Some(_)) => Some(Ok(())),
                Err(e) => Some(Err(Error::Cluster(format!(
                    "cannot learn whether process {} exited: {e}",
                    c.id()
                )))),
            });
            exited.unwrap_or_else(|| {
                Err(Error::Timeout {
                    waited: timeout,
                    what: format!("process {} to exit", c.id()),
                })
            })?;
        }
        Ok(())
    }

    /// Leaves the processes running after this value is dropped and writes
    /// the pid file, for `zpar cluster start --daemon`.
    pub fn detach(mut self) -> Result<ClusterPids> {
        let pids = self.pids();
        zpar_protocol::connection::write_json_file(&self.profile.dir.join(PID_FILE), &pids)?;
        self.detached = true;
        Ok(pids)
    }

    /// Stops everything: asks the hub to shut the cluster down, then makes
    /// sure every process is gone.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(client) = self.client.take() {
            if let Ok(ar) = client.shutdown(crate::Targets::All, true) {
                ar.wait(Some(Duration::from_secs(2)));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut children: Vec<&mut Child> = self.hub.iter_mut().collect();
        children.extend(self.engines.iter_mut().map(|(_, c)| c));
        for c in children {
            let pauses = Backoff::new(Duration::from_millis(1), Duration::from_millis(50));
            let gone = poll_until(deadline, pauses, || match c.try_wait() {
                Ok(Some(_)) | Err(_) => Some(()),
                Ok(None) => None,
            });
            if gone.is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Err(e) = crate::launch::scancel(&self.slurm_jobs) {
            tracing::warn!("{e}");
        }
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.profile.dir);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if !self.detached {
            self.shutdown();
        }
    }
}

/// Where the `zpar` binary is: `$ZPAR_BIN`, this program if it is `zpar`,
/// a `zpar` beside this program or up to two folders up (cargo's
/// `target/<profile>/` from an example or test), or one on the `PATH`.
pub fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ZPAR_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok();
    if let Some(exe) = &exe {
        if exe.file_name().is_some_and(|n| n == "zpar") {
            return Some(exe.clone()); // zpar cluster, zpar bench
        }
        for dir in exe.ancestors().skip(1).take(3) {
            let candidate = dir.join("zpar");
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("zpar"))
            .find(|c| c.is_file())
    })
}

/// `n` engines in processes of at most `per_process` each: the counts.
fn packs(n: usize, per_process: usize) -> Vec<usize> {
    let k = per_process.max(1);
    (0..n.div_ceil(k)).map(|i| k.min(n - i * k)).collect()
}
