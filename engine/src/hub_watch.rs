//! Registration with the hub, and the watch that registers again after the
//! hub restarted or dropped this engine.
//!
//! The heartbeat thread ([`crate::heartbeat`]) notes the hub's pings; the
//! request loop asks [`HubWatch::watch`] on every turn. After a restart
//! (pings of another hub instance), an `unknown` answer to a pong (the hub
//! dropped this engine during a network cut) or a silence, the engine
//! registers again — same uuid, asking for the same id — once pings come.

use crate::error::EngineError;
use crate::heartbeat::Heartbeat;
use crate::io::Io;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};
use zpar_protocol::error::Chain;
use zpar_protocol::{Content, CurveKeys, Message, RegistrationReply, RegistrationRequest, Status};

/// What the hub said when it took this engine.
pub(crate) struct Registered {
    /// The engine's id.
    pub id: u32,
    /// The hub's heartbeat period.
    pub hb_period: Duration,
    /// The hub's instance (the prefix of its pings).
    pub hub_instance: String,
    /// The CURVE pair for communicators; None without CURVE.
    pub communicator_keys: Option<CurveKeys>,
}

impl Registered {
    /// Reads an accepted registration reply.
    pub(crate) fn from_reply(r: RegistrationReply) -> Result<Registered, EngineError> {
        Ok(Registered {
            id: r.id,
            hb_period: Duration::from_millis(r.hb_period_ms.max(1)),
            communicator_keys: CurveKeys::from_fields(
                r.curve_publickey.as_deref(),
                r.curve_secretkey.as_deref(),
            )?,
            hub_instance: r.hub_instance,
        })
    }
}

/// How long after its last registration request the engine still looks
/// for the hub's answer.
const REGISTRATION_ANSWER_WINDOW: Duration = Duration::from_secs(30);

/// Watches the hub's heartbeat; after a silence (the hub died), registers
/// again once pings resume.
pub(crate) struct HubWatch {
    heartbeat: Heartbeat,
    uuid: String,
    hb_period: Duration,
    /// The engine's relay address, given again when it registers again.
    relay: String,
    lost: bool,
    /// When the hub was last found lost.
    lost_at: Instant,
    last_attempt: Instant,
    /// Why the hub last refused a registration, once said.
    refused: Option<String>,
}

/// How often an engine whose hub is lost looks for its return.
const LOOK_WHILE_LOST: Duration = Duration::from_secs(2);

/// How much longer than usual a refused engine waits to ask again.
const REFUSED_RETRY: Duration = Duration::from_secs(30);

impl HubWatch {
    /// A watch over a registered engine's heartbeat.
    pub(crate) fn new(
        heartbeat: Heartbeat,
        uuid: String,
        hb_period: Duration,
        relay: String,
    ) -> HubWatch {
        HubWatch {
            heartbeat,
            uuid,
            hb_period,
            relay,
            lost: false,
            lost_at: Instant::now(),
            last_attempt: Instant::now(),
            refused: None,
        }
    }

    /// How much silence means the hub is gone. Before the first ping the
    /// wait is four times longer: a hub that has just registered a
    /// thousand engines at once is still setting up their connections, and
    /// its first pings reach the last of them seconds late (at 1,000
    /// engines every engine once gave up on the hub and registered again).
    fn lost_after(&self) -> Duration {
        let limit = (self.hb_period * 5).max(Duration::from_secs(2));
        if self.heartbeat.heard_any() {
            limit
        } else {
            limit * 4
        }
    }

    /// How long the request loop may sleep before it must look again: until
    /// the hub's silence would reach the limit; every 2 s while the hub is
    /// lost (its return is looked for). News that cannot wait (a new hub,
    /// an "unknown", pings after a silence) wakes the loop through
    /// [`HubWatch::wake_socket`].
    pub(crate) fn next_look(&self) -> Duration {
        if self.lost {
            return LOOK_WHILE_LOST;
        }
        self.lost_after()
            .saturating_sub(self.heartbeat.silence())
            .max(Duration::from_millis(1))
    }

    /// Readable when the heartbeat thread has news for this engine.
    pub(crate) fn wake_socket(&self) -> &zmq::Socket {
        self.heartbeat.wake_socket()
    }

