//! One connection's life: admission (limits, rate), PROXY header in,
//! destination (load balancer or original destination), connect with
//! retries, PROXY header out, relay, then metrics and the access-log record.
//! And the accept loop that feeds it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sidecar_runtime::backoff::{is_resource_shortage, Backoff};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::config::{PortRanges, Protocol};
use crate::detect::{self, Detected};
use crate::http_proxy::{self, HttpProxy};
use crate::limits::{ConnectionLimit, Slot, TokenBucket};
use crate::metrics::{self, Metrics};
use crate::pool::{Lease, NoEndpoint, Pool};
use crate::prefixed::Prefixed;
use crate::proxy_protocol::{self, Version};
use crate::relay::{self, Close, Direction};
use crate::tls::{self, Tls};
use crate::transparent;

/// Settings and state every route shares.
pub struct Shared {
    pub connect_timeout: Duration,
    pub connect_retries: u32,
    pub idle_timeout: Duration,
    pub max_connection_duration: Duration,
    pub splice_after: u64,
    pub send_proxy_protocol: Option<Version>,
    pub accept_proxy_protocol: bool,
    pub proxy_protocol_timeout: Duration,
    /// None: no TLS flag given.
    pub tls: Option<Arc<Tls>>,
    pub protocol: Protocol,
    pub detect_timeout: Duration,
    pub opaque_ports: PortRanges,
    pub metrics: Metrics,
    pub limit: ConnectionLimit,
    pub access_log: Option<AccessLog>,
    pub tracker: TaskTracker,
    /// Fires when shutdown starts: HTTP connections finish their requests
    /// and close.
    pub stop: CancellationToken,
    /// Fires when the shutdown grace period is over: open relays close.
    pub hard_stop: CancellationToken,
}

pub enum Upstreams {
    Balanced(Arc<Pool>),
    /// Transparent mode: each connection's original destination.
    OriginalDst,
}

pub struct Route {
    /// The bound listen address, as metrics label and in logs.
    pub name: String,
    pub local: SocketAddr,
    pub upstreams: Upstreams,
    pub rate: Option<TokenBucket>,
    /// None: `--protocol tcp`.
    pub http: Option<HttpListener>,
}

/// HTTP on one listener: the shared HTTP proxy and where requests that
/// match no --http-route go.
pub struct HttpListener {
    pub proxy: Arc<HttpProxy>,
    pub fallback: Arc<http_proxy::router::Destination>,
}

/// Accepts until `stop` fires; then the listener closes (new connects are
/// refused) while accepted connections carry on under `shared.tracker`.
pub async fn serve(
    listener: TcpListener,
    route: Arc<Route>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_secs(1));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff.reset();
                let (route, shared2) = (route.clone(), shared.clone());
                shared.tracker.spawn(handle(stream, peer, route, shared2));
            }
            Err(e) => {
                shared
                    .metrics
                    .accept_errors
                    .get_or_create(&metrics::route(&route.name))
                    .inc();
                if is_resource_shortage(&e) {
                    // Out of fds or memory: spinning on accept would burn a
                    // core and fix nothing. Wait for connections to close.
                    let delay = backoff.next_delay();
                    tracing::warn!(route = %route.name, error = %e, retry_in = ?delay, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => return,
                    }
                } else {
                    tracing::debug!(route = %route.name, error = %e, "accept failed");
                }
            }
        }
    }
}

/// What the access log and metrics learn about one connection.
struct Record {
    start: Instant,
    started: SystemTime,
    peer: SocketAddr,
    /// The client as announced by an accepted PROXY header, else `peer`.
    client: SocketAddr,
    original_dst: Option<SocketAddr>,
    upstream: Option<SocketAddr>,
    /// Our side of the upstream connection (to find it in upstream logs).
    upstream_local: Option<SocketAddr>,
    sent: u64,
    received: u64,
    close: &'static str,
    /// The client certificate's first identity, when TLS was terminated.
    peer_identity: Option<String>,
}

