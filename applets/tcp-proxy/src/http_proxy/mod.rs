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
mod coalesce;
mod h2_body;
mod h2_client;
mod h2_server;
mod head_guard;
mod headers;
mod path;
mod preface;
mod retry;
pub mod router;
mod tunnel;
mod upstream;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body as _;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use sidecar_runtime::side_wake::SideWake;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
use crate::config::RetryOn;
use crate::metrics::{self, Metrics};
use crate::pool::NoEndpoint;
use crate::relay::Close;

use answer::refuse_smuggling;
use answer::Local;
use head_guard::HeadGuard;
pub use retry::RetryBudget;
use router::{Destination, Endpoints, Router};
pub use upstream::Body;
use upstream::{BoxError, Connector, Sender};

/// Request bodies up to this size are kept so the request can be retried.
const MAX_REPLAY_BODY: u64 = 64 * 1024;
/// How long a connection asked to finish for its age has to do so when no
/// idle timeout says (Envoy's drain_timeout).
const DRAIN: Duration = Duration::from_secs(5);

pub struct Settings {
    pub retries: u32,
    pub retry_on: Vec<RetryOn>,
    /// Zero: no timeout.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// A client connection without a request for this long is closed
    /// (zero: never).
    pub idle_timeout: Duration,
    /// A client connection older than this is asked to finish (zero: never).
    pub max_connection_duration: Duration,
    /// HTTP/1 connections per upstream endpoint (zero: no cap).
    pub max_connections_per_upstream: usize,
    pub path_normalization: path::PathNormalization,
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
    /// Its address as X-Forwarded-For gets it, made once per connection.
    pub client_header: HeaderValue,
    pub original_dst: Option<SocketAddr>,
    /// The connection came over TLS.
    pub tls: bool,
    /// The client's verified identity (mutual TLS).
    pub peer_id: Option<String>,
    /// That identity as the app gets it (`headers::set_identity`), made once
    /// per connection.
    identity: Option<headers::Identity>,
    /// Where requests matching no --http-route go: the listener's upstreams.
    pub fallback: Arc<Destination>,
    /// The tunnel an HTTP/1 request became, for `serve` to run.
    tunnel: tunnel::Slot,
}

impl ConnInfo {
    pub fn new(
        client: SocketAddr,
        original_dst: Option<SocketAddr>,
        tls: bool,
        peer_id: Option<String>,
        fallback: Arc<Destination>,
    ) -> Self {
        let client_header = HeaderValue::from_str(&client.ip().to_string())
            .expect("an IP address is a valid header value");
        ConnInfo {
            client,
            client_header,
            original_dst,
            tls,
            identity: peer_id.as_deref().and_then(headers::Identity::of),
            peer_id,
            fallback,
            tunnel: tunnel::Slot::default(),
        }
    }
}

/// Requests in flight on one client connection, and when the last ended.
struct Activity {
    in_flight: AtomicUsize,
    last: std::sync::Mutex<Instant>,
    /// A request has started on the connection.
    used: AtomicBool,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            last: std::sync::Mutex::new(Instant::now()),
            used: AtomicBool::new(false),
        }
    }
}

impl Activity {
    /// Counts a request until the returned guard drops: when it is answered,
    /// and also when hyper drops the request's future (an HTTP/2 stream the
    /// client reset), which would otherwise keep the connection busy forever.
    fn started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.used.store(true, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// A response body moved on: the connection is not idle while one
    /// streams (server-sent events, a download, a gRPC server stream), only
    /// when none has moved for the idle timeout (as nginx's send_timeout
    /// and Envoy's stream idle timeout see a stalled one).
    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Returns once no request has been in flight, and no response body
    /// has moved on, for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let since = *self.last.lock().unwrap_or_else(|e| e.into_inner());
            if self.in_flight.load(Ordering::Relaxed) == 0 && since.elapsed() >= timeout {
                return;
            }
            // Busy: look again a whole timeout later (a request that ends
            // meanwhile moves `last` on).
            let next = if self.in_flight.load(Ordering::Relaxed) > 0 {
                Instant::now() + timeout
            } else {
                since + timeout
            };
            tokio::time::sleep_until(next.into()).await;
        }
    }
}

