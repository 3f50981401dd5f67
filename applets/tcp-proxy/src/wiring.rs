//! How the flags become running parts: endpoint pools fed by discovery
//! (and health checks), the HTTP router with its own pools, and every
//! listener bound.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use sidecar_runtime::usage;
use tokio::net::TcpListener;

use crate::access_log::AccessLog;
use crate::config::{self, Lb, Protocol};
use crate::discovery::{self, Discovery};
use crate::health;
use crate::http_proxy::router::{Destination, Endpoints, Router};
use crate::http_proxy::{self, HttpProxy, RetryBudget};
use crate::limits::TokenBucket;
use crate::metrics::Metrics;
use crate::pool::{Pool, PoolSettings};
use crate::proxy::{HttpListener, Route, Upstreams};

/// The file's first content must be valid: a typo should fail the rollout,
/// not start a proxy with no upstreams.
pub fn read_upstreams_file(
    args: &config::Args,
    plan: &config::Plan,
) -> anyhow::Result<Option<config::FileRoutes>> {
    let Some(path) = &args.upstreams_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage!("--upstreams-file: cannot read {}: {e}", path.display()))?;
    let routes = config::parse_upstreams_file(&text)
        .map_err(|e| usage!("--upstreams-file {}: {e}", path.display()))?;
    check_file_routes(&routes, &plan.routes, args.listen.is_some())
        .map_err(|e| usage!("--upstreams-file {}: {e}", path.display()))?;
    Ok(Some(routes))
}

pub struct Wired {
    /// Bound, in flag order, with what each serves.
    pub listeners: Vec<(TcpListener, Route)>,
    /// Every pool, for `GET /endpoints`.
    pub pools: Vec<Arc<Pool>>,
    /// One per --listen/--route, in flag order: the upstreams file updates them.
    route_discoveries: Vec<Discovery>,
    /// Kept alive: dropping one would stop its DNS refresh.
    _http_discoveries: Vec<Discovery>,
}

/// Builds a pool, starts its health checks and discovery.
struct PoolMaker<'a> {
    args: &'a config::Args,
    settings: PoolSettings,
    metrics: &'a Metrics,
    pools: Vec<Arc<Pool>>,
}

impl PoolMaker<'_> {
    async fn start(
        &mut self,
        name: String,
        targets: Vec<config::Target>,
    ) -> (Arc<Pool>, Discovery) {
        let pool = Pool::new(name, self.settings.clone(), self.metrics.clone());
        self.pools.push(pool.clone());
        let a = self.args;
        if !a.health_check_interval.is_zero() {
            let check = health::Check {
                interval: a.health_check_interval,
                timeout: a.connect_timeout,
                send: a.health_check_send.0.clone(),
                expect: a.health_check_expect.0.clone(),
            };
            health::spawn(pool.clone(), check);
        }
        let discovery =
            Discovery::start(pool.clone(), targets, a.dns_refresh, self.metrics.clone()).await;
        (pool, discovery)
    }
}

pub async fn wire(
    args: &config::Args,
    plan: &config::Plan,
    file_routes: Option<&config::FileRoutes>,
    metrics: &Metrics,
    access_log: Option<AccessLog>,
    tls: Option<Arc<crate::tls::Tls>>,
) -> anyhow::Result<Wired> {
    let mut maker = PoolMaker {
        args,
        settings: PoolSettings {
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
        },
        metrics,
        pools: Vec::new(),
    };
    let destination = |name: String, endpoints: Endpoints| {
        Arc::new(Destination::new(
            name,
            endpoints,
            args.http_rate_limit.map(TokenBucket::new),
            RetryBudget::new(args.http_retry_budget),
            metrics,
        ))
    };

    // HTTP routes have pools of their own, shared by every listener.
    let mut router = Router::default();
    let mut http_discoveries = Vec::new();
    for spec in &args.http_route {
        let (pool, discovery) = maker.start(spec.to_string(), spec.upstreams.clone()).await;
        http_discoveries.push(discovery);
        router.add(
            spec.host.clone(),
            spec.prefix.clone(),
            destination(spec.to_string(), Endpoints::Balanced(pool)),
        );
        tracing::info!(route = %spec, upstreams = %list(&spec.upstreams), "HTTP route");
    }
    let http_proxy = Arc::new(HttpProxy::new(
        router,
        http_proxy::Settings {
            retries: args.http_retries,
            retry_on: args.http_retry_on.clone(),
            request_timeout: args.http_request_timeout,
            connect_timeout: args.connect_timeout,
            idle_timeout: args.idle_timeout,
            max_connection_duration: args.max_connection_duration,
            max_connections_per_upstream: args.max_connections_per_upstream,
            path_normalization: args.http_path_normalization,
            tls,
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

    let mut listeners = Vec::new();
    let mut route_discoveries = Vec::new();
    for (i, spec) in plan.routes.iter().enumerate() {
        let is_listen = i == 0 && args.listen.is_some();
        let flag = if is_listen { "--listen" } else { "--route" };
        let listener = bind(spec.listen, flag).await?;
        let local = listener.local_addr()?;
        let name = local.to_string();
        let targets = route_targets(spec, is_listen, file_routes);
        let (pool, discovery) = maker.start(name.clone(), targets).await;
        route_discoveries.push(discovery);
        tracing::info!(addr = %local, listen = %spec.listen, upstreams = %list(&spec.upstreams), "listening");
        let route = Route {
            http: http_listener(destination(name.clone(), Endpoints::Balanced(pool.clone()))),
            name,
            local,
            upstreams: Upstreams::Balanced(pool),
            rate: args.rate_limit.map(TokenBucket::new),
        };
        listeners.push((listener, route));
    }
    for &addr in &plan.transparent {
        let listener = bind(addr, "--transparent-listen").await?;
        let local = listener.local_addr()?;
        tracing::info!(addr = %local, mode = "transparent", "listening");
        let route = Route {
            name: local.to_string(),
            local,
            upstreams: Upstreams::OriginalDst,
            rate: args.rate_limit.map(TokenBucket::new),
            http: http_listener(destination(local.to_string(), Endpoints::OriginalDst)),
        };
        listeners.push((listener, route));
    }
    Ok(Wired {
        listeners,
        pools: maker.pools,
        route_discoveries,
        _http_discoveries: http_discoveries,
    })
}

impl Wired {
    /// Reloads the listeners' upstreams whenever --upstreams-file changes.
    pub fn watch_upstreams_file(
        &mut self,
        path: &Path,
        plan: &config::Plan,
        has_listen: bool,
        metrics: &Metrics,
    ) {
        let routes = plan.routes.clone();
        let discoveries = std::mem::take(&mut self.route_discoveries);
        discovery::watch_file(path.to_path_buf(), metrics.clone(), move |fr| {
            check_file_routes(&fr, &routes, has_listen)?;
            for (i, (spec, d)) in routes.iter().zip(&discoveries).enumerate() {
                d.set_targets(route_targets(spec, has_listen && i == 0, Some(&fr)));
            }
            Ok(())
        });
    }
}

fn list(targets: &[config::Target]) -> String {
    targets
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

async fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{flag} {addr}: cannot listen: {e}"))
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
