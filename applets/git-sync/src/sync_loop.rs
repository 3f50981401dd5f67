//! The life of git-sync: set up, then sync every `--period` (or on a signal
//! or `POST /sync`) until SIGTERM, `--one-time`, or too many failures.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use sidecar_runtime::Context;
use tokio::sync::Notify;

use crate::config::Config;
use crate::github_app::TokenSource;
use crate::layout::{self, Layout};
use crate::metrics::{Metrics, Status};
use crate::pass::{self, Outcome};
use crate::{errorfile, hooks, server, spare};

pub async fn run(cfg: Config, ctx: Context) -> Result<()> {
    announce(&cfg);
    let layout = prepare_layout(&cfg)?;
    let metrics = Metrics::register(&ctx);
    let synced = Arc::new(AtomicBool::new(false));
    server::serve_http_bind(
        &cfg,
        ctx.admin_state(),
        synced.clone(),
        ctx.shutdown_handle(),
    )
    .await?;
    let wake = sync_triggers(&cfg, &ctx)?;
    let mut hooks = hooks::Hooks::new(&cfg, &layout, &metrics)?;
    if !cfg.one_time {
        hooks.start(ctx.shutdown_handle());
    }
    let last_success = Arc::new(tokio::sync::watch::channel(None::<Instant>).0);
    if let Some(max) = cfg.ready_max_staleness {
        spawn_staleness_watch(ctx.clone(), last_success.subscribe(), max);
    }
    let mut syncer = Syncer {
        github_app: cfg.github_app.clone().map(TokenSource::new).transpose()?,
        cfg: Arc::new(cfg),
        layout,
        metrics,
        failures: 0,
        first: true,
    };

    loop {
        let started = Instant::now();
        let result = tokio::select! {
            r = syncer.pass() => r,
            _ = ctx.shutdown() => return Ok(()),
        };
        let elapsed = started.elapsed().as_secs_f64();
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                syncer.failed(e, elapsed)?;
                if !syncer.wait(&wake, &ctx).await {
                    return Ok(());
                }
                continue;
            }
        };
        let initial = syncer.succeeded(&out, elapsed);
        last_success.send_replace(Some(Instant::now()));
        synced.store(true, Ordering::SeqCst);
        ctx.set_ready(true);
        if (out.changed || initial) && !syncer.cfg.one_time {
            hooks.submit(&out.hash);
        }
        syncer.cleanup(&out, initial).await;
        if syncer.cfg.one_time {
            return hooks.run_all_once(&out.hash).await;
        }
        if out.hash == syncer.cfg.ref_ {
            tracing::info!(hash = %out.hash, "ref is a commit hash: no further sync needed");
            ctx.shutdown().await;
            return Ok(());
        }
        if !syncer.wait(&wake, &ctx).await {
            return Ok(());
        }
    }
}

/// What upstream logs at startup.
fn announce(cfg: &Config) {
    for note in &cfg.notes {
        tracing::info!("{note}");
    }
    if cfg.add_user {
        tracing::info!(
            "--add-user: not needed, ssh runs in-process and needs no /etc/passwd entry"
        );
    }
}

/// Process-wide settings, made while the process has one thread: the umask
/// and libgit2's global options.
pub fn configure_process(cfg: &Config) -> Result<()> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        if cfg.group_write { 0o002 } else { 0o022 },
    ));
    // SAFETY: called before any thread starts (Applet::before_threads), so
    // no other thread uses libgit2 yet.
    unsafe {
        // Volumes are often owned by another uid; upstream sets safe.directory=*.
        git2::opts::set_verify_owner_validation(false)?;
        // libgit2 re-hashes every object it reads (a collision-detecting
        // SHA-1 of each blob a checkout writes); git does not: the ids
        // were computed from the content when the pack was indexed.
        git2::opts::strict_hash_verification(false);
        let ms = i32::try_from(cfg.sync_timeout.as_millis()).unwrap_or(i32::MAX);
        git2::opts::set_server_connect_timeout_in_milliseconds(ms)?;
        git2::opts::set_server_timeout_in_milliseconds(ms)?;
        crate::gitproto::register(cfg.sync_timeout)?;
        crate::smarthttp::register(cfg.sync_timeout)?;
        crate::sshproto::register(cfg.sync_timeout, cfg.ssh.clone())?;
    }
    Ok(())
}

/// The root made and resolved, and every path git-sync owns under it.
fn prepare_layout(cfg: &Config) -> Result<Layout> {
    let root = make_root(&cfg.root)?;
    let layout = Layout::new(
        root,
        &cfg.link,
        cfg.touch_file.as_deref(),
        cfg.error_file.as_deref(),
    );
    tracing::info!(repo = %sidecar_runtime::redact::redact_url(&cfg.repo), r#ref = %cfg.ref_, root = %layout.root.display(), link = %layout.link.display(), "starting up");
    Ok(layout)
}

/// What cuts the wait between passes short: `POST /sync` on the admin
/// server and `--sync-on-signal`.
fn sync_triggers(cfg: &Config, ctx: &Context) -> Result<Arc<Notify>> {
    let wake = Arc::new(Notify::new());
    server::add_sync_route(ctx, cfg.sync_token_file.clone(), wake.clone());
    if let Some(sig) = cfg.sync_on_signal {
        let wake = wake.clone();
        let mut s =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(sig as i32))
                .with_context(|| format!("--sync-on-signal: cannot handle {sig}"))?;
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                wake.notify_one();
            }
        });
    }
    Ok(wake)
}