/// An HTTP/1 response body that touches its connection's activity with
/// each chunk it yields (HTTP/2's are piped by `h2_body::Pipe`, which does).
struct Watched {
    body: Body,
    activity: Arc<Activity>,
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = polled {
            this.activity.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// One request in flight on a connection (see [`Activity::started`]).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client connection being served, which can be asked to finish: the
/// requests in flight are answered, new ones refused, then it closes.
trait Served: Future {
    /// Whether a connection that has had no request yet is dropped when
    /// idle or at stop, rather than asked to finish: hyper's HTTP/1 server
    /// would wait for its first request (one whose head is half sent, say)
    /// to close.
    const DROP_UNUSED: bool;

    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> Served for http1::UpgradeableConnection<I, S>
where
    Self: Future,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    const DROP_UNUSED: bool = true;

    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self)
    }
}

impl<I> Served for h2_server::Connection<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// An HTTP/2 client is owed a GOAWAY (and one without streams closes
    /// at once).
    const DROP_UNUSED: bool = false;

    fn graceful_shutdown(self: Pin<&mut Self>) {
        self.get_mut().graceful_shutdown()
    }
}

/// What ends a client connection besides its client: the proxy stopping,
/// no request for --idle-timeout, and --max-connection-duration.
struct Ending<'a> {
    activity: &'a Activity,
    idle_timeout: Duration,
    /// --max-connection-duration (zero: none).
    lifetime: Duration,
    stop: CancellationToken,
    hard_stop: CancellationToken,
    /// This connection is to finish what it has and close (a refused
    /// request head, see `head_guard`), even if no request was served.
    finish: CancellationToken,
}

impl Ending<'_> {
    /// Serves until the connection ends; on `stop`, when idle or when its
    /// lifetime is over, it is asked to finish, and dropped on `hard_stop`.
    /// Also returns why it was asked to finish, unless for `stop`.
    async fn drive<S, E>(self, served: S) -> (Result<(), E>, Option<Close>)
    where
        S: Served<Output = Result<(), E>>,
    {
        tokio::pin!(served);
        let stop = self.stop.cancelled();
        let hard_stop = self.hard_stop.cancelled();
        let finish = self.finish.cancelled();
        let idle = self.activity.idle_for(self.idle_timeout);
        let lifetime = tokio::time::sleep(self.lifetime);
        tokio::pin!(stop, hard_stop, finish, idle, lifetime);
        // The task wakes once or more per request: the signals and the idle
        // timer are polled only when one of them woke it.
        let side = SideWake::new();
        let side_waker = Waker::from(side.clone());
        // Once asked to finish: why, unless for `stop`.
        let mut finishing: Option<Option<Close>> = None;
        // A connection asked to finish for being idle or old has a while
        // more to do so (the idle timeout, else Envoy's 5 s drain): an
        // HTTP/2 client that never reads the GOAWAY or acknowledges its PING
        // would otherwise be kept until the proxy stops (Envoy's idle
        // timeout closes with data outstanding too).
        let mut linger: Option<Pin<Box<tokio::time::Sleep>>> = None;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = served.as_mut().poll(cx) {
                return Poll::Ready((r, finishing.flatten()));
            }
            if !side.take(cx.waker()) {
                return Poll::Pending;
            }
            let mut side_cx = Context::from_waker(&side_waker);
            if let Some(why) = finishing {
                let lingered = linger
                    .as_mut()
                    .is_some_and(|l| l.as_mut().poll(&mut side_cx).is_ready());
                if lingered || hard_stop.as_mut().poll(&mut side_cx).is_ready() {
                    return Poll::Ready((Ok(()), why));
                }
                return Poll::Pending;
            }
            let finished = finish.as_mut().poll(&mut side_cx).is_ready();
            let stopped = finished || stop.as_mut().poll(&mut side_cx).is_ready();
            // Requests in flight finish (HTTP/2: GOAWAY, then the streams
            // end); a new one finds the connection closing.
            let why = if stopped {
                None
            } else if !self.idle_timeout.is_zero() && idle.as_mut().poll(&mut side_cx).is_ready() {
                Some(Close::IdleTimeout)
            } else if !self.lifetime.is_zero() && lifetime.as_mut().poll(&mut side_cx).is_ready() {
                Some(Close::MaxDuration)
            } else {
                None
            };
            if (stopped || why.is_some())
                && !finished
                && S::DROP_UNUSED
                && !self.activity.used.load(Ordering::Relaxed)
            {
                return Poll::Ready((Ok(()), why));
            }
            if stopped || why.is_some() {
                served.as_mut().graceful_shutdown();
                finishing = Some(why);
                if why.is_some() {
                    let grace = if self.idle_timeout.is_zero() {
                        DRAIN
                    } else {
                        self.idle_timeout
                    };
                    linger = Some(Box::pin(tokio::time::sleep(grace)));
                }
                // The connection is polled again after that, the hard stop
                // with it.
                side.again();
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        })
        .await
    }
}

