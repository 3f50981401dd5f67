//! HTTP handling: each request is routed and balanced on its own, over
//! pooled upstream connections, with retries, timeouts, limits and
//! per-request metrics and access-log lines.
//!
//! One request's life: request id → route (host, longest path prefix) →
//! rate limit → hop-by-hop headers out, X-Forwarded-* in → pick an endpoint
//! (peak-EWMA by default) → connection from the pool → send → on a failure,
//! perhaps again elsewhere (when safe and within the retry budget) → the
//! response, or a local answer naming the cause.
//!
//! The server side takes any byte stream (plain TCP, or TLS around it).

mod answer;
mod headers;
mod retry;
pub mod router;
mod tunnel;
mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::{header, Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
use crate::config::RetryOn;
use crate::metrics::{self, Metrics};
use crate::pool::NoEndpoint;

pub use answer::refuse_smuggling;
use answer::Local;
pub use headers::smuggling;
pub use retry::RetryBudget;
use router::{Destination, Endpoints, Router};
pub use upstream::Body;
use upstream::{Connector, Sender};

/// Request bodies up to this size are kept so the request can be retried.
const MAX_REPLAY_BODY: u64 = 64 * 1024;

pub struct Settings {
    pub retries: u32,
    pub retry_on: Vec<RetryOn>,
    /// Zero: no timeout.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// --tls-client: mutual TLS to upstreams.
    pub tls: Option<Arc<crate::tls::Tls>>,
}

pub struct HttpProxy {
    router: Router,
    connector: Connector,
    settings: Settings,
    metrics: Metrics,
    access_log: Option<AccessLog>,
}

/// What the server side knows about one client connection.
pub struct ConnInfo {
    /// The client (as a PROXY header announced it, else the peer).
    pub client: SocketAddr,
    pub original_dst: Option<SocketAddr>,
    /// The connection came over TLS.
    pub tls: bool,
    /// The client's verified identity (mutual TLS).
    pub peer_id: Option<String>,
    /// Where requests matching no --http-route go: the listener's upstreams.
    pub fallback: Arc<Destination>,
}

/// What the access log says about one request.
struct Exchange {
    route: String,
    endpoint: Option<SocketAddr>,
    retries: u32,
}

impl HttpProxy {
    pub fn new(
        router: Router,
        settings: Settings,
        metrics: Metrics,
        access_log: Option<AccessLog>,
    ) -> Self {
        HttpProxy {
            router,
            connector: Connector::new(settings.connect_timeout, settings.tls.clone()),
            settings,
            metrics,
            access_log,
        }
    }

    /// Serves HTTP/1.1 (keep-alive, upgrades) or HTTP/2 (prior knowledge)
    /// on one client connection until it closes; on `stop`, finishes the
    /// requests in flight and closes; on `hard_stop`, drops it.
    pub async fn serve<I>(
        self: Arc<Self>,
        io: I,
        conn: ConnInfo,
        stop: CancellationToken,
        hard_stop: CancellationToken,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = Arc::new(conn);
        let this = self.clone();
        let svc = hyper::service::service_fn(move |req| {
            let (this, conn) = (this.clone(), conn.clone());
            async move { Ok::<_, Infallible>(this.handle(req, &conn).await) }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new());
        builder.http2().timer(TokioTimer::new());
        let served = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
        tokio::pin!(served);
        let result = tokio::select! {
            r = served.as_mut() => r,
            _ = stop.cancelled() => {
                served.as_mut().graceful_shutdown();
                tokio::select! {
                    r = served.as_mut() => r,
                    _ = hard_stop.cancelled() => Ok(()),
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "client HTTP connection ended with an error");
        }
    }

    async fn handle(&self, mut req: Request<Incoming>, conn: &ConnInfo) -> Response<Body> {
        let start = Instant::now();
        let started = SystemTime::now();
        let request_id = headers::request_id(req.headers_mut());
        let authority = authority_of(&req);
        let host = authority.as_deref().map(router::host_of);
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let dest = self
            .router
            .find(host.as_deref(), &path)
            .unwrap_or(&conn.fallback)
            .clone();
        let mut ex = Exchange {
            route: dest.name.clone(),
            endpoint: None,
            retries: 0,
        };
        let version = req.version();
        let forwarded = self.forward(req, conn, &dest, &mut ex);
        let mut resp = if self.settings.request_timeout.is_zero() {
            forwarded.await
        } else {
            match tokio::time::timeout(self.settings.request_timeout, forwarded).await {
                Ok(r) => r,
                Err(_) => self.answer(&dest.name, Local::Timeout),
            }
        };
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            *resp.version_mut() = version;
        }
        let elapsed = start.elapsed();
        let status = resp.status().as_u16();
        let m = &self.metrics;
        let upstream = ex.endpoint.map(|a| a.to_string()).unwrap_or_default();
        m.http_requests
            .get_or_create(&vec![
                ("route", ex.route.clone()),
                ("upstream", upstream.clone()),
                ("class", format!("{}xx", status / 100)),
            ])
            .inc();
        m.http_latency
            .get_or_create(&metrics::route(&ex.route))
            .observe(elapsed.as_secs_f64());
        if let Some(log) = &self.access_log {
            log.record(serde_json::json!({
                "start_time": humantime::format_rfc3339_millis(started).to_string(),
                "protocol": format!("{version:?}"),
                "method": method.as_str(),
                "authority": authority,
                "path": path,
                "status": status,
                "duration_ms": elapsed.as_secs_f64() * 1000.0,
                "route": ex.route,
                "endpoint": ex.endpoint.map(|a| a.to_string()),
                "retries": ex.retries,
                "request_id": request_id,
                "client": conn.client.to_string(),
                "peer_identity": conn.peer_id,
            }));
        }
        resp
    }

    /// A first request refused on its raw bytes (see `headers::smuggling`).
    pub fn count_refusal(&self, route: &str) {
        self.metrics
            .http_local_responses
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("status", "400".to_string()),
                ("cause", "smuggling".to_string()),
            ])
            .inc();
    }

    /// A local answer, counted.
    fn answer(&self, route: &str, local: Local) -> Response<Body> {
        self.metrics
            .http_local_responses
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("status", local.status().as_u16().to_string()),
                ("cause", local.label().to_string()),
            ])
            .inc();
        local.response()
    }

    fn may_retry(&self, on: RetryOn, retries: u32, dest: &Destination) -> bool {
        let wanted = retries < self.settings.retries && self.settings.retry_on.contains(&on);
        if wanted && !dest.budget.try_withdraw() {
            tracing::debug!(route = %dest.name, "retry budget exhausted");
            return false;
        }
        if wanted {
            self.metrics
                .http_retries
                .get_or_create(&metrics::route(&dest.name))
                .inc();
        }
        wanted
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        conn: &ConnInfo,
        dest: &Destination,
        ex: &mut Exchange,
    ) -> Response<Body> {
        if let Some(rate) = &dest.rate {
            if !rate.try_take() {
                return self.answer(&dest.name, Local::RateLimited(rate.retry_after()));
            }
        }
        if req.method() == Method::CONNECT {
            let addr = match self.pick(conn, dest, &[]) {
                Ok((addr, _lease)) => addr,
                Err(local) => return self.answer(&dest.name, local),
            };
            ex.endpoint = Some(addr);
            return match tunnel::connect(&self.connector, addr, req).await {
                Ok(resp) => resp,
                Err(_) => self.answer(&dest.name, Local::ConnectFailed),
            };
        }
        let upgrade = tunnel::is_upgrade(&req);
        headers::strip_hop_by_hop(req.headers_mut(), upgrade);
        headers::add_forwarded(req.headers_mut(), conn.client.ip(), conn.tls);
        if upgrade {
            let addr = match self.pick(conn, dest, &[]) {
                Ok((addr, _lease)) => addr,
                Err(local) => return self.answer(&dest.name, local),
            };
            ex.endpoint = Some(addr);
            return match tunnel::upgrade(&self.connector, addr, req).await {
                Ok(resp) => resp,
                Err(_) => self.answer(&dest.name, Local::ConnectFailed),
            };
        }

        let authority = authority_of(&req);
        let (parts, body) = req.into_parts();
        // A body is kept for retries only when retries may happen and it
        // is small; otherwise it streams once.
        let replay = self.settings.retries > 0
            && parts.method.is_idempotent()
            && body
                .size_hint()
                .upper()
                .is_some_and(|n| n <= MAX_REPLAY_BODY);
        let (kept, mut streamed): (Option<Bytes>, Option<Body>) = if replay {
            match Limited::new(body, MAX_REPLAY_BODY as usize).collect().await {
                Ok(b) => (Some(b.to_bytes()), None),
                Err(_) => return self.answer(&dest.name, Local::BadRequest("request body")),
            }
        } else {
            (None, Some(body.map_err(Into::into).boxed_unsync()))
        };

        dest.budget.deposit();
        let mut tried: Vec<SocketAddr> = Vec::new();
        // A reused connection the server closed before taking the request
        // gives it back untouched; trying again on a new one is not a retry.
        let mut stale = 0;
        loop {
            let (addr, lease) = match self.pick(conn, dest, &tried) {
                Ok(p) => p,
                Err(local) => return self.answer(&dest.name, local),
            };
            ex.endpoint = Some(addr);
            let pool = match (&dest.endpoints, &lease) {
                (Endpoints::Balanced(pool), Some(l)) => Some((pool, &l.endpoint)),
                _ => None,
            };
            let sender = match self
                .connector
                .checkout(addr, parts.version == Version::HTTP_2)
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(route = %dest.name, upstream = %addr, error = %e, "connect failed");
                    if let Some((pool, ep)) = pool {
                        pool.report_failure(ep);
                    }
                    tried.push(addr);
                    if self.may_retry(RetryOn::ConnectFailure, ex.retries, dest) {
                        ex.retries += 1;
                        continue;
                    }
                    return self.answer(&dest.name, Local::ConnectFailed);
                }
            };
            let body = match &kept {
                Some(b) => Full::new(b.clone()).map_err(|e| match e {}).boxed_unsync(),
                None => streamed.take().expect("a streamed body is sent once"),
            };
            let h2 = matches!(sender, Sender::H2(_));
            let up_req = upstream_request(&parts, body, h2, authority.as_deref(), addr);
            let sent = Instant::now();
            match self.send(addr, sender, up_req).await {
                Ok(resp) => {
                    if let Some((pool, ep)) = pool {
                        pool.observe_latency(ep, sent.elapsed());
                        if resp.status().is_server_error() {
                            pool.report_failure(ep);
                        } else {
                            pool.report_success(ep);
                        }
                    }
                    let status = RetryOn::Status(resp.status().as_u16());
                    if kept.is_some() && self.may_retry(status, ex.retries, dest) {
                        tried.push(addr);
                        ex.retries += 1;
                        continue;
                    }
                    return downstream_response(resp);
                }
                Err((e, Some(back))) if stale == 0 => {
                    tracing::debug!(upstream = %addr, error = %e, "pooled connection was closed; using a new one");
                    stale += 1;
                    if kept.is_none() {
                        streamed = Some(back.into_body());
                    }
                }
                Err((e, _)) => {
                    tracing::debug!(route = %dest.name, upstream = %addr, error = %e, "upstream failed");
                    if let Some((pool, ep)) = pool {
                        pool.report_failure(ep);
                    }
                    tried.push(addr);
                    if kept.is_some() && self.may_retry(RetryOn::Reset, ex.retries, dest) {
                        ex.retries += 1;
                        continue;
                    }
                    return self.answer(&dest.name, Local::Reset);
                }
            }
        }
    }

    /// The endpoint for one attempt; the lease counts it as outstanding.
    fn pick(
        &self,
        conn: &ConnInfo,
        dest: &Destination,
        tried: &[SocketAddr],
    ) -> Result<(SocketAddr, Option<crate::pool::Lease>), Local> {
        match &dest.endpoints {
            Endpoints::Balanced(pool) => match pool.pick_request(conn.client.ip(), tried) {
                Ok(l) => Ok((l.endpoint.addr, Some(l))),
                Err(NoEndpoint::Empty) => Err(Local::NoEndpoints),
                Err(NoEndpoint::Full) => Err(Local::UpstreamFull),
            },
            Endpoints::OriginalDst => conn
                .original_dst
                .map(|a| (a, None))
                .ok_or(Local::NoEndpoints),
        }
    }

    /// Sends on `sender`; on failure, the request comes back when none of
    /// it was sent.
    async fn send(
        &self,
        addr: SocketAddr,
        sender: Sender,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, (hyper::Error, Option<Request<Body>>)> {
        match sender {
            Sender::H1(mut sender) => {
                let result = sender.try_send_request(req).await;
                match result {
                    Ok(resp) => {
                        self.connector.checkin(addr, sender);
                        Ok(resp)
                    }
                    Err(mut e) => {
                        let back = e.take_message();
                        Err((e.into_error(), back))
                    }
                }
            }
            Sender::H2(mut sender) => match sender.try_send_request(req).await {
                Ok(resp) => Ok(resp),
                Err(mut e) => {
                    let back = e.take_message();
                    Err((e.into_error(), back))
                }
            },
        }
    }
}

