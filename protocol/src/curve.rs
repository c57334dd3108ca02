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

mod handshake;
pub use handshake::{
    read_monitor_event, HandshakeEvent, HandshakeFailure, HandshakeMonitor, HandshakeOutcome,
    HandshakeWatch,
};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
