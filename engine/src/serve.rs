//! The request loop: the thin part of the engine that touches sockets.
//!
//! # Design
//!
//! One thread does everything that touches the namespace and the engine's
//! sockets. Each turn of [`Serving::serve`] waits for any socket (the hub's
//! link, read into a queue per channel, and a kernel's sockets), a stop
//! signal or the heartbeat's news of the hub, idle for many seconds at a
//! time ([`LONGEST_IDLE_WAIT`], [`IDLE_WAIT_MS`]); if control (the hub's,
//! the kernel's) has something, the turn serves control only and starts
//! again; otherwise it takes up to
//! [`REQUESTS_PER_TURN`] messages from each of mux, task and the kernel's
//! shell that has some, serving control after each, and stops taking them
//! once a shutdown or stop signal came. Every message goes the same way:
//! [`Io::take`] (frames, signature, JSON: `inbound.rs`), then
//! [`EngineCore::handle`], then the actions it returns, performed in order
//! by [`perform`].
//!
//! While a script runs, Rhai's progress callback ([`Shared::on_progress`])
//! asks the core whether to stop; every
//! [`CONTROL_CHECK_OPS`](crate::core::CONTROL_CHECK_OPS) operations it
//! serves control on this same thread, so an interrupt, abort
//! or shutdown is answered mid-script without a second thread touching a
//! socket. The core never asks for the namespace while a request runs, so
//! what the callback performs needs none ([`Runner`] is absent there).
//!
//! `print` output goes out on iopub as it happens and is recorded with the
//! reply ([`Io::stream`]). The heartbeat runs on a thread of its own
//! ([`crate::heartbeat`]); the watch over it is [`HubWatch`].

use crate::communicator::CommEnv;
use crate::core::{Action, EngineCore, Event, Progress, Reply, RunOutcome, Source};
use crate::hub_watch::HubWatch;
use crate::io::Io;
use crate::kernel::shell;
use crate::namespace::Namespace;
use crate::stop::{Interrupter, StopReason};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{error, warn};
use zpar_protocol::bulk::Segment;
use zpar_protocol::error::Chain;

/// How long a result's shared segment waits for its client.
const REPLY_SEGMENT_LIFE: Duration = Duration::from_secs(60);

/// What the loop and the script engine's callbacks share: the sockets and
/// the core.
pub(crate) struct Shared {
    pub(crate) io: RefCell<Io>,
    pub(crate) core: RefCell<EngineCore>,
    /// Set by SIGINT in a standalone kernel: stop the running cell.
    interrupt: Option<&'static AtomicBool>,
}

impl Shared {
    /// The sockets and core of one engine.
    pub(crate) fn new(
        io: Io,
        core: EngineCore,
        interrupt: Option<&'static AtomicBool>,
    ) -> Rc<Shared> {
        Rc::new(Shared {
            io: RefCell::new(io),
            core: RefCell::new(core),
            interrupt,
        })
    }

    /// Rhai's progress callback: whether the running script must stop.
    /// Serves the control sockets when the core says it is time.
    ///
    /// Rhai calls it at every operation. Between the core's looks at the
    /// control sockets nothing can set a stop reason, so only every
    /// [`PROGRESS_EVERY`]th operation asks the core (its operation limit
    /// then holds to within that many operations); asking at each one was
    /// a fifth of all the CPU a cluster spent on a map of Rhai loops.
    pub(crate) fn on_progress(&self, ops: u64) -> Option<StopReason> {
        if !ops.is_multiple_of(PROGRESS_EVERY) {
            return None;
        }
        let verdict = self.core.borrow().progress(ops, Instant::now);
        match verdict {
            Progress::Go => None,
            Progress::Stop(reason) => Some(reason),
            Progress::LookAtControl => {
                for source in [Source::Control, Source::KernelControl] {
                    take_all(self, None, source);
                }
                if self
                    .interrupt
                    .is_some_and(|f| f.swap(false, Ordering::Relaxed))
                {
                    act(self, None, Event::Interrupt(Interrupter::Signal));
                }
                self.core.borrow().stop_reason()
            }
        }
    }
}

