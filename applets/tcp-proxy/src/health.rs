//! Active health checks: every interval, a TCP connect to every endpoint of
//! a pool, optionally followed by a request (`--health-check-send`) and the
//! bytes the answer must start with (`--health-check-expect`), as Envoy's
//! TCP health checker and HAProxy's `tcp-check send/expect` do. The whole
//! check must finish within --connect-timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pool::Pool;

#[derive(Debug, Clone)]
pub struct Check {
    pub interval: Duration,
    pub timeout: Duration,
    pub send: Vec<u8>,
    pub expect: Vec<u8>,
}

pub fn spawn(pool: Arc<Pool>, check: Check) {
    let check = Arc::new(check);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(check.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // One round runs concurrently, so one slow endpoint does not
            // delay the others.
            let mut round = tokio::task::JoinSet::new();
            for e in pool.endpoints().iter() {
                let (pool, e, check) = (pool.clone(), e.clone(), check.clone());
                round.spawn(async move {
                    let passed = matches!(
                        tokio::time::timeout(check.timeout, probe(e.addr, &check)).await,
                        Ok(Ok(true))
                    );
                    pool.report_check(&e, passed);
                });
            }
            while round.join_next().await.is_some() {}
        }
    });
}

async fn probe(addr: SocketAddr, check: &Check) -> std::io::Result<bool> {
    let mut s = TcpStream::connect(addr).await?;
    if !check.send.is_empty() {
        s.write_all(&check.send).await?;
    }
    let mut got = Vec::with_capacity(check.expect.len());
    while got.len() < check.expect.len() {
        let mut buf = vec![0u8; check.expect.len() - got.len()];
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got == check.expect)
}
