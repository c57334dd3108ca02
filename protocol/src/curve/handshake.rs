//! Handshakes: what libzmq's socket monitor says about a socket's
//! security handshakes, and what a connecting peer makes of them (see the
//! parent module for the roles and keys).

use crate::error::{ProtocolError, Result};
use std::fmt;

/// What a socket monitor reported about one connection's handshake (and,
/// on a monitor made with [`HandshakeMonitor::attach_counting`], about
/// connections coming and going).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeEvent {
    /// The security handshake succeeded: messages can flow.
    Succeeded,
    /// The handshake failed.
    Failed(HandshakeFailure),
    /// A listening socket took a new connection.
    Accepted,
    /// A connection closed (its peer left, or the socket dropped it: a
    /// failed handshake, a frame over `ZMQ_MAXMSGSIZE`).
    Closed,
    /// A listening socket could not accept a connection (the errno: out
    /// of file descriptors is `EMFILE`).
    AcceptFailed(i32),
}

/// Why a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// One side speaks CURVE and the other does not.
    MechanismMismatch,
    /// The CURVE boxes did not open: the peer used another key.
    Cryptographic,
    /// Another ZMTP protocol error (libzmq's code).
    Protocol(u32),
    /// The peer's credentials were refused by an authenticator (ZAP status).
    Auth(u32),
    /// libzmq gave no detail: the connection closed during the handshake
    /// (a CURVE server does that to a client that expects another key).
    NoDetail,
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeFailure::MechanismMismatch => f.write_str(
                "one side uses CURVE encryption and the other does not (a connection file \
                 with curve_ keys against a hub run with --no-curve, or the other way round)",
            ),
            HandshakeFailure::Cryptographic => {
                f.write_str("the CURVE keys do not match (the peer uses another hub's key)")
            }
            HandshakeFailure::Protocol(code) => write!(f, "ZMTP protocol error {code:#x}"),
            HandshakeFailure::Auth(status) => write!(f, "credentials refused (status {status})"),
            HandshakeFailure::NoDetail => f.write_str(
                "the connection closed during the handshake (the other side's security \
                 settings do not match, or it went away)",
            ),
        }
    }
}

/// The events [`HandshakeMonitor`] asks libzmq for.
const WATCHED: [zmq::SocketEvent; 4] = [
    zmq::SocketEvent::HANDSHAKE_SUCCEEDED,
    zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL,
    zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL,
    zmq::SocketEvent::HANDSHAKE_FAILED_AUTH,
];

/// Reads one socket-monitor message (`[event u16 | value u32]`, endpoint)
/// as a [`HandshakeEvent`] and the endpoint it is about; None for events
/// this module does not track, or frames that are not a monitor event.
pub fn read_monitor_event(frames: &[Vec<u8>]) -> Option<(HandshakeEvent, String)> {
    let head = frames.first()?;
    if head.len() != 6 {
        return None;
    }
    let event = u16::from_ne_bytes([head[0], head[1]]);
    let value = u32::from_ne_bytes([head[2], head[3], head[4], head[5]]);
    let endpoint = frames
        .get(1)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .unwrap_or_default();
    let event = match u32::from(event) {
        zmq_sys::ZMQ_EVENT_HANDSHAKE_SUCCEEDED => HandshakeEvent::Succeeded,
        zmq_sys::ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL => {
            HandshakeEvent::Failed(HandshakeFailure::NoDetail)
        }
        zmq_sys::ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL => HandshakeEvent::Failed(match value {
            zmq_sys::ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH => {
                HandshakeFailure::MechanismMismatch
            }
            zmq_sys::ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC => HandshakeFailure::Cryptographic,
            code => HandshakeFailure::Protocol(code),
        }),
        zmq_sys::ZMQ_EVENT_HANDSHAKE_FAILED_AUTH => {
            HandshakeEvent::Failed(HandshakeFailure::Auth(value))
        }
        zmq_sys::ZMQ_EVENT_ACCEPTED => HandshakeEvent::Accepted,
        zmq_sys::ZMQ_EVENT_DISCONNECTED => HandshakeEvent::Closed,
        zmq_sys::ZMQ_EVENT_ACCEPT_FAILED => HandshakeEvent::AcceptFailed(value as i32),
        _ => return None,
    };
    Some((event, endpoint))
}