async fn handle(client: TcpStream, peer: SocketAddr, route: Arc<Route>, shared: Arc<Shared>) {
    let m = &shared.metrics;
    let labels = metrics::route(&route.name);
    m.connections.get_or_create(&labels).inc();
    let active = m.active.get_or_create(&labels).clone();
    active.inc();
    let peer = transparent::unmap(peer);
    // Shared with the TLS stream when TLS is terminated; the task keeps a
    // handle to reset the socket.
    let client = Arc::new(client);
    let mut rec = Record {
        start: Instant::now(),
        started: SystemTime::now(),
        peer,
        client: peer,
        original_dst: None,
        upstream: None,
        upstream_local: None,
        sent: 0,
        received: 0,
        close: "",
        peer_identity: None,
    };
    // Biased: a relaying connection sees the hard stop itself and resets
    // both sides; this branch only ends connections not relaying yet.
    let result = tokio::select! {
        biased;
        r = Box::pin(admit(&client, &route, &shared, &mut rec)) => r,
        _ = shared.hard_stop.cancelled() => {
            relay::reset(&client);
            Err("shutdown")
        }
    };
    let http = matches!(&result, Ok(a) if a.http);
    let result = match result {
        Ok(admitted) if admitted.http => {
            Ok(Box::pin(serve_http(client, admitted, &route, &shared, &rec)).await)
        }
        Ok(admitted) => tokio::select! {
            biased;
            r = proxy(&client, &route, &shared, &mut rec, admitted) => r.map(Some),
            _ = shared.hard_stop.cancelled() => {
                relay::reset(&client);
                Err("shutdown")
            }
        },
        Err(e) => Err(e),
    };
    active.dec();
    match result {
        Ok(close) => {
            rec.close = close.map_or("done", Close::as_str);
            m.closes
                .get_or_create(&metrics::route_with(&route.name, "reason", rec.close))
                .inc();
            m.duration
                .get_or_create(&labels)
                .observe(rec.start.elapsed().as_secs_f64());
            if http {
                return; // the access log has a line per request instead
            }
        }
        Err(reason) => {
            rec.close = reason;
            let family = if reason == "shutdown" {
                &m.closes
            } else {
                &m.rejected
            };
            family
                .get_or_create(&metrics::route_with(&route.name, "reason", reason))
                .inc();
        }
    }
    if let Some(log) = &shared.access_log {
        log.record(serde_json::json!({
            "start_time": humantime::format_rfc3339_millis(rec.started).to_string(),
            "route": route.name,
            "peer": rec.peer.to_string(),
            "client": rec.client.to_string(),
            "original_dst": rec.original_dst.map(|a| a.to_string()),
            "upstream": rec.upstream.map(|a| a.to_string()),
            "upstream_local": rec.upstream_local.map(|a| a.to_string()),
            "bytes_sent": rec.sent,
            "bytes_received": rec.received,
            "duration_ms": rec.start.elapsed().as_millis() as u64,
            "close": rec.close,
            "peer_identity": rec.peer_identity,
        }));
    }
}

/// A connection let in: what was learnt before deciding how to carry it.
struct Admitted {
    _slot: Slot,
    local: SocketAddr,
    /// Bytes read already (PROXY header remainder, protocol detection).
    early: Vec<u8>,
    announced_dst: Option<SocketAddr>,
    http: bool,
    /// TLS was terminated: the stream to read the client through. Boxed,
    /// as the TLS streams below: a connection's task holds them across
    /// awaits, and inline they would set the size of every connection's
    /// task (a rustls connection is kilobytes), TLS or not.
    tls: Option<Box<tls::Terminated>>,
}

