//! What the process exposes and logs: `--http-bind`, `--http-metrics`,
//! `--http-pprof`, `-v`, and the two additions beyond upstream
//! (`--ready-max-staleness`, `--sync-token-file`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use sidecar_runtime::usage;

use super::lookup::{min_duration, non_empty, Lookup};
use crate::goparse;
use crate::GitSync;

pub struct Exposure {
    pub http_bind: Option<SocketAddr>,
    pub http_metrics: bool,
    pub http_pprof: bool,
    pub verbose: i64,
    pub ready_max_staleness: Option<Duration>,
    pub sync_token_file: Option<PathBuf>,
}

pub fn resolve(f: &mut GitSync, l: &Lookup) -> Result<Exposure> {
    let http_bind = match l.get(
        "http-bind",
        f.http_bind.take(),
        &["GITSYNC_HTTP_BIND", "GIT_SYNC_HTTP_BIND"],
    ) {
        Some(r) if !r.value.is_empty() => Some(
            sidecar_runtime::admin::parse_listen_addr(&r.value)
                .map_err(|e| usage!("{}: {e}", r.source))?,
        ),
        _ => None,
    };
    let http_metrics = l.bool(
        "http-metrics",
        f.http_metrics.take(),
        &["GITSYNC_HTTP_METRICS", "GIT_SYNC_HTTP_METRICS"],
        false,
    )?;
    let http_pprof = l.bool(
        "http-pprof",
        f.http_pprof.take(),
        &["GITSYNC_HTTP_PPROF", "GIT_SYNC_HTTP_PPROF"],
        false,
    )?;
    if http_bind.is_none() && http_metrics {
        return Err(usage!(
            "required flag: --http-bind must be specified when --http-metrics is set"
        ));
    }
    if http_bind.is_none() && http_pprof {
        return Err(usage!(
            "required flag: --http-bind must be specified when --http-pprof is set"
        ));
    }
    let mut verbose = l.int("verbose", f.verbose.take(), &["GITSYNC_VERBOSE"], 0)?;
    if let Some(v) = f.v_deprecated.take() {
        verbose = goparse::parse_int(&v).map_err(|e| usage!("--v: {e}"))?;
    }
    let staleness = l.duration(
        "ready-max-staleness",
        f.ready_max_staleness.take(),
        &["GITSYNC_READY_MAX_STALENESS"],
        Duration::ZERO,
    )?;
    let staleness = min_duration(staleness, Duration::ZERO, "ready-max-staleness")?;
    let sync_token_file = non_empty(l.string(
        "sync-token-file",
        f.sync_token_file.take(),
        &["GITSYNC_SYNC_TOKEN_FILE"],
        "",
    ))
    .map(PathBuf::from);
    Ok(Exposure {
        http_bind,
        http_metrics,
        http_pprof,
        verbose,
        ready_max_staleness: (!staleness.is_zero()).then_some(staleness),
        sync_token_file,
    })
}
