//! `zpar console`: an interactive REPL against a hub, in the spirit of
//! IPython's parallel magics (`%px`, `%autopx`, `%pxresult`).
//!
//! It connects a [`Client`] to the hub and reads commands: on a terminal
//! with rustyline (history in the profile folder, Ctrl-R, tab completion,
//! multi-line blocks), otherwise line by line from standard input, so a
//! session can be scripted (`zpar console < script`; the exit code is 1 if
//! a command failed).
//!
//! | module | what |
//! | --- | --- |
//! | [`commands`] | the [`Command`] enum, parsed from a line |
//! | `help` | command names, usage lines and `%help` texts |
//! | [`targets`] | `all`, `0,2`, `0-3` |
//! | [`literal`] | JSON and Rhai literals for `%push` and `%scatter` |
//! | [`input`] | unfinished blocks continue; names code defines |
//! | [`render`] | `[stdout:ID]`, `Out[ID:N]:`, `[ID:error]` lines |
//! | `output` | one printer for the command and event threads |
//! | `session` | the state and the one `match` over commands |
//! | `hub` | a thread that notices the hub going and coming back |
//! | [`repl`] | the rustyline loop and the scripted loop |
//!
//! Threads: the caller's thread reads input and runs commands, waiting on
//! results in short slices so Ctrl-C (a SIGINT flag) is seen at once; one
//! thread prints streamed output and engine joins and leaves as they come;
//! one asks the hub every second whether it is still there.
//!
//! ```text
//! $ zpar cluster start -n 4 --daemon
//! $ zpar console
//! In [1]: %px print(`engine ${1 + 1}`); 6 * 7
//! [stdout:0] engine 2
//! ...
//! Out[0:1]: 42
//! ```

pub mod commands;
mod help;
mod hub;
pub mod input;
pub mod literal;
mod output;
pub mod render;
pub mod repl;
mod session;
mod signal;
pub mod targets;

pub use commands::Command;
pub use targets::TargetSpec;

use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zpar_client::Client;
use zpar_protocol::backoff::{poll_until, Backoff};
use zpar_protocol::{ClientConnection, Profile};

/// `zpar console` arguments.
#[derive(Args, Debug, Clone)]
pub struct ConsoleArgs {
    /// Profile name (folder `$ZPAR_DIR/profile_NAME`, default `default`).
    #[arg(long, conflicts_with_all = ["profile_dir", "file"])]
    pub profile: Option<String>,
    /// Profile folder, given outright.
    #[arg(long, conflicts_with = "file")]
    pub profile_dir: Option<PathBuf>,
    /// Client connection file (default: the profile's zpar-client.json).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The engines commands address at first: all, 0,2, 0-3.
    #[arg(long, default_value = "all", value_parser = TargetSpec::parse)]
    pub targets: TargetSpec,
    /// Seconds to wait for the hub at start, and at most for the answers to
    /// data and control commands (%push, %pull, %engines, ...). %px waits
    /// until done or Ctrl-C.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Seconds a request may wait for its replies before the console asks
    /// the hub what became of it (a request or reply lost on a connection
    /// that dropped).
    #[arg(long, default_value_t = zpar_client::io::DEFAULT_RECALL_AFTER.as_secs_f64())]
    pub recall_after: f64,
}

impl ConsoleArgs {
    /// Checks the arguments and resolves the files.
    pub fn config(&self) -> Result<ConsoleConfig> {
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            bail!("--timeout must be a number of seconds above 0");
        }
        if !(self.recall_after.is_finite() && self.recall_after > 0.0) {
            bail!("--recall-after must be a number of seconds above 0");
        }
        let (connection_file, folder, profile) = match &self.file {
            Some(f) => {
                let dir = f.parent().unwrap_or(Path::new("."));
                // A profile's file sits in <profile>/security/.
                let folder = if dir.file_name().is_some_and(|n| n == "security") {
                    dir.parent().unwrap_or(dir)
                } else {
                    dir
                };
                (f.clone(), folder.to_path_buf(), None)
            }
            None => {
                let p = Profile::resolve(self.profile.as_deref(), self.profile_dir.as_deref());
                (p.client_file(), p.dir.clone(), Some(p.dir))
            }
        };
        Ok(ConsoleConfig {
            connection_file,
            profile,
            history_file: Some(folder.join(HISTORY_FILE)),
            targets: self.targets.clone(),
            timeout: Duration::from_secs_f64(self.timeout),
            recall_after: Duration::from_secs_f64(self.recall_after),
        })
    }
}

/// The history file's name in the profile folder (0600).
pub const HISTORY_FILE: &str = zpar_protocol::connection::HISTORY_FILE;

/// What the console needs to start.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The client connection file.
    pub connection_file: PathBuf,
    /// The profile folder it is in (None: given with `--file`): if it is
    /// not there yet, the profile's record says whether a hub may write it.
    pub profile: Option<PathBuf>,
    /// Where input history is kept across sessions (None: nowhere).
    pub history_file: Option<PathBuf>,
    /// The first targets.
    pub targets: TargetSpec,
    /// Wait for the hub at start, and for data and control commands.
    pub timeout: Duration,
    /// How long a request may wait before the hub is asked about it.
    pub recall_after: Duration,
}

