//! The TCP connections of the `git://` and `ssh://` transports, made as
//! libgit2's socket stream made them: every address of the host in turn,
//! each attempt bounded by `--sync-timeout` (which libgit2's
//! `GIT_OPT_SET_SERVER_CONNECT_TIMEOUT` was set to).

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::io::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection to `host` (brackets around an IPv6 address allowed) with
/// Nagle's algorithm off: git's requests are small and each waits for its
/// reply.
pub fn connect(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    let mut last = std::io::Error::other("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                return Ok(tcp);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Acknowledges what arrives next at once. Best effort: without it, only
/// slower.
pub fn quick_ack(tcp: &impl AsRawFd) {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket, and an option value of the size given.
    unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A tokio socket that turns on `TCP_QUICKACK` before every read, for the
/// ssh transport: sshd writes upload-pack's small replies with Nagle's
/// algorithm on, as git daemon does (see [`crate::gitproto`]).
pub struct QuickAck(pub tokio::net::TcpStream);

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        quick_ack(&self.0);
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
