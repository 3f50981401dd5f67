//! `<root>/.worktrees/<sha>`: real git worktrees (what `git worktree add
//! --detach` makes), so `git -C <link> log/status/archive` work in them. The
//! worktree's `.git` file points at its admin dir relatively, so the volume
//! can be mounted elsewhere.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use git2::build::CheckoutBuilder;
use git2::{Oid, Repository};

use crate::checkout;
use crate::config::Submodules;
use crate::layout::{self, Layout};
use crate::spare;
use crate::sparse::Sparse;

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
/// there (a half-made tree from a crash, a foreign directory). `previous`
/// is the worktree published now, whose unmodified files are reused.
pub fn create(
    l: &Layout,
    commit: Oid,
    submodules: Submodules,
    depth: u32,
    sparse: Option<&Sparse>,
    previous: Option<&Path>,
    sub_fetch: &SubFetch,
) -> Result<PathBuf> {
    let hash = commit.to_string();
    remove(l, &hash)?;
    let wt = l.worktree(&hash);
    let (repo, has_submodules) = build(l, commit, &wt, sparse, previous)?;
    // `git submodule update` works from the gitlinks of the index: without
    // any there is nothing to do (and libgit2 would read the index to learn so).
    if submodules != Submodules::Off && has_submodules {
        update_submodules(&repo, submodules == Submodules::Recursive, depth, sub_fetch)?;
    }
    Ok(wt)
}

