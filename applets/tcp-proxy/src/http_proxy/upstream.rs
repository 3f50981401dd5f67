//! Connections to upstream endpoints, kept for reuse: per endpoint, idle
//! HTTP/1 connections (one request at a time each) and one multiplexed
//! HTTP/2 connection.
//!
//! Not hyper-util's pooling client: it keys its pool by the request URI's
//! authority, so sending to a chosen endpoint would overwrite the
//! `:authority` the upstream should see; and connecting here, before a
//! request is handed over, tells a connect failure (nothing sent, always
//! safe to retry) from a failure after sending.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::tls::{Alpn, Tls};

/// A byte stream to an upstream: the socket, or mutual TLS over it.
pub type UpstreamIo = Box<dyn UpstreamStream>;
pub trait UpstreamStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> UpstreamStream for T {}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Idle HTTP/1 connections older than this are closed rather than reused:
/// servers close idle keep-alive connections too (nginx after 75 s), and a
/// request sent just as the server closes is lost.
const H1_IDLE: Duration = Duration::from_secs(60);
/// Idle HTTP/1 connections kept per endpoint.
const H1_MAX_IDLE: usize = 256;
/// Endpoints remembered before those without connections are forgotten.
const MAX_ENDPOINTS: usize = 1024;

#[derive(Default)]
pub struct EndpointConns {
    h1_idle: Mutex<Vec<(http1::SendRequest<Body>, Instant)>>,
    h2: Mutex<Option<http2::SendRequest<Body>>>,
    /// Held across an HTTP/2 connect, so concurrent first requests share
    /// one connection instead of each opening its own.
    h2_connect: tokio::sync::Mutex<()>,
}

impl EndpointConns {
    fn holds_connections(&self) -> bool {
        let idle = self.h1_idle.lock().unwrap_or_else(|e| e.into_inner());
        let h2 = self.live_h2().is_some();
        // Locked: a connect is under way.
        !idle.is_empty() || h2 || self.h2_connect.try_lock().is_err()
    }

    fn live_h2(&self) -> Option<http2::SendRequest<Body>> {
        let slot = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// Puts an HTTP/1 connection back once its response has started; it
    /// becomes ready again when that response's body has been read.
    pub fn checkin(&self, sender: http1::SendRequest<Body>) {
        let mut idle = self.h1_idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < H1_MAX_IDLE {
            idle.push((sender, Instant::now()));
        }
    }
}

/// A connection ready for one request.
pub enum Sender {
    /// From the idle list (perhaps closed by the server meanwhile: sending
    /// then gives the request back) or new; and where it goes back.
    H1(http1::SendRequest<Body>, Arc<EndpointConns>),
    H2(http2::SendRequest<Body>),
}

pub struct Connector {
    connect_timeout: Duration,
    /// --tls-client: requests go to upstreams over mutual TLS.
    tls: Option<Arc<Tls>>,
    endpoints: Mutex<HashMap<SocketAddr, Arc<EndpointConns>>>,
}

impl Connector {
    pub fn new(connect_timeout: Duration, tls: Option<Arc<Tls>>) -> Self {
        Connector {
            connect_timeout,
            tls,
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    fn conns(&self, addr: SocketAddr) -> Arc<EndpointConns> {
        let mut map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        // Transparent mode meets as many endpoints as the app dials: forget
        // the ones holding no connection, so the map stays bounded.
        if map.len() >= MAX_ENDPOINTS && !map.contains_key(&addr) {
            map.retain(|_, c| Arc::strong_count(c) > 1 || c.holds_connections());
        }
        map.entry(addr).or_default().clone()
    }

    /// The one place a byte stream to an upstream is opened: a TLS client
    /// layer wraps the stream here.
    /// `alpn` is what the stream will carry. Without a host name, the
    /// upstream's certificate must match --tls-upstream-id or name its IP.
    pub async fn connect_stream(&self, addr: SocketAddr, alpn: Alpn) -> io::Result<UpstreamIo> {
        let s = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        };
        let _ = s.set_nodelay(true);
        match self.tls.as_ref().filter(|t| t.originates_to(addr)) {
            Some(tls) => {
                let s = Arc::new(s);
                let stream = tls
                    .connect(&s, &addr.ip().to_string(), addr, "http", alpn)
                    .await
                    .map_err(|reason| io::Error::new(io::ErrorKind::ConnectionRefused, reason))?;
                Ok(Box::new(stream))
            }
            None => Ok(Box::new(s)),
        }
    }

    /// A connection for one request to `addr`, HTTP/2 when `h2`. Errors are
    /// connect failures: nothing of the request was sent.
    pub async fn checkout(&self, addr: SocketAddr, h2: bool) -> io::Result<Sender> {
        let conns = self.conns(addr);
        if h2 {
            if let Some(s) = conns.live_h2() {
                return Ok(Sender::H2(s));
            }
            let _connecting = conns.h2_connect.lock().await;
            if let Some(s) = conns.live_h2() {
                return Ok(Sender::H2(s));
            }
            let s = self.handshake_h2(addr).await?;
            *conns.h2.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
            return Ok(Sender::H2(s));
        }
        let reused = {
            let mut idle = conns.h1_idle.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            idle.retain(|(s, since)| !s.is_closed() && now.duration_since(*since) < H1_IDLE);
            idle.iter()
                .rposition(|(s, _)| s.is_ready())
                .map(|i| idle.swap_remove(i).0)
        };
        let sender = match reused {
            Some(s) => s,
            None => self.handshake_h1(addr).await?,
        };
        Ok(Sender::H1(sender, conns))
    }

    /// A new HTTP/1 connection that may become a tunnel (Upgrade).
    pub async fn handshake_h1(&self, addr: SocketAddr) -> io::Result<http1::SendRequest<Body>> {
        let io = TokioIo::new(self.connect_stream(addr, Alpn::Http1).await?);
        let (sender, conn) = http1::Builder::new()
            .handshake::<_, Body>(io)
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %addr, error = %e, "upstream HTTP/1 connection failed");
            }
        });
        Ok(sender)
    }

    async fn handshake_h2(&self, addr: SocketAddr) -> io::Result<http2::SendRequest<Body>> {
        let io = TokioIo::new(self.connect_stream(addr, Alpn::H2).await?);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake::<_, Body>(io)
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %addr, error = %e, "upstream HTTP/2 connection failed");
            }
        });
        Ok(sender)
    }
}
