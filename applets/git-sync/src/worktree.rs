//! `<root>/.worktrees/<sha>`: real git worktrees (what `git worktree add
//! --detach` makes), so `git -C <link> log/status/archive` work in them. The
//! worktree's `.git` file points at its admin dir relatively, so the volume
//! can be mounted elsewhere.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use git2::build::CheckoutBuilder;
use git2::{Oid, Repository};

use crate::config::Submodules;
use crate::layout::{self, Layout};

/// Fetch options for a submodule's URL (auth, depth).
pub type SubFetch = dyn Fn(&str) -> git2::FetchOptions<'static>;

fn admin_dir(root: &Path, hash: &str) -> PathBuf {
    root.join(".git/worktrees").join(hash)
}

/// Removes a worktree and its admin dir (`rm -rf` + `git worktree prune`).
pub fn remove(l: &Layout, name: &str) -> Result<()> {
    layout::remove_any(&l.worktree(name))?;
    layout::remove_any(&admin_dir(&l.root, name))
}

/// Creates `.worktrees/<hash>` checked out at `hash`, replacing whatever is
/// there (a half-made tree from a crash, a foreign directory).
pub fn create(
    l: &Layout,
    commit: Oid,
    submodules: Submodules,
    sub_fetch: &SubFetch,
) -> Result<PathBuf> {
    let hash = commit.to_string();
    remove(l, &hash)?;
    let wt = l.worktree(&hash);
    let admin = admin_dir(&l.root, &hash);
    std::fs::create_dir_all(&admin)
        .with_context(|| format!("cannot create {}", admin.display()))?;
    std::fs::write(admin.join("HEAD"), format!("{hash}\n"))?;
    std::fs::write(admin.join("commondir"), "../..\n")?;
    std::fs::write(
        admin.join("gitdir"),
        format!("{}\n", wt.join(".git").display()),
    )?;
    std::fs::create_dir_all(&wt).with_context(|| format!("cannot create {}", wt.display()))?;
    std::fs::write(
        wt.join(".git"),
        format!("gitdir: ../../.git/worktrees/{hash}\n"),
    )?;

    let repo =
        Repository::open(&wt).with_context(|| format!("cannot open worktree {}", wt.display()))?;
    let c = repo.find_commit(commit)?;
    let mut co = CheckoutBuilder::new();
    co.force();
    repo.checkout_tree(c.as_object(), Some(&mut co))
        .with_context(|| format!("cannot check out {hash}"))?;
    repo.set_head_detached(commit)?;
    if submodules != Submodules::Off {
        update_submodules(&repo, submodules == Submodules::Recursive, sub_fetch)?;
    }
    Ok(wt)
}

/// `git submodule update --init [--recursive]`.
fn update_submodules(repo: &Repository, recursive: bool, fetch: &SubFetch) -> Result<()> {
    for mut sm in repo.submodules()? {
        let name = sm.name().unwrap_or_default().to_string();
        let mut opts = git2::SubmoduleUpdateOptions::new();
        opts.fetch(fetch(sm.url().unwrap_or_default()));
        let mut co = CheckoutBuilder::new();
        co.force();
        opts.checkout(co);
        sm.update(true, Some(&mut opts))
            .with_context(|| format!("cannot update submodule {name}"))?;
        if recursive {
            let sub = sm
                .open()
                .with_context(|| format!("cannot open submodule {name}"))?;
            update_submodules(&sub, true, fetch)?;
        }
    }
    Ok(())
}

/// Upstream's `sanityCheckWorktree`: present, not empty, HEAD at `hash`.
pub fn is_sane(l: &Layout, hash: &str) -> bool {
    let wt = l.worktree(hash);
    if layout::dir_is_empty(&wt) || !wt.join(".git").is_file() {
        return false;
    }
    let Ok(repo) = Repository::open(&wt) else {
        return false;
    };
    let head_ok = repo
        .head()
        .ok()
        .and_then(|h| h.target())
        .is_some_and(|o| o.to_string() == hash);
    head_ok && repo.index().is_ok()
}