/// Applies today's `--sparse-checkout-file` to the published worktree of
/// `commit` (after a restart, as upstream's `configureWorktree` does): the
/// tree is rebuilt beside it, reusing its unmodified files, and the two
/// directories are exchanged with one rename(2), so a reader of the link
/// sees the old tree or the new one, never a mix. Edited files are restored
/// on the way. Submodule directories come back empty: update them after.
pub fn reapply_sparse(l: &Layout, commit: Oid, sparse: &Sparse) -> Result<()> {
    let hash = commit.to_string();
    let wt = l.worktree(&hash);
    // Not a hash: a leftover from a crash is junk that cleanup removes.
    let tmp = l.worktrees().join(format!("{hash}.rebuild"));
    layout::remove_any(&tmp)?;
    build(l, commit, &tmp, Some(sparse), Some(&wt))?;
    nix::fcntl::renameat2(
        None,
        &tmp,
        None,
        &wt,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .with_context(|| format!("cannot swap {} into place", wt.display()))?;
    layout::remove_any(&tmp)
}

/// `git submodule update --init [--recursive]` in the published worktree.
pub fn update_published_submodules(
    l: &Layout,
    hash: &str,
    recursive: bool,
    depth: u32,
    sub_fetch: &SubFetch,
) -> Result<()> {
    let wt = l.worktree(hash);
    let repo =
        Repository::open(&wt).with_context(|| format!("cannot open worktree {}", wt.display()))?;
    update_submodules(&repo, recursive, depth, sub_fetch)
}

/// Writes worktree `hash`'s admin dir and checks `commit` out into `dir`
/// (`.worktrees/<hash>`, or a directory that will be renamed there).
/// Returns the worktree's repository and whether the tree may have
/// submodules.
fn build(
    l: &Layout,
    commit: Oid,
    dir: &Path,
    sparse: Option<&Sparse>,
    previous: Option<&Path>,
) -> Result<(Repository, bool)> {
    let hash = commit.to_string();
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
    // A sparse checkout starts empty; otherwise the spare tree, if any,
    // becomes this one (`dir` was removed before).
    let adopted = match sparse {
        None => spare::adopt(l, dir)?,
        Some(_) => None,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dotgit = dir.join(".git");
    std::fs::write(&dotgit, format!("gitdir: ../../.git/worktrees/{hash}\n"))?;

    let repo =
        Repository::open(dir).with_context(|| format!("cannot open worktree {}", dir.display()))?;
    let c = repo.find_commit(commit)?;
    let info_sparse = admin.join("info/sparse-checkout");
    match sparse {
        Some(sp) => {
            // As `git sparse-checkout init` leaves it, for the record.
            std::fs::create_dir_all(admin.join("info"))?;
            std::fs::write(&info_sparse, &sp.text)?;
        }
        None => layout::remove_any(&info_sparse)?,
    }
    let tree = c.tree()?;
    let empty_dir = || -> Result<()> {
        layout::remove_dir_contents(dir)?;
        std::fs::write(&dotgit, format!("gitdir: ../../.git/worktrees/{hash}\n"))?;
        Ok(())
    };
    let dest = checkout::Dest {
        dir,
        index: repo.path().join("index"),
        size_limit: None,
    };
    let written = match checkout::write_tree(&repo, &tree, &dest, sparse, previous, adopted.as_ref())
    {
        // Whatever went wrong in the spare tree, a fresh one may do.
        Err(e) if adopted.is_some() => {
            tracing::warn!(error = %format!("{e:#}"), "cannot reuse the spare tree, writing every file");
            empty_dir()?;
            checkout::write_tree(&repo, &tree, &dest, sparse, previous, None)
        }
        r => r,
    }
    .with_context(|| format!("cannot check out {hash}"))?;
    let has_submodules = match written {
        checkout::Written::Tree { submodules } => submodules,
        checkout::Written::Nothing => true,
    };
    if written == checkout::Written::Nothing {
        if adopted.is_some() {
            // libgit2's checkout wants an empty directory.
            empty_dir()?;
        }
        anyhow::ensure!(
            sparse.is_none(),
            "--sparse-checkout-file: not supported for trees with .gitattributes"
        );
        let mut co = CheckoutBuilder::new();
        co.force();
        repo.checkout_tree(c.as_object(), Some(&mut co))
            .with_context(|| format!("cannot check out {hash}"))?;
    }
    drop((tree, c));
    repo.set_head_detached(commit)?;
    Ok((repo, has_submodules))
}

/// `git submodule update --init [--recursive]`.
///
/// Submodules cloned whole (libgit2's local transport has no depth) are cut
/// to `depth` with a shallow file, so their history looks as requested.
fn update_submodules(
    repo: &Repository,
    recursive: bool,
    depth: u32,
    fetch: &SubFetch,
) -> Result<()> {
    let workdir = repo
        .workdir()
        .context("a worktree has a working directory")?;
    let _gitmodules = gitmodules_from_head(repo, workdir)?;
    for mut sm in repo.submodules()? {
        let name = sm.name().unwrap_or_default().to_string();
        // A sparse set may leave the submodule's directory out; git fills
        // the submodule in all the same (upstream's `git submodule update`),
        // and libgit2 clones into an existing directory.
        std::fs::create_dir_all(workdir.join(sm.path()))
            .with_context(|| format!("cannot make the directory of submodule {name}"))?;
        let url = effective_url(repo, &name, sm.url().unwrap_or_default())?;
        let mut opts = git2::SubmoduleUpdateOptions::new();
        opts.fetch(fetch(&url));
        let mut co = CheckoutBuilder::new();
        co.force();
        opts.checkout(co);
        sm.update(true, Some(&mut opts))
            .with_context(|| format!("cannot update submodule {name}"))?;
        let sub = sm
            .open()
            .with_context(|| format!("cannot open submodule {name}"))?;
        if depth > 0 && crate::shallow::read(sub.path()).is_empty() {
            if let Some(head) = sub.head().ok().and_then(|h| h.target()) {
                let odb = sub.odb()?;
                let h = crate::shallow::history(&odb, head, depth, &Default::default())?;
                crate::shallow::write(sub.path(), &h.boundary)?;
            }
        }
        if recursive {
            update_submodules(&sub, true, depth, fetch)?;
        }
    }
    Ok(())
}

/// A sparse set may leave `.gitmodules` out of the worktree, where libgit2
/// reads it; git reads it from HEAD. It is written there from the commit
/// for the update, and removed again when the returned guard drops.
fn gitmodules_from_head(repo: &Repository, workdir: &Path) -> Result<Option<Transient>> {
    let path = workdir.join(".gitmodules");
    if path.exists() {
        return Ok(None);
    }
    let tree = repo.head()?.peel_to_tree()?;
    let Ok(entry) = tree.get_path(Path::new(".gitmodules")) else {
        return Ok(None);
    };
    let blob = repo.find_blob(entry.id())?;
    std::fs::write(&path, blob.content())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(Transient(path)))
}

/// A file that exists only while this lives.
struct Transient(PathBuf);

impl Drop for Transient {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The URL a submodule is cloned from. A relative one (`../sub.git`) is
/// resolved against the superproject's origin as git does, and recorded as
/// `submodule.<name>.url` (what `git submodule init` writes), which libgit2's
/// update then uses: its own resolution collapses the `//` of `file:///`.
fn effective_url(repo: &Repository, name: &str, url: &str) -> Result<String> {
    if !(url.starts_with("./") || url.starts_with("../")) {
        return Ok(url.to_string());
    }
    let origin = repo.find_remote("origin")?;
    let base = origin.url().unwrap_or_default();
    let resolved = resolve_relative_url(base, url);
    repo.config()?
        .set_str(&format!("submodule.{name}.url"), &resolved)
        .with_context(|| format!("cannot record the URL of submodule {name}"))?;
    Ok(resolved)
}

/// git's `relative_url`: each leading `../` drops one component of `base`
/// (separated by `/`, or the `:` of an scp-like URL), `./` drops none.
fn resolve_relative_url(base: &str, rel: &str) -> String {
    let mut base = base.trim_end_matches('/').to_string();
    let mut rel = rel;
    loop {
        if let Some(rest) = rel.strip_prefix("./") {
            rel = rest;
        } else if let Some(rest) = rel.strip_prefix("../") {
            rel = rest;
            match base.rfind(['/', ':']) {
                Some(i) if base[i..].starts_with(':') => base.truncate(i + 1),
                Some(i) => base.truncate(i),
                None => base.clear(),
            }
        } else {
            break;
        }
    }
    if base.ends_with(':') || base.is_empty() {
        format!("{base}{rel}")
    } else {
        format!("{base}/{rel}")
    }
}

/// `git reset --hard` in the published worktree: tracked files that were
/// edited, deleted or staged go back to HEAD; untracked files stay, as with
/// git. Only files that differ are rewritten.
pub fn restore_edits(l: &Layout, hash: &str) -> Result<()> {
    let wt = l.worktree(hash);
    let repo =
        Repository::open(&wt).with_context(|| format!("cannot open worktree {}", wt.display()))?;
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(false).exclude_submodules(true);
    let dirty = repo.statuses(Some(&mut opts))?.len();
    if dirty == 0 {
        return Ok(());
    }
    tracing::warn!(
        hash,
        files = dirty,
        "worktree files were modified, restoring them"
    );
    let head = repo.head()?.peel_to_commit()?;
    let mut co = CheckoutBuilder::new();
    co.force();
    repo.reset(head.as_object(), git2::ResetType::Hard, Some(&mut co))
        .with_context(|| format!("cannot restore worktree {}", wt.display()))
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
    // The index is only stat'ed: parsing it (and checking its SHA-1) would
    // be most of a no-change poll's cost on a large tree.
    head_ok && repo.path().join("index").is_file()
}

#[cfg(test)]
mod tests {
    #[test]
    fn relative_submodule_urls_resolve_like_git() {
        let r = super::resolve_relative_url;
        assert_eq!(
            r("file:///tmp/x/repo", "../sub.git"),
            "file:///tmp/x/sub.git"
        );
        assert_eq!(r("file:///tmp/x/repo/", "./sub"), "file:///tmp/x/repo/sub");
        assert_eq!(
            r("https://h/org/repo.git", "../../other/s"),
            "https://h/other/s"
        );
        assert_eq!(r("git@host:org/repo", "../sub"), "git@host:org/sub");
        assert_eq!(r("/srv/git/repo", "../sub"), "/srv/git/sub");
    }
}
