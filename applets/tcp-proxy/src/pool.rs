//! The endpoints of one route: load balancing over them, per-endpoint
//! connection limits, health state and passive outlier ejection.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use rand::Rng;
use sidecar_runtime::prometheus_client;

use crate::config::Lb;
use crate::metrics::{self, Metrics};

/// Outlier-ejection and limit settings shared by every pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// For TCP connections.
    pub lb: Lb,
    /// For HTTP requests.
    pub http_lb: Lb,
    pub max_per_endpoint: usize,
    /// Outstanding HTTP requests per endpoint (0 = unlimited).
    pub max_pending_requests: usize,
    pub outlier_failures: u32,
    pub ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

#[derive(Default)]
struct Ejection {
    until: Option<Instant>,
    /// Ejections in a row; each one lasts `ejection_time` times this.
    count: u32,
    last_end: Option<Instant>,
}

/// Peak-EWMA of response latency (Linkerd's balancer): a slower response
/// raises the estimate at once, faster ones pull it down with a decay of
/// `DECAY`, so an endpoint that turned slow is avoided immediately.
struct PeakEwma {
    /// None until the first response.
    nanos: Option<f64>,
    at: Instant,
}

const EWMA_DECAY: Duration = Duration::from_secs(10);
/// Assumed latency when no endpoint has answered yet (Linkerd's default).
const EWMA_DEFAULT_RTT: Duration = Duration::from_millis(30);

impl PeakEwma {
    fn weight(&self, now: Instant) -> f64 {
        (-now.duration_since(self.at).as_secs_f64() / EWMA_DECAY.as_secs_f64()).exp()
    }

    /// The estimate, decaying while no response comes, so an endpoint
    /// avoided for being slow is tried again after a while.
    fn decayed(&self, now: Instant) -> Option<f64> {
        self.nanos.map(|n| n * self.weight(now))
    }

    fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        self.nanos = Some(match self.nanos {
            Some(n) if rtt <= n => {
                let w = self.weight(now);
                n * w + rtt * (1.0 - w)
            }
            _ => rtt,
        });
        self.at = now;
    }
}

pub struct Endpoint {
    pub addr: SocketAddr,
    /// The name it was resolved from (`db.svc:5432`), for logs.
    pub target: String,
    /// Open connections (TCP) plus outstanding requests (HTTP).
    active: AtomicUsize,
    ewma: Mutex<PeakEwma>,
    failures: AtomicU32,
    ejection: Mutex<Ejection>,
    healthy: AtomicBool,
    check_streak: AtomicU32,
    /// `upstream_connections_active` of this route and endpoint, made on
    /// the first pick (looking it up per pick formats and hashes labels).
    active_gauge: OnceLock<Gauge>,
}

impl Endpoint {
    fn new(addr: SocketAddr, target: String) -> Self {
        Endpoint {
            addr,
            target,
            active: AtomicUsize::new(0),
            ewma: Mutex::new(PeakEwma {
                nanos: None,
                at: Instant::now(),
            }),
            failures: AtomicU32::new(0),
            ejection: Mutex::new(Ejection::default()),
            healthy: AtomicBool::new(true),
            check_streak: AtomicU32::new(0),
            active_gauge: OnceLock::new(),
        }
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    fn latency(&self, now: Instant) -> Option<f64> {
        let e = self.ewma.lock().unwrap_or_else(|e| e.into_inner());
        e.decayed(now)
    }

    fn ejected(&self, now: Instant) -> bool {
        let e = self.ejection.lock().unwrap_or_else(|e| e.into_inner());
        e.until.is_some_and(|u| now < u)
    }

    fn available(&self, now: Instant) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.ejected(now)
    }
}

/// Why no endpoint could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEndpoint {
    /// Discovery has found no address.
    Empty,
    /// Every endpoint is at --max-connections-per-upstream.
    Full,
    /// HTTP: every endpoint is failing its health check or ejected.
    Unhealthy,
}