/// Runs the tunnel an HTTP/1 connection became, as the TCP relay runs a
/// connection: until both sides end, no bytes either way for the idle
/// timeout, the rest of its lifetime (`left`), or the end of the shutdown
/// grace period.
async fn run_tunnel(
    pending: tunnel::Pending,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    left: Option<Duration>,
    hard_stop: CancellationToken,
) -> Option<Close> {
    let relayed = async {
        if let Some((client, upstream)) = pending.await {
            tunnel::relay(client, upstream, activity.clone()).await;
        }
    };
    tokio::select! {
        () = relayed => None,
        () = hard_stop.cancelled() => Some(Close::Shutdown),
        () = activity.idle_for(idle_timeout), if !idle_timeout.is_zero() => Some(Close::IdleTimeout),
        () = tokio::time::sleep(left.unwrap_or_default()), if left.is_some() => Some(Close::MaxDuration),
    }
}

/// Where one request went, for its metrics and access-log line.
struct Exchange {
    endpoint: Option<SocketAddr>,
    retries: u32,
}

/// The access-log line of one request, begun when it arrives. It is
/// written when the response head is ready; when the client goes away
/// first, on drop, with status 0 and `response_flags: "DC"` (Envoy's
/// downstream connection termination), so no request goes unlogged.
struct RequestLog<'a> {
    log: &'a AccessLog,
    start: Instant,
    fields: Option<serde_json::Map<String, serde_json::Value>>,
}

impl RequestLog<'_> {
    fn finish(mut self, status: u16, ex: &Exchange) {
        let endpoint = ex.endpoint.map(|a| a.to_string());
        self.write(status, endpoint.into(), ex.retries.into(), None);
    }

    fn write(
        &mut self,
        status: u16,
        endpoint: serde_json::Value,
        retries: serde_json::Value,
        flags: Option<&str>,
    ) {
        let Some(mut fields) = self.fields.take() else {
            return;
        };
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        fields.insert("status".into(), status.into());
        fields.insert("duration_ms".into(), ms.into());
        fields.insert("endpoint".into(), endpoint);
        fields.insert("retries".into(), retries);
        if let Some(flags) = flags {
            fields.insert("response_flags".into(), flags.into());
        }
        self.log.record(serde_json::Value::Object(fields));
    }
}

