//! Connections to upstream endpoints, kept for reuse: per endpoint, idle
//! HTTP/1 connections (one request at a time each) and one multiplexed
//! HTTP/2 connection. An endpoint that does not speak HTTP/2 gets HTTP/2
//! requests as HTTP/1.1.
//!
//! Not hyper-util's pooling client: it keys its pool by the request URI's
//! authority, so sending to a chosen endpoint would overwrite the
//! `:authority` the upstream should see; and connecting here, before a
//! request is handed over, tells a connect failure (nothing sent, always
//! safe to retry) from a failure after sending.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustc_hash::FxHashMap;
use tokio::net::TcpStream;

use super::h2_body::H2Body;
use super::h2_client::{self, H2Sender};
use super::preface;
use crate::proxy::UpstreamTlsFailed;
use crate::tls::{Alpn, ClientStream, Tls};

/// A byte stream to an upstream: the socket, or mutual TLS over it.
pub type UpstreamIo = Box<dyn UpstreamStream>;
pub trait UpstreamStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> UpstreamStream for T {}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body on its way through: the peer's, streamed on, or bytes we hold (a
/// local answer, a request kept for retries). An enum rather than a boxed
/// body: two allocations fewer per proxied request.
pub enum Body {
    /// From hyper: an HTTP/1 client's request, an HTTP/1 upstream's response.
    Incoming(Incoming),
    Full(Full<Bytes>),
    /// From an HTTP/2 stream: an HTTP/2 client's request, an HTTP/2
    /// upstream's response.
    H2(H2Body),
    /// The answer to an HTTP/2 client's CONNECT: the connection to the
    /// endpoint, which the HTTP/2 server splices with the stream (see
    /// `tunnel::connect`). As a body it is empty.
    Tunnel(UpstreamIo),
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Full::new(bytes.into()))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Full(b) => Pin::new(b).poll_frame(cx).map_err(|e| match e {}),
            Body::H2(b) => b.poll_frame(cx),
            Body::Tunnel(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Incoming(b) => b.is_end_stream(),
            Body::Full(b) => b.is_end_stream(),
            Body::H2(b) => b.is_end_stream(),
            Body::Tunnel(_) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Incoming(b) => b.size_hint(),
            Body::Full(b) => b.size_hint(),
            Body::H2(b) => b.size_hint(),
            Body::Tunnel(_) => SizeHint::with_exact(0),
        }
    }
}

/// Idle HTTP/1 connections older than this are closed rather than reused:
/// servers close idle keep-alive connections too (nginx after 75 s), and a
/// request sent just as the server closes is lost.
const H1_IDLE: Duration = Duration::from_secs(60);
/// Idle HTTP/1 connections kept per endpoint.
const H1_MAX_IDLE: usize = 256;
/// The longest an upstream may take to answer the HTTP/2 preface before it
/// is taken for an HTTP/2 server (an HTTP/1 one answers at once).
const PROBE_WAIT: Duration = Duration::from_secs(1);
/// How long an endpoint that refused HTTP/2 gets HTTP/2 requests as HTTP/1.1
/// before it is asked again.
const H1_ONLY_RECHECK: Duration = Duration::from_secs(60);
/// Endpoints remembered before those without connections are forgotten.
const MAX_ENDPOINTS: usize = 1024;

#[derive(Default)]
pub struct EndpointConns {
    h1_idle: Mutex<Vec<(http1::SendRequest<Body>, Instant)>>,
    h2: Mutex<Option<H2Sender>>,
    /// When the endpoint was found to speak HTTP/1.1 only.
    h1_only: Mutex<Option<Instant>>,
    /// Held across an HTTP/2 connect, so concurrent first requests share
    /// one connection instead of each opening its own.
    h2_connect: tokio::sync::Mutex<()>,
    /// HTTP/1 connections open, idle or busy (one that became a tunnel no
    /// longer counts), for --max-connections-per-upstream.
    h1_open: AtomicUsize,
}

/// An HTTP/1 connection counted against its endpoint's cap until it closes
/// or is handed over to a tunnel.
struct Counted(Arc<EndpointConns>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.h1_open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every HTTP/1 connection --max-connections-per-upstream allows to the
/// endpoint is open: no request was sent.
#[derive(Debug)]
pub struct EndpointFull;

impl std::fmt::Display for EndpointFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the endpoint has every connection --max-connections-per-upstream allows")
    }
}

impl std::error::Error for EndpointFull {}

impl EndpointConns {
    fn holds_connections(&self) -> bool {
        let idle = self.h1_idle.lock().unwrap_or_else(|e| e.into_inner());
        let h2 = self.live_h2().is_some();
        // Locked: a connect is under way.
        !idle.is_empty() || h2 || self.h2_connect.try_lock().is_err()
    }

    /// HTTP/2 requests go as HTTP/1.1 for a while after the endpoint
    /// refused HTTP/2; then it is asked again (the app may have changed).
    fn speaks_only_http1(&self) -> bool {
        let since = self.h1_only.lock().unwrap_or_else(|e| e.into_inner());
        since.is_some_and(|t| t.elapsed() < H1_ONLY_RECHECK)
    }

