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

/// Bytes given in a flag (a newtype, so clap takes one value, not a list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload(pub Vec<u8>);

/// `PING\r\n` → bytes, with `\r`, `\n`, `\t`, `\\` and `\xHH` escapes, so
/// binary and line-based protocols can be written in a flag.
pub fn parse_payload(s: &str) -> Result<Payload, String> {
    let mut out = Vec::new();
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = it.by_ref().take(2).collect();
                let hex = std::str::from_utf8(&hex).unwrap_or("");
                let v = u8::from_str_radix(hex, 16)
                    .map_err(|_| format!("invalid \\x escape in {s:?}"))?;
                out.push(v);
            }
            _ => {
                return Err(format!(
                    "invalid escape in {s:?}: use \\r \\n \\t \\\\ or \\xHH"
                ))
            }
        }
    }
    Ok(Payload(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_escapes() {
        assert_eq!(parse_payload("PING\\r\\n").unwrap().0, b"PING\r\n");
        assert_eq!(parse_payload("\\x00\\xff\\\\").unwrap().0, [0, 255, b'\\']);
        assert!(parse_payload("\\q").is_err());
        assert!(parse_payload("\\xZ").is_err());
    }
}
