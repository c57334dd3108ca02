//! The client's sockets to the hub, made on connect and again after a
//! lost hub.

use zpar_protocol::contract::iopub_subscription;
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
}

impl IoSockets {
    /// Connects every socket to the hub `conn` describes; the DEALERs
    /// carry `identity`, iopub hears only the output of `session`'s own
    /// requests, and nothing lingers when they close.
    pub(super) fn connect(
        ctx: &zmq::Context,
        conn: &ClientConnection,
        identity: &[u8],
        session: &str,
    ) -> zmq::Result<IoSockets> {
        let dealer = |port: u16| -> zmq::Result<zmq::Socket> {
            let s = ctx.socket(zmq::DEALER)?;
            s.set_identity(identity)?;
            s.set_linger(0)?;
            s.set_sndhwm(0)?;
            s.set_rcvhwm(0)?;
            s.connect(&conn.url(port))?;
            Ok(s)
        };
        let sub = |port: u16, topic: &[u8]| -> zmq::Result<zmq::Socket> {
            let s = ctx.socket(zmq::SUB)?;
            s.set_subscribe(topic)?;
            s.set_linger(0)?;
            s.set_rcvhwm(0)?;
            s.connect(&conn.url(port))?;
            Ok(s)
        };
        Ok(IoSockets {
            query: dealer(conn.registration)?,
            mux: dealer(conn.mux)?,
            task: dealer(conn.task)?,
            control: dealer(conn.control)?,
            iopub: sub(conn.iopub, iopub_subscription(session).as_bytes())?,
            notification: sub(conn.notification, b"")?,
            heartbeat: conn.hb_ping.map(|p| sub(p, b"")).transpose()?,
        })
    }
}
