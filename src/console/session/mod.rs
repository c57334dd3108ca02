//! The console's state and its one `match` over [`Command`]s: current
//! targets, autopx mode, per-engine execution counters, the last `%px`
//! result and the ones still running, and the names seen for completion.
//!
//! # Waiting
//!
//! A command never blocks in one long call: it waits on its
//! [`AsyncResult`] in slices of [`SLICE`], and between slices checks
//! Ctrl-C (then interrupts the engines and returns to the prompt), its
//! deadline, and whether the hub is still there; after a second it shows a
//! progress line. Blocking client calls without a result handle (queue
//! status, communicator setup) run on a helper thread waited on the same
//! way.
//!
//! `%px` and `%run` live in [`px`], the data and control commands in
//! [`data`].

mod data;
mod map;
mod px;
mod run;

use run::{Control, PxRun};

use super::commands::{self, Command};
use super::hub::HubWatch;
use super::output::Output;
use super::render;
use super::signal;
use super::targets::{compact, TargetSpec};
use anyhow::{bail, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use zpar_client::{AsyncResult, Client, DirectView};

/// How long one wait lasts before Ctrl-C and the hub are checked again.
pub const SLICE: Duration = Duration::from_millis(50);
/// A command running longer than this shows its progress.
pub const PROGRESS_AFTER: Duration = Duration::from_secs(1);
/// After an interrupt, how long to wait for the engines' answers.
const GRACE: Duration = Duration::from_secs(5);

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// It did what was asked.
    Ok,
    /// It failed, or an engine reported an error.
    Failed,
    /// Ctrl-C stopped it.
    Interrupted,
}

/// Names the session has pushed, pulled or defined, for tab completion.
/// Shared with the line editor.
#[derive(Debug, Clone, Default)]
pub struct Names(Arc<Mutex<BTreeSet<String>>>);

impl Names {
    /// Remembers names.
    pub fn add<I: IntoIterator<Item = S>, S: Into<String>>(&self, names: I) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.extend(names.into_iter().map(Into::into));
    }

    /// The names, sorted.
    pub fn snapshot(&self) -> Vec<String> {
        let set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.iter().cloned().collect()
    }
}

enum WaitEnd {
    Done,
    Interrupted,
    TimedOut,
    HubGone,
}

/// The console session.
pub struct Session {
    client: Client,
    out: Output,
    hub: HubWatch,
    targets: TargetSpec,
    autopx: bool,
    counts: BTreeMap<u32, u64>,
    last: Option<PxRun>,
    pending: Vec<PxRun>,
    names: Names,
    history: Vec<String>,
    /// Bound for data and control commands and hub questions.
    timeout: Duration,
    quit: bool,
    /// The dashboard `%dashboard` started, served while the session lasts.
    dashboard: Option<crate::dashboard::Dashboard>,
}

impl Session {
    /// A session over a connected client.
    pub fn new(
        client: Client,
        out: Output,
        hub: HubWatch,
        targets: TargetSpec,
        timeout: Duration,
    ) -> Session {
        Session {
            client,
            out,
            hub,
            targets,
            autopx: false,
            counts: BTreeMap::new(),
            last: None,
            pending: Vec::new(),
            names: Names::default(),
            history: Vec::new(),
            timeout,
            quit: false,
            dashboard: None,
        }
    }

    /// The printer.
    pub fn out(&self) -> &Output {
        &self.out
    }

    /// Names for completion.
    pub fn names(&self) -> Names {
        self.names.clone()
    }

    /// Whether plain lines run as `%px`.
    pub fn autopx(&self) -> bool {
        self.autopx
    }

    /// Whether `%quit` was given.
    pub fn quit(&self) -> bool {
        self.quit
    }

    /// The first lines: where we are connected and which engines are there.
    pub fn banner(&self, interactive: bool) {
        let ids = self.client.ids();
        let engines = if ids.is_empty() {
            "no engines yet (they are announced as they join)".to_string()
        } else {
            format!("{} ({})", render::engines(&ids), ids.len())
        };
        self.out.line(format!(
            "zpar console: hub at {}; {engines}; targets: {}",
            self.hub.url(),
            self.targets
        ));
        if interactive {
            self.out
                .line("%help lists the commands; Ctrl-C interrupts, Ctrl-D leaves.");
        }
    }

    /// Runs one input (a line, or several for an unfinished block).
    pub fn handle(&mut self, input: &str) -> Status {
        if !input.trim().is_empty() {
            self.history.push(input.to_string());
        }
        let command = match commands::parse(input, self.autopx) {
            Ok(c) => c,
            Err(e) => {
                self.out.line(render::failure(&e.0, self.out.colour()));
                return Status::Failed;
            }
        };
        signal::clear();
        match self.dispatch(command) {
            Ok(s) => s,
            Err(e) => {
                self.report(&e);
                Status::Failed
            }
        }
    }

    fn report(&self, e: &anyhow::Error) {
        let colour = self.out.colour();
        match e.downcast_ref::<zpar_client::Error>() {
            Some(ce) => self.out.lines(render::error_lines(ce, colour)),
            None => self.out.line(render::failure(&format!("{e:#}"), colour)),
        }
    }