/// Limits, PROXY header, original destination, protocol detection.
/// Err: the reason the connection was turned away.
async fn admit(
    client: &Arc<TcpStream>,
    route: &Route,
    shared: &Shared,
    rec: &mut Record,
) -> Result<Admitted, &'static str> {
    if let Some(rate) = &route.rate {
        if !rate.try_take() {
            return Err("rate_limited");
        }
    }
    let Some(slot) = shared.limit.try_acquire() else {
        tracing::debug!(route = %route.name, "over --max-connections");
        return Err("max_connections");
    };
    tune(client);
    let local = client
        .local_addr()
        .map(transparent::unmap)
        .unwrap_or(route.local);

    // Bytes the client sent behind its PROXY header go to the upstream first.
    let mut early = Vec::new();
    let mut announced_dst = None;
    if shared.accept_proxy_protocol {
        let (header, rest) = tokio::time::timeout(shared.proxy_protocol_timeout, read_proxy_header(client))
            .await
            .map_err(|_| "proxy_protocol")?
            .map_err(|e| {
                tracing::debug!(route = %route.name, peer = %rec.peer, error = %e, "bad PROXY protocol header");
                "proxy_protocol"
            })?;
        if let Some(a) = header {
            rec.client = transparent::unmap(a.src);
            announced_dst = Some(transparent::unmap(a.dst));
        }
        early = rest;
    }

    if let Upstreams::OriginalDst = route.upstreams {
        let dst = transparent::original_dst(client).map_err(|e| {
            tracing::warn!(route = %route.name, peer = %rec.peer, error = %e, "no original destination");
            "original_dst"
        })?;
        rec.original_dst = Some(dst);
        if transparent::is_loop(dst, local, route.local) {
            tracing::warn!(route = %route.name, peer = %rec.peer, original_dst = %dst, "refusing a connection addressed to the proxy itself");
            relay::reset(client);
            return Err("loop");
        }
    }

    // TLS is terminated before anything else reads the client's bytes;
    // then ALPN says whether HTTP follows.
    if let Some(t) = &shared.tls {
        if let Some(mut terminated) = t.accept(client, &mut early, &route.name).await? {
            rec.peer_identity = terminated.peer_id.clone();
            let http = if terminated.alpn.is_none() {
                // A client that offered no ALPN (openssl s_client, many TLS
                // libraries by default) is told apart by its decrypted
                // bytes, as a plaintext one is. (A peer sidecar's TCP relay
                // says `sidecar-tcp`: relayed below, never sniffed.)
                detect_http(route, shared, rec, &mut early, &mut terminated.stream).await?
            } else {
                let http = route.http.is_some()
                    && (shared.protocol == Protocol::Http
                        || (shared.protocol == Protocol::Auto && terminated.is_http()));
                let labels = vec![
                    ("route", route.name.clone()),
                    ("protocol", if http { "http" } else { "tcp" }.to_string()),
                    ("reason", "alpn".to_string()),
                ];
                shared.metrics.detected.get_or_create(&labels).inc();
                http
            };
            return Ok(Admitted {
                _slot: slot,
                local,
                early,
                announced_dst,
                http,
                tls: Some(Box::new(terminated)),
            });
        }
    }

    let http = detect_http(route, shared, rec, &mut early, &**client).await?;
    Ok(Admitted {
        _slot: slot,
        local,
        early,
        announced_dst,
        http,
        tls: None,
    })
}

/// Whether to serve HTTP (`--protocol`, opaque ports, the first bytes,
/// read from `from` into `early`).
async fn detect_http(
    route: &Route,
    shared: &Shared,
    rec: &Record,
    early: &mut Vec<u8>,
    from: impl detect::ReadSome,
) -> Result<bool, &'static str> {
    let count = |proto: &str, reason: &str| {
        let labels = vec![
            ("route", route.name.clone()),
            ("protocol", proto.to_string()),
            ("reason", reason.to_string()),
        ];
        shared.metrics.detected.get_or_create(&labels).inc();
    };
    if route.http.is_none() {
        count("tcp", "configured");
        return Ok(false);
    };
    if shared.protocol == Protocol::Http {
        count("http", "configured");
        return Ok(true);
    }
    let dst_port = rec.original_dst.unwrap_or(route.local).port();
    if shared.opaque_ports.contains(dst_port) {
        count("tcp", "opaque_port");
        return Ok(false);
    }
    // A PROXY header describes one client connection; pooled upstream
    // connections shared by many clients' requests cannot carry it.
    if shared.send_proxy_protocol.is_some() {
        count("tcp", "send_proxy_protocol");
        return Ok(false);
    }
    // Bytes already read (behind a PROXY header) count towards detection.
    let deadline = tokio::time::Instant::now() + shared.detect_timeout;
    let found = detect::detect(early, deadline, from).await.map_err(|e| {
        tracing::debug!(route = %route.name, error = %e, "connection failed during protocol detection");
        "detect"
    })?;
    match found {
        Detected::Tcp { timed_out } => {
            count("tcp", if timed_out { "timeout" } else { "detected" });
            Ok(false)
        }
        Detected::Http => {
            count("http", "detected");
            Ok(true)
        }
    }
}

