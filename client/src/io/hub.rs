//! The I/O thread's watch on the hub: heartbeat pings, silence past the
//! limit, loss and return (the decisions are
//! [`HubLiveness`](crate::watch::HubLiveness)'s).

use super::{ClientEvent, IoLoop, IoSockets, PROBE_PERIOD};
use crate::error::{Error, HubLoss};
use crate::watch::HubChange;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use zpar_protocol::curve::HandshakeWatch;
use zpar_protocol::error::Chain;
use zpar_protocol::{send_frames, ConnectionRequest, Content, Message, ResultRequest};

/// How many times the restarted hub is asked about a request it does not
/// know before that request fails.
const RESTART_TRIES: u32 = 4;

/// The pause before asking the restarted hub again (times the tries so
/// far: 0.25, 0.5, 0.75 s).
const RESTART_RETRY: Duration = Duration::from_millis(250);

/// After a hub restart: the requests this client still waits for, which
/// the new hub may be running (sent after the old one died, they were
/// delivered to the new one when the sockets reconnected).
pub(super) struct RestartCheck {
    /// The requests not yet accounted for.
    msg_ids: Vec<String>,
    /// What those the new hub never knew fail with.
    error: Error,
    /// The question in flight and when it went.
    asking: Option<(String, Instant)>,
    /// Questions answered so far.
    tries: u32,
    /// When to ask next.
    next: Instant,
}

/// After the hub came back, ask for its engine table again this many
/// milliseconds later.
const REPROBES_MS: [u64; 5] = [250, 500, 1000, 2000, 4000];

impl IoLoop {
    /// Reads the hub's heartbeat pings.
    pub(super) fn drain_heartbeat(&mut self, now: Instant) {
        loop {
            let Some(hb) = &self.sockets.heartbeat else {
                return;
            };
            let ping = match hb.recv_msg(zmq::DONTWAIT) {
                Ok(p) => p,
                Err(zmq::Error::EAGAIN) => return,
                Err(e) => return warn!(error = %Chain(&e), "heartbeat receive failed"),
            };
            let change = self.hub.ping(&ping, now);
            self.on_hub_change(change);
        }
    }

    /// Reads the query socket's handshake events. Once they show that the
    /// hub refuses this client's keys, every query waiting fails with the
    /// reason, and so do new ones, until a handshake succeeds.
    pub(super) fn drain_handshakes(&mut self) {
        while let Some((event, _)) = self.sockets.handshakes.try_next() {
            self.handshake.feed(&event);
        }
        match self.handshake.outcome().refusal() {
            Some(reason) if self.refused.is_none() => {
                info!(url = %self.url, %reason, "the hub refuses this client's connection");
                self.refused = Some(reason);
                let error = self.refusal();
                for (_, reply) in self.queries.drain() {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            Some(_) => {}
            None => self.refused = None,
        }
    }

    /// The error for a hub that refuses this client's keys.
    pub(super) fn refusal(&self) -> Error {
        Error::Handshake {
            url: self.url.clone(),
            reason: self.refused.clone().unwrap_or_default(),
        }
    }

    /// Finds the hub lost when it has been silent too long; without
    /// heartbeats, asks it after a quiet second.
    pub(super) fn watch_hub(&mut self) {
        let now = Instant::now();
        self.run_restart_check(now);
        let change = self.hub.check(now);
        self.on_hub_change(change);
        let quiet = self.hub.silence(now) >= PROBE_PERIOD || self.hub.is_lost();
        let asking = self
            .probe
            .as_ref()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) < PROBE_PERIOD);
        let reprobe = self.reprobes.front().is_some_and(|at| *at <= now);
        if !asking && (reprobe || (self.sockets.heartbeat.is_none() && quiet)) {
            self.reprobes.retain(|at| *at > now);
            self.send_probe(now);
        }
    }

    pub(super) fn on_hub_change(&mut self, change: Option<HubChange>) {
        match change {
            None => {}
            Some(HubChange::Lost { silence }) => {
                self.lose_hub(HubLoss::Silent { silence });
                // Anything still queued for the old hub is dropped with the
                // old sockets: a request reported lost must not run later.
                match IoSockets::connect(
                    &self.ctx,
                    &self.conn,
                    &self.identity,
                    &self.session.session_id,
                ) {
                    Ok(sockets) => {
                        self.sockets = sockets;
                        self.handshake = HandshakeWatch::new(self.conn.curve_publickey.is_some());
                    }
                    Err(e) => {
                        warn!(error = %Chain(&e), url = %self.url, "could not make new sockets for the hub; keeping the old ones")
                    }
                }
            }
            Some(HubChange::Restarted) => {
                // Requests sent since the old hub died went to the new one
                // (the sockets reconnect and deliver what they queued), and
                // it may be running them: ask it before failing any.
                self.lose_hub_keeping_requests(HubLoss::Restarted);
                self.hub_back();
            }
            Some(HubChange::Back) => self.hub_back(),
        }
    }

