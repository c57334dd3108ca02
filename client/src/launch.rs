//! How a cluster's engines are started: on this machine, over `ssh` on
//! other hosts, or as the ranks of an `mpiexec`.
//!
//! The launchers wrap the tools a cluster already has rather than adding a
//! daemon of ours. Each passes the engine connection (the hub's addresses
//! and key) in `ZPAR_CONNECTION_INFO`, never on a command line, so the key
//! stays out of process listings on every host:
//!
//! - **ssh**: `ssh HOST 'read -r ZPAR_CONNECTION_INFO && export … && exec
//!   zpar engine …'`, with the JSON written to ssh's standard input;
//! - **mpi**: `mpiexec -n N -x ZPAR_CONNECTION_INFO zpar engine --mpi`, the
//!   variable set in mpiexec's environment and forwarded by name; each
//!   engine asks for its MPI rank as its id, so ids follow rank order.
//!
//! ```
//! use zpar_client::launch::{spread, SshHost};
//! let hosts: Vec<SshHost> = "node1,node2:3".split(',').map(|h| h.parse().unwrap()).collect();
//! assert_eq!(spread(&hosts, 5).unwrap(), vec![("node1".to_string(), 2), ("node2".to_string(), 3)]);
//! ```

use std::str::FromStr;

/// The environment variable that carries the engine connection file's JSON.
pub const CONNECTION_INFO_VAR: &str = "ZPAR_CONNECTION_INFO";

/// How engines are started.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EngineLauncher {
    /// As processes on this machine.
    #[default]
    Local,
    /// Over `ssh`, spread over hosts.
    Ssh {
        /// The hosts, with how many engines each takes if said.
        hosts: Vec<SshHost>,
        /// Options for every `ssh` call (`-i KEY`, `-p PORT`, `-F FILE`).
        ssh_args: Vec<String>,
        /// The `zpar` to run on the hosts (default: `zpar` on their PATH).
        remote_zpar: String,
    },
    /// As the ranks of one `mpiexec`.
    Mpi {
        /// Options for `mpiexec` (`--host a:2,b:2`, `--hostfile F`).
        mpi_args: Vec<String>,
    },
    /// As the tasks of a Slurm job step: inside an allocation
    /// (`SLURM_JOB_ID` set) one `srun --overlap`, outside one a batch job
    /// zpar submits with `sbatch` (and cancels when the cluster stops).
    /// Engine ids are the tasks' `SLURM_PROCID`.
    Slurm(SlurmLaunch),
}

/// How the Slurm launcher runs its engines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlurmLaunch {
    /// Options for `sbatch` or `srun` (`-p PART`, `-N 2`, `-A ACCOUNT`).
    pub slurm_args: Vec<String>,
    /// The batch job's time limit (`sbatch --time`, e.g. `1:00:00`).
    pub time: Option<String>,
    /// A batch script template to use instead of [`SLURM_TEMPLATE`].
    pub template: Option<std::path::PathBuf>,
}

/// The batch script zpar submits for engines outside an allocation.
/// `{n}` is the number of engines, `{engine_command}` the engine command
/// line (the connection comes in the job's environment, never in the
/// script), `{job_name}` the job's name and `{output}` its log file. A
/// template of one's own (`--slurm-template`) takes the same fields.
pub const SLURM_TEMPLATE: &str = "#!/bin/sh
#SBATCH --job-name={job_name}
#SBATCH --ntasks={n}
#SBATCH --output={output}
exec srun {engine_command}
";

/// Fills a batch script template's fields.
///
/// ```
/// use zpar_client::launch::{slurm_script, SLURM_TEMPLATE};
/// let script = slurm_script(SLURM_TEMPLATE, 4, "zpar engine --mpi", "zpar-engines", "/tmp/e.log");
/// assert!(script.contains("--ntasks=4") && script.contains("exec srun zpar engine --mpi"));
/// ```
pub fn slurm_script(
    template: &str,
    n: usize,
    engine_command: &str,
    job_name: &str,
    output: &str,
) -> String {
    template
        .replace("{n}", &n.to_string())
        .replace("{engine_command}", engine_command)
        .replace("{job_name}", job_name)
        .replace("{output}", output)
}

/// A job as `sbatch --parsable` names it, `ID` or `ID;CLUSTER`: the id,
/// and the `-M CLUSTER` option that reaches it.
fn job_and_cluster(job: &str) -> (&str, Vec<String>) {
    match job.split_once(';') {
        Some((id, cluster)) => (id, vec!["-M".to_string(), cluster.to_string()]),
        None => (job, Vec::new()),
    }
}

