//! Reload an app when its mounted ConfigMaps or Secrets change.
//!
//! The life of the process: check the flags, render templates, take the
//! initial snapshot (then report ready), and loop: wait for file system
//! events (or the resync tick), let them settle (debounce, bounded by
//! max-wait), re-hash, and hand a changed state to the reload runner, which
//! validates and acts, retrying only the newest state.

mod args;
mod metrics;
mod mountinfo;
mod plan;
mod reload;
mod render;
mod runtimeinfo;
mod snapshot;
mod web;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use sidecar_runtime::actions::Runner;
use sidecar_runtime::watch::{Watch, WatchMetrics};
use sidecar_runtime::{Applet, Context};
use tokio::time::Instant;

pub use args::ConfigWatchReload;
use metrics::Metrics;
use plan::{Mode, Plan};
use reload::{Change, Outcome, Reloader};
use snapshot::Snapshot;

impl Applet for ConfigWatchReload {
    const NAME: &'static str = "config-watch-reload";
    const ABOUT: &'static str = "Reload an app when its mounted ConfigMaps or Secrets change";
    /// configmap-reload's default port.
    const ADMIN_ADDR: &'static str = "0.0.0.0:9533";
    const MULTI_THREAD: bool = false;

    fn rewrite_args(args: Vec<OsString>) -> Vec<OsString> {
        args::rewrite_args(args)
    }

    fn admin_addr_override(&self) -> Option<String> {
        self.listen_address.clone()
    }

    async fn run(self, ctx: Context) -> Result<()> {
        let plan = self.plan()?;
        check_config_file(&plan)?;
        let metrics = Arc::new(Metrics::register(&mut ctx.registry(), plan.method));
        web::add_routes(&ctx, &plan.telemetry_path);
        mountinfo::warn_pinned(&plan.roots);
        match plan.mode {
            Mode::RenderOnly => render_all(&plan, &metrics, true).map(|_| ()),
            Mode::Once => once(&plan, metrics).await,
            Mode::Watch => watch(plan, metrics, ctx).await,
        }
    }
}

/// prometheus-config-reloader cannot start without its `--config-file`
/// (exit 1, Go's wording), in every mode: an init container that
/// "succeeds" without the config would start Prometheus on a stale one.
fn check_config_file(plan: &Plan) -> Result<()> {
    match &plan.config_file {
        Some(f) if !f.exists() => {
            anyhow::bail!("open {}: no such file or directory", f.display())
        }
        _ => Ok(()),
    }
}

/// Renders every template. At start (`fatal`) an error ends the process;
/// later it is logged and counted, and blocks the reload.
fn render_all(plan: &Plan, metrics: &Metrics, fatal: bool) -> Result<bool> {
    let lookup = |name: &str| plan.lookup(name);
    let mut unset = 0;
    for t in &plan.templates {
        match t.render(&lookup) {
            Ok(r) => {
                // Said at start and when the output changes, not at every
                // re-render that finds it intact (the gauge keeps the count).
                if !r.unset.is_empty() && (fatal || r.written) {
                    tracing::warn!(src = %t.src.display(), variables = %r.unset.join(","), "unset variables kept literally");
                }
                unset += r.unset.len();
                if r.written {
                    tracing::info!(src = %t.src.display(), dst = %t.dst.display(), "rendered");
                }
            }
            Err(e) => {
                metrics.render_errors.inc();
                if fatal {
                    return Err(e);
                }
                tracing::error!(error = %format!("{e:#}"), "render failed: reload blocked until the next change");
                return Ok(false);
            }
        }
    }
    metrics.unset_variables.set(unset as i64);
    Ok(true)
}

async fn snapshot(plan: &Plan) -> Snapshot {
    let roots = plan.roots.clone();
    let exclude = plan.exclude.clone();
    let snap = tokio::task::spawn_blocking(move || snapshot::take(&roots, &exclude))
        .await
        .expect("snapshot task panicked");
    for u in &snap.unreadable {
        tracing::warn!(error = %u, "cannot read watched file");
    }
    snap
}

fn reloader(plan: &Plan, metrics: Arc<Metrics>) -> Reloader {
    Reloader {
        validate: plan.validate.clone(),
        actions: plan.actions.clone(),
        max_attempts: plan.max_attempts,
        runtimeinfo: plan.runtimeinfo.clone(),
        metrics,
    }
}

