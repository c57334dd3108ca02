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

/// How many times the hub is asked about a request it does not know
/// before that request fails (and for at least [`CHECK_WINDOW`]).
const CHECK_TRIES: u32 = 4;

/// How long the hub is asked about a request it does not know before that
/// request fails: a request queued in another of the client's sockets
/// reaches a restarted hub when that socket has reconnected, which on a
/// loaded machine took more than the 1.5 s four questions take.
const CHECK_WINDOW: Duration = Duration::from_secs(5);

/// The pause before asking the hub again (times the tries so far: 0.25,
/// 0.5, 0.75 s, …, at most 1 s).
const CHECK_RETRY: Duration = Duration::from_millis(250);

/// How often the I/O thread looks for silent requests.
const SILENT_SCAN: Duration = Duration::from_secs(1);

/// Most requests named in one question about silent requests.
const SILENT_IDS_PER_CHECK: usize = 1000;

/// Requests whose fate the hub's records are asked about
/// (`result_request`): what the hub finished is filled from its records,
/// what it runs waits on for its reply, and what it never received fails
/// with `error` once it still does not know it after [`CHECK_TRIES`]
/// questions and [`CHECK_WINDOW`] (a request sent on another socket than
/// the question may reach the hub a moment after it).
///
/// Two things start one: a hub restart (every request still waiting: sent
/// after the old hub died, they were delivered to the new one when the
/// sockets reconnected), and requests silent for
/// [`recall_after`](super::DEFAULT_RECALL_AFTER) (a request lost on its way
/// to the hub, or a reply lost on its way back, on a connection that
/// dropped and came back).
pub(super) struct RecordCheck {
    /// After a restart, or of silent requests.
    restart: bool,
    /// The requests not yet accounted for.
    msg_ids: Vec<String>,
    /// What those the hub never knew fail with.
    error: Error,
    /// The question in flight and when it went.
    asking: Option<(String, Instant)>,
    /// Questions answered so far.
    tries: u32,
    /// When the check began.
    started: Instant,
    /// When to ask next.
    next: Instant,
}

