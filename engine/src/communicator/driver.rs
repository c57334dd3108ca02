//! The thin loop that drives a communicator's state machines — the tree's
//! [`Collective`] and the [`Ring`] — over its sockets.
//!
//! # Design
//!
//! All protocol decisions (sequence numbers, stash, order, deadlines,
//! failures) are the machines'. The driver only takes a machine out of the
//! `Comm` (so the combine step, a script function, runs with nothing
//! borrowed), begins the call, performs what the machine returns, polls
//! until its next deadline, feeds it what arrives — a message of the other
//! machine is kept for it — and ticks it when nothing came. One loop,
//! [`run`], serves both machines through [`Driven`].

use super::collective::{Call, Collective, Combine, Event, Output, Source};
use super::errors::{err, zerr, DriveError};
use super::ring::{Ring, RingOut};
use super::tree::{send_all, Comm};
use super::wire::{Payload, Wire};
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// The combine step of a machine that only stashes (a message of a later
/// call); never asked to combine.
struct StashOnly;

impl Combine<Payload> for StashOnly {
    fn combine(&mut self, _k: usize, _child: u32, _part: Payload) -> Result<(), String> {
        Err("a message of another call".into())
    }
    fn piece(&mut self, _k: usize) -> Result<Payload, String> {
        Err("a message of another call".into())
    }
    fn accept(&mut self, _k: usize, _part: Payload) -> Result<(), String> {
        Err("a message of another call".into())
    }
}

/// What one of the outputs of a driven machine asks.
enum Step<O> {
    Done,
    Failed(super::collective::CollectiveError),
    Perform(O),
}

/// A state machine the driver can run: the tree's or the ring's.
trait Driven {
    /// What the machine returns.
    type Out;
    /// Whether an output ends the call, or is to be performed.
    fn step(out: Self::Out) -> Step<Self::Out>;
    /// Sends what the machine asked to send.
    fn perform(comm: &RefCell<Comm>, out: Self::Out) -> Result<(), DriveError>;
    /// When the machine next needs a tick.
    fn deadline(&self) -> Option<Instant>;
    /// Feeds it a message that arrived; a message of the other machine is
    /// kept for that one.
    fn deliver(
        &mut self,
        comm: &RefCell<Comm>,
        source: Source,
        wire: Wire,
        comb: &mut impl Combine<Payload>,
    ) -> Vec<Self::Out>;
    /// Lets time pass.
    fn tick(&mut self, comb: &mut impl Combine<Payload>) -> Vec<Self::Out>;
}

impl Driven for Collective<Payload> {
    type Out = Output<Payload>;

    fn step(out: Self::Out) -> Step<Self::Out> {
        match out {
            Output::Done => Step::Done,
            Output::Failed(e) => Step::Failed(e),
            other => Step::Perform(other),
        }
    }

    fn perform(comm: &RefCell<Comm>, out: Self::Out) -> Result<(), DriveError> {
        comm.borrow().perform(out).map_err(DriveError::Script)
    }

    fn deadline(&self) -> Option<Instant> {
        Collective::deadline(self)
    }