/// An endpoint chosen for one connection; counts as active until dropped.
pub struct Lease {
    pub endpoint: Arc<Endpoint>,
    gauge: Gauge,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.active.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

pub struct Pool {
    pub route: String,
    endpoints: RwLock<Arc<Vec<Arc<Endpoint>>>>,
    next: AtomicUsize,
    settings: PoolSettings,
    metrics: Metrics,
}

impl Pool {
    pub fn new(route: String, settings: PoolSettings, metrics: Metrics) -> Arc<Pool> {
        Arc::new(Pool {
            route,
            endpoints: RwLock::new(Arc::new(Vec::new())),
            next: AtomicUsize::new(0),
            settings,
            metrics,
        })
    }

    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the endpoint set, keeping the state (active count, ejection)
    /// of addresses that stay. Connections to removed endpoints carry on.
    pub fn set_endpoints(&self, addrs: Vec<(SocketAddr, String)>) {
        let old = self.endpoints();
        let new: Vec<Arc<Endpoint>> = addrs
            .into_iter()
            .map(|(addr, target)| match old.iter().find(|e| e.addr == addr) {
                Some(e) => e.clone(),
                None => Arc::new(Endpoint::new(addr, target)),
            })
            .collect();
        let changed =
            new.len() != old.len() || new.iter().zip(old.iter()).any(|(a, b)| a.addr != b.addr);
        let list: Vec<String> = new.iter().map(|e| e.addr.to_string()).collect();
        *self.endpoints.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        if changed {
            tracing::info!(route = %self.route, endpoints = %list.join(","), "endpoints updated");
        }
        self.update_gauges();
    }

    /// Picks an endpoint for a connection from `client`, avoiding `tried`
    /// (endpoints that already failed this connection) while others remain.
    pub fn pick(&self, client: IpAddr, tried: &[SocketAddr]) -> Result<Lease, NoEndpoint> {
        let s = &self.settings;
        self.pick_with(s.lb, s.max_per_endpoint, client, tried, true)
    }

    /// `pick` for one HTTP request: the lease counts it as outstanding.
    /// Without a healthy endpoint the request is answered (503) rather
    /// than sent to a failing one: a client can retry an HTTP answer, and
    /// meshes (Linkerd's failfast) answer so.
    pub fn pick_request(&self, client: IpAddr, tried: &[SocketAddr]) -> Result<Lease, NoEndpoint> {
        let s = &self.settings;
        self.pick_with(s.http_lb, s.max_pending_requests, client, tried, false)
    }

    /// An HTTP response's headers arrived after `rtt`.
    pub fn observe_latency(&self, e: &Endpoint, rtt: Duration) {
        let mut ewma = e.ewma.lock().unwrap_or_else(|e| e.into_inner());
        ewma.observe(rtt, Instant::now());
    }

    fn pick_with(
        &self,
        lb: Lb,
        max: usize,
        client: IpAddr,
        tried: &[SocketAddr],
        panic: bool,
    ) -> Result<Lease, NoEndpoint> {
        let all = self.endpoints();
        if all.is_empty() {
            return Err(NoEndpoint::Empty);
        }
        let now = Instant::now();
        let has_room = |e: &Endpoint| max == 0 || e.active() < max;
        // The usual case, every endpoint available and below its cap, needs
        // no candidate list.
        if tried.is_empty() && all.iter().all(|e| e.available(now) && has_room(e)) {
            let i = self.choose(lb, &all, client, now);
            if let Some(lease) = self.acquire(&all[i], max) {
                return Ok(lease);
            }
        }
        // Healthy ones first; when none is left, every endpoint (Envoy's
        // "panic mode") with `panic`: for a connection, sending to a
        // possibly-bad endpoint beats refusing all. Without it, healthy
        // ones only, tried ones last.
        let panic_tiers: [&dyn Fn(&Endpoint) -> bool; 3] = [
            &|e| e.available(now) && !tried.contains(&e.addr),
            &|e| !tried.contains(&e.addr),
            &|_| true,
        ];
        let healthy_tiers: [&dyn Fn(&Endpoint) -> bool; 2] =
            [&|e| e.available(now) && !tried.contains(&e.addr), &|e| {
                e.available(now)
            }];
        let tiers: &[&dyn Fn(&Endpoint) -> bool] = if panic {
            &panic_tiers
        } else if all.iter().any(|e| e.available(now)) {
            &healthy_tiers
        } else {
            return Err(NoEndpoint::Unhealthy);
        };
        for tier in tiers {
            let in_tier: Vec<&Arc<Endpoint>> = all.iter().filter(|e| tier(e)).collect();
            if in_tier.is_empty() {
                continue;
            }
            // A tier whose endpoints are all at their cap is full: spilling
            // over to the next tier would send the overflow to unhealthy or
            // ejected endpoints while healthy ones exist.
            let mut candidates: Vec<&Arc<Endpoint>> =
                in_tier.into_iter().filter(|e| has_room(e)).collect();
            while !candidates.is_empty() {
                let i = self.choose(lb, &candidates, client, now);
                if let Some(lease) = self.acquire(candidates[i], max) {
                    return Ok(lease);
                }
                candidates.remove(i);
            }
            return Err(NoEndpoint::Full);
        }
        Err(NoEndpoint::Full)
    }

