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
    depth: u32,
    sparse: Option<&Sparse>,
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
    if let Some(sp) = sparse {
        // As `git sparse-checkout init` leaves it, for the record.
        std::fs::create_dir_all(admin.join("info"))?;
        std::fs::write(admin.join("info/sparse-checkout"), &sp.text)?;
    }
    let fast = write_tree(&repo, &c.tree()?, &wt, sparse)
        .with_context(|| format!("cannot check out {hash}"))?;
    if !fast {
        anyhow::ensure!(
            sparse.is_none(),
            "--sparse-checkout-file: not supported for trees with .gitattributes"
        );
        let mut co = CheckoutBuilder::new();
        co.force();
        repo.checkout_tree(c.as_object(), Some(&mut co))
            .with_context(|| format!("cannot check out {hash}"))?;
    }
    repo.set_head_detached(commit)?;
    if submodules != Submodules::Off {
        update_submodules(&repo, submodules == Submodules::Recursive, depth, sub_fetch)?;
    }
    Ok(wt)
}

/// Checks `tree` out into the empty worktree `wt` and writes its index with
/// the files' stat data, so `git status` is clean without rehashing.
///
/// libgit2's checkout resolves every path (about 14 readlink calls a file)
/// and is several times slower than git's on large trees; a fresh worktree
/// needs none of its conflict handling. Trees with `.gitattributes` (eol,
/// ident, filters) return false and go through libgit2's checkout.
fn write_tree(
    repo: &Repository,
    tree: &git2::Tree,
    wt: &Path,
    sparse: Option<&Sparse>,
) -> Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

    let mut items: Vec<(Vec<u8>, Oid, i32)> = Vec::new();
    let mut filtered = false;
    let walked = tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name_bytes();
        // Attributes need libgit2's filters; names git refuses need its
        // path validation (which then fails the checkout, as git would).
        if name == b".gitattributes" || !safe_name(name) {
            filtered = true;
            return git2::TreeWalkResult::Abort;
        }
        let mut path = dir.as_bytes().to_vec();
        path.extend_from_slice(name);
        items.push((path, entry.id(), entry.filemode()));
        git2::TreeWalkResult::Ok
    });
    if filtered {
        return Ok(false);
    }
    walked?;
    let odb = repo.odb()?;
    let mut index = repo.index()?;
    index.clear()?;
    for (path, id, mode) in items {
        let full = wt.join(std::ffi::OsStr::from_bytes(&path));
        if mode == 0o040000 {
            // Sparse checkouts create directories only for included files.
            if sparse.is_none() {
                std::fs::create_dir(&full)
                    .with_context(|| format!("cannot create {}", full.display()))?;
            }
            continue;
        }
        let included = sparse.is_none_or(|sp| sp.includes(std::ffi::OsStr::from_bytes(&path)));
        if !included {
            // Not checked out: the skip-worktree bit tells git not to look.
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: mode as u32,
                uid: 0,
                gid: 0,
                file_size: 0,
                id,
                flags: path.len().min(0xfff) as u16 | INDEX_ENTRY_EXTENDED,
                flags_extended: INDEX_ENTRY_SKIP_WORKTREE,
                path,
            };
            index.add(&entry)?;
            continue;
        }
        if sparse.is_some() {
            if let Some(dir) = full.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
        }
        let meta = match mode {
            0o160000 => {
                // A submodule: an empty directory until `submodule update`.
                std::fs::create_dir(&full)
                    .with_context(|| format!("cannot create {}", full.display()))?;
                None
            }
            0o120000 => {
                let target = odb.read(id)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target.data()), &full)
                    .with_context(|| format!("cannot create symlink {}", full.display()))?;
                Some(full.symlink_metadata()?)
            }
            _ => {
                let blob = odb.read(id)?;
                let perm = if mode == 0o100755 { 0o777 } else { 0o666 };
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(perm)
                    .open(&full)
                    .with_context(|| format!("cannot create {}", full.display()))?;
                std::io::Write::write_all(&mut f, blob.data())
                    .with_context(|| format!("cannot write {}", full.display()))?;
                Some(f.metadata()?)
            }
        };
        // The index stores 32-bit stat fields, truncated as git does.
        let time = |s: i64, ns: i64| git2::IndexTime::new(s as i32, ns as u32);
        let m = meta.as_ref();
        let entry = git2::IndexEntry {
            ctime: m.map_or(time(0, 0), |m| time(m.ctime(), m.ctime_nsec())),
            mtime: m.map_or(time(0, 0), |m| time(m.mtime(), m.mtime_nsec())),
            dev: m.map_or(0, |m| m.dev() as u32),
            ino: m.map_or(0, |m| m.ino() as u32),
            mode: mode as u32,
            uid: m.map_or(0, |m| m.uid()),
            gid: m.map_or(0, |m| m.gid()),
            file_size: m.map_or(0, |m| m.size() as u32),
            id,
            flags: path.len().min(0xfff) as u16,
            flags_extended: 0,
            path,
        };
        index.add(&entry)?;
    }
    index.write()?;
    Ok(true)
}

const INDEX_ENTRY_EXTENDED: u16 = 0x4000;
const INDEX_ENTRY_SKIP_WORKTREE: u16 = 1 << 14;

/// `--sparse-checkout-file`: git's non-cone patterns (gitignore syntax, the
/// last matching pattern decides; a path is checked out when it matches a
/// positive pattern, itself or through a parent directory).
pub struct Sparse {
    text: String,
    matcher: ignore::gitignore::Gitignore,
}

impl Sparse {
    pub fn load(path: &Path) -> Result<Sparse> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("can't read --sparse-checkout-file {}", path.display()))?;
        let mut b = ignore::gitignore::GitignoreBuilder::new("/");
        for line in text.lines() {
            b.add_line(None, line)
                .with_context(|| format!("--sparse-checkout-file: bad pattern {line:?}"))?;
        }
        let matcher = b.build().context("--sparse-checkout-file")?;
        Ok(Sparse { text, matcher })
    }

    fn includes(&self, path: &std::ffi::OsStr) -> bool {
        // The matcher's "ignore" is sparse's "include".
        self.matcher
            .matched_path_or_any_parents(Path::new("/").join(path), false)
            .is_ignore()
    }
}

/// A tree entry name that is safe to create as is: not empty, `.`, `..`,
/// no separators or NUL, and not `.git` in any spelling Windows or macOS
/// filesystems fold to it (`.GIT`, `.git.`, `.git `, `git~1`).
fn safe_name(name: &[u8]) -> bool {
    if name.is_empty() || name == b"." || name == b".." {
        return false;
    }
    if name.iter().any(|b| matches!(b, b'/' | b'\\' | 0)) {
        return false;
    }
    let end = name.len()
        - name
            .iter()
            .rev()
            .take_while(|b| **b == b'.' || **b == b' ')
            .count();
    let trimmed = name[..end].to_ascii_lowercase();
    trimmed != b".git" && trimmed != b"git~1"
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
    for mut sm in repo.submodules()? {
        let name = sm.name().unwrap_or_default().to_string();
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
    head_ok && repo.index().is_ok()
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

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [
            &b".."[..],
            b".",
            b"",
            b".git",
            b".GIT",
            b".git.",
            b".git ",
            b"git~1",
            b"a/b",
            b"a\\b",
        ] {
            assert!(!super::safe_name(bad), "{:?}", String::from_utf8_lossy(bad));
        }
        for good in [&b"file"[..], b".gitignore", b".github", b"git", b"..x"] {
            assert!(super::safe_name(good));
        }
    }
}