/// Why the proxy closed the connection (--idle-timeout,
/// --max-connection-duration); None when its client did.
async fn serve_http(
    client: Arc<TcpStream>,
    admitted: Admitted,
    route: &Route,
    shared: &Arc<Shared>,
    rec: &Record,
) -> Option<Close> {
    let http = route.http.as_ref()?;
    let info = http_proxy::ConnInfo::new(
        rec.client,
        rec.original_dst,
        admitted.tls.is_some(),
        rec.peer_identity.clone(),
        http.fallback.clone(),
    );
    let proxy = http.proxy.clone();
    let (stop, hard_stop) = (shared.stop.clone(), shared.hard_stop.clone());
    match admitted.tls {
        // Bytes read by detection (a client without ALPN) come first.
        Some(t) => {
            let io = Prefixed::new(admitted.early, t.stream);
            proxy.serve(io, info, stop, hard_stop).await
        }
        None => {
            let client =
                Arc::try_unwrap(client).expect("plaintext: the task's handle is the only one");
            let io = Prefixed::new(admitted.early, client);
            proxy.serve(io, info, stop, hard_stop).await
        }
    }
}

/// Ok: relayed, with how it closed. Err: the reason it was turned away.
async fn proxy(
    client: &Arc<TcpStream>,
    route: &Route,
    shared: &Shared,
    rec: &mut Record,
    admitted: Admitted,
) -> Result<Close, &'static str> {
    let Admitted {
        local,
        mut early,
        announced_dst,
        tls: tls_in,
        ..
    } = admitted;
    let header = shared.send_proxy_protocol.map(|v| {
        let dst = announced_dst.or(rec.original_dst).unwrap_or(local);
        proxy_protocol::encode(v, rec.client, dst)
    });
    let (upstream, up_tls, _lease) = match &route.upstreams {
        Upstreams::OriginalDst => {
            let dst = rec.original_dst.expect("admit found it");
            let s = Arc::new(Box::pin(connect_direct(dst, route, shared, rec)).await?);
            let tls = Box::pin(upstream_tls(
                &s,
                dst,
                None,
                header.as_deref(),
                route,
                shared,
            ))
            .await
            .inspect_err(|_| relay::reset(client))?;
            (s, tls, None)
        }
        Upstreams::Balanced(pool) => {
            let (s, tls, lease) = Box::pin(connect_balanced(
                pool,
                route,
                shared,
                rec,
                header.as_deref(),
            ))
            .await?;
            (s, tls, Some(lease))
        }
    };
    tune(&upstream);
    rec.upstream_local = upstream.local_addr().ok();
    let up_addr = rec.upstream.expect("set on connect").to_string();
    shared
        .metrics
        .upstream_connections
        .get_or_create(&metrics::route_with(&route.name, "upstream", &up_addr))
        .inc();

    let bytes = |dir: &str| {
        let labels = vec![
            ("route", route.name.clone()),
            ("upstream", up_addr.clone()),
            ("direction", dir.to_string()),
        ];
        Direction::new(shared.metrics.bytes.get_or_create(&labels).clone())
    };
    let (up, down) = (bytes("upstream"), bytes("downstream"));
    // The client's bytes read before relaying count as relayed.
    up.add(early.len());

    if tls_in.is_some() || up_tls.is_some() {
        // With TLS upstream, the header went out before the handshake.
        let header = header.filter(|_| up_tls.is_none());
        let ends = Ends {
            client,
            upstream,
            tls_in: tls_in.map(|t| t.stream),
            up_tls,
        };
        return Box::pin(relay_tls(ends, header, early, shared, rec, (&up, &down))).await;
    }
    let upstream = Arc::try_unwrap(upstream).expect("plaintext: the only handle");

    if let Some(mut header) = header {
        header.extend_from_slice(&early);
        early = header;
    }
    if !early.is_empty() {
        if let Err(e) = relay::write_all(&upstream, &early).await {
            tracing::debug!(route = %route.name, error = %e, "upstream closed before the first write");
            relay::reset(client);
            return Ok(Close::Reset);
        }
    }
    let opts = relay::Options {
        idle_timeout: shared.idle_timeout,
        max_duration: shared.max_connection_duration,
        splice_after: shared.splice_after,
        spliced: &shared.metrics.spliced_bytes,
        hard_stop: &shared.hard_stop,
    };
    let close = relay::relay(client, &upstream, &up, &down, &opts).await;
    rec.sent = up.bytes();
    rec.received = down.bytes();
    Ok(close)
}

