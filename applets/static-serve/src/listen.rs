//! `--listen` addresses: TCP `host:port` / `:port`, or `unix:/path`.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use sidecar_runtime::usage;
use tokio::net::{TcpListener, UnixListener};

pub enum Listener {
    Tcp(TcpListener),
    /// The socket file is removed again at shutdown.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }
}

/// Binds every address, logging each (tests read `addr=` from the log).
pub async fn bind_all(addrs: &[String]) -> anyhow::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for raw in addrs.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
        let l = bind(raw).await?;
        tracing::info!(addr = %l.describe(), "static-serve listening");
        out.push(l);
    }
    if out.is_empty() {
        return Err(usage!("--listen: no address given"));
    }
    Ok(out)
}

async fn bind(raw: &str) -> anyhow::Result<Listener> {
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
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {raw}: cannot listen: {e}"))?;
    Ok(Listener::Tcp(l))
}
