//! Keeps the TCP workers' connection counts level.
//!
//! Each worker accepts from its own `SO_REUSEPORT` socket, and the kernel
//! picks the socket by a hash of the connection's addresses: fair on
//! average, but 64 keep-alive connections split 36/28 as easily as 32/32, and
//! the clients of the busier worker then wait longer (the p99 of a saturating
//! load is the busier worker's). A worker that accepts a connection which
//! would put it more than [`MAX_GAP`] ahead of the least loaded worker hands
//! the connection to that worker instead. A hand-off costs a cross-thread wake
//! and moving the socket to the other worker's reactor, so only the accepts
//! that would widen the gap pay it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// How far ahead of the least loaded worker a worker may get. Two, not one:
/// a gap of two in 32 connections each is 6%, while a gap of one would hand
/// over about every other accept when connections come and go.
const MAX_GAP: usize = 2;

/// The workers' live connection counts and their inboxes for handed-over
/// connections (`T`: a connection with what it holds).
pub struct Balance<T> {
    workers: Box<[Worker<T>]>,
}

struct Worker<T> {
    live: AtomicUsize,
    inbox: mpsc::UnboundedSender<T>,
}

/// Where a new connection runs; counted in its worker until dropped.
pub struct Seat<T> {
    balance: Arc<Balance<T>>,
    worker: usize,
}

impl<T> Seat<T> {
    pub fn worker(&self) -> usize {
        self.worker
    }
}

impl<T> Drop for Seat<T> {
    fn drop(&mut self) {
        self.balance.workers[self.worker]
            .live
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T> Balance<T> {
    /// A balance over `n` workers, and each worker's inbox, in worker order.
    pub fn new(n: usize) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<T>>) {
        let (workers, inboxes): (Vec<_>, Vec<_>) = (0..n.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                (
                    Worker {
                        live: AtomicUsize::new(0),
                        inbox: tx,
                    },
                    rx,
                )
            })
            .unzip();
        let balance = Arc::new(Balance {
            workers: workers.into(),
        });
        (balance, inboxes)
    }

    /// Seats a connection that worker `me` accepted: on `me`, unless that
    /// would put `me` more than [`MAX_GAP`] ahead of the least loaded worker.
    pub fn seat(self: &Arc<Self>, me: usize) -> Seat<T> {
        let count = |w: &Worker<T>| w.live.load(Ordering::Relaxed);
        let (least, fewest) = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| (i, count(w)))
            .min_by_key(|&(_, n)| n)
            .unwrap_or((me, 0));
        let worker = if count(&self.workers[me]) + 1 > fewest + MAX_GAP {
            least
        } else {
            me
        };
        self.workers[worker].live.fetch_add(1, Ordering::Relaxed);
        Seat {
            balance: self.clone(),
            worker,
        }
    }

    /// Hands a connection to its seat's worker. `Err` gives it back when that
    /// worker has stopped taking connections (shutting down).
    pub fn hand_over(&self, worker: usize, conn: T) -> Result<(), T> {
        self.workers[worker].inbox.send(conn).map_err(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every accept lands on worker 0, as a skewed hash could make it: the
    /// gap stays within two, and a worker whose clients left gets the next ones.
    #[test]
    fn seats_follow_the_least_loaded_worker() {
        let (balance, _inboxes) = Balance::<()>::new(2);
        let seats: Vec<_> = (0..8).map(|_| balance.seat(0)).collect();
        let on = |seats: &[Seat<()>], w| seats.iter().filter(|s| s.worker() == w).count();
        assert_eq!((on(&seats, 0), on(&seats, 1)), (5, 3));

        // Worker 1's connections close: it takes worker 0's next accepts.
        let (mut seats, closed): (Vec<_>, Vec<_>) =
            seats.into_iter().partition(|s| s.worker() == 0);
        drop(closed);
        seats.extend((0..3).map(|_| balance.seat(0)));
        assert_eq!((on(&seats, 0), on(&seats, 1)), (5, 3));
    }

    #[test]
    fn a_worker_within_the_gap_keeps_its_connections() {
        let (balance, _inboxes) = Balance::<()>::new(3);
        let seats: Vec<_> = (0..3).map(|_| balance.seat(2)).collect();
        let workers: Vec<_> = seats.iter().map(Seat::worker).collect();
        // 1-0-0, 2-0-0 stay; a third would make the gap 3.
        assert_eq!(workers, [2, 2, 0]);
    }

    #[test]
    fn a_stopped_worker_gives_the_connection_back() {
        let (balance, mut inboxes) = Balance::<u32>::new(2);
        assert_eq!(balance.hand_over(1, 7), Ok(()));
        assert_eq!(inboxes[1].try_recv().ok(), Some(7));
        inboxes.truncate(1);
        assert_eq!(balance.hand_over(1, 8), Err(8));
    }
}