    /// Fails everything waiting on the hub with [`Error::HubLost`].
    fn lose_hub(&mut self, reason: HubLoss) {
        self.lose_hub_as(reason, false)
    }

    /// Like [`lose_hub`](Self::lose_hub), but for a hub that restarted and
    /// already answers: the requests this client waits for are kept and
    /// the new hub is asked about them ([`RestartCheck`]).
    fn lose_hub_keeping_requests(&mut self, reason: HubLoss) {
        self.lose_hub_as(reason, true)
    }

    fn lose_hub_as(&mut self, reason: HubLoss, keep_requests: bool) {
        let error = Error::HubLost {
            url: self.url.clone(),
            reason,
        };
        *self.table.hub_lost.lock().expect("hub lock") = Some(error.clone());
        let mut failed = 0;
        if keep_requests {
            let msg_ids: Vec<String> = self.tracked.keys().cloned().collect();
            if !msg_ids.is_empty() {
                info!(
                    waiting = msg_ids.len(),
                    "asking the restarted hub about the requests still waiting"
                );
                self.restart_check = Some(RestartCheck {
                    msg_ids,
                    error: error.clone(),
                    asking: None,
                    tries: 0,
                    next: Instant::now(),
                });
            }
        } else {
            self.restart_check = None;
            for (_, (weak, _)) in self.tracked.drain() {
                if let Some(state) = weak.upgrade() {
                    failed += state.fail_open(&error);
                }
            }
            self.owned.clear();
            self.orphans.clear();
            self.streams.clear();
        }
        for state in self.watches.take_all() {
            failed += state.fail_open(&error);
        }
        // The engines registered with the lost hub; a hub that comes back
        // lists its own (engines register again by themselves).
        self.table.engines.lock().expect("table lock").clear();
        self.announced = Some(Default::default());
        for (_, reply) in self.queries.drain() {
            let _ = reply.send(Err(error.clone()));
        }
        self.probe = None;
        self.reprobes.clear();
        self.table.changed.notify_all();
        warn!(url = %self.url, %reason, failed, "lost the hub; pending results failed");
        self.emit(ClientEvent::HubLost {
            url: self.url.clone(),
            reason,
        });
    }

    /// Whether `parent` is the question of the restart check in flight.
    pub(super) fn is_restart_check(&self, parent: &str) -> bool {
        self.restart_check
            .as_ref()
            .and_then(|c| c.asking.as_ref())
            .is_some_and(|(id, _)| id == parent)
    }

    /// On the timer: asks the restarted hub about the requests of the
    /// check when due; fails them all if it never answers.
    pub(super) fn run_restart_check(&mut self, now: Instant) {
        let Some(check) = &mut self.restart_check else {
            return;
        };
        if let Some((_, at)) = &check.asking {
            if now.saturating_duration_since(*at) > crate::watch::ASK_TIMEOUT {
                warn!("the restarted hub did not say what became of the requests still waiting; they fail");
                self.end_restart_check();
            }
            return;
        }
        if check.next > now {
            return;
        }
        check.msg_ids.retain(|id| self.tracked.contains_key(id));
        if check.msg_ids.is_empty() {
            self.restart_check = None;
            return;
        }
        let ask = Message::new(
            &self.session,
            Content::ResultRequest(ResultRequest {
                msg_ids: check.msg_ids.clone(),
            }),
        );
        let id = ask.header.msg_id.clone();
        let frames = self.session.encode_owned(ask).into_frames();
        match send_frames(&self.sockets.query, frames, zmq::DONTWAIT) {
            Ok(()) => check.asking = Some((id, now)),
            Err(e) => {
                debug!(error = %e, "result request to the restarted hub not sent");
                check.next = now + RESTART_RETRY;
            }
        }
    }

