//! Where endpoints come from: upstream names resolved again every
//! --dns-refresh (every address becomes an endpoint, so a headless Service
//! works as discovery), and --upstreams-file, watched and reloaded. Neither
//! touches open connections; a failed lookup or a bad file keeps the
//! previous endpoints.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sidecar_runtime::watch::Watch;
use tokio::sync::watch;

use crate::config::{self, Target};
use crate::metrics::{self, Metrics};
use crate::pool::Pool;

/// Feeds one pool: resolves its targets now, then on every refresh tick and
/// whenever the targets change.
pub struct Discovery {
    targets: watch::Sender<Vec<Target>>,
}

impl Discovery {
    pub async fn start(
        pool: Arc<Pool>,
        targets: Vec<Target>,
        refresh: Duration,
        metrics: Metrics,
    ) -> Discovery {
        resolve_into(&pool, &targets, &metrics).await;
        let (tx, mut rx) = watch::channel(targets);
        tokio::spawn(async move {
            loop {
                let tick = async {
                    if refresh.is_zero() {
                        std::future::pending::<()>().await
                    } else {
                        tokio::time::sleep(refresh).await
                    }
                };
                tokio::select! {
                    _ = tick => {}
                    changed = rx.changed() => if changed.is_err() { return },
                }
                let targets = rx.borrow_and_update().clone();
                resolve_into(&pool, &targets, &metrics).await;
            }
        });
        Discovery { targets: tx }
    }

    pub fn set_targets(&self, targets: Vec<Target>) {
        self.targets.send_if_modified(|t| {
            let changed = *t != targets;
            *t = targets;
            changed
        });
    }
}

async fn resolve_into(pool: &Pool, targets: &[Target], metrics: &Metrics) {
    let previous = pool.endpoints();
    let mut addrs: Vec<(SocketAddr, String)> = Vec::new();
    for t in targets {
        let name = t.to_string();
        let found: Vec<SocketAddr> = match t.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, t.port)],
            Err(_) => match tokio::net::lookup_host((t.host.as_str(), t.port)).await {
                Ok(it) => it.collect(),
                Err(e) => {
                    metrics
                        .discovery_errors
                        .get_or_create(&metrics::route_with(&pool.route, "source", "dns"))
                        .inc();
                    tracing::warn!(route = %pool.route, upstream = %name, error = %e, "cannot resolve upstream; keeping its previous addresses");
                    previous
                        .iter()
                        .filter(|e| e.target == name)
                        .map(|e| e.addr)
                        .collect()
                }
            },
        };
        for a in found {
            if !addrs.iter().any(|(x, _)| *x == a) {
                addrs.push((a, name.clone()));
            }
        }
    }
    pool.set_endpoints(addrs);
}

/// Watches --upstreams-file (through `runtime::watch`, so a ConfigMap's
/// `..data` swap is seen) and hands each valid new content to `apply`.
pub fn watch_file(
    path: PathBuf,
    metrics: Metrics,
    apply: impl Fn(config::FileRoutes) -> Result<(), String> + Send + 'static,
) {
    // Created before the first read below, so no change falls between.
    let mut watch = Watch::files([&path]);
    tokio::spawn(async move {
        let mut last = std::fs::read_to_string(&path).ok();
        loop {
            watch.changed().await;
            let Ok(text) = tokio::fs::read_to_string(&path).await else {
                continue; // mid-swap; the next change brings the new file
            };
            if last.as_deref() == Some(text.as_str()) {
                continue;
            }
            let result = config::parse_upstreams_file(&text).and_then(&apply);
            match result {
                Ok(()) => tracing::info!(file = %path.display(), "upstreams file reloaded"),
                Err(e) => {
                    metrics
                        .discovery_errors
                        .get_or_create(&metrics::route_with("", "source", "file"))
                        .inc();
                    tracing::error!(file = %path.display(), error = %e, "upstreams file rejected; keeping the previous upstreams");
                }
            }
            last = Some(text);
        }
    });
}
