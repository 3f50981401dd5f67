//! L4 proxy: forward, reverse and transparent, with load balancing and health.
//!
//! The life of the process: flags → discovery → bind every listener → ready
//! → serve → SIGTERM: stop accepting (readiness is already 503) → let open
//! connections finish within the grace period → close what is left.

mod access_log;
mod config;
mod detect;
mod discovery;
mod health;
mod http_proxy;
mod limits;
mod metrics;
mod pool;
mod prefixed;
mod proxy;
mod proxy_protocol;
mod relay;
mod transparent;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sidecar_runtime::{admin, usage, Applet, Context};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Lb, Protocol};
use crate::discovery::Discovery;
use crate::http_proxy::router::{Destination, Endpoints, Router};
use crate::http_proxy::{HttpProxy, RetryBudget};
use crate::limits::{ConnectionLimit, TokenBucket};
use crate::metrics::Metrics;
use crate::pool::{Pool, PoolSettings};
use crate::proxy::{HttpListener, Route, Shared, Upstreams};

#[derive(Debug, clap::Args)]
pub struct TcpProxy {
    #[command(flatten)]
    args: config::Args,
}

impl Applet for TcpProxy {
    const NAME: &'static str = "tcp-proxy";
    const ABOUT: &'static str =
        "L4 proxy: forward, reverse and transparent, with load balancing and health";
    const ADMIN_ADDR: &'static str = "0.0.0.0:15000";

    async fn run(self, ctx: Context) -> anyhow::Result<()> {
        run(self.args, ctx).await
    }
}

