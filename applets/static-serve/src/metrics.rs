//! Prometheus metrics (`static_serve_*` on the admin server's `/metrics`).

use sidecar_runtime::prometheus_client::metrics::counter::Counter;
use sidecar_runtime::prometheus_client::metrics::family::Family;
use sidecar_runtime::prometheus_client::metrics::gauge::Gauge;
use sidecar_runtime::prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use sidecar_runtime::prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    /// Requests by status class, resolved once so a request costs one atomic add.
    by_class: [Counter; 5],
    pub bytes_sent: Counter,
    latency: Histogram,
    pub connections_open: Gauge,
    pub connections: Counter,
    /// Connections closed by the header or idle timeout.
    pub timeouts: Counter,
    /// Connections closed at once by `--max-connections-per-ip`.
    pub per_ip_rejected: Counter,
    /// Failed accepts (EMFILE and the like back off).
    pub accept_errors: Counter,
    /// Requests answered 503 because the root did not resolve.
    pub root_missing: Counter,
    /// Precompressed variants skipped because they are older than their original.
    pub stale_variants: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let reg = registry.sub_registry_with_prefix("static_serve");
        let requests = Family::<Labels, Counter>::default();
        reg.register(
            "requests",
            "HTTP requests answered, by status class",
            requests.clone(),
        );
        let by_class = ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|c| {
            requests
                .get_or_create(&vec![("class".to_string(), c.to_string())])
                .clone()
        });
        let m = Metrics {
            by_class,
            bytes_sent: Counter::default(),
            latency: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            connections_open: Gauge::default(),
            connections: Counter::default(),
            timeouts: Counter::default(),
            per_ip_rejected: Counter::default(),
            accept_errors: Counter::default(),
            root_missing: Counter::default(),
            stale_variants: Counter::default(),
        };
        reg.register(
            "response_body_bytes",
            "Response body bytes sent",
            m.bytes_sent.clone(),
        );
        reg.register(
            "request_duration_seconds",
            "Time from request head to response head",
            m.latency.clone(),
        );
        reg.register(
            "connections_open",
            "Client connections open now",
            m.connections_open.clone(),
        );
        reg.register(
            "connections",
            "Client connections accepted",
            m.connections.clone(),
        );
        reg.register(
            "connection_timeouts",
            "Connections closed by --header-timeout or --idle-timeout",
            m.timeouts.clone(),
        );
        reg.register(
            "connections_rejected_per_ip",
            "Connections closed at accept because their address held --max-connections-per-ip",
            m.per_ip_rejected.clone(),
        );
        reg.register(
            "accept_errors",
            "Failed accepts; running out of descriptors backs off instead of spinning",
            m.accept_errors.clone(),
        );
        reg.register(
            "root_unavailable",
            "Requests answered 503 because --root did not resolve to a directory",
            m.root_missing.clone(),
        );
        reg.register(
            "stale_variants_skipped",
            "Precompressed .br/.zst/.gz variants not served because they are older than the original",
            m.stale_variants.clone(),
        );
        m
    }

    pub fn observe(&self, status: u16, seconds: f64) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
        self.latency.observe(seconds);
    }
}
