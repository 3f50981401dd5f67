//! The repository at `<root>/.git`: created like `git init -b git-sync`,
//! checked for sanity on every pass, and re-initialised in place when broken.

use std::path::Path;

use anyhow::{Context as _, Result};
use git2::{Oid, Repository, RepositoryInitOptions};

use crate::layout;

const BRANCH: &str = "refs/heads/git-sync";

/// Opens the repository, or wipes root's contents and initialises a new one
/// when it is missing or fails the sanity check.
pub fn open_or_init(root: &Path, url: &str, configs: &[(String, String)]) -> Result<Repository> {
    let repo = match open_sane(root) {
        Ok(r) => r,
        Err(why) => {
            if !layout::dir_is_empty(root) {
                tracing::warn!(root = %root.display(), reason = %format!("{why:#}"), "repo directory failed checks or was empty, re-initialising");
                layout::remove_dir_contents(root)?;
            }
            let mut opts = RepositoryInitOptions::new();
            opts.initial_head("git-sync").no_reinit(false);
            Repository::init_opts(root, &opts)
                .with_context(|| format!("cannot initialise a repository in {}", root.display()))?
        }
    };
    // Relative submodule URLs resolve against origin.
    match repo.find_remote("origin") {
        Ok(r) if r.url() == Some(url) => {}
        Ok(_) => repo.remote_set_url("origin", url)?,
        Err(_) => {
            repo.remote("origin", url)?;
        }
    }
    if !configs.is_empty() {
        let mut cfg = repo.config()?.open_level(git2::ConfigLevel::Local)?;
        for (k, v) in configs {
            cfg.set_str(k, v)
                .with_context(|| format!("--git-config: cannot set {k}"))?;
        }
    }
    Ok(repo)
}

/// Upstream's `sanityCheckRepo`, in libgit2 terms: root is the top level of
/// its own repository, HEAD is our branch, no interrupted shallow update, and
/// the published commit and its tree are present.
fn open_sane(root: &Path) -> Result<Repository> {
    anyhow::ensure!(root.join(".git").is_dir(), "no .git directory");
    let repo = Repository::open(root)?;
    let workdir = repo.workdir().context("repository is bare")?;
    anyhow::ensure!(
        workdir.canonicalize()? == root,
        "repository top level is {}",
        workdir.display()
    );
    anyhow::ensure!(
        !repo.path().join("shallow.lock").exists(),
        "shallow.lock exists"
    );
    {
        let head = repo.find_reference("HEAD")?;
        anyhow::ensure!(
            head.symbolic_target() == Some(BRANCH),
            "HEAD is not {BRANCH}"
        );
        if let Ok(branch) = repo.find_reference(BRANCH) {
            let commit = branch
                .peel_to_commit()
                .context("git-sync branch is broken")?;
            let odb = repo.odb()?;
            anyhow::ensure!(
                odb.exists(commit.tree_id()),
                "tree of {} is missing",
                commit.id()
            );
        }
    }
    Ok(repo)
}

/// `git reset --soft <hash>`: the branch names the synced commit, which keeps
/// it reachable for gc.
pub fn set_branch(repo: &Repository, commit: Oid) -> Result<()> {
    repo.reference(BRANCH, commit, true, "git-sync")?;
    Ok(())
}
