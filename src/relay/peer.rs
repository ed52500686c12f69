//! Who owns the other end of a loopback TCP connection.
//!
//! On Linux the kernel lists every TCP socket with its owner's uid in
//! `/proc/net/tcp` and `/proc/net/tcp6`. A client's socket on loopback has
//! its own address as the local address and the relay's listen address as
//! the remote one, so the relay can find the uid that opened the
//! connection. Anything unexpected (no entry, several owners) is treated as
//! "unknown", and the caller refuses the connection: the check fails closed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The uid owning the client end of a connection that the relay accepted on
/// `local` from `peer`; `None` when it cannot be determined.
#[cfg(target_os = "linux")]
pub async fn peer_uid(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    let mut found = None;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        // A missing table (IPv6 disabled) is not an error: the other may have it.
        let Ok(text) = tokio::fs::read_to_string(table).await else {
            continue;
        };
        match (found, find_owner(&text, peer, local)) {
            (_, Lookup::Ambiguous) => return None,
            (None, Lookup::Owner(uid)) => found = Some(uid),
            (Some(a), Lookup::Owner(b)) if a != b => return None,
            _ => {}
        }
    }
    found
}

/// What a table says about one socket.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Missing,
    Owner(u32),
    /// Several live sockets with different owners claim the address pair.
    Ambiguous,
}

/// Finds the socket whose local address is `socket_local` and remote address
/// `socket_remote` in the text of `/proc/net/tcp` or `/proc/net/tcp6`.
pub(crate) fn find_owner(
    table: &str,
    socket_local: SocketAddr,
    socket_remote: SocketAddr,
) -> Lookup {
    let mut owner = None;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(state), Some(uid)) =
            (fields.get(1), fields.get(2), fields.get(3), fields.get(7))
        else {
            continue;
        };
        // TIME_WAIT (06) sockets belong to nobody (the kernel shows uid 0)
        // and LISTEN (0A) sockets have no peer: neither is a live client.
        if matches!(*state, "06" | "0A") {
            continue;
        }
        if parse_socket(local) != Some(canonical(socket_local))
            || parse_socket(remote) != Some(canonical(socket_remote))
        {
            continue;
        }
        let Ok(uid) = uid.parse::<u32>() else {
            return Lookup::Ambiguous;
        };
        match owner {
            None => owner = Some(uid),
            Some(previous) if previous != uid => return Lookup::Ambiguous,
            Some(_) => {}
        }
    }
    owner.map_or(Lookup::Missing, Lookup::Owner)
}

/// IPv4-mapped IPv6 addresses name the same IPv4 socket.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Parses `0100007F:1F90` (IPv4) or 32 hex digits + port (IPv6). The kernel
/// prints each 32-bit word of the address in host byte order.
fn parse_socket(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes)).to_canonical()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn word(hex: &str) -> Option<[u8; 4]> {
    u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: &str) -> SocketAddr {
        a.parse().expect("address")
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn finds_the_client_socket_and_not_the_server_one() {
        // 127.0.0.1:40000 -> 127.0.0.1:8080 (client, uid 1000), the accepted
        // server socket (uid 0), a TIME_WAIT leftover (uid 0) and a listener.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 0100007F:9C41 0100007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0
";
        let server = v4("127.0.0.1:8080");
        assert_eq!(
            find_owner(table, v4("127.0.0.1:40000"), server),
            Lookup::Owner(1000)
        );
        assert_eq!(
            find_owner(table, v4("127.0.0.1:40001"), server),
            Lookup::Missing
        );
        assert_eq!(
            find_owner(table, v4("127.0.0.1:40002"), server),
            Lookup::Missing
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv6_and_mapped_addresses() {
        // [::1]:40000 -> [::1]:8080, and ::ffff:127.0.0.1:40001 -> same v4 server.
        let table = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:9C40 00000000000000000000000001000000:1F90 01 00000000:00000000 00:00000000 00000000  1001        0 5 1 0 20 4 30 10 -1
   1: 0000000000000000FFFF00000100007F:9C41 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000  1002        0 6 1 0 20 4 30 10 -1
";
        assert_eq!(
            find_owner(table, v4("[::1]:40000"), v4("[::1]:8080")),
            Lookup::Owner(1001)
        );
        assert_eq!(
            find_owner(table, v4("127.0.0.1:40001"), v4("127.0.0.1:8080")),
            Lookup::Owner(1002)
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn two_owners_is_ambiguous() {
        let table = "header
   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 20 4 30 10 -1
   2: 0100007F:9C40 0100007F:1F90 08 00000000:00000000 00:00000000 00000000  1001        0 2 1 0 20 4 30 10 -1
";
        assert_eq!(
            find_owner(table, v4("127.0.0.1:40000"), v4("127.0.0.1:8080")),
            Lookup::Ambiguous
        );
    }
}