/// How often the progress callback asks the core, in Rhai operations (a
/// divisor of [`crate::core::CONTROL_CHECK_OPS`], so the looks at the
/// control sockets fall on operations it asks at).
const PROGRESS_EVERY: u64 = 64;

const _: () = assert!(crate::core::CONTROL_CHECK_OPS.is_multiple_of(PROGRESS_EVERY));

/// What only the loop has, between requests: the namespace, and the shared
/// segments of results sent to clients on this host.
pub(crate) struct Runner<'a> {
    namespace: Namespace,
    /// Builds a fresh script engine (for `clear`).
    make_engine: &'a dyn Fn() -> rhai::Engine,
    /// Shared segments of results, oldest first. The client removes one
    /// once read; whatever is left goes after [`REPLY_SEGMENT_LIFE`] or
    /// when the engine stops (`bulk`).
    reply_segments: VecDeque<(Instant, Segment)>,
}

impl Runner<'_> {
    /// Performs an action that needs the namespace.
    fn perform(&mut self, shared: &Shared, action: Action) {
        match action {
            Action::Run(job) => {
                {
                    let mut io = shared.io.borrow_mut();
                    io.parent = Some(job.request.header.clone());
                    io.stdout.clear();
                    io.stderr.clear();
                }
                self.drop_stale_segments();
                let ran = crate::run::run(&mut self.namespace, &job);
                let now = Instant::now();
                self.reply_segments
                    .extend(ran.segments.into_iter().map(|s| (now, s)));
                let (stdout, stderr) = {
                    let mut io = shared.io.borrow_mut();
                    io.parent = None;
                    (
                        std::mem::take(&mut io.stdout),
                        std::mem::take(&mut io.stderr),
                    )
                };
                let outcome = RunOutcome {
                    value: ran.value,
                    shown: ran.shown,
                    buffers: ran.buffers,
                    stdout,
                    stderr,
                };
                act(shared, Some(self), Event::Ran(outcome));
                // Freeing a large request or the value a push replaced
                // (about 11 ms for 128 MiB) waits until it is answered.
                drop(job);
                self.namespace.drop_replaced();
            }
            Action::Answer {
                to,
                request,
                metadata,
            } => {
                let mut io = shared.io.borrow_mut();
                let engine = io.has_hub().then_some(io.engine_id);
                let content = shell::answer(&self.namespace, engine, &request);
                let reply = Reply {
                    to,
                    content,
                    metadata,
                };
                io.reply(&reply, Vec::new());
            }
            // Clearing also rebuilds the script engine, dropping any state
            // natives hold (communicators and their sockets).
            Action::Clear => self.namespace = Namespace::new((self.make_engine)()),
            other => error!(?other, "not an action on the namespace"),
        }
    }

    /// Removes the shared segments of results no client took within
    /// [`REPLY_SEGMENT_LIFE`]; before each request and on every turn of the
    /// loop, so an idle engine does not keep them.
    fn drop_stale_segments(&mut self) {
        while self
            .reply_segments
            .front()
            .is_some_and(|(at, _)| at.elapsed() > REPLY_SEGMENT_LIFE)
        {
            self.reply_segments.pop_front();
        }
    }
}

/// Hands an event to the core and performs what it returns, in order.
/// `runner` is None inside a run (the progress callback).
fn act(shared: &Shared, mut runner: Option<&mut Runner>, event: Event) {
    let actions = shared.core.borrow_mut().handle(event, Instant::now());
    for action in actions {
        perform(shared, runner.as_deref_mut(), action);
    }
}

