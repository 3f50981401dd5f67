//! The life of git-sync: set up, then sync every `--period` (or on a signal
//! or `POST /sync`) until SIGTERM, `--one-time`, or too many failures.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use git2::Oid;
use sidecar_runtime::Context;
use tokio::sync::Notify;

use crate::auth::{self, Auth};
use crate::config::Config;
use crate::layout::{self, Layout};
use crate::metrics::{Metrics, Status};
use crate::{errorfile, fetch, gc, hooks, repo, server, worktree};

/// The result of one successful pass.
struct Outcome {
    hash: String,
    changed: bool,
}

pub async fn run(cfg: Config, ctx: Context) -> Result<()> {
    // SAFETY: called before any other thread uses libgit2 options.
    unsafe {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
            if cfg.group_write { 0o002 } else { 0o022 },
        ));
        // Volumes are often owned by another uid; upstream sets safe.directory=*.
        git2::opts::set_verify_owner_validation(false)?;
        let ms = i32::try_from(cfg.sync_timeout.as_millis()).unwrap_or(i32::MAX);
        git2::opts::set_server_connect_timeout_in_milliseconds(ms)?;
        git2::opts::set_server_timeout_in_milliseconds(ms)?;
        // A scratch image has no OpenSSL default paths: the CA bundle comes
        // from SSL_CERT_FILE / SSL_CERT_DIR (the Dockerfile sets the first).
        if let Some(f) = std::env::var_os("SSL_CERT_FILE") {
            git2::opts::set_ssl_cert_file(f).context("SSL_CERT_FILE")?;
        }
        if let Some(d) = std::env::var_os("SSL_CERT_DIR") {
            git2::opts::set_ssl_cert_dir(d).context("SSL_CERT_DIR")?;
        }
    }
    for note in &cfg.notes {
        tracing::info!("{note}");
    }
    if cfg.add_user {
        tracing::info!(
            "--add-user: not needed, ssh runs in-process and needs no /etc/passwd entry"
        );
    }
    let root = make_root(&cfg.root)?;
    let layout = Layout::new(
        root,
        &cfg.link,
        cfg.touch_file.as_deref(),
        cfg.error_file.as_deref(),
    );
    tracing::info!(repo = %sidecar_runtime::redact::redact_url(&cfg.repo), r#ref = %cfg.ref_, root = %layout.root.display(), link = %layout.link.display(), "starting up");

    let metrics = Metrics::register(&ctx);
    let synced = Arc::new(AtomicBool::new(false));
    server::serve_http_bind(
        &cfg,
        ctx.admin_state(),
        synced.clone(),
        ctx.shutdown_handle(),
    )
    .await?;
    let wake = Arc::new(Notify::new());
    server::add_sync_route(&ctx, cfg.sync_token_file.clone(), wake.clone());
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
    let mut hooks = hooks::Hooks::new(&cfg, &layout, &metrics)?;
    if !cfg.one_time {
        hooks.start(ctx.shutdown_handle());
    }
    let last_success = Arc::new(tokio::sync::watch::channel(None::<Instant>).0);
    if let Some(max) = cfg.ready_max_staleness {
        spawn_staleness_watch(ctx.clone(), last_success.subscribe(), max);
    }

    let cfg = Arc::new(cfg);
    let mut failures: i64 = 0;
    // Until the first success every pass counts as the first: it downloads
    // even a known commit, so a changed --depth takes effect.
    let mut first_success = true;
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            r = run_pass(&cfg, &layout, &metrics, first_success) => r,
            _ = ctx.shutdown() => return Ok(()),
        };
        let elapsed = started.elapsed().as_secs_f64();
        match result {
            Ok(out) => {
                let initial = first_success;
                first_success = false;
                let status = if out.changed || initial {
                    "success"
                } else {
                    "noop"
                };
                metrics.sync_count.get_or_create(&Status { status }).inc();
                metrics
                    .sync_duration
                    .get_or_create(&Status { status })
                    .observe(elapsed);
                // Upstream counts a fetch for every changed or first pass; the e2e
                // suite expects it to equal the success count.
                if out.changed || initial {
                    metrics.fetch_count.inc();
                }
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                metrics.last_success.set(now.as_secs_f64());
                last_success.send_replace(Some(Instant::now()));
                synced.store(true, Ordering::SeqCst);
                ctx.set_ready(true);
                if out.changed || initial {
                    tracing::info!(hash = %out.hash, changed = out.changed, "synced");
                    if !cfg.one_time {
                        hooks.submit(&out.hash);
                    }
                } else if cfg.verbose >= 2 {
                    tracing::info!(hash = %out.hash, "no update required");
                }
                if let Some(f) = &layout.error_file {
                    errorfile::remove(f);
                }
                failures = 0;
                let (c, l, h) = (cfg.clone(), layout.clone(), out.hash.clone());
                match tokio::task::spawn_blocking(move || cleanup(&c, &l, &h)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "cleanup failed"),
                    Err(e) => tracing::error!(error = %e, "cleanup panicked"),
                }
                // After cleanup, so the touch file marks a finished pass
                // (tests and consumers use it as the sync barrier).
                if out.changed || initial {
                    if let Some(t) = &layout.touch_file {
                        if let Err(e) = layout::touch(t) {
                            tracing::error!(error = %format!("{e:#}"), "cannot touch --touch-file");
                        }
                    }
                }
                if cfg.one_time {
                    return hooks.run_all_once(&out.hash).await;
                }
                if out.hash == cfg.ref_ {
                    tracing::info!(hash = %out.hash, "ref is a commit hash: no further sync needed");
                    ctx.shutdown().await;
                    return Ok(());
                }
            }
            Err(e) => {
                failures += 1;
                metrics
                    .sync_count
                    .get_or_create(&Status { status: "error" })
                    .inc();
                metrics
                    .sync_duration
                    .get_or_create(&Status { status: "error" })
                    .observe(elapsed);
                let err = format!("{e:#}");
                let limit = if first_success {
                    cfg.init_max_failures
                } else {
                    cfg.max_failures
                };
                if limit >= 0 && failures >= limit {
                    tracing::error!(error = %err, failures, "too many failures, aborting");
                    if let Some(f) = &layout.error_file {
                        errorfile::write(f, "too many failures, aborting", &err);
                    }
                    return Err(e.context("too many failures, aborting"));
                }
                tracing::error!(error = %err, failures, "error syncing repo, will retry");
                if let Some(f) = &layout.error_file {
                    errorfile::write(f, "error syncing repo, will retry", &err);
                }
            }
        }
        let wait = if first_success {
            cfg.init_period
        } else {
            cfg.period
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => tracing::info!("sync requested"),
            _ = ctx.shutdown() => return Ok(()),
        }
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

