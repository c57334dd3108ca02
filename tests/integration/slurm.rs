//! `zpar cluster start --engines slurm` against a real single-node Slurm:
//! munged, slurmctld and slurmd started for each test in a folder of its
//! own (a private munge socket and key, ports picked at random), stopped by
//! pid when the test ends, also on failure. One Slurm runs at a time.
//!
//! Needs root and Slurm (`slurmctld slurmd slurm-client munge`, which
//! `.ci/run` installs). Outside CI a test without them prints why and
//! passes; with `CI` set it fails instead.

use crate::support::{self, zpar_bin, WAIT};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use zpar::{Client, Error, Value};
use zpar_protocol::backoff::{poll_until, Backoff};

/// One Slurm at a time: each is one node named after this host.
static ONE_SLURM: Mutex<()> = Mutex::new(());

/// A running single-node Slurm.
struct Slurm {
    dir: PathBuf,
    conf: PathBuf,
    /// munged, slurmctld, slurmd.
    daemons: Vec<Child>,
    _one: MutexGuard<'static, ()>,
}

/// Why this machine cannot run Slurm, if it cannot.
fn missing_slurm() -> Option<String> {
    if let Some(why) = support::not_root() {
        return Some(format!("{why}: slurmd runs as root"));
    }
    for tool in [
        "/usr/sbin/slurmctld",
        "/usr/sbin/slurmd",
        "/usr/sbin/munged",
        "/usr/bin/sbatch",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "no {tool} (apt-get install slurmctld slurmd slurm-client munge)"
            ));
        }
    }
    None
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn command_output(program: &str) -> String {
    let out = Command::new(program).output().expect(program);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Slurm {
    /// Starts munged, slurmctld and slurmd; None (the test passes, saying
    /// why) when this machine cannot and `CI` is not set.
    fn start() -> Option<Slurm> {
        let one = ONE_SLURM.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = missing_slurm() {
            support::skip_unless_ci("a Slurm test", &why);
            return None;
        }
        let dir = std::env::temp_dir().join(format!("zpar-slurm-{}", zpar_protocol::new_id()));
        for sub in ["", "run", "state", "spool", "log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("the Slurm folder");
        }
        // munged wants its socket's folders open to all, its key private.
        let open = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        };
        open(&dir);
        open(&dir.join("run"));
        let mut key = [0u8; 1024];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").expect("/dev/urandom"),
            &mut key,
        )
        .expect("random bytes");
        std::io::Write::write_all(
            &mut zpar_protocol::private::create_file(&dir.join("munge.key"))
                .expect("the munge key"),
            &key,
        )
        .expect("the munge key");
        let mut slurm = Slurm {
            conf: dir.join("slurm.conf"),
            dir,
            daemons: Vec::new(),
            _one: one,
        };
        let d = slurm.dir.clone();
        let munged = Command::new("/usr/sbin/munged")
            .arg("-F")
            .arg(format!("--socket={}", d.join("run/munge.socket").display()))
            .arg(format!("--key-file={}", d.join("munge.key").display()))
            .arg(format!("--pid-file={}", d.join("munged.pid").display()))
            .arg(format!("--log-file={}", d.join("log/munged.log").display()))
            .arg(format!("--seed-file={}", d.join("munged.seed").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting munged");
        slurm.daemons.push(munged);
        support::wait_until("munged listens", || d.join("run/munge.socket").exists());

        let host = command_output("hostname");
        let host = host.split('.').next().unwrap_or("localhost").to_string();
        let total_mib: u64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map(|kib| kib / 1024)
            .unwrap_or(4096);
        // More CPUs than the machine has (config_overrides), so a job of
        // more engines than cores runs, as it would on a real node.
        let conf = format!(
            "ClusterName=zpartest
SlurmctldHost={host}
SlurmUser=root
SlurmctldPort={ctld}
SlurmdPort={slurmd}
AuthType=auth/munge
AuthInfo=socket={dir}/run/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MailProg=/bin/true
KillWait=5
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd.log
ReturnToService=2
NodeName={host} CPUs=32 RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
",
            ctld = free_port(),
            slurmd = free_port(),
            dir = d.display(),
            mem = total_mib.saturating_sub(1024).max(1024),
        );
        std::fs::write(&slurm.conf, conf).expect("slurm.conf");
        for (daemon, args) in [
            ("/usr/sbin/slurmctld", vec!["-D", "-c", "-f"]),
            ("/usr/sbin/slurmd", vec!["-D", "-f"]),
        ] {
            let child = Command::new(daemon)
                .args(args)
                .arg(&slurm.conf)
                .env("SLURM_CONF", &slurm.conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {daemon}: {e}"));
            slurm.daemons.push(child);
        }
        support::wait_until("the Slurm node is idle", || {
            slurm
                .run("sinfo", &["-h", "-o", "%T"])
                .is_some_and(|o| o.trim() == "idle")
        });
        Some(slurm)
    }

    /// A command of Slurm's or zpar's, pointed at this Slurm.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SLURM_CONF", &self.conf).env_remove("SLURM_JOB_ID");
        cmd
    }

    /// `program args` to its end (bounded); its standard output when it
    /// succeeded.
    fn run(&self, program: &str, args: &[&str]) -> Option<String> {
        let mut cmd = self.command(program);
        cmd.args(args);
        let out = support::output_within(cmd, WAIT, program);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every job in the queue.
    fn queue(&self) -> String {
        self.run("squeue", &["-h", "-o", "%i %T"])
            .unwrap_or_else(|| "squeue failed".into())
    }

    /// `zpar args` to its end, with this Slurm (bounded well inside the
    /// test's watchdog, so a hang fails the test and `Drop` still runs).
    fn zpar(&self, args: &[&str]) -> Output {
        let mut cmd = self.command(zpar_bin());
        cmd.args(args);
        support::output_within(cmd, Duration::from_secs(60), "zpar")
    }

    /// `program args`, for the clean-up: bounded, and never a panic (a
    /// panic while a failed test unwinds would abort the test binary).
    fn run_quietly(&self, program: &str, args: &[&str]) -> Option<String> {
        let mut child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let pauses = Backoff::new(Duration::from_millis(5), Duration::from_millis(100));
        let status = poll_until(Instant::now() + WAIT, pauses, || {
            child.try_wait().ok().flatten()
        });
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        };
        let mut text = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take()?, &mut text).ok()?;
        status.success().then_some(text)
    }

    /// A profile folder in this Slurm's folder.
    fn profile(&self) -> PathBuf {
        self.dir.join("profile")
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        // What a failed test left: its cluster (the hub is a daemon), the
        // jobs in the queue (waited out, so no step outlives slurmd), then
        // the daemons, newest first.
        let profile = self.profile();
        if profile.join(zpar::cluster::PID_FILE).exists() {
            let dir = profile.to_string_lossy().into_owned();
            let _ = self.run_quietly(zpar_bin(), &["cluster", "stop", "--profile-dir", &dir]);
        }
        if let Some(jobs) = self.run_quietly("squeue", &["-h", "-o", "%i"]) {
            let jobs: Vec<&str> = jobs.split_whitespace().collect();
            if !jobs.is_empty() {
                let _ = self.run_quietly("scancel", &jobs);
                let pauses = Backoff::new(Duration::from_millis(20), Duration::from_millis(200));
                poll_until(Instant::now() + WAIT, pauses, || {
                    self.run_quietly("squeue", &["-h", "-o", "%i"])
                        .is_some_and(|q| q.trim().is_empty())
                        .then_some(())
                });
            }
        }
        for child in self.daemons.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The pids of the engines of Slurm job `job` of this Slurm (job ids
/// start at 1 in each), by their `SLURM_PROCID`.
fn engines_of_job(slurm: &Slurm, job: &str) -> Vec<(u32, u32)> {
    let conf = slurm.conf.to_string_lossy();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        // `zpar engine --mpi …` itself, not the srun or shell that runs it.
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_engine = args.len() > 2
            && args[0].ends_with(b"zpar")
            && args[1] == b"engine"
            && args[2] == b"--mpi";
        if !is_engine {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let var = |name: &str| {
            environ.split(|b| *b == 0).find_map(|kv| {
                let kv = std::str::from_utf8(kv).ok()?;
                kv.strip_prefix(name)?.strip_prefix('=').map(str::to_string)
            })
        };
        if var("SLURM_JOB_ID").as_deref() == Some(job)
            && var("SLURM_CONF").as_deref() == Some(&conf)
        {
            if let Some(rank) = var("SLURM_PROCID").and_then(|r| r.parse().ok()) {
                found.push((rank, pid));
            }
        }
    }
    found.sort();
    found
}

/// The seed's collectives on `client`'s engines: ids scattered, a
/// communicator, an allreduce and a reduce in engines.
fn seed_workflow(client: &Client, n: usize) {
    let all = client.all();
    let ids: Vec<Value> = (0..n as i64).map(Value::Int).collect();
    all.scatter("id", Value::Array(ids), true)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    all.setup_communicator("com", WAIT).unwrap();
    let sums = all
        .execute("com.allreduce(\"sum\", id)")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let total = (0..n as i64).sum::<i64>();
    assert_eq!(sums, vec![Value::Int(total); n]);
}

/// Outside an allocation: the engines are a batch job zpar submits. They
/// run the seed's collectives; each engine's id is its `SLURM_PROCID`;
/// `cluster status` shows the job; `scancel` of the job fails a pending
/// request with `EngineDied`; `cluster stop` leaves nothing in the queue
/// or the process table.
#[test]
fn a_batch_job_of_four_engines_runs_the_seed_and_its_end_is_a_clean_end() {
    let watchdog = support::watchdog();
    let Some(slurm) = Slurm::start() else {
        return;
    };
    let profile = slurm.profile();
    let dir = profile.to_str().unwrap();
    let out = slurm.zpar(&[
        "cluster",
        "start",
        "-n",
        "4",
        "--engines",
        "slurm",
        "--time",
        "10:00",
        "--daemon",
        "--profile-dir",
        dir,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(profile.join(zpar::cluster::PID_FILE)).expect("the cluster record"),
    )
    .unwrap();
    let job = record["slurm_jobs"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no Slurm job recorded: {record}"))
        .to_string();
    // The daemon hub is no child of this test: the watchdog ends it too.
    if let Some(hub) = record["hub"].as_u64() {
        watchdog.also_kill(hub as u32);
    }
    let status = slurm.zpar(&["cluster", "status", "--profile-dir", dir]);
    assert!(
        text(&status).contains(&format!("slurm job {job}: RUNNING")),
        "{}",
        text(&status)
    );

    let client = Client::from_file(&zpar::Profile::from_dir(&profile).client_file()).unwrap();
    assert_eq!(client.wait_for_engines(4, WAIT).unwrap(), vec![0, 1, 2, 3]);
    seed_workflow(&client, 4);

    // Engine 3 is the task with SLURM_PROCID 3: killing that process is
    // engine 3's death.
    let events = client.events().unwrap();
    let ranks = engines_of_job(&slurm, &job);
    assert_eq!(
        ranks.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        vec![0, 1, 2, 3],
        "the job's engine processes"
    );
    let pid3 = ranks[3].1;
    unsafe { libc::kill(pid3 as i32, libc::SIGKILL) };
    let mut gone = Vec::new();
    support::wait_until("engine 3 is reported dead", || {
        gone.extend(support::departures(&events));
        !gone.is_empty()
    });
    assert_eq!(gone[0].0, 3, "{gone:?}");

    // The job ends under a running request: it fails, not hangs.
    let running = client.view(0).execute(&support::running_loop()).unwrap();
    support::wait_until_printed(&running, 0, "running");
    assert!(slurm.run("scancel", &[&job]).is_some(), "scancel {job}");
    match running.get_timeout(WAIT) {
        Err(Error::EngineDied { engine: 0, .. }) => {}
        other => panic!("the request on a cancelled job's engine: {other:?}"),
    }
    drop(client);

    let out = slurm.zpar(&["cluster", "stop", "--profile-dir", dir]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(slurm.queue(), "", "the queue after cluster stop");
    assert_eq!(
        engines_of_job(&slurm, &job),
        vec![],
        "engine processes left"
    );
}

/// Inside an allocation (`salloc`): the engines are one `srun --overlap`
/// step of it, run from a program of one's own (`--engine-program`, with
/// its native function), and run the seed; `cluster stop` ends them and
/// the hub before the allocation ends.
#[test]
fn inside_an_allocation_the_engines_are_a_step_of_it() {
    let _watchdog = support::watchdog();
    let Some(slurm) = Slurm::start() else {
        return;
    };
    let profile = slurm.profile();
    let dir = profile.to_str().unwrap();
    let script = slurm.dir.join("inside.sh");
    std::fs::write(
        &script,
        format!(
            "set -e
{zpar} cluster start -n 4 --engines slurm --engine-program {program} --daemon --profile-dir {dir}
{zpar} console --profile-dir {dir} --timeout 30 <<'EOF'
%px pi_hits(7, 1000) > 500
%scatter --flatten id = [0, 1, 2, 3]
%comm com
%px com.allreduce(\"sum\", id)
EOF
{zpar} cluster stop --profile-dir {dir}
",
            zpar = zpar_bin(),
            program = support::example_binary("native_kernels").display(),
        ),
    )
    .unwrap();
    let out = {
        let mut cmd = slurm.command("salloc");
        cmd.args(["-n", "4", "sh"]).arg(&script);
        support::output_within(cmd, Duration::from_secs(80), "salloc")
    };
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    for e in 0..4 {
        let out_of = |l: &str| l.contains(&format!("Out[{e}:"));
        assert!(
            shown.lines().any(|l| out_of(l) && l.ends_with("]: true")),
            "engine {e} did not run the program's native function:\n{shown}"
        );
        assert!(
            shown.lines().any(|l| out_of(l) && l.ends_with("]: 6")),
            "engine {e} did not allreduce to 6:\n{shown}"
        );
    }
    assert_eq!(slurm.queue(), "", "the queue after the allocation");
}

/// A job Slurm refuses (a partition that does not exist) is one line with
/// Slurm's own reason, and nothing is left running; a job that stays
/// pending past `--timeout` is cancelled, with Slurm's reason.
#[test]
fn a_job_slurm_refuses_or_never_starts_is_a_clear_error() {
    let _watchdog = support::watchdog();
    let Some(slurm) = Slurm::start() else {
        return;
    };
    let profile = slurm.profile();
    let dir = profile.to_str().unwrap();
    let out = slurm.zpar(&[
        "cluster",
        "start",
        "-n",
        "2",
        "--engines",
        "slurm",
        "--slurm-args",
        "-p nosuchpartition",
        "--profile-dir",
        dir,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr.contains("Slurm refused the engines' job") && stderr.contains("partition"),
        "{}",
        text(&out)
    );
    assert_eq!(slurm.queue(), "");

    let out = slurm.zpar(&[
        "cluster",
        "start",
        "-n",
        "2",
        "--engines",
        "slurm",
        "--slurm-args",
        "--begin=now+1hour",
        "--timeout",
        "3",
        "--profile-dir",
        dir,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr.contains("still pending (BeginTime)") && stderr.contains("cancelled"),
        "{}",
        text(&out)
    );
    support::wait_until("the pending job left the queue", || {
        slurm.queue().is_empty()
    });
    let hubs = Command::new("pgrep")
        .args(["-f", &format!("hub --profile-dir {dir}")])
        .output()
        .unwrap();
    assert!(
        hubs.stdout.is_empty(),
        "a hub still runs: {}",
        String::from_utf8_lossy(&hubs.stdout)
    );
}