/// Performs one action; those that report back to the core do so at once.
fn perform(shared: &Shared, runner: Option<&mut Runner>, action: Action) {
    match action {
        Action::Reply { reply, buffers } => shared.io.borrow_mut().reply(&reply, buffers),
        Action::Publish { parent, content } => shared.io.borrow_mut().publish(parent, *content),
        Action::Drain { sources, drain } => {
            let mut runner = runner;
            for source in sources {
                // What waits now, taken before any of it is answered: a
                // client that sends a new request once it sees a drained
                // one answered `aborted` must not find that request drained
                // too (a kernel's front end did, on a loaded machine).
                let waiting: Vec<_> =
                    std::iter::from_fn(|| shared.io.borrow_mut().take(source)).collect();
                for inbound in waiting {
                    let event = Event::Drained {
                        source,
                        inbound,
                        drain,
                    };
                    act(shared, runner.as_deref_mut(), event);
                }
            }
        }
        Action::ReceiveStream { job, chunks } => {
            let received = {
                let mut io = shared.io.borrow_mut();
                crate::stream_in::receive(&mut io, job.source, &job.request, chunks)
            };
            act(
                shared,
                runner,
                Event::StreamReceived {
                    job,
                    buffers: received.map_err(Box::new),
                },
            );
        }
        Action::BindKernel { to } => {
            let bound = shared.io.borrow_mut().bind_kernel();
            let binding = bound.map_err(|e| Chain(&e).to_string());
            act(shared, runner, Event::KernelBound { to, binding });
        }
        Action::UnbindKernel => shared.io.borrow_mut().unbind_kernel(),
        namespace_action => match runner {
            Some(runner) => runner.perform(shared, namespace_action),
            None => error!(
                action = ?namespace_action,
                "the core asked for the namespace while a request runs; dropped"
            ),
        },
    }
}

/// Serves everything waiting on `source`.
fn take_all(shared: &Shared, mut runner: Option<&mut Runner>, source: Source) {
    loop {
        let next = shared.io.borrow_mut().take(source);
        let Some(inbound) = next else { break };
        act(
            shared,
            runner.as_deref_mut(),
            Event::Arrived { source, inbound },
        );
    }
}

/// Requests taken from one socket in a turn of the loop before it polls
/// again (bounded, so mux, task and a kernel's shell take turns).
const REQUESTS_PER_TURN: usize = 16;

/// How long an idle engine waits for a message before it looks at what
/// has no socket, when nothing else can wake it: a stop signal with no
/// descriptor to wake it, a standalone kernel's parent, a hub found lost
/// (whose return it looks for). Every wake of a thousand idle packed
/// engines costs the machine: at 250 ms (and the relay thread's 1 s),
/// 2,000 idle engines kept 15 % of two cores busy.
const IDLE_WAIT_MS: i64 = 2_000;

/// The longest an idle engine with a hub waits: stop signals and the
/// heartbeat's news wake it at once (a descriptor the signal handler writes
/// to, a socket its heartbeat thread pokes); it looks again when the hub
/// would have been silent too long, and at least this often (shared
/// segments of replies expire, relay links close when idle).
const LONGEST_IDLE_WAIT: Duration = Duration::from_secs(30);

/// A slot of the loop's poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// A socket requests come from.
    Source(Source),
    /// The kernel's stdin, which nothing should use.
    Stdin,
}

/// The request loop of one engine.
pub(crate) struct Serving<'a> {
    shared: Rc<Shared>,
    runner: Runner<'a>,
    /// None for a standalone kernel.
    hub: Option<HubWatch>,
    comm_env: CommEnv,
    /// Set from outside (a signal handler) to stop the engine.
    stop: Option<&'static AtomicBool>,
    /// Turns readable once `stop` is set (None: a standalone kernel,
    /// which looks every 2 s).
    stop_wake: Option<RawFd>,
    /// A standalone kernel's parent (Jupyter's `JPY_PARENT_PID`): when it
    /// is gone, the kernel is an orphan and stops.
    parent_pid: Option<u32>,
}