    /// Counts one more connection or request on `e`, unless that would pass `max`.
    fn acquire(&self, e: &Arc<Endpoint>, max: usize) -> Option<Lease> {
        e.active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .ok()?;
        let gauge = e
            .active_gauge
            .get_or_init(|| {
                let labels = metrics::route_with(&self.route, "upstream", &e.addr.to_string());
                self.metrics.upstream_active.get_or_create(&labels).clone()
            })
            .clone();
        gauge.inc();
        Some(Lease {
            endpoint: e.clone(),
            gauge,
        })
    }

    fn choose<E: AsRef<Endpoint>>(&self, lb: Lb, c: &[E], client: IpAddr, now: Instant) -> usize {
        if c.len() == 1 {
            return 0;
        }
        let e = |i: usize| c[i].as_ref();
        match lb {
            Lb::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % c.len(),
            Lb::LeastConn => {
                // Among equally loaded endpoints, rotate so ties spread out.
                let start = self.next.fetch_add(1, Ordering::Relaxed) % c.len();
                (0..c.len())
                    .map(|k| (start + k) % c.len())
                    .min_by_key(|&i| e(i).active())
                    .unwrap_or(0)
            }
            Lb::RandomTwo => {
                let (a, b) = two_random(c.len());
                if e(b).active() < e(a).active() {
                    b
                } else {
                    a
                }
            }
            Lb::Ewma => {
                let (a, b) = two_random(c.len());
                // Expected wait: latency times the queue a request joins.
                // An endpoint that has not answered yet is assumed as fast
                // as the other, so new endpoints get their share at once
                // instead of waiting out a pessimistic default.
                let (la, lb) = (e(a).latency(now), e(b).latency(now));
                let default = EWMA_DEFAULT_RTT.as_nanos() as f64;
                let la_ = la.or(lb).unwrap_or(default);
                let lb_ = lb.or(la).unwrap_or(default);
                let cost = |l: f64, ep: &Endpoint| l * (ep.active() + 1) as f64;
                if cost(lb_, e(b)) < cost(la_, e(a)) {
                    b
                } else {
                    a
                }
            }
            // Rendezvous hashing: a client keeps its endpoint while that
            // endpoint stays, and only its clients move when it goes.
            Lb::HashSource => (0..c.len())
                .max_by_key(|&i| {
                    let mut h = DefaultHasher::new();
                    client.hash(&mut h);
                    e(i).addr.hash(&mut h);
                    h.finish()
                })
                .unwrap_or(0),
        }
    }

    /// A success ends a streak of failures (connect failures, and 5xx
    /// responses in HTTP mode).
    pub fn report_success(&self, e: &Endpoint) {
        e.failures.store(0, Ordering::Relaxed);
    }