/// Runs the console until `%quit`, Ctrl-D or the end of the input. Returns
/// the process exit code: 0, or with piped input 1 if a command failed and
/// 130 if Ctrl-C stopped one.
pub fn run(config: ConsoleConfig) -> Result<i32> {
    let interactive = std::io::stdin().is_terminal();
    let tty_out = std::io::stdout().is_terminal();
    let colour = interactive
        && tty_out
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var("TERM").ok().is_none_or(|t| t != "dumb");
    let out = output::Output::new(output::Sink::Stdout, colour, interactive && tty_out);

    let conn = read_connection(&config)?;
    let waiting =
        crate::wait::WaitNotice::start(format!("the hub at {}", conn.url(conn.registration)));
    let client = Client::from_connection_timeout(conn, config.timeout);
    drop(waiting);
    let client = client.with_context(|| {
        format!(
            "connecting with {} (start a cluster with `zpar cluster start`)",
            config.connection_file.display()
        )
    })?;
    client.set_recall_after(config.recall_after)?;
    signal::install()?;
    out.pump(client.events()?)
        .context("starting the event thread")?;
    let hub =
        hub::HubWatch::start(client.clone(), out.clone()).context("starting the hub watch")?;
    let mut session = session::Session::new(client, out, hub, config.targets, config.timeout);
    session.banner(interactive);
    if interactive {
        repl::interactive(&mut session, config.history_file.as_deref())
    } else {
        repl::scripted(&mut session, std::io::stdin().lock())
    }
}

/// Reads the connection file, waiting up to the timeout for a hub that is
/// still starting to write it; at once, if no hub could.
fn read_connection(config: &ConsoleConfig) -> Result<ClientConnection> {
    let (path, timeout) = (&config.connection_file, config.timeout);
    if !path.exists() {
        match &config.profile {
            Some(dir) => a_hub_may_come(dir, path)?,
            None => crate::wait::could_be_written(path)?,
        }
    }
    let pauses = Backoff::new(Duration::from_millis(5), Duration::from_millis(200));
    let _waiting = crate::wait::WaitNotice::start(format!("the hub to write {}", path.display()));
    let found = poll_until(Instant::now() + timeout, pauses, || {
        path.exists().then_some(())
    });
    if found.is_none() {
        bail!(
            "no hub connection file {} (start a cluster with `zpar cluster start`, or give \
             --profile, --profile-dir or --file)",
            path.display()
        );
    }
    Ok(zpar_protocol::connection::read_connection_file(path)?)
}

/// Whether a process on this machine runs as `zpar hub` or `zpar cluster
/// start` for the profile `dir` (read from its arguments: `--profile-dir`,
/// `--profile`, or neither for the default profile; Linux, false where
/// `/proc` says nothing).
fn a_hub_is_starting(dir: &Path) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            return false;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .skip(1)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let starting = match args.first().map(String::as_str) {
            Some("hub") => true,
            Some("cluster") => args.get(1).is_some_and(|a| a == "start"),
            _ => false,
        };
        starting && profile_of(&args) == dir
    })
}

/// The profile folder a `zpar` command line names.
fn profile_of(args: &[String]) -> PathBuf {
    let value = |flag: &str| {
        args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix(&format!("{flag}="))
                .map(str::to_string)
                .or_else(|| (a == flag).then(|| args.get(i + 1).cloned()).flatten())
        })
    };
    let dir = value("--profile-dir").map(PathBuf::from);
    Profile::resolve(value("--profile").as_deref(), dir.as_deref()).dir
}

/// The profile `dir` has no connection file `file`: one is worth waiting for
/// if the profile records a cluster whose hub runs, or if no cluster is
/// recorded but a zpar hub or cluster is starting on this machine (its
/// files not written yet: `zpar hub &` then `zpar console`, or a `cluster
/// start` still waiting for its engines); otherwise says at once what is
/// missing.
fn a_hub_may_come(dir: &Path, file: &Path) -> Result<()> {
    let record = dir.join(zpar_client::cluster::PID_FILE);
    match zpar_protocol::connection::read_json_file::<zpar_client::cluster::ClusterPids>(&record) {
        Ok(pids) if pids.is_running(pids.hub) => Ok(()),
        Err(_) if a_hub_is_starting(dir) => Ok(()),
        Ok(pids) => bail!(
            "the cluster recorded in {} has lost its hub (pid {} is gone): `zpar cluster stop` \
             ends what is left, then `zpar cluster start` a new one",
            record.display(),
            pids.hub
        ),
        Err(_) => bail!(
            "no cluster runs for the profile {} (no {} and no {}): start one with `zpar cluster \
             start` and the same --profile or --profile-dir, or give --file",
            dir.display(),
            file.display(),
            zpar_client::cluster::PID_FILE
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_names_its_profile() {
        let args = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            profile_of(&args("hub --profile-dir /tmp/p")),
            PathBuf::from("/tmp/p")
        );
        assert_eq!(
            profile_of(&args("hub --profile-dir=/tmp/q --ip 0.0.0.0")),
            PathBuf::from("/tmp/q")
        );
        assert_eq!(
            profile_of(&args("cluster start --profile x -n 2")),
            Profile::named("x").dir
        );
        assert_eq!(profile_of(&args("hub")), Profile::named("default").dir);
    }
}