/// libzmq's socket monitor on one socket, reduced to handshakes: a PAIR
/// socket the owner polls (or drains) beside the socket itself. Made on the
/// thread that owns the socket; reading it can happen on another.
///
/// libzmq sends each event with a blocking send, from its I/O thread: a
/// monitor must be read for as long as its socket lives, or be
/// [`detach`](Self::detach)ed from it first. Dropping it while the socket
/// lives on (and connects again later) would stall that thread.
pub struct HandshakeMonitor {
    events: zmq::Socket,
}

impl HandshakeMonitor {
    /// Starts monitoring `socket`'s handshakes (attach before `connect`
    /// to see the first).
    ///
    /// ```
    /// use zpar_protocol::curve::{HandshakeEvent, HandshakeMonitor};
    /// let ctx = zmq::Context::new();
    /// let server = ctx.socket(zmq::ROUTER).unwrap();
    /// server.bind("tcp://127.0.0.1:*").unwrap();
    /// let mut client = ctx.socket(zmq::DEALER).unwrap();
    /// let monitor = HandshakeMonitor::attach(&ctx, &client).unwrap();
    /// client.connect(&server.get_last_endpoint().unwrap().unwrap()).unwrap();
    /// monitor.socket().poll(zmq::POLLIN, 5000).unwrap();
    /// assert_eq!(monitor.try_next().map(|(e, _)| e), Some(HandshakeEvent::Succeeded));
    /// monitor.detach(&mut client);
    /// ```
    pub fn attach(ctx: &zmq::Context, socket: &zmq::Socket) -> Result<HandshakeMonitor> {
        HandshakeMonitor::attach_with(ctx, socket, &WATCHED)
    }

    /// Like [`attach`](Self::attach), and also reports each connection a
    /// listening socket accepts, each that closes, and each it could not
    /// accept, so its owner can count them.
    pub fn attach_counting(ctx: &zmq::Context, socket: &zmq::Socket) -> Result<HandshakeMonitor> {
        let mut events = WATCHED.to_vec();
        events.extend([
            zmq::SocketEvent::ACCEPTED,
            zmq::SocketEvent::DISCONNECTED,
            zmq::SocketEvent::ACCEPT_FAILED,
        ]);
        HandshakeMonitor::attach_with(ctx, socket, &events)
    }

    fn attach_with(
        ctx: &zmq::Context,
        socket: &zmq::Socket,
        watched: &[zmq::SocketEvent],
    ) -> Result<HandshakeMonitor> {
        let endpoint = format!("inproc://zpar-monitor-{}", crate::new_id());
        let mask = watched.iter().fold(0, |m, e| m | i32::from(e.to_raw()));
        let zerr = |what| move |source| ProtocolError::Curve { what, source };
        socket
            .monitor(&endpoint, mask)
            .map_err(zerr("starting a socket monitor"))?;
        let events = ctx
            .socket(zmq::PAIR)
            .map_err(zerr("making a monitor socket"))?;
        events.set_linger(0).ok();
        events
            .connect(&endpoint)
            .map_err(zerr("connecting a monitor socket"))?;
        Ok(HandshakeMonitor { events })
    }

    /// The socket to poll for events.
    pub fn socket(&self) -> &zmq::Socket {
        &self.events
    }

    /// Stops libzmq's monitor on `socket`, the one this monitor was
    /// attached to, then closes the reader.
    pub fn detach(self, socket: &mut zmq::Socket) {
        // SAFETY: `socket` is a live socket (held mutably here); a null
        // endpoint asks libzmq to stop monitoring it, nothing else.
        unsafe {
            zmq_sys::zmq_socket_monitor(socket.as_mut_ptr(), std::ptr::null(), 0);
        }
    }