    fn deliver(
        &mut self,
        comm: &RefCell<Comm>,
        source: Source,
        wire: Wire,
        comb: &mut impl Combine<Payload>,
    ) -> Vec<Self::Out> {
        match (source, wire) {
            (source, Wire::Collective(msg)) => {
                self.handle(Event::Message(source, msg), Instant::now(), comb)
            }
            // A faster engine already in a ring call: kept for it.
            (Source::Child(from), Wire::Ring(msg)) => {
                comm.borrow_mut().ring_early.push((from, msg));
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn tick(&mut self, comb: &mut impl Combine<Payload>) -> Vec<Self::Out> {
        self.handle(Event::Tick, Instant::now(), comb)
    }
}

impl Driven for Ring<Payload> {
    type Out = RingOut<Payload>;

    fn step(out: Self::Out) -> Step<Self::Out> {
        match out {
            RingOut::Done => Step::Done,
            RingOut::Failed(e) => Step::Failed(e),
            send => Step::Perform(send),
        }
    }

    fn perform(comm: &RefCell<Comm>, out: Self::Out) -> Result<(), DriveError> {
        let RingOut::Send(msg) = out else {
            return Ok(());
        };
        let c = comm.borrow();
        let links = c.links().map_err(DriveError::Script)?;
        let (_, dealer) = links.ring_next.as_ref().expect("joined");
        send_all(dealer, Wire::Ring(msg)).map_err(|e| DriveError::Script(zerr("send", e)))
    }

    fn deadline(&self) -> Option<Instant> {
        Ring::deadline(self)
    }

    fn deliver(
        &mut self,
        comm: &RefCell<Comm>,
        source: Source,
        wire: Wire,
        comb: &mut impl Combine<Payload>,
    ) -> Vec<Self::Out> {
        match (source, wire) {
            (Source::Child(from), Wire::Ring(msg)) => {
                self.on_message(from, msg, Instant::now(), comb)
            }
            (source, Wire::Collective(msg)) => {
                // A faster engine already in the next tree call: the tree's
                // machine keeps the message for then.
                let mut c = comm.borrow_mut();
                if let Some(tree) = c.collective.as_mut() {
                    tree.on_message(source, msg, Instant::now(), &mut StashOnly);
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn tick(&mut self, _comb: &mut impl Combine<Payload>) -> Vec<Self::Out> {
        self.on_tick(Instant::now())
    }
}

/// Performs `first` and what follows until the machine is done or failed.
/// `comm` is borrowed only around socket work, never while `comb` runs.
fn run<M: Driven>(
    comm: &RefCell<Comm>,
    machine: &mut M,
    first: Vec<M::Out>,
    comb: &mut impl Combine<Payload>,
) -> Result<(), DriveError> {
    let mut outs = first;
    loop {
        for out in outs.drain(..) {
            match M::step(out) {
                Step::Done => return Ok(()),
                Step::Failed(e) => return Err(DriveError::Collective(e)),
                Step::Perform(out) => M::perform(comm, out)?,
            }
        }
        let got = comm
            .borrow()
            .receive(machine.deadline())
            .map_err(DriveError::Script)?;
        if let Some((source, wire)) = got {
            outs = machine.deliver(comm, source, wire, comb);
        }
        if outs.is_empty() {
            outs = machine.tick(comb);
        }
    }
}

/// The error when a machine is out of its `Comm`: a call runs already.
fn busy() -> DriveError {
    DriveError::Script(err(
        "a collective is already running on this communicator (called from inside a reduction?)",
    ))
}

/// Runs one tree call (`call`) with `comb`.
pub(super) fn drive(
    comm: &RefCell<Comm>,
    call: Call,
    comb: &mut impl Combine<Payload>,
) -> Result<(), DriveError> {
    let mut machine = {
        let mut c = comm.borrow_mut();
        c.links().map_err(DriveError::Script)?;
        c.collective.take().ok_or_else(busy)?
    };
    let first = machine.handle(Event::Begin(call), Instant::now(), comb);
    let result = run(comm, &mut machine, first, comb);
    if machine.is_active() {
        machine.abandon();
    }
    comm.borrow_mut().collective = Some(machine);
    result
}

/// Runs one ring allreduce of `pieces` pieces with `comb` (see
/// [`super::ring`]); the ring must have been joined.
pub(super) fn drive_ring(
    comm: &RefCell<Comm>,
    pieces: usize,
    timeout: Duration,
    comb: &mut impl Combine<Payload>,
) -> Result<(), DriveError> {
    let (mut ring, early) = {
        let mut c = comm.borrow_mut();
        let ring = c.ring.take().ok_or_else(busy)?;
        (ring, std::mem::take(&mut c.ring_early))
    };
    let now = Instant::now();
    for (from, msg) in early {
        // Later calls' messages: the machine stashes them.
        ring.on_message(from, msg, now, &mut StashOnly);
    }
    // The ring's call number is the second of this call's tree numbers
    // (the roster had the first), the same on every engine.
    let seq = comm.borrow().collective.as_ref().map_or(0, |m| m.seq() + 1);
    let first = ring.begin(seq, pieces, timeout, Instant::now(), comb);
    let result = run(comm, &mut ring, first, comb);
    if ring.is_active() {
        ring.abandon();
    }
    comm.borrow_mut().ring = Some(ring);
    result
}
