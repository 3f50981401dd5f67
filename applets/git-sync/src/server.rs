//! Upstream's `--http-bind` endpoint (`/` is 503 until the first successful
//! sync, then 200 for good; `/metrics`), and `POST /sync` on the admin server.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use sidecar_runtime::admin::{self, AdminState, Body};
use sidecar_runtime::{Context, Shutdown};
use tokio::sync::Notify;

use crate::config::Config;

pub async fn serve_http_bind(
    cfg: &Config,
    admin: Arc<AdminState>,
    synced: Arc<AtomicBool>,
    stop: Shutdown,
) -> Result<()> {
    let Some(addr) = cfg.http_bind else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--http-bind {addr}: can't bind HTTP endpoint: {e}"))?;
    tracing::info!(endpoint = %listener.local_addr()?, metrics = cfg.http_metrics, pprof = cfg.http_pprof, "serving HTTP");
    let (metrics, pprof) = (cfg.http_metrics, cfg.http_pprof);
    admin::serve_http1(listener, stop, move |req| {
        let admin = admin.clone();
        let synced = synced.clone();
        async move {
            let path = req.uri().path();
            let resp = if metrics && path == "/metrics" {
                Response::builder()
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .body(Body::new(Bytes::from(admin.encode_metrics())))
                    .expect("static response")
            } else if pprof && path.starts_with("/debug/pprof/") {
                admin::text(
                    StatusCode::OK,
                    "pprof is a Go runtime feature; this implementation has none\n",
                )
            } else if synced.load(Ordering::SeqCst) {
                admin::text(StatusCode::OK, "")
            } else {
                admin::text(StatusCode::SERVICE_UNAVAILABLE, "repo is not ready\n")
            };
            Ok::<_, Infallible>(resp)
        }
    });
    Ok(())
}

/// `POST /sync` starts a sync now (202), with an optional bearer token.
pub fn add_sync_route(ctx: &Context, token_file: Option<PathBuf>, wake: Arc<Notify>) {
    let handler: admin::Handler = Arc::new(move |req| {
        let wake = wake.clone();
        let token_file = token_file.clone();
        Box::pin(async move {
            if let Some(f) = token_file {
                let want = match std::fs::read_to_string(&f) {
                    Ok(t) => t.trim().to_string(),
                    Err(e) => {
                        tracing::error!(file = %f.display(), error = %e, "cannot read --sync-token-file");
                        return admin::text(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "cannot read token file\n",
                        );
                    }
                };
                let got = req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or_default();
                if want.is_empty() || got != want {
                    return admin::text(StatusCode::UNAUTHORIZED, "unauthorized\n");
                }
            }
            wake.notify_one();
            admin::text(StatusCode::ACCEPTED, "sync requested\n")
        })
    });
    ctx.admin_route(Method::POST, "/sync", handler);
}
