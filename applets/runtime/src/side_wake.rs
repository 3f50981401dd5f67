//! A waker for the futures a connection task watches beside the connection
//! itself (its timer and the shutdown signal), which notes that it fired.
//!
//! The task wakes for socket readiness once or more per request; polling the
//! timer and the shutdown future on each of those wakeups cost about 240
//! instructions per request in static-serve (a fifth of a 404's own work),
//! more in tcp-proxy. Polled with this waker, they are polled again only when
//! one of them woke the task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

pub struct SideWake {
    fired: AtomicBool,
    /// The connection task, to wake when a side future fires.
    task: Mutex<Option<Waker>>,
}

impl SideWake {
    /// Fired to start with: the side futures need one poll to register.
    pub fn new() -> Arc<SideWake> {
        Arc::new(SideWake {
            fired: AtomicBool::new(true),
            task: Mutex::new(None),
        })
    }

    /// Whether a side future woke the task since the last call (so they are
    /// to be polled now). `task` is the task's current waker: it is recorded
    /// before the flag is read, so a wakeup in between is not lost.
    pub fn take(&self, task: &Waker) -> bool {
        {
            let mut t = self.task.lock().unwrap_or_else(|e| e.into_inner());
            if !t.as_ref().is_some_and(|w| w.will_wake(task)) {
                *t = Some(task.clone());
            }
        }
        self.fired.swap(false, Ordering::SeqCst)
    }

    /// Polls the side futures again at the task's next poll.
    pub fn again(&self) {
        self.fired.store(true, Ordering::SeqCst);
    }
}

impl Wake for SideWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.again();
        if let Some(w) = self.task.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            w.wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts its wakeups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn reports_each_side_wakeup_once_and_wakes_the_task() {
        let count = Arc::new(Count(Default::default()));
        let task = Waker::from(count.clone());
        let side = SideWake::new();
        assert!(side.take(&task), "polled once to start with");
        assert!(!side.take(&task));
        Waker::from(side.clone()).wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(side.take(&task));
        assert!(!side.take(&task));
    }
}