    /// The restarted hub's answer: what it finished is filled from its
    /// records, what it runs stays waiting for its reply, and what it has
    /// never heard of fails with [`HubLoss::Restarted`] once it still has
    /// not after [`RESTART_TRIES`] questions (a request the old hub's
    /// sockets queued may reach the new hub a moment after the question).
    pub(super) fn on_restart_check_reply(&mut self, msg: Message) {
        let Some(mut check) = self.restart_check.take() else {
            return;
        };
        let Content::ResultReply(r) = msg.content else {
            warn!(msg_type = %msg.header.msg_type, "unexpected reply to the restart check");
            check.asking = None;
            check.next = Instant::now() + RESTART_RETRY;
            self.restart_check = Some(check);
            return;
        };
        let mut unknown = Vec::new();
        for msg_id in std::mem::take(&mut check.msg_ids) {
            if r.pending.contains(&msg_id) {
                continue; // its reply will come
            }
            let recorded = r.results.get(&msg_id).and_then(|j| j.as_array());
            match (recorded, self.tracked.get(&msg_id)) {
                (Some(entries), Some((weak, _))) => {
                    if let Some(state) = weak.upgrade() {
                        super::recorded::fill_recorded(&state, &msg_id, entries, &msg.buffers);
                    }
                    self.tracked.remove(&msg_id);
                    self.owned.remove(&msg_id);
                }
                (Some(_), None) => {}
                (None, _) => unknown.push(msg_id),
            }
        }
        check.msg_ids = unknown;
        check.asking = None;
        check.tries += 1;
        if check.msg_ids.is_empty() {
            return;
        }
        self.restart_check = Some(check);
        if self
            .restart_check
            .as_ref()
            .is_some_and(|c| c.tries >= RESTART_TRIES)
        {
            self.end_restart_check();
        } else if let Some(c) = &mut self.restart_check {
            c.next = Instant::now() + RESTART_RETRY * c.tries;
        }
    }

    /// Fails the requests of the restart check the new hub never knew.
    fn end_restart_check(&mut self) {
        let Some(check) = self.restart_check.take() else {
            return;
        };
        let mut failed = 0;
        for msg_id in &check.msg_ids {
            if let Some((weak, _)) = self.tracked.remove(msg_id) {
                if let Some(state) = weak.upgrade() {
                    failed += state.fail_msg(msg_id, &check.error);
                }
            }
            self.owned.remove(msg_id);
        }
        if failed > 0 {
            warn!(
                failed,
                "requests the restarted hub never received fail with HubLost"
            );
        }
    }

    /// The hub answers again: requests go out, the engine table is asked for.
    fn hub_back(&mut self) {
        *self.table.hub_lost.lock().expect("hub lock") = None;
        info!(url = %self.url, "the hub is back");
        let now = Instant::now();
        self.send_probe(now);
        self.reprobes = REPROBES_MS
            .iter()
            .map(|ms| now + Duration::from_millis(*ms))
            .collect();
        self.emit(ClientEvent::HubReturned {
            url: self.url.clone(),
        });
    }

    /// Asks the hub for the engine table (its answer is life, and fills
    /// the table).
    fn send_probe(&mut self, now: Instant) {
        let ask = Message::new(
            &self.session,
            Content::ConnectionRequest(ConnectionRequest {}),
        );
        let id = ask.header.msg_id.clone();
        let frames = self.session.encode_owned(ask).into_frames();
        match send_frames(&self.sockets.query, frames, zmq::DONTWAIT) {
            Ok(()) => self.probe = Some((id, now)),
            Err(e) => debug!(error = %Chain(&e), "connection request not sent"),
        }
    }

    /// The answer to [`send_probe`](Self::send_probe).
    /// The engine table it holds replaces ours; engines that joined or
    /// left unseen (while the notification socket was connecting) are
    /// announced.
    pub(super) fn on_probe_reply(&mut self, msg: Message) {
        let Content::ConnectionReply(r) = msg.content else {
            return;
        };
        let mut events = Vec::new();
        if let Some(announced) = &mut self.announced {
            for id in r.engines.keys() {
                if announced.insert(*id) {
                    events.push(ClientEvent::EngineRegistered(*id));
                }
            }
            announced.retain(|id| {
                let listed = r.engines.contains_key(id);
                if !listed {
                    events.push(ClientEvent::EngineUnregistered {
                        engine: *id,
                        reason: "the hub no longer lists it".into(),
                    });
                }
                listed
            });
        }
        *self.table.engines.lock().expect("table lock") = r.engines;
        self.table.changed.notify_all();
        for event in events {
            self.emit(event);
        }
    }
}
