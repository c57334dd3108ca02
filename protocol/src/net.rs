//! Which address of this host to bind and to advertise.
//!
//! A hub or an engine on a machine with several interfaces must listen on
//! one its peers can reach and write that address where they will read it
//! (a connection file, a communicator's `info`). These helpers answer the
//! two questions that come up: "is this address one of mine?" and "which of
//! my addresses do I use to reach that peer?". Neither sends a packet: a UDP
//! socket that is bound, or connected, only asks the kernel's routing table.
//!
//! ```
//! use zpar_protocol::net;
//! assert!(net::is_local_address("127.0.0.1"));
//! assert!(net::is_loopback("127.0.0.1") && !net::is_loopback("0.0.0.0"));
//! assert_eq!(net::address_toward("127.0.0.1").unwrap().to_string(), "127.0.0.1");
//! ```

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// Whether `ip` is an address this host can bind (one of its interfaces'
/// addresses, or a wildcard).
pub fn is_local_address(ip: &str) -> bool {
    match ip.parse::<IpAddr>() {
        Ok(addr) => UdpSocket::bind(SocketAddr::new(addr, 0)).is_ok(),
        Err(_) => false,
    }
}

/// Whether `ip` is a loopback address (`127.0.0.0/8`, `::1`, or the name
/// `localhost`): traffic bound there never leaves this host.
pub fn is_loopback(ip: &str) -> bool {
    ip == "localhost" || ip.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// Whether `ip` is a wildcard (`0.0.0.0`, `::`, `*`).
pub fn is_wildcard(ip: &str) -> bool {
    ip == "*" || ip.parse::<IpAddr>().is_ok_and(|a| a.is_unspecified())
}

/// The local address this host uses to reach `peer`: the source address
/// the routing table picks. Loopback peers are reached from loopback.
pub fn address_toward(peer: &str) -> io::Result<IpAddr> {
    let peer: IpAddr = peer.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{peer:?} is not an IP address"),
        )
    })?;
    if peer.is_loopback() {
        return Ok(peer);
    }
    let any = match peer {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let probe = UdpSocket::bind(SocketAddr::new(any, 0))?;
    // Connecting a UDP socket sends nothing; it only fixes the route.
    probe.connect(SocketAddr::new(peer, 9))?;
    Ok(probe.local_addr()?.ip())
}

/// This host's address toward the outside, for a service bound on every
/// interface: the first non-loopback address its host name resolves to,
/// else the address it reaches its default gateway from. None when neither
/// exists (give the address explicitly then).
pub fn outward_address() -> Option<IpAddr> {
    by_host_name().or_else(|| {
        let routes = std::fs::read_to_string("/proc/net/route").ok()?;
        let gateway = default_gateway(&routes)?;
        address_toward(&gateway.to_string()).ok()
    })
}

fn by_host_name() -> Option<IpAddr> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let addrs = std::net::ToSocketAddrs::to_socket_addrs(&(name, 0)).ok()?;
    addrs
        .map(|a| a.ip())
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified() && is_local_address(&ip.to_string()))
}

/// Ports a service that picks its own may listen on without meeting the
/// kernel's ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`), from
/// 10000 up to just below that range; None when fewer than 1,000 are left
/// (or the range cannot be read: not Linux).
///
/// A port the kernel gave a listener (`bind` to port 0) comes from the
/// ephemeral range, the same pool it draws every outgoing connection's
/// source port from. Once that listener is gone (a hub killed, about to be
/// restarted on the same ports), any connection on the host may take the
/// port as its source, or a peer reconnecting to it may even connect to
/// itself, and the restart cannot bind. Ports below the range are never
/// handed out that way.
///
/// ```
/// use zpar_protocol::net;
/// assert_eq!(net::listen_ports_below("32768\t60999\n"), Some(10000..=32767));
/// assert_eq!(net::listen_ports_below("10500 60999"), None);
/// ```
pub fn listen_ports_below(ephemeral_range: &str) -> Option<std::ops::RangeInclusive<u16>> {
    const LOWEST: u16 = 10000;
    let low: u16 = ephemeral_range.split_whitespace().next()?.parse().ok()?;
    let highest = low.checked_sub(1)?;
    (highest >= LOWEST && highest - LOWEST >= 1000).then_some(LOWEST..=highest)
}

/// [`listen_ports_below`] for this host's ephemeral range.
pub fn listen_ports() -> Option<std::ops::RangeInclusive<u16>> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    listen_ports_below(&range)
}

/// The default route's gateway in a `/proc/net/route` table (addresses are
/// little-endian hex there).
fn default_gateway(table: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.get(1) != Some(&"00000000") {
            return None;
        }
        let gw = u32::from_str_radix(cols.get(2)?, 16).ok()?;
        (gw != 0).then(|| Ipv4Addr::from(gw.swap_bytes()))
    })
}

/// Connections each engine holds to the hub at most: its link
/// (registration, every channel's requests and replies, and its output)
/// and a heartbeat connection, which the engines of one process share (up
/// to 40 of them).
pub const CONNECTIONS_PER_ENGINE: u64 = 2;

/// The receive and send buffer of each connection of a socket that
/// carries only small messages (heartbeats), in bytes.
pub const SMALL_BUFFER_BYTES: i32 = 512;

