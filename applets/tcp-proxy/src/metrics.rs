//! Prometheus metrics per route (listener) and upstream endpoint. Byte
//! counters move while a connection is open, so long-lived connections show
//! up before they close.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sidecar_runtime::prometheus_client;

pub type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
pub struct Metrics {
    pub connections: Family<Labels, Counter>,
    pub active: Family<Labels, Gauge>,
    pub upstream_connections: Family<Labels, Counter>,
    pub upstream_active: Family<Labels, Gauge>,
    pub bytes: Family<Labels, Counter>,
    pub connect_failures: Family<Labels, Counter>,
    pub rejected: Family<Labels, Counter>,
    pub ejections: Family<Labels, Counter>,
    pub endpoints: Family<Labels, Gauge>,
    pub closes: Family<Labels, Counter>,
    pub duration: Family<Labels, Histogram>,
    pub accept_errors: Family<Labels, Counter>,
    pub discovery_errors: Family<Labels, Counter>,
    pub access_log_dropped: Counter,
    pub spliced_bytes: Counter,
    pub detected: Family<Labels, Counter>,
    pub http_requests: Family<Labels, Counter>,
    pub http_latency: Family<Labels, Histogram>,
    pub http_retries: Family<Labels, Counter>,
    pub http_local_responses: Family<Labels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~100 s
    Histogram::new(exponential_buckets(0.0001, 2.5, 16))
}

fn duration_histogram() -> Histogram {
    // 1 ms … ~9 h
    Histogram::new(exponential_buckets(0.001, 4.0, 13))
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            connections: Family::default(),
            active: Family::default(),
            upstream_connections: Family::default(),
            upstream_active: Family::default(),
            bytes: Family::default(),
            connect_failures: Family::default(),
            rejected: Family::default(),
            ejections: Family::default(),
            endpoints: Family::default(),
            closes: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            accept_errors: Family::default(),
            discovery_errors: Family::default(),
            access_log_dropped: Counter::default(),
            spliced_bytes: Counter::default(),
            detected: Family::default(),
            http_requests: Family::default(),
            http_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            http_retries: Family::default(),
            http_local_responses: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("tcp_proxy");
        r.register(
            "connections",
            "Client connections accepted, by route",
            m.connections.clone(),
        );
        r.register(
            "connections_active",
            "Client connections open, by route",
            m.active.clone(),
        );
        r.register(
            "upstream_connections",
            "Connections established to an upstream endpoint",
            m.upstream_connections.clone(),
        );
        r.register(
            "upstream_connections_active",
            "Connections open to an upstream endpoint",
            m.upstream_active.clone(),
        );
        r.register(
            "bytes",
            "Bytes relayed; direction=upstream is client to upstream, downstream is upstream to client",
            m.bytes.clone(),
        );
        r.register(
            "connect_failures",
            "Failed upstream connects, by reason (refused, timeout, unreachable, local = our own fd/memory shortage, other, tls = the TLS handshake failed)",
            m.connect_failures.clone(),
        );
        r.register(
            "rejected_connections",
            "Client connections closed without proxying, by reason (rate_limited, max_connections, \
             upstream_limit, no_upstream, connect_failed, loop, proxy_protocol, original_dst, \
             tls_* for refused TLS clients, upstream_tls)",
            m.rejected.clone(),
        );
        r.register(
            "ejections",
            "Outlier ejections of an endpoint",
            m.ejections.clone(),
        );
        r.register(
            "endpoints",
            "Endpoints per route, by state (healthy, unhealthy, ejected)",
            m.endpoints.clone(),
        );
        r.register(
            "closes",
            "Relayed connections closed, by reason (done, reset, idle_timeout, max_duration, shutdown)",
            m.closes.clone(),
        );
        r.register(
            "connection_duration_seconds",
            "Lifetime of relayed connections",
            m.duration.clone(),
        );
        r.register(
            "accept_errors",
            "Failed accepts (e.g. out of file descriptors)",
            m.accept_errors.clone(),
        );
        r.register(
            "discovery_errors",
            "Failed DNS resolutions and upstreams-file reloads (the previous endpoints stay)",
            m.discovery_errors.clone(),
        );
        r.register(
            "access_log_dropped",
            "Access log records dropped because the writer fell behind",
            m.access_log_dropped.clone(),
        );
        r.register(
            "spliced_bytes",
            "Bytes relayed with splice(2) (included in tcp_proxy_bytes_total)",
            m.spliced_bytes.clone(),
        );
        r.register(
            "detected_connections",
            "Accepted connections by the protocol they were handled as (http, tcp; \
             reason = detected, timeout, opaque_port, send_proxy_protocol, configured)",
            m.detected.clone(),
        );
        r.register(
            "http_requests",
            "HTTP responses sent, by route, upstream endpoint (empty for local answers) and status class",
            m.http_requests.clone(),
        );
        r.register(
            "http_response_seconds",
            "Time from a request's arrival to its response headers, by route and upstream endpoint (empty for local answers)",
            m.http_latency.clone(),
        );
        r.register(
            "http_retries",
            "HTTP request attempts made again, by route",
            m.http_retries.clone(),
        );
        r.register(
            "http_local_responses",
            "Answers made by the proxy itself, by route, status and cause (rate_limited, \
             no_endpoints, no_healthy_endpoints, upstream_full, connect_failed, upstream_reset, bad_response, timeout, \
             bad_request, client_closed, smuggling, malformed)",
            m.http_local_responses.clone(),
        );
        m
    }
}

pub fn route(route: &str) -> Labels {
    vec![("route", route.to_string())]
}

pub fn route_with(route: &str, key: &'static str, value: &str) -> Labels {
    vec![("route", route.to_string()), (key, value.to_string())]
}
