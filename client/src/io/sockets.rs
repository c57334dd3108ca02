//! The client's sockets to the hub, made on connect and again after a
//! lost hub.

use crate::error::Result;
use zpar_protocol::contract::iopub_subscription;
use zpar_protocol::curve::{secure_client, HandshakeMonitor};
use zpar_protocol::ClientConnection;

/// The client's hub-facing sockets, all owned by the I/O thread.
pub(super) struct IoSockets {
    pub(super) query: zmq::Socket,
    pub(super) mux: zmq::Socket,
    pub(super) task: zmq::Socket,
    pub(super) control: zmq::Socket,
    pub(super) iopub: zmq::Socket,
    pub(super) notification: zmq::Socket,
    /// The hub's heartbeat pings, if the connection file names the port.
    pub(super) heartbeat: Option<zmq::Socket>,
    /// The query socket's handshakes, so keys that do not fit the hub's
    /// are said at once (the hub answers nothing to such a peer).
    pub(super) handshakes: HandshakeMonitor,
}

impl IoSockets {
    /// Connects every socket to the hub `conn` describes, as CURVE clients
    /// when it carries the hub's keys; the DEALERs carry `identity`, iopub
    /// hears only the output of `session`'s own requests, and nothing
    /// lingers when they close.
    pub(super) fn connect(
        ctx: &zmq::Context,
        conn: &ClientConnection,
        identity: &[u8],
        session: &str,
    ) -> Result<IoSockets> {
        let curve = conn.curve()?;
        let make = |kind: zmq::SocketType| -> Result<zmq::Socket> {
            let s = ctx.socket(kind)?;
            secure_client(&s, curve.as_ref())?;
            zpar_protocol::keepalive::set_zmtp_heartbeats(&s)?;
            Ok(s)
        };
        let dealer_unconnected = || -> Result<zmq::Socket> {
            let s = make(zmq::DEALER)?;
            s.set_identity(identity)?;
            s.set_linger(0)?;
            s.set_sndhwm(0)?;
            s.set_rcvhwm(0)?;
            Ok(s)
        };
        let dealer = |port: u16| -> Result<zmq::Socket> {
            let s = dealer_unconnected()?;
            s.connect(&conn.url(port))?;
            Ok(s)
        };
        let sub = |port: u16, topic: &[u8]| -> Result<zmq::Socket> {
            let s = make(zmq::SUB)?;
            s.set_subscribe(topic)?;
            s.set_linger(0)?;
            s.set_rcvhwm(0)?;
            s.connect(&conn.url(port))?;
            Ok(s)
        };
        let query = dealer_unconnected()?;
        let handshakes = HandshakeMonitor::attach(ctx, &query)?;
        query.connect(&conn.url(conn.registration))?;
        Ok(IoSockets {
            query,
            mux: dealer(conn.mux)?,
            task: dealer(conn.task)?,
            control: dealer(conn.control)?,
            iopub: sub(conn.iopub, iopub_subscription(session).as_bytes())?,
            notification: sub(conn.notification, b"")?,
            heartbeat: conn.hb_ping.map(|p| sub(p, b"")).transpose()?,
            handshakes,
        })
    }
}