/// One pass under `--sync-timeout`. libgit2 blocks, so the pass runs on a
/// blocking thread; at the deadline its callbacks are told to abort and the
/// pass is awaited, so two passes never overlap.
async fn run_pass(
    cfg: &Arc<Config>,
    layout: &Layout,
    metrics: &Metrics,
    first: bool,
) -> Result<Outcome> {
    let askpass = match &cfg.askpass_url {
        None => None,
        Some(url) => {
            let r = auth::askpass(url, &cfg.repo).await;
            let status = if r.is_ok() { "success" } else { "error" };
            metrics.askpass.get_or_create(&Status { status }).inc();
            Some(r.context("can't get credentials from --askpass-url")?)
        }
    };
    let auth = Auth::load(cfg, askpass)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let (c, l, k) = (cfg.clone(), layout.clone(), cancel.clone());
    let mut task = tokio::task::spawn_blocking(move || sync_once(&c, &l, &auth, first, k));
    tokio::select! {
        r = &mut task => r.context("sync panicked")?,
        _ = tokio::time::sleep(cfg.sync_timeout) => {
            cancel.store(true, Ordering::SeqCst);
            let _ = task.await;
            anyhow::bail!("sync timed out after {:?} (--sync-timeout)", cfg.sync_timeout)
        }
    }
}

