//! CurveZMQ: the keys, and the settings that make a socket encrypt.
//!
//! zpar encrypts every TCP connection with CurveZMQ when the hub runs with
//! CURVE (on by default when it binds anything but loopback). The scheme
//! is Jupyter's (jupyter_client 8.9+, `transport_encryption`):
//!
//! - the hub makes a keypair at start and writes both halves into its
//!   connection files (0600) as `curve_publickey` and `curve_secretkey`,
//!   Z85 text of 40 characters each;
//! - every socket that binds is a CURVE server with that pair
//!   ([`secure_server`]);
//! - every socket that connects is a CURVE client that expects that public
//!   key from the server and uses the file's pair as its own
//!   ([`secure_client`]), as jupyter_client's `connect_*` do.
//!
//! A peer without the server's public key cannot complete the handshake,
//! so it gets nothing, not even an error reply. Engines' communicator
//! sockets do the same with the pair the hub hands every engine at
//! registration.
//!
//! [`HandshakeMonitor`] reads a socket's handshake events (libzmq's socket
//! monitor), so a process can say that a peer's keys were wrong instead of
//! waiting for an answer that will never come.
//!
//! ```
//! use zpar_protocol::curve::{self, CurveKeys};
//! let keys = CurveKeys::generate().unwrap();
//! let ctx = zmq::Context::new();
//! let server = ctx.socket(zmq::ROUTER).unwrap();
//! curve::secure_server(&server, Some(&keys)).unwrap();
//! server.bind("tcp://127.0.0.1:*").unwrap();
//! let client = ctx.socket(zmq::DEALER).unwrap();
//! curve::secure_client(&client, Some(&keys)).unwrap();
//! client.connect(&server.get_last_endpoint().unwrap().unwrap()).unwrap();
//! client.send("over CURVE", 0).unwrap();
//! let frames = server.recv_multipart(0).unwrap();
//! assert_eq!(frames[1], b"over CURVE");
//! // The halves a connection file carries:
//! let again = CurveKeys::from_fields(Some(keys.public()), Some(keys.secret())).unwrap();
//! assert_eq!(again, Some(keys));
//! ```

use crate::error::{ProtocolError, Result};
use std::ffi::{c_char, CStr, CString};
use std::fmt;

/// Characters in a Z85-encoded CURVE key (32 bytes).
pub const KEY_CHARS: usize = 40;

/// The connection file field of the public key (jupyter_client's name).
pub const PUBLIC_FIELD: &str = "curve_publickey";
/// The connection file field of the secret key (jupyter_client's name).
pub const SECRET_FIELD: &str = "curve_secretkey";

/// Z85's alphabet (ZeroMQ RFC 32).
const Z85: &str =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// A CURVE keypair as Z85 text, checked: each half is 40 Z85 characters
/// and the public half belongs to the secret one. `Debug` hides the
/// secret.
#[derive(Clone, PartialEq, Eq)]
pub struct CurveKeys {
    public: String,
    secret: String,
}

impl fmt::Debug for CurveKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurveKeys")
            .field("public", &self.public)
            .field("secret", &"(hidden)")
            .finish()
    }
}

impl CurveKeys {
    /// A fresh keypair from libsodium.
    ///
    /// ```
    /// let keys = zpar_protocol::curve::CurveKeys::generate().unwrap();
    /// assert_eq!(keys.public().len(), 40);
    /// ```
    pub fn generate() -> Result<CurveKeys> {
        let pair = zmq::CurveKeyPair::new().map_err(|source| ProtocolError::Curve {
            what: "making a CURVE keypair",
            source,
        })?;
        let text = |bytes: &[u8; 32]| {
            zmq::z85_encode(bytes).expect("32 bytes are a whole number of Z85 blocks")
        };
        Ok(CurveKeys {
            public: text(&pair.public_key),
            secret: text(&pair.secret_key),
        })
    }

    /// The pair a connection file (or a registration reply) carries: both
    /// halves, or neither (`Ok(None)`: no encryption). Anything else — one
    /// half alone, a truncated or garbled key, a public key that is not
    /// the secret key's — is an error that names the field.
    ///
    /// ```
    /// use zpar_protocol::curve::CurveKeys;
    /// assert_eq!(CurveKeys::from_fields(None, None).unwrap(), None);
    /// let e = CurveKeys::from_fields(Some("short"), Some("short")).unwrap_err();
    /// assert!(e.to_string().contains("curve_publickey has 5 characters"), "{e}");
    /// ```
    pub fn from_fields(public: Option<&str>, secret: Option<&str>) -> Result<Option<CurveKeys>> {
        let (public, secret) = match (public, secret) {
            (None, None) => return Ok(None),
            (Some(p), Some(s)) => (p, s),
            (Some(_), None) => {
                return Err(key_error(SECRET_FIELD, "is missing beside curve_publickey"))
            }
            (None, Some(_)) => {
                return Err(key_error(PUBLIC_FIELD, "is missing beside curve_secretkey"))
            }
        };
        check_text(PUBLIC_FIELD, public)?;
        check_text(SECRET_FIELD, secret)?;
        if derive_public(secret)? != public {
            return Err(key_error(
                PUBLIC_FIELD,
                "is not the public half of curve_secretkey (one of them was changed)",
            ));
        }
        Ok(Some(CurveKeys {
            public: public.to_string(),
            secret: secret.to_string(),
        }))
    }

