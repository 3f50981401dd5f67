//! `--max-connections-per-ip`: how many connections one client address may
//! hold at once, across every worker thread.
//!
//! Checked right after accept and before a global slot is taken, so one
//! address at its cap can never make the accept loops wait for slots.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

pub struct PerIp {
    /// 0: no per-address cap.
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    /// Refused connections being answered (see [`PerIp::refuse`]).
    answering: Arc<Semaphore>,
}

/// What a refused plain-HTTP connection gets, as from nginx's `limit_conn`.
const REFUSED: &[u8] = concat!(
    "HTTP/1.1 503 Service Unavailable\r\n",
    "content-type: text/plain; charset=utf-8\r\n",
    "content-length: 24\r\n",
    "connection: close\r\n\r\n",
    "503 Service Unavailable\n",
)
.as_bytes();
/// How long a refused connection's request may take to arrive, and how many
/// such answers may be pending at once; beyond either it is just closed.
const REFUSE_WAIT: Duration = Duration::from_secs(1);
const REFUSE_PENDING: usize = 64;

/// One connection counted against its address; uncounted on drop.
pub struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    pub fn new(cap: usize) -> Arc<PerIp> {
        Arc::new(PerIp {
            cap,
            open: Mutex::new(HashMap::new()),
            answering: Arc::new(Semaphore::new(REFUSE_PENDING)),
        })
    }

    /// Answers a refused plain-HTTP connection with a 503 and closes it. The
    /// request head is read first (for at most [`REFUSE_WAIT`]): closing with
    /// it unread would reset the connection, and the client could lose the
    /// answer. At most [`REFUSE_PENDING`] at once, so a flood from one
    /// address cannot hold many descriptors this way; past that the
    /// connection is closed without an answer.
    pub fn refuse(&self, mut stream: TcpStream) -> Option<impl std::future::Future<Output = ()>> {
        let permit = self.answering.clone().try_acquire_owned().ok()?;
        Some(async move {
            let answer = async {
                let mut head = [0u8; 4096];
                let mut n = 0;
                while n < head.len() && !head[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut head[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(got) => n += got,
                    }
                }
                let _ = stream.write_all(REFUSED).await;
                let _ = stream.shutdown().await;
            };
            let _ = tokio::time::timeout(REFUSE_WAIT, answer).await;
            drop(permit);
        })
    }

    /// A slot for `ip`, or `None` when it already holds `cap` connections.
    /// Without a cap nothing is counted (no lock on the accept path).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Option<IpSlot>> {
        if self.cap == 0 {
            return Some(None);
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Some(IpSlot {
            table: self.clone(),
            ip,
        }))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            // Addresses with no connection leave the table, so it stays as
            // small as the set of clients connected now.
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_at_its_cap_is_refused_until_one_of_its_connections_ends() {
        let t = PerIp::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let one = t.admit(a).unwrap();
        let _two = t.admit(a).unwrap();
        assert!(t.admit(a).is_none());
        assert!(t.admit(b).is_some());
        drop(one);
        assert!(t.admit(a).is_some());
        drop(_two);
        assert!(t.open.lock().unwrap().is_empty());
    }

    #[test]
    fn no_cap_counts_nothing() {
        let t = PerIp::new(0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..10 {
            assert!(matches!(t.admit(a), Some(None)));
        }
    }
}
