//! `--listen` addresses: TCP `host:port` / `:port`, or `unix:/path`.
//!
//! A TCP address gets one listening socket per worker thread, bound with
//! `SO_REUSEPORT` (nginx's `listen … reuseport`): the kernel spreads new
//! connections across the workers by a hash of their addresses, even on
//! average, and `balance.rs` hands a connection over when one worker gets
//! ahead. (A single socket shared by every worker let whichever woke first
//! take a whole burst: under wrk's 64 connections one worker served all of
//! them while the other idled.)

use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use sidecar_runtime::usage;
use tokio::net::UnixListener;

/// Connections the kernel completes before we accept them (capped by
/// `net.core.somaxconn`). std's 128 fills during a connection flood, and a
/// full backlog drops new SYNs, so honest clients then wait out SYN
/// retransmits (1 s, 3 s, …) even after the flood's connections are gone.
const BACKLOG: u32 = 4096;

pub enum Listener {
    /// One listening socket per worker, all on the same address.
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

/// The addresses, each as [`bind_all`] will bind it.
fn addresses(addrs: &[String]) -> impl Iterator<Item = &str> {
    addrs.iter().map(|a| a.trim()).filter(|a| !a.is_empty())
}

/// `--check`: every address parses and a socket path can be bound (free, or
/// a stale socket, in a directory this process may write); nothing binds.
pub fn check(addrs: &[String]) -> anyhow::Result<()> {
    for raw in addresses(addrs) {
        if let Addr::Unix(path) = parse(raw)? {
            stale_socket(raw, &path)?;
            sidecar_runtime::check::creatable("--listen", &path)?;
        }
    }
    if addresses(addrs).next().is_none() {
        return Err(usage!("--listen: no address given"));
    }
    Ok(())
}

/// Binds every address (`workers` sockets per TCP address), logging each
/// (tests read `addr=` from the log).
pub async fn bind_all(addrs: &[String], workers: usize) -> anyhow::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for raw in addresses(addrs) {
        let l = bind(raw, workers)?;
        tracing::info!(addr = %l.describe(), "static-serve listening");
        out.push(l);
    }
    if out.is_empty() {
        return Err(usage!("--listen: no address given"));
    }
    Ok(out)
}

enum Addr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

fn parse(raw: &str) -> anyhow::Result<Addr> {
    if let Some(path) = raw.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(usage!("--listen {raw}: empty socket path"));
        }
        return Ok(Addr::Unix(PathBuf::from(path)));
    }
    match sidecar_runtime::admin::parse_listen_addr(raw) {
        Ok(a) => Ok(Addr::Tcp(a)),
        // A host name (`localhost:8080`): its first address.
        Err(e) => std::net::ToSocketAddrs::to_socket_addrs(raw)
            .ok()
            .and_then(|mut a| a.next())
            .map(Addr::Tcp)
            .ok_or_else(|| usage!("--listen: {e}")),
    }
}

/// Whether a socket from a previous run is at `path`, to be replaced;
/// anything else there is somebody's file and is left alone.
fn stale_socket(raw: &str, path: &Path) -> anyhow::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => Ok(true),
        Ok(_) => Err(usage!(
            "--listen {raw}: {} exists and is not a socket",
            path.display()
        )),
        Err(_) => Ok(false),
    }
}

fn bind(raw: &str, workers: usize) -> anyhow::Result<Listener> {
    let addr = match parse(raw)? {
        Addr::Tcp(addr) => addr,
        Addr::Unix(path) => {
            if stale_socket(raw, &path)? {
                std::fs::remove_file(&path).map_err(|e| {
                    anyhow::anyhow!("--listen {raw}: cannot remove the old socket: {e}")
                })?;
            }
            let l = UnixListener::bind(&path)
                .map_err(|e| anyhow::anyhow!("--listen {raw}: cannot listen: {e}"))?;
            return Ok(Listener::Unix(l, path));
        }
    };
    let cannot = |e: std::io::Error| anyhow::anyhow!("--listen {raw}: cannot listen: {e}");
    // SO_REUSEPORT would let us join a port another process (of the same
    // user) listens on and quietly share its traffic: a first socket without
    // it finds out, and picks the port for `:0`.
    let probe = bound(addr, false).map_err(cannot)?;
    let local = probe.local_addr().map_err(cannot)?;
    drop(probe);
    let socks = (0..workers.max(1))
        .map(|_| bound(local, true)?.listen(BACKLOG)?.into_std())
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(cannot)?;
    Ok(Listener::Tcp(local, socks))
}

fn bound(addr: SocketAddr, reuseport: bool) -> std::io::Result<tokio::net::TcpSocket> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }?;
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(reuseport)?;
    sock.bind(addr)?;
    Ok(sock)
}
