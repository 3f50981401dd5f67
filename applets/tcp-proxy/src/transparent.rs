//! Transparent mode: the destination a redirected connection was meant for.
//!
//! iptables REDIRECT rewrites the destination to the proxy's listener and
//! keeps the original in conntrack; `getsockopt(SO_ORIGINAL_DST)` (IPv4) or
//! `IP6T_SO_ORIGINAL_DST` (IPv6) reads it back. On a dual-stack listener an
//! IPv4 client arrives v4-mapped and only the SOL_IP query answers, so IPv4 is
//! asked first and IPv6 second, as ztunnel does.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

pub fn original_dst(s: &TcpStream) -> io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(s);
    let addr = match sock.original_dst_v4() {
        Ok(a) => a,
        Err(v4_err) => sock.original_dst_v6().map_err(|_| v4_err)?,
    };
    addr.as_socket().map(unmap).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "original destination is not an IP address",
        )
    })
}

/// `[::ffff:10.0.0.1]:80` → `10.0.0.1:80`, so logs, metrics and connects
/// see the address the client used.
pub fn unmap(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

/// A connection made straight to the capture port (not redirected) reports
/// the listener itself as its original destination: proxying it would
/// connect back to us forever. `local` is the accepted socket's own address.
pub fn is_loop(original: SocketAddr, local: SocketAddr, listener: SocketAddr) -> bool {
    let original = unmap(original);
    if original == unmap(local) {
        return true;
    }
    // Another of our own addresses on the listener's port (127.0.0.1 when
    // the client dialled the pod IP, or the reverse).
    original.port() == listener.port()
        && (original.ip().is_loopback()
            || listener.ip().is_unspecified()
            || original.ip() == listener.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops() {
        let l: SocketAddr = "0.0.0.0:15001".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:15001".parse().unwrap();
        assert!(is_loop(local, local, l));
        assert!(is_loop("10.0.0.5:15001".parse().unwrap(), local, l));
        assert!(is_loop(
            "[::ffff:127.0.0.1]:15001".parse().unwrap(),
            local,
            l
        ));
        assert!(!is_loop("10.0.0.5:8080".parse().unwrap(), local, l));
    }
}
