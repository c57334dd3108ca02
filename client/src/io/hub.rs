//! The I/O thread's watch on the hub: heartbeat pings, silence past the
//! limit, loss and return (the decisions are
//! [`HubLiveness`](crate::watch::HubLiveness)'s).

use super::{ClientEvent, IoLoop, IoSockets, PROBE_PERIOD};
use crate::error::{Error, HubLoss};
use crate::watch::HubChange;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use zpar_protocol::curve::HandshakeWatch;
use zpar_protocol::{send_frames, ConnectionRequest, Content, Message};

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
                Err(e) => return warn!(error = %e, "heartbeat receive failed"),
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
                        warn!(error = %e, url = %self.url, "could not make new sockets for the hub; keeping the old ones")
                    }
                }
            }
            Some(HubChange::Restarted) => {
                self.lose_hub(HubLoss::Restarted);
                self.hub_back();
            }
            Some(HubChange::Back) => self.hub_back(),
        }
    }

    /// Fails everything waiting on the hub with [`Error::HubLost`].
    fn lose_hub(&mut self, reason: HubLoss) {
        let error = Error::HubLost {
            url: self.url.clone(),
            reason,
        };
        *self.table.hub_lost.lock().expect("hub lock") = Some(error.clone());
        let mut failed = 0;
        for (_, (weak, _)) in self.tracked.drain() {
            if let Some(state) = weak.upgrade() {
                failed += state.fail_open(&error);
            }
        }
        self.owned.clear();
        for state in self.watches.take_all() {
            failed += state.fail_open(&error);
        }
        self.orphans.clear();
        self.streams.clear();
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
            Err(e) => debug!(error = %e, "connection request not sent"),
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
