//! Where an HTTP request goes: among the `--http-route`s naming the
//! request's host (compared without the port), the one with the longest
//! matching path prefix; when none of them matches, the longest among the
//! routes naming no host; else the listener's own destination. The host
//! comes first as Envoy picks the virtual host before its routes, so a
//! longer host-less prefix cannot take a host's requests away.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use rustc_hash::FxHashMap;
use sidecar_runtime::prometheus_client;

use crate::limits::TokenBucket;
use crate::metrics::Metrics;
use crate::pool::Pool;

use super::retry::RetryBudget;

/// A place requests are sent, with its own rate limit and retry budget.
pub struct Destination {
    /// Metrics label and access-log field: the route as written, or the
    /// listener address.
    pub name: String,
    pub endpoints: Endpoints,
    pub rate: Option<TokenBucket>,
    pub budget: RetryBudget,
    pub metrics: RouteMetrics,
}

impl Destination {
    pub fn new(
        name: String,
        endpoints: Endpoints,
        rate: Option<TokenBucket>,
        budget: RetryBudget,
        metrics: &Metrics,
    ) -> Self {
        Destination {
            metrics: RouteMetrics::new(name.clone(), metrics.clone()),
            name,
            endpoints,
            rate,
            budget,
        }
    }
}

pub enum Endpoints {
    Balanced(Arc<Pool>),
    /// Transparent mode: the connection's original destination.
    OriginalDst,
}

/// The per-request metrics of one destination. Every request updates them,
/// so the handles are kept here: looking them up in their families would
/// format and hash the label strings of each request.
pub struct RouteMetrics {
    route: String,
    metrics: Metrics,
    /// By endpoint (None: a local answer).
    latency: RwLock<FxHashMap<Option<SocketAddr>, Histogram>>,
    /// By endpoint and status class (1–5).
    requests: RwLock<FxHashMap<(Option<SocketAddr>, u16), Counter>>,
}

impl RouteMetrics {
    fn new(route: String, metrics: Metrics) -> Self {
        RouteMetrics {
            route,
            metrics,
            latency: RwLock::new(FxHashMap::default()),
            requests: RwLock::new(FxHashMap::default()),
        }
    }

    /// One response sent, `seconds` after its request arrived.
    pub fn response(&self, endpoint: Option<SocketAddr>, status: u16, seconds: f64) {
        let upstream = || endpoint.map(|a| a.to_string()).unwrap_or_default();
        with_cached(
            &self.latency,
            endpoint,
            || {
                let labels = vec![("route", self.route.clone()), ("upstream", upstream())];
                self.metrics.http_latency.get_or_create(&labels).clone()
            },
            |h| h.observe(seconds),
        );
        let class = status / 100;
        with_cached(
            &self.requests,
            (endpoint, class),
            || {
                let labels = vec![
                    ("route", self.route.clone()),
                    ("upstream", upstream()),
                    ("class", format!("{class}xx")),
                ];
                self.metrics.http_requests.get_or_create(&labels).clone()
            },
            |c| {
                c.inc();
            },
        );
    }
}

/// Applies `use_it` to the metric handle for `key`, made by `make` (a
/// family lookup) the first time. Transparent mode meets as many endpoints
/// as the app dials: past `MAX_CACHED` the family keeps counting, uncached.
fn with_cached<K: Eq + std::hash::Hash, H: Clone>(
    cache: &RwLock<FxHashMap<K, H>>,
    key: K,
    make: impl FnOnce() -> H,
    use_it: impl FnOnce(&H),
) {
    if let Some(h) = cache.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
        use_it(h);
        return;
    }
    let h = make();
    use_it(&h);
    let mut cache = cache.write().unwrap_or_else(|e| e.into_inner());
    if cache.len() < MAX_CACHED {
        cache.insert(key, h);
    }
}

/// Metric handles kept per destination and kind.
const MAX_CACHED: usize = 4096;

pub struct Route {
    host: Option<String>,
    prefix: String,
    pub dest: Arc<Destination>,
}

#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// `host` in lower case.
    pub fn add(&mut self, host: Option<String>, prefix: String, dest: Arc<Destination>) {
        self.routes.push(Route { host, prefix, dest });
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// `host` is without its port, in any case.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Destination>> {
        self.routes
            .iter()
            .filter(|r| match (&r.host, host) {
                (None, _) => true,
                (Some(want), Some(h)) => want.eq_ignore_ascii_case(h),
                (Some(_), None) => false,
            })
            .filter(|r| path.starts_with(&r.prefix))
            // A route naming the host first, then the longest prefix.
            .max_by_key(|r| (r.host.is_some(), r.prefix.len()))
            .map(|r| &r.dest)
    }
}

/// The host of an authority or Host header, without the port, and
/// without the trailing dot of a fully qualified name (`api.shop.` is
/// `api.shop`, as nginx matches it).
pub fn host_of(authority: &str) -> &str {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(name: &str) -> Arc<Destination> {
        let mut reg = prometheus_client::registry::Registry::default();
        Arc::new(Destination::new(
            name.into(),
            Endpoints::OriginalDst,
            None,
            RetryBudget::new(20.0),
            &Metrics::register(&mut reg),
        ))
    }

    #[test]
    fn longest_prefix_and_host() {
        let mut r = Router::default();
        r.add(None, "/".into(), dest("root"));
        r.add(None, "/v1/".into(), dest("v1"));
        r.add(Some("api.shop".into()), "/v1/".into(), dest("api-v1"));
        r.add(Some("api.shop".into()), "/v1/orders".into(), dest("orders"));
        r.add(None, "/v1/users/admin/".into(), dest("admin"));
        let name = |h: Option<&str>, p: &str| r.find(h, p).map(|d| d.name.clone());
        assert_eq!(name(Some("api.shop"), "/v1/orders/7").unwrap(), "orders");
        assert_eq!(name(Some("API.Shop"), "/v1/users").unwrap(), "api-v1");
        // The host's routes come first, whatever the length of the others.
        assert_eq!(
            name(Some("api.shop"), "/v1/users/admin/x").unwrap(),
            "api-v1"
        );
        assert_eq!(name(Some("api.shop"), "/x").unwrap(), "root");
        assert_eq!(name(Some("other"), "/v1/users/admin/x").unwrap(), "admin");
        assert_eq!(name(Some("other"), "/v1/orders").unwrap(), "v1");
        assert_eq!(name(None, "/x").unwrap(), "root");
        assert!(Router::default().find(None, "/").is_none());
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_of("API.shop:8080"), "API.shop");
        assert_eq!(host_of("api.shop"), "api.shop");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("api.shop.:8080"), "api.shop");
    }
}