/// After the client connected, or the hub came back, ask for its engine
/// table again this many milliseconds later: notifications sent while the
/// notification socket was still connecting are lost (a SUB gets only what
/// is published after its subscription arrives).
pub(super) const REPROBES_MS: [u64; 5] = [250, 500, 1000, 2000, 4000];

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
        self.ask_about_silent(now);
        self.run_record_check(now);
        // Before the hub is judged silent, read the pings that came while
        // this thread was busy (sending a burst of large requests, say):
        // the silence may be this thread's, not the hub's.
        if !self.hub.is_lost() && self.hub.silence(now) >= self.hub.limit() {
            self.drain_heartbeat(now);
        }
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
    /// the new hub is asked about them ([`RecordCheck`]).
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
                self.record_check = Some(RecordCheck {
                    restart: true,
                    msg_ids,
                    error: error.clone(),
                    asking: None,
                    tries: 0,
                    started: Instant::now(),
                    next: Instant::now(),
                });
            }
        } else {
            self.record_check = None;
            for (_, tracked) in self.tracked.drain() {
                if let Some(state) = tracked.state.upgrade() {
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
        // lists its own (engines register again by themselves). A hub that
        // restarted answers already: the table stands until its list
        // (asked for at once) replaces it, so that a command sent meanwhile
        // does not find no engines at all, while engines that registered
        // with it before this client noticed the restart are listed.
        if !keep_requests {
            self.table.engines.lock().expect("table lock").clear();
        }
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

    /// Starts a [`RecordCheck`] of the requests silent past their
    /// `ask_at` (at most every [`SILENT_SCAN`], and not while another check
    /// runs or the hub is lost). Each is asked about again after twice as
    /// long as before, up to 16 times `recall_after`.
    fn ask_about_silent(&mut self, now: Instant) {
        if self.record_check.is_some() || self.hub.is_lost() || now < self.next_silent_scan {
            return;
        }
        self.next_silent_scan = now + SILENT_SCAN;
        let mut msg_ids = Vec::new();
        for (msg_id, t) in &mut self.tracked {
            if msg_ids.len() >= SILENT_IDS_PER_CHECK {
                break;
            }
            if t.ask_at > now || t.state.strong_count() == 0 {
                continue;
            }
            t.asked += 1;
            t.ask_at = now + self.recall_after * (1u32 << t.asked.min(4));
            msg_ids.push(msg_id.clone());
        }
        if msg_ids.is_empty() {
            return;
        }
        debug!(
            count = msg_ids.len(),
            "asking the hub about requests silent for a while"
        );
        let waited = self.recall_after.as_secs_f64();
        self.record_check = Some(RecordCheck {
            restart: false,
            msg_ids,
            error: Error::Hub {
                ename: zpar_protocol::ErrorClass::Lost.to_string(),
                message: format!(
                    "the hub has no record of the request after {waited:.0} s: it was lost on \
                     its way to the hub (on a connection that dropped and came back) and did \
                     not run, or its record was since dropped (`zpar hub --db-limit`) and its \
                     reply lost; submit it again"
                ),
            },
            asking: None,
            tries: 0,
            started: now,
            next: now,
        });
    }

    /// Whether `parent` is the question of the restart check in flight.
    pub(super) fn is_record_check(&self, parent: &str) -> bool {
        self.record_check
            .as_ref()
            .and_then(|c| c.asking.as_ref())
            .is_some_and(|(id, _)| id == parent)
    }

    /// On the timer: asks the hub about the requests of the check when
    /// due. A restarted hub that never answers fails them all; silent
    /// requests are asked about again later.
    pub(super) fn run_record_check(&mut self, now: Instant) {
        let Some(check) = &mut self.record_check else {
            return;
        };
        if let Some((_, at)) = &check.asking {
            if now.saturating_duration_since(*at) > crate::watch::ASK_TIMEOUT {
                if check.restart {
                    warn!("the restarted hub did not say what became of the requests still waiting; they fail");
                    self.end_record_check();
                } else {
                    debug!("the hub did not answer a question about silent requests");
                    self.record_check = None;
                }
            }
            return;
        }
        if check.next > now {
            return;
        }
        check.msg_ids.retain(|id| self.tracked.contains_key(id));
        if check.msg_ids.is_empty() {
            self.record_check = None;
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
                debug!(error = %e, "result request to the hub not sent");
                check.next = now + CHECK_RETRY;
            }
        }
    }

    /// The hub's answer: what it finished is filled from its records, what
    /// it runs stays waiting for its reply, and what it has never heard of
    /// fails with the check's error ([`HubLoss::Restarted`] after a
    /// restart) once it still has not after [`CHECK_TRIES`] questions and
    /// [`CHECK_WINDOW`].
    pub(super) fn on_record_check_reply(&mut self, msg: Message) {
        let Some(mut check) = self.record_check.take() else {
            return;
        };
        let Content::ResultReply(r) = msg.content else {
            warn!(msg_type = %msg.header.msg_type, "unexpected reply to a result request");
            check.asking = None;
            check.next = Instant::now() + CHECK_RETRY;
            self.record_check = Some(check);
            return;
        };
        let mut unknown = Vec::new();
        for msg_id in std::mem::take(&mut check.msg_ids) {
            if r.pending.contains(&msg_id) {
                continue; // its reply will come
            }
            let recorded = r.results.get(&msg_id).and_then(|j| j.as_array());
            match (recorded, self.tracked.get(&msg_id)) {
                (Some(entries), Some(tracked)) => {
                    if let Some(state) = tracked.state.upgrade() {
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
        self.record_check = Some(check);
        if self
            .record_check
            .as_ref()
            .is_some_and(|c| c.tries >= CHECK_TRIES && c.started.elapsed() >= CHECK_WINDOW)
        {
            self.end_record_check();
        } else if let Some(c) = &mut self.record_check {
            c.next = Instant::now() + (CHECK_RETRY * c.tries).min(Duration::from_secs(1));
        }
    }

    /// Fails the requests of the check the hub never knew.
    fn end_record_check(&mut self) {
        let Some(check) = self.record_check.take() else {
            return;
        };
        let mut failed = 0;
        for msg_id in &check.msg_ids {
            if let Some(tracked) = self.tracked.remove(msg_id) {
                if let Some(state) = tracked.state.upgrade() {
                    failed += state.fail_msg(msg_id, &check.error);
                }
            }
            self.owned.remove(msg_id);
        }
        if failed > 0 {
            warn!(
                failed,
                error = %check.error,
                "requests the hub never received fail"
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
            Ok(()) => {
                self.probe = Some((id, now));
                self.since_probe.clear();
            }
            Err(e) => debug!(error = %Chain(&e), "connection request not sent"),
        }
    }

    /// The answer to [`send_probe`](Self::send_probe).
    /// The engine table it holds replaces ours, with the notifications
    /// that came since the question went applied on top (the answer may
    /// be older than they are); engines that joined or left unseen (while
    /// the notification socket was connecting) are announced.
    pub(super) fn on_probe_reply(&mut self, msg: Message) {
        let Content::ConnectionReply(r) = msg.content else {
            return;
        };
        // What notifications said since the question went is newer.
        let mut engines = r.engines;
        for (id, change) in self.since_probe.drain(..) {
            match change {
                Some(uuid) => engines.insert(id, uuid),
                None => engines.remove(&id),
            };
        }
        let mut events = Vec::new();
        if let Some(announced) = &mut self.announced {
            for id in engines.keys() {
                if announced.insert(*id) {
                    events.push(ClientEvent::EngineRegistered(*id));
                }
            }
            announced.retain(|id| {
                let listed = engines.contains_key(id);
                if !listed {
                    events.push(ClientEvent::EngineUnregistered {
                        engine: *id,
                        reason: "the hub no longer lists it".into(),
                    });
                }
                listed
            });
        }
        *self.table.engines.lock().expect("table lock") = engines;
        self.table.changed.notify_all();
        for event in events {
            self.emit(event);
        }
    }
}