    /// Takes the heartbeat thread's wake-ups (the news itself is in its
    /// flags, read by [`HubWatch::watch`]).
    pub(crate) fn drain_wakes(&self) {
        self.heartbeat.drain_wakes();
    }

    /// Looks at the heartbeat and the link's registration answers: notices a lost
    /// hub, asks to register again once it is back, and returns the hub's
    /// acceptance when it comes (the caller takes its id and keys).
    /// `advertise` is where this engine's communicators listen.
    pub(crate) fn watch(&mut self, io: &mut Io, advertise: &str) -> Option<Registered> {
        let silence = self.heartbeat.silence();
        // Whether the hub just spoke to this engine (so it is there).
        let mut hub_spoke = false;
        if self.heartbeat.take_hub_changed() {
            warn!("the hub restarted; registering again");
            (self.lost, self.lost_at, hub_spoke) = (true, Instant::now(), true);
        } else if self
            .heartbeat
            .take_unknown()
            .is_some_and(|at| !self.lost && at > self.last_attempt + self.hb_period * 2)
        {
            // Answers to pongs sent before this engine (re)registered are
            // ignored, however late they are looked at: the hub knows it by
            // now.
            warn!("the hub dropped this engine (a network cut?); registering again");
            (self.lost, self.lost_at, hub_spoke) = (true, Instant::now(), true);
        } else if !self.lost && silence > self.lost_after() {
            warn!(silence = ?silence, "no heartbeat from the hub; will register again when it is back");
            (self.lost, self.lost_at) = (true, Instant::now());
        }
        let mut accepted = None;
        // Answers to our re-registration: only while one can come (a look
        // at an empty socket costs a system call, on every turn of the
        // loop).
        let answer_may_come = self.lost || self.last_attempt.elapsed() < REGISTRATION_ANSWER_WINDOW;
        while let Some(frames) = answer_may_come.then(|| io.take_registration()).flatten() {
            match io.session.decode_frames(frames) {
                Ok(Message {
                    content: Content::RegistrationReply(r),
                    ..
                }) if r.status == Status::Ok => {
                    if r.id != io.engine_id {
                        warn!(
                            old = io.engine_id,
                            new = r.id,
                            "the restarted hub gave this engine a new id"
                        );
                    }
                    let registered = match Registered::from_reply(r) {
                        Ok(r) => r,
                        Err(e) => {
                            warn!(error = %Chain(&e), "the hub's registration reply has bad communicator keys");
                            continue;
                        }
                    };
                    info!(engine = registered.id, "registered with the hub again");
                    self.refused = None;
                    self.heartbeat.set_hub(&registered.hub_instance);
                    self.lost = false;
                    self.hb_period = registered.hb_period;
                    accepted = Some(registered);
                }
                Ok(Message {
                    content: Content::RegistrationReply(r),
                    ..
                }) => {
                    // Refused (no room left at a restarted hub): said once
                    // per reason, and asked again only every half minute,
                    // as engines leaving may make room.
                    let why = r.evalue.unwrap_or_default();
                    if self.refused.as_deref() != Some(why.as_str()) {
                        error!(reason = %why, "the hub refused this engine's registration; asking again every 30 s");
                        self.refused = Some(why);
                    }
                    self.last_attempt = Instant::now() + REFUSED_RETRY;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %Chain(&e), "bad message on the registration channel"),
            }
        }
        // The hub is back when it spoke, when pings are fresh, or when one
        // came since the loss was noticed: a hub that does not know this
        // engine pings it only in answer to its hellos, one ping every few
        // seconds, which the request loop (woken every couple of seconds
        // when idle) may not look at while it is fresh.
        let back = hub_spoke || silence < self.hb_period * 2 || silence < self.lost_at.elapsed();
        if self.lost && back && self.last_attempt.elapsed() > Duration::from_millis(500) {
            self.last_attempt = Instant::now();
            let req = Message::new(
                &io.session,
                Content::RegistrationRequest(RegistrationRequest {
                    uuid: self.uuid.clone(),
                    id: Some(io.engine_id),
                    host: Some(advertise.to_string()),
                    relay: Some(self.relay.clone()),
                    heartbeat: Some(self.heartbeat.route().to_string()),
                }),
            );
            io.send_registration(io.session.encode(&req).into_frames());
        }
        accepted
    }
}