/// Both ends of a connection that speaks TLS on at least one side.
struct Ends<'a> {
    client: &'a Arc<TcpStream>,
    upstream: Arc<TcpStream>,
    tls_in: Option<tls::ServerStream>,
    /// TLS towards the upstream, established.
    up_tls: Option<Box<tls::ClientStream>>,
}

/// [`proxy`]'s relay when TLS is on either side. `header`: a PROXY header
/// still to send in plaintext (TLS upstreams got theirs before the
/// handshake); early client bytes go after it, inside TLS when the upstream
/// speaks it.
async fn relay_tls(
    ends: Ends<'_>,
    header: Option<Vec<u8>>,
    early: Vec<u8>,
    shared: &Shared,
    rec: &mut Record,
    (up, down): (&Direction, &Direction),
) -> Result<Close, &'static str> {
    let Ends {
        client,
        upstream,
        tls_in,
        up_tls,
    } = ends;
    let fail = |reason| {
        relay::reset(client);
        reason
    };
    if let Some(h) = header {
        relay::write_all(&upstream, &h)
            .await
            .map_err(|_| fail("upstream_closed"))?;
    }
    let mut up_stream: Pin<Box<dyn Stream>> = match up_tls {
        Some(s) => Box::into_pin(s),
        None => Box::pin(tls::SharedTcp(upstream.clone())),
    };
    if !early.is_empty() && up_stream.write_all(&early).await.is_err() {
        relay::reset(client);
        return Ok(Close::Reset);
    }
    let client_stream: Pin<Box<dyn Stream>> = match tls_in {
        Some(s) => Box::pin(s),
        // Plaintext client, TLS upstream: the relay reads the socket itself.
        None => Box::pin(tls::SharedTcp(client.clone())),
    };
    let opts = relay::Options {
        idle_timeout: shared.idle_timeout,
        max_duration: shared.max_connection_duration,
        splice_after: 0,
        spliced: &shared.metrics.spliced_bytes,
        hard_stop: &shared.hard_stop,
    };
    let close = relay::relay_streams(
        client_stream,
        up_stream,
        (client, &upstream),
        up,
        down,
        &opts,
    )
    .await;
    rec.sent = up.bytes();
    rec.received = down.bytes();
    Ok(close)
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send> Stream for T {}

/// No Nagle delay on relayed bytes, and keepalive probes so a peer that
/// vanished without FIN or RST (node gone) is noticed on idle connections.
fn tune(s: &TcpStream) {
    let _ = s.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    let _ = socket2::SockRef::from(s).set_tcp_keepalive(&keepalive);
}

