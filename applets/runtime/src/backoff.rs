//! Exponential backoff with jitter.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The next wait: doubles each time up to `max`, with ±20% jitter so many
    /// sidecars restarting together do not retry in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::thread_rng().gen_range(0.8..=1.2);
        base.mul_f64(jitter).min(self.max)
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// An accept loop's backoff: a failed accept leaves the connection in the
/// backlog, so retrying at once would spin. The wait doubles from 10 ms to a
/// second while failures last, and an episode is told once when it starts
/// and once when it ends, not once per retry.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    /// The last wait, while failures last.
    wait: Option<Duration>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MOST: Duration = Duration::from_secs(1);

    /// The wait after a failed accept, and whether this failure starts an
    /// episode (the one to log).
    pub fn failed(&mut self) -> (Duration, bool) {
        let first = self.wait.is_none();
        let wait = self.wait.map_or(Self::FIRST, |w| (w * 2).min(Self::MOST));
        self.wait = Some(wait);
        (wait, first)
    }

    /// After an accept that worked: whether it ends an episode.
    pub fn accepted(&mut self) -> bool {
        self.wait.take().is_some()
    }
}

/// An accept that failed for want of descriptors or memory (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM): only closing connections helps, so the loop backs off.
pub fn is_resource_shortage(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_second_and_tells_each_episode_once() {
        let mut b = AcceptBackoff::default();
        let waits: Vec<_> = (0..9).map(|_| b.failed()).collect();
        assert_eq!(waits[0], (Duration::from_millis(10), true));
        assert_eq!(waits[1], (Duration::from_millis(20), false));
        assert_eq!(waits[8], (Duration::from_secs(1), false));
        assert!(b.accepted());
        assert!(!b.accepted());
        assert_eq!(b.failed(), (Duration::from_millis(10), true));
    }

    #[test]
    fn grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(80) && d[0] <= Duration::from_millis(120));
        assert!(d[2] >= Duration::from_millis(320));
        assert!(d.iter().all(|x| *x <= Duration::from_secs(1)));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }
}