async fn run(args: config::Args, ctx: Context) -> anyhow::Result<()> {
    let plan = args.plan()?;
    sidecar_runtime::raise_fd_limit();
    let metrics = Metrics::register(&mut ctx.registry());
    let access_log =
        access_log::AccessLog::open(&args.access_log, metrics.access_log_dropped.clone())?;

    // The file's first content must be valid: a typo should fail the rollout,
    // not start a proxy with no upstreams.
    let file_routes = match &args.upstreams_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage!("--upstreams-file: cannot read {}: {e}", path.display()))?;
            let routes = config::parse_upstreams_file(&text)
                .map_err(|e| usage!("--upstreams-file {}: {e}", path.display()))?;
            check_file_routes(&routes, &plan.routes, args.listen.is_some())
                .map_err(|e| usage!("--upstreams-file {}: {e}", path.display()))?;
            Some(routes)
        }
        None => None,
    };

    let settings = PoolSettings {
        lb: args.lb.unwrap_or(Lb::RoundRobin),
        http_lb: args.lb.unwrap_or(Lb::Ewma),
        max_per_endpoint: args.max_connections_per_upstream,
        max_pending_requests: args.max_pending_requests,
        outlier_failures: args.outlier_failures,
        ejection_time: args.outlier_ejection_time,
        max_ejection_time: args
            .outlier_max_ejection_time
            .max(args.outlier_ejection_time),
        unhealthy_threshold: args.health_check_unhealthy_threshold,
        healthy_threshold: args.health_check_healthy_threshold,
    };
    let shared = Arc::new(Shared {
        connect_timeout: args.connect_timeout,
        connect_retries: args.connect_retries,
        idle_timeout: args.idle_timeout,
        max_connection_duration: args.max_connection_duration,
        splice_after: args.splice_after,
        send_proxy_protocol: args.send_proxy_protocol,
        accept_proxy_protocol: args.accept_proxy_protocol,
        proxy_protocol_timeout: args.proxy_protocol_timeout,
        protocol: args.protocol,
        detect_timeout: args.detect_timeout,
        opaque_ports: args.opaque_ports.clone(),
        metrics: metrics.clone(),
        limit: ConnectionLimit::new(args.max_connections),
        access_log: access_log.clone(),
        tracker: TaskTracker::new(),
        stop: CancellationToken::new(),
        hard_stop: CancellationToken::new(),
    });
    let mut pools = Vec::new();
    let mut discoveries: Vec<Discovery> = Vec::new();
    let health_check = health::Check {
        interval: args.health_check_interval,
        timeout: args.connect_timeout,
        send: args.health_check_send.0.clone(),
        expect: args.health_check_expect.0.clone(),
    };
    let mut start_pool = |name: String, targets: Vec<config::Target>| {
        let pool = Pool::new(name, settings.clone(), metrics.clone());
        pools.push(pool.clone());
        if !health_check.interval.is_zero() {
            health::spawn(pool.clone(), health_check.clone());
        }
        let discovery = Discovery::start(pool.clone(), targets, args.dns_refresh, metrics.clone());
        async move { (pool, discovery.await) }
    };

    // HTTP routes have pools of their own, shared by every listener.
    let destination = |name: String, endpoints: Endpoints| {
        Arc::new(Destination {
            name,
            endpoints,
            rate: args.http_rate_limit.map(TokenBucket::new),
            budget: RetryBudget::new(args.http_retry_budget),
        })
    };
    let mut router = Router::default();
    for spec in &args.http_route {
        let (pool, discovery) = start_pool(spec.to_string(), spec.upstreams.clone()).await;
        discoveries.push(discovery);
        router.add(
            spec.host.clone(),
            spec.prefix.clone(),
            destination(spec.to_string(), Endpoints::Balanced(pool)),
        );
        tracing::info!(route = %spec, upstreams = %spec.upstreams.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","), "HTTP route");
    }
    let http_proxy = Arc::new(HttpProxy::new(
        router,
        http_proxy::Settings {
            retries: args.http_retries,
            retry_on: args.http_retry_on.clone(),
            request_timeout: args.http_request_timeout,
            connect_timeout: args.connect_timeout,
        },
        metrics.clone(),
        access_log,
    ));
    let http_listener = |fallback: Arc<Destination>| {
        (args.protocol != Protocol::Tcp).then(|| HttpListener {
            proxy: http_proxy.clone(),
            fallback,
        })
    };

    // Bind everything before serving anything: a port conflict fails start-up.
    let mut listeners = Vec::new();
    let mut route_discoveries: Vec<Discovery> = Vec::new();
    for (i, spec) in plan.routes.iter().enumerate() {
        let flag = if i == 0 && args.listen.is_some() {
            "--listen"
        } else {
            "--route"
        };
        let listener = bind(spec.listen, flag).await?;
        let local = listener.local_addr()?;
        let name = local.to_string();
        let targets = route_targets(spec, flag == "--listen", file_routes.as_ref());
        let (pool, discovery) = start_pool(name.clone(), targets).await;
        route_discoveries.push(discovery);
        tracing::info!(addr = %local, listen = %spec.listen, upstreams = %spec.upstreams.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","), "listening");
        listeners.push((
            listener,
            Route {
                http: http_listener(destination(name.clone(), Endpoints::Balanced(pool.clone()))),
                name,
                local,
                upstreams: Upstreams::Balanced(pool),
                rate: args.rate_limit.map(TokenBucket::new),
            },
        ));
    }
    for &addr in &plan.transparent {
        let listener = bind(addr, "--transparent-listen").await?;
        let local = listener.local_addr()?;
        tracing::info!(addr = %local, mode = "transparent", "listening");
        listeners.push((
            listener,
            Route {
                name: local.to_string(),
                local,
                upstreams: Upstreams::OriginalDst,
                rate: args.rate_limit.map(TokenBucket::new),
                http: http_listener(destination(local.to_string(), Endpoints::OriginalDst)),
            },
        ));
    }

    let _watcher = match &args.upstreams_file {
        Some(path) => {
            let routes = plan.routes.clone();
            let has_listen = args.listen.is_some();
            Some(discovery::watch_file(
                path.clone(),
                metrics.clone(),
                move |fr| {
                    check_file_routes(&fr, &routes, has_listen)?;
                    for (i, (spec, d)) in routes.iter().zip(&route_discoveries).enumerate() {
                        d.set_targets(route_targets(spec, has_listen && i == 0, Some(&fr)));
                    }
                    Ok(())
                },
            )?)
        }
        None => None,
    };

    add_endpoints_route(&ctx, pools);
    add_quit_route(&ctx);
    // Accept loops are tracked too: the drain below then also waits for a
    // loop that accepted a connection just as the stop fired to hand it on.
    for (listener, route) in listeners {
        shared.tracker.spawn(proxy::serve(
            listener,
            Arc::new(route),
            shared.clone(),
            shared.stop.clone(),
        ));
    }
    ctx.set_ready(true);

    ctx.shutdown().await;
    shared.stop.cancel();
    shared.tracker.close();
    let open = shared.limit.open();
    tracing::info!(open_connections = open, grace = ?ctx.shutdown_grace(), "stopped accepting; draining");
    if tokio::time::timeout(ctx.shutdown_grace(), shared.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open_connections = shared.tracker.len(),
            "grace period over; closing the remaining connections"
        );
        shared.hard_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_millis(500), shared.tracker.wait()).await;
    } else {
        tracing::info!("drained");
    }
    Ok(())
}

async fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{flag} {addr}: cannot listen: {e}"))
}

/// `GET /endpoints`: every route's endpoints and their state as JSON (what
/// Envoy's `/clusters` tells), for looking at a live proxy.
fn add_endpoints_route(ctx: &Context, pools: Vec<Arc<Pool>>) {
    let handler: admin::Handler = Arc::new(move |_req| {
        let body = serde_json::Value::Array(pools.iter().map(|p| p.snapshot()).collect());
        Box::pin(async move {
            http::Response::builder()
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(admin::Body::new(bytes::Bytes::from(format!("{body:#}\n"))))
                .expect("static response")
        })
    });
    ctx.admin_route(http::Method::GET, "/endpoints", handler);
}

/// `POST /quitquitquit` (Envoy's name, which Istio users script against):
/// drain and exit as on SIGTERM. A Job's last step calls it so the Pod can
/// complete while the sidecar would otherwise run forever.
fn add_quit_route(ctx: &Context) {
    let shutdown = ctx.shutdown_handle().token();
    let state = ctx.admin_state();
    let handler: admin::Handler = Arc::new(move |_req| {
        tracing::info!("quit requested on the admin server");
        state.set_ready(false);
        shutdown.cancel();
        Box::pin(async { admin::text(http::StatusCode::OK, "draining\n") })
    });
    ctx.admin_route(http::Method::POST, "/quitquitquit", handler);
}

/// A route's upstreams: its flags' plus the file's (bare `HOST:PORT` lines
/// belong to the --listen route).
fn route_targets(
    spec: &config::RouteSpec,
    is_listen_route: bool,
    file: Option<&config::FileRoutes>,
) -> Vec<config::Target> {
    let mut targets = spec.upstreams.clone();
    for (key, ups) in file.into_iter().flatten() {
        let ours = match key {
            None => is_listen_route,
            Some(k) => *k == spec.listen,
        };
        if ours {
            targets.extend(ups.iter().cloned());
        }
    }
    targets
}

/// Every route the file names must be one the flags set up.
fn check_file_routes(
    fr: &config::FileRoutes,
    routes: &[config::RouteSpec],
    has_listen: bool,
) -> Result<(), String> {
    for (key, _) in fr {
        match key {
            None if !has_listen => {
                return Err("bare HOST:PORT lines need --listen; use LISTEN=UP1,UP2 lines".into())
            }
            Some(k) if !routes.iter().any(|r| r.listen == *k) => {
                return Err(format!("route {k} is not a --listen or --route address"))
            }
            _ => {}
        }
    }
    Ok(())
}