    /// A connect failure. Enough in a row eject the endpoint, unless it is the
    /// last one available.
    pub fn report_failure(self: &Arc<Self>, e: &Arc<Endpoint>) {
        let failures = e.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let s = &self.settings;
        if s.outlier_failures == 0 || failures < s.outlier_failures {
            return;
        }
        let now = Instant::now();
        let others = self
            .endpoints()
            .iter()
            .filter(|o| o.addr != e.addr && o.available(now))
            .count();
        if others == 0 {
            if failures == s.outlier_failures {
                tracing::warn!(route = %self.route, endpoint = %e.addr, failures, "not ejecting the last available endpoint");
            }
            return;
        }
        let duration = {
            let mut ej = e.ejection.lock().unwrap_or_else(|e| e.into_inner());
            if ej.until.is_some_and(|u| now < u) {
                return;
            }
            // Ejections keep growing while they follow each other closely.
            let recent = ej
                .last_end
                .is_some_and(|t| now.duration_since(t) < s.max_ejection_time);
            ej.count = if recent { ej.count + 1 } else { 1 };
            let d = (s.ejection_time * ej.count).min(s.max_ejection_time);
            ej.until = Some(now + d);
            ej.last_end = Some(now + d);
            d
        };
        e.failures.store(0, Ordering::Relaxed);
        self.metrics
            .ejections
            .get_or_create(&metrics::route_with(
                &self.route,
                "upstream",
                &e.addr.to_string(),
            ))
            .inc();
        tracing::warn!(route = %self.route, endpoint = %e.addr, failures, duration = ?duration, "endpoint ejected");
        self.update_gauges();
        let (pool, e) = (self.clone(), e.clone());
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            tracing::info!(route = %pool.route, endpoint = %e.addr, "endpoint returned from ejection");
            pool.update_gauges();
        });
    }

    /// The result of one active health check.
    pub fn report_check(&self, e: &Endpoint, passed: bool) {
        let was = e.healthy.load(Ordering::Relaxed);
        if passed == was {
            e.check_streak.store(0, Ordering::Relaxed);
            return;
        }
        let streak = e.check_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let threshold = if was {
            self.settings.unhealthy_threshold
        } else {
            self.settings.healthy_threshold
        };
        if streak >= threshold {
            e.check_streak.store(0, Ordering::Relaxed);
            e.healthy.store(passed, Ordering::Relaxed);
            if passed {
                e.failures.store(0, Ordering::Relaxed);
                tracing::info!(route = %self.route, endpoint = %e.addr, "endpoint healthy");
            } else {
                tracing::warn!(route = %self.route, endpoint = %e.addr, "endpoint unhealthy");
            }
            self.update_gauges();
        }
    }

    /// The endpoints and their state, for `GET /endpoints` on the admin server.
    pub fn snapshot(&self) -> serde_json::Value {
        let now = Instant::now();
        let endpoints: Vec<serde_json::Value> = self
            .endpoints()
            .iter()
            .map(|e| {
                let ejected_for = {
                    let ej = e.ejection.lock().unwrap_or_else(|e| e.into_inner());
                    ej.until
                        .filter(|u| now < *u)
                        .map(|u| (u - now).as_millis() as u64)
                };
                serde_json::json!({
                    "address": e.addr.to_string(),
                    "target": e.target,
                    "active_connections": e.active(),
                    "healthy": e.healthy.load(Ordering::Relaxed),
                    "consecutive_failures": e.failures.load(Ordering::Relaxed),
                    "ejected_for_ms": ejected_for,
                })
            })
            .collect();
        serde_json::json!({
            "route": self.route,
            "lb": format!("{:?}", self.settings.lb),
            "http_lb": format!("{:?}", self.settings.http_lb),
            "endpoints": endpoints,
        })
    }

    fn update_gauges(&self) {
        let now = Instant::now();
        let (mut healthy, mut unhealthy, mut ejected) = (0, 0, 0);
        for e in self.endpoints().iter() {
            if e.ejected(now) {
                ejected += 1;
            } else if e.healthy.load(Ordering::Relaxed) {
                healthy += 1;
            } else {
                unhealthy += 1;
            }
        }
        for (state, n) in [
            ("healthy", healthy),
            ("unhealthy", unhealthy),
            ("ejected", ejected),
        ] {
            self.metrics
                .endpoints
                .get_or_create(&metrics::route_with(&self.route, "state", state))
                .set(n);
        }
    }
}