/// A Slurm job's state and Slurm's reason for it (`squeue`'s `%T` and
/// `%r`: `PENDING`, `Resources`); `Ok(None)` once the job has left the
/// queue (or has ended), an error when `squeue` could not say (a busy
/// controller: ask again).
pub fn slurm_job_state(job: &str) -> Result<Option<(String, String)>, String> {
    let (id, cluster) = job_and_cluster(job);
    let out = std::process::Command::new("squeue")
        .args(&cluster)
        // Every state, whatever the user's SQUEUE_STATES says.
        .args(["-h", "-t", "all", "-j", id, "-o", "%T|%r"])
        .output()
        .map_err(|e| format!("cannot run squeue ({e})"))?;
    let said = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // A job purged from the controller's memory is no longer known.
        if said.contains("Invalid job id") {
            return Ok(None);
        }
        return Err(format!("squeue -j {id}: {}", said.trim()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let Some((state, reason)) = text.lines().next().and_then(|l| l.trim().split_once('|')) else {
        return Ok(None);
    };
    const ENDED: &[&str] = &[
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
    ];
    if ENDED.contains(&state) {
        return Ok(None);
    }
    Ok(Some((state.to_string(), reason.to_string())))
}

/// Cancels Slurm jobs (`scancel`); the error says what scancel said.
pub fn scancel(jobs: &[String]) -> Result<(), String> {
    for job in jobs {
        let (id, cluster) = job_and_cluster(job);
        let out = std::process::Command::new("scancel")
            .args(&cluster)
            .arg(id)
            .output()
            .map_err(|e| format!("cannot run scancel ({e}): cancel job {id} by hand"))?;
        if !out.status.success() {
            return Err(format!(
                "scancel {id}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// A host for the ssh launcher: `name` or `name:k` (k engines there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshHost {
    /// What `ssh` connects to (`host`, `user@host`).
    pub name: String,
    /// How many engines it takes; None: a share of the rest.
    pub engines: Option<usize>,
}

impl FromStr for SshHost {
    type Err = String;

    fn from_str(s: &str) -> Result<SshHost, String> {
        let s = s.trim();
        match s.rsplit_once(':') {
            Some((name, k)) if !name.is_empty() => {
                let k = k.parse::<usize>().map_err(|_| {
                    format!("host {s:?}: after ':' comes how many engines it takes, not {k:?}")
                })?;
                Ok(SshHost {
                    name: name.to_string(),
                    engines: Some(k),
                })
            }
            _ if s.is_empty() => Err("an empty host name in --hosts".to_string()),
            _ => Ok(SshHost {
                name: s.to_string(),
                engines: None,
            }),
        }
    }
}

/// Spreads `n` engines over `hosts`: hosts with a count take it, the rest
/// share what is left round-robin. An error if the counts do not fit `n`.
pub fn spread(hosts: &[SshHost], n: usize) -> Result<Vec<(String, usize)>, String> {
    if hosts.is_empty() {
        return Err("the ssh launcher needs --hosts h1,h2:3".into());
    }
    let fixed: usize = hosts.iter().filter_map(|h| h.engines).sum();
    let free: Vec<usize> = (0..hosts.len())
        .filter(|i| hosts[*i].engines.is_none())
        .collect();
    if fixed > n || (free.is_empty() && fixed != n) {
        return Err(format!(
            "--hosts asks for {fixed} engines in all but -n is {n}: make them agree, or leave some hosts without a count"
        ));
    }
    let mut out: Vec<(String, usize)> = hosts
        .iter()
        .map(|h| (h.name.clone(), h.engines.unwrap_or(0)))
        .collect();
    for k in 0..n - fixed {
        out[free[k % free.len()]].1 += 1;
    }
    Ok(out.into_iter().filter(|(_, k)| *k > 0).collect())
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r#"'\''"#))
}

/// The command an ssh launcher runs on a host: reads the connection from
/// standard input into the environment, then becomes the engine.
pub fn remote_engine_command(remote_zpar: &str, engine_args: &[String]) -> String {
    let args: Vec<String> = engine_args.iter().map(|a| shell_quote(a)).collect();
    format!(
        "read -r {CONNECTION_INFO_VAR} && export {CONNECTION_INFO_VAR} && exec {} engine {}",
        shell_quote(remote_zpar),
        args.join(" ")
    )
    .trim_end()
    .to_string()
}

/// The environment variables MPI implementations set to a process's rank,
/// in the order they are tried.
pub const RANK_VARS: &[&str] = &[
    "OMPI_COMM_WORLD_RANK",
    "PMI_RANK",
    "PMIX_RANK",
    "SLURM_PROCID",
];

/// This process's MPI rank, from the launcher's environment.
pub fn mpi_rank() -> Option<u32> {
    RANK_VARS
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(spec: &str) -> Vec<SshHost> {
        spec.split(',').map(|h| h.parse().unwrap()).collect()
    }

    #[test]
    fn engines_are_spread_as_the_hosts_ask() {
        assert_eq!(
            spread(&hosts("a,b"), 5).unwrap(),
            vec![("a".into(), 3), ("b".into(), 2)]
        );
        assert_eq!(
            spread(&hosts("a:1,b,c"), 4).unwrap(),
            vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 1)]
        );
        assert_eq!(
            spread(&hosts("a:2,b:2"), 4).unwrap(),
            vec![("a".into(), 2), ("b".into(), 2)]
        );
        assert_eq!(spread(&hosts("a,b,c"), 1).unwrap(), vec![("a".into(), 1)]);
        assert!(spread(&hosts("a:2,b:2"), 5)
            .unwrap_err()
            .contains("4 engines"));
        assert!(spread(&hosts("a:6"), 5).is_err());
        assert!(spread(&[], 1).is_err());
        assert!("a:x".parse::<SshHost>().unwrap_err().contains("how many"));
        assert_eq!(
            "root@h:3".parse::<SshHost>().unwrap(),
            SshHost {
                name: "root@h".into(),
                engines: Some(3)
            }
        );
    }

    #[test]
    fn the_remote_command_keeps_the_key_off_the_command_line() {
        let cmd = remote_engine_command("/opt/zpar bin/zpar", &["--uuid".into(), "u-1".into()]);
        assert_eq!(
            cmd,
            "read -r ZPAR_CONNECTION_INFO && export ZPAR_CONNECTION_INFO && exec '/opt/zpar bin/zpar' engine --uuid u-1"
        );
        assert_eq!(shell_quote("it's"), r#"'it'\''s'"#);
        assert_eq!(shell_quote(""), "''");
    }
}
