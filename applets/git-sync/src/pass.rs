//! One sync pass (upstream's `SyncRepo`), with libgit2, and the cleanup
//! after it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use git2::Oid;

use crate::auth::{self, Auth};
use crate::config::{Config, Submodules};
use crate::github_app::{self, TokenSource};
use crate::layout::{self, Layout};
use crate::metrics::{Metrics, Status};
use crate::{fetch, gc, repo, worktree};

/// The result of one successful pass.
pub struct Outcome {
    pub hash: String,
    pub changed: bool,
}

/// One pass under `--sync-timeout`. libgit2 blocks, so the pass runs on a
/// blocking thread; at the deadline its callbacks are told to abort and the
/// pass is awaited, so two passes never overlap.
pub async fn run(
    cfg: &Arc<Config>,
    layout: &Layout,
    metrics: &Metrics,
    github_app: Option<&mut TokenSource>,
    first: bool,
) -> Result<Outcome> {
    let mut fetched_creds = Vec::new();
    if let Some(url) = &cfg.askpass_url {
        let r = auth::askpass(url, &cfg.repo).await;
        let status = if r.is_ok() { "success" } else { "error" };
        metrics.askpass.get_or_create(&Status { status }).inc();
        fetched_creds.push(r.context("can't get credentials from --askpass-url")?);
    }
    if let Some(app) = github_app {
        let r = app.token().await;
        let status = if r.is_ok() { "success" } else { "error" };
        if r.as_ref().map_or(true, |(_, renewed)| *renewed) {
            metrics
                .github_app_token
                .get_or_create(&Status { status })
                .inc();
        }
        let (token, _) = r.context("can't get a GitHub app installation token")?;
        fetched_creds.push(auth::UserPass {
            url: cfg.repo.clone(),
            username: github_app::USERNAME.into(),
            password: token,
        });
    }
    let auth = Auth::load(cfg, fetched_creds)?;
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
    // What the http(s) transport needs of this pass.
    let _http = crate::smarthttp::Session::enter(auth, &repo);
    let current = l.current_hash()?;
    let fetched = fetch::fetch(
        &repo,
        &fetch::Request {
            url: &cfg.repo,
            ref_: &cfg.ref_,
            depth: cfg.depth,
            force_download: first || current.is_none(),
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
    if !changed && !first {
        return Ok(Outcome { hash, changed });
    }
    let sparse = match &cfg.sparse_checkout_file {
        Some(p) => Some(crate::sparse::Sparse::load(p)?),
        None => None,
    };
    let depth = cfg.depth;
    // libgit2's local transport refuses a depth: local submodules come whole.
    let sub_fetch = move |url: &str| {
        let mut o = fetch::options(Arc::new(AtomicBool::new(false)));
        if crate::local::local_path(url).is_none() {
            o.depth(i32::try_from(depth).unwrap_or(0));
        }
        o
    };
    if first && !changed {
        // Upstream configures the published worktree again on the first
        // pass after a start (`reset --hard`, the sparse file, `submodule
        // update`): a restart undoes edited or deleted files (the HEAD
        // check above cannot see them) and applies changed settings.
        match &sparse {
            None => worktree::restore_edits(l, &hash)?,
            Some(sp) => worktree::reapply_sparse(l, fetched.commit, sp)?,
        }
        if cfg.submodules != Submodules::Off {
            worktree::update_published_submodules(
                l,
                &hash,
                cfg.submodules == Submodules::Recursive,
                cfg.depth,
                &sub_fetch,
            )?;
        }
    }
    if changed {
        anyhow::ensure!(!cancel.load(Ordering::SeqCst), "cancelled");
        // The published tree, whose unmodified files the new one reuses.
        let previous = current
            .as_deref()
            .filter(|c| *c != hash && l.link_points_at(c))
            .map(|c| l.worktree(c));
        worktree::create(
            l,
            fetched.commit,
            cfg.submodules,
            cfg.depth,
            sparse.as_ref(),
            previous.as_deref(),
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

pub fn cleanup(cfg: &Config, l: &Layout, hash: &str) -> Result<()> {
    let repo = git2::Repository::open(&l.root)?;
    // The spare tree serves full checkouts only.
    let spare = cfg.sparse_checkout_file.is_none();
    gc::cleanup(&repo, l, hash, cfg.stale_worktree_timeout, cfg.gc, spare)?;
    Ok(())
}
