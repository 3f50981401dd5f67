//! Admission limits: a token bucket on new connections per route and a
//! global cap on open client connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::Rate;

/// Starts full (`burst` tokens) and refills at `per_sec`.
pub struct TokenBucket {
    rate: Rate,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate: Rate) -> Self {
        TokenBucket {
            rate,
            state: Mutex::new((rate.burst, Instant::now())),
        }
    }

    /// How long until the next token (for Retry-After).
    pub fn retry_after(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(1.0 / self.rate.per_sec)
    }

    pub fn try_take(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate.per_sec;
        s.0 = (s.0 + refill).min(self.rate.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Open client connections over all routes, capped at `max` (0 = no cap).
#[derive(Clone)]
pub struct ConnectionLimit {
    max: usize,
    open: Arc<AtomicUsize>,
}

/// One admitted connection; releases its slot when dropped.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        // What the connection made us buffer goes back to the kernel.
        sidecar_runtime::memory::release_freed_memory();
    }
}

impl ConnectionLimit {
    pub fn new(max: usize) -> Self {
        ConnectionLimit {
            max,
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn try_acquire(&self) -> Option<Slot> {
        let max = self.max;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.open.clone()))
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_refuses() {
        let b = TokenBucket::new(Rate {
            per_sec: 0.001,
            burst: 3.0,
        });
        assert!((0..3).all(|_| b.try_take()));
        assert!(!b.try_take());
    }

    #[test]
    fn limit_releases_on_drop() {
        let l = ConnectionLimit::new(1);
        let s = l.try_acquire().unwrap();
        assert!(l.try_acquire().is_none());
        drop(s);
        assert!(l.try_acquire().is_some());
    }
}