/// Upstream's `SyncRepo`, with libgit2.
fn sync_once(
    cfg: &Config,
    l: &Layout,
    auth: &Auth,
    first: bool,
    cancel: Arc<AtomicBool>,
) -> Result<Outcome> {
    let repo = repo::open_or_init(&l.root, &cfg.repo, &cfg.git_configs)?;
    let current = l.current_hash()?;
    let fetched = fetch::fetch(
        &repo,
        &fetch::Request {
            url: &cfg.repo,
            ref_: &cfg.ref_,
            depth: cfg.depth,
            force_download: first || current.is_none(),
            auth,
            cancel: cancel.clone(),
        },
    )?;
    let hash = fetched.commit.to_string();
    tracing::debug!(hash, downloaded = fetched.downloaded, "fetched");
    let mut changed = current.as_deref() != Some(hash.as_str()) || !l.link_points_at(&hash);
    if !changed && !worktree::is_sane(l, &hash) {
        tracing::warn!(hash, "worktree is missing or broken, recreating it");
        changed = true;
    }
    if changed || first {
        repo::set_branch(&repo, fetched.commit)?;
    }
    if first && !changed && cfg.sparse_checkout_file.is_none() {
        // Upstream re-runs `git reset --hard` on the published worktree on
        // the first pass after start, so a restart undoes edited or deleted
        // files (the HEAD check above cannot see them).
        worktree::restore_edits(l, &hash)?;
    }
    if changed {
        anyhow::ensure!(!cancel.load(Ordering::SeqCst), "cancelled");
        let auth2 = auth.clone();
        let depth = cfg.depth;
        // libgit2's local transport refuses a depth: local submodules come whole.
        let sub_fetch = move |url: &str| {
            let mut o = git2::FetchOptions::new();
            o.remote_callbacks(auth2.callbacks(url, Arc::new(AtomicBool::new(false))));
            if crate::local::local_path(url).is_none() {
                o.depth(i32::try_from(depth).unwrap_or(0));
            }
            o
        };
        let sparse = match &cfg.sparse_checkout_file {
            Some(p) => Some(worktree::Sparse::load(p)?),
            None => None,
        };
        worktree::create(
            l,
            fetched.commit,
            cfg.submodules,
            cfg.depth,
            sparse.as_ref(),
            &sub_fetch,
        )?;
        tracing::debug!(hash, "worktree created");
        anyhow::ensure!(!cancel.load(Ordering::SeqCst), "cancelled");
        let old_target = l.link_target();
        l.publish(&hash)?;
        if let Some(old) = old_target.filter(|o| *o != l.worktree(&hash)) {
            retire_old(l, &old);
        }
    }
    Ok(Outcome { hash, changed })
}

/// Starts the stale timer of the replaced worktree, and removes a v3-layout
/// `<root>/<sha>` directory outright (upstream's in-place upgrade).
fn retire_old(l: &Layout, old: &std::path::Path) {
    if old.parent() == Some(l.worktrees().as_path()) {
        layout::touch_dir(old);
        return;
    }
    let is_hash = old
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| Oid::from_str(n).is_ok() && n.len() == 40);
    if is_hash && old.parent() == Some(l.root.as_path()) && old.is_dir() {
        tracing::info!(path = %old.display(), "removing v3-layout worktree");
        if let Err(e) = layout::remove_any(old) {
            tracing::warn!(error = %format!("{e:#}"), "cannot remove v3-layout worktree");
        }
    }
}

fn cleanup(cfg: &Config, l: &Layout, hash: &str) -> Result<()> {
    let repo = git2::Repository::open(&l.root)?;
    gc::cleanup(&repo, l, hash, cfg.stale_worktree_timeout, cfg.gc)?;
    Ok(())
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