impl<'a> Serving<'a> {
    /// A loop over `shared`'s sockets, running requests in a namespace
    /// built by `make_engine` (again at every `clear`).
    pub(crate) fn new(
        shared: Rc<Shared>,
        make_engine: &'a dyn Fn() -> rhai::Engine,
        hub: Option<HubWatch>,
        comm_env: CommEnv,
        (stop, stop_wake): (Option<&'static AtomicBool>, Option<RawFd>),
        parent_pid: Option<u32>,
    ) -> Serving<'a> {
        Serving {
            runner: Runner {
                namespace: Namespace::new(make_engine()),
                make_engine,
                reply_segments: VecDeque::new(),
            },
            shared,
            hub,
            comm_env,
            stop,
            stop_wake,
            parent_pid,
        }
    }

    /// How long an idle turn may wait for a socket (see
    /// [`LONGEST_IDLE_WAIT`]), in milliseconds.
    fn idle_wait_ms(&self) -> i64 {
        let unwoken_stop = self.stop.is_some() && self.stop_wake.is_none();
        match &self.hub {
            Some(hub) if !unwoken_stop => hub.next_look().min(LONGEST_IDLE_WAIT).as_millis() as i64,
            _ => IDLE_WAIT_MS,
        }
    }

    /// Serves until a shutdown, a stop signal or (a standalone kernel's)
    /// parent's end.
    pub(crate) fn serve(&mut self) {
        loop {
            self.between_requests();
            if self.stopping() {
                return;
            }
            if self.orphaned() {
                warn!("the kernel's parent process is gone; stopping");
                return;
            }
            // Poll with a timeout so a lost wake-up can never stall us.
            let Some(ready) = self.poll() else { continue };
            self.runner.drop_stale_segments();
            if ready.is_empty() {
                if let Some(relay) = self.shared.io.borrow_mut().relay() {
                    relay.tidy();
                }
            }
            self.watch_hub();
            let is_ready = |slot: Slot| ready.contains(&slot);
            if is_ready(Slot::Source(Source::Control))
                || is_ready(Slot::Source(Source::KernelControl))
            {
                self.serve_control();
                continue; // control first
            }
            for source in [Source::Mux, Source::Task, Source::KernelShell] {
                if is_ready(Slot::Source(source)) && !self.stopping() {
                    self.serve_requests(source);
                }
            }
            if is_ready(Slot::Stdin) {
                self.drop_stdin();
            }
        }
    }

    /// Serves what waits on the control sockets (the hub's, the kernel's).
    fn serve_control(&mut self) {
        for source in [Source::Control, Source::KernelControl] {
            take_all(&self.shared, Some(&mut self.runner), source);
        }
    }

    /// Serves up to [`REQUESTS_PER_TURN`] requests waiting on `source`, and
    /// the control sockets after each, so control still comes first: an
    /// abort or interrupt that arrives while one runs is served before the
    /// next. Taking a burst's requests one after another, rather than one a
    /// poll, spares a poll of every socket per request.
    fn serve_requests(&mut self, source: Source) {
        for _ in 0..REQUESTS_PER_TURN {
            // A shutdown or stop signal served meanwhile runs nothing more.
            if self.stopping() {
                return;
            }
            let next = self.shared.io.borrow_mut().take(source);
            let Some(inbound) = next else { break };
            let event = Event::Arrived { source, inbound };
            act(&self.shared, Some(&mut self.runner), event);
            self.between_requests();
            self.serve_control();
        }
    }