    fn live_h2(&self) -> Option<H2Sender> {
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
    H2(H2Sender),
}

pub struct Connector {
    connect_timeout: Duration,
    /// --max-connections-per-upstream: HTTP/1 connections per endpoint
    /// (0: no cap).
    max_h1: usize,
    /// --tls-client: requests go to upstreams over mutual TLS.
    tls: Option<Arc<Tls>>,
    endpoints: Mutex<FxHashMap<SocketAddr, Arc<EndpointConns>>>,
}

impl Connector {
    pub fn new(connect_timeout: Duration, max_h1: usize, tls: Option<Arc<Tls>>) -> Self {
        Connector {
            connect_timeout,
            max_h1,
            tls,
            endpoints: Mutex::new(FxHashMap::default()),
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
    pub async fn connect_stream(
        &self,
        addr: SocketAddr,
        alpn: Alpn,
        route: &str,
    ) -> io::Result<UpstreamIo> {
        let s = self.connect_tcp(addr).await?;
        match self.tls_to(addr) {
            Some(tls) => Ok(Box::new(self.connect_tls(tls, s, addr, alpn, route).await?)),
            None => Ok(Box::new(s)),
        }
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let s = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        };
        let _ = s.set_nodelay(true);
        Ok(s)
    }

    fn tls_to(&self, addr: SocketAddr) -> Option<&Arc<Tls>> {
        self.tls.as_ref().filter(|t| t.originates_to(addr))
    }

    async fn connect_tls(
        &self,
        tls: &Tls,
        s: TcpStream,
        addr: SocketAddr,
        alpn: Alpn,
        route: &str,
    ) -> io::Result<ClientStream> {
        tls.connect(&Arc::new(s), &addr.ip().to_string(), addr, route, alpn)
            .await
            .map_err(|reason| io::Error::other(UpstreamTlsFailed(reason)))
    }

    /// A connection for one request to `addr`, HTTP/2 when `h2` and the
    /// endpoint speaks it (else HTTP/1.1). Errors are connect failures:
    /// nothing of the request was sent.
    pub async fn checkout(&self, addr: SocketAddr, h2: bool, route: &str) -> io::Result<Sender> {
        let conns = self.conns(addr);
        if h2 && !conns.speaks_only_http1() {
            if let Some(s) = conns.live_h2() {
                return Ok(Sender::H2(s));
            }
            let connecting = conns.h2_connect.lock().await;
            if let Some(s) = conns.live_h2() {
                return Ok(Sender::H2(s));
            }
            match self.connect_h2(addr, route).await? {
                Spoken::H2(io) => {
                    let s = h2_client::handshake(io, addr).await?;
                    *conns.h2.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
                    return Ok(Sender::H2(s));
                }
                Spoken::Http1(io) => {
                    tracing::info!(upstream = %addr, "endpoint speaks HTTP/1.1 only: HTTP/2 requests go to it as HTTP/1.1");
                    *conns.h1_only.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    if let Some(io) = io {
                        drop(connecting);
                        let counted = self.count_h1(&conns)?;
                        return Ok(Sender::H1(handshake_h1(io, addr, counted).await?, conns));
                    }
                }
            }
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
            None => self.handshake_h1(addr, route).await?,
        };
        Ok(Sender::H1(sender, conns))
    }

    /// A connection opened for HTTP/2, and what the endpoint turned out to
    /// speak: ALPN over TLS, the answer to the preface in plaintext.
    async fn connect_h2(&self, addr: SocketAddr, route: &str) -> io::Result<Spoken> {
        let s = self.connect_tcp(addr).await?;
        if let Some(tls) = self.tls_to(addr) {
            let stream = self.connect_tls(tls, s, addr, Alpn::H2, route).await?;
            // No ALPN at all: a server that may still speak HTTP/2.
            return Ok(match stream.get_ref().1.alpn_protocol() {
                Some(b"http/1.1") => Spoken::Http1(Some(Box::new(stream))),
                _ => Spoken::H2(Box::new(stream)),
            });
        }
        let wait = self.connect_timeout.min(PROBE_WAIT);
        Ok(match preface::probe(s, wait).await? {
            preface::Probe::H2(s) => Spoken::H2(Box::new(s)),
            preface::Probe::Http1 => Spoken::Http1(None),
        })
    }

    /// A new HTTP/1 connection that may become a tunnel (Upgrade).
    pub async fn handshake_h1(
        &self,
        addr: SocketAddr,
        route: &str,
    ) -> io::Result<http1::SendRequest<Body>> {
        let counted = self.count_h1(&self.conns(addr))?;
        let io = self.connect_stream(addr, Alpn::Http1, route).await?;
        handshake_h1(io, addr, counted).await
    }

    /// Counts a new HTTP/1 connection to the endpoint, or says it is full.
    fn count_h1(&self, conns: &Arc<EndpointConns>) -> io::Result<Counted> {
        let before = conns.h1_open.fetch_add(1, Ordering::AcqRel);
        let counted = Counted(conns.clone());
        if self.max_h1 > 0 && before >= self.max_h1 {
            return Err(io::Error::other(EndpointFull));
        }
        Ok(counted)
    }
}

/// The most an upstream HTTP/1 connection reads ahead of its client (hyper
/// grows its buffer to 400 KiB for a large body), which is also the largest
/// response head taken: a longer one is a 502.
const MAX_BUF: usize = 64 * 1024;

/// What a connection opened for HTTP/2 carries.
enum Spoken {
    H2(UpstreamIo),
    /// The endpoint speaks HTTP/1.1 only; the connection when it can carry
    /// HTTP/1.1 (after ALPN said so; not after a refused preface).
    Http1(Option<UpstreamIo>),
}

async fn handshake_h1(
    io: UpstreamIo,
    addr: SocketAddr,
    counted: Counted,
) -> io::Result<http1::SendRequest<Body>> {
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(MAX_BUF)
        .handshake::<_, Body>(TokioIo::new(io))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        // Counted until it closes or becomes a tunnel.
        let _counted = counted;
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(upstream = %addr, error = %e, "upstream HTTP/1 connection failed");
        }
    });
    Ok(sender)
}
