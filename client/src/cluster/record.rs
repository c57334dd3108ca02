//! The record `zpar cluster start` leaves in a profile (`cluster.json`):
//! the cluster's processes and when each started, so `status` and `stop`
//! find them again, tell them from processes that got their pids since, and
//! end them by signals when the hub cannot (it died).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use zpar_protocol::backoff::{poll_until, Backoff};

/// What `zpar cluster status` and `stop` read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPids {
    /// The hub's pid.
    pub hub: u32,
    /// The engines' pids (for engines on other hosts, their launchers').
    pub engines: Vec<u32>,
    /// The options the cluster was started with, for `zpar cluster status`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// When each process started, so that a pid the system has since given
    /// to another process is not taken for the cluster's (nor signalled by
    /// `zpar cluster stop`). Absent in older records: their pids are
    /// trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<ProcessStarts>,
    /// The Slurm jobs zpar submitted for the engines (`--engines slurm`
    /// outside an allocation), cancelled by `zpar cluster stop`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slurm_jobs: Vec<String>,
}

/// When processes started (Linux): the start time `/proc/PID/stat` gives
/// each, in clock ticks after boot, and the boot they count from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStarts {
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot: String,
    /// Each pid's start time; a process already gone has none.
    pub ticks: BTreeMap<u32, u64>,
}

/// What [`ClusterPids::terminate`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ending {
    /// Sent SIGTERM.
    pub terminated: Vec<u32>,
    /// Still running after the grace time, sent SIGKILL.
    pub killed: Vec<u32>,
    /// Still running after SIGKILL and the grace time again.
    pub left: Vec<u32>,
}

impl ClusterPids {
    /// A record of a hub and its engines, with when each started.
    pub fn new(hub: u32, engines: Vec<u32>) -> ClusterPids {
        let started = boot_id().map(|boot| ProcessStarts {
            boot,
            ticks: std::iter::once(hub)
                .chain(engines.iter().copied())
                .filter_map(|p| Some((p, start_ticks(p)?)))
                .collect(),
        });
        ClusterPids {
            hub,
            engines,
            options: Vec::new(),
            started,
            slurm_jobs: Vec::new(),
        }
    }

    /// The hub's pid, then the engines'.
    pub fn processes(&self) -> Vec<u32> {
        std::iter::once(self.hub)
            .chain(self.engines.iter().copied())
            .collect()
    }

    /// Whether `pid` runs and is the process recorded, not one that got
    /// its pid since: its start time is the recorded one, or, in a record
    /// from before start times were kept, it runs as zpar's hub or engine
    /// (`BIN hub ...`, `BIN engine ...`).
    pub fn is_running(&self, pid: u32) -> bool {
        process_alive(pid)
            && match &self.started {
                Some(s) => {
                    Some(&s.boot) == boot_id().as_ref()
                        && s.ticks
                            .get(&pid)
                            .is_some_and(|t| start_ticks(pid) == Some(*t))
                }
                None => runs_as_hub_or_engine(pid),
            }
    }

    /// The recorded processes still running.
    pub fn running(&self) -> Vec<u32> {
        self.processes()
            .into_iter()
            .filter(|p| self.is_running(*p))
            .collect()
    }

    /// Waits up to `bound` until no recorded process runs; returns those
    /// still running then.
    pub fn wait_gone(&self, bound: Duration) -> Vec<u32> {
        // Other processes' exits: nothing to block on, so poll.
        let pauses = Backoff::new(Duration::from_millis(1), Duration::from_millis(50));
        let _ = poll_until(Instant::now() + bound, pauses, || {
            self.running().is_empty().then_some(())
        });
        self.running()
    }

    /// Ends the recorded processes still running: SIGTERM (the hub and
    /// engines stop at once on it), then SIGKILL to those still running
    /// after `grace`, and up to `grace` again for them to go. Only
    /// processes known to be the recorded ones ([`Self::is_running`]) are
    /// signalled: a pid the system has given to anything else never is.
    pub fn terminate(&self, grace: Duration) -> Ending {
        let terminated = self.running();
        for &p in &terminated {
            signal(p, libc::SIGTERM);
        }
        let killed = self.wait_gone(grace);
        for &p in &killed {
            signal(p, libc::SIGKILL);
        }
        let left = self.wait_gone(grace);
        Ending {
            terminated,
            killed,
            left,
        }
    }
}

/// Whether `pid` runs as zpar's hub or engine: its first argument is
/// `hub` or `engine` (Linux; false where `/proc` says nothing).
fn runs_as_hub_or_engine(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|b| *b == 0)
            .nth(1)
            .is_some_and(|role| role == b"hub" || role == b"engine")
    })
}

/// Sends `sig` to `pid`; never to a process group (pid 0 or one that
/// does not fit a `pid_t`).
fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        if pid > 0 {
            // SAFETY: kill(2) takes plain integers and touches no memory.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

/// This boot's id (Linux).
fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_string())
}

/// When `pid` started, in clock ticks after boot (field 22 of
/// `/proc/PID/stat`).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses;
    // after it, the state is field 3.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
}

/// Whether a process is alive (Linux: its /proc entry exists and is not a
/// zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_knows_its_processes_from_others_with_their_pids() {
        let me = std::process::id();
        let record = ClusterPids::new(me, vec![0]);
        assert!(record.is_running(me));
        assert_eq!(record.running(), vec![me], "pid 0 is nobody's");
        // Another process that got the pid since started at another time,
        // or in another boot.
        if let Some(starts) = &record.started {
            let mut later = record.clone();
            later
                .started
                .as_mut()
                .unwrap()
                .ticks
                .insert(me, starts.ticks[&me] + 1);
            assert!(!later.is_running(me));
            let mut rebooted = record.clone();
            rebooted.started.as_mut().unwrap().boot = "another boot".into();
            assert!(!rebooted.is_running(me));
        }
        // A record without start times (older zpar) takes a pid for its
        // own only if it runs as zpar's hub or engine: this test process
        // does not, so it is neither counted nor signalled.
        let json = format!(r#"{{"hub": {me}, "engines": []}}"#);
        let old: ClusterPids = serde_json::from_str(&json).unwrap();
        assert!(!old.is_running(me));
        assert!(old
            .terminate(Duration::from_millis(10))
            .terminated
            .is_empty());
        let back: ClusterPids =
            serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
        assert_eq!(back, record);
    }
}