    /// The public key, Z85.
    pub fn public(&self) -> &str {
        &self.public
    }

    /// The secret key, Z85.
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

fn key_error(field: &'static str, problem: impl Into<String>) -> ProtocolError {
    ProtocolError::CurveKey {
        field,
        problem: problem.into(),
        file: None,
    }
}

/// Length and alphabet, with the first thing wrong named.
fn check_text(field: &'static str, text: &str) -> Result<()> {
    if let Some(c) = text.chars().find(|c| !Z85.contains(*c)) {
        return Err(key_error(
            field,
            format!("holds {c:?}, which is not a Z85 character"),
        ));
    }
    if text.len() != KEY_CHARS {
        return Err(key_error(
            field,
            format!(
                "has {} characters, but a CURVE key is {KEY_CHARS} Z85 characters",
                text.len()
            ),
        ));
    }
    Ok(())
}

/// The public key of a (checked) Z85 secret key.
fn derive_public(secret: &str) -> Result<String> {
    let secret = CString::new(secret).map_err(|_| key_error(SECRET_FIELD, "holds a NUL"))?;
    let mut public = [0 as c_char; KEY_CHARS + 1];
    // SAFETY: `public` has room for 40 characters and the NUL libzmq
    // writes; `secret` is NUL-terminated and 40 Z85 characters long
    // (checked by `check_text`), which is what zmq_curve_public reads.
    let rc = unsafe { zmq_sys::zmq_curve_public(public.as_mut_ptr(), secret.as_ptr()) };
    if rc != 0 {
        return Err(key_error(SECRET_FIELD, "is not a CURVE secret key"));
    }
    // SAFETY: on success libzmq wrote a NUL-terminated string into `public`.
    let text = unsafe { CStr::from_ptr(public.as_ptr()) };
    Ok(text.to_string_lossy().into_owned())
}

/// Makes `socket` a CURVE server with `keys` (call before `bind`); with
/// `None` it stays plain.
pub fn secure_server(socket: &zmq::Socket, keys: Option<&CurveKeys>) -> Result<()> {
    let Some(keys) = keys else { return Ok(()) };
    let set = |what, r: zmq::Result<()>| r.map_err(|source| ProtocolError::Curve { what, source });
    set("setting ZMQ_CURVE_SERVER", socket.set_curve_server(true))?;
    set(
        "setting ZMQ_CURVE_SECRETKEY",
        socket.set_curve_secretkey(keys.secret.as_bytes()),
    )
}

/// Makes `socket` a CURVE client of the server whose public key is
/// `keys.public()`, using `keys` as its own pair, as jupyter_client does
/// with a connection file's keys (call before `connect`); with `None` it
/// stays plain.
pub fn secure_client(socket: &zmq::Socket, keys: Option<&CurveKeys>) -> Result<()> {
    let Some(keys) = keys else { return Ok(()) };
    let set = |what, r: zmq::Result<()>| r.map_err(|source| ProtocolError::Curve { what, source });
    set(
        "setting ZMQ_CURVE_SERVERKEY",
        socket.set_curve_serverkey(keys.public.as_bytes()),
    )?;
    set(
        "setting ZMQ_CURVE_PUBLICKEY",
        socket.set_curve_publickey(keys.public.as_bytes()),
    )?;
    set(
        "setting ZMQ_CURVE_SECRETKEY",
        socket.set_curve_secretkey(keys.secret.as_bytes()),
    )
}

/// What a socket monitor reported about one connection's handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeEvent {
    /// The security handshake succeeded: messages can flow.
    Succeeded,
    /// The handshake failed.
    Failed(HandshakeFailure),
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
        let endpoint = format!("inproc://zpar-monitor-{}", crate::new_id());
        let mask = WATCHED.iter().fold(0, |m, e| m | i32::from(e.to_raw()));
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
    use std::time::{Duration, Instant};

    #[test]
    fn a_fresh_pair_reads_back_from_its_fields() {
        let keys = CurveKeys::generate().unwrap();
        assert_ne!(keys, CurveKeys::generate().unwrap());
        let back = CurveKeys::from_fields(Some(keys.public()), Some(keys.secret())).unwrap();
        assert_eq!(back.as_ref(), Some(&keys));
        assert!(!format!("{keys:?}").contains(keys.secret()));
    }

    #[test]
    fn bad_fields_are_named() {
        let keys = CurveKeys::generate().unwrap();
        let other = CurveKeys::generate().unwrap();
        let cases: [(Option<&str>, Option<&str>, &str); 6] = [
            (Some(keys.public()), None, "curve_secretkey is missing"),
            (None, Some(keys.secret()), "curve_publickey is missing"),
            (
                Some(&keys.public()[..20]),
                Some(keys.secret()),
                "curve_publickey has 20 characters",
            ),
            (
                Some(keys.public()),
                Some("~~~~"),
                "curve_secretkey holds '~'",
            ),
            (
                Some(keys.public()),
                Some(""),
                "curve_secretkey has 0 characters",
            ),
            (
                Some(other.public()),
                Some(keys.secret()),
                "curve_publickey is not the public half",
            ),
        ];
        for (public, secret, said) in cases {
            let e = CurveKeys::from_fields(public, secret)
                .unwrap_err()
                .to_string();
            assert!(e.contains(said), "{e:?} should say {said:?}");
        }
    }

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
