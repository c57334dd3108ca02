//! Finding connections whose other end vanished without a word, between a
//! hub and its engines and clients.
//!
//! zpar's heartbeat (`<hub instance>:<beat>` pings, echoed) runs on
//! connections of its own, so it says an engine lives, not that its mux or
//! task connection does. A connection whose other end vanished without a
//! FIN (a host powered off, a NAT or firewall that forgot the flow, a
//! cable pulled) otherwise looks open for as long as the kernel's TCP
//! timeouts last, often hours, and what is sent on it is lost.
//!
//! The side that connects (engines, clients) runs ZeroMQ's own heartbeats
//! (ZMTP 3.1 PING/PONG, [`set_zmtp_heartbeats`]): it pings every
//! [`ZMTP_HEARTBEAT_IVL_MS`], drops a connection that answered nothing for
//! [`ZMTP_HEARTBEAT_TIMEOUT_MS`] and connects again; the hub's
//! engine-facing ROUTERs are `ROUTER_MANDATORY` with `ROUTER_HANDOVER`, so
//! what it sends in between waits for the new connection (and fails its
//! request clearly if none comes).
//!
//! On its engine-facing sockets the side that binds (the hub) answers
//! those pings but sends none and asks for none: libzmq keeps the timers of
//! every connection of an I/O thread in one ordered map and cancels one by
//! walking it, so a timer per connection makes each message cost time in
//! proportion to all connections. At 2,000 engines (14,000 connections)
//! that walk took 80 % of the hub's I/O thread and starved its heartbeats
//! until engines were declared dead. The hub sheds dead engines'
//! connections with the kernel's TCP keepalive instead
//! ([`shed_silent_peers`]), which costs its threads nothing. On its
//! client-facing sockets (a few connections) it pings as well: output it
//! keeps sending to a client that vanished would otherwise queue for the
//! kernel's retransmission minutes (keepalive probes only idle
//! connections).
//!
//! ```
//! let ctx = zmq::Context::new();
//! let s = ctx.socket(zmq::DEALER).unwrap();
//! zpar_protocol::keepalive::set_zmtp_heartbeats(&s).unwrap();
//! assert_eq!(s.get_heartbeat_ivl().unwrap(), 5000);
//! let bound = ctx.socket(zmq::ROUTER).unwrap();
//! zpar_protocol::keepalive::shed_silent_peers(&bound).unwrap();
//! assert_eq!(bound.get_tcp_keepalive().unwrap(), 1);
//! ```

/// How often each side of a connection pings, in milliseconds. Every engine
/// has a connection to its hub, so at thousands of engines a ping
/// a second would be thousands of pings a second for the hub's I/O thread;
/// one every 5 s finds a dead connection within 20 s at a fifth of that.
pub const ZMTP_HEARTBEAT_IVL_MS: i32 = 5_000;

/// How long a ping may go unanswered before the connection is dropped, in
/// milliseconds: long enough that a machine saturated by hundreds of
/// processes (whose I/O threads answer late) keeps its connections.
pub const ZMTP_HEARTBEAT_TIMEOUT_MS: i32 = 15_000;

/// TCP keepalive on the hub's accepted connections: the first probe after
/// this many seconds of silence...
pub const TCP_KEEPALIVE_IDLE_S: i32 = 20;

/// ...then one every this many seconds...
pub const TCP_KEEPALIVE_INTERVAL_S: i32 = 5;

/// ...and the kernel drops the connection after this many unanswered:
/// a peer gone silently is shed within 40 s.
pub const TCP_KEEPALIVE_PROBES: i32 = 4;

/// Turns on ZMTP heartbeats on a socket that connects. Call it before
/// `connect`: libzmq applies the options to the connections made after.
/// No time-to-live is asked of the peer, so the bound side keeps no timer
/// for this connection.
pub fn set_zmtp_heartbeats(socket: &zmq::Socket) -> zmq::Result<()> {
    socket.set_heartbeat_ivl(ZMTP_HEARTBEAT_IVL_MS)?;
    socket.set_heartbeat_timeout(ZMTP_HEARTBEAT_TIMEOUT_MS)?;
    socket.set_heartbeat_ttl(0)?;
    Ok(())
}

/// Has the kernel probe the silent connections a bound socket accepts and
/// drop those whose peer is gone (TCP keepalive). Call it before `bind`.
pub fn shed_silent_peers(socket: &zmq::Socket) -> zmq::Result<()> {
    socket.set_tcp_keepalive(1)?;
    socket.set_tcp_keepalive_idle(TCP_KEEPALIVE_IDLE_S)?;
    socket.set_tcp_keepalive_intvl(TCP_KEEPALIVE_INTERVAL_S)?;
    socket.set_tcp_keepalive_cnt(TCP_KEEPALIVE_PROBES)?;
    Ok(())
}