/// The request's authority: `:authority` / absolute-form, else Host.
fn authority_of<B>(req: &Request<B>) -> Option<String> {
    req.uri().authority().map(|a| a.to_string()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    })
}

/// The request as the upstream gets it: HTTP/2 carries the authority in
/// `:authority`, HTTP/1.1 in Host with an origin-form target.
fn upstream_request(
    parts: &Parts,
    body: Body,
    h2: bool,
    authority: Option<&str>,
    endpoint: SocketAddr,
) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.headers_mut() = parts.headers.clone();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let endpoint = endpoint.to_string();
    let authority = authority.unwrap_or(&endpoint);
    if h2 {
        *req.version_mut() = Version::HTTP_2;
        req.headers_mut().remove(header::HOST);
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path.as_str())
            .build()
            .unwrap_or_else(|_| Uri::from_static("/"));
    } else {
        *req.version_mut() = Version::HTTP_11;
        *req.uri_mut() = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
        if !req.headers().contains_key(header::HOST) {
            if let Ok(v) = header::HeaderValue::from_str(authority) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
    }
    req
}

fn downstream_response(resp: Response<Incoming>) -> Response<Body> {
    let mut resp = resp.map(|b| b.map_err(Into::into).boxed_unsync());
    headers::strip_hop_by_hop(resp.headers_mut(), false);
    resp
}

/// A body of bytes for local answers and tunnels.
fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}
