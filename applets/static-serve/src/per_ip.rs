//! `--max-connections-per-ip`: how many connections one client address may
//! hold at once, across every worker thread.
//!
//! Checked right after accept and before a global slot is taken, so one
//! address at its cap can never make the accept loops wait for slots.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub struct PerIp {
    /// 0: no per-address cap.
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

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
