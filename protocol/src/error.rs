//! The protocol's error type: everything a peer can send wrong, named.

use std::path::PathBuf;

/// What went wrong while decoding, verifying or encoding a message, or while
/// reading a connection file.
///
/// Every variant says what was wrong with the input; none of them is ever a
/// panic. A receiver logs it in one line and drops the message.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The frames contained no `<IDS|MSG>` delimiter.
    #[error("malformed message: no <IDS|MSG> delimiter among {frames} frames")]
    NoDelimiter {
        /// How many frames arrived.
        frames: usize,
    },
    /// Fewer than the five frames that must follow the delimiter.
    #[error("malformed message: {found} frames after the delimiter, need at least 5 (signature, header, parent_header, metadata, content)")]
    TooFewFrames {
        /// How many frames followed the delimiter.
        found: usize,
    },
    /// A frame exceeded the configured size limit.
    #[error("oversized frame: the {frame} frame has {size} bytes, the limit is {limit}")]
    Oversized {
        /// Which frame (`header`, `content`, `buffer 3`, ...).
        frame: String,
        /// Its size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// More frames than the configured limit.
    #[error("too many frames: {found}, the limit is {limit}")]
    TooManyFrames {
        /// How many frames arrived.
        found: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A JSON frame was not valid UTF-8.
    #[error("the {frame} frame is not valid UTF-8")]
    Utf8 {
        /// Which frame.
        frame: &'static str,
        /// The decoder's complaint.
        #[source]
        source: std::str::Utf8Error,
    },
    /// A JSON frame did not parse, or did not have the expected shape.
    #[error("the {frame} frame is not valid")]
    Json {
        /// Which frame (`header`, `content of execute_request`, ...).
        frame: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// The signature frame was empty although signing is on.
    #[error("unsigned message: the signature frame is empty but this session signs with a key")]
    MissingSignature,
    /// The signature did not match the four JSON frames.
    #[error("invalid signature: the HMAC does not match the message (wrong key, or the message was altered)")]
    BadSignature,
    /// The signature was seen before.
    #[error("replayed message: signature {signature} was already seen")]
    Replay {
        /// The hex signature.
        signature: String,
    },
    /// A signature scheme other than `hmac-sha256` was requested.
    #[error("unsupported signature scheme {0:?}: zpar supports only \"hmac-sha256\"")]
    UnsupportedScheme(String),
    /// An encoded value did not fit the buffers that came with it.
    #[error("bad value encoding: {0}")]
    Value(String),
    /// A connection file could not be read or written.
    #[error("cannot read or write the connection file {path}")]
    ConnectionFileIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A profile folder could not be made, or made private.
    #[error("cannot create the profile folder {path} (mode 0700): check that its parent exists and is yours to write")]
    ProfileIo {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A connection file is not valid JSON of the expected shape.
    #[error("connection file {path} is not valid (delete it and restart the hub to rewrite it)")]
    ConnectionFileFormat {
        /// The file.
        path: PathBuf,
        /// What serde_json said (it names the missing or wrong field).
        #[source]
        source: serde_json::Error,
    },
    /// A validly signed message whose metadata breaks zpar's contract (a
    /// key of the wrong type).
    #[error("the {what} breaks zpar's contract{}", at_key(key))]
    Contract {
        /// `request metadata` or `reply metadata`.
        what: &'static str,
        /// The key that broke it, when one can be named.
        key: Option<String>,
        /// What serde_json said (it names the key).
        #[source]
        source: serde_json::Error,
    },
    /// A CURVE key field (of a connection file, or of a registration
    /// reply) is missing, truncated, garbled, or not the pair of the other.
    #[error("bad CURVE key{}: {field} {problem}; copy the connection file from the hub again (a hub run with --no-curve writes neither curve_ field)", file.as_ref().map(|f| format!(" in {}", f.display())).unwrap_or_default())]
    CurveKey {
        /// `curve_publickey` or `curve_secretkey`.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
        /// The connection file, when the key came from one.
        file: Option<PathBuf>,
    },
    /// libzmq refused a CURVE setting or a socket monitor.
    #[error("{what} failed{}", curve_hint(source))]
    Curve {
        /// What was being done.
        what: &'static str,
        /// libzmq's error.
        #[source]
        source: zmq::Error,
    },
    /// A socket operation failed.
    #[error("socket error{}", crate::net::out_of_files_hint(.0))]
    Zmq(#[from] zmq::Error),
}

/// What may be behind a failed CURVE setting or monitor: descriptors run
/// out, or a libzmq without CURVE.
fn curve_hint(e: &zmq::Error) -> String {
    match crate::net::out_of_files_hint(e) {
        hint if !hint.is_empty() => hint,
        _ => format!(
            " (is this libzmq built with CURVE? zmq::has(\"curve\") says {})",
            zmq::has("curve").unwrap_or(false)
        ),
    }
}

impl ProtocolError {
    /// The same error, naming the connection file a bad CURVE key came
    /// from; other errors pass unchanged.
    pub fn in_file(self, path: &std::path::Path) -> ProtocolError {
        match self {
            ProtocolError::CurveKey { field, problem, .. } => ProtocolError::CurveKey {
                field,
                problem,
                file: Some(path.to_path_buf()),
            },
            other => other,
        }
    }
}

fn at_key(key: &Option<String>) -> String {
    key.as_ref()
        .map(|k| format!(" at `{k}`"))
        .unwrap_or_default()
}

/// Parses one JSON frame, naming the frame in the error.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(frame: &str, bytes: &[u8]) -> Result<T> {
    let text = std::str::from_utf8(bytes).map_err(|source| ProtocolError::Utf8 {
        frame: match frame {
            "header" => "header",
            "parent_header" => "parent_header",
            "metadata" => "metadata",
            _ => "content",
        },
        source,
    })?;
    serde_json::from_str(text).map_err(|source| ProtocolError::Json {
        frame: frame.to_string(),
        source,
    })
}

/// An error and each cause under it (its [`source`] chain), on one line
/// joined with `": "`. zpar's errors say what happened and leave the cause
/// to `source()`, so this is how to show one where there is room for a
/// single line: a reply's `evalue`, a console line, a log field.
///
/// ```
/// use zpar_protocol::error::Chain;
/// let e = zpar_protocol::ProtocolError::from(zmq::Error::EADDRINUSE);
/// assert_eq!(Chain(&e).to_string(), "socket error: Address already in use");
/// ```
///
/// [`source`]: std::error::Error::source
pub struct Chain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