/// The sync loop's state between passes.
struct Syncer {
    cfg: Arc<Config>,
    layout: Layout,
    metrics: Metrics,
    github_app: Option<TokenSource>,
    /// Consecutive failures.
    failures: i64,
    /// No pass has succeeded yet. Until then every pass counts as the
    /// first: it downloads even a known commit, so a changed --depth takes
    /// effect.
    first: bool,
}

impl Syncer {
    async fn pass(&mut self) -> Result<Outcome> {
        pass::run(
            &self.cfg,
            &self.layout,
            &self.metrics,
            self.github_app.as_mut(),
            self.first,
        )
        .await
    }

    /// Counts and logs a success; returns whether it was the first.
    fn succeeded(&mut self, out: &Outcome, elapsed: f64) -> bool {
        let initial = std::mem::replace(&mut self.first, false);
        let status = if out.changed || initial {
            "success"
        } else {
            "noop"
        };
        let m = &self.metrics;
        m.sync_count.get_or_create(&Status { status }).inc();
        m.sync_duration
            .get_or_create(&Status { status })
            .observe(elapsed);
        // Upstream counts a fetch for every changed or first pass; the e2e
        // suite expects it to equal the success count.
        if out.changed || initial {
            m.fetch_count.inc();
            tracing::info!(hash = %out.hash, changed = out.changed, "synced");
        } else if self.cfg.verbose >= 2 {
            tracing::info!(hash = %out.hash, "no update required");
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        m.last_success.set(now.as_secs_f64());
        if let Some(f) = &self.layout.error_file {
            errorfile::remove(f);
        }
        self.failures = 0;
        initial
    }

    /// Stale worktrees and garbage, then the touch file (after cleanup, so
    /// it marks a finished pass: tests and consumers use it as the barrier).
    async fn cleanup(&self, out: &Outcome, initial: bool) {
        let (c, l, h) = (self.cfg.clone(), self.layout.clone(), out.hash.clone());
        match tokio::task::spawn_blocking(move || pass::cleanup(&c, &l, &h)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "cleanup failed"),
            Err(e) => tracing::error!(error = %e, "cleanup panicked"),
        }
        if out.changed || initial {
            release_free_memory();
            if let Some(t) = &self.layout.touch_file {
                if let Err(e) = layout::touch(t) {
                    tracing::error!(error = %format!("{e:#}"), "cannot touch --touch-file");
                }
            }
        }
        // The first change after a start finds a spare tree too, written
        // now that the commit is published and the process is idle. A
        // one-time sync never publishes a second commit; a sparse checkout
        // uses no spare.
        if initial && !self.cfg.one_time && self.cfg.sparse_checkout_file.is_none() {
            let (l, h) = (self.layout.clone(), out.hash.clone());
            match tokio::task::spawn_blocking(move || spare::prepare(&l, &h)).await {
                Ok(Ok(true)) => {
                    release_free_memory();
                    tracing::debug!(hash = %out.hash, "spare tree prepared");
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot prepare a spare tree")
                }
                Err(e) => tracing::error!(error = %e, "spare tree preparation panicked"),
            }
        }
    }

    /// Counts and reports a failure; an error when the limit is reached.
    fn failed(&mut self, e: anyhow::Error, elapsed: f64) -> Result<()> {
        self.failures += 1;
        let status = Status { status: "error" };
        self.metrics.sync_count.get_or_create(&status).inc();
        self.metrics
            .sync_duration
            .get_or_create(&status)
            .observe(elapsed);
        let err = format!("{e:#}");
        let limit = if self.first {
            self.cfg.init_max_failures
        } else {
            self.cfg.max_failures
        };
        let failures = self.failures;
        if limit >= 0 && failures >= limit {
            tracing::error!(error = %err, failures, "too many failures, aborting");
            if let Some(f) = &self.layout.error_file {
                let args = serde_json::json!({ "failCount": failures, "maxFailures": limit });
                errorfile::write(f, "too many failures, aborting", &err, args);
            }
            return Err(e.context("too many failures, aborting"));
        }
        tracing::error!(error = %err, failures, "error syncing repo, will retry");
        if let Some(f) = &self.layout.error_file {
            let args = serde_json::json!({ "failCount": failures });
            errorfile::write(f, "error syncing repo, will retry", &err, args);
        }
        Ok(())
    }

    /// `--init-period` until the first success, then `--period`, unless a
    /// sync is requested. False when shutdown starts instead.
    async fn wait(&self, wake: &Notify, ctx: &Context) -> bool {
        let wait = if self.first {
            self.cfg.init_period
        } else {
            self.cfg.period
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = wake.notified() => {
                tracing::info!("sync requested");
                true
            }
            _ = ctx.shutdown() => false,
        }
    }
}

/// A checkout's buffers (several threads, several malloc arenas) go back to
/// the system, so the idle process stays small.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `--root` is created (0775 before umask) and its symlinks resolved.
fn make_root(root: &std::path::Path) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o775)
        .create(root)
        .with_context(|| format!("can't make root dir {}", root.display()))?;
    root.canonicalize()
        .with_context(|| format!("can't normalize root path {}", root.display()))
}

/// `/readyz` turns 503 when no sync succeeded within `max`.
fn spawn_staleness_watch(
    ctx: Context,
    mut rx: tokio::sync::watch::Receiver<Option<Instant>>,
    max: Duration,
) {
    tokio::spawn(async move {
        loop {
            let last = *rx.borrow_and_update();
            match last {
                Some(t) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until((t + max).into()) => {
                            tracing::warn!(max = ?max, "last successful sync is too old: not ready");
                            ctx.set_ready(false);
                            if rx.changed().await.is_err() { return }
                        }
                        r = rx.changed() => if r.is_err() { return },
                    }
                }
                None => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    });
}
