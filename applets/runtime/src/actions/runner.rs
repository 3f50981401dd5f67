use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::Shutdown;

/// Runs a job for the newest submitted state, retrying failures with backoff.
/// A state submitted while an older one is pending or retrying replaces it:
/// only the newest is ever retried.
pub struct Runner<T> {
    tx: watch::Sender<Option<Arc<T>>>,
}

impl<T: Send + Sync + 'static> Runner<T> {
    pub fn spawn<F, Fut>(name: &'static str, backoff: Backoff, stop: Shutdown, job: F) -> Self
    where
        F: Fn(Arc<T>) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send,
    {
        let (tx, mut rx) = watch::channel::<Option<Arc<T>>>(None);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = stop.requested() => return,
                }
                let Some(mut state) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let mut backoff = backoff.clone();
                backoff.reset();
                loop {
                    match job(state.clone()).await {
                        Ok(()) => break,
                        Err(e) => {
                            let delay = backoff.next_delay();
                            tracing::warn!(action = name, error = %format!("{e:#}"), retry_in = ?delay, "action failed");
                            tokio::select! {
                                _ = tokio::time::sleep(delay) => {}
                                r = rx.changed() => if r.is_err() { return },
                                _ = stop.requested() => return,
                            }
                            // A newer state replaces the failed one.
                            if let Some(newer) = rx.borrow_and_update().clone() {
                                if !Arc::ptr_eq(&newer, &state) {
                                    backoff.reset();
                                }
                                state = newer;
                            }
                        }
                    }
                }
            }
        });
        Runner { tx }
    }

    /// Queues `state`, replacing any pending one.
    pub fn submit(&self, state: T) {
        self.tx.send_replace(Some(Arc::new(state)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[tokio::test]
    async fn retries_only_the_newest() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let s = seen.clone();
        let runner = Runner::spawn(
            "test",
            Backoff::new(Duration::from_millis(5), Duration::from_millis(20)),
            Shutdown::new(),
            move |v: Arc<u32>| {
                let s = s.clone();
                let done_tx = done_tx.clone();
                async move {
                    s.lock().unwrap().push(*v);
                    if *v == 1 {
                        anyhow::bail!("state 1 always fails");
                    }
                    done_tx.send(*v).unwrap();
                    Ok(())
                }
            },
        );
        runner.submit(1);
        // Wait until state 1 failed at least twice, then replace it.
        for _ in 0..1000 {
            if seen.lock().unwrap().len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        runner.submit(2);
        assert_eq!(done_rx.recv().await, Some(2));
        let seen = seen.lock().unwrap();
        assert_eq!(*seen.last().unwrap(), 2);
        assert!(seen.iter().filter(|v| **v == 2).count() == 1);
    }
}
