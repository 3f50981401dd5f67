//! `--listen` addresses: TCP `host:port` / `:port`, or `unix:/path`.
//!
//! A TCP address is bound once per worker thread with `SO_REUSEPORT`, so each
//! worker accepts and serves its own connections (nginx's `reuseport` model):
//! no cross-thread wake-ups on the hot path.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage,
};
use sidecar_runtime::usage;
use tokio::net::UnixListener;

pub enum Listener {
    /// One socket per worker, all bound to the same address.
    Tcp(SocketAddr, Vec<std::net::TcpListener>),
    /// The socket file is removed again at shutdown.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(a, _) => a.to_string(),
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }
}

/// Binds every address (`workers` sockets per TCP address), logging each
/// (tests read `addr=` from the log).
pub async fn bind_all(addrs: &[String], workers: usize) -> anyhow::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for raw in addrs.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
        let l = bind(raw, workers)?;
        tracing::info!(addr = %l.describe(), "static-serve listening");
        out.push(l);
    }
    if out.is_empty() {
        return Err(usage!("--listen: no address given"));
    }
    Ok(out)
}

fn bind(raw: &str, workers: usize) -> anyhow::Result<Listener> {
    if let Some(path) = raw.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        if path.as_os_str().is_empty() {
            return Err(usage!("--listen {raw}: empty socket path"));
        }
        // A stale socket from a previous run is replaced; anything else at
        // that path is somebody's file and is left alone.
        if let Ok(md) = std::fs::symlink_metadata(&path) {
            if !md.file_type().is_socket() {
                return Err(usage!(
                    "--listen {raw}: {} exists and is not a socket",
                    path.display()
                ));
            }
            std::fs::remove_file(&path).map_err(|e| {
                anyhow::anyhow!("--listen {raw}: cannot remove the old socket: {e}")
            })?;
        }
        let l = UnixListener::bind(&path)
            .map_err(|e| anyhow::anyhow!("--listen {raw}: cannot listen: {e}"))?;
        return Ok(Listener::Unix(l, path));
    }
    let addr =
        sidecar_runtime::admin::parse_listen_addr(raw).map_err(|e| usage!("--listen: {e}"))?;
    let cannot = |e: nix::Error| {
        anyhow::anyhow!("--listen {raw}: cannot listen: {}", std::io::Error::from(e))
    };
    // SO_REUSEPORT would let us share a port that another server already
    // holds; a plain bind first fails with EADDRINUSE as usual, and picks the
    // port for `:0`.
    let port = {
        let probe = socket_for(addr, false).map_err(cannot)?;
        socket::bind(probe.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(cannot)?;
        let local: SockaddrStorage = socket::getsockname(probe.as_raw_fd()).map_err(cannot)?;
        local
            .as_sockaddr_in()
            .map(|a| a.port())
            .or_else(|| local.as_sockaddr_in6().map(|a| a.port()))
            .unwrap_or(addr.port())
    };
    let addr = SocketAddr::new(addr.ip(), port);
    let mut sockets = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        let fd = socket_for(addr, true).map_err(cannot)?;
        socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(cannot)?;
        socket::listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN)).map_err(cannot)?;
        sockets.push(std::net::TcpListener::from(fd));
    }
    Ok(Listener::Tcp(addr, sockets))
}

fn socket_for(addr: SocketAddr, reuse_port: bool) -> nix::Result<std::os::fd::OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if reuse_port {
        socket::setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    Ok(fd)
}