/// Two distinct indexes below `n` (n ≥ 2), for power-of-two-choices.
fn two_random(n: usize) -> (usize, usize) {
    let mut rng = rand::thread_rng();
    let a = rng.gen_range(0..n);
    let mut b = rng.gen_range(0..n - 1);
    if b >= a {
        b += 1;
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn pool(lb: Lb, max: usize, n: u16) -> Arc<Pool> {
        let mut reg = prometheus_client::registry::Registry::default();
        let p = Pool::new(
            "r".into(),
            PoolSettings {
                lb,
                http_lb: lb,
                max_per_endpoint: max,
                max_pending_requests: max,
                outlier_failures: 2,
                ejection_time: Duration::from_secs(10),
                max_ejection_time: Duration::from_secs(300),
                unhealthy_threshold: 1,
                healthy_threshold: 1,
            },
            Metrics::register(&mut reg),
        );
        p.set_endpoints(
            (1..=n)
                .map(|i| (SocketAddr::from(([127, 0, 0, 1], i)), "t".into()))
                .collect(),
        );
        p
    }

    fn client() -> IpAddr {
        IpAddr::from([10, 0, 0, 1])
    }

    #[test]
    fn round_robin_spreads_evenly() {
        let p = pool(Lb::RoundRobin, 0, 3);
        let mut seen = HashMap::new();
        for _ in 0..30 {
            *seen
                .entry(p.pick(client(), &[]).unwrap().endpoint.addr)
                .or_insert(0) += 1;
        }
        assert!(seen.values().all(|&n| n == 10), "{seen:?}");
    }

    #[test]
    fn least_conn_and_limits() {
        let p = pool(Lb::LeastConn, 1, 2);
        let a = p.pick(client(), &[]).unwrap();
        let b = p.pick(client(), &[]).unwrap();
        assert_ne!(a.endpoint.addr, b.endpoint.addr);
        assert_eq!(p.pick(client(), &[]).err(), Some(NoEndpoint::Full));
        drop(a);
        assert!(p.pick(client(), &[]).is_ok());
    }

    #[test]
    fn full_healthy_endpoints_do_not_spill_over_to_unhealthy_ones() {
        let p = pool(Lb::LeastConn, 1, 2);
        let eps = p.endpoints();
        p.report_check(&eps[1], false);
        let held = p.pick(client(), &[]).unwrap();
        assert_eq!(held.endpoint.addr, eps[0].addr);
        assert_eq!(p.pick(client(), &[]).err(), Some(NoEndpoint::Full));
    }

    #[test]
    fn hash_source_is_sticky() {
        let p = pool(Lb::HashSource, 0, 5);
        let first = p.pick(client(), &[]).unwrap().endpoint.addr;
        for _ in 0..10 {
            assert_eq!(p.pick(client(), &[]).unwrap().endpoint.addr, first);
        }
    }

    #[test]
    fn random_two_prefers_the_less_loaded() {
        let p = pool(Lb::RandomTwo, 0, 2);
        let held = p.pick(client(), &[]).unwrap();
        for _ in 0..10 {
            assert_ne!(
                p.pick(client(), &[]).unwrap().endpoint.addr,
                held.endpoint.addr
            );
        }
    }

    #[test]
    fn ewma_avoids_the_slow_endpoint() {
        let p = pool(Lb::Ewma, 0, 2);
        let eps = p.endpoints();
        p.observe_latency(&eps[0], Duration::from_secs(1));
        p.observe_latency(&eps[1], Duration::from_millis(1));
        for _ in 0..10 {
            assert_eq!(p.pick(client(), &[]).unwrap().endpoint.addr, eps[1].addr);
        }
    }

    #[test]
    fn refresh_keeps_the_state_of_endpoints_that_stay() {
        let p = pool(Lb::LeastConn, 0, 2);
        let held = p.pick(client(), &[]).unwrap();
        let kept = held.endpoint.addr;
        let new = SocketAddr::from(([127, 0, 0, 2], 9));
        p.set_endpoints(vec![(kept, "t".into()), (new, "t".into())]);
        let eps = p.endpoints();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps.iter().find(|e| e.addr == kept).unwrap().active(), 1);
        // least-conn sees the open connection across the refresh
        assert_eq!(p.pick(client(), &[]).unwrap().endpoint.addr, new);
        drop(held);
        assert_eq!(eps.iter().find(|e| e.addr == kept).unwrap().active(), 0);
    }

    #[tokio::test]
    async fn ejection_grows_and_spares_the_last() {
        let p = pool(Lb::RoundRobin, 0, 2);
        let eps = p.endpoints();
        p.report_failure(&eps[0]);
        p.report_failure(&eps[0]);
        assert!(eps[0].ejected(Instant::now()));
        // the other is the last available one: it stays
        p.report_failure(&eps[1]);
        p.report_failure(&eps[1]);
        assert!(!eps[1].ejected(Instant::now()));
        for _ in 0..4 {
            assert_eq!(p.pick(client(), &[]).unwrap().endpoint.addr, eps[1].addr);
        }
        // a retry avoids the endpoint that just failed, even if ejected ones remain
        assert_eq!(
            p.pick(client(), &[eps[1].addr]).unwrap().endpoint.addr,
            eps[0].addr
        );
        // a second ejection soon after lasts longer
        eps[0].ejection.lock().unwrap().until = None;
        p.report_failure(&eps[0]);
        p.report_failure(&eps[0]);
        let e = eps[0].ejection.lock().unwrap();
        assert_eq!(e.count, 2);
    }
}