impl Drop for RequestLog<'_> {
    fn drop(&mut self) {
        self.write(
            0,
            serde_json::Value::Null,
            serde_json::Value::Null,
            Some("DC"),
        );
    }
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
            connector: Connector::new(
                settings.connect_timeout,
                settings.max_connections_per_upstream,
                settings.tls.clone(),
            ),
            settings,
            metrics,
            access_log,
        }
    }

    /// Serves HTTP/1.1 (keep-alive, upgrades) or HTTP/2 (prior knowledge)
    /// on one client connection until it closes; on `stop`, finishes the
    /// requests in flight and closes; on `hard_stop`, drops it. Returns why
    /// it was closed when the proxy closed it (--idle-timeout,
    /// --max-connection-duration), None when its client did or at `stop`.
    pub async fn serve<I>(
        self: Arc<Self>,
        io: I,
        conn: ConnInfo,
        stop: CancellationToken,
        hard_stop: CancellationToken,
    ) -> Option<Close>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let idle_timeout = self.settings.idle_timeout;
        let accepted = Instant::now();
        let activity = Arc::new(Activity::default());
        let idle = activity.idle_for(idle_timeout);
        let sniffed = tokio::select! {
            r = h2_server::sniff(io) => r,
            _ = stop.cancelled() => return None,
            _ = idle, if !idle_timeout.is_zero() => return Some(Close::IdleTimeout),
        };
        let (h2, io) = match sniffed {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "client HTTP connection ended with an error");
                return None;
            }
        };
        let conn = Arc::new(conn);
        // HTTP/1 only: HTTP/2 frames carry no smuggling spellings.
        let link = Arc::new(head_guard::Link::default());
        let ending = Ending {
            activity: &activity,
            idle_timeout,
            lifetime: self.settings.max_connection_duration,
            stop,
            hard_stop: hard_stop.clone(),
            finish: link.finish.clone(),
        };
        if h2 {
            let served = h2_server::Connection::new(io, self, conn, activity.clone());
            let (result, why) = ending.drive(served).await;
            if let Err(e) = result {
                tracing::debug!(error = %e, "client HTTP connection ended with an error");
            }
            return why;
        }
        let requests = activity.clone();
        let (this, conn_of_svc, link_of_svc) = (self.clone(), conn.clone(), link.clone());
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            link_of_svc.request_served();
            let connect = req.method() == Method::CONNECT;
            let upgrade = tunnel::is_upgrade(&req);
            let (this, conn, requests) = (this.clone(), conn_of_svc.clone(), requests.clone());
            let link = link_of_svc.clone();
            async move {
                let in_flight = requests.started();
                let resp = this.handle(req.map(Body::Incoming), &conn).await;
                drop(in_flight);
                let status = resp.status();
                if (upgrade && status == StatusCode::SWITCHING_PROTOCOLS)
                    || (connect && status.is_success())
                {
                    link.tunnel_opened();
                }
                Ok::<_, Infallible>(resp.map(|body| Watched {
                    body,
                    activity: requests,
                }))
            }
        });
        // No read timeout for request heads: the idle timeout (`Ending`)
        // closes a connection that has no request, a head half sent
        // included. hyper's timer would be armed and dropped again for
        // every request, and the read after each request forced, that it
        // costs.
        // Every request head is checked on its raw bytes before hyper
        // parses it (`head_guard`); hyper's buffer is capped at the largest
        // head the guard holds back, so a larger one is refused, not let by.
        let served = http1::Builder::new()
            .header_read_timeout(None)
            .max_buf_size(head_guard::MAX_HEAD)
            .serve_connection(TokioIo::new(HeadGuard::new(io, link.clone())), svc)
            .with_upgrades();
        let (result, why) = ending.drive(served).await;
        if let Some(cause) = link.cause() {
            tracing::debug!(route = %conn.fallback.name, client = %conn.client, cause, "request smuggling refused");
            self.record_refusal(&conn, 400, "smuggling", cause, link.refused_request());
        } else if let Err(e) = result {
            // hyper answered a head it could not parse itself (400, or 431
            // for one over the buffer) and closed: counted like our own
            // refusals, though its answer has no body.
            if e.is_parse() || e.is_parse_too_large() {
                let status = if e.is_parse_too_large() { 431 } else { 400 };
                tracing::debug!(route = %conn.fallback.name, client = %conn.client, error = %e, "malformed request refused");
                self.record_refusal(&conn, status, "malformed", &e.to_string(), None);
            } else {
                tracing::debug!(error = %e, "client HTTP connection ended with an error");
            }
        }
        let tunnel = conn.tunnel.lock().unwrap_or_else(|e| e.into_inner()).take();
        match tunnel {
            Some(pending) => {
                let lifetime = self.settings.max_connection_duration;
                let left =
                    (!lifetime.is_zero()).then(|| lifetime.saturating_sub(accepted.elapsed()));
                run_tunnel(pending, activity, idle_timeout, left, hard_stop).await
            }
            None => why,
        }
    }

    async fn handle(&self, mut req: Request<Body>, conn: &ConnInfo) -> Response<Body> {
        let start = Instant::now();
        let request_id = headers::request_id(req.headers_mut());
        // CONNECT's target is an authority, and OPTIONS * has no path.
        let refused = headers::authority_problem(&req).or_else(|| {
            if req.method() == Method::CONNECT
                || (req.method() == Method::OPTIONS && req.uri().path() == "*")
            {
                None
            } else {
                path::normalize_uri(req.uri_mut(), self.settings.path_normalization).err()
            }
        });
        let dest = self.destination(&req, conn);
        let version = req.version();
        let logged = self.access_log.as_ref().map(|log| RequestLog {
            log,
            start,
            fields: Some(serde_json::Map::from_iter([
                (
                    "start_time".into(),
                    humantime::format_rfc3339_millis(SystemTime::now())
                        .to_string()
                        .into(),
                ),
                ("protocol".into(), format!("{version:?}").into()),
                ("method".into(), req.method().as_str().into()),
                ("authority".into(), authority_of(&req).into()),
                ("path".into(), req.uri().path().into()),
                ("route".into(), dest.name.as_str().into()),
                ("request_id".into(), request_id.to_str().ok().into()),
                ("client".into(), conn.client.to_string().into()),
                ("peer_identity".into(), conn.peer_id.as_deref().into()),
            ])),
        });
        let mut ex = Exchange {
            endpoint: None,
            retries: 0,
        };
        let grpc = answer::is_grpc(req.headers());
        // Not boxed: hyper keeps an HTTP/1 request's future in place, and an
        // HTTP/2 stream's is boxed once, whole (h2_server).
        let forwarded = match refused {
            Some(what) => Err(Local::BadRequest(what)),
            None if self.settings.request_timeout.is_zero() => {
                self.forward(req, conn, dest, &mut ex).await
            }
            None => tokio::time::timeout(
                self.settings.request_timeout,
                self.forward(req, conn, dest, &mut ex),
            )
            .await
            .unwrap_or(Err(Local::Timeout)),
        };
        let mut resp = match forwarded {
            Ok(r) => r,
            Err(local) => self.answer(&dest.name, local, grpc),
        };
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            *resp.version_mut() = version;
        }
        let elapsed = start.elapsed();
        let status = resp.status().as_u16();
        dest.metrics
            .response(ex.endpoint, status, elapsed.as_secs_f64());
        if let Some(logged) = logged {
            logged.finish(status, &ex);
        }
        resp
    }

    /// The request's route (host, longest path prefix), else the listener's.
    fn destination<'a>(&'a self, req: &Request<Body>, conn: &'a ConnInfo) -> &'a Destination {
        if self.router.is_empty() {
            return &conn.fallback;
        }
        let host = authority_of(req).map(router::host_of);
        self.router
            .find(host, req.uri().path())
            .unwrap_or(&conn.fallback)
    }

    /// A request refused before it was handed on: on its raw bytes (see
    /// `head_guard`), or by hyper's parser. Counted as a local answer and a
    /// 4xx of the listener's route, and logged with the reason.
    fn record_refusal(
        &self,
        conn: &ConnInfo,
        status: u16,
        cause: &str,
        reason: &str,
        request: Option<&(String, String)>,
    ) {
        let route = &conn.fallback.name;
        self.count_local(route, status, cause);
        conn.fallback.metrics.response(None, status, 0.0);
        if let Some(log) = &self.access_log {
            let (method, path) = request.map(|(m, p)| (m.as_str(), p.as_str())).unzip();
            log.record(serde_json::json!({
                "start_time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                "protocol": "HTTP/1.1",
                "method": method,
                "path": path,
                "status": status,
                "route": route,
                "refused": reason,
                "client": conn.client.to_string(),
                "peer_identity": conn.peer_id,
            }));
        }
    }

    /// A local answer, counted; in gRPC's terms to a gRPC request.
    fn answer(&self, route: &str, local: Local, grpc: bool) -> Response<Body> {
        self.count_local(route, local.status().as_u16(), local.label());
        local.response(grpc)
    }

    /// One answer the proxy made itself, by route, status and cause.
    fn count_local(&self, route: &str, status: u16, cause: &str) {
        self.metrics
            .http_local_responses
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("status", status.to_string()),
                ("cause", cause.to_string()),
            ])
            .inc();
    }

    fn may_retry(&self, on: RetryOn, retries: u32, dest: &Destination) -> bool {
        let wanted =
            retries < self.settings.retries && self.settings.retry_on.iter().any(|c| c.covers(on));
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
        mut req: Request<Body>,
        conn: &ConnInfo,
        dest: &Destination,
        ex: &mut Exchange,
    ) -> Result<Response<Body>, Local> {
        if let Some(rate) = &dest.rate {
            if !rate.try_take() {
                return Err(Local::RateLimited(rate.retry_after()));
            }
        }
        if req.method() == Method::CONNECT {
            let addr = match self.pick(conn, dest, &[]) {
                Ok((addr, _lease)) => addr,
                Err(local) => return Err(local),
            };
            ex.endpoint = Some(addr);
            return tunnel::connect(&self.connector, addr, &dest.name, req, &conn.tunnel)
                .await
                .map_err(|_| Local::ConnectFailed);
        }
        let upgrade = tunnel::is_upgrade(&req);
        headers::strip_hop_by_hop(req.headers_mut(), upgrade);
        headers::add_forwarded(req.headers_mut(), &conn.client_header, conn.tls);
        headers::set_identity(req.headers_mut(), conn.identity.as_ref());
        if upgrade {
            let addr = match self.pick(conn, dest, &[]) {
                Ok((addr, _lease)) => addr,
                Err(local) => return Err(local),
            };
            ex.endpoint = Some(addr);
            return tunnel::upgrade(&self.connector, addr, &dest.name, req, &conn.tunnel)
                .await
                .map_err(|_| Local::ConnectFailed);
        }

        // The downstream target, kept: each attempt writes the request in the
        // form its upstream connection needs.
        let target = Target::of(&req);
        // What the server side attached (an upgrade handle, say) is not for
        // the upstream.
        req.extensions_mut().clear();
        // A body is kept for retries only when retries may happen and it
        // is small; otherwise it streams once, and the request, taken apart
        // and put together again for nothing, is sent as it came.
        let replay = self.settings.retries > 0
            && req.method().is_idempotent()
            && req
                .body()
                .size_hint()
                .upper()
                .is_some_and(|n| n <= MAX_REPLAY_BODY);
        let (kept, mut once) = if replay {
            let (parts, body) = req.into_parts();
            match Limited::new(body, MAX_REPLAY_BODY as usize).collect().await {
                Ok(b) => (Some((parts, b.to_bytes())), None),
                Err(_) => return Err(Local::BadRequest("request body")),
            }
        } else {
            (None, Some(req))
        };

        if self.settings.retries > 0 {
            dest.budget.deposit();
        }
        let mut tried: Vec<SocketAddr> = Vec::new();
        // A reused connection the server closed before taking the request
        // gives it back untouched; trying again on a new one is not a retry.
        let mut stale = 0;
        // Endpoints found at --max-connections-per-upstream.
        let mut full = 0;
        loop {
            let (addr, lease) = match self.pick(conn, dest, &tried) {
                Ok(p) => p,
                Err(local) => return Err(local),
            };
            ex.endpoint = Some(addr);
            let pool = match (&dest.endpoints, &lease) {
                (Endpoints::Balanced(pool), Some(l)) => Some((pool, &l.endpoint)),
                _ => None,
            };
            let sender = match self
                .connector
                .checkout(addr, target.version == Version::HTTP_2, &dest.name)
                .await
            {
                Ok(s) => s,
                // Every connection the endpoint is allowed is busy: not its
                // failure. Another endpoint, once, before answering 503.
                Err(e)
                    if e.get_ref()
                        .is_some_and(|e| e.is::<upstream::EndpointFull>()) =>
                {
                    tried.push(addr);
                    full += 1;
                    if full > 1 {
                        return Err(Local::UpstreamFull);
                    }
                    continue;
                }
                Err(e) => {
                    let reason = crate::proxy::failure_reason(&e);
                    crate::proxy::count_failure(&self.metrics, &dest.name, addr, reason, &e);
                    if let Some((pool, ep)) = pool {
                        pool.report_failure(ep);
                    }
                    tried.push(addr);
                    if self.may_retry(RetryOn::ConnectFailure, ex.retries, dest) {
                        ex.retries += 1;
                        continue;
                    }
                    return Err(Local::ConnectFailed);
                }
            };
            let mut up_req = match &kept {
                Some((parts, body)) => copy_request(parts, body.clone()),
                None => once.take().expect("a streamed request is sent once"),
            };
            target.prepare(&mut up_req, matches!(sender, Sender::H2(_)), addr);
            let sent = Instant::now();
            let failed = match send(sender, up_req).await {
                Ok(resp) => match headers::response_problem(&resp) {
                    None => {
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
                        return Ok(downstream_response(resp));
                    }
                    Some(what) => {
                        tracing::debug!(route = %dest.name, upstream = %addr, what, "bad upstream response");
                        Local::BadResponse(what)
                    }
                },
                Err((e, Some(back))) if stale == 0 => {
                    tracing::debug!(upstream = %addr, error = %e, "pooled connection was closed; using a new one");
                    stale += 1;
                    if kept.is_none() {
                        once = Some(back);
                    }
                    continue;
                }
                Err((e, _)) if from_request_body(&*e) => {
                    // The client's body failed (malformed chunking, or the
                    // client went away mid-upload): not the endpoint's fault,
                    // so neither its failure count nor a retry.
                    tracing::debug!(route = %dest.name, upstream = %addr, error = %e, "request body failed");
                    return Err(if client_closed(&*e) {
                        Local::ClientClosed
                    } else {
                        Local::BadRequest("request body unreadable")
                    });
                }
                Err((e, _)) if is_bad_head(&*e) => {
                    tracing::debug!(route = %dest.name, upstream = %addr, error = %e, "bad upstream response");
                    Local::BadResponse("a response head that does not parse, or over 64 KiB")
                }
                Err((e, _)) => {
                    tracing::debug!(route = %dest.name, upstream = %addr, error = %e, "upstream failed");
                    Local::Reset
                }
            };
            if let Some((pool, ep)) = pool {
                pool.report_failure(ep);
            }
            tried.push(addr);
            // A bad response is still an answer: the request may have been
            // carried out, so it is not tried again as a reset would be.
            let reset = matches!(failed, Local::Reset);
            if reset && kept.is_some() && self.may_retry(RetryOn::Reset, ex.retries, dest) {
                ex.retries += 1;
                continue;
            }
            return Err(failed);
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
                Err(NoEndpoint::Unhealthy) => Err(Local::NoHealthyEndpoints),
                Err(NoEndpoint::Full) => Err(Local::UpstreamFull),
            },
            Endpoints::OriginalDst => conn
                .original_dst
                .map(|a| (a, None))
                .ok_or(Local::NoEndpoints),
        }
    }
}