    /// Whether the engine is to stop: a shutdown request, or a stop
    /// signal.
    fn stopping(&self) -> bool {
        self.shared.core.borrow().shutting_down()
            || self.stop.is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// A SIGINT between cells interrupts nothing.
    fn between_requests(&self) {
        if let Some(flag) = self.shared.interrupt {
            flag.store(false, Ordering::Relaxed);
        }
    }

    /// Waits up to [`IDLE_WAIT_MS`] for any socket to have something (no wait when a
    /// request read off the link or stashed is ready); the slots ready, or
    /// None if the poll itself failed (a signal). The hub's channels share
    /// the link: it is polled once, and what it holds is read and sorted by
    /// channel before the slots are told.
    fn poll(&self) -> Option<Vec<Slot>> {
        let mut io = self.shared.io.borrow_mut();
        let hub_sources = [Source::Control, Source::Mux, Source::Task];
        let slots = [
            Slot::Source(Source::Mux),
            Slot::Source(Source::KernelControl),
            Slot::Source(Source::KernelShell),
            Slot::Stdin,
        ];
        let mut polled = Vec::with_capacity(slots.len());
        let mut items = Vec::with_capacity(slots.len() + 2);
        for slot in slots {
            let socket = match slot {
                Slot::Source(source) => io.socket(source),
                Slot::Stdin => io.kernel_stdin(),
            };
            if let Some(socket) = socket {
                polled.push(slot);
                items.push(socket.as_poll_item(zmq::POLLIN));
            }
        }
        // What wakes an idle engine besides its sockets (after the slots:
        // the zip below leaves them out): a stop signal, the heartbeat's
        // news of the hub.
        if let Some(fd) = self.stop_wake {
            items.push(zmq::PollItem::from_fd(fd, zmq::POLLIN));
        }
        if let Some(hub) = &self.hub {
            items.push(hub.wake_socket().as_poll_item(zmq::POLLIN));
        }
        // Requests read off the link already, or stashed while a chunk
        // stream came in, are ready at once.
        let waiting = hub_sources.iter().any(|s| io.has_arrived(*s));
        let timeout = if waiting { 0 } else { self.idle_wait_ms() };
        match zmq::poll(&mut items, timeout) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => return None,
            Err(e) => {
                warn!(error = %Chain(&e), "poll failed");
                return None;
            }
        }
        let readable: Vec<Slot> = polled
            .into_iter()
            .zip(&items)
            .filter(|(_, item)| item.is_readable())
            .map(|(slot, _)| slot)
            .collect();
        drop(items);
        if let Some(hub) = &self.hub {
            hub.drain_wakes();
        }
        // The link's slot stands for all three hub channels: read it, and
        // tell each channel that has something.
        let mut ready: Vec<Slot> = readable
            .into_iter()
            .filter(|s| *s != Slot::Source(Source::Mux))
            .collect();
        io.drain_link();
        ready.extend(
            hub_sources
                .into_iter()
                .filter(|s| io.has_arrived(*s))
                .map(Slot::Source),
        );
        Some(ready)
    }

    /// Whether a standalone kernel's parent is gone (this process has a new
    /// parent: it was adopted).
    fn orphaned(&self) -> bool {
        #[cfg(unix)]
        {
            self.parent_pid
                .is_some_and(|p| std::os::unix::process::parent_id() != p)
        }
        #[cfg(not(unix))]
        {
            false
        }
    }

    /// Nothing is ever asked on stdin (Rhai has no `input()`), so whatever
    /// comes there is read and dropped.
    fn drop_stdin(&self) {
        let io = self.shared.io.borrow();
        let Some(stdin) = io.kernel_stdin() else {
            return;
        };
        while let Ok(frames) = zpar_protocol::recv_frames(stdin, zmq::DONTWAIT) {
            warn!(
                frames = frames.len(),
                "dropped a message on the kernel's stdin channel: the kernel never asks for input"
            );
        }
    }

    /// Registers again after the hub restarted or dropped this engine; a
    /// new id or new communicator keys take effect here.
    fn watch_hub(&mut self) {
        let Some(hub) = &mut self.hub else { return };
        let registered = {
            let mut io = self.shared.io.borrow_mut();
            hub.watch(&mut io, &self.comm_env.advertise)
        };
        if let Some(registered) = registered {
            self.shared.io.borrow_mut().engine_id = registered.id;
            self.shared.core.borrow_mut().set_engine_id(registered.id);
            *self.comm_env.curve.borrow_mut() = registered.communicator_keys;
        }
    }
}
