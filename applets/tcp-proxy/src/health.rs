//! Active health checks: a TCP connect to every endpoint of a pool each
//! interval. A connect that completes within --connect-timeout passes.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::pool::Pool;

pub fn spawn(pool: Arc<Pool>, interval: Duration, timeout: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let endpoints = pool.endpoints();
            let checks = endpoints.iter().map(|e| {
                let (pool, e) = (pool.clone(), e.clone());
                async move {
                    let passed = matches!(
                        tokio::time::timeout(timeout, TcpStream::connect(e.addr)).await,
                        Ok(Ok(_))
                    );
                    pool.report_check(&e, passed);
                }
            });
            run_all(checks).await;
        }
    });
}

/// Runs the checks of one round concurrently, so one slow endpoint does not
/// delay the others.
async fn run_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) {
    let mut set = tokio::task::JoinSet::new();
    for f in futs {
        set.spawn(f);
    }
    while set.join_next().await.is_some() {}
}