/// Sends on `sender`; on failure, the request comes back when none of it
/// was sent.
async fn send(
    sender: Sender,
    req: Request<Body>,
) -> Result<Response<Body>, (BoxError, Option<Request<Body>>)> {
    match sender {
        Sender::H1(mut sender, conns) => match sender.try_send_request(req).await {
            Ok(resp) => {
                conns.checkin(sender);
                Ok(resp.map(Body::Incoming))
            }
            Err(mut e) => {
                let back = e.take_message();
                Err((e.into_error().into(), back))
            }
        },
        Sender::H2(sender) => sender.send(req).await,
    }
}

/// The request's authority: `:authority` / absolute-form, else Host.
fn authority_of<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// What the client asked for, from which each attempt's request is written:
/// HTTP/2 carries the authority in `:authority`, HTTP/1.1 in Host with an
/// origin-form target.
struct Target {
    version: Version,
    uri: Uri,
    /// The Host header, when the request came with one.
    host: Option<header::HeaderValue>,
}

impl Target {
    fn of<B>(req: &Request<B>) -> Self {
        Target {
            version: req.version(),
            uri: req.uri().clone(),
            host: req.headers().get(header::HOST).cloned(),
        }
    }

    /// Rewrites `req` (made from this target, perhaps rewritten for an
    /// earlier attempt) for a connection to `endpoint` speaking HTTP/2 when
    /// `h2`; without an authority from the client, the endpoint is named.
    fn prepare(&self, req: &mut Request<Body>, h2: bool, endpoint: SocketAddr) {
        let path = || {
            self.uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))
        };
        if h2 {
            *req.version_mut() = Version::HTTP_2;
            req.headers_mut().remove(header::HOST);
            if self.uri.authority().is_some() && self.uri.scheme() == Some(&Scheme::HTTP) {
                *req.uri_mut() = self.uri.clone();
                return;
            }
            let authority = self
                .uri
                .authority()
                .cloned()
                .or_else(|| {
                    let host = self.host.as_ref()?;
                    Authority::try_from(host.as_bytes()).ok()
                })
                .unwrap_or_else(|| {
                    Authority::try_from(endpoint.to_string()).expect("an address is an authority")
                });
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(authority);
            parts.path_and_query = Some(path());
            *req.uri_mut() = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
        } else {
            *req.version_mut() = Version::HTTP_11;
            if req.uri().authority().is_some() {
                *req.uri_mut() = Uri::from(path());
            }
            // The authority routes were chosen by is the Host the upstream
            // sees: an absolute-form target's or `:authority` replaces any
            // Host sent beside it (RFC 9112 §3.2.2, RFC 9113 §8.3.1).
            let host = match (self.uri.authority(), &self.host) {
                (Some(a), _) => header::HeaderValue::from_str(a.as_str()).ok(),
                // The usual origin-form request: its Host stays as it came
                // (unless an HTTP/2 attempt before this one took it out).
                (None, Some(h)) if !req.headers().contains_key(header::HOST) => Some(h.clone()),
                (None, Some(_)) => None,
                (None, None) => header::HeaderValue::from_str(&endpoint.to_string()).ok(),
            };
            if let Some(h) = host {
                req.headers_mut().insert(header::HOST, h);
            }
            if self.version == Version::HTTP_2 {
                headers::join_cookies(req.headers_mut());
            }
        }
    }
}