    fn dispatch(&mut self, command: Command) -> Result<Status> {
        match command {
            Command::Nothing => Ok(Status::Ok),
            Command::Px {
                code,
                targets,
                block,
                timeout,
                label,
            } => self.px(&code, &targets, block, timeout, &label),
            Command::Run { path, targets } => self.run_file(&path, &targets),
            Command::Autopx => {
                self.autopx = !self.autopx;
                self.out.line(if self.autopx {
                    "%autopx on: plain lines run on the targets (%autopx again to stop)"
                } else {
                    "%autopx off"
                });
                Ok(Status::Ok)
            }
            Command::Push {
                name,
                value,
                targets,
            } => self.push(&name, value, &targets),
            Command::Pull { name, targets } => self.pull(&name, &targets),
            Command::Scatter {
                name,
                value,
                targets,
                flatten,
            } => self.scatter(&name, value, &targets, flatten),
            Command::Gather { name, targets } => self.gather(&name, &targets),
            Command::Map {
                sequence,
                function,
                ordered,
                max_outstanding,
                label,
                targets,
            } => {
                let job = map::MapJob {
                    sequence,
                    function,
                    ordered,
                    max_outstanding,
                    label,
                };
                self.map(job, &targets)
            }
            Command::Comm { name, targets } => self.comm(&name, &targets),
            Command::Targets(spec) => self.set_targets(spec),
            Command::Engines { all } => self.engines(all),
            Command::Dashboard => {
                if self.dashboard.is_none() {
                    // A client of its own: this one's events are the
                    // console's (a client hands them to one reader).
                    let client =
                        zpar_client::Client::from_connection(self.client.connection().clone())?;
                    self.dashboard = Some(crate::dashboard::Dashboard::start(client, 0)?);
                }
                let url = self.dashboard.as_ref().map(|d| d.url().to_string());
                self.out.line(format!(
                    "dashboard: {} (served while this console runs)",
                    url.unwrap_or_default()
                ));
                Ok(Status::Ok)
            }
            Command::Result => Ok(self.result()),
            Command::Wait(limit) => self.wait(limit),
            Command::Abort { targets, running } => {
                self.control(Control::Abort { running }, &targets)
            }
            Command::Interrupt(t) => self.control(Control::Interrupt, &t),
            Command::Clear(t) => self.control(Control::Clear, &t),
            Command::BindKernel(t) => self.bind_kernel(&t),
            Command::History => {
                let lines = self
                    .history
                    .iter()
                    .enumerate()
                    .map(|(i, h)| format!("{:>4}  {}", i + 1, h.replace('\n', "\n      ")));
                self.out.lines(lines.collect::<Vec<_>>());
                Ok(Status::Ok)
            }
            Command::Quit => {
                self.quit = true;
                Ok(Status::Ok)
            }
            Command::Help(name) => match commands::help(name.as_deref()) {
                Ok(text) => {
                    self.out.line(text);
                    Ok(Status::Ok)
                }
                Err(e) => bail!(e),
            },
        }
    }

    /// Fails at once, without sending, while the hub is known to be gone
    /// (after asking it once more).
    fn ensure_hub(&self) -> Result<()> {
        if !self.hub.is_down() {
            return Ok(());
        }
        let probe = self.timeout.min(Duration::from_secs(2));
        match self.client.refresh_engines(probe) {
            Ok(_) => {
                self.hub.set_down(false);
                Ok(())
            }
            Err(_) => bail!(
                "the hub at {} is not answering, so nothing was sent; the console keeps \
                 watching and says when it is back",
                self.hub.url()
            ),
        }
    }

    /// A view over `targets` (or the current targets) and its engine ids.
    fn view(&self, targets: &Option<TargetSpec>) -> Result<(DirectView, Vec<u32>)> {
        let spec = targets.as_ref().unwrap_or(&self.targets);
        let known = self.client.ids();
        if let TargetSpec::Ids(ids) = spec {
            if let Some(bad) = ids.iter().find(|i| !known.contains(i)) {
                bail!(
                    "engine {bad} is not registered with the hub (engines: {}; %engines lists them)",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        compact(&known)
                    }
                );
            }
        }
        let view = self.client.view(spec.to_targets());
        let ids = view.targets()?;
        Ok((view, ids))
    }

    /// Waits for `ar` in slices, watching Ctrl-C, the deadline and the hub.
    fn wait_ar(&self, ar: &AsyncResult, deadline: Option<Instant>) -> WaitEnd {
        let start = Instant::now();
        let end = loop {
            if ar.wait(Some(SLICE)) {
                break WaitEnd::Done;
            }
            if signal::take() {
                break WaitEnd::Interrupted;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break WaitEnd::TimedOut;
            }
            if self.hub.is_down() {
                break WaitEnd::HubGone;
            }
            let elapsed = start.elapsed();
            if elapsed >= PROGRESS_AFTER {
                let (done, total) = ar.progress();
                self.out.progress(done, total, elapsed);
            }
        };
        self.out.end_progress();
        end
    }

    /// Runs a blocking client call on a helper thread, waiting for it in
    /// slices; None if Ctrl-C stopped the wait.
    fn blocking<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        let start = Instant::now();
        loop {
            match rx.recv_timeout(SLICE) {
                Ok(v) => {
                    self.out.end_progress();
                    return Some(v);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.out.end_progress();
                    return None;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if signal::take() {
                self.out.end_progress();
                return None;
            }
            if start.elapsed() >= PROGRESS_AFTER {
                self.out.progress(0, 1, start.elapsed());
            }
        }
    }

    fn hub_gone_while_waiting(&self) -> String {
        format!(
            "the hub at {} stopped answering while the command ran; %wait picks it up again \
             if the hub comes back",
            self.hub.url()
        )
    }
}
