//! # zpar-protocol: the wire format every zpar process speaks
//!
//! zpar's hub, engines and clients exchange Jupyter-format messages (version
//! 5.x, as ipyparallel does) over ZeroMQ:
//!
//! ```text
//! [identities…] "<IDS|MSG>" signature header parent_header metadata content [buffers…]
//! ```
//!
//! This crate owns that format, and the one piece of socket policy every
//! process shares, its CURVE security ([`curve`]); no threads. It works
//! in three layers, each usable on its own:
//!
//! - [`frames`]: zmq frames ⇄ [`RawMessage`] (split at the delimiter, size
//!   limits checked, JSON left as bytes, buffers untouched) — what a router
//!   needs to forward without parsing;
//! - [`session`]: [`Session`] signs the four JSON frames with HMAC-SHA256 and
//!   verifies them in constant time, before any JSON is parsed, with a
//!   bounded replay guard;
//! - [`message`] / [`content`]: the typed [`Message`] with a [`Content`] enum,
//!   one variant per message type.
//!
//! Values that move between clients and engines are [`Value`]s: JSON for
//! small things, raw little-endian buffer frames for blobs and numeric
//! arrays. [`connection`] reads and writes the hub's connection files;
//! [`kernel`] has Jupyter's kernel connection file and the kernel requests
//! an engine answers when it is also a Jupyter kernel;
//! [`private`] keeps every folder zpar creates 0700 and every file 0600.
//! [`curve`] holds the CURVE keys and the one place that makes a socket
//! encrypt (server or client), so every crate secures its sockets alike.
//!
//! Large values: [`stream`] splits a large request or reply into signed
//! chunk messages the hub forwards as they arrive, and puts them back
//! together; [`bulk`] allocates receive buffers once, on huge pages, and
//! moves large arrays through shared memory to engines on the sender's host.
//!
//! Beside the format: [`contract`] types what zpar's processes put in
//! metadata (and the error classes, channels and record states they share);
//! [`net`] tells which address of this host to bind and advertise;
//! [`backoff`] is the one polling loop for waits nothing can block on;
//! [`vitals`] reads a process's memory and CPU share for the hub's queue
//! status.
//!
//! ```
//! use zpar_protocol::{Content, ExecuteRequest, Message, Session};
//! let client = Session::new(b"key", "hmac-sha256", "me").unwrap();
//! let mut engine = Session::new(b"key", "hmac-sha256", "engine").unwrap();
//! let req = Message::new(&client, Content::ExecuteRequest(ExecuteRequest {
//!     code: "40 + 2".into(), ..Default::default() }));
//! let frames = client.encode(&req).into_frames();      // what goes on the wire
//! let got = engine.decode_frames(frames).unwrap();      // verified, then parsed
//! assert!(matches!(got.content, Content::ExecuteRequest(r) if r.code == "40 + 2"));
//! ```

pub mod backoff;
pub mod bulk;
pub mod connection;
pub mod content;
pub mod contract;
pub mod curve;
pub mod error;
pub mod frames;
pub mod header;
pub mod keepalive;
pub mod kernel;
pub mod message;
pub mod net;
pub mod private;
pub mod session;
pub mod stream;
pub mod value;
pub mod vitals;

pub use backoff::{poll_until, Backoff};
pub use connection::{ClientConnection, EngineConnection, Profile};
pub use content::*;
pub use contract::{Channel, ErrorClass, LinkTag, RecordStatus, ReplyMetadata, RequestMetadata};
pub use curve::CurveKeys;
pub use error::{ProtocolError, Result};
pub use frames::{recv_frames, send_frames, Limits, RawMessage, DELIMITER};
pub use header::{iso8601_now, new_id, Header};
pub use kernel::KernelConnection;
pub use message::Message;
pub use session::{Session, SIGNATURE_SCHEME};
pub use value::Value;
