//! Reload an app when its mounted ConfigMaps or Secrets change.
//!
//! The life of the process: check the flags, render templates, take the
//! initial snapshot (then report ready), and loop: wait for file system
//! events (or the resync tick), let them settle (debounce, bounded by
//! max-wait), re-hash, and hand a changed state to the reload runner, which
//! validates and acts, retrying only the newest state.

mod args;
mod check;
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

    /// The flags, and the commands' programs and URLs; files are left to
    /// `check_strict`, since a start waits for them or reports them itself.
    fn check(&self) -> Result<()> {
        // Quietly: run() builds the plan again and warns about what it
        // tolerates then, once.
        let plan = tracing::subscriber::with_default(
            tracing::subscriber::NoSubscriber::default(),
            || self.plan(),
        )?;
        check::start(self, &plan)
    }

    /// Watched files readable, the config file there, templates rendering
    /// into writable places, an existing pid file holding a pid.
    fn check_strict(&self) -> Result<()> {
        check::strict(self, &self.plan()?)
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

/// The life of a watching process: render, take the first snapshot, report
/// ready; then at every settled change (or resync tick) look again and hand a
/// new state to the reload runner, until shutdown.
async fn watch(plan: Plan, metrics: Arc<Metrics>, ctx: Context) -> Result<()> {
    let mut files = file_watch(&plan, &metrics);
    render_all(&plan, &metrics, true)?;
    let mut state = State::new(observe(&plan, &mut files).await);
    log_watching(&plan, &state.current);
    let mut reloads = Reloads::spawn(&plan, metrics.clone(), &ctx);
    if plan.reload_on_start {
        tracing::info!(hash = %state.current.short(), "reloading at start");
        reloads.submit(state.current.clone());
    }
    ctx.set_ready(true);

    let mut resync = plan
        .resync
        .map(|d| tokio::time::interval_at(Instant::now() + d, d));
    while next_look(&mut files, &mut resync, &ctx).await {
        metrics.apply_operations.inc();
        let snap = observe(&plan, &mut files).await;
        if let Some(changed) = state.accept(snap, &plan, &metrics)? {
            reloads.submit(changed);
        }
    }
    Ok(())
}

/// Watches the files with the flags' debounce and max-wait, counting into
/// the applet's metrics.
fn file_watch(plan: &Plan, metrics: &Metrics) -> Watch {
    Watch::new()
        .debounce(plan.debounce)
        .max_wait(plan.max_wait)
        .metrics(WatchMetrics {
            events: metrics.watch_events.clone(),
            errors: metrics.watch_errors.clone(),
            watches: metrics.watches.clone(),
        })
}

fn log_watching(plan: &Plan, snap: &Snapshot) {
    tracing::info!(
        paths = %plan.roots.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(","),
        files = snap.files,
        hash = %snap.short(),
        actions = %plan.actions.iter().map(|a| a.describe()).collect::<Vec<_>>().join("; "),
        "watching"
    );
}

/// Waits for a settled change or the resync tick. False at shutdown.
async fn next_look(
    files: &mut Watch,
    resync: &mut Option<tokio::time::Interval>,
    ctx: &Context,
) -> bool {
    tokio::select! {
        _ = files.changed() => {}
        _ = tick(resync) => tracing::debug!("resync"),
        _ = ctx.shutdown() => return false,
    }
    !ctx.shutdown_handle().is_requested()
}

/// The state last handed to the reloader, and a newer one whose templates
/// failed to render.
struct State {
    current: Snapshot,
    render_failed: Option<[u8; 32]>,
}

impl State {
    fn new(current: Snapshot) -> State {
        State {
            current,
            render_failed: None,
        }
    }

    /// Re-renders for `snap`; returns it when it is a change to reload for.
    fn accept(
        &mut self,
        snap: Snapshot,
        plan: &Plan,
        metrics: &Metrics,
    ) -> Result<Option<Snapshot>> {
        if snap.hash == self.current.hash || Some(snap.hash) == self.render_failed {
            // Outputs are not hashed: one deleted or edited by someone else
            // is written again (prometheus-config-reloader renders at every
            // apply). Nothing is written when it is intact.
            if self.render_failed.is_none() {
                render_all(plan, metrics, false)?;
            }
            return Ok(None);
        }
        metrics.changes.inc();
        tracing::info!(old = %self.current.short(), new = %snap.short(), files = snap.files, "change detected");
        // The environment is fixed for the process's life: a template that
        // failed to render is tried again only once its content changes.
        if !render_all(plan, metrics, false)? {
            self.render_failed = Some(snap.hash);
            return Ok(None);
        }
        self.render_failed = None;
        self.current = snap.clone();
        Ok(Some(snap))
    }
}

/// The reload runner (validate, then act; retrying only the newest state)
/// and the change it is working on, to count the ones a newer one replaces.
struct Reloads {
    runner: Runner<Arc<Change>>,
    pending: Option<Arc<Change>>,
    metrics: Arc<Metrics>,
}

impl Reloads {
    fn spawn(plan: &Plan, metrics: Arc<Metrics>, ctx: &Context) -> Reloads {
        let reloader = Arc::new(reloader(plan, metrics.clone()));
        let runner = Runner::spawn(
            "reload",
            plan.backoff.clone(),
            ctx.shutdown_handle(),
            move |change: Arc<Arc<Change>>| {
                let reloader = reloader.clone();
                async move { reloader.run(&change).await }
            },
        );
        Reloads {
            runner,
            pending: None,
            metrics,
        }
    }

    fn submit(&mut self, snap: Snapshot) {
        if let Some(p) = self.pending.as_ref().filter(|p| !p.is_finished()) {
            self.metrics.superseded.inc();
            tracing::info!(old = %p.snapshot.short(), new = %snap.short(), "pending reload superseded by a newer change");
        }
        let change = Arc::new(Change::new(snap));
        self.pending = Some(change.clone());
        self.runner.submit(change);
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
