//! The on-disk contract consumers rely on: `<root>/.git`, `<root>/.worktrees/<sha>`
//! and `--link`, a relative symlink swapped atomically (new link + rename(2)).

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context as _, Result};

/// Absolute paths of everything git-sync owns.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub link: PathBuf,
    pub touch_file: Option<PathBuf>,
    pub error_file: Option<PathBuf>,
}

/// Temporary link name next to `--link`, as upstream names it, so a
/// leftover from either implementation is recognised and replaced.
const TMP_LINK: &str = "tmp-link";

impl Layout {
    /// Relative paths are relative to `root`, which must already be resolved.
    pub fn new(root: PathBuf, link: &str, touch: Option<&str>, error: Option<&str>) -> Layout {
        let abs = |p: &str| crate::config::absolute_clean(&root.join(p));
        Layout {
            link: abs(link),
            touch_file: touch.map(abs),
            error_file: error.map(abs),
            root,
        }
    }

    pub fn worktrees(&self) -> PathBuf {
        self.root.join(".worktrees")
    }

    pub fn worktree(&self, hash: &str) -> PathBuf {
        self.worktrees().join(hash)
    }

    /// The published hash: `basename(readlink(link))`, or None without a link.
    pub fn current_hash(&self) -> Result<Option<String>> {
        match std::fs::read_link(&self.link) {
            Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                anyhow::bail!(
                    "--link {} exists and is not a symlink; remove it",
                    self.link.display()
                )
            }
            Err(e) => Err(e).with_context(|| format!("cannot read link {}", self.link.display())),
        }
    }

    /// The absolute path the link points at, if it is a symlink.
    pub fn link_target(&self) -> Option<PathBuf> {
        let target = std::fs::read_link(&self.link).ok()?;
        let dir = self.link.parent().unwrap_or(Path::new("/"));
        Some(crate::config::absolute_clean(&dir.join(target)))
    }

    /// Whether the link points at `<root>/.worktrees/<hash>` (not a v3
    /// `<root>/<hash>` layout or somewhere else).
    pub fn link_points_at(&self, hash: &str) -> bool {
        self.link_target() == Some(self.worktree(hash))
    }

    /// Points the link at `.worktrees/<hash>`: a relative symlink made under a
    /// temporary name, then renamed over the old link, so readers see the old
    /// tree or the new one and never a missing link.
    pub fn publish(&self, hash: &str) -> Result<()> {
        let dir = self
            .link
            .parent()
            .context("--link has no parent directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let target = relative_path(dir, &self.worktree(hash));
        let tmp = dir.join(TMP_LINK);
        // A crash between symlink and rename leaves this behind.
        match std::fs::remove_file(&tmp) {
            Ok(()) => tracing::info!(path = %tmp.display(), "removed a leftover temporary link"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", tmp.display())),
        }
        std::os::unix::fs::symlink(&target, &tmp)
            .with_context(|| format!("cannot create symlink {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.link)
            .with_context(|| format!("cannot replace {}", self.link.display()))?;
        Ok(())
    }
}

/// `to` relative to directory `from` (both absolute and clean), as Go's
/// `filepath.Rel`.
pub fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to_c: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to_c).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to_c[common..] {
        out.push(c.as_os_str());
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Creates `path` (and parents) if missing and sets its mtime to now.
pub fn touch(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot touch {}", path.display()))?;
    f.set_modified(SystemTime::now())
        .with_context(|| format!("cannot touch {}", path.display()))
}

/// Sets a directory's mtime to now (starts a replaced worktree's stale timer).
pub fn touch_dir(path: &Path) {
    use nix::sys::time::TimeSpec;
    let _ = nix::sys::stat::utimensat(
        None,
        path,
        &TimeSpec::UTIME_NOW,
        &TimeSpec::UTIME_NOW,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}

/// Deletes everything inside `dir` but not `dir` itself (it may be a mount).
pub fn remove_dir_contents(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        remove_any(&entry.path())?;
    }
    Ok(())
}

/// Removes a file, symlink or directory tree; a missing path is fine.
pub fn remove_any(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
    };
    let r = if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Whether a directory is missing or has no entries.
pub fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let r = |a: &str, b: &str| relative_path(Path::new(a), Path::new(b));
        assert_eq!(
            r("/root", "/root/.worktrees/abc"),
            PathBuf::from(".worktrees/abc")
        );
        assert_eq!(
            r("/root/other/dir", "/root/.worktrees/abc"),
            PathBuf::from("../../.worktrees/abc")
        );
        assert_eq!(
            r("/x", "/root/.worktrees/a"),
            PathBuf::from("../root/.worktrees/a")
        );
    }

    #[test]
    fn publish_swaps_atomically_and_repairs_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let l = Layout::new(root.clone(), "sub/link", None, None);
        std::fs::create_dir_all(l.worktree("aaa")).unwrap();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("sub/tmp-link")).unwrap();
        l.publish("aaa").unwrap();
        assert_eq!(l.current_hash().unwrap().as_deref(), Some("aaa"));
        assert_eq!(
            std::fs::read_link(&l.link).unwrap(),
            PathBuf::from("../.worktrees/aaa")
        );
        assert!(l.link_points_at("aaa"));
        assert!(!root.join("sub/tmp-link").exists());
    }
}
