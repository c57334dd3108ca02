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
