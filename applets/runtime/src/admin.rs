//! The admin server: `/healthz`, `/readyz`, `/metrics`, plus applet routes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::Shutdown;

pub type Body = Full<Bytes>;
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// An applet's admin route. The request body is collected (at most 64 KiB).
pub type Handler = Arc<dyn Fn(Request<Bytes>) -> BoxFuture<Response<Body>> + Send + Sync>;

const MAX_BODY: usize = 64 * 1024;

/// Readiness latch, metrics registry and extra routes, shared between the
/// applet (through `Context`) and the admin listener.
#[derive(Default)]
pub struct AdminState {
    ready: AtomicBool,
    draining: AtomicBool,
    registry: Mutex<Registry>,
    routes: RwLock<HashMap<(Method, String), Handler>>,
}

impl AdminState {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }

    /// Called when shutdown starts: readiness drops before the applet drains.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst)
    }

    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add_route(&self, method: Method, path: &str, handler: Handler) {
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((method, path.to_string()), handler);
    }

    /// Prometheus text exposition of every registered metric.
    pub fn encode_metrics(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry());
        out
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let route = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(method.clone(), path.clone()))
            .cloned();
        if let Some(handler) = route {
            let (parts, body) = req.into_parts();
            return match Limited::new(body, MAX_BODY).collect().await {
                Ok(b) => handler(Request::from_parts(parts, b.to_bytes())).await,
                Err(_) => text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
            };
        }
        match (method, path.as_str()) {
            (Method::GET | Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
            (Method::GET | Method::HEAD, "/readyz") => {
                if self.is_ready() {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
            (Method::GET | Method::HEAD, "/metrics") => Response::builder()
                .header(
                    http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(Full::new(Bytes::from(self.encode_metrics())))
                .expect("static response"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .expect("static response")
}

/// Serves the admin endpoints on `listener` until shutdown completes.
pub fn spawn(listener: TcpListener, state: Arc<AdminState>, stop: Shutdown) {
    serve_http1(listener, stop, move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(state.handle(req).await) }
    });
}

/// Connections a control-plane listener serves at once: probes and scrapes
/// need a handful. More are closed as soon as they are accepted, so idle
/// ones cannot take the process's descriptors from its data port.
const MAX_CONNECTIONS: usize = 64;
/// A request head must arrive within this (a trickling client is closed).
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection is kept, requests and idle time together:
/// Prometheus reconnects for its next scrape, a prober opens one per check.
const MAX_LIFETIME: Duration = Duration::from_secs(60);

/// Minimal HTTP/1.1 accept loop for small control-plane listeners (admin,
/// git-sync's `--http-bind`). Stops accepting when `stop` fires. Bounded as
/// the data ports are: a connection cap, a head timeout and a lifetime.
pub fn serve_http1<F, Fut>(listener: TcpListener, stop: Shutdown, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        let mut backoff = crate::backoff::AcceptBackoff::default();
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = stop.requested() => return,
            };
            let (stream, _) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    // fd exhaustion and the like: back off instead of spinning.
                    let (wait, first) = backoff.failed();
                    if first {
                        tracing::warn!(error = %e, "admin accept failed; backing off");
                    }
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            if backoff.accepted() {
                tracing::info!("admin listener accepting again");
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!("admin listener at its connection cap; closing a new one");
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(handler);
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(MAX_LIFETIME, conn).await;
                drop(slot);
            });
        }
    });
}

/// Parses `--admin-addr`: `off`, `host:port`, or `:port` (all interfaces).
pub fn parse_addr(raw: &str) -> Result<Option<SocketAddr>, crate::UsageError> {
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("off") || raw.is_empty() {
        return Ok(None);
    }
    parse_listen_addr(raw)
        .map(Some)
        .map_err(|e| crate::UsageError(format!("--admin-addr: {e}")))
}

/// Parses a listen address; `:8080` means every interface, as in Go.
pub fn parse_listen_addr(raw: &str) -> Result<SocketAddr, String> {
    let full = if raw.starts_with(':') {
        format!("0.0.0.0{raw}")
    } else {
        raw.to_string()
    };
    full.parse().map_err(|_| {
        format!("invalid address {raw:?}: expected HOST:PORT (e.g. 127.0.0.1:9090 or :9090)")
    })
}