/// Gives each connection `socket` makes or accepts from now on receive and
/// send buffers of [`SMALL_BUFFER_BYTES`] instead of ZeroMQ's 8 KiB
/// (`ZMQ_IN_BATCH_SIZE`, `ZMQ_OUT_BATCH_SIZE`; larger messages still pass,
/// in more system calls). The receive side's buffer also keeps a counter
/// for each message it may hold, so a connection's two buffers cost some
/// 26 KiB at the default and about 1.5 KiB here: for a hub with thousands
/// of engines, each one's heartbeat connection.
///
/// ```
/// let ctx = zmq::Context::new();
/// let mut socket = ctx.socket(zmq::ROUTER).unwrap();
/// zpar_protocol::net::small_buffers(&mut socket).unwrap();
/// ```
pub fn small_buffers(socket: &mut zmq::Socket) -> zmq::Result<()> {
    for option in [zmq_sys::ZMQ_IN_BATCH_SIZE, zmq_sys::ZMQ_OUT_BATCH_SIZE] {
        let value: libc::c_int = SMALL_BUFFER_BYTES;
        // SAFETY: the socket pointer is live for the borrow; the option
        // takes an int, passed by pointer with its size.
        let rc = unsafe {
            zmq_sys::zmq_setsockopt(
                socket.as_mut_ptr(),
                option as libc::c_int,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>(),
            )
        };
        if rc != 0 {
            // SAFETY: reads the calling thread's errno, as libzmq set it.
            return Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }));
        }
    }
    Ok(())
}

/// What to add to a socket error that says the process ran out of file
/// descriptors (`EMFILE`, `ENFILE`): the limit and how to raise it; empty
/// for any other error.
///
/// ```
/// use zpar_protocol::net::out_of_files_hint;
/// assert!(out_of_files_hint(&zmq::Error::EMFILE).contains("ulimit -n"));
/// assert_eq!(out_of_files_hint(&zmq::Error::EAGAIN), "");
/// ```
pub fn out_of_files_hint(e: &zmq::Error) -> String {
    if e.to_raw() != libc::EMFILE && e.to_raw() != libc::ENFILE {
        return String::new();
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct passed.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let now = if known {
        format!(" (now {}, at most {})", limit.rlim_cur, limit.rlim_max)
    } else {
        String::new()
    };
    format!(
        " (this process ran out of file descriptors{now}: raise the limit with `ulimit -n` \
         before starting it; each engine holds up to {CONNECTIONS_PER_ENGINE} connections to the hub)"
    )
}

/// What to add to the error of a bind to a port the system picks
/// (`tcp://ip:*`) that found none free (`EADDRINUSE`, `EADDRNOTAVAIL`): the
/// range of ports the system hands out, and what uses them; empty for any
/// other error.
///
/// ```
/// use zpar_protocol::net::no_free_port_hint;
/// assert!(no_free_port_hint(&zmq::Error::EADDRINUSE).contains("ip_local_port_range"));
/// assert_eq!(no_free_port_hint(&zmq::Error::EAGAIN), "");
/// ```
pub fn no_free_port_hint(e: &zmq::Error) -> String {
    if e.to_raw() != libc::EADDRINUSE && e.to_raw() != libc::EADDRNOTAVAIL {
        return String::new();
    }
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .map(|r| r.split_whitespace().collect::<Vec<_>>().join("–"))
        .filter(|r| !r.is_empty())
        .map(|r| format!(" ({r} here)"))
        .unwrap_or_default();
    format!(
        " (no free port on this address: the system hands out the ports of \
         net.ipv4.ip_local_port_range{range}, and each engine listens on two of them (relay and \
         communicator) and connects from one or two more: run fewer engines on this host, or \
         widen the range with `sysctl net.ipv4.ip_local_port_range`)"
    )
}

/// Raises this process's soft limit on open files to its hard limit
/// (`ulimit -Hn`), for a process that holds many connections (a hub, a
/// process of packed engines); returns the limit now in force, or None if
/// it cannot be read.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls read or write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let old = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                limit.rlim_cur = old;
            } else {
                tracing::debug!(
                    from = old,
                    to = limit.rlim_max,
                    "raised the limit on open files"
                );
            }
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local_and_foreign_addresses_are_not() {
        assert!(is_local_address("127.0.0.1"));
        assert!(is_local_address("0.0.0.0"));
        assert!(!is_local_address("not an address"));
        // TEST-NET-1 (RFC 5737) is never assigned to a host.
        assert!(!is_local_address("192.0.2.77"));
    }

    #[test]
    fn loopback_is_recognised() {
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("127.1.2.3"));
        assert!(is_loopback("::1"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("0.0.0.0"));
        assert!(!is_loopback("10.0.0.1"));
        assert!(!is_loopback("*"));
    }

    #[test]
    fn wildcards_are_recognised() {
        assert!(is_wildcard("0.0.0.0"));
        assert!(is_wildcard("::"));
        assert!(is_wildcard("*"));
        assert!(!is_wildcard("127.0.0.1"));
    }

    #[test]
    fn the_default_gateway_is_read_from_the_route_table() {
        let table = "Iface\tDestination\tGateway \tFlags\n\
                     eth0\t0000A8C0\t00000000\t0001\n\
                     eth0\t00000000\t0101A8C0\t0003\n";
        assert_eq!(default_gateway(table), Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert_eq!(default_gateway("Iface\tDestination\tGateway\n"), None);
    }

    #[test]
    fn a_loopback_peer_is_reached_from_loopback() {
        assert_eq!(
            address_toward("127.0.0.1").unwrap(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert!(address_toward("hub.example").is_err());
    }
}