/// An HTTP/1 upstream's response head hyper could not parse (or one over
/// its buffer).
fn is_bad_head(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(|e| e.is_parse() || e.is_parse_too_large())
}

/// Whether a request body failed because its client went away: its
/// connection ended before the body did (hyper's `UnexpectedEof`), or it
/// reset its HTTP/2 stream; not a malformed body.
fn client_closed(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::once(e)
        .chain(sidecar_runtime::error::causes(e))
        .any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
                || c.downcast_ref::<h2::Error>()
                    .is_some_and(h2::Error::is_remote)
        })
}

/// Whether a failed send failed on the client's request body: hyper's
/// HTTP/1 client reports it as a user error, our HTTP/2 pipe resets the
/// upstream stream with CANCEL itself.
fn from_request_body(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(e) = e.downcast_ref::<hyper::Error>() {
        return e.is_user();
    }
    e.downcast_ref::<h2::Error>()
        .is_some_and(|e| e.reason() == Some(h2::Reason::CANCEL) && !e.is_remote())
}

/// A copy of a request whose body was kept for retries.
fn copy_request(parts: &Parts, body: Bytes) -> Request<Body> {
    let mut req = Request::new(Body::full(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

fn downstream_response(mut resp: Response<Body>) -> Response<Body> {
    headers::strip_hop_by_hop(resp.headers_mut(), false);
    // A 204 has no content and must not say it has some (RFC 9110 §8.6):
    // an HTTP/2 client would take a non-zero length for a malformed stream.
    if resp.status() == StatusCode::NO_CONTENT {
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }
    resp
}