    /// The next event already reported, without waiting.
    pub fn try_next(&self) -> Option<(HandshakeEvent, String)> {
        loop {
            let frames = self.events.recv_multipart(zmq::DONTWAIT).ok()?;
            if let Some(event) = read_monitor_event(&frames) {
                return Some(event);
            }
        }
    }
}

/// What one connection's handshake came to, as a connecting peer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeOutcome {
    /// Nothing decisive yet (no connection, or one still in handshake).
    Pending,
    /// The handshake succeeded at least once.
    Succeeded,
    /// It failed, for this reason.
    Failed(HandshakeFailure),
    /// The server closed the connection during the handshake, twice in a
    /// row, to this CURVE client: it could not read this side's hello,
    /// which means this side expects another server key.
    RefusedByServer,
    /// The server closed the connection during the handshake, twice in a
    /// row, to this plain client: the server wants CURVE.
    PlainRefused,
}

/// Follows a connecting socket's handshakes (fed from a
/// [`HandshakeMonitor`]) to tell "the hub is not there yet" from "the hub
/// is there but our keys do not fit". The outcome is the latest decisive
/// one: a success after failures (the right hub came back) clears them.
#[derive(Debug)]
pub struct HandshakeWatch {
    curve_client: bool,
    closed_in_handshake: u32,
    outcome: HandshakeOutcome,
}

impl HandshakeWatch {
    /// A watch for a socket that is a CURVE client (`curve_client`) or
    /// plain. Only a CURVE client reads a server that hangs up during the
    /// handshake as "refused our keys".
    pub fn new(curve_client: bool) -> HandshakeWatch {
        HandshakeWatch {
            curve_client,
            closed_in_handshake: 0,
            outcome: HandshakeOutcome::Pending,
        }
    }

    /// Takes one event. A hang-up during the handshake counts only when it
    /// happens twice in a row (once may be a server that was just stopping).
    ///
    /// ```
    /// use zpar_protocol::curve::{HandshakeEvent, HandshakeFailure, HandshakeOutcome, HandshakeWatch};
    /// let mut w = HandshakeWatch::new(true);
    /// w.feed(&HandshakeEvent::Failed(HandshakeFailure::NoDetail));
    /// assert_eq!(w.outcome(), HandshakeOutcome::Pending);
    /// w.feed(&HandshakeEvent::Failed(HandshakeFailure::NoDetail));
    /// assert_eq!(w.outcome(), HandshakeOutcome::RefusedByServer);
    /// w.feed(&HandshakeEvent::Succeeded);
    /// assert_eq!(w.outcome(), HandshakeOutcome::Succeeded);
    /// ```
    pub fn feed(&mut self, event: &HandshakeEvent) {
        match event {
            HandshakeEvent::Succeeded => {
                self.closed_in_handshake = 0;
                self.outcome = HandshakeOutcome::Succeeded;
            }
            HandshakeEvent::Failed(HandshakeFailure::NoDetail) => {
                self.closed_in_handshake += 1;
                if self.closed_in_handshake >= 2 {
                    self.outcome = if self.curve_client {
                        HandshakeOutcome::RefusedByServer
                    } else {
                        HandshakeOutcome::PlainRefused
                    };
                }
            }
            HandshakeEvent::Failed(why) => self.outcome = HandshakeOutcome::Failed(*why),
            HandshakeEvent::Accepted | HandshakeEvent::Closed | HandshakeEvent::AcceptFailed(_) => {
            }
        }
    }

    /// What the handshakes came to so far.
    pub fn outcome(&self) -> HandshakeOutcome {
        self.outcome
    }
}