/// Reads until a complete PROXY header; returns its addresses and any bytes
/// read past it.
async fn read_proxy_header(
    s: &TcpStream,
) -> Result<(Option<proxy_protocol::Addresses>, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(256);
    loop {
        match proxy_protocol::parse(&buf) {
            Ok(Some(p)) => return Ok((p.addresses, buf.split_off(p.len))),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        buf.reserve(256);
        s.readable().await.map_err(|e| e.to_string())?;
        match s.try_read_buf(&mut buf) {
            Ok(0) => return Err("connection closed before the PROXY header ended".into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A failed TLS handshake with an upstream, carried in an `io::Error` so
/// that it is counted as the endpoint's connect failure (`reason="tls"`).
#[derive(Debug)]
pub struct UpstreamTlsFailed(pub &'static str);

impl std::fmt::Display for UpstreamTlsFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS handshake with the upstream failed ({})", self.0)
    }
}

impl std::error::Error for UpstreamTlsFailed {}

/// The `reason` label of a failed upstream connect.
pub fn failure_reason(e: &io::Error) -> &'static str {
    if is_resource_shortage(e) {
        return "local";
    }
    if e.get_ref()
        .is_some_and(|inner| inner.is::<UpstreamTlsFailed>())
    {
        return "tls";
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused",
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => "unreachable",
        _ => "other",
    }
}

async fn connect_once(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// Counts and logs a failed connect to `addr` of `route` (the relay's and
/// HTTP's alike). `reason`: a connect failure's kind, or `tls` for a failed
/// handshake.
pub fn count_failure(
    metrics: &Metrics,
    route: &str,
    addr: SocketAddr,
    reason: &str,
    error: &dyn std::fmt::Display,
) {
    let labels = vec![
        ("route", route.to_string()),
        ("upstream", addr.to_string()),
        ("reason", reason.to_string()),
    ];
    metrics.connect_failures.get_or_create(&labels).inc();
    tracing::debug!(route = %route, upstream = %addr, error = %error, "connect failed");
}

async fn connect_direct(
    dst: SocketAddr,
    route: &Route,
    shared: &Shared,
    rec: &mut Record,
) -> Result<TcpStream, &'static str> {
    for _ in 0..=shared.connect_retries {
        match connect_once(dst, shared.connect_timeout).await {
            Ok(s) => {
                rec.upstream = Some(dst);
                return Ok(s);
            }
            Err(e) => {
                count_failure(&shared.metrics, &route.name, dst, failure_reason(&e), &e);
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    break; // the destination has nothing listening; retrying will not change that
                }
            }
        }
    }
    Err("connect_failed")
}

async fn connect_balanced(
    pool: &Arc<Pool>,
    route: &Route,
    shared: &Shared,
    rec: &mut Record,
    header: Option<&[u8]>,
) -> Result<(Arc<TcpStream>, Option<Box<tls::ClientStream>>, Lease), &'static str> {
    let mut tried = Vec::new();
    let mut tls_failed = false;
    for _ in 0..=shared.connect_retries {
        let lease = match pool.pick(rec.client.ip(), &tried) {
            Ok(l) => l,
            Err(NoEndpoint::Empty) => return Err("no_upstream"),
            Err(NoEndpoint::Full) => return Err("upstream_limit"),
            // A connection's pick falls back on every endpoint (panic mode).
            Err(NoEndpoint::Unhealthy) => unreachable!("pick never reports Unhealthy"),
        };
        let addr = lease.endpoint.addr;
        tried.push(addr);
        let s = match connect_once(addr, shared.connect_timeout).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                count_failure(&shared.metrics, &route.name, addr, failure_reason(&e), &e);
                // Our own fd or memory shortage says nothing about the endpoint.
                if !is_resource_shortage(&e) {
                    pool.report_failure(&lease.endpoint);
                }
                continue;
            }
        };
        // A failed handshake is the endpoint's failure like a refused
        // connect: counted towards ejection, and another endpoint is tried.
        let target = Some(lease.endpoint.target.as_str());
        match upstream_tls(&s, addr, target, header, route, shared).await {
            Ok(tls) => {
                pool.report_success(&lease.endpoint);
                rec.upstream = Some(addr);
                return Ok((s, tls, lease));
            }
            Err(reason) => {
                count_failure(&shared.metrics, &route.name, addr, "tls", &reason);
                pool.report_failure(&lease.endpoint);
                tls_failed = true;
            }
        }
    }
    tracing::warn!(route = %route.name, client = %rec.client, attempts = shared.connect_retries + 1, "no upstream connect succeeded");
    Err(if tls_failed {
        "upstream_tls"
    } else {
        "connect_failed"
    })
}

/// TLS to the upstream at `addr` when --tls-client applies to it, after
/// the PROXY header in plaintext (as HAProxy's `send-proxy` with `ssl`).
/// `name`: the endpoint's `HOST:PORT`, whose host its certificate must name
/// when no --tls-upstream-id is given (else its address).
async fn upstream_tls(
    s: &Arc<TcpStream>,
    addr: SocketAddr,
    name: Option<&str>,
    header: Option<&[u8]>,
    route: &Route,
    shared: &Shared,
) -> Result<Option<Box<tls::ClientStream>>, &'static str> {
    let Some(t) = shared.tls.as_ref().filter(|t| t.originates_to(addr)) else {
        return Ok(None);
    };
    if let Some(h) = header {
        relay::write_all(s, h)
            .await
            .map_err(|_| "upstream_closed")?;
    }
    let host = name.map_or_else(
        || addr.ip().to_string(),
        |n| tls::target_host(n).to_string(),
    );
    let stream = t
        .connect(s, &host, addr, &route.name, tls::Alpn::Opaque)
        .await?;
    Ok(Some(Box::new(stream)))
}
