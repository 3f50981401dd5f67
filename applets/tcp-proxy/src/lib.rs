//! L4 proxy and HTTP-aware mesh data plane: forward, reverse and
//! transparent, with protocol detection, per-connection or per-request load
//! balancing, health and outlier ejection.
//!
//! The life of the process: flags → discovery → bind every listener → ready
//! → serve → SIGTERM: stop accepting (readiness is already 503) → let open
//! connections and requests finish within the grace period → close what is
//! left.

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
mod tls;
mod transparent;
mod wiring;

use std::sync::Arc;
use std::time::Duration;

use sidecar_runtime::{admin, Applet, Context};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::limits::ConnectionLimit;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::proxy::Shared;

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

    /// The flags, the upstreams file, the TLS files and the access log's
    /// place; nothing is bound, opened for writing or started.
    fn check(&self) -> anyhow::Result<()> {
        let plan = self.args.plan()?;
        wiring::read_upstreams_file(&self.args, &plan)?;
        AccessLog::check(&self.args.access_log)?;
        tls::check(&self.args)
    }

    /// An expired certificate of our own: a start takes it with a warning.
    fn check_strict(&self) -> anyhow::Result<()> {
        tls::check_validity(&self.args)
    }

    /// One thread unless asked: a sidecar carries one Pod's traffic, and
    /// one thread costs less CPU per request than several (two CPUs, the
    /// mesh hop of benches/mesh.sh: 60 instead of 86 us per HTTP/1.1
    /// request for the two sidecars), as Linkerd's proxy runs one worker by
    /// default.
    fn worker_threads(&self) -> usize {
        match self.args.concurrency {
            Some(0) => sidecar_runtime::cpus(),
            Some(n) => n,
            None => sidecar_runtime::tokio_worker_threads().unwrap_or(1),
        }
    }

    async fn run(self, ctx: Context) -> anyhow::Result<()> {
        run(self.args, ctx).await
    }
}

async fn run(args: config::Args, ctx: Context) -> anyhow::Result<()> {
    let plan = args.plan()?;
    let file_routes = wiring::read_upstreams_file(&args, &plan)?;
    sidecar_runtime::raise_fd_limit();
    let metrics = Metrics::register(&mut ctx.registry());
    let access_log = AccessLog::open(&args.access_log, metrics.access_log_dropped.clone())?;
    let tls = tls::Tls::from_args(&args, &mut ctx.registry())?;
    let shared = Arc::new(shared_state(
        &args,
        &metrics,
        access_log.clone(),
        tls.clone(),
    ));

    // Discovery, health checks, HTTP routes; every listener is bound before
    // any serves, so a port conflict fails start-up.
    let mut wired = wiring::wire(
        &args,
        &plan,
        file_routes.as_ref(),
        &metrics,
        access_log,
        tls,
    )
    .await?;
    if let Some(path) = &args.upstreams_file {
        wired.watch_upstreams_file(path, &plan, args.listen.is_some(), &metrics);
    }
    add_endpoints_route(&ctx, wired.pools.clone());
    add_quit_route(&ctx);

    // Accept loops are tracked too: the drain below then also waits for a
    // loop that accepted a connection just as the stop fired to hand it on.
    for (listener, route) in wired.listeners.drain(..) {
        shared.tracker.spawn(proxy::serve(
            listener,
            Arc::new(route),
            shared.clone(),
            shared.stop.clone(),
        ));
    }
    ctx.set_ready(true);

    ctx.shutdown().await;
    drain(&shared, ctx.shutdown_grace()).await;
    Ok(())
}

fn shared_state(
    args: &config::Args,
    metrics: &Metrics,
    access_log: Option<AccessLog>,
    tls: Option<Arc<tls::Tls>>,
) -> Shared {
    Shared {
        connect_timeout: args.connect_timeout,
        connect_retries: args.connect_retries,
        idle_timeout: args.idle_timeout,
        max_connection_duration: args.max_connection_duration,
        splice_after: args.splice_after,
        send_proxy_protocol: args.send_proxy_protocol,
        accept_proxy_protocol: args.accept_proxy_protocol,
        proxy_protocol_timeout: args.proxy_protocol_timeout,
        tls,
        protocol: args.protocol,
        detect_timeout: args.detect_timeout,
        opaque_ports: args.opaque_ports.clone(),
        metrics: metrics.clone(),
        limit: ConnectionLimit::new(args.max_connections),
        access_log,
        tracker: TaskTracker::new(),
        stop: CancellationToken::new(),
        hard_stop: CancellationToken::new(),
    }
}

/// Stops accepting (HTTP connections finish their requests in flight and
/// close), waits for open connections within `grace`, then closes the rest.
async fn drain(shared: &Shared, grace: Duration) {
    shared.stop.cancel();
    shared.tracker.close();
    let open = shared.limit.open();
    tracing::info!(open_connections = open, grace = ?grace, "stopped accepting; draining");
    if tokio::time::timeout(grace, shared.tracker.wait())
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