impl HandshakeOutcome {
    /// Why the server cannot be reached, said for a person (with what to
    /// do), when the handshakes failed; None while pending or after a
    /// success.
    pub fn refusal(&self) -> Option<String> {
        match self {
            HandshakeOutcome::Pending | HandshakeOutcome::Succeeded => None,
            HandshakeOutcome::Failed(why) => Some(format!(
                "the security handshake failed: {why}; use the hub's current connection file"
            )),
            HandshakeOutcome::RefusedByServer => Some(
                "it closes the connection during the CURVE handshake, so its key is not the \
                 curve_publickey of this connection file (a file from an earlier hub?); use \
                 the hub's current connection file"
                    .to_string(),
            ),
            HandshakeOutcome::PlainRefused => Some(format!(
                "it closes the connection during the handshake: {}; use the hub's current \
                 connection file",
                HandshakeFailure::MechanismMismatch
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curve::{secure_client, secure_server, CurveKeys};
    use std::time::{Duration, Instant};

    /// Events of `monitor` until `done` holds for the watch, or 5 s.
    fn watch_until(
        monitor: &HandshakeMonitor,
        done: impl Fn(HandshakeOutcome) -> bool,
    ) -> HandshakeOutcome {
        let mut watch = HandshakeWatch::new(true);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !done(watch.outcome()) {
            if monitor.socket().poll(zmq::POLLIN, 100).unwrap() > 0 {
                while let Some((event, _)) = monitor.try_next() {
                    watch.feed(&event);
                }
            }
        }
        watch.outcome()
    }

    /// A CURVE server and a client with the given keys; what the client
    /// saw, and whether the server got the message the client sent.
    fn meet(server: Option<&CurveKeys>, client: Option<&CurveKeys>) -> (HandshakeOutcome, bool) {
        let ctx = zmq::Context::new();
        let router = ctx.socket(zmq::ROUTER).unwrap();
        router.set_linger(0).unwrap();
        secure_server(&router, server).unwrap();
        router.bind("tcp://127.0.0.1:*").unwrap();
        let url = router.get_last_endpoint().unwrap().unwrap();
        let mut dealer = ctx.socket(zmq::DEALER).unwrap();
        dealer.set_linger(0).unwrap();
        secure_client(&dealer, client).unwrap();
        let monitor = HandshakeMonitor::attach(&ctx, &dealer).unwrap();
        dealer.connect(&url).unwrap();
        dealer.send("secret", 0).unwrap();
        let outcome = watch_until(&monitor, |o| o != HandshakeOutcome::Pending);
        let got = router.poll(zmq::POLLIN, 200).unwrap() > 0;
        monitor.detach(&mut dealer);
        (outcome, got)
    }

    #[test]
    fn matching_keys_meet() {
        let keys = CurveKeys::generate().unwrap();
        assert_eq!(
            meet(Some(&keys), Some(&keys)),
            (HandshakeOutcome::Succeeded, true)
        );
        assert_eq!(meet(None, None), (HandshakeOutcome::Succeeded, true));
    }

    #[test]
    fn another_servers_key_is_refused_and_delivers_nothing() {
        let hub = CurveKeys::generate().unwrap();
        let stale = CurveKeys::generate().unwrap();
        assert_eq!(
            meet(Some(&hub), Some(&stale)),
            (HandshakeOutcome::RefusedByServer, false)
        );
    }

    #[test]
    fn curve_against_plain_is_a_mechanism_mismatch_either_way() {
        let keys = CurveKeys::generate().unwrap();
        let mismatch = HandshakeOutcome::Failed(HandshakeFailure::MechanismMismatch);
        assert_eq!(meet(Some(&keys), None), (mismatch, false));
        assert_eq!(meet(None, Some(&keys)), (mismatch, false));
    }

    #[test]
    fn monitor_frames_decode() {
        let frame = |event: u32, value: u32| {
            let mut f = (event as u16).to_ne_bytes().to_vec();
            f.extend(value.to_ne_bytes());
            vec![f, b"tcp://127.0.0.1:5555".to_vec()]
        };
        assert_eq!(
            read_monitor_event(&frame(
                zmq_sys::ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL,
                zmq_sys::ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC
            )),
            Some((
                HandshakeEvent::Failed(HandshakeFailure::Cryptographic),
                "tcp://127.0.0.1:5555".to_string()
            ))
        );
        assert_eq!(
            read_monitor_event(&frame(zmq_sys::ZMQ_EVENT_LISTENING, 0)),
            None
        );
        assert_eq!(read_monitor_event(&[b"short".to_vec()]), None);
        assert_eq!(read_monitor_event(&[]), None);
    }
}