/// `--once`: an init container prepares the config and exits; failure
/// exits non-zero so the kubelet retries the container.
async fn once(plan: &Plan, metrics: Arc<Metrics>) -> Result<()> {
    render_all(plan, &metrics, true)?;
    let change = Change::new(snapshot(plan).await);
    let reloader = Reloader {
        max_attempts: Some(1),
        ..reloader(plan, metrics)
    };
    match reloader.apply(&change).await? {
        Outcome::Reloaded => Ok(()),
        Outcome::Blocked => anyhow::bail!("validation failed"),
        Outcome::GaveUp => anyhow::bail!("reload failed"),
    }
}

/// The paths to watch for `snap`: the roots, the directories symlinks lead
/// to, and with `--recursive` every subdirectory (minus the excluded ones,
/// which the snapshot skipped).
fn watch_targets(plan: &Plan, snap: &Snapshot) -> BTreeSet<PathBuf> {
    let mut targets: BTreeSet<PathBuf> = plan.roots.iter().cloned().collect();
    targets.extend(snap.link_dirs.iter().cloned());
    if plan.recursive {
        targets.extend(snap.dirs.iter().cloned());
    }
    targets
}

async fn watch(plan: Plan, metrics: Arc<Metrics>, ctx: Context) -> Result<()> {
    let mut watch = Watch::new()
        .debounce(plan.debounce)
        .max_wait(plan.max_wait)
        .metrics(WatchMetrics {
            events: metrics.watch_events.clone(),
            errors: metrics.watch_errors.clone(),
            watches: metrics.watches.clone(),
        });
    render_all(&plan, &metrics, true)?;
    let mut current = observe(&plan, &mut watch).await;
    tracing::info!(
        paths = %plan.roots.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(","),
        files = current.files,
        hash = %current.short(),
        actions = %plan.actions.iter().map(|a| a.describe()).collect::<Vec<_>>().join("; "),
        "watching"
    );

    let reloader = Arc::new(reloader(&plan, metrics.clone()));
    let runner = Runner::spawn(
        "reload",
        plan.backoff.clone(),
        ctx.shutdown_handle(),
        move |change: Arc<Arc<Change>>| {
            let reloader = reloader.clone();
            async move { reloader.run(&change).await }
        },
    );
    let mut pending: Option<Arc<Change>> = None;
    let submit = |snap: Snapshot, pending: &mut Option<Arc<Change>>| {
        if let Some(p) = pending.as_ref().filter(|p| !p.is_finished()) {
            metrics.superseded.inc();
            tracing::info!(old = %p.snapshot.short(), new = %snap.short(), "pending reload superseded by a newer change");
        }
        let change = Arc::new(Change::new(snap));
        *pending = Some(change.clone());
        runner.submit(change);
    };
    if plan.reload_on_start {
        tracing::info!(hash = %current.short(), "reloading at start");
        submit(current.clone(), &mut pending);
    }
    ctx.set_ready(true);

    let mut render_failed = None;
    let mut resync = plan
        .resync
        .map(|d| tokio::time::interval_at(Instant::now() + d, d));
    loop {
        tokio::select! {
            _ = watch.changed() => {}
            _ = tick(&mut resync) => tracing::debug!("resync"),
            _ = ctx.shutdown() => return Ok(()),
        }
        if ctx.shutdown_handle().is_requested() {
            return Ok(());
        }
        metrics.apply_operations.inc();
        let snap = observe(&plan, &mut watch).await;
        if snap.hash == current.hash || Some(snap.hash) == render_failed {
            // Outputs are not hashed: one deleted or edited by someone else
            // is written again (prometheus-config-reloader renders at every
            // apply). Nothing is written when it is intact.
            if render_failed.is_none() {
                render_all(&plan, &metrics, false)?;
            }
            continue;
        }
        metrics.changes.inc();
        tracing::info!(old = %current.short(), new = %snap.short(), files = snap.files, "change detected");
        // The environment is fixed for the process's life: a template that
        // failed to render is tried again only once its content changes.
        if !render_all(&plan, &metrics, false)? {
            render_failed = Some(snap.hash);
            continue;
        }
        render_failed = None;
        current = snap.clone();
        submit(snap, &mut pending);
    }
}

/// Hashes the watched set and watches what it found. When that added a
/// directory, hashes again: a change made in it before its watch existed
/// would otherwise wait for the resync.
async fn observe(plan: &Plan, watch: &mut Watch) -> Snapshot {
    let mut snap = snapshot(plan).await;
    // Bounded: directories that keep appearing are left to the next event.
    for _ in 0..3 {
        if !watch.set(watch_targets(plan, &snap), []) {
            break;
        }
        snap = snapshot(plan).await;
    }
    snap
}

async fn tick(resync: &mut Option<tokio::time::Interval>) {
    match resync {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
