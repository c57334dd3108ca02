//! ZeroMQ's own heartbeats (ZMTP 3.1 PING/PONG) on every TCP connection
//! between a hub and its engines and clients.
//!
//! zpar's heartbeat (`<hub instance>:<beat>` pings, echoed) runs on
//! connections of its own, so it says an engine lives, not that its mux or
//! task connection does. A connection whose other end vanished without a
//! FIN (a host powered off, a NAT or firewall that forgot the flow, a
//! cable pulled) otherwise looks open for as long as the kernel's TCP
//! timeouts last, often hours, and what is sent on it is lost. With these
//! options each side (the hub's bound sockets, the client's and the
//! engine's sockets to the hub) pings every [`ZMTP_HEARTBEAT_IVL_MS`], drops a
//! connection that answered nothing for [`ZMTP_HEARTBEAT_TIMEOUT_MS`], and
//! asks its peer to drop it after [`ZMTP_HEARTBEAT_TTL_MS`] of silence. The
//! connecting side then reconnects; the hub's engine-facing ROUTERs are
//! `ROUTER_MANDATORY`, so what it sends in between waits for the new
//! connection (and fails its request clearly if none comes).
//!
//! ```
//! let ctx = zmq::Context::new();
//! let s = ctx.socket(zmq::DEALER).unwrap();
//! zpar_protocol::keepalive::set_zmtp_heartbeats(&s).unwrap();
//! assert_eq!(s.get_heartbeat_ivl().unwrap(), 5000);
//! ```

/// How often each side of a connection pings, in milliseconds. Every engine
/// has about six connections to its hub, so at thousands of engines a ping
/// a second would be thousands of pings a second for the hub's I/O thread;
/// one every 5 s finds a dead connection within 20 s at a fifth of that.
pub const ZMTP_HEARTBEAT_IVL_MS: i32 = 5_000;

/// How long a ping may go unanswered before the connection is dropped, in
/// milliseconds: long enough that a machine saturated by hundreds of
/// processes (whose I/O threads answer late) keeps its connections.
pub const ZMTP_HEARTBEAT_TIMEOUT_MS: i32 = 15_000;

/// How long the peer may hear nothing from this side before it drops the
/// connection, in milliseconds (sent in each ping; 100 ms steps).
pub const ZMTP_HEARTBEAT_TTL_MS: i32 = 30_000;

/// Turns on ZMTP heartbeats on `socket`. Call it before `bind` or
/// `connect`: libzmq applies the options to the connections made after.
pub fn set_zmtp_heartbeats(socket: &zmq::Socket) -> zmq::Result<()> {
    socket.set_heartbeat_ivl(ZMTP_HEARTBEAT_IVL_MS)?;
    socket.set_heartbeat_timeout(ZMTP_HEARTBEAT_TIMEOUT_MS)?;
    socket.set_heartbeat_ttl(ZMTP_HEARTBEAT_TTL_MS)?;
    Ok(())
}
